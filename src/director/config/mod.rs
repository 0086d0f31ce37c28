//! `[director]` config + quick flags → validated director desired state.
//!
//! Every error names its input (`file:line:col` or `--flag`) and the fix, and is reported
//! before anything touches the kernel. The stages: the raw serde tables (`raw`), each value
//! (`values`), each service (`service`) with its check (`check`), then the whole director
//! here — its interface, announcements and the set of services, from the file or the flags.
//! Nothing here reads the kernel or the state directory.

mod check;
mod events;
mod probes;
mod service;
mod values;

pub use super::model::{DirectorDesired, ServiceDesired};
use crate::config_file::director::RawDirector;
use crate::config_file::{check_ifname, parse_vip_str, ConfigError, ConfigFile};
use crate::kernel::ipvs::{
    AddressFamily, Destination, Forward, Protocol, Service, ServiceFlags, ServiceKey,
};
use service::service;
use std::time::Duration;
use values::{
    err, family_of, flag, int_in, parse_forward, parse_port_str, parse_protocol, parse_real_addr,
    parse_scheduler, same_port,
};

/// Every scheduler the Linux kernel ships (net/netfilter/ipvs/ip_vs_*.c).
pub const SCHEDULERS: [&str; 14] = [
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

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

/// The one service described by the quick flags.
fn service_from_flags(flags: &DirectorFlags, vip: &str) -> Result<ServiceDesired, ConfigError> {
    let addr = parse_vip_str(vip).map_err(|m| err(format!("--vip {vip}"), m))?;
    let protocol = match &flags.protocol {
        Some(p) => parse_protocol(&flag("--protocol", p))?,
        None => Protocol::Tcp,
    };
    let timeout = flag_persistence(flags)?;
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
    let reals = flag_reals(flags, af, port, forward)?;
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
        quorum: Default::default(),
        quorum_notify: Default::default(),
        real_notify: Vec::new(),
    })
}

/// `--persistence SECONDS` (0, the default: not persistent).
fn flag_persistence(flags: &DirectorFlags) -> Result<u32, ConfigError> {
    match &flags.persistence {
        Some(p) => match p.parse::<u32>() {
            Ok(t) if t <= MAX_PERSISTENCE => Ok(t),
            _ => Err(err(
                format!("--persistence {p}"),
                format!("expected seconds 0..={MAX_PERSISTENCE}, e.g. 300"),
            )),
        },
        None => Ok(0),
    }
}

/// The `--real` servers, all forwarded by `--forward` at weight 1.
fn flag_reals(
    flags: &DirectorFlags,
    af: AddressFamily,
    port: u16,
    forward: Forward,
) -> Result<Vec<Destination>, ConfigError> {
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
    Ok(reals)
}

/// Builds the validated director state from the `[director]` table and the quick flags;
/// `--vip` replaces the file's services with the one service the flags describe.
pub fn director(file: &ConfigFile, flags: &DirectorFlags) -> Result<DirectorDesired, ConfigError> {
    let empty = RawDirector::default();
    let raw = file.raw.director.as_ref().unwrap_or(&empty);
    let interface = interface(file, raw, flags)?;
    let (garp_count, garp_interval) = announcement(file, raw)?;
    let services =
        match &flags.vip {
            Some(vip) => vec![service_from_flags(flags, vip)?],
            None if flags.describes_service() => return Err(ConfigError(
                "--port, --protocol, --scheduler, --persistence, --forward and --real describe \
                 the service of --vip; add --vip ADDR (or drop them to use the config's services)"
                    .into(),
            )),
            None => file_services(file, raw)?,
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

/// `director run`'s metrics endpoint: `--metrics-listen`, else the file's `metrics_listen`,
/// else none; with the file's `metrics_per_real_server` (default true).
pub fn metrics(
    file: &ConfigFile,
    listen_flag: Option<&str>,
) -> Result<Option<super::model::MetricsOptions>, ConfigError> {
    let raw = file.raw.director.as_ref();
    let value = raw.and_then(|r| r.metrics_listen.as_ref());
    let listen = crate::config_file::listen_addr(file, ("metrics-listen", listen_flag), value)?;
    Ok(listen.map(|listen| super::model::MetricsOptions {
        listen,
        per_real_server: raw.and_then(|r| r.metrics_per_real_server).unwrap_or(true),
    }))
}

/// Where the VIPs live: `--interface`, else the file's `interface`.
fn interface(
    file: &ConfigFile,
    raw: &RawDirector,
    flags: &DirectorFlags,
) -> Result<String, ConfigError> {
    match (&flags.interface, &raw.interface) {
        (Some(i), _) => {
            check_ifname(i).map_err(|m| err(format!("--interface {i}"), m))?;
            Ok(i.clone())
        }
        (None, Some(i)) => {
            check_ifname(i.get_ref()).map_err(|m| file.err_at(i, m))?;
            Ok(i.get_ref().clone())
        }
        (None, None) => Err(ConfigError(
            "no director interface; pass --interface IF or set interface = \"eth0\" under [director]".into(),
        )),
    }
}

/// How many gratuitous ARP/NA rounds announce a VIP, and how far apart.
fn announcement(file: &ConfigFile, raw: &RawDirector) -> Result<(u32, Duration), ConfigError> {
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
    Ok((garp_count, garp_interval))
}

/// The file's `[[director.service]]` tables, each service defined once.
fn file_services(file: &ConfigFile, raw: &RawDirector) -> Result<Vec<ServiceDesired>, ConfigError> {
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
    Ok(out)
}

#[cfg(test)]
mod probe_tests;
#[cfg(test)]
mod tests;
