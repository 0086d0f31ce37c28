//! The real-server state file: what rs-agent changed, so that `down` undoes exactly that.
//!
//! It is a journal: ownership is recorded *before* a change is applied and forgotten after a
//! removal succeeded, so a crash in the middle of `up` leaves a file that names everything that
//! may have been done, and `down` copes with items that turn out never to have been applied.

use super::model::RealServerDesired;
use crate::model::{Change, NftFamily, SysctlKey};
use crate::state_dir::{load_json, write_atomic, StateError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

const FILE_NAME: &str = "real-server.json";

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
    use crate::testing::ip;

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
            ip: ip("192.0.2.100"),
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
