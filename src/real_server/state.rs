//! The real-server state file: what rs-agent changed, so that `down` undoes exactly that
//! (`real-server.json`, and the configuration last applied beside it; the scheme is
//! `state_dir::Journal`'s).
//!
//! It is a journal: ownership is recorded *before* a change is applied and forgotten after a
//! removal succeeded, so a crash in the middle of `up` leaves a file that names everything that
//! may have been done, and `down` copes with items that turn out never to have been applied.

use super::model::RealServerDesired;
use crate::config_file::check_ifname;
use crate::model::{host_prefix, Change, NftFamily, SysctlKey};
use crate::state_dir::{OwnedAddrs, StateError, REAL_SERVER_JOURNAL};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A sysctl rs-agent changed: the value before (to restore) and the value it set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedSysctl {
    pub iface: String,
    pub key: SysctlKey,
    pub previous: i64,
    pub applied: i64,
}

/// What rs-agent owns on a real server, and (in memory) the configuration last applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealServerState {
    /// The configuration last applied, so `status` works without a config. Kept in
    /// `real-server-desired.json` beside the journal, as the director keeps its own; a journal
    /// written by rs-agent 0.1 carries it inline, which is still read.
    #[serde(default, skip_serializing)]
    pub desired: Option<RealServerDesired>,
    #[serde(default)]
    pub sysctls: Vec<OwnedSysctl>,
    #[serde(default)]
    pub addrs: OwnedAddrs,
    /// The dummy device rs-agent created, if any.
    pub dummy: Option<String>,
    #[serde(default)]
    pub nft_tables: BTreeSet<NftFamily>,
}

impl RealServerState {
    pub fn path(dir: &Path) -> PathBuf {
        REAL_SERVER_JOURNAL.path(dir)
    }

    /// Loads the state, or an empty one when there is no file.
    pub fn load(dir: &Path) -> Result<Self, StateError> {
        let mut state: Self = REAL_SERVER_JOURNAL.load(dir)?;
        if let Some(desired) = REAL_SERVER_JOURNAL.load_desired(dir)? {
            state.desired = Some(desired);
        }
        state.check().map_err(|reason| StateError::Invalid {
            path: Self::path(dir).display().to_string(),
            reason,
        })?;
        Ok(state)
    }

    /// What no rs-agent writes: an interface name the kernel would refuse, `lo` as the dummy
    /// device, an address prefix longer than the family's. Everything else is re-checked
    /// against the kernel before it is acted on.
    fn check(&self) -> Result<(), String> {
        let bad_name = |name: &str| check_ifname(name).is_err();
        if let Some(dummy) = &self.dummy {
            if bad_name(dummy) || dummy == "lo" {
                return Err(format!("dummy device {dummy:?} is not one rs-agent makes"));
            }
        }
        for a in self.addrs.iter() {
            if bad_name(&a.ifname) || a.prefix > host_prefix(&a.ip) {
                return Err(format!(
                    "address {}/{} on {:?} is not valid",
                    a.ip, a.prefix, a.ifname
                ));
            }
        }
        match self.sysctls.iter().find(|s| bad_name(&s.iface)) {
            Some(s) => Err(format!("sysctl interface {:?} is not valid", s.iface)),
            None => Ok(()),
        }
    }

    /// Writes atomically (temp file + rename); an empty state removes the files.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        if let (Some(desired), false) = (&self.desired, self.is_empty()) {
            REAL_SERVER_JOURNAL.save_desired(dir, desired)?;
        }
        REAL_SERVER_JOURNAL.save(dir, self, self.is_empty())
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
            Change::AddAddr { .. } | Change::RelabelAddr { .. } => self.addrs.record(change),
            _ => {}
        }
    }

    /// Forgets ownership a change has given up (call after applying it).
    pub fn forget(&mut self, change: &Change) {
        match change {
            Change::DeleteDummy { name } if self.dummy.as_ref() == Some(name) => {
                self.dummy = None;
                self.addrs.forget_device(name);
            }
            Change::RestoreSysctl { iface, key, .. } => self
                .sysctls
                .retain(|s| !(&s.iface == iface && s.key == *key)),
            Change::NftDelete { family, .. } => {
                self.nft_tables.remove(family);
            }
            Change::DelAddr { .. } => self.addrs.forget(change),
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

    #[test]
    fn the_configuration_sits_beside_the_journal_and_0_1_inline_is_read() {
        let dir = std::env::temp_dir().join(format!("rs-agent-state-v1-{}", std::process::id()));
        let desired = RealServerDesired {
            vips: vec!["192.0.2.100".parse().expect("literal")],
            device: super::super::model::Device::Loopback,
            arp: super::super::model::ArpMethod::Sysctl,
            interfaces: None,
        };
        let mut s = RealServerState {
            desired: Some(desired.clone()),
            ..RealServerState::default()
        };
        s.record(&Change::AddAddr {
            ifname: "lo".into(),
            ip: "192.0.2.100".parse().expect("literal"),
            prefix: 32,
            label: Some("lo:rsagent".into()),
        });
        s.save(&dir).expect("save");
        let journal = std::fs::read_to_string(RealServerState::path(&dir)).expect("journal");
        assert!(!journal.contains("desired"), "{journal}");
        assert!(dir.join(REAL_SERVER_JOURNAL.desired).exists());
        assert_eq!(RealServerState::load(&dir).expect("load"), s);

        // rs-agent 0.1 wrote one pretty file with the configuration inline.
        std::fs::remove_file(dir.join(REAL_SERVER_JOURNAL.desired)).expect("rm desired");
        let v0_1 = include_str!("../../tests/fixtures/state-0.1/real-server-sysctl.json");
        std::fs::write(RealServerState::path(&dir), v0_1).expect("write 0.1 journal");
        let old = RealServerState::load(&dir).expect("0.1 journal loads");
        let old_desired = old.desired.as_ref().expect("0.1 configuration read");
        assert_eq!(old_desired.vips.len(), 2);
        assert_eq!((old.sysctls.len(), old.addrs.len()), (2, 2));
        RealServerState::default().save(&dir).expect("save empty");
        assert!(!RealServerState::path(&dir).exists());
        assert!(!dir.join(REAL_SERVER_JOURNAL.desired).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A state file is input: one naming what no rs-agent writes is refused before anything
    /// acts on it.
    #[test]
    fn a_forged_journal_is_refused_naming_the_file() {
        let dir =
            std::env::temp_dir().join(format!("rs-agent-state-forged-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        for forged in [
            r#"{"dummy":"lo"}"#,
            r#"{"dummy":"../eth0"}"#,
            r#"{"addrs":[{"ifname":"lo","ip":"192.0.2.1","prefix":33,"label":null}]}"#,
            r#"{"sysctls":[{"iface":"a b","key":"arp_ignore","previous":0,"applied":1}]}"#,
        ] {
            std::fs::write(RealServerState::path(&dir), forged).expect("write");
            match RealServerState::load(&dir) {
                Err(e @ StateError::Invalid { .. }) => {
                    assert!(
                        e.to_string()
                            .contains("real-server.json: corrupt state file"),
                        "{e}"
                    )
                }
                other => panic!("{forged}: {other:?}"),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
