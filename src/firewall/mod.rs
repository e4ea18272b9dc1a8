//! Enforcement in the kernel: the nftables policy, how it is installed and read back, and the
//! fast per-knock updates of its sets.

mod changes;
mod netlink;
mod nft;
mod privilege;
mod ruleset;

pub use changes::Changes;
pub use netlink::{grants, table_exists, Kernel, NetlinkError};
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

/// Puts `config` in force atomically, keeping the grants of doors that still exist; with the
/// engine off, removes the table instead.
pub fn install(config: &Config) -> Result<(), InstallError> {
    let keep = if config.settings.enabled {
        grants().map_err(InstallError::Grants)?.unwrap_or_default()
    } else {
        Vec::new()
    };
    let (batch, what) = batch_for(config, &keep);
    nft::apply(&batch, what).map_err(InstallError::Nft)
}

/// Removes the table, and with it every rule and grant of portknock.
pub fn remove() -> Result<(), NftError> {
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
