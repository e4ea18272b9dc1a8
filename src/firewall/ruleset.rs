//! The whole nftables policy as one typed value, rendered as one atomic nft JSON batch.
//!
//! Layout of `table inet portknock` (see ARCHITECTURE.md for why):
//! - `protected`: the TCP ports that only granted sources may open new connections to;
//! - `granted4`/`granted6`: (source, port) grants, each element with its own timeout, so the
//!   kernel expires grants even when the daemon is dead;
//! - `knock_tcp`/`knock_udp`: the ports whose packets the daemon observes (NFLOG);
//! - `armed4`/`armed6`: verdict maps (source, protocol, final knock port) → `jump door_P`, armed
//!   by the daemon once a source's sequence lacks only its final knock, so that the final knock
//!   grants synchronously in the packet path and the client's next SYN is never dropped;
//! - one tiny chain `door_P` per simple door that writes the grant.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{Config, Proto};

/// The table portknock owns; nothing outside it is ever touched.
pub const TABLE: &str = "portknock";
/// The NFLOG group knock packets are copied to.
pub const NFLOG_GROUP: u16 = 42420;
/// Bytes of each knock packet copied to the daemon: IPv6 header, UDP header and the 65-byte OTP
/// fit with room to spare.
const SNAPLEN: u32 = 256;
/// Most grants per address family at once.
const MAX_GRANTS: u32 = 1 << 20;
/// Base-chain priority: before the usual `filter` chains (0), after conntrack (-200), so that
/// `ct state` is known and our drop comes first whatever else the host has.
const PRIORITY: i32 = -10;

/// A simple door as the kernel needs it: which port to open, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleGate {
    pub protected: u16,
    pub open_for: Duration,
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
                .map(|d| SimpleGate {
                    protected: d.protected,
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
    pub fn install_batch(&self, keep: &[Grant]) -> Value {
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
            armed_map("armed4", "ipv4_addr"),
            armed_map("armed6", "ipv6_addr"),
        ];
        for (name, ports) in [
            ("protected", &protected),
            ("knock_tcp", &self.knock_tcp),
            ("knock_udp", &self.knock_udp),
        ] {
            if !ports.is_empty() {
                cmds.push(elements(name, ports.iter().map(|p| json!(p)).collect()));
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
        for family in [Family::V4, Family::V6] {
            cmds.push(rule(
                "knock",
                vec![
                    nfproto(family.nfproto()),
                    json!({"vmap": {
                        "key": {"concat": [saddr(family), {"meta": {"key": "l4proto"}},
                                           {"payload": {"protocol": "th", "field": "dport"}}]},
                        "data": format!("@{}", family.armed()),
                    }}),
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
                        "right": format!("@{}", family.granted())}}),
                    json!({"return": null}),
                ],
            ));
        }
        cmds.push(rule("guard", vec![json!({"drop": null})]));

        for gate in &self.simple {
            let chain = door_chain(gate.protected);
            cmds.push(json!({"add": {"chain": {"family": "inet", "table": TABLE, "name": chain}}}));
            for family in [Family::V4, Family::V6] {
                cmds.push(rule(
                    &chain,
                    vec![
                        nfproto(family.nfproto()),
                        json!({"set": {"op": "update", "set": format!("@{}", family.granted()),
                            "elem": {"elem": {"val": {"concat": [saddr(family), gate.protected]},
                                              "timeout": gate.open_for.as_secs()}}}}),
                    ],
                ));
            }
        }
        json!({"nftables": cmds})
    }
}

/// The batch that removes the table, and with it every rule and grant of portknock.
pub fn remove_batch() -> Value {
    json!({"nftables": [
        {"add": {"table": table()}},
        {"delete": {"table": table()}},
    ]})
}

/// Name of the chain that grants a simple door's protected port.
pub fn door_chain(protected: u16) -> String {
    format!("door_{protected}")
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

fn armed_map(name: &str, addr: &str) -> Value {
    json!({"add": {"map": {
        "family": "inet", "table": TABLE, "name": name,
        "type": [addr, "inet_proto", "inet_service"], "map": "verdict", "flags": ["timeout"],
    }}})
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
    match family {
        Family::V4 => json!({"payload": {"protocol": "ip", "field": "saddr"}}),
        Family::V6 => json!({"payload": {"protocol": "ip6", "field": "saddr"}}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            simple: vec![SimpleGate {
                protected: 22,
                open_for: Duration::from_secs(30),
            }],
            advanced: vec![2222],
            knock_tcp: [7000, 9000].into(),
            knock_udp: [8000, 2000].into(),
            ipv6_knocks: true,
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
    fn one_batch_replaces_the_table_and_keeps_grants_of_protected_ports_only() {
        let keep = [
            grant("198.18.0.2", 22),
            grant("fd00:5eed::2", 2222),
            grant("198.18.0.3", 80),
        ];
        let batch = policy().install_batch(&keep);
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

    #[test]
    fn every_simple_door_gets_its_grant_chain_with_the_open_time() {
        let batch = policy().install_batch(&[]);
        let text = batch.to_string();
        assert!(text.contains(r#""name":"door_22""#));
        assert!(text.contains(r#""timeout":30"#));
        assert!(
            !text.contains("door_2222"),
            "advanced doors are granted by the daemon only"
        );
    }

    #[test]
    fn ipv6_knocks_off_returns_before_logging() {
        let mut p = policy();
        p.ipv6_knocks = false;
        let batch = p.install_batch(&[]);
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
            commands(&p.install_batch(&[]))
                .iter()
                .filter_map(|c| c["add"].get("rule"))
                .filter(|r| !r["chain"].as_str().unwrap().starts_with("door_"))
                .count()
        };
        let mut many = policy();
        many.simple = (1..=1000)
            .map(|port| SimpleGate {
                protected: port,
                open_for: Duration::from_secs(30),
            })
            .collect();
        assert_eq!(rules(&policy()), rules(&many));
    }
}
