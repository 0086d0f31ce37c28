//! keepalived's checkers (`TCP_CHECK`, `HTTP_GET`, `SSL_GET`, `MISC_CHECK` …) of one real
//! server → the check rs-agent runs, and the timing settings a virtual server hands down to
//! its real servers and a real server to its checkers (keepalived's rule: the virtual
//! server's setting is the real server's default, the real server's the checker's).
//!
//! What maps: delay_loop → interval_ms, connect_timeout (misc_timeout) → timeout_ms,
//! retry (nb_get_retry) → fall = retry + 1 (keepalived declares a server down after the
//! first failure and its retries), rise 1 (one success brings it back), unless rise/fall
//! are given. What does not is a warning.

use super::super::document::{Check, Place};
use super::syntax::Item;
use super::{arg, number, Warnings};
use crate::config_file::ConfigError;

/// keepalived's defaults: delay_loop 60 s, connect_timeout 5 s, retry 1 (MISC_CHECK: 0).
const DELAY_LOOP: f64 = 60.0;
const CONNECT_TIMEOUT: f64 = 5.0;

/// The settings a virtual server hands to its real servers, and a real server to its
/// checkers.
#[derive(Debug, Clone, Default)]
pub(super) struct Inherited {
    delay_loop: Option<f64>,
    connect_timeout: Option<f64>,
    retry: Option<u32>,
    delay_before_retry: Option<(Place, f64)>,
    rise: Option<u32>,
    fall: Option<u32>,
    pub(super) virtualhost: Option<String>,
    pub(super) inhibit: Option<bool>,
    alpha: Option<bool>,
}

impl Inherited {
    /// Takes in `item` if it is one of these settings (true), else leaves it (false).
    pub(super) fn take(&mut self, item: &Item, w: &mut Warnings) -> Result<bool, ConfigError> {
        match item.key.text.as_str() {
            "delay_loop" => self.delay_loop = Some(timer(item)?),
            "connect_timeout" => self.connect_timeout = Some(timer(item)?),
            "retry" | "nb_get_retry" => self.retry = Some(number(item, "a count")?),
            "delay_before_retry" => {
                self.delay_before_retry = Some((item.at().clone(), timer(item)?))
            }
            "rise" => self.rise = Some(number(item, "a count")?),
            "fall" => self.fall = Some(number(item, "a count")?),
            "virtualhost" => self.virtualhost = Some(arg(item)?.text.clone()),
            "inhibit_on_failure" => self.inhibit = Some(boolean(item)?),
            "warmup" => w.not_carried(
                item,
                "rs-agent starts each check at a random point of its interval",
            ),
            "alpha" => self.alpha = Some(boolean(item)?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// A checker's `<BOOL>` argument; none means yes.
fn boolean(item: &Item) -> Result<bool, ConfigError> {
    match item.args.first().map(|a| a.text.as_str()) {
        None | Some("on" | "true" | "yes") => Ok(true),
        Some("off" | "false" | "no") => Ok(false),
        Some(other) => Err(item.args[0]
            .at
            .err(format_args!("{other:?} is not on|off|true|false|yes|no"))),
    }
}

/// A `<TIMER>`: seconds, fractions allowed.
fn timer(item: &Item) -> Result<f64, ConfigError> {
    let a = arg(item)?;
    a.text
        .parse::<f64>()
        .ok()
        .filter(|t| t.is_finite() && *t >= 0.0)
        .ok_or_else(|| {
            a.at.err(format_args!(
                "{} {:?} is not a time in seconds",
                item.key.text, a.text
            ))
        })
}

/// One real server's check, as far as it maps, and the checker it came from; the port is
/// the checker's `connect_port` (None: the real server's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RealCheck {
    pub(super) at: Place,
    pub(super) name: String,
    pub(super) check: Check,
    pub(super) port: Option<u16>,
}

/// The check of one real server from its checkers (the items of its block that are
/// checkers); the first that maps is carried, every other is a warning.
pub(super) fn real_check(
    checkers: &[&Item],
    up: &Inherited,
    w: &mut Warnings,
) -> Result<Option<RealCheck>, ConfigError> {
    let mut carried: Option<RealCheck> = None;
    for item in checkers {
        let kind = match item.key.text.as_str() {
            "TCP_CHECK" => "tcp",
            "HTTP_GET" => "http",
            "SSL_GET" => "https",
            "MISC_CHECK" => "command",
            "UDP_CHECK" => "udp",
            "DNS_CHECK" => "dns",
            "SMTP_CHECK" => "smtp",
            "PING_CHECK" => "icmp",
            other => {
                w.add(
                    item.at(),
                    format_args!(
                        "{other} is not carried (rs-agent checks tcp, http, https, udp, dns, \
                         icmp, smtp and commands)"
                    ),
                );
                continue;
            }
        };
        if let Some(first) = &carried {
            w.add(
                item.at(),
                format_args!(
                    "{} is not carried: rs-agent runs one check per service, the {} of line {}",
                    item.key.text, first.name, first.at.line
                ),
            );
            continue;
        }
        carried = Some(checker(item, kind, up, w)?);
    }
    Ok(carried)
}

/// One carried checker.
fn checker(
    item: &Item,
    kind: &'static str,
    up: &Inherited,
    w: &mut Warnings,
) -> Result<RealCheck, ConfigError> {
    let mut s = up.clone();
    let mut check = Check {
        kind,
        ..Check::default()
    };
    keepalived_defaults(&mut check);
    let mut port = None;
    let mut misc_timeout = None;
    for i in item.block.iter().flatten() {
        if s.take(i, w)? {
            continue;
        }
        match (kind, i.key.text.as_str()) {
            ("icmp", "connect_port") => w.not_carried(i, "an icmp check has no port"),
            (_, "connect_port") => port = Some(number(i, "a port")?),
            ("udp" | "dns" | "smtp", _) if protocol_setting(i, &mut check, w)? => {}
            ("http" | "https", "url") if check.path.is_none() => url(i, &mut check, w)?,
            ("http" | "https", "url") => w.add(
                i.at(),
                "url is not carried: rs-agent checks one path (the first url's)",
            ),
            ("command", "misc_path") => check.command = Some(argv(i)?),
            ("command", "misc_timeout") => misc_timeout = Some(timer(i)?),
            ("command", "misc_dynamic") => check.misc_dynamic = true,
            (_, key) => w.not_carried(i, not_carried_why(key)),
        }
    }
    if kind == "smtp" && check.helo.is_none() {
        w.add(
            item.at(),
            "SMTP_CHECK greets with HELO and keepalived's default name; rs-agent checks the \
             banner only unless helo_name (helo) is given",
        );
    }
    if kind == "command" && check.command.is_none() {
        return Err(item.at().err("MISC_CHECK needs misc_path"));
    }
    check.alpha = s.alpha.unwrap_or(false);
    if check.host.is_none() && matches!(kind, "http" | "https") {
        check.host = s.virtualhost.clone();
    }
    timing(&mut check, &s, kind, misc_timeout, item, w);
    Ok(RealCheck {
        at: item.at().clone(),
        name: item.key.text.clone(),
        check,
        port,
    })
}

/// keepalived's defaults where they differ from rs-agent's: a UDP_CHECK needs no reply (it
/// fails on an ICMP error), a DNS_CHECK asks for the root's SOA.
fn keepalived_defaults(check: &mut Check) {
    match check.kind {
        "udp" => check.expect_reply = Some(false),
        "dns" => {
            check.query_name = Some(".".into());
            check.query_type = Some("SOA".into());
        }
        _ => {}
    }
}

/// A UDP_CHECK, DNS_CHECK or SMTP_CHECK setting (true when it is one): `payload`,
/// `require_reply [HEX]`; `type`, `name`; `helo_name`.
fn protocol_setting(i: &Item, check: &mut Check, w: &mut Warnings) -> Result<bool, ConfigError> {
    match (check.kind, i.key.text.as_str()) {
        ("udp", "payload") => check.payload_hex = Some(hex(i)?),
        ("udp", "require_reply") => {
            check.expect_reply = Some(true);
            if !i.args.is_empty() {
                check.expect_hex = Some(hex(i)?);
                w.add(
                    i.at(),
                    "require_reply's bytes are carried as expect_hex: rs-agent requires the \
                     reply to contain them, keepalived to start with them",
                );
            }
        }
        ("udp", "min_length" | "max_length") => {
            w.not_carried(i, "rs-agent does not check a reply's length")
        }
        ("dns", "type") => {
            let a = arg(i)?;
            let t = a.text.to_ascii_uppercase();
            if !["A", "AAAA", "NS", "MX", "TXT", "SOA", "CNAME", "PTR", "SRV"].contains(&t.as_str())
            {
                return Err(a.at.err(format_args!(
                    "DNS_CHECK type {:?}: expected A, AAAA, NS, MX, TXT, SOA, CNAME, PTR or SRV",
                    a.text
                )));
            }
            check.query_type = Some(t);
        }
        ("dns", "name") => check.query_name = Some(arg(i)?.text.clone()),
        ("smtp", "helo_name") => check.helo = Some(arg(i)?.text.clone()),
        _ => return Ok(false),
    }
    Ok(true)
}

/// A `<HEX STRING>` argument, checked as rs-agent will read it.
fn hex(i: &Item) -> Result<String, ConfigError> {
    let a = arg(i)?;
    let ok = a.text.len() % 2 == 0 && a.text.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        return Err(a.at.err(format_args!(
            "{} {:?} is not a hex string (two hex digits a byte)",
            i.key.text, a.text
        )));
    }
    Ok(a.text.clone())
}

/// Why a checker setting is not carried.
fn not_carried_why(key: &str) -> &'static str {
    match key {
        "digest" => "rs-agent has no digest check: it matches the status and a body substring",
        "connect_ip" | "bindto" | "bind_port" | "bind_if" | "fwmark" => {
            "rs-agent checks the real server's address from the director's own"
        }
        "enable_sni" | "http_protocol" | "fast_recovery" | "log_all_failures" | "user" => {
            "rs-agent has no such setting"
        }
        _ => "import does not know it",
    }
}

/// The first `url { path status_code digest virtualhost regex }`.
fn url(item: &Item, check: &mut Check, w: &mut Warnings) -> Result<(), ConfigError> {
    check.path = Some("/".into());
    for i in item.block.iter().flatten() {
        match i.key.text.as_str() {
            "path" => check.path = Some(arg(i)?.text.clone()),
            "virtualhost" => check.host = Some(arg(i)?.text.clone()),
            "status_code" => check.status = Some(status(i, w)?),
            "digest" => w.not_carried(i, not_carried_why("digest")),
            "regex" | "regex_no_match" | "regex_options" | "regex_stack" | "regex_min_offset"
            | "regex_max_offset" => {
                w.not_carried(i, "rs-agent matches a body substring, not a regex")
            }
            key => w.not_carried(i, not_carried_why(key)),
        }
    }
    Ok(())
}

/// `status_code 200` → 200; a range or a list is carried as its first status, with a
/// warning (rs-agent expects one status).
fn status(item: &Item, w: &mut Warnings) -> Result<u16, ConfigError> {
    let a = arg(item)?;
    let first = a.text.split('-').next().unwrap_or_default();
    let code: u16 = first.parse().map_err(|_| {
        a.at.err(format_args!(
            "status_code {:?} is not a status or range",
            a.text
        ))
    })?;
    if item.args.len() > 1 || a.text.contains('-') {
        w.add(
            item.at(),
            format_args!(
                "{} is carried as status = {code}: rs-agent expects one status",
                item.head()
            ),
        );
    }
    Ok(code)
}

/// `misc_path "/path/check arg"`: keepalived splits the command at unquoted spaces.
fn argv(item: &Item) -> Result<Vec<String>, ConfigError> {
    let words: Vec<String> = item
        .args
        .iter()
        .flat_map(|a| {
            a.text
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    if words.is_empty() {
        return Err(item.at().err("misc_path needs a program"));
    }
    Ok(words)
}

/// interval, timeout, rise and fall from keepalived's timing, within rs-agent's bounds.
fn timing(
    check: &mut Check,
    s: &Inherited,
    kind: &str,
    misc_timeout: Option<f64>,
    item: &Item,
    w: &mut Warnings,
) {
    let loop_s = s.delay_loop.unwrap_or(DELAY_LOOP);
    let interval = ms(loop_s, item, "delay_loop", w);
    let timeout_s = match kind {
        "command" => misc_timeout.unwrap_or(loop_s),
        _ => s.connect_timeout.unwrap_or(CONNECT_TIMEOUT),
    };
    let mut timeout = ms(timeout_s, item, "the timeout", w);
    if timeout > interval {
        w.add(
            item.at(),
            format_args!(
                "{}: timeout {timeout_s} s is longer than delay_loop {loop_s} s; carried as \
             timeout_ms = {interval} (rs-agent's timeout is at most the interval)",
                item.key.text
            ),
        );
        timeout = interval;
    }
    let retry = s.retry.unwrap_or(u32::from(kind != "command"));
    if let Some((at, d)) = &s.delay_before_retry {
        if retry > 0 && (d - loop_s).abs() > f64::EPSILON {
            w.add(
                at,
                format_args!(
                    "delay_before_retry {d} is not carried: rs-agent retries at the check \
                 interval (delay_loop {loop_s} s)"
                ),
            );
        }
    }
    check.interval_ms = Some(interval);
    check.timeout_ms = Some(timeout);
    check.rise = Some(s.rise.unwrap_or(1).clamp(1, 100));
    check.fall = Some(s.fall.unwrap_or(retry.saturating_add(1)).clamp(1, 100));
}

/// Seconds → rs-agent's milliseconds (10 ms ..= 1 h), with a warning when out of bounds.
fn ms(secs: f64, item: &Item, what: &str, w: &mut Warnings) -> u64 {
    let v = (secs * 1000.0).round();
    let clamped = v.clamp(10.0, 3_600_000.0);
    if clamped != v {
        w.add(
            item.at(),
            format_args!(
                "{} {what} {secs} s is carried as {clamped} ms (rs-agent's bounds: 10 ms to 1 h)",
                item.key.text
            ),
        );
    }
    clamped as u64
}
