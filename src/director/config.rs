//! `[director]` config + quick flags → validated director desired state.
//!
//! Every error names its input (`file:line:col` or `--flag`) and the fix, and is reported
//! before anything touches the kernel.

use super::health::{HealthCheck, HttpProbe, OnFailure, Probe};
use super::raw::{RawCheck, RawDirector, RawReal, RawService};
use crate::config_file::{check_ifname, parse_vip_str, ConfigError, ConfigFile};
use crate::kernel::ipvs::{
    AddressFamily, Destination, Forward, Protocol, Service, ServiceFlags, ServiceKey,
};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use toml::Spanned;

/// Every scheduler the Linux kernel ships (net/netfilter/ipvs/ip_vs_*.c).
pub const SCHEDULERS: [&str; 14] = [
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

/// One virtual service and its real servers, as they must be in the kernel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceDesired {
    pub service: Service,
    pub reals: Vec<Destination>,
    /// Health check of every real server (none: all are taken as healthy).
    #[serde(default)]
    pub check: Option<HealthCheck>,
    /// Used, at weight 1, only while every real server of the service is down.
    #[serde(default)]
    pub sorry: Option<Destination>,
}

/// Validated director configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirectorDesired {
    /// Where the VIPs are bound and announced.
    pub interface: String,
    pub garp_count: u32,
    pub garp_interval: Duration,
    pub services: Vec<ServiceDesired>,
}

impl DirectorDesired {
    /// The addresses the director must hold: every non-fwmark service address, once.
    pub fn vips(&self) -> Vec<IpAddr> {
        let mut vips: Vec<IpAddr> = Vec::new();
        for s in &self.services {
            if let ServiceKey::Addr { addr, .. } = s.service.key {
                if !vips.contains(&addr) {
                    vips.push(addr);
                }
            }
        }
        vips
    }
}

/// The one-service quick flags (`--vip --port --scheduler --real ... --interface`).
#[derive(Debug, Clone, Default)]
pub struct DirectorFlags {
    pub interface: Option<String>,
    pub vip: Option<String>,
    pub port: Option<String>,
    pub protocol: Option<String>,
    pub scheduler: Option<String>,
    pub persistence: Option<String>,
    pub forward: Option<String>,
    pub reals: Vec<String>,
}

/// The longest persistence timeout accepted, in seconds: 31 days, ipvsadm's MAX_TIMEOUT. The
/// kernel keeps the timeout in jiffies (seconds × HZ in 32 bits); much longer values wrap
/// around to a short or zero timeout without an error.
const MAX_PERSISTENCE: u32 = 2_678_400;

/// The longest one announcement of the VIPs may take (its rounds and the waits between).
const MAX_GARP_SPAN: Duration = Duration::from_secs(10);

impl DirectorFlags {
    /// True when a flag that only `--vip`'s service uses was given.
    fn describes_service(&self) -> bool {
        self.port.is_some()
            || self.protocol.is_some()
            || self.scheduler.is_some()
            || self.persistence.is_some()
            || self.forward.is_some()
            || !self.reals.is_empty()
    }
}

/// A value and the name of where it came from, for error messages.
struct Src<'a> {
    value: &'a str,
    at: Loc<'a>,
}

/// Where a value came from; rendered (`file:line:col`) only when an error names it, so that
/// validating thousands of values costs no formatting.
enum Loc<'a> {
    Span(&'a ConfigFile, std::ops::Range<usize>),
    Text(String),
}

impl std::fmt::Display for Loc<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loc::Span(file, span) => f.write_str(&file.at(span.clone())),
            Loc::Text(text) => f.write_str(text),
        }
    }
}

fn err(at: impl std::fmt::Display, msg: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{at}: {msg}"))
}

fn spanned<'a>(file: &'a ConfigFile, v: &'a Spanned<String>) -> Src<'a> {
    Src {
        value: v.get_ref(),
        at: Loc::Span(file, v.span()),
    }
}

fn int_in(
    file: &ConfigFile,
    v: &Spanned<i64>,
    lo: i64,
    hi: i64,
    what: &str,
) -> Result<i64, ConfigError> {
    let n = *v.get_ref();
    if n < lo || n > hi {
        return Err(file.err_at(
            v,
            format!("{what} {n} is out of range; expected {lo}..={hi}"),
        ));
    }
    Ok(n)
}

fn parse_protocol(src: &Src) -> Result<Protocol, ConfigError> {
    match src.value {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "sctp" => Ok(Protocol::Sctp),
        other => Err(err(
            &src.at,
            format!("unknown protocol {other:?}; expected tcp, udp or sctp"),
        )),
    }
}

fn parse_scheduler(src: &Src) -> Result<String, ConfigError> {
    if SCHEDULERS.contains(&src.value) {
        return Ok(src.value.to_string());
    }
    Err(err(
        &src.at,
        format!(
            "unknown scheduler {:?}; expected one of {}",
            src.value,
            SCHEDULERS.join(", ")
        ),
    ))
}

fn parse_forward(src: &Src) -> Result<Forward, ConfigError> {
    match src.value {
        "dr" | "route" | "gatewaying" => Ok(Forward::Route),
        "tunnel" | "tun" | "ipip" => Ok(Forward::Tunnel),
        "nat" | "masq" | "masquerading" => Ok(Forward::Masq),
        other => Err(err(
            &src.at,
            format!("unknown forwarding method {other:?}; expected dr, tunnel or nat"),
        )),
    }
}

fn parse_port_str(src: &Src) -> Result<u16, ConfigError> {
    match src.value.parse::<i64>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(err(
            &src.at,
            format!("port {:?} is out of range; expected 1..=65535", src.value),
        )),
    }
}

/// `ADDR` or `ADDR:PORT` or `[V6]:PORT`; the port defaults to the service's.
fn parse_real_addr(src: &Src, default_port: u16) -> Result<(IpAddr, u16), ConfigError> {
    if let Ok(sa) = src.value.parse::<SocketAddr>() {
        // Port 0 is meaningful only for fwmark and port-0 persistent services (their port is 0).
        if sa.port() == 0 && default_port != 0 {
            return Err(err(
                &src.at,
                "real server port 0 is out of range; expected 1..=65535",
            ));
        }
        return unicast(src, sa.ip()).map(|ip| (ip, sa.port()));
    }
    let ip = src.value.parse::<IpAddr>().map_err(|_| {
        err(&src.at, format!(
            "{:?} is not a real server address; expected e.g. 198.51.100.2, 198.51.100.2:8080 or [2001:db8::2]:80",
            src.value
        ))
    })?;
    unicast(src, ip).map(|ip| (ip, default_port))
}

/// IPVS forwards only to unicast destinations (the kernel refuses the others with EINVAL,
/// half way through an apply): not unspecified, multicast or broadcast, not in 0.0.0.0/8 (the
/// kernel's "this network", which `inet_addr_type` calls broadcast), and for IPv6 neither
/// IPv4-mapped (::ffff:0:0/96, not IPV6_ADDR_UNICAST) nor link-local (fe80::/10: a real server
/// on another host is never reachable by one without an interface to scope it).
fn unicast(src: &Src, ip: IpAddr) -> Result<IpAddr, ConfigError> {
    let bad = ip.is_unspecified()
        || ip.is_multicast()
        || match ip {
            IpAddr::V4(v4) => v4.is_broadcast() || v4.octets()[0] == 0,
            IpAddr::V6(v6) => {
                v6.to_ipv4_mapped().is_some() || (v6.segments()[0] & 0xffc0) == 0xfe80
            }
        };
    if bad {
        return Err(err(
            &src.at,
            format!("{ip} is not a unicast address; a real server needs its own unicast address"),
        ));
    }
    Ok(ip)
}

/// Direct routing and tunnelling never rewrite the destination port, so a real server of such
/// a service listens on the service's port (ipvsadm silently forces it; we say so instead).
/// Services without a port (fwmark, port-0 persistent) take any real server port: it is what
/// their health check connects to.
fn same_port(src: &Src, forward: Forward, port: u16, service_port: u16) -> Result<(), ConfigError> {
    if forward != Forward::Masq && service_port != 0 && port != service_port {
        return Err(err(
            &src.at,
            format!(
                "port {port} differs from the service's port {service_port}, which dr and tunnel \
                 forwarding cannot change; drop \":{port}\" or use forward = \"nat\""
            ),
        ));
    }
    Ok(())
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

/// Persistence netmask: an IPv4 dotted mask (contiguous) or `/N` for IPv6 (1..=128).
fn parse_netmask(src: &Src, af: AddressFamily) -> Result<u32, ConfigError> {
    match af {
        AddressFamily::V4 => {
            let mask: std::net::Ipv4Addr = src.value.parse().map_err(|_| {
                err(
                    &src.at,
                    format!(
                        "{:?} is not an IPv4 netmask; expected e.g. 255.255.255.0",
                        src.value
                    ),
                )
            })?;
            let m = u32::from(mask);
            if m.leading_ones() + m.trailing_zeros() != 32 {
                return Err(err(
                    &src.at,
                    format!("netmask {mask} is not contiguous; expected e.g. 255.255.255.0"),
                ));
            }
            Ok(m)
        }
        AddressFamily::V6 => match src
            .value
            .strip_prefix('/')
            .and_then(|n| n.parse::<u32>().ok())
        {
            Some(n) if (1..=128).contains(&n) => Ok(n),
            _ => Err(err(
                &src.at,
                format!(
                    "{:?} is not an IPv6 persistence prefix; expected /1../128, e.g. /64",
                    src.value
                ),
            )),
        },
    }
}

fn family_of(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::V4,
        IpAddr::V6(_) => AddressFamily::V6,
    }
}

fn service_key(
    file: &ConfigFile,
    raw: &RawService,
    at: &Loc,
) -> Result<(ServiceKey, AddressFamily), ConfigError> {
    match (&raw.fwmark, &raw.vip) {
        (Some(m), None) => {
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
        (None, Some(v)) => {
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
            Ok((
                ServiceKey::Addr {
                    protocol,
                    addr,
                    port,
                },
                family_of(&addr),
            ))
        }
        (Some(m), Some(_)) => {
            Err(file.err_at(m, "a service has either vip/port or fwmark, not both"))
        }
        (None, None) => Err(err(
            at,
            "service has neither vip nor fwmark; add vip = \"192.0.2.100\" and port",
        )),
    }
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

fn service(
    file: &ConfigFile,
    raw: &RawService,
    index: usize,
) -> Result<ServiceDesired, ConfigError> {
    let at = match (&raw.vip, &raw.fwmark) {
        (Some(v), _) => Loc::Span(file, v.span()),
        (None, Some(m)) => Loc::Span(file, m.span()),
        (None, None) => Loc::Text(format!(
            "{}: [[director.service]] #{}",
            file.name(),
            index + 1
        )),
    };
    let (key, af) = service_key(file, raw, &at)?;
    let scheduler = match &raw.scheduler {
        Some(s) => parse_scheduler(&spanned(file, s))?,
        None => "wlc".to_string(),
    };
    let mut flags = sched_flags(file, raw, &scheduler)?;
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
                &at,
                "one_packet applies only to UDP (or fwmark) services",
            ));
        }
        flags = ServiceFlags(flags.0 | ServiceFlags::ONEPACKET.0);
    }
    let netmask = match (&raw.persistence_netmask, af) {
        (Some(m), _) => parse_netmask(&spanned(file, m), af)?,
        (None, AddressFamily::V4) => u32::MAX,
        (None, AddressFamily::V6) => 128,
    };
    let port = match key {
        ServiceKey::Addr { port, .. } => port,
        ServiceKey::Fwmark { .. } => 0,
    };
    let mut reals: Vec<Destination> = Vec::new();
    let shorthand = raw.real_list.iter().map(|address| RawReal {
        address: address.clone(),
        weight: None,
        forward: None,
        upper_threshold: None,
        lower_threshold: None,
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
    let check = raw
        .check
        .as_ref()
        .map(|c| check(file, c, &at))
        .transpose()?;
    let sorry = match (&raw.sorry_server, &check) {
        (Some(v), None) => {
            return Err(file.err_at(
                v,
                "a sorry_server is used only when health checks find every real server down; \
                 add [director.service.check] or remove it",
            ))
        }
        (Some(v), Some(_)) => Some(sorry(file, v, af, port, &reals)?),
        (None, _) => None,
    };
    if let (Some(c), Some(raw_check)) = (&check, &raw.check) {
        // A port-0 destination (fwmark, port-0 persistent service) gives a connecting check
        // nothing to connect to.
        let portless = reals.iter().chain(&sorry).find(|d| d.port == 0);
        if let (Some(d), None, false) = (portless, c.port, matches!(c.probe, Probe::Command { .. }))
        {
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
    }
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
    })
}

fn ms(
    file: &ConfigFile,
    v: &Option<Spanned<i64>>,
    default: u64,
    what: &str,
) -> Result<Duration, ConfigError> {
    Ok(Duration::from_millis(match v {
        Some(v) => int_in(file, v, 10, 3_600_000, what)? as u64,
        None => default,
    }))
}

/// `[director.service.check]` → a validated check.
fn check(file: &ConfigFile, raw: &RawCheck, at: &Loc) -> Result<HealthCheck, ConfigError> {
    let kind = raw.kind.get_ref().as_str();
    let http = || -> Result<HttpProbe, ConfigError> {
        let path = raw
            .path
            .as_ref()
            .map_or("/".to_string(), |p| p.get_ref().clone());
        if !path.starts_with('/') || path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            let p = raw
                .path
                .as_ref()
                .map_or(at.to_string(), |p| file.at(p.span()));
            return Err(err(
                &p,
                format!("check path {path:?} must start with / and contain no spaces"),
            ));
        }
        let host = raw
            .host
            .as_ref()
            .map(|h| check_host(file, h, kind == "https"))
            .transpose()?;
        Ok(HttpProbe {
            path,
            status: match &raw.status {
                Some(s) => int_in(file, s, 100, 599, "check status")? as u16,
                None => 200,
            },
            body: raw.body.as_ref().map(|b| b.get_ref().clone()),
            host,
            reuse_connection: raw.reuse_connection.as_ref().is_some_and(|r| *r.get_ref()),
        })
    };
    // A key the type does not use would be silently ignored: say so instead.
    let http_keys = [
        raw.path.as_ref().map(|v| ("path", v.span())),
        raw.status.as_ref().map(|v| ("status", v.span())),
        raw.body.as_ref().map(|v| ("body", v.span())),
        raw.host.as_ref().map(|v| ("host", v.span())),
        raw.reuse_connection
            .as_ref()
            .map(|v| ("reuse_connection", v.span())),
    ];
    let command_key = [raw.command.as_ref().map(|v| ("command", v.span()))];
    let unused: &[Option<(&str, std::ops::Range<usize>)>] = match kind {
        "tcp" => &[http_keys.as_slice(), command_key.as_slice()].concat(),
        "http" | "https" => &command_key,
        "command" => &http_keys,
        _ => &[],
    };
    if let Some((key, span)) = unused.iter().flatten().next() {
        return Err(err(
            file.at(span.clone()),
            format!("{key} does not apply to a {kind} check; remove it"),
        ));
    }
    let probe =
        match kind {
            "tcp" => Probe::Tcp,
            "http" => Probe::Http(http()?),
            "https" => Probe::Https(http()?),
            "command" => match &raw.command {
                Some(c) if c.get_ref().first().is_some_and(|p| !p.is_empty()) => Probe::Command {
                    argv: c.get_ref().clone(),
                },
                Some(c) => return Err(file.err_at(
                    c,
                    "command must start with the program, e.g. [\"/usr/local/bin/check\", \"arg\"]",
                )),
                None => {
                    return Err(file.err_at(
                        &raw.kind,
                        "a command check needs command = [\"/path/to/check\", \"arg\"]",
                    ))
                }
            },
            other => {
                return Err(file.err_at(
                    &raw.kind,
                    format!("unknown check type {other:?}; expected tcp, http, https or command"),
                ))
            }
        };
    let interval = ms(file, &raw.interval_ms, 2000, "interval_ms")?;
    let timeout = ms(file, &raw.timeout_ms, 1000, "timeout_ms")?;
    if timeout > interval {
        let (t, i) = (timeout.as_millis(), interval.as_millis());
        return Err(match (&raw.timeout_ms, &raw.interval_ms) {
            (Some(v), _) => file.err_at(
                v,
                format!("timeout_ms {t} is longer than interval_ms {i}; make it at most {i}"),
            ),
            (None, Some(v)) => file.err_at(
                v,
                format!(
                    "interval_ms {i} is shorter than the default timeout_ms {t}; \
                     also set timeout_ms = {i} or less"
                ),
            ),
            (None, None) => err(at, "timeout_ms is longer than interval_ms"),
        });
    }
    let count = |v: &Option<Spanned<i64>>, what| -> Result<u32, ConfigError> {
        v.as_ref()
            .map_or(Ok(3), |v| int_in(file, v, 1, 100, what).map(|n| n as u32))
    };
    let on_failure = match raw.on_failure.as_ref().map(|o| (o, o.get_ref().as_str())) {
        None | Some((_, "quiesce")) => OnFailure::Quiesce,
        Some((_, "remove")) => OnFailure::Remove,
        Some((o, other)) => {
            return Err(file.err_at(
                o,
                format!("unknown on_failure {other:?}; expected quiesce (weight 0) or remove"),
            ))
        }
    };
    Ok(HealthCheck {
        probe,
        port: raw
            .port
            .as_ref()
            .map(|p| int_in(file, p, 1, 65535, "check port").map(|n| n as u16))
            .transpose()?,
        interval,
        timeout,
        rise: count(&raw.rise, "rise")?,
        fall: count(&raw.fall, "fall")?,
        on_failure,
    })
}

/// The check's `Host` header: one header value (no control characters or spaces), and for
/// https also a valid TLS server name once any `:port` is left off.
fn check_host(file: &ConfigFile, v: &Spanned<String>, tls: bool) -> Result<String, ConfigError> {
    let host = v.get_ref();
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(file.err_at(
            v,
            format!("check host {host:?} must be a host name, e.g. \"www.example.com\" (no spaces or line breaks)"),
        ));
    }
    if tls {
        super::health::probe::tls_server_name(host).map_err(|m| file.err_at(v, m))?;
    }
    Ok(host.clone())
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

fn flag<'a>(name: &str, value: &'a str) -> Src<'a> {
    Src {
        value,
        at: Loc::Text(format!("{name} {value}")),
    }
}

/// The one service described by the quick flags.
fn service_from_flags(flags: &DirectorFlags, vip: &str) -> Result<ServiceDesired, ConfigError> {
    let addr = parse_vip_str(vip).map_err(|m| err(format!("--vip {vip}"), m))?;
    let protocol = match &flags.protocol {
        Some(p) => parse_protocol(&flag("--protocol", p))?,
        None => Protocol::Tcp,
    };
    let timeout = match &flags.persistence {
        Some(p) => match p.parse::<u32>() {
            Ok(t) if t <= MAX_PERSISTENCE => t,
            _ => {
                return Err(err(
                    format!("--persistence {p}"),
                    format!("expected seconds 0..={MAX_PERSISTENCE}, e.g. 300"),
                ))
            }
        },
        None => 0,
    };
    let port = match &flags.port {
        // Port 0: every port, for a persistent service only (as in the file).
        Some(p) if p == "0" && timeout > 0 => 0,
        Some(p) => parse_port_str(&flag("--port", p))?,
        None => return Err(ConfigError("--vip needs --port (1..=65535)".to_string())),
    };
    let scheduler = match &flags.scheduler {
        Some(s) => parse_scheduler(&flag("--scheduler", s))?,
        None => "wlc".to_string(),
    };
    let forward = match &flags.forward {
        Some(f) => parse_forward(&flag("--forward", f))?,
        None => Forward::Route,
    };
    let af = family_of(&addr);
    let mut reals: Vec<Destination> = Vec::new();
    for r in &flags.reals {
        let src = flag("--real", r);
        let (raddr, rport) = parse_real_addr(&src, port)?;
        same_port(&src, forward, rport, port)?;
        if family_of(&raddr) != af {
            return Err(err(
                &src.at,
                "real server is not of the VIP's address family",
            ));
        }
        if reals.iter().any(|d| d.addr == raddr && d.port == rport) {
            return Err(err(&src.at, "real server given twice; give each once"));
        }
        reals.push(Destination {
            addr: raddr,
            port: rport,
            forward,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
        });
    }
    let persistent = if timeout > 0 {
        ServiceFlags::PERSISTENT.0
    } else {
        0
    };
    Ok(ServiceDesired {
        service: Service {
            key: ServiceKey::Addr {
                protocol,
                addr,
                port,
            },
            scheduler,
            flags: ServiceFlags(persistent),
            timeout,
            netmask: if af == AddressFamily::V4 {
                u32::MAX
            } else {
                128
            },
            pe_name: None,
        },
        reals,
        check: None,
        sorry: None,
    })
}

/// Builds the validated director state from the `[director]` table and the quick flags;
/// `--vip` replaces the file's services with the one service the flags describe.
pub fn director(file: &ConfigFile, flags: &DirectorFlags) -> Result<DirectorDesired, ConfigError> {
    let empty = RawDirector::default();
    let raw = file.raw.director.as_ref().unwrap_or(&empty);
    let interface = match (&flags.interface, &raw.interface) {
        (Some(i), _) => {
            check_ifname(i).map_err(|m| err(format!("--interface {i}"), m))?;
            i.clone()
        }
        (None, Some(i)) => {
            check_ifname(i.get_ref()).map_err(|m| file.err_at(i, m))?;
            i.get_ref().clone()
        }
        (None, None) => {
            return Err(ConfigError(
                "no director interface; pass --interface IF or set interface = \"eth0\" under [director]".into(),
            ))
        }
    };
    let garp_count = match &raw.garp_count {
        Some(c) => int_in(file, c, 0, 100, "garp_count")? as u32,
        None => 3,
    };
    let garp_interval = match &raw.garp_interval_ms {
        Some(ms) => Duration::from_millis(int_in(file, ms, 0, 10_000, "garp_interval_ms")? as u64),
        None => Duration::from_millis(200),
    };
    // `director up` waits for the whole announcement, and a neighbour that missed the first
    // rounds should not wait long for the next: keep one announcement's span short.
    let span = garp_interval * garp_count.saturating_sub(1);
    if span > MAX_GARP_SPAN {
        let msg = format!(
            "gratuitous ARP would take {} ms ((garp_count - 1) x garp_interval_ms); keep it at \
             most {} ms, e.g. garp_count = 3 and garp_interval_ms = 200",
            span.as_millis(),
            MAX_GARP_SPAN.as_millis()
        );
        return Err(match (&raw.garp_interval_ms, &raw.garp_count) {
            (Some(at), _) | (None, Some(at)) => file.err_at(at, msg),
            (None, None) => ConfigError(msg),
        });
    }
    let services =
        match &flags.vip {
            Some(vip) => vec![service_from_flags(flags, vip)?],
            None if flags.describes_service() => return Err(ConfigError(
                "--port, --protocol, --scheduler, --persistence, --forward and --real describe \
                 the service of --vip; add --vip ADDR (or drop them to use the config's services)"
                    .into(),
            )),
            None => {
                let mut out: Vec<ServiceDesired> = Vec::with_capacity(raw.services.len());
                let mut keys = std::collections::HashSet::with_capacity(raw.services.len());
                for (i, rs) in raw.services.iter().enumerate() {
                    let s = service(file, rs, i)?;
                    if !keys.insert(s.service.key.clone()) {
                        let at = match (&rs.vip, &rs.fwmark) {
                            (Some(v), _) => file.at(v.span()),
                            (None, Some(m)) => file.at(m.span()),
                            (None, None) => file.name().to_string(),
                        };
                        return Err(err(
                            at,
                            format!(
                                "service {} is defined twice; define each service once",
                                s.service.key
                            ),
                        ));
                    }
                    out.push(s);
                }
                out
            }
        };
    if services.is_empty() {
        return Err(ConfigError(
            "no director service; pass --vip/--port/--real or add [[director.service]] to the config".into(),
        ));
    }
    Ok(DirectorDesired {
        interface,
        garp_count,
        garp_interval,
        services,
    })
}

#[cfg(test)]
mod tests;
