//! The command line: parses the arguments, runs the command, prints what it returns and picks
//! the exit status. This is the one place that prints a command's output or error and the one
//! place that decides exit statuses; the commands themselves return a [`Report`] or an error.

mod args;
pub mod assets;

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Parser;

pub use args::{Cli, Command, DEFAULT_CONFIG_DIR};

use crate::admin::{self, AdminError};
use crate::client::{self, ClientError, Family, KnockRequest, OtpRequest, Verify};
use crate::config::{self, ConfigError};
use crate::daemon::{self, ServeError};
use crate::demo::{self, DemoError};
use crate::firewall::{self, NoPrivilege};
use crate::report::{count, Report};
use args::{FamilyArgs, StatusArgs, VerifyArgs};
use assets::WriteError;

/// Exit status for success.
const EXIT_OK: u8 = 0;
/// Exit status for a failure at run time.
const EXIT_FAILURE: u8 = 1;
/// Exit status for bad usage or a bad configuration.
const EXIT_USAGE: u8 = 2;

/// Why a command failed: every command's error, so that one function picks the exit status.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The configuration has errors; they are listed, one per line, by the error itself.
    #[error(
        "{error}\n{}, {}: nothing was changed; fix the errors above, then run portknock check again",
        count(error.errors(), "error"),
        count(error.warnings(), "warning")
    )]
    Config { error: ConfigError },
    #[error(transparent)]
    Privilege(#[from] NoPrivilege),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Demo(#[from] DemoError),
    #[error(transparent)]
    Generate(#[from] WriteError),
    #[error("cannot write to standard output: {0}")]
    Output(io::Error),
}

impl CommandError {
    /// The exit status: 2 for what the user can fix in the invocation or the configuration,
    /// 1 for failures at run time.
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Config { .. }
            | CommandError::Admin(AdminError::NotProtected(_))
            | CommandError::Client(
                ClientError::Resolve { .. }
                | ClientError::NoAddressOfFamily { .. }
                | ClientError::NoSecret
                | ClientError::EmptySecret { .. }
                | ClientError::SecretFile { .. }
                | ClientError::SecretFileLineTooLong { .. }
                | ClientError::Prompt(_),
            ) => EXIT_USAGE,
            CommandError::Client(
                ClientError::Knock { .. }
                | ClientError::Route { .. }
                | ClientError::Send { .. }
                | ClientError::Probe { .. }
                | ClientError::Clock,
            )
            | CommandError::Privilege(_)
            | CommandError::Admin(_)
            | CommandError::Serve(_)
            | CommandError::Demo(_)
            | CommandError::Generate(_)
            | CommandError::Output(_) => EXIT_FAILURE,
        }
    }
}

impl From<ConfigError> for CommandError {
    fn from(error: ConfigError) -> CommandError {
        CommandError::Config { error }
    }
}

impl Command {
    /// The command's name, as the user typed it, for its error messages.
    fn name(&self) -> &'static str {
        match self {
            Command::Check(_) => "check",
            Command::Apply(_) => "apply",
            Command::Confirm(_) => "confirm",
            Command::Serve(_) => "serve",
            Command::Status(_) => "status",
            Command::Open(_) => "open",
            Command::Close(_) => "close",
            Command::Remove(_) => "remove",
            Command::Knock(_) => "knock",
            Command::Otp(_) => "otp",
            Command::Demo => "demo",
            Command::Generate(_) => "generate",
        }
    }

    /// Whether the command changes or reads the kernel firewall, and so needs CAP_NET_ADMIN.
    fn needs_net_admin(&self) -> bool {
        match self {
            Command::Check(_)
            | Command::Knock(_)
            | Command::Otp(_)
            | Command::Demo
            | Command::Generate(_) => false,
            Command::Apply(args) => !args.dry_run,
            Command::Serve(_)
            | Command::Confirm(_)
            | Command::Status(_)
            | Command::Open(_)
            | Command::Close(_)
            | Command::Remove(_) => true,
        }
    }

    /// Whether the command only prints: when its reader goes away (`portknock status |
    /// head`), it should end quietly, as other Unix tools do, rather than report the broken
    /// pipe. Not the commands that feed nft through a pipe, whose failure must be reported,
    /// nor the daemon.
    fn only_prints(&self) -> bool {
        match self {
            Command::Check(_) | Command::Status(_) => true,
            Command::Apply(args) => args.dry_run,
            _ => false,
        }
    }

    /// Runs the command.
    fn run(self) -> Result<Report, CommandError> {
        if self.needs_net_admin() {
            firewall::require_net_admin()?;
        }
        Ok(match self {
            Command::Check(args) => admin::check(&config::load(&args.config_dir)?),
            Command::Apply(args) => {
                let loaded = config::load(&args.dir.config_dir)?;
                let confirm_within = args.confirm_within.map(Duration::from_secs);
                if args.dry_run {
                    admin::dry_run(loaded)?
                } else {
                    admin::apply(&args.dir.config_dir, loaded, confirm_within)?
                }
            }
            Command::Serve(args) => {
                let loaded = config::load(&args.config_dir)?;
                init_logging();
                daemon::serve(&args.config_dir, loaded)?;
                Report::new()
            }
            Command::Status(args) if args.watch => watch(&args)?,
            Command::Status(args) => {
                let dir = &args.dir.config_dir;
                admin::status(dir, config::load(dir), args.json)?
            }
            Command::Open(args) => {
                let dir = &args.dir.config_dir;
                // Forced, the doors need not be known, so a broken configuration cannot stand
                // in the way of a grant made to get back in.
                let loaded = match args.force {
                    true => None,
                    false => Some(config::load(dir)?),
                };
                let doors = loaded.as_ref().map(|loaded| &loaded.config);
                admin::open(dir, args.source, args.port, args.open_for, doors)?
            }
            Command::Close(args) => admin::close(&args.dir.config_dir, args.source, args.port)?,
            Command::Remove(args) => admin::remove(&args.config_dir)?,
            Command::Confirm(args) => admin::confirm(&args.config_dir)?,
            Command::Knock(args) => client::knock(&KnockRequest {
                host: args.host,
                ports: args.ports.into_iter().flat_map(|knocks| knocks.0).collect(),
                delay: Duration::from_millis(args.delay),
                family: family(&args.family),
                verify: verify(&args.verify),
            })?,
            Command::Otp(args) => client::otp(&OtpRequest {
                host: args.host,
                knock_port: args.knock_port,
                secret: args.secret,
                secret_file: args.secret_file,
                source: args.source,
                print: args.print,
                family: family(&args.family),
                verify: verify(&args.verify),
            })?,
            Command::Demo => demo::demo()?,
            Command::Generate(args) => assets::generate(&args.dir)?,
        })
    }
}

/// How often `status --watch` shows the counters again.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// `status --watch`: the live view prints as it goes, so it is printed here, frame by frame;
/// what is in a frame is `admin::Watch`'s.
fn watch(args: &StatusArgs) -> Result<Report, CommandError> {
    let loaded = config::load(&args.dir.config_dir)?;
    let mut view = admin::Watch::new(&loaded.config)?;
    for warning in &loaded.warnings {
        eprintln!("{warning}");
    }
    let stdout = io::stdout();
    let clear = stdout.is_terminal();
    let frames = args.count.unwrap_or(u64::MAX);
    refresh(&mut stdout.lock(), frames, WATCH_EVERY, clear, |now| {
        view.refresh(now)
    })
    .map_err(CommandError::Output)?;
    Ok(Report::new())
}

/// Writes `frames` frames to `out`, `every` apart, each on a cleared screen when `clear`;
/// a frame is what `frame` returns for the time it is made.
fn refresh(
    out: &mut impl Write,
    frames: u64,
    every: Duration,
    clear: bool,
    mut frame: impl FnMut(SystemTime) -> Report,
) -> io::Result<()> {
    for i in 0..frames {
        if i > 0 {
            std::thread::sleep(every);
        }
        let report = frame(SystemTime::now());
        if clear {
            // Home, then erase the screen: each frame replaces the last.
            out.write_all(b"\x1b[H\x1b[2J")?;
        } else if i > 0 {
            out.write_all(b"\n")?;
        }
        out.write_all(&report.out)?;
        out.flush()?;
    }
    Ok(())
}

fn family(args: &FamilyArgs) -> Family {
    Family::from_flags(args.ipv4, args.ipv6)
}

fn verify(args: &VerifyArgs) -> Option<Verify> {
    args.verify.map(|port| Verify {
        port,
        timeout_ms: args.verify_timeout,
    })
}

/// Lets a write to a closed pipe end the process, the default that the Rust runtime turns off.
fn end_on_broken_pipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: restoring the default disposition installs no handler code.
    if let Err(e) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
        eprintln!("portknock: cannot restore the default SIGPIPE disposition: {e}");
    }
}

/// Parses the process arguments, runs the command, prints what it returned, and returns the
/// exit status.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.only_prints() {
        end_on_broken_pipe();
    }
    let name = cli.command.name();
    let code = match cli.command.run() {
        Ok(report) => print(&report),
        Err(e) => {
            match e {
                // Its lines start with FILE:LINE, as compilers print them.
                CommandError::Config { .. } => eprintln!("{e}"),
                _ => eprintln!("portknock {name}: {e}"),
            }
            e.exit_code()
        }
    };
    ExitCode::from(code)
}

/// Prints a report: its notes to standard error, then its output; 0 when it held, else 1.
fn print(report: &Report) -> u8 {
    for note in &report.notes {
        eprintln!("{note}");
    }
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_all(&report.out).and_then(|()| stdout.flush()) {
        eprintln!("portknock: cannot write to standard output: {e}");
        return EXIT_FAILURE;
    }
    if report.held {
        EXIT_OK
    } else {
        EXIT_FAILURE
    }
}

/// Logs to standard error, systemd style; `RUST_LOG` chooses the level (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::Path;

    use crate::config::Diagnostic;
    use crate::port::KnockPort;

    #[test]
    fn usage_and_configuration_exit_2_failures_at_run_time_exit_1() {
        let file = Path::new("c");
        let config = ConfigError {
            diagnostics: vec![
                Diagnostic::error(file, Some(1), "bad"),
                Diagnostic::warning(file, Some(2), "meh"),
            ],
        };
        let config = CommandError::from(config);
        assert_eq!(config.exit_code(), EXIT_USAGE);
        assert_eq!(
            config.to_string(),
            "c:1: error: bad\nc:2: warning: meh\n1 error, 1 warning: nothing was changed; fix \
             the errors above, then run portknock check again"
        );
        let resolve = ClientError::Resolve {
            host: "h".into(),
            reason: "r".into(),
        };
        assert_eq!(CommandError::from(resolve).exit_code(), EXIT_USAGE);
        assert_eq!(
            CommandError::from(ClientError::NoSecret).exit_code(),
            EXIT_USAGE
        );
        let send = ClientError::Send {
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            knock: KnockPort::udp(2000),
            error: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(CommandError::from(send).exit_code(), EXIT_FAILURE);
        assert_eq!(
            CommandError::from(ClientError::Clock).exit_code(),
            EXIT_FAILURE
        );
        assert_eq!(CommandError::from(NoPrivilege).exit_code(), EXIT_FAILURE);
        assert_eq!(
            CommandError::from(DemoError::NotRoot).exit_code(),
            EXIT_FAILURE
        );
    }

    #[test]
    fn the_watch_writes_each_frame_on_a_cleared_screen_and_ends_after_its_count() {
        let mut made = 0;
        let mut frame = |_| {
            made += 1;
            let mut report = Report::new();
            report.line(format!("frame {made}"));
            report
        };
        let mut out = Vec::new();
        refresh(&mut out, 3, Duration::ZERO, true, &mut frame).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\x1b[H\x1b[2Jframe 1\n\x1b[H\x1b[2Jframe 2\n\x1b[H\x1b[2Jframe 3\n"
        );
        let mut out = Vec::new();
        refresh(&mut out, 2, Duration::ZERO, false, &mut frame).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "frame 4\n\nframe 5\n",
            "not on a terminal: frames one after the other"
        );
    }

    #[test]
    fn a_report_that_did_not_hold_exits_1() {
        let mut report = Report::new();
        assert_eq!(print(&report), EXIT_OK);
        report.held = false;
        assert_eq!(print(&report), EXIT_FAILURE);
    }
}
