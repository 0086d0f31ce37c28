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
    /// Used, at weight 1, only while every real server of the service is down.
    #[serde(default)]
    pub sorry: Option<Destination>,
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
    Command { argv: Vec<String> },
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
}

impl HealthCheck {
    /// True when the check holds its connection open between checks (`reuse_connection`).
    pub fn keeps_connection(&self) -> bool {
        matches!(&self.probe, Probe::Http(h) | Probe::Https(h) if h.reuse_connection)
    }
}
