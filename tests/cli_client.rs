//! The client commands `portknock knock` and `portknock otp`, run as the real binary against
//! listeners on loopback. No root needed; only loopback addresses are used.

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Longest any single run of the binary may take before the test gives up on it.
const RUN_BOUND: Duration = Duration::from_secs(30);
/// Longest a test waits for a knock to arrive.
const ARRIVAL_BOUND: Duration = Duration::from_secs(10);

struct Run {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn all_output(&self) -> String {
        format!("{}{}", self.stdout_text(), self.stderr)
    }
}

/// Runs the binary with `args` and extra environment, standard input not a terminal, and no
/// secret inherited from the environment. Bounded: a run that outlives RUN_BOUND is killed.
fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    run_command(Command::new(env!("CARGO_BIN_EXE_portknock")), args, env)
}

/// Like [`run_with_env`], in a network namespace of its own that has no network at all
/// (`unshare`, in a user namespace, so root is not needed), so that a name lookup cannot leave
/// the machine (docs/behaviour.md §6).
fn run_offline(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut unshare = Command::new("unshare");
    unshare.args(["--map-root-user", "--net", env!("CARGO_BIN_EXE_portknock")]);
    run_command(unshare, args, env)
}

/// Runs `command` (the binary, or a wrapper that runs it) with `args` appended, as
/// [`run_with_env`] says.
fn run_command(mut command: Command, args: &[&str], env: &[(&str, &str)]) -> Run {
    command
        .args(args)
        .env_remove("PORTKNOCK_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn portknock");
    let mut stdout_pipe = child.stdout.take().expect("stdout pipe");
    let mut stderr_pipe = child.stderr.take().expect("stderr pipe");
    let stdout_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout_pipe.read_to_end(&mut buf);
        buf
    });
    let stderr_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + RUN_BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for portknock") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("portknock {args:?} ran longer than {RUN_BOUND:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let output = Output {
        status,
        stdout: stdout_reader.join().expect("stdout reader"),
        stderr: stderr_reader.join().expect("stderr reader"),
    };
    Run {
        code: output.status.code(),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn run(args: &[&str]) -> Run {
    run_with_env(args, &[])
}

fn assert_exit(run: &Run, code: i32) {
    assert_eq!(
        run.code,
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout_text(),
        run.stderr
    );
}

/// A port on `ip` that nothing listens on (bound, then released).
fn closed_port(ip: IpAddr) -> u16 {
    let listener = TcpListener::bind((ip, 0)).expect("bind");
    listener.local_addr().expect("addr").port()
}

/// What a knock listener saw: which of the watched sockets, and the UDP payload if any.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Arrival {
    index: usize,
    datagram: Option<Vec<u8>>,
}

enum Watched {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// Watches the sockets from one thread, recording each one's first arrival in the order seen,
/// until all have arrived or ARRIVAL_BOUND has passed.
fn watch(sockets: Vec<Watched>) -> thread::JoinHandle<Vec<Arrival>> {
    for socket in &sockets {
        match socket {
            Watched::Tcp(l) => l.set_nonblocking(true).expect("nonblocking"),
            Watched::Udp(u) => u.set_nonblocking(true).expect("nonblocking"),
        }
    }
    thread::spawn(move || {
        let deadline = Instant::now() + ARRIVAL_BOUND;
        let mut arrivals: Vec<Arrival> = Vec::new();
        while arrivals.len() < sockets.len() && Instant::now() < deadline {
            for (index, socket) in sockets.iter().enumerate() {
                if arrivals.iter().any(|a| a.index == index) {
                    continue;
                }
                match socket {
                    Watched::Tcp(listener) => match listener.accept() {
                        Ok(_) => arrivals.push(Arrival {
                            index,
                            datagram: None,
                        }),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => panic!("accept: {e}"),
                    },
                    Watched::Udp(udp) => {
                        let mut buf = [0u8; 2048];
                        match udp.recv_from(&mut buf) {
                            Ok((n, _)) => arrivals.push(Arrival {
                                index,
                                datagram: Some(buf[..n].to_vec()),
                            }),
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                            Err(e) => panic!("recv: {e}"),
                        }
                    }
                }
            }
            thread::sleep(Duration::from_millis(1));
        }
        arrivals
    })
}

fn tcp_on(ip: IpAddr) -> (Watched, u16) {
    let l = TcpListener::bind((ip, 0)).expect("bind tcp");
    let port = l.local_addr().expect("addr").port();
    (Watched::Tcp(l), port)
}

fn udp_on(ip: IpAddr) -> (Watched, u16) {
    let u = UdpSocket::bind((ip, 0)).expect("bind udp");
    let port = u.local_addr().expect("addr").port();
    (Watched::Udp(u), port)
}

/// Knocks tcp, udp, tcp, tcp on `ip` and checks that all four arrive in that order.
fn knock_in_order(ip: IpAddr, extra: &[&str]) {
    let (t1, p1) = tcp_on(ip);
    let (u2, p2) = udp_on(ip);
    let (t3, p3) = tcp_on(ip);
    let (t4, p4) = tcp_on(ip);
    let watcher = watch(vec![t1, u2, t3, t4]);
    let host = ip.to_string();
    let ports = [
        p1.to_string(),
        format!("{p2}/udp"),
        p3.to_string(),
        p4.to_string(),
    ];
    let mut args = vec!["knock"];
    args.extend_from_slice(extra);
    args.push(&host);
    args.extend(ports.iter().map(String::as_str));
    let result = run(&args);
    assert_exit(&result, 0);
    let arrivals = watcher.join().expect("watcher");
    let order: Vec<usize> = arrivals.iter().map(|a| a.index).collect();
    assert_eq!(order, vec![0, 1, 2, 3], "arrivals: {arrivals:?}");
    assert_eq!(arrivals[1].datagram.as_deref(), Some(&[0u8][..]));
    let stdout = result.stdout_text();
    let expected = format!(
        "knocked {p1}/tcp on {ip}\nknocked {p2}/udp on {ip}\nknocked {p3}/tcp on {ip}\nknocked {p4}/tcp on {ip}\n"
    );
    assert_eq!(stdout, expected);
}

/// Says on the terminal that a test is skipped: written to stderr itself, past the test
/// harness, which would swallow the output of a passing test.
fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {why} ***\n");
}

#[test]
fn knock_arrives_in_order_over_ipv4() {
    knock_in_order(IpAddr::V4(Ipv4Addr::LOCALHOST), &[]);
}

#[test]
fn knock_takes_the_list_form_too() {
    // As the list writes a sequence, and as the shell splits it when written with spaces.
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for form in [
        |p: [String; 3]| vec![format!("{},{},{}", p[0], p[1], p[2])],
        |p: [String; 3]| vec![format!("{},", p[0]), format!("{},", p[1]), p[2].clone()],
        |p: [String; 3]| vec![p[0].clone(), format!("{},{}", p[1], p[2])],
    ] {
        let (t1, p1) = tcp_on(ip);
        let (u2, p2) = udp_on(ip);
        let (t3, p3) = tcp_on(ip);
        let watcher = watch(vec![t1, u2, t3]);
        let ports = form([p1.to_string(), format!("{p2}/udp"), p3.to_string()]);
        let mut args = vec!["knock", "127.0.0.1"];
        args.extend(ports.iter().map(String::as_str));
        let result = run(&args);
        assert_exit(&result, 0);
        let order: Vec<usize> = watcher
            .join()
            .expect("watcher")
            .iter()
            .map(|a| a.index)
            .collect();
        assert_eq!(order, vec![0, 1, 2], "{args:?}");
    }
}

#[test]
fn knock_with_zero_delay_and_ipv4_flag() {
    // Even without a pause each knock is a separate packet; a single-threaded watcher may see
    // two in one round, so only arrival of all of them is checked here.
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (t1, p1) = tcp_on(ip);
    let (u2, p2) = udp_on(ip);
    let watcher = watch(vec![t1, u2]);
    let result = run(&[
        "knock",
        "-4",
        "--delay",
        "0",
        "127.0.0.1",
        &p1.to_string(),
        &format!("{p2}/UDP"),
    ]);
    assert_exit(&result, 0);
    let mut seen: Vec<usize> = watcher
        .join()
        .expect("watcher")
        .iter()
        .map(|a| a.index)
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, vec![0, 1]);
}

#[test]
fn knock_over_ipv6() {
    let ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
    if UdpSocket::bind((ip, 0)).is_err() || TcpListener::bind((ip, 0)).is_err() {
        skipped("knock_over_ipv6: ::1 cannot be bound on this machine (no IPv6 loopback)");
        return;
    }
    knock_in_order(ip, &["-6"]);
}

#[test]
fn knock_ipv4_flag_refuses_an_ipv6_address() {
    let result = run(&["knock", "-4", "::1", "7000"]);
    assert_exit(&result, 2);
    assert!(
        result.stderr.contains("::1 has no IPv4 address"),
        "{}",
        result.stderr
    );
}

/// Runs `args --verify PORT` with the environment `env`, first against a listening port of
/// 127.0.0.1, then against a closed one, whose refusal the report must name. Both answer
/// before the knock already, which the report must say too. Returns the second run. (The
/// advice for a port a firewall keeps shut is checked in tests/daemon.rs.)
fn verify_open_and_closed(args: &[&str], env: &[(&str, &str)]) -> Run {
    let with_verify = |port: &str, extra: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--verify", port]);
        all.extend(extra);
        run_with_env(&all, env)
    };
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let open = listener.local_addr().expect("addr").port().to_string();
    let result = with_verify(&open, &[]);
    assert_exit(&result, 0);
    assert!(
        result
            .stdout_text()
            .contains(&format!("port {open} on 127.0.0.1 is open, but it was already open before the knock (an earlier grant?)")),
        "{}",
        result.stdout_text()
    );

    let closed = closed_port(IpAddr::V4(Ipv4Addr::LOCALHOST)).to_string();
    let result = with_verify(&closed, &["--verify-timeout", "300"]);
    assert_exit(&result, 1);
    // Nothing listens on loopback's closed port, so the kernel refuses rather than drops:
    // the report tells the refusal apart from a firewall that stayed shut, and it refused
    // before the knock too.
    let stdout = result.stdout_text();
    assert!(
        stdout.contains(&format!(
            "port {closed} on 127.0.0.1 refused the connection, as it did before the knock: the \
             firewall already lets it through (an earlier grant?), but nothing listens on port \
             {closed}"
        )),
        "{stdout}"
    );
    result
}

/// Checks that `result` is the usage error for the host `no-such-host.invalid` (looked up
/// offline: see [`run_offline`]).
fn assert_unresolvable(result: &Run) {
    assert_exit(result, 2);
    assert!(
        result
            .stderr
            .contains("cannot resolve no-such-host.invalid")
            && result
                .stderr
                .contains("check the name or use an IP address"),
        "{}",
        result.stderr
    );
}

#[test]
fn knock_verify_open_and_closed() {
    let knock_port = closed_port(IpAddr::V4(Ipv4Addr::LOCALHOST)).to_string();
    verify_open_and_closed(&["knock", "127.0.0.1", &knock_port], &[]);
}

#[test]
fn knock_rejects_bad_ports_as_usage_errors() {
    for (spec, says) in [
        (
            "70000",
            "the port (70000) is out of range; ports are 1 to 65535",
        ),
        ("0", "the port (0) is out of range; ports are 1 to 65535"),
        (
            "22/sctp",
            "the port has an unknown protocol; write PORT or PORT/tcp for TCP, PORT/udp for UDP",
        ),
        (
            "ssh",
            "the port is not a number; ports are written as digits, 1 to 65535",
        ),
        ("/udp", "the port is empty"),
        (
            "33391:udp",
            "the port is knockd's PORT:PROTOCOL; write 33391/udp",
        ),
        (
            "41873;17219",
            "the port holds ';', which is not a separator; knock ports are separated by commas: write 41873,17219",
        ),
        ("7000,,9000", "the port is empty"),
    ] {
        let result = run(&["knock", "127.0.0.1", "7000", spec]);
        assert_exit(&result, 2);
        let says = format!("invalid value '{spec}' for '<PORT[/udp]>...': {says}\n");
        assert!(result.stderr.contains(&says), "{spec}: {}", result.stderr);
    }
    let result = run(&["knock", "127.0.0.1"]);
    assert_exit(&result, 2);
}

#[test]
fn knock_unresolvable_host_is_a_usage_error() {
    assert_unresolvable(&run_offline(
        &["knock", "no-such-host.invalid", "7000"],
        &[],
    ));
}

// ---- otp ----

/// HMAC-SHA256(secret, source address bytes || minute LE) in lowercase hex, computed here
/// independently of portknock's own otp module.
fn expected_otp(secret: &[u8], source: IpAddr, minute: u32) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    match source {
        IpAddr::V4(v4) => mac.update(&v4.octets()),
        IpAddr::V6(v6) => mac.update(&v6.octets()),
    }
    mac.update(&minute.to_le_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn minute_now() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    u32::try_from(secs / 60).expect("minute fits u32")
}

/// Asserts that `payload` is a valid OTP datagram for `secret` and `source` for the current
/// minute or one next to it (the run may straddle a minute boundary).
fn assert_payload(payload: &[u8], secret: &[u8], source: IpAddr) {
    assert_eq!(payload.len(), 65, "payload {payload:?}");
    assert_eq!(payload[64], b'\n');
    let otp = std::str::from_utf8(&payload[..64]).expect("ascii hex");
    let now = minute_now();
    let candidates: Vec<String> = [now - 1, now, now + 1]
        .into_iter()
        .map(|m| expected_otp(secret, source, m))
        .collect();
    assert!(
        candidates.iter().any(|c| c == otp),
        "{otp} is none of {candidates:?}"
    );
}

#[test]
fn independent_hmac_matches_the_spec_vectors() {
    let source = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5));
    assert_eq!(
        expected_otp(b"hipjazz", source, 29_000_000),
        "83124b64b7951a5b4237bda81fa915f2ad6ac50857962f7d36636510942198cb"
    );
    assert_eq!(
        expected_otp(b"superawesome", source, 29_000_000),
        "0fe38b1ef366a485eeb2c063c8563311584edcd684ee9673eeb3bdbc608f8116"
    );
}

fn udp_receiver(ip: IpAddr) -> (UdpSocket, String) {
    let socket = UdpSocket::bind((ip, 0)).expect("bind udp");
    socket
        .set_read_timeout(Some(ARRIVAL_BOUND))
        .expect("read timeout");
    let port = socket.local_addr().expect("addr").port().to_string();
    (socket, port)
}

fn receive(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = socket.recv_from(&mut buf).expect("an OTP datagram");
    (buf[..n].to_vec(), from)
}

fn assert_nothing_received(socket: &UdpSocket) {
    socket.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 2048];
    match socket.recv_from(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("expected no datagram, got {other:?}"),
    }
}

#[test]
fn otp_sends_the_payload_with_secret_argument_and_warns() {
    let (socket, port) = udp_receiver(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let result = run(&["otp", "127.0.0.1", &port, "hipjazz"]);
    assert_exit(&result, 0);
    let (payload, from) = receive(&socket);
    assert_payload(&payload, b"hipjazz", from.ip());
    assert_payload(&payload, b"hipjazz", IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert!(
        result
            .stderr
            .contains("warning: a secret on the command line")
            && result.stderr.contains("ps, /proc"),
        "{}",
        result.stderr
    );
    assert!(
        result.stdout_text().contains(&format!(
            "sent a one-time password to {port}/udp on 127.0.0.1"
        )),
        "{}",
        result.stdout_text()
    );
    assert!(!result.all_output().contains("hipjazz"));
}

#[test]
fn otp_print_writes_only_the_payload_and_sends_nothing() {
    let (socket, port) = udp_receiver(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let result = run_with_env(
        &["otp", "127.0.0.1", &port, "--print"],
        &[("PORTKNOCK_SECRET", "superawesome")],
    );
    assert_exit(&result, 0);
    assert_payload(
        &result.stdout,
        b"superawesome",
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    );
    assert!(!result.stderr.contains("superawesome"));
    assert_nothing_received(&socket);
}

#[test]
fn otp_print_with_source_needs_no_resolvable_host() {
    let result = run_offline(
        &[
            "otp",
            "no-such-host.invalid",
            "2000",
            "--print",
            "--source",
            "203.0.113.5",
        ],
        &[("PORTKNOCK_SECRET", "hipjazz")],
    );
    assert_exit(&result, 0);
    assert_payload(
        &result.stdout,
        b"hipjazz",
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)),
    );
}

#[test]
fn otp_source_changes_the_mac_and_is_not_bound() {
    let (socket, port) = udp_receiver(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let result = run_with_env(
        &["otp", "127.0.0.1", &port, "--source", "203.0.113.5"],
        &[("PORTKNOCK_SECRET", "hipjazz")],
    );
    assert_exit(&result, 0);
    let (payload, from) = receive(&socket);
    // Sent from loopback (not bound to the NAT address), computed for the NAT address.
    assert_eq!(from.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_payload(
        &payload,
        b"hipjazz",
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)),
    );
    assert!(!result.stderr.contains("warning"), "{}", result.stderr);
}

#[test]
fn otp_secret_file_and_its_permissions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("secret");
    std::fs::write(&path, "october\r\nsecond line is ignored\n").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let path_text = path.to_str().expect("utf-8 path");

    let (socket, port) = udp_receiver(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let result = run(&["otp", "127.0.0.1", &port, "--secret-file", path_text]);
    assert_exit(&result, 0);
    assert_payload(
        &receive(&socket).0,
        b"october",
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    );
    assert!(!result.stderr.contains("warning"), "{}", result.stderr);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let result = run(&[
        "otp",
        "127.0.0.1",
        &port,
        "--secret-file",
        path_text,
        "--print",
    ]);
    assert_exit(&result, 0);
    assert!(
        result.stderr.contains("can be read by group or others"),
        "{}",
        result.stderr
    );
    assert!(!result.all_output().contains("october"));

    let missing = dir.path().join("missing");
    let result = run(&[
        "otp",
        "127.0.0.1",
        &port,
        "--secret-file",
        missing.to_str().expect("utf-8 path"),
    ]);
    assert_exit(&result, 2);
    assert!(
        result.stderr.contains("cannot read the secret file"),
        "{}",
        result.stderr
    );
}

#[test]
fn otp_over_ipv6_uses_the_16_byte_source() {
    let ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let Ok(socket) = UdpSocket::bind((ip, 0)) else {
        skipped("otp_over_ipv6_uses_the_16_byte_source: ::1 cannot be bound on this machine");
        return;
    };
    socket
        .set_read_timeout(Some(ARRIVAL_BOUND))
        .expect("read timeout");
    let port = socket.local_addr().expect("addr").port().to_string();
    let result = run_with_env(
        &["otp", "-6", "::1", &port],
        &[("PORTKNOCK_SECRET", "elite")],
    );
    assert_exit(&result, 0);
    assert_payload(&receive(&socket).0, b"elite", ip);
}

#[test]
fn otp_without_any_secret_is_a_usage_error() {
    let result = run(&["otp", "127.0.0.1", "2000"]);
    assert_exit(&result, 2);
    assert!(
        result.stderr.contains("no secret given") && result.stderr.contains("--secret-file"),
        "{}",
        result.stderr
    );
    let result = run_with_env(&["otp", "127.0.0.1", "2000"], &[("PORTKNOCK_SECRET", "")]);
    assert_exit(&result, 2);
    assert!(result.stderr.contains("is empty"), "{}", result.stderr);
}

#[test]
fn otp_verify_open_and_closed() {
    let (_socket, port) = udp_receiver(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let result = verify_open_and_closed(
        &["otp", "127.0.0.1", &port],
        &[("PORTKNOCK_SECRET", "hipjazz")],
    );
    assert!(!result.all_output().contains("hipjazz"));
}

#[test]
fn otp_usage_errors() {
    let secret = [("PORTKNOCK_SECRET", "hipjazz")];
    assert_unresolvable(&run_offline(
        &["otp", "no-such-host.invalid", "2000"],
        &secret,
    ));
    for args in [
        &["otp", "127.0.0.1", "70000"][..],
        &["otp", "127.0.0.1", "0"],
        &["otp", "127.0.0.1", "2000", "--print", "--verify", "22"],
        &["otp", "127.0.0.1", "2000", "--source", "not-an-ip"],
        &["otp", "127.0.0.1", "2000", "-4", "-6"],
        &["otp", "127.0.0.1", "2000", "--verify-timeout", "100"],
    ] {
        let result = run_with_env(args, &secret);
        assert_exit(&result, 2);
        assert!(!result.stderr.is_empty(), "{args:?}");
    }
}

#[test]
fn help_texts_have_examples() {
    for command in ["knock", "otp"] {
        let result = run(&[command, "--help"]);
        assert_exit(&result, 0);
        let stdout = result.stdout_text();
        assert!(
            stdout.contains("Examples:") && stdout.contains(&format!("portknock {command} ")),
            "{stdout}"
        );
    }
}
