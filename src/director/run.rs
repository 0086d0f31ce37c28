//! `director run`: apply, then keep the table right while real servers come and go.
//!
//! Only a scheduler around the one pipeline: a check result that flips a real server's
//! verdict, SIGHUP (new config) or the drift timer each lead to observe → plan → apply of the
//! *effective* services (`health::effective`). Checks run as independent tokio tasks, each with
//! its own jittered timer and timeout, and at most `max_in_flight` at once.

use super::config::DirectorDesired;
use super::health::{self, probe, Health, HealthCheck, Target};
use super::plan::{self, changed_services, Scope};
use crate::error::Error;
use crate::kernel::rlimit::{coalesce_timers, fit_fd_limit};
use crate::notify::{watchdog_tick, Notifier};
use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

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

/// One finished check.
struct CheckResult {
    /// The configuration the check ran under (bumped by each reload): a result still queued
    /// from before a reload is dropped, not counted toward the new settings' rise/fall.
    generation: u64,
    target: Target,
    result: Result<(), String>,
    rise: u32,
    fall: u32,
}

impl CheckResult {
    /// Counts this result toward its server's verdict under `generation` (the configuration
    /// in force); true when the verdict flipped. A result of another generation (queued before
    /// a reload) is dropped: it was judged under settings that no longer apply.
    fn count(&self, health: &mut HashMap<Target, Health>, generation: u64) -> bool {
        self.generation == generation
            && health.entry(self.target.clone()).or_default().record(
                self.result.is_ok(),
                self.rise,
                self.fall,
            )
    }
}

/// A pseudo-random fraction in [0, 1) from the target and the clock: enough to spread timers.
fn jitter_fraction(target: &Target) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    target.hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    (h.finish() % 10_000) as f64 / 10_000.0
}

async fn check_loop(
    generation: u64,
    target: Target,
    check: HealthCheck,
    tx: mpsc::Sender<CheckResult>,
    slots: Arc<Semaphore>,
) {
    // Start at a random point of the interval so checks do not run in lockstep.
    tokio::time::sleep(check.interval.mul_f64(jitter_fraction(&target))).await;
    let mut session = probe::Session::default();
    loop {
        let started = tokio::time::Instant::now();
        let result = match slots.acquire().await {
            // Boxed: a probe's state (buffers, TLS) is kilobytes; held inline it would make
            // every idle check task that big, not only the `max_in_flight` running ones.
            Ok(_permit) => Box::pin(probe::run(&target, &check, &mut session)).await,
            Err(_) => return,
        };
        let message = CheckResult {
            generation,
            target: target.clone(),
            result,
            rise: check.rise,
            fall: check.fall,
        };
        if tx.send(message).await.is_err() {
            return;
        }
        // Up to 5% early, never late, so that servers checked together drift apart and
        // two checks are never more than `interval` apart (detection within interval × fall).
        let next = check.interval - check.interval.mul_f64(0.05 * jitter_fraction(&target));
        tokio::time::sleep_until(started + next).await;
    }
}

/// One running check task and what it was started with.
struct Running {
    check: HealthCheck,
    /// The configuration generation it was started under: its results count only while it is
    /// the task checking its target (a result queued by a task a reload replaced is dropped).
    generation: u64,
    task: tokio::task::AbortHandle,
}

/// The check tasks, one per target. A reload restarts only the targets whose check changed
/// (or that are new) and stops the removed ones: an unchanged target keeps its schedule, its
/// in-flight check and its queued results, so a reload never delays a detection.
#[derive(Default)]
struct Checks {
    set: JoinSet<()>,
    running: HashMap<Target, Running>,
    /// Bumped by each `sync`: the generation the tasks it starts run under.
    generation: u64,
}

impl Checks {
    /// Makes the running tasks match `desired`'s checks; new ones start under a new generation.
    fn sync(
        &mut self,
        desired: &DirectorDesired,
        tx: &mpsc::Sender<CheckResult>,
        slots: &Arc<Semaphore>,
    ) {
        self.generation += 1;
        let generation = self.generation;
        let want: HashMap<Target, HealthCheck> = health::targets(desired).into_iter().collect();
        let kept = want.values().filter(|c| c.keeps_connection()).count();
        if kept > 0 {
            let limit = fit_fd_limit(kept as u64 + FD_HEADROOM);
            if let Some(warning) = fd_shortfall(kept, limit) {
                tracing::warn!("{warning}");
            }
        }
        self.running.retain(|target, r| {
            let keep = want.get(target) == Some(&r.check);
            if !keep {
                r.task.abort();
            }
            keep
        });
        for (target, check) in want {
            if self.running.contains_key(&target) {
                continue;
            }
            let task = self.set.spawn(check_loop(
                generation,
                target.clone(),
                check.clone(),
                tx.clone(),
                slots.clone(),
            ));
            self.running.insert(
                target,
                Running {
                    check,
                    generation,
                    task,
                },
            );
        }
        // Reap the aborted tasks, so that reloads do not pile up finished entries.
        while self.set.try_join_next().is_some() {}
    }

    /// The generation whose results count for `target`; `None` once it is no longer checked.
    fn generation_of(&self, target: &Target) -> Option<u64> {
        self.running.get(target).map(|r| r.generation)
    }

    fn is_checked(&self, target: &Target) -> bool {
        self.running.contains_key(target)
    }

    fn abort_all(&mut self) {
        self.set.abort_all();
        self.running.clear();
    }
}

/// Open files kept free for everything but kept connections: checks in flight (256 by
/// default), netlink sockets, the state file, the log.
const FD_HEADROOM: u64 = 512;

/// The warning when `kept` connections would not fit the open-file `limit`.
fn fd_shortfall(kept: usize, limit: u64) -> Option<String> {
    let needed = kept as u64 + FD_HEADROOM;
    (kept > 0 && needed > limit).then(|| {
        format!(
            "{kept} checks keep a connection open (reuse_connection) but only {limit} files may \
             be open; checks will fail with \"Too many open files\": raise the limit to at least \
             {needed} (LimitNOFILE= in the unit) or turn reuse_connection off"
        )
    })
}

/// Counters of `check_only`.
#[derive(Debug, Default)]
pub struct CheckTally {
    pub ok: Cell<u64>,
    pub failed: Cell<u64>,
    /// Verdict changes (up → down or down → up).
    pub flips: Cell<u64>,
}

impl CheckTally {
    pub fn checks(&self) -> u64 {
        self.ok.get() + self.failed.get()
    }
}

/// The checking half of `director run` alone, with no kernel access: the same check tasks
/// (jitter, `max_in_flight`, timeouts) and the same rise/fall state machine, counted in `tally`
/// until `until` completes. It measures what checking costs where there is no IPVS
/// (examples/check_cost.rs); `run` is this plus a reconcile per verdict change.
pub async fn check_only<T>(
    desired: &DirectorDesired,
    max_in_flight: usize,
    tally: &CheckTally,
    until: impl std::future::Future<Output = T>,
) -> T {
    coalesce_timers();
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let (tx, mut rx) = mpsc::channel::<CheckResult>(1024);
    let mut checks = Checks::default();
    checks.sync(desired, &tx, &slots);
    let mut health: HashMap<Target, Health> = HashMap::new();
    tokio::pin!(until);
    let out = loop {
        tokio::select! {
            Some(done) = rx.recv() => {
                let counter = if done.result.is_ok() { &tally.ok } else { &tally.failed };
                counter.set(counter.get() + 1);
                if checks.generation_of(&done.target).is_some_and(|g| done.count(&mut health, g)) {
                    tally.flips.set(tally.flips.get() + 1);
                }
            }
            out = &mut until => break out,
        }
    };
    checks.abort_all();
    out
}

/// What the daemon keeps between passes.
#[derive(Default)]
struct Passes {
    /// Open handles; a failed pass drops them and the next pass opens new ones.
    kernel: Option<super::Kernel>,
    /// The services as the last successful pass applied them (health included); `None` after
    /// a failure, so that the next pass covers everything.
    applied: Option<DirectorDesired>,
    /// Take over configured services and VIPs someone else made (`--adopt`): at the first
    /// pass only, as the operator asked when starting; one that appears later (a reload that
    /// names it, a colleague's ipvsadm) is left alone with a warning (`skip_unowned`).
    adopt: bool,
    /// A pass has succeeded: later ones leave configured services someone else made alone
    /// (`skip_unowned`) instead of failing; the first one refuses them (exit 2).
    started: bool,
    /// The services the last pass left alone, to warn once when the set changes.
    skipped: Vec<crate::kernel::ipvs::ServiceKey>,
    /// VIPs bound by a pass whose announcement failed (e.g. the interface was down): each
    /// later pass tries again until it succeeds or the VIP is no longer configured.
    unannounced: Vec<std::net::IpAddr>,
    /// Why the last announcement attempt failed, to warn once per cause rather than every
    /// second (no CAP_NET_RAW, interface down); `None` after a success.
    announce_error: Option<String>,
}

/// What started a pass, which decides how much of the kernel it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The first pass, the periodic one and any after a failure: the whole table.
    Full,
    /// SIGHUP: the services that differ from the last pass, dumped and reconciled.
    Scoped,
    /// A health verdict flipped: destination changes are written straight from the last
    /// pass (no dump first); anything else, or a write the kernel refuses, goes `Scoped`.
    Health,
}

impl Passes {
    /// One pass of the pipeline for the services as health makes them (see [`Pass`]): a
    /// health flip costs one netlink write, a one-weight SIGHUP one service's dump and one
    /// write, and the periodic full pass repairs whatever changed behind our back.
    async fn reconcile(
        &mut self,
        desired: &DirectorDesired,
        health: &HashMap<Target, Health>,
        state_dir: &Path,
        pass: Pass,
    ) -> Result<super::DirectorReport, Error> {
        let _lock = super::lock_passes(state_dir).await?;
        let effective = health::effective(desired, health);
        if pass == Pass::Health {
            if let Some(report) = self.direct(&effective, state_dir)? {
                return Ok(report);
            }
        }
        let scope = match (&self.applied, pass) {
            (Some(applied), Pass::Scoped | Pass::Health) => {
                Scope::Only(changed_services(applied, &effective))
            }
            _ => Scope::All,
        };
        let k = match &mut self.kernel {
            Some(k) => k,
            None => self
                .kernel
                .insert(super::Kernel::connect(&effective, false).await?),
        };
        let options = super::UpOptions {
            dry_run: false,
            adopt: self.adopt && !self.started,
            skip_unowned: self.started,
            defer_announce: true,
        };
        match super::reconcile(k, &effective, state_dir, options, &scope).await {
            Ok(report) => {
                if report.skipped != self.skipped && !report.skipped.is_empty() {
                    tracing::warn!("{}", super::skipping_unowned(&report.skipped, state_dir));
                }
                self.skipped.clone_from(&report.skipped);
                let mut applied = effective;
                // Not applied: a health flip must not write to them directly.
                applied
                    .services
                    .retain(|s| !report.skipped.contains(&s.service.key));
                self.applied = Some(applied);
                self.started = true;
                self.unannounced.extend(&report.unannounced);
                Ok(report)
            }
            Err(e) => {
                self.kernel = None;
                self.applied = None;
                Err(e)
            }
        }
    }

    /// Starts announcing the pending VIPs (all of them at start; later the ones a pass bound)
    /// that are bound on the interface, if it is up with a carrier, in a task of its own: its
    /// rounds (up to 10 s in all) run beside check results, reloads and the watchdog. `None`
    /// when there is nothing to send now; VIPs that cannot be sent now stay pending and are
    /// tried again every second.
    async fn start_announcing(&mut self, desired: &DirectorDesired) -> Option<Announcing> {
        let vips = desired.vips();
        self.unannounced.retain(|v| vips.contains(v));
        self.unannounced.sort_unstable();
        self.unannounced.dedup();
        let k = self.kernel.as_ref()?;
        if self.unannounced.is_empty() || desired.garp_count == 0 {
            self.unannounced.clear();
            return None;
        }
        let links = crate::kernel::link::links(&k.handle)
            .await
            .map_err(|e| tracing::debug!("listing links to announce VIPs: {e}"))
            .ok()?;
        // Only what the director serves: a VIP not bound here (someone else's whose DAD
        // failed, or removed meanwhile; a pass that binds it announces it then) is dropped.
        let addrs = crate::kernel::link::addrs(&k.handle, &links)
            .await
            .map_err(|e| tracing::debug!("listing addresses to announce VIPs: {e}"))
            .ok()?;
        self.unannounced = plan::announceable(&self.unannounced, &desired.interface, &addrs);
        if self.unannounced.is_empty() {
            return None;
        }
        let iface = links.into_iter().find(|l| l.name == desired.interface)?;
        let vips = std::mem::take(&mut self.unannounced);
        let (count, interval) = (desired.garp_count, desired.garp_interval);
        let task = tokio::spawn({
            let vips = vips.clone();
            async move { super::announce(&iface, count, interval, &vips).await }
        });
        Some(Announcing {
            vips,
            interface: desired.interface.clone(),
            task,
        })
    }

    /// Takes in how an announcement ended: failed VIPs are pending again, warned about once
    /// per cause (the VIPs are served meanwhile, and it is retried every second).
    fn announced(&mut self, vips: Vec<std::net::IpAddr>, result: Result<u32, String>) {
        match result {
            Ok(sent) => {
                tracing::info!(vips = ?vips, sent, "announced VIP(s)");
                self.announce_error = None;
            }
            Err(e) => {
                if self.announce_error.as_ref() == Some(&e) {
                    tracing::debug!("announcing VIP(s) failed again: {e}");
                } else {
                    tracing::warn!(
                        vips = ?vips,
                        "announcing VIP(s) failed, retrying every second until it succeeds: {e}"
                    );
                    self.announce_error = Some(e);
                }
                self.unannounced.extend(vips);
            }
        }
    }

    /// A health flip as keepalived makes it: the destination ops between the last applied
    /// pass and `effective`, written without reading the kernel first. `None` when this
    /// cannot be done that way (no earlier pass, a service-level difference) or the kernel
    /// refused a write (someone changed the table): the caller then observes and plans.
    fn direct(
        &mut self,
        effective: &DirectorDesired,
        state_dir: &Path,
    ) -> Result<Option<super::DirectorReport>, Error> {
        let (Some(applied), Some(k)) = (&self.applied, self.kernel.as_mut()) else {
            return Ok(None);
        };
        let Some(ops) = plan::dest_ops(applied, effective) else {
            return Ok(None);
        };
        if ops.is_empty() {
            // Nothing the table shows changed (e.g. a flip while the sorry server serves).
            return Ok(Some(super::DirectorReport::default()));
        }
        let writes = k.client.writes();
        if let Err(e) = k.client.apply(&ops) {
            tracing::warn!(
                "writing {} health change(s) directly failed ({e}); reconciling from the kernel's table",
                ops.len()
            );
            return Ok(None);
        }
        for op in &ops {
            tracing::info!(op = %op, "applied");
        }
        let writes = k.client.writes() - writes;
        // The table now shows `effective` whether or not the save works: a stale `applied`
        // would make the reverse flip (a recovery) look like no change at all.
        self.applied = Some(effective.clone());
        super::state::DirectorState::save_desired(state_dir, effective)?;
        Ok(Some(super::DirectorReport {
            ipvs: ops,
            writes,
            ..Default::default()
        }))
    }
}

/// An announcement being sent by its own task.
struct Announcing {
    vips: Vec<std::net::IpAddr>,
    interface: String,
    task: tokio::task::JoinHandle<Result<u32, String>>,
}

impl Announcing {
    /// Whether this announcement must stop: it claims a VIP that is no longer configured (its
    /// later rounds would pull traffic from the node that now holds it) or is sent on an
    /// interface the director no longer uses (both checked before a reload's pass, so that
    /// no round goes out once the VIP is removed), or a pass bound VIPs that are to be
    /// announced at once (`pending`: the new announcement takes this one's VIPs along).
    fn superseded(&self, desired: &DirectorDesired, pending: bool) -> bool {
        let vips = desired.vips();
        pending
            || self.interface != desired.interface
            || self.vips.iter().any(|v| !vips.contains(v))
    }
}

/// Stops the announcement in flight if it is [`Announcing::superseded`]; its VIPs join
/// `unannounced` (the next announcement takes those still configured and bound along).
fn stop_superseded(
    announcing: &mut Option<Announcing>,
    desired: &DirectorDesired,
    pending: bool,
    unannounced: &mut Vec<std::net::IpAddr>,
) {
    if let Some(a) = announcing.take_if(|a| a.superseded(desired, pending)) {
        a.task.abort();
        unannounced.extend(a.vips);
    }
}

/// Resolves when the announcement in flight ends (with its VIPs and outcome); never when none
/// is.
async fn announcement_end(
    announcing: &mut Option<Announcing>,
) -> (Vec<std::net::IpAddr>, Result<u32, String>) {
    let Some(a) = announcing else {
        return std::future::pending().await;
    };
    let result = match (&mut a.task).await {
        Ok(result) => result,
        Err(e) => Err(format!("the announcing task ended: {e}")),
    };
    (std::mem::take(&mut a.vips), result)
}

/// Counts one check result toward its server's verdict (under `generation`, the one of the
/// task now checking that server; `None`: no longer checked) and logs a flip; true when it
/// flipped.
fn judge(
    done: &CheckResult,
    health: &mut HashMap<Target, Health>,
    generation: Option<u64>,
) -> bool {
    if let Err(why) = &done.result {
        tracing::debug!(target_rs = %done.target, why = %why, "check failed");
    }
    let Some(generation) = generation else {
        return false;
    };
    if !done.count(health, generation) {
        return false;
    }
    match &done.result {
        Ok(()) => tracing::info!("{} is UP after {} good check(s)", done.target, done.rise),
        Err(why) => tracing::warn!(
            "{} is DOWN after {} failed check(s): {why}",
            done.target,
            done.fall
        ),
    }
    true
}

/// Judges `first` and every result already queued behind it, so that they count toward one
/// pass: when many servers fail together (a switch dies), one pass takes them all out. True
/// when a verdict flipped.
fn judge_queued(
    first: &CheckResult,
    rx: &mut mpsc::Receiver<CheckResult>,
    health: &mut HashMap<Target, Health>,
    checks: &Checks,
) -> bool {
    let mut flipped = judge(first, health, checks.generation_of(&first.target));
    while let Ok(more) = rx.try_recv() {
        flipped |= judge(&more, health, checks.generation_of(&more.target));
    }
    flipped
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

/// Applies, then runs until SIGTERM/SIGINT (leaving the director configured). `load` reads the
/// configuration again on SIGHUP; a bad new config is logged and the running one kept.
pub async fn run(
    load: impl Fn() -> Result<DirectorDesired, Error>,
    state_dir: &Path,
    options: RunOptions,
) -> Result<(), Error> {
    coalesce_timers();
    let mut desired = load()?;
    let _run_lock = super::DIRECTOR_RUN.hold(state_dir).await?;
    // Installed before the first pass (seconds for a large table): a signal's default action
    // would end the process, and systemd counts death by SIGHUP as a clean exit (no restart).
    let signal_err = |e: std::io::Error| Error::Input(format!("installing signal handlers: {e}"));
    let mut hup = signal(SignalKind::hangup()).map_err(signal_err)?;
    let mut term = signal(SignalKind::terminate()).map_err(signal_err)?;
    let mut int = signal(SignalKind::interrupt()).map_err(signal_err)?;
    let mut health: HashMap<Target, Health> = HashMap::new();
    let mut passes = Passes {
        adopt: options.adopt,
        ..Passes::default()
    };
    let first = passes
        .reconcile(&desired, &health, state_dir, Pass::Full)
        .await?;
    first.warnings.iter().for_each(|w| tracing::warn!("{w}"));
    // As keepalived does on becoming master: announce every VIP at start (the ones the first
    // pass bound included), since a restarted director's neighbours may hold entries from a
    // failover or an older MAC.
    passes.unannounced = desired.vips();
    let mut announcing = passes.start_announcing(&desired).await;
    let notifier = Notifier::from_env();
    let mut status = summary(&desired, &health);
    notifier.send("READY=1");
    notifier.send(&format!("STATUS={status}"));
    let mut watchdog = Notifier::watchdog_interval().map(tokio::time::interval);
    tracing::info!(summary = %summary(&desired, &health), "director configured; checking real servers");

    let slots = Arc::new(Semaphore::new(options.max_in_flight.max(1)));
    let (tx, mut rx) = mpsc::channel::<CheckResult>(1024);
    let mut checks = Checks::default();
    checks.sync(&desired, &tx, &slots);
    let mut drift = tokio::time::interval(options.reconcile_interval);
    drift.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    drift.tick().await;
    let mut announce_retry = tokio::time::interval(Duration::from_secs(1));
    announce_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        let mut pass = None;
        // The configuration a SIGHUP replaced, until the pass that applies the new one worked.
        let mut replaced = None;
        tokio::select! {
            Some(done) = rx.recv() => {
                if judge_queued(&done, &mut rx, &mut health, &checks) {
                    pass = Some(Pass::Health);
                }
            }
            _ = hup.recv() => {
                match load() {
                    Ok(new) => {
                        tracing::info!("SIGHUP: configuration re-read");
                        replaced = Some(std::mem::replace(&mut desired, new));
                        checks.sync(&desired, &tx, &slots);
                        pass = Some(Pass::Scoped);
                    }
                    Err(e) => tracing::error!("SIGHUP: keeping the running configuration: {e}"),
                }
            }
            _ = drift.tick() => pass = Some(Pass::Full),
            (vips, result) = announcement_end(&mut announcing) => {
                announcing = None;
                passes.announced(vips, result);
            }
            _ = announce_retry.tick(), if !passes.unannounced.is_empty() && announcing.is_none() => {
                announcing = passes.start_announcing(&desired).await;
            }
            _ = watchdog_tick(&mut watchdog) => notifier.send("WATCHDOG=1"),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
        if let Some(pass) = pass {
            // An announcement for a VIP the new configuration drops (or on an interface it no
            // longer uses) stops before the pass removes the VIP, not after: a round sent in
            // between would pull the VIP's traffic back from whichever node took it over.
            if replaced.is_some() {
                stop_superseded(&mut announcing, &desired, false, &mut passes.unannounced);
            }
            let result = passes.reconcile(&desired, &health, state_dir, pass).await;
            match (&result, replaced) {
                (Ok(_), Some(_)) => health.retain(|t, _| checks.is_checked(t)),
                // A config that validates yet the kernel refuses (a scheduler module it lacks,
                // an address it will not route): rolled back, and kept out like a config with
                // an error — otherwise every later pass, health flips included, would fail on it.
                (Err(e), Some(old)) => {
                    tracing::error!(
                        "SIGHUP: the kernel refused the new configuration, keeping the running \
                         one (fix it, then reload again): {e}"
                    );
                    desired = old;
                    checks.sync(&desired, &tx, &slots);
                    if let Err(e) = passes
                        .reconcile(&desired, &health, state_dir, Pass::Full)
                        .await
                    {
                        tracing::error!("reconcile failed, retrying at the next event: {e}");
                    }
                    continue;
                }
                _ => {}
            }
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
            // VIPs the pass bound are announced now, not at the next retry tick or after the
            // announcement in flight; one for a VIP no longer configured stops.
            let pending = !passes.unannounced.is_empty();
            stop_superseded(&mut announcing, &desired, pending, &mut passes.unannounced);
            if announcing.is_none() && !passes.unannounced.is_empty() {
                announcing = passes.start_announcing(&desired).await;
            }
            let now = summary(&desired, &health);
            if now != status {
                notifier.send(&format!("STATUS={now}"));
                status = now;
            }
        }
    }
    notifier.send("STOPPING=1");
    checks.abort_all();
    if let Some(a) = announcing {
        a.task.abort();
    }
    tracing::info!("stopping; the director stays configured (`rs-agent director down` removes it)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::ipvs::{Protocol, ServiceKey};

    #[test]
    fn kept_connections_beyond_the_file_limit_are_warned_about() {
        assert_eq!(fd_shortfall(0, 64), None);
        assert_eq!(fd_shortfall(2000, 524_288), None);
        let w = fd_shortfall(2000, 1024).expect("2,000 kept connections do not fit 1,024");
        assert!(
            w.contains("2000 checks keep a connection open")
                && w.contains("only 1024 files")
                && w.contains("at least 2512 (LimitNOFILE= in the unit)"),
            "{w}"
        );
    }

    fn failed(generation: u64, fall: u32) -> CheckResult {
        CheckResult {
            generation,
            target: Target {
                service: ServiceKey::Addr {
                    protocol: Protocol::Tcp,
                    addr: [192, 0, 2, 100].into(),
                    port: 80,
                },
                addr: [198, 51, 100, 2].into(),
                port: 80,
            },
            result: Err("connection refused".into()),
            rise: 2,
            fall,
        }
    }

    /// After a reload (generation 1) failures still queued from before it (generation 0) do
    /// not count toward the new settings' fall: only the new generation's results flip.
    #[test]
    fn results_from_before_a_reload_are_not_counted() {
        let mut health = HashMap::new();
        for _ in 0..5 {
            assert!(!failed(0, 2).count(&mut health, 1));
        }
        assert!(
            health.values().all(|h| h.up),
            "stale results changed a verdict"
        );
        assert!(!failed(1, 2).count(&mut health, 1));
        assert!(
            failed(1, 2).count(&mut health, 1),
            "fall = 2 failures must flip"
        );
        assert!(health.values().all(|h| !h.up));
    }

    /// Two services with an hour-long TCP check (the tasks only sleep), port 81's rise as given.
    fn two_checked_services(rise_81: u32, with_81: bool) -> DirectorDesired {
        let service = |port: u32, rise: u32| {
            format!(
                "[[director.service]]\nvip = \"192.0.2.100\"\nport = {port}\nscheduler = \"rr\"\n\
                 reals = [\"198.51.100.2\", \"198.51.100.3\"]\n\
                 [director.service.check]\ntype = \"tcp\"\ninterval_ms = 3600000\nrise = {rise}\n"
            )
        };
        let mut text = "[director]\ninterface = \"eth0\"\n".to_string() + &service(80, 2);
        if with_81 {
            text += &service(81, rise_81);
        }
        let file = crate::config_file::ConfigFile::parse(None, text).expect("parses");
        crate::director::config::director(&file, &Default::default()).expect("validates")
    }

    /// A reload restarts only the checks that changed: an unchanged target keeps its task
    /// (and the generation its results count under), a changed one gets a new task, a
    /// removed one is no longer checked (its queued results are dropped).
    #[tokio::test(flavor = "current_thread")]
    async fn a_reload_restarts_only_the_checks_that_changed() {
        let slots = Arc::new(Semaphore::new(4));
        let (tx, _rx) = mpsc::channel::<CheckResult>(16);
        let mut checks = Checks::default();
        checks.sync(&two_checked_services(2, true), &tx, &slots);
        assert_eq!(checks.running.len(), 4);
        let on = |port: u16| Target {
            service: ServiceKey::Addr {
                protocol: Protocol::Tcp,
                addr: [192, 0, 2, 100].into(),
                port,
            },
            addr: [198, 51, 100, 2].into(),
            port,
        };
        let first = checks.generation_of(&on(80)).expect("checked");
        checks.sync(&two_checked_services(3, true), &tx, &slots);
        assert_eq!(
            checks.generation_of(&on(80)),
            Some(first),
            "unchanged: kept"
        );
        assert_eq!(
            checks.generation_of(&on(81)),
            Some(first + 1),
            "rise changed: restarted"
        );
        assert_eq!(checks.running.len(), 4);
        checks.sync(&two_checked_services(3, false), &tx, &slots);
        assert_eq!(checks.generation_of(&on(80)), Some(first));
        assert_eq!(checks.generation_of(&on(81)), None, "removed: not checked");
        assert_eq!(checks.running.len(), 2);
        checks.abort_all();
    }

    /// An announcement in flight stops when a pass bound VIPs to announce (it is restarted
    /// with them), when it claims a VIP no longer configured, or when the interface changed.
    #[tokio::test(flavor = "current_thread")]
    async fn an_announcement_stops_when_its_vips_or_interface_change() {
        let desired = two_checked_services(2, false);
        let vip: std::net::IpAddr = [192, 0, 2, 100].into();
        let other: std::net::IpAddr = [192, 0, 2, 101].into();
        let announcing = |vips: Vec<std::net::IpAddr>, interface: &str| Announcing {
            vips,
            interface: interface.to_string(),
            task: tokio::spawn(async { Ok(0) }),
        };
        assert!(!announcing(vec![vip], "eth0").superseded(&desired, false));
        assert!(announcing(vec![vip], "eth0").superseded(&desired, true));
        assert!(announcing(vec![vip, other], "eth0").superseded(&desired, false));
        assert!(announcing(vec![vip], "eth1").superseded(&desired, false));
    }

    /// Four servers fail together (fall = 2, both failures of each already queued): the
    /// results are judged at once, so one health pass takes all four out.
    #[tokio::test(flavor = "current_thread")]
    async fn results_queued_together_count_toward_one_pass() {
        let slots = Arc::new(Semaphore::new(4));
        let (tx, mut rx) = mpsc::channel::<CheckResult>(16);
        let desired = two_checked_services(2, true);
        let mut checks = Checks::default();
        checks.sync(&desired, &tx, &slots);
        let targets: Vec<Target> = checks.running.keys().cloned().collect();
        assert_eq!(targets.len(), 4);
        for target in targets.iter().chain(&targets) {
            let generation = checks.generation_of(target).expect("checked");
            let result = CheckResult {
                target: target.clone(),
                ..failed(generation, 2)
            };
            tx.try_send(result).expect("room in the channel");
        }
        let mut health = HashMap::new();
        let first = rx.recv().await.expect("queued");
        assert!(judge_queued(&first, &mut rx, &mut health, &checks));
        assert!(rx.try_recv().is_err(), "results left for another pass");
        let down = targets
            .iter()
            .filter(|t| health.get(*t).is_some_and(|h| !h.up));
        assert_eq!(down.count(), 4, "{health:?}");
        checks.abort_all();
    }
}
