//! The three systems under comparison, each set up in a fresh [`Lab`] (same topology, same
//! addresses, its own server namespace):
//! - **portknock**: the real daemon (`portknock serve`), door `22:7000,9000,8000` and the
//!   advanced door `2222,2000,opensecret1,closesecret1`;
//! - **knockd**: Debian's knockd 0.8 sniffing `br0` with libpcap inside the server namespace;
//!   its `start_command` adds `%IP%` to a set of its own small nft table `inet knockref`;
//! - **nft**: the classic in-kernel recipe, no userspace at all: stage sets `k1`, `k2` keyed by
//!   source with timeouts, `tcp dport 7000 add @k1`, `tcp dport 9000 ip saddr @k1 add @k2`,
//!   `tcp dport 8000 ip saddr @k2 add @allowed`; it never resets on a wrong knock.
//!
//! Every table here lives in the server namespace the Lab created; nothing else is touched.

use std::net::IpAddr;
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::flood::{SPOOF4_ROUTE, SPOOF6_ROUTE};
use crate::common::{wait_until, Lab};

/// The simple door of every system: protected port and knock sequence.
pub const PROTECTED: u16 = 22;
pub const SEQUENCE: [u16; 3] = [7000, 9000, 8000];
/// portknock's advanced door.
pub const OTP_PROTECTED: u16 = 2222;
pub const OTP_PORT: u16 = 2000;
/// Seconds: between knocks (portknock, nft stages) / for the whole sequence (knockd).
pub const KNOCK_TIMEOUT: u64 = 10;
/// Seconds a simple grant lasts, in every system.
pub const OPEN_FOR: u64 = 30;
/// Size of every dynamic set of the reference tables: as large as portknock's grant sets, so
/// that no system is capped earlier than another (nft caps a set the packet path writes to
/// at 65,535 elements unless told otherwise).
pub const SET_SIZE: u32 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Portknock,
    Knockd,
    Nft,
}

impl System {
    pub const ALL: [System; 3] = [System::Portknock, System::Knockd, System::Nft];

    pub fn name(self) -> &'static str {
        match self {
            System::Portknock => "portknock",
            System::Knockd => "knockd",
            System::Nft => "nft",
        }
    }

    /// The nft table and the sets holding simple grants (v4, v6) of this system.
    fn grant_sets(self) -> (&'static str, [&'static str; 2]) {
        match self {
            System::Portknock => ("portknock", ["granted4", "granted6"]),
            System::Knockd => ("knockref", ["allowed", "allowed6"]),
            System::Nft => ("knocknft", ["allowed", "allowed6"]),
        }
    }
}

/// Kills and reaps a child process on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A system running in its own lab.
pub struct Running {
    pub system: System,
    pub lab: Lab,
    knockd: Option<ChildGuard>,
}

impl Running {
    /// Builds a lab with one client, listeners on 22 and 2222, and starts `system`.
    /// `extra_conf` goes into portknock.conf (ignored by the others).
    pub fn start(system: System, extra_conf: &str) -> Running {
        Running::start_with(system, extra_conf, Some(SET_SIZE))
    }

    /// As [`Running::start`], choosing the size of the in-kernel recipe's sets: `None` leaves
    /// it to nft, which caps a set the packet path adds to at 65,535 elements.
    pub fn start_with(system: System, extra_conf: &str, recipe_size: Option<u32>) -> Running {
        super::check_interrupted();
        let mut lab = Lab::new(1);
        sink_spoofed(&lab);
        lab.listen(PROTECTED);
        lab.listen(OTP_PROTECTED);
        let mut knockd = None;
        match system {
            System::Portknock => {
                // BENCH_METRICS=1: the daemon writes its metrics file too, as it would under
                // Prometheus, to measure what that costs.
                let metrics = match std::env::var("BENCH_METRICS").as_deref() {
                    Ok("1") => format!(
                        "FW_PORTKNOCK_METRICS_FILE={}\n",
                        lab.dir.path().join("portknock.prom").display()
                    ),
                    _ => String::new(),
                };
                lab.write_config(
                    &format!(
                        "FW_PORTKNOCK_KNOCK_TIMEOUT={KNOCK_TIMEOUT}\nFW_PORTKNOCK_SIMPLE_OPEN={OPEN_FOR}\n{metrics}{extra_conf}"
                    ),
                    &format!(
                        "{PROTECTED}:{}\n",
                        SEQUENCE.map(|p| p.to_string()).join(",")
                    ),
                    &format!("{OTP_PROTECTED},{OTP_PORT},{},closesecret1\n", super::probe::OPEN_SECRET),
                );
                lab.start_daemon();
            }
            System::Knockd => {
                nft_file(&lab, "knockref.nft", &knockd_table());
                knockd = Some(start_knockd(&lab));
            }
            System::Nft => nft_file(&lab, "knocknft.nft", &nft_recipe(recipe_size)),
        }
        Running {
            system,
            lab,
            knockd,
        }
    }

    /// The process doing the knock handling in userspace (none for the in-kernel recipe).
    pub fn pid(&self) -> Option<u32> {
        match self.system {
            System::Portknock => self.lab.daemon_pid(),
            System::Knockd => self.knockd.as_ref().map(|c| c.0.id()),
            System::Nft => None,
        }
    }

    /// Whether the userspace process still runs (always true for the in-kernel recipe).
    pub fn alive(&self) -> bool {
        self.pid().is_none_or(super::procfs::alive)
    }

    /// The log of the userspace process.
    pub fn log(&self) -> String {
        match self.system {
            System::Portknock => self.lab.daemon_log(),
            System::Knockd => {
                std::fs::read_to_string(self.lab.dir.path().join("knockd.log")).unwrap_or_default()
            }
            System::Nft => String::new(),
        }
    }

    /// Sources holding a grant of the simple door's protected port (port 22).
    pub fn granted(&self) -> Vec<IpAddr> {
        self.granted_port(PROTECTED)
    }

    /// Sources holding a grant of `port` (portknock knows several ports; the references only 22).
    pub fn granted_port(&self, port: u16) -> Vec<IpAddr> {
        let (table, sets) = self.system.grant_sets();
        let mut out = Vec::new();
        for set in sets {
            let Some(json) = self.nft_json(&["list", "set", "inet", table, set]) else {
                continue;
            };
            for (addr, p) in set_elements(&json) {
                if p.is_none_or(|p| p == port) {
                    out.push(addr);
                }
            }
        }
        out
    }

    /// Number of elements of a set of this system's table (for the stage sets of the recipe).
    pub fn set_len(&self, table: &str, set: &str) -> usize {
        self.nft_json(&["list", "set", "inet", table, set])
            .map(|j| set_elements(&j).len())
            .unwrap_or(0)
    }

    fn nft_json(&self, args: &[&str]) -> Option<Value> {
        let out = self
            .lab
            .server
            .command("nft")
            .arg("-j")
            .args(args)
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Connection-tracking entries in the server namespace.
    pub fn conntrack_count(&self) -> Option<u64> {
        self.lab
            .server
            .run(|| {
                std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
            })
            .ok()
            .flatten()
    }
}

/// Adds /32 aliases 198.18.1.{first+1}..={first+n} on the client (legitimate knock sources,
/// one per trial) and, once per lab, the server's route back to them.
pub fn add_sources(lab: &Lab, first: usize, n: usize) -> Vec<IpAddr> {
    if first == 0 {
        lab.server
            .ip(&["route", "add", "198.18.1.0/24", "dev", "br0"])
            .expect("route to the extra sources");
    }
    assert!(first + n <= 254, "at most 254 legitimate sources per lab");
    (first..first + n)
        .map(|i| {
            let addr = format!("198.18.1.{}", i + 1);
            lab.clients[0]
                .ip(&["addr", "add", &format!("{addr}/32"), "dev", "eth0"])
                .expect("extra source address");
            addr.parse().expect("address")
        })
        .collect()
}

/// Routes the spoofed source ranges into a blackhole in the server namespace, so replies
/// (RSTs, ICMP) to spoofed sources are dropped at once instead of being resolved on the bridge.
/// The lab's own addresses are on more specific routes and unaffected. Reverse-path filtering
/// is off (the namespace default) so spoofed packets do reach the firewall, as on the Internet.
pub fn sink_spoofed(lab: &Lab) {
    lab.server
        .ip(&["route", "add", "blackhole", SPOOF4_ROUTE])
        .expect("blackhole route for spoofed IPv4 sources");
    lab.server
        .ip(&["-6", "route", "add", "blackhole", SPOOF6_ROUTE])
        .expect("blackhole route for spoofed IPv6 sources");
    let _ = lab
        .server
        .command("sysctl")
        .args([
            "-qw",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.br0.rp_filter=0",
        ])
        .status();
}

fn nft_file(lab: &Lab, name: &str, text: &str) {
    let path = lab.dir.path().join(name);
    std::fs::write(&path, text).expect("write nft file");
    let out = lab
        .server
        .command("nft")
        .arg("-f")
        .arg(&path)
        .output()
        .expect("run nft");
    assert!(
        out.status.success(),
        "nft -f {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The in-kernel reference: the classic dynamic-set recipe, IPv4 and IPv6, its sets of `size`
/// elements (`None`: nft's default).
pub fn nft_recipe(size: Option<u32>) -> String {
    let [k1, k2, k3] = SEQUENCE;
    let size = size.map_or(String::new(), |n| format!(" size {n};"));
    let set = |name: &str, ty: &str, timeout: u64| {
        format!("  set {name} {{ type {ty}; flags dynamic, timeout; timeout {timeout}s;{size} }}\n")
    };
    let mut t = String::from("table inet knocknft {\n");
    for (sfx, ty) in [("", "ipv4_addr"), ("_6", "ipv6_addr")] {
        t += &set(&format!("k1{sfx}"), ty, KNOCK_TIMEOUT);
        t += &set(&format!("k2{sfx}"), ty, KNOCK_TIMEOUT);
    }
    t += &set("allowed", "ipv4_addr", OPEN_FOR);
    t += &set("allowed6", "ipv6_addr", OPEN_FOR);
    t += &format!(
        "  chain input {{
    type filter hook input priority -10; policy accept;
    tcp flags & (fin|syn|rst|ack) == syn tcp dport {{ {k1}, {k2}, {k3} }} jump knock
    tcp dport {PROTECTED} ct state established,related accept
    tcp dport {PROTECTED} ip saddr @allowed accept
    tcp dport {PROTECTED} ip6 saddr @allowed6 accept
    tcp dport {PROTECTED} drop
  }}
  chain knock {{
    tcp dport {k1} add @k1 {{ ip saddr }}
    tcp dport {k1} add @k1_6 {{ ip6 saddr }}
    tcp dport {k2} ip saddr @k1 add @k2 {{ ip saddr }}
    tcp dport {k2} ip6 saddr @k1_6 add @k2_6 {{ ip6 saddr }}
    tcp dport {k3} ip saddr @k2 add @allowed {{ ip saddr }}
    tcp dport {k3} ip6 saddr @k2_6 add @allowed6 {{ ip6 saddr }}
  }}
}}
"
    );
    t
}

/// knockd's own table: port 22 closed unless the source is in a set knockd's command fills.
pub fn knockd_table() -> String {
    format!(
        "table inet knockref {{
  set allowed {{ type ipv4_addr; flags timeout; size {SET_SIZE}; }}
  set allowed6 {{ type ipv6_addr; flags timeout; size {SET_SIZE}; }}
  chain input {{
    type filter hook input priority -10; policy accept;
    tcp dport {PROTECTED} ct state established,related accept
    tcp dport {PROTECTED} ip saddr @allowed accept
    tcp dport {PROTECTED} ip6 saddr @allowed6 accept
    tcp dport {PROTECTED} drop
  }}
}}
"
    )
}

/// knockd.conf for the same door: the three ports, SYNs only, a 10 s sequence timeout.
pub fn knockd_conf(logfile: &str) -> String {
    format!(
        "[options]
    LogFile = {logfile}
    Interface = br0

[openSSH]
    sequence      = {}
    seq_timeout   = {KNOCK_TIMEOUT}
    tcpflags      = syn
    start_command = /usr/sbin/nft add element inet knockref allowed {{ %IP% timeout {OPEN_FOR}s }}
    start_command_6 = /usr/sbin/nft add element inet knockref allowed6 {{ %IP% timeout {OPEN_FOR}s }}
",
        SEQUENCE.map(|p| p.to_string()).join(",")
    )
}

fn start_knockd(lab: &Lab) -> ChildGuard {
    let bin = ["/usr/sbin/knockd", "/sbin/knockd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("knockd is not installed: apt-get install -y knockd (the Debian package)")
        });
    let log = lab.dir.path().join("knockd.log");
    let conf = lab.dir.path().join("knockd.conf");
    std::fs::write(&conf, knockd_conf(&log.display().to_string())).expect("knockd.conf");
    let out = std::fs::File::create(lab.dir.path().join("knockd.out")).expect("knockd.out");
    // `ip netns exec` execs knockd in place: the child's pid is knockd's.
    let child = lab
        .server
        .command(bin)
        .arg("-c")
        .arg(&conf)
        .args(["-i", "br0"])
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .spawn()
        .expect("spawn knockd");
    let guard = ChildGuard(child);
    let pid = guard.0.id();
    wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("listening on"))
    })
    .unwrap_or_else(|| {
        panic!(
            "knockd did not start; its output:\n{}\n{}",
            std::fs::read_to_string(lab.dir.path().join("knockd.out")).unwrap_or_default(),
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert!(
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "knockd"),
        "pid {pid} should be knockd itself"
    );
    guard
}

/// Addresses (and ports, for concatenated keys) of the elements in `nft -j list set` output.
pub fn set_elements(json: &Value) -> Vec<(IpAddr, Option<u16>)> {
    let mut out = Vec::new();
    let Some(items) = json["nftables"].as_array() else {
        return out;
    };
    for item in items {
        let Some(elems) = item["set"]["elem"].as_array() else {
            continue;
        };
        for e in elems {
            let val = e.get("elem").map(|x| &x["val"]).unwrap_or(e);
            let parts: Vec<&Value> = match val.get("concat").and_then(Value::as_array) {
                Some(c) => c.iter().collect(),
                None => vec![val],
            };
            let addr = parts
                .first()
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse().ok());
            let port = parts.get(1).and_then(|v| v.as_u64()).map(|p| p as u16);
            if let Some(addr) = addr {
                out.push((addr, port));
            }
        }
    }
    out
}

/// Whether `addr` is one of the lab's own (legitimate) addresses rather than a spoofed one.
pub fn is_legitimate(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            o[0] == 198 && o[1] == 18 && o[2] <= 1
        }
        IpAddr::V6(a) => (u128::from(*a) >> 63) & 1 == 0,
    }
}
