//! Builders the unit tests share: the kernel's view of a node (links, addresses, sysctls) and
//! IPVS services and destinations, each from the few literals a test case varies.

use crate::kernel::ipvs::{Destination, Forward, Protocol, Service, ServiceFlags, ServiceKey};
use crate::model::{Addr, Dad, Link, SysctlKey, Sysctls};
use std::net::IpAddr;

/// An address literal of a test.
pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().expect("test literal")
}

/// An up link with a carrier and MAC 02:00:00:00:00:<index>; `lo` is the loopback, and `lo`
/// and dummy devices do not ARP.
pub(crate) fn link(index: u32, name: &str, kind: Option<&str>) -> Link {
    Link {
        index,
        name: name.into(),
        up: true,
        carrier: true,
        loopback: name == "lo",
        noarp: name == "lo" || kind == Some("dummy"),
        kind: kind.map(str::to_string),
        mac: vec![2, 0, 0, 0, 0, index as u8],
    }
}

/// A primary address without a label, DAD done, made by routing protocol `proto` (0: by
/// hand; `ADDR_PROTO`: by rs-agent).
pub(crate) fn addr(ifname: &str, ip: &str, prefix: u8, proto: u8) -> Addr {
    Addr {
        ifname: ifname.into(),
        ip: self::ip(ip),
        prefix,
        label: None,
        proto,
        secondary: false,
        dad: Dad::Done,
    }
}

/// Every ARP sysctl of `ifaces` at the kernel default (0).
pub(crate) fn default_sysctls(ifaces: &[&str]) -> Sysctls {
    let mut sysctls = Sysctls::new();
    for iface in ifaces {
        for key in SysctlKey::ALL {
            sysctls.insert((iface.to_string(), key), 0);
        }
    }
    sysctls
}

/// The TCP service `vip:port`.
pub(crate) fn tcp(vip: &str, port: u16) -> ServiceKey {
    ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: ip(vip),
        port,
    }
}

/// A service as a config gives it: no flags, no persistence, no netmask.
pub(crate) fn service(key: ServiceKey, scheduler: &str) -> Service {
    Service {
        key,
        scheduler: scheduler.into(),
        flags: ServiceFlags::default(),
        timeout: 0,
        netmask: u32::MAX,
        pe_name: None,
    }
}

/// A direct-routing destination `addr:80` without thresholds.
pub(crate) fn dr(addr: &str, weight: u32) -> Destination {
    Destination {
        addr: ip(addr),
        port: 80,
        forward: Forward::Route,
        weight,
        upper_threshold: 0,
        lower_threshold: 0,
    }
}
