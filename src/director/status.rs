//! `director status`: the IPVS table as operators know it from `ipvsadm -Ln` (plus stats),
//! which services are rs-agent's, whether each VIP is bound, and what `up` would still change.

use super::config::DirectorDesired;
use super::state::DirectorState;
use super::{observe, plan};
use crate::agent::AgentError;
use crate::kernel::ipvs::{IpvsClient, IpvsInfo, ObservedService, ServiceFlags, ServiceKey};
use crate::kernel::{link, KernelError};
use serde::Serialize;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct VipStatus {
    pub vip: IpAddr,
    pub interface: String,
    pub bound: bool,
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
}

pub async fn status(
    desired: Option<&DirectorDesired>,
    state_dir: &Path,
) -> Result<DirectorStatus, AgentError> {
    let state = DirectorState::load(state_dir)?;
    let last = match desired {
        Some(_) => None,
        None => DirectorState::load_desired(state_dir)?,
    };
    let desired = desired.or(last.as_ref()).cloned().ok_or_else(|| {
        AgentError::Input(
            "nothing to check: no director config given and no state; pass --config or --vip..., or run `rs-agent director up` first"
                .into(),
        )
    })?;
    let handle = link::connect().map_err(KernelError::from)?;
    let mut client = IpvsClient::connect()?;
    let info = client.info()?;
    let observed = observe(&handle, &mut client).await?;
    let plan = plan::plan_up(&desired, &observed.ipvs, &observed.addrs, &state);
    let unowned = plan::unowned(&desired, &observed.ipvs, &state, &plan::Scope::All);
    let ours = |k: &ServiceKey| state.services.contains(k);
    let vips = desired
        .vips()
        .into_iter()
        .map(|vip| VipStatus {
            vip,
            interface: desired.interface.clone(),
            bound: observed
                .addrs
                .iter()
                .any(|a| a.ifname == desired.interface && a.ip == vip),
        })
        .collect();
    // `up` refuses these (without --adopt) and so would change nothing of them.
    let mut pending: Vec<String> = unowned
        .iter()
        .map(|k| format!("configured service {k} exists and is not rs-agent's (`director up --adopt` takes it over)"))
        .collect();
    pending.extend(
        plan.ipvs
            .iter()
            .filter(|op| !unowned.contains(op.service_key()))
            .map(ToString::to_string),
    );
    pending.extend(plan.addrs.iter().map(ToString::to_string));
    if !observed.links.iter().any(|l| l.name == desired.interface) {
        pending.push(format!("interface {} does not exist", desired.interface));
    }
    Ok(DirectorStatus {
        ok: pending.is_empty(),
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
    })
}

fn service_line(s: &ObservedService) -> String {
    let svc = &s.service;
    let mut line = match &svc.key {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => {
            format!(
                "{:<4} {:<27} {}",
                protocol.name(),
                SocketAddr::new(*addr, *port).to_string(),
                svc.scheduler
            )
        }
        ServiceKey::Fwmark { mark, .. } => format!("{:<4} {:<27} {}", "FWM", mark, svc.scheduler),
    };
    if svc.flags.has(ServiceFlags::PERSISTENT) {
        line.push_str(&format!(" persistent {}", svc.timeout));
        let default_mask = if svc.key.family() == crate::kernel::ipvs::AddressFamily::V4 {
            u32::MAX
        } else {
            128
        };
        if svc.netmask != default_mask {
            line.push_str(&format!(" mask {}", std::net::Ipv4Addr::from(svc.netmask)));
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
            writeln!(out, "{:<56} {}", service_line(&s.observed), s.owner)?;
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
            let verdict = if v.bound { "bound" } else { "NOT BOUND" };
            writeln!(out, "VIP {} on {}: {verdict}", v.vip, v.interface)?;
        }
        if self.ok {
            writeln!(out, "OK: the IPVS table and VIPs match the configuration")
        } else {
            writeln!(out, "NOT OK: `rs-agent director up` would:")?;
            for p in &self.pending {
                writeln!(out, "  {p}")?;
            }
            Ok(())
        }
    }
}
