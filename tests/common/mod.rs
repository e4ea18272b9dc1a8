//! Test lab: network namespaces joined by veth pairs, the real `portknock` binary as daemon
//! and client, and helpers that run code inside a namespace.
//!
//! Safety (docs/behaviour.md §6): everything happens in namespaces created here, with 198.18.0.0/15 and
//! fd00:5eed::/64 addresses; the host's namespace, firewall and interfaces are never touched.
//! Namespaces and processes are removed on drop, so also when a test panics.

#![allow(dead_code, unused_imports)] // each test binary uses a different part of the lab

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_portknock");
pub use portknock::netns::{behind4, behind6, wait_until, Netns, Network, SERVER4, SERVER6};

/// The lab's usual doors: SSH behind a three-port sequence, 2222 behind OTPs.
pub const SIMPLE: &str = "22:7000,9000,8000\n";
pub const ADVANCED: &str = "2222,2000,opensecret1,closesecret1\n";
/// Short timeouts, so that expiry can be watched within a test.
pub const FAST: &str = "FW_PORTKNOCK_KNOCK_TIMEOUT=2\nFW_PORTKNOCK_SIMPLE_OPEN=3\n";

/// docs/behaviour.md §4: a connection made right after the last knock must not wait for TCP's first SYN
/// retransmission (1 s). Tests that check it give the connection this long, not more.
pub const BEFORE_SYN_RETRANSMIT: Duration = Duration::from_millis(900);

/// How long any command a test runs may take before it is killed and the test fails: a bound
/// against hangs, not a speed target.
pub const RUN_BOUND: Duration = Duration::from_secs(30);

/// Asserts that a command succeeded, showing its output when not.
pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fails the test loudly when not root: these tests need the real kernel firewall.
/// `PORTKNOCK_SKIP_ROOT_TESTS=1` turns that into a loud skip for unprivileged local runs.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("PORTKNOCK_SKIP_ROOT_TESTS").is_ok_and(|v| v == "1") {
        skipped("this integration test needs root (network namespaces, nftables)");
        return false;
    }
    panic!("this integration test needs root (network namespaces and nftables); run as root, or set PORTKNOCK_SKIP_ROOT_TESTS=1 to skip it loudly");
}

/// Says on the terminal that a test is skipped, and why. Written to the process's stderr
/// itself, past the test harness, which would swallow the output of a passing test.
pub fn skipped(why: &str) {
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {why} ***\n");
}

/// Runs `cmd` to its end and returns its output; a run longer than [`RUN_BOUND`] is killed and
/// fails the test.
pub fn output_within(cmd: Command) -> Output {
    output_within_for(cmd, RUN_BOUND)
}

/// [`output_within`] for a command that may take longer than [`RUN_BOUND`] (a build, say).
/// Its output is read as it comes, so that a command that writes more than a pipe holds does
/// not block on it.
pub fn output_within_for(mut cmd: Command, bound: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            // Not joined: a process the command started may still hold the pipe open.
            let stderr = stderr.1.lock().map(|e| e.clone()).unwrap_or_default();
            panic!(
                "{:?} still running after {bound:?}; stderr so far:\n{}",
                cmd.get_program(),
                String::from_utf8_lossy(&stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    }
}

type Drained = (
    thread::JoinHandle<()>,
    std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
);

/// Reads `pipe` to its end on a thread of its own, into a buffer that can be looked at before.
fn drain(mut pipe: impl Read + Send + 'static) -> Drained {
    let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let shared = std::sync::Arc::clone(&buffer);
    let reader = thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n @ 1..) = pipe.read(&mut chunk) {
            shared
                .lock()
                .expect("buffer")
                .extend_from_slice(&chunk[..n]);
        }
    });
    (reader, buffer)
}

fn collect((reader, buffer): Drained) -> Vec<u8> {
    reader.join().expect("pipe reader");
    std::mem::take(&mut *buffer.lock().expect("buffer"))
}

/// A lab with the configuration written and listeners on 22 and 2222; the daemon is not
/// started. `None` (after saying so loudly) when a skip of root tests was asked for.
pub fn lab_with(clients: usize, extra: &str, simple: &str, advanced: &str) -> Option<Lab> {
    if !require_root() {
        return None;
    }
    let lab = Lab::new(clients);
    lab.write_config(extra, simple, advanced);
    lab.listen(22);
    lab.listen(2222);
    Some(lab)
}

/// Waits (bounded) until the daemon's log holds `needle` at least `n` times.
pub fn logged_times(lab: &Lab, needle: &str, n: usize) -> bool {
    wait_until(Duration::from_secs(10), || {
        lab.daemon_log().matches(needle).count() >= n
    })
    .is_some()
}

/// Asserts that the daemon's log comes to hold `needle` at least `n` times (bounded wait).
pub fn assert_logged(lab: &Lab, needle: &str, n: usize) {
    assert!(
        logged_times(lab, needle, n),
        "expected {n}× {needle:?} in the daemon log:\n{}",
        lab.daemon_log()
    );
}

/// A [`Network`] with a configuration directory, a daemon and listeners.
pub struct Lab {
    pub server: Netns,
    pub clients: Vec<Netns>,
    pub dir: tempfile::TempDir,
    daemon: Option<Child>,
}

impl Lab {
    pub fn new(clients: usize) -> Lab {
        let Network { server, clients } = Network::new("pkt", clients).expect("test network");
        Lab {
            server,
            clients,
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
        self.admin_env(args, &[])
    }

    /// Starts the daemon in the server namespace and waits (bounded) until its table is in
    /// place and it listens for knocks.
    pub fn start_daemon(&mut self) {
        self.start_daemon_via(BIN, &["serve"], &[]);
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Sends `signal` to the daemon and waits (bounded) for it to exit; a daemon still there
    /// after [`RUN_BOUND`] is killed and fails the test.
    pub fn stop_daemon(&mut self, signal: &str) {
        if let Some(mut child) = self.daemon.take() {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
            if wait_until(RUN_BOUND, || child.try_wait().is_ok_and(|s| s.is_some())).is_none() {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the daemon did not exit on kill {signal}");
            }
        }
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// A TCP echo server on `port` in the server namespace, for both address families.
    pub fn listen(&self, port: u16) {
        listen_in(&self.server, port);
    }

    /// Runs `portknock ARGS` as a client in client namespace `i`.
    pub fn client(&self, i: usize, args: &[&str]) -> Output {
        let mut cmd = self.clients[i].command(BIN);
        cmd.args(args);
        output_within(cmd)
    }

    /// A new TCP connection from client `i` to `addr:port`, made within less than TCP's first
    /// retransmission (1 s): a dropped first SYN fails it.
    pub fn connect(&self, i: usize, addr: &str, port: u16) -> TcpStream {
        let target = SocketAddr::new(ip(addr), port);
        self.clients[i]
            .run(move || TcpStream::connect_timeout(&target, BEFORE_SYN_RETRANSMIT))
            .and_then(std::convert::identity)
            .unwrap_or_else(|e| panic!("client {i} could not connect to {target}: {e}"))
    }

    /// Whether client `i` can open a new TCP connection to `addr:port` (one bounded attempt).
    pub fn can_connect(&self, i: usize, addr: &str, port: u16) -> bool {
        let target = SocketAddr::new(addr.parse().expect("addr"), port);
        self.clients[i]
            .run(move || TcpStream::connect_timeout(&target, Duration::from_millis(700)).is_ok())
            .expect("inside the client namespace")
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

/// A TCP echo server on `port` in namespace `ns`, for both address families.
pub fn listen_in(ns: &Netns, port: u16) {
    for addr in [format!("0.0.0.0:{port}"), format!("[::]:{port}")] {
        // The socket is made inside the namespace; accepting can happen anywhere.
        let listener = ns.run(move || bind_v6only(&addr)).expect("listener");
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || echo(stream));
            }
        });
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

/// The network namespaces whose name starts with `prefix`.
pub fn namespaces_named(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
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

/// Fault injection (tests/faults.rs): the daemon under a wrapper, commands with a changed
/// environment, signals that do not wait, and the kernel's view of the ruleset.
/// What a TCP segment sent by [`Lab::raw_tcp`] is.
#[derive(Debug, Clone, Copy)]
pub enum Segment {
    Syn,
    SynAck,
    Ack,
    Rst,
    Fin,
}

impl Lab {
    /// Sends one TCP segment to the server's `port` from client `i`'s namespace with `source`
    /// as its source address (the client's own, or a spoofed one in 198.18.0.0/15 or
    /// fd00:5eed::/64), through a raw socket: for packets no client sends, such as a lone ACK,
    /// or for many sources at once.
    pub fn raw_tcp(&self, i: usize, source: IpAddr, port: u16, segment: Segment) {
        let (builder, server) = match source {
            IpAddr::V4(source) => {
                let server: std::net::Ipv4Addr = SERVER4.parse().expect("server address");
                let ip = etherparse::PacketBuilder::ipv4(source.octets(), server.octets(), 64);
                (ip, IpAddr::V4(server))
            }
            IpAddr::V6(source) => {
                let server: std::net::Ipv6Addr = SERVER6.parse().expect("server address");
                let ip = etherparse::PacketBuilder::ipv6(source.octets(), server.octets(), 64);
                (ip, IpAddr::V6(server))
            }
        };
        let builder = builder.tcp(40_000, port, 1, 64_240);
        let builder = match segment {
            Segment::Syn => builder.syn(),
            Segment::SynAck => builder.syn().ack(1),
            Segment::Ack => builder.ack(1),
            Segment::Rst => builder.rst(),
            Segment::Fin => builder.fin().ack(1),
        };
        let mut packet = Vec::with_capacity(builder.size(0));
        builder.write(&mut packet, &[]).expect("build the segment");
        let to = socket2::SockAddr::from(SocketAddr::new(server, 0));
        self.clients[i]
            .run(move || -> std::io::Result<usize> {
                // IPPROTO_RAW: the packet carries its own IP header.
                let socket = socket2::Socket::new(
                    socket2::Domain::for_address(SocketAddr::new(server, 0)),
                    socket2::Type::from(libc::SOCK_RAW),
                    Some(socket2::Protocol::from(libc::IPPROTO_RAW)),
                )?;
                socket.send_to(&packet, &to)
            })
            .expect("inside the client namespace")
            .unwrap_or_else(|e| panic!("raw send of {segment:?} to {port}: {e}"));
    }
}

impl Lab {
    /// Starts the daemon as `PROGRAM ARGS` with `envs` in the server namespace, for a test that
    /// wraps `portknock serve` (in a private mount namespace, under libfaketime, ...). The
    /// wrapper must exec the daemon in the same process, so that [`Lab::daemon_pid`] is its
    /// pid. Waits (bounded) until it serves.
    pub fn start_daemon_via(&mut self, program: &str, args: &[&str], envs: &[(&str, &str)]) {
        let log = File::create(self.dir.path().join("daemon.log")).expect("log file");
        let child = self
            .server
            .command(program)
            .args(args)
            .env("PORTKNOCK_CONFIG_DIR", self.config_dir())
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the wrapped daemon");
        self.daemon = Some(child);
        wait_until(Duration::from_secs(10), || {
            self.daemon_log().contains("portknock serving")
        })
        .unwrap_or_else(|| panic!("daemon did not start; log:\n{}", self.daemon_log()));
    }

    /// Runs `portknock ARGS` in the server namespace with `envs` added to its environment.
    /// `ip` is run by its absolute path, so `envs` may set a `PATH` without it.
    pub fn admin_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(which("ip"));
        cmd.args(["netns", "exec", &self.server.name, BIN])
            .args(args)
            .env("PORTKNOCK_CONFIG_DIR", self.config_dir())
            .envs(envs.iter().copied());
        output_within(cmd)
    }

    /// Sends `signal` (e.g. `-STOP`, `-HUP`) to the daemon without waiting for anything.
    pub fn signal_daemon(&self, signal: &str) {
        let pid = self.daemon_pid().expect("the daemon runs").to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// [`Lab::ruleset`] without the elements the packet path and the daemon add at run time
    /// (they all have a timeout, so nft lists them with `expires`): the policy alone, which
    /// knocks do not change.
    pub fn policy(&self) -> String {
        let text = self.ruleset();
        let mut policy = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(found) = rest.find("elements = {") {
            // Whole lines: from the start of the line to the end of the one that closes it.
            let start = rest[..found].rfind('\n').map_or(0, |n| n + 1);
            let close = found + rest[found..].find('}').unwrap_or(rest.len() - found);
            let end = rest[close..]
                .find('\n')
                .map_or(rest.len(), |n| close + n + 1);
            policy.push_str(&rest[..start]);
            if !rest[start..end].contains("expires") {
                policy.push_str(&rest[start..end]);
            }
            rest = &rest[end..];
        }
        policy.push_str(rest);
        policy
    }

    /// `nft list ruleset` in the server namespace: the whole of what the kernel enforces there.
    pub fn ruleset(&self) -> String {
        let out = self
            .server
            .command("nft")
            .args(["list", "ruleset"])
            .output()
            .expect("nft list ruleset");
        assert!(out.status.success(), "nft list ruleset failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The absolute path of `program` on this process's `PATH`.
pub fn which(program: &str) -> PathBuf {
    find_on_path(program).unwrap_or_else(|| panic!("{program} is not on PATH"))
}

/// The absolute path of `program` on this process's `PATH`, if it is there.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// The OTP payload for `secret`, `source` and `minute`, computed here independently of
/// portknock's own code (docs/behaviour.md §3).
pub fn otp_payload(secret: &str, source: &str, minute: u32) -> Vec<u8> {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    match ip(source) {
        IpAddr::V4(a) => mac.update(&a.octets()),
        IpAddr::V6(a) => mac.update(&a.octets()),
    }
    mac.update(&minute.to_le_bytes());
    let mut payload = hex::encode(mac.finalize().into_bytes()).into_bytes();
    payload.push(b'\n');
    payload
}

/// The current Unix minute, as OTPs count it.
pub fn minute_now() -> u32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    u32::try_from(secs / 60).expect("minute fits")
}

/// Sends each payload as one UDP datagram from client `i` to `server` port `port`.
pub fn send_udp(lab: &Lab, i: usize, server: &str, port: u16, payloads: Vec<Vec<u8>>) {
    let target = SocketAddr::new(ip(server), port);
    lab.clients[i]
        .run(move || {
            let bind = if target.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let socket = std::net::UdpSocket::bind(bind).expect("udp socket");
            for payload in payloads {
                socket.send_to(&payload, target).expect("send");
            }
        })
        .expect("inside the client namespace");
}
