//! The legitimate client: knocks, and a poller that measures when the protected port opens.
//!
//! All functions here must run on a thread inside the client namespace
//! (`Netns::run`, or a flood-free thread spawned there).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::time::TimeSpec;
use portknock::config::Secret;
use portknock::otp;
use socket2::{Domain, Socket, Type};

/// Poll interval for the protected port: finer than the latencies measured.
pub const POLL: Duration = Duration::from_micros(50);
/// Pause between knocks of a sequence, as `portknock knock` makes by default.
pub const KNOCK_GAP: Duration = Duration::from_millis(20);
/// The secret of the advanced door every benchmark configures (port 2222, knock port 2000).
pub const OPEN_SECRET: &str = "opensecret1";
/// Most connection attempts in flight while polling; older ones are closed.
const WINDOW: usize = 64;

pub fn socket_from(source: IpAddr, kind: Type) -> Socket {
    let socket =
        Socket::new(Domain::for_address(SocketAddr::new(source, 0)), kind, None).expect("socket");
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .expect("bind source");
    socket.set_nonblocking(true).expect("nonblocking");
    socket
}

/// Sends a SYN from `source` to `target` and drops the socket (the SYN is the knock; a socket
/// closed in SYN-SENT neither retransmits nor sends a RST).
pub fn syn(source: IpAddr, target: SocketAddr) {
    let socket = socket_from(source, Type::STREAM);
    let _ = socket.connect(&target.into());
}

/// Polls `target` from `source` with a fresh connection attempt every [`POLL`], waiting on
/// all attempts in flight with `ppoll`, until one completes its handshake; returns the time
/// since `start` when it did, or `None` after `give_up`. A SYN the firewall drops leaves its
/// attempt pending, so only a grant in time for some attempt ends the loop.
pub fn first_open(
    source: IpAddr,
    target: SocketAddr,
    start: Instant,
    give_up: Duration,
) -> Option<Duration> {
    let mut pending: Vec<Socket> = Vec::new();
    while start.elapsed() < give_up && !super::interrupted() {
        let socket = socket_from(source, Type::STREAM);
        let _ = socket.connect(&target.into());
        pending.push(socket);
        // Attempts whose SYN was dropped stay pending; a bounded window keeps polling cheap.
        if pending.len() > WINDOW {
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

/// One simple-mode trial: the sequence from `source` with [`KNOCK_GAP`] between knocks, then
/// the time from the last knock to the first connection to `protected` that opens.
pub fn simple_trial(
    source: IpAddr,
    server: IpAddr,
    sequence: &[u16],
    protected: u16,
    give_up: Duration,
) -> Option<Duration> {
    let (last, first) = sequence.split_last().expect("sequence");
    for &port in first {
        syn(source, SocketAddr::new(server, port));
        thread::sleep(KNOCK_GAP);
    }
    let start = Instant::now();
    syn(source, SocketAddr::new(server, *last));
    first_open(source, SocketAddr::new(server, protected), start, give_up)
}

/// One advanced-mode trial: this minute's open OTP from `source` to UDP `knock_port`, then the
/// time to the first connection to `protected` that opens.
pub fn otp_trial(
    source: IpAddr,
    server: IpAddr,
    knock_port: u16,
    protected: u16,
    give_up: Duration,
) -> Option<Duration> {
    let minute = otp::epoch_minute(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    );
    let payload = otp::payload(&Secret::new(OPEN_SECRET), source, minute);
    let udp = socket_from(source, Type::DGRAM);
    let start = Instant::now();
    udp.send_to(&payload, &SocketAddr::new(server, knock_port).into())
        .expect("send otp");
    first_open(source, SocketAddr::new(server, protected), start, give_up)
}

/// Latency samples of a series of trials and how many failed.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub samples: Vec<Duration>,
    pub failures: usize,
}

impl Series {
    pub fn push(&mut self, outcome: Option<Duration>) {
        match outcome {
            Some(d) => self.samples.push(d),
            None => self.failures += 1,
        }
    }

    pub fn trials(&self) -> usize {
        self.samples.len() + self.failures
    }

    /// The `q` quantile (nearest rank) of the successful trials, in µs.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        let mut s = self.samples.clone();
        s.sort();
        let i = ((s.len() as f64 - 1.0) * q).round() as usize;
        s.get(i).map(|d| d.as_secs_f64() * 1e6)
    }

    pub fn min_us(&self) -> Option<f64> {
        self.quantile_us(0.0)
    }
    pub fn median_us(&self) -> Option<f64> {
        self.quantile_us(0.5)
    }
    pub fn p95_us(&self) -> Option<f64> {
        self.quantile_us(0.95)
    }
    pub fn max_us(&self) -> Option<f64> {
        self.quantile_us(1.0)
    }
}
