//! Enforcement in the kernel: the nftables policy, how it is installed and read back, and the
//! fast per-knock updates of its sets.

mod changes;
mod monitor;
mod netlink;
mod nft;
mod privilege;
mod ruleset;

pub use changes::Changes;
pub use monitor::{Monitor, MonitorError, Object, TableChange, Transaction};
pub use netlink::{grants, set_receive_buffer, Kernel, NetlinkError};
pub use nft::NftError;
pub use privilege::{keep_only_net_admin, require_net_admin, DropError, NoPrivilege};
pub use ruleset::{Batch, Grant, Policy, NFLOG_GROUP, SNAPLEN, TABLE};

use crate::config::Config;

/// Why the policy could not be installed or removed; nothing was changed either way.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot read the grants to keep: {0}")]
    Grants(NetlinkError),
    #[error(transparent)]
    Nft(NftError),
}

/// What a batch does, for nft's error message.
const INSTALLING: &str = "installing the portknock ruleset";
const REMOVING: &str = "removing the portknock table";

/// Puts `config` in force atomically, keeping the grants of doors that still exist, both those
/// the kernel holds and `known` ones it may have lost (a flushed ruleset); with the engine
/// off, removes the table instead. Returns the pid of the `nft` that made the change.
pub fn install(config: &Config, known: &[Grant]) -> Result<u32, InstallError> {
    let keep = if config.settings.enabled {
        let mut keep = grants().map_err(InstallError::Grants)?.unwrap_or_default();
        keep.extend_from_slice(known);
        merge(keep)
    } else {
        Vec::new()
    };
    let (batch, what) = batch_for(config, &keep);
    nft::apply(&batch, what).map_err(InstallError::Nft)
}

/// One grant per (source, port), the one with the most time left.
fn merge(mut grants: Vec<Grant>) -> Vec<Grant> {
    grants.sort_by(|a, b| (a.source, a.port, b.remaining).cmp(&(b.source, b.port, a.remaining)));
    grants.dedup_by(|later, first| (later.source, later.port) == (first.source, first.port));
    grants
}

/// Removes the table, and with it every rule and grant of portknock. Returns the pid of the
/// `nft` that made the change.
pub fn remove() -> Result<u32, NftError> {
    nft::apply(&ruleset::remove_batch(), REMOVING)
}

/// The batch that puts `config` in force, carrying over the grants in `keep`, and what it does:
/// the policy, or with the engine off the removal of the table. `apply --dry-run` prints it.
pub fn batch_for(config: &Config, keep: &[Grant]) -> (Batch, &'static str) {
    if config.settings.enabled {
        let batch = Policy::from_config(config).install_batch(keep);
        (batch, INSTALLING)
    } else {
        (ruleset::remove_batch(), REMOVING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn grants_known_twice_keep_the_most_time_left() {
        let grant = |source: &str, port, secs| Grant {
            source: source.parse().unwrap(),
            port,
            remaining: Duration::from_secs(secs),
        };
        let merged = merge(vec![
            grant("198.18.0.2", 22, 5),
            grant("198.18.0.3", 22, 9),
            grant("198.18.0.2", 22, 30),
            grant("198.18.0.2", 2222, 1),
        ]);
        assert_eq!(
            merged,
            [
                grant("198.18.0.2", 22, 30),
                grant("198.18.0.2", 2222, 1),
                grant("198.18.0.3", 22, 9),
            ]
        );
    }
}
