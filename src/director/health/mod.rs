//! Health checks for the director's real servers.
//!
//! Pure parts here (the validated check settings are `director::model`'s): the rise/fall
//! state machine, and
//! `effective`, which turns the configured services plus the health of every real server
//! into the services the kernel must hold (dead servers quiesced at weight 0 or removed, live
//! ones at their configured or `misc_dynamic` weight; the sorry server in while a service is
//! below its quorum, `quorum`). The run loop then feeds
//! that to the ordinary observe → plan → apply pipeline: no second code path.

pub mod dns;
pub mod http;
pub mod icmp;
pub mod probe;
pub mod quorum;
pub mod record;
pub mod smtp;
pub mod steps;
pub mod tls;
pub mod udp;

use super::model::{DirectorDesired, ServiceDesired};
pub use super::model::{
    DnsProbe, DnsType, HealthCheck, HttpProbe, OnFailure, Probe, SmtpProbe, UdpProbe,
};
use crate::kernel::ipvs::{Destination, ServiceKey};
pub use quorum::Quorums;
pub use record::{Board, Record, View};
use std::collections::HashMap;
use std::net::IpAddr;

/// One real server's health: current verdict, the run of results against it, and the
/// weight its `misc_dynamic` check last set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub up: bool,
    streak: u32,
    /// Set by a `misc_dynamic` command check (exit 2..=255: code − 2); `None`: configured.
    pub weight: Option<u32>,
}

impl Default for Health {
    /// Servers start up (as keepalived's do without `alpha`), so a starting director serves
    /// at once; a dead one is taken out after `fall` checks.
    fn default() -> Self {
        Self::start(false)
    }
}

impl Health {
    /// Before any check: up, or down with `alpha` (keepalived's: down until checked good).
    pub fn start(alpha: bool) -> Health {
        Health {
            up: !alpha,
            streak: 0,
            weight: None,
        }
    }

    /// A settled verdict (no results against it yet), as a view read back gives it.
    pub fn settled(up: bool, weight: Option<u32>) -> Health {
        Health {
            up,
            streak: 0,
            weight,
        }
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

    /// Takes the weight a `misc_dynamic` check reports (`None`: it reports none); true when
    /// it changed.
    pub fn reweigh(&mut self, weight: Option<u32>) -> bool {
        let changed = weight.is_some() && weight != self.weight;
        if changed {
            self.weight = weight;
        }
        changed
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

fn target(key: &ServiceKey, d: &Destination) -> Target {
    Target {
        service: key.clone(),
        addr: d.addr,
        port: d.port,
    }
}

/// Whether the real server `d` of `key` is up: its verdict, else as it starts (`alpha`: down).
fn is_up(health: &HashMap<Target, Health>, key: &ServiceKey, d: &Destination, alpha: bool) -> bool {
    health.get(&target(key, d)).map_or(!alpha, |h| h.up)
}

/// The weight of `d` while it is up: the one its `misc_dynamic` check set, else its own.
fn weight_of(health: &HashMap<Target, Health>, key: &ServiceKey, d: &Destination) -> u32 {
    health
        .get(&target(key, d))
        .and_then(|h| h.weight)
        .unwrap_or(d.weight)
}

/// The services as the kernel must hold them given the health of each real server and the
/// quorum state of each service.
pub fn effective(
    desired: &DirectorDesired,
    health: &HashMap<Target, Health>,
    quorums: &Quorums,
) -> DirectorDesired {
    let mut out = desired.clone();
    for s in &mut out.services {
        apply_health(s, health, quorums);
    }
    out
}

/// Failed servers out as `on_failure` says, healthy ones at their (dynamic) weight. Below
/// its quorum a service with a sorry server is served by the sorry server alone: as
/// keepalived does, its healthy real servers are taken out too (quiesced or removed like a
/// failed one), and come back when the quorum does. Without a sorry server they stay in.
fn apply_health(s: &mut ServiceDesired, health: &HashMap<Target, Health>, quorums: &Quorums) {
    let Some(check) = &s.check else { return };
    let (alpha, on_failure) = (check.alpha, check.on_failure);
    let key = s.service.key.clone();
    let sorry_alone = s.sorry.is_some() && !quorums.is_up(s, health);
    s.reals = std::mem::take(&mut s.reals)
        .into_iter()
        .filter_map(|mut d| {
            if is_up(health, &key, &d, alpha) && !sorry_alone {
                d.weight = weight_of(health, &key, &d);
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
    if let (Some(sorry), true) = (&s.sorry, sorry_alone) {
        if !s
            .reals
            .iter()
            .any(|d| d.addr == sorry.addr && d.port == sorry.port)
        {
            s.reals.push(sorry.clone());
        }
    }
}

#[cfg(test)]
mod tests;
