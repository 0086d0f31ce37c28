//! The config file as written: reading it, its tables as serde types with spans
//! (`real_server`, `director`: no validation), and turning a value's span into
//! `file:line:col`. What the tables mean is each side's (`real_server::config`,
//! `director::config` validate them); this module imports neither. Also the value checks both
//! sides share (a VIP, an interface name).

pub mod director;
pub mod real_server;

use crate::model::IFNAMSIZ_MAX;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Where the config is read from when `--config` is not given (and only if it exists).
pub const DEFAULT_CONFIG: &str = "/etc/rs-agent/rs-agent.toml";

/// An input error: a one-line message that names the input and says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The whole config file, as written. Spans are kept so that semantic errors can point at
/// the offending value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub real_server: Option<real_server::RawRealServer>,
    pub director: Option<director::RawDirector>,
}

/// A parsed config file together with its text, for turning spans into `file:line:col`.
#[derive(Debug, Default)]
pub struct ConfigFile {
    pub path: Option<PathBuf>,
    pub text: String,
    pub raw: RawConfig,
    /// Byte offsets where lines start, built on first use: locating a value is a binary
    /// search, so validating a config with thousands of values stays linear.
    line_starts: std::sync::OnceLock<Vec<usize>>,
}

impl ConfigFile {
    /// Reads `path`, or the default config if `path` is `None` and the default exists;
    /// otherwise an empty config (flags only).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None if Path::new(DEFAULT_CONFIG).exists() => PathBuf::from(DEFAULT_CONFIG),
            None => return Ok(Self::default()),
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ConfigError(format!(
                "{}: cannot read config: {e}; pass an existing file with --config",
                path.display()
            ))
        })?;
        Self::parse(Some(path), text)
    }

    /// Parses config text; `path` only names the file in errors.
    pub fn parse(path: Option<PathBuf>, text: String) -> Result<Self, ConfigError> {
        let name = display_name(path.as_deref());
        let raw: RawConfig = toml::from_str(&text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((1, 1));
            ConfigError(format!("{name}:{line}:{col}: {}", first_line(e.message())))
        })?;
        Ok(Self {
            path,
            text,
            raw,
            line_starts: Default::default(),
        })
    }

    /// The file's name as errors show it.
    pub fn name(&self) -> String {
        display_name(self.path.as_deref())
    }

    /// `file:line:col` for a span in this file.
    pub fn at(&self, span: std::ops::Range<usize>) -> String {
        let starts = self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let offset = span.start.min(self.text.len());
        let line = starts.partition_point(|&s| s <= offset).max(1);
        let start = starts[line - 1];
        let col = self
            .text
            .get(start..offset)
            .map_or(0, |t| t.chars().count())
            + 1;
        format!("{}:{line}:{col}", display_name(self.path.as_deref()))
    }

    /// An error located at a spanned value.
    pub fn err_at<T>(&self, value: &Spanned<T>, msg: impl std::fmt::Display) -> ConfigError {
        ConfigError(format!("{}: {msg}", self.at(value.span())))
    }
}

fn display_name(path: Option<&Path>) -> String {
    path.map(|p| p.display().to_string())
        .unwrap_or_else(|| "config".to_string())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s).trim()
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// A VIP or interface name that is not one; the caller prefixes where it was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("VIP {0:?} has a prefix length; give the bare address (it is bound as /32 or /128)")]
    VipPrefix(String),
    #[error("{0:?} is not an IP address; expected e.g. 192.0.2.100 or 2001:db8::100")]
    NotAnAddress(String),
    #[error("VIP {0} is not a usable unicast address; use the service's public unicast address")]
    NotUnicast(IpAddr),
    #[error("{0:?} is not a valid interface name (1-15 characters, no '/', ':' or spaces)")]
    Ifname(String),
}

/// A VIP must be a plain unicast host address: no prefix, not loopback, multicast or unspecified.
pub fn parse_vip_str(value: &str) -> Result<IpAddr, ValueError> {
    if value.contains('/') {
        return Err(ValueError::VipPrefix(value.to_string()));
    }
    let ip: IpAddr = value
        .parse()
        .map_err(|_| ValueError::NotAnAddress(value.to_string()))?;
    let bad = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast() || v4.is_link_local())
        || matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local());
    if bad {
        return Err(ValueError::NotUnicast(ip));
    }
    Ok(ip)
}

/// A Linux interface name: 1..=15 bytes, no '/', ':', whitespace (dev_valid_name()).
pub fn check_ifname(name: &str) -> Result<(), ValueError> {
    let bad_char = name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if name.is_empty() || name.len() > IFNAMSIZ_MAX || bad_char || name == "." || name == ".." {
        return Err(ValueError::Ifname(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages as the config errors quote them (after `file:line:col: ` or `--vip x: `).
    #[test]
    fn value_errors_say_what_to_give() {
        let vip = |v: &str| parse_vip_str(v).map_err(|e| e.to_string());
        assert_eq!(
            vip("192.0.2.100/32"),
            Err(
                "VIP \"192.0.2.100/32\" has a prefix length; give the bare address (it is bound \
                 as /32 or /128)"
                    .into()
            )
        );
        assert_eq!(
            vip("vip"),
            Err("\"vip\" is not an IP address; expected e.g. 192.0.2.100 or 2001:db8::100".into())
        );
        assert_eq!(
            vip("127.0.0.1"),
            Err(
                "VIP 127.0.0.1 is not a usable unicast address; use the service's public \
                 unicast address"
                    .into()
            )
        );
        assert_eq!(
            vip("2001:db8::100"),
            Ok("2001:db8::100".parse().expect("ip"))
        );
        assert_eq!(
            check_ifname("eth0:1").map_err(|e| e.to_string()),
            Err(
                "\"eth0:1\" is not a valid interface name (1-15 characters, no '/', ':' or \
                 spaces)"
                    .into()
            )
        );
        assert_eq!(check_ifname("eth0.100"), Ok(()));
    }
}
