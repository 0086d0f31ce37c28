//! The two exposition formats. They share the sample lines; they differ in the names the
//! `# HELP`/`# TYPE` lines give a counter (`x_total` in text 0.0.4, `x` in OpenMetrics) and
//! an info (a gauge `x_info` in text, type `info` in OpenMetrics), and in OpenMetrics' final
//! `# EOF`.

use std::fmt::Write as _;

/// The format a scrape is answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4: what `curl` and `promtool check metrics` get.
    Text,
    /// OpenMetrics 1.0.0: what a Prometheus server asks for first.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the scraper's `Accept` header lists it (with a non-zero q), else text.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let wants_om = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut params = range.split(';').map(str::trim);
                let is_om = params
                    .next()
                    .is_some_and(|t| t.eq_ignore_ascii_case("application/openmetrics-text"));
                let refused = params.any(|p| {
                    p.strip_prefix("q=")
                        .is_some_and(|q| q.parse::<f64>().is_ok_and(|q| q <= 0.0))
                });
                is_om && !refused
            })
        });
        if wants_om {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// What a family's samples mean to Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets at restart); samples are named `<name>_total`.
    Counter,
    Gauge,
    /// Cumulative `_bucket{le}` samples, `_sum` and `_count`.
    Histogram,
    /// Constant 1 whose labels carry the information; the sample is named `<name>_info`.
    Info,
}

/// One metric family: its name (without the `_total` or `_info` its samples get), kind and
/// help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

impl Family {
    /// The name of its samples (a histogram's before `_bucket`/`_sum`/`_count`).
    fn sample_name(&self) -> String {
        match self.kind {
            Kind::Counter => format!("{}_total", self.name),
            Kind::Info => format!("{}_info", self.name),
            Kind::Gauge | Kind::Histogram => self.name.to_string(),
        }
    }
}

/// A label set, escaped once and written as `{a="x",b="y"}` (nothing when empty): the label
/// block of a real server is built once per scrape and shared by all its samples.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(String);

impl Labels {
    pub fn new() -> Labels {
        Labels::default()
    }

    /// These labels and `name="value"` (the value escaped: `\\`, `\"`, `\n`).
    pub fn with(mut self, name: &str, value: impl std::fmt::Display) -> Labels {
        if !self.0.is_empty() {
            self.0.push(',');
        }
        self.0.push_str(name);
        self.0.push_str("=\"");
        escape_into(&mut self.0, &value.to_string(), true);
        self.0.push('"');
        self
    }

    /// A copy with one more label (a histogram's `le`, a failure's `reason`).
    pub fn and(&self, name: &str, value: impl std::fmt::Display) -> Labels {
        self.clone().with(name, value)
    }

    fn write(&self, out: &mut Vec<u8>) {
        if !self.0.is_empty() {
            out.push(b'{');
            out.extend_from_slice(self.0.as_bytes());
            out.push(b'}');
        }
    }
}

/// Escapes `\` and newlines (both formats), and `"` in label values and OpenMetrics help.
fn escape_into(out: &mut String, text: &str, quote: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// A sample's value: integers as written, floats as Prometheus reads them (`+Inf`, `NaN`).
pub trait Value {
    fn write(&self, out: &mut Vec<u8>);
}

impl Value for u64 {
    fn write(&self, out: &mut Vec<u8>) {
        let mut buf = [0u8; 20];
        let mut n = *self;
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(&buf[i..]);
    }
}

impl Value for u32 {
    fn write(&self, out: &mut Vec<u8>) {
        u64::from(*self).write(out)
    }
}

impl Value for f64 {
    fn write(&self, out: &mut Vec<u8>) {
        if self.is_nan() {
            out.extend_from_slice(b"NaN");
        } else if self.is_infinite() {
            out.extend_from_slice(if *self > 0.0 { b"+Inf" } else { b"-Inf" });
        } else {
            let mut s = String::new();
            let _ = write!(s, "{self}");
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// Observations counted into fixed buckets (upper bounds, ascending), with their sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), plus one for what exceeds every bound.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        let i = self.bounds.partition_point(|b| *b < value);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum += value;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Writes families into `out` in one format. Every family's samples must follow its
/// [`Encoder::family`] line before the next family starts (both formats require it).
pub struct Encoder<'a> {
    out: &'a mut Vec<u8>,
    format: Format,
}

impl<'a> Encoder<'a> {
    pub fn new(out: &'a mut Vec<u8>, format: Format) -> Encoder<'a> {
        Encoder { out, format }
    }

    /// The bytes written so far (to hand them on in chunks).
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        self.out
    }

    /// The `# HELP` and `# TYPE` lines of `family`.
    pub fn family(&mut self, family: &Family) {
        let (name, kind) = match (self.format, family.kind) {
            (Format::Text, Kind::Info) => (family.sample_name(), "gauge"),
            (Format::Text, Kind::Counter) => (family.sample_name(), "counter"),
            (Format::OpenMetrics, Kind::Info) => (family.name.to_string(), "info"),
            (Format::OpenMetrics, Kind::Counter) => (family.name.to_string(), "counter"),
            (_, Kind::Gauge) => (family.name.to_string(), "gauge"),
            (_, Kind::Histogram) => (family.name.to_string(), "histogram"),
        };
        let mut help = String::new();
        escape_into(&mut help, family.help, self.format == Format::OpenMetrics);
        let _ = write!(
            Buf(self.out),
            "# HELP {name} {help}\n# TYPE {name} {kind}\n"
        );
    }

    /// One sample of a counter, gauge or info `family`.
    pub fn sample(&mut self, family: &Family, labels: &Labels, value: impl Value) {
        self.line(&family.sample_name(), "", labels, value);
    }

    /// One sample under `name` + `suffix` (e.g. a histogram's `_sum`).
    fn line(&mut self, name: &str, suffix: &str, labels: &Labels, value: impl Value) {
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(suffix.as_bytes());
        labels.write(self.out);
        self.out.push(b' ');
        value.write(self.out);
        self.out.push(b'\n');
    }

    /// A histogram's cumulative buckets (`le` added to `labels`), `_sum` and `_count`.
    pub fn histogram(&mut self, family: &Family, labels: &Labels, h: &Histogram) {
        let mut cumulative = 0u64;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count;
            let le = match h.bounds.get(i) {
                Some(b) => {
                    let mut s = Vec::new();
                    b.write(&mut s);
                    String::from_utf8_lossy(&s).into_owned()
                }
                None => "+Inf".to_string(),
            };
            self.line(family.name, "_bucket", &labels.and("le", le), cumulative);
        }
        self.line(family.name, "_sum", labels, h.sum);
        self.line(family.name, "_count", labels, cumulative);
    }

    /// The end of the exposition: OpenMetrics' `# EOF`.
    pub fn finish(&mut self) {
        if self.format == Format::OpenMetrics {
            self.out.extend_from_slice(b"# EOF\n");
        }
    }
}

/// `fmt::Write` into a byte buffer.
struct Buf<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONNS: Family = Family {
        name: "rs_agent_test_connections",
        kind: Kind::Counter,
        help: "Connections \"scheduled\".",
    };
    const BUILD: Family = Family {
        name: "rs_agent_build",
        kind: Kind::Info,
        help: "The build.",
    };
    const TOOK: Family = Family {
        name: "rs_agent_test_seconds",
        kind: Kind::Histogram,
        help: "How long.",
    };

    fn render(format: Format) -> String {
        let mut out = Vec::new();
        let mut e = Encoder::new(&mut out, format);
        e.family(&CONNS);
        let labels = Labels::new()
            .with("local_address", "192.0.2.100")
            .with("local_port", 80);
        e.sample(&CONNS, &labels, 7u64);
        e.family(&BUILD);
        e.sample(&BUILD, &Labels::new().with("version", "0.1.0"), 1u64);
        e.family(&TOOK);
        let mut h = Histogram::new(&[0.01, 0.1]);
        h.observe(0.005);
        h.observe(0.1);
        h.observe(3.0);
        e.histogram(&TOOK, &Labels::new(), &h);
        e.finish();
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn text_format_names_counters_with_total_and_infos_as_gauges() {
        assert_eq!(
            render(Format::Text),
            "# HELP rs_agent_test_connections_total Connections \"scheduled\".\n\
             # TYPE rs_agent_test_connections_total counter\n\
             rs_agent_test_connections_total{local_address=\"192.0.2.100\",local_port=\"80\"} 7\n\
             # HELP rs_agent_build_info The build.\n\
             # TYPE rs_agent_build_info gauge\n\
             rs_agent_build_info{version=\"0.1.0\"} 1\n\
             # HELP rs_agent_test_seconds How long.\n\
             # TYPE rs_agent_test_seconds histogram\n\
             rs_agent_test_seconds_bucket{le=\"0.01\"} 1\n\
             rs_agent_test_seconds_bucket{le=\"0.1\"} 2\n\
             rs_agent_test_seconds_bucket{le=\"+Inf\"} 3\n\
             rs_agent_test_seconds_sum 3.105\n\
             rs_agent_test_seconds_count 3\n"
        );
    }

    #[test]
    fn openmetrics_names_families_bare_and_ends_with_eof() {
        let om = render(Format::OpenMetrics);
        assert!(om.starts_with(
            "# HELP rs_agent_test_connections Connections \\\"scheduled\\\".\n\
             # TYPE rs_agent_test_connections counter\n\
             rs_agent_test_connections_total{"
        ));
        assert!(
            om.contains("# TYPE rs_agent_build info\nrs_agent_build_info{version=\"0.1.0\"} 1\n")
        );
        assert!(
            om.ends_with("rs_agent_test_seconds_count 3\n# EOF\n"),
            "{om}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let labels = Labels::new().with("reason", "a \"b\"\\c\nd");
        let mut out = Vec::new();
        labels.write(&mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "{reason=\"a \\\"b\\\"\\\\c\\nd\"}"
        );
        let mut none = Vec::new();
        Labels::new().write(&mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn values_are_written_as_prometheus_reads_them() {
        let text = |v: &dyn Fn(&mut Vec<u8>)| {
            let mut out = Vec::new();
            v(&mut out);
            String::from_utf8(out).expect("utf-8")
        };
        assert_eq!(text(&|o| 0u64.write(o)), "0");
        assert_eq!(text(&|o| u64::MAX.write(o)), "18446744073709551615");
        assert_eq!(text(&|o| f64::INFINITY.write(o)), "+Inf");
        assert_eq!(text(&|o| f64::NAN.write(o)), "NaN");
        assert_eq!(text(&|o| 0.25f64.write(o)), "0.25");
    }

    #[test]
    fn the_scraper_chooses_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0, text/plain")),
            Format::Text
        );
    }
}
