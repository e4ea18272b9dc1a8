//! The administrator's commands: `check` (the configuration alone), and those that act on the
//! kernel directly: `apply`, `status`, `open`, `close`, `remove`. These read the truth from the
//! kernel rather than from the daemon, so they work the same whether or not the daemon runs.
//!
//! Each takes what `cli` parsed and loaded, and returns a [`Report`] or an [`AdminError`];
//! none prints.

mod check;
mod manual;
mod status;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{self, Loaded};
use crate::control::{self, Answer, ControlError, Request};
use crate::firewall::{self, InstallError, NetlinkError, NftError, TABLE};
use crate::report::{count, Report};
use crate::trial;

pub use check::check;
pub use manual::{close, open, parse_open_for, NotProtected, DEFAULT_MANUAL_OPEN};
pub use status::{status, Watch};

/// Why an administrator's command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Install(InstallError),
    #[error(transparent)]
    Remove(NftError),
    #[error(transparent)]
    Netlink(NetlinkError),
    #[error(transparent)]
    NotProtected(NotProtected),
    #[error(transparent)]
    Control(ControlError),
    #[error("the daemon refused: {0}")]
    Refused(String),
    #[error("{0}")]
    NoDaemon(&'static str),
    #[error("{conf} sets no FW_PORTKNOCK_METRICS_FILE, so the daemon writes no counters to watch: set it, then run portknock apply")]
    NoMetrics { conf: PathBuf },
    #[error("cannot render {what} as JSON: {error}")]
    Json {
        what: &'static str,
        error: serde_json::Error,
    },
}

/// `portknock apply` of the configuration in `dir`: the running daemon is asked to put it in
/// force, so that it is in force in the kernel and in the daemon when this returns; with no
/// daemon running, it is installed here.
///
/// With `confirm_within`, the daemon rolls the configuration back unless confirmed in time;
/// that needs the daemon, since it must happen when this process and its session are gone.
pub fn apply(
    dir: &Path,
    loaded: Loaded,
    confirm_within: Option<Duration>,
) -> Result<Report, AdminError> {
    let mut report = warnings(&loaded);
    let config = loaded.config;
    let request = Request::Apply {
        dir: canonical(dir),
        confirm_within,
    };
    if let Some(done) = ask_daemon(&config.settings.state_dir, &request)? {
        report.line(done);
        return Ok(report);
    }
    if confirm_within.is_some() {
        return Err(AdminError::NoDaemon(
            "--confirm-within needs the daemon running, which rolls back even when this \
             session is gone: start it (systemctl start portknock), or apply without it",
        ));
    }
    firewall::install(&config, &[]).map_err(AdminError::Install)?;
    // Applied on purpose, as through a daemon: a rollback or a trial of earlier files no longer
    // decides what a starting daemon enforces.
    let state_dir = &config.settings.state_dir;
    if trial::rejected(state_dir) == Some(trial::texts(&config).fingerprint()) {
        report.note("these files hold the configuration rolled back earlier for want of a confirmation; applied on purpose, it is in force and a starting daemon keeps it");
    }
    if let Err(e) = trial::clear_rejected(state_dir)
        .and_then(|()| trial::set_pending(state_dir, None))
        .and_then(|()| trial::forget_confirmed(state_dir))
    {
        report.note(format!("cannot forget an earlier trial in {}: {e}; a starting daemon may enforce the last confirmed configuration instead of these files", state_dir.display()));
    }
    if config.settings.enabled {
        report.line(format!(
            "applied: {} and {} in table inet {TABLE}",
            count(config.simple.len(), "simple door"),
            count(config.advanced.len(), "advanced door"),
        ));
        report.line(
            "no daemon is running: start it with `portknock serve` (or systemctl start portknock)",
        );
    } else {
        report.line(format!(
            "FW_PORTKNOCK is off: table inet {TABLE} removed, no port is protected"
        ));
    }
    Ok(report)
}

/// What the running daemon said it did, or `None` when no daemon runs with `state_dir`.
fn ask_daemon(state_dir: &Path, request: &Request) -> Result<Option<String>, AdminError> {
    match control::ask(state_dir, request).map_err(AdminError::Control)? {
        Some(Answer::Done(text)) => Ok(Some(text)),
        Some(Answer::Refused(why)) => Err(AdminError::Refused(why)),
        None => Ok(None),
    }
}

/// The directory as the daemon names its own, so that the two can be compared.
fn canonical(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// `portknock apply --dry-run`: the batch `apply` would send, as JSON.
pub fn dry_run(loaded: Loaded) -> Result<Report, AdminError> {
    let mut report = warnings(&loaded);
    let (batch, _) = firewall::batch_for(&loaded.config, &[]);
    let text = serde_json::to_string_pretty(&batch).map_err(|error| AdminError::Json {
        what: "the ruleset",
        error,
    })?;
    report.line(text);
    Ok(report)
}

/// `portknock confirm`: keeps what an `apply --confirm-within` put in force.
pub fn confirm(dir: &Path) -> Result<Report, AdminError> {
    let mut report = Report::new();
    match ask_daemon(&config::state_dir(dir), &Request::Confirm)? {
        Some(done) => report.line(done),
        None => {
            return Err(AdminError::NoDaemon(
                "no daemon is running, so there is nothing to confirm",
            ))
        }
    }
    Ok(report)
}

/// `portknock remove`: the running daemon of the configuration in `dir` is asked to take the
/// table away and to keep it away; with no daemon running, it is removed here.
pub fn remove(dir: &Path) -> Result<Report, AdminError> {
    let mut report = Report::new();
    let state_dir = config::state_dir(dir);
    if let Some(done) = ask_daemon(&state_dir, &Request::Remove)? {
        report.line(done);
        return Ok(report);
    }
    firewall::remove().map_err(AdminError::Remove)?;
    report.line(format!(
        "table inet {TABLE} removed: no port is protected any more"
    ));
    Ok(report)
}

/// A report that starts with the configuration's warnings.
fn warnings(loaded: &Loaded) -> Report {
    let mut report = Report::new();
    loaded.warnings.iter().for_each(|w| report.note(w));
    report
}
