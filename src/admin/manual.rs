//! `portknock open` and `portknock close`: grants made and taken back by hand, as set changes
//! like a knock's, so they expire in the kernel like any grant.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::AdminError;
use crate::config;
use crate::control::Request;
use crate::firewall::{Changes, Kernel};
use crate::report::Report;

/// How long `open` grants when `--for` is not given.
pub const DEFAULT_MANUAL_OPEN: Duration = Duration::from_secs(3600);
/// The longest manual grant: a week. Longer belongs in the host's own firewall rules.
pub const MAX_MANUAL_OPEN: Duration = Duration::from_secs(7 * 24 * 3600);

/// `portknock open SOURCE PORT --for DURATION`, with the daemon of the configuration in `dir`:
/// the running daemon makes the grant, logs who asked, and keeps it should the table have to
/// be restored; with no daemon running, the grant is made here.
pub fn open(
    dir: &Path,
    source: IpAddr,
    port: u16,
    open_for: Duration,
) -> Result<Report, AdminError> {
    let request = Request::Open {
        source,
        port,
        open_for,
    };
    by_daemon_or_here(
        dir,
        &request,
        |changes| changes.grant(source, port, open_for),
        || format!("opened port {port} to {source} for {}s", open_for.as_secs()),
    )
}

/// `portknock close SOURCE PORT`, as [`open`] does it.
pub fn close(dir: &Path, source: IpAddr, port: u16) -> Result<Report, AdminError> {
    let request = Request::Close { source, port };
    by_daemon_or_here(
        dir,
        &request,
        |changes| changes.revoke(source, port),
        || format!("closed port {port} to {source} (established connections stay up)"),
    )
}

/// Asks the running daemon; with none, queues `change`, commits it, and says `done`.
fn by_daemon_or_here(
    dir: &Path,
    request: &Request,
    change: impl FnOnce(&mut Changes),
    done: impl FnOnce() -> String,
) -> Result<Report, AdminError> {
    let mut report = Report::new();
    if let Some(text) = super::ask_daemon(&config::state_dir(dir), request)? {
        report.line(text);
        return Ok(report);
    }
    let mut changes = Changes::new();
    change(&mut changes);
    commit(&mut changes)?;
    report.line(done());
    report.note("portknock: no daemon is running, so this is in the kernel but in no log");
    Ok(report)
}

fn commit(changes: &mut Changes) -> Result<(), AdminError> {
    Kernel::open()
        .and_then(|mut kernel| kernel.commit(changes))
        .map_err(AdminError::Netlink)
}
