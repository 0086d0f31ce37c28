//! `status`: does the node *effectively* keep its VIPs off ARP? Judged from the kernel's
//! effective values and rules, not from whether some sysctl was written.

use super::model::{Device, RealServerDesired};
use super::plan::{lan_interfaces, PlanError};
use crate::model::{
    effective, suppresses_arp, Addr, Change, Dad, NftFamily, NftRule, Observed, SysctlKey,
    NFT_TABLE,
};
use crate::state_dir::OwnedAddrs;
use serde::Serialize;
use std::net::IpAddr;

#[derive(Debug, Clone, Serialize)]
pub struct VipStatus {
    pub vip: IpAddr,
    /// Where the VIP is bound, as `ifname/prefix`.
    pub bound_on: Vec<String>,
    pub bound: bool,
    /// Bound by rs-agent (carries its marker).
    pub owned: bool,
    /// How ARP/NDP for the VIP is kept off each LAN interface.
    pub suppression: Vec<String>,
    pub suppressed: bool,
    /// Per LAN interface, whether ARP for the VIP is kept off it: the judgement `suppressed`
    /// sums up, for the metrics' per-interface gauge. An IPv6 VIP's neighbour advertisements
    /// are judged for the node as a whole, so every interface gets that one verdict.
    #[serde(skip)]
    pub suppressed_on: Vec<(String, bool)>,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub arp_ignore: Option<i64>,
    pub arp_announce: Option<i64>,
    pub rp_filter: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub ok: bool,
    pub desired: RealServerDesired,
    pub lan_interfaces: Vec<InterfaceStatus>,
    pub vips: Vec<VipStatus>,
    pub warnings: Vec<String>,
    /// Problems of the node rather than of one VIP (each makes the verdict NOT OK).
    pub problems: Vec<String>,
    /// What `rs-agent up` would change now (drift), or why it could not.
    pub pending: Vec<String>,
    /// The drain flag (`rs-agent drain`) is set: /health answers 503 where it is served.
    #[serde(default)]
    pub drained: bool,
}

/// One binding of a VIP as `status` shows it: where, and whose — rs-agent's when it carries the
/// mark on the VIP device and the journal (when there is one to ask) records it, as `down`
/// judges; an address on another interface, or without the mark, is not.
fn binding(a: &Addr, device: &str, journal: Option<&OwnedAddrs>) -> String {
    let dad = match a.dad {
        Dad::Done => "",
        Dad::Tentative => ", tentative",
        Dad::Failed => ", dadfailed",
    };
    let recorded = journal.is_none_or(|j| j.owns(&a.ifname, &a.ip));
    let whose = match (a.carries_mark() && a.ifname == device, &a.label) {
        (true, _) if recorded => "rs-agent".to_string(),
        (true, _) => "marked, but not in this state directory's journal".to_string(),
        (false, Some(label)) if label != &a.ifname => format!("not rs-agent's, label {label}"),
        (false, _) => "not rs-agent's".to_string(),
    };
    format!("{}/{} ({whose}{dad})", a.ifname, a.prefix)
}

fn interface_status(observed: &Observed, name: &str) -> InterfaceStatus {
    let eff = |key| effective(&observed.sysctls, name, key);
    InterfaceStatus {
        name: name.to_string(),
        arp_ignore: eff(SysctlKey::ArpIgnore),
        arp_announce: eff(SysctlKey::ArpAnnounce),
        rp_filter: eff(SysctlKey::RpFilter),
    }
}

fn nft_has(observed: &Observed, rule: &NftRule) -> bool {
    observed
        .nft
        .table(rule.family())
        .is_some_and(|rules| rules.contains(rule))
}

/// Why neighbours may learn this node's MAC for a VIP: nothing keeps its ARP or neighbour
/// advertisements off a LAN interface.
#[derive(Debug, thiserror::Error)]
enum Unsuppressed {
    #[error(
        "ARP for {vip} is not suppressed on {iface} (arp_ignore={ignore}, arp_announce={announce} \
         effective{}, no matching rs_agent nft rules; the sysctls suppress only with arp_ignore 1 or 2 \
         and arp_announce 2): neighbours may learn this node's MAC for the VIP",
        if *vip_on_iface { ", and the VIP is on this interface" } else { "" }
    )]
    Arp {
        vip: std::net::Ipv4Addr,
        iface: String,
        ignore: i64,
        announce: i64,
        vip_on_iface: bool,
    },
    #[error("{vip} is on a LAN interface and nothing drops neighbour advertisements for it")]
    Nd { vip: std::net::Ipv6Addr },
}

/// How (or whether) ARP for an IPv4 VIP is suppressed on one LAN interface. The nft rules
/// count only as `up` writes them: a rewrite rule naming an old RIP is not suppression.
fn v4_suppression(
    observed: &Observed,
    vips: &[IpAddr],
    vip: std::net::Ipv4Addr,
    iface: &InterfaceStatus,
    vip_on_iface: bool,
) -> Result<String, Unsuppressed> {
    let ignore = iface.arp_ignore.unwrap_or(0);
    let announce = iface.arp_announce.unwrap_or(0);
    let by_sysctl = suppresses_arp(SysctlKey::ArpIgnore, ignore)
        && suppresses_arp(SysctlKey::ArpAnnounce, announce);
    if !vip_on_iface && by_sysctl {
        return Ok(format!(
            "{}: sysctl (arp_ignore={ignore}, arp_announce={announce} effective)",
            iface.name
        ));
    }
    let drop = NftRule::DropArpFor { vip };
    let mangles = observed.primary_v4(&iface.name, vips).is_some_and(|rip| {
        let mangle = NftRule::MangleArpFrom {
            iface: iface.name.clone(),
            vip,
            rip,
        };
        nft_has(observed, &mangle)
    });
    if nft_has(observed, &drop) && mangles {
        return Ok(format!("{}: nft table arp rs_agent", iface.name));
    }
    Err(Unsuppressed::Arp {
        vip,
        iface: iface.name.clone(),
        ignore,
        announce,
        vip_on_iface,
    })
}

fn v6_suppression(
    observed: &Observed,
    vip: std::net::Ipv6Addr,
    on_device_only: bool,
    device: &str,
) -> Result<String, Unsuppressed> {
    if on_device_only {
        return Ok(format!(
            "{device}: silent by design (Linux answers neighbour solicitations only for \
             addresses on the receiving interface)"
        ));
    }
    let rules = [NftRule::DropNsFor { vip }, NftRule::DropNaFor { vip }];
    if rules.iter().all(|r| nft_has(observed, r)) {
        return Ok("nft table ip6 rs_agent drops NS/NA for it".to_string());
    }
    Err(Unsuppressed::Nd { vip })
}

/// Why a VIP on its device is not usable (tentative, or its duplicate address detection
/// failed; neither happens on `lo` or a dummy device, which skip DAD), and the fix.
fn unusable_vip(a: &Addr) -> String {
    let problem = a.dad.problem().unwrap_or_default();
    let fix = match (a.dad, a.is_ours()) {
        (Dad::Failed, true) => "; `rs-agent up` adds it again without DAD".to_string(),
        (Dad::Failed, false) => format!(
            "; it is not rs-agent's: remove it (ip addr del {}/{} dev {}) and run `rs-agent up`",
            a.ip, a.prefix, a.ifname
        ),
        _ => String::new(),
    };
    format!("{}/{} on {}: {problem}{fix}", a.ip, a.prefix, a.ifname)
}

fn vip_status(
    desired: &RealServerDesired,
    observed: &Observed,
    journal: Option<&OwnedAddrs>,
    lan: &[InterfaceStatus],
    vip: IpAddr,
) -> VipStatus {
    let device = desired.device.name();
    let on: Vec<_> = observed.addrs.iter().filter(|a| a.ip == vip).collect();
    let host_on_device: Vec<_> = on
        .iter()
        .filter(|a| a.ifname == device && a.is_host())
        .collect();
    let bound = host_on_device.iter().any(|a| a.is_usable());
    let mut problems = Vec::new();
    if !bound {
        problems.push(match host_on_device.first() {
            Some(a) => unusable_vip(a),
            None => format!("{vip} is not bound as a host address on {device}"),
        });
    }
    for wide in on.iter().filter(|a| !a.is_host() && a.ifname == device) {
        problems.push(format!(
            "{vip}/{} on {device} is wider than a host address: the node then treats the whole \
             subnet as its own and drops traffic to its neighbours; use /{}",
            wide.prefix,
            crate::model::host_prefix(&vip)
        ));
    }
    let mut suppression = Vec::new();
    let mut unsuppressed = false;
    let mut record = |r: Result<String, Unsuppressed>| match r {
        Ok(s) => {
            suppression.push(s);
            true
        }
        Err(p) => {
            unsuppressed = true;
            problems.push(p.to_string());
            false
        }
    };
    let suppressed_on: Vec<(String, bool)> = match vip {
        IpAddr::V4(v4) => lan
            .iter()
            .map(|iface| {
                let vip_on_iface = on.iter().any(|a| a.ifname == iface.name);
                let judged = v4_suppression(observed, &desired.vips, v4, iface, vip_on_iface);
                (iface.name.clone(), record(judged))
            })
            .collect(),
        IpAddr::V6(v6) => {
            let only_device = on.iter().all(|a| a.ifname == device);
            let ok = record(v6_suppression(observed, v6, only_device, device));
            lan.iter().map(|iface| (iface.name.clone(), ok)).collect()
        }
    };
    let suppressed = !unsuppressed;
    VipStatus {
        vip,
        bound_on: on.iter().map(|a| binding(a, device, journal)).collect(),
        bound,
        owned: on.iter().any(|a| {
            a.ifname == device
                && a.carries_mark()
                && journal.is_none_or(|j| j.owns(&a.ifname, &a.ip))
        }),
        suppression,
        suppressed,
        suppressed_on,
        problems,
    }
}

/// The verdict. `pending` is the plan `up` would apply now (or why it cannot be planned).
pub fn evaluate(
    desired: &RealServerDesired,
    observed: &Observed,
    pending: Result<Vec<Change>, PlanError>,
) -> StatusReport {
    evaluate_with(desired, observed, None, pending)
}

/// [`evaluate`], judging whose each binding is against the journal too (`status` with a
/// state directory): a marked VIP another state directory's rs-agent made is not this one's.
pub fn evaluate_with(
    desired: &RealServerDesired,
    observed: &Observed,
    journal: Option<&OwnedAddrs>,
    pending: Result<Vec<Change>, PlanError>,
) -> StatusReport {
    let mut warnings = Vec::new();
    let mut problems = Vec::new();
    let names = lan_interfaces(desired, observed);
    for name in &names.missing {
        problems.push(format!(
            "interface \"{name}\" is listed in the configuration but does not exist on this \
             node; restore it, or remove it from the configuration"
        ));
    }
    let lan: Vec<InterfaceStatus> = names
        .present
        .iter()
        .map(|n| interface_status(observed, n))
        .collect();
    if lan.len() > 1 {
        for iface in lan.iter().filter(|i| i.rp_filter == Some(1)) {
            warnings.push(format!(
                "rp_filter=1 (strict) on {}: with several LAN interfaces, packets for a VIP \
                 arriving on one whose route back leaves by another are dropped; use \
                 rp_filter=2 (loose) there",
                iface.name
            ));
        }
    }
    for iface in lan.iter().filter(|i| i.arp_ignore == Some(8)) {
        problems.push(format!(
            "arp_ignore=8 (effective) on {}: the node answers no ARP there, not even for its \
             own address; use 1 (what `rs-agent up --arp sysctl` sets)",
            iface.name
        ));
    }
    for family in [NftFamily::Arp, NftFamily::Ip6] {
        let foreign: Vec<String> = observed
            .nft
            .table(family)
            .into_iter()
            .flatten()
            .filter_map(|r| match r {
                NftRule::Unknown { text } => Some(text.clone()),
                _ => None,
            })
            .collect();
        if !foreign.is_empty() {
            problems.push(format!(
                "nft table {family} {NFT_TABLE} holds what rs-agent did not write ({}); \
                 `rs-agent up` rewrites it",
                foreign.join("; ")
            ));
        }
    }
    if let Device::Dummy(name) = &desired.device {
        if observed.link(name).is_some_and(|l| !l.up) {
            warnings.push(format!(
                "device {name} is down: the VIPs on it do not accept traffic"
            ));
        }
    }
    let vips: Vec<VipStatus> = desired
        .vips
        .iter()
        .map(|vip| vip_status(desired, observed, journal, &lan, *vip))
        .collect();
    let pending = match pending {
        Ok(changes) => changes.iter().map(ToString::to_string).collect(),
        Err(e) => vec![format!("cannot plan: {e}")],
    };
    StatusReport {
        // Anything `up` would still change is drift, even when ARP happens to be suppressed.
        ok: problems.is_empty() && pending.is_empty() && vips.iter().all(|v| v.problems.is_empty()),
        desired: desired.clone(),
        lan_interfaces: lan,
        vips,
        warnings,
        problems,
        pending,
        drained: false,
    }
}

impl StatusReport {
    pub fn print(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let d = &self.desired;
        let lan: Vec<&str> = self
            .lan_interfaces
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        writeln!(
            out,
            "real server: device {}, ARP method {}, LAN interfaces: {}",
            d.device.name(),
            d.arp,
            if lan.is_empty() {
                "none".to_string()
            } else {
                lan.join(", ")
            }
        )?;
        for i in &self.lan_interfaces {
            let v = |x: Option<i64>| x.map_or("?".to_string(), |x| x.to_string());
            writeln!(
                out,
                "  {}: arp_ignore={} arp_announce={} rp_filter={} (effective)",
                i.name,
                v(i.arp_ignore),
                v(i.arp_announce),
                v(i.rp_filter)
            )?;
        }
        // A VIP is OK only on a node that is: lo down, a foreign rule in our table or a
        // pending repair concern every VIP, and the line must not say OK above a NOT OK.
        let node_fine = self.problems.is_empty() && self.pending.is_empty();
        for v in &self.vips {
            let verdict = match (v.problems.is_empty(), node_fine) {
                (true, true) => "OK",
                (true, false) => "NOT OK (the node's problems below)",
                (false, _) => "NOT OK",
            };
            let on = if v.bound_on.is_empty() {
                "nowhere".to_string()
            } else {
                v.bound_on.join(", ")
            };
            writeln!(out, "VIP {}: {verdict}: bound on {on}", v.vip)?;
            for s in &v.suppression {
                writeln!(out, "  suppressed on {s}")?;
            }
            for p in &v.problems {
                writeln!(out, "  problem: {p}")?;
            }
        }
        for p in &self.problems {
            writeln!(out, "problem: {p}")?;
        }
        for w in &self.warnings {
            writeln!(out, "warning: {w}")?;
        }
        if self.drained {
            writeln!(
                out,
                "drained: the drain flag is set (/health answers 503); `rs-agent undrain` clears it"
            )?;
        }
        if !self.pending.is_empty() {
            writeln!(out, "`rs-agent up` would:")?;
            for p in &self.pending {
                writeln!(out, "  {p}")?;
            }
        }
        let verdict = if self.ok {
            "OK: the node is correctly configured"
        } else {
            "NOT OK: the node is not correctly configured"
        };
        writeln!(out, "{verdict}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Addr, NftObserved, ADDR_PROTO};
    use crate::real_server::model::ArpMethod;
    use crate::testing::{addr, default_sysctls, ip, link};

    const VIP: &str = "192.0.2.100";

    /// The problems as docs/troubleshooting.md quotes them.
    #[test]
    fn unsuppressed_messages_name_the_interface_and_the_effective_values() {
        let arp = |vip_on_iface| Unsuppressed::Arp {
            vip: VIP.parse().expect("v4"),
            iface: "eth0".into(),
            ignore: 0,
            announce: 0,
            vip_on_iface,
        };
        let rest = ", no matching rs_agent nft rules; the sysctls suppress only with arp_ignore 1 \
                    or 2 and arp_announce 2): neighbours may learn this node's MAC for the VIP";
        assert_eq!(
            arp(false).to_string(),
            format!("ARP for 192.0.2.100 is not suppressed on eth0 (arp_ignore=0, arp_announce=0 effective{rest}")
        );
        assert_eq!(
            arp(true).to_string(),
            format!(
                "ARP for 192.0.2.100 is not suppressed on eth0 (arp_ignore=0, arp_announce=0 \
                 effective, and the VIP is on this interface{rest}"
            )
        );
        let nd = Unsuppressed::Nd {
            vip: "2001:db8::100".parse().expect("v6"),
        };
        assert_eq!(
            nd.to_string(),
            "2001:db8::100 is on a LAN interface and nothing drops neighbour advertisements for it"
        );
    }

    /// A real server after `up --arp sysctl`: VIP on lo, eth0 at arp_ignore 1, arp_announce 2.
    fn configured() -> (RealServerDesired, Observed) {
        let mut sysctls = default_sysctls(&["all", "lo", "eth0"]);
        sysctls.insert(("eth0".into(), SysctlKey::ArpIgnore), 1);
        sysctls.insert(("eth0".into(), SysctlKey::ArpAnnounce), 2);
        let observed = Observed {
            links: vec![link(1, "lo", None), link(2, "eth0", Some("veth"))],
            addrs: vec![
                addr("lo", "127.0.0.1", 8, 0),
                addr("lo", VIP, 32, ADDR_PROTO),
                addr("eth0", "198.51.100.2", 24, 0),
            ],
            sysctls,
            nft: NftObserved::default(),
        };
        let desired = RealServerDesired {
            vips: vec![ip(VIP)],
            device: Device::Loopback,
            arp: ArpMethod::Sysctl,
            interfaces: None,
        };
        (desired, observed)
    }

    fn report(desired: &RealServerDesired, observed: &Observed) -> StatusReport {
        evaluate(desired, observed, Ok(vec![]))
    }

    /// Whose a binding is, as `down` judges it: the mark and this journal's record.
    #[test]
    fn a_marked_vip_another_journal_made_is_not_shown_as_ours() {
        let (d, o) = configured();
        let mut journal = OwnedAddrs::default();
        let ours = evaluate_with(&d, &o, Some(&journal), Ok(vec![]));
        assert_eq!(
            ours.vips[0].bound_on,
            vec!["lo/32 (marked, but not in this state directory's journal)".to_string()]
        );
        assert!(!ours.vips[0].owned);
        journal.record(&Change::AddAddr {
            ifname: "lo".into(),
            ip: ip(VIP),
            prefix: 32,
            label: None,
        });
        let ours = evaluate_with(&d, &o, Some(&journal), Ok(vec![]));
        assert_eq!(ours.vips[0].bound_on, vec!["lo/32 (rs-agent)".to_string()]);
        assert!(ours.vips[0].owned);
    }

    /// The per-interface verdicts the metrics give are the ones the VIP's verdict sums up.
    #[test]
    fn suppression_is_judged_per_lan_interface() {
        let (mut d, mut o) = configured();
        o.links.push(link(3, "eth1", Some("veth")));
        o.addrs.push(addr("eth1", "203.0.113.2", 24, 0));
        o.sysctls.extend(default_sysctls(&["eth1"]));
        let r = report(&d, &o);
        let on = |r: &StatusReport| r.vips[0].suppressed_on.clone();
        assert_eq!(
            on(&r),
            vec![("eth0".to_string(), true), ("eth1".to_string(), false)]
        );
        assert!(!r.vips[0].suppressed);
        o.sysctls.insert(("eth1".into(), SysctlKey::ArpIgnore), 2);
        o.sysctls.insert(("eth1".into(), SysctlKey::ArpAnnounce), 2);
        let r = report(&d, &o);
        assert!(
            on(&r).iter().all(|(_, ok)| *ok) && r.vips[0].suppressed,
            "{r:?}"
        );
        // An IPv6 VIP only on its device is silent by design, on every interface.
        d.vips = vec![ip("2001:db8::100")];
        o.addrs.push(addr("lo", "2001:db8::100", 128, ADDR_PROTO));
        let r = report(&d, &o);
        assert_eq!(on(&r).len(), 2);
        assert!(on(&r).iter().all(|(_, ok)| *ok), "{r:?}");
    }

    #[test]
    fn configured_node_is_ok() {
        let (d, o) = configured();
        let r = report(&d, &o);
        assert!(r.ok, "{r:?}");
    }

    /// Effective values that look "higher" but do not suppress ARP are NOT OK.
    #[test]
    fn only_ignore_1_or_2_and_announce_2_are_ok() {
        let rows: &[(&str, SysctlKey, i64, bool)] = &[
            ("eth0", SysctlKey::ArpIgnore, 2, true),
            ("eth0", SysctlKey::ArpIgnore, 3, false),
            ("all", SysctlKey::ArpIgnore, 4, false),
            ("eth0", SysctlKey::ArpIgnore, 8, false),
            ("eth0", SysctlKey::ArpAnnounce, 3, false),
            ("all", SysctlKey::ArpAnnounce, 5, false),
        ];
        for (iface, key, value, ok) in rows {
            let (d, mut o) = configured();
            o.sysctls.insert((iface.to_string(), *key), *value);
            let r = report(&d, &o);
            assert_eq!(r.ok, *ok, "{iface}.{key}={value}: {r:?}");
        }
    }

    /// A listed interface that is gone: the others are still judged, and the verdict is
    /// NOT OK naming the missing one.
    #[test]
    fn missing_listed_interface_is_not_ok() {
        let (mut d, mut o) = configured();
        d.interfaces = Some(vec!["eth0".into(), "eth1".into()]);
        let r = report(&d, &o);
        assert!(!r.ok, "{r:?}");
        assert!(r.problems.iter().any(|p| p.contains("\"eth1\"")), "{r:?}");
        assert_eq!(r.lan_interfaces.len(), 1);
        // eth0 is still judged: resetting its sysctl shows up on the VIP.
        o.sysctls.insert(("eth0".into(), SysctlKey::ArpIgnore), 0);
        let r = report(&d, &o);
        assert!(!r.vips[0].suppressed, "{r:?}");
    }

    /// The nft method as `up` writes it for the configured node (RIP 198.51.100.2).
    fn nft_configured() -> (RealServerDesired, Observed, Vec<NftRule>) {
        let (mut d, mut o) = configured();
        d.arp = ArpMethod::Nft;
        for key in [SysctlKey::ArpIgnore, SysctlKey::ArpAnnounce] {
            o.sysctls.insert(("eth0".into(), key), 0);
        }
        let vip = VIP.parse().expect("test literal");
        let rules = vec![
            NftRule::DropArpFor { vip },
            NftRule::MangleArpFrom {
                iface: "eth0".into(),
                vip,
                rip: "198.51.100.2".parse().expect("test literal"),
            },
        ];
        o.nft.arp = Some(rules.clone());
        (d, o, rules)
    }

    /// Tampering with the nft table, each case NOT OK (exit 1) — and the plan `up` would
    /// apply (the real `plan_up`) is shown as pending.
    #[test]
    fn tampered_nft_table_is_not_ok() {
        let (d, o, _) = nft_configured();
        // The table is rs-agent's: its state file records it.
        let state = crate::real_server::state::RealServerState {
            nft_tables: [crate::model::NftFamily::Arp].into(),
            ..Default::default()
        };
        let pending = crate::real_server::plan::plan_up(&d, &o, &state).map(|p| p.changes);
        assert!(evaluate(&d, &o, pending).ok, "as written by up");
        type Tamper = fn(&mut Observed, &mut Vec<NftRule>);
        let cases: &[(&str, Tamper)] = &[
            ("rewrite names an old RIP", |o, _| {
                for a in o.addrs.iter_mut().filter(|a| a.ifname == "eth0") {
                    a.ip = ip("198.51.100.3");
                }
            }),
            ("chain with policy drop", |_, rules| {
                rules.push(NftRule::Unknown {
                    text: "chain input is not as rs-agent writes it".into(),
                })
            }),
            ("extra rule in our chain", |_, rules| {
                rules.push(NftRule::Unknown {
                    text: "input: arp daddr ip 203.0.113.9 drop".into(),
                })
            }),
        ];
        for (what, tamper) in cases {
            let (d, mut o, mut rules) = nft_configured();
            tamper(&mut o, &mut rules);
            rules.sort();
            o.nft.arp = Some(rules);
            let pending = crate::real_server::plan::plan_up(&d, &o, &state).map(|p| p.changes);
            let r = evaluate(&d, &o, pending);
            assert!(!r.ok, "{what}: {r:?}");
            assert!(
                r.pending
                    .iter()
                    .any(|p| p.starts_with("write nft table arp")),
                "{what}: {r:?}"
            );
        }
    }

    #[test]
    fn pending_changes_are_not_ok() {
        let (d, o) = configured();
        let r = evaluate(&d, &o, Ok(vec![Change::SetLinkUp { name: "lo".into() }]));
        assert!(!r.ok);
        let r = evaluate(&d, &o, Err(PlanError("no".into())));
        assert!(!r.ok);
    }

    #[test]
    fn arp_ignore_8_is_a_problem_even_with_nft() {
        let (mut d, mut o) = configured();
        d.arp = ArpMethod::Nft;
        o.sysctls.insert(("eth0".into(), SysctlKey::ArpIgnore), 8);
        let r = report(&d, &o);
        assert!(!r.ok);
        assert!(
            r.problems
                .iter()
                .any(|p| p.starts_with("arp_ignore=8 (effective) on eth0")),
            "{r:?}"
        );
    }

    /// An IPv6 VIP on the device that is tentative or whose DAD failed is not bound: NOT OK,
    /// saying why and what fixes it (`up` re-adds our own; someone else's must be removed).
    #[test]
    fn dad_failed_or_tentative_vip_is_not_bound() {
        use crate::model::Dad;
        const VIP6: &str = "2001:db8::100";
        let rows = [
            (ADDR_PROTO, Dad::Done, None),
            (
                ADDR_PROTO,
                Dad::Failed,
                Some("detection failed: another node on the link answers for this address, and the kernel does not use it; `rs-agent up` adds it again"),
            ),
            (0, Dad::Failed, Some("it is not rs-agent's: remove it (ip addr del 2001:db8::100/128 dev lo)")),
            (ADDR_PROTO, Dad::Tentative, Some("lo: tentative")),
        ];
        for (proto, dad, problem) in rows {
            let (mut d, mut o) = configured();
            d.vips = vec![ip(VIP6)];
            o.addrs.push(Addr {
                dad,
                ..addr("lo", VIP6, 128, proto)
            });
            let r = report(&d, &o);
            let v = &r.vips[0];
            assert_eq!(v.bound, problem.is_none(), "{dad:?}: {v:?}");
            assert_eq!(r.ok, problem.is_none(), "{dad:?}: {r:?}");
            if let Some(want) = problem {
                assert!(
                    v.problems.iter().any(|p| p.contains(want)),
                    "{dad:?}: {v:?}"
                );
            }
        }
    }
}
