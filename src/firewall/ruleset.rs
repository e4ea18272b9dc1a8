//! The whole nftables policy as one typed value, rendered as one atomic nft JSON batch.
//!
//! Layout of `table inet portknock` (see ARCHITECTURE.md for why):
//! - `protected`: the TCP ports that only granted sources may open new connections to;
//! - `granted4`/`granted6`: (source, port) grants, each element with its own timeout, so the
//!   kernel expires grants even when the daemon is dead;
//! - `knock_tcp`/`knock_udp`: the ports whose packets the daemon observes (NFLOG);
//! - `armed4`/`armed6`: (source, protocol, final knock port) of the simple doors whose sequence
//!   that source has knocked but for the final knock, added by the daemon with the knock
//!   timeout, so that the final knock grants synchronously in the packet path and the client's
//!   next SYN is never dropped;
//! - `finals`: a verdict map (protocol, port) → `jump finals_PROTO_BUCKET`, looked up for
//!   armed knocks only; the bucket chain holds, for each door that ends on a knock port of its
//!   own in that bucket, "this final port? grant".
//!
//! The map is filled here, once; at run time the daemon only adds plain set elements. A
//! verdict element added at run time (a jump) makes the kernel re-validate the whole table at
//! the commit, a walk over every element of the map: under a flood of first knocks that is
//! quadratic, and it cost most of the daemon's time in an earlier design.
//!
//! A final knock that several doors end on cannot tell the kernel which door is armed (nft
//! cannot look up a key holding a constant, nor feed a map lookup into a set key), so such
//! doors are granted by the daemon alone; `check` warns about them. So are one-knock doors,
//! which have nothing to arm.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{json, Value};

use crate::config::{Config, KnockPort, Proto, SimpleDoor};

/// The table portknock owns; nothing outside it is ever touched.
pub const TABLE: &str = "portknock";
/// The NFLOG group knock packets are copied to.
pub const NFLOG_GROUP: u16 = 42420;
/// Bytes of each knock packet copied to the daemon: IPv6 header, UDP header and the 65-byte OTP
/// fit with room to spare.
pub const SNAPLEN: u32 = 256;
/// Most grants per address family at once.
pub(super) const MAX_GRANTS: u32 = 1 << 20;
/// Base-chain priority: before the usual `filter` chains (0), after conntrack (-200), so that
/// `ct state` is known and our drop comes first whatever else the host has.
const PRIORITY: i32 = -10;

/// A simple door as the kernel needs it: which port to open, on which knock, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleGate {
    pub protected: u16,
    /// The last knock of the sequence, when the kernel grants on it (see [`kernel_finals`]).
    pub kernel_final: Option<KnockPort>,
    pub open_for: Duration,
}

/// For each door, its final knock if the kernel grants on it, for sources the daemon armed:
/// a sequence of two knocks or more (a one-knock door has nothing to arm, and the daemon grants
/// it), ending on a knock port no other door ends on. The daemon arms only these.
pub fn kernel_finals(doors: &[SimpleDoor]) -> Vec<Option<KnockPort>> {
    let last = |d: &SimpleDoor| d.sequence[d.sequence.len() - 1];
    let mut ending: BTreeMap<KnockPort, usize> = BTreeMap::new();
    for door in doors {
        *ending.entry(last(door)).or_default() += 1;
    }
    doors
        .iter()
        .map(|d| Some(last(d)).filter(|knock| d.sequence.len() > 1 && ending[knock] == 1))
        .collect()
}

/// A (source, port) grant with the time it has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Grant {
    pub source: IpAddr,
    pub port: u16,
    #[serde(serialize_with = "serialize_secs")]
    pub remaining: Duration,
}

fn serialize_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// Everything the kernel enforces, derived from a [`Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub simple: Vec<SimpleGate>,
    /// Protected ports of advanced doors.
    pub advanced: Vec<u16>,
    pub knock_tcp: BTreeSet<u16>,
    pub knock_udp: BTreeSet<u16>,
    /// Observe knocks that arrive over IPv6 too. Protected ports are closed over IPv6 either way.
    pub ipv6_knocks: bool,
}

impl Policy {
    /// The policy a validated configuration asks for.
    pub fn from_config(config: &Config) -> Policy {
        let mut knock_tcp = BTreeSet::new();
        let mut knock_udp = BTreeSet::new();
        for door in &config.simple {
            for knock in &door.sequence {
                match knock.proto {
                    Proto::Tcp => knock_tcp.insert(knock.port),
                    Proto::Udp => knock_udp.insert(knock.port),
                };
            }
        }
        knock_udp.extend(config.advanced.iter().map(|d| d.knock_port));
        Policy {
            simple: config
                .simple
                .iter()
                .zip(kernel_finals(&config.simple))
                .map(|(d, kernel_final)| SimpleGate {
                    protected: d.protected,
                    kernel_final,
                    open_for: config.settings.simple_open,
                })
                .collect(),
            advanced: config.advanced.iter().map(|d| d.protected).collect(),
            knock_tcp,
            knock_udp,
            ipv6_knocks: config.settings.ipv6,
        }
    }

    /// Every protected port, of both modes.
    pub fn protected(&self) -> BTreeSet<u16> {
        self.simple
            .iter()
            .map(|g| g.protected)
            .chain(self.advanced.iter().copied())
            .collect()
    }

    /// One atomic batch that replaces whatever portknock table exists with this policy and
    /// carries over the grants whose port is still protected.
    ///
    /// `add table` before `delete table` makes the delete valid when no table exists yet, so
    /// the same batch serves a first install and a reload.
    pub fn install_batch(&self, keep: &[Grant]) -> Batch {
        let protected = self.protected();
        let mut cmds = vec![
            json!({"add": {"table": table()}}),
            json!({"delete": {"table": table()}}),
            json!({"add": {"table": table()}}),
            port_set("protected"),
            port_set("knock_tcp"),
            port_set("knock_udp"),
            grant_set("granted4", "ipv4_addr"),
            grant_set("granted6", "ipv6_addr"),
            armed_set("armed4", "ipv4_addr"),
            armed_set("armed6", "ipv6_addr"),
            json!({"add": {"map": {
                "family": "inet", "table": TABLE, "name": "finals",
                "type": ["inet_proto", "inet_service"], "map": "verdict",
            }}}),
        ];
        for (name, ports) in [
            ("protected", &protected),
            ("knock_tcp", &self.knock_tcp),
            ("knock_udp", &self.knock_udp),
        ] {
            if !ports.is_empty() {
                cmds.push(elements(name, port_ranges(ports)));
            }
        }
        for family in [Family::V4, Family::V6] {
            let kept: Vec<Value> = keep
                .iter()
                .filter(|g| Family::of(g.source) == family && protected.contains(&g.port))
                .map(|g| {
                    json!({"elem": {
                        "val": {"concat": [g.source.to_string(), g.port]},
                        "timeout": g.remaining.as_secs().max(1),
                    }})
                })
                .collect();
            if !kept.is_empty() {
                cmds.push(elements(family.granted(), kept));
            }
        }
        cmds.push(json!({"add": {"chain": {
            "family": "inet", "table": TABLE, "name": "input",
            "type": "filter", "hook": "input", "prio": PRIORITY, "policy": "accept",
        }}}));
        for name in ["knock", "guard"] {
            cmds.push(json!({"add": {"chain": {"family": "inet", "table": TABLE, "name": name}}}));
        }
        // Only SYNs count as TCP knocks: a retransmitted ACK or a RST is not a connection attempt.
        let syn_only = json!({"match": {"op": "==",
            "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["fin", "syn", "rst", "ack"]]},
            "right": "syn"}});
        cmds.push(rule(
            "input",
            vec![dport_in("tcp", "protected"), jump("guard")],
        ));
        cmds.push(rule(
            "input",
            vec![dport_in("tcp", "knock_tcp"), syn_only, jump("knock")],
        ));
        cmds.push(rule(
            "input",
            vec![dport_in("udp", "knock_udp"), jump("knock")],
        ));

        if !self.ipv6_knocks {
            cmds.push(rule(
                "knock",
                vec![nfproto("ipv6"), json!({"return": null})],
            ));
        }
        cmds.push(rule(
            "knock",
            vec![json!({"log": {"group": NFLOG_GROUP, "snaplen": SNAPLEN}})],
        ));
        // One armed check for every door, here, rather than one in each door's grant rule:
        // shorter rules per door cut the time nft takes to load 10,000 of them by a third.
        let l4proto = || json!({"meta": {"key": "l4proto"}});
        let dport = || json!({"payload": {"protocol": "th", "field": "dport"}});
        for family in [Family::V4, Family::V6] {
            cmds.push(rule(
                "knock",
                vec![
                    json!({"match": {"op": "==",
                        "left": {"concat": [saddr(family), l4proto(), dport()]},
                        "right": family.armed_ref()}}),
                    json!({"vmap": {"key": {"concat": [l4proto(), dport()]}, "data": "@finals"}}),
                ],
            ));
        }

        cmds.push(rule(
            "guard",
            vec![
                json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}),
                json!({"return": null}),
            ],
        ));
        for family in [Family::V4, Family::V6] {
            cmds.push(rule(
                "guard",
                vec![
                    nfproto(family.nfproto()),
                    json!({"match": {"op": "==",
                        "left": {"concat": [saddr(family), {"payload": {"protocol": "tcp", "field": "dport"}}]},
                        "right": family.granted_ref()}}),
                    json!({"return": null}),
                ],
            ));
        }
        cmds.push(rule("guard", vec![json!({"drop": null})]));

        let mut finals: Vec<Door> = self
            .simple
            .iter()
            .filter_map(|gate| {
                let knock = gate.kernel_final?;
                Some(Door {
                    knock,
                    chain: final_chain(knock),
                    protected: gate.protected,
                    open_for: gate.open_for.as_secs(),
                })
            })
            .collect();
        // Each chain's rules together, after the chain.
        finals.sort_by(|a, b| a.chain.cmp(&b.chain));
        Batch {
            commands: cmds,
            finals,
        }
    }
}

/// One nft JSON batch, serialized as `{"nftables": [...]}`.
///
/// The few dozen fixed commands are JSON values; the chains of the final knocks, which can
/// number tens of thousands, are typed values that serialize straight to text: building them
/// as a JSON tree took half a second for 10,000 doors.
#[derive(Debug)]
pub struct Batch {
    commands: Vec<Value>,
    finals: Vec<Door>,
}

impl Serialize for Batch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("nftables", &Commands(self))?;
        map.end()
    }
}

struct Commands<'a>(&'a Batch);

impl Serialize for Commands<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Batch { commands, finals } = self.0;
        let mut seq = s.serialize_seq(None)?;
        for cmd in commands {
            seq.serialize_element(cmd)?;
        }
        let mut chain = None;
        for door in finals {
            if chain != Some(&door.chain) {
                chain = Some(&door.chain);
                seq.serialize_element(&Add {
                    add: ChainObject {
                        chain: NamedChain {
                            family: "inet",
                            table: TABLE,
                            name: &door.chain,
                        },
                    },
                })?;
            }
            for family in [Family::V4, Family::V6] {
                seq.serialize_element(&door.grant_rule(family))?;
            }
        }
        // After the chains: an element that jumps to a chain not yet added is refused.
        if !finals.is_empty() {
            seq.serialize_element(&Add {
                add: ElementObject {
                    element: FinalsElements {
                        family: "inet",
                        table: TABLE,
                        name: "finals",
                        elem: FinalsElem(finals),
                    },
                },
            })?;
        }
        seq.end()
    }
}

/// A simple door whose final knock the kernel grants on: in the chain of its final knock's
/// bucket, which `finals` jumps to for armed sources, its rules grant (source, protected) for
/// `open_for` seconds on its final knock port.
#[derive(Debug)]
struct Door {
    knock: KnockPort,
    chain: String,
    protected: u16,
    open_for: u64,
}

impl Door {
    /// `th dport F update @grantedN { saddr . P timeout T }`. nft adds the `meta nfproto` match
    /// that `saddr` needs itself; writing it out made nft take a fifth longer to load 10,000
    /// doors.
    fn grant_rule(&self, family: Family) -> Add<RuleObject<'_>> {
        Add {
            add: RuleObject {
                rule: DoorRule {
                    family: "inet",
                    table: TABLE,
                    chain: &self.chain,
                    expr: (
                        DportIs {
                            r#match: DportMatch {
                                op: "==",
                                left: PayloadExpr {
                                    payload: PayloadField {
                                        protocol: "th",
                                        field: "dport",
                                    },
                                },
                                right: self.knock.port,
                            },
                        },
                        UpdateGrant {
                            set: SetUpdate {
                                op: "update",
                                set: family.granted_ref(),
                                elem: ElemWrap {
                                    elem: Elem {
                                        val: Concat {
                                            concat: (
                                                PayloadExpr {
                                                    payload: PayloadField {
                                                        protocol: family.ip_protocol(),
                                                        field: "saddr",
                                                    },
                                                },
                                                self.protected,
                                            ),
                                        },
                                        timeout: self.open_for,
                                    },
                                },
                            },
                        },
                    ),
                },
            },
        }
    }
}

// The nft JSON shapes of a door's commands, field for field.
#[derive(Serialize)]
struct Add<T> {
    add: T,
}
#[derive(Serialize)]
struct ChainObject<'a> {
    chain: NamedChain<'a>,
}
#[derive(Serialize)]
struct NamedChain<'a> {
    family: &'static str,
    table: &'static str,
    name: &'a str,
}
#[derive(Serialize)]
struct RuleObject<'a> {
    rule: DoorRule<'a>,
}
#[derive(Serialize)]
struct DoorRule<'a> {
    family: &'static str,
    table: &'static str,
    chain: &'a str,
    expr: (DportIs, UpdateGrant),
}
#[derive(Serialize)]
struct DportIs {
    r#match: DportMatch,
}
#[derive(Serialize)]
struct DportMatch {
    op: &'static str,
    left: PayloadExpr,
    right: u16,
}
/// The elements of `finals`: `[{"concat": [PROTO, PORT]}, {"jump": {"target": CHAIN}}]` each.
struct FinalsElem<'a>(&'a [Door]);

impl Serialize for FinalsElem<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for door in self.0 {
            seq.serialize_element(&(
                KnockValue {
                    concat: (door.knock.proto.name(), door.knock.port),
                },
                JumpVerdict {
                    jump: JumpTarget {
                        target: &door.chain,
                    },
                },
            ))?;
        }
        seq.end()
    }
}
#[derive(Serialize)]
struct ElementObject<'a> {
    element: FinalsElements<'a>,
}
#[derive(Serialize)]
struct FinalsElements<'a> {
    family: &'static str,
    table: &'static str,
    name: &'static str,
    elem: FinalsElem<'a>,
}
#[derive(Serialize)]
struct KnockValue {
    concat: (&'static str, u16),
}
#[derive(Serialize)]
struct JumpVerdict<'a> {
    jump: JumpTarget<'a>,
}
#[derive(Serialize)]
struct JumpTarget<'a> {
    target: &'a str,
}
#[derive(Serialize)]
struct UpdateGrant {
    set: SetUpdate,
}
#[derive(Serialize)]
struct SetUpdate {
    op: &'static str,
    set: &'static str,
    elem: ElemWrap,
}
#[derive(Serialize)]
struct ElemWrap {
    elem: Elem,
}
#[derive(Serialize)]
struct Elem {
    val: Concat,
    timeout: u64,
}
#[derive(Serialize)]
struct Concat {
    concat: (PayloadExpr, u16),
}
#[derive(Serialize)]
struct PayloadExpr {
    payload: PayloadField,
}
#[derive(Serialize)]
struct PayloadField {
    protocol: &'static str,
    field: &'static str,
}

/// The batch that removes the table, and with it every rule and grant of portknock.
pub fn remove_batch() -> Batch {
    Batch {
        commands: vec![
            json!({"add": {"table": table()}}),
            json!({"delete": {"table": table()}}),
        ],
        finals: Vec::new(),
    }
}

/// Final knocks share a chain by protocol and port modulo this. A chain per final knock would
/// make 10,000 doors 10,000 chains, and every commit of a set change walks every chain in the
/// kernel (≈ 0.1 ms at 10,000); with buckets an armed final knock checks a few dozen ports in
/// its bucket instead.
const FINAL_BUCKETS: u16 = 256;

/// Name of the chain that grants the doors ending on `knock`: `finals_PROTO_BUCKET`.
fn final_chain(knock: KnockPort) -> String {
    format!("finals_{}_{}", knock.proto, knock.port % FINAL_BUCKETS)
}

/// Address family of a source, naming its sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn granted(self) -> &'static str {
        match self {
            Family::V4 => "granted4",
            Family::V6 => "granted6",
        }
    }

    pub fn armed(self) -> &'static str {
        match self {
            Family::V4 => "armed4",
            Family::V6 => "armed6",
        }
    }

    fn armed_ref(self) -> &'static str {
        match self {
            Family::V4 => "@armed4",
            Family::V6 => "@armed6",
        }
    }

    fn granted_ref(self) -> &'static str {
        match self {
            Family::V4 => "@granted4",
            Family::V6 => "@granted6",
        }
    }

    fn ip_protocol(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    fn nfproto(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

fn table() -> Value {
    json!({"family": "inet", "name": TABLE})
}

/// A set of ports. `interval` makes the kernel pick its tree backend, which loads 40,000 ports
/// in a fraction of a second where the hash backend takes seconds (measured on 6.18).
fn port_set(name: &str) -> Value {
    json!({"add": {"set": {
        "family": "inet", "table": TABLE, "name": name, "type": "inet_service", "flags": ["interval"],
    }}})
}

/// A grant set. Its size is set explicitly because a set the packet path writes to is
/// otherwise capped at 65,535 elements by nft.
fn grant_set(name: &str, addr: &str) -> Value {
    json!({"add": {"set": {
        "family": "inet", "table": TABLE, "name": name,
        "type": [addr, "inet_service"], "flags": ["timeout"], "size": MAX_GRANTS,
    }}})
}

/// An armed set: (source, protocol, final knock port), each with the knock timeout. As large
/// as the grant sets, so that a flood of spoofed partial sequences cannot fill it.
fn armed_set(name: &str, addr: &str) -> Value {
    json!({"add": {"set": {
        "family": "inet", "table": TABLE, "name": name,
        "type": [addr, "inet_proto", "inet_service"], "flags": ["timeout"], "size": MAX_GRANTS,
    }}})
}

/// Elements of an interval set: each run of consecutive ports as one range. Ten thousand
/// doors on neighbouring ports load as a few ranges, not as ten thousand intervals for nft to
/// sort and the kernel to insert (a quarter of the load time, measured).
fn port_ranges(ports: &BTreeSet<u16>) -> Vec<Value> {
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for &port in ports {
        match runs.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(port) => *last = port,
            _ => runs.push((port, port)),
        }
    }
    runs.into_iter()
        .map(|(first, last)| {
            if first == last {
                json!(first)
            } else {
                json!({"range": [first, last]})
            }
        })
        .collect()
}

fn elements(set: &str, elem: Vec<Value>) -> Value {
    json!({"add": {"element": {"family": "inet", "table": TABLE, "name": set, "elem": elem}}})
}

fn rule(chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": "inet", "table": TABLE, "chain": chain, "expr": expr}}})
}

fn jump(chain: &str) -> Value {
    json!({"jump": {"target": chain}})
}

fn nfproto(family: &str) -> Value {
    json!({"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": family}})
}

fn dport_in(proto: &str, set: &str) -> Value {
    json!({"match": {"op": "==",
        "left": {"payload": {"protocol": proto, "field": "dport"}},
        "right": format!("@{set}")}})
}

fn saddr(family: Family) -> Value {
    json!({"payload": {"protocol": family.ip_protocol(), "field": "saddr"}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            simple: vec![
                gate(22, Some(KnockPort::udp(8000))),
                gate(23, None),
                gate(24, Some(KnockPort::tcp(7000))),
            ],
            advanced: vec![2222],
            knock_tcp: [7000, 9000].into(),
            knock_udp: [8000, 2000].into(),
            ipv6_knocks: true,
        }
    }

    fn gate(protected: u16, kernel_final: Option<KnockPort>) -> SimpleGate {
        SimpleGate {
            protected,
            kernel_final,
            open_for: Duration::from_secs(30),
        }
    }

    fn grant(source: &str, port: u16) -> Grant {
        Grant {
            source: source.parse().unwrap(),
            port,
            remaining: Duration::from_secs(12),
        }
    }

    fn commands(batch: &Value) -> &Vec<Value> {
        batch["nftables"].as_array().unwrap()
    }

    #[test]
    fn consecutive_ports_load_as_ranges() {
        let ports: BTreeSet<u16> = [1, 2, 3, 7, 9, 10, 65534, 65535].into();
        assert_eq!(
            port_ranges(&ports),
            vec![
                json!({"range": [1, 3]}),
                json!(7),
                json!({"range": [9, 10]}),
                json!({"range": [65534, 65535]}),
            ]
        );
        assert_eq!(port_ranges(&BTreeSet::new()), Vec::<Value>::new());
    }

    #[test]
    fn one_batch_replaces_the_table_and_keeps_grants_of_protected_ports_only() {
        let keep = [
            grant("198.18.0.2", 22),
            grant("fd00:5eed::2", 2222),
            grant("198.18.0.3", 80),
        ];
        let batch = serde_json::to_value(policy().install_batch(&keep)).unwrap();
        let cmds = commands(&batch);
        assert_eq!(cmds[0], json!({"add": {"table": table()}}));
        assert_eq!(cmds[1], json!({"delete": {"table": table()}}));
        let kept: Vec<&Value> = cmds
            .iter()
            .filter_map(|c| c["add"].get("element"))
            .filter(|e| e["name"].as_str().unwrap().starts_with("granted"))
            .collect();
        assert_eq!(
            kept.len(),
            2,
            "port 80 is no longer protected: its grant is dropped"
        );
        assert_eq!(
            kept[0]["elem"][0]["elem"]["val"]["concat"],
            json!(["198.18.0.2", 22])
        );
        assert_eq!(kept[1]["name"], "granted6");
    }

    fn rules_of<'a>(batch: &'a Value, chain: &str) -> Vec<&'a Value> {
        commands(batch)
            .iter()
            .filter_map(|c| c["add"].get("rule"))
            .filter(|r| r["chain"] == chain)
            .collect()
    }

    #[test]
    fn the_kernel_grants_on_final_knocks_that_one_door_ends_on() {
        let door = |protected, sequence: &[KnockPort]| SimpleDoor {
            protected,
            sequence: sequence.to_vec(),
        };
        let (t, u) = (KnockPort::tcp, KnockPort::udp);
        let doors = [
            door(22, &[t(7000), t(9000), t(8000)]),
            door(23, &[t(6000), t(8000)]),
            door(24, &[t(8000), u(8000)]),
            door(25, &[t(5000)]),
            door(26, &[t(4000), t(5000)]),
        ];
        assert_eq!(
            kernel_finals(&doors),
            [None, None, Some(u(8000)), None, None],
            "22 and 23 both end on tcp/8000, a final knock elsewhere in a sequence is no clash, \
             one-knock door 25 has nothing to arm, and 26 shares its final knock with it"
        );
    }

    #[test]
    fn each_door_with_a_final_knock_of_its_own_is_granted_in_its_bucket_chain() {
        let mut p = policy();
        // 8000 and 7744 share bucket 64 of UDP; 8000/tcp has a bucket of its own.
        p.simple.push(gate(25, Some(KnockPort::udp(7744))));
        p.simple.push(gate(26, Some(KnockPort::tcp(8000))));
        let batch = serde_json::to_value(p.install_batch(&[])).unwrap();
        let finals: Vec<&Value> = commands(&batch)
            .iter()
            .filter_map(|c| c["add"].get("element"))
            .filter(|e| e["name"] == "finals")
            .collect();
        assert_eq!(
            finals[0]["elem"],
            json!([
                [{"concat": ["tcp", 8000]}, {"jump": {"target": "finals_tcp_64"}}],
                [{"concat": ["tcp", 7000]}, {"jump": {"target": "finals_tcp_88"}}],
                [{"concat": ["udp", 8000]}, {"jump": {"target": "finals_udp_64"}}],
                [{"concat": ["udp", 7744]}, {"jump": {"target": "finals_udp_64"}}],
            ]),
            "door 23 shares its final knock: the daemon grants it"
        );
        let chains: Vec<&str> = commands(&batch)
            .iter()
            .filter_map(|c| c["add"]["chain"]["name"].as_str())
            .filter(|n| n.starts_with("finals_"))
            .collect();
        assert_eq!(chains, ["finals_tcp_64", "finals_tcp_88", "finals_udp_64"]);
        let udp: Vec<(&Value, &Value)> = rules_of(&batch, "finals_udp_64")
            .iter()
            .map(|r| {
                (
                    &r["expr"][0]["match"]["right"],
                    &r["expr"][1]["set"]["elem"]["elem"]["val"]["concat"][1],
                )
            })
            .collect();
        let (p8000, p7744, d22, d25) = (json!(8000), json!(7744), json!(22), json!(25));
        assert_eq!(
            udp,
            [
                (&p8000, &d22),
                (&p8000, &d22),
                (&p7744, &d25),
                (&p7744, &d25)
            ],
            "a rule per door and address family, each on its own final port"
        );
        let text = batch.to_string();
        assert!(
            !text.contains("2222,"),
            "advanced doors are granted by the daemon"
        );
    }

    #[test]
    fn a_door_rule_grants_on_its_final_port_for_the_open_time() {
        let door = Door {
            knock: KnockPort::tcp(8000),
            chain: final_chain(KnockPort::tcp(8000)),
            protected: 22,
            open_for: 30,
        };
        assert_eq!(
            serde_json::to_value(door.grant_rule(Family::V6)).unwrap(),
            json!({"add": {"rule": {"family": "inet", "table": "portknock", "chain": "finals_tcp_64",
            "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": 8000}},
                {"set": {"op": "update", "set": "@granted6", "elem": {"elem": {
                    "val": {"concat": [{"payload": {"protocol": "ip6", "field": "saddr"}}, 22]},
                    "timeout": 30}}}}
            ]}}})
        );
    }

    #[test]
    fn only_armed_knocks_reach_the_final_chains() {
        let batch = serde_json::to_value(policy().install_batch(&[])).unwrap();
        let knock = rules_of(&batch, "knock");
        let l4 = json!([{"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]);
        for (rule, (ip, armed)) in knock[1..]
            .iter()
            .zip([("ip", "@armed4"), ("ip6", "@armed6")])
        {
            let mut key = vec![json!({"payload": {"protocol": ip, "field": "saddr"}})];
            key.extend(l4.as_array().unwrap().iter().cloned());
            assert_eq!(
                rule["expr"],
                json!([
                    {"match": {"op": "==", "left": {"concat": key}, "right": armed}},
                    {"vmap": {"key": {"concat": l4}, "data": "@finals"}},
                ])
            );
        }
    }

    #[test]
    fn ipv6_knocks_off_returns_before_logging() {
        let mut p = policy();
        p.ipv6_knocks = false;
        let batch = serde_json::to_value(p.install_batch(&[])).unwrap();
        let knock_rules: Vec<&Value> = commands(&batch)
            .iter()
            .filter_map(|c| c["add"].get("rule"))
            .filter(|r| r["chain"] == "knock")
            .collect();
        assert_eq!(knock_rules[0]["expr"][1], json!({"return": null}));
        assert!(knock_rules[1]["expr"][0].get("log").is_some());
    }

    #[test]
    fn the_rules_do_not_grow_with_the_number_of_doors() {
        let rules = |p: &Policy| {
            commands(&serde_json::to_value(p.install_batch(&[])).unwrap())
                .iter()
                .filter_map(|c| c["add"].get("rule"))
                .filter(|r| !r["chain"].as_str().unwrap().starts_with("finals_"))
                .count()
        };
        let mut many = policy();
        many.simple = (1..=1000)
            .map(|port| gate(port, Some(KnockPort::tcp(port + 1000))))
            .collect();
        assert_eq!(rules(&policy()), rules(&many));
    }
}
