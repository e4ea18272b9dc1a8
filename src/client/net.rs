//! The thin I/O layer of the client: name resolution, knock packets, the OTP datagram and the
//! bounded connection probe of `--verify`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::ClientError;

/// The address family `-4` / `-6` ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// Whatever the resolver prefers.
    #[default]
    Any,
    /// IPv4 only (`-4`).
    V4,
    /// IPv6 only (`-6`).
    V6,
}

impl Family {
    /// The family chosen by the `-4` and `-6` flags (clap keeps them from both being set).
    pub fn from_flags(ipv4: bool, ipv6: bool) -> Family {
        match (ipv4, ipv6) {
            (true, _) => Family::V4,
            (false, true) => Family::V6,
            (false, false) => Family::Any,
        }
    }

    fn admits(self, addr: &SocketAddr) -> bool {
        match self {
            Family::Any => true,
            Family::V4 => addr.is_ipv4(),
            Family::V6 => addr.is_ipv6(),
        }
    }
}

/// An IPv4-mapped IPv6 address travels as IPv4 on the wire, and the server sees the 4-byte
/// address, so it is handled as IPv4 throughout.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// Picks the first of the resolver's answers (they come in order of preference) that belongs to
/// `family`. The whole socket address is kept so that an IPv6 scope id survives.
pub fn pick_address(
    candidates: impl IntoIterator<Item = SocketAddr>,
    family: Family,
) -> Option<SocketAddr> {
    candidates
        .into_iter()
        .map(canonical)
        .find(|addr| family.admits(addr))
}

/// Resolves HOST (a name, an IP address, or an IPv6 address in brackets) to one address of the
/// wanted family; its port is 0, to be set with [`with_port`].
pub fn resolve(host: &str, family: Family) -> Result<SocketAddr, ClientError> {
    let name = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    let answers = (name, 0)
        .to_socket_addrs()
        .map_err(|err| ClientError::Resolve {
            host: host.to_string(),
            reason: err.to_string(),
        })?;
    pick_address(answers, family).ok_or_else(|| match family {
        Family::V6 => ClientError::NoAddressOfFamily {
            host: host.to_string(),
            family: "IPv6",
            flag: "-6",
        },
        Family::V4 => ClientError::NoAddressOfFamily {
            host: host.to_string(),
            family: "IPv4",
            flag: "-4",
        },
        Family::Any => ClientError::Resolve {
            host: host.to_string(),
            reason: "no address".to_string(),
        },
    })
}

/// `addr` with its port set to `port`.
pub fn with_port(mut addr: SocketAddr, port: u16) -> SocketAddr {
    addr.set_port(port);
    addr
}

/// What a non-blocking connect said straight away.
enum Started {
    /// The SYN is out; the answer is still to come.
    Pending(Socket),
    /// The handshake finished within the call (loopback can do that).
    Connected,
    /// The peer already refused.
    Refused(io::Error),
}

/// Starts a TCP connection attempt without waiting for it. The kernel has put the SYN on the
/// wire (or in the neighbour queue, which keeps it until the next hop resolves) by the time
/// `connect` returns `EINPROGRESS`.
fn start_connect(addr: SocketAddr) -> io::Result<Started> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => Ok(Started::Connected),
        Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => Ok(Started::Pending(socket)),
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => Ok(Started::Refused(err)),
        Err(err) => Err(err),
    }
}

/// A simple-mode TCP knock: one connection attempt, abandoned once the SYN is out. Dropping the
/// socket in SYN-SENT sends nothing more; a SYN-ACK that still comes back is answered with a RST
/// by the kernel, which is what any closed client port does.
pub fn tcp_knock(addr: SocketAddr) -> io::Result<()> {
    start_connect(addr).map(drop)
}

fn unbound_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let any = match addr {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    UdpSocket::bind(SocketAddr::new(any, 0))
}

/// A simple-mode UDP knock: one datagram of one byte (what knockd's `knock` sends; some paths
/// drop empty datagrams).
pub fn udp_knock(addr: SocketAddr) -> io::Result<()> {
    send_datagram(None, addr, &[0])
}

/// The local address the kernel's route to `addr` uses: the source the server sees when no NAT
/// is in between. Connecting a UDP socket only picks the route; no packet is sent. The socket is
/// returned so that the OTP goes out from exactly that address.
pub fn route_source(addr: SocketAddr) -> io::Result<(UdpSocket, IpAddr)> {
    let socket = unbound_udp(addr)?;
    socket.connect(addr)?;
    let local = socket.local_addr()?.ip().to_canonical();
    Ok((socket, local))
}

/// Sends `payload` as one datagram to `dest`, over `connected` (a socket from [`route_source`]
/// already connected to `dest`) when there is one, else from a fresh unbound socket.
pub fn send_datagram(
    connected: Option<UdpSocket>,
    dest: SocketAddr,
    payload: &[u8],
) -> io::Result<()> {
    let sent = match connected {
        Some(socket) => socket.send(payload)?,
        None => unbound_udp(dest)?.send_to(payload, dest)?,
    };
    if sent != payload.len() {
        return Err(io::Error::other(format!(
            "only {sent} of {} bytes were sent",
            payload.len()
        )));
    }
    Ok(())
}

/// How `--verify` probes a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePlan {
    /// Give up after this long.
    pub total: Duration,
    /// Gap between the first two attempts; each later gap doubles up to `max_gap`.
    pub first_gap: Duration,
    /// Largest gap between two attempts.
    pub max_gap: Duration,
    /// How often pending attempts are checked.
    pub tick: Duration,
}

impl Default for ProbePlan {
    /// Attempts start 5 ms apart, so a port that opens a few milliseconds after the knock is
    /// seen at once, and spread out to 250 ms, so a slow path costs only a handful of sockets.
    /// An attempt is never given up before the end: its SYN may have been dropped while the port
    /// was closed and the kernel retransmits it, and on a long path its answer takes a while.
    fn default() -> Self {
        ProbePlan {
            total: Duration::from_secs(2),
            first_gap: Duration::from_millis(5),
            max_gap: Duration::from_millis(250),
            tick: Duration::from_millis(5),
        }
    }
}

/// Most connection attempts one probe makes, whatever the plan says.
pub const MAX_PROBE_ATTEMPTS: usize = 64;

/// When, counted from the start of the probe, each connection attempt starts.
pub fn attempt_schedule(plan: &ProbePlan) -> Vec<Duration> {
    let mut offsets = Vec::new();
    let mut at = Duration::ZERO;
    let mut gap = plan.first_gap.max(Duration::from_millis(1));
    while at < plan.total && offsets.len() < MAX_PROBE_ATTEMPTS {
        offsets.push(at);
        at += gap;
        gap = (gap * 2).min(plan.max_gap.max(gap));
    }
    offsets
}

/// What a probe found.
#[derive(Debug)]
pub enum Probe {
    /// A connection was established this long after the probe began.
    Open {
        /// Time from the start of the probe to the connection.
        after: Duration,
    },
    /// No attempt connected within the plan's total time.
    Closed {
        /// How long the probe tried.
        waited: Duration,
        /// The last failure an attempt reported, if any answered at all.
        last_error: Option<io::Error>,
    },
}

/// Tries to connect to `addr` on the plan's schedule until one attempt connects or the time is
/// up. Errors only when no socket can be made at all.
pub fn probe(addr: SocketAddr, plan: &ProbePlan) -> io::Result<Probe> {
    let start = Instant::now();
    let schedule = attempt_schedule(plan);
    let tick = plan.tick.max(Duration::from_millis(1));
    let max_rounds = plan.total.as_millis() / tick.as_millis() + schedule.len() as u128 + 2;
    let mut next = 0;
    let mut pending: Vec<Socket> = Vec::new();
    let mut last_error = None;
    for _ in 0..max_rounds {
        let elapsed = start.elapsed();
        while next < schedule.len() && schedule[next] <= elapsed {
            next += 1;
            match start_connect(addr) {
                Ok(Started::Pending(socket)) => pending.push(socket),
                Ok(Started::Connected) => {
                    return Ok(Probe::Open {
                        after: start.elapsed(),
                    })
                }
                Ok(Started::Refused(err)) => last_error = Some(err),
                // No socket or no route before anything answered: waiting will not help.
                Err(err) if pending.is_empty() && last_error.is_none() => return Err(err),
                Err(err) => last_error = Some(err),
            }
        }
        let mut still_pending = Vec::with_capacity(pending.len());
        for socket in pending {
            match socket.take_error() {
                Ok(Some(err)) | Err(err) => last_error = Some(err),
                // getpeername fails with ENOTCONN until the handshake completes.
                Ok(None) if socket.peer_addr().is_ok() => {
                    return Ok(Probe::Open {
                        after: start.elapsed(),
                    })
                }
                Ok(None) => still_pending.push(socket),
            }
        }
        pending = still_pending;
        let elapsed = start.elapsed();
        if elapsed >= plan.total {
            break;
        }
        std::thread::sleep(tick.min(plan.total - elapsed));
    }
    Ok(Probe::Closed {
        waited: start.elapsed(),
        last_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddrV6;

    fn sa(text: &str) -> SocketAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn family_from_flags() {
        assert_eq!(Family::from_flags(false, false), Family::Any);
        assert_eq!(Family::from_flags(true, false), Family::V4);
        assert_eq!(Family::from_flags(false, true), Family::V6);
    }

    #[test]
    fn pick_keeps_resolver_order_and_filters_family() {
        let answers = [sa("[2001:db8::1]:0"), sa("192.0.2.1:0"), sa("192.0.2.2:0")];
        assert_eq!(pick_address(answers, Family::Any), Some(answers[0]));
        assert_eq!(pick_address(answers, Family::V4), Some(answers[1]));
        assert_eq!(pick_address(answers, Family::V6), Some(answers[0]));
        assert_eq!(pick_address([sa("192.0.2.1:0")], Family::V6), None);
        assert_eq!(pick_address([], Family::Any), None);
    }

    #[test]
    fn pick_treats_v4_mapped_as_ipv4() {
        let mapped = [sa("[::ffff:192.0.2.7]:0")];
        assert_eq!(pick_address(mapped, Family::V4), Some(sa("192.0.2.7:0")));
        assert_eq!(pick_address(mapped, Family::V6), None);
    }

    #[test]
    fn pick_keeps_the_scope_id() {
        let scoped = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().expect("ip"), 0, 0, 3));
        assert_eq!(pick_address([scoped], Family::V6), Some(scoped));
    }

    #[test]
    fn resolve_literals_and_brackets() {
        assert_eq!(
            resolve("127.0.0.1", Family::Any).ok(),
            Some(sa("127.0.0.1:0"))
        );
        assert_eq!(resolve("[::1]", Family::V6).ok(), Some(sa("[::1]:0")));
        let err = resolve("127.0.0.1", Family::V6)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("127.0.0.1 has no IPv6 address — leave out -6 or use an address of that family")
        );
    }

    #[test]
    fn with_port_sets_only_the_port() {
        assert_eq!(with_port(sa("192.0.2.1:0"), 22), sa("192.0.2.1:22"));
    }

    #[test]
    fn default_schedule_starts_fine_and_spreads_out() {
        let offsets = attempt_schedule(&ProbePlan::default());
        let ms: Vec<u128> = offsets.iter().map(Duration::as_millis).collect();
        assert_eq!(&ms[..6], &[0, 5, 15, 35, 75, 155]);
        assert!(ms.windows(2).all(|w| w[1] - w[0] <= 250), "{ms:?}");
        assert!(ms.iter().all(|&m| m < 2000), "{ms:?}");
        assert_eq!(ms.len(), 13, "{ms:?}");
    }

    #[test]
    fn schedule_is_bounded_even_for_silly_plans() {
        let plan = ProbePlan {
            total: Duration::from_secs(3600),
            first_gap: Duration::ZERO,
            max_gap: Duration::ZERO,
            tick: Duration::ZERO,
        };
        assert_eq!(attempt_schedule(&plan).len(), MAX_PROBE_ATTEMPTS);
        let none = ProbePlan {
            total: Duration::ZERO,
            ..ProbePlan::default()
        };
        assert!(attempt_schedule(&none).is_empty());
    }
}
