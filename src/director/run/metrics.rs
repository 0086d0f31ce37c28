//! `GET /metrics` of `director run`: the IPVS table read fresh from the kernel at each scrape
//! (as node_exporter's ipvs collector reads /proc), joined with what only rs-agent knows —
//! each real server's health, the configured weights, the passes. Labels are node_exporter's
//! (`local_address`, `local_port`, `local_mark`, `proto`, `remote_address`, `remote_port`)
//! with the same values, so its series and ours join with `on(...)`.
//!
//! The table is dumped on a blocking thread and rendered there in chunks: a 16,000-server
//! scrape never sits in memory whole, and the run loop never waits for it.

use super::telemetry::{Shared, Telemetry};
use crate::daemon::endpoint::{Answer, Body, Chunks, Request, Response, Routes, CHUNK};
use crate::director::health::{HealthCheck, Target};
use crate::director::state::DirectorState;
use crate::kernel::ipvs::{
    AddressFamily, IpvsClient, ObservedDestination, ObservedService, ServiceKey, Stats,
};
use crate::metrics::{Encoder, Family, Format, Labels};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

mod families;
use families::*;

/// The route, with what a scrape reads.
pub struct MetricsRoute {
    pub telemetry: Shared,
    pub state_dir: PathBuf,
    /// Per real server series (IPVS and health); off for very large tables, which keep the
    /// per-service ones.
    pub per_real_server: bool,
    /// One scrape at a time reads and renders the table: each holds a copy of it (megabytes
    /// for a large table), and scrapes that come together wait for the one before them.
    pub one_at_a_time: Arc<tokio::sync::Semaphore>,
}

impl MetricsRoute {
    pub fn new(telemetry: Shared, state_dir: PathBuf, per_real_server: bool) -> MetricsRoute {
        MetricsRoute {
            telemetry,
            state_dir,
            per_real_server,
            one_at_a_time: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

/// What one scrape renders.
pub struct Scrape {
    pub ipvs: Vec<ObservedService>,
    /// The services the state file says are rs-agent's.
    pub owned: HashSet<ServiceKey>,
    pub telemetry: Telemetry,
    pub per_real_server: bool,
}

impl Routes for MetricsRoute {
    fn paths(&self) -> &'static [&'static str] {
        &["/metrics"]
    }

    fn respond<'a>(&'a self, request: &'a Request) -> Answer<'a> {
        Box::pin(async move {
            let format = Format::negotiate(request.accept.as_deref());
            if request.method == "HEAD" {
                // The head of a scrape, without reading the table for a body nobody gets.
                return Response {
                    status: 200,
                    content_type: format.content_type(),
                    body: Body::Full(Vec::new()),
                };
            }
            let Ok(turn) = self.one_at_a_time.clone().acquire_owned().await else {
                return Response::text(503, "rs-agent director run is stopping\n");
            };
            let dir = self.state_dir.clone();
            let read = tokio::task::spawn_blocking(move || read_kernel(&dir)).await;
            let (ipvs, owned) = match read {
                Ok(Ok(read)) => read,
                Ok(Err(e)) => return Response::text(500, &format!("{e}\n")),
                Err(e) => return Response::text(500, &format!("reading IPVS: {e}\n")),
            };
            let scrape = Scrape {
                ipvs,
                owned,
                telemetry: self.telemetry.snapshot(),
                per_real_server: self.per_real_server,
            };
            Response {
                status: 200,
                content_type: format.content_type(),
                body: Body::Streamed(Box::new(move |chunks: &mut Chunks| {
                    render(&scrape, format, &mut |chunk| chunks.send(chunk));
                    drop(turn);
                })),
            }
        })
    }
}

/// The table and which of its services are ours, as `director status` reads them.
fn read_kernel(
    state_dir: &std::path::Path,
) -> Result<(Vec<ObservedService>, HashSet<ServiceKey>), crate::error::Error> {
    let mut client = IpvsClient::connect()?;
    let ipvs = client.dump()?;
    let owned = DirectorState::load(state_dir)?
        .services
        .into_iter()
        .collect();
    Ok((ipvs, owned))
}

/// Where rendered text goes: handed on in chunks of about [`CHUNK`] bytes; stops once the
/// sink says the client is gone.
struct Out<'a> {
    buf: Vec<u8>,
    format: Format,
    sink: &'a mut dyn FnMut(Vec<u8>) -> bool,
    open: bool,
}

impl Out<'_> {
    fn encoder(&mut self) -> Encoder<'_> {
        Encoder::new(&mut self.buf, self.format)
    }

    fn flush_if_full(&mut self) -> bool {
        if self.open && self.buf.len() >= CHUNK {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + 4096));
            self.open = (self.sink)(chunk);
        }
        self.open
    }

    /// One family: its head, then `each` for every item.
    fn family<T>(
        &mut self,
        family: &Family,
        items: impl IntoIterator<Item = T>,
        mut each: impl FnMut(&mut Encoder<'_>, T),
    ) {
        if !self.open {
            return;
        }
        self.encoder().family(family);
        for item in items {
            each(&mut self.encoder(), item);
            if !self.flush_if_full() {
                return;
            }
        }
    }
}

/// node_exporter's labels of a service: an address service by address, port and protocol,
/// a fwmark service by its mark in hex (as /proc/net/ip_vs prints it) with `proto="FWM"`.
/// A fwmark service also gets `family`, as IPv4 and IPv6 services may share a mark.
fn service_labels(key: &ServiceKey) -> Labels {
    match key {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => Labels::new()
            .with("local_address", addr)
            .with("local_port", port)
            .with("local_mark", "")
            .with("proto", protocol.name()),
        ServiceKey::Fwmark { af, mark } => Labels::new()
            .with("local_address", "")
            .with("local_port", 0)
            .with("local_mark", format!("{mark:08X}"))
            .with("proto", "FWM")
            .with(
                "family",
                match af {
                    AddressFamily::V4 => "ipv4",
                    AddressFamily::V6 => "ipv6",
                },
            ),
    }
}

fn backend_labels(service: &Labels, addr: IpAddr, port: u16) -> Labels {
    service
        .clone()
        .with("remote_address", addr)
        .with("remote_port", port)
}

/// Renders `scrape` in `format`, handing the text to `sink` in chunks.
pub fn render(scrape: &Scrape, format: Format, sink: &mut dyn FnMut(Vec<u8>) -> bool) {
    let mut out = Out {
        buf: Vec::with_capacity(CHUNK + 4096),
        format,
        sink,
        open: true,
    };
    daemon_families(&mut out, &scrape.telemetry);
    ipvs_families(&mut out, scrape);
    health_families(&mut out, scrape);
    if out.open {
        out.encoder().finish();
        let rest = std::mem::take(&mut out.buf);
        (out.sink)(rest);
    }
}

fn daemon_families(out: &mut Out<'_>, t: &Telemetry) {
    let build = Labels::new()
        .with("version", env!("CARGO_PKG_VERSION"))
        .with("role", "director");
    out.family(&BUILD, [build], |e, l| e.sample(&BUILD, &l, 1u64));
    let started = crate::metrics::unix_seconds(t.started);
    out.family(&START_TIME, [started], |e, v| {
        e.sample(&START_TIME, &Labels::new(), v)
    });
    let kinds = || super::passes::Pass::ALL.map(|p| (Labels::new().with("kind", p.name()), p));
    out.family(&PASSES, kinds(), |e, (l, p)| {
        e.sample(&PASSES, &l, t.pass(p).count)
    });
    out.family(&PASS_FAILURES, kinds(), |e, (l, p)| {
        e.sample(&PASS_FAILURES, &l, t.pass(p).failures)
    });
    out.family(&PASS_WRITES, kinds(), |e, (l, p)| {
        e.sample(&PASS_WRITES, &l, t.pass(p).netlink_writes)
    });
    out.family(&PASS_SECONDS, kinds(), |e, (l, p)| {
        e.histogram(&PASS_SECONDS, &l, &t.pass(p).seconds)
    });
    let reloads = [
        ("accepted", t.reloads_accepted),
        ("refused", t.reloads_refused),
    ];
    out.family(&RELOADS, reloads, |e, (result, n)| {
        e.sample(&RELOADS, &Labels::new().with("result", result), n)
    });
    let last = t.last_reload.map(crate::metrics::unix_seconds);
    out.family(&LAST_RELOAD, last, |e, v| {
        e.sample(&LAST_RELOAD, &Labels::new(), v)
    });
    out.family(&ANNOUNCEMENTS, [t.announcements], |e, n| {
        e.sample(&ANNOUNCEMENTS, &Labels::new(), n)
    });
}

/// A counter IPVS keeps per service and per destination: the two families and the field.
type Stat = (&'static Family, &'static Family, fn(&Stats) -> u64);

/// The five counters IPVS keeps per service and per destination.
const STATS: [Stat; 5] = [
    (&SVC_CONNS, &RS_CONNS, |s| s.conns),
    (&SVC_INPKTS, &RS_INPKTS, |s| s.inpkts),
    (&SVC_OUTPKTS, &RS_OUTPKTS, |s| s.outpkts),
    (&SVC_INBYTES, &RS_INBYTES, |s| s.inbytes),
    (&SVC_OUTBYTES, &RS_OUTBYTES, |s| s.outbytes),
];

fn ipvs_families(out: &mut Out<'_>, scrape: &Scrape) {
    let services: Vec<(Labels, &ObservedService)> = scrape
        .ipvs
        .iter()
        .map(|s| (service_labels(&s.service.key), s))
        .collect();
    out.family(&SVC_INFO, &services, |e, (l, s)| {
        let owner = match scrape.owned.contains(&s.service.key) {
            true => "rs-agent",
            false => "foreign",
        };
        let l = l
            .and("scheduler", &s.service.scheduler)
            .with("owner", owner);
        e.sample(&SVC_INFO, &l, 1u64)
    });
    for (family, _, stat) in STATS {
        out.family(family, &services, |e, (l, s)| {
            e.sample(family, l, stat(&s.stats))
        });
    }
    let sum = |s: &ObservedService, f: fn(&ObservedDestination) -> u32| {
        s.destinations.iter().map(|d| u64::from(f(d))).sum::<u64>()
    };
    out.family(&SVC_ACTIVE, &services, |e, (l, s)| {
        e.sample(&SVC_ACTIVE, l, sum(s, |d| d.active_conns))
    });
    out.family(&SVC_INACTIVE, &services, |e, (l, s)| {
        e.sample(&SVC_INACTIVE, l, sum(s, |d| d.inactive_conns))
    });
    if !scrape.per_real_server {
        return;
    }
    let backends: Vec<(Labels, &ObservedDestination)> = services
        .iter()
        .flat_map(|(l, s)| {
            s.destinations
                .iter()
                .map(move |d| (backend_labels(l, d.dest.addr, d.dest.port), d))
        })
        .collect();
    for (_, family, stat) in STATS {
        out.family(family, &backends, |e, (l, d)| {
            e.sample(family, l, stat(&d.stats))
        });
    }
    out.family(&RS_ACTIVE, &backends, |e, (l, d)| {
        e.sample(&RS_ACTIVE, l, d.active_conns)
    });
    out.family(&RS_INACTIVE, &backends, |e, (l, d)| {
        e.sample(&RS_INACTIVE, l, d.inactive_conns)
    });
    out.family(&RS_WEIGHT, &backends, |e, (l, d)| {
        e.sample(&RS_WEIGHT, l, d.dest.weight)
    });
}

/// A configured real server's state: `up`, `down`, `drained` (down on a 503), `unchecked`
/// (its service has no check), or `sorry` (the sorry server, while it serves).
/// A server not checked yet is up, or down with `alpha`.
fn state_of(t: &Telemetry, target: &Target, check: Option<&HealthCheck>) -> &'static str {
    match (t.board.records.get(target), check) {
        (_, None) => "unchecked",
        (Some(r), _) if r.drained() => "drained",
        (Some(r), _) if !r.up => "down",
        (None, Some(c)) if c.alpha => "down",
        _ => "up",
    }
}

/// Every configured real server (and sorry server) with its labels and state.
fn configured(t: &Telemetry) -> Vec<(Labels, Target, &'static str, u32)> {
    let mut out = Vec::new();
    for s in &t.configured.services {
        let service = service_labels(&s.service.key);
        let key = &s.service.key;
        let target = |addr, port| Target {
            service: key.clone(),
            addr,
            port,
        };
        let mut any_up = false;
        for d in &s.reals {
            let target = target(d.addr, d.port);
            let state = state_of(t, &target, s.check.as_ref());
            any_up |= matches!(state, "up" | "unchecked");
            out.push((
                backend_labels(&service, d.addr, d.port),
                target,
                state,
                d.weight,
            ));
        }
        let quorum_up = t.board.quorums.get(key).unwrap_or(any_up);
        if let (Some(sorry), false) = (&s.sorry, quorum_up) {
            let target = target(sorry.addr, sorry.port);
            let labels = backend_labels(&service, sorry.addr, sorry.port);
            out.push((labels, target, "sorry", sorry.weight));
        }
    }
    out
}

fn health_families(out: &mut Out<'_>, scrape: &Scrape) {
    let t = &scrape.telemetry;
    let reals = configured(t);
    let mut per_service: HashMap<&ServiceKey, [u64; 4]> = HashMap::new();
    for (_, target, state, _) in &reals {
        let slot = STATES.iter().position(|s| s == state);
        let counts = per_service.entry(&target.service).or_default();
        if let Some(i) = slot {
            counts[i] += 1;
        }
    }
    let services: Vec<(Labels, [u64; 4])> = t
        .configured
        .services
        .iter()
        .map(|s| {
            let counts = per_service.get(&s.service.key).copied().unwrap_or_default();
            (service_labels(&s.service.key), counts)
        })
        .collect();
    out.family(&SVC_REALS, &services, |e, (l, counts)| {
        for (state, n) in STATES.iter().zip(counts) {
            e.sample(&SVC_REALS, &l.and("state", state), *n);
        }
    });
    let quorums: Vec<(Labels, bool)> = (t.configured.services.iter())
        .filter_map(|s| {
            let up = t.board.quorums.get(&s.service.key)?;
            Some((service_labels(&s.service.key), up))
        })
        .collect();
    out.family(&SVC_QUORUM_UP, &quorums, |e, (l, up)| {
        e.sample(&SVC_QUORUM_UP, l, u64::from(*up))
    });
    let seconds: Vec<(Labels, &crate::metrics::Histogram)> = t
        .board
        .check_seconds
        .iter()
        .map(|(k, h)| (service_labels(k), h))
        .collect();
    out.family(&CHECK_SECONDS, &seconds, |e, (l, h)| {
        e.histogram(&CHECK_SECONDS, l, h)
    });
    if scrape.per_real_server {
        real_server_families(out, t, &reals);
    }
}

/// The states counted per service (`sorry` is not a real server of the service).
const STATES: [&str; 4] = ["up", "down", "drained", "unchecked"];

fn real_server_families(
    out: &mut Out<'_>,
    t: &Telemetry,
    reals: &[(Labels, Target, &'static str, u32)],
) {
    out.family(&RS_CONFIGURED_WEIGHT, reals, |e, (l, _, _, w)| {
        e.sample(&RS_CONFIGURED_WEIGHT, l, *w)
    });
    out.family(&RS_STATE, reals, |e, (l, _, state, _)| {
        e.sample(&RS_STATE, &l.and("state", state), 1u64)
    });
    let checked: Vec<(&Labels, &crate::director::health::Record)> = reals
        .iter()
        .filter_map(|(l, target, ..)| t.board.records.get(target).map(|r| (l, &**r)))
        .collect();
    let up = reals
        .iter()
        .filter(|(_, _, s, _)| *s != "unchecked" && *s != "sorry");
    out.family(&RS_UP, up, |e, (l, _, state, _)| {
        e.sample(&RS_UP, l, u64::from(*state == "up"))
    });
    out.family(&CONSECUTIVE_OK, &checked, |e, (l, r)| {
        e.sample(&CONSECUTIVE_OK, l, r.successes)
    });
    out.family(&CONSECUTIVE_FAILED, &checked, |e, (l, r)| {
        e.sample(&CONSECUTIVE_FAILED, l, r.failures)
    });
    out.family(&TRANSITIONS, &checked, |e, (l, r)| {
        e.sample(&TRANSITIONS, &l.and("direction", "up"), r.went_up);
        e.sample(&TRANSITIONS, &l.and("direction", "down"), r.went_down);
    });
    let flipped = checked
        .iter()
        .filter_map(|(l, r)| r.since.map(|at| (*l, at)));
    out.family(&LAST_TRANSITION, flipped, |e, (l, at)| {
        e.sample(&LAST_TRANSITION, l, at)
    });
    out.family(&FAILURES, &checked, |e, (l, r)| {
        for reason in crate::director::health::probe::Reason::ALL {
            if let Some(n) = r.failures_by.get(&reason) {
                e.sample(&FAILURES, &l.and("reason", reason.name()), *n);
            }
        }
    });
    let failed = checked
        .iter()
        .filter_map(|(l, r)| r.last_failure.as_ref().map(|f| (*l, f)));
    out.family(&LAST_FAILURE, failed, |e, (l, f)| {
        e.sample(&LAST_FAILURE, &l.and("reason", f.reason.name()), f.at)
    });
    out.family(&LAST_CHECK_SECONDS, &checked, |e, (l, r)| {
        e.sample(&LAST_CHECK_SECONDS, l, r.last_seconds)
    });
}

#[cfg(test)]
mod tests;
