//! `director run`: apply, then keep the table right while real servers come and go.
//!
//! Only a scheduler around the one pipeline: a check result that flips a real server's
//! verdict, SIGHUP (new config) or the drift timer each lead to observe → plan → apply of the
//! *effective* services (`health::effective`). Checks run as independent tokio tasks, each with
//! its own jittered timer and timeout, and at most `max_in_flight` at once (`checks`); passes
//! choose how much of the kernel to read (`passes`); VIPs are announced in the background
//! (`announce`).
//!
//! This module owns the loop and the daemon's edges — signals, sd_notify, reload with rollback,
//! each in a small piece of its own. It must not plan, probe or write to the kernel itself.

mod announce;
mod checks;
mod passes;

pub use checks::{check_only, CheckTally};

use super::config::DirectorDesired;
use super::health::{Health, Target};
use super::DirectorReport;
use crate::error::Error;
use crate::kernel::rlimit::coalesce_timers;
use crate::notify::{watchdog_tick, Notifier};
use announce::Announcer;
use checks::{judge_queued, CheckResult, Checks};
use passes::{Pass, Passes};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, Semaphore};

/// Settings of the run loop itself.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// How often the table is re-read and drift repaired, besides health events.
    pub reconcile_interval: Duration,
    /// Checks allowed in flight at once.
    pub max_in_flight: usize,
    /// Take over configured services that exist and are not rs-agent's (`--adopt`).
    pub adopt: bool,
}

/// Applies, then runs until SIGTERM/SIGINT (leaving the director configured). `load` reads the
/// configuration again on SIGHUP; a bad new config is logged and the running one kept.
pub async fn run(
    load: impl Fn() -> Result<DirectorDesired, Error>,
    state_dir: &Path,
    options: RunOptions,
) -> Result<(), Error> {
    coalesce_timers();
    let desired = load()?;
    let _run_lock = super::DIRECTOR_RUN.hold(state_dir).await?;
    // Installed before the first pass (seconds for a large table): a signal's default action
    // would end the process, and systemd counts death by SIGHUP as a clean exit (no restart).
    let mut signals = Signals::install()?;
    let mut director =
        Director::configure(desired, state_dir, options.max_in_flight, options.adopt).await?;
    let mut status = Status::ready(director.summary());
    tracing::info!(summary = %director.summary(), "director configured; checking real servers");
    director.start_checks();
    serve(
        &mut director,
        &mut signals,
        &mut status,
        &load,
        options.reconcile_interval,
    )
    .await;
    status.stopping();
    director.stop();
    tracing::info!("stopping; the director stays configured (`rs-agent director down` removes it)");
    Ok(())
}

/// The loop: waits for the next event and runs the pass it calls for, until SIGTERM/SIGINT.
async fn serve(
    d: &mut Director<'_>,
    signals: &mut Signals,
    status: &mut Status,
    load: &impl Fn() -> Result<DirectorDesired, Error>,
    reconcile_interval: Duration,
) {
    let mut watchdog = Notifier::watchdog_interval().map(tokio::time::interval);
    let mut drift = tokio::time::interval(reconcile_interval);
    drift.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    drift.tick().await;
    let mut announce_retry = tokio::time::interval(Duration::from_secs(1));
    announce_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut pass = None;
        // The configuration a SIGHUP replaced, until the pass that applies the new one worked.
        let mut replaced = None;
        tokio::select! {
            Some(done) = d.rx.recv() => {
                if judge_queued(&done, &mut d.rx, &mut d.health, &d.checks) {
                    pass = Some(Pass::Health);
                }
            }
            _ = signals.hup.recv() => {
                replaced = d.reload(load);
                pass = replaced.is_some().then_some(Pass::Scoped);
            }
            _ = drift.tick() => pass = Some(Pass::Full),
            (vips, result) = d.announcer.end() => d.announcer.ended(vips, result),
            _ = announce_retry.tick(), if d.announcer.idle_with_pending() => {
                d.announcer.start(d.passes.kernel(), &d.desired).await;
            }
            _ = watchdog_tick(&mut watchdog) => status.watchdog(),
            _ = signals.term.recv() => break,
            _ = signals.int.recv() => break,
        }
        if let Some(pass) = pass {
            if d.pass(pass, replaced).await {
                status.show(d.summary());
            }
        }
    }
}

/// The signals `director run` handles: SIGHUP reloads, SIGTERM and SIGINT stop.
struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> Result<Signals, Error> {
        let signal_err =
            |e: std::io::Error| Error::Input(format!("installing signal handlers: {e}"));
        Ok(Signals {
            hup: signal(SignalKind::hangup()).map_err(signal_err)?,
            term: signal(SignalKind::terminate()).map_err(signal_err)?,
            int: signal(SignalKind::interrupt()).map_err(signal_err)?,
        })
    }
}

/// What systemd hears (sd_notify): READY, STATUS when the summary changes, WATCHDOG, STOPPING.
struct Status {
    notifier: Notifier,
    shown: String,
}

impl Status {
    fn ready(summary: String) -> Status {
        let notifier = Notifier::from_env();
        notifier.send("READY=1");
        notifier.send(&format!("STATUS={summary}"));
        Status {
            notifier,
            shown: summary,
        }
    }

    fn show(&mut self, summary: String) {
        if summary != self.shown {
            self.notifier.send(&format!("STATUS={summary}"));
            self.shown = summary;
        }
    }

    fn watchdog(&self) {
        self.notifier.send("WATCHDOG=1");
    }

    fn stopping(&self) {
        self.notifier.send("STOPPING=1");
    }
}

/// What the run loop keeps: the configuration in force, the verdicts, the passes, the check
/// tasks and the announcements.
struct Director<'a> {
    state_dir: &'a Path,
    desired: DirectorDesired,
    health: HashMap<Target, Health>,
    passes: Passes,
    announcer: Announcer,
    checks: Checks,
    slots: Arc<Semaphore>,
    tx: mpsc::Sender<CheckResult>,
    rx: mpsc::Receiver<CheckResult>,
}

impl<'a> Director<'a> {
    /// The first pass (all servers taken as healthy), then the announcement of every VIP.
    async fn configure(
        desired: DirectorDesired,
        state_dir: &'a Path,
        max_in_flight: usize,
        adopt: bool,
    ) -> Result<Director<'a>, Error> {
        let health = HashMap::new();
        let mut passes = Passes::new(adopt);
        let first = passes
            .reconcile(&desired, &health, state_dir, Pass::Full)
            .await?;
        first.warnings.iter().for_each(|w| tracing::warn!("{w}"));
        // As keepalived does on becoming master: announce every VIP at start (the ones the first
        // pass bound included), since a restarted director's neighbours may hold entries from a
        // failover or an older MAC.
        let mut announcer = Announcer::default();
        announcer.every_vip(passes.kernel(), &desired).await;
        let (tx, rx) = mpsc::channel::<CheckResult>(1024);
        Ok(Director {
            state_dir,
            desired,
            health,
            passes,
            announcer,
            checks: Checks::default(),
            slots: Arc::new(Semaphore::new(max_in_flight.max(1))),
            tx,
            rx,
        })
    }

    fn start_checks(&mut self) {
        self.checks.sync(&self.desired, &self.tx, &self.slots);
    }

    /// SIGHUP: the new configuration in force (its checks started), and the one it replaced;
    /// `None` when it does not load (the running one is kept).
    fn reload(
        &mut self,
        load: &impl Fn() -> Result<DirectorDesired, Error>,
    ) -> Option<DirectorDesired> {
        match load() {
            Ok(new) => {
                tracing::info!("SIGHUP: configuration re-read");
                let old = std::mem::replace(&mut self.desired, new);
                self.start_checks();
                Some(old)
            }
            Err(e) => {
                tracing::error!("SIGHUP: keeping the running configuration: {e}");
                None
            }
        }
    }

    /// One pass and what follows it (`replaced`: the configuration a reload replaced). False
    /// when the kernel refused a reloaded configuration and the running one is back.
    async fn pass(&mut self, pass: Pass, replaced: Option<DirectorDesired>) -> bool {
        // An announcement for a VIP the new configuration drops (or on an interface it no
        // longer uses) stops before the pass removes the VIP, not after: a round sent in
        // between would pull the VIP's traffic back from whichever node took it over.
        if replaced.is_some() {
            self.announcer.stop_superseded(&self.desired, false);
        }
        let result = self.reconcile(pass).await;
        match (&result, replaced) {
            (Ok(_), Some(_)) => self.health.retain(|t, _| self.checks.is_checked(t)),
            (Err(e), Some(old)) => {
                self.keep_running(e, old).await;
                return false;
            }
            _ => {}
        }
        log_pass(result);
        self.announcer
            .after_pass(self.passes.kernel(), &self.desired)
            .await;
        true
    }

    /// A config that validates yet the kernel refuses (a scheduler module it lacks, an
    /// address it will not route): rolled back, and kept out like a config with an error —
    /// otherwise every later pass, health flips included, would fail on it.
    async fn keep_running(&mut self, refused: &Error, old: DirectorDesired) {
        tracing::error!(
            "SIGHUP: the kernel refused the new configuration, keeping the running \
             one (fix it, then reload again): {refused}"
        );
        self.desired = old;
        self.start_checks();
        if let Err(e) = self.reconcile(Pass::Full).await {
            tracing::error!("reconcile failed, retrying at the next event: {e}");
        }
    }

    /// A pass of `pass`'s kind; the VIPs it bound are queued for announcing.
    async fn reconcile(&mut self, pass: Pass) -> Result<DirectorReport, Error> {
        let report = self
            .passes
            .reconcile(&self.desired, &self.health, self.state_dir, pass)
            .await?;
        self.announcer.queue(&report.unannounced);
        Ok(report)
    }

    fn summary(&self) -> String {
        summary(&self.desired, &self.health)
    }

    /// At shutdown: the check tasks and the announcement in flight stop.
    fn stop(&mut self) {
        self.checks.abort_all();
        self.announcer.abort();
    }
}

/// One line per warning of a pass, one for what it changed; or why it failed.
fn log_pass(result: Result<DirectorReport, Error>) {
    match result {
        Ok(r) => {
            r.warnings.iter().for_each(|w| tracing::warn!("{w}"));
            if !r.is_empty() {
                tracing::info!(
                    ipvs_changes = r.ipvs.len(),
                    netlink_writes = r.writes,
                    addr_changes = r.addrs.len(),
                    adopted_services = r.adopted.len(),
                    adopted_vips = r.adopted_vips.len(),
                    "reconciled"
                );
            }
        }
        Err(e) => tracing::error!("reconcile failed, retrying at the next event: {e}"),
    }
}

/// A one-line summary for logs and systemd's STATUS=.
fn summary(desired: &DirectorDesired, health: &HashMap<Target, Health>) -> String {
    let reals: usize = desired.services.iter().map(|s| s.reals.len()).sum();
    let down = health.values().filter(|h| !h.up).count();
    format!(
        "{} service(s), {reals} real server(s), {down} down",
        desired.services.len()
    )
}
