//! Whether this process may change the firewall: nftables and NFLOG need CAP_NET_ADMIN.

use std::fs;

/// Bit of CAP_NET_ADMIN in the capability sets of `/proc/self/status`.
const CAP_NET_ADMIN: u32 = 12;

/// The process lacks CAP_NET_ADMIN.
#[derive(Debug, thiserror::Error)]
#[error("portknock needs CAP_NET_ADMIN to manage nftables and read knocks: run it as root, or grant the capability (the systemd unit does, with AmbientCapabilities=CAP_NET_ADMIN)")]
pub struct NoPrivilege;

/// Checks the effective capability set up front, so that a missing privilege is reported as
/// exactly that rather than as an obscure failure of the first netlink or nft call. When the
/// set cannot be read (no /proc), the check passes and the kernel has the last word.
pub fn require_net_admin() -> Result<(), NoPrivilege> {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return Ok(());
    };
    match effective_caps(&status) {
        Some(caps) if caps & (1 << CAP_NET_ADMIN) == 0 => Err(NoPrivilege),
        _ => Ok(()),
    }
}

fn effective_caps(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_set() {
        let root = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(root), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_caps("CapEff:\t0000000000000000\n"), Some(0));
        assert_eq!(effective_caps("nothing here"), None);
    }
}
