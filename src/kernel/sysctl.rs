//! IPv4 per-interface sysctls (`net.ipv4.conf.<if>.<key>`), in the caller's network namespace.
//!
//! The `sysctl` crate maps dotted names to paths, so it cannot name an interface that itself
//! contains a dot (VLAN `eth0.100`); for those we address the /proc/sys file directly.

use crate::model::{SysctlKey, Sysctls};
use std::path::PathBuf;
use sysctl::Sysctl;

#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("reading net.ipv4.conf.{iface}.{key}: {msg}")]
    Read {
        iface: String,
        key: SysctlKey,
        msg: String,
    },
    #[error("setting net.ipv4.conf.{iface}.{key} to {value}: {msg}")]
    Write {
        iface: String,
        key: SysctlKey,
        value: i64,
        msg: String,
    },
}

fn proc_path(iface: &str, key: SysctlKey) -> PathBuf {
    PathBuf::from(format!("/proc/sys/net/ipv4/conf/{iface}/{key}"))
}

fn hint(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            format!("{e} (needs root or CAP_NET_ADMIN in this network namespace)")
        }
        std::io::ErrorKind::NotFound => format!("{e} (no such interface)"),
        _ => e.to_string(),
    }
}

pub fn read(iface: &str, key: SysctlKey) -> Result<i64, SysctlError> {
    let rerr = |msg: String| SysctlError::Read {
        iface: iface.to_string(),
        key,
        msg,
    };
    let text = if iface.contains('.') {
        std::fs::read_to_string(proc_path(iface, key)).map_err(|e| rerr(hint(&e)))?
    } else {
        let ctl = sysctl::Ctl::new(&format!("net.ipv4.conf.{iface}.{key}"))
            .map_err(|e| rerr(e.to_string()))?;
        ctl.value_string().map_err(|e| rerr(e.to_string()))?
    };
    text.trim()
        .parse()
        .map_err(|_| rerr(format!("unexpected value {:?}", text.trim())))
}

pub fn write(iface: &str, key: SysctlKey, value: i64) -> Result<(), SysctlError> {
    let werr = |msg: String| SysctlError::Write {
        iface: iface.to_string(),
        key,
        value,
        msg,
    };
    if iface.contains('.') {
        return std::fs::write(proc_path(iface, key), value.to_string())
            .map_err(|e| werr(hint(&e)));
    }
    let ctl = sysctl::Ctl::new(&format!("net.ipv4.conf.{iface}.{key}"))
        .map_err(|e| werr(e.to_string()))?;
    ctl.set_value_string(&value.to_string())
        .map_err(|e| werr(e.to_string()))?;
    // The crate reports success even when the kernel silently clamps: read back to be sure.
    match read(iface, key) {
        Ok(v) if v == value => Ok(()),
        Ok(v) => Err(werr(format!("the kernel kept {v}"))),
        Err(e) => Err(werr(e.to_string())),
    }
}

/// Reads every key rs-agent cares about for `all` and each interface that has IPv4 conf.
pub fn observe<'a>(ifaces: impl IntoIterator<Item = &'a str>) -> Result<Sysctls, SysctlError> {
    let mut out = Sysctls::new();
    for iface in std::iter::once("all").chain(ifaces) {
        let dir = PathBuf::from(format!("/proc/sys/net/ipv4/conf/{iface}"));
        if !dir.exists() {
            continue;
        }
        for key in SysctlKey::ALL {
            match read(iface, key) {
                Ok(value) => {
                    out.insert((iface.to_string(), key), value);
                }
                // Gone since it was listed (deleted, renamed, moved to another namespace): as
                // if it had not been there, rather than a failed pass; the next pass sees it
                // gone.
                Err(_) if iface != "all" && !dir.exists() => {
                    out.retain(|(i, _), _| i != iface);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(out)
}
