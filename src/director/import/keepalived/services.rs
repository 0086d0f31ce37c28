//! `virtual_server` blocks → services: the virtual server itself (`IP [PORT]`, `fwmark N`,
//! or `group NAME` expanded over its `virtual_server_group`), its settings, real servers,
//! sorry server and the one check its real servers share.

use super::super::document::{Place, Real, Service, Virtual};
use super::checks::{real_check, Inherited, RealCheck};
use super::syntax::{Item, Word};
use super::{arg, number, Warnings};
use crate::config_file::ConfigError;
use std::collections::HashMap;
use std::net::IpAddr;

/// At most this many services from one `virtual_server_group` (ranges expand).
const MAX_GROUP_SERVICES: usize = 1024;

/// What a virtual server's block says about the service itself.
struct Settings {
    scheduler: String,
    forward: &'static str,
    protocol: &'static str,
    ipv6_fwmark: bool,
    sorry: Option<(Place, String)>,
}

/// The services of one `virtual_server` item (`groups`: the `virtual_server_group`s).
pub(super) fn virtual_server(
    item: &Item,
    groups: &HashMap<String, &Item>,
    w: &mut Warnings,
) -> Result<Vec<Service>, ConfigError> {
    let mut template = Service::new(
        item.at().clone(),
        Virtual::Fwmark {
            mark: 0,
            ipv6: false,
        },
        "wlc",
    );
    let mut settings = Settings {
        scheduler: "wlc".into(),
        forward: "nat",
        protocol: "tcp",
        ipv6_fwmark: false,
        sorry: None,
    };
    let mut inherited = Inherited::default();
    let mut reals = Vec::new();
    for i in item.block.iter().flatten() {
        if inherited.take(i, w)? {
            continue;
        }
        if i.key.text == "real_server" {
            reals.push(i);
            continue;
        }
        setting(i, &mut template, &mut settings, item, w)?;
    }
    template.scheduler = settings.scheduler.clone();
    let (reals, checks) = real_servers(&reals, &settings, &inherited, w)?;
    template.reals = reals;
    template.check = shared_check(&template, &checks, item, w);
    if template.check.is_none() {
        drop_unchecked(&mut template, w);
    }
    if let Some((at, sorry)) = settings.sorry.take() {
        match template.check {
            Some(_) => template.sorry_server = Some((at, sorry)),
            None => w.add(&at, "sorry_server is not carried: rs-agent uses a sorry server only for a service with a check"),
        }
    }
    let virtuals = virtuals(item, groups, &settings)?;
    let mut services: Vec<Service> = virtuals
        .into_iter()
        .map(|(at, virt)| Service {
            at,
            virt,
            ..template.clone()
        })
        .collect();
    services.iter_mut().for_each(destination_ports);
    Ok(services)
}

/// keepalived programs a destination that is not NAT with the service's port (0 for a fwmark
/// service) whatever port its `real_server` line names: that port is only where its checker
/// connects. So does the import — the table is keepalived's — and the check keeps
/// connecting where keepalived's does.
fn destination_ports(s: &mut Service) {
    let port = match s.virt {
        Virtual::Addr { port, .. } => port,
        Virtual::Fwmark { .. } => 0,
    };
    let named: Vec<Option<std::net::SocketAddr>> =
        s.reals.iter().map(|r| r.address.parse().ok()).collect();
    let mut moved = false;
    for (r, addr) in s.reals.iter_mut().zip(&named) {
        match addr {
            Some(a) if r.forward != "nat" && a.port() != port => {
                r.address = std::net::SocketAddr::new(a.ip(), port).to_string();
                moved = true;
            }
            _ => {}
        }
    }
    if s.reals.iter().all(|r| r.forward != "nat") {
        if let Some((_, sorry)) = s.sorry_server.as_mut() {
            if let Ok(a) = sorry.parse::<std::net::SocketAddr>() {
                *sorry = std::net::SocketAddr::new(a.ip(), port).to_string();
            }
        }
    }
    let Some(check) = s.check.as_mut().filter(|c| moved && c.port.is_none()) else {
        return;
    };
    // `shared_check` carried a check only when every real server's connects to the same port.
    check.port = named.iter().flatten().map(|a| a.port()).next();
}

/// One setting of a virtual server's block.
fn setting(
    i: &Item,
    s: &mut Service,
    set: &mut Settings,
    vs: &Item,
    w: &mut Warnings,
) -> Result<(), ConfigError> {
    let key = i.key.text.as_str();
    match key {
        "lb_algo" | "lvs_sched" => set.scheduler = arg(i)?.text.clone(),
        "lb_kind" | "lvs_method" => set.forward = forward(i)?,
        "protocol" => {
            set.protocol = match arg(i)?.text.as_str() {
                "TCP" => "tcp",
                "UDP" => "udp",
                "SCTP" => "sctp",
                other => {
                    return Err(i.args[0].at.err(format_args!(
                        "protocol {other:?}: expected TCP, UDP or SCTP"
                    )))
                }
            }
        }
        "persistence_timeout" => {
            s.persistence = Some(match i.args.first() {
                Some(_) => number(i, "seconds")?,
                None => 360,
            })
        }
        "persistence_granularity" => s.netmask = Some(netmask(arg(i)?)),
        "ops" => s.one_packet = true,
        "flag-1" | "flag-2" | "flag-3" | "sh-port" | "sh-fallback" | "mh-port" | "mh-fallback" => {
            s.scheduler_flags.push(key.to_string())
        }
        "ip_family" => set.ipv6_fwmark = arg(i)?.text == "inet6",
        "sorry_server" => set.sorry = Some((i.at().clone(), address(i, "sorry_server")?)),
        "sorry_server_lvs_method" => w.not_carried(
            i,
            "rs-agent forwards the sorry server like the first real server",
        ),
        "quorum" => s.quorum = Some((i.at().clone(), number(i, "a weight")?)),
        "hysteresis" => s.hysteresis = Some((i.at().clone(), number(i, "a weight")?)),
        "quorum_up" => s.quorum_up = Some((i.at().clone(), shell(i, w)?)),
        "quorum_down" => s.quorum_down = Some((i.at().clone(), shell(i, w)?)),
        "omega" => w.not_carried_of(
            i,
            vs,
            "rs-agent runs no notify command when it stops: quorum_down and notify_down run on changes only",
        ),
        "ha_suspend" => w.not_carried_of(
            i,
            vs,
            "rs-agent binds the VIP itself and checks while it runs",
        ),
        "persistence_engine" => w.not_carried_of(i, vs, "rs-agent sets no persistence engine"),
        "sorry_server_inhibit" | "smtp_alert" | "snmp_name" | "nat_mask" => {
            w.not_carried_of(i, vs, "rs-agent has no such setting")
        }
        _ => w.not_carried_of(i, vs, "import does not know it"),
    }
    Ok(())
}

/// A keepalived notify script (`quorum_up`, `notify_down` …): one string keepalived runs as a
/// command line, carried as `["/bin/sh", "-c", SCRIPT]`; a user and group after it are not
/// carried (rs-agent runs it as itself).
pub(super) fn shell(i: &Item, w: &mut Warnings) -> Result<Vec<String>, ConfigError> {
    let script = arg(i)?;
    if i.args.len() > 1 {
        w.add(
            i.at(),
            format_args!(
                "the user of {} is not carried: rs-agent runs notify commands as itself",
                i.key.text
            ),
        );
    }
    Ok(vec!["/bin/sh".into(), "-c".into(), script.text.clone()])
}

/// What only a check acts on, of a service that carries no check: not carried, one warning
/// each.
fn drop_unchecked(s: &mut Service, w: &mut Warnings) {
    let why = "carried only for a service with a check, and this one carries none";
    let places = [
        s.quorum.take().map(|(at, _)| (at, "quorum")),
        s.hysteresis.take().map(|(at, _)| (at, "hysteresis")),
        s.quorum_up.take().map(|(at, _)| (at, "quorum_up")),
        s.quorum_down.take().map(|(at, _)| (at, "quorum_down")),
    ];
    for (at, key) in places.into_iter().flatten() {
        w.add(&at, format_args!("{key} is not carried: {why}"));
    }
    for r in &mut s.reals {
        if r.notify_up.take().is_some() || r.notify_down.take().is_some() {
            w.add(
                &r.at,
                format_args!("notify_up / notify_down are not carried: {why}"),
            );
        }
    }
}

/// `NAT|DR|TUN [type ipip]` → rs-agent's forwarding methods.
fn forward(i: &Item) -> Result<&'static str, ConfigError> {
    let a = arg(i)?;
    let f = match a.text.as_str() {
        "NAT" => "nat",
        "DR" => "dr",
        "TUN" => "tunnel",
        other => {
            return Err(a.at.err(format_args!(
                "{} {other:?}: expected NAT, DR or TUN",
                i.key.text
            )))
        }
    };
    if let [_, t, kind, ..] = i.args.as_slice() {
        if t.text == "type" && kind.text != "ipip" {
            return Err(kind.at.err(format_args!(
                "tunnel type {:?} is not supported (rs-agent tunnels are IPIP)",
                kind.text
            )));
        }
    }
    Ok(f)
}

/// `persistence_granularity`: a dotted IPv4 mask as is, a prefix length as `/N`.
fn netmask(a: &Word) -> String {
    match a.text.parse::<u8>() {
        Ok(n) => format!("/{n}"),
        Err(_) => a.text.clone(),
    }
}

/// `IP [PORT]` of a real or sorry server → `ADDR`, `ADDR:PORT` or `[V6]:PORT`.
fn address(i: &Item, what: &str) -> Result<String, ConfigError> {
    let a = arg(i)?;
    let ip: IpAddr = a.text.parse().map_err(|_| {
        a.at.err(format_args!("{what} {:?} is not an IP address", a.text))
    })?;
    Ok(match i.args.get(1) {
        None => ip.to_string(),
        Some(p) => {
            let port: u16 = p.text.parse().map_err(|_| {
                p.at.err(format_args!("port {:?} is not a number 0..=65535", p.text))
            })?;
            std::net::SocketAddr::new(ip, port).to_string()
        }
    })
}

/// A real server's check (None: it has none that maps) and whether it is inhibited on
/// failure.
struct Checked {
    at: Place,
    check: Option<RealCheck>,
    inhibit: bool,
}

/// The real servers of a virtual server and each one's check.
fn real_servers(
    items: &[&Item],
    set: &Settings,
    up: &Inherited,
    w: &mut Warnings,
) -> Result<(Vec<Real>, Vec<Checked>), ConfigError> {
    let mut reals = Vec::new();
    let mut checks = Vec::new();
    for item in items {
        let mut real = Real {
            at: item.at().clone(),
            address: address(item, "real_server")?,
            forward: set.forward,
            weight: 1,
            upper: None,
            lower: None,
            notify_up: None,
            notify_down: None,
        };
        let mut own = up.clone();
        let mut checkers = Vec::new();
        for i in item.block.iter().flatten() {
            if own.take(i, w)? {
                continue;
            }
            match i.key.text.as_str() {
                "weight" => real.weight = number(i, "a weight")?,
                "lb_kind" | "lvs_method" => real.forward = forward(i)?,
                "uthreshold" => real.upper = Some(number(i, "a connection count")?),
                "lthreshold" => real.lower = Some(number(i, "a connection count")?),
                k if k.ends_with("_CHECK") || k == "HTTP_GET" || k == "SSL_GET" => checkers.push(i),
                "notify_up" => real.notify_up = Some(shell(i, w)?),
                "notify_down" => real.notify_down = Some(shell(i, w)?),
                "smtp_alert" | "snmp_name" => {
                    w.not_carried_of(i, item, "rs-agent has no such setting")
                }
                _ => w.not_carried_of(i, item, "import does not know it"),
            }
        }
        let check = real_check(&checkers, &own, w)?;
        checks.push(Checked {
            at: item.at().clone(),
            check,
            inhibit: own.inhibit.unwrap_or(false),
        });
        reals.push(real);
    }
    Ok((reals, checks))
}

/// The one check of the service: the real servers' check when they all have the same one
/// (rs-agent runs one check per service); none, with a warning, when they differ.
fn shared_check(
    s: &Service,
    checks: &[Checked],
    vs: &Item,
    w: &mut Warnings,
) -> Option<super::super::document::Check> {
    let (head, rest) = checks.split_first()?;
    let (first, inhibit) = (&head.check, &head.inhibit);
    let port_of = |i: usize, c: &RealCheck| c.port.or_else(|| real_port(&s.reals[i].address));
    for (
        k,
        Checked {
            at,
            check: other,
            inhibit: inhibit_k,
        },
    ) in rest.iter().enumerate()
    {
        if inhibit_k != inhibit {
            w.add(at, "inhibit_on_failure differs from the first real server's: rs-agent has one on_failure per service, the first's is carried");
        }
        let same = match (first, other) {
            (Some(a), Some(b)) => a.check == b.check && port_of(0, a) == port_of(k + 1, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            w.add(
                at,
                format_args!(
                    "the check of this real server differs from the first's (line {}); rs-agent \
                 runs one check per service, so {} carries no check: write one \
                 [director.service.check] by hand",
                    head.at.line,
                    vs.head()
                ),
            );
            return None;
        }
    }
    let first = first.as_ref()?;
    let mut check = first.check.clone();
    // A connect_port equal to every real server's own port is the default.
    let ports: Vec<Option<u16>> = (0..checks.len())
        .map(|i| checks[i].check.as_ref().and_then(|c| port_of(i, c)))
        .collect();
    let own: Vec<Option<u16>> = s.reals.iter().map(|r| real_port(&r.address)).collect();
    check.port = if ports == own { None } else { ports[0] };
    // keepalived removes a failed real server unless inhibit_on_failure (weight 0).
    check.on_failure = Some(if *inhibit { "quiesce" } else { "remove" });
    Some(check)
}

/// The port of an `ADDR:PORT` / `[V6]:PORT` address, None for a bare address.
fn real_port(address: &str) -> Option<u16> {
    address
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.port())
}

/// What the virtual server's head names: one service, or every member of its group.
fn virtuals(
    item: &Item,
    groups: &HashMap<String, &Item>,
    set: &Settings,
) -> Result<Vec<(Place, Virtual)>, ConfigError> {
    let at = item.at().clone();
    match item.args.as_slice() {
        [k, mark] if k.text == "fwmark" => Ok(vec![(
            at,
            Virtual::Fwmark {
                mark: word_number(mark, "fwmark")?,
                ipv6: set.ipv6_fwmark,
            },
        )]),
        [k, name] if k.text == "group" => {
            let group = groups.get(&name.text).ok_or_else(|| {
                name.at.err(format_args!(
                    "virtual_server_group {:?} is not defined",
                    name.text
                ))
            })?;
            group_members(group, set)
        }
        [ip, rest @ ..] if rest.len() <= 1 => {
            let ip: IpAddr = ip.text.parse().map_err(|_| {
                ip.at.err(format_args!(
                    "virtual_server {:?} is not an IP address",
                    ip.text
                ))
            })?;
            let port = rest
                .first()
                .map(|p| word_number(p, "port"))
                .transpose()?
                .unwrap_or(0);
            Ok(vec![(
                at,
                Virtual::Addr {
                    ip,
                    port,
                    protocol: set.protocol,
                },
            )])
        }
        _ => Err(at.err("virtual_server needs IP [PORT], fwmark N or group NAME")),
    }
}

fn word_number<T: std::str::FromStr>(w: &Word, what: &str) -> Result<T, ConfigError> {
    w.text.parse().map_err(|_| {
        w.at.err(format_args!("{what} {:?} is not a number in range", w.text))
    })
}

/// The services a `virtual_server_group` names: `IP [PORT]`, ranges (`A.B.C.D-E`,
/// `A-B`, `A/N`) and `fwmark N [inet|inet6]`, at most [`MAX_GROUP_SERVICES`].
fn group_members(group: &Item, set: &Settings) -> Result<Vec<(Place, Virtual)>, ConfigError> {
    let mut out = Vec::new();
    for m in group.block.iter().flatten() {
        let at = m.at().clone();
        if m.key.text == "fwmark" {
            let mark = word_number(arg(m)?, "fwmark")?;
            let ipv6 = m.args.get(1).map_or(set.ipv6_fwmark, |f| f.text == "inet6");
            out.push((at.clone(), Virtual::Fwmark { mark, ipv6 }));
        } else {
            let port = m
                .args
                .first()
                .map(|p| word_number(p, "port"))
                .transpose()?
                .unwrap_or(0);
            let room = MAX_GROUP_SERVICES.saturating_sub(out.len());
            for ip in range(&m.key, room)? {
                out.push((
                    at.clone(),
                    Virtual::Addr {
                        ip,
                        port,
                        protocol: set.protocol,
                    },
                ));
            }
        }
        if out.len() > MAX_GROUP_SERVICES {
            return Err(at.err(format_args!(
                "virtual_server_group expands to more than {MAX_GROUP_SERVICES} services"
            )));
        }
    }
    Ok(out)
}

/// The addresses of `A`, `A-LAST` (the last octet, or IPv6 group in hex), `A-B` or `A/N`;
/// more than `room` is an error.
fn range(w: &Word, room: usize) -> Result<Vec<IpAddr>, ConfigError> {
    let bad = || {
        w.at.err(format_args!("{:?} is not an IP address or range", w.text))
    };
    let (first, last) = if let Some((a, b)) = w.text.split_once('-') {
        let a: IpAddr = a.parse().map_err(|_| bad())?;
        let b = match b.parse::<IpAddr>() {
            Ok(b) => b,
            Err(_) => with_last_part(a, b).ok_or_else(bad)?,
        };
        (a, b)
    } else if let Some((a, n)) = w.text.split_once('/') {
        let a: IpAddr = a.parse().map_err(|_| bad())?;
        let n: u32 = n.parse().map_err(|_| bad())?;
        prefix(a, n).ok_or_else(bad)?
    } else {
        let a: IpAddr = w.text.parse().map_err(|_| bad())?;
        (a, a)
    };
    let (lo, hi) = (bits(first), bits(last));
    if first.is_ipv4() != last.is_ipv4() || hi < lo {
        return Err(bad());
    }
    if hi - lo >= room as u128 {
        return Err(w.at.err(format_args!(
            "{} expands to more than {MAX_GROUP_SERVICES} services",
            w.text
        )));
    }
    Ok((lo..=hi).map(|b| from_bits(first.is_ipv4(), b)).collect())
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_bits(v4: bool, b: u128) -> IpAddr {
    match v4 {
        true => IpAddr::V4((b as u32).into()),
        false => IpAddr::V6(b.into()),
    }
}

/// `A` with its last octet (IPv4, decimal) or last group (IPv6, hex) replaced by `last`.
fn with_last_part(a: IpAddr, last: &str) -> Option<IpAddr> {
    match a {
        IpAddr::V4(v4) => {
            let mut o = v4.octets();
            o[3] = last.parse().ok()?;
            Some(IpAddr::V4(o.into()))
        }
        IpAddr::V6(v6) => {
            let mut s = v6.segments();
            s[7] = u16::from_str_radix(last, 16).ok()?;
            Some(IpAddr::V6(s.into()))
        }
    }
}

/// The first and last address of `a/n`.
fn prefix(a: IpAddr, n: u32) -> Option<(IpAddr, IpAddr)> {
    let width = if a.is_ipv4() { 32 } else { 128 };
    if n > width {
        return None;
    }
    let host = if n == width {
        0
    } else {
        (!0u128) >> (128 - (width - n))
    };
    let lo = bits(a) & !host;
    Some((
        from_bits(a.is_ipv4(), lo),
        from_bits(a.is_ipv4(), lo | host),
    ))
}
