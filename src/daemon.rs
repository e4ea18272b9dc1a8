//! `portknock serve`: the daemon. Kernel → capture → engine/OTP → grant.
//!
//! It installs the policy, then reads knock packets from the NFLOG group, runs the simple-mode
//! engine and the OTP checks, and changes the kernel's grant and armed sets over netlink. It
//! never holds enforcement itself: if it dies, the kernel keeps every port closed and lets
//! grants run out on their own (fail-closed).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{debug, error, info, warn};

use crate::admin::{install, load_reporting};
use crate::capture::{Capture, CaptureError, Packet};
use crate::cli::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::config::{Config, Proto};
use crate::engine::{DoorId, Engine, Outcome};
use crate::firewall::{self, SetUpdater, NFLOG_GROUP};
use crate::otp;
use crate::state::{OtpStore, Recorded};

/// Name of the pid file in the state directory; its lock is also the single-instance guard.
const PID_FILE: &str = "portknock.pid";
/// How often the loop looks at the signal flags while no knock arrives: an idle daemon wakes
/// a few times a second and does nothing else.
const TICK: Duration = Duration::from_millis(200);

/// Sends SIGHUP to the daemon whose pid file is in `state_dir`; `Ok(None)` when none runs.
pub fn signal_reload(state_dir: &Path) -> io::Result<Option<i32>> {
    let path = state_dir.join(PID_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // A pid file nobody holds locked is a leftover of a daemon that died: no one to signal.
    if file.try_lock_shared().is_ok() {
        return Ok(None);
    }
    let pid = fs::read_to_string(&path)?
        .trim()
        .parse::<i32>()
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} holds no pid", path.display()),
            )
        })?;
    match kill(Pid::from_raw(pid), Signal::SIGHUP) {
        Ok(()) => Ok(Some(pid)),
        Err(nix::errno::Errno::ESRCH) => Ok(None),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Takes the pid file's lock for the daemon's lifetime, so that a second daemon refuses.
fn lock_pid_file(state_dir: &Path) -> Result<File, String> {
    fs::create_dir_all(state_dir).map_err(|e| {
        format!(
            "cannot create the state directory {}: {e}",
            state_dir.display()
        )
    })?;
    let path = state_dir.join(PID_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    if file.try_lock().is_err() {
        return Err(format!(
            "another portknock daemon already runs (it holds the lock on {}); stop it first",
            path.display()
        ));
    }
    file.set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(file)
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

/// `portknock serve`.
pub fn serve(dir: &Path) -> u8 {
    let Some(config) = load_reporting(dir) else {
        eprintln!("serve: the configuration has errors; not starting");
        return EXIT_USAGE;
    };
    let _pid_lock = match lock_pid_file(&config.settings.state_dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("serve: {e}");
            return EXIT_FAILURE;
        }
    };
    match run(dir, config) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            error!("{e:#}");
            EXIT_FAILURE
        }
    }
}

fn run(dir: &Path, config: Config) -> anyhow::Result<()> {
    let signals = Signals::register()?;
    let mut capture = Capture::open(NFLOG_GROUP)?;
    capture.set_timeout(TICK)?;
    let mut knocks = Knocks::start(config)?;
    // Everything that needs more than CAP_NET_ADMIN (creating the state directory, binding
    // the sockets) is done; from here on the daemon can only manage the firewall.
    crate::firewall::keep_only_net_admin()?;
    info!(
        simple = knocks.config.simple.len(),
        advanced = knocks.config.advanced.len(),
        "portknock serving; knocks are read from NFLOG group {NFLOG_GROUP}"
    );
    let mut batch = Vec::new();
    let mut overruns: u64 = 0;
    while !signals.stop.load(Ordering::Relaxed) {
        if signals.reload.swap(false, Ordering::Relaxed) {
            knocks.reload(dir);
        }
        batch.clear();
        match capture.recv(&mut batch) {
            Ok(()) => {}
            Err(CaptureError::Overrun) => {
                overruns += 1;
                if knocks.lines.allow(Instant::now()) {
                    warn!(
                        overruns,
                        "knocks were lost: the NFLOG buffer overflowed (flood?); carrying on"
                    );
                }
            }
            Err(CaptureError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e.into()),
        }
        for packet in &batch {
            knocks.handle(packet);
        }
        commit(&mut knocks.kernel);
    }
    info!("portknock stopping; the rules stay in force and grants run out on their own");
    Ok(())
}

/// The daemon's knock handling: the configuration in force and what derives from its doors,
/// the used-OTP record, and the netlink socket that writes grants.
struct Knocks {
    config: Config,
    doors: Doors,
    store: OtpStore,
    kernel: SetUpdater,
    /// The budget of the lines that junk can cause.
    lines: LineBudget,
}

impl Knocks {
    fn start(config: Config) -> anyhow::Result<Knocks> {
        install(&config)?;
        Ok(Knocks {
            doors: Doors::new(&config),
            store: OtpStore::open(
                &config.settings.state_dir,
                otp::current_minute().unwrap_or(0),
                config.settings.otp_skew,
            )?,
            kernel: SetUpdater::open()?,
            lines: LineBudget::new(JUNK_LINES_PER_SECOND, Instant::now()),
            config,
        })
    }

    /// Reloads the configuration; a broken one changes nothing and keeps the old one running.
    fn reload(&mut self, dir: &Path) {
        let Some(config) = load_reporting(dir) else {
            error!("reload refused: the configuration has errors (listed above); still enforcing the previous one");
            return;
        };
        // Only `portknock apply` with FW_PORTKNOCK=no (or `portknock remove`) takes the table
        // away. A reload never does: an emptied or truncated portknock.conf reads as the
        // engine off, and must not open every protected port at the next SIGHUP.
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
        if let Err(e) = install(&config) {
            error!("reload refused: {e}; still enforcing the previous configuration");
            return;
        }
        self.doors = Doors::new(&config);
        self.config = config;
        info!(
            simple = self.config.simple.len(),
            advanced = self.config.advanced.len(),
            "configuration reloaded"
        );
    }

    fn handle(&mut self, packet: &Packet) {
        debug!(source = %packet.source, knock = %packet.knock, "knock");
        if packet.source.is_ipv6() && !self.config.settings.ipv6 {
            return;
        }
        let otp_door = match packet.knock.proto {
            Proto::Udp => self.doors.by_otp_port.get(&packet.knock.port).copied(),
            Proto::Tcp => None,
        };
        match otp_door {
            Some(door) => self.handle_otp(packet, door),
            None => self.handle_simple(packet),
        }
    }

    fn handle_simple(&mut self, packet: &Packet) {
        let source = packet.source;
        let timeout = self.config.settings.knock_timeout;
        let open_for = self.config.settings.simple_open;
        let now = Instant::now();
        for outcome in self.doors.engine.knock(source, packet.knock, now) {
            match outcome {
                Outcome::Armed { door, final_knock } => {
                    // One armed door per source in the kernel (see firewall::ruleset): the
                    // latest. An earlier one, or one pushed out of the bounded table, is
                    // disarmed, and the daemon alone grants it if its final knock comes.
                    match self.doors.kernel_armed.push(source, door) {
                        Some((other, old)) if other != source || old != door => {
                            self.disarm(other, old);
                        }
                        _ => {}
                    }
                    let protected = self.config.simple[door].protected;
                    self.kernel.arm(source, final_knock, protected, timeout);
                }
                Outcome::Opened { door } => {
                    let d = &self.config.simple[door];
                    info!(%source, door = d.protected, "grant: simple sequence complete");
                    // The kernel let the client through already when the door was armed in
                    // time; this is the grant that lasts, and it covers a final knock that beat
                    // the arming and the doors the kernel does not hold.
                    self.kernel.grant(source, d.protected, open_for);
                }
                Outcome::Reset { door, .. } => {
                    let d = &self.config.simple[door];
                    if self.lines.allow(now) {
                        info!(%source, door = d.protected, "wrong sequence: progress reset");
                    }
                }
                Outcome::Expired { door, .. } => {
                    let d = &self.config.simple[door];
                    if self.lines.allow(now) {
                        info!(%source, door = d.protected, "expired: knocks too slow, sequence restarted");
                    }
                }
                _ => {}
            }
        }
        // Whatever ended the armed door's progress (it opened, reset or expired, or the engine
        // let it go for its bounds), the kernel's arming ends with it.
        if let Some(&door) = self.doors.kernel_armed.peek(&source) {
            if !self.doors.engine.is_armed(source, door, now) {
                self.doors.kernel_armed.pop(&source);
                self.disarm(source, door);
            }
        }
    }

    fn disarm(&mut self, source: IpAddr, door: DoorId) {
        let d = &self.config.simple[door];
        if let Some(&final_knock) = d.sequence.last() {
            self.kernel.disarm(source, final_knock, d.protected);
        }
    }

    /// An OTP datagram to the knock port of advanced door `door`.
    fn handle_otp(&mut self, packet: &Packet, door: usize) {
        let source = packet.source;
        let Some(mac) = otp::parse_payload(&packet.payload) else {
            if self.lines.allow(Instant::now()) {
                info!(%source, port = packet.knock.port, "bad OTP: the datagram is not a 64-hex-digit one-time password");
            }
            return;
        };
        if self.store.is_used(&mac) {
            if self.lines.allow(Instant::now()) {
                warn!(%source, port = packet.knock.port, "replay: this OTP was used before; refused");
            }
            return;
        }
        // A clock before 1970 verifies nothing: minute 0 is out of every client's window.
        let now = otp::current_minute().unwrap_or(0);
        let skew = self.config.settings.otp_skew;
        let door = &self.config.advanced[door];
        let (open, minute) = match (
            otp::verify(&door.open_secret, source, &mac, now, skew),
            otp::verify(&door.close_secret, source, &mac, now, skew),
        ) {
            (Some(m), _) => (true, m),
            (None, Some(m)) => (false, m),
            (None, None) => {
                if self.lines.allow(Instant::now()) {
                    info!(%source, door = door.protected, "bad OTP: neither secret matches this source and minute");
                }
                return;
            }
        };
        match self.store.record(mac, minute, now, skew) {
            Ok(Recorded::New) => {}
            Ok(Recorded::Refused(why)) => {
                if self.lines.allow(Instant::now()) {
                    warn!(%source, door = door.protected, "OTP refused: {why}");
                }
                return;
            }
            Err(e) => {
                error!(%source, door = door.protected, "OTP refused: cannot record it as used ({e}); no grant without the record");
                return;
            }
        }
        // In force before it is logged, in a transaction of its own (what earlier knocks of
        // this read changed goes first), so that its outcome is its own.
        commit(&mut self.kernel);
        if open {
            self.kernel
                .grant(source, door.protected, self.config.settings.advanced_open);
        } else {
            self.kernel.revoke(source, door.protected);
        }
        let made = self.kernel.commit();
        self.store.flush();
        match (made, open) {
            (Ok(()), true) => info!(%source, door = door.protected, "grant: valid open OTP"),
            (Ok(()), false) => info!(%source, door = door.protected, "close: valid close OTP"),
            (Err(e), _) => error!(%source, door = door.protected, "valid OTP, but {e}"),
        }
    }
}

/// Most lines per second about knocks that open nothing (wrong sequences, bad OTPs, replays,
/// NFLOG overruns). Grants and closes are always logged.
const JUNK_LINES_PER_SECOND: u32 = 20;

/// A per-second budget of log lines: junk costs an attacker nothing to send, and one line per
/// junk packet would flood the journal and cost the daemon more than the packet itself.
struct LineBudget {
    per_second: u32,
    window: Instant,
    used: u32,
    held: u64,
}

impl LineBudget {
    fn new(per_second: u32, now: Instant) -> LineBudget {
        LineBudget {
            per_second,
            window: now,
            used: 0,
            held: 0,
        }
    }

    /// Whether one more line may be written at `now`. The first call in a new second reports
    /// how many lines the last one held back.
    fn allow(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.window) >= Duration::from_secs(1) {
            if self.held > 0 {
                warn!(
                    held = self.held,
                    "more knocks that open nothing than the log takes (a flood?): lines held back"
                );
            }
            *self = LineBudget::new(self.per_second, now);
        }
        let allowed = self.used < self.per_second;
        if allowed {
            self.used += 1;
        } else {
            self.held += 1;
        }
        allowed
    }
}

/// Sends the queued set changes to the kernel; a failure is logged.
fn commit(kernel: &mut SetUpdater) {
    if let Err(e) = kernel.commit() {
        error!("{e}");
    }
}

/// What the daemon derives from the doors of the configuration in force.
struct Doors {
    /// The knock state of simple doors.
    engine: Engine,
    /// The door armed in the kernel for each source, at most as many as the engine tracks;
    /// sparse, like the engine's table, so that memory grows with use.
    kernel_armed: LruCache<IpAddr, DoorId>,
    /// Advanced doors by knock port (the configuration allows one door per port).
    by_otp_port: HashMap<u16, usize>,
}

impl Doors {
    fn new(config: &Config) -> Doors {
        Doors {
            engine: Engine::new(
                &config.simple,
                config.settings.knock_timeout,
                config.settings.max_sources,
            ),
            kernel_armed: LruCache::sparse(
                NonZeroUsize::new(config.settings.max_sources).unwrap_or(NonZeroUsize::MIN),
            ),
            by_otp_port: config
                .advanced
                .iter()
                .enumerate()
                .map(|(i, d)| (d.knock_port, i))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_budget_holds_back_past_its_limit_and_refills_each_second() {
        let start = Instant::now();
        let mut lines = LineBudget::new(3, start);
        let allowed = (0..10).filter(|_| lines.allow(start)).count();
        assert_eq!((allowed, lines.held), (3, 7));
        let later = start + Duration::from_millis(999);
        assert!(!lines.allow(later), "still the same second");
        assert!(lines.allow(start + Duration::from_secs(1)), "a new second");
        assert_eq!(lines.held, 0);
    }
}
