//! One `virtual =` section → one service: its real servers, settings, fallback and check.

use super::{count, yes_no, Line, Section, Settings, MAX_RANGE};
use crate::config_file::ConfigError;
use crate::director::import::document::{Check, Place, Real, Service, Virtual};
use std::net::{IpAddr, SocketAddr};

/// What a section says about its check, before it is put together.
#[derive(Default)]
struct CheckLines {
    checktype: Option<Line>,
    service: Option<Line>,
    request: Option<String>,
    receive: Option<String>,
    checkport: Option<u16>,
    checkcommand: Option<String>,
    virtualhost: Option<String>,
}

/// A real server and its own request/receive pair, if it has one.
struct RealLine {
    real: Real,
    pair: Option<(String, String)>,
}

pub(super) fn service(
    section: &Section,
    global: &Settings,
    w: &mut Vec<String>,
) -> Result<Service, ConfigError> {
    let head = &section.head;
    let virt = virtual_of(head)?;
    let mut s = Service::new(head.at.clone(), virt.clone(), "wrr");
    let mut set = global.clone();
    let mut c = CheckLines::default();
    let mut reals: Vec<RealLine> = Vec::new();
    let mut protocol = None;
    for l in &section.lines {
        if set.take(l)? {
            continue;
        }
        match l.key.as_str() {
            "real" | "real6" => reals.extend(real_lines(l)?),
            "scheduler" => s.scheduler = l.value.clone(),
            "persistent" => s.persistence = Some(count(l)?),
            "netmask" => s.netmask = Some(netmask(&l.value)),
            "protocol" => protocol = Some(l.clone()),
            "ops" => s.one_packet = yes_no(l)?,
            "checktype" => c.checktype = Some(l.clone()),
            "service" => c.service = Some(l.clone()),
            "request" => c.request = Some(l.value.clone()),
            "receive" => c.receive = Some(l.value.clone()),
            "checkport" => {
                c.checkport = Some(l.value.parse().map_err(|_| {
                    l.at.err(format_args!("checkport {:?} is not a port", l.value))
                })?)
            }
            "checkcommand" => c.checkcommand = Some(l.value.clone()),
            "virtualhost" => c.virtualhost = Some(l.value.clone()),
            "httpmethod" if l.value == "GET" => {}
            "httpmethod" => w.push(l.not_carried("rs-agent's http checks send GET")),
            _ => w.push(l.not_carried(super::why(&l.key))),
        }
    }
    if let Virtual::Addr { protocol: p, .. } = &mut s.virt {
        *p = protocol_of(protocol.as_ref(), &virt)?;
    }
    let (check, off) = check(&s, &c, &set, &reals, head, w)?;
    s.check = check;
    s.reals = reals.into_iter().map(|r| r.real).collect();
    if off {
        s.reals.iter_mut().for_each(|r| r.weight = 0);
    }
    if let Some(f) = &set.fallback {
        s.sorry_server = fallback(f, &s, w)?;
    }
    Ok(s)
}

/// `virtual = IP:PORT`, `[V6]:PORT` or a firewall mark.
fn virtual_of(l: &Line) -> Result<Virtual, ConfigError> {
    if let Ok(mark) = l.value.parse::<u32>() {
        return Ok(Virtual::Fwmark {
            mark,
            ipv6: l.key == "virtual6",
        });
    }
    let addr: SocketAddr = l.value.parse().map_err(|_| {
        l.at.err(format_args!(
            "virtual {:?} is not IP:PORT ([V6]:PORT) or a firewall mark; write host and service names as numbers",
            l.value
        ))
    })?;
    Ok(Virtual::Addr {
        ip: addr.ip(),
        port: addr.port(),
        protocol: "tcp",
    })
}

/// `protocol = tcp|udp|fwm`; default udp for port 53, else tcp.
fn protocol_of(l: Option<&Line>, virt: &Virtual) -> Result<&'static str, ConfigError> {
    Ok(match (l.map(|l| (l, l.value.as_str())), virt) {
        (Some((_, "tcp")), _) => "tcp",
        (Some((_, "udp")), _) => "udp",
        (Some((_, "sctp")), _) => "sctp",
        (Some((l, v)), _) => {
            return Err(l.at.err(format_args!(
                "protocol {v:?}: expected tcp or udp for an IP:PORT virtual"
            )))
        }
        (None, Virtual::Addr { port: 53, .. }) => "udp",
        (None, _) => "tcp",
    })
}

/// `netmask = w.x.y.z | prefixlen`.
fn netmask(v: &str) -> String {
    match v.parse::<u8>() {
        Ok(n) => format!("/{n}"),
        Err(_) => v.to_string(),
    }
}

/// `real = IP[->IP][:PORT] gate|masq|ipip [weight] ["request", "receive"]`.
fn real_lines(l: &Line) -> Result<Vec<RealLine>, ConfigError> {
    let words = words(&l.value);
    let (addr, method) = match words.as_slice() {
        [a, m, ..] => (a.as_str(), m.as_str()),
        _ => {
            return Err(l
                .at
                .err("real needs an address and a forwarding method (gate, masq or ipip)"))
        }
    };
    let forward = match method {
        "gate" => "dr",
        "masq" => "nat",
        "ipip" => "tunnel",
        m => {
            return Err(l.at.err(format_args!(
                "forwarding method {m:?}: expected gate, masq or ipip"
            )))
        }
    };
    let mut rest = &words[2..];
    let mut weight = 1;
    if let Some(n) = rest.first().and_then(|w| w.parse::<u32>().ok()) {
        weight = n;
        rest = &rest[1..];
    }
    let pair = match rest {
        [] => None,
        [req, rec] => Some((req.clone(), rec.clone())),
        _ => {
            return Err(l
                .at
                .err("after the weight a real takes \"request\", \"receive\" (both quoted)"))
        }
    };
    let (ips, port) = addresses(addr, &l.at)?;
    Ok(ips
        .into_iter()
        .map(|ip| RealLine {
            real: Real {
                at: l.at.clone(),
                address: match port {
                    Some(p) => SocketAddr::new(ip, p).to_string(),
                    None => ip.to_string(),
                },
                forward,
                weight,
                upper: None,
                lower: None,
                notify_up: None,
                notify_down: None,
            },
            pair: pair.clone(),
        })
        .collect())
}

/// The words of a real's value: blank- or comma-separated, `"…"` one word without quotes.
fn words(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in v.chars() {
        match c {
            '"' => {
                if quoted {
                    out.push(std::mem::take(&mut cur));
                }
                quoted = !quoted;
            }
            c if quoted => cur.push(c),
            c if c.is_whitespace() || c == ',' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `IP`, `IP:PORT`, `[V6]:PORT`, `IP->IP[:PORT]` (an IPv4 range).
fn addresses(a: &str, at: &Place) -> Result<(Vec<IpAddr>, Option<u16>), ConfigError> {
    let bad = || {
        at.err(format_args!(
            "real {a:?} is not IP[:PORT] or IP->IP[:PORT] in numbers"
        ))
    };
    if let Some((first, rest)) = a.split_once("->") {
        let (last, port) = match rest.split_once(':') {
            Some((l, p)) => (l, Some(p.parse().map_err(|_| bad())?)),
            None => (rest, None),
        };
        let (first, last): (std::net::Ipv4Addr, std::net::Ipv4Addr) = (
            first.parse().map_err(|_| bad())?,
            last.parse().map_err(|_| bad())?,
        );
        let (lo, hi) = (u32::from(first), u32::from(last));
        if hi < lo || hi - lo >= MAX_RANGE {
            return Err(at.err(format_args!(
                "real range {a:?} is empty or longer than {MAX_RANGE}"
            )));
        }
        return Ok(((lo..=hi).map(|b| IpAddr::V4(b.into())).collect(), port));
    }
    if let Ok(s) = a.parse::<SocketAddr>() {
        return Ok((vec![s.ip()], Some(s.port())));
    }
    let ip = a.trim_start_matches('[').trim_end_matches(']');
    Ok((vec![ip.parse().map_err(|_| bad())?], None))
}

/// `fallback = IP[:PORT] [gate|masq|ipip]` → the sorry server (needs a check).
fn fallback(
    f: &Line,
    s: &Service,
    w: &mut Vec<String>,
) -> Result<Option<(Place, String)>, ConfigError> {
    if s.check.is_none() {
        w.push(f.not_carried("rs-agent uses a sorry server only for a service with a check"));
        return Ok(None);
    }
    let words = words(&f.value);
    let (ips, port) = addresses(words.first().map_or("", String::as_str), &f.at)?;
    let ip = ips
        .first()
        .copied()
        .ok_or_else(|| f.at.err("fallback needs an address"))?;
    let method = words.get(1).map(|m| match m.as_str() {
        "masq" => "nat",
        "ipip" => "tunnel",
        _ => "dr",
    });
    let first = s.reals.first().map(|r| r.forward);
    if method.is_some() && first.is_some() && method != first {
        w.push(f.at.warning("the fallback's forwarding method is not carried: rs-agent forwards the sorry server like the first real server"));
    }
    Ok(Some((
        f.at.clone(),
        match port {
            Some(p) => SocketAddr::new(ip, p).to_string(),
            None => ip.to_string(),
        },
    )))
}

/// The check of the section (None: no check) and whether checktype=off keeps every real
/// server out.
fn check(
    s: &Service,
    c: &CheckLines,
    set: &Settings,
    reals: &[RealLine],
    head: &Line,
    w: &mut Vec<String>,
) -> Result<(Option<Check>, bool), ConfigError> {
    let port = match s.virt {
        Virtual::Addr { port, .. } => port,
        Virtual::Fwmark { .. } => 0,
    };
    let udp = matches!(
        s.virt,
        Virtual::Addr {
            protocol: "udp",
            ..
        }
    );
    let checktype = c
        .checktype
        .as_ref()
        .map_or("negotiate", |l| l.value.as_str());
    let service = c
        .service
        .as_ref()
        .map(|l| l.value.clone())
        .unwrap_or_else(|| default_service(port).into());
    let at = c.checktype.as_ref().map_or(&head.at, |l| &l.at);
    let negotiate = |w: &mut Vec<String>| negotiated(&service, c, reals, at, udp, w);
    let icmp = || Check {
        kind: "icmp",
        ..Check::default()
    };
    let (kind, mut check) = match checktype {
        "on" => return Ok((None, false)),
        "off" => {
            w.push(at.warning("checktype = off (no real server is used) is carried as every real server at weight 0"));
            return Ok((None, true));
        }
        "ping" => ("ping", icmp()),
        // ldirectord pings for a connect check of a UDP service.
        "connect" if udp => ("ping", icmp()),
        "connect" => (
            "connect",
            Check {
                kind: "tcp",
                ..Check::default()
            },
        ),
        "external" | "external-perl" => ("connect", external(c, s, at, w)?),
        "negotiate" => match negotiate(w)? {
            Some(check) => ("negotiate", check),
            None => return Ok((None, false)),
        },
        n if n.parse::<u32>().is_ok() => {
            w.push(at.warning(format_args!(
                "checktype = {n} is carried as negotiate on every check"
            )));
            match negotiate(w)? {
                Some(check) => ("negotiate", check),
                None => return Ok((None, false)),
            }
        }
        other => {
            return Err(at.err(format_args!(
            "checktype {other:?}: expected connect, external, negotiate, off, on, ping or a number"
        )))
        }
    };
    if check.kind != "icmp" {
        check.port = c.checkport;
    }
    // A negotiate check of another protocol falls back to a connect, with its timeout.
    let kind = if check.kind == "tcp" { "connect" } else { kind };
    timing(&mut check, set, kind, at, w);
    check.on_failure = Some(if set.quiescent.unwrap_or(true) {
        "quiesce"
    } else {
        "remove"
    });
    Ok((Some(check), false))
}

/// ldirectord's default `service` for a virtual port.
fn default_service(port: u16) -> &'static str {
    match port {
        80 => "http",
        443 => "https",
        21 | 25 | 53 | 110 | 119 | 143 | 389 | 587 | 993 | 995 | 1521 | 1812 | 3128 | 3306
        | 5432 | 5060 => "other",
        _ => "none",
    }
}

/// A negotiate check: http/https with path and body; none for service none; another
/// protocol is a warning and a TCP connect (none for UDP).
fn negotiated(
    service: &str,
    c: &CheckLines,
    reals: &[RealLine],
    at: &Place,
    udp: bool,
    w: &mut Vec<String>,
) -> Result<Option<Check>, ConfigError> {
    let kind = match service {
        "http" => "http",
        "https" => "https",
        "dns" => "dns",
        "smtp" => {
            return Ok(Some(Check {
                kind: "smtp",
                ..Check::default()
            }))
        }
        "none" => return Ok(None),
        other => {
            let instead = if udp {
                "no check"
            } else {
                "a TCP connect check instead"
            };
            w.push(at.warning(format_args!("a negotiate check of service {other} is not carried (rs-agent checks tcp, http, https, dns, smtp, icmp and commands): {instead}")));
            return Ok((!udp).then(|| Check {
                kind: "tcp",
                ..Check::default()
            }));
        }
    };
    let pair = |r: &RealLine| {
        let virtual_pair = (c.request.is_some() || c.receive.is_some()).then(|| {
            let request = c.request.clone().unwrap_or_default();
            (request, c.receive.clone().unwrap_or_default())
        });
        r.pair.clone().or(virtual_pair)
    };
    let first = reals.first().and_then(pair);
    if let Some(r) = reals.iter().find(|r| pair(r) != first) {
        w.push(r.real.at.warning("this real server's request/receive differs from the first's: rs-agent runs one check per service, so this service carries no check; write one [director.service.check] by hand"));
        return Ok(None);
    }
    let (request, receive) = first.unwrap_or_default();
    if kind == "dns" {
        return Ok(dns(request, receive, at, w));
    }
    let mut check = Check {
        kind,
        host: c.virtualhost.clone(),
        ..Check::default()
    };
    if request.starts_with("http://") || request.starts_with("https://") {
        w.push(at.warning(format_args!("request {request:?} (another address than the real server's) is not carried: the check requests /")));
    } else if !request.is_empty() {
        check.path = Some(format!("/{}", request.trim_start_matches('/')));
    }
    if receive.contains([
        '.', '^', '$', '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '\\',
    ]) {
        w.push(at.warning(format_args!("receive {receive:?} is a regular expression, which is not carried (rs-agent matches a body substring)")));
    } else if !receive.is_empty() {
        check.body = Some(receive);
    }
    Ok(Some(check))
}

/// A negotiate check of service dns: ldirectord resolves `request` (an A query) and looks for
/// `receive` in the answer.
fn dns(request: String, receive: String, at: &Place, w: &mut Vec<String>) -> Option<Check> {
    if request.is_empty() {
        w.push(at.warning("a negotiate check of service dns without request (the name to resolve) is not carried: no check"));
        return None;
    }
    let expect = match receive.parse::<std::net::Ipv4Addr>() {
        Ok(addr) => Some(addr.to_string()),
        Err(_) if receive.is_empty() => None,
        Err(_) => {
            w.push(at.warning(format_args!("receive {receive:?} is not carried: a dns check's expect is an address of the answer")));
            None
        }
    };
    Some(Check {
        kind: "dns",
        query_name: Some(request),
        query_type: Some("A".into()),
        expect,
        ..Check::default()
    })
}

/// `checktype = external`: `checkcommand` gets ldirectord's four arguments (virtual
/// address, virtual port, real address, real port) from rs-agent's environment.
fn external(
    c: &CheckLines,
    s: &Service,
    at: &Place,
    w: &mut Vec<String>,
) -> Result<Check, ConfigError> {
    let cmd = c
        .checkcommand
        .clone()
        .ok_or_else(|| at.err("checktype = external needs checkcommand"))?;
    if matches!(s.virt, Virtual::Fwmark { .. }) {
        w.push(at.warning("the checkcommand of a firewall-mark virtual gets empty virtual address and port arguments"));
    }
    Ok(Check {
        kind: "command",
        command: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("{cmd} \"$VIP\" \"$VPORT\" \"$RS_ADDR\" \"$RS_PORT\""),
        ]),
        ..Check::default()
    })
}

/// Interval, timeout, rise and fall from ldirectord's: checkinterval (10 s), the connect
/// (checktimeout, 5 s) or negotiate (negotiatetimeout, 30 s) timeout, failurecount (1),
/// and one good check to come back.
fn timing(check: &mut Check, set: &Settings, kind: &str, at: &Place, w: &mut Vec<String>) {
    let interval_s = set.checkinterval.unwrap_or(10.0);
    let timeout_s = match kind {
        "negotiate" => set.negotiatetimeout.or(set.checktimeout).unwrap_or(30.0),
        _ => set.checktimeout.or(set.negotiatetimeout).unwrap_or(5.0),
    };
    let interval = ((interval_s * 1000.0).round() as u64).clamp(10, 3_600_000);
    let mut timeout = ((timeout_s * 1000.0).round() as u64).clamp(10, 3_600_000);
    if timeout > interval {
        w.push(at.warning(format_args!(
            "the {kind} timeout {timeout_s} s is longer than checkinterval {interval_s} s; carried as \
             timeout_ms = {interval} (rs-agent's timeout is at most the interval)"
        )));
        timeout = interval;
    }
    check.interval_ms = Some(interval);
    check.timeout_ms = Some(timeout);
    check.rise = Some(1);
    check.fall = Some(set.failurecount.unwrap_or(1).clamp(1, 100));
}
