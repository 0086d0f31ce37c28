//! `director status`: the IPVS table as operators know it from `ipvsadm -Ln` (plus stats),
//! which services are rs-agent's, whether each VIP is bound, and what `up` would still change.
//! While a `director run` checks the real servers, the table is compared with what it wants
//! (its verdicts applied) and each checked server's verdict is shown with why (`health`).

mod health;

pub use health::{HealthStatus, ServerHealth};

use super::config::DirectorDesired;
use super::state::DirectorState;
use super::{observe, plan};
use crate::error::Error;
use crate::kernel::ipvs::{
    AddressFamily, IpvsClient, IpvsInfo, ObservedService, Service, ServiceFlags, ServiceKey,
};
use crate::kernel::{link, KernelError};
use crate::model::{Addr, Dad};
use serde::Serialize;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct VipStatus {
    pub vip: IpAddr,
    pub interface: String,
    /// On the interface and usable: not tentative, and its duplicate address detection did
    /// not fail.
    pub bound: bool,
    /// Why it is not bound, and what fixes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Whether `vip` is bound on `interface`, and if not, why. A VIP whose DAD failed is not
/// bound; `up` re-adds it when it is ours, and cannot touch it when it is not.
fn vip_status(interface: &str, vip: IpAddr, addrs: &[Addr], state: &DirectorState) -> VipStatus {
    let on: Vec<&Addr> = addrs
        .iter()
        .filter(|a| a.ifname == interface && a.ip == vip)
        .collect();
    let owned = state.owns_addr(interface, &vip);
    let reason = if on.is_empty() {
        Some(format!("not an address of {interface}"))
    } else if on.iter().any(|a| a.is_usable()) {
        None
    } else if let Some(failed) = on.iter().find(|a| a.dad == Dad::Failed) {
        let problem = Dad::Failed.problem().unwrap_or_default();
        Some(if owned {
            format!("{problem}; `rs-agent director up` adds it again without DAD")
        } else {
            format!(
                "{problem}; it is not rs-agent's: remove it (ip addr del {vip}/{} dev \
                 {interface}) and run `rs-agent director up`",
                failed.prefix
            )
        })
    } else {
        Dad::Tentative.problem().map(str::to_string)
    };
    VipStatus {
        vip,
        interface: interface.to_string(),
        bound: reason.is_none(),
        reason,
    }
}

#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    /// "rs-agent" for the services in the state file (created or adopted by rs-agent), else
    /// "foreign".
    pub owner: &'static str,
    #[serde(flatten)]
    pub observed: ObservedService,
}

#[derive(Debug, Serialize)]
pub struct DirectorStatus {
    /// True when every configured service, real server and VIP is as configured.
    pub ok: bool,
    pub ipvs: IpvsInfo,
    pub vips: Vec<VipStatus>,
    pub services: Vec<ServiceStatus>,
    /// What `director up` would change, one line each.
    pub pending: Vec<String>,
    /// What is wrong that `director up` will not or cannot change by itself (a configured
    /// service that is not rs-agent's, a missing interface), one line each with the fix.
    pub problems: Vec<String>,
    /// The running `director run`'s verdicts; `null` when none runs (the table is then
    /// compared with the configured weights).
    pub health: Option<HealthStatus>,
}

/// The table and the VIPs against the configuration; `None` when there is nothing to compare
/// (no configuration given and none applied: after `director down`), which is no error.
pub async fn status(
    desired: Option<&DirectorDesired>,
    state_dir: &Path,
) -> Result<Option<DirectorStatus>, Error> {
    let state = DirectorState::load(state_dir)?;
    let last = match desired {
        Some(_) => None,
        None => DirectorState::load_desired(state_dir)?,
    };
    let Some(configured) = desired.or(last.as_ref()) else {
        if state.services.is_empty() && state.addrs.is_empty() {
            return Ok(None);
        }
        // The journal is written before a change, the configuration after a successful one:
        // a crash in the first `director up` leaves owned things and no configuration.
        return Err(Error::Input(format!(
            "rs-agent owns {} service(s) and {} VIP(s) here but no applied configuration is \
             recorded ({}); pass --config to check them, or `rs-agent director down` to undo \
             them",
            state.services.len(),
            state.addrs.len(),
            DirectorState::path(state_dir).display()
        )));
    };
    let (desired, health) = match health::running_view(state_dir)? {
        Some(view) => {
            let (effective, health) = health::apply(configured, &view);
            (effective, Some(health))
        }
        None => (configured.clone(), None),
    };
    let handle = link::connect().map_err(KernelError::from)?;
    let mut client = IpvsClient::connect()?;
    let info = client.info()?;
    let observed = observe(&handle, &mut client).await?;
    let plan = plan::plan_up(&desired, &observed.ipvs, &observed.addrs, &state);
    let unowned = plan::unowned(&desired, &observed.ipvs, &state, &plan::Scope::All);
    let ours = |k: &ServiceKey| state.services.contains(k);
    let vips: Vec<VipStatus> = desired
        .vips()
        .into_iter()
        .map(|vip| vip_status(&desired.interface, vip, &observed.addrs, &state))
        .collect();
    // `up` refuses these (without --adopt): problems, not changes it would make.
    let mut problems: Vec<String> = unowned
        .iter()
        .map(|k| {
            format!(
                "configured service {k} exists and is not rs-agent's; `director up --adopt` \
                 takes it over"
            )
        })
        .collect();
    if !observed.links.iter().any(|l| l.name == desired.interface) {
        problems.push(format!(
            "interface {} does not exist; fix `interface` in the config (see `ip link`)",
            desired.interface
        ));
    }
    let mut pending: Vec<String> = plan
        .ipvs
        .iter()
        .filter(|op| !unowned.contains(op.service_key()))
        .map(ToString::to_string)
        .collect();
    pending.extend(plan.addrs.iter().map(ToString::to_string));
    Ok(Some(DirectorStatus {
        // A VIP `up` cannot bind (someone else's, its DAD failed) is NOT OK with nothing pending.
        ok: pending.is_empty() && problems.is_empty() && vips.iter().all(|v| v.bound),
        ipvs: info,
        vips,
        services: observed
            .ipvs
            .into_iter()
            .map(|s| ServiceStatus {
                owner: if ours(&s.service.key) {
                    "rs-agent"
                } else {
                    "foreign"
                },
                observed: s,
            })
            .collect(),
        pending,
        problems,
        health,
    }))
}

/// The scheduler flags as `ipvsadm -Ln` names them: after the scheduler that gives them a
/// meaning (`sh-fallback`, `mh-port`), else by number (`flag-1`); IP_VS_SVC_F_SCHED1..3.
fn sched_flag_names(scheduler: &str, flags: ServiceFlags) -> Vec<&'static str> {
    let names = match scheduler {
        "sh" => ["sh-fallback", "sh-port", "flag-3"],
        "mh" => ["mh-fallback", "mh-port", "flag-3"],
        _ => ["flag-1", "flag-2", "flag-3"],
    };
    let bits = [
        ServiceFlags::SCHED_SH_FALLBACK,
        ServiceFlags::SCHED_SH_PORT,
        ServiceFlags::SCHED3,
    ];
    bits.iter()
        .zip(names)
        .filter(|(bit, _)| flags.has(**bit))
        .map(|(_, name)| name)
        .collect()
}

/// The persistence granularity as `ipvsadm -Ln` shows it, when it is not a single client:
/// an IPv4 dotted mask, an IPv6 prefix length.
fn persistence_mask(svc: &Service) -> Option<String> {
    match svc.key.family() {
        AddressFamily::V4 => {
            (svc.netmask != u32::MAX).then(|| Ipv4Addr::from(svc.netmask).to_string())
        }
        AddressFamily::V6 => (svc.netmask != 128).then(|| svc.netmask.to_string()),
    }
}

/// One service as `ipvsadm -Ln` prints it (`TCP  [2001:db8::100]:80 sh (sh-port) persistent
/// 60 mask 64`, `FWM  8 IPv6 rr`), the address column padded so that the owner lines up.
fn service_line(svc: &Service) -> String {
    let (prot, target) = match &svc.key {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => (protocol.name(), SocketAddr::new(*addr, *port).to_string()),
        ServiceKey::Fwmark {
            af: AddressFamily::V4,
            mark,
        } => ("FWM", mark.to_string()),
        ServiceKey::Fwmark {
            af: AddressFamily::V6,
            mark,
        } => ("FWM", format!("{mark} IPv6")),
    };
    let mut line = format!("{prot:<4} {target:<27} {}", svc.scheduler);
    let sched_flags = sched_flag_names(&svc.scheduler, svc.flags);
    if !sched_flags.is_empty() {
        line.push_str(&format!(" ({})", sched_flags.join(",")));
    }
    if svc.flags.has(ServiceFlags::PERSISTENT) {
        line.push_str(&format!(" persistent {}", svc.timeout));
        if let Some(mask) = persistence_mask(svc) {
            line.push_str(&format!(" mask {mask}"));
        }
        if let Some(pe) = svc.pe_name.as_deref().filter(|pe| !pe.is_empty()) {
            line.push_str(&format!(" pe {pe}"));
        }
    }
    if svc.flags.has(ServiceFlags::ONEPACKET) {
        line.push_str(" ops");
    }
    line
}

impl DirectorStatus {
    /// `ipvsadm -Ln`'s layout, with the connection and byte counters of `--stats` alongside.
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "IP Virtual Server version {} (size={})",
            self.ipvs.version, self.ipvs.conn_tab_size
        )?;
        writeln!(
            out,
            "Prot LocalAddress:Port Scheduler Flags                   Owner"
        )?;
        writeln!(
            out,
            "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn     Conns   InPkts  InBytes"
        )?;
        for s in &self.services {
            writeln!(out, "{:<56} {}", service_line(&s.observed.service), s.owner)?;
            for d in &s.observed.destinations {
                writeln!(
                    out,
                    "  -> {:<28} {:<7} {:<6} {:<10} {:<9} {:>9} {:>8} {:>8}",
                    SocketAddr::new(d.dest.addr, d.dest.port).to_string(),
                    d.dest.forward.ipvsadm_name(),
                    d.dest.weight,
                    d.active_conns,
                    d.inactive_conns,
                    d.stats.conns,
                    d.stats.inpkts,
                    d.stats.inbytes
                )?;
            }
        }
        writeln!(out)?;
        for v in &self.vips {
            match &v.reason {
                None => writeln!(out, "VIP {} on {}: bound", v.vip, v.interface)?,
                Some(why) => writeln!(out, "VIP {} on {}: NOT BOUND: {why}", v.vip, v.interface)?,
            }
        }
        self.print_health(out)?;
        if self.ok {
            let whose = match self.health {
                Some(_) => " as the health checks have it",
                None => "",
            };
            return writeln!(
                out,
                "OK: the IPVS table and VIPs match the configuration{whose}"
            );
        }
        for p in &self.problems {
            writeln!(out, "NOT OK: {p}")?;
        }
        if !self.pending.is_empty() {
            writeln!(out, "NOT OK: `rs-agent director up` would:")?;
            for p in &self.pending {
                writeln!(out, "  {p}")?;
            }
        } else if self.problems.is_empty() {
            writeln!(
                out,
                "NOT OK: a VIP is not bound and `rs-agent director up` cannot bind it (see above)"
            )?;
        }
        Ok(())
    }
}

impl DirectorStatus {
    /// Each checked real server's verdict, as the running director has it.
    fn print_health(&self, out: &mut impl Write) -> std::io::Result<()> {
        let Some(health) = &self.health else {
            return Ok(());
        };
        if health.servers.is_empty() {
            return Ok(());
        }
        writeln!(
            out,
            "Health checks (rs-agent director run, pid {}):",
            health.director_run_pid
        )?;
        for s in &health.servers {
            writeln!(
                out,
                "  {} -> {:<28} {}",
                s.service,
                s.real_server.to_string(),
                s.line()
            )?;
        }
        for service in &health.below_quorum {
            writeln!(
                out,
                "  {service}: below its quorum (its sorry server serves, if any)"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, ip, service};

    fn svc(key: ServiceKey, scheduler: &str, flags: u32, netmask: u32) -> Service {
        Service {
            flags: ServiceFlags(flags | ServiceFlags::HASHED.0),
            timeout: 60,
            netmask,
            ..service(key, scheduler)
        }
    }

    fn tcp(addr: &str) -> ServiceKey {
        testing::tcp(addr, 80)
    }

    fn fwm(af: AddressFamily) -> ServiceKey {
        ServiceKey::Fwmark { af, mark: 8 }
    }

    const PERSISTENT: u32 = ServiceFlags::PERSISTENT.0;
    const FALLBACK: u32 = ServiceFlags::SCHED_SH_FALLBACK.0;
    const PORT: u32 = ServiceFlags::SCHED_SH_PORT.0;
    const SCHED3: u32 = ServiceFlags::SCHED3.0;

    /// As `ipvsadm -Ln` prints them (its columns aside): the mask only with persistence and
    /// only when not a single client, a dotted mask for IPv4 and a prefix length for IPv6,
    /// scheduler flags named after their scheduler.
    #[test]
    fn service_lines_read_like_ipvsadm() {
        let v4 = "192.0.2.100";
        let v6 = "2001:db8::100";
        let rows = [
            (svc(tcp(v4), "rr", 0, u32::MAX), "TCP  192.0.2.100:80", "rr"),
            (
                svc(tcp(v4), "wlc", PERSISTENT, u32::MAX),
                "TCP  192.0.2.100:80",
                "wlc persistent 60",
            ),
            (
                svc(tcp(v4), "wlc", PERSISTENT, 0xffff_ff00),
                "TCP  192.0.2.100:80",
                "wlc persistent 60 mask 255.255.255.0",
            ),
            (
                svc(tcp(v4), "wlc", 0, 0xffff_ff00),
                "TCP  192.0.2.100:80",
                "wlc",
            ),
            (
                svc(tcp(v6), "rr", PERSISTENT, 128),
                "TCP  [2001:db8::100]:80",
                "rr persistent 60",
            ),
            (
                svc(tcp(v6), "rr", PERSISTENT, 64),
                "TCP  [2001:db8::100]:80",
                "rr persistent 60 mask 64",
            ),
            (
                svc(fwm(AddressFamily::V4), "rr", 0, u32::MAX),
                "FWM  8",
                "rr",
            ),
            (
                svc(fwm(AddressFamily::V6), "rr", 0, 128),
                "FWM  8 IPv6",
                "rr",
            ),
            (
                svc(
                    fwm(AddressFamily::V6),
                    "sh",
                    FALLBACK | PORT | PERSISTENT,
                    64,
                ),
                "FWM  8 IPv6",
                "sh (sh-fallback,sh-port) persistent 60 mask 64",
            ),
            (
                svc(tcp(v4), "mh", PORT, u32::MAX),
                "TCP  192.0.2.100:80",
                "mh (mh-port)",
            ),
            (
                svc(tcp(v4), "rr", SCHED3 | ServiceFlags::ONEPACKET.0, u32::MAX),
                "TCP  192.0.2.100:80",
                "rr (flag-3) ops",
            ),
        ];
        for (service, name, rest) in rows {
            let line = service_line(&service);
            // The name column is 32 wide, as the header's, then one space.
            assert_eq!(line, format!("{name:<32} {rest}"));
        }
    }

    fn addr(ip: &str, dad: Dad, proto: u8) -> Addr {
        Addr {
            dad,
            ..testing::addr("eth0", ip, 128, proto)
        }
    }

    #[test]
    fn dad_failed_vip_is_not_bound_and_says_why() {
        let vip = ip("2001:db8::100");
        let ours = DirectorState {
            addrs: [crate::state_dir::OwnedAddr {
                ifname: "eth0".into(),
                ip: vip,
                prefix: 128,
                label: None,
                adopted: None,
            }]
            .into_iter()
            .collect(),
            ..DirectorState::default()
        };
        let theirs = DirectorState::default();
        let p = crate::model::ADDR_PROTO;
        let rows = [
            (vec![addr("2001:db8::100", Dad::Done, p)], &ours, None),
            (vec![], &ours, Some("not an address of eth0")),
            (
                vec![addr("2001:db8::100", Dad::Failed, p)],
                &ours,
                Some("`rs-agent director up` adds it again without DAD"),
            ),
            (
                vec![addr("2001:db8::100", Dad::Failed, 0)],
                &theirs,
                Some("remove it (ip addr del 2001:db8::100/128 dev eth0)"),
            ),
            (
                vec![addr("2001:db8::100", Dad::Tentative, p)],
                &ours,
                Some("tentative"),
            ),
        ];
        for (addrs, state, want) in rows {
            let v = vip_status("eth0", vip, &addrs, state);
            assert_eq!(v.bound, want.is_none(), "{v:?}");
            match want {
                None => assert_eq!(v.reason, None),
                Some(w) => assert!(v.reason.as_deref().is_some_and(|r| r.contains(w)), "{v:?}"),
            }
        }
    }

    /// An unbound VIP that `up` cannot bind is NOT OK with nothing pending, and says so.
    #[test]
    fn print_shows_why_a_vip_is_not_bound() {
        let status = DirectorStatus {
            ok: false,
            ipvs: IpvsInfo {
                version: "1.2.1".into(),
                conn_tab_size: 4096,
            },
            vips: vec![VipStatus {
                vip: ip("2001:db8::100"),
                interface: "eth0".into(),
                bound: false,
                reason: Some("tentative: duplicate address detection is still running".into()),
            }],
            services: vec![],
            pending: vec![],
            problems: vec![],
            health: None,
        };
        let mut out = Vec::new();
        status.print(&mut out).expect("print to a Vec");
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains(
                "VIP 2001:db8::100 on eth0: NOT BOUND: tentative: duplicate address detection \
                 is still running\nNOT OK: a VIP is not bound and `rs-agent director up` cannot \
                 bind it (see above)\n"
            ),
            "{text}"
        );
    }

    /// Problems (what `up` will not change) come first, each with its fix, then the plan.
    #[test]
    fn print_lists_problems_before_what_up_would_do() {
        let status = DirectorStatus {
            ok: false,
            ipvs: IpvsInfo {
                version: "1.2.1".into(),
                conn_tab_size: 4096,
            },
            vips: vec![],
            services: vec![],
            pending: vec!["bind 192.0.2.100/32 on eth0".into()],
            problems: vec!["configured service TCP 192.0.2.100:80 exists and is not \
                rs-agent's; `director up --adopt` takes it over"
                .into()],
            health: None,
        };
        let mut out = Vec::new();
        status.print(&mut out).expect("print to a Vec");
        let text = String::from_utf8_lossy(&out);
        let tail: Vec<&str> = text.lines().rev().take(3).collect();
        assert_eq!(
            tail,
            [
                "  bind 192.0.2.100/32 on eth0",
                "NOT OK: `rs-agent director up` would:",
                "NOT OK: configured service TCP 192.0.2.100:80 exists and is not rs-agent's; \
                 `director up --adopt` takes it over",
            ],
            "{text}"
        );
    }
}
