//! `portknock serve`: the daemon. Kernel → capture → core → grant.
//!
//! A thin shell around [`core::Core`], which decides: the shell installs the policy, then waits
//! on four things at once — knock packets (NFLOG), the kernel's notifications of changes to
//! nftables, requests on the control socket, and signals — and never wakes when none comes.
//! It hands each knock to the core with the time, records one-time passwords on disk,
//! commits the set changes over netlink and logs what the core says; it undoes foreign changes
//! to its table when the [`keeper::Keeper`] says so. It never holds enforcement itself: if it
//! dies, the kernel keeps every port closed and lets grants run out on their own (fail-closed).

pub mod core;
mod export;
pub mod keeper;

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tracing::{debug, error, info, warn};

use self::core::{Accepted, Core, Effects, Event};
use self::export::Export;
use crate::capture::{Capture, CaptureError};
use crate::config::{self, Config, Diagnostic, Loaded};
use crate::control::{self, Answer, Call, Request};
use crate::firewall::{
    self, Changes, DropError, InstallError, Kernel, Monitor, MonitorError, NetlinkError,
    NFLOG_GROUP, TABLE,
};
use crate::metrics::{By, Heal, Lines, Reload};
use crate::otp;
use crate::pidfile::{self, PidError};
use crate::state::{OtpStore, StoreError};
use crate::trial;

/// How soon a rollback that the kernel refused is tried again.
const ROLLBACK_RETRY: Duration = Duration::from_secs(1);

/// Why the daemon could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Pid(PidError),
    #[error("cannot install the signal handlers: {0}")]
    Signals(io::Error),
    #[error(transparent)]
    Capture(CaptureError),
    #[error("cannot watch the nftables ruleset: {0}")]
    Monitor(NetlinkError),
    #[error("cannot open the control socket in the state directory: {0}")]
    Control(io::Error),
    #[error(transparent)]
    Install(InstallError),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Netlink(NetlinkError),
    #[error(transparent)]
    Privilege(DropError),
    #[error("waiting for knocks failed: {0}")]
    Poll(nix::errno::Errno),
}

/// Signals the daemon reacts to: flags set from the handlers, and a byte written to a pipe
/// that wakes the loop.
struct Signals {
    reload: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    wake: UnixStream,
}

impl Signals {
    fn register() -> io::Result<Signals> {
        let (wake, write) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let signals = Signals {
            reload: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
            wake,
        };
        let flags = [
            (signal_hook::consts::SIGHUP, &signals.reload),
            (signal_hook::consts::SIGTERM, &signals.stop),
            (signal_hook::consts::SIGINT, &signals.stop),
        ];
        for (signal, flag) in flags {
            signal_hook::flag::register(signal, Arc::clone(flag))?;
            signal_hook::low_level::pipe::register(signal, write.try_clone()?)?;
        }
        Ok(signals)
    }

    /// Empties the wake-up pipe.
    fn drain(&mut self) {
        let mut buf = [0u8; 64];
        while matches!(self.wake.read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// What the daemon runs with.
struct Daemon<'a> {
    dir: &'a Path,
    /// `dir` as `apply` names it in its requests.
    canonical: std::path::PathBuf,
    state_dir: std::path::PathBuf,
    core: Core,
    kernel: Kernel,
    store: OtpStore,
    effects: Effects,
    /// An `apply --confirm-within` waiting for its confirmation.
    pending: Option<Pending>,
    /// The files' text of the configuration in force for good: what a trial's rollback puts
    /// back, kept on disk only while a trial runs.
    confirmed: trial::Texts,
}

/// A configuration in force until a deadline, unless confirmed.
struct Pending {
    /// What comes back at the deadline.
    previous: Config,
    deadline: Instant,
    /// The files' text of the configuration on trial, to refuse them after a rollback, or to
    /// keep them once confirmed.
    texts: trial::Texts,
}

/// `portknock serve` with the configuration of `dir`, already loaded and valid: runs until
/// SIGTERM or SIGINT, reloading `dir` on SIGHUP or when `apply` asks.
pub fn serve(dir: &Path, loaded: Loaded) -> Result<(), ServeError> {
    log_diagnostics(&loaded.warnings);
    let config = loaded.config;
    let state_dir = config.settings.state_dir.clone();
    let _pid = pidfile::lock(&state_dir).map_err(ServeError::Pid)?;
    let mut signals = Signals::register().map_err(ServeError::Signals)?;
    let mut capture = Capture::open(NFLOG_GROUP).map_err(ServeError::Capture)?;
    let mut monitor = Monitor::open().map_err(ServeError::Monitor)?;
    let control = control::Listener::bind(&state_dir).map_err(ServeError::Control)?;
    let kernel = Kernel::open().map_err(ServeError::Netlink)?;
    let (config, pending) = at_start(config);
    // The daemon's own commits carry the netlink port id of its socket, not its pid.
    let portid = kernel.portid().map_err(ServeError::Netlink)?;
    let mut core = Core::new(config, Instant::now(), portid);
    let nft = firewall::install(core.config(), &[]).map_err(ServeError::Install)?;
    core.keeper().installed_by(nft);
    // Grants from before the start (an earlier daemon, `open` with none running) run on in
    // the kernel; the keeper learns them, so that a heal puts them back like its own.
    match firewall::grants() {
        Ok(grants) => {
            let grants = grants.unwrap_or_default();
            let now = Instant::now();
            for g in &grants {
                core.keeper().granted(g.source, g.port, now, g.remaining);
            }
            if !grants.is_empty() {
                info!(grants = grants.len(), "grants made before the start run on");
            }
        }
        Err(e) => warn!(
            "cannot read the grants made before the start ({e}); a heal would not put them back"
        ),
    }
    let confirmed = match &pending {
        Some(trial) => trial::texts(&trial.previous),
        None => trial::texts(core.config()),
    };
    let settings = &core.config().settings;
    let minute = otp::current_minute().unwrap_or(0);
    let store = OtpStore::open(&settings.state_dir, minute, settings.otp_skew)
        .map_err(ServeError::Store)?;
    // Everything that needs more than CAP_NET_ADMIN (creating the state directory, binding
    // the sockets) is done; from here on the daemon can only manage the firewall.
    firewall::keep_only_net_admin().map_err(ServeError::Privilege)?;
    info!(
        simple = core.config().simple.len(),
        advanced = core.config().advanced.len(),
        "portknock serving; knocks are read from NFLOG group {NFLOG_GROUP}"
    );
    // systemd (Type=notify) counts the service as started only now, with the rules in force,
    // so that nothing ordered after it (network-pre.target) finds the protected ports open.
    // Without $NOTIFY_SOCKET this does nothing.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        warn!("cannot tell systemd that the daemon is ready: {e}");
    }
    let mut daemon = Daemon {
        dir,
        canonical: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
        state_dir,
        pending,
        confirmed,
        core,
        kernel,
        store,
        effects: Effects::default(),
    };
    let mut batch = Vec::new();
    let mut transactions = Vec::new();
    let mut export = Export::new(Instant::now());
    while !signals.stop.load(Ordering::Relaxed) {
        let deadline = daemon.pending.as_ref().map(|p| p.deadline);
        let due = daemon.core.keeper().due();
        let metrics = export.due(&daemon.core);
        let timeout = match due.into_iter().chain(deadline).chain(metrics).min() {
            Some(due) => {
                let wait = due.saturating_duration_since(Instant::now());
                PollTimeout::try_from(wait + Duration::from_millis(1)).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let mut fds = [
            PollFd::new(capture.as_fd(), PollFlags::POLLIN),
            PollFd::new(monitor.as_fd(), PollFlags::POLLIN),
            PollFd::new(control.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.wake.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(ServeError::Poll(e)),
        }
        let ready = fds.map(|fd| fd.any().unwrap_or(false));
        if ready[3] {
            signals.drain();
        }
        if signals.reload.swap(false, Ordering::Relaxed) {
            daemon.reload();
        }
        if ready[1] {
            daemon.notifications(&mut monitor, &mut transactions);
        }
        if ready[2] {
            while let Some(call) = control.accept() {
                daemon.call(call);
            }
        }
        if ready[0] {
            batch.clear();
            match capture.recv(&mut batch) {
                Ok(()) => {}
                Err(CaptureError::Overrun) => {
                    daemon.core.overrun(Instant::now(), &mut daemon.effects);
                }
                Err(CaptureError::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(ServeError::Capture(e)),
            }
            daemon.knocks(&batch);
        }
        daemon.heal();
        daemon.roll_back_if_due();
        export.write_if_due(&daemon.core, Instant::now());
    }
    export.finish(&daemon.core);
    info!("portknock stopping; the rules stay in force and grants run out on their own");
    Ok(())
}

impl Daemon<'_> {
    /// Hands the knocks of one read to the core and carries out what it decides.
    fn knocks(&mut self, batch: &[crate::capture::Packet]) {
        let now = Instant::now();
        // A clock before 1970 verifies nothing: minute 0 is out of every client's window.
        let minute = otp::current_minute().unwrap_or(0);
        for packet in batch {
            debug!(source = %packet.source, knock = %packet.knock, "knock");
            let accepted =
                (self.core).knock(packet, now, minute, &mut self.store, &mut self.effects);
            self.effects.events.drain(..).for_each(|e| log(&e));
            if let Some(mut otp) = accepted {
                // In force before it is logged, in a transaction of its own (what earlier
                // knocks of this read changed goes first), so that its outcome is its own.
                self.commit_knocks();
                let made = self.kernel.commit(&mut otp.changes);
                self.store.flush();
                log_accepted(&otp, made);
            }
        }
        self.effects.events.drain(..).for_each(|e| log(&e));
        self.commit_knocks();
    }

    /// Sends the set changes the knocks decided. A refusal is logged; after an I/O error the
    /// kernel may hold part of them, so the daemon forgets what it armed and puts the policy
    /// back, which empties the fast path, to agree with the kernel again.
    fn commit_knocks(&mut self) {
        match self.kernel.commit(&mut self.effects.changes) {
            Ok(()) => {}
            Err(e @ NetlinkError::Refused { .. }) => error!("{e}"),
            Err(e) => {
                error!("{e}; putting the policy back to agree with the kernel again");
                self.core.forget_armed();
                (self.core.keeper()).lost_track("a set update failed half-way", Instant::now());
            }
        }
    }

    /// Reads the kernel's notifications and tells the keeper what was done to the table.
    fn notifications(
        &mut self,
        monitor: &mut Monitor,
        transactions: &mut Vec<firewall::Transaction>,
    ) {
        let now = Instant::now();
        match monitor.read(transactions) {
            Ok(()) => {}
            Err(MonitorError::Overrun) => {
                (self.core.keeper()).lost_track("nftables notifications were lost", now)
            }
            Err(e) => error!("{e}"),
        }
        for transaction in transactions.drain(..) {
            self.core.keeper().observe(&transaction, now);
        }
    }

    /// Puts the policy back if the keeper says a foreign change is due to be undone.
    fn heal(&mut self) {
        let start = Instant::now();
        let Some(heal) = self.core.keeper().take_heal(start) else {
            return;
        };
        match firewall::install(self.core.config(), &heal.grants) {
            Ok(nft) => {
                self.core.count().heal(Heal::Restored);
                if !heal.log {
                    self.core.count().held_back(Lines::Heals);
                }
                self.core.keeper().installed_by(nft);
                if heal.held > 0 {
                    warn!(
                        held = heal.held,
                        "table inet {TABLE} was restored more often than the log takes (a loop that flushes the ruleset?): lines held back"
                    );
                }
                if heal.log {
                    let ms = start.elapsed().as_millis();
                    warn!(
                        grants = heal.grants.len(),
                        "table inet {TABLE} restored in {ms} ms: {}", heal.reason
                    );
                }
            }
            Err(e) => {
                self.core.count().heal(Heal::Failed);
                error!(
                    "cannot restore table inet {TABLE} ({}): {e}; trying again",
                    heal.reason
                );
                self.core.keeper().lost_track(&heal.reason, Instant::now());
            }
        }
    }

    /// Reloads the configuration on SIGHUP; a broken one changes nothing.
    fn reload(&mut self) {
        let loaded = match config::load(self.dir) {
            Ok(loaded) => loaded,
            Err(e) => {
                log_diagnostics(&e.diagnostics);
                error!("reload refused: the configuration has errors (listed above); still enforcing the previous one");
                self.core.count().reload(Reload::Refused);
                return;
            }
        };
        log_diagnostics(&loaded.warnings);
        if trial::rejected(&self.state_dir).as_deref()
            == Some(&trial::texts(&loaded.config).fingerprint())
        {
            error!("reload refused: the configuration files hold the configuration that was rolled back for want of a confirmation; change them, or apply them again (with --confirm-within to try once more)");
            self.core.count().reload(Reload::Refused);
            return;
        }
        if self.pending.is_some() {
            error!("reload refused: an apply waits for its confirmation (`portknock confirm`); reload after it");
            self.core.count().reload(Reload::Refused);
            return;
        }
        // Only `portknock apply` with FW_PORTKNOCK=no (or `portknock remove`) takes the table
        // away. A reload never does: an emptied or truncated portknock.conf reads as the
        // engine off, and must not open every protected port at the next SIGHUP. What the
        // daemon itself knows decides, not whether the table is there now: a flush a heal has
        // yet to undo is no removal on purpose.
        if !loaded.config.settings.enabled && !self.core.keeper().is_off() {
            error!("reload refused: portknock.conf has the engine off (FW_PORTKNOCK is not \"yes\"; is the file empty or truncated?), but a reload never removes the rules; still enforcing the previous configuration. To turn portknock off, run `portknock apply` (or `portknock remove`)");
            self.core.count().reload(Reload::Refused);
            return;
        }
        match self.put_in_force(loaded.config) {
            Ok(()) => {
                self.core.count().reload(Reload::Applied);
                self.confirmed = trial::texts(self.core.config());
                info!(
                    simple = self.core.config().simple.len(),
                    advanced = self.core.config().advanced.len(),
                    "configuration reloaded"
                );
            }
            Err(e) => {
                self.core.count().reload(Reload::Refused);
                error!("reload refused: {e}; still enforcing the previous configuration");
            }
        }
    }

    /// Installs `config` (or removes the table, with the engine off) and runs on it.
    fn put_in_force(&mut self, config: Config) -> Result<(), InstallError> {
        let known = self.core.keeper().grants(Instant::now());
        let nft = firewall::install(&config, &known)?;
        let keeper = self.core.keeper();
        keeper.installed_by(nft);
        if config.settings.enabled {
            keeper.turned_on();
        } else {
            keeper.turned_off();
        }
        self.core.reload(config);
        Ok(())
    }

    /// A request on the control socket, from a portknock command.
    fn call(&mut self, call: Call) {
        let peer = call.peer;
        let answer = match &call.request {
            _ if peer.uid != nix::unistd::geteuid().as_raw() => {
                Answer::Refused("only the daemon's own user may ask it for changes".to_string())
            }
            Err(why) => Answer::Refused(why.clone()),
            Ok(request) => self.request(request, peer),
        };
        if let Ok(request) = &call.request {
            self.count(request, &answer);
        }
        call.answer(&answer);
    }

    /// Counts what a request did, for the metrics file: an `apply` is a reload.
    fn count(&mut self, request: &Request, answer: &Answer) {
        let done = matches!(answer, Answer::Done(_));
        let counters = self.core.count();
        match request {
            Request::Apply { .. } if done => counters.reload(Reload::Applied),
            Request::Apply { .. } => counters.reload(Reload::Refused),
            Request::Open { .. } if done => counters.grant(By::Hand),
            Request::Close { .. } if done => counters.close(By::Hand),
            _ => {}
        }
    }

    fn request(&mut self, request: &Request, peer: control::Peer) -> Answer {
        let who = format!("uid {} (pid {})", peer.uid, peer.pid);
        match request {
            Request::Apply { dir, .. } if *dir != self.canonical => Answer::Refused(format!(
                "the running daemon serves {}, not {}: apply that directory, or stop the daemon first",
                self.dir.display(),
                dir.display()
            )),
            Request::Apply { .. } if self.pending.is_some() => Answer::Refused(format!(
                "an apply already waits for its confirmation, for {} s more: run `portknock confirm` to keep it, or let it roll back, then apply again",
                self.pending.as_ref().map_or(0, |p| p.deadline.saturating_duration_since(Instant::now()).as_secs())
            )),
            Request::Apply { confirm_within, .. } => {
                let config = match config::load(self.dir) {
                    Ok(loaded) => loaded.config,
                    Err(e) => return Answer::Refused(format!("the configuration has errors:\n{e}")),
                };
                let enabled = config.settings.enabled;
                let texts = trial::texts(&config);
                let previous = self.core.config().clone();
                if let Err(e) = self.put_in_force(config) {
                    return Answer::Refused(format!(
                        "{e}; the daemon still enforces the previous configuration"
                    ));
                }
                if let Err(e) = trial::clear_rejected(&self.state_dir)
                    .and_then(|()| trial::forget_confirmed(&self.state_dir))
                {
                    warn!("cannot forget the configuration rolled back before: {e}");
                }
                if let Some(within) = confirm_within {
                    return self.await_confirmation(previous, *within, texts, &who);
                }
                self.confirmed = texts;
                let c = self.core.config();
                let (simple, advanced) = (c.simple.len(), c.advanced.len());
                info!(simple, advanced, "configuration reloaded, as `portknock apply` asked ({who})");
                if enabled {
                    Answer::Done(format!(
                        "applied: {} and {} in table inet {TABLE}; the daemon enforces them now",
                        crate::report::count(simple, "simple door"),
                        crate::report::count(advanced, "advanced door"),
                    ))
                } else {
                    let text = format!("FW_PORTKNOCK is off: table inet {TABLE} removed, no port is protected; the daemon puts it back at the next apply that turns it on");
                    warn!("{text}");
                    Answer::Done(text)
                }
            }
            Request::Remove => match firewall::remove() {
                Ok(nft) => {
                    self.set_pending(None);
                    let keeper = self.core.keeper();
                    keeper.installed_by(nft);
                    keeper.turned_off();
                    let text = format!("table inet {TABLE} removed: no port is protected any more; the daemon keeps running and puts it back at the next apply");
                    warn!("{text} (asked by {who})");
                    Answer::Done(text)
                }
                Err(e) => Answer::Refused(e.to_string()),
            },
            Request::Open {
                source,
                port,
                open_for,
            } => {
                let mut changes = Changes::new();
                changes.grant(*source, *port, *open_for);
                match self.kernel.commit(&mut changes) {
                    Ok(()) => {
                        self.core.keeper().granted(*source, *port, Instant::now(), *open_for);
                        let secs = open_for.as_secs();
                        info!(%source, port, seconds = secs, "manual open by {who}");
                        Answer::Done(format!("opened port {port} to {source} for {secs}s"))
                    }
                    Err(e) => Answer::Refused(e.to_string()),
                }
            }
            Request::Close { source, port } => {
                let mut changes = Changes::new();
                changes.revoke(*source, *port);
                match self.kernel.commit(&mut changes) {
                    Ok(()) => {
                        self.core.keeper().revoked(*source, *port);
                        info!(%source, port, "manual close by {who}");
                        Answer::Done(format!(
                            "closed port {port} to {source} (established connections stay up)"
                        ))
                    }
                    Err(e) => Answer::Refused(e.to_string()),
                }
            }
            Request::Confirm => match self.pending.take() {
                Some(trial) => {
                    self.set_pending(None);
                    self.confirmed = trial.texts;
                    if let Err(e) = trial::forget_confirmed(&self.state_dir) {
                        warn!("cannot remove the copy of the previous configuration: {e}");
                    }
                    info!("configuration confirmed by {who}: it stays");
                    Answer::Done("confirmed: the configuration in force stays".to_string())
                }
                None => Answer::Refused("no apply is waiting for confirmation".to_string()),
            },
        }
    }

    /// Starts the trial of the configuration just put in force: `previous` comes back after
    /// `within` unless confirmed.
    fn await_confirmation(
        &mut self,
        previous: Config,
        within: Duration,
        texts: trial::Texts,
        who: &str,
    ) -> Answer {
        // What comes back must outlive this process: a restart after the rollback runs on it.
        if let Err(e) = trial::keep_confirmed(&self.state_dir, &self.confirmed) {
            warn!("cannot keep a copy of the previous configuration in {}: {e}; a rollback would not survive a restart", self.state_dir.display());
        }
        let fingerprint = texts.fingerprint();
        self.pending = Some(Pending {
            previous,
            deadline: Instant::now() + within,
            texts,
        });
        let deadline = SystemTime::now() + within;
        let deadline = deadline
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.set_pending(Some(trial::Pending {
            deadline,
            fingerprint,
        }));
        let secs = within.as_secs();
        info!("configuration applied on trial by {who}: it is rolled back in {secs} s unless confirmed");
        Answer::Done(format!(
            "applied on trial: run `portknock confirm` within {secs} s, from a new session through \
             the new doors, or the previous configuration comes back by itself"
        ))
    }

    /// Puts the previous configuration back if the trial's time ran out unconfirmed.
    fn roll_back_if_due(&mut self) {
        if self
            .pending
            .as_ref()
            .is_none_or(|p| p.deadline > Instant::now())
        {
            return;
        }
        let Some(trial) = self.pending.take() else {
            return;
        };
        match self.put_in_force(trial.previous.clone()) {
            Ok(()) => {
                self.set_pending(None);
                self.core.count().rollbacks += 1;
                if let Err(e) = trial::reject(&self.state_dir, &trial.texts.fingerprint()) {
                    error!("cannot remember the configuration rolled back: {e}; a reload of the files would put it in force again");
                }
                let c = self.core.config();
                warn!(
                    simple = c.simple.len(),
                    advanced = c.advanced.len(),
                    "not confirmed in time: rolled back to the previous configuration; the files still hold the one rolled back, and a reload refuses them until they change"
                );
            }
            Err(e) => {
                error!("not confirmed in time, but the previous configuration cannot be put back: {e}; still enforcing the one on trial, and trying again in {} s", ROLLBACK_RETRY.as_secs());
                self.pending = Some(Pending {
                    deadline: Instant::now() + ROLLBACK_RETRY,
                    ..trial
                });
            }
        }
    }

    /// Says in the state directory whether a confirmation is awaited, for `status`.
    fn set_pending(&mut self, pending: Option<trial::Pending>) {
        if pending.is_none() {
            self.pending = None;
        }
        if let Err(e) = trial::set_pending(&self.state_dir, pending) {
            warn!("cannot note the awaited confirmation for `portknock status`: {e}");
        }
    }
}

/// What a daemon starting on `config`'s files enforces, and the trial it takes over: not a
/// configuration rolled back for want of confirmation while the files hold it unchanged, nor
/// one whose trial ran out while no daemon ran; a trial under way when the daemon stopped goes
/// on until its deadline.
fn at_start(config: Config) -> (Config, Option<Pending>) {
    let state_dir = config.settings.state_dir.clone();
    let now = SystemTime::now();
    let unix = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let forget_trial = || {
        if let Err(e) = trial::set_pending(&state_dir, None) {
            warn!(
                "cannot clear the note of a trial in {}: {e}",
                state_dir.display()
            );
        }
    };
    match trial::in_force(config, unix) {
        trial::InForce::Files(config) => {
            // A trial of other files is over: they changed, and are what the daemon starts on.
            forget_trial();
            (config, None)
        }
        trial::InForce::Confirmed(confirmed) => {
            warn!("the configuration files hold the configuration that was rolled back for want of a confirmation: enforcing the last confirmed one instead, until the files change or are applied again");
            (confirmed, None)
        }
        trial::InForce::Unreadable(config, e) => {
            error!("the configuration files hold a configuration that was rolled back or whose trial ran out, and the last confirmed one cannot be read ({e}): enforcing the files");
            forget_trial();
            (config, None)
        }
        trial::InForce::OnTrial {
            files,
            previous,
            left,
        } => {
            warn!("the configuration files are on trial, as when the daemon stopped: `portknock confirm` within {left} s keeps them, or the last confirmed configuration comes back");
            let texts = trial::texts(&files);
            let trial = Pending {
                previous: *previous,
                deadline: Instant::now() + Duration::from_secs(left),
                texts,
            };
            (files, Some(trial))
        }
        trial::InForce::RanOut {
            confirmed,
            fingerprint,
        } => {
            warn!("the configuration files were on trial when the daemon stopped, and the deadline passed unconfirmed: enforcing the last confirmed configuration; a reload refuses the files until they change or are applied again");
            if let Err(e) = trial::reject(&state_dir, &fingerprint) {
                error!("cannot remember the configuration rolled back: {e}; a reload of the files would put it in force again");
            }
            forget_trial();
            (confirmed, None)
        }
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
        Event::Scanned { source } => {
            info!(%source, "scan: knocks on many ports outside every door; progress reset");
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
