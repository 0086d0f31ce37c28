use super::*;
use crate::model::{Addr, NftObserved, ADDR_PROTO};
use crate::testing::{addr, default_sysctls, ip, link};
use std::net::Ipv4Addr;

const VIP: &str = "192.0.2.100";
const VIP6: &str = "2001:db8::100";
const RIP: &str = "192.0.2.11";

fn v4(s: &str) -> Ipv4Addr {
    s.parse().expect("test literal")
}

/// A real server: lo, eth0 with RIP/24, all sysctls at the kernel defaults (0).
fn node() -> Observed {
    Observed {
        links: vec![link(1, "lo", None), link(2, "eth0", Some("veth"))],
        addrs: vec![addr("lo", "127.0.0.1", 8, 0), addr("eth0", RIP, 24, 0)],
        sysctls: default_sysctls(&["all", "lo", "eth0"]),
        nft: NftObserved::default(),
    }
}

fn desired(vips: &[&str], arp: ArpMethod, device: Device) -> RealServerDesired {
    RealServerDesired {
        vips: vips.iter().map(|v| ip(v)).collect(),
        device,
        arp,
        interfaces: None,
    }
}

fn sysctl_desired() -> RealServerDesired {
    desired(&[VIP], ArpMethod::Sysctl, Device::Loopback)
}

fn set(iface: &str, key: SysctlKey, from: i64, to: i64) -> Change {
    Change::SetSysctl {
        iface: iface.into(),
        key,
        from,
        to,
    }
}

fn add_vip(ifname: &str, vip: &str) -> Change {
    let label = ip(vip).is_ipv4().then(|| format!("{ifname}:rsagent"));
    Change::AddAddr {
        ifname: ifname.into(),
        ip: ip(vip),
        prefix: host_prefix(&ip(vip)),
        label,
    }
}

/// Applies a plan to an observed model the way the kernel would (for idempotence checks).
fn simulate(observed: &mut Observed, plan: &Plan) {
    for c in &plan.changes {
        match c {
            Change::CreateDummy { name } => {
                observed.links.push(link(9, name, Some("dummy")));
                for key in SysctlKey::ALL {
                    observed.sysctls.insert((name.clone(), key), 0);
                }
            }
            Change::SetSysctl { iface, key, to, .. }
            | Change::RestoreSysctl { iface, key, to, .. } => {
                observed.sysctls.insert((iface.clone(), *key), *to);
            }
            Change::NftReplace { family, rules, .. } => match family {
                NftFamily::Arp => observed.nft.arp = Some(rules.clone()),
                NftFamily::Ip6 => observed.nft.ip6 = Some(rules.clone()),
            },
            Change::NftDelete { family, .. } => match family {
                NftFamily::Arp => observed.nft.arp = None,
                NftFamily::Ip6 => observed.nft.ip6 = None,
            },
            Change::SetLinkUp { name } => {
                if let Some(l) = observed.links.iter_mut().find(|l| &l.name == name) {
                    l.up = true;
                }
            }
            Change::AddAddr {
                ifname,
                ip,
                prefix,
                label,
            } => observed.addrs.push(Addr {
                label: label.clone(),
                ..addr(ifname, &ip.to_string(), *prefix, ADDR_PROTO)
            }),
            Change::RelabelAddr { ifname, ip, to, .. } => {
                for a in observed.addrs.iter_mut() {
                    if &a.ifname == ifname && &a.ip == ip {
                        a.label = to.clone();
                    }
                }
            }
            Change::DelAddr { ifname, ip, .. } => observed
                .addrs
                .retain(|a| !(&a.ifname == ifname && &a.ip == ip)),
            Change::ReAddAddr { ifname, ip, .. } => {
                for a in observed.addrs.iter_mut() {
                    if &a.ifname == ifname && &a.ip == ip {
                        a.dad = crate::model::Dad::Done;
                    }
                }
            }
            Change::DeleteDummy { name } => {
                observed.links.retain(|l| &l.name != name);
                observed.addrs.retain(|a| &a.ifname != name);
                observed.sysctls.retain(|(iface, _), _| iface != name);
            }
        }
    }
}

fn record(state: &mut RealServerState, plan: &Plan) {
    for c in &plan.changes {
        state.record(c);
        state.forget(c);
    }
}

#[test]
fn sysctl_up_suppresses_before_binding() {
    let plan = plan_up(&sysctl_desired(), &node(), &RealServerState::default()).expect("plan");
    assert_eq!(
        plan.changes,
        vec![
            set("eth0", SysctlKey::ArpIgnore, 0, 1),
            set("eth0", SysctlKey::ArpAnnounce, 0, 2),
            add_vip("lo", VIP),
        ]
    );
}

#[test]
fn effective_value_from_all_is_respected() {
    let mut obs = node();
    obs.sysctls.insert(("all".into(), SysctlKey::ArpIgnore), 1);
    obs.sysctls
        .insert(("eth0".into(), SysctlKey::ArpAnnounce), 2);
    let plan = plan_up(&sysctl_desired(), &obs, &RealServerState::default()).expect("plan");
    assert_eq!(plan.changes, vec![add_vip("lo", VIP)]);
    // arp_ignore 2 also suppresses: nothing to raise.
    obs.sysctls.insert(("all".into(), SysctlKey::ArpIgnore), 0);
    obs.sysctls.insert(("eth0".into(), SysctlKey::ArpIgnore), 2);
    let plan = plan_up(&sysctl_desired(), &obs, &RealServerState::default()).expect("plan");
    assert_eq!(plan.changes, vec![add_vip("lo", VIP)]);
}

/// Effective values that do not suppress are corrected on the interface, whatever their
/// size: arp_ignore 3..8 and arp_announce above 2 are not "more suppressing" than 1 and 2.
#[test]
fn only_ignore_1_or_2_and_announce_2_count_as_suppressed() {
    type Row = (&'static str, [i64; 4], &'static [(SysctlKey, i64, i64)]);
    use SysctlKey::{ArpAnnounce as Ann, ArpIgnore as Ign};
    // [all.arp_ignore, eth0.arp_ignore, all.arp_announce, eth0.arp_announce] → eth0 writes.
    let rows: &[Row] = &[
        ("defaults", [0, 0, 0, 0], &[(Ign, 0, 1), (Ann, 0, 2)]),
        ("already set", [0, 1, 0, 2], &[]),
        ("ignore 2, announce via all", [0, 2, 2, 0], &[]),
        ("ignore 3 answers for lo", [0, 3, 0, 2], &[(Ign, 3, 1)]),
        ("ignore 4..7 reserved", [0, 5, 0, 2], &[(Ign, 5, 1)]),
        ("ignore 8 answers nothing", [0, 8, 0, 2], &[(Ign, 8, 1)]),
        ("announce 3 is like 0", [0, 1, 0, 3], &[(Ann, 3, 2)]),
        ("all 1 and own 8", [1, 8, 0, 2], &[(Ign, 8, 1)]),
        ("announce 1 on all", [0, 1, 1, 0], &[(Ann, 0, 2)]),
    ];
    for (what, [all_i, own_i, all_a, own_a], want) in rows {
        let mut obs = node();
        obs.sysctls.insert(("all".into(), Ign), *all_i);
        obs.sysctls.insert(("eth0".into(), Ign), *own_i);
        obs.sysctls.insert(("all".into(), Ann), *all_a);
        obs.sysctls.insert(("eth0".into(), Ann), *own_a);
        let plan = plan_up(&sysctl_desired(), &obs, &RealServerState::default()).expect(what);
        let mut expected: Vec<Change> = want
            .iter()
            .map(|(key, from, to)| set("eth0", *key, *from, *to))
            .collect();
        expected.push(add_vip("lo", VIP));
        assert_eq!(plan.changes, expected, "{what}");
    }
}

/// `all` above what an interface value can correct: refused before anything is touched,
/// one line naming the sysctl and the fix.
#[test]
fn all_that_no_interface_value_can_correct_is_refused() {
    let cases = [
        (SysctlKey::ArpIgnore, 4),
        (SysctlKey::ArpIgnore, 3),
        (SysctlKey::ArpIgnore, 8),
        (SysctlKey::ArpAnnounce, 3),
    ];
    for (key, value) in cases {
        let mut obs = node();
        obs.sysctls.insert(("all".into(), key), value);
        let err = plan_up(&sysctl_desired(), &obs, &RealServerState::default())
            .expect_err("all cannot be corrected");
        let want = format!("net.ipv4.conf.all.{key} is {value}, so {key} on eth0 is {value}");
        assert!(err.0.starts_with(&want), "{err}");
        assert!(
            err.0
                .contains(&format!("sysctl -w net.ipv4.conf.all.{key}=0")),
            "{err}"
        );
        assert!(!err.0.contains('\n'), "{err}");
        // The nft method does not depend on the sysctls.
        let nft = desired(&[VIP], ArpMethod::Nft, Device::Loopback);
        plan_up(&nft, &obs, &RealServerState::default()).expect("nft plans");
    }
}

#[test]
fn up_is_idempotent_for_every_method_and_device() {
    let cases = [
        desired(&[VIP, VIP6], ArpMethod::Sysctl, Device::Loopback),
        desired(&[VIP, VIP6], ArpMethod::Nft, Device::Loopback),
        desired(&[VIP], ArpMethod::Nft, Device::Dummy("lvs0".into())),
        desired(&[VIP6], ArpMethod::Sysctl, Device::Dummy("lvs0".into())),
    ];
    for d in cases {
        let mut obs = node();
        let mut state = RealServerState::default();
        let first = plan_up(&d, &obs, &state).expect("plan");
        assert!(!first.changes.is_empty(), "{d:?}");
        simulate(&mut obs, &first);
        record(&mut state, &first);
        let second = plan_up(&d, &obs, &state).expect("plan");
        assert_eq!(second.changes, vec![], "second up for {d:?}");
    }
}

#[test]
fn down_undoes_up_exactly() {
    let cases = [
        desired(&[VIP, VIP6], ArpMethod::Sysctl, Device::Loopback),
        desired(&[VIP, VIP6], ArpMethod::Nft, Device::Loopback),
        desired(&[VIP], ArpMethod::Nft, Device::Dummy("lvs0".into())),
    ];
    for d in cases {
        let before = node();
        let mut obs = before.clone();
        let mut state = RealServerState::default();
        let up = plan_up(&d, &obs, &state).expect("plan");
        simulate(&mut obs, &up);
        record(&mut state, &up);
        let down = plan_down(&state, &obs);
        assert_eq!(down.warnings, Vec::<String>::new());
        simulate(&mut obs, &down);
        record(&mut state, &down);
        assert_eq!(obs, before, "{d:?}");
        assert!(state.is_empty(), "{state:?}");
    }
}

#[test]
fn down_removes_vips_before_lifting_suppression() {
    let mut obs = node();
    let mut state = RealServerState::default();
    let up = plan_up(&sysctl_desired(), &obs, &state).expect("plan");
    simulate(&mut obs, &up);
    record(&mut state, &up);
    let down = plan_down(&state, &obs);
    let phases: Vec<u8> = down.changes.iter().map(Change::phase).collect();
    assert!(
        matches!(down.changes[0], Change::DelAddr { .. }),
        "{down:?}"
    );
    assert!(phases.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn down_leaves_foreign_state_alone() {
    let mut obs = node();
    obs.addrs.push(addr("lo", "203.0.113.7", 32, 0));
    let mut state = RealServerState::default();
    let up = plan_up(&sysctl_desired(), &obs, &state).expect("plan");
    simulate(&mut obs, &up);
    record(&mut state, &up);
    // Someone else changes a sysctl we set: we must not clobber it.
    obs.sysctls.insert(("eth0".into(), SysctlKey::ArpIgnore), 2);
    let down = plan_down(&state, &obs);
    assert!(!down.changes.iter().any(
        |c| matches!(c, Change::DelAddr { ip, .. } if ip == &super::tests::ip("203.0.113.7"))
    ));
    assert!(!down
        .changes
        .iter()
        .any(|c| matches!(c, Change::RestoreSysctl { key, .. } if *key == SysctlKey::ArpIgnore)));
    assert_eq!(down.warnings.len(), 1, "{:?}", down.warnings);
    assert!(down.warnings[0].contains("left alone"));
}

#[test]
fn down_after_a_crash_mid_up_is_safe() {
    // The journal recorded the whole plan but only the first sysctl was applied.
    let obs0 = node();
    let up = plan_up(&sysctl_desired(), &obs0, &RealServerState::default()).expect("plan");
    let mut state = RealServerState::default();
    for c in &up.changes {
        state.record(c);
    }
    let mut obs = obs0.clone();
    simulate(
        &mut obs,
        &Plan {
            changes: up.changes[..1].to_vec(),
            warnings: vec![],
        },
    );
    let down = plan_down(&state, &obs);
    assert_eq!(down.warnings, Vec::<String>::new());
    simulate(&mut obs, &down);
    assert_eq!(obs, obs0);
}

#[test]
fn nft_rules_mirror_the_arptables_recipe() {
    let d = desired(&[VIP, VIP6], ArpMethod::Nft, Device::Loopback);
    let plan = plan_up(&d, &node(), &RealServerState::default()).expect("plan");
    let arp = plan
        .changes
        .iter()
        .find_map(|c| match c {
            Change::NftReplace {
                family: NftFamily::Arp,
                rules,
                previous: None,
            } => Some(rules.clone()),
            _ => None,
        })
        .expect("arp table written");
    assert_eq!(
        arp,
        vec![
            NftRule::DropArpFor { vip: v4(VIP) },
            NftRule::MangleArpFrom {
                iface: "eth0".into(),
                vip: v4(VIP),
                rip: v4(RIP),
            },
        ]
    );
    assert!(plan.changes.iter().any(|c| matches!(
        c,
        Change::NftReplace {
            family: NftFamily::Ip6,
            ..
        }
    )));
    assert!(!plan
        .changes
        .iter()
        .any(|c| matches!(c, Change::SetSysctl { .. })));
}

#[test]
fn tampered_nft_table_is_rewritten() {
    let d = desired(&[VIP], ArpMethod::Nft, Device::Loopback);
    let mut obs = node();
    obs.nft.arp = Some(vec![]);
    let mut state = RealServerState::default();
    state.nft_tables.insert(NftFamily::Arp);
    let plan = plan_up(&d, &obs, &state).expect("plan");
    assert!(matches!(
        &plan.changes[0],
        Change::NftReplace { previous: Some(p), .. } if p.is_empty()
    ));
}

/// An admin's own `table arp rs_agent` / `table ip6 rs_agent` (not in the state file).
fn foreign_rs_agent_tables(obs: &mut Observed) {
    let foreign = vec![NftRule::Unknown {
        text: "input: the admin's own rule".into(),
    }];
    obs.nft.arp = Some(foreign.clone());
    obs.nft.ip6 = Some(foreign);
}

#[test]
fn unrecorded_rs_agent_tables_are_never_deleted() {
    let mut obs = node();
    foreign_rs_agent_tables(&mut obs);
    let mut state = RealServerState::default();
    let up = plan_up(&sysctl_desired(), &obs, &state).expect("plan");
    let is_nft = |c: &Change| matches!(c, Change::NftDelete { .. } | Change::NftReplace { .. });
    assert!(!up.changes.iter().any(is_nft), "{up:?}");
    simulate(&mut obs, &up);
    record(&mut state, &up);
    assert!(state.nft_tables.is_empty(), "{state:?}");
    let down = plan_down(&state, &obs);
    assert!(!down.changes.iter().any(is_nft), "{down:?}");
}

#[test]
fn nft_up_refuses_to_replace_an_unrecorded_table() {
    let mut obs = node();
    foreign_rs_agent_tables(&mut obs);
    let nft = desired(&[VIP], ArpMethod::Nft, Device::Loopback);
    let err = plan_up(&nft, &obs, &RealServerState::default()).expect_err("must refuse");
    assert!(
        err.0
            .starts_with("nft table arp rs_agent already exists and is not rs-agent's")
            && err.0.contains("nft delete table arp rs_agent")
            && err.0.contains("--arp sysctl"),
        "{err}"
    );
    // Recorded as ours (a previous `up`, or `run` repairing it): rewritten.
    let mut state = RealServerState::default();
    state.nft_tables.insert(NftFamily::Arp);
    let plan = plan_up(&nft, &obs, &state).expect("plan");
    assert!(
        matches!(
            &plan.changes[0],
            Change::NftReplace {
                family: NftFamily::Arp,
                ..
            }
        ),
        "{plan:?}"
    );
}

#[test]
fn switching_method_releases_the_old_one() {
    let mut obs = node();
    let mut state = RealServerState::default();
    let up = plan_up(&sysctl_desired(), &obs, &state).expect("plan");
    simulate(&mut obs, &up);
    record(&mut state, &up);
    let nft = desired(&[VIP], ArpMethod::Nft, Device::Loopback);
    let plan = plan_up(&nft, &obs, &state).expect("plan");
    let kinds: Vec<u8> = plan.changes.iter().map(Change::phase).collect();
    // nft table first, then the sysctls go back: suppression never lapses.
    assert_eq!(kinds, vec![3, 8, 8], "{plan:?}");
}

#[test]
fn removed_vip_is_unbound_and_kept_vip_untouched() {
    let two = desired(&[VIP, "192.0.2.101"], ArpMethod::Sysctl, Device::Loopback);
    let mut obs = node();
    let mut state = RealServerState::default();
    let up = plan_up(&two, &obs, &state).expect("plan");
    simulate(&mut obs, &up);
    record(&mut state, &up);
    let plan = plan_up(&sysctl_desired(), &obs, &state).expect("plan");
    assert_eq!(
        plan.changes,
        vec![Change::DelAddr {
            ifname: "lo".into(),
            ip: ip("192.0.2.101"),
            prefix: 32,
            label: Some("lo:rsagent".into()),
        }]
    );
}

#[test]
fn dummy_device_is_created_then_brought_up_before_the_vip() {
    let d = desired(&[VIP], ArpMethod::Sysctl, Device::Dummy("lvs0".into()));
    let plan = plan_up(&d, &node(), &RealServerState::default()).expect("plan");
    assert_eq!(
        plan.changes.first(),
        Some(&Change::CreateDummy {
            name: "lvs0".into()
        })
    );
    assert_eq!(plan.changes.last(), Some(&add_vip("lvs0", VIP)));
}

#[test]
fn input_errors_against_the_node() {
    let mut on_eth0 = node();
    on_eth0.addrs.push(addr("eth0", VIP, 24, 0));
    let mut veth_named_lvs0 = node();
    veth_named_lvs0.links.push(link(7, "lvs0", Some("veth")));
    let unknown_iface = RealServerDesired {
        interfaces: Some(vec!["nosuch0".into()]),
        ..sysctl_desired()
    };
    let no_rip = RealServerDesired {
        interfaces: Some(vec!["lo2".into()]),
        ..desired(&[VIP], ArpMethod::Nft, Device::Loopback)
    };
    let mut with_lo2 = node();
    with_lo2.links.push(link(8, "lo2", Some("veth")));
    let cases: Vec<(RealServerDesired, Observed, &str)> = vec![
        (
            desired(&[RIP], ArpMethod::Sysctl, Device::Loopback),
            node(),
            "VIP 192.0.2.11 is already an address of eth0",
        ),
        (sysctl_desired(), on_eth0, "already an address of eth0"),
        (
            desired(&[VIP], ArpMethod::Sysctl, Device::Dummy("lvs0".into())),
            veth_named_lvs0,
            "\"lvs0\" exists and is not a dummy device (kind veth)",
        ),
        (
            unknown_iface,
            node(),
            "interface \"nosuch0\" does not exist",
        ),
        (no_rip, with_lo2, "\"lo2\" has no IPv4 address"),
    ];
    for (d, obs, want) in cases {
        let err = plan_up(&d, &obs, &RealServerState::default()).expect_err(want);
        assert!(err.0.contains(want), "got {err}, want {want}");
    }
}

#[test]
fn auto_interfaces_skip_loopback_noarp_and_addressless_but_not_down() {
    let mut obs = node();
    let mut down = link(3, "eth1", Some("veth"));
    down.up = false;
    obs.links.push(down);
    obs.addrs.push(addr("eth1", "198.51.100.2", 24, 0));
    obs.links.push(link(4, "eth2", Some("veth")));
    obs.links.push(link(5, "dum0", Some("dummy")));
    obs.addrs.push(addr("dum0", "203.0.113.1", 24, 0));
    let lan = lan_interfaces(&sysctl_desired(), &obs);
    assert_eq!(lan.present, vec!["eth0".to_string(), "eth1".to_string()]);
}

/// An interface taken down keeps the suppression rs-agent set (a pass must not restore it):
/// brought up again, it would otherwise answer ARP for the VIP until the next pass.
#[test]
fn an_interface_taken_down_keeps_its_suppression() {
    let mut obs = node();
    let mut state = RealServerState::default();
    let up = plan_up(&sysctl_desired(), &obs, &state).expect("plan");
    simulate(&mut obs, &up);
    record(&mut state, &up);
    if let Some(eth0) = obs.links.iter_mut().find(|l| l.name == "eth0") {
        eth0.up = false;
    }
    let again = plan_up(&sysctl_desired(), &obs, &state).expect("plan");
    assert!(again.changes.is_empty(), "{:?}", again.changes);
}

/// Drift after `up`, one case per row: each must plan exactly the repair, and the repaired
/// node must then plan nothing (this is what `rs-agent run` does on every event and tick).
#[test]
fn drift_after_up_is_repaired_by_the_same_plan() {
    type Drift = fn(&mut Observed);
    let relabelled: Drift = |o| {
        for a in o.addrs.iter_mut().filter(|a| a.ip == ip(VIP)) {
            a.label = Some("lo:other".into());
            a.proto = 0;
        }
    };
    let cases: &[(&str, ArpMethod, Drift, &[&str])] = &[
        (
            "VIP deleted",
            ArpMethod::Sysctl,
            |o| o.addrs.retain(|a| a.ip != ip(VIP)),
            &["add address 192.0.2.100/32 to lo"],
        ),
        (
            "arp_ignore reset on all and eth0",
            ArpMethod::Sysctl,
            |o| {
                for iface in ["all", "eth0"] {
                    o.sysctls.insert((iface.into(), SysctlKey::ArpIgnore), 0);
                }
            },
            &["set net.ipv4.conf.eth0.arp_ignore 0 -> 1"],
        ),
        (
            "label changed",
            ArpMethod::Sysctl,
            relabelled,
            &["re-add address 192.0.2.100/32 to lo (label lo:other -> lo:rsagent)"],
        ),
        (
            "lo down",
            ArpMethod::Sysctl,
            |o| o.links.iter_mut().for_each(|l| l.up = l.name != "lo"),
            &["set link lo up"],
        ),
        (
            "nft table deleted",
            ArpMethod::Nft,
            |o| o.nft.arp = None,
            &["write nft table arp rs_agent:"],
        ),
    ];
    for (what, arp, drift, expected) in cases {
        let want = desired(&[VIP], *arp, Device::Loopback);
        let mut observed = node();
        let mut state = RealServerState::default();
        let up = plan_up(&want, &observed, &state).expect("plan");
        record(&mut state, &up);
        simulate(&mut observed, &up);
        assert_eq!(
            plan_up(&want, &observed, &state).expect("plan").changes,
            vec![]
        );
        drift(&mut observed);
        let repair = plan_up(&want, &observed, &state).expect("plan");
        let shown: Vec<String> = repair.changes.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), expected.len(), "{what}: {shown:?}");
        for (s, e) in shown.iter().zip(expected.iter()) {
            assert!(s.starts_with(e), "{what}: got {s:?}, want {e:?}");
        }
        record(&mut state, &repair);
        simulate(&mut observed, &repair);
        let again = plan_up(&want, &observed, &state).expect("plan");
        assert_eq!(again.changes, vec![], "{what}: not repaired in one pass");
    }
}

#[test]
fn hand_bound_vip_with_its_own_label_is_left_alone() {
    let mut observed = node();
    observed.addrs.push(Addr {
        label: Some("lo:mine".into()),
        ..addr("lo", VIP, 32, 0)
    });
    let plan = plan_up(&sysctl_desired(), &observed, &RealServerState::default()).expect("plan");
    assert!(
        plan.changes
            .iter()
            .all(|c| !matches!(c, Change::RelabelAddr { .. } | Change::AddAddr { .. })),
        "{:?}",
        plan.changes
    );
    // `up` says so, instead of nothing.
    assert_eq!(
        plan.warnings,
        vec![format!(
            "VIP {VIP} is already bound on lo by hand (label lo:mine); rs-agent leaves it as it \
             is (not its own: `down` keeps it)"
        )]
    );
}

const VIP2: &str = "192.0.2.101";

/// IPv4 VIPs bound on the VIP device whose ARP is suppressed neither by the effective
/// sysctls on every LAN interface nor by a drop rule in our nft table: a flux window.
fn unsuppressed_vips(observed: &Observed, device: &str, lan: &[&str]) -> Vec<IpAddr> {
    let by_sysctl = lan.iter().all(|iface| {
        let eff = |key| effective(&observed.sysctls, iface, key).unwrap_or(0);
        (1..=2).contains(&eff(SysctlKey::ArpIgnore)) && eff(SysctlKey::ArpAnnounce) == 2
    });
    observed
        .addrs_on(device)
        .filter_map(|a| match a.ip {
            IpAddr::V4(vip) if a.ip != ip("127.0.0.1") => Some(vip),
            _ => None,
        })
        .filter(|vip| {
            let dropped = observed
                .nft
                .arp
                .as_ref()
                .is_some_and(|r| r.contains(&NftRule::DropArpFor { vip: *vip }));
            !by_sysctl && !dropped
        })
        .map(IpAddr::V4)
        .collect()
}

/// `up` with one configuration, then `up` with the next (and finally `down`), applying each
/// plan one change at a time: after every single change each bound VIP is still suppressed.
#[test]
fn no_flux_window_after_any_single_change() {
    let nft = |vips: &[&str]| desired(vips, ArpMethod::Nft, Device::Loopback);
    let sysctl = |vips: &[&str]| desired(vips, ArpMethod::Sysctl, Device::Loopback);
    let sequences: Vec<Vec<RealServerDesired>> = vec![
        vec![nft(&[VIP, VIP2]), nft(&[VIP2])],
        vec![nft(&[VIP]), nft(&[VIP2])],
        vec![nft(&[VIP2]), nft(&[VIP, VIP2])],
        vec![sysctl(&[VIP, VIP2]), nft(&[VIP2])],
        vec![nft(&[VIP, VIP2]), sysctl(&[VIP])],
        vec![sysctl(&[VIP]), sysctl(&[VIP2])],
    ];
    for steps in sequences {
        let mut obs = node();
        let mut state = RealServerState::default();
        let mut plans: Vec<Plan> = Vec::new();
        for d in &steps {
            let plan = plan_up(d, &obs, &state).expect("plan");
            simulate(&mut obs, &plan);
            record(&mut state, &plan);
            plans.push(plan);
        }
        plans.push(plan_down(&state, &obs));
        let mut obs = node();
        for (i, plan) in plans.iter().enumerate() {
            for change in &plan.changes {
                simulate(
                    &mut obs,
                    &Plan {
                        changes: vec![change.clone()],
                        warnings: vec![],
                    },
                );
                let flux = unsuppressed_vips(&obs, "lo", &["eth0"]);
                assert!(
                    flux.is_empty(),
                    "{steps:?}, plan {i}: after `{change}` {flux:?} bound without suppression:\n{:#?}",
                    plan.changes
                );
            }
        }
    }
}

#[test]
fn removed_vip_is_unbound_before_its_nft_rules_go() {
    let mut obs = node();
    let mut state = RealServerState::default();
    let both = desired(&[VIP, VIP2], ArpMethod::Nft, Device::Loopback);
    let up = plan_up(&both, &obs, &state).expect("plan");
    simulate(&mut obs, &up);
    record(&mut state, &up);
    let one = desired(&[VIP2], ArpMethod::Nft, Device::Loopback);
    let plan = plan_up(&one, &obs, &state).expect("plan");
    let shown: Vec<String> = plan.changes.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert_eq!(shown[0], "remove address 192.0.2.100/32 from lo");
    assert!(
        shown[1].starts_with("write nft table arp rs_agent:"),
        "{shown:?}"
    );
    assert!(!shown[1].contains("192.0.2.100 "), "{shown:?}");
}

/// [`node`] with a second LAN interface eth1 (198.51.100.2/24), after `up` of `want`: the
/// node as observed and the state file.
fn up_with_eth1(want: &RealServerDesired) -> (Observed, RealServerState) {
    let mut obs = node();
    obs.links.push(link(3, "eth1", Some("veth")));
    obs.addrs.push(addr("eth1", "198.51.100.2", 24, 0));
    for key in SysctlKey::ALL {
        obs.sysctls.insert(("eth1".into(), key), 0);
    }
    let mut state = RealServerState {
        desired: Some(want.clone()),
        ..RealServerState::default()
    };
    let up = plan_up(want, &obs, &state).expect("plan");
    simulate(&mut obs, &up);
    record(&mut state, &up);
    (obs, state)
}

/// A listed interface that rs-agent configured and that then disappeared: the pass skips it
/// with a warning and still repairs the rest (a deleted VIP); one never configured is an
/// input error (a typo), nothing touched.
#[test]
fn vanished_listed_interface_is_skipped_and_the_rest_repaired() {
    for arp in [ArpMethod::Sysctl, ArpMethod::Nft] {
        let want = RealServerDesired {
            interfaces: Some(vec!["eth0".into(), "eth1".into()]),
            ..desired(&[VIP], arp, Device::Loopback)
        };
        let (mut obs, state) = up_with_eth1(&want);
        obs.links.retain(|l| l.name != "eth1");
        obs.addrs.retain(|a| a.ifname != "eth1");
        obs.sysctls.retain(|(iface, _), _| iface != "eth1");
        obs.addrs.retain(|a| a.ip != ip(VIP));
        let repair = plan_up(&want, &obs, &state).expect("a missing interface must not fail");
        assert!(
            repair.changes.contains(&add_vip("lo", VIP)),
            "{arp}: {repair:?}"
        );
        assert!(
            repair.warnings.iter().any(|w| w.contains("\"eth1\"")),
            "{arp}: {:?}",
            repair.warnings
        );
        simulate(&mut obs, &repair);
        let again = plan_up(&want, &obs, &state).expect("plan");
        assert_eq!(again.changes, vec![], "{arp}");
    }
}

/// A LAN interface that loses its IPv4 address (a DHCP renewal, `ip addr flush`) after `up`:
/// listed or auto-detected, with either method, it keeps its suppression (sysctls not
/// restored, the nft mangle rule kept with the last RIP) and a deleted VIP is still repaired
/// — a missing RIP must not stop every repair, nor lift suppression. Never configured, it is
/// bad input as before.
#[test]
fn an_interface_that_loses_its_address_keeps_its_suppression() {
    for arp in [ArpMethod::Sysctl, ArpMethod::Nft] {
        for listed in [false, true] {
            let want = RealServerDesired {
                interfaces: listed.then(|| vec!["eth0".into(), "eth1".into()]),
                ..desired(&[VIP], arp, Device::Loopback)
            };
            let (mut obs, state) = up_with_eth1(&want);
            obs.addrs.retain(|a| a.ifname != "eth1" && a.ip != ip(VIP));
            let case = format!("{arp}, listed {listed}");
            let repair = plan_up(&want, &obs, &state).expect(&case);
            assert_eq!(repair.changes, vec![add_vip("lo", VIP)], "{case}");
            if arp == ArpMethod::Nft {
                assert!(
                    repair
                        .warnings
                        .iter()
                        .any(|w| w.contains("\"eth1\"") && w.contains("198.51.100.2")),
                    "{case}: {:?}",
                    repair.warnings
                );
            }
            // Never configured by rs-agent: refused as before.
            if listed && arp == ArpMethod::Nft {
                let err = plan_up(&want, &obs, &RealServerState::default())
                    .expect_err("an addressless interface never configured");
                assert!(err.0.contains("has no IPv4 address"), "{err}");
            }
        }
    }
}

/// A VIP whose duplicate address detection failed is not bound: ours is re-added (without
/// DAD) in one pass, someone else's is left alone, a tentative one is waited for.
#[test]
fn dad_failed_vip_is_re_added_only_when_ours() {
    use crate::model::Dad;
    let d = desired(&[VIP6], ArpMethod::Sysctl, Device::Loopback);
    let rows = [
        (ADDR_PROTO, Dad::Failed, true),
        (0, Dad::Failed, false),
        (ADDR_PROTO, Dad::Tentative, false),
        (ADDR_PROTO, Dad::Done, false),
    ];
    for (proto, dad, re_added) in rows {
        let mut observed = node();
        observed.addrs.push(Addr {
            dad,
            ..addr("lo", VIP6, 128, proto)
        });
        let plan = plan_up(&d, &observed, &RealServerState::default()).expect("plan");
        let want = Change::ReAddAddr {
            ifname: "lo".into(),
            ip: ip(VIP6),
            prefix: 128,
            label: None,
        };
        let changes: Vec<&Change> = plan
            .changes
            .iter()
            .filter(|c| matches!(c, Change::AddAddr { .. } | Change::ReAddAddr { .. }))
            .collect();
        let expected: Vec<&Change> = if re_added { vec![&want] } else { vec![] };
        assert_eq!(changes, expected, "proto {proto:#x}, {dad:?}");
        simulate(&mut observed, &plan);
        let again = plan_up(&d, &observed, &RealServerState::default()).expect("plan");
        assert!(
            !again
                .changes
                .iter()
                .any(|c| matches!(c, Change::ReAddAddr { .. })),
            "proto {proto:#x}, {dad:?}: re-added twice"
        );
    }
}

/// A node that is both director and real server: director mode marks its VIPs on the LAN
/// interface with the same IFA_PROTO. The real server's `up` and `down` leave them alone; a
/// marked VIP on `lo` is removed only when this journal records it (without, it is another
/// state directory's rs-agent's).
#[test]
fn director_vips_on_the_lan_interface_are_not_the_real_servers() {
    let mut obs = node();
    obs.addrs.push(addr("eth0", "192.0.2.200", 32, ADDR_PROTO));
    obs.addrs.push(addr("lo", "192.0.2.201", 32, ADDR_PROTO));
    let director_vip = ip("192.0.2.200");
    let removes = |plan: &Plan, vip: IpAddr| {
        plan.changes
            .iter()
            .any(|c| matches!(c, Change::DelAddr { ip, .. } if *ip == vip))
    };
    let unrecorded = RealServerState::default();
    let mut recorded = RealServerState::default();
    recorded.record(&Change::AddAddr {
        ifname: "lo".into(),
        ip: ip("192.0.2.201"),
        prefix: 32,
        label: Some("lo:rsagent".into()),
    });
    for (state, theirs) in [(&unrecorded, false), (&recorded, true)] {
        let up = plan_up(&sysctl_desired(), &obs, state).expect("plan");
        assert!(!removes(&up, director_vip), "{:?}", up.changes);
        assert_eq!(removes(&up, ip("192.0.2.201")), theirs, "{:?}", up.changes);
        let down = plan_down(state, &obs);
        assert!(!removes(&down, director_vip), "{:?}", down.changes);
        assert_eq!(
            removes(&down, ip("192.0.2.201")),
            theirs,
            "{:?}",
            down.changes
        );
    }
}

/// Moving the VIPs to another device (lo → dummy → lo) is a plan, not a refusal: rs-agent's
/// own VIP on the old device is removed by the same plan that binds it on the new one.
#[test]
fn moving_the_vip_device_moves_the_vips() {
    let mut obs = node();
    let mut state = RealServerState::default();
    let on_lo = sysctl_desired();
    let on_dummy = desired(&[VIP], ArpMethod::Sysctl, Device::Dummy("lvs0".into()));
    for (step, d) in [&on_lo, &on_dummy, &on_lo].into_iter().enumerate() {
        let plan = plan_up(d, &obs, &state).unwrap_or_else(|e| panic!("step {step}: {e}"));
        simulate(&mut obs, &plan);
        record(&mut state, &plan);
        let device = d.device.name();
        let holders: Vec<&str> = obs
            .addrs
            .iter()
            .filter(|a| a.ip == ip(VIP))
            .map(|a| a.ifname.as_str())
            .collect();
        assert_eq!(holders, [device], "step {step}: {:?}", plan.changes);
        let again = plan_up(d, &obs, &state).expect("plan");
        assert!(again.changes.is_empty(), "step {step}: {:?}", again.changes);
    }
}

/// An IPv6 VIP someone bound on the VIP device with a subnet prefix: adding the /128 would
/// fail in the kernel (one prefix per IPv6 address and device), so it is refused up front.
#[test]
fn ipv6_vip_on_the_device_with_another_prefix_is_refused() {
    let mut obs = node();
    obs.addrs.push(addr("lo", "2001:db8::100", 64, 0));
    let d = desired(&["2001:db8::100"], ArpMethod::Sysctl, Device::Loopback);
    let err = plan_up(&d, &obs, &RealServerState::default()).expect_err("refused");
    assert!(
        err.0.contains("ip addr del 2001:db8::100/64 dev lo"),
        "{err}"
    );
}

/// The journal after `up` with the VIP on `device` (the dummy, when it is not lo).
fn journal_after_up(device: Device) -> (Observed, RealServerState) {
    let mut observed = node();
    let mut state = RealServerState::default();
    let want = desired(&[VIP], ArpMethod::Sysctl, device);
    if let Device::Dummy(name) = &want.device {
        observed.links.push(link(9, name, Some("dummy")));
    }
    let up = plan_up(&want, &observed, &state).expect("plan");
    record(&mut state, &up);
    simulate(&mut observed, &up);
    state.desired = Some(want);
    if let Device::Dummy(name) = &state.desired.as_ref().expect("set").device {
        state.dummy = Some(name.clone());
    }
    (observed, state)
}

/// Someone deleted rs-agent's VIP and put it back by hand: it lacks the marker, `status`
/// calls it not rs-agent's, and `down` leaves it (it still restores the sysctls).
#[test]
fn down_leaves_a_vip_re_added_by_hand() {
    let (mut observed, state) = journal_after_up(Device::Loopback);
    for a in observed.addrs.iter_mut().filter(|a| a.ip == ip(VIP)) {
        a.proto = 0;
        a.label = Some("lo:0".into());
    }
    let down = plan_down(&state, &observed);
    assert!(
        !down
            .changes
            .iter()
            .any(|c| matches!(c, Change::DelAddr { .. })),
        "{:?}",
        down.changes
    );
    assert!(down
        .changes
        .iter()
        .any(|c| matches!(c, Change::RestoreSysctl { .. })));
}

/// The journal names a dummy device, but the device of that name is a veth now (replaced,
/// or the journal is stale or forged): `down` deletes no device, and says why.
#[test]
fn down_deletes_no_device_that_is_not_a_dummy() {
    let (mut observed, state) = journal_after_up(Device::Dummy("lvs0".into()));
    for l in observed.links.iter_mut().filter(|l| l.name == "lvs0") {
        l.kind = Some("veth".into());
    }
    observed.addrs.retain(|a| a.ifname != "lvs0");
    observed.addrs.push(addr("lvs0", "198.51.100.7", 24, 0));
    let down = plan_down(&state, &observed);
    assert!(
        !down
            .changes
            .iter()
            .any(|c| matches!(c, Change::DeleteDummy { .. } | Change::DelAddr { .. })),
        "{:?}",
        down.changes
    );
    assert!(
        down.warnings.iter().any(|w| w.contains("kind veth")),
        "{:?}",
        down.warnings
    );
    // The uplink named as the dummy by a forged journal.
    let forged = RealServerState {
        dummy: Some("eth0".into()),
        ..state
    };
    let down = plan_down(&forged, &observed);
    assert!(!down
        .changes
        .iter()
        .any(|c| matches!(c, Change::DeleteDummy { .. })));
}

/// Our dummy, put to use by someone (an address of theirs on it): only our VIP goes, the
/// device stays. With only our VIPs and the kernel's link-local address it is deleted.
#[test]
fn down_deletes_the_dummy_only_while_it_holds_nothing_of_anyone_else() {
    let (mut observed, state) = journal_after_up(Device::Dummy("lvs0".into()));
    observed.addrs.push(addr("lvs0", "fe80::1", 64, 0));
    let down = plan_down(&state, &observed);
    assert!(
        down.changes
            .iter()
            .any(|c| matches!(c, Change::DeleteDummy { name } if name == "lvs0")),
        "{:?}",
        down.changes
    );
    observed.addrs.push(addr("lvs0", "198.51.100.7", 24, 0));
    let down = plan_down(&state, &observed);
    let shown: Vec<String> = down.changes.iter().map(ToString::to_string).collect();
    assert!(
        !down
            .changes
            .iter()
            .any(|c| matches!(c, Change::DeleteDummy { .. })),
        "{shown:?}"
    );
    assert!(
        shown
            .iter()
            .any(|c| c.starts_with("remove address 192.0.2.100/32 from lvs0")),
        "{shown:?}"
    );
    assert!(
        down.warnings.iter().any(|w| w.contains("198.51.100.7/24")),
        "{:?}",
        down.warnings
    );
}

/// Someone adds one VIP to eth0 and deletes the nft table (issue #17): `up` refuses, but a
/// repair rewrites the table with both VIPs' rules and binds what it can, with a warning
/// naming the VIP in the way — the other VIP must not be left answering ARP.
#[test]
fn a_repair_goes_on_around_a_vip_someone_else_bound() {
    for arp in [ArpMethod::Nft, ArpMethod::Sysctl] {
        let want = desired(&[VIP, VIP2], arp, Device::Loopback);
        let mut observed = node();
        let mut state = RealServerState::default();
        let up = plan_up(&want, &observed, &state).expect("plan");
        record(&mut state, &up);
        simulate(&mut observed, &up);
        observed.addrs.push(addr("eth0", VIP, 32, 0));
        observed.addrs.retain(|a| a.ip != ip(VIP2));
        observed.nft.arp = None;
        for iface in ["all", "eth0"] {
            observed
                .sysctls
                .insert((iface.into(), SysctlKey::ArpAnnounce), 0);
        }
        assert!(
            plan_up(&want, &observed, &state).is_err(),
            "{arp}: up must refuse"
        );
        let repair = plan_repair(&want, &observed, &state).expect("repair plans");
        let shown: Vec<String> = repair.changes.iter().map(ToString::to_string).collect();
        assert!(
            shown
                .iter()
                .any(|c| c.starts_with("add address 192.0.2.101/32 to lo")),
            "{arp}: {shown:?}"
        );
        assert!(
            !shown.iter().any(|c| c.contains("192.0.2.100/32 to")),
            "{arp}: {shown:?}"
        );
        match arp {
            ArpMethod::Nft => {
                let rules = repair.changes.iter().find_map(|c| match c {
                    Change::NftReplace { rules, .. } => Some(rules),
                    _ => None,
                });
                let rules = rules.expect("the table is rewritten");
                for vip in [VIP, VIP2] {
                    assert!(
                        rules.contains(&NftRule::DropArpFor { vip: v4(vip) }),
                        "{rules:?}"
                    );
                }
            }
            ArpMethod::Sysctl => assert!(
                shown
                    .iter()
                    .any(|c| c.starts_with("set net.ipv4.conf.eth0.arp_announce 0 -> 2")),
                "{shown:?}"
            ),
        }
        assert!(
            repair
                .warnings
                .iter()
                .any(|w| w.contains("VIP 192.0.2.100 is already an address of eth0")),
            "{arp}: {:?}",
            repair.warnings
        );
    }
}

/// A kernel before 5.18 reports no IFA_PROTO: rs-agent's IPv4 VIPs still carry its label,
/// which is then the mark `down` checks (a VIP re-added by hand has another label).
#[test]
fn down_on_a_kernel_without_ifa_proto_goes_by_the_label() {
    let (mut observed, state) = journal_after_up(Device::Loopback);
    for a in observed.addrs.iter_mut().filter(|a| a.ip == ip(VIP)) {
        a.proto = 0;
        assert_eq!(a.label.as_deref(), Some("lo:rsagent"));
    }
    let down = plan_down(&state, &observed);
    assert!(
        down.changes
            .iter()
            .any(|c| matches!(c, Change::DelAddr { ip: a, .. } if *a == ip(VIP))),
        "{:?}",
        down.changes
    );
}
