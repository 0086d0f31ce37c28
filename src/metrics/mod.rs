//! Metrics as Prometheus scrapes them: the exposition formats (classic text 0.0.4 and
//! OpenMetrics 1.0, chosen by the scraper's `Accept`) and the instruments both daemons keep.
//!
//! Owns the encoding and nothing else: which families a daemon exposes, and from what, is
//! the daemon's (`director::run::metrics`, `real_server::metrics`); serving them over HTTP is
//! `daemon::endpoint`'s.
//!
//! Why not the prometheus-client crate: its encoder writes OpenMetrics only, which
//! `promtool check metrics` of Debian 12's Prometheus (2.42) rejects (`unknown metric type
//! "info"`, counters without help), and its data model keeps a hash-map entry per series,
//! where the IPVS families are read fresh from the kernel at each scrape. The two formats
//! differ in a handful of lines, written here with their tests.

mod text;

pub use text::{Encoder, Family, Format, Histogram, Kind, Labels};

/// The buckets of every duration histogram (seconds), for passes and checks of both daemons
/// alike, so that they aggregate: a health flip or a LAN check takes a millisecond, a full
/// pass of a 1,000 × 16 table a second or two, a timed-out check what its timeout says.
pub const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The label value of a boolean.
pub fn flag(b: bool) -> u64 {
    u64::from(b)
}

/// Seconds since the Unix epoch of `t`, as the `_timestamp_seconds` gauges give times.
pub fn unix_seconds(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
