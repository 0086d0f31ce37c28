//! Checks that the node can carry out a plan, before anything is changed: permissions, the
//! `nft` binary, kernel drivers. Each failure is one line naming what is missing and the fix.

use std::path::Path;

/// Bit of CAP_NET_ADMIN in the capability sets (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
/// Bit of CAP_NET_RAW, needed to send gratuitous ARP on a packet socket.
pub const CAP_NET_RAW: u32 = 13;

/// Whether the effective capability set of this process holds `cap` (from /proc/self/status).
pub fn has_capability(cap: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << cap) != 0)
}

/// What the host lacks for a command; each message names what is missing and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "permission denied: changing addresses, sysctls and nft tables needs root or \
         CAP_NET_ADMIN; run with sudo or grant the capability (see units/)"
    )]
    NetAdmin,
    #[error(
        "--arp nft needs the `nft` binary, which is not on PATH; install it with \
         `apt-get install nftables`, or use --arp sysctl"
    )]
    NoNft,
    #[error(
        "--device {name}: this kernel has no dummy driver (module `dummy` neither loaded nor \
         installed under /lib/modules); use --device lo, or install the module"
    )]
    Dummy { name: String },
}

pub fn require_cap_net_admin() -> Result<(), PreflightError> {
    if has_capability(CAP_NET_ADMIN) {
        Ok(())
    } else {
        Err(PreflightError::NetAdmin)
    }
}

pub fn require_nft() -> Result<(), PreflightError> {
    if super::nft::nft_available() {
        Ok(())
    } else {
        Err(PreflightError::NoNft)
    }
}

/// True when the dummy driver is loaded or loadable (built in or present as a module).
pub fn dummy_driver_available() -> bool {
    if Path::new("/sys/module/dummy").exists() {
        return true;
    }
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let dir = Path::new("/lib/modules").join(release.trim());
    ["modules.builtin", "modules.dep"].iter().any(|f| {
        std::fs::read_to_string(dir.join(f)).is_ok_and(|t| {
            t.lines().any(|l| {
                l.split(':').next().is_some_and(|m| {
                    m.ends_with("/dummy.ko")
                        || m.ends_with("/dummy.ko.xz")
                        || m.ends_with("/dummy.ko.zst")
                })
            })
        })
    })
}

pub fn require_dummy(name: &str) -> Result<(), PreflightError> {
    if dummy_driver_available() {
        Ok(())
    } else {
        Err(PreflightError::Dummy {
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages docs/troubleshooting.md and the namespace tests quote.
    #[test]
    fn messages_name_what_is_missing_and_the_fix() {
        assert_eq!(
            PreflightError::NetAdmin.to_string(),
            "permission denied: changing addresses, sysctls and nft tables needs root or \
             CAP_NET_ADMIN; run with sudo or grant the capability (see units/)"
        );
        assert_eq!(
            PreflightError::NoNft.to_string(),
            "--arp nft needs the `nft` binary, which is not on PATH; install it with \
             `apt-get install nftables`, or use --arp sysctl"
        );
        assert_eq!(
            PreflightError::Dummy { name: "rs0".into() }.to_string(),
            "--device rs0: this kernel has no dummy driver (module `dummy` neither loaded nor \
             installed under /lib/modules); use --device lo, or install the module"
        );
    }
}
