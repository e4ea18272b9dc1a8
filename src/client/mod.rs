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
use std::io::{self, IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{KnockArgs, OtpArgs, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::config::{KnockPort, Proto, Secret};
use crate::otp;

use net::{Family, Probe, ProbePlan};
use secret::{SecretSource, SecretWarning};

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
    #[error("could not knock {knock} on {addr}: {source} — check the address and the route to it")]
    Knock {
        /// The knock port, shown as e.g. "7000/tcp".
        knock: KnockPort,
        /// Where it was sent.
        addr: IpAddr,
        /// The error the kernel gave.
        source: io::Error,
    },
    /// No route to HOST, so the source address the server would see is unknown.
    #[error(
        "cannot find the local address that reaches {addr}: {source} — check the network, or \
         give the address the server sees with --source"
    )]
    Route {
        /// The target address.
        addr: IpAddr,
        /// The error the kernel gave.
        source: io::Error,
    },
    /// The OTP datagram could not be sent.
    #[error("could not send the one-time password to {knock} on {addr}: {source} — check the address and the route to it")]
    Send {
        /// The target address.
        addr: IpAddr,
        /// The door's knock port, always UDP.
        knock: KnockPort,
        /// The error the kernel gave.
        source: io::Error,
    },
    /// A socket for `--verify` could not be made.
    #[error(
        "cannot probe port {port} on {addr}: {source} — check the address and the route to it"
    )]
    Probe {
        /// The target address.
        addr: IpAddr,
        /// The probed port.
        port: u16,
        /// The error the kernel gave.
        source: io::Error,
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
    #[error("cannot read the secret file {}: {source} — check the path and its permissions", path.display())]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: io::Error,
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
    Prompt(#[source] io::Error),
    /// The clock reads before 1970, so no minute can be computed.
    #[error(
        "the system clock is set before 1970 — set the clock: one-time passwords depend on it"
    )]
    Clock,
    /// `--print` could not write to stdout.
    #[error("cannot write the payload to standard output: {0}")]
    Stdout(#[source] io::Error),
}

impl ClientError {
    /// The exit status for this error: 2 for what the user can fix in the invocation, 1 for
    /// failures at run time.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Resolve { .. }
            | ClientError::NoAddressOfFamily { .. }
            | ClientError::NoSecret
            | ClientError::EmptySecret { .. }
            | ClientError::SecretFile { .. }
            | ClientError::SecretFileLineTooLong { .. }
            | ClientError::Prompt(_) => EXIT_USAGE,
            ClientError::Knock { .. }
            | ClientError::Route { .. }
            | ClientError::Send { .. }
            | ClientError::Probe { .. }
            | ClientError::Clock
            | ClientError::Stdout(_) => EXIT_FAILURE,
        }
    }
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

/// The line `--verify` prints, and whether it counts as success.
pub fn verify_report(mode: Mode, port: u16, target: &HostLabel, probe: &Probe) -> (bool, String) {
    match probe {
        Probe::Open { after } => (
            true,
            format!(
                "port {port} on {target} is open (answered after {} ms)",
                after.as_millis()
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
            // A firewall that drops a SYN sends nothing back; a refusal means the SYN got
            // through and nothing listens there, which no knocking will change.
            if last_error
                .as_ref()
                .is_some_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
            {
                return (
                    false,
                    format!(
                        "port {port} on {target} refused the connection: the firewall let it \
                         through, so the knock worked, but nothing listens on port {port}"
                    ),
                );
            }
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

fn probe_plan(timeout_ms: u64) -> ProbePlan {
    ProbePlan {
        total: Duration::from_millis(timeout_ms),
        ..ProbePlan::default()
    }
}

fn run_verify(
    mode: Mode,
    addr: SocketAddr,
    port: u16,
    label: &HostLabel,
    timeout_ms: u64,
) -> Result<u8, ClientError> {
    let target = net::with_port(addr, port);
    let probe =
        net::probe(target, &probe_plan(timeout_ms)).map_err(|source| ClientError::Probe {
            addr: addr.ip(),
            port,
            source,
        })?;
    let (open, line) = verify_report(mode, port, label, &probe);
    println!("{line}");
    Ok(if open { EXIT_OK } else { EXIT_FAILURE })
}

fn finish(result: Result<u8, ClientError>) -> u8 {
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("portknock: {err}");
            err.exit_code()
        }
    }
}

/// `portknock knock`: one connection attempt or datagram per port, in order, then the optional
/// `--verify`. Returns the exit status.
pub fn knock_command(args: &KnockArgs) -> u8 {
    finish(knock(args))
}

fn knock(args: &KnockArgs) -> Result<u8, ClientError> {
    let family = Family::from_flags(args.family.ipv4, args.family.ipv6);
    let addr = net::resolve(&args.host, family)?;
    let label = HostLabel::new(&args.host, addr.ip());
    let delay = Duration::from_millis(args.delay);
    for (i, knock) in args.ports.iter().enumerate() {
        if i > 0 && !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let target = net::with_port(addr, knock.port);
        let sent = match knock.proto {
            Proto::Tcp => net::tcp_knock(target),
            Proto::Udp => net::udp_knock(target),
        };
        sent.map_err(|source| ClientError::Knock {
            knock: *knock,
            addr: addr.ip(),
            source,
        })?;
        println!("knocked {knock} on {label}");
    }
    match args.verify.verify {
        Some(port) => run_verify(Mode::Simple, addr, port, &label, args.verify.verify_timeout),
        None => Ok(EXIT_OK),
    }
}

/// `portknock otp`: computes the one-time password for this minute and the source address the
/// server sees, then prints it (`--print`) or sends it as one UDP datagram. Returns the exit
/// status.
pub fn otp_command(args: &OtpArgs) -> u8 {
    finish(otp_knock(args))
}

fn print_warning(warning: &SecretWarning) {
    eprintln!("portknock: warning: {warning}");
}

fn otp_knock(args: &OtpArgs) -> Result<u8, ClientError> {
    let env_secret = std::env::var_os(SECRET_ENV);
    let choice = secret::choose_source(
        args.secret.is_some(),
        args.secret_file.as_deref(),
        env_secret.is_some(),
        io::stdin().is_terminal(),
    )?;
    if choice == SecretSource::Argument {
        print_warning(&SecretWarning::OnCommandLine);
    }
    let knock = KnockPort::udp(args.knock_port);
    let load_secret = || -> Result<Secret, ClientError> {
        let prompt = format!("Secret for {knock} on {}: ", args.host);
        let (secret, warnings) =
            secret::obtain(choice, args.secret.as_ref(), env_secret.as_deref(), &prompt)?;
        for warning in &warnings {
            print_warning(warning);
        }
        Ok(secret)
    };

    // Printing with a known source needs nothing from the network, so `--print --source` also
    // works for a host this machine cannot resolve: the payload is sent from elsewhere.
    if let (true, Some(source_ip)) = (args.print, args.source) {
        let (payload, _) = current_payload(&load_secret()?, source_ip.to_canonical())?;
        return print_payload(&payload);
    }

    let family = Family::from_flags(args.family.ipv4, args.family.ipv6);
    let addr = net::resolve(&args.host, family)?;
    let dest = net::with_port(addr, args.knock_port);
    let secret = load_secret()?;
    let (source_ip, route) = match args.source {
        // The NAT's outside address is not ours: the socket must not be bound to it.
        Some(ip) => (ip.to_canonical(), None),
        None => {
            let (socket, ip) = net::route_source(dest).map_err(|source| ClientError::Route {
                addr: addr.ip(),
                source,
            })?;
            (ip, Some(socket))
        }
    };
    let (payload, minute) = current_payload(&secret, source_ip)?;
    if args.print {
        return print_payload(&payload);
    }

    let label = HostLabel::new(&args.host, addr.ip());
    net::send_datagram(route, dest, &payload).map_err(|source| ClientError::Send {
        addr: addr.ip(),
        knock,
        source,
    })?;
    println!(
        "sent a one-time password to {knock} on {label} (source as the server should see it: \
         {source_ip}, minute {minute})"
    );
    match args.verify.verify {
        Some(port) => run_verify(Mode::Otp, addr, port, &label, args.verify.verify_timeout),
        None => {
            std::thread::sleep(OTP_GRANT_WAIT);
            Ok(EXIT_OK)
        }
    }
}

/// The payload for `source` and the current minute, and that minute.
fn current_payload(
    secret: &Secret,
    source: IpAddr,
) -> Result<([u8; otp::PAYLOAD_LEN], u32), ClientError> {
    let minute = otp::current_minute().ok_or(ClientError::Clock)?;
    Ok((otp::payload(secret, source, minute), minute))
}

fn print_payload(payload: &[u8]) -> Result<u8, ClientError> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(payload)
        .and_then(|()| stdout.flush())
        .map_err(ClientError::Stdout)?;
    Ok(EXIT_OK)
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
            verify_report(Mode::Simple, 22, &label, &open),
            (
                true,
                "port 22 on 198.18.0.1 is open (answered after 7 ms)".to_string()
            )
        );
        let closed = Probe::Closed {
            waited: Duration::from_millis(2000),
            last_error: None,
        };
        let (ok, line) = verify_report(Mode::Simple, 22, &label, &closed);
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
        let (ok, line) = verify_report(Mode::Otp, 22, &label, &refused);
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
        let (ok, line) = verify_report(Mode::Otp, 22, &label, &timed_out);
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
    fn exit_codes_split_usage_from_runtime() {
        let resolve = ClientError::Resolve {
            host: "no-such-host.invalid".into(),
            reason: "Name or service not known".into(),
        };
        assert_eq!(resolve.exit_code(), EXIT_USAGE);
        assert_eq!(
            resolve.to_string(),
            "cannot resolve no-such-host.invalid: Name or service not known — check the name or \
             use an IP address"
        );
        assert_eq!(ClientError::NoSecret.exit_code(), EXIT_USAGE);
        let send = ClientError::Send {
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            knock: KnockPort::udp(2000),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(send.exit_code(), EXIT_FAILURE);
        assert_eq!(
            send.to_string(),
            "could not send the one-time password to 2000/udp on 127.0.0.1: permission denied — \
             check the address and the route to it"
        );
        assert_eq!(ClientError::Clock.exit_code(), EXIT_FAILURE);
    }
}
