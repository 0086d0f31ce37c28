//! The real server's Prometheus families (docs/metrics.md, "Real server"), and what `run`
//! counts for them. Pure: [`render`] turns a [`Snapshot`] into an exposition; the loop keeps
//! the [`Counters`] and judges the kernel at each scrape (`real_server::scrape`).
//!
//! Every label takes values from a set fixed here ([`RepairKind`], [`PassKind`], the two
//! reload results) or from the configuration (VIPs, device, LAN interfaces), so the number of
//! series is bounded by the configuration. The counters' series exist from the start at 0:
//! `increase()` over a series that appears at its first increment misses that increment.

use super::status::{StatusReport, VipStatus};
use crate::metrics::{flag, Encoder, Family, Format, Histogram, Kind, Labels};
use crate::model::Change;
use std::net::IpAddr;
use std::time::Duration;

pub const BUILD: Family = Family {
    name: "rs_agent_build",
    kind: Kind::Info,
    help: "The running rs-agent: its version and role.",
};
pub const START_TIME: Family = Family {
    name: "rs_agent_start_time_seconds",
    kind: Kind::Gauge,
    help: "When this rs-agent run started, in seconds since the Unix epoch.",
};
pub const DRAINED: Family = Family {
    name: "rs_agent_drained",
    kind: Kind::Gauge,
    help: "1 while the drain flag is set (rs-agent drain): /health answers 503.",
};
pub const REPAIRS: Family = Family {
    name: "rs_agent_repairs",
    kind: Kind::Counter,
    help: "Changes a drift-repair pass applied, by what they put back.",
};
pub const PASSES: Family = Family {
    name: "rs_agent_passes",
    kind: Kind::Counter,
    help: "Observe-plan-apply passes, by what started them.",
};
pub const PASS_FAILURES: Family = Family {
    name: "rs_agent_pass_failures",
    kind: Kind::Counter,
    help: "Passes that failed (a change refused, or the node not read) and are retried with backoff, by what started them.",
};
pub const PASS_DURATION: Family = Family {
    name: "rs_agent_pass_duration_seconds",
    kind: Kind::Histogram,
    help: "How long a pass took, by what started it.",
};
pub const RELOADS: Family = Family {
    name: "rs_agent_reloads",
    kind: Kind::Counter,
    help: "SIGHUP reloads: accepted (running), or refused (invalid, or undone because the kernel refused it).",
};
pub const LAST_RELOAD: Family = Family {
    name: "rs_agent_last_reload_timestamp_seconds",
    kind: Kind::Gauge,
    help: "When the last SIGHUP reload was read, in seconds since the Unix epoch.",
};
pub const VIP_BOUND: Family = Family {
    name: "rs_agent_vip_bound",
    kind: Kind::Gauge,
    help: "1 when the VIP is bound, usable, as a host address on its device (as rs-agent status judges it, at scrape time).",
};
pub const ARP_SUPPRESSED: Family = Family {
    name: "rs_agent_arp_suppressed",
    kind: Kind::Gauge,
    help: "1 when ARP (IPv6: neighbour advertisements) for the VIP is kept off the LAN interface (as rs-agent status judges it, at scrape time).",
};

/// What a repaired change put back: the `kind` label of `rs_agent_repairs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairKind {
    /// A VIP bound again, or re-added after a failed duplicate address detection.
    Vip,
    /// A VIP of ours that lost its label, added again with it.
    VipLabel,
    /// An address of ours removed (one rs-agent bound that the configuration no longer has).
    VipRemoved,
    /// An ARP sysctl (arp_ignore, arp_announce) set or restored.
    ArpSysctl,
    /// An nft table of ours written again or deleted.
    ArpNft,
    /// The VIP device brought up.
    LinkUp,
    /// The dummy device created or deleted.
    Device,
}

impl RepairKind {
    pub const ALL: [RepairKind; 7] = [
        RepairKind::Vip,
        RepairKind::VipLabel,
        RepairKind::VipRemoved,
        RepairKind::ArpSysctl,
        RepairKind::ArpNft,
        RepairKind::LinkUp,
        RepairKind::Device,
    ];

    pub fn of(change: &Change) -> RepairKind {
        match change {
            Change::AddAddr { .. } | Change::ReAddAddr { .. } => RepairKind::Vip,
            Change::RelabelAddr { .. } => RepairKind::VipLabel,
            Change::DelAddr { .. } => RepairKind::VipRemoved,
            Change::SetSysctl { .. } | Change::RestoreSysctl { .. } => RepairKind::ArpSysctl,
            Change::NftReplace { .. } | Change::NftDelete { .. } => RepairKind::ArpNft,
            Change::SetLinkUp { .. } => RepairKind::LinkUp,
            Change::CreateDummy { .. } | Change::DeleteDummy { .. } => RepairKind::Device,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RepairKind::Vip => "vip",
            RepairKind::VipLabel => "vip_label",
            RepairKind::VipRemoved => "vip_removed",
            RepairKind::ArpSysctl => "arp_sysctl",
            RepairKind::ArpNft => "arp_nft",
            RepairKind::LinkUp => "link_up",
            RepairKind::Device => "device",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What started a pass: the `kind` label of the pass families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassKind {
    /// The first pass, `up`'s (all-or-nothing; when it fails `run` exits).
    Start,
    /// A link or address event (or a lost event's resync).
    Event,
    /// The periodic check, and the retries after a failed pass.
    Timer,
    /// A SIGHUP, or going back after the kernel refused a reload's configuration.
    Reload,
}

impl PassKind {
    pub const ALL: [PassKind; 4] = [
        PassKind::Start,
        PassKind::Event,
        PassKind::Timer,
        PassKind::Reload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PassKind::Start => "start",
            PassKind::Event => "event",
            PassKind::Timer => "timer",
            PassKind::Reload => "reload",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The passes of one kind.
#[derive(Debug, Clone, PartialEq)]
struct Passes {
    count: u64,
    failures: u64,
    duration: Histogram,
}

/// What the loop counts since it started; a scrape takes a copy.
#[derive(Debug, Clone, PartialEq)]
pub struct Counters {
    repairs: [u64; RepairKind::ALL.len()],
    passes: [Passes; PassKind::ALL.len()],
    accepted: u64,
    refused: u64,
    /// Seconds since the Unix epoch.
    last_reload: Option<f64>,
}

impl Default for Counters {
    fn default() -> Counters {
        let passes = Passes {
            count: 0,
            failures: 0,
            duration: Histogram::new(crate::metrics::SECONDS),
        };
        Counters {
            repairs: [0; RepairKind::ALL.len()],
            passes: std::array::from_fn(|_| passes.clone()),
            accepted: 0,
            refused: 0,
            last_reload: None,
        }
    }
}

impl Counters {
    /// Counts the changes a repair pass applied, each by its kind.
    pub fn repaired(&mut self, changes: &[Change]) {
        for change in changes {
            self.repairs[RepairKind::of(change).index()] += 1;
        }
    }

    /// The repairs of every kind.
    pub fn repairs(&self) -> u64 {
        self.repairs.iter().sum()
    }

    /// Counts a pass of `kind` that took `took`, and whether the kernel refused any change.
    pub fn pass(&mut self, kind: PassKind, failed: bool, took: Duration) {
        let p = &mut self.passes[kind.index()];
        p.count += 1;
        p.failures += u64::from(failed);
        p.duration.observe(took.as_secs_f64());
    }

    /// A SIGHUP was read at `at` (seconds since the Unix epoch).
    pub fn reload_read(&mut self, at: f64) {
        self.last_reload = Some(at);
    }

    /// Counts `n` reloads as accepted or refused, once their result is known.
    pub fn reloads(&mut self, n: u64, accepted: bool) {
        match accepted {
            true => self.accepted += n,
            false => self.refused += n,
        }
    }
}

/// One VIP as the scrape judged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipGauges {
    pub vip: IpAddr,
    pub device: String,
    pub bound: bool,
    /// Per LAN interface: whether ARP for the VIP is suppressed there.
    pub suppressed_on: Vec<(String, bool)>,
}

impl VipGauges {
    fn from_status(v: &VipStatus, device: &str) -> VipGauges {
        VipGauges {
            vip: v.vip,
            device: device.to_string(),
            bound: v.bound,
            suppressed_on: v.suppressed_on.clone(),
        }
    }
}

/// Everything one scrape renders.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub version: &'static str,
    /// Seconds since the Unix epoch.
    pub start_time: f64,
    pub counters: Counters,
    pub vips: Vec<VipGauges>,
    pub drained: bool,
}

impl Snapshot {
    /// The loop's counters and the verdict `status` would print now.
    pub fn new(start_time: f64, counters: Counters, report: &StatusReport) -> Snapshot {
        let device = report.desired.device.name();
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            start_time,
            counters,
            vips: report
                .vips
                .iter()
                .map(|v| VipGauges::from_status(v, device))
                .collect(),
            drained: report.drained,
        }
    }
}

/// The exposition of `s` in `format`.
pub fn render(s: &Snapshot, format: Format) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    let mut e = Encoder::new(&mut out, format);
    let none = Labels::new();
    e.family(&BUILD);
    let build = Labels::new()
        .with("version", s.version)
        .with("role", "real_server");
    e.sample(&BUILD, &build, 1u64);
    e.family(&START_TIME);
    e.sample(&START_TIME, &none, s.start_time);
    e.family(&DRAINED);
    e.sample(&DRAINED, &none, flag(s.drained));
    e.family(&REPAIRS);
    for kind in RepairKind::ALL {
        let labels = Labels::new().with("kind", kind.as_str());
        e.sample(&REPAIRS, &labels, s.counters.repairs[kind.index()]);
    }
    render_passes(&mut e, &s.counters);
    render_reloads(&mut e, &s.counters);
    render_vips(&mut e, &s.vips);
    e.finish();
    out
}

fn render_passes(e: &mut Encoder, c: &Counters) {
    let by_kind = || {
        PassKind::ALL
            .into_iter()
            .map(|k| (Labels::new().with("kind", k.as_str()), &c.passes[k.index()]))
    };
    e.family(&PASSES);
    for (labels, p) in by_kind() {
        e.sample(&PASSES, &labels, p.count);
    }
    e.family(&PASS_FAILURES);
    for (labels, p) in by_kind() {
        e.sample(&PASS_FAILURES, &labels, p.failures);
    }
    e.family(&PASS_DURATION);
    for (labels, p) in by_kind() {
        e.histogram(&PASS_DURATION, &labels, &p.duration);
    }
}

fn render_reloads(e: &mut Encoder, c: &Counters) {
    e.family(&RELOADS);
    for (result, n) in [("accepted", c.accepted), ("refused", c.refused)] {
        e.sample(&RELOADS, &Labels::new().with("result", result), n);
    }
    if let Some(at) = c.last_reload {
        e.family(&LAST_RELOAD);
        e.sample(&LAST_RELOAD, &Labels::new(), at);
    }
}

fn render_vips(e: &mut Encoder, vips: &[VipGauges]) {
    e.family(&VIP_BOUND);
    for v in vips {
        let labels = Labels::new().with("vip", v.vip).with("device", &v.device);
        e.sample(&VIP_BOUND, &labels, flag(v.bound));
    }
    e.family(&ARP_SUPPRESSED);
    for v in vips {
        for (iface, suppressed) in &v.suppressed_on {
            let labels = Labels::new().with("vip", v.vip).with("interface", iface);
            e.sample(&ARP_SUPPRESSED, &labels, flag(*suppressed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node with one VIP on lo, bound, ARP suppressed on eth0 and not on eth1; one VIP
    /// repaired by an event's pass, one reload refused.
    fn snapshot() -> Snapshot {
        let mut counters = Counters::default();
        counters.pass(PassKind::Start, false, Duration::from_millis(3));
        counters.pass(PassKind::Event, false, Duration::from_millis(2));
        counters.repaired(&[Change::AddAddr {
            ifname: "lo".into(),
            ip: crate::testing::ip("192.0.2.100"),
            prefix: 32,
            label: None,
        }]);
        counters.pass(PassKind::Timer, true, Duration::from_secs(12));
        counters.reload_read(1_700_000_100.5);
        counters.reloads(1, false);
        Snapshot {
            version: "0.0.0-test",
            start_time: 1_700_000_000.25,
            counters,
            vips: vec![VipGauges {
                vip: crate::testing::ip("192.0.2.100"),
                device: "lo".into(),
                bound: true,
                suppressed_on: vec![("eth0".into(), true), ("eth1".into(), false)],
            }],
            drained: false,
        }
    }

    fn text(format: Format) -> String {
        String::from_utf8(render(&snapshot(), format)).expect("utf-8")
    }

    /// The buckets of one pass kind's histogram, as rendered.
    fn buckets(kind: &str, counts: [u64; 15], sum: &str) -> String {
        let mut out = String::new();
        let les = [
            "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
            "1", "2.5", "5", "10", "+Inf",
        ];
        for (le, n) in les.into_iter().zip(counts) {
            out += &format!(
                "rs_agent_pass_duration_seconds_bucket{{kind=\"{kind}\",le=\"{le}\"}} {n}\n"
            );
        }
        let count = counts[14];
        out += &format!("rs_agent_pass_duration_seconds_sum{{kind=\"{kind}\"}} {sum}\n");
        out += &format!("rs_agent_pass_duration_seconds_count{{kind=\"{kind}\"}} {count}\n");
        out
    }

    const HEAD: &str = "\
# HELP rs_agent_build_info The running rs-agent: its version and role.
# TYPE rs_agent_build_info gauge
rs_agent_build_info{version=\"0.0.0-test\",role=\"real_server\"} 1
# HELP rs_agent_start_time_seconds When this rs-agent run started, in seconds since the Unix epoch.
# TYPE rs_agent_start_time_seconds gauge
rs_agent_start_time_seconds 1700000000.25
# HELP rs_agent_drained 1 while the drain flag is set (rs-agent drain): /health answers 503.
# TYPE rs_agent_drained gauge
rs_agent_drained 0
# HELP rs_agent_repairs_total Changes a drift-repair pass applied, by what they put back.
# TYPE rs_agent_repairs_total counter
rs_agent_repairs_total{kind=\"vip\"} 1
rs_agent_repairs_total{kind=\"vip_label\"} 0
rs_agent_repairs_total{kind=\"vip_removed\"} 0
rs_agent_repairs_total{kind=\"arp_sysctl\"} 0
rs_agent_repairs_total{kind=\"arp_nft\"} 0
rs_agent_repairs_total{kind=\"link_up\"} 0
rs_agent_repairs_total{kind=\"device\"} 0
# HELP rs_agent_passes_total Observe-plan-apply passes, by what started them.
# TYPE rs_agent_passes_total counter
rs_agent_passes_total{kind=\"start\"} 1
rs_agent_passes_total{kind=\"event\"} 1
rs_agent_passes_total{kind=\"timer\"} 1
rs_agent_passes_total{kind=\"reload\"} 0
# HELP rs_agent_pass_failures_total Passes that failed (a change refused, or the node not read) and are retried with backoff, by what started them.
# TYPE rs_agent_pass_failures_total counter
rs_agent_pass_failures_total{kind=\"start\"} 0
rs_agent_pass_failures_total{kind=\"event\"} 0
rs_agent_pass_failures_total{kind=\"timer\"} 1
rs_agent_pass_failures_total{kind=\"reload\"} 0
# HELP rs_agent_pass_duration_seconds How long a pass took, by what started it.
# TYPE rs_agent_pass_duration_seconds histogram
";

    const TAIL: &str = "\
# HELP rs_agent_reloads_total SIGHUP reloads: accepted (running), or refused (invalid, or undone because the kernel refused it).
# TYPE rs_agent_reloads_total counter
rs_agent_reloads_total{result=\"accepted\"} 0
rs_agent_reloads_total{result=\"refused\"} 1
# HELP rs_agent_last_reload_timestamp_seconds When the last SIGHUP reload was read, in seconds since the Unix epoch.
# TYPE rs_agent_last_reload_timestamp_seconds gauge
rs_agent_last_reload_timestamp_seconds 1700000100.5
# HELP rs_agent_vip_bound 1 when the VIP is bound, usable, as a host address on its device (as rs-agent status judges it, at scrape time).
# TYPE rs_agent_vip_bound gauge
rs_agent_vip_bound{vip=\"192.0.2.100\",device=\"lo\"} 1
# HELP rs_agent_arp_suppressed 1 when ARP (IPv6: neighbour advertisements) for the VIP is kept off the LAN interface (as rs-agent status judges it, at scrape time).
# TYPE rs_agent_arp_suppressed gauge
rs_agent_arp_suppressed{vip=\"192.0.2.100\",interface=\"eth0\"} 1
rs_agent_arp_suppressed{vip=\"192.0.2.100\",interface=\"eth1\"} 0
";

    fn histograms() -> String {
        let start = [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
        let event = [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
        let timer = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        buckets("start", start, "0.003")
            + &buckets("event", event, "0.002")
            + &buckets("timer", timer, "12")
            + &buckets("reload", [0; 15], "0")
    }

    #[test]
    fn text_format_renders_every_family() {
        assert_eq!(text(Format::Text), format!("{HEAD}{}{TAIL}", histograms()));
    }

    /// OpenMetrics: counters and the info named bare in HELP/TYPE, the info typed `info`,
    /// the same samples, `# EOF` last.
    #[test]
    fn openmetrics_renders_the_same_samples() {
        let want = format!("{HEAD}{}{TAIL}# EOF\n", histograms())
            .replace(
                "# TYPE rs_agent_build_info gauge",
                "# TYPE rs_agent_build info",
            )
            .replace("# HELP rs_agent_build_info", "# HELP rs_agent_build")
            .replace("_total counter\n", " counter\n")
            .replace("# HELP rs_agent_repairs_total", "# HELP rs_agent_repairs")
            .replace("# HELP rs_agent_passes_total", "# HELP rs_agent_passes")
            .replace(
                "# HELP rs_agent_pass_failures_total",
                "# HELP rs_agent_pass_failures",
            )
            .replace("# HELP rs_agent_reloads_total", "# HELP rs_agent_reloads");
        assert_eq!(text(Format::OpenMetrics), want);
    }

    /// Before the first reload there is no reload time to give: the family is absent.
    #[test]
    fn no_reload_time_before_the_first_reload() {
        let mut s = snapshot();
        s.counters = Counters::default();
        let text = String::from_utf8(render(&s, Format::Text)).expect("utf-8");
        assert!(!text.contains("last_reload"), "{text}");
        assert!(text.contains("rs_agent_reloads_total{result=\"accepted\"} 0\n"));
    }

    /// Every change kind has its repair kind; the label values are the documented ones.
    #[test]
    fn every_change_counts_under_its_documented_kind() {
        let ip = crate::testing::ip("192.0.2.100");
        let rows = [
            (Change::SetLinkUp { name: "lo".into() }, "link_up"),
            (
                Change::CreateDummy {
                    name: "lvs0".into(),
                },
                "device",
            ),
            (
                Change::RelabelAddr {
                    ifname: "lo".into(),
                    ip,
                    prefix: 32,
                    from: None,
                    to: Some("lo:rsagent".into()),
                },
                "vip_label",
            ),
            (
                Change::DelAddr {
                    ifname: "lo".into(),
                    ip,
                    prefix: 32,
                    label: None,
                },
                "vip_removed",
            ),
        ];
        for (change, kind) in rows {
            assert_eq!(RepairKind::of(&change).as_str(), kind, "{change}");
        }
        let names: Vec<&str> = RepairKind::ALL.iter().map(|k| k.as_str()).collect();
        let doc = include_str!("../../docs/metrics.md");
        for name in names {
            assert!(
                doc.contains(&format!("`{name}`")),
                "docs/metrics.md lacks {name}"
            );
        }
    }
}
