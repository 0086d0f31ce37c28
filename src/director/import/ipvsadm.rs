//! `director import --from ipvsadm`: `ipvsadm-save -n` output → the equivalent `[director]` TOML, so a
//! hand-made director moves over in one step. Pure text in, text out, all or nothing: the
//! whole document is built and validated as `director up` would read it before the caller
//! prints a byte of it, so a failed import never leaves half a config behind a `>`. Every
//! error names the input line (and column where one value is at fault) and what was expected.

use super::check_interface;
use super::document::{to_toml, Place, Real as DocReal, Service, Virtual};
use crate::config_file::ConfigError;
use std::net::{IpAddr, SocketAddr};

/// What `ipvsadm-save` prints without `-n`; said wherever a name stands for a number.
const USE_N: &str = "use ipvsadm-save -n (without -n it prints service and host names)";

#[derive(Debug, Default, PartialEq, Eq)]
struct Real {
    /// The input line of its `-a`.
    line: usize,
    address: String,
    forward: &'static str,
    weight: Option<u32>,
    upper: Option<u32>,
    lower: Option<u32>,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Svc {
    /// The input line of its `-A`.
    line: usize,
    /// `-t/-u/--sctp-service` value, or None for fwmark
    addr: Option<(&'static str, SocketAddr)>,
    fwmark: Option<u32>,
    ipv6: bool,
    scheduler: Option<String>,
    persistence: Option<u32>,
    netmask: Option<String>,
    sched_flags: Vec<String>,
    one_packet: bool,
    reals: Vec<Real>,
}

impl Svc {
    /// The identity `-a` lines refer back to: a fwmark service is one per family (`-f 7` and
    /// `-f 7 -6` are two services, as in the kernel).
    fn id(&self) -> (Option<(&'static str, SocketAddr)>, Option<u32>, bool) {
        (self.addr, self.fwmark, self.ipv6)
    }
}

fn err(line: usize, col: usize, msg: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("ipvsadm-save input:{line}:{col}: {msg}"))
}

/// The words of one input line, each with its column (from 1), and the line's number.
struct Words<'a> {
    line: usize,
    words: Vec<(usize, &'a str)>,
}

impl<'a> Words<'a> {
    fn split(text: &'a str, line: usize) -> Words<'a> {
        let words = text
            .split_whitespace()
            .map(|w| {
                (
                    text[..w.as_ptr() as usize - text.as_ptr() as usize]
                        .chars()
                        .count()
                        + 1,
                    w,
                )
            })
            .collect();
        Words { line, words }
    }

    /// The value after the option at `i`.
    fn value(&self, i: usize) -> Result<&'a str, ConfigError> {
        let (col, opt) = self.words[i];
        self.words
            .get(i + 1)
            .map(|(_, w)| *w)
            .ok_or_else(|| err(self.line, col, format!("{opt} needs a value")))
    }

    /// The value after the option at `i`, which must be a number (`what` names it).
    fn number(&self, i: usize, what: &str) -> Result<u32, ConfigError> {
        self.parsed(i, what, "a number")
    }

    /// The `ADDR:PORT` after the option at `i` (`[V6]:PORT` for IPv6), in numbers.
    fn socket_addr(&self, i: usize, what: &str) -> Result<SocketAddr, ConfigError> {
        self.parsed(i, what, "an ADDR:PORT of numbers")
    }

    /// The value after the option at `i`, parsed; the error says it is not `form`.
    fn parsed<T: std::str::FromStr>(
        &self,
        i: usize,
        what: &str,
        form: &str,
    ) -> Result<T, ConfigError> {
        let v = self.value(i)?;
        v.parse().map_err(|_| {
            let col = self.words[i + 1].0;
            err(
                self.line,
                col,
                format!("{what} {v:?} is not {form}; {USE_N}"),
            )
        })
    }
}

/// Parses one `-A`/`-a` line into (is_add_service, service fields, real server fields).
fn parse_line(line: &str, n: usize) -> Result<(bool, Svc, Option<Real>), ConfigError> {
    let words = Words::split(line, n);
    let mut svc = Svc {
        line: n,
        ..Svc::default()
    };
    let mut real: Option<Real> = None;
    let mut add_service = None;
    let mut i = 0;
    while i < words.words.len() {
        let (col, w) = words.words[i];
        let takes = match w {
            "-A" | "--add-service" => {
                add_service = Some(true);
                0
            }
            "-a" | "--add-server" => {
                add_service = Some(false);
                0
            }
            _ => match service_option(&mut svc, &words, i)? {
                Some(takes) => takes,
                None => real_option(&mut real, &words, i)?.ok_or_else(|| {
                    err(
                        n,
                        col,
                        format!("unsupported ipvsadm option {w:?}; import handles the output of `ipvsadm-save -n`"),
                    )
                })?,
            },
        };
        i += 1 + takes;
    }
    let is_service =
        add_service.ok_or_else(|| err(n, 1, "expected a line starting with -A or -a"))?;
    if svc.addr.is_none() && svc.fwmark.is_none() {
        return Err(err(
            n,
            1,
            "no service given; expected -t, -u, --sctp-service or -f",
        ));
    }
    if !is_service && real.as_ref().is_none_or(|r| r.address.is_empty()) {
        return Err(err(n, 1, "-a line without -r REAL:PORT"));
    }
    if let Some(r) = real.as_mut() {
        r.line = n;
    }
    Ok((is_service, svc, real))
}

/// Takes in the service option at `i`: how many values after it it took; `None` when it is
/// not a service option.
fn service_option(svc: &mut Svc, words: &Words, i: usize) -> Result<Option<usize>, ConfigError> {
    let takes = match words.words[i].1 {
        "-t" | "--tcp-service" => {
            svc.addr = Some(("tcp", words.socket_addr(i, "service")?));
            1
        }
        "-u" | "--udp-service" => {
            svc.addr = Some(("udp", words.socket_addr(i, "service")?));
            1
        }
        "--sctp-service" => {
            svc.addr = Some(("sctp", words.socket_addr(i, "service")?));
            1
        }
        "-f" | "--fwmark-service" => {
            svc.fwmark = Some(words.number(i, "firewall mark")?);
            1
        }
        "-6" | "--ipv6" => {
            svc.ipv6 = true;
            0
        }
        "-s" | "--scheduler" => {
            svc.scheduler = Some(words.value(i)?.to_string());
            1
        }
        // The timeout is optional in ipvsadm; ipvsadm-save always prints it.
        "-p" | "--persistent" => match words.words.get(i + 1).map(|(_, t)| t.parse::<u32>()) {
            Some(Ok(t)) => {
                svc.persistence = Some(t);
                1
            }
            _ => {
                svc.persistence = Some(300);
                0
            }
        },
        "-M" | "--netmask" => {
            let m = words.value(i)?;
            if m.parse::<u8>().is_err() && m.parse::<std::net::Ipv4Addr>().is_err() {
                let col = words.words[i + 1].0;
                return Err(err(
                    words.line,
                    col,
                    format!("netmask {m:?} is neither a prefix length nor a dotted IPv4 mask"),
                ));
            }
            svc.netmask = Some(m.to_string());
            1
        }
        "-b" | "--sched-flags" => {
            svc.sched_flags = words.value(i)?.split(',').map(str::to_string).collect();
            1
        }
        "-o" | "--ops" => {
            svc.one_packet = true;
            0
        }
        _ => return Ok(None),
    };
    Ok(Some(takes))
}

/// Takes in the real server option at `i`: how many values after it it took; `None` when it
/// is not a real server option.
fn real_option(
    real: &mut Option<Real>,
    words: &Words,
    i: usize,
) -> Result<Option<usize>, ConfigError> {
    let (col, w) = words.words[i];
    let takes = match w {
        "-r" | "--real-server" => {
            // ipvsadm-save prints ADDR:PORT; a bare address (the service's port) is what
            // ipvsadm itself accepts.
            let v = words.value(i)?;
            let address = match v.parse::<IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => words.socket_addr(i, "real server")?.to_string(),
            };
            real.get_or_insert_with(Real::default).address = address;
            1
        }
        "-g" | "--gatewaying" => forward(real, "dr"),
        "-i" | "--ipip" => forward(real, "tunnel"),
        "-m" | "--masquerading" => forward(real, "nat"),
        // ipvsadm-save spells out the tunnel type of -i destinations; only IPIP is supported.
        "--tun-type" => {
            let t = words.value(i)?;
            if t != "ipip" {
                return Err(err(
                    words.line,
                    col,
                    format!("tunnel type {t:?} is not supported; expected ipip"),
                ));
            }
            1
        }
        "-w" | "--weight" => {
            real.get_or_insert_with(Real::default).weight = Some(words.number(i, "weight")?);
            1
        }
        "-x" | "--u-threshold" => {
            real.get_or_insert_with(Real::default).upper =
                Some(words.number(i, "upper threshold")?);
            1
        }
        "-y" | "--l-threshold" => {
            real.get_or_insert_with(Real::default).lower =
                Some(words.number(i, "lower threshold")?);
            1
        }
        _ => return Ok(None),
    };
    Ok(Some(takes))
}

/// Sets the real server's forwarding method (an option without a value).
fn forward(real: &mut Option<Real>, method: &'static str) -> usize {
    real.get_or_insert_with(Real::default).forward = method;
    0
}

/// The services of `ipvsadm-save -n` text, each with its real servers.
fn services(input: &str) -> Result<Vec<Svc>, ConfigError> {
    let mut services: Vec<Svc> = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let n = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (is_service, svc, real) = parse_line(line, n)?;
        if is_service {
            if services.iter().any(|s| s.id() == svc.id()) {
                return Err(err(n, 1, "service defined twice"));
            }
            services.push(svc);
            continue;
        }
        let Some(target) = services.iter_mut().find(|s| s.id() == svc.id()) else {
            return Err(err(
                n,
                1,
                "real server for a service not defined above with -A",
            ));
        };
        if let Some(r) = real {
            target.reals.push(r);
        }
    }
    Ok(services)
}

/// The input's name in errors, warnings and the output's header.
const INPUT: &str = "ipvsadm-save input";

/// The document's service of a parsed `-A` line and its `-a` lines.
fn service(s: Svc) -> Service {
    let at = |line| Place {
        file: INPUT.into(),
        line,
        col: 1,
    };
    let virt = match (s.addr, s.fwmark) {
        (Some((protocol, addr)), _) => Virtual::Addr {
            ip: addr.ip(),
            port: addr.port(),
            protocol,
        },
        (None, mark) => Virtual::Fwmark {
            mark: mark.unwrap_or_default(),
            ipv6: s.ipv6,
        },
    };
    let v6 = s.ipv6 || s.addr.is_some_and(|(_, a)| a.is_ipv6());
    let default_mask = if v6 { "128" } else { "255.255.255.255" };
    let netmask = s.netmask.filter(|m| m != default_mask).map(|m| {
        if m.contains('.') {
            m
        } else {
            format!("/{m}")
        }
    });
    let mut out = Service::new(at(s.line), virt, s.scheduler.as_deref().unwrap_or("wlc"));
    out.scheduler_flags = s.sched_flags;
    out.persistence = s.persistence;
    out.netmask = netmask;
    out.one_packet = s.one_packet;
    out.reals = s
        .reals
        .into_iter()
        .map(|r| DocReal {
            at: at(r.line),
            address: r.address,
            forward: if r.forward.is_empty() {
                "dr"
            } else {
                r.forward
            },
            weight: r.weight.unwrap_or(1),
            upper: r.upper,
            lower: r.lower,
            notify_up: None,
            notify_down: None,
        })
        .collect();
    out
}

/// Converts `ipvsadm-save -n` text to a `[director]` TOML document for `interface`, validated
/// as `director up` reads it: what rs-agent would refuse to apply (e.g. a dr real server on
/// another port than its service's, which ipvsadm cannot make but other tools can) is an
/// error naming the input line, and there is no document.
pub fn ipvsadm_save_to_toml(input: &str, interface: &str) -> Result<String, ConfigError> {
    check_interface(interface)?;
    let services = services(input)?;
    if services.is_empty() {
        return Err(ConfigError(
            "ipvsadm-save input: no service (-A line) to import; pipe in `ipvsadm-save -n` of \
             a director that has services"
                .into(),
        ));
    }
    let services: Vec<Service> = services.into_iter().map(service).collect();
    to_toml("ipvsadm-save -n output", INPUT, interface, &services)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = "\
-A -t 192.0.2.100:80 -s rr
-a -t 192.0.2.100:80 -r 198.51.100.2:80 -g -w 1
-a -t 192.0.2.100:80 -r 198.51.100.3:80 -g -w 3
-A -u [2001:db8::100]:53 -s sh -b sh-fallback,sh-port -p 60 -M 64
-a -u [2001:db8::100]:53 -r [2001:db8::2]:53 -i --tun-type ipip -w 2 -x 100 -y 10
-A -f 7 -s wlc -p 300 -M 255.255.255.0
-a -f 7 -r 198.51.100.4:0 -m -w 1
";

    #[test]
    fn converts_every_kind_of_line() {
        let toml = ipvsadm_save_to_toml(SAVE, "eth0").expect("convert");
        for want in [
            "interface = \"eth0\"",
            "vip = \"192.0.2.100\"\nport = 80\nprotocol = \"tcp\"\nscheduler = \"rr\"",
            "address = \"198.51.100.3:80\"\nforward = \"dr\"\nweight = 3",
            "vip = \"2001:db8::100\"\nport = 53\nprotocol = \"udp\"\nscheduler = \"sh\"\nscheduler_flags = [\"sh-fallback\", \"sh-port\"]\npersistence = 60\npersistence_netmask = \"/64\"",
            "address = \"[2001:db8::2]:53\"\nforward = \"tunnel\"\nweight = 2\nupper_threshold = 100\nlower_threshold = 10",
            "fwmark = 7\nscheduler = \"wlc\"\npersistence = 300\npersistence_netmask = \"255.255.255.0\"",
            "forward = \"nat\"",
        ] {
            assert!(toml.contains(want), "missing {want:?} in\n{toml}");
        }
    }

    #[test]
    fn output_is_a_valid_config() {
        let toml = ipvsadm_save_to_toml(SAVE, "eth0").expect("convert");
        let file = crate::config_file::ConfigFile::parse(None, toml).expect("parses");
        let d = crate::director::config::director(&file, &Default::default()).expect("validates");
        assert_eq!(d.services.len(), 3);
        assert_eq!(d.services[0].reals[1].weight, 3);
    }

    #[test]
    fn numbered_scheduler_flags_of_any_scheduler_import() {
        let save = "-A -t 192.0.2.100:80 -s wlc -b flag-1,flag-2\n\
                    -a -t 192.0.2.100:80 -r 198.51.100.2:80 -g -w 1\n";
        let toml = ipvsadm_save_to_toml(save, "eth0").expect("convert");
        let file = crate::config_file::ConfigFile::parse(None, toml.clone()).expect("parses");
        let d = crate::director::config::director(&file, &Default::default()).expect("validates");
        let flags = d.services[0].service.flags.0;
        use crate::kernel::ipvs::ServiceFlags;
        assert_eq!(
            flags,
            ServiceFlags::SCHED_SH_FALLBACK.0 | ServiceFlags::SCHED_SH_PORT.0,
            "{toml}"
        );
    }

    #[test]
    fn one_fwmark_in_both_families_is_two_services() {
        let save = "-A -f 7 -s rr\n-a -f 7 -r 198.51.100.2:0 -g -w 1\n\
                    -A -f 7 -6 -s rr\n-a -f 7 -6 -r [2001:db8::2]:0 -g -w 2\n";
        let toml = ipvsadm_save_to_toml(save, "eth0").expect("convert");
        let file = crate::config_file::ConfigFile::parse(None, toml.clone()).expect("parses");
        let desired =
            crate::director::config::director(&file, &Default::default()).expect("validates");
        assert_eq!(desired.services.len(), 2, "{toml}");
        assert!(
            toml.contains("198.51.100.2") && toml.contains("2001:db8::2"),
            "{toml}"
        );
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = ipvsadm_save_to_toml(
            "-A -t 192.0.2.100:80 -s rr\n-a -t 192.0.2.100:80 -r 198.51.100.2:80 --bogus\n",
            "eth0",
        )
        .expect_err("must fail");
        assert_eq!(
            e.0,
            "ipvsadm-save input:2:41: unsupported ipvsadm option \"--bogus\"; import handles the output of `ipvsadm-save -n`"
        );
        let e = ipvsadm_save_to_toml("-a -t 192.0.2.100:80 -r 198.51.100.2:80 -g\n", "eth0")
            .expect_err("orphan")
            .0;
        assert!(
            e.contains(":1:1: real server for a service not defined above"),
            "{e}"
        );
    }

    #[test]
    fn names_instead_of_numbers_are_refused_saying_use_n() {
        let cases = [
            (
                "-A -t 192.0.2.100:http -s rr\n",
                "1:7: service \"192.0.2.100:http\"",
            ),
            (
                "-A -u www.example.org:53 -s rr\n",
                "1:7: service \"www.example.org:53\"",
            ),
            (
                "-A -t 192.0.2.100:80 -s rr\n-a -t 192.0.2.100:80 -r web1:http -g -w 1\n",
                "2:25: real server \"web1:http\"",
            ),
            (
                "-A -t 192.0.2.100:80 -s rr\n-a -t 192.0.2.100:80 -r 198.51.100.2:80 -g -w one\n",
                "2:47: weight \"one\" is not a number",
            ),
            (
                "-A -f web -s rr\n",
                "1:7: firewall mark \"web\" is not a number",
            ),
        ];
        for (input, want) in cases {
            let e = ipvsadm_save_to_toml(input, "eth0").expect_err(input).0;
            assert!(
                e.starts_with(&format!("ipvsadm-save input:{want}")),
                "{input}: {e}"
            );
            assert!(e.contains("use ipvsadm-save -n"), "{input}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    /// What ipvsadm can hold and rs-agent would refuse to apply is refused here, naming the
    /// input line, rather than written for `director up` to refuse later.
    #[test]
    fn what_rs_agent_would_refuse_names_the_input_line_and_gives_no_output() {
        let cases = [
            (
                "-A -t 192.0.2.100:80 -s rr\n-a -t 192.0.2.100:80 -r 198.51.100.2:8080 -g -w 1\n",
                "ipvsadm-save input:2:1: rs-agent would refuse this line: port 8080 differs from \
                 the service's port 80",
            ),
            (
                "# a comment\n-A -t 192.0.2.100:80 -s bogus\n",
                "ipvsadm-save input:2:1: rs-agent would refuse this line: unknown scheduler",
            ),
            (
                "-A -t 192.0.2.100:80 -s r\u{1}r\n",
                "ipvsadm-save input:1:1: rs-agent would refuse this line: unknown scheduler",
            ),
            (
                "-A -t 192.0.2.100:80 -s rr\n-a -t 192.0.2.100:80 -r 198.51.100.2:80 -g -w 99999999\n",
                "ipvsadm-save input:2:1: rs-agent would refuse this line: weight",
            ),
            ("", "ipvsadm-save input: no service (-A line) to import"),
            ("\n# only comments\n", "ipvsadm-save input: no service (-A line) to import"),
        ];
        for (input, want) in cases {
            let e = ipvsadm_save_to_toml(input, "eth0").expect_err(input).0;
            assert!(e.starts_with(want), "{input:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e = ipvsadm_save_to_toml(SAVE, "eth0:1")
            .expect_err("bad interface")
            .0;
        assert!(
            e.starts_with("--interface eth0:1: \"eth0:1\" is not a valid interface name"),
            "{e}"
        );
    }
}
