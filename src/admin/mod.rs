//! The administrator's commands: `check` (the configuration alone), and those that act on the
//! kernel directly: `apply`, `status`, `open`, `close`, `remove`. These read the truth from the
//! kernel rather than from the daemon, so they work the same whether or not the daemon runs.
//!
//! Each takes what `cli` parsed and loaded, and returns a [`Report`] or an [`AdminError`];
//! none prints.

mod check;
mod manual;
mod status;

use crate::config::Loaded;
use crate::firewall::{self, InstallError, NetlinkError, NftError, TABLE};
use crate::pidfile::{self, PidError};
use crate::report::{count, Report};

pub use check::check;
pub use manual::{close, open, parse_open_for, NotProtected, DEFAULT_MANUAL_OPEN};
pub use status::status;

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
    #[error("the rules are in force, but the running daemon could not be told to reload: {0}")]
    Reload(PidError),
    #[error("cannot render {what} as JSON: {error}")]
    Json {
        what: &'static str,
        error: serde_json::Error,
    },
}

/// `portknock apply`: puts the configuration in force and makes a running daemon reload it.
pub fn apply(loaded: Loaded) -> Result<Report, AdminError> {
    let mut report = warnings(&loaded);
    let config = loaded.config;
    firewall::install(&config).map_err(AdminError::Install)?;
    if config.settings.enabled {
        report.line(format!(
            "applied: {} and {} in table inet {TABLE}",
            count(config.simple.len(), "simple door"),
            count(config.advanced.len(), "advanced door"),
        ));
    } else {
        report.line(format!(
            "FW_PORTKNOCK is off: table inet {TABLE} removed, no port is protected"
        ));
    }
    match pidfile::signal_reload(&config.settings.state_dir).map_err(AdminError::Reload)? {
        Some(pid) => report.line(format!("asked the running daemon (pid {pid}) to reload")),
        None => report.line(
            "no daemon is running: start it with `portknock serve` (or systemctl start portknock)",
        ),
    }
    Ok(report)
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

/// `portknock remove`.
pub fn remove() -> Result<Report, AdminError> {
    firewall::remove().map_err(AdminError::Remove)?;
    let mut report = Report::new();
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
