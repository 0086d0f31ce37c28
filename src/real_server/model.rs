//! The real server's own vocabulary: where its VIPs live, how ARP is kept off the LAN, and
//! its validated desired state. The kernel vocabulary both sides share is `crate::model`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

/// Where the VIPs live on a real server: a device that never answers ARP by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "name")]
pub enum Device {
    /// The loopback device: always there, never ARPs.
    Loopback,
    /// A dummy device rs-agent creates (and deletes on `down`): NOARP by construction.
    Dummy(String),
}

impl Device {
    pub fn name(&self) -> &str {
        match self {
            Device::Loopback => "lo",
            Device::Dummy(name) => name,
        }
    }
}

/// How ARP for the VIPs is kept off the LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArpMethod {
    /// `arp_ignore=1` / `arp_announce=2` on the LAN-facing interfaces.
    Sysctl,
    /// An rs-agent-owned nftables table in the `arp` family (the arptables DROP/mangle recipe).
    Nft,
}

impl fmt::Display for ArpMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArpMethod::Sysctl => "sysctl",
            ArpMethod::Nft => "nft",
        })
    }
}

/// Validated real-server configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealServerDesired {
    pub vips: Vec<IpAddr>,
    pub device: Device,
    pub arp: ArpMethod,
    /// LAN-facing interfaces; `None` = every ARP-capable, non-loopback interface with IPv4
    /// (up or down).
    pub interfaces: Option<Vec<String>>,
}
