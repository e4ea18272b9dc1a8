//! Whether this process may change the firewall: nftables and NFLOG need CAP_NET_ADMIN.

use caps::{CapSet, Capability};

/// The process lacks CAP_NET_ADMIN.
#[derive(Debug, thiserror::Error)]
#[error("portknock needs CAP_NET_ADMIN to manage nftables and read knocks: run it as root, or grant the capability (the systemd unit does, with AmbientCapabilities=CAP_NET_ADMIN)")]
pub struct NoPrivilege;

/// Checks the effective capability set up front, so that a missing privilege is reported as
/// exactly that rather than as an obscure failure of the first netlink or nft call. When the
/// set cannot be read, the check passes and the kernel has the last word.
pub fn require_net_admin() -> Result<(), NoPrivilege> {
    match caps::has_cap(None, CapSet::Effective, Capability::CAP_NET_ADMIN) {
        Ok(false) => Err(NoPrivilege),
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
