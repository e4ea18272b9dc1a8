//! `portknock open` and `portknock close`: grants made and taken back by hand, as set changes
//! like a knock's, so they expire in the kernel like any grant.

use std::net::IpAddr;
use std::time::Duration;

use super::AdminError;
use crate::firewall::{Changes, Kernel};
use crate::report::Report;

/// How long `open` grants when `--for` is not given.
pub const DEFAULT_MANUAL_OPEN: Duration = Duration::from_secs(3600);
/// The longest manual grant: a week. Longer belongs in the host's own firewall rules.
pub const MAX_MANUAL_OPEN: Duration = Duration::from_secs(7 * 24 * 3600);

/// `portknock open SOURCE PORT --for DURATION`.
pub fn open(source: IpAddr, port: u16, open_for: Duration) -> Result<Report, AdminError> {
    let mut changes = Changes::new();
    changes.grant(source, port, open_for);
    commit(&mut changes)?;
    let mut report = Report::new();
    report.line(format!(
        "opened port {port} to {source} for {}s",
        open_for.as_secs()
    ));
    Ok(report)
}

/// `portknock close SOURCE PORT`.
pub fn close(source: IpAddr, port: u16) -> Result<Report, AdminError> {
    let mut changes = Changes::new();
    changes.revoke(source, port);
    commit(&mut changes)?;
    let mut report = Report::new();
    report.line(format!(
        "closed port {port} to {source} (established connections stay up)"
    ));
    Ok(report)
}

fn commit(changes: &mut Changes) -> Result<(), AdminError> {
    Kernel::open()
        .and_then(|mut kernel| kernel.commit(changes))
        .map_err(AdminError::Netlink)
}
