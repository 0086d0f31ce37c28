//! Kernel IPVS over generic netlink (family "IPVS", include/uapi/linux/ip_vs.h).
//!
//! `wire` encodes and decodes the messages (pure, unit-tested against the header's byte
//! layout); `client` owns the socket. The types here are plain data shared with the planner.

mod client;
pub mod wire;

pub use client::{IpvsClient, IpvsInfo};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressFamily {
    V4,
    V6,
}

impl AddressFamily {
    pub fn of(ip: &IpAddr) -> Self {
        if ip.is_ipv4() {
            Self::V4
        } else {
            Self::V6
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        }
    }
}

/// What identifies a virtual service in the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ServiceKey {
    Addr {
        protocol: Protocol,
        addr: IpAddr,
        port: u16,
    },
    Fwmark {
        af: AddressFamily,
        mark: u32,
    },
}

impl ServiceKey {
    pub fn family(&self) -> AddressFamily {
        match self {
            Self::Addr { addr, .. } => AddressFamily::of(addr),
            Self::Fwmark { af, .. } => *af,
        }
    }
}

/// `TCP 192.0.2.100:80`, `FWM 7 IPv6`: the way `ipvsadm -Ln` names services.
impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr {
                protocol,
                addr,
                port,
            } => {
                write!(f, "{} {}", protocol.name(), SocketAddr::new(*addr, *port))
            }
            Self::Fwmark {
                af: AddressFamily::V4,
                mark,
            } => write!(f, "FWM {mark}"),
            Self::Fwmark {
                af: AddressFamily::V6,
                mark,
            } => write!(f, "FWM {mark} IPv6"),
        }
    }
}

/// IP_VS_SVC_F_* service flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceFlags(pub u32);

impl ServiceFlags {
    pub const PERSISTENT: Self = Self(0x1);
    /// Set by the kernel on every service in its table; never ours to set or compare.
    pub const HASHED: Self = Self(0x2);
    pub const ONEPACKET: Self = Self(0x4);
    /// IP_VS_SVC_F_SCHED1: sh/mh "fallback" to another server when the chosen one is down.
    pub const SCHED_SH_FALLBACK: Self = Self(0x8);
    /// IP_VS_SVC_F_SCHED2: sh/mh hash on the source port too.
    pub const SCHED_SH_PORT: Self = Self(0x10);
    pub const SCHED3: Self = Self(0x20);

    pub fn has(self, bit: Self) -> bool {
        self.0 & bit.0 != 0
    }
}

/// A virtual service as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub key: ServiceKey,
    pub scheduler: String,
    pub flags: ServiceFlags,
    /// Persistence timeout in seconds (0 = not persistent).
    pub timeout: u32,
    /// Persistence granularity: an IPv4 mask as a number (255.255.255.255 = u32::MAX), or an
    /// IPv6 prefix length.
    pub netmask: u32,
    /// Persistence engine (e.g. "sip"), rarely used.
    pub pe_name: Option<String>,
}

/// IP_VS_CONN_F_* forwarding methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forward {
    Masq,
    Local,
    Tunnel,
    /// Direct routing ("gatewaying"), LVS-DR.
    Route,
    Bypass,
}

impl Forward {
    pub fn code(self) -> u32 {
        match self {
            Self::Masq => 0,
            Self::Local => 1,
            Self::Tunnel => 2,
            Self::Route => 3,
            Self::Bypass => 4,
        }
    }

    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code & 0x7 {
            0 => Self::Masq,
            1 => Self::Local,
            2 => Self::Tunnel,
            3 => Self::Route,
            4 => Self::Bypass,
            _ => return None,
        })
    }

    /// As `ipvsadm -Ln` shows it.
    pub fn ipvsadm_name(self) -> &'static str {
        match self {
            Self::Masq => "Masq",
            Self::Local => "Local",
            Self::Tunnel => "Tunnel",
            Self::Route => "Route",
            Self::Bypass => "Bypass",
        }
    }
}

/// A real server of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    pub addr: IpAddr,
    pub port: u16,
    pub forward: Forward,
    pub weight: u32,
    pub upper_threshold: u32,
    pub lower_threshold: u32,
}

/// What identifies a destination within its service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestKey {
    pub addr: IpAddr,
    pub port: u16,
}

impl fmt::Display for DestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", SocketAddr::new(self.addr, self.port))
    }
}

/// One change to the kernel's IPVS table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpvsOp {
    AddService(Service),
    EditService(Service),
    DelService(ServiceKey),
    AddDest(ServiceKey, Destination),
    EditDest(ServiceKey, Destination),
    DelDest(ServiceKey, DestKey),
}

impl IpvsOp {
    pub fn service_key(&self) -> &ServiceKey {
        match self {
            Self::AddService(s) | Self::EditService(s) => &s.key,
            Self::DelService(k)
            | Self::AddDest(k, _)
            | Self::EditDest(k, _)
            | Self::DelDest(k, _) => k,
        }
    }
}

/// One line per op, for logs, `--dry-run` and errors.
impl fmt::Display for IpvsOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dest = |d: &Destination| DestKey {
            addr: d.addr,
            port: d.port,
        };
        match self {
            Self::AddService(s) => write!(f, "add service {} scheduler {}", s.key, s.scheduler),
            Self::EditService(s) => write!(f, "edit service {} scheduler {}", s.key, s.scheduler),
            Self::DelService(k) => write!(f, "delete service {k}"),
            Self::AddDest(k, d) => write!(
                f,
                "add real server {} to {k} ({} weight {})",
                dest(d),
                d.forward.ipvsadm_name(),
                d.weight
            ),
            Self::EditDest(k, d) => write!(
                f,
                "edit real server {} of {k} ({} weight {})",
                dest(d),
                d.forward.ipvsadm_name(),
                d.weight
            ),
            Self::DelDest(k, d) => write!(f, "delete real server {d} from {k}"),
        }
    }
}

/// Counters the kernel keeps per service and per destination (IPVS_STATS_ATTR_*).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedDestination {
    pub dest: Destination,
    /// IPVS_DEST_ATTR_TUN_TYPE of a tunnel destination: 0 IPIP (what rs-agent's `tunnel`
    /// means, and all it makes), 1 GUE, 2 GRE (`ipvsadm --tun-type`).
    #[serde(default)]
    pub tun_type: u8,
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub persist_conns: u32,
    pub stats: Stats,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedService {
    pub service: Service,
    pub stats: Stats,
    pub destinations: Vec<ObservedDestination>,
}

#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    #[error("the kernel has no IPVS (generic netlink family \"IPVS\" not found); load it with `modprobe ip_vs` (and the scheduler module, e.g. ip_vs_rr)")]
    ModuleAbsent,
    #[error("IPVS netlink: {context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{op}: {source}{hint}")]
    Op {
        op: String,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("IPVS netlink: malformed reply: {0}")]
    Decode(#[from] wire::WireError),
    /// A thread dumping destinations panicked (said as a malformed reply: the dump is lost).
    #[error("IPVS netlink: malformed reply: a dump thread panicked")]
    DumpPanicked,
}

impl IpvsError {
    /// The kernel said EPERM: the caller lacks CAP_NET_ADMIN.
    pub fn permission_denied(&self) -> bool {
        match self {
            IpvsError::Io { source, .. } | IpvsError::Op { source, .. } => {
                source.raw_os_error() == Some(libc::EPERM)
            }
            _ => false,
        }
    }

    /// Fix hints for the errno values operators actually meet.
    pub(crate) fn hint_for(errno: i32, op: &IpvsOp) -> &'static str {
        match (errno, op) {
            (libc::ENOENT, IpvsOp::AddService(_) | IpvsOp::EditService(_)) => {
                " (scheduler module missing? try `modprobe ip_vs_<scheduler>`)"
            }
            (libc::EPERM, _) => " (needs CAP_NET_ADMIN: run as root)",
            (libc::EINVAL, IpvsOp::AddDest(..) | IpvsOp::EditDest(..)) => {
                " (the kernel refuses destinations it cannot route to, e.g. \"address not unicast\")"
            }
            _ => "",
        }
    }
}
