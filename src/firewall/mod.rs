//! Enforcement in the kernel: the nftables policy, how it is installed and read back, and the
//! fast per-knock updates of its sets.

mod netlink;
mod nft;
mod privilege;
mod ruleset;

pub use netlink::{grants, table_exists, NetlinkError, SetUpdater};
pub use nft::{apply, NftError};
pub use privilege::{keep_only_net_admin, require_net_admin, DropError, NoPrivilege};
pub use ruleset::{remove_batch, Batch, Grant, Policy, NFLOG_GROUP, SNAPLEN, TABLE};
