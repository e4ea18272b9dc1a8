//! The whole nftables policy as one typed value, rendered as one atomic nft JSON batch.
//!
//! Layout of `table inet portknock` (see ARCHITECTURE.md for why):
//! - `protected`: the TCP ports that only granted sources may open new connections to;
//! - `granted4`/`granted6`: (source, port) grants, each element with its own timeout, so the
//!   kernel expires grants even when the daemon is dead;
//! - `knock_tcp`/`knock_udp`: the ports whose packets the daemon observes (NFLOG);
//! - the fast path of the final knock (docs/behaviour.md §4), so that the client's next SYN is never
//!   dropped. Once a source has knocked all of a door's sequence but the last port, the daemon
//!   arms it: (source, protocol, final port) in `armed4`/`armed6` and (source, protected port)
//!   in `expected4`/`expected6`, both with the knock timeout. An armed final knock puts its
//!   source in `knocked4`/`knocked6`, and a source both knocked and expected on a port may open
//!   connections to it until the daemon has made the real grant and disarmed.
//!
//! The rules are the same whatever the number of doors: doors live in set elements only, so
//! 10,000 doors load as fast as one (nft would need a rule per door to grant the door's own
//! port on its final knock, as it can neither look up a key holding a constant nor feed a map
//! lookup into a set key; such rules made a 10,000-door `apply` several times slower:
//! BENCHMARKS.md, scale).
//!
//! The price is one armed door per source at a time, since `knocked` names the source only:
//! the daemon disarms the source's other door before it arms one, and the arming clears the
//! source from `knocked` in the same transaction (`changes::Changes::arm`). A door
//! disarmed so is granted by the daemon when its final knock comes, a moment later.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::Config;
use crate::port::Proto;

/// The table portknock owns; nothing outside it is ever touched.
pub const TABLE: &str = "portknock";
/// The NFLOG group knock packets are copied to.
pub const NFLOG_GROUP: u16 = 42420;
/// Bytes of each knock packet copied to the daemon: IPv6 header, UDP header and the 65-byte OTP
/// fit with room to spare.
pub const SNAPLEN: u32 = 256;
/// Most elements per dynamic set and address family at once: grants, and the armed, expected
/// and knocked elements of the fast path. Set explicitly because a set the packet path writes
/// to is otherwise capped at 65,535 elements by nft, which a flood of spoofed partial
/// sequences could fill.
pub(super) const MAX_ELEMENTS: u32 = 1 << 20;
/// Base-chain priority, in the prerouting hook: after conntrack (-200), so that `ct state` is
/// known, and before destination NAT (-100), so that a door's port is the port the client
/// connected to, and a connection DNATed to a container or a VM is stopped like one to a host
/// socket.
const PRIORITY: i32 = -175;

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
    /// Protected ports of both modes.
    pub protected: BTreeSet<u16>,
    pub knock_tcp: BTreeSet<u16>,
    pub knock_udp: BTreeSet<u16>,
    /// Observe knocks that arrive over IPv6 too. Protected ports are closed over IPv6 either way.
    pub ipv6_knocks: bool,
    /// How long an armed final knock keeps its source in `knocked`: as long as the arming.
    pub knock_timeout: Duration,
    /// Sources that pass every protected port without knocking.
    pub trusted: Vec<IpNet>,
    /// Watch sources that knocked for scans: only simple doors have sequences a scan can walk.
    pub watch_scans: bool,
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
        let simple = config.simple.iter().map(|d| d.protected);
        Policy {
            protected: simple
                .chain(config.advanced.iter().map(|d| d.protected))
                .collect(),
            knock_tcp,
            knock_udp,
            ipv6_knocks: config.settings.ipv6,
            knock_timeout: config.settings.knock_timeout,
            // nft refuses overlapping intervals in one set: 10.0.0.0/8 and 10.1.0.0/16 go in
            // as the one prefix that covers both.
            trusted: IpNet::aggregate(&config.settings.trusted),
            watch_scans: !config.simple.is_empty(),
        }
    }

    /// One atomic batch that replaces whatever portknock table exists with this policy and
    /// carries over the grants whose port is still protected.
    ///
    /// `add table` before `delete table` makes the delete valid when no table exists yet, so
    /// the same batch serves a first install and a reload.
    pub fn install_batch(&self, keep: &[Grant]) -> Batch {
        let mut cmds = vec![
            json!({"add": {"table": table()}}),
            json!({"delete": {"table": table()}}),
            json!({"add": {"table": table()}}),
            port_set("protected"),
            port_set("knock_tcp"),
            port_set("knock_udp"),
        ];
        for family in [Family::V4, Family::V6] {
            let addr = family.addr_type();
            let sets = family.sets();
            cmds.push(trusted_set(sets.trusted, addr));
            cmds.push(dynamic_set(sets.granted, json!([addr, "inet_service"])));
            cmds.push(dynamic_set(
                sets.armed,
                json!([addr, "inet_proto", "inet_service"]),
            ));
            cmds.push(dynamic_set(sets.expected, json!([addr, "inet_service"])));
            cmds.push(dynamic_set(sets.knocked, json!(addr)));
            cmds.push(dynamic_set(sets.seen, json!(addr)));
        }
        for (name, ports) in [
            ("protected", &self.protected),
            ("knock_tcp", &self.knock_tcp),
            ("knock_udp", &self.knock_udp),
        ] {
            if !ports.is_empty() {
                cmds.push(elements(name, port_ranges(ports)));
            }
        }
        for family in [Family::V4, Family::V6] {
            let trusted: Vec<Value> = (self.trusted.iter())
                .filter(|net| Family::of(net.addr()) == family)
                .map(|net| json!({"prefix": {"addr": net.addr().to_string(), "len": net.prefix_len()}}))
                .collect();
            if !trusted.is_empty() {
                cmds.push(elements(family.sets().trusted, trusted));
            }
            let kept: Vec<Value> = keep
                .iter()
                .filter(|g| Family::of(g.source) == family && self.protected.contains(&g.port))
                .map(|g| {
                    json!({"elem": {
                        "val": {"concat": [g.source.to_string(), g.port]},
                        "timeout": g.remaining.as_secs().max(1),
                    }})
                })
                .collect();
            if !kept.is_empty() {
                cmds.push(elements(family.sets().granted, kept));
            }
        }
        cmds.push(json!({"add": {"chain": {
            "family": "inet", "table": TABLE, "name": "prerouting",
            "type": "filter", "hook": "prerouting", "prio": PRIORITY, "policy": "accept",
        }}}));
        for name in ["knock", "scan", "guard"] {
            cmds.push(json!({"add": {"chain": {"family": "inet", "table": TABLE, "name": name}}}));
        }
        // Only SYNs count as TCP knocks: a retransmitted ACK or a RST is not a connection attempt.
        let syn_only = json!({"match": {"op": "==",
            "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["fin", "syn", "rst", "ack"]]},
            "right": "syn"}});
        cmds.push(rule(
            "prerouting",
            vec![dport_in("tcp", "protected"), jump("guard")],
        ));
        cmds.push(rule(
            "prerouting",
            vec![
                dport_in("tcp", "knock_tcp"),
                syn_only.clone(),
                jump("knock"),
            ],
        ));
        cmds.push(rule(
            "prerouting",
            vec![dport_in("udp", "knock_udp"), jump("knock")],
        ));
        // A source that knocked lately and now tries ports outside every door may be a scan,
        // which walks knock ports in a random order: the daemon sees those tries too and takes
        // many of them for a scan. The tests go cheapest first: everyone else's packets cost a
        // flag test and a lookup in a set that holds only recent knockers. A connection to a
        // protected port that the guard let through (a grant) is no scan.
        let new_udp =
            json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["new"]}});
        for family in [Family::V4, Family::V6]
            .into_iter()
            .filter(|_| self.watch_scans)
        {
            let seen = in_set(saddr(family), family.sets().seen);
            cmds.push(rule(
                "prerouting",
                vec![
                    syn_only.clone(),
                    seen.clone(),
                    dport_not_in("tcp", "knock_tcp"),
                    dport_not_in("tcp", "protected"),
                    jump("scan"),
                ],
            ));
            cmds.push(rule(
                "prerouting",
                vec![
                    new_udp.clone(),
                    seen,
                    dport_not_in("udp", "knock_udp"),
                    jump("scan"),
                ],
            ));
        }
        cmds.push(rule(
            "scan",
            vec![not_for_this_host(), json!({"return": null})],
        ));
        cmds.push(rule(
            "scan",
            vec![json!({"log": {"group": NFLOG_GROUP, "snaplen": SNAPLEN}})],
        ));

        // Packets the host routes to other machines are not knocks on its doors.
        cmds.push(rule(
            "knock",
            vec![not_for_this_host(), json!({"return": null})],
        ));
        if !self.ipv6_knocks {
            cmds.push(rule(
                "knock",
                vec![
                    json!({"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv6"}}),
                    json!({"return": null}),
                ],
            ));
        }
        cmds.push(rule(
            "knock",
            vec![json!({"log": {"group": NFLOG_GROUP, "snaplen": SNAPLEN}})],
        ));
        let l4proto = json!({"meta": {"key": "l4proto"}});
        let dport = json!({"payload": {"protocol": "th", "field": "dport"}});
        let knock_timeout = self.knock_timeout.as_secs().max(1);
        for family in [Family::V4, Family::V6] {
            let sets = family.sets();
            if self.watch_scans {
                cmds.push(rule(
                    "knock",
                    vec![
                        json!({"set": {"op": "update", "set": format!("@{}", sets.seen),
                        "elem": {"elem": {"val": saddr(family), "timeout": knock_timeout}}}}),
                    ],
                ));
            }
            cmds.push(rule(
                "knock",
                vec![
                    in_set(
                        json!({"concat": [saddr(family), l4proto, dport]}),
                        sets.armed,
                    ),
                    json!({"set": {"op": "update", "set": format!("@{}", sets.knocked),
                        "elem": {"elem": {"val": saddr(family), "timeout": knock_timeout}}}}),
                ],
            ));
        }

        let pass = |condition: Value| rule("guard", vec![condition, json!({"return": null})]);
        cmds.push(pass(
            json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}),
        ));
        // The host talking to itself, to 127.0.0.1, ::1 or its own external addresses: such
        // packets are looped back, and only the host can send on `lo`.
        cmds.push(pass(
            json!({"match": {"op": "==", "left": {"meta": {"key": "iif"}}, "right": "lo"}}),
        ));
        // A router's forwarding to other machines is theirs to guard. What is for one of the
        // host's own addresses is guarded, whether a socket of the host takes it or DNAT
        // sends it on to a container, a VM or another machine: DNAT comes after this chain.
        cmds.push(pass(not_for_this_host()));
        for family in [Family::V4, Family::V6] {
            cmds.push(pass(in_set(saddr(family), family.sets().trusted)));
        }
        let tcp_dport = json!({"payload": {"protocol": "tcp", "field": "dport"}});
        for family in [Family::V4, Family::V6] {
            let sets = family.sets();
            let source_port = json!({"concat": [saddr(family), tcp_dport]});
            cmds.push(rule(
                "guard",
                vec![
                    in_set(source_port.clone(), sets.granted),
                    json!({"return": null}),
                ],
            ));
            cmds.push(rule(
                "guard",
                vec![
                    in_set(source_port, sets.expected),
                    in_set(saddr(family), sets.knocked),
                    json!({"return": null}),
                ],
            ));
        }
        cmds.push(rule("guard", vec![json!({"drop": null})]));
        Batch { nftables: cmds }
    }
}

/// One nft JSON batch, serialized as `{"nftables": [...]}`.
#[derive(Debug, Serialize)]
pub struct Batch {
    nftables: Vec<Value>,
}

/// The batch that removes the table, and with it every rule and grant of portknock.
pub(super) fn remove_batch() -> Batch {
    Batch {
        nftables: vec![
            json!({"add": {"table": table()}}),
            json!({"delete": {"table": table()}}),
        ],
    }
}

/// Address family of a source, naming its sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// The names of one address family's sets of addresses.
#[derive(Debug, Clone, Copy)]
pub struct FamilySets {
    /// Sources that pass without knocking, as prefixes.
    pub trusted: &'static str,
    /// (source, port) grants.
    pub granted: &'static str,
    /// (source, protocol, port) final knocks armed.
    pub armed: &'static str,
    /// (source, port) the armed door of the source would open.
    pub expected: &'static str,
    /// Sources whose armed final knock came.
    pub knocked: &'static str,
    /// Sources that knocked lately, whose tries of other ports the daemon watches for a scan.
    pub seen: &'static str,
}

impl Family {
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn sets(self) -> FamilySets {
        match self {
            Family::V4 => FamilySets {
                trusted: "trusted4",
                granted: "granted4",
                armed: "armed4",
                expected: "expected4",
                knocked: "knocked4",
                seen: "seen4",
            },
            Family::V6 => FamilySets {
                trusted: "trusted6",
                granted: "granted6",
                armed: "armed6",
                expected: "expected6",
                knocked: "knocked6",
                seen: "seen6",
            },
        }
    }

    fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }
}

fn table() -> Value {
    json!({"family": "inet", "name": TABLE})
}

/// A set of ports. `interval` makes the kernel pick its tree backend: the hash backend was far
/// slower to load tens of thousands of ports.
fn port_set(name: &str) -> Value {
    json!({"add": {"set": {
        "family": "inet", "table": TABLE, "name": name, "type": "inet_service", "flags": ["interval"],
    }}})
}

/// A set of address prefixes, which the kernel looks a source up in with one tree walk,
/// whatever the number of prefixes.
fn trusted_set(name: &str, addr_type: &str) -> Value {
    json!({"add": {"set": {
        "family": "inet", "table": TABLE, "name": name, "type": addr_type, "flags": ["interval"],
    }}})
}

/// A set whose elements come and go at run time, each with its own timeout.
fn dynamic_set(name: &str, key_type: Value) -> Value {
    json!({"add": {"set": {
        "family": "inet", "table": TABLE, "name": name,
        "type": key_type, "flags": ["timeout"], "size": MAX_ELEMENTS,
    }}})
}

/// Elements of an interval set: each run of consecutive ports as one range. Ten thousand
/// doors on neighbouring ports load as a few ranges, not as ten thousand intervals for nft to
/// sort and the kernel to insert.
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

fn in_set(key: Value, set: &str) -> Value {
    json!({"match": {"op": "==", "left": key, "right": format!("@{set}")}})
}

/// Matches a packet whose destination is none of the host's own addresses.
fn not_for_this_host() -> Value {
    json!({"match": {"op": "!=", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}})
}

fn dport_not_in(proto: &str, set: &str) -> Value {
    json!({"match": {"op": "!=", "left": {"payload": {"protocol": proto, "field": "dport"}}, "right": format!("@{set}")}})
}

fn dport_in(proto: &str, set: &str) -> Value {
    in_set(
        json!({"payload": {"protocol": proto, "field": "dport"}}),
        set,
    )
}

fn saddr(family: Family) -> Value {
    let protocol = match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    };
    json!({"payload": {"protocol": protocol, "field": "saddr"}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            protected: [22, 23, 2222].into(),
            knock_tcp: [7000, 9000].into(),
            knock_udp: [8000, 2000].into(),
            ipv6_knocks: true,
            knock_timeout: Duration::from_secs(10),
            trusted: ["198.51.100.0/24", "2001:db8::/48", "203.0.113.7/32"]
                .map(|n| n.parse().unwrap())
                .to_vec(),
            watch_scans: true,
        }
    }

    fn grant(source: &str, port: u16) -> Grant {
        Grant {
            source: source.parse().unwrap(),
            port,
            remaining: Duration::from_secs(12),
        }
    }

    fn batch(policy: &Policy) -> Value {
        serde_json::to_value(policy.install_batch(&[])).unwrap()
    }

    fn commands(batch: &Value) -> &Vec<Value> {
        batch["nftables"].as_array().unwrap()
    }

    fn rules_of<'a>(batch: &'a Value, chain: &str) -> Vec<&'a Value> {
        commands(batch)
            .iter()
            .filter_map(|c| c["add"].get("rule"))
            .filter(|r| r["chain"] == chain)
            .map(|r| &r["expr"])
            .collect()
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
        let elems = |k: &Value| k["elem"].as_array().unwrap().len();
        assert_eq!(
            (elems(kept[0]), elems(kept[1])),
            (1, 1),
            "each family's set gets its own family's grants only"
        );
    }

    /// The declarations, written out as nft's JSON takes them: the names, types, flags and the
    /// size are what the packet path and the netlink code rely on.
    #[test]
    fn the_table_and_its_sets_are_declared_as_nft_reads_them() {
        let batch = batch(&policy());
        let cmds = commands(&batch);
        let table = json!({"family": "inet", "name": "portknock"});
        assert_eq!(cmds[0], json!({"add": {"table": table}}));
        assert_eq!(cmds[1], json!({"delete": {"table": table}}));
        let declared = |name: &str| {
            (cmds.iter())
                .find(|c| c["add"]["set"]["name"] == name)
                .unwrap_or_else(|| panic!("no set {name}"))
                .clone()
        };
        assert_eq!(
            declared("protected"),
            json!({"add": {"set": {"family": "inet", "table": "portknock", "name": "protected",
                "type": "inet_service", "flags": ["interval"]}}})
        );
        assert_eq!(
            declared("armed6"),
            json!({"add": {"set": {"family": "inet", "table": "portknock", "name": "armed6",
                "type": ["ipv6_addr", "inet_proto", "inet_service"], "flags": ["timeout"],
                "size": 1_048_576}}})
        );
        assert_eq!(
            (cmds.iter())
                .find(|c| c["add"]["element"]["name"] == "protected")
                .expect("the protected ports"),
            &json!({"add": {"element": {"family": "inet", "table": "portknock",
                "name": "protected", "elem": [{"range": [22, 23]}, 2222]}}})
        );
        let mut empty = policy();
        empty.knock_udp.clear();
        let batch = self::batch(&empty);
        assert!(
            !(commands(&batch).iter()).any(|c| c["add"]["element"]["name"] == "knock_udp"),
            "no element command for an empty set (nft refuses one)"
        );
        let udp_knock = json!({"match": {"op": "==",
            "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": "@knock_udp"}});
        assert!(
            rules_of(&batch, "prerouting")
                .iter()
                .any(|r| r.as_array().unwrap().contains(&udp_knock)),
            "{:#}",
            batch
        );
    }

    /// Scans are watched only when a simple door exists: advanced doors have no sequence to
    /// walk, and the rules cost a lookup per new connection.
    #[test]
    fn scans_are_watched_only_with_a_simple_door() {
        let dir = std::path::Path::new("/c");
        let config = |simple: Option<&str>, advanced: Option<&str>| {
            let on = format!(
                "FW_PORTKNOCK=yes\nFW_PORTKNOCK_SIMPLE={}\nFW_PORTKNOCK_ADVANCED={}\n",
                if simple.is_some() { "yes" } else { "no" },
                if advanced.is_some() { "yes" } else { "no" },
            );
            let (settings, _) = crate::config::parse_settings(dir, &on);
            let (simple, advanced, diags) = crate::config::parse_lists(dir, simple, advanced);
            assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
            Config {
                dir: dir.to_path_buf(),
                settings,
                simple,
                advanced,
            }
        };
        let simple = Some("22:41873,17219,29002\n");
        let advanced = Some("2222,2000,open-one-secret,close-one-secret\n");
        assert!(Policy::from_config(&config(simple, advanced)).watch_scans);
        assert!(!Policy::from_config(&config(None, advanced)).watch_scans);
    }

    #[test]
    fn knocks_and_doors_are_taken_before_dnat_for_the_host_only() {
        let batch = batch(&policy());
        let base: Vec<&Value> = commands(&batch)
            .iter()
            .filter_map(|c| c["add"].get("chain"))
            .filter(|c| c.get("hook").is_some())
            .collect();
        assert_eq!(base.len(), 1, "one base chain");
        assert_eq!(base[0]["hook"], "prerouting");
        let prio = base[0]["prio"].as_i64().unwrap();
        assert!(
            -200 < prio && prio < -100,
            "after conntrack, before DNAT: {prio}"
        );
        let for_others = json!([
            {"match": {"op": "!=", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}},
            {"return": null},
        ]);
        assert_eq!(*rules_of(&batch, "knock")[0], for_others);
        assert_eq!(*rules_of(&batch, "guard")[2], for_others);
    }

    #[test]
    fn an_armed_final_knock_marks_its_source_knocked_for_the_knock_timeout() {
        let batch = batch(&policy());
        let knock = rules_of(&batch, "knock");
        assert!(
            knock[1][0].get("log").is_some(),
            "every knock for the host is logged"
        );
        let l4 = [
            json!({"meta": {"key": "l4proto"}}),
            json!({"payload": {"protocol": "th", "field": "dport"}}),
        ];
        for (rules, (ip, n)) in knock[2..].chunks(2).zip([("ip", 4), ("ip6", 6)]) {
            let saddr = json!({"payload": {"protocol": ip, "field": "saddr"}});
            assert_eq!(
                *rules[0],
                json!([{"set": {"op": "update", "set": format!("@seen{n}"),
                    "elem": {"elem": {"val": saddr, "timeout": 10}}}}]),
                "a knocking source is watched for a scan for the knock timeout"
            );
            assert_eq!(
                *rules[1],
                json!([
                    {"match": {"op": "==", "left": {"concat": [saddr, l4[0], l4[1]]}, "right": format!("@armed{n}")}},
                    {"set": {"op": "update", "set": format!("@knocked{n}"),
                        "elem": {"elem": {"val": saddr, "timeout": 10}}}},
                ])
            );
        }
    }

    #[test]
    fn new_tries_of_other_ports_by_sources_that_knocked_lately_are_logged_for_the_host_only() {
        let batch = batch(&policy());
        let prerouting = rules_of(&batch, "prerouting");
        let jumps_to_scan: Vec<&&Value> = prerouting
            .iter()
            .filter(|r| r.as_array().unwrap().last() == Some(&json!({"jump": {"target": "scan"}})))
            .collect();
        assert_eq!(jumps_to_scan.len(), 4, "TCP and UDP, IPv4 and IPv6");
        for rule in &jumps_to_scan {
            let text = rule.to_string();
            assert!(text.contains(r#""op":"!=""#), "other ports only: {text}");
            assert!(text.contains("@seen"), "sources that knocked only: {text}");
            assert!(
                text.contains(r#""syn""#) || text.contains(r#""new""#),
                "new tries only: {text}"
            );
        }
        let tcp = jumps_to_scan[0].to_string();
        assert!(
            tcp.contains("@protected") && tcp.find("@seen") < tcp.find("@knock_tcp"),
            "granted connections to protected ports are no scan, and the set of recent \
             knockers comes first: {tcp}"
        );
        let scan = rules_of(&batch, "scan");
        assert_eq!(scan[0][0]["match"]["left"]["fib"]["result"], "type");
        assert!(scan[1][0].get("log").is_some());

        // Without simple doors there is no sequence to walk.
        let otp_only = Policy {
            watch_scans: false,
            ..policy()
        };
        let text = serde_json::to_string(&otp_only.install_batch(&[])).unwrap();
        assert!(
            !text.contains("@seen") && !text.contains(r#""target":"scan""#),
            "{text}"
        );
    }

    #[test]
    fn the_guard_passes_established_the_host_others_traffic_trusted_granted_or_expected_and_knocked(
    ) {
        let batch = batch(&policy());
        let guard = rules_of(&batch, "guard");
        assert_eq!(guard.len(), 10);
        assert!(guard[..9]
            .iter()
            .all(|r| r.as_array().unwrap().last() == Some(&json!({"return": null}))));
        assert_eq!(
            guard[0][0]["match"]["left"],
            json!({"ct": {"key": "state"}})
        );
        assert_eq!(
            guard[1][0],
            json!({"match": {"op": "==", "left": {"meta": {"key": "iif"}}, "right": "lo"}})
        );
        let set_names = |rule: &Value| -> Vec<String> {
            rule.as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e["match"]["right"].as_str())
                .filter(|r| r.starts_with('@'))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(set_names(guard[3]), ["@trusted4"]);
        assert_eq!(set_names(guard[4]), ["@trusted6"]);
        assert_eq!(set_names(guard[5]), ["@granted4"]);
        assert_eq!(set_names(guard[6]), ["@expected4", "@knocked4"]);
        assert_eq!(set_names(guard[7]), ["@granted6"]);
        assert_eq!(set_names(guard[8]), ["@expected6", "@knocked6"]);
        assert_eq!(*guard[9], json!([{"drop": null}]));
    }

    #[test]
    fn trusted_prefixes_go_to_their_family_s_interval_set() {
        let installed = batch(&policy());
        let elements = |set: &str| -> Value {
            commands(&installed)
                .iter()
                .filter_map(|c| c["add"].get("element"))
                .find(|e| e["name"] == set)
                .map(|e| e["elem"].clone())
                .unwrap_or(Value::Null)
        };
        assert_eq!(
            elements("trusted4"),
            json!([
                {"prefix": {"addr": "198.51.100.0", "len": 24}},
                {"prefix": {"addr": "203.0.113.7", "len": 32}},
            ])
        );
        assert_eq!(
            elements("trusted6"),
            json!([{"prefix": {"addr": "2001:db8::", "len": 48}}])
        );
        let sets: Vec<&Value> = commands(&installed)
            .iter()
            .filter_map(|c| c["add"].get("set"))
            .filter(|s| s["name"].as_str().unwrap().starts_with("trusted"))
            .collect();
        assert_eq!(sets.len(), 2);
        assert!(sets.iter().all(|s| s["flags"] == json!(["interval"])));
        assert_eq!(
            (sets[0]["type"].as_str(), sets[1]["type"].as_str()),
            (Some("ipv4_addr"), Some("ipv6_addr"))
        );
        let mut none = policy();
        none.trusted.clear();
        let empty = batch(&none);
        assert!(
            !commands(&empty).iter().any(|c| c["add"]["element"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("trusted"))),
            "no trusted elements"
        );
        assert_eq!(rules_of(&empty, "guard").len(), 10, "the same rules");
    }

    #[test]
    fn ipv6_knocks_off_returns_before_logging() {
        let mut p = policy();
        p.ipv6_knocks = false;
        let batch = batch(&p);
        let knock = rules_of(&batch, "knock");
        assert_eq!(knock[1][1], json!({"return": null}));
        assert!(knock[2][0].get("log").is_some());
    }

    #[test]
    fn the_rules_do_not_grow_with_the_number_of_doors() {
        let count = |p: &Policy| {
            commands(&batch(p))
                .iter()
                .filter(|c| c["add"].get("rule").is_some() || c["add"].get("chain").is_some())
                .count()
        };
        let mut many = policy();
        many.protected = (1..=10_000).collect();
        many.knock_tcp = (20_000..=50_000).collect();
        assert_eq!(count(&policy()), count(&many));
    }
}
