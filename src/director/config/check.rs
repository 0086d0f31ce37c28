//! One `[director.service.check]` table → a validated health check: its probe (tcp, http,
//! https, command, udp, dns, icmp, smtp) and the probe's keys (the values of the udp, dns and
//! smtp keys are `probes`'), interval and timeout, rise and fall, on_failure.
//!
//! Owns how a check's keys fit together (a key the type does not use is an error, the timeout
//! fits in the interval). It must not probe anything (`health::probe` does) nor look at the
//! service beyond where to point an error.

use super::probes;
use super::values::{err, int_in, Loc};
use crate::config_file::director::RawCheck;
use crate::config_file::{ConfigError, ConfigFile};
use crate::director::health::{HealthCheck, HttpProbe, OnFailure, Probe};
use std::time::Duration;
use toml::Spanned;

/// `[director.service.check]` → a validated check (`at`: the service, for errors about
/// the check as a whole).
pub(super) fn check(
    file: &ConfigFile,
    raw: &RawCheck,
    at: &Loc,
) -> Result<HealthCheck, ConfigError> {
    let kind = raw.kind.get_ref().as_str();
    reject_unused_keys(file, raw, kind)?;
    reject_misc_dynamic(file, raw, kind)?;
    let probe = probe(file, raw, at, kind)?;
    let (interval, timeout) = interval_and_timeout(file, raw, at)?;
    let count = |v: &Option<Spanned<i64>>, what| -> Result<u32, ConfigError> {
        v.as_ref()
            .map_or(Ok(3), |v| int_in(file, v, 1, 100, what).map(|n| n as u32))
    };
    let on_failure = on_failure(file, raw)?;
    Ok(HealthCheck {
        probe,
        port: raw
            .port
            .as_ref()
            .map(|p| int_in(file, p, 1, 65535, "check port").map(|n| n as u16))
            .transpose()?,
        interval,
        timeout,
        rise: count(&raw.rise, "rise")?,
        fall: count(&raw.fall, "fall")?,
        on_failure,
        alpha: raw.alpha.as_ref().is_some_and(|a| *a.get_ref()),
    })
}

/// `misc_dynamic` reads a command's exit code: no other check has one.
fn reject_misc_dynamic(file: &ConfigFile, raw: &RawCheck, kind: &str) -> Result<(), ConfigError> {
    match &raw.misc_dynamic {
        Some(d) if kind != "command" => Err(file.err_at(
            d,
            format!(
                "misc_dynamic applies only to a command check (its exit code sets the \
                 weight), not a {kind} check; remove it"
            ),
        )),
        _ => Ok(()),
    }
}

/// The check types, as `type` spells them.
const TYPES: [&str; 8] = [
    "tcp", "http", "https", "command", "udp", "dns", "icmp", "smtp",
];

/// A key the type does not use would be silently ignored: say so instead.
fn reject_unused_keys(file: &ConfigFile, raw: &RawCheck, kind: &str) -> Result<(), ConfigError> {
    fn span<T>(v: &Option<Spanned<T>>) -> Option<std::ops::Range<usize>> {
        v.as_ref().map(Spanned::span)
    }
    const HTTP: &[&str] = &["http", "https"];
    /// A key, where it is written (if it is), the types it applies to.
    type Key<'a> = (&'a str, Option<std::ops::Range<usize>>, &'a [&'a str]);
    let keys: [Key; 15] = [
        (
            "port",
            span(&raw.port),
            &["tcp", "http", "https", "command", "udp", "dns", "smtp"],
        ),
        ("path", span(&raw.path), HTTP),
        ("status", span(&raw.status), HTTP),
        ("body", span(&raw.body), HTTP),
        ("host", span(&raw.host), HTTP),
        ("reuse_connection", span(&raw.reuse_connection), HTTP),
        ("command", span(&raw.command), &["command"]),
        ("payload", span(&raw.payload), &["udp"]),
        ("payload_hex", span(&raw.payload_hex), &["udp"]),
        ("expect", span(&raw.expect), &["udp", "dns"]),
        ("expect_hex", span(&raw.expect_hex), &["udp"]),
        ("expect_reply", span(&raw.expect_reply), &["udp"]),
        ("query_name", span(&raw.query_name), &["dns"]),
        ("query_type", span(&raw.query_type), &["dns"]),
        ("helo", span(&raw.helo), &["smtp"]),
    ];
    if !TYPES.contains(&kind) {
        return Ok(());
    }
    let unused = keys
        .into_iter()
        .find_map(|(key, span, types)| span.filter(|_| !types.contains(&kind)).map(|s| (key, s)));
    if let Some((key, span)) = unused {
        let a = if kind == "icmp" { "an" } else { "a" };
        return Err(err(
            file.at(span),
            format!("{key} does not apply to {a} {kind} check; remove it"),
        ));
    }
    Ok(())
}

/// The probe the check's `type` names, with its keys.
fn probe(file: &ConfigFile, raw: &RawCheck, at: &Loc, kind: &str) -> Result<Probe, ConfigError> {
    Ok(match kind {
        "tcp" => Probe::Tcp,
        "http" => Probe::Http(http_probe(file, raw, at, false)?),
        "https" => Probe::Https(http_probe(file, raw, at, true)?),
        "command" => {
            match &raw.command {
                Some(c) if c.get_ref().first().is_some_and(|p| !p.is_empty()) => Probe::Command {
                    argv: c.get_ref().clone(),
                    dynamic: raw.misc_dynamic.as_ref().is_some_and(|d| *d.get_ref()),
                },
                Some(c) => return Err(file.err_at(
                    c,
                    "command must start with the program, e.g. [\"/usr/local/bin/check\", \"arg\"]",
                )),
                None => {
                    return Err(file.err_at(
                        &raw.kind,
                        "a command check needs command = [\"/path/to/check\", \"arg\"]",
                    ))
                }
            }
        }
        "udp" => Probe::Udp(probes::udp(file, raw)?),
        "dns" => Probe::Dns(probes::dns(file, raw, &raw.kind)?),
        "icmp" => Probe::Icmp,
        "smtp" => Probe::Smtp(probes::smtp(file, raw)?),
        other => {
            return Err(file.err_at(
                &raw.kind,
                format!(
                    "unknown check type {other:?}; expected tcp, http, https, command, udp, dns, \
                     icmp or smtp"
                ),
            ))
        }
    })
}

/// The request and expected answer of an http or https check (`tls`: https).
fn http_probe(
    file: &ConfigFile,
    raw: &RawCheck,
    at: &Loc,
    tls: bool,
) -> Result<HttpProbe, ConfigError> {
    let path = raw
        .path
        .as_ref()
        .map_or("/".to_string(), |p| p.get_ref().clone());
    if !path.starts_with('/') || path.contains(|c: char| c.is_whitespace() || c.is_control()) {
        let p = raw
            .path
            .as_ref()
            .map_or(at.to_string(), |p| file.at(p.span()));
        return Err(err(
            &p,
            format!("check path {path:?} must start with / and contain no spaces"),
        ));
    }
    let host = raw
        .host
        .as_ref()
        .map(|h| check_host(file, h, tls))
        .transpose()?;
    Ok(HttpProbe {
        path,
        status: match &raw.status {
            Some(s) => int_in(file, s, 100, 599, "check status")? as u16,
            None => 200,
        },
        body: raw.body.as_ref().map(|b| b.get_ref().clone()),
        host,
        reuse_connection: raw.reuse_connection.as_ref().is_some_and(|r| *r.get_ref()),
    })
}

/// How often the check runs and how long one may take: at most the interval.
fn interval_and_timeout(
    file: &ConfigFile,
    raw: &RawCheck,
    at: &Loc,
) -> Result<(Duration, Duration), ConfigError> {
    let interval = ms(file, &raw.interval_ms, 2000, "interval_ms")?;
    let timeout = ms(file, &raw.timeout_ms, 1000, "timeout_ms")?;
    if timeout <= interval {
        return Ok((interval, timeout));
    }
    let (t, i) = (timeout.as_millis(), interval.as_millis());
    Err(match (&raw.timeout_ms, &raw.interval_ms) {
        (Some(v), _) => file.err_at(
            v,
            format!("timeout_ms {t} is longer than interval_ms {i}; make it at most {i}"),
        ),
        (None, Some(v)) => file.err_at(
            v,
            format!(
                "interval_ms {i} is shorter than the default timeout_ms {t}; \
                 also set timeout_ms = {i} or less"
            ),
        ),
        (None, None) => err(at, "timeout_ms is longer than interval_ms"),
    })
}

/// What a failed server gets: weight 0 (the default) or removal from the service.
fn on_failure(file: &ConfigFile, raw: &RawCheck) -> Result<OnFailure, ConfigError> {
    match raw.on_failure.as_ref().map(|o| (o, o.get_ref().as_str())) {
        None | Some((_, "quiesce")) => Ok(OnFailure::Quiesce),
        Some((_, "remove")) => Ok(OnFailure::Remove),
        Some((o, other)) => Err(file.err_at(
            o,
            format!("unknown on_failure {other:?}; expected quiesce (weight 0) or remove"),
        )),
    }
}

fn ms(
    file: &ConfigFile,
    v: &Option<Spanned<i64>>,
    default: u64,
    what: &str,
) -> Result<Duration, ConfigError> {
    Ok(Duration::from_millis(match v {
        Some(v) => int_in(file, v, 10, 3_600_000, what)? as u64,
        None => default,
    }))
}

/// The check's `Host` header: one header value (no control characters or spaces), and for
/// https also a valid TLS server name once any `:port` is left off.
fn check_host(file: &ConfigFile, v: &Spanned<String>, tls: bool) -> Result<String, ConfigError> {
    let host = v.get_ref();
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(file.err_at(
            v,
            format!("check host {host:?} must be a host name, e.g. \"www.example.com\" (no spaces or line breaks)"),
        ));
    }
    if tls {
        crate::director::health::probe::tls_server_name(host).map_err(|m| file.err_at(v, m))?;
    }
    Ok(host.clone())
}
