//! Knock-to-open latency, scale and idle cost of the real daemon, over veth between network
//! namespaces (SPEC §6 addresses only). Needs root. Run: `cargo bench --bench knock`.
//!
//! Prints `name=value` lines, then a table. Each trial knocks from its own source address, so
//! trials are independent (an OTP is accepted once per source and minute) and need no clean-up.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{IpAddr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::time::TimeSpec;
use portknock::config::Secret;
use portknock::otp;
use socket2::{Domain, Socket, Type};
use std::os::fd::AsFd;

const TRIALS: usize = 50;
/// Poll interval for the protected port: finer than the latencies measured.
const POLL: Duration = Duration::from_micros(50);
/// The most a trial waits for the port before it counts as a failure.
const GIVE_UP: Duration = Duration::from_secs(3);
/// Pause between knocks of a sequence, as `portknock knock` makes by default.
const KNOCK_GAP: Duration = Duration::from_millis(20);

fn socket_from(source: IpAddr, kind: Type) -> Socket {
    let socket =
        Socket::new(Domain::for_address(SocketAddr::new(source, 0)), kind, None).expect("socket");
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .expect("bind source");
    socket.set_nonblocking(true).expect("nonblocking");
    socket
}

/// Sends a SYN from `source` to `target` and drops the socket (the SYN is the knock).
fn syn(source: IpAddr, target: SocketAddr) {
    let socket = socket_from(source, Type::STREAM);
    let _ = socket.connect(&target.into());
}

/// Polls `target` from `source` with a fresh connection attempt every [`POLL`], waiting on
/// all attempts in flight with `ppoll`, until one completes its handshake; returns when it did,
/// or `None` after [`GIVE_UP`]. A SYN the firewall drops leaves its attempt pending for good, so
/// only a grant in time for some attempt ends the loop.
fn first_open(source: IpAddr, target: SocketAddr, start: Instant) -> Option<Duration> {
    let mut pending: Vec<Socket> = Vec::new();
    while start.elapsed() < GIVE_UP {
        let socket = socket_from(source, Type::STREAM);
        let _ = socket.connect(&target.into());
        pending.push(socket);
        // Attempts whose SYN was dropped stay pending; a bounded window keeps polling cheap.
        if pending.len() > 64 {
            pending.remove(0);
        }
        let mut fds: Vec<PollFd> = pending
            .iter()
            .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLOUT))
            .collect();
        let timeout = TimeSpec::from_duration(POLL);
        if ppoll(&mut fds, Some(timeout), None).unwrap_or(0) > 0 {
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| r.contains(PollFlags::POLLOUT)))
                .collect();
            if pending
                .iter()
                .zip(&ready)
                .any(|(s, &r)| r && matches!(s.take_error(), Ok(None)) && s.peer_addr().is_ok())
            {
                return Some(start.elapsed());
            }
            // An attempt that finished without connecting (refused) is done with.
            let mut ready = ready.into_iter();
            pending.retain(|_| !ready.next().unwrap_or(false));
        }
    }
    None
}

fn stats(name: &str, mut samples: Vec<Duration>, failures: usize) -> Vec<String> {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let pick = |q: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let lines = vec![
        format!("{name}_trials={}", samples.len() + failures),
        format!("{name}_failures={failures}"),
        format!("{name}_min_us={:.0}", us(pick(0.0))),
        format!("{name}_median_us={:.0}", us(pick(0.5))),
        format!("{name}_p95_us={:.0}", us(pick(0.95))),
        format!("{name}_max_us={:.0}", us(pick(1.0))),
    ];
    for l in &lines {
        println!("{l}");
    }
    lines
}

fn add_sources(lab: &Lab, n: usize) -> Vec<IpAddr> {
    lab.server
        .ip(&["route", "add", "198.18.1.0/24", "dev", "br0"])
        .expect("route to the extra sources");
    (0..n)
        .map(|i| {
            let addr = format!("198.18.1.{}", i + 1);
            lab.clients[0]
                .ip(&["addr", "add", &format!("{addr}/32"), "dev", "eth0"])
                .expect("extra source address");
            ip(&addr)
        })
        .collect()
}

fn simple_latency(
    lab: &Lab,
    sources: Vec<IpAddr>,
    sequence: Vec<u16>,
    protected: u16,
) -> (Vec<Duration>, usize) {
    lab.clients[0]
        .run(move || {
            let server = ip(SERVER4);
            let (mut samples, mut failures) = (Vec::new(), 0);
            for source in sources {
                let (last, first) = sequence.split_last().expect("sequence");
                for &port in first {
                    syn(source, SocketAddr::new(server, port));
                    thread::sleep(KNOCK_GAP);
                }
                let start = Instant::now();
                syn(source, SocketAddr::new(server, *last));
                match first_open(source, SocketAddr::new(server, protected), start) {
                    Some(d) => samples.push(d),
                    None => failures += 1,
                }
            }
            (samples, failures)
        })
        .expect("inside the client namespace")
}

fn otp_latency(lab: &Lab, sources: Vec<IpAddr>) -> (Vec<Duration>, usize) {
    lab.clients[0]
        .run(move || {
            let server = ip(SERVER4);
            let secret = Secret::new("opensecret1");
            let (mut samples, mut failures) = (Vec::new(), 0);
            for source in sources {
                let minute = otp::epoch_minute(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .expect("clock")
                        .as_secs(),
                );
                let payload = otp::payload(&secret, source, minute);
                let udp = socket_from(source, Type::DGRAM);
                let start = Instant::now();
                udp.send_to(&payload, &SocketAddr::new(server, 2000).into())
                    .expect("send otp");
                match first_open(source, SocketAddr::new(server, 2222), start) {
                    Some(d) => samples.push(d),
                    None => failures += 1,
                }
            }
            (samples, failures)
        })
        .expect("inside the client namespace")
}

/// CPU time (user + system, in clock ticks) the process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
}

/// `n` simple doors: protected 10000+i, sequences that share no prefix with one another.
fn many_doors(n: usize) -> String {
    let mut list = String::from("22:7000,9000,8000\n");
    for i in 1..n {
        let base = 20000 + (i as u16) * 3;
        list.push_str(&format!(
            "{}:{},{},{}\n",
            10000 + i,
            base + 2,
            base,
            base + 1
        ));
    }
    list
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benchmarks; this one only runs under `cargo bench`
    }
    if !require_root() {
        return;
    }
    let mut table = Vec::new();
    for doors in [1usize, 100, 10_000] {
        let mut lab = Lab::new(1);
        lab.write_config(
            "FW_PORTKNOCK_SIMPLE_OPEN=60\n",
            &many_doors(doors),
            "2222,2000,opensecret1,closesecret1\n",
        );
        let start = Instant::now();
        let out = lab.admin(&["apply"]);
        assert!(
            out.status.success(),
            "apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let apply = start.elapsed();
        println!("doors{doors}_apply_ms={:.1}", apply.as_secs_f64() * 1e3);
        lab.listen(22);
        lab.listen(2222);
        lab.start_daemon();
        let sources = add_sources(&lab, TRIALS * 2);
        let (samples, failures) =
            simple_latency(&lab, sources[..TRIALS].to_vec(), vec![7000, 9000, 8000], 22);
        table.push((
            format!("simple, {doors} doors"),
            stats(&format!("doors{doors}_simple"), samples, failures),
        ));
        let (samples, failures) = otp_latency(&lab, sources[TRIALS..].to_vec());
        table.push((
            format!("otp, {doors} doors"),
            stats(&format!("doors{doors}_otp"), samples, failures),
        ));
        if doors == 1 {
            let pid = lab.daemon_pid().expect("daemon");
            let before = cpu_ticks(pid);
            thread::sleep(Duration::from_secs(5));
            let ticks = cpu_ticks(pid) - before;
            // 100 ticks per second on Linux: ticks over 5 s → percent of one core.
            println!("idle_cpu_percent={:.2}", ticks as f64 / 5.0);
        }
    }
    println!(
        "\n{:<22} {:>8} {:>8} {:>8} {:>8} {:>6}",
        "scenario", "min µs", "median", "p95", "max", "fail"
    );
    for (name, lines) in table {
        let v: Vec<&str> = lines
            .iter()
            .map(|l| l.rsplit('=').next().unwrap_or(""))
            .collect();
        println!(
            "{:<22} {:>8} {:>8} {:>8} {:>8} {:>6}",
            name, v[2], v[3], v[4], v[5], v[1]
        );
    }
}
