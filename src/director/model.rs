//! The director's desired model: the validated configuration (services, their real servers,
//! their health checks) as plain data. Built by `director::config`, read by the plan, the
//! health checks and the run loop; no I/O, and it imports nothing of the director's own.

use crate::kernel::ipvs::{Destination, Service, ServiceKey};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::Duration;

/// One virtual service and its real servers, as they must be in the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDesired {
    pub service: Service,
    pub reals: Vec<Destination>,
    /// Health check of every real server (none: all are taken as healthy).
    #[serde(default)]
    pub check: Option<HealthCheck>,
    /// Used, at weight 1, only while the service is below its quorum (by default: while every
    /// real server of the service is down).
    #[serde(default)]
    pub sorry: Option<Destination>,
    /// The weight of healthy real servers the service needs to be up (keepalived's `quorum`
    /// and `hysteresis`).
    #[serde(default)]
    pub quorum: Quorum,
    /// Commands run when the service gains (`up`) or loses (`down`) its quorum.
    #[serde(default, skip_serializing_if = "Notify::is_empty")]
    pub quorum_notify: Notify,
    /// Commands run when a real server's verdict flips, for the real servers that have any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub real_notify: Vec<RealNotify>,
}

impl ServiceDesired {
    /// The commands of the real server at `addr`:`port`, if it has any.
    pub fn notify_of(&self, addr: IpAddr, port: u16) -> Option<&Notify> {
        self.real_notify
            .iter()
            .find(|r| r.addr == addr && r.port == port)
            .map(|r| &r.notify)
    }
}

/// keepalived's quorum: the service is up while the weights of its healthy real servers add
/// up to `weight`; once up it goes down below `weight - hysteresis`, once down it comes up
/// at `weight + hysteresis`. Below it the sorry server serves (see `health::effective`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorum {
    pub weight: u32,
    pub hysteresis: u32,
}

impl Default for Quorum {
    /// Up while any healthy real server has a weight: the sorry server only when none has.
    fn default() -> Self {
        Quorum {
            weight: 1,
            hysteresis: 0,
        }
    }
}

/// Commands run on a change of state: argv arrays, run without a shell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<Vec<String>>,
}

impl Notify {
    pub fn is_empty(&self) -> bool {
        self.up.is_none() && self.down.is_none()
    }

    /// The command for a change to `up` (true) or down.
    pub fn on(&self, up: bool) -> Option<&[String]> {
        match up {
            true => self.up.as_deref(),
            false => self.down.as_deref(),
        }
    }
}

/// `notify_up` / `notify_down` of one real server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealNotify {
    pub addr: IpAddr,
    pub port: u16,
    #[serde(flatten)]
    pub notify: Notify,
}

/// Validated director configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// The metrics endpoint of `director run` (`metrics_listen`, `metrics_per_real_server`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsOptions {
    pub listen: std::net::SocketAddr,
    /// Per real server series; off for very large tables (the per-service ones stay).
    pub per_real_server: bool,
}

/// What a check does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Probe {
    /// A TCP connection to the real server.
    Tcp,
    /// An HTTP GET; healthy when the status matches and the body contains `body` (if set).
    Http(HttpProbe),
    /// The same over TLS (certificates are not verified: a health check, not a client).
    Https(HttpProbe),
    /// A command; healthy when it exits 0. Gets RS_ADDR, RS_PORT, VIP, VPORT in its env.
    /// `dynamic` (keepalived's `misc_dynamic`): exit 2..=255 is healthy too, at weight
    /// code − 2; exit 0 keeps the weight as it is.
    Command {
        argv: Vec<String>,
        #[serde(default)]
        dynamic: bool,
    },
    /// A UDP datagram; healthy on a reply (or, without `expect_reply`, on no ICMP error).
    Udp(UdpProbe),
    /// A DNS query over UDP; healthy on a NOERROR reply with an answer record.
    Dns(DnsProbe),
    /// An ICMP (ICMPv6) echo request; healthy on the matching echo reply.
    Icmp,
    /// An SMTP banner (`220`), optionally `EHLO` answered with `250`; then `QUIT`.
    Smtp(SmtpProbe),
}

/// What a `udp` check sends and what it takes for an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdpProbe {
    /// The datagram (may be empty).
    pub payload: Vec<u8>,
    /// Bytes the reply must contain.
    pub expect: Option<Vec<u8>>,
    /// False: healthy when no ICMP port unreachable comes back within the timeout.
    pub expect_reply: bool,
}

/// The question a `dns` check asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsProbe {
    /// The name asked for, without a trailing dot ("" is the root).
    pub name: String,
    pub qtype: DnsType,
    /// An address the answer must hold (A and AAAA queries).
    pub expect: Option<IpAddr>,
}

/// The record types a `dns` check can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DnsType {
    A,
    Aaaa,
    Ns,
    Mx,
    Txt,
    Soa,
    Cname,
    Ptr,
    Srv,
}

impl DnsType {
    pub const ALL: [DnsType; 9] = [
        DnsType::A,
        DnsType::Aaaa,
        DnsType::Ns,
        DnsType::Mx,
        DnsType::Txt,
        DnsType::Soa,
        DnsType::Cname,
        DnsType::Ptr,
        DnsType::Srv,
    ];

    /// The TYPE value on the wire (RFC 1035 3.2.2, RFC 3596, RFC 2782).
    pub fn code(self) -> u16 {
        match self {
            DnsType::A => 1,
            DnsType::Ns => 2,
            DnsType::Cname => 5,
            DnsType::Soa => 6,
            DnsType::Ptr => 12,
            DnsType::Mx => 15,
            DnsType::Txt => 16,
            DnsType::Aaaa => 28,
            DnsType::Srv => 33,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DnsType::A => "A",
            DnsType::Aaaa => "AAAA",
            DnsType::Ns => "NS",
            DnsType::Mx => "MX",
            DnsType::Txt => "TXT",
            DnsType::Soa => "SOA",
            DnsType::Cname => "CNAME",
            DnsType::Ptr => "PTR",
            DnsType::Srv => "SRV",
        }
    }
}

/// What an `smtp` check says after the banner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpProbe {
    /// Send `EHLO helo` and require `250`.
    pub helo: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpProbe {
    pub path: String,
    pub status: u16,
    pub body: Option<String>,
    /// Host header; default: the real server's address.
    pub host: Option<String>,
    /// Keep the connection open between checks (HTTP keep-alive) instead of opening one per
    /// check: no TCP (and TLS) handshake per check. See docs/health-checks.md.
    #[serde(default)]
    pub reuse_connection: bool,
}

/// What happens to a real server that fails its check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Weight 0: no new connections, existing ones finish (the default).
    Quiesce,
    /// Delete the destination.
    Remove,
}

/// A service's health check, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub probe: Probe,
    /// Port to check; default: the real server's port.
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes that bring a down server back.
    pub rise: u32,
    /// Consecutive failures that take an up server out.
    pub fall: u32,
    pub on_failure: OnFailure,
    /// Real servers start down, until `rise` good checks bring them up (keepalived's `alpha`).
    #[serde(default)]
    pub alpha: bool,
}

impl HealthCheck {
    /// True when the check holds its connection open between checks (`reuse_connection`).
    pub fn keeps_connection(&self) -> bool {
        matches!(&self.probe, Probe::Http(h) | Probe::Https(h) if h.reuse_connection)
    }
}
