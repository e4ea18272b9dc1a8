//! The command-line definition: every command, argument and help text, for clap to parse and
//! for `generate` to turn into completions and manual pages.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::port::{self, KnockPort, PortError};

/// Where the configuration lives unless `--config-dir` or `PORTKNOCK_CONFIG_DIR` says otherwise.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/portknock";

#[derive(Debug, Parser)]
#[command(
    name = "portknock",
    version,
    about = "Port-knocking firewall for Linux on nftables: server daemon and client in one binary",
    long_about = "portknock keeps chosen TCP ports (SSH, say) closed with nftables, and opens one, \
for a while and to one source address only, when that source knocks right. One binary is both the \
daemon (serve) and the client (knock, otp). Each protected port is a door of one of two modes:\n  \
simple    a sequence of connection attempts to knock ports, in order; any client can\n            \
knock (portknock knock, knockd's knock, nc -z, telnet)\n  \
advanced  one UDP datagram with a one-time password for this minute, compatible with\n            \
the netfilter pknock match; each password works once\n\n\
To see it work without touching this machine's network: sudo portknock demo",
    after_help = "Examples:\n  \
sudo portknock demo            # see it work, in throw-away network namespaces\n  \
portknock check                # validate /etc/portknock, list the doors\n  \
portknock apply                # install the rules (and reload a running daemon)\n  \
portknock knock server.example 7000 9000 8000 --verify 22 && ssh server.example\n  \
portknock otp server.example 2000 --secret-file ~/.portknock-secret --verify 22"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the configuration lives.
#[derive(Debug, Args)]
pub struct ConfigDirArg {
    /// Configuration directory holding portknock.conf and the two door lists.
    #[arg(long, env = "PORTKNOCK_CONFIG_DIR", default_value = DEFAULT_CONFIG_DIR)]
    pub config_dir: PathBuf,
}

/// `-4` / `-6`: the address family used to reach HOST.
#[derive(Debug, Args)]
pub struct FamilyArgs {
    /// Reach HOST over IPv4 only.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Reach HOST over IPv6 only.
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,
}

/// `--verify PORT`: afterwards, check that the protected port opened.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Afterwards, try TCP connections to PORT on HOST and report whether it opened (exit 1 if
    /// not). PORT is tried before the knock too, so that one an earlier grant keeps open is not
    /// credited to this knock.
    #[arg(long, value_name = "PORT", value_parser = crate::port::parse_port)]
    pub verify: Option<u16>,
    /// How long --verify keeps trying, in milliseconds.
    #[arg(
        long,
        value_name = "MS",
        requires = "verify",
        default_value_t = crate::client::DEFAULT_VERIFY_TIMEOUT_MS,
        value_parser = clap::value_parser!(u64).range(1..=crate::client::MAX_VERIFY_TIMEOUT_MS)
    )]
    pub verify_timeout: u64,
}

/// Arguments of `portknock knock`.
#[derive(Debug, Args)]
pub struct KnockArgs {
    /// The server: a host name, an IPv4 address or an IPv6 address.
    pub host: String,
    /// The knock ports in order: PORT for TCP, PORT/udp for UDP; as separate arguments, or
    /// separated by commas as the simple list writes them (7000,8000/udp,9000).
    #[arg(required = true, value_name = "PORT[/udp]", value_parser = knocks)]
    pub ports: Vec<Knocks>,
    /// Pause between two knocks, in milliseconds. The default leaves the server time to arm
    /// the final knock in its kernel, so a connection made right after the knock is let in at
    /// once; with 0 the final knock can beat the daemon, and the port still opens, but a
    /// connection made at once may then wait a second for TCP to retry.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = crate::client::DEFAULT_DELAY_MS,
        value_parser = clap::value_parser!(u64).range(0..=crate::client::MAX_DELAY_MS)
    )]
    pub delay: u64,
    #[command(flatten)]
    pub family: FamilyArgs,
    #[command(flatten)]
    pub verify: VerifyArgs,
}

/// The knock ports of one argument of `portknock knock`.
#[derive(Debug, Clone)]
pub struct Knocks(pub Vec<KnockPort>);

/// One argument of `portknock knock`: one knock port, or several separated by commas. A comma
/// at either end is allowed: it is what is left of `7000, 8000` typed with spaces, which the
/// shell splits.
fn knocks(argument: &str) -> Result<Knocks, PortError> {
    let inner = argument.strip_prefix(',').unwrap_or(argument);
    let inner = inner.strip_suffix(',').unwrap_or(inner);
    port::sequence(inner).collect::<Result<_, _>>().map(Knocks)
}

/// Arguments of `portknock otp`.
#[derive(Debug, Args)]
pub struct OtpArgs {
    /// The server: a host name, an IPv4 address or an IPv6 address.
    pub host: String,
    /// The door's UDP knock port.
    #[arg(value_name = "KNOCKPORT", value_parser = crate::port::parse_port)]
    pub knock_port: u16,
    /// The door's secret. Other local users can read it (ps, /proc): prefer --secret-file or PORTKNOCK_SECRET.
    #[arg(value_name = "SECRET", conflicts_with = "secret_file", value_parser = crate::client::secret::parse_secret_argument)]
    pub secret: Option<crate::config::Secret>,
    /// Read the secret from the first line of FILE.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// The source address the server sees, when it is not this machine's own (behind NAT).
    #[arg(long, value_name = "ADDR")]
    pub source: Option<std::net::IpAddr>,
    /// Write the 65-byte payload to standard output instead of sending it (for socat, hping3).
    #[arg(long, conflicts_with = "verify")]
    pub print: bool,
    #[command(flatten)]
    pub family: FamilyArgs,
    #[command(flatten)]
    pub verify: VerifyArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration and print every problem and a summary of the doors.
    #[command(
        after_help = "Every problem is reported as FILE:LINE: message, all of them at once. Warnings \
(a short secret, an ascending sequence, a list others can read) are printed but do not fail the \
check. Needs no privileges beyond reading the files.\n\n\
Exit status: 0 valid (warnings may remain), 2 errors.\n\n\
Examples:\n  portknock check\n  portknock check --config-dir examples"
    )]
    Check(ConfigDirArg),
    /// Validate, install or replace the ruleset atomically, and make a running daemon reload.
    #[command(
        after_help = "A running daemon is asked to put the configuration in force, and it is in \
force when apply returns; with no daemon running, apply installs it itself. Grants of doors \
that still exist survive the replacement. A configuration with errors changes nothing. With \
FW_PORTKNOCK=\"no\" the table is removed and no port is protected. --dry-run needs no \
privileges.\n\n\
--confirm-within SECONDS keeps you from locking yourself out over SSH: unless `portknock \
confirm` comes within that time (from a new session, to prove the new doors let you in), the \
daemon puts the previous configuration back by itself, with its grants, even when this session \
and this command are gone. It needs the daemon running.\n\n\
Exit status: 0 applied, 1 failure at run time (nft refused, no privilege, the daemon refused), \
2 errors in the configuration.\n\n\
Examples:\n  portknock apply\n  portknock apply --confirm-within 120   # then, from a new SSH session: portknock confirm\n  \
portknock apply --dry-run | jq ."
    )]
    Apply(ApplyArgs),
    /// Keep the configuration an `apply --confirm-within` put in force.
    #[command(
        after_help = "Run it from a session opened after the apply, through the new doors: that \
shows they let you in. Without it, the daemon rolls back to the previous configuration when the \
time runs out.\n\n\
Exit status: 0 confirmed, 1 nothing to confirm or no daemon running.\n\n\
Example:\n  portknock confirm"
    )]
    Confirm(ConfigDirArg),
    /// Run the daemon in the foreground: install the rules, watch knocks, grant. SIGHUP reloads.
    #[command(
        after_help = "Logs go to standard error (RUST_LOG=debug for more). SIGHUP reloads the \
configuration; a broken one is refused and the old one stays in force. SIGTERM stops the daemon \
and leaves the rules in place, so protected ports stay closed and grants run out on time. Needs \
CAP_NET_ADMIN; packaging/portknock.service runs it under systemd with that capability only.\n\n\
Exit status: 0 stopped by a signal, 1 failure at run time, 2 errors in the configuration.\n\n\
Examples:\n  portknock serve\n  systemctl enable --now portknock"
    )]
    Serve(ConfigDirArg),
    /// Show the engine and modes, the doors, every active grant with its time left, and what the daemon counted.
    #[command(
        after_help = "Grants are read from the kernel, so this is the truth even when the daemon \
is not running. When the configuration cannot be used (a missing directory, errors), one line \
says so and only what the kernel holds is shown. With FW_PORTKNOCK_METRICS_FILE set, the counters \
the daemon writes there every 5 s follow (knocks by protocol and family, what they did, grants, \
reloads, heals, NFLOG overruns); --watch shows them again every second with their rates, a live \
view during an attack, until Ctrl-C.\n\n\
Examples:\n  portknock status\n  portknock status --json | jq '.grants'\n  portknock status --watch"
    )]
    Status(StatusArgs),
    /// Open PORT to SOURCE by hand, for a while, as a knock would.
    #[command(
        after_help = "The grant is a kernel set element with a timeout, like a knock's: it ends on \
time even if the daemon is not running. `portknock close` ends it early. PORT must be one that a \
door of the configuration protects: a grant of any other port changes nothing, so it is refused \
unless --force is given (which also skips reading the configuration).\n\n\
Exit status: 0 opened, 1 failure at run time (no privilege, the table is not installed), 2 bad \
usage, a broken configuration, or a port no door protects.\n\n\
Examples:\n  portknock open 198.18.0.2 22 --for 10m\n  portknock open 2001:db8::7 2222 --for 2h"
    )]
    Open(OpenArgs),
    /// Take back a grant of PORT to SOURCE; established connections stay up.
    #[command(
        after_help = "New connections from SOURCE to PORT are dropped again; connections already \
established are never cut. Says how long the grant had left, or that there was nothing to \
close.\n\n\
Exit status: 0 closed, or nothing to close (the state asked for holds, so a script that closes to \
be sure does not fail), 1 failure at run time.\n\n\
Example:\n  portknock close 198.18.0.2 22"
    )]
    Close(CloseArgs),
    /// Remove portknock's table: nothing is protected any more until the next apply.
    #[command(
        after_help = "Every protected port is open to everyone again and every grant is gone. Stop \
the daemon first (systemctl stop portknock): its next reload would install the table again. \
`portknock apply` puts the protection back.\n\n\
Example:\n  systemctl stop portknock && portknock remove"
    )]
    Remove(ConfigDirArg),
    /// Knock a simple-mode sequence: one connection attempt (TCP) or datagram (PORT/udp) per port, in order.
    #[command(
        after_help = "Each TCP port gets one connection attempt (its SYN is the knock), each PORT/udp one \
one-byte datagram, in the order given. --verify then tries the protected port for a bounded time.\n\n\
Exit status: 0 knocked (and, with --verify, the port opened), 1 a knock failed or the port did not \
open, 2 bad usage or a host that does not resolve.\n\n\
Examples:\n  portknock knock server.example 7000 8000/udp 9000\n  \
portknock knock -6 server.example 7000 8000 9000 --verify 22 && ssh server.example"
    )]
    Knock(KnockArgs),
    /// Send an advanced-mode one-time password for this minute: one UDP datagram to the door's knock port.
    #[command(
        after_help = "The secret is taken from SECRET, else --secret-file, else $PORTKNOCK_SECRET, else \
asked for on the terminal; it is never printed. A one-time password is accepted once: knock at most \
once a minute per secret. Client and server clocks must agree to within FW_PORTKNOCK_OTP_SKEW \
minutes. contrib/knock.sh DST PORT SECRET wraps this command for users of pknock's knock.sh.\n\n\
Exit status: 0 sent (and, with --verify, the port opened), 1 sending failed or the port did not open, \
2 bad usage, no secret, or a host that does not resolve.\n\n\
Examples:\n  portknock otp server.example 2000 --secret-file ~/.portknock-secret --verify 22\n  \
PORTKNOCK_SECRET=... portknock otp server.example 2000 && ssh server.example\n  \
portknock otp srv.example 2000 --source 203.0.113.5 --print | socat - UDP:srv.example:2000"
    )]
    Otp(OtpArgs),
    /// See it work: knock, open, connect and close, in throw-away network namespaces.
    #[command(
        after_help = "Needs root: it creates a server and a client network namespace (198.18.0.0/15 \
addresses), runs the real daemon in one and the real client in the other, and removes everything \
afterwards, also on Ctrl-C. The host's own network and firewall are not touched, and no \
configuration is needed.\n\n\
Example:\n  sudo portknock demo"
    )]
    Demo,
    /// Write shell completions and manual pages for this version into DIR (for packagers).
    #[command(
        after_help = "Writes DIR/completions/portknock.bash, _portknock (zsh) and portknock.fish, and \
DIR/man/portknock.1 with one page per command (portknock-check.1, ..., the daemon's \
portknock-serve.8) and portknock.conf.5 for the configuration files. They are generated from \
the same definitions as this help, so they always match the binary. Needs no privileges.\n\n\
Examples:\n  portknock generate /tmp/pk\n  \
install -Dm644 -t /usr/share/bash-completion/completions /tmp/pk/completions/portknock.bash\n  \
install -Dm644 -t /usr/local/share/man/man1 /tmp/pk/man/*.1\n  \
install -Dm644 -t /usr/local/share/man/man5 /tmp/pk/man/*.5\n  \
install -Dm644 -t /usr/local/share/man/man8 /tmp/pk/man/*.8"
    )]
    Generate(GenerateArgs),
}

/// Arguments of `portknock generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Directory to write into; created when missing, existing files are replaced.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Arguments of `portknock apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub dir: ConfigDirArg,
    /// Print the nftables JSON batch instead of installing it.
    #[arg(long, conflicts_with = "confirm_within")]
    pub dry_run: bool,
    /// Roll back to the previous configuration unless `portknock confirm` comes within SECONDS.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub confirm_within: Option<u64>,
}

/// Arguments of `portknock status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub dir: ConfigDirArg,
    /// Print JSON instead of text.
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
    /// Show the daemon's counters again every second, with their rates, until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// With --watch, stop after N refreshes.
    #[arg(long, value_name = "N", requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

/// Arguments of `portknock open`.
#[derive(Debug, Args)]
pub struct OpenArgs {
    #[command(flatten)]
    pub dir: ConfigDirArg,
    /// The source address to let in.
    pub source: std::net::IpAddr,
    /// The protected port to open: one of the configuration's doors.
    #[arg(value_parser = crate::port::parse_port)]
    pub port: u16,
    /// How long the grant lasts: seconds, or a number with s, m, h or d (30s, 10m, 2h, 7d), at
    /// most 7d.
    #[arg(long = "for", value_name = "DURATION", default_value = crate::admin::DEFAULT_MANUAL_OPEN, value_parser = crate::admin::parse_open_for)]
    pub open_for: std::time::Duration,
    /// Grant PORT even if no door protects it, without reading the configuration.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `portknock close`.
#[derive(Debug, Args)]
pub struct CloseArgs {
    #[command(flatten)]
    pub dir: ConfigDirArg,
    /// The source address whose grant is taken back.
    pub source: std::net::IpAddr,
    /// The protected port.
    #[arg(value_parser = crate::port::parse_port)]
    pub port: u16,
}
