//! One `[[director.service]]` table → a validated service: its key (vip/port/protocol or
//! fwmark), scheduler and flags, persistence, real servers and sorry server.
//!
//! Owns how a service's values fit together (a fwmark has no port, dr keeps the port, a
//! sorry server needs a check). It must not parse a lone value (`values` does) nor a check's
//! table (`check` does), nor compare one service with another (`director` does).

use super::check::check;
use super::events::{quorum, quorum_notify, real_notify};
use super::values::{
    err, family_of, int_in, parse_forward, parse_netmask, parse_protocol, parse_real_addr,
    parse_scheduler, same_port, spanned, Loc,
};
use super::{ServiceDesired, MAX_PERSISTENCE};
use crate::config_file::director::{RawReal, RawService};
use crate::config_file::{parse_vip_str, ConfigError, ConfigFile};
use crate::director::health::{HealthCheck, Probe};
use crate::kernel::ipvs::{
    AddressFamily, Destination, Forward, Protocol, Service, ServiceFlags, ServiceKey,
};
use std::net::SocketAddr;
use toml::Spanned;

/// `[[director.service]]` number `index` (from 0) → a validated service.
pub(super) fn service(
    file: &ConfigFile,
    raw: &RawService,
    index: usize,
) -> Result<ServiceDesired, ConfigError> {
    let at = service_at(file, raw, index);
    let (key, af) = service_key(file, raw, &at)?;
    let scheduler = match &raw.scheduler {
        Some(s) => parse_scheduler(&spanned(file, s))?,
        None => "wlc".to_string(),
    };
    let (flags, timeout) = service_flags(file, raw, &key, &at, &scheduler)?;
    let netmask = match (&raw.persistence_netmask, af) {
        (Some(m), _) => parse_netmask(&spanned(file, m), af)?,
        (None, AddressFamily::V4) => u32::MAX,
        (None, AddressFamily::V6) => 128,
    };
    let port = match key {
        ServiceKey::Addr { port, .. } => port,
        ServiceKey::Fwmark { .. } => 0,
    };
    let reals = reals(file, raw, af, port)?;
    let check = raw
        .check
        .as_ref()
        .map(|c| check(file, c, &at))
        .transpose()?;
    let sorry = service_sorry(file, raw, check.as_ref(), af, port, &reals)?;
    require_check_port(file, raw, check.as_ref(), &reals, sorry.as_ref())?;
    let quorum = quorum(file, raw, check.as_ref(), &reals)?;
    let quorum_notify = quorum_notify(file, raw, check.as_ref())?;
    let real_notify = real_notify(file, &raw.reals, check.as_ref(), &reals)?;
    Ok(ServiceDesired {
        service: Service {
            key,
            scheduler,
            flags,
            timeout,
            netmask,
            pe_name: None,
        },
        check,
        sorry,
        reals,
        quorum,
        quorum_notify,
        real_notify,
    })
}

/// Where an error about the service as a whole points: its vip or fwmark, else its
/// `[[director.service]]` header, else its first key.
fn service_at<'a>(file: &'a ConfigFile, raw: &RawService, index: usize) -> Loc<'a> {
    let first_key = || {
        [
            raw.port.as_ref().map(|v| v.span()),
            raw.protocol.as_ref().map(|v| v.span()),
            raw.family.as_ref().map(|v| v.span()),
            raw.scheduler.as_ref().map(|v| v.span()),
            raw.persistence.as_ref().map(|v| v.span()),
            raw.persistence_netmask.as_ref().map(|v| v.span()),
            raw.sorry_server.as_ref().map(|v| v.span()),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|s| s.start)
    };
    match (&raw.vip, &raw.fwmark) {
        (Some(v), _) => Loc::Span(file, v.span()),
        (None, Some(m)) => Loc::Span(file, m.span()),
        (None, None) => match service_header(&file.text, index).or_else(first_key) {
            Some(span) => Loc::Span(file, span),
            None => Loc::Text(format!(
                "{}: [[director.service]] #{}",
                file.name(),
                index + 1
            )),
        },
    }
}

/// The span of the `index`-th (from 0) `[[director.service]]` header line of `text`, spaces
/// inside the brackets allowed.
fn service_header(text: &str, index: usize) -> Option<std::ops::Range<usize>> {
    let mut at = 0;
    let mut headers = text.split_inclusive('\n').filter_map(|line| {
        let start = at;
        at += line.len();
        let trimmed = line.trim_start();
        let header = trimmed.strip_prefix("[[")?.split_once("]]")?.0;
        let name: String = header
            .chars()
            .filter(|c| !matches!(c, ' ' | '\t'))
            .collect();
        let col = start + (line.len() - trimmed.len());
        (name == "director.service").then_some(col..col)
    });
    headers.nth(index)
}

/// The service's flags (scheduler flags, persistent, one-packet) and persistence timeout.
fn service_flags(
    file: &ConfigFile,
    raw: &RawService,
    key: &ServiceKey,
    at: &Loc,
    scheduler: &str,
) -> Result<(ServiceFlags, u32), ConfigError> {
    let mut flags = sched_flags(file, raw, scheduler)?;
    let timeout = match &raw.persistence {
        Some(p) => int_in(file, p, 0, MAX_PERSISTENCE.into(), "persistence (seconds)")? as u32,
        None => 0,
    };
    if timeout > 0 {
        flags = ServiceFlags(flags.0 | ServiceFlags::PERSISTENT.0);
    }
    if raw.one_packet == Some(true) {
        if !matches!(
            key,
            ServiceKey::Addr {
                protocol: Protocol::Udp,
                ..
            } | ServiceKey::Fwmark { .. }
        ) {
            return Err(err(
                at,
                "one_packet applies only to UDP (or fwmark) services",
            ));
        }
        flags = ServiceFlags(flags.0 | ServiceFlags::ONEPACKET.0);
    }
    Ok((flags, timeout))
}

/// The `[[director.service.real]]` tables, then the `reals = [...]` shorthand; each once.
fn reals(
    file: &ConfigFile,
    raw: &RawService,
    af: AddressFamily,
    port: u16,
) -> Result<Vec<Destination>, ConfigError> {
    let mut reals: Vec<Destination> = Vec::new();
    let shorthand = raw.real_list.iter().map(|address| RawReal {
        address: address.clone(),
        weight: None,
        forward: None,
        upper_threshold: None,
        lower_threshold: None,
        notify_up: None,
        notify_down: None,
    });
    let all: Vec<RawReal> = shorthand.collect();
    for r in raw.reals.iter().chain(&all) {
        let d = real(file, r, af, port)?;
        if reals.iter().any(|x| x.addr == d.addr && x.port == d.port) {
            return Err(file.err_at(
                &r.address,
                format!(
                    "real server {} is listed twice in this service; list each once",
                    SocketAddr::new(d.addr, d.port)
                ),
            ));
        }
        reals.push(d);
    }
    Ok(reals)
}

/// The service's sorry server, which only a health check can call for.
fn service_sorry(
    file: &ConfigFile,
    raw: &RawService,
    check: Option<&HealthCheck>,
    af: AddressFamily,
    port: u16,
    reals: &[Destination],
) -> Result<Option<Destination>, ConfigError> {
    match (&raw.sorry_server, check) {
        (Some(v), None) => Err(file.err_at(
            v,
            "a sorry_server is used only when health checks find the service below its \
             quorum (by default: every real server down); add [director.service.check] or \
             remove it",
        )),
        (Some(v), Some(_)) => Ok(Some(sorry(file, v, af, port, reals)?)),
        (None, _) => Ok(None),
    }
}

/// A port-0 destination (fwmark, port-0 persistent service) gives a connecting check nothing
/// to connect to unless the check names its port.
fn require_check_port(
    file: &ConfigFile,
    raw: &RawService,
    check: Option<&HealthCheck>,
    reals: &[Destination],
    sorry: Option<&Destination>,
) -> Result<(), ConfigError> {
    let (Some(c), Some(raw_check)) = (check, &raw.check) else {
        return Ok(());
    };
    let portless = reals.iter().chain(sorry).find(|d| d.port == 0);
    let portless_probe = matches!(c.probe, Probe::Command { .. } | Probe::Icmp);
    if let (Some(d), None, false) = (portless, c.port, portless_probe) {
        return Err(file.err_at(
            &raw_check.kind,
            format!(
                "real server {} has no port for the {} check to connect to; \
                 set port = 80 (say) under [director.service.check]",
                d.addr,
                raw_check.kind.get_ref()
            ),
        ));
    }
    Ok(())
}

/// The service's identity (vip, port and protocol, or fwmark and family) and its family.
fn service_key(
    file: &ConfigFile,
    raw: &RawService,
    at: &Loc,
) -> Result<(ServiceKey, AddressFamily), ConfigError> {
    match (&raw.fwmark, &raw.vip) {
        (Some(m), None) => fwmark_key(file, raw, m),
        (None, Some(v)) => addr_key(file, raw, v, at),
        (Some(m), Some(_)) => {
            Err(file.err_at(m, "a service has either vip/port or fwmark, not both"))
        }
        (None, None) => Err(err(
            at,
            "service has neither vip nor fwmark; add vip = \"192.0.2.100\" and port",
        )),
    }
}

/// A fwmark service: the mark and the family (`ipv4` unless `family` says otherwise).
fn fwmark_key(
    file: &ConfigFile,
    raw: &RawService,
    m: &Spanned<i64>,
) -> Result<(ServiceKey, AddressFamily), ConfigError> {
    if raw.port.is_some() || raw.protocol.is_some() {
        return Err(file.err_at(m, "a fwmark service has no port or protocol; remove them"));
    }
    let mark = int_in(file, m, 1, u32::MAX as i64, "fwmark")? as u32;
    let af = match raw.family.as_ref().map(|f| f.get_ref().as_str()) {
        None | Some("ipv4") => AddressFamily::V4,
        Some("ipv6") => AddressFamily::V6,
        Some(other) => {
            let f = raw
                .family
                .as_ref()
                .map(|f| file.at(f.span()))
                .unwrap_or_default();
            return Err(err(
                &f,
                format!("unknown family {other:?}; expected ipv4 or ipv6"),
            ));
        }
    };
    Ok((ServiceKey::Fwmark { af, mark }, af))
}

/// A vip service: the address, the protocol (tcp by default) and the port (0 only when
/// persistent: all ports).
fn addr_key(
    file: &ConfigFile,
    raw: &RawService,
    v: &Spanned<String>,
    at: &Loc,
) -> Result<(ServiceKey, AddressFamily), ConfigError> {
    if let Some(f) = &raw.family {
        return Err(file.err_at(
            f,
            "family applies only to fwmark services (a vip names its own family); remove it",
        ));
    }
    let addr = parse_vip_str(v.get_ref()).map_err(|m| file.err_at(v, m))?;
    let protocol = match &raw.protocol {
        Some(p) => parse_protocol(&spanned(file, p))?,
        None => Protocol::Tcp,
    };
    let port = match &raw.port {
        Some(p) if *p.get_ref() == 0 && persistent(raw) => 0,
        Some(p) => int_in(file, p, 1, 65535, "port")? as u16,
        None => return Err(err(at, "service has no port; add port = 80 (1..=65535)")),
    };
    let key = ServiceKey::Addr {
        protocol,
        addr,
        port,
    };
    Ok((key, family_of(&addr)))
}

/// `persistence` set to a positive number of seconds (port 0 is then allowed: all ports).
fn persistent(raw: &RawService) -> bool {
    raw.persistence.as_ref().is_some_and(|p| *p.get_ref() > 0)
}

fn real(
    file: &ConfigFile,
    raw: &RawReal,
    af: AddressFamily,
    service_port: u16,
) -> Result<Destination, ConfigError> {
    let src = spanned(file, &raw.address);
    let (addr, port) = parse_real_addr(&src, service_port)?;
    if family_of(&addr) != af {
        return Err(err(
            &src.at,
            format!(
                "real server {addr} is not of the service's address family; use an {} address",
                if af == AddressFamily::V4 {
                    "IPv4"
                } else {
                    "IPv6"
                }
            ),
        ));
    }
    let weight = match &raw.weight {
        Some(w) => int_in(file, w, 0, 65535, "weight")? as u32,
        None => 1,
    };
    let forward = match &raw.forward {
        Some(f) => parse_forward(&spanned(file, f))?,
        None => Forward::Route,
    };
    same_port(&src, forward, port, service_port)?;
    let threshold = |t: &Option<Spanned<i64>>, what| -> Result<u32, ConfigError> {
        t.as_ref().map_or(Ok(0), |t| {
            int_in(file, t, 0, u32::MAX as i64, what).map(|n| n as u32)
        })
    };
    let upper_threshold = threshold(&raw.upper_threshold, "upper_threshold")?;
    let lower_threshold = threshold(&raw.lower_threshold, "lower_threshold")?;
    if let Some(l) = raw
        .lower_threshold
        .as_ref()
        .filter(|_| lower_threshold > upper_threshold)
    {
        // The kernel refuses it (ERANGE), an upper threshold of 0 (no limit) included.
        return Err(file.err_at(
            l,
            format!(
                "lower_threshold {lower_threshold} is above upper_threshold {upper_threshold}; \
                 make it at most the upper one (or set upper_threshold)"
            ),
        ));
    }
    Ok(Destination {
        addr,
        port,
        forward,
        weight,
        upper_threshold,
        lower_threshold,
    })
}

fn sched_flags(
    file: &ConfigFile,
    raw: &RawService,
    scheduler: &str,
) -> Result<ServiceFlags, ConfigError> {
    let mut flags = ServiceFlags::default();
    for f in &raw.scheduler_flags {
        let bit = match f.get_ref().as_str() {
            "sh-fallback" | "mh-fallback" => ServiceFlags::SCHED_SH_FALLBACK,
            "sh-port" | "mh-port" => ServiceFlags::SCHED_SH_PORT,
            // By number, for any scheduler (the kernel takes them; ipvsadm-save prints them so
            // for schedulers other than sh and mh).
            "flag-1" => ServiceFlags::SCHED_SH_FALLBACK,
            "flag-2" => ServiceFlags::SCHED_SH_PORT,
            "flag-3" => ServiceFlags::SCHED3,
            other => {
                return Err(file.err_at(
                    f,
                    format!(
                        "unknown scheduler flag {other:?}; expected sh-fallback, sh-port, \
                         flag-1, flag-2 or flag-3"
                    ),
                ))
            }
        };
        let by_number = f.get_ref().starts_with("flag-");
        if !by_number && scheduler != "sh" && scheduler != "mh" {
            return Err(file.err_at(
                f,
                format!(
                    "scheduler flag {:?} applies only to the sh and mh schedulers, not {scheduler}",
                    f.get_ref()
                ),
            ));
        }
        flags = ServiceFlags(flags.0 | bit.0);
    }
    Ok(flags)
}

/// The sorry server: forwarded like the service's real servers (the first one's method; dr
/// when there is none), never one of them (it would be down exactly when it is needed).
fn sorry(
    file: &ConfigFile,
    v: &Spanned<String>,
    af: AddressFamily,
    service_port: u16,
    reals: &[Destination],
) -> Result<Destination, ConfigError> {
    let src = spanned(file, v);
    let (addr, port) = parse_real_addr(&src, service_port)?;
    if family_of(&addr) != af {
        return Err(err(
            &src.at,
            "sorry_server is not of the service's address family",
        ));
    }
    if reals.iter().any(|d| d.addr == addr && d.port == port) {
        return Err(err(
            &src.at,
            format!(
                "sorry_server {} is also a real server of this service; name a host that \
                 is not in the rotation",
                SocketAddr::new(addr, port)
            ),
        ));
    }
    let forward = reals.first().map_or(Forward::Route, |d| d.forward);
    same_port(&src, forward, port, service_port)?;
    Ok(Destination {
        addr,
        port,
        forward,
        weight: 1,
        upper_threshold: 0,
        lower_threshold: 0,
    })
}
