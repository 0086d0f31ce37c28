//! The real-server state file: what rs-agent changed, so that `down` undoes exactly that.
//!
//! It is a journal: ownership is recorded *before* a change is applied and forgotten after a
//! removal succeeded, so a crash in the middle of `up` leaves a file that names everything that
//! may have been done, and `down` copes with items that turn out never to have been applied.

use crate::model::{Change, NftFamily, RealServerDesired, SysctlKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Default directory for state files (tmpfs: cleared at boot, like the addresses it describes).
pub const DEFAULT_STATE_DIR: &str = "/run/rs-agent";
const FILE_NAME: &str = "real-server.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "{path}: cannot read state: {source}; remove it only if you are sure nothing is configured"
    )]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: corrupt state file: {source}; inspect it, or remove it and clean up by hand")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path}: cannot write state: {source}; check --state-dir is writable")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Reads a JSON state file; a missing file is the default (empty) state.
pub fn load_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(T::default()),
        Err(source) => {
            return Err(StateError::Read {
                path: path.display().to_string(),
                source,
            })
        }
    };
    serde_json::from_str(&text).map_err(|source| StateError::Parse {
        path: path.display().to_string(),
        source,
    })
}

/// Writes `dir/name` atomically (temp file + rename), or removes it when `text` is `None`.
/// The file is readable by all (0644) whatever the umask (the units set 0077): it holds VIPs
/// and the sysctl values to restore, nothing secret, and `status` run by a monitoring user
/// reads it.
pub fn write_atomic(dir: &Path, name: &str, text: Option<String>) -> Result<(), StateError> {
    let path = dir.join(name);
    let werr = |source| StateError::Write {
        path: path.display().to_string(),
        source,
    };
    let Some(text) = text else {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(werr(e)),
            _ => Ok(()),
        };
    };
    std::fs::create_dir_all(dir).map_err(werr)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text + "\n").map_err(werr)?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(werr)?;
    std::fs::rename(&tmp, &path).map_err(werr)
}

/// A sysctl rs-agent changed: the value before (to restore) and the value it set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedSysctl {
    pub iface: String,
    pub key: SysctlKey,
    pub previous: i64,
    pub applied: i64,
}

/// An address rs-agent added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedAddr {
    pub ifname: String,
    pub ip: IpAddr,
    pub prefix: u8,
    pub label: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealServerState {
    /// The configuration last applied, so `status` works without a config.
    pub desired: Option<RealServerDesired>,
    #[serde(default)]
    pub sysctls: Vec<OwnedSysctl>,
    #[serde(default)]
    pub addrs: Vec<OwnedAddr>,
    /// The dummy device rs-agent created, if any.
    pub dummy: Option<String>,
    #[serde(default)]
    pub nft_tables: BTreeSet<NftFamily>,
}

impl RealServerState {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE_NAME)
    }

    /// Loads the state, or an empty one when there is no file.
    pub fn load(dir: &Path) -> Result<Self, StateError> {
        load_json(&Self::path(dir))
    }

    /// Writes atomically (temp file + rename); an empty state removes the file.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        write_atomic(dir, FILE_NAME, (!self.is_empty()).then_some(text))
    }

    /// True when rs-agent owns nothing on this node.
    pub fn is_empty(&self) -> bool {
        self.sysctls.is_empty()
            && self.addrs.is_empty()
            && self.dummy.is_none()
            && self.nft_tables.is_empty()
    }

    pub fn sysctl(&self, iface: &str, key: SysctlKey) -> Option<&OwnedSysctl> {
        self.sysctls
            .iter()
            .find(|s| s.iface == iface && s.key == key)
    }

    fn owns_addr(&self, ifname: &str, ip: &IpAddr) -> bool {
        self.addrs.iter().any(|a| a.ifname == ifname && &a.ip == ip)
    }

    /// Records the ownership a change is about to create (call before applying it).
    pub fn record(&mut self, change: &Change) {
        match change {
            Change::CreateDummy { name } => self.dummy = Some(name.clone()),
            Change::SetSysctl {
                iface,
                key,
                from,
                to,
            } => match self
                .sysctls
                .iter_mut()
                .find(|s| &s.iface == iface && s.key == *key)
            {
                // Keep the original value: it is what `down` must restore.
                Some(owned) => owned.applied = *to,
                None => self.sysctls.push(OwnedSysctl {
                    iface: iface.clone(),
                    key: *key,
                    previous: *from,
                    applied: *to,
                }),
            },
            Change::NftReplace { family, .. } => {
                self.nft_tables.insert(*family);
            }
            Change::AddAddr {
                ifname,
                ip,
                prefix,
                label,
            } if !self.owns_addr(ifname, ip) => {
                self.addrs.push(OwnedAddr {
                    ifname: ifname.clone(),
                    ip: *ip,
                    prefix: *prefix,
                    label: label.clone(),
                });
            }
            Change::RelabelAddr { ifname, ip, to, .. } => {
                if let Some(owned) = self
                    .addrs
                    .iter_mut()
                    .find(|a| &a.ifname == ifname && &a.ip == ip)
                {
                    owned.label = to.clone();
                }
            }
            _ => {}
        }
    }

    /// Forgets ownership a change has given up (call after applying it).
    pub fn forget(&mut self, change: &Change) {
        match change {
            Change::DeleteDummy { name } if self.dummy.as_ref() == Some(name) => {
                self.dummy = None;
                self.addrs.retain(|a| &a.ifname != name);
            }
            Change::RestoreSysctl { iface, key, .. } => self
                .sysctls
                .retain(|s| !(&s.iface == iface && s.key == *key)),
            Change::NftDelete { family, .. } => {
                self.nft_tables.remove(family);
            }
            Change::DelAddr { ifname, ip, .. } => {
                self.addrs.retain(|a| !(&a.ifname == ifname && &a.ip == ip))
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keeps_the_first_previous_value() {
        let mut s = RealServerState::default();
        let set = |from, to| Change::SetSysctl {
            iface: "eth0".into(),
            key: SysctlKey::ArpIgnore,
            from,
            to,
        };
        s.record(&set(0, 1));
        s.record(&set(1, 2));
        let owned = s.sysctl("eth0", SysctlKey::ArpIgnore).expect("recorded");
        assert_eq!((owned.previous, owned.applied), (0, 2));
        s.forget(&Change::RestoreSysctl {
            iface: "eth0".into(),
            key: SysctlKey::ArpIgnore,
            from: 2,
            to: 0,
        });
        assert!(s.is_empty());
    }

    #[test]
    fn save_and_load_round_trip_and_empty_removes() {
        let dir = std::env::temp_dir().join(format!("rs-agent-state-test-{}", std::process::id()));
        let mut s = RealServerState::default();
        s.record(&Change::AddAddr {
            ifname: "lo".into(),
            ip: "192.0.2.100".parse().expect("literal"),
            prefix: 32,
            label: Some("lo:rsagent".into()),
        });
        s.save(&dir).expect("save");
        assert_eq!(RealServerState::load(&dir).expect("load"), s);
        RealServerState::default().save(&dir).expect("save empty");
        assert!(!RealServerState::path(&dir).exists());
        assert_eq!(
            RealServerState::load(&dir).expect("load"),
            RealServerState::default()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
