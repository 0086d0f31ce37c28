//! `[real_server]` + command-line flags → validated [`RealServerDesired`]. Every input error
//! the user can make is reported from here, as one line naming the input (`file:line:col` or
//! `--flag`) and the fix, before anything touches the kernel.

use super::model::{ArpMethod, Device, RealServerDesired};
use crate::config_file::real_server::RawRealServer;
use crate::config_file::{check_ifname, parse_vip_str, ConfigError, ConfigFile};
use std::net::IpAddr;
use std::time::Duration;
use toml::Spanned;

/// Real-server settings given on the command line; each overrides the file's value.
#[derive(Debug, Clone, Default)]
pub struct RealServerFlags {
    pub vips: Vec<String>,
    pub device: Option<String>,
    pub arp: Option<String>,
    pub interfaces: Vec<String>,
}

impl RealServerFlags {
    pub fn is_empty(&self) -> bool {
        self.vips.is_empty()
            && self.device.is_none()
            && self.arp.is_none()
            && self.interfaces.is_empty()
    }
}

/// One input value and where it came from, so that errors can name it.
struct Input<'a> {
    value: &'a str,
    origin: String,
}

fn from_file<'a>(file: &ConfigFile, v: &'a Spanned<String>) -> Input<'a> {
    Input {
        value: v.get_ref(),
        origin: file.at(v.span()),
    }
}

fn from_flag<'a>(flag: &str, v: &'a str) -> Input<'a> {
    Input {
        value: v,
        origin: format!("{flag} {v}"),
    }
}

/// Builds the validated real-server desired state from the file and the flags. Every command
/// that reads `[real_server]` comes through here, so every one validates all of it, the keys
/// only `run` uses included: a file `check` or `run` refuses is one `up` and `status` refuse.
pub fn real_server(
    file: &ConfigFile,
    flags: &RealServerFlags,
) -> Result<RealServerDesired, ConfigError> {
    let empty = RawRealServer::default();
    let raw = file.raw.real_server.as_ref().unwrap_or(&empty);
    let from_file = |v| from_file(file, v);

    let vip_inputs: Vec<Input> = if flags.vips.is_empty() {
        raw.vips.iter().map(from_file).collect()
    } else {
        flags.vips.iter().map(|v| from_flag("--vip", v)).collect()
    };
    let vips = parse_vips(&vip_inputs)?;

    let device = match &flags.device {
        Some(d) => parse_device(&from_flag("--device", d))?,
        None => match &raw.device {
            Some(d) => parse_device(&from_file(d))?,
            None => Device::Loopback,
        },
    };
    let arp = match &flags.arp {
        Some(a) => parse_arp(&from_flag("--arp", a))?,
        None => match &raw.arp {
            Some(a) => parse_arp(&from_file(a))?,
            None => ArpMethod::Sysctl,
        },
    };
    let iface_inputs: Option<Vec<Input>> = if !flags.interfaces.is_empty() {
        Some(
            flags
                .interfaces
                .iter()
                .map(|i| from_flag("--interface", i))
                .collect(),
        )
    } else {
        match &raw.interfaces {
            // An empty list would bind the VIPs with ARP suppressed nowhere.
            Some(list) if list.get_ref().is_empty() => {
                return Err(file.err_at(
                    list,
                    "interfaces must not be empty; omit it to detect the LAN interfaces",
                ))
            }
            Some(list) => Some(list.get_ref().iter().map(from_file).collect()),
            None => None,
        }
    };
    let interfaces = iface_inputs
        .map(|inputs| parse_interfaces(&inputs, device.name()))
        .transpose()?;
    // The file's values as written (a flag of `run`'s may override them; the file must still
    // be one `check` accepts, as the unit's ExecReload runs it).
    run_keys(file, RunFlags::default())?;
    Ok(RealServerDesired {
        vips,
        device,
        arp,
        interfaces,
    })
}

/// `run`'s drain endpoint: `--health-listen`, else the file's `health_listen`, else none.
pub fn health_listen(
    file: &ConfigFile,
    flag: Option<&str>,
) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    let value = file
        .raw
        .real_server
        .as_ref()
        .and_then(|r| r.health_listen.as_ref());
    crate::config_file::listen_addr(file, ("health-listen", flag), value)
}

/// `run`'s metrics endpoint: `--metrics-listen`, else the file's `metrics_listen`, else none.
pub fn metrics_listen(
    file: &ConfigFile,
    flag: Option<&str>,
) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    let value = file
        .raw
        .real_server
        .as_ref()
        .and_then(|r| r.metrics_listen.as_ref());
    crate::config_file::listen_addr(file, ("metrics-listen", flag), value)
}

/// Default time between `run`'s drift checks (sysctls and nft tables send no events).
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
const CHECK_INTERVAL_MS: std::ops::RangeInclusive<i64> = 100..=3_600_000;

/// `run`'s check interval: `--interval` (`500ms`, `2s`, or bare milliseconds), else the
/// file's `check_interval_ms`, else 2 s. Between 100 ms and 1 h.
pub fn check_interval(file: &ConfigFile, flag: Option<&str>) -> Result<Duration, ConfigError> {
    let range_msg = "the check interval must be between 100 ms and 1 h (3600000 ms)";
    if let Some(text) = flag {
        let t = text.trim();
        let ms = match (t.strip_suffix("ms"), t.strip_suffix('s')) {
            (Some(n), _) => n.trim().parse::<i64>().ok(),
            (None, Some(n)) => n
                .trim()
                .parse::<i64>()
                .ok()
                .and_then(|s| s.checked_mul(1000)),
            (None, None) => t.parse::<i64>().ok(),
        };
        let ms = ms.ok_or_else(|| {
            ConfigError(format!(
                "--interval {text}: not a duration; give e.g. 500ms, 2s or 2000 (milliseconds)"
            ))
        })?;
        if !CHECK_INTERVAL_MS.contains(&ms) {
            return Err(ConfigError(format!("--interval {text}: {range_msg}")));
        }
        return Ok(Duration::from_millis(ms.unsigned_abs()));
    }
    let from_file = file
        .raw
        .real_server
        .as_ref()
        .and_then(|r| r.check_interval_ms.as_ref());
    match from_file {
        None => Ok(DEFAULT_CHECK_INTERVAL),
        Some(v) if CHECK_INTERVAL_MS.contains(v.get_ref()) => {
            Ok(Duration::from_millis(v.get_ref().unsigned_abs()))
        }
        Some(v) => Err(file.err_at(v, range_msg)),
    }
}

/// The settings only `run` uses, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunKeys {
    pub interval: Duration,
    /// Where to serve `/health` (the drain state), if anywhere.
    pub health_listen: Option<std::net::SocketAddr>,
    /// Where to serve `/metrics`, if anywhere; the same address as `health_listen` shares
    /// its listener.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// `run`'s flags for the keys only it uses; each overrides the file's value.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunFlags<'a> {
    pub interval: Option<&'a str>,
    pub health_listen: Option<&'a str>,
    pub metrics_listen: Option<&'a str>,
}

/// The settings only `run` uses (check interval, drain and metrics endpoints), validated
/// together: `run` reads them through here, and so does `check` (ExecReload), so a config
/// `check` accepts is one `run` accepts.
pub fn run_keys(file: &ConfigFile, flags: RunFlags) -> Result<RunKeys, ConfigError> {
    Ok(RunKeys {
        interval: check_interval(file, flags.interval)?,
        health_listen: health_listen(file, flags.health_listen)?,
        metrics_listen: metrics_listen(file, flags.metrics_listen)?,
    })
}

fn parse_vips(inputs: &[Input]) -> Result<Vec<IpAddr>, ConfigError> {
    if inputs.is_empty() {
        return Err(ConfigError(
            "no VIP given; pass --vip ADDR or set vips = [...] under [real_server] in the config"
                .to_string(),
        ));
    }
    let mut vips = Vec::new();
    for input in inputs {
        let ip = parse_vip(input)?;
        if vips.contains(&ip) {
            return Err(ConfigError(format!(
                "{}: VIP {ip} is listed twice; list each VIP once",
                input.origin
            )));
        }
        vips.push(ip);
    }
    Ok(vips)
}

fn parse_vip(input: &Input) -> Result<IpAddr, ConfigError> {
    parse_vip_str(input.value).map_err(|m| ConfigError(format!("{}: {m}", input.origin)))
}

fn parse_device(input: &Input) -> Result<Device, ConfigError> {
    check_ifname(input.value).map_err(|m| ConfigError(format!("{}: {m}", input.origin)))?;
    if input.value == "lo" {
        Ok(Device::Loopback)
    } else {
        Ok(Device::Dummy(input.value.to_string()))
    }
}

fn parse_arp(input: &Input) -> Result<ArpMethod, ConfigError> {
    match input.value {
        "sysctl" => Ok(ArpMethod::Sysctl),
        "nft" => Ok(ArpMethod::Nft),
        other => Err(ConfigError(format!(
            "{}: unknown ARP method {other:?}; expected sysctl or nft",
            input.origin
        ))),
    }
}

fn parse_interfaces(inputs: &[Input], device: &str) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for input in inputs {
        let name = input.value;
        check_ifname(name).map_err(|m| ConfigError(format!("{}: {m}", input.origin)))?;
        if name == "lo" || name == device {
            return Err(ConfigError(format!(
                "{}: {name:?} holds the VIPs and does not face the LAN; list the interfaces \
                 that carry the real server's own address (e.g. eth0)",
                input.origin
            )));
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_file::line_col;
    use std::path::PathBuf;

    fn file(text: &str) -> Result<ConfigFile, ConfigError> {
        ConfigFile::parse(Some(PathBuf::from("rs.toml")), text.to_string())
    }

    fn rs(text: &str, flags: &RealServerFlags) -> Result<RealServerDesired, ConfigError> {
        real_server(&file(text)?, flags)
    }

    fn err(text: &str, flags: &RealServerFlags) -> String {
        match rs(text, flags) {
            Ok(d) => panic!("expected an error, got {d:?}"),
            Err(e) => e.0,
        }
    }

    fn vip_flags(vips: &[&str]) -> RealServerFlags {
        RealServerFlags {
            vips: vips.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn check_interval_from_flag_file_or_default() {
        let f = |t: &str| file(t).expect("parses");
        let none = f("");
        let cases: &[(&ConfigFile, Option<&str>, Result<u64, &str>)] = &[
            (&none, None, Ok(2000)),
            (&none, Some("500ms"), Ok(500)),
            (&none, Some("3s"), Ok(3000)),
            (&none, Some("250"), Ok(250)),
            (&none, Some("fast"), Err("--interval fast: not a duration")),
            (
                &none,
                Some("10ms"),
                Err("--interval 10ms: the check interval must be"),
            ),
        ];
        for (file, flag, want) in cases {
            let got = check_interval(file, *flag)
                .map(|d| d.as_millis() as u64)
                .map_err(|e| e.0);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, *w, "{flag:?}"),
                (Err(g), Err(w)) => assert!(g.starts_with(w), "{flag:?}: {g}"),
                (g, w) => panic!("{flag:?}: got {g:?}, want {w:?}"),
            }
        }
        let file_set = f("[real_server]\nvips = [\"192.0.2.1\"]\ncheck_interval_ms = 750\n");
        assert_eq!(
            check_interval(&file_set, None),
            Ok(Duration::from_millis(750))
        );
        assert_eq!(
            check_interval(&file_set, Some("1s")),
            Ok(Duration::from_secs(1))
        );
        let bad = f("[real_server]\nvips = [\"192.0.2.1\"]\ncheck_interval_ms = 0\n");
        let err = check_interval(&bad, None).expect_err("0 ms is out of range");
        assert!(
            err.0.starts_with("rs.toml:3:21: the check interval"),
            "{}",
            err.0
        );
    }

    #[test]
    fn run_keys_reject_what_run_rejects() {
        let cases = [
            ("check_interval_ms = 50", "rs.toml:3:21: the check interval"),
            (
                "health_listen = \"nonsense\"",
                "rs.toml:3:17: \"nonsense\" is not a listen",
            ),
            (
                "metrics_listen = \"192.0.2.2\"",
                "rs.toml:3:18: \"192.0.2.2\" is not a listen address; expected ADDR:PORT",
            ),
        ];
        for (line, want) in cases {
            let text = format!("[real_server]\nvips = [\"192.0.2.1\"]\n{line}\n");
            let f = file(&text).expect("parses");
            let err = run_keys(&f, RunFlags::default()).expect_err(line);
            assert!(err.0.starts_with(want), "{line}: {}", err.0);
        }
        let good =
            file("[real_server]\nvips = [\"192.0.2.1\"]\nhealth_listen = \"192.0.2.2:8081\"\n")
                .expect("parses");
        assert!(run_keys(&good, RunFlags::default())
            .is_ok_and(|k| k.health_listen.is_some() && k.metrics_listen.is_none()));
        let flag = RunFlags {
            metrics_listen: Some("192.0.2.2"),
            ..RunFlags::default()
        };
        let err = run_keys(&good, flag).expect_err("no port");
        assert!(
            err.0
                .starts_with("--metrics-listen 192.0.2.2: \"192.0.2.2\" is not a listen"),
            "{}",
            err.0
        );
        let both = file(
            "[real_server]\nvips = [\"192.0.2.1\"]\nhealth_listen = \"192.0.2.2:8081\"\n\
             metrics_listen = \"192.0.2.2:8081\"\n",
        )
        .expect("parses");
        assert!(run_keys(&both, RunFlags::default())
            .is_ok_and(|k| k.metrics_listen.is_some() && k.metrics_listen == k.health_listen));
    }

    #[test]
    fn every_reader_of_the_file_refuses_what_run_refuses() {
        let cases = [
            ("check_interval_ms = 5", "rs.toml:3:21: the check interval"),
            ("check_interval_ms = -1", "rs.toml:3:21: the check interval"),
            (
                "health_listen = \"bogus\"",
                "rs.toml:3:17: \"bogus\" is not a listen",
            ),
            (
                "health_listen = \":99999\"",
                "rs.toml:3:17: \":99999\" is not a listen",
            ),
            (
                "metrics_listen = \"bogus\"",
                "rs.toml:3:18: \"bogus\" is not a listen",
            ),
        ];
        for (line, want) in cases {
            let text = format!("[real_server]\nvips = [\"192.0.2.1\"]\n{line}\n");
            let got = err(&text, &RealServerFlags::default());
            assert!(got.starts_with(want), "{line}: {got}");
            // With the VIPs from the flags the file's other keys still count.
            let got = err(&text, &vip_flags(&["192.0.2.2"]));
            assert!(got.starts_with(want), "{line} with --vip: {got}");
        }
    }

    #[test]
    fn file_with_defaults() {
        let d = rs(
            "[real_server]\nvips = [\"192.0.2.100\", \"2001:db8::100\"]\n",
            &RealServerFlags::default(),
        )
        .expect("valid");
        assert_eq!(d.vips.len(), 2);
        assert_eq!(d.device, Device::Loopback);
        assert_eq!(d.arp, ArpMethod::Sysctl);
        assert_eq!(d.interfaces, None);
    }

    #[test]
    fn flags_override_file() {
        let flags = RealServerFlags {
            vips: vec!["198.51.100.7".into()],
            device: Some("lvs0".into()),
            arp: Some("nft".into()),
            interfaces: vec!["eth1".into()],
        };
        let d = rs(
            "[real_server]\nvips = [\"192.0.2.100\"]\ndevice = \"lo\"\narp = \"sysctl\"\n",
            &flags,
        )
        .expect("valid");
        assert_eq!(d.vips, vec!["198.51.100.7".parse::<IpAddr>().expect("ip")]);
        assert_eq!(d.device, Device::Dummy("lvs0".into()));
        assert_eq!(d.arp, ArpMethod::Nft);
        assert_eq!(d.interfaces, Some(vec!["eth1".to_string()]));
    }

    #[test]
    fn errors_name_the_input_and_the_fix() {
        let none = RealServerFlags::default();
        let cases: &[(&str, RealServerFlags, &str)] = &[
            (
                "[real_server]\nvips = [\"192.0.2.300\"]\n",
                none.clone(),
                "rs.toml:2:9: \"192.0.2.300\" is not an IP address",
            ),
            (
                "[real_server]\nvips = [\"192.0.2.1\"]\narp = \"arptables\"\n",
                none.clone(),
                "rs.toml:3:7: unknown ARP method \"arptables\"; expected sysctl or nft",
            ),
            (
                "[real_server]\nvips = [\"192.0.2.1\"]\nvip = \"x\"\n",
                none.clone(),
                "rs.toml:3:1: unknown field `vip`",
            ),
            (
                "[real_server]\nvips = [\"192.0.2.1\", \"192.0.2.1\"]\n",
                none.clone(),
                "rs.toml:2:22: VIP 192.0.2.1 is listed twice",
            ),
            ("", vip_flags(&["192.0.2.1/24"]), "--vip 192.0.2.1/24: VIP"),
            ("", vip_flags(&["127.0.0.1"]), "not a usable unicast"),
            ("", vip_flags(&["ff02::1"]), "not a usable unicast"),
            ("", vip_flags(&["0.0.0.0"]), "not a usable unicast"),
            ("", none.clone(), "no VIP given; pass --vip"),
            (
                "",
                RealServerFlags {
                    device: Some("a-very-long-device-name".into()),
                    ..vip_flags(&["192.0.2.1"])
                },
                "--device a-very-long-device-name: \"a-very-long-device-name\" is not a valid",
            ),
            (
                "",
                RealServerFlags {
                    interfaces: vec!["lo".into()],
                    ..vip_flags(&["192.0.2.1"])
                },
                "--interface lo: \"lo\" holds the VIPs",
            ),
            (
                "[real_server]\nvips = \"192.0.2.1\"\n",
                none.clone(),
                "rs.toml:2:8: vips must be a list",
            ),
            (
                "[real_server]\nvips = [\"192.0.2.1\"]\ninterfaces = []\n",
                none.clone(),
                "rs.toml:3:14: interfaces must not be empty; omit it to detect the LAN interfaces",
            ),
        ];
        for (text, flags, want) in cases {
            let got = err(text, flags);
            assert!(
                got.contains(want),
                "for {text:?} / {flags:?}:\n got {got}\nwant {want}"
            );
            assert!(!got.contains('\n'), "one line: {got}");
        }
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
    }

    #[test]
    fn dotted_interfaces_are_valid() {
        let d = rs(
            "",
            &RealServerFlags {
                interfaces: vec!["eth0.100".into(), "eth0.100".into()],
                ..vip_flags(&["192.0.2.1"])
            },
        )
        .expect("valid");
        assert_eq!(d.interfaces, Some(vec!["eth0.100".to_string()]));
    }
}
