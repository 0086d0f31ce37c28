//! The director config's values one at a time — protocol, scheduler, forwarding method,
//! ports, real server addresses, netmasks — each with where it came from (`file:line:col` or
//! `--flag`), shared by the file's tables and the quick flags.
//!
//! Owns the value parsers and the error text that names a value's origin. It must not put
//! values together into a service or a check (`service` and `check` do), nor read a raw
//! table beyond the one value it is handed.

use super::SCHEDULERS;
use crate::config_file::{ConfigError, ConfigFile};
use crate::kernel::ipvs::{AddressFamily, Forward, Protocol};
use std::net::{IpAddr, SocketAddr};
use toml::Spanned;

/// A value and the name of where it came from, for error messages.
pub(super) struct Src<'a> {
    pub(super) value: &'a str,
    pub(super) at: Loc<'a>,
}

/// Where a value came from; rendered (`file:line:col`) only when an error names it, so that
/// validating thousands of values costs no formatting.
pub(super) enum Loc<'a> {
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

pub(super) fn err(at: impl std::fmt::Display, msg: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{at}: {msg}"))
}

pub(super) fn spanned<'a>(file: &'a ConfigFile, v: &'a Spanned<String>) -> Src<'a> {
    Src {
        value: v.get_ref(),
        at: Loc::Span(file, v.span()),
    }
}

pub(super) fn int_in(
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

pub(super) fn parse_protocol(src: &Src) -> Result<Protocol, ConfigError> {
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

pub(super) fn parse_scheduler(src: &Src) -> Result<String, ConfigError> {
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

pub(super) fn parse_forward(src: &Src) -> Result<Forward, ConfigError> {
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

pub(super) fn parse_port_str(src: &Src) -> Result<u16, ConfigError> {
    match src.value.parse::<i64>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(err(
            &src.at,
            format!("port {:?} is out of range; expected 1..=65535", src.value),
        )),
    }
}

/// `ADDR` or `ADDR:PORT` or `[V6]:PORT`; the port defaults to the service's.
pub(super) fn parse_real_addr(src: &Src, default_port: u16) -> Result<(IpAddr, u16), ConfigError> {
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
pub(super) fn same_port(
    src: &Src,
    forward: Forward,
    port: u16,
    service_port: u16,
) -> Result<(), ConfigError> {
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

/// Persistence netmask: an IPv4 dotted mask (contiguous) or `/N` for IPv6 (1..=128).
pub(super) fn parse_netmask(src: &Src, af: AddressFamily) -> Result<u32, ConfigError> {
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

pub(super) fn family_of(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::V4,
        IpAddr::V6(_) => AddressFamily::V6,
    }
}

pub(super) fn flag<'a>(name: &str, value: &'a str) -> Src<'a> {
    Src {
        value,
        at: Loc::Text(format!("{name} {value}")),
    }
}
