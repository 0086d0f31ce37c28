//! The pure diff: desired + observed (+ what we own) → ordered changes.
//!
//! Everything that decides *what* to do on a real server lives here; executors only carry
//! changes out. Errors from here are input errors discovered against the node (an interface
//! that does not exist, a VIP that is already the node's own address): nothing has been
//! touched when they are returned.

use super::model::{ArpMethod, Device, RealServerDesired};
use super::state::RealServerState;
use crate::model::{
    effective, host_prefix, owned_label, suppresses_arp, Change, Dad, NftFamily, NftRule, Observed,
    SysctlKey, NFT_TABLE,
};
use std::net::IpAddr;

/// An input that does not fit this node; one line naming it and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// The ordered changes, and what the operator should know but that is not an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub warnings: Vec<String>,
}

/// The ARP sysctl values rs-agent writes to suppress ARP for addresses on `lo`/dummy devices
/// (`model::suppresses_arp` says which effective values already do).
pub const SUPPRESSING: [(SysctlKey, i64); 2] =
    [(SysctlKey::ArpIgnore, 1), (SysctlKey::ArpAnnounce, 2)];

/// The interfaces facing the LAN, as found on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LanInterfaces {
    /// Where ARP must be suppressed: the ones named that exist, or else every ARP-capable,
    /// non-loopback interface that carries an IPv4 address of its own — down ones included,
    /// so that one brought up answers no ARP for the VIP before the next pass.
    pub present: Vec<String>,
    /// Named in the configuration but not on the node.
    pub missing: Vec<String>,
}

/// The LAN interfaces of `desired` on this node.
pub fn lan_interfaces(desired: &RealServerDesired, observed: &Observed) -> LanInterfaces {
    lan_for(desired, observed, None)
}

/// [`lan_interfaces`] for a pass: an auto-detected interface rs-agent has configured (its
/// sysctls, its nft mangle rule) stays one while it has no IPv4 address (a DHCP renewal, an
/// `ip addr flush`), so that its suppression is kept rather than lifted — as for one taken
/// down.
fn lan_for(
    desired: &RealServerDesired,
    observed: &Observed,
    state: Option<&RealServerState>,
) -> LanInterfaces {
    if let Some(names) = &desired.interfaces {
        let (present, missing) = names
            .iter()
            .cloned()
            .partition(|name| observed.link(name).is_some());
        return LanInterfaces { present, missing };
    }
    LanInterfaces {
        present: observed
            .links
            .iter()
            .filter(|l| !l.loopback && !l.noarp && l.name != desired.device.name())
            .filter(|l| {
                observed.primary_v4(&l.name, &desired.vips).is_some()
                    || state.is_some_and(|s| configured_before(s, observed, &l.name))
            })
            .map(|l| l.name.clone())
            .collect(),
        missing: vec![],
    }
}

/// Whether rs-agent has suppressed ARP on `iface` (sysctls it owns there, or a mangle rule
/// for it in its own arp table).
fn configured_before(state: &RealServerState, observed: &Observed, iface: &str) -> bool {
    state.sysctls.iter().any(|s| s.iface == iface) || previous_rip(state, observed, iface).is_some()
}

/// The RIP rs-agent's own arp table mangles VIPs to on `iface`, if it has such a rule.
fn previous_rip(
    state: &RealServerState,
    observed: &Observed,
    iface: &str,
) -> Option<std::net::Ipv4Addr> {
    if !state.nft_tables.contains(&NftFamily::Arp) {
        return None;
    }
    observed.nft.arp.as_ref()?.iter().find_map(|r| match r {
        NftRule::MangleArpFrom { iface: i, rip, .. } if i == iface => Some(*rip),
        _ => None,
    })
}

/// Whether the configuration rs-agent last applied listed `iface` (`interfaces = [...]`).
fn listed_before(state: &RealServerState, iface: &str) -> bool {
    state
        .desired
        .as_ref()
        .and_then(|d| d.interfaces.as_ref())
        .is_some_and(|names| names.iter().any(|n| n == iface))
}

/// A listed interface that is missing: one rs-agent configured before has gone away (a
/// VLAN or hot-plugged NIC removed) and is skipped with a warning, so that `run` keeps
/// repairing everything else; one it never configured is most likely a typo and refused.
fn check_missing_interfaces(
    lan: &LanInterfaces,
    state: &RealServerState,
    warnings: &mut Vec<String>,
) -> Result<(), PlanError> {
    for name in &lan.missing {
        let applied_before =
            listed_before(state, name) || state.sysctls.iter().any(|s| &s.iface == name);
        if !applied_before {
            return Err(PlanError(format!(
                "interface \"{name}\" does not exist on this node; name an existing LAN \
                 interface (see `ip link`)"
            )));
        }
        warnings.push(format!(
            "interface \"{name}\" is listed in the configuration but no longer exists; \
             skipped (the other interfaces and the VIPs are still kept) — restore it, or \
             remove it from the configuration"
        ));
    }
    Ok(())
}

/// The VIPs that cannot be bound, each with why. A VIP must not already be an address of any
/// interface other than the VIP device: that would be the node's own address, and it would
/// answer ARP for it. rs-agent's own VIP on the
/// previous VIP device (the config moved it, e.g. from `lo` to a dummy) is not in the way: the
/// same plan removes it there. An IPv6 VIP already on the VIP device with another prefix is
/// refused too: the kernel holds one copy of an IPv6 address per device, so adding the /128
/// would fail half way through the change.
fn vips_in_the_way(
    desired: &RealServerDesired,
    observed: &Observed,
    state: &RealServerState,
) -> Vec<(IpAddr, String)> {
    let device = desired.device.name();
    let ours: Vec<&crate::model::Addr> = owned_addrs(observed, state, Some(device)).collect();
    let mut blocked = Vec::new();
    for vip in &desired.vips {
        let mut on = observed.addrs.iter().filter(|a| &a.ip == vip);
        if let Some(a) = on.clone().find(|a| a.ifname != device && !ours.contains(a)) {
            blocked.push((
                *vip,
                format!(
                    "VIP {vip} is already an address of {} on this node; a real server holds \
                     the VIP only on {device} — remove it from {} or correct the VIP",
                    a.ifname, a.ifname
                ),
            ));
        } else if let Some(a) = on.find(|a| a.ifname == device && vip.is_ipv6() && !a.is_host()) {
            blocked.push((
                *vip,
                format!(
                    "VIP {vip} is already on {device} as {vip}/{}, and IPv6 allows one prefix \
                     per address and device; remove it (ip addr del {vip}/{} dev {device}) so \
                     that rs-agent binds {vip}/128",
                    a.prefix, a.prefix
                ),
            ));
        }
    }
    blocked
}

fn device_changes(
    desired: &RealServerDesired,
    observed: &Observed,
) -> Result<Vec<Change>, PlanError> {
    let name = desired.device.name();
    match (&desired.device, observed.link(name)) {
        (Device::Loopback, Some(l)) if !l.up => Ok(vec![Change::SetLinkUp { name: name.into() }]),
        (Device::Loopback, _) => Ok(vec![]),
        (Device::Dummy(_), None) => Ok(vec![
            Change::CreateDummy { name: name.into() },
            Change::SetLinkUp { name: name.into() },
        ]),
        (Device::Dummy(_), Some(l)) if l.kind.as_deref() != Some("dummy") => {
            Err(PlanError(format!(
                "device {name:?} exists and is not a dummy device (kind {}); choose another \
                 --device name or lo",
                l.kind.as_deref().unwrap_or("none")
            )))
        }
        (Device::Dummy(_), Some(l)) if !l.up => Ok(vec![Change::SetLinkUp { name: name.into() }]),
        (Device::Dummy(_), Some(_)) => Ok(vec![]),
    }
}

/// Set arp_ignore/arp_announce on each LAN interface whose effective value does not
/// suppress ARP, and hand back the sysctls we own but no longer need. Refuses (nothing
/// touched) when `all` holds a value that no interface value can correct: the kernel uses
/// max(all, interface), and rs-agent never writes `all`.
fn sysctl_changes(
    desired: &RealServerDesired,
    observed: &Observed,
    state: &RealServerState,
    lan: &[String],
) -> Result<Vec<Change>, PlanError> {
    let mut changes = Vec::new();
    let wanted = desired.arp == ArpMethod::Sysctl && desired.vips.iter().any(IpAddr::is_ipv4);
    if wanted {
        for iface in lan {
            for (key, target) in SUPPRESSING {
                let eff = effective(&observed.sysctls, iface, key).unwrap_or(0);
                if suppresses_arp(key, eff) {
                    continue;
                }
                check_all_allows(observed, iface, key, target)?;
                let from = observed
                    .sysctls
                    .get(&(iface.clone(), key))
                    .copied()
                    .unwrap_or(0);
                changes.push(Change::SetSysctl {
                    iface: iface.clone(),
                    key,
                    from,
                    to: target,
                });
            }
        }
    }
    for owned in &state.sysctls {
        let still_needed = wanted && lan.contains(&owned.iface);
        if !still_needed {
            changes.extend(restore_sysctl(owned, observed));
        }
    }
    Ok(changes)
}

/// Writing `target` on `iface` fixes the effective value only if `all` is not above it in a
/// way that still does not suppress (e.g. all.arp_ignore=4: max(4, 1) = 4).
fn check_all_allows(
    observed: &Observed,
    iface: &str,
    key: SysctlKey,
    target: i64,
) -> Result<(), PlanError> {
    let all = observed
        .sysctls
        .get(&("all".to_string(), key))
        .copied()
        .unwrap_or(0);
    if suppresses_arp(key, all.max(target)) {
        return Ok(());
    }
    Err(PlanError(format!(
        "net.ipv4.conf.all.{key} is {all}, so {key} on {iface} is {all} whatever rs-agent \
         writes there (the kernel uses the larger of all and the interface) and ARP for the \
         VIPs is not suppressed; set it to 0 (sysctl -w net.ipv4.conf.all.{key}=0) or use \
         --arp nft"
    )))
}

fn restore_sysctl(
    owned: &crate::real_server::state::OwnedSysctl,
    observed: &Observed,
) -> Option<Change> {
    let current = *observed.sysctls.get(&(owned.iface.clone(), owned.key))?;
    (current == owned.applied && current != owned.previous).then(|| Change::RestoreSysctl {
        iface: owned.iface.clone(),
        key: owned.key,
        from: current,
        to: owned.previous,
    })
}

/// The rules rs-agent's nft tables must hold (sorted, per family).
///
/// A LAN interface without an IPv4 address has no RIP to announce. One rs-agent configured
/// before (it lost its address: a DHCP renewal, an `ip addr flush`) keeps the rule it had,
/// with a warning, so that the other repairs go on; one it never configured is bad input.
pub fn desired_nft_rules(
    desired: &RealServerDesired,
    observed: &Observed,
    lan: &[String],
    state: &RealServerState,
    warnings: &mut Vec<String>,
) -> Result<Vec<NftRule>, PlanError> {
    if desired.arp != ArpMethod::Nft {
        return Ok(vec![]);
    }
    let mut rules = Vec::new();
    // The RIP each LAN interface announces in place of the IPv4 VIPs (none needed without one).
    let mut rips = Vec::new();
    let first_v4 = desired.vips.iter().find(|v| v.is_ipv4());
    for iface in lan.iter().filter(|_| first_v4.is_some()) {
        if let Some(rip) = observed.primary_v4(iface, &desired.vips) {
            rips.push((iface, rip));
        } else if let Some(rip) = previous_rip(state, observed, iface) {
            warnings.push(format!(
                "interface \"{iface}\" has no IPv4 address any more; its ARP mangle rule \
                 keeps the last RIP {rip} — give it an address again, or remove it from the \
                 configuration"
            ));
            rips.push((iface, rip));
        } else if listed_before(state, iface) {
            warnings.push(format!(
                "interface \"{iface}\" has no IPv4 address any more; skipped (no RIP to \
                 announce in place of the VIPs) — give it an address again, or remove it from \
                 the configuration"
            ));
        } else if let Some(vip) = first_v4 {
            return Err(PlanError(format!(
                "interface {iface:?} has no IPv4 address to announce in place of VIP {vip} (the \
                 RIP); give it one, or use --arp sysctl"
            )));
        }
    }
    for vip in &desired.vips {
        match vip {
            IpAddr::V4(v4) => {
                rules.push(NftRule::DropArpFor { vip: *v4 });
                for (iface, rip) in &rips {
                    rules.push(NftRule::MangleArpFrom {
                        iface: (*iface).clone(),
                        vip: *v4,
                        rip: *rip,
                    });
                }
            }
            IpAddr::V6(v6) => {
                rules.push(NftRule::DropNsFor { vip: *v6 });
                rules.push(NftRule::DropNaFor { vip: *v6 });
            }
        }
    }
    rules.sort();
    Ok(rules)
}

/// Writes our tables where they differ from `rules` and deletes the ones we no longer need.
/// A table named `rs_agent` that the state file does not record is someone else's: it is
/// never deleted, and `up --arp nft` refuses to replace it.
fn nft_changes(
    observed: &Observed,
    state: &RealServerState,
    rules: &[NftRule],
) -> Result<Vec<Change>, PlanError> {
    let mut changes = Vec::new();
    for family in [NftFamily::Arp, NftFamily::Ip6] {
        let want: Vec<NftRule> = rules
            .iter()
            .filter(|r| r.family() == family)
            .cloned()
            .collect();
        let have = observed.nft.table(family);
        let ours = state.nft_tables.contains(&family);
        if !want.is_empty() && have.is_some() && !ours {
            return Err(PlanError(format!(
                "nft table {family} {NFT_TABLE} already exists and is not rs-agent's (its state \
                 file does not record it); delete it (`nft delete table {family} {NFT_TABLE}`) \
                 if it is a leftover, or use --arp sysctl"
            )));
        }
        if !want.is_empty() && have != Some(&want) {
            changes.push(Change::NftReplace {
                family,
                rules: want,
                previous: have.cloned(),
            });
        } else if want.is_empty() && ours {
            if let Some(previous) = have {
                changes.push(Change::NftDelete {
                    family,
                    previous: previous.clone(),
                });
            }
        }
    }
    Ok(changes)
}

fn address_changes(
    desired: &RealServerDesired,
    observed: &Observed,
    state: &RealServerState,
) -> Vec<Change> {
    let device = desired.device.name();
    let mut changes: Vec<Change> = desired
        .vips
        .iter()
        .filter(|vip| {
            !observed
                .addrs_on(device)
                .any(|a| &a.ip == *vip && a.is_host())
        })
        .map(|vip| Change::AddAddr {
            ifname: device.to_string(),
            ip: *vip,
            prefix: host_prefix(vip),
            label: vip.is_ipv4().then(|| owned_label(device)).flatten(),
        })
        .collect();
    changes.extend(relabel_changes(desired, observed, state));
    changes.extend(dad_failed_changes(desired, observed, state));
    let wanted = |ifname: &str, ip: &IpAddr| ifname == device && desired.vips.contains(ip);
    changes.extend(
        removable_addrs(observed, state)
            .filter(|a| !wanted(&a.ifname, &a.ip))
            .map(Change::del_addr),
    );
    changes
}

/// Our own IPv4 VIPs whose label is not ours any more (someone re-added the address by hand,
/// e.g. `ip addr add VIP/32 dev lo label lo:x`): the journal records them, and the label is
/// how operators (and, on kernels without IFA_PROTO, `down`) recognise them, so a wanted one is
/// taken back. Addresses the operator bound before `up` are not ours and are left alone.
fn relabel_changes(
    desired: &RealServerDesired,
    observed: &Observed,
    state: &RealServerState,
) -> Vec<Change> {
    let device = desired.device.name();
    let to = owned_label(device);
    // Without a label of ours the kernel labels the address with the device name.
    let expected = to.clone().unwrap_or_else(|| device.to_string());
    owned_addrs(observed, state, Some(device))
        .filter(|a| a.ifname == device && a.ip.is_ipv4() && a.is_host())
        .filter(|a| desired.vips.contains(&a.ip))
        .filter(|a| a.label.as_ref().is_some_and(|l| *l != expected))
        .map(|a| Change::RelabelAddr {
            ifname: a.ifname.clone(),
            ip: a.ip,
            prefix: a.prefix,
            from: a.label.clone(),
            to: to.clone(),
        })
        .collect()
}

/// Our own VIPs whose duplicate address detection failed (added without `nodad`): the kernel
/// does not use them, so they are added again, which skips DAD. One that is not ours is left
/// alone (adding it would fail as a duplicate) and `status` reports it.
fn dad_failed_changes(
    desired: &RealServerDesired,
    observed: &Observed,
    state: &RealServerState,
) -> Vec<Change> {
    let device = desired.device.name();
    owned_addrs(observed, state, Some(device))
        .filter(|a| a.ifname == device && a.is_host() && a.dad == Dad::Failed)
        .filter(|a| desired.vips.contains(&a.ip))
        .map(|a| Change::ReAddAddr {
            ifname: a.ifname.clone(),
            ip: a.ip,
            prefix: a.prefix,
            label: a.ip.is_ipv4().then(|| owned_label(device)).flatten(),
        })
        .collect()
}

/// Addresses that are ours: recorded in the state file, or carrying our marker on a device a
/// real server binds VIPs to — `lo`, the configured `device`, the dummy device we made. The
/// marker alone is not enough elsewhere: director mode marks its VIPs on the LAN interface the
/// same way, and a node that is both director and real server must not lose them to `up`/`down`.
/// A wanted VIP recorded here may be repaired (relabelled, re-added after DAD failed); only
/// [`removable_addrs`] may be removed.
fn owned_addrs<'a>(
    observed: &'a Observed,
    state: &'a RealServerState,
    device: Option<&'a str>,
) -> impl Iterator<Item = &'a crate::model::Addr> + 'a {
    let vip_device = move |ifname: &str| {
        Some(ifname) == device
            || state.dummy.as_deref() == Some(ifname)
            || observed.link(ifname).is_some_and(|l| l.loopback)
    };
    observed.addrs.iter().filter(move |a| {
        (a.is_ours() && vip_device(&a.ifname))
            || state
                .addrs
                .iter()
                .any(|o| o.ifname == a.ifname && o.ip == a.ip && o.prefix == a.prefix)
    })
}

/// The addresses rs-agent may remove: those its own journal records that still carry its
/// marker. One the journal records without it was deleted and put back by someone else (`ip
/// addr add VIP/32 dev lo label lo:0`): `status` shows it as not rs-agent's, and neither `down`
/// nor a pass that releases an unwanted VIP takes it away. One with the marker that the journal
/// does not record belongs to another state directory's rs-agent.
fn removable_addrs<'a>(
    observed: &'a Observed,
    state: &'a RealServerState,
) -> impl Iterator<Item = &'a crate::model::Addr> + 'a {
    observed
        .addrs
        .iter()
        .filter(move |a| a.carries_mark() && recorded(state, a))
}

/// The journal records `a` as an address rs-agent added.
fn recorded(state: &RealServerState, a: &crate::model::Addr) -> bool {
    state
        .addrs
        .iter()
        .any(|o| o.ifname == a.ifname && o.ip == a.ip && o.prefix == a.prefix)
}

/// Wanted VIPs an operator bound on the VIP device before rs-agent did: they serve, keep
/// their label and stay rs-agent's neither now nor at `down`; said once, so the operator knows.
fn bound_by_hand(
    desired: &RealServerDesired,
    observed: &Observed,
    state: &RealServerState,
) -> Vec<String> {
    let device = desired.device.name();
    let ours: Vec<&crate::model::Addr> = owned_addrs(observed, state, Some(device)).collect();
    observed
        .addrs_on(device)
        .filter(|a| a.is_host() && desired.vips.contains(&a.ip) && !ours.contains(a))
        .map(|a| {
            format!(
                "VIP {} is already bound on {device} by hand{}; rs-agent leaves it as it is \
                 (not its own: `down` keeps it)",
                a.ip,
                a.label
                    .as_ref()
                    .filter(|l| *l != device)
                    .map_or(String::new(), |l| format!(" (label {l})"))
            )
        })
        .collect()
}

/// Deleting the dummy device the journal names, if the kernel's device still is the one
/// rs-agent made: a dummy (the journal may be stale or forged: a veth or the uplink under
/// that name is never deleted) that holds no address rs-agent did not add (someone else's
/// dummy, or ours that someone has put to use). Otherwise a warning, and it stays.
fn release_dummy(
    name: &str,
    observed: &Observed,
    state: &RealServerState,
    warnings: &mut Vec<String>,
) -> Option<Change> {
    let link = observed.link(name)?;
    if link.kind.as_deref() != Some("dummy") {
        warnings.push(format!(
            "{name} is not the dummy device rs-agent made (it is of kind {}); left alone: \
             delete it by hand if it is stale",
            link.kind.as_deref().unwrap_or("none")
        ));
        return None;
    }
    let foreign: Vec<String> = observed
        .addrs_on(name)
        // The kernel gives an up device an IPv6 link-local address of its own.
        .filter(|a| !(a.carries_mark() && recorded(state, a)))
        .filter(|a| !matches!(a.ip, IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .map(|a| format!("{}/{}", a.ip, a.prefix))
        .collect();
    if !foreign.is_empty() {
        warnings.push(format!(
            "dummy device {name} holds {} that rs-agent did not add; left alone (only \
             rs-agent's addresses removed): delete it by hand when it is free",
            foreign.join(", ")
        ));
        return None;
    }
    Some(Change::DeleteDummy {
        name: name.to_string(),
    })
}

/// What `up` must do to reach `desired`, including releasing what we own but no longer want.
/// A VIP that cannot be bound (already another interface's address) refuses the whole plan:
/// `up` is all or nothing.
pub fn plan_up(
    desired: &RealServerDesired,
    observed: &Observed,
    state: &RealServerState,
) -> Result<Plan, PlanError> {
    if let Some((_, why)) = vips_in_the_way(desired, observed, state).into_iter().next() {
        return Err(PlanError(why));
    }
    plan_reaching(desired, observed, state, &[])
}

/// What a repair of `run` must do: as [`plan_up`], except that a VIP someone else's address
/// stands in the way of is left unbound, with a warning, while everything else — the ARP
/// suppression of every VIP included — is still repaired. One foreign change must not hold
/// back the others (nor leave an unrelated VIP answering ARP).
pub fn plan_repair(
    desired: &RealServerDesired,
    observed: &Observed,
    state: &RealServerState,
) -> Result<Plan, PlanError> {
    let blocked = vips_in_the_way(desired, observed, state);
    let vips: Vec<IpAddr> = blocked.iter().map(|(vip, _)| *vip).collect();
    let mut plan = plan_reaching(desired, observed, state, &vips)?;
    for (_, why) in blocked {
        plan.warnings
            .push(format!("{why}; left unbound, every other repair goes on"));
    }
    Ok(plan)
}

/// The plan, binding none of `blocked` (an address of theirs that is already rs-agent's stays).
fn plan_reaching(
    desired: &RealServerDesired,
    observed: &Observed,
    state: &RealServerState,
    blocked: &[IpAddr],
) -> Result<Plan, PlanError> {
    let mut plan = Plan::default();
    let interfaces = lan_for(desired, observed, Some(state));
    check_missing_interfaces(&interfaces, state, &mut plan.warnings)?;
    let lan = interfaces.present;
    let rules = desired_nft_rules(desired, observed, &lan, state, &mut plan.warnings)?;
    if lan.is_empty() && desired.vips.iter().any(IpAddr::is_ipv4) {
        plan.warnings.push(
            "no LAN-facing interface found (none is up with an IPv4 address); name them with \
             --interface"
                .to_string(),
        );
    }
    plan.changes.extend(device_changes(desired, observed)?);
    plan.changes
        .extend(sysctl_changes(desired, observed, state, &lan)?);
    plan.changes.extend(nft_changes(observed, state, &rules)?);
    let binds_blocked = |c: &Change| match c {
        Change::AddAddr { ip, .. } | Change::ReAddAddr { ip, .. } => blocked.contains(ip),
        Change::RelabelAddr { ip, .. } => blocked.contains(ip),
        _ => false,
    };
    plan.changes.extend(
        address_changes(desired, observed, state)
            .into_iter()
            .filter(|c| !binds_blocked(c)),
    );
    plan.warnings
        .extend(bound_by_hand(desired, observed, state));
    if let Some(dummy) = &state.dummy {
        let still_wanted = desired.device == Device::Dummy(dummy.clone());
        if !still_wanted {
            plan.changes
                .extend(release_dummy(dummy, observed, state, &mut plan.warnings));
        }
    }
    plan.changes.sort_by_key(Change::phase);
    Ok(plan)
}

/// What `down` must do: remove exactly what we own, restore what we changed. Sysctls that
/// someone else changed after us are left alone, with a warning.
pub fn plan_down(state: &RealServerState, observed: &Observed) -> Plan {
    let mut plan = Plan::default();
    let delete_dummy = state
        .dummy
        .as_deref()
        .and_then(|dummy| release_dummy(dummy, observed, state, &mut plan.warnings));
    // Deleting the dummy takes its addresses with it.
    let goes_with_dummy = |ifname: &str| matches!(&delete_dummy, Some(Change::DeleteDummy { name }) if name == ifname);
    plan.changes.extend(
        removable_addrs(observed, state)
            .filter(|a| !goes_with_dummy(&a.ifname))
            .map(Change::del_addr),
    );
    plan.changes.extend(delete_dummy);
    // Only the tables we recorded: an `rs_agent` table someone else made is theirs.
    for family in &state.nft_tables {
        if let Some(previous) = observed.nft.table(*family) {
            plan.changes.push(Change::NftDelete {
                family: *family,
                previous: previous.clone(),
            });
        }
    }
    for owned in &state.sysctls {
        match observed.sysctls.get(&(owned.iface.clone(), owned.key)) {
            None => plan.warnings.push(format!(
                "net.ipv4.conf.{}.{} no longer exists (interface gone); nothing to restore",
                owned.iface, owned.key
            )),
            Some(&cur) if cur != owned.applied && cur != owned.previous => {
                plan.warnings.push(format!(
                    "net.ipv4.conf.{}.{} is {cur}, not the {} rs-agent set: someone changed it \
                     since; left alone (it was {} before rs-agent)",
                    owned.iface, owned.key, owned.applied, owned.previous
                ))
            }
            Some(_) => plan.changes.extend(restore_sysctl(owned, observed)),
        }
    }
    plan.changes.sort_by_key(Change::phase);
    plan
}

#[cfg(test)]
mod tests;
