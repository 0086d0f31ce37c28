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
        let text = read_config(&path)?;
        Self::parse(Some(path), text)
    }

    /// Parses config text; `path` only names the file in errors.
    pub fn parse(path: Option<PathBuf>, text: String) -> Result<Self, ConfigError> {
        let name = display_name(path.as_deref());
        let raw: RawConfig = toml::from_str(&text).map_err(|e| {
            let start = e.span().map_or(0, |s| s.start);
            let (line, col) = line_col(&text, start);
            let what = explain(first_line(e.message()), key_at(&text, start));
            ConfigError(format!("{name}:{line}:{col}: {what}"))
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

/// The largest config file read, in bytes. A config of 10000 services with 16 real servers
/// each (bench/gen.py) is about 4 MB; anything near the cap is not a config.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// What a config path names, as far as reading it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Other,
}

impl FileKind {
    fn of(t: std::fs::FileType) -> FileKind {
        use std::os::unix::fs::FileTypeExt;
        if t.is_file() {
            FileKind::Regular
        } else if t.is_dir() {
            FileKind::Directory
        } else if t.is_fifo() {
            FileKind::Fifo
        } else if t.is_socket() {
            FileKind::Socket
        } else if t.is_char_device() {
            FileKind::CharDevice
        } else if t.is_block_device() {
            FileKind::BlockDevice
        } else {
            FileKind::Other
        }
    }

    fn name(self) -> &'static str {
        match self {
            FileKind::Regular => "a regular file",
            FileKind::Directory => "a directory",
            FileKind::Fifo => "a FIFO",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Other => "not a regular file",
        }
    }
}

/// Refuses what is not a config file by what `stat` says, before a byte is read: anything but
/// a regular file (a FIFO would block the read until a writer comes, a device may never end),
/// and a file larger than [`MAX_CONFIG_BYTES`].
pub fn check_config_file(path: &Path, kind: FileKind, len: u64) -> Result<(), ConfigError> {
    let name = path.display();
    if kind != FileKind::Regular {
        return Err(ConfigError(format!(
            "{name}: is {}, not a config file; pass a regular file with --config",
            kind.name()
        )));
    }
    if len > MAX_CONFIG_BYTES {
        return Err(ConfigError(format!(
            "{name}: is {len} bytes, larger than the {} MiB a config may be; pass the real \
             config file with --config",
            MAX_CONFIG_BYTES / (1024 * 1024)
        )));
    }
    Ok(())
}

/// Reads a config file: stat first (a FIFO is refused without being opened), then open
/// without blocking and check the opened file again (the path may have changed in between),
/// then read at most [`MAX_CONFIG_BYTES`] (a file may grow after its stat).
fn read_config(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let cannot = |e: std::io::Error| {
        ConfigError(format!(
            "{}: cannot read config: {e}; pass an existing file with --config",
            path.display()
        ))
    };
    let meta = std::fs::metadata(path).map_err(cannot)?;
    check_config_file(path, FileKind::of(meta.file_type()), meta.len())?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    check_config_file(path, FileKind::of(meta.file_type()), meta.len())?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    check_config_file(path, FileKind::Regular, len)?;
    String::from_utf8(bytes).map_err(|e| {
        let (line, col) = line_col_bytes(e.as_bytes(), e.utf8_error().valid_up_to());
        ConfigError(format!(
            "{}:{line}:{col}: the config is not UTF-8 text; save it as UTF-8",
            path.display()
        ))
    })
}

/// 1-based line and column of a byte offset in bytes that are UTF-8 up to it.
fn line_col_bytes(bytes: &[u8], offset: usize) -> (usize, usize) {
    let valid = bytes.get(..offset).unwrap_or(bytes);
    line_col(&String::from_utf8_lossy(valid), offset)
}

fn display_name(path: Option<&Path>) -> String {
    path.map(|p| p.display().to_string())
        .unwrap_or_else(|| "config".to_string())
}

/// The key of the `key = value` line at `offset` (a value's or a key's position), if any.
fn key_at(text: &str, offset: usize) -> Option<&str> {
    let offset = offset.min(text.len());
    let line_start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(line_start..)?.lines().next()?;
    let key = line.split('=').next()?.trim().trim_matches('"');
    let plain = !key.is_empty()
        && line.contains('=')
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || "_-.\"".contains(c));
    plain.then_some(key)
}

/// toml's message in the config's words: the key named, and what a value of the wanted type
/// looks like (`duplicate key` alone names nothing; `expected a sequence` is serde's word).
fn explain(message: &str, key: Option<&str>) -> String {
    let wanted = [
        ("expected a sequence", "a list, e.g. [\"192.0.2.100\"]"),
        ("expected i64", "a whole number (no quotes)"),
        ("expected a boolean", "true or false (no quotes)"),
        ("expected a string", "a quoted string"),
    ];
    let Some(key) = key else {
        return message.to_string();
    };
    if message == "duplicate key" {
        return format!("duplicate key {key:?}; give each key once per table");
    }
    match wanted.iter().find(|(serde, _)| message.ends_with(serde)) {
        Some((serde, ours)) => {
            let found = message
                .strip_prefix("invalid type: ")
                .and_then(|m| m.strip_suffix(serde))
                .map(|m| m.trim_end_matches([',', ' ']))
                .unwrap_or("another type");
            format!("{key} must be {ours}, not {found}")
        }
        None if message.contains(key) => message.to_string(),
        None => format!("{key}: {message}"),
    }
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
    #[error(
        "VIP {0} is an IPv4-mapped IPv6 address, which is never bound or routed as such; give \
         the IPv4 address {1}"
    )]
    V4Mapped(std::net::Ipv6Addr, std::net::Ipv4Addr),
    #[error("{0:?} is not a valid interface name (1-15 characters, no '/', ':' or spaces)")]
    Ifname(String),
}

/// A VIP must be a plain unicast host address: no prefix, not loopback, multicast or
/// unspecified, and not an IPv4 address in IPv6 form (::ffff:0:0/96: the kernel would bind it
/// as an IPv6 address that no IPv4 client ever reaches).
/// A daemon's listen address (`health_listen`, `metrics_listen`): the flag `flag` (`--NAME
/// TEXT`) when given, else the file's `value`, else none. Errors name the flag or the file's
/// line and column.
pub fn listen_addr(
    file: &ConfigFile,
    flag: (&str, Option<&str>),
    value: Option<&Spanned<String>>,
) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    let parse = |text: &str| {
        text.parse::<std::net::SocketAddr>().map_err(|_| {
            format!("{text:?} is not a listen address; expected ADDR:PORT, e.g. 198.51.100.2:8081 or [2001:db8::2]:8081")
        })
    };
    if let (name, Some(text)) = flag {
        return parse(text)
            .map(Some)
            .map_err(|m| ConfigError(format!("--{name} {text}: {m}")));
    }
    match value {
        Some(v) => parse(v.get_ref()).map(Some).map_err(|m| file.err_at(v, m)),
        None => Ok(None),
    }
}

pub fn parse_vip_str(value: &str) -> Result<IpAddr, ValueError> {
    if value.contains('/') {
        return Err(ValueError::VipPrefix(value.to_string()));
    }
    let ip: IpAddr = value
        .parse()
        .map_err(|_| ValueError::NotAnAddress(value.to_string()))?;
    if let IpAddr::V6(v6) = ip {
        if let Some(v4) = v6.to_ipv4_mapped() {
            return Err(ValueError::V4Mapped(v6, v4));
        }
    }
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

    #[test]
    fn toml_errors_name_the_key_and_the_wanted_form() {
        let err = |text: &str| match ConfigFile::parse(Some("c.toml".into()), text.into()) {
            Err(e) => e.0,
            Ok(_) => panic!("{text:?} parsed"),
        };
        assert_eq!(
            err("[real_server]\nvips = [\"192.0.2.1\"]\nvips = [\"192.0.2.2\"]\n"),
            "c.toml:3:1: duplicate key \"vips\"; give each key once per table"
        );
        assert_eq!(
            err("[real_server]\nvips = \"192.0.2.1\"\n"),
            "c.toml:2:8: vips must be a list, e.g. [\"192.0.2.100\"], not string \"192.0.2.1\""
        );
        assert_eq!(
            err("[real_server]\ncheck_interval_ms = \"x\"\n"),
            "c.toml:2:21: check_interval_ms must be a whole number (no quotes), not string \"x\""
        );
    }
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

    #[test]
    fn an_ipv4_mapped_vip_is_refused_naming_the_ipv4_address() {
        for text in [
            "::ffff:192.0.2.100",
            "::FFFF:c000:0264",
            "0:0:0:0:0:ffff:192.0.2.100",
        ] {
            assert_eq!(
                parse_vip_str(text).map_err(|e| e.to_string()),
                Err(
                    "VIP ::ffff:192.0.2.100 is an IPv4-mapped IPv6 address, which is never \
                     bound or routed as such; give the IPv4 address 192.0.2.100"
                        .into()
                ),
                "{text}"
            );
        }
        // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96) are ordinary IPv6.
        assert!(parse_vip_str("64:ff9b::192.0.2.100").is_ok());
        assert!(parse_vip_str("192.0.2.100").is_ok());
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rsa-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        dir
    }

    #[test]
    fn only_a_regular_file_within_the_cap_is_read() {
        let p = Path::new("/etc/rs.toml");
        let msg = |kind, len| check_config_file(p, kind, len).map_err(|e| e.0);
        assert_eq!(msg(FileKind::Regular, 0), Ok(()));
        assert_eq!(msg(FileKind::Regular, MAX_CONFIG_BYTES), Ok(()));
        assert_eq!(
            msg(FileKind::Regular, MAX_CONFIG_BYTES + 1),
            Err(
                "/etc/rs.toml: is 16777217 bytes, larger than the 16 MiB a config may be; pass \
                 the real config file with --config"
                    .into()
            )
        );
        for (kind, what) in [
            (FileKind::Fifo, "a FIFO"),
            (FileKind::Directory, "a directory"),
            (FileKind::CharDevice, "a character device"),
            (FileKind::BlockDevice, "a block device"),
            (FileKind::Socket, "a socket"),
        ] {
            assert_eq!(
                msg(kind, 0),
                Err(format!(
                    "/etc/rs.toml: is {what}, not a config file; pass a regular file with --config"
                ))
            );
        }
    }

    #[test]
    fn a_fifo_a_directory_and_a_device_are_refused_without_blocking() {
        let dir = scratch("kinds");
        let fifo = dir.join("fifo.toml");
        let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).expect("no NUL");
        // SAFETY: a valid NUL-terminated path; mkfifo touches nothing else.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        let (tx, rx) = std::sync::mpsc::channel();
        let paths = [fifo, dir.clone(), PathBuf::from("/dev/zero")];
        std::thread::spawn(move || {
            for p in paths {
                let _ = tx.send(ConfigFile::load(Some(&p)).map(|_| ()).map_err(|e| e.0));
            }
        });
        for what in ["a FIFO", "a directory", "a character device"] {
            let got = rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("loading {what} blocked"));
            let err = got.expect_err(what);
            assert!(
                err.contains(&format!(": is {what}, not a config file")),
                "{err}"
            );
            assert!(!err.contains('\n'), "{err}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_oversized_file_is_refused_without_reading_it() {
        let dir = scratch("big");
        let path = dir.join("big.toml");
        let file = std::fs::File::create(&path).expect("creating the file");
        // Sparse: 200 MiB of holes, nothing written; reading it would take the whole size.
        file.set_len(200 * 1024 * 1024).expect("set_len");
        let started = std::time::Instant::now();
        let err = ConfigFile::load(Some(&path)).expect_err("200 MiB is over the cap");
        assert!(
            err.0.ends_with(
                ": is 209715200 bytes, larger than the 16 MiB a config may be; pass \
                 the real config file with --config"
            ),
            "{}",
            err.0
        );
        // Generous: a read of 200 MiB would not be measured in seconds here, a stat is.
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_config_that_is_not_utf8_is_located() {
        let dir = scratch("utf8");
        let path = dir.join("latin1.toml");
        std::fs::write(&path, b"[real_server]\nvips = [\"caf\xe9\"]\n").expect("writing");
        let err = ConfigFile::load(Some(&path)).expect_err("not UTF-8");
        assert!(
            err.0
                .ends_with("latin1.toml:2:13: the config is not UTF-8 text; save it as UTF-8"),
            "{}",
            err.0
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
