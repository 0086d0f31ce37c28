//! `rs-agent run`: keep the node as configured. The loop only schedules the pipeline that
//! `up` runs (observe → plan_up → apply) — on a link/address event, on a timer (sysctls and
//! nft tables send no events) and on SIGHUP — so a repair is exactly an `up`. The loop
//! itself, the signals, sd_notify, the rollback of a refused reload and the backoff are the
//! daemon skeleton's ([`crate::daemon`]); what is here is when a pass runs and what it logs.

use super::metrics::{Counters, PassKind, Snapshot};
use super::model::RealServerDesired;
use super::scrape::{Scrape, Scrapes};
use super::state::RealServerState;
use super::{reconcile, Apply, Report};
use crate::daemon::{self, Backoff, Lifecycle, Reloads, Running};
use crate::error::Error;
use crate::kernel::events::{Event, Events};
use crate::kernel::{self, KernelError};
use rtnetlink::Handle;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::{sleep_until, Instant};

/// What `run` needs from the configuration; re-read on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSettings {
    pub desired: RealServerDesired,
    /// How often to re-check without an event (catches sysctl and nft drift).
    pub interval: Duration,
    /// Where to serve the drain state (`/health`) for the director's check; off when None.
    pub health_listen: Option<SocketAddr>,
    /// Where to serve `/metrics`; off when None. The address of `health_listen` shares its
    /// listener.
    pub metrics_listen: Option<SocketAddr>,
}

/// Events arriving within this time of the first are handled by one pass.
const DEBOUNCE: Duration = Duration::from_millis(2);

/// Why the next pass runs, for the logs.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    Event(Event),
    Tick,
    Reload,
}

impl Trigger {
    fn kind(self) -> PassKind {
        match self {
            Trigger::Event(_) => PassKind::Event,
            Trigger::Tick => PassKind::Timer,
            Trigger::Reload => PassKind::Reload,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Trigger::Event(Event::Address) => "address event",
            Trigger::Event(Event::Link) => "link event",
            Trigger::Event(Event::Overrun) => "event overrun",
            Trigger::Event(Event::Other) => "event",
            Trigger::Tick => "periodic check",
            Trigger::Reload => "SIGHUP",
        }
    }
}

/// Why the loop woke.
enum Wake {
    /// A link/address event, or `None` when the subscription ended.
    Event(Option<Event>),
    /// The next pass is due.
    Due,
    /// A metrics scrape asks for a snapshot.
    Scrape(Scrape),
}

/// The loop's state between passes.
struct RealServer<'a, L> {
    load: L,
    handle: Handle,
    state_dir: &'a Path,
    /// The settings running; a reload the kernel refuses is undone rather than failing every
    /// later pass.
    settings: Running<RunSettings>,
    events: Option<Events>,
    /// Scrapes of `/metrics`, when it is served.
    scrapes: Option<Scrapes>,
    counters: Counters,
    /// SIGHUPs read whose result is not known yet: the next pass, with their configuration,
    /// accepts them or (the kernel refusing it) refuses them.
    reloads_untried: u64,
    /// When `run` started, seconds since the Unix epoch.
    started: f64,
    backoff: Backoff,
    /// When the next pass runs (a tick, a debounced event, or a retry).
    next: Instant,
    /// Where /health and /metrics are served (fixed at start; a reload cannot move them).
    serving: (Option<SocketAddr>, Option<SocketAddr>),
    /// When the last pass ended: while passes fail, events are handled no sooner than
    /// `MIN_BACKOFF` after it.
    last_pass: Instant,
    trigger: Trigger,
    /// The status line as of the last pass.
    status: String,
    /// The last pass's warnings, to log each when it appears rather than every pass.
    warnings: Vec<String>,
}

/// Applies like `up` (all-or-nothing; an error here ends the command), then keeps the node
/// so until `shutdown` completes (SIGTERM/SIGINT, from [`daemon::signals::install`], as
/// `reloads` are SIGHUPs), which leaves it configured (`down` is the only way back).
pub async fn run(
    load: impl Fn() -> Result<RunSettings, Error>,
    state_dir: &Path,
    shutdown: impl Future<Output = ()>,
    mut reloads: Reloads,
) -> Result<(), Error> {
    let started = crate::metrics::unix_seconds(SystemTime::now());
    let settings = load()?;
    let mut agent_lock = super::AGENT_RUN.hold(state_dir).await?;
    if let Some(addr) = settings.health_listen {
        // For `rs-agent drain` to say where the flag is served.
        agent_lock.note(&addr.to_string());
    }
    // Bind before configuring anything: a taken port is bad input, reported up front.
    let listeners = bind_endpoints(&settings).await?;
    let handle = kernel::link::connect().map_err(KernelError::from)?;
    // Subscribe before the first pass, so that no change after it goes unnoticed.
    let events = subscribe();
    let took = Instant::now();
    let first = reconcile(&handle, &settings.desired, state_dir, Apply::AllOrNothing).await?;
    let mut counters = Counters::default();
    counters.pass(PassKind::Start, false, took.elapsed());
    for w in &first.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(
        changes = first.applied.len(),
        interval_ms = settings.interval.as_millis() as u64,
        "configured; watching for drift"
    );
    let (metrics_route, scrapes) = match settings.metrics_listen {
        Some(_) => {
            let (route, scrapes) = super::scrape::channel();
            (Some(route), Some(scrapes))
        }
        None => (None, None),
    };
    let mut lifecycle = Lifecycle::from_env();
    let mut daemon = RealServer {
        load,
        handle,
        state_dir,
        events,
        scrapes,
        counters,
        reloads_untried: 0,
        started,
        next: Instant::now() + settings.interval,
        last_pass: Instant::now(),
        serving: (settings.health_listen, settings.metrics_listen),
        settings: Running::new(settings),
        backoff: Backoff::default(),
        trigger: Trigger::Tick,
        status: String::new(),
        warnings: first.warnings,
    };
    daemon.status = daemon.status_line();
    let _endpoints = serve_endpoints(listeners, state_dir, metrics_route.map(Arc::new));
    if crate::real_server::drain::is_drained(state_dir) {
        tracing::warn!(
            flag = %crate::real_server::drain::flag_path(state_dir).display(),
            "drained: the drain flag is set, /health answers 503 (`rs-agent undrain` clears it)"
        );
    }
    daemon::serve(&mut daemon, &mut lifecycle, &mut reloads, shutdown).await;
    Ok(())
}

/// A route of `run`'s endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    Metrics,
}

/// One listener, and the routes it serves.
struct Endpoint {
    listen: SocketAddr,
    listener: tokio::net::TcpListener,
    routes: Vec<Route>,
}

/// The addresses to listen on and what each serves: `metrics_listen` equal to `health_listen`
/// is one listener serving both routes.
fn endpoint_plan(settings: &RunSettings) -> Vec<(SocketAddr, Vec<Route>)> {
    let mut plan: Vec<(SocketAddr, Vec<Route>)> = Vec::new();
    let wanted = [
        (settings.health_listen, Route::Health),
        (settings.metrics_listen, Route::Metrics),
    ];
    for (listen, route) in wanted {
        let Some(listen) = listen else { continue };
        match plan.iter_mut().find(|(at, _)| *at == listen) {
            Some((_, routes)) => routes.push(route),
            None => plan.push((listen, vec![route])),
        }
    }
    plan
}

/// What an endpoint is called in its errors and logs, and the settings that place it.
fn endpoint_names(routes: &[Route]) -> (&'static str, &'static str) {
    match routes {
        [Route::Health] => ("health endpoint", "health_listen / --health-listen"),
        [Route::Metrics] => ("metrics endpoint", "metrics_listen / --metrics-listen"),
        _ => (
            "health and metrics endpoint",
            "health_listen and metrics_listen / --health-listen and --metrics-listen",
        ),
    }
}

/// Binds every endpoint, or fails naming the address and the setting that gave it.
async fn bind_endpoints(settings: &RunSettings) -> Result<Vec<Endpoint>, Error> {
    let mut bound = Vec::new();
    for (listen, routes) in endpoint_plan(settings) {
        let (what, setting) = endpoint_names(&routes);
        let listener = crate::daemon::endpoint::bind(listen, what, setting).await?;
        bound.push(Endpoint {
            listen,
            listener,
            routes,
        });
    }
    Ok(bound)
}

/// Serves each bound endpoint until the returned tasks are dropped, logging where.
fn serve_endpoints(
    endpoints: Vec<Endpoint>,
    state_dir: &Path,
    metrics: Option<Arc<super::scrape::MetricsRoute>>,
) -> Vec<crate::AbortOnDrop<()>> {
    use crate::daemon::endpoint::Routes;
    let health: Arc<dyn Routes> = Arc::new(crate::real_server::drain::HealthRoute {
        state_dir: state_dir.to_path_buf(),
    });
    let mut tasks = Vec::new();
    for endpoint in endpoints {
        let routes: Vec<Arc<dyn Routes>> = endpoint
            .routes
            .iter()
            .filter_map(|route| match route {
                Route::Health => Some(health.clone()),
                Route::Metrics => metrics.clone().map(|m| m as Arc<dyn Routes>),
            })
            .collect();
        let (what, _) = endpoint_names(&endpoint.routes);
        let paths: Vec<&str> = routes.iter().flat_map(|r| r.paths()).copied().collect();
        tracing::info!(listen = %endpoint.listen, "serving {}", paths.join(" and "));
        tasks.push(crate::AbortOnDrop(tokio::spawn(
            crate::daemon::endpoint::serve(endpoint.listener, routes, what),
        )));
    }
    tasks
}

fn subscribe() -> Option<Events> {
    match Events::subscribe() {
        Ok(events) => Some(events),
        Err(e) => {
            tracing::warn!(
                "cannot subscribe to link/address events: {e}; checking on the timer, and \
                 subscribing again at each pass"
            );
            None
        }
    }
}

/// The next scrape, or never when /metrics is not served (or no longer: the endpoint is gone).
async fn next_scrape(scrapes: &mut Option<Scrapes>) -> Scrape {
    match scrapes {
        Some(s) => match s.recv().await {
            Some(scrape) => scrape,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// The next event, or never when there is no subscription.
async fn next_event(events: &mut Option<Events>) -> Option<Event> {
    match events {
        Some(e) => e.next().await,
        None => std::future::pending().await,
    }
}

impl<L: Fn() -> Result<RunSettings, Error>> daemon::Daemon for RealServer<'_, L> {
    type Wake = Wake;

    async fn wake(&mut self) -> Wake {
        tokio::select! {
            event = next_event(&mut self.events) => Wake::Event(event),
            scrape = next_scrape(&mut self.scrapes) => Wake::Scrape(scrape),
            _ = sleep_until(self.next) => Wake::Due,
        }
    }

    async fn handle(&mut self, wake: Wake) {
        match wake {
            Wake::Event(Some(event)) => self.on_event(event),
            Wake::Event(None) => {
                tracing::warn!("link/address event subscription ended; resubscribing");
                self.events = subscribe();
                self.soon(Trigger::Event(Event::Overrun));
            }
            Wake::Due => {
                // A subscription that failed (at start, or on renewal) is tried again at
                // every pass, quietly: the timer covers meanwhile.
                if self.events.is_none() {
                    self.events = Events::subscribe().ok();
                    if self.events.is_some() {
                        tracing::info!("subscribed to link/address events again");
                    }
                }
                self.pass().await
            }
            Wake::Scrape(scrape) => self.answer(scrape).await,
        }
    }

    /// systemd hears READY=1 once the file is re-read (a bad one refused): the pass that
    /// applies it, and goes back if the kernel refuses it, runs a debounce later, as an
    /// event's would.
    async fn reload(&mut self) {
        self.reread();
    }

    fn status(&self) -> String {
        self.status.clone()
    }

    fn stopping(&mut self) {
        tracing::info!(
            repairs = self.counters.repairs(),
            "stopping; the node stays configured (`rs-agent down` unconfigures it)"
        );
    }
}

impl<L: Fn() -> Result<RunSettings, Error>> RealServer<'_, L> {
    fn on_event(&mut self, event: Event) {
        match event {
            Event::Overrun => tracing::info!("netlink event socket overran; resyncing everything"),
            other => tracing::debug!(?other, "kernel event"),
        }
        self.soon(Trigger::Event(event));
    }

    /// Runs a pass after the debounce time, unless one is due sooner. While passes fail (a
    /// change the kernel keeps refusing), an event still brings the retry forward — a VIP
    /// deleted meanwhile must not wait for a backoff of up to 30 s — but no sooner than
    /// `MIN_BACKOFF` after the last pass, so that events cannot make the retries spin.
    fn soon(&mut self, trigger: Trigger) {
        let at = self
            .backoff
            .paced(Instant::now() + DEBOUNCE, self.last_pass);
        (self.next, self.trigger) = merge((self.next, self.trigger), at, trigger);
    }

    /// SIGHUP: reads the configuration again; the pass that applies it is scheduled like an
    /// event's.
    fn reread(&mut self) {
        let read_at = crate::metrics::unix_seconds(SystemTime::now());
        self.counters.reload_read(read_at);
        match (self.load)() {
            Ok(settings) => {
                let (health, metrics) = self.serving;
                if settings.health_listen != health {
                    tracing::warn!(
                        serving = ?health,
                        "SIGHUP: a new health_listen takes effect only after a restart"
                    );
                }
                if settings.metrics_listen != metrics {
                    tracing::warn!(
                        serving = ?metrics,
                        "SIGHUP: a new metrics_listen takes effect only after a restart"
                    );
                }
                if settings != *self.settings.settings() {
                    tracing::info!("configuration reloaded (SIGHUP); reconciling the difference");
                } else {
                    tracing::info!("configuration reloaded (SIGHUP); unchanged");
                }
                // The configuration to go back to if the kernel refuses this one: the one
                // running, if it worked.
                self.settings.replace(settings, !self.backoff.failing());
                self.reloads_untried += 1;
                // A reload is worth a pass even while backing off: the fix may be in it.
                self.backoff.reset();
                self.soon(Trigger::Reload);
            }
            Err(e) => {
                self.counters.reloads(1, false);
                tracing::error!("SIGHUP: {e}; keeping the previous configuration");
            }
        }
    }

    /// One pipeline pass; failures are logged and retried with bounded backoff. A pass is a
    /// repair ([`Apply::KeepProgress`]): what it made stays even when a change fails.
    async fn pass(&mut self) {
        let trigger = self.trigger;
        self.trigger = Trigger::Tick;
        let desired = &self.settings.settings().desired;
        let took = Instant::now();
        let result = reconcile(&self.handle, desired, self.state_dir, Apply::KeepProgress).await;
        self.last_pass = Instant::now();
        let failure = match result {
            Ok(report) => {
                self.made(&report, trigger);
                match report.failed.as_slice() {
                    [] => None,
                    [one] => Some(format!("{one}{}", kept(&report))),
                    [first, more @ ..] => Some(format!(
                        "{first} (and {} more change(s) refused){}",
                        more.len(),
                        kept(&report)
                    )),
                }
            }
            Err(e) => Some(e.to_string()),
        };
        let kind = trigger.kind();
        self.counters.pass(kind, failure.is_some(), took.elapsed());
        match failure {
            None => {
                self.reloads_tried(true);
                let failures = self.backoff.reset();
                if failures > 0 {
                    tracing::info!("repair succeeded after {failures} failed attempt(s)");
                }
                self.settings.worked();
                self.next = Instant::now() + self.settings.settings().interval;
            }
            Some(e) => self.failed(&e),
        }
        self.status = self.status_line();
    }

    /// Logs and counts what a pass made, and its warnings when they change.
    /// Changes a reload asked for are not repairs: logged as `reload applied:` and not
    /// counted, so that the repair count measures drift.
    fn made(&mut self, report: &Report, trigger: Trigger) {
        for change in &report.applied {
            match trigger {
                Trigger::Reload => tracing::info!("reload applied: {change}"),
                _ => tracing::info!(trigger = trigger.as_str(), "repaired: {change}"),
            }
        }
        if !matches!(trigger, Trigger::Reload) {
            self.counters.repaired(&report.applied);
        }
        if report.applied.is_empty() && report.failed.is_empty() {
            tracing::debug!(trigger = trigger.as_str(), "no drift");
        }
        for w in report
            .warnings
            .iter()
            .filter(|w| !self.warnings.contains(w))
        {
            tracing::warn!("{w}");
        }
        self.warnings.clone_from(&report.warnings);
    }

    /// A pass failed: back off and retry — or, when it was the first pass after a reload,
    /// go back to the configuration that worked (the kernel refuses the new one: a module
    /// it lacks, IPv6 disabled for an IPv6 VIP), as `director run` does.
    fn failed(&mut self, e: &str) {
        let refused = self.settings.refused();
        self.reloads_tried(!refused);
        if refused {
            tracing::error!(
                "SIGHUP: the kernel refused the new configuration, going back to the running \
                 one (fix it, then reload again): {e}"
            );
            self.backoff.reset();
            self.next = Instant::now();
            self.trigger = Trigger::Reload;
            return;
        }
        let delay = self.backoff.failed();
        let attempt = self.backoff.failures();
        // A first failure is often a race with whoever is changing the node.
        let ms = delay.as_millis();
        if attempt == 1 {
            tracing::warn!(attempt = 1, "repair failed: {e}; retrying in {ms} ms");
        } else {
            tracing::error!(attempt, "repair failed: {e}; retrying in {ms} ms");
        }
        self.next = Instant::now() + delay;
    }

    /// One line for `systemctl status`.
    fn status_line(&self) -> String {
        let d = &self.settings.settings().desired;
        let n = d.vips.len();
        let vips = if n == 1 { "VIP" } else { "VIPs" };
        let repairs = match self.counters.repairs() {
            1 => "1 repair".to_string(),
            r => format!("{r} repairs"),
        };
        if self.backoff.failing() {
            return format!(
                "{n} {vips} wanted; repair failing ({} attempts, see the log); {repairs}",
                self.backoff.failures()
            );
        }
        format!(
            "{n} {vips} bound on {}, ARP suppressed ({}); {repairs}",
            d.device.name(),
            d.arp
        )
    }
}

impl<L> RealServer<'_, L> {
    /// The reloads read since the last pass have a result: the pass with their configuration
    /// ran (`accepted`), or the kernel refused it and the agent went back.
    fn reloads_tried(&mut self, accepted: bool) {
        self.counters.reloads(self.reloads_untried, accepted);
        self.reloads_untried = 0;
    }

    /// Answers a scrape: the counters, and the kernel judged now as `status` judges it.
    /// Answers `scrape` and every scrape queued behind it from one judgement of the node:
    /// the judgement lists the nft tables (two processes, waited for on this thread), so
    /// scrapes arriving together — two Prometheus servers, a burst — cost one, and never
    /// hold up /health for long.
    async fn answer(&mut self, scrape: Scrape) {
        let mut waiting = vec![scrape];
        if let Some(more) = self.scrapes.as_mut() {
            while let Ok(next) = more.try_recv() {
                waiting.push(next);
            }
        }
        // A scrape that gave up waiting needs no judgement.
        waiting.retain(|s| !s.reply.is_closed());
        if waiting.is_empty() {
            return;
        }
        let snapshot = self.snapshot().await;
        for s in waiting {
            let _ = s.reply.send(snapshot.clone());
        }
    }

    async fn snapshot(&self) -> Result<Snapshot, String> {
        let desired = &self.settings.settings().desired;
        let judged = async {
            let state = RealServerState::load(self.state_dir)?;
            super::judge(&self.handle, desired, &state, self.state_dir).await
        };
        let report = judged
            .await
            .map_err(|e| format!("judging the node for the scrape: {e}"))?;
        Ok(Snapshot::new(self.started, self.counters.clone(), &report))
    }
}

/// What a partly failed pass kept, for its error line.
fn kept(report: &Report) -> String {
    match report.applied.len() {
        0 => "; nothing else was changed".to_string(),
        n => format!("; kept the {n} change(s) made (the rest waits for the retry)"),
    }
}

/// Joins a new reason for a pass (`trigger`, due `at`) to the pending one: the sooner time
/// wins. A reload names the pass it joins and is never renamed by a later trigger, so that
/// the changes it asked for are logged as `reload applied:` and not counted as repairs, even
/// when an event had already scheduled that pass.
fn merge(pending: (Instant, Trigger), at: Instant, trigger: Trigger) -> (Instant, Trigger) {
    let (next, current) = pending;
    let named = match (current, trigger) {
        (_, Trigger::Reload) | (Trigger::Reload, _) => Trigger::Reload,
        _ if at < next => trigger,
        _ => current,
    };
    (next.min(at), named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_names_the_pass_it_joins() {
        let now = Instant::now();
        let soon = now + DEBOUNCE;
        let later = now + Duration::from_secs(1);
        let name = |pending, at, trigger| merge(pending, at, trigger).1.as_str();
        // An event already scheduled the pass; the reload that joins it renames it.
        assert_eq!(
            merge(
                (soon, Trigger::Event(Event::Address)),
                later,
                Trigger::Reload
            )
            .0,
            soon
        );
        assert_eq!(
            name(
                (soon, Trigger::Event(Event::Address)),
                later,
                Trigger::Reload
            ),
            "SIGHUP"
        );
        // A pending reload is not renamed by a sooner event.
        assert_eq!(
            name((later, Trigger::Reload), soon, Trigger::Event(Event::Link)),
            "SIGHUP"
        );
        // Otherwise the sooner reason names the pass.
        assert_eq!(
            name((later, Trigger::Tick), soon, Trigger::Event(Event::Link)),
            "link event"
        );
        assert_eq!(
            name((soon, Trigger::Tick), later, Trigger::Event(Event::Link)),
            "periodic check"
        );
    }
}
