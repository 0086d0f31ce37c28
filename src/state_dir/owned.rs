//! The addresses rs-agent added (or adopted), as both sides' journals record them: recorded
//! before the address is added, forgotten after it is deleted. A record is a claim to check
//! against the kernel's marks before acting on it, never proof on its own.

use crate::model::{Addr, Change};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// An address rs-agent added (or took over with `--adopt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedAddr {
    pub ifname: String,
    pub ip: IpAddr,
    pub prefix: u8,
    pub label: Option<String>,
    /// Taken over (`director up --adopt`): the address carries none of rs-agent's marks, so the
    /// record alone makes it rs-agent's. `None` in a journal rs-agent 0.1 wrote, which did not
    /// say: such a record is trusted as 0.1 trusted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted: Option<bool>,
}

impl OwnedAddr {
    /// Whether the kernel's `observed` copy of this record may be removed: one rs-agent added
    /// must still carry its mark (else someone deleted it and put it back by hand: theirs).
    pub fn may_remove(&self, observed: &Addr) -> bool {
        match self.adopted {
            Some(false) => observed.carries_mark(),
            Some(true) | None => true,
        }
    }
}

/// The owned addresses of one journal (serialized as a plain list).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OwnedAddrs(Vec<OwnedAddr>);

impl OwnedAddrs {
    pub fn iter(&self) -> std::slice::Iter<'_, OwnedAddr> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn owns(&self, ifname: &str, ip: &IpAddr) -> bool {
        self.0.iter().any(|a| a.ifname == ifname && &a.ip == ip)
    }

    /// The kernel's `observed` address is recorded here and may be removed
    /// ([`OwnedAddr::may_remove`]).
    pub fn may_remove(&self, observed: &Addr) -> bool {
        self.0
            .iter()
            .any(|a| a.ifname == observed.ifname && a.ip == observed.ip && a.may_remove(observed))
    }

    /// Records the address an `AddAddr` is about to add (call before applying it); a label
    /// change (`RelabelAddr`) of an owned address updates its record.
    pub fn record(&mut self, change: &Change) {
        match change {
            Change::AddAddr {
                ifname,
                ip,
                prefix,
                label,
            } => self.insert(OwnedAddr {
                ifname: ifname.clone(),
                ip: *ip,
                prefix: *prefix,
                label: label.clone(),
                adopted: Some(false),
            }),
            Change::RelabelAddr { ifname, ip, to, .. } => {
                if let Some(owned) = self
                    .0
                    .iter_mut()
                    .find(|a| &a.ifname == ifname && &a.ip == ip)
                {
                    owned.label = to.clone();
                }
            }
            _ => {}
        }
    }

    /// Records an address that exists as rs-agent's (adopted with `--adopt`).
    pub fn adopt(&mut self, addr: &Addr) {
        self.insert(OwnedAddr {
            ifname: addr.ifname.clone(),
            ip: addr.ip,
            prefix: addr.prefix,
            label: addr.label.clone(),
            adopted: Some(true),
        });
    }

    /// Forgets the address a `DelAddr` removed (call after applying it).
    pub fn forget(&mut self, change: &Change) {
        if let Change::DelAddr { ifname, ip, .. } = change {
            self.0.retain(|a| !(&a.ifname == ifname && &a.ip == ip));
        }
    }

    /// Forgets every address (all were released).
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Forgets every address on `ifname` (its device was deleted).
    pub fn forget_device(&mut self, ifname: &str) {
        self.0.retain(|a| a.ifname != ifname);
    }

    fn insert(&mut self, addr: OwnedAddr) {
        if !self.owns(&addr.ifname, &addr.ip) {
            self.0.push(addr);
        }
    }
}

impl FromIterator<OwnedAddr> for OwnedAddrs {
    fn from_iter<I: IntoIterator<Item = OwnedAddr>>(iter: I) -> Self {
        OwnedAddrs(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a OwnedAddrs {
    type Item = &'a OwnedAddr;
    type IntoIter = std::slice::Iter<'a, OwnedAddr>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
