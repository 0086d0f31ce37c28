//! The director's pure diff: desired services vs the kernel's IPVS table → minimal IPVS ops.
//!
//! Only services in the config (or recorded as ours in the state file) are ever touched;
//! a foreign service is invisible to the plan. Changing one weight yields exactly one op.

use super::config::{DirectorDesired, ServiceDesired};
use super::state::DirectorState;
use crate::kernel::ipvs::{DestKey, IpvsOp, ObservedService, ServiceFlags, ServiceKey};
use crate::model::{owned_label, Addr, Change};
use std::net::IpAddr;

/// Service attributes equal, ignoring the kernel-maintained HASHED flag.
fn same_service(want: &ServiceDesired, have: &ObservedService) -> bool {
    let (w, h) = (&want.service, &have.service);
    w.scheduler == h.scheduler
        && w.flags.0 == h.flags.0 & !ServiceFlags::HASHED.0
        && w.timeout == h.timeout
        && w.netmask == h.netmask
}

/// Ops that turn `have` into `want` for the services in `want`, and delete the `remove` ones.
/// Order: services added/edited, destinations added/edited, then destinations and services
/// removed — capacity is added before any is taken away.
pub fn diff(
    want: &[ServiceDesired],
    have: &[ObservedService],
    remove: &[ServiceKey],
) -> Vec<IpvsOp> {
    let mut adds = Vec::new();
    let mut dels = Vec::new();
    for w in want {
        let key = &w.service.key;
        let Some(h) = have.iter().find(|h| &h.service.key == key) else {
            adds.push(IpvsOp::AddService(w.service.clone()));
            adds.extend(
                w.reals
                    .iter()
                    .map(|d| IpvsOp::AddDest(key.clone(), d.clone())),
            );
            continue;
        };
        if !same_service(w, h) {
            adds.push(IpvsOp::EditService(w.service.clone()));
        }
        for d in &w.reals {
            match h
                .destinations
                .iter()
                .find(|o| o.dest.addr == d.addr && o.dest.port == d.port)
            {
                None => adds.push(IpvsOp::AddDest(key.clone(), d.clone())),
                Some(o) if &o.dest != d => adds.push(IpvsOp::EditDest(key.clone(), d.clone())),
                Some(_) => {}
            }
        }
        for o in &h.destinations {
            if !w
                .reals
                .iter()
                .any(|d| d.addr == o.dest.addr && d.port == o.dest.port)
            {
                dels.push(IpvsOp::DelDest(
                    key.clone(),
                    DestKey {
                        addr: o.dest.addr,
                        port: o.dest.port,
                    },
                ));
            }
        }
    }
    for key in remove {
        if have.iter().any(|h| &h.service.key == key) {
            dels.push(IpvsOp::DelService(key.clone()));
        }
    }
    adds.extend(dels);
    adds
}

/// What the kernel table looked like, as desired state (for rollback to it).
pub fn as_desired(observed: &ObservedService) -> ServiceDesired {
    let mut service = observed.service.clone();
    service.flags = ServiceFlags(service.flags.0 & !ServiceFlags::HASHED.0);
    ServiceDesired {
        service,
        reals: observed
            .destinations
            .iter()
            .map(|d| d.dest.clone())
            .collect(),
        check: None,
        sorry: None,
    }
}

/// Ops that put the services in `keys` back as they were in `before` (absent ones deleted).
pub fn restore(
    before: &[ObservedService],
    now: &[ObservedService],
    keys: &[ServiceKey],
) -> Vec<IpvsOp> {
    let want: Vec<ServiceDesired> = before
        .iter()
        .filter(|b| keys.contains(&b.service.key))
        .map(as_desired)
        .collect();
    let remove: Vec<ServiceKey> = keys
        .iter()
        .filter(|k| !before.iter().any(|b| &b.service.key == *k))
        .cloned()
        .collect();
    diff(&want, now, &remove)
}

/// The director's plan: IPVS ops, then address changes on the LAN interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectorPlan {
    pub ipvs: Vec<IpvsOp>,
    pub addrs: Vec<Change>,
}

impl DirectorPlan {
    pub fn is_empty(&self) -> bool {
        self.ipvs.is_empty() && self.addrs.is_empty()
    }

    /// Every service key the plan touches.
    pub fn touched(&self) -> Vec<ServiceKey> {
        let mut keys: Vec<ServiceKey> = Vec::new();
        for op in &self.ipvs {
            let key = op.service_key().clone();
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys
    }
}

fn add_vip(interface: &str, vip: IpAddr) -> Change {
    Change::AddAddr {
        ifname: interface.to_string(),
        ip: vip,
        prefix: crate::model::host_prefix(&vip),
        label: vip.is_ipv4().then(|| owned_label(interface)).flatten(),
    }
}

/// `up`: reconcile IPVS for the configured services, release services we owned but no longer
/// want, bind missing VIPs on the interface, unbind VIPs we own but no longer want.
pub fn plan_up(
    desired: &DirectorDesired,
    ipvs: &[ObservedService],
    addrs: &[Addr],
    state: &DirectorState,
) -> DirectorPlan {
    let remove: Vec<ServiceKey> = state
        .services
        .iter()
        .filter(|k| !desired.services.iter().any(|s| &s.service.key == *k))
        .cloned()
        .collect();
    let vips = desired.vips();
    let mut changes: Vec<Change> = vips
        .iter()
        .filter(|vip| {
            !addrs
                .iter()
                .any(|a| a.ifname == desired.interface && &a.ip == *vip)
        })
        .map(|vip| add_vip(&desired.interface, *vip))
        .collect();
    changes.extend(
        addrs
            .iter()
            .filter(|a| state.owns_addr(&a.ifname, &a.ip))
            .filter(|a| !(a.ifname == desired.interface && vips.contains(&a.ip)))
            .map(crate::plan::del_addr),
    );
    DirectorPlan {
        ipvs: diff(&desired.services, ipvs, &remove),
        addrs: changes,
    }
}

/// `down`: remove exactly our services and VIPs.
pub fn plan_down(ipvs: &[ObservedService], addrs: &[Addr], state: &DirectorState) -> DirectorPlan {
    DirectorPlan {
        ipvs: diff(&[], ipvs, &state.services),
        addrs: addrs
            .iter()
            .filter(|a| state.owns_addr(&a.ifname, &a.ip))
            .map(crate::plan::del_addr)
            .collect(),
    }
}

#[cfg(test)]
mod tests;
