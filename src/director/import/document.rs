//! The `[director]` document every importer writes: services, real servers, a sorry server
//! and a check, each remembering the input place it came from. Written as TOML, then read
//! back exactly as `director up` reads it; what that refuses is said of the input place.

use crate::config_file::{ConfigError, ConfigFile};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::rc::Rc;

/// Where in the input a value came from: `file:line:col` (column from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Place {
    pub(super) file: Rc<str>,
    pub(super) line: usize,
    pub(super) col: usize,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

impl Place {
    /// An error at this place.
    pub(super) fn err(&self, msg: impl std::fmt::Display) -> ConfigError {
        ConfigError(format!("{self}: {msg}"))
    }

    /// A warning of this place's line (`file:line: message`).
    pub(super) fn warning(&self, msg: impl std::fmt::Display) -> String {
        format!("{}:{}: {msg}", self.file, self.line)
    }
}

/// What the service is: an address, port and protocol, or a firewall mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Virtual {
    Addr {
        ip: IpAddr,
        port: u16,
        protocol: &'static str,
    },
    Fwmark {
        mark: u32,
        ipv6: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Service {
    pub(super) at: Place,
    pub(super) virt: Virtual,
    pub(super) scheduler: String,
    pub(super) scheduler_flags: Vec<String>,
    pub(super) persistence: Option<u32>,
    /// Already in the config's form: a dotted IPv4 mask or `/N`.
    pub(super) netmask: Option<String>,
    pub(super) one_packet: bool,
    pub(super) reals: Vec<Real>,
    pub(super) sorry_server: Option<(Place, String)>,
    pub(super) check: Option<Check>,
    /// keepalived's quorum settings, each with where it was written.
    pub(super) quorum: Option<(Place, u32)>,
    pub(super) hysteresis: Option<(Place, u32)>,
    pub(super) quorum_up: Option<(Place, Vec<String>)>,
    pub(super) quorum_down: Option<(Place, Vec<String>)>,
}

impl Service {
    pub(super) fn new(at: Place, virt: Virtual, scheduler: &str) -> Service {
        Service {
            at,
            virt,
            scheduler: scheduler.to_string(),
            scheduler_flags: Vec::new(),
            persistence: None,
            netmask: None,
            one_packet: false,
            reals: Vec::new(),
            sorry_server: None,
            check: None,
            quorum: None,
            hysteresis: None,
            quorum_up: None,
            quorum_down: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Real {
    pub(super) at: Place,
    /// `ADDR`, `ADDR:PORT` or `[V6]:PORT`.
    pub(super) address: String,
    pub(super) forward: &'static str,
    pub(super) weight: u32,
    pub(super) upper: Option<u32>,
    pub(super) lower: Option<u32>,
    pub(super) notify_up: Option<Vec<String>>,
    pub(super) notify_down: Option<Vec<String>>,
}

/// A `[director.service.check]`; `None` fields are left to rs-agent's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Check {
    pub(super) kind: &'static str,
    pub(super) port: Option<u16>,
    pub(super) path: Option<String>,
    pub(super) status: Option<u16>,
    pub(super) body: Option<String>,
    pub(super) host: Option<String>,
    pub(super) command: Option<Vec<String>>,
    pub(super) interval_ms: Option<u64>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) rise: Option<u32>,
    pub(super) fall: Option<u32>,
    pub(super) on_failure: Option<&'static str>,
    pub(super) alpha: bool,
    pub(super) misc_dynamic: bool,
    /// udp: the datagram and what the reply must contain, as hex; whether one is needed.
    pub(super) payload_hex: Option<String>,
    pub(super) expect_hex: Option<String>,
    pub(super) expect_reply: Option<bool>,
    /// dns: the question, and an address the answer must hold (`expect`).
    pub(super) query_name: Option<String>,
    pub(super) query_type: Option<String>,
    pub(super) expect: Option<String>,
    /// smtp: the EHLO name.
    pub(super) helo: Option<String>,
}

/// A TOML basic string. Control characters are escaped, so any input word stays one string.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The TOML being built, and for each of its lines the input place it came from, so that
/// what the validation refuses is said of the input.
#[derive(Default)]
struct Output {
    text: String,
    origins: Vec<Option<Place>>,
}

impl Output {
    fn line(&mut self, origin: Option<&Place>, line: impl std::fmt::Display) {
        let _ = writeln!(self.text, "{line}");
        self.origins.push(origin.cloned());
    }
}

fn write_service(out: &mut Output, s: &Service) {
    let at = Some(&s.at);
    out.line(at, "");
    out.line(at, "[[director.service]]");
    match &s.virt {
        Virtual::Addr { ip, port, protocol } => {
            out.line(at, format_args!("vip = {}", quote(&ip.to_string())));
            out.line(at, format_args!("port = {port}"));
            out.line(at, format_args!("protocol = {}", quote(protocol)));
        }
        Virtual::Fwmark { mark, ipv6 } => {
            out.line(at, format_args!("fwmark = {mark}"));
            if *ipv6 {
                out.line(at, "family = \"ipv6\"");
            }
        }
    }
    out.line(at, format_args!("scheduler = {}", quote(&s.scheduler)));
    if !s.scheduler_flags.is_empty() {
        let flags: Vec<String> = s.scheduler_flags.iter().map(|f| quote(f)).collect();
        out.line(at, format_args!("scheduler_flags = [{}]", flags.join(", ")));
    }
    if let Some(p) = &s.persistence {
        out.line(at, format_args!("persistence = {p}"));
    }
    if let Some(m) = &s.netmask {
        out.line(at, format_args!("persistence_netmask = {}", quote(m)));
    }
    if s.one_packet {
        out.line(at, "one_packet = true");
    }
    if let Some((place, sorry)) = &s.sorry_server {
        out.line(Some(place), format_args!("sorry_server = {}", quote(sorry)));
    }
    for (key, v) in [("quorum", &s.quorum), ("hysteresis", &s.hysteresis)] {
        if let Some((place, n)) = v {
            out.line(Some(place), format_args!("{key} = {n}"));
        }
    }
    for (key, v) in [("quorum_up", &s.quorum_up), ("quorum_down", &s.quorum_down)] {
        if let Some((place, argv)) = v {
            out.line(Some(place), format_args!("{key} = {}", argv_array(argv)));
        }
    }
    if let Some(c) = &s.check {
        write_check(out, at, c);
    }
    for r in &s.reals {
        write_real(out, r);
    }
}

fn write_check(out: &mut Output, at: Option<&Place>, c: &Check) {
    out.line(at, "");
    out.line(at, "[director.service.check]");
    out.line(at, format_args!("type = {}", quote(c.kind)));
    let strings = [
        ("path", &c.path),
        ("body", &c.body),
        ("host", &c.host),
        ("payload_hex", &c.payload_hex),
        ("expect_hex", &c.expect_hex),
        ("query_name", &c.query_name),
        ("query_type", &c.query_type),
        ("expect", &c.expect),
        ("helo", &c.helo),
    ];
    if let Some(p) = c.port {
        out.line(at, format_args!("port = {p}"));
    }
    for (key, v) in strings {
        if let Some(v) = v {
            out.line(at, format_args!("{key} = {}", quote(v)));
        }
    }
    if let Some(s) = c.status {
        out.line(at, format_args!("status = {s}"));
    }
    if let Some(r) = c.expect_reply {
        out.line(at, format_args!("expect_reply = {r}"));
    }
    if let Some(argv) = &c.command {
        out.line(at, format_args!("command = {}", argv_array(argv)));
    }
    if c.misc_dynamic {
        out.line(at, "misc_dynamic = true");
    }
    let numbers = [
        ("interval_ms", c.interval_ms),
        ("timeout_ms", c.timeout_ms),
        ("rise", c.rise.map(u64::from)),
        ("fall", c.fall.map(u64::from)),
    ];
    for (key, v) in numbers {
        if let Some(v) = v {
            out.line(at, format_args!("{key} = {v}"));
        }
    }
    if let Some(o) = c.on_failure {
        out.line(at, format_args!("on_failure = {}", quote(o)));
    }
    if c.alpha {
        out.line(at, "alpha = true");
    }
}

/// A TOML array of strings: a command's argv.
fn argv_array(argv: &[String]) -> String {
    let argv: Vec<String> = argv.iter().map(|a| quote(a)).collect();
    format!("[{}]", argv.join(", "))
}

/// One `[[director.service.real]]` table.
fn write_real(out: &mut Output, r: &Real) {
    let at = Some(&r.at);
    out.line(at, "");
    out.line(at, "[[director.service.real]]");
    out.line(at, format_args!("address = {}", quote(&r.address)));
    out.line(at, format_args!("forward = {}", quote(r.forward)));
    out.line(at, format_args!("weight = {}", r.weight));
    if let Some(x) = r.upper.filter(|x| *x != 0) {
        out.line(at, format_args!("upper_threshold = {x}"));
    }
    if let Some(y) = r.lower.filter(|y| *y != 0) {
        out.line(at, format_args!("lower_threshold = {y}"));
    }
    for (key, v) in [("notify_up", &r.notify_up), ("notify_down", &r.notify_down)] {
        if let Some(argv) = v {
            out.line(at, format_args!("{key} = {}", argv_array(argv)));
        }
    }
}

/// The name the generated document has while it is validated; errors are then said of the
/// input place each of its lines came from.
const OUTPUT: &str = "import-output";

/// The `[director]` document of `services` for `interface`, validated as `director up`
/// reads it. `from` says in the header what it was generated from; `input` names the whole
/// input in errors of no one place.
pub(super) fn to_toml(
    from: &str,
    input: &str,
    interface: &str,
    services: &[Service],
) -> Result<String, ConfigError> {
    let mut out = Output::default();
    out.line(
        None,
        format_args!("# Generated by `rs-agent director import` from {from}."),
    );
    out.line(None, "[director]");
    out.line(None, format_args!("interface = {}", quote(interface)));
    for s in services {
        write_service(&mut out, s);
    }
    let Output { text, origins } = out;
    let refused = |e: ConfigError| match located(&e.0) {
        Some((line, msg)) => match origins.get(line - 1).cloned().flatten() {
            Some(at) => at.err(format_args!("rs-agent would refuse this line: {msg}")),
            None => ConfigError(format!("{input}: {msg}")),
        },
        None => ConfigError(format!("{input}: {}", e.0)),
    };
    let file = ConfigFile::parse(Some(OUTPUT.into()), text).map_err(refused)?;
    crate::director::config::director(&file, &Default::default()).map_err(refused)?;
    Ok(file.text)
}

/// The line (from 1) and the message of an error located in the generated document
/// (`import-output:LINE:COL: message`).
fn located(msg: &str) -> Option<(usize, &str)> {
    let rest = msg.strip_prefix(OUTPUT)?.strip_prefix(':')?;
    let (line, rest) = rest.split_once(':')?;
    let (_col, msg) = rest.split_once(": ")?;
    let line: usize = line.parse().ok()?;
    (line > 0).then_some((line, msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn located_reads_only_the_generated_documents_locations() {
        assert_eq!(located("import-output:12:3: bad"), Some((12, "bad")));
        assert_eq!(located("import-output:0:3: bad"), None);
        assert_eq!(located("other:12:3: bad"), None);
        assert_eq!(located("import-output: bad"), None);
    }

    #[test]
    fn quoting_keeps_any_word_one_toml_string() {
        for word in ["a\"b", "a\\b", "a\u{7f}b", "a\u{1}b", "é"] {
            let doc = format!("k = {}\n", quote(word));
            let v: toml::Table = toml::from_str(&doc).expect(&doc);
            assert_eq!(v["k"].as_str(), Some(word), "{doc}");
        }
    }

    #[test]
    fn a_check_and_a_sorry_server_are_written_and_validate() {
        let at = Place {
            file: "in".into(),
            line: 3,
            col: 1,
        };
        let mut s = Service::new(
            at.clone(),
            Virtual::Addr {
                ip: "192.0.2.100".parse().expect("literal"),
                port: 80,
                protocol: "tcp",
            },
            "rr",
        );
        s.sorry_server = Some((at.clone(), "198.51.100.9".into()));
        s.check = Some(Check {
            kind: "http",
            path: Some("/health".into()),
            interval_ms: Some(6000),
            fall: Some(2),
            ..Check::default()
        });
        s.reals.push(Real {
            at,
            address: "198.51.100.2".into(),
            forward: "dr",
            weight: 1,
            upper: None,
            lower: None,
            notify_up: None,
            notify_down: None,
        });
        let toml = to_toml("a test", "test", "eth0", &[s]).expect("valid");
        assert!(
            toml.contains(
                "sorry_server = \"198.51.100.9\"\n\n[director.service.check]\ntype = \"http\"\n\
                 path = \"/health\"\ninterval_ms = 6000\nfall = 2\n"
            ),
            "{toml}"
        );
    }
}
