//! Health checks for the director's real servers.
//!
//! Pure parts here (the validated check settings are `director::model`'s): the rise/fall
//! state machine, and
//! `effective`, which turns the configured services plus the health of every real server
//! into the services the kernel must hold (dead servers quiesced at weight 0 or removed; the
//! sorry server in when every real server of a service is down). The run loop then feeds
//! that to the ordinary observe → plan → apply pipeline: no second code path.

pub mod dns;
pub mod http;
pub mod icmp;
pub mod probe;
pub mod record;
pub mod smtp;
pub mod tls;
pub mod udp;

use super::model::{DirectorDesired, ServiceDesired};
pub use super::model::{
    DnsProbe, DnsType, HealthCheck, HttpProbe, OnFailure, Probe, SmtpProbe, UdpProbe,
};
use crate::kernel::ipvs::{Destination, ServiceKey};
pub use record::{Board, Record, View};
use std::collections::HashMap;
use std::net::IpAddr;

/// One real server's health: current verdict and the run of results against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub up: bool,
    streak: u32,
}

impl Default for Health {
    /// Servers start up (as keepalived's do), so a starting director serves at once; a dead
    /// one is taken out after `fall` checks.
    fn default() -> Self {
        Self {
            up: true,
            streak: 0,
        }
    }
}

impl Health {
    /// A settled verdict (no results against it yet), as a view read back gives it.
    pub fn verdict(up: bool) -> Health {
        Health { up, streak: 0 }
    }

    /// Records one check result; true when the verdict flipped.
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> bool {
        if ok == self.up {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let needed = if self.up { fall } else { rise };
        if self.streak >= needed.max(1) {
            self.up = ok;
            self.streak = 0;
            return true;
        }
        false
    }
}

/// Identifies one checked real server.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub service: ServiceKey,
    pub addr: IpAddr,
    pub port: u16,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "real server {} of {}",
            std::net::SocketAddr::new(self.addr, self.port),
            self.service
        )
    }
}

/// Every real server that has a check, in config order.
pub fn targets(desired: &DirectorDesired) -> Vec<(Target, HealthCheck)> {
    let mut out = Vec::new();
    for s in &desired.services {
        let Some(check) = &s.check else { continue };
        for r in &s.reals {
            let target = Target {
                service: s.service.key.clone(),
                addr: r.addr,
                port: r.port,
            };
            out.push((target, check.clone()));
        }
    }
    out
}

fn is_up(health: &HashMap<Target, Health>, key: &ServiceKey, d: &Destination) -> bool {
    let target = Target {
        service: key.clone(),
        addr: d.addr,
        port: d.port,
    };
    health.get(&target).is_none_or(|h| h.up)
}

/// The services as the kernel must hold them given the health of each real server.
pub fn effective(desired: &DirectorDesired, health: &HashMap<Target, Health>) -> DirectorDesired {
    let mut out = desired.clone();
    for s in &mut out.services {
        apply_health(s, health);
    }
    out
}

fn apply_health(s: &mut ServiceDesired, health: &HashMap<Target, Health>) {
    let Some(check) = &s.check else { return };
    let key = s.service.key.clone();
    let any_up = s.reals.iter().any(|d| is_up(health, &key, d));
    let on_failure = check.on_failure;
    s.reals = std::mem::take(&mut s.reals)
        .into_iter()
        .filter_map(|mut d| {
            if is_up(health, &key, &d) {
                return Some(d);
            }
            match on_failure {
                OnFailure::Remove => None,
                OnFailure::Quiesce => {
                    d.weight = 0;
                    Some(d)
                }
            }
        })
        .collect();
    if !any_up {
        if let Some(sorry) = &s.sorry {
            if !s
                .reals
                .iter()
                .any(|d| d.addr == sorry.addr && d.port == sorry.port)
            {
                s.reals.push(sorry.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests;
