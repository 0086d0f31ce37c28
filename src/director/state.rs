//! The director's state file: which IPVS services and VIP addresses are rs-agent's own.
//! The last applied configuration lives beside it in `director-desired.json` (for `status`),
//! written after a successful apply, so that the ownership journal stays small.
//! Recorded before a change is applied, forgotten after a removal: `down` removes exactly
//! these and nothing else, even after a crash in the middle of `up`.

use super::config::DirectorDesired;
use crate::kernel::ipvs::{IpvsOp, ServiceKey};
use crate::model::Change;
use crate::state_dir::{OwnedAddrs, StateError, DIRECTOR_JOURNAL};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectorState {
    #[serde(default)]
    pub services: Vec<ServiceKey>,
    #[serde(default)]
    pub addrs: OwnedAddrs,
}

impl DirectorState {
    pub fn path(dir: &Path) -> PathBuf {
        DIRECTOR_JOURNAL.path(dir)
    }

    /// The ownership journal (without the last applied configuration).
    pub fn load(dir: &Path) -> Result<Self, StateError> {
        DIRECTOR_JOURNAL.load(dir)
    }

    /// The configuration the last successful `up` applied, for `status` without a config.
    pub fn load_desired(dir: &Path) -> Result<Option<DirectorDesired>, StateError> {
        DIRECTOR_JOURNAL.load_desired(dir)
    }

    pub fn save_desired(dir: &Path, desired: &DirectorDesired) -> Result<(), StateError> {
        DIRECTOR_JOURNAL.save_desired(dir, desired)
    }

    /// Forgets the last applied configuration, and with it the verdicts the last `director
    /// run` left (`director status` must not show them over a table that is gone).
    pub fn forget_desired(dir: &Path) -> Result<(), StateError> {
        DIRECTOR_JOURNAL.forget_desired(dir)?;
        crate::state_dir::write_atomic(dir, crate::state_dir::DIRECTOR_HEALTH, None)
    }

    /// Writes atomically; a state that owns nothing removes the journal (the configuration
    /// beside it is the caller's: `down` forgets it, a pass that owns nothing keeps it).
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let owns_nothing = self.services.is_empty() && self.addrs.is_empty();
        match owns_nothing {
            true => crate::state_dir::write_atomic(dir, DIRECTOR_JOURNAL.file, None),
            false => DIRECTOR_JOURNAL.save(dir, self, false),
        }
    }

    pub fn owns_addr(&self, ifname: &str, ip: &IpAddr) -> bool {
        self.addrs.owns(ifname, ip)
    }

    /// Records the ownership ops are about to create (before applying them).
    pub fn record_ops(&mut self, ops: &[IpvsOp]) {
        let created: Vec<ServiceKey> = ops
            .iter()
            .filter_map(|op| match op {
                IpvsOp::AddService(s) | IpvsOp::EditService(s) => Some(s.key.clone()),
                _ => None,
            })
            .collect();
        self.own(&created);
    }

    /// Records services as rs-agent's (created by it, or adopted with `--adopt`).
    pub fn own(&mut self, keys: &[ServiceKey]) {
        let mut owned: HashSet<ServiceKey> = self.services.iter().cloned().collect();
        for key in keys {
            if owned.insert(key.clone()) {
                self.services.push(key.clone());
            }
        }
    }

    /// Forgets the services the ops deleted, once they are applied.
    pub fn forget_ops(&mut self, ops: &[IpvsOp]) {
        let deleted: HashSet<&ServiceKey> = ops
            .iter()
            .filter_map(|op| match op {
                IpvsOp::DelService(key) => Some(key),
                _ => None,
            })
            .collect();
        if !deleted.is_empty() {
            self.services.retain(|k| !deleted.contains(k));
        }
    }

    pub fn record_addr(&mut self, change: &Change) {
        if let Change::AddAddr { .. } = change {
            self.addrs.record(change);
        }
    }

    /// Records an address that exists as rs-agent's (adopted with `--adopt`).
    pub fn own_addr(&mut self, addr: &crate::model::Addr) {
        self.addrs.adopt(addr);
    }

    pub fn forget_addr(&mut self, change: &Change) {
        self.addrs.forget(change);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The journal's format is what rs-agent 0.1 wrote (read back after an upgrade).
    #[test]
    fn the_journal_reads_and_writes_the_0_1_format() {
        let v0_1 = r#"{"services":[{"kind":"addr","protocol":"tcp","addr":"192.0.2.100","port":80}],"addrs":[{"ifname":"eth0","ip":"192.0.2.100","prefix":32,"label":"eth0:rsagent"}]}"#;
        let state: DirectorState = match serde_json::from_str(v0_1) {
            Ok(s) => s,
            Err(e) => panic!("0.1 journal does not parse: {e}"),
        };
        assert_eq!((state.services.len(), state.addrs.len()), (1, 1));
        assert!(state.owns_addr("eth0", &"192.0.2.100".parse().expect("literal")));
        assert_eq!(serde_json::to_string(&state).expect("serializes"), v0_1);
    }
}
