//! The client side (docs/behaviour.md §5): `portknock knock` sends a simple-mode sequence of connection
//! attempts, `portknock otp` sends an advanced-mode one-time password.
//!
//! The decisions (where the secret comes from, which address the server sees, what to print) are
//! plain functions tested without a network; [`net`] is the thin layer that touches sockets and
//! [`secret`] the one that reads files, the environment and the terminal. Ports and knock ports
//! are parsed by [`crate::config`], as in the door lists.

pub mod net;
pub mod secret;

use std::fmt;
use std::io::{self, IsTerminal};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::config::Secret;
use crate::otp;
use crate::port::{KnockPort, Proto};
use crate::report::Report;

use net::{Probe, ProbePlan};
use secret::{SecretSource, SecretWarning};

pub use net::Family;

/// `--verify PORT`: afterwards, try the protected port for a bounded time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verify {
    /// The protected port.
    pub port: u16,
    /// How long to keep trying, in milliseconds.
    pub timeout_ms: u64,
}

/// What `portknock knock` is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnockRequest {
    /// The server: a host name or an address.
    pub host: String,
    /// The knock ports, in order.
    pub ports: Vec<KnockPort>,
    /// The pause between two knocks.
    pub delay: Duration,
    /// Which address family reaches the server.
    pub family: Family,
    /// Whether to try the protected port afterwards.
    pub verify: Option<Verify>,
}

/// What `portknock otp` is asked to do.
#[derive(Debug, Clone)]
pub struct OtpRequest {
    /// The server: a host name or an address.
    pub host: String,
    /// The door's UDP knock port.
    pub knock_port: u16,
    /// The secret given on the command line, if any.
    pub secret: Option<Secret>,
    /// The file whose first line is the secret, if given.
    pub secret_file: Option<PathBuf>,
    /// The source address the server sees, when it is not this machine's own (behind NAT).
    pub source: Option<IpAddr>,
    /// Return the payload instead of sending it.
    pub print: bool,
    /// Which address family reaches the server.
    pub family: Family,
    /// Whether to try the protected port afterwards.
    pub verify: Option<Verify>,
}

/// Default pause between two knocks, in milliseconds. Not 0 (knockd's `knock` uses 0): the
/// daemon arms the kernel for the final knock only after it has seen the one before (docs/behaviour.md §4),
/// so a gap longer than its p99 knock-handling time lets the final knock open the port
/// synchronously; it also keeps back-to-back SYNs from being reordered on the way.
pub const DEFAULT_DELAY_MS: u64 = 20;

/// Largest accepted `--delay`, in milliseconds: well past any sensible knock timeout, and it
/// keeps a run bounded.
pub const MAX_DELAY_MS: u64 = 60_000;

/// How long `otp` waits after sending when there is no `--verify`. The OTP check needs the
/// daemon (docs/behaviour.md §4), so the grant lands a little after the datagram; returning earlier would let
/// `portknock otp … && ssh …` send its first SYN into the still-closed port and lose a second to
/// TCP's retransmission timer. 20 ms is chosen to be well above the daemon's p99 knock-to-grant
/// time (a datagram read, an HMAC or three, a state-file write and a netlink message).
pub const OTP_GRANT_WAIT: Duration = Duration::from_millis(20);

/// Default bound of `--verify`, in milliseconds.
pub const DEFAULT_VERIFY_TIMEOUT_MS: u64 = 2_000;

/// Largest accepted `--verify-timeout`, in milliseconds.
pub const MAX_VERIFY_TIMEOUT_MS: u64 = 60_000;

/// Environment variable that may hold the OTP secret.
pub const SECRET_ENV: &str = "PORTKNOCK_SECRET";

/// Everything that can stop a client command, each saying what failed and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// HOST did not resolve.
    #[error("cannot resolve {host}: {reason} — check the name or use an IP address")]
    Resolve {
        /// The name as given.
        host: String,
        /// The resolver's answer.
        reason: String,
    },
    /// HOST resolved, but not to an address of the family asked for with `-4`/`-6`.
    #[error("{host} has no {family} address — leave out {flag} or use an address of that family")]
    NoAddressOfFamily {
        /// The name as given.
        host: String,
        /// "IPv4" or "IPv6".
        family: &'static str,
        /// "-4" or "-6".
        flag: &'static str,
    },
    /// The kernel refused to send a knock.
    #[error("could not knock {knock} on {addr}: {error} — check the address and the route to it")]
    Knock {
        /// The knock port, shown as e.g. "7000/tcp".
        knock: KnockPort,
        /// Where it was sent.
        addr: IpAddr,
        /// The error the kernel gave.
        error: io::Error,
    },
    /// No route to HOST, so the source address the server would see is unknown.
    #[error(
        "cannot find the local address that reaches {addr}: {error} — check the network, or \
         give the address the server sees with --source"
    )]
    Route {
        /// The target address.
        addr: IpAddr,
        /// The error the kernel gave.
        error: io::Error,
    },
    /// The OTP datagram could not be sent.
    #[error("could not send the one-time password to {knock} on {addr}: {error} — check the address and the route to it")]
    Send {
        /// The target address.
        addr: IpAddr,
        /// The door's knock port, always UDP.
        knock: KnockPort,
        /// The error the kernel gave.
        error: io::Error,
    },
    /// A socket for `--verify` could not be made.
    #[error("cannot probe port {port} on {addr}: {error} — check the address and the route to it")]
    Probe {
        /// The target address.
        addr: IpAddr,
        /// The probed port.
        port: u16,
        /// The error the kernel gave.
        error: io::Error,
    },
    /// No secret anywhere and no terminal to ask on.
    #[error(
        "no secret given and standard input is not a terminal to ask on — pass --secret-file \
         FILE, set {SECRET_ENV}, or give SECRET as an argument"
    )]
    NoSecret,
    /// The secret source held an empty secret.
    #[error("the secret from {from} is empty — put the door's secret there")]
    EmptySecret {
        /// Where it came from, e.g. "the file /x" or "PORTKNOCK_SECRET".
        from: String,
    },
    /// The secret file could not be read.
    #[error("cannot read the secret file {}: {error} — check the path and its permissions", path.display())]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        error: io::Error,
    },
    /// The secret file's first line is implausibly long (or the file is not a text file).
    #[error(
        "the first line of the secret file {} is longer than {max} bytes — the file should hold \
         the secret on its first line",
        path.display()
    )]
    SecretFileLineTooLong {
        /// The file.
        path: PathBuf,
        /// The bound.
        max: usize,
    },
    /// The terminal prompt failed.
    #[error(
        "cannot read the secret from the terminal: {0} — use --secret-file FILE or {SECRET_ENV}"
    )]
    Prompt(io::Error),
    /// The clock reads before 1970, so no minute can be computed.
    #[error(
        "the system clock is set before 1970 — set the clock: one-time passwords depend on it"
    )]
    Clock,
}

/// How a target is named in messages: the address, and the name too when one was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLabel {
    host: String,
    addr: IpAddr,
}

impl HostLabel {
    /// A label for `host` as typed, resolved to `addr`.
    pub fn new(host: &str, addr: IpAddr) -> Self {
        HostLabel {
            host: host.to_string(),
            addr,
        }
    }
}

impl fmt::Display for HostLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) if ip.to_canonical() == self.addr => write!(f, "{}", self.addr),
            _ => write!(f, "{} ({})", self.host, self.addr),
        }
    }
}

/// Which simple-mode or advanced-mode advice to give when `--verify` finds the port closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `portknock knock`.
    Simple,
    /// `portknock otp`.
    Otp,
}

/// How long `--verify` first tries the port before the knock, to tell a port the knock opened
/// from one an earlier grant keeps open. A port that has not answered by then counts as closed
/// before the knock: a path slower than this is credited to the knock, as without the check.
const BEFORE_KNOCK_BOUND: Duration = Duration::from_millis(500);

/// Whether the probe's connection was refused: the SYN got through the firewall and nothing
/// listens there. A firewall that drops a SYN sends nothing back.
fn refused(probe: &Probe) -> bool {
    matches!(probe, Probe::Closed { last_error: Some(e), .. } if e.kind() == io::ErrorKind::ConnectionRefused)
}

/// The line `--verify` prints, and whether it counts as success. `before` tells whether the
/// port already answered (connected or refused) before the knock: then the knock cannot be
/// credited with what `probe` found. A port still open is a success all the same, as what
/// `knock … --verify 22 && ssh` needs holds.
pub fn verify_report(
    mode: Mode,
    port: u16,
    target: &HostLabel,
    before: bool,
    probe: &Probe,
) -> (bool, String) {
    match probe {
        Probe::Open { .. } if before => (
            true,
            format!(
                "port {port} on {target} is open, but it was already open before the knock (an \
                 earlier grant?), so this does not show that the knock works"
            ),
        ),
        Probe::Open { after } => (
            true,
            format!(
                "port {port} on {target} is open (answered after {} ms)",
                after.as_millis()
            ),
        ),
        Probe::Closed { .. } if refused(probe) && before => (
            false,
            format!(
                "port {port} on {target} refused the connection, as it did before the knock: the \
                 firewall already lets it through (an earlier grant?), but nothing listens on \
                 port {port}"
            ),
        ),
        // No knocking will change a refusal.
        Probe::Closed { .. } if refused(probe) => (
            false,
            format!(
                "port {port} on {target} refused the connection: the firewall let it through, so \
                 the knock worked, but nothing listens on port {port}"
            ),
        ),
        Probe::Closed { waited, last_error } => {
            let advice = match mode {
                Mode::Simple => {
                    "check the sequence, its order and protocols, and that the daemon runs"
                }
                Mode::Otp => {
                    "check the secret, the clock, the source address (--source when behind NAT), \
                     and that the daemon runs; a second knock with the same secret in the same \
                     minute is rejected as a replay, so wait for the next minute before retrying"
                }
            };
            let seen = match last_error {
                Some(err) => format!(", last answer: {err}"),
                None => String::new(),
            };
            (
                false,
                format!(
                    "port {port} on {target} did not open within {} ms{seen}: {advice}",
                    waited.as_millis()
                ),
            )
        }
    }
}

/// Tries the port of `check` on the server for up to `within`.
fn probe(addr: SocketAddr, check: Verify, within: Duration) -> Result<Probe, ClientError> {
    let plan = ProbePlan {
        total: within,
        ..ProbePlan::default()
    };
    net::probe(net::with_port(addr, check.port), &plan).map_err(|error| ClientError::Probe {
        addr: addr.ip(),
        port: check.port,
        error,
    })
}

/// Whether the port of `check` answers before the knock (see [`BEFORE_KNOCK_BOUND`]).
fn answers_before(addr: SocketAddr, check: Verify) -> Result<bool, ClientError> {
    let within = BEFORE_KNOCK_BOUND.min(Duration::from_millis(check.timeout_ms));
    let found = probe(addr, check, within)?;
    Ok(matches!(found, Probe::Open { .. }) || refused(&found))
}

/// Tries the port of `check` on the server for up to its timeout and reports whether it
/// opened; `before` tells whether it answered before the knock.
fn verify(
    mode: Mode,
    addr: SocketAddr,
    check: Verify,
    before: bool,
    label: &HostLabel,
    report: &mut Report,
) -> Result<(), ClientError> {
    let found = probe(addr, check, Duration::from_millis(check.timeout_ms))?;
    let (open, line) = verify_report(mode, check.port, label, before, &found);
    report.line(line);
    report.held = open;
    Ok(())
}

/// `portknock knock`: one connection attempt or datagram per port, in order, then the optional
/// `--verify`.
pub fn knock(request: &KnockRequest) -> Result<Report, ClientError> {
    let addr = net::resolve(&request.host, request.family)?;
    let label = HostLabel::new(&request.host, addr.ip());
    let before = request
        .verify
        .map(|check| answers_before(addr, check))
        .transpose()?;
    let mut report = Report::new();
    for (i, knock) in request.ports.iter().enumerate() {
        if i > 0 && !request.delay.is_zero() {
            std::thread::sleep(request.delay);
        }
        let target = net::with_port(addr, knock.port);
        let sent = match knock.proto {
            Proto::Tcp => net::tcp_knock(target),
            Proto::Udp => net::udp_knock(target),
        };
        sent.map_err(|error| ClientError::Knock {
            knock: *knock,
            addr: addr.ip(),
            error,
        })?;
        report.line(format!("knocked {knock} on {label}"));
    }
    if let (Some(check), Some(before)) = (request.verify, before) {
        verify(Mode::Simple, addr, check, before, &label, &mut report)?;
    }
    Ok(report)
}

/// `portknock otp`: computes the one-time password for this minute and the source address the
/// server sees, then returns it (`--print`) or sends it as one UDP datagram.
pub fn otp(request: &OtpRequest) -> Result<Report, ClientError> {
    let mut report = Report::new();
    let env_secret = std::env::var_os(SECRET_ENV);
    let choice = secret::choose_source(
        request.secret.is_some(),
        request.secret_file.as_deref(),
        env_secret.is_some(),
        io::stdin().is_terminal(),
    )?;
    if choice == SecretSource::Argument {
        report.note(warning(&SecretWarning::OnCommandLine));
    }
    let knock = KnockPort::udp(request.knock_port);
    let load_secret = |report: &mut Report| -> Result<Secret, ClientError> {
        let prompt = format!("Secret for {knock} on {}: ", request.host);
        let (secret, warnings) = secret::obtain(
            choice,
            request.secret.as_ref(),
            env_secret.as_deref(),
            &prompt,
        )?;
        warnings.iter().for_each(|w| report.note(warning(w)));
        Ok(secret)
    };

    // Printing with a known source needs nothing from the network, so `--print --source` also
    // works for a host this machine cannot resolve: the payload is sent from elsewhere.
    if let (true, Some(source_ip)) = (request.print, request.source) {
        let secret = load_secret(&mut report)?;
        (report.out, _) = current_payload(&secret, source_ip.to_canonical())?;
        return Ok(report);
    }

    let addr = net::resolve(&request.host, request.family)?;
    let dest = net::with_port(addr, request.knock_port);
    let secret = load_secret(&mut report)?;
    let (source_ip, route) = match request.source {
        // The NAT's outside address is not ours: the socket must not be bound to it.
        Some(ip) => (ip.to_canonical(), None),
        None => {
            let (socket, ip) = net::route_source(dest).map_err(|error| ClientError::Route {
                addr: addr.ip(),
                error,
            })?;
            (ip, Some(socket))
        }
    };
    let before = request
        .verify
        .map(|check| answers_before(addr, check))
        .transpose()?;
    let (payload, minute) = current_payload(&secret, source_ip)?;
    if request.print {
        report.out = payload;
        return Ok(report);
    }

    let label = HostLabel::new(&request.host, addr.ip());
    net::send_datagram(route, dest, &payload).map_err(|error| ClientError::Send {
        addr: addr.ip(),
        knock,
        error,
    })?;
    report.line(format!(
        "sent a one-time password to {knock} on {label} (source as the server should see it: \
         {source_ip}, minute {minute})"
    ));
    match (request.verify, before) {
        (Some(check), Some(before)) => verify(Mode::Otp, addr, check, before, &label, &mut report)?,
        _ => std::thread::sleep(OTP_GRANT_WAIT),
    }
    Ok(report)
}

/// A warning about how the secret was given, as printed.
fn warning(warning: &SecretWarning) -> String {
    format!("portknock: warning: {warning}")
}

/// The payload for `source` and the current minute, and that minute.
fn current_payload(secret: &Secret, source: IpAddr) -> Result<(Vec<u8>, u32), ClientError> {
    let minute = otp::current_minute().ok_or(ClientError::Clock)?;
    Ok((otp::payload(secret, source, minute).to_vec(), minute))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn host_labels_name_the_host_only_when_it_is_not_the_address() {
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(HostLabel::new("198.18.0.1", v4).to_string(), "198.18.0.1");
        assert_eq!(
            HostLabel::new("server.example", v4).to_string(),
            "server.example (198.18.0.1)"
        );
        assert_eq!(
            HostLabel::new("::ffff:198.18.0.1", v4).to_string(),
            "198.18.0.1"
        );
        let v6: IpAddr = "fd00:5eed::1".parse().expect("ip");
        assert_eq!(
            HostLabel::new("[fd00:5eed::1]", v6).to_string(),
            "fd00:5eed::1"
        );
        assert_eq!(
            HostLabel::new("fd00:5eed:0::1", v6).to_string(),
            "fd00:5eed::1"
        );
    }

    #[test]
    fn verify_reports() {
        let label = HostLabel::new("198.18.0.1", IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)));
        let open = Probe::Open {
            after: Duration::from_millis(7),
        };
        assert_eq!(
            verify_report(Mode::Simple, 22, &label, false, &open),
            (
                true,
                "port 22 on 198.18.0.1 is open (answered after 7 ms)".to_string()
            )
        );
        let closed = Probe::Closed {
            waited: Duration::from_millis(2000),
            last_error: None,
        };
        let (ok, line) = verify_report(Mode::Simple, 22, &label, false, &closed);
        assert!(!ok);
        assert_eq!(
            line,
            "port 22 on 198.18.0.1 did not open within 2000 ms: check the sequence, its order and \
             protocols, and that the daemon runs"
        );
        let refused = Probe::Closed {
            waited: Duration::from_millis(2000),
            last_error: Some(io::Error::from(io::ErrorKind::ConnectionRefused)),
        };
        let (ok, line) = verify_report(Mode::Otp, 22, &label, false, &refused);
        assert!(!ok);
        assert_eq!(
            line,
            "port 22 on 198.18.0.1 refused the connection: the firewall let it through, so the \
             knock worked, but nothing listens on port 22"
        );
        let timed_out = Probe::Closed {
            waited: Duration::from_millis(2000),
            last_error: Some(io::Error::from(io::ErrorKind::TimedOut)),
        };
        let (ok, line) = verify_report(Mode::Otp, 22, &label, false, &timed_out);
        assert!(!ok);
        assert!(
            line.starts_with("port 22 on 198.18.0.1 did not open within 2000 ms, last answer: "),
            "{line}"
        );
        assert!(
            line.contains("the clock") && line.contains("--source") && line.contains("replay"),
            "{line}"
        );
    }

    #[test]
    fn verify_credits_the_knock_only_with_what_changed_since_before_it() {
        let label = HostLabel::new("198.18.0.1", IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)));
        let open = Probe::Open {
            after: Duration::from_millis(1),
        };
        assert_eq!(
            verify_report(Mode::Otp, 2222, &label, true, &open),
            (
                true,
                "port 2222 on 198.18.0.1 is open, but it was already open before the knock (an \
                 earlier grant?), so this does not show that the knock works"
                    .to_string()
            )
        );
        let refused = Probe::Closed {
            waited: Duration::from_millis(2000),
            last_error: Some(io::Error::from(io::ErrorKind::ConnectionRefused)),
        };
        assert_eq!(
            verify_report(Mode::Simple, 22, &label, true, &refused),
            (
                false,
                "port 22 on 198.18.0.1 refused the connection, as it did before the knock: the \
                 firewall already lets it through (an earlier grant?), but nothing listens on \
                 port 22"
                    .to_string()
            )
        );
        // A port that closed since (a grant ran out) gets the usual advice.
        let closed = Probe::Closed {
            waited: Duration::from_millis(2000),
            last_error: None,
        };
        let (held, line) = verify_report(Mode::Simple, 22, &label, true, &closed);
        assert!(!held && line.starts_with("port 22 on 198.18.0.1 did not open within 2000 ms: "));
    }

    #[test]
    fn errors_say_what_failed_and_what_to_do() {
        let resolve = ClientError::Resolve {
            host: "no-such-host.invalid".into(),
            reason: "Name or service not known".into(),
        };
        assert_eq!(
            resolve.to_string(),
            "cannot resolve no-such-host.invalid: Name or service not known — check the name or \
             use an IP address"
        );
        let send = ClientError::Send {
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            knock: KnockPort::udp(2000),
            error: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(
            send.to_string(),
            "could not send the one-time password to 2000/udp on 127.0.0.1: permission denied — \
             check the address and the route to it"
        );
    }
}
