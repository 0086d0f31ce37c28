//! Table-style tests of the director diff: every case states the kernel before, the config,
//! and the exact ops expected.

use super::*;
use crate::director::config::{DirectorDesired, ServiceDesired};
use crate::kernel::ipvs::{ObservedDestination, Stats};
use crate::testing::{addr, dr, ip, service, tcp};
use std::time::Duration;

fn want(vip: &str, sched: &str, reals: &[(&str, u32)]) -> ServiceDesired {
    ServiceDesired {
        service: service(tcp(vip, 80), sched),
        reals: reals.iter().map(|(a, w)| dr(a, *w)).collect(),
        check: None,
        sorry: None,
        quorum: Default::default(),
        quorum_notify: Default::default(),
        real_notify: Vec::new(),
    }
}

/// The kernel's view of a service: HASHED set, as the kernel reports every service.
fn have(vip: &str, sched: &str, reals: &[(&str, u32)]) -> ObservedService {
    let mut s = service(tcp(vip, 80), sched);
    s.flags = ServiceFlags::HASHED;
    ObservedService {
        service: s,
        stats: Stats::default(),
        destinations: reals
            .iter()
            .map(|(a, w)| ObservedDestination {
                dest: dr(a, *w),
                tun_type: 0,
                active_conns: 0,
                inactive_conns: 0,
                persist_conns: 0,
                stats: Stats::default(),
            })
            .collect(),
    }
}

fn desired(services: Vec<ServiceDesired>) -> DirectorDesired {
    DirectorDesired {
        interface: "eth0".into(),
        garp_count: 3,
        garp_interval: Duration::from_millis(200),
        services,
    }
}

fn vip_addr(vip: &str) -> Addr {
    Addr {
        label: Some("eth0:rsagent".into()),
        secondary: true,
        ..addr("eth0", vip, 32, crate::model::ADDR_PROTO)
    }
}

fn owning(keys: &[ServiceKey], vips: &[&str]) -> DirectorState {
    DirectorState {
        services: keys.to_vec(),
        addrs: vips
            .iter()
            .map(|v| crate::state_dir::OwnedAddr {
                ifname: "eth0".into(),
                ip: ip(v),
                prefix: 32,
                label: Some("eth0:rsagent".into()),
                adopted: None,
            })
            .collect(),
    }
}

const VIP: &str = "192.0.2.100";
const RS1: &str = "198.51.100.2";
const RS2: &str = "198.51.100.3";
const RS3: &str = "198.51.100.4";

#[test]
fn empty_kernel_gets_service_then_reals_then_vip() {
    let d = desired(vec![want(VIP, "rr", &[(RS1, 1), (RS2, 1)])]);
    let p = plan_up(&d, &[], &[], &DirectorState::default());
    assert_eq!(
        p.ipvs,
        vec![
            IpvsOp::AddService(service(tcp(VIP, 80), "rr")),
            IpvsOp::AddDest(tcp(VIP, 80), dr(RS1, 1)),
            IpvsOp::AddDest(tcp(VIP, 80), dr(RS2, 1)),
        ]
    );
    assert_eq!(p.addrs, vec![add_vip("eth0", ip(VIP))]);
}

#[test]
fn matching_kernel_is_nothing_to_do_even_with_hashed_flag() {
    let d = desired(vec![want(VIP, "rr", &[(RS1, 1), (RS2, 1)])]);
    let p = plan_up(
        &d,
        &[have(VIP, "rr", &[(RS1, 1), (RS2, 1)])],
        &[vip_addr(VIP)],
        &owning(&[tcp(VIP, 80)], &[VIP]),
    );
    assert!(p.is_empty(), "{p:?}");
}

#[test]
fn one_weight_change_is_exactly_one_op() {
    let d = desired(vec![want(VIP, "rr", &[(RS1, 5), (RS2, 1)])]);
    let p = plan_up(
        &d,
        &[have(VIP, "rr", &[(RS1, 1), (RS2, 1)])],
        &[vip_addr(VIP)],
        &DirectorState::default(),
    );
    assert_eq!(p.ipvs, vec![IpvsOp::EditDest(tcp(VIP, 80), dr(RS1, 5))]);
    assert!(p.addrs.is_empty());
}

#[test]
fn add_and_remove_reals_adds_capacity_first() {
    let d = desired(vec![want(VIP, "rr", &[(RS2, 1), (RS3, 1)])]);
    let p = plan_up(
        &d,
        &[have(VIP, "rr", &[(RS1, 1), (RS2, 1)])],
        &[vip_addr(VIP)],
        &DirectorState::default(),
    );
    assert_eq!(
        p.ipvs,
        vec![
            IpvsOp::AddDest(tcp(VIP, 80), dr(RS3, 1)),
            IpvsOp::DelDest(
                tcp(VIP, 80),
                DestKey {
                    addr: ip(RS1),
                    port: 80
                }
            ),
        ]
    );
}

#[test]
fn scheduler_change_edits_the_service_only() {
    let d = desired(vec![want(VIP, "wlc", &[(RS1, 1)])]);
    let p = plan_up(
        &d,
        &[have(VIP, "rr", &[(RS1, 1)])],
        &[vip_addr(VIP)],
        &DirectorState::default(),
    );
    assert_eq!(
        p.ipvs,
        vec![IpvsOp::EditService(service(tcp(VIP, 80), "wlc"))]
    );
}

#[test]
fn foreign_service_is_invisible_to_up_and_down() {
    let foreign = have("203.0.113.9", "wlc", &[(RS3, 1)]);
    let d = desired(vec![want(VIP, "rr", &[(RS1, 1)])]);
    let state = owning(&[tcp(VIP, 80)], &[VIP]);
    let kernel = [have(VIP, "rr", &[(RS1, 1)]), foreign.clone()];
    assert!(plan_up(&d, &kernel, &[vip_addr(VIP)], &state).is_empty());
    let down = plan_down(&kernel, &[vip_addr(VIP)], &state);
    assert_eq!(down.ipvs, vec![IpvsOp::DelService(tcp(VIP, 80))]);
    assert!(down.touched().iter().all(|k| *k != foreign.service.key));
}

#[test]
fn service_dropped_from_config_is_removed_only_if_ours() {
    let d = desired(vec![want(VIP, "rr", &[(RS1, 1)])]);
    let old = tcp(VIP, 443);
    let mut was_ours = have(VIP, "rr", &[(RS1, 1)]);
    was_ours.service.key = old.clone();
    let kernel = [have(VIP, "rr", &[(RS1, 1)]), was_ours];
    let p = plan_up(
        &d,
        &kernel,
        &[vip_addr(VIP)],
        &owning(&[tcp(VIP, 80), old.clone()], &[VIP]),
    );
    assert_eq!(p.ipvs, vec![IpvsOp::DelService(old)]);
    let p = plan_up(
        &d,
        &kernel,
        &[vip_addr(VIP)],
        &owning(&[tcp(VIP, 80)], &[VIP]),
    );
    assert!(
        p.ipvs.is_empty(),
        "a service we never owned is not ours to delete"
    );
}

#[test]
fn foreign_vip_is_neither_added_nor_removed() {
    let d = desired(vec![want(VIP, "rr", &[(RS1, 1)])]);
    let mut foreign = vip_addr(VIP);
    foreign.label = None;
    let p = plan_up(
        &d,
        &[have(VIP, "rr", &[(RS1, 1)])],
        &[foreign.clone()],
        &DirectorState::default(),
    );
    assert!(p.addrs.is_empty());
    let down = plan_down(&[], &[foreign], &DirectorState::default());
    assert!(down.is_empty());
}

/// A VIP whose duplicate address detection failed does not count as bound: ours is
/// re-added (without DAD, in one change, ownership kept), someone else's is left for
/// `status` to report, and a tentative one is waited for.
#[test]
fn dad_failed_vip_is_re_added_only_when_ours() {
    use crate::model::Dad;
    const VIP6: &str = "2001:db8::100";
    let d = desired(vec![want(VIP6, "rr", &[("2001:db8::2", 1)])]);
    let ipvs = [have(VIP6, "rr", &[("2001:db8::2", 1)])];
    let addr = |dad| Addr {
        prefix: 128,
        label: None,
        dad,
        ..vip_addr(VIP6)
    };
    let ours = owning(&[tcp(VIP6, 80)], &[VIP6]);
    let theirs = DirectorState {
        addrs: Default::default(),
        ..ours.clone()
    };
    let re_add = Change::ReAddAddr {
        ifname: "eth0".into(),
        ip: ip(VIP6),
        prefix: 128,
        label: None,
    };
    let rows = [
        (Dad::Failed, &ours, vec![re_add]),
        (Dad::Failed, &theirs, vec![]),
        (Dad::Tentative, &ours, vec![]),
        (Dad::Done, &ours, vec![]),
    ];
    for (dad, state, want) in rows {
        let p = plan_up(&d, &ipvs, &[addr(dad)], state);
        assert_eq!(p.addrs, want, "{dad:?}, owned {}", state.addrs.len());
        assert!(p.ipvs.is_empty(), "{p:?}");
    }
}

#[test]
fn down_after_crash_removes_what_the_journal_recorded() {
    // `up` recorded the service and VIP, then died before adding the VIP.
    let state = owning(&[tcp(VIP, 80)], &[VIP]);
    let down = plan_down(&[have(VIP, "rr", &[(RS1, 1)])], &[], &state);
    assert_eq!(down.ipvs, vec![IpvsOp::DelService(tcp(VIP, 80))]);
    assert!(down.addrs.is_empty());
    assert!(plan_down(&[], &[], &state).is_empty(), "twice is safe");
}

#[test]
fn restore_puts_touched_services_back() {
    let before = [have(VIP, "rr", &[(RS1, 1)])];
    let now = [
        have(VIP, "wlc", &[(RS1, 7), (RS2, 1)]),
        have("203.0.113.1", "rr", &[]),
    ];
    let new_key = tcp("203.0.113.1", 80);
    let ops = restore(&before, &now, &[tcp(VIP, 80), new_key.clone()]);
    assert_eq!(
        ops,
        vec![
            IpvsOp::EditService(service(tcp(VIP, 80), "rr")),
            IpvsOp::EditDest(tcp(VIP, 80), dr(RS1, 1)),
            IpvsOp::DelDest(
                tcp(VIP, 80),
                DestKey {
                    addr: ip(RS2),
                    port: 80
                }
            ),
            IpvsOp::DelService(new_key),
        ]
    );
}

const VIP2: &str = "192.0.2.101";
const VIP3: &str = "192.0.2.102";

#[test]
fn changed_services_are_the_edited_added_and_removed_ones() {
    let old = desired(vec![
        want(VIP, "rr", &[(RS1, 1), (RS2, 1)]),
        want(VIP2, "rr", &[(RS1, 1)]),
        want(VIP3, "rr", &[(RS1, 1)]),
    ]);
    // VIP: one weight; VIP2: untouched; VIP3: removed; "192.0.2.103": added.
    let mut new = desired(vec![
        want(VIP, "rr", &[(RS1, 5), (RS2, 1)]),
        want(VIP2, "rr", &[(RS1, 1)]),
        want("192.0.2.103", "rr", &[(RS1, 1)]),
    ]);
    let got = changed_services(&old, &new);
    let expected: HashSet<ServiceKey> = [tcp(VIP, 80), tcp(VIP3, 80), tcp("192.0.2.103", 80)]
        .into_iter()
        .collect();
    assert_eq!(got, expected);
    // A health check (not part of the IPVS table) changing alone is no IPVS change.
    new = old.clone();
    new.services[1].check = Some(crate::director::health::HealthCheck {
        probe: crate::director::health::Probe::Tcp,
        port: None,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        rise: 2,
        fall: 2,
        on_failure: crate::director::health::OnFailure::Quiesce,
        alpha: false,
    });
    assert!(changed_services(&old, &new).is_empty());
    assert!(changed_services(&old, &old).is_empty());
}

#[test]
fn scoped_plan_touches_only_the_scope_and_still_plans_vips() {
    let d = desired(vec![
        want(VIP, "rr", &[(RS1, 5), (RS2, 1)]),
        want(VIP2, "rr", &[(RS1, 1)]),
    ]);
    // Out of scope and drifted (RS1 at weight 3, VIP3 owned but unwanted): left for the full
    // pass; in scope: the one weight. VIP2's address is missing and is added regardless.
    let kernel = vec![
        have(VIP, "rr", &[(RS1, 1), (RS2, 1)]),
        have(VIP2, "rr", &[(RS1, 3)]),
        have(VIP3, "rr", &[(RS1, 1)]),
    ];
    let state = owning(&[tcp(VIP, 80), tcp(VIP2, 80), tcp(VIP3, 80)], &[VIP]);
    let scope = Scope::Only([tcp(VIP, 80)].into_iter().collect());
    let p = plan_scoped(&d, &kernel[..1], &[vip_addr(VIP)], &state, &scope);
    assert_eq!(p.ipvs, vec![IpvsOp::EditDest(tcp(VIP, 80), dr(RS1, 5))]);
    assert_eq!(p.addrs, vec![add_vip("eth0", ip(VIP2))]);
    // The full plan of the same kernel repairs the rest too.
    let full = plan_up(&d, &kernel, &[vip_addr(VIP)], &state);
    assert_eq!(
        full.ipvs,
        vec![
            IpvsOp::EditDest(tcp(VIP, 80), dr(RS1, 5)),
            IpvsOp::EditDest(tcp(VIP2, 80), dr(RS1, 1)),
            IpvsOp::DelService(tcp(VIP3, 80)),
        ]
    );
    // A removed service in scope is deleted.
    let scope = Scope::Only([tcp(VIP3, 80)].into_iter().collect());
    let p = plan_scoped(&d, &kernel[2..], &[vip_addr(VIP)], &state, &scope);
    assert_eq!(p.ipvs, vec![IpvsOp::DelService(tcp(VIP3, 80))]);
}

#[test]
fn health_flips_plan_from_the_last_pass_and_anything_else_observes() {
    let old = desired(vec![
        want(VIP, "rr", &[(RS1, 1), (RS2, 1)]),
        want(VIP2, "rr", &[(RS1, 1)]),
    ]);
    // Quiesce: one weight, one op, only for the service that changed.
    let mut new = old.clone();
    new.services[0].reals[1].weight = 0;
    assert_eq!(
        dest_ops(&old, &new),
        Some(vec![IpvsOp::EditDest(tcp(VIP, 80), dr(RS2, 0))])
    );
    // Remove, and the sorry server added in its place.
    new = old.clone();
    new.services[1].reals = vec![dr(RS2, 1)];
    assert_eq!(
        dest_ops(&old, &new),
        Some(vec![
            IpvsOp::AddDest(tcp(VIP2, 80), dr(RS2, 1)),
            IpvsOp::DelDest(
                tcp(VIP2, 80),
                DestKey {
                    addr: ip(RS1),
                    port: 80
                }
            ),
        ])
    );
    assert_eq!(dest_ops(&old, &old), Some(vec![]));
    // A service edited, added, removed or renamed, or another interface: observe first.
    new = old.clone();
    new.services[0].service.scheduler = "wlc".into();
    assert_eq!(dest_ops(&old, &new), None);
    new = old.clone();
    new.services.push(want(VIP3, "rr", &[(RS1, 1)]));
    assert_eq!(dest_ops(&old, &new), None);
    new = old.clone();
    new.services.pop();
    assert_eq!(dest_ops(&old, &new), None);
    new = old.clone();
    new.services[1] = want(VIP3, "rr", &[(RS1, 1)]);
    assert_eq!(dest_ops(&old, &new), None);
    new = old.clone();
    new.interface = "eth1".into();
    assert_eq!(dest_ops(&old, &new), None);
}

#[test]
fn configured_services_someone_else_made_are_unowned_until_adopted() {
    let d = desired(vec![
        want(VIP, "rr", &[(RS1, 1)]),
        want("192.0.2.101", "rr", &[(RS2, 1)]),
        want("192.0.2.102", "rr", &[(RS3, 1)]),
    ]);
    let kernel = [
        have(VIP, "wlc", &[(RS1, 1)]),           // made by hand: same key
        have("192.0.2.101", "rr", &[(RS2, 1)]),  // ours
        have("203.0.113.50", "rr", &[(RS3, 1)]), // foreign, not configured
    ];
    let state = owning(&[tcp("192.0.2.101", 80)], &[]);
    // Absent services (192.0.2.102) are created, hence ours; foreign unconfigured ones are
    // invisible; only the configured, present, unrecorded one is reported.
    assert_eq!(
        unowned(&d, &kernel, &state, &Scope::All),
        vec![tcp(VIP, 80)]
    );
    let only_ours = Scope::Only([tcp("192.0.2.101", 80)].into_iter().collect());
    assert!(unowned(&d, &kernel, &state, &only_ours).is_empty());
    let mut adopted = state.clone();
    adopted.own(&[tcp(VIP, 80)]);
    assert!(unowned(&d, &kernel, &adopted, &Scope::All).is_empty());
    // Adopting twice records it once.
    adopted.own(&[tcp(VIP, 80)]);
    assert_eq!(adopted.services.len(), 2);
}

/// A pass of `director run` that leaves a service someone else made alone still reconciles
/// every other service: the configured ones and the owned ones to remove, within its scope.
#[test]
fn scope_without_skips_only_the_unowned_services() {
    let d = desired(vec![
        want(VIP, "rr", &[(RS1, 1)]),
        want("192.0.2.101", "rr", &[(RS2, 2)]),
    ]);
    // 192.0.2.101 was made by hand and added to the config by a reload; 192.0.2.102 is ours
    // and left the config.
    let kernel = [
        have(VIP, "rr", &[(RS1, 1)]),
        have("192.0.2.101", "rr", &[(RS2, 1)]),
        have("192.0.2.102", "rr", &[(RS3, 1)]),
    ];
    let state = owning(&[tcp(VIP, 80), tcp("192.0.2.102", 80)], &[]);
    let skip = unowned(&d, &kernel, &state, &Scope::All);
    assert_eq!(skip, vec![tcp("192.0.2.101", 80)]);
    let scope = scope_without(&Scope::All, &d, &state, &skip);
    let p = plan_scoped(&d, &kernel, &[], &state, &scope);
    // The foreign service's weight is not touched; the owned one that left the config goes.
    assert_eq!(p.ipvs, vec![IpvsOp::DelService(tcp("192.0.2.102", 80))]);
    assert!(unowned(&d, &kernel, &state, &scope).is_empty());
    // A narrower scope stays as narrow.
    let only = Scope::Only([tcp("192.0.2.101", 80)].into_iter().collect());
    assert_eq!(
        scope_without(&only, &d, &state, &skip),
        Scope::Only(HashSet::new())
    );
}

#[test]
fn adopt_takes_configured_vips_bound_by_someone_else_and_nothing_more() {
    let d = desired(vec![
        want(VIP, "rr", &[(RS1, 1)]),
        want("192.0.2.101", "rr", &[(RS2, 1)]),
    ]);
    let mut other_if = vip_addr("192.0.2.101");
    other_if.ifname = "eth1".into();
    let addrs = [
        vip_addr(VIP),           // configured, bound by hand
        vip_addr("192.0.2.101"), // configured, already ours
        other_if,                // configured VIP, but on another interface
        vip_addr("203.0.113.9"), // not configured
    ];
    let state = owning(&[], &["192.0.2.101"]);
    let adopted: Vec<IpAddr> = unowned_vips(&d, &addrs, &state)
        .iter()
        .map(|a| a.ip)
        .collect();
    assert_eq!(adopted, vec![ip(VIP)]);
    let mut owned = state.clone();
    owned.own_addr(&addrs[0]);
    owned.own_addr(&addrs[0]);
    assert!(unowned_vips(&d, &addrs, &owned).is_empty());
    assert_eq!(owned.addrs.len(), 2);
}

#[test]
fn adopt_leaves_a_vip_whose_dad_failed_to_the_node_that_holds_it() {
    let d = desired(vec![want("2001:db8::100", "rr", &[("2001:db8::2", 1)])]);
    let mut failed = vip_addr("2001:db8::100");
    failed.prefix = 128;
    failed.label = None;
    failed.dad = crate::model::Dad::Failed;
    assert!(unowned_vips(&d, &[failed.clone()], &owning(&[], &[])).is_empty());
    failed.dad = crate::model::Dad::Tentative;
    assert!(unowned_vips(&d, &[failed], &owning(&[], &[])).is_empty());
}

#[test]
fn only_vips_bound_and_usable_on_the_interface_are_announced() {
    let mut failed = vip_addr("2001:db8::100");
    failed.dad = crate::model::Dad::Failed;
    let mut elsewhere = vip_addr("192.0.2.102");
    elsewhere.ifname = "eth1".into();
    let addrs = [vip_addr(VIP), failed, elsewhere];
    let pending = [
        ip(VIP),
        ip("2001:db8::100"),
        ip("192.0.2.101"),
        ip("192.0.2.102"),
    ];
    assert_eq!(announceable(&pending, "eth0", &addrs), vec![ip(VIP)]);
}

/// What rs-agent never sets — a persistence engine, a GUE/GRE tunnel type — differs from the
/// configuration when someone set it by hand: `up` edits it away and `status` is not OK.
#[test]
fn a_persistence_engine_or_tunnel_type_set_by_hand_is_drift() {
    let d = desired(vec![want(VIP, "rr", &[(RS1, 1)])]);
    let owned = owning(&[tcp(VIP, 80)], &[VIP]);
    let mut sip = have(VIP, "rr", &[(RS1, 1)]);
    sip.service.pe_name = Some("sip".into());
    let p = plan_up(&d, &[sip], &[vip_addr(VIP)], &owned);
    assert_eq!(
        p.ipvs,
        vec![IpvsOp::EditService(service(tcp(VIP, 80), "rr"))]
    );
    let mut gue = have(VIP, "rr", &[(RS1, 1)]);
    gue.destinations[0].tun_type = 1;
    let p = plan_up(&d, &[gue], &[vip_addr(VIP)], &owned);
    assert_eq!(p.ipvs, vec![IpvsOp::EditDest(tcp(VIP, 80), dr(RS1, 1))]);
}

/// A VIP rs-agent added and someone deleted and put back by hand lacks the mark: `down` and a
/// pass that releases it leave it. One adopted with `--adopt` never had the mark and goes.
#[test]
fn a_vip_put_back_by_hand_is_not_removed_but_an_adopted_one_is() {
    let mut state = DirectorState::default();
    let added = Change::AddAddr {
        ifname: "eth0".into(),
        ip: ip(VIP),
        prefix: 32,
        label: Some("eth0:rsagent".into()),
    };
    state.record_addr(&added);
    let by_hand = crate::model::Addr {
        label: Some("eth0:0".into()),
        ..crate::testing::addr("eth0", VIP, 32, 0)
    };
    let down = plan_down(&[], std::slice::from_ref(&by_hand), &state);
    assert!(down.addrs.is_empty(), "{:?}", down.addrs);
    let marked = crate::testing::addr("eth0", VIP, 32, crate::model::ADDR_PROTO);
    assert_eq!(
        plan_down(&[], std::slice::from_ref(&marked), &state)
            .addrs
            .len(),
        1
    );
    let mut adopted = DirectorState::default();
    adopted.own_addr(&by_hand);
    assert_eq!(
        plan_down(&[], std::slice::from_ref(&by_hand), &adopted)
            .addrs
            .len(),
        1
    );
}
