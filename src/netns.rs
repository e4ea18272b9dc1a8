//! Throw-away network namespaces for `portknock demo` and the integration tests.
//!
//! A [`Network`] is a server namespace with a bridge and client namespaces joined to it by veth
//! pairs, addressed from 198.18.0.0/15 and fd00:5eed::/64 (docs/behaviour.md §6). The veth pairs are created
//! inside the server namespace, so the host's own namespace never sees an interface appear.
//! Everything is removed on drop, also when a panic unwinds.

use std::fs::File;
use std::io;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

/// The server's addresses on the bridge.
pub const SERVER4: &str = "198.18.0.1";
pub const SERVER6: &str = "fd00:5eed::1";

/// Client `i`'s IPv4 address.
pub fn client4(i: usize) -> String {
    format!("198.18.0.{}", i + 2)
}

/// Client `i`'s IPv6 address.
pub fn client6(i: usize) -> String {
    format!("fd00:5eed::{}", i + 2)
}

/// The IPv4 address of the `n`th namespace behind the server (198.19.n.0/24).
pub fn behind4(n: u8) -> String {
    format!("198.19.{n}.2")
}

/// The IPv6 address of the `n`th namespace behind the server (fd00:5eed::b0:n:0/112).
pub fn behind6(n: u8) -> String {
    format!("fd00:5eed::b0:{n}:2")
}

/// What went wrong building the network.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot run `ip {args}`: {error} — install iproute2 (apt-get install iproute2)")]
    Spawn { args: String, error: io::Error },
    #[error("`ip {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace, deleted (with every process in it) on drop.
pub struct Netns {
    pub name: String,
    /// The prefix of its name, for the namespaces made next to it.
    prefix: String,
}

impl Netns {
    /// Creates `PREFIX-PID-N-ROLE` with its loopback up.
    pub fn new(prefix: &str, role: &str) -> Result<Netns, NetnsError> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}-{role}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Netns {
            name,
            prefix: prefix.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<(), NetnsError> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full).map(drop)
    }

    /// A command that will run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `f` on a thread that has entered this namespace and returns its result. Sockets
    /// made there stay in the namespace after the thread ends.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
        let path = format!("/var/run/netns/{}", self.name);
        thread::spawn(move || {
            setns(File::open(path)?, CloneFlags::CLONE_NEWNET)?;
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("the thread inside the namespace panicked"))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // A namespace whose processes still run would linger after `ip netns del`.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn ip(args: &[&str]) -> Result<Output, NetnsError> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    checked(cmd, args.join(" "))
}

/// Runs `cmd`, which is `ip ARGS`; an exit status other than 0 is an error.
fn checked(mut cmd: Command, args: String) -> Result<Output, NetnsError> {
    let out = cmd.output().map_err(|error| NetnsError::Spawn {
        args: args.clone(),
        error,
    })?;
    if !out.status.success() {
        return Err(NetnsError::Failed {
            args,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// A server namespace with a bridge, and client namespaces on it.
/// Server: [`SERVER4`], [`SERVER6`]; client `i`: [`client4`]`(i)`, [`client6`]`(i)`.
pub struct Network {
    pub server: Netns,
    pub clients: Vec<Netns>,
}

impl Network {
    pub fn new(prefix: &str, clients: usize) -> Result<Network, NetnsError> {
        let server = Netns::new(prefix, "srv")?;
        server.ip(&["link", "add", "br0", "type", "bridge"])?;
        server.ip(&["link", "set", "br0", "up"])?;
        server.ip(&["addr", "add", &format!("{SERVER4}/24"), "dev", "br0"])?;
        // nodad: the address is usable at once instead of after duplicate detection.
        server.ip(&[
            "addr",
            "add",
            &format!("{SERVER6}/64"),
            "dev",
            "br0",
            "nodad",
        ])?;
        let mut list = Vec::with_capacity(clients);
        for i in 0..clients {
            let client = Netns::new(prefix, &format!("c{i}"))?;
            let (near, far) = (format!("vs{i}"), format!("vc{i}"));
            server.ip(&["link", "add", &near, "type", "veth", "peer", "name", &far])?;
            server.ip(&["link", "set", &far, "netns", &client.name])?;
            server.ip(&["link", "set", &near, "master", "br0", "up"])?;
            client.ip(&["link", "set", &far, "name", "eth0", "up"])?;
            client.ip(&["addr", "add", &format!("{}/24", client4(i)), "dev", "eth0"])?;
            client.ip(&[
                "addr",
                "add",
                &format!("{}/64", client6(i)),
                "dev",
                "eth0",
                "nodad",
            ])?;
            list.push(client);
        }
        Ok(Network {
            server,
            clients: list,
        })
    }
}

impl Netns {
    /// A namespace behind this one, the server, as a container, a VM or a machine on another
    /// network would be: on a link of its own (`vbN` on the server's side), at
    /// [`behind4`]`(n)` and [`behind6`]`(n)`, routed through the server, which forwards (in its
    /// own namespace only). The `clients` get routes to it through the server.
    pub fn behind(&self, clients: &[Netns], n: u8) -> Result<Netns, NetnsError> {
        let ns = Netns::new(&self.prefix, &format!("b{n}"))?;
        let (near, far) = (format!("vb{n}"), format!("vbf{n}"));
        let server = self;
        // Without duplicate address detection the link-local addresses of the new link are
        // usable at once, and with them neighbour discovery: the first IPv6 connection through
        // it does not wait a second or two.
        sysctl(server, "net.ipv6.conf.default.accept_dad=0")?;
        server.ip(&["link", "add", &near, "type", "veth", "peer", "name", &far])?;
        server.ip(&["link", "set", &far, "netns", &ns.name])?;
        server.ip(&["addr", "add", &format!("198.19.{n}.1/24"), "dev", &near])?;
        let near6 = format!("fd00:5eed::b0:{n}:1/112");
        server.ip(&["addr", "add", &near6, "dev", &near, "nodad"])?;
        server.ip(&["link", "set", &near, "up"])?;
        ns.ip(&["link", "set", &far, "name", "eth0", "up"])?;
        ns.ip(&["addr", "add", &format!("{}/24", behind4(n)), "dev", "eth0"])?;
        let addr6 = format!("{}/112", behind6(n));
        ns.ip(&["addr", "add", &addr6, "dev", "eth0", "nodad"])?;
        ns.ip(&["route", "add", "default", "via", &format!("198.19.{n}.1")])?;
        let via6 = format!("fd00:5eed::b0:{n}:1");
        ns.ip(&["-6", "route", "add", "default", "via", &via6])?;
        for client in clients {
            // Added once, by whichever namespace behind comes first.
            let _ = client.ip(&["route", "add", "198.19.0.0/16", "via", SERVER4]);
            let _ = client.ip(&["-6", "route", "add", "fd00:5eed::b0:0:0/96", "via", SERVER6]);
        }
        sysctl(server, "net.ipv4.ip_forward=1")?;
        sysctl(server, "net.ipv6.conf.all.forwarding=1")?;
        Ok(ns)
    }
}

/// Sets a sysctl inside `ns`: network sysctls belong to the namespace, not to the host.
fn sysctl(ns: &Netns, setting: &str) -> Result<(), NetnsError> {
    let mut cmd = ns.command("sysctl");
    cmd.args(["-qw", setting]);
    checked(cmd, format!("netns exec {} sysctl -qw {setting}", ns.name)).map(drop)
}

/// Calls `f` every 20 ms until it holds (`Some`) or `limit` has passed (`None`): every wait of
/// the demo, the tests and the benchmarks is bounded this way.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    None
}
