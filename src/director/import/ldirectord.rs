//! `director import --from ldirectord`: ldirectord.cf → the `[director]` document. Global
//! `key = value` lines set defaults; each `virtual = IP:PORT` (or a firewall mark) opens a
//! section of indented lines: `real = IP:PORT gate|masq|ipip [weight]`, the check
//! (`checktype`, `service`, `request`, `receive`, ...) and the service's settings. What maps
//! is carried (connect → tcp, negotiate with service http/https → http/https with path and
//! body, external → command, quiescent → on_failure, fallback → sorry server); the rest is
//! one warning per line.

use super::document::{to_toml, Place};
use super::{check_interface, Imported};
use crate::config_file::ConfigError;
use std::path::Path;
use std::rc::Rc;

/// The largest ldirectord.cf read.
const MAX_BYTES: u64 = 16 * 1024 * 1024;
/// At most this many real servers from one `IP->IP` range.
const MAX_RANGE: u32 = 1024;

/// One `key = value` line.
#[derive(Debug, Clone)]
struct Line {
    at: Place,
    key: String,
    value: String,
}

impl Line {
    fn not_carried(&self, why: &str) -> String {
        self.at.warning(format_args!(
            "{} = {} is not carried ({why})",
            self.key, self.value
        ))
    }
}

/// The settings a global line gives and a section line overrides.
#[derive(Debug, Clone, Default)]
struct Settings {
    checktimeout: Option<f64>,
    negotiatetimeout: Option<f64>,
    checkinterval: Option<f64>,
    failurecount: Option<u32>,
    quiescent: Option<bool>,
    fallback: Option<Line>,
}

impl Settings {
    /// Takes in a line if it is one of these settings.
    fn take(&mut self, l: &Line) -> Result<bool, ConfigError> {
        match l.key.as_str() {
            "checktimeout" | "connecttimeout" => self.checktimeout = Some(seconds(l)?),
            "negotiatetimeout" => self.negotiatetimeout = Some(seconds(l)?),
            "checkinterval" => self.checkinterval = Some(seconds(l)?),
            "failurecount" => self.failurecount = Some(count(l)?),
            "quiescent" => self.quiescent = Some(yes_no(l)?),
            "fallback" | "fallback6" => self.fallback = Some(l.clone()),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn seconds(l: &Line) -> Result<f64, ConfigError> {
    l.value
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| {
            l.at.err(format_args!(
                "{} {:?} is not a number of seconds",
                l.key, l.value
            ))
        })
}

fn count(l: &Line) -> Result<u32, ConfigError> {
    l.value.parse().map_err(|_| {
        l.at.err(format_args!(
            "{} {:?} is not a whole number",
            l.key, l.value
        ))
    })
}

fn yes_no(l: &Line) -> Result<bool, ConfigError> {
    match l.value.as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        v => Err(l
            .at
            .err(format_args!("{} {v:?}: expected yes or no", l.key))),
    }
}

/// A `virtual =` line and its section.
struct Section {
    head: Line,
    lines: Vec<Line>,
}

/// Converts ldirectord.cf at `path` to a `[director]` TOML document for `interface`,
/// validated as `director up` reads it, and the warnings of what it does not carry.
pub fn ldirectord_to_toml(path: &Path, interface: &str) -> Result<Imported, ConfigError> {
    check_interface(interface)?;
    let name = path.display().to_string();
    let cannot = |e: String| ConfigError(format!("{name}: {e}"));
    let meta = std::fs::metadata(path).map_err(|e| cannot(e.to_string()))?;
    if !meta.is_file() || meta.len() > MAX_BYTES {
        return Err(cannot(format!(
            "is not a regular file of at most {} MiB",
            MAX_BYTES >> 20
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| cannot(e.to_string()))?;
    ldirectord_text_to_toml(&name, &text, interface)
}

/// The same for ldirectord.cf text (`name` names it in errors and warnings).
pub(crate) fn ldirectord_text_to_toml(
    name: &str,
    text: &str,
    interface: &str,
) -> Result<Imported, ConfigError> {
    check_interface(interface)?;
    let file: Rc<str> = name.into();
    let mut warnings = Vec::new();
    let mut global = Settings::default();
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let Some((indented, line)) = line(&file, i + 1, raw)? else {
            continue;
        };
        match (indented, sections.last_mut()) {
            (true, Some(section)) => section.lines.push(line),
            (true, None) => {
                return Err(line
                    .at
                    .err("an indented line belongs to a virtual = section; none is open"))
            }
            (false, _) if matches!(line.key.as_str(), "virtual" | "virtual6") => {
                sections.push(Section {
                    head: line,
                    lines: Vec::new(),
                })
            }
            (false, _) if global.take(&line)? => {}
            (false, _) => warnings.push(line.not_carried(why(&line.key))),
        }
    }
    if sections.is_empty() {
        return Err(ConfigError(format!(
            "{name}: no virtual = section to import"
        )));
    }
    let mut services = Vec::new();
    for section in &sections {
        services.push(service(section, &global, &mut warnings)?);
    }
    let toml = to_toml(
        &format!("ldirectord configuration {name}"),
        name,
        interface,
        &services,
    )?;
    Ok(Imported { toml, warnings })
}

/// Why a line is not carried (global or in a section).
pub(super) fn why(key: &str) -> &'static str {
    match key {
        "autoreload" | "callback" => "rs-agent reloads on SIGHUP, e.g. systemctl reload",
        "logfile" => "rs-agent logs to stderr, i.e. the journal",
        "supervised" | "fork" => {
            "rs-agent runs in the foreground and checks every server concurrently"
        }
        "emailalert" | "emailalertfrom" | "emailalertfreq" | "emailalertstatus" | "smtp" => {
            "rs-agent sends no mail"
        }
        "cleanstop" => {
            "rs-agent leaves the director configured when it stops; `director down` removes it"
        }
        "login" | "passwd" | "database" | "secret" => {
            "rs-agent checks tcp, http, https and commands"
        }
        "readdquiescent" | "maintenancedir" | "execute" | "fallbackcommand" | "checkcount"
        | "monitorfile" => "rs-agent has no such setting",
        _ => "import does not know it",
    }
}

/// One line as (indented, `key = value`); None for a blank line or a comment.
fn line(file: &Rc<str>, n: usize, raw: &str) -> Result<Option<(bool, Line)>, ConfigError> {
    let text = strip_comment(raw);
    if text.trim().is_empty() {
        return Ok(None);
    }
    let col = raw.chars().take_while(|c| c.is_whitespace()).count() + 1;
    let at = Place {
        file: file.clone(),
        line: n,
        col,
    };
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| at.err(format_args!("{:?} is not a key = value line", text.trim())))?;
    let value = value.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .filter(|v| !v.contains('"'))
        .unwrap_or(value);
    let line = Line {
        at,
        key: key.trim().to_string(),
        value: value.to_string(),
    };
    Ok(Some((col > 1, line)))
}

/// A line without its `#` comment (a `#` at the start or after a blank, outside quotes).
fn strip_comment(raw: &str) -> &str {
    let mut quoted = false;
    let mut prev_blank = true;
    for (i, c) in raw.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted && prev_blank => return &raw[..i],
            _ => {}
        }
        prev_blank = c.is_whitespace();
    }
    raw
}

mod section;
use section::service;

#[cfg(test)]
mod tests;
