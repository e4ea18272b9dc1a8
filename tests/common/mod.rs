//! Test lab: network namespaces joined by veth pairs, the real `portknock` binary as daemon
//! and client, and helpers that run code inside a namespace.
//!
//! Safety (SPEC §6): everything happens in namespaces created here, with 198.18.0.0/15 and
//! fd00:5eed::/64 addresses; the host's namespace, firewall and interfaces are never touched.
//! Namespaces and processes are removed on drop, so also when a test panics.

#![allow(dead_code)] // each test binary uses a different part of the lab

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

pub const BIN: &str = env!("CARGO_BIN_EXE_portknock");
pub const SERVER4: &str = "198.18.0.1";
pub const SERVER6: &str = "fd00:5eed::1";

/// Fails the test loudly when not root: these tests need the real kernel firewall.
/// `PORTKNOCK_SKIP_ROOT_TESTS=1` turns that into a loud skip for unprivileged local runs.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("PORTKNOCK_SKIP_ROOT_TESTS").is_some() {
        eprintln!(
            "\n*** SKIPPED: this integration test needs root (network namespaces, nftables) ***\n"
        );
        return false;
    }
    panic!("this integration test needs root (network namespaces and nftables); run as root, or set PORTKNOCK_SKIP_ROOT_TESTS=1 to skip it loudly");
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace, removed on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    fn new(role: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("pkt-{}-{}-{}", std::process::id(), n, role);
        run_ok("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Runs `ip ARGS` inside the namespace, panicking on failure.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["netns", "exec", &self.name, "ip"];
        full.extend_from_slice(args);
        run_ok("ip", &full);
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `f` on a thread that has entered this namespace, and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        thread::spawn(move || {
            enter(&path);
            f()
        })
        .join()
        .expect("thread inside the namespace panicked")
    }
}

fn enter(path: &str) {
    let file = File::open(path).expect("open namespace file");
    setns(file, CloneFlags::CLONE_NEWNET).expect("setns into the test namespace");
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill whatever still runs inside, then delete: a namespace with processes lingers.
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            });
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run_ok(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A server namespace with a bridge and `clients` client namespaces on it.
/// Server: 198.18.0.1 and fd00:5eed::1; client i: 198.18.0.(i+2) and fd00:5eed::(i+2).
pub struct Lab {
    pub server: Netns,
    pub clients: Vec<Netns>,
    pub dir: tempfile::TempDir,
    daemon: Option<Child>,
}

impl Lab {
    pub fn new(clients: usize) -> Lab {
        let server = Netns::new("srv");
        server.ip(&["link", "add", "br0", "type", "bridge"]);
        server.ip(&["link", "set", "br0", "up"]);
        server.ip(&["addr", "add", "198.18.0.1/24", "dev", "br0"]);
        server.ip(&["addr", "add", "fd00:5eed::1/64", "dev", "br0", "nodad"]);
        let mut list = Vec::new();
        for i in 0..clients {
            let client = Netns::new(&format!("c{i}"));
            let (a, b) = (format!("vs{i}"), format!("vc{i}"));
            server.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
            server.ip(&["link", "set", &b, "netns", &client.name]);
            server.ip(&["link", "set", &a, "master", "br0", "up"]);
            client.ip(&["link", "set", &b, "name", "eth0", "up"]);
            client.ip(&[
                "addr",
                "add",
                &format!("198.18.0.{}/24", i + 2),
                "dev",
                "eth0",
            ]);
            client.ip(&[
                "addr",
                "add",
                &format!("fd00:5eed::{}/64", i + 2),
                "dev",
                "eth0",
                "nodad",
            ]);
            list.push(client);
        }
        Lab {
            server,
            clients: list,
            dir: tempfile::tempdir().expect("tempdir"),
            daemon: None,
        }
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Writes portknock.conf (with the test's extra lines) and the two lists.
    pub fn write_config(&self, extra_conf: &str, simple: &str, advanced: &str) {
        let dir = self.config_dir();
        std::fs::create_dir_all(&dir).expect("config dir");
        let conf = format!(
            "FW_PORTKNOCK=yes\nFW_PORTKNOCK_SIMPLE=yes\nFW_PORTKNOCK_ADVANCED=yes\nFW_PORTKNOCK_STATE_DIR={}\n{extra_conf}\n",
            self.state_dir().display()
        );
        std::fs::write(dir.join("portknock.conf"), conf).expect("write conf");
        std::fs::write(dir.join("simple-portknock-list"), simple).expect("write simple list");
        let adv = dir.join("advanced-portknock-list");
        std::fs::write(&adv, advanced).expect("write advanced list");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&adv, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    /// Runs `portknock ARGS --config-dir DIR` in the server namespace.
    pub fn admin(&self, args: &[&str]) -> Output {
        self.server
            .command(BIN)
            .args(args)
            .env("PORTKNOCK_CONFIG_DIR", self.config_dir())
            .output()
            .expect("run portknock")
    }

    /// Starts the daemon in the server namespace and waits (bounded) until its table is in
    /// place and it listens for knocks.
    pub fn start_daemon(&mut self) {
        let log = File::create(self.dir.path().join("daemon.log")).expect("log file");
        let child = self
            .server
            .command(BIN)
            .args(["serve"])
            .env("PORTKNOCK_CONFIG_DIR", self.config_dir())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        self.daemon = Some(child);
        wait_until(Duration::from_secs(10), || {
            self.daemon_log().contains("portknock serving")
        })
        .unwrap_or_else(|| panic!("daemon did not start; log:\n{}", self.daemon_log()));
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Sends `signal` to the daemon and waits for it to exit.
    pub fn stop_daemon(&mut self, signal: &str) {
        if let Some(mut child) = self.daemon.take() {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// A TCP echo server on `port` in the server namespace, for both address families.
    pub fn listen(&self, port: u16) {
        for addr in [format!("0.0.0.0:{port}"), format!("[::]:{port}")] {
            let path = format!("/var/run/netns/{}", self.server.name);
            let (tx, rx) = std::sync::mpsc::channel();
            thread::spawn(move || {
                enter(&path);
                let listener = bind_v6only(&addr);
                let _ = tx.send(());
                for stream in listener.incoming().flatten() {
                    thread::spawn(move || echo(stream));
                }
            });
            rx.recv_timeout(Duration::from_secs(5))
                .expect("listener up");
        }
    }

    /// Runs `portknock ARGS` as a client in client namespace `i`.
    pub fn client(&self, i: usize, args: &[&str]) -> Output {
        self.clients[i]
            .command(BIN)
            .args(args)
            .output()
            .expect("run client")
    }

    /// Whether client `i` can open a new TCP connection to `addr:port` (one bounded attempt).
    pub fn can_connect(&self, i: usize, addr: &str, port: u16) -> bool {
        let target = SocketAddr::new(addr.parse().expect("addr"), port);
        self.clients[i]
            .run(move || TcpStream::connect_timeout(&target, Duration::from_millis(700)).is_ok())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.daemon_log());
        }
    }
}

fn bind_v6only(addr: &str) -> TcpListener {
    let addr: SocketAddr = addr.parse().expect("listen addr");
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    if addr.is_ipv6() {
        socket.set_only_v6(true).expect("v6only");
    }
    socket.set_reuse_address(true).expect("reuse");
    socket.bind(&addr.into()).expect("bind");
    socket.listen(128).expect("listen");
    socket.into()
}

fn echo(mut stream: TcpStream) {
    let mut buf = [0u8; 512];
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 || stream.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// Polls `f` until it returns true or `limit` passes.
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

/// Whether an established connection still carries data both ways.
pub fn still_works(stream: &mut TcpStream) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 4];
    stream.write_all(b"ping").is_ok() && stream.read_exact(&mut buf).is_ok() && &buf == b"ping"
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}
