//! Whether this process may change the firewall: nftables and NFLOG need CAP_NET_ADMIN.

use std::fs;

use caps::{CapSet, Capability};

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

/// Dropping capabilities failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot drop capabilities the daemon does not need: {0}")]
pub struct DropError(String);

/// Keeps CAP_NET_ADMIN and nothing else, in every capability set including the bounding set,
/// so that neither the daemon nor the `nft` it runs for reloads can do more than manage the
/// firewall: a root daemon without CAP_DAC_OVERRIDE, CAP_SYS_ADMIN and the rest. Files it
/// needs afterwards (the state directory, the configuration) belong to root, so the owner's
/// permission bits still let it in.
pub fn keep_only_net_admin() -> Result<(), DropError> {
    let keep = Capability::CAP_NET_ADMIN;
    let err = |e: caps::errors::CapsError| DropError(e.to_string());
    // The kernel lets only a holder of CAP_SETPCAP shrink the bounding set; without it (a
    // systemd unit whose bounding set is CAP_NET_ADMIN already, a container) there is nothing
    // more to take from it, and the sets below still shrink.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).map_err(err)? {
        for cap in caps::read(None, CapSet::Bounding).map_err(err)? {
            if cap != keep {
                caps::drop(None, CapSet::Bounding, cap).map_err(err)?;
            }
        }
    }
    let only: caps::CapsHashSet = [keep].into_iter().collect();
    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
        caps::set(None, set, &only).map_err(err)?;
    }
    // Ambient keeps CAP_NET_ADMIN across the exec of `nft` when the daemon does not run as
    // uid 0 (as under a systemd unit with a dedicated user).
    caps::raise(None, CapSet::Ambient, keep).map_err(err)
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
