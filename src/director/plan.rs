//! The director's pure diff: desired services vs the kernel's IPVS table → minimal IPVS ops.
//!
//! Only services in the config (or recorded as ours in the state file) are ever touched;
//! a foreign service is invisible to the plan. Changing one weight yields exactly one op.

use super::config::{DirectorDesired, ServiceDesired};
use super::state::DirectorState;
use crate::kernel::ipvs::{
    DestKey, IpvsOp, ObservedDestination, ObservedService, ServiceFlags, ServiceKey,
};
use crate::model::{owned_label, Addr, Change, Dad};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// Service attributes equal, ignoring the kernel-maintained HASHED flag. A persistence
/// engine someone set (`ipvsadm --pe sip`; rs-agent sets none) is a difference too: the edit,
/// which carries no engine, removes it.
fn same_service(want: &ServiceDesired, have: &ObservedService) -> bool {
    let (w, h) = (&want.service, &have.service);
    w.scheduler == h.scheduler
        && w.flags.0 == h.flags.0 & !ServiceFlags::HASHED.0
        && w.timeout == h.timeout
        && w.netmask == h.netmask
        && w.pe_name == h.pe_name
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
    // Keyed lookups: a table of thousands of services must not cost a quadratic scan.
    let have_by_key: HashMap<&ServiceKey, &ObservedService> =
        have.iter().map(|h| (&h.service.key, h)).collect();
    for w in want {
        let key = &w.service.key;
        let Some(h) = have_by_key.get(key) else {
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
                // A GUE or GRE tunnel (set by hand) differs from the IPIP one configured; the
                // edit, which carries no tunnel type, makes it IPIP.
                Some(o) if &o.dest != d || o.tun_type != 0 => {
                    adds.push(IpvsOp::EditDest(key.clone(), d.clone()))
                }
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
        if have_by_key.contains_key(key) {
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
        quorum: Default::default(),
        quorum_notify: Default::default(),
        real_notify: Vec::new(),
    }
}

/// Ops that put the services in `keys` back as they were in `before` (absent ones deleted).
pub fn restore(
    before: &[ObservedService],
    now: &[ObservedService],
    keys: &[ServiceKey],
) -> Vec<IpvsOp> {
    let wanted: HashSet<&ServiceKey> = keys.iter().collect();
    let want: Vec<ServiceDesired> = before
        .iter()
        .filter(|b| wanted.contains(&b.service.key))
        .map(as_desired)
        .collect();
    let before_keys: HashSet<&ServiceKey> = before.iter().map(|b| &b.service.key).collect();
    let remove: Vec<ServiceKey> = keys
        .iter()
        .filter(|k| !before_keys.contains(k))
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
        let mut seen = HashSet::new();
        self.ipvs
            .iter()
            .map(IpvsOp::service_key)
            .filter(|k| seen.insert(*k))
            .cloned()
            .collect()
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

/// Binds a VIP that is not on the interface. One whose duplicate address detection failed
/// (added without `nodad`) does not count as bound: ours is added again, which skips DAD;
/// someone else's is left alone (adding it would fail as a duplicate) and `status` reports it.
fn vip_change(
    interface: &str,
    vip: IpAddr,
    addrs: &[Addr],
    state: &DirectorState,
) -> Option<Change> {
    let on: Vec<&Addr> = addrs
        .iter()
        .filter(|a| a.ifname == interface && a.ip == vip)
        .collect();
    match on[..] {
        [] => Some(add_vip(interface, vip)),
        // An interface holds an IPv6 address once; IPv4 addresses never fail DAD.
        [a] if a.dad == Dad::Failed && state.owns_addr(interface, &vip) => {
            Some(Change::ReAddAddr {
                ifname: interface.to_string(),
                ip: vip,
                prefix: a.prefix,
                label: vip.is_ipv4().then(|| owned_label(interface)).flatten(),
            })
        }
        _ => None,
    }
}

/// Which services a pass reconciles: all of them, or only the ones an event changed (a
/// SIGHUP's difference, a health flip) while the periodic pass still covers all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    #[default]
    All,
    Only(HashSet<ServiceKey>),
}

impl Scope {
    pub fn contains(&self, key: &ServiceKey) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(keys) => keys.contains(key),
        }
    }
}

/// The services whose IPVS form differs between two configurations (changed, added or
/// removed): what a pass after going from `old` to `new` must reconcile.
pub fn changed_services(old: &DirectorDesired, new: &DirectorDesired) -> HashSet<ServiceKey> {
    let before: HashMap<&ServiceKey, &ServiceDesired> =
        old.services.iter().map(|s| (&s.service.key, s)).collect();
    let now: HashSet<&ServiceKey> = new.services.iter().map(|s| &s.service.key).collect();
    let mut out: HashSet<ServiceKey> = new
        .services
        .iter()
        .filter(|s| {
            before
                .get(&s.service.key)
                .is_none_or(|o| o.service != s.service || o.reals != s.reals)
        })
        .map(|s| s.service.key.clone())
        .collect();
    out.extend(
        old.services
            .iter()
            .map(|s| &s.service.key)
            .filter(|k| !now.contains(k))
            .cloned(),
    );
    out
}

/// The destination ops that turn the table as the last pass of `director run` left it (`old`)
/// into `new`, planned without reading the kernel: a health flip becomes one
/// `IPVS_CMD_SET_DEST` (or a delete/add with `on_failure = "remove"`, the sorry server)
/// instead of a dump first. `None` when anything but destinations differs (a service added,
/// removed or edited, the interface): those need a pass that observes the kernel.
pub fn dest_ops(old: &DirectorDesired, new: &DirectorDesired) -> Option<Vec<IpvsOp>> {
    if old.interface != new.interface || old.services.len() != new.services.len() {
        return None;
    }
    let changed = changed_services(old, new);
    let before: HashMap<&ServiceKey, &ServiceDesired> =
        old.services.iter().map(|s| (&s.service.key, s)).collect();
    let mut want = Vec::with_capacity(changed.len());
    let mut have = Vec::with_capacity(changed.len());
    for s in new
        .services
        .iter()
        .filter(|s| changed.contains(&s.service.key))
    {
        let o = before.get(&s.service.key)?;
        if o.service != s.service {
            return None;
        }
        want.push(s.clone());
        have.push(ObservedService {
            service: o.service.clone(),
            stats: Default::default(),
            destinations: o
                .reals
                .iter()
                .map(|d| ObservedDestination {
                    dest: d.clone(),
                    tun_type: 0,
                    active_conns: 0,
                    inactive_conns: 0,
                    persist_conns: 0,
                    stats: Default::default(),
                })
                .collect(),
        });
    }
    // A changed key missing from `new` is a removed service.
    (want.len() == changed.len()).then(|| diff(&want, &have, &[]))
}

/// `up`: reconcile IPVS for the configured services, release services we owned but no longer
/// want, bind missing VIPs on the interface, unbind VIPs we own but no longer want.
pub fn plan_up(
    desired: &DirectorDesired,
    ipvs: &[ObservedService],
    addrs: &[Addr],
    state: &DirectorState,
) -> DirectorPlan {
    plan_scoped(desired, ipvs, addrs, state, &Scope::All)
}

/// `plan_up` restricted to the services in `scope` (`ipvs` need only hold those); the VIPs
/// are always planned in full.
pub fn plan_scoped(
    desired: &DirectorDesired,
    ipvs: &[ObservedService],
    addrs: &[Addr],
    state: &DirectorState,
    scope: &Scope,
) -> DirectorPlan {
    let wanted: HashSet<&ServiceKey> = desired.services.iter().map(|s| &s.service.key).collect();
    let remove: Vec<ServiceKey> = state
        .services
        .iter()
        .filter(|k| !wanted.contains(k) && scope.contains(k))
        .cloned()
        .collect();
    let scoped: Vec<ServiceDesired>;
    let want = match scope {
        Scope::All => &desired.services[..],
        Scope::Only(keys) => {
            scoped = desired
                .services
                .iter()
                .filter(|s| keys.contains(&s.service.key))
                .cloned()
                .collect();
            &scoped[..]
        }
    };
    let vips = desired.vips();
    let mut changes: Vec<Change> = vips
        .iter()
        .filter_map(|vip| vip_change(&desired.interface, *vip, addrs, state))
        .collect();
    changes.extend(
        addrs
            .iter()
            .filter(|a| state.addrs.may_remove(a))
            .filter(|a| !(a.ifname == desired.interface && vips.contains(&a.ip)))
            .map(Change::del_addr),
    );
    DirectorPlan {
        ipvs: diff(want, ipvs, &remove),
        addrs: changes,
    }
}

/// Configured services (in `scope`) that exist in the kernel but are not rs-agent's: someone
/// made them by hand or with another tool. `up` leaves them alone unless told to adopt them.
pub fn unowned(
    desired: &DirectorDesired,
    ipvs: &[ObservedService],
    state: &DirectorState,
    scope: &Scope,
) -> Vec<ServiceKey> {
    let present: HashSet<&ServiceKey> = ipvs.iter().map(|o| &o.service.key).collect();
    let owned: HashSet<&ServiceKey> = state.services.iter().collect();
    desired
        .services
        .iter()
        .map(|s| &s.service.key)
        .filter(|k| scope.contains(k) && present.contains(k) && !owned.contains(k))
        .cloned()
        .collect()
}

/// Configured VIPs bound on the interface that are not rs-agent's (bound by hand, or by the
/// tool rs-agent replaces): what `--adopt` takes over with the services. Only usable ones:
/// an address whose DAD failed is not bound (another node holds the VIP), and adopting it
/// would have the next pass take the VIP from that node (re-added without DAD, announced).
pub fn unowned_vips(desired: &DirectorDesired, addrs: &[Addr], state: &DirectorState) -> Vec<Addr> {
    let vips = desired.vips();
    addrs
        .iter()
        .filter(|a| a.ifname == desired.interface && vips.contains(&a.ip))
        .filter(|a| a.is_usable())
        .filter(|a| !state.owns_addr(&a.ifname, &a.ip))
        .cloned()
        .collect()
}

/// Of the `pending` VIPs, the ones bound and usable on `interface`: what an announcement may
/// claim. One that is not (removed meanwhile, someone else's whose DAD failed) is not
/// announced: the director's MAC would draw traffic for an address its kernel does not serve.
pub fn announceable(pending: &[IpAddr], interface: &str, addrs: &[Addr]) -> Vec<IpAddr> {
    pending
        .iter()
        .filter(|vip| {
            addrs
                .iter()
                .any(|a| a.ifname == interface && a.ip == **vip && a.is_usable())
        })
        .copied()
        .collect()
}

/// `scope` without the services in `skip` (configured ones that exist and are not rs-agent's):
/// what a pass of `director run` reconciles when it leaves those alone, so that one service
/// someone else made does not stop the passes (health changes included) of all the others.
/// The VIPs are planned in full regardless.
pub fn scope_without(
    scope: &Scope,
    desired: &DirectorDesired,
    state: &DirectorState,
    skip: &[ServiceKey],
) -> Scope {
    let skip: HashSet<&ServiceKey> = skip.iter().collect();
    Scope::Only(
        desired
            .services
            .iter()
            .map(|s| &s.service.key)
            .chain(&state.services)
            .filter(|k| scope.contains(k) && !skip.contains(k))
            .cloned()
            .collect(),
    )
}

/// `down`: remove exactly our services and VIPs (a VIP rs-agent added only while it still
/// carries the mark: one put back by hand is someone else's).
pub fn plan_down(ipvs: &[ObservedService], addrs: &[Addr], state: &DirectorState) -> DirectorPlan {
    DirectorPlan {
        ipvs: diff(&[], ipvs, &state.services),
        addrs: addrs
            .iter()
            .filter(|a| state.addrs.may_remove(a))
            .map(Change::del_addr)
            .collect(),
    }
}

#[cfg(test)]
mod tests;
