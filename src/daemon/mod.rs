//! `portknock serve`: the daemon. Kernel → capture → core → grant.
//!
//! A thin shell around [`core::Core`], which decides: the shell installs the policy, then reads
//! knock packets from the NFLOG group, hands each to the core with the time, records one-time
//! passwords on disk, commits the set changes over netlink and logs what the core says. It
//! never holds enforcement itself: if it dies, the kernel keeps every port closed and lets
//! grants run out on their own (fail-closed).

pub mod core;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use self::core::{Accepted, Core, Effects, Event};
use crate::capture::{Capture, CaptureError};
use crate::config::{self, Diagnostic, Loaded};
use crate::firewall::{self, Changes, DropError, InstallError, Kernel, NetlinkError, NFLOG_GROUP};
use crate::otp;
use crate::pidfile::{self, PidError};
use crate::state::{OtpStore, StoreError};

/// How often the loop looks at the signal flags while no knock arrives: an idle daemon wakes
/// a few times a second and does nothing else.
const TICK: Duration = Duration::from_millis(200);

/// Why the daemon could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Pid(PidError),
    #[error("cannot install the signal handlers: {0}")]
    Signals(io::Error),
    #[error(transparent)]
    Capture(CaptureError),
    #[error(transparent)]
    Install(InstallError),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Netlink(NetlinkError),
    #[error(transparent)]
    Privilege(DropError),
}

/// Signals the daemon reacts to, set from signal handlers and read by the loop.
struct Signals {
    reload: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Signals {
    fn register() -> io::Result<Signals> {
        let signals = Signals {
            reload: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&signals.reload))?;
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(sig, Arc::clone(&signals.stop))?;
        }
        Ok(signals)
    }
}

/// `portknock serve` with the configuration of `dir`, already loaded and valid: runs until
/// SIGTERM or SIGINT, reloading `dir` on SIGHUP.
pub fn serve(dir: &Path, loaded: Loaded) -> Result<(), ServeError> {
    log_diagnostics(&loaded.warnings);
    let config = loaded.config;
    let _pid = pidfile::lock(&config.settings.state_dir).map_err(ServeError::Pid)?;
    let signals = Signals::register().map_err(ServeError::Signals)?;
    let mut capture = Capture::open(NFLOG_GROUP).map_err(ServeError::Capture)?;
    capture.set_timeout(TICK).map_err(ServeError::Capture)?;
    firewall::install(&config).map_err(ServeError::Install)?;
    let settings = &config.settings;
    let minute = otp::current_minute().unwrap_or(0);
    let mut store = OtpStore::open(&settings.state_dir, minute, settings.otp_skew)
        .map_err(ServeError::Store)?;
    let mut kernel = Kernel::open().map_err(ServeError::Netlink)?;
    // Everything that needs more than CAP_NET_ADMIN (creating the state directory, binding
    // the sockets) is done; from here on the daemon can only manage the firewall.
    firewall::keep_only_net_admin().map_err(ServeError::Privilege)?;
    info!(
        simple = config.simple.len(),
        advanced = config.advanced.len(),
        "portknock serving; knocks are read from NFLOG group {NFLOG_GROUP}"
    );
    let mut core = Core::new(config, Instant::now());
    let mut batch = Vec::new();
    let mut effects = Effects::default();
    while !signals.stop.load(Ordering::Relaxed) {
        if signals.reload.swap(false, Ordering::Relaxed) {
            reload(dir, &mut core);
        }
        batch.clear();
        let read = capture.recv(&mut batch);
        let now = Instant::now();
        match read {
            Ok(()) => {}
            Err(CaptureError::Overrun) => core.overrun(now, &mut effects),
            Err(CaptureError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(ServeError::Capture(e)),
        }
        // A clock before 1970 verifies nothing: minute 0 is out of every client's window.
        let minute = otp::current_minute().unwrap_or(0);
        for packet in &batch {
            debug!(source = %packet.source, knock = %packet.knock, "knock");
            let accepted = core.knock(packet, now, minute, &mut store, &mut effects);
            effects.events.drain(..).for_each(|e| log(&e));
            if let Some(mut otp) = accepted {
                // In force before it is logged, in a transaction of its own (what earlier
                // knocks of this read changed goes first), so that its outcome is its own.
                commit(&mut kernel, &mut effects.changes);
                let made = kernel.commit(&mut otp.changes);
                store.flush();
                log_accepted(&otp, made);
            }
        }
        effects.events.drain(..).for_each(|e| log(&e));
        commit(&mut kernel, &mut effects.changes);
    }
    info!("portknock stopping; the rules stay in force and grants run out on their own");
    Ok(())
}

/// Reloads the configuration of `dir`; a broken one changes nothing and keeps the old one.
fn reload(dir: &Path, core: &mut Core) {
    let loaded = match config::load(dir) {
        Ok(loaded) => loaded,
        Err(e) => {
            log_diagnostics(&e.diagnostics);
            error!("reload refused: the configuration has errors (listed above); still enforcing the previous one");
            return;
        }
    };
    log_diagnostics(&loaded.warnings);
    let config = loaded.config;
    // Only `portknock apply` with FW_PORTKNOCK=no (or `portknock remove`) takes the table
    // away. A reload never does: an emptied or truncated portknock.conf reads as the engine
    // off, and must not open every protected port at the next SIGHUP.
    if !config.settings.enabled {
        match firewall::table_exists() {
            Ok(false) => {}
            Ok(true) => {
                error!("reload refused: portknock.conf has the engine off (FW_PORTKNOCK is not \"yes\"; is the file empty or truncated?), but a reload never removes the rules; still enforcing the previous configuration. To turn portknock off, run `portknock apply` (or `portknock remove`)");
                return;
            }
            Err(e) => {
                error!("reload refused: {e}; still enforcing the previous configuration");
                return;
            }
        }
    }
    if let Err(e) = firewall::install(&config) {
        error!("reload refused: {e}; still enforcing the previous configuration");
        return;
    }
    info!(
        simple = config.simple.len(),
        advanced = config.advanced.len(),
        "configuration reloaded"
    );
    core.reload(config);
}

/// Sends the queued set changes to the kernel; a failure is logged.
fn commit(kernel: &mut Kernel, changes: &mut Changes) {
    if let Err(e) = kernel.commit(changes) {
        error!("{e}");
    }
}

/// Each problem of the configuration as a line of the log, at its severity.
fn log_diagnostics(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        if d.is_error() {
            error!("{d}");
        } else {
            warn!("{d}");
        }
    }
}

/// The one place that words what the core decided.
fn log(event: &Event) {
    match event {
        Event::Opened { source, door } => {
            info!(%source, door, "grant: simple sequence complete");
        }
        Event::WrongSequence { source, door } => {
            info!(%source, door, "wrong sequence: progress reset");
        }
        Event::Expired { source, door } => {
            info!(%source, door, "expired: knocks too slow, sequence restarted");
        }
        Event::NotAnOtp { source, port } => {
            info!(%source, port, "bad OTP: the datagram is not a 64-hex-digit one-time password");
        }
        Event::Replay { source, port } => {
            warn!(%source, port, "replay: this OTP was used before; refused");
        }
        Event::BadOtp { source, door } => {
            info!(%source, door, "bad OTP: neither secret matches this source and minute");
        }
        Event::ClockSkew {
            source,
            door,
            minutes,
        } => {
            let unit = if minutes.unsigned_abs() == 1 {
                "minute"
            } else {
                "minutes"
            };
            let way = if minutes.is_positive() {
                "ahead of"
            } else {
                "behind"
            };
            info!(%source, door, "bad OTP: clock skew of {minutes:+} {unit} (the client's clock is {way} the server's): the door's secret made it for a minute outside FW_PORTKNOCK_OTP_SKEW; set the clocks right (NTP)");
        }
        Event::OtpRefused { source, door, why } => {
            warn!(%source, door, "OTP refused: {why}");
        }
        Event::NotRecorded {
            source,
            door,
            error,
        } => {
            error!(%source, door, "OTP refused: cannot record it as used ({error}); no grant without the record");
        }
        Event::Overrun { overruns } => {
            warn!(
                overruns,
                "knocks were lost: the NFLOG buffer overflowed (flood?); carrying on"
            );
        }
        Event::HeldBack { held } => {
            warn!(
                held,
                "more knocks that open nothing than the log takes (a flood?): lines held back"
            );
        }
    }
}

/// The line of a valid one-time password, once the kernel has answered.
fn log_accepted(otp: &Accepted, made: Result<(), NetlinkError>) {
    let Accepted {
        source, door, open, ..
    } = otp;
    match (made, open) {
        (Ok(()), true) => info!(%source, door, "grant: valid open OTP"),
        (Ok(()), false) => info!(%source, door, "close: valid close OTP"),
        (Err(e), _) => error!(%source, door, "valid OTP, but {e}"),
    }
}
