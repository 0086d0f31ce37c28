//! The director's state file: which IPVS services and VIP addresses are rs-agent's own.
//! The last applied configuration lives beside it in `director-desired.json` (for `status`),
//! written after a successful apply, so that the ownership journal stays small.
//! Recorded before a change is applied, forgotten after a removal: `down` removes exactly
//! these and nothing else, even after a crash in the middle of `up`.

use super::config::DirectorDesired;
use crate::kernel::ipvs::{IpvsOp, ServiceKey};
use crate::model::Change;
use crate::real_server::state::OwnedAddr;
use crate::state_dir::StateError;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

const FILE_NAME: &str = "director.json";
const DESIRED_FILE: &str = "director-desired.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectorState {
    #[serde(default)]
    pub services: Vec<ServiceKey>,
    #[serde(default)]
    pub addrs: Vec<OwnedAddr>,
}

impl DirectorState {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE_NAME)
    }

    /// The ownership journal (without the last applied configuration).
    pub fn load(dir: &Path) -> Result<Self, StateError> {
        crate::state_dir::load_json(&Self::path(dir))
    }

    /// The configuration the last successful `up` applied, for `status` without a config.
    pub fn load_desired(dir: &Path) -> Result<Option<DirectorDesired>, StateError> {
        crate::state_dir::load_json(&dir.join(DESIRED_FILE))
    }

    pub fn save_desired(dir: &Path, desired: &DirectorDesired) -> Result<(), StateError> {
        let text = serde_json::to_string(desired).unwrap_or_default();
        crate::state_dir::write_atomic(dir, DESIRED_FILE, Some(text))
    }

    pub fn forget_desired(dir: &Path) -> Result<(), StateError> {
        crate::state_dir::write_atomic(dir, DESIRED_FILE, None)
    }

    /// Writes atomically; a state that owns nothing removes the file.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let owns_nothing = self.services.is_empty() && self.addrs.is_empty();
        // Compact: with thousands of real servers the pretty form is megabytes.
        let text = serde_json::to_string(self).unwrap_or_default();
        crate::state_dir::write_atomic(dir, FILE_NAME, (!owns_nothing).then_some(text))
    }

    pub fn owns_addr(&self, ifname: &str, ip: &IpAddr) -> bool {
        self.addrs.iter().any(|a| a.ifname == ifname && &a.ip == ip)
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
        if let Change::AddAddr {
            ifname,
            ip,
            prefix,
            label,
        } = change
        {
            if !self.owns_addr(ifname, ip) {
                self.addrs.push(OwnedAddr {
                    ifname: ifname.clone(),
                    ip: *ip,
                    prefix: *prefix,
                    label: label.clone(),
                });
            }
        }
    }

    /// Records an address that exists as rs-agent's (adopted with `--adopt`).
    pub fn own_addr(&mut self, addr: &crate::model::Addr) {
        if !self.owns_addr(&addr.ifname, &addr.ip) {
            self.addrs.push(OwnedAddr {
                ifname: addr.ifname.clone(),
                ip: addr.ip,
                prefix: addr.prefix,
                label: addr.label.clone(),
            });
        }
    }

    pub fn forget_addr(&mut self, change: &Change) {
        if let Change::DelAddr { ifname, ip, .. } = change {
            self.addrs.retain(|a| !(&a.ifname == ifname && &a.ip == ip));
        }
    }
}
