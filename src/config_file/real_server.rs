//! The `[real_server]` table as written: serde types with spans, no validation (that is
//! `real_server::config`'s). Imports nothing of the crate.

use serde::Deserialize;
use toml::Spanned;

/// `[real_server]`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRealServer {
    #[serde(default)]
    pub vips: Vec<Spanned<String>>,
    pub device: Option<Spanned<String>>,
    pub arp: Option<Spanned<String>>,
    /// Spanned as a whole too, so that an empty list can be pointed at.
    pub interfaces: Option<Spanned<Vec<Spanned<String>>>>,
    /// `rs-agent run`: milliseconds between drift checks without a kernel event.
    pub check_interval_ms: Option<Spanned<i64>>,
    /// `run`'s drain endpoint (`ADDR:PORT`); off when absent.
    pub health_listen: Option<Spanned<String>>,
    /// `run`'s Prometheus endpoint (`ADDR:PORT`); off when absent.
    pub metrics_listen: Option<Spanned<String>>,
}
