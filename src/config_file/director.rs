//! The `[director]` table as written: serde types with spans, no validation (that is
//! `director::config`'s). Imports nothing of the crate.

use serde::Deserialize;
use toml::Spanned;

/// `[director]`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirector {
    pub interface: Option<Spanned<String>>,
    pub garp_count: Option<Spanned<i64>>,
    pub garp_interval_ms: Option<Spanned<i64>>,
    /// `director run`'s /metrics endpoint, ADDR:PORT.
    pub metrics_listen: Option<Spanned<String>>,
    /// Per real server series on /metrics (default true).
    pub metrics_per_real_server: Option<bool>,
    #[serde(default, rename = "service")]
    pub services: Vec<RawService>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub vip: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub protocol: Option<Spanned<String>>,
    pub fwmark: Option<Spanned<i64>>,
    pub family: Option<Spanned<String>>,
    pub scheduler: Option<Spanned<String>>,
    #[serde(default)]
    pub scheduler_flags: Vec<Spanned<String>>,
    pub persistence: Option<Spanned<i64>>,
    pub persistence_netmask: Option<Spanned<String>>,
    pub one_packet: Option<bool>,
    #[serde(default, rename = "real")]
    pub reals: Vec<RawReal>,
    /// Shorthand for real servers with the defaults (dr, weight 1): `reals = ["ADDR[:PORT]", ...]`.
    #[serde(default, rename = "reals")]
    pub real_list: Vec<Spanned<String>>,
    pub check: Option<RawCheck>,
    pub sorry_server: Option<Spanned<String>>,
    /// keepalived's quorum: the weight of healthy real servers the service needs.
    pub quorum: Option<Spanned<i64>>,
    pub hysteresis: Option<Spanned<i64>>,
    /// Commands (argv) run when the service gains or loses its quorum.
    pub quorum_up: Option<Spanned<Vec<String>>>,
    pub quorum_down: Option<Spanned<Vec<String>>>,
    /// Read only to say that a service's commands are quorum_up / quorum_down.
    pub notify_up: Option<Spanned<toml::Value>>,
    pub notify_down: Option<Spanned<toml::Value>>,
}

/// `[director.service.check]`: see docs/health-checks.md.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    pub port: Option<Spanned<i64>>,
    pub path: Option<Spanned<String>>,
    pub status: Option<Spanned<i64>>,
    pub body: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub reuse_connection: Option<Spanned<bool>>,
    pub command: Option<Spanned<Vec<String>>>,
    pub interval_ms: Option<Spanned<i64>>,
    pub timeout_ms: Option<Spanned<i64>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
    pub on_failure: Option<Spanned<String>>,
    /// Real servers start down until checked good (keepalived's alpha).
    pub alpha: Option<Spanned<bool>>,
    /// command checks: the exit code sets the weight (keepalived's misc_dynamic).
    pub misc_dynamic: Option<Spanned<bool>>,
    /// udp: the datagram sent, as text or as hex.
    pub payload: Option<Spanned<String>>,
    pub payload_hex: Option<Spanned<String>>,
    /// udp: what the reply must contain (text or hex); dns: an address the answer must hold.
    pub expect: Option<Spanned<String>>,
    pub expect_hex: Option<Spanned<String>>,
    /// udp: false passes a server that sends no ICMP error within the timeout.
    pub expect_reply: Option<Spanned<bool>>,
    /// dns: the question.
    pub query_name: Option<Spanned<String>>,
    pub query_type: Option<Spanned<String>>,
    /// smtp: send `EHLO helo` after the banner.
    pub helo: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReal {
    pub address: Spanned<String>,
    pub weight: Option<Spanned<i64>>,
    pub forward: Option<Spanned<String>>,
    pub upper_threshold: Option<Spanned<i64>>,
    pub lower_threshold: Option<Spanned<i64>>,
    /// Commands (argv) run when the real server's verdict flips.
    pub notify_up: Option<Spanned<Vec<String>>>,
    pub notify_down: Option<Spanned<Vec<String>>>,
}
