//! `rs-agent run`: keep the node as configured. The loop only schedules the pipeline that
//! `up` runs (observe → plan_up → apply) — on a link/address event, on a timer (sysctls and
//! nft tables send no events) and on SIGHUP — so a repair is exactly an `up`. The loop
//! itself, the signals, sd_notify, the rollback of a refused reload and the backoff are the
//! daemon skeleton's ([`crate::daemon`]); what is here is when a pass runs and what it logs.

use super::model::RealServerDesired;
use super::{reconcile, Apply, Report};
use crate::daemon::{self, Backoff, Lifecycle, Reloads, Running};
use crate::error::Error;
use crate::kernel::events::{Event, Events};
use crate::kernel::{self, KernelError};
use rtnetlink::Handle;
use std::future::Future;
use std::path::Path;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};

/// What `run` needs from the configuration; re-read on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSettings {
    pub desired: RealServerDesired,
    /// How often to re-check without an event (catches sysctl and nft drift).
    pub interval: Duration,
    /// Where to serve the drain state (`/health`) for the director's check; off when None.
    pub health_listen: Option<std::net::SocketAddr>,
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
    repairs: u64,
    backoff: Backoff,
    /// When the next pass runs (a tick, a debounced event, or a retry).
    next: Instant,
    /// Where /health is served (fixed at start; a reload cannot move it).
    serving: Option<std::net::SocketAddr>,
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
    let settings = load()?;
    let mut agent_lock = super::AGENT_RUN.hold(state_dir).await?;
    if let Some(addr) = settings.health_listen {
        // For `rs-agent drain` to say where the flag is served.
        agent_lock.note(&addr.to_string());
    }
    // Bind before configuring anything: a taken port is bad input, reported up front.
    let endpoint = match settings.health_listen {
        Some(addr) => Some(
            crate::daemon::endpoint::bind(
                addr,
                "health endpoint",
                "health_listen / --health-listen",
            )
            .await?,
        ),
        None => None,
    };
    let handle = kernel::link::connect().map_err(KernelError::from)?;
    // Subscribe before the first pass, so that no change after it goes unnoticed.
    let events = subscribe();
    let first = reconcile(&handle, &settings.desired, state_dir, Apply::AllOrNothing).await?;
    for w in &first.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(
        changes = first.applied.len(),
        interval_ms = settings.interval.as_millis() as u64,
        "configured; watching for drift"
    );
    let mut lifecycle = Lifecycle::from_env();
    let mut daemon = RealServer {
        load,
        handle,
        state_dir,
        events,
        next: Instant::now() + settings.interval,
        last_pass: Instant::now(),
        serving: settings.health_listen,
        settings: Running::new(settings),
        repairs: 0,
        backoff: Backoff::default(),
        trigger: Trigger::Tick,
        status: String::new(),
        warnings: first.warnings,
    };
    daemon.status = daemon.status_line();
    let _endpoint = endpoint.map(|listener| {
        tracing::info!(listen = ?daemon.serving, "serving the drain state on /health");
        let health = crate::real_server::drain::HealthRoute {
            state_dir: state_dir.to_path_buf(),
        };
        crate::AbortOnDrop(tokio::spawn(crate::daemon::endpoint::serve(
            listener,
            vec![std::sync::Arc::new(health)],
            "health endpoint",
        )))
    });
    if crate::real_server::drain::is_drained(state_dir) {
        tracing::warn!(
            flag = %crate::real_server::drain::flag_path(state_dir).display(),
            "drained: the drain flag is set, /health answers 503 (`rs-agent undrain` clears it)"
        );
    }
    daemon::serve(&mut daemon, &mut lifecycle, &mut reloads, shutdown).await;
    Ok(())
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
            repairs = self.repairs,
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
        match (self.load)() {
            Ok(settings) => {
                if settings.health_listen != self.serving {
                    tracing::warn!(
                        serving = ?self.serving,
                        "SIGHUP: a new health_listen takes effect only after a restart"
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
                // A reload is worth a pass even while backing off: the fix may be in it.
                self.backoff.reset();
                self.soon(Trigger::Reload);
            }
            Err(e) => tracing::error!("SIGHUP: {e}; keeping the previous configuration"),
        }
    }

    /// One pipeline pass; failures are logged and retried with bounded backoff. A pass is a
    /// repair ([`Apply::KeepProgress`]): what it made stays even when a change fails.
    async fn pass(&mut self) {
        let trigger = self.trigger;
        self.trigger = Trigger::Tick;
        let desired = &self.settings.settings().desired;
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
        match failure {
            None => {
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
            self.repairs += report.applied.len() as u64;
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
        if self.settings.refused() {
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
        let repairs = match self.repairs {
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
