//! `director import`: `ipvsadm-save -n` output → the equivalent `[director]` TOML, so a
//! hand-made director moves over in one step. Pure text in, text out; every error names the
//! line and column of the input and what was expected.

use std::fmt::Write as _;

#[derive(Debug, Default, PartialEq, Eq)]
struct Real {
    address: String,
    forward: &'static str,
    weight: Option<String>,
    upper: Option<String>,
    lower: Option<String>,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Svc {
    /// `-t/-u/--sctp-service` value, or None for fwmark
    addr: Option<(&'static str, String)>,
    fwmark: Option<String>,
    ipv6: bool,
    scheduler: Option<String>,
    persistence: Option<String>,
    netmask: Option<String>,
    sched_flags: Vec<String>,
    one_packet: bool,
    reals: Vec<Real>,
}

impl Svc {
    /// The identity `-a` lines refer back to: a fwmark service is one per family (`-f 7` and
    /// `-f 7 -6` are two services, as in the kernel).
    fn id(&self) -> (Option<(&'static str, String)>, Option<String>, bool) {
        (self.addr.clone(), self.fwmark.clone(), self.ipv6)
    }
}

fn err(line: usize, col: usize, msg: impl std::fmt::Display) -> String {
    format!("ipvsadm-save input:{line}:{col}: {msg}")
}

/// Splits `[v6]:port` / `v4:port` into (address, port).
fn split_host_port(s: &str) -> Option<(String, String)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        return Some((host.to_string(), port.to_string()));
    }
    let (host, port) = s.rsplit_once(':')?;
    Some((host.to_string(), port.to_string()))
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
            .map(|w| (w.as_ptr() as usize - text.as_ptr() as usize + 1, w))
            .collect();
        Words { line, words }
    }

    /// The value after the option at `i`.
    fn value(&self, i: usize) -> Result<String, String> {
        let (col, opt) = self.words[i];
        self.words
            .get(i + 1)
            .map(|(_, w)| w.to_string())
            .ok_or_else(|| err(self.line, col, format!("{opt} needs a value")))
    }
}

/// Parses one `-A`/`-a` line into (is_add_service, service fields, real server fields).
fn parse_line(line: &str, n: usize) -> Result<(bool, Svc, Option<Real>), String> {
    let words = Words::split(line, n);
    let mut svc = Svc::default();
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
    Ok((is_service, svc, real))
}

/// Takes in the service option at `i`: how many values after it it took; `None` when it is
/// not a service option.
fn service_option(svc: &mut Svc, words: &Words, i: usize) -> Result<Option<usize>, String> {
    let takes = match words.words[i].1 {
        "-t" | "--tcp-service" => {
            svc.addr = Some(("tcp", words.value(i)?));
            1
        }
        "-u" | "--udp-service" => {
            svc.addr = Some(("udp", words.value(i)?));
            1
        }
        "--sctp-service" => {
            svc.addr = Some(("sctp", words.value(i)?));
            1
        }
        "-f" | "--fwmark-service" => {
            svc.fwmark = Some(words.value(i)?);
            1
        }
        "-6" | "--ipv6" => {
            svc.ipv6 = true;
            0
        }
        "-s" | "--scheduler" => {
            svc.scheduler = Some(words.value(i)?);
            1
        }
        // The timeout is optional in ipvsadm; ipvsadm-save always prints it.
        "-p" | "--persistent" => match words.words.get(i + 1) {
            Some((_, t)) if t.parse::<u32>().is_ok() => {
                svc.persistence = Some(t.to_string());
                1
            }
            _ => {
                svc.persistence = Some("300".into());
                0
            }
        },
        "-M" | "--netmask" => {
            svc.netmask = Some(words.value(i)?);
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
fn real_option(real: &mut Option<Real>, words: &Words, i: usize) -> Result<Option<usize>, String> {
    let (col, w) = words.words[i];
    let takes = match w {
        "-r" | "--real-server" => {
            real.get_or_insert_with(Real::default).address = words.value(i)?;
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
            real.get_or_insert_with(Real::default).weight = Some(words.value(i)?);
            1
        }
        "-x" | "--u-threshold" => {
            real.get_or_insert_with(Real::default).upper = Some(words.value(i)?);
            1
        }
        "-y" | "--l-threshold" => {
            real.get_or_insert_with(Real::default).lower = Some(words.value(i)?);
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

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn write_service(out: &mut String, s: &Svc) {
    out.push_str("\n[[director.service]]\n");
    match (&s.addr, &s.fwmark) {
        (Some((proto, addr)), _) => {
            if let Some((host, port)) = split_host_port(addr) {
                let _ = writeln!(
                    out,
                    "vip = {}\nport = {port}\nprotocol = {}",
                    quote(&host),
                    quote(proto)
                );
            }
        }
        (None, Some(mark)) => {
            let _ = writeln!(out, "fwmark = {mark}");
            if s.ipv6 {
                out.push_str("family = \"ipv6\"\n");
            }
        }
        (None, None) => {}
    }
    let _ = writeln!(
        out,
        "scheduler = {}",
        quote(s.scheduler.as_deref().unwrap_or("wlc"))
    );
    if !s.sched_flags.is_empty() {
        let flags: Vec<String> = s.sched_flags.iter().map(|f| quote(f)).collect();
        let _ = writeln!(out, "scheduler_flags = [{}]", flags.join(", "));
    }
    if let Some(p) = &s.persistence {
        let _ = writeln!(out, "persistence = {p}");
    }
    if let Some(m) = &s.netmask {
        let default = if s.ipv6 || s.addr.as_ref().is_some_and(|(_, a)| a.starts_with('[')) {
            "128"
        } else {
            "255.255.255.255"
        };
        if m != default {
            let m = if m.contains('.') {
                m.clone()
            } else {
                format!("/{m}")
            };
            let _ = writeln!(out, "persistence_netmask = {}", quote(&m));
        }
    }
    if s.one_packet {
        out.push_str("one_packet = true\n");
    }
    for r in &s.reals {
        write_real(out, r);
    }
}

/// One `[[director.service.real]]` table.
fn write_real(out: &mut String, r: &Real) {
    out.push_str("\n[[director.service.real]]\n");
    let _ = writeln!(out, "address = {}", quote(&r.address));
    let _ = writeln!(
        out,
        "forward = {}",
        quote(if r.forward.is_empty() {
            "dr"
        } else {
            r.forward
        })
    );
    let _ = writeln!(out, "weight = {}", r.weight.as_deref().unwrap_or("1"));
    if let Some(x) = r.upper.as_deref().filter(|x| *x != "0") {
        let _ = writeln!(out, "upper_threshold = {x}");
    }
    if let Some(y) = r.lower.as_deref().filter(|y| *y != "0") {
        let _ = writeln!(out, "lower_threshold = {y}");
    }
}

/// Converts `ipvsadm-save -n` text to a `[director]` TOML document for `interface`.
pub fn ipvsadm_save_to_toml(input: &str, interface: &str) -> Result<String, String> {
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
    let mut out =
        String::from("# Generated by `rs-agent director import` from ipvsadm-save -n output.\n");
    let _ = writeln!(out, "[director]\ninterface = {}", quote(interface));
    for s in &services {
        write_service(&mut out, s);
    }
    Ok(out)
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
            e,
            "ipvsadm-save input:2:41: unsupported ipvsadm option \"--bogus\"; import handles the output of `ipvsadm-save -n`"
        );
        let e = ipvsadm_save_to_toml("-a -t 192.0.2.100:80 -r 198.51.100.2:80 -g\n", "eth0")
            .expect_err("orphan");
        assert!(
            e.contains(":1:1: real server for a service not defined above"),
            "{e}"
        );
    }
}
