//! `director run`: apply, then keep the table right while real servers come and go.
//!
//! Only a scheduler around the one pipeline: a check result that flips a real server's
//! verdict, SIGHUP (new config) or the drift timer each lead to observe → plan → apply of the
//! *effective* services (`health::effective`). Checks run as independent tokio tasks, each with
//! its own jittered timer and timeout, and at most `max_in_flight` at once (`checks`); passes
//! choose how much of the kernel to read (`passes`); VIPs are announced in the background
//! (`announce`).
//!
//! The loop, the signals, sd_notify and the rollback of a refused reload are the daemon
//! skeleton's ([`crate::daemon`]): the director is a [`daemon::Daemon`] whose wake-ups are
//! check results, the drift timer and the announcements. This module says which pass each
//! calls for and what it logs; it must not plan, probe or write to the kernel itself.

mod announce;
mod checks;
mod metrics;
mod passes;
mod scripts;
mod telemetry;

pub use checks::{check_only, CheckTally};

use super::config::DirectorDesired;
use super::health::{Health, Quorums, Target};
pub use super::model::MetricsOptions;
use super::DirectorReport;
use crate::daemon::{self, endpoint, Attempt, Lifecycle, Reloaded, Reloads, Running};
use crate::error::Error;
use crate::kernel::rlimit::coalesce_timers;
use announce::Announcer;
use checks::{judge_queued, CheckResult, Checks, Judged};
use passes::{Pass, Passes};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use telemetry::{Shared, Telemetry};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{Interval, MissedTickBehavior};

/// Settings of the run loop itself.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// How often the table is re-read and drift repaired, besides health events.
    pub reconcile_interval: Duration,
    /// Checks allowed in flight at once.
    pub max_in_flight: usize,
    /// Take over configured services that exist and are not rs-agent's (`--adopt`).
    pub adopt: bool,
    /// Where to serve `/metrics`, if anywhere.
    pub metrics: Option<MetricsOptions>,
}

/// Applies, then runs until `shutdown` completes (SIGTERM/SIGINT, from
/// [`daemon::signals::install`], as `reloads` are SIGHUPs), which leaves the director
/// configured. `load` reads the configuration again at each reload; a bad new config is
/// logged and the running one kept.
pub async fn run(
    load: impl Fn() -> Result<DirectorDesired, Error>,
    state_dir: &Path,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
    mut reloads: Reloads,
) -> Result<(), Error> {
    coalesce_timers();
    let desired = load()?;
    let _run_lock = super::DIRECTOR_RUN.hold(state_dir).await?;
    // The verdicts a previous run left are not this run's: `director status` must not show
    // them (a reused pid would pass for ours) until this run writes its own.
    crate::state_dir::write_atomic(state_dir, crate::state_dir::DIRECTOR_HEALTH, None)?;
    // Bound before configuring anything: a taken port is bad input, reported up front.
    let listener = match options.metrics {
        Some(m) => Some(
            endpoint::bind(
                m.listen,
                "metrics endpoint",
                "metrics_listen / --metrics-listen",
            )
            .await?,
        ),
        None => None,
    };
    let mut director = Director::configure(load, desired, state_dir, &options).await?;
    tracing::info!(summary = %director.status, "director configured; checking real servers");
    let _metrics = listener.zip(options.metrics).map(|(listener, m)| {
        tracing::info!(listen = %m.listen, "serving metrics on /metrics");
        let route = metrics::MetricsRoute::new(
            director.engine.telemetry.clone(),
            state_dir.to_path_buf(),
            m.per_real_server,
        );
        crate::AbortOnDrop(tokio::spawn(endpoint::serve(
            listener,
            vec![Arc::new(route)],
            "metrics endpoint",
        )))
    });
    director.engine.save_view();
    director.start_checks();
    let mut lifecycle = Lifecycle::from_env();
    daemon::serve(&mut director, &mut lifecycle, &mut reloads, shutdown).await;
    Ok(())
}

/// Why the director woke, besides signals and the watchdog.
enum Wake {
    /// A check finished (more may be queued behind it).
    Checked(CheckResult),
    /// The periodic full pass is due.
    Drift,
    /// The announcement in flight ended: its VIPs and how.
    Announced(Vec<IpAddr>, Result<u32, String>),
    /// VIPs wait to be announced and none is in flight: try again.
    AnnounceRetry,
}

/// The daemon: the configuration in force, what runs under it, and its timers.
struct Director<'a, L> {
    load: L,
    /// The configuration in force, and the one a reload replaced while its pass runs.
    desired: Running<DirectorDesired>,
    engine: Engine<'a>,
    /// The periodic full pass.
    drift: Interval,
    /// The retry of VIPs whose announcement could not be sent.
    announce_retry: Interval,
    /// The summary as of the last pass, for systemd's STATUS=.
    status: String,
}

/// What runs under the configuration in force (which each method is handed): the verdicts,
/// the passes, the check tasks and the announcements.
struct Engine<'a> {
    state_dir: &'a Path,
    health: HashMap<Target, Health>,
    /// The quorum state of every checked service.
    quorums: Quorums,
    /// The notify commands running.
    scripts: scripts::Scripts,
    passes: Passes,
    announcer: Announcer,
    checks: Checks,
    slots: Arc<Semaphore>,
    tx: mpsc::Sender<CheckResult>,
    rx: mpsc::Receiver<CheckResult>,
    /// What the metrics and `director status` read.
    telemetry: Shared,
    /// When the view for `director status` was last written.
    view_saved: std::time::Instant,
}

/// How often, at most, the view is written for changes that flip nothing.
const VIEW_REFRESH: Duration = Duration::from_secs(1);

impl<'a, L: Fn() -> Result<DirectorDesired, Error>> Director<'a, L> {
    /// The first pass (all servers taken as healthy), then the announcement of every VIP.
    async fn configure(
        load: L,
        desired: DirectorDesired,
        state_dir: &'a Path,
        options: &RunOptions,
    ) -> Result<Director<'a, L>, Error> {
        let health = HashMap::new();
        let mut passes = Passes::new(options.adopt);
        // Made before the first pass, which it counts (and the start time is the start's).
        let telemetry = Shared::new(Telemetry::new(desired.clone()));
        let started = std::time::Instant::now();
        let first = passes
            .reconcile(
                &desired,
                (&health, &Quorums::default()),
                state_dir,
                Pass::Full,
            )
            .await;
        let writes = first.as_ref().ok().map(|r| r.writes);
        telemetry
            .lock()
            .passed(Pass::Full, started.elapsed(), writes);
        let first = first?;
        first.warnings.iter().for_each(|w| tracing::warn!("{w}"));
        // As keepalived does on becoming master: announce every VIP at start (the ones the first
        // pass bound included), since a restarted director's neighbours may hold entries from a
        // failover or an older MAC.
        let mut announcer = Announcer::default();
        announcer.every_vip(passes.kernel(), &desired).await;
        Ok(Director::new(
            load, desired, state_dir, passes, announcer, options, telemetry,
        ))
    }

    /// After the first pass (`passes`) and the start of the announcement (`announcer`).
    fn new(
        load: L,
        desired: DirectorDesired,
        state_dir: &'a Path,
        passes: Passes,
        announcer: Announcer,
        options: &RunOptions,
        telemetry: Shared,
    ) -> Director<'a, L> {
        let (tx, rx) = mpsc::channel::<CheckResult>(1024);
        let health = HashMap::new();
        // As they start: no change, so no quorum_up / quorum_down.
        let mut quorums = Quorums::default();
        quorums.update(&desired, &health);
        telemetry.lock().board_mut().quorums = quorums.clone();
        let engine = Engine {
            state_dir,
            health,
            quorums,
            scripts: Default::default(),
            passes,
            announcer,
            checks: Checks::default(),
            slots: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
            tx,
            rx,
            telemetry,
            view_saved: std::time::Instant::now(),
        };
        let period = options.reconcile_interval;
        let mut drift = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        drift.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut announce_retry = tokio::time::interval(Duration::from_secs(1));
        announce_retry.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let status = summary(&desired, &engine.health);
        Director {
            load,
            desired: Running::new(desired),
            engine,
            drift,
            announce_retry,
            status,
        }
    }

    fn start_checks(&mut self) {
        self.engine.start_checks(self.desired.settings());
    }

    /// A pass of `pass`'s kind under the configuration in force, and what follows it.
    async fn pass(&mut self, pass: Pass) {
        let desired = self.desired.settings();
        let result = self.engine.reconcile(desired, pass).await;
        self.engine.after_pass(desired, result).await;
        self.status = summary(desired, &self.engine.health);
    }
}

impl<L: Fn() -> Result<DirectorDesired, Error>> daemon::Daemon for Director<'_, L> {
    type Wake = Wake;

    /// Cancel-safe, as `serve` needs: a channel, two intervals and a join handle polled by
    /// reference.
    async fn wake(&mut self) -> Wake {
        let announcer = &mut self.engine.announcer;
        tokio::select! {
            Some(done) = self.engine.rx.recv() => Wake::Checked(done),
            _ = self.drift.tick() => Wake::Drift,
            (vips, result) = announcer.end() => Wake::Announced(vips, result),
            _ = self.announce_retry.tick(), if announcer.idle_with_pending() => Wake::AnnounceRetry,
        }
    }

    async fn handle(&mut self, wake: Wake) {
        let engine = &mut self.engine;
        match wake {
            Wake::Checked(done) => {
                let judged = {
                    let mut telemetry = engine.telemetry.lock();
                    let board = telemetry.board_mut();
                    judge_queued(
                        &done,
                        &mut engine.rx,
                        &mut engine.health,
                        &engine.checks,
                        board,
                    )
                };
                if judged.changed() {
                    engine.verdicts_changed(self.desired.settings(), &judged);
                    self.pass(Pass::Health).await;
                    self.engine.save_view();
                } else if engine.view_saved.elapsed() >= VIEW_REFRESH
                    && engine.telemetry.lock().board.view_stale
                {
                    // A down server's run of failures, or a new reason: at most once a
                    // second, so that status's "N checks in a row" stays current.
                    engine.save_view();
                }
            }
            Wake::Drift => self.pass(Pass::Full).await,
            Wake::Announced(vips, result) => {
                if let Ok(sent) = &result {
                    engine.telemetry.lock().announcements += u64::from(*sent);
                }
                engine.announcer.ended(vips, result)
            }
            Wake::AnnounceRetry => {
                let desired = self.desired.settings();
                engine
                    .announcer
                    .start(engine.passes.kernel(), desired)
                    .await;
            }
        }
    }

    /// SIGHUP: the new configuration in force at once (its checks started, a scoped pass);
    /// one that does not load is logged and the running one kept, and one the kernel refuses
    /// although it validates (a scheduler module it lacks, an address it will not route) is
    /// rolled back like one with an error — otherwise every later pass, health flips
    /// included, would fail on it.
    async fn reload(&mut self) {
        let new = match (self.load)() {
            Ok(new) => new,
            Err(e) => {
                let mut telemetry = self.engine.telemetry.lock();
                telemetry.reloads_refused += 1;
                telemetry.last_reload = Some(std::time::SystemTime::now());
                return tracing::error!("SIGHUP: keeping the running configuration: {e}");
            }
        };
        tracing::info!("SIGHUP: configuration re-read");
        let engine = &mut self.engine;
        engine.telemetry.lock().last_reload = Some(std::time::SystemTime::now());
        // `true`: a refused configuration always goes back to the running one, as one that
        // does not load does, even while the running one's passes fail.
        let reloaded = self
            .desired
            .apply(new, true, async |desired, attempt| match attempt {
                Attempt::New => engine.reload_pass(desired).await,
                Attempt::Back => engine.back_pass(desired).await,
            })
            .await;
        let desired = self.desired.settings();
        match reloaded {
            Reloaded::Applied(report) => {
                engine.health.retain(|t, _| engine.checks.is_checked(t));
                engine.reloaded(desired, true);
                engine.after_pass(desired, Ok(report)).await;
            }
            Reloaded::WentBack { refused, again } => {
                engine.reloaded(desired, false);
                tracing::error!(
                    "SIGHUP: the kernel refused the new configuration, keeping the running \
                     one (fix it, then reload again): {refused}"
                );
                if let Err(e) = again {
                    tracing::error!("reconcile failed, retrying at the next event: {e}");
                }
                return;
            }
            // Not with `worked` true; a failed pass like any other, retried at the next event.
            Reloaded::Failed(e) => {
                engine.reloaded(desired, true);
                engine.after_pass(desired, Err(e)).await
            }
        }
        self.status = summary(desired, &engine.health);
    }

    fn status(&self) -> String {
        self.status.clone()
    }

    fn stopping(&mut self) {
        self.engine.checks.abort_all();
        self.engine.scripts.abort_all();
        self.engine.announcer.abort();
        tracing::info!(
            "stopping; the director stays configured (`rs-agent director down` removes it)"
        );
    }
}

impl Engine<'_> {
    /// Makes the check tasks match `desired`'s checks.
    fn start_checks(&mut self, desired: &DirectorDesired) {
        self.checks.sync(desired, &self.tx, &self.slots);
    }

    /// A pass of `pass`'s kind for `desired`, counted; the VIPs it bound are queued for
    /// announcing.
    async fn reconcile(
        &mut self,
        desired: &DirectorDesired,
        pass: Pass,
    ) -> Result<DirectorReport, Error> {
        let started = std::time::Instant::now();
        let verdicts = (&self.health, &self.quorums);
        let result = self
            .passes
            .reconcile(desired, verdicts, self.state_dir, pass)
            .await;
        let writes = result.as_ref().ok().map(|r| r.writes);
        self.telemetry
            .lock()
            .passed(pass, started.elapsed(), writes);
        let report = result?;
        self.announcer.queue(&report.unannounced);
        Ok(report)
    }

    /// Counts a reload (`accepted`: the new configuration is in force) and what is in force.
    fn reloaded(&mut self, desired: &DirectorDesired, accepted: bool) {
        let checks = &self.checks;
        {
            let mut telemetry = self.telemetry.lock();
            match accepted {
                true => telemetry.reloads_accepted += 1,
                false => telemetry.reloads_refused += 1,
            }
            telemetry.configured = Arc::new(desired.clone());
            telemetry.board_mut().retain(|t| checks.is_checked(t));
        }
        self.save_view();
    }

    /// After verdicts changed (`judged`; or the configuration): the notify commands of the
    /// flips, the services' next quorum states and their commands, and the board's copy.
    fn verdicts_changed(&mut self, desired: &DirectorDesired, judged: &Judged) {
        let (health, quorums) = (&self.health, &mut self.quorums);
        checks::notify(desired, judged, health, quorums, &mut self.scripts);
        self.telemetry.lock().board_mut().quorums = self.quorums.clone();
    }

    /// Writes the verdicts for `director status` (a failure is logged: status then shows
    /// the last view written, or none).
    fn save_view(&mut self) {
        self.view_saved = std::time::Instant::now();
        let view = {
            let mut telemetry = self.telemetry.lock();
            telemetry.board_mut().view_stale = false;
            telemetry.board.view()
        };
        if let Err(e) = view.save(self.state_dir) {
            tracing::warn!("{e}; `director status` will not show the current health verdicts");
        }
    }

    /// The pass for a reload's configuration: its checks start, and an announcement for a
    /// VIP it drops (or on an interface it no longer uses) stops before the pass removes the
    /// VIP, not after: a round sent in between would pull the VIP's traffic back from
    /// whichever node took it over.
    async fn reload_pass(&mut self, desired: &DirectorDesired) -> Result<DirectorReport, Error> {
        self.start_checks(desired);
        // A changed quorum (or a new service) may change the state before the pass applies it.
        self.verdicts_changed(desired, &Judged::default());
        self.announcer.stop_superseded(desired, false);
        self.reconcile(desired, Pass::Scoped).await
    }

    /// The pass for the running configuration after the kernel refused a reload's: its
    /// checks again, and the whole table, to undo whatever the refused pass made.
    async fn back_pass(&mut self, desired: &DirectorDesired) -> Result<DirectorReport, Error> {
        self.start_checks(desired);
        self.verdicts_changed(desired, &Judged::default());
        self.reconcile(desired, Pass::Full).await
    }

    /// Logs a pass's outcome; the VIPs it bound are announced now.
    async fn after_pass(
        &mut self,
        desired: &DirectorDesired,
        result: Result<DirectorReport, Error>,
    ) {
        log_pass(result);
        self.announcer
            .after_pass(self.passes.kernel(), desired)
            .await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::notify::{monotonic_usec, FakeSystemd};
    use checks::tests::two_checked_services;
    use tokio::sync::oneshot;

    /// Generous: only a broken loop waits this long.
    const BOUND: Duration = Duration::from_secs(30);

    /// Without a kernel: the director serves (a reload whose configuration does not load
    /// keeps the running one, and still ends with READY=1) until its shutdown future
    /// completes, then stops its checks and tells systemd. No pass runs: the drift timer is
    /// an hour, and so are the checks.
    #[test]
    fn the_shutdown_future_stops_the_director() {
        let systemd = FakeSystemd::new("dnotify");
        let mut lifecycle = systemd.lifecycle();
        let options = RunOptions {
            reconcile_interval: Duration::from_secs(3600),
            max_in_flight: 4,
            adopt: false,
            metrics: None,
        };
        let desired = two_checked_services(2, true);
        let target = crate::director::health::targets(&desired)
            .into_iter()
            .map(|(target, _)| target)
            .next()
            .expect("a checked real server");
        let (loaded_tx, mut loaded) = mpsc::unbounded_channel();
        let load = move || {
            let _ = loaded_tx.send(());
            Err(Error::Input(
                "config.toml:1:1: not a valid configuration".into(),
            ))
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let before = monotonic_usec().expect("CLOCK_MONOTONIC");
        runtime.block_on(async {
            let passes = Passes::new(false);
            let state_dir = Path::new("/nonexistent");
            let mut director = Director::new(
                load,
                desired.clone(),
                state_dir,
                passes,
                Announcer::default(),
                &options,
                Shared::new(Telemetry::new(desired.clone())),
            );
            director.start_checks();
            assert!(director.engine.checks.is_checked(&target));
            let (reload_tx, mut reloads) = Reloads::channel();
            let (stop_tx, stop) = oneshot::channel::<()>();
            let shutdown = async {
                let _ = stop.await;
            };
            let served = daemon::serve(&mut director, &mut lifecycle, &mut reloads, shutdown);
            let driver = async {
                reload_tx.send(()).expect("the director listens");
                loaded
                    .recv()
                    .await
                    .expect("the reload read the configuration");
                stop_tx
                    .send(())
                    .expect("the director waits for its shutdown");
            };
            tokio::time::timeout(BOUND, async { tokio::join!(served, driver) })
                .await
                .expect("the director stopped when its shutdown future completed");
            assert!(
                !director.engine.checks.is_checked(&target),
                "checks stopped"
            );
            assert_eq!(*director.desired.settings(), desired, "running config kept");
        });
        let after = monotonic_usec().expect("CLOCK_MONOTONIC");
        // The refused reload between RELOADING=1 (with the time) and READY=1, or systemd would
        // wait for its end; its status line is the running one's, so no STATUS= follows.
        assert_eq!(
            systemd.heard_in(before..=after),
            [
                "READY=1".to_string(),
                "STATUS=2 service(s), 4 real server(s), 0 down".to_string(),
                FakeSystemd::reloading(),
                "READY=1".to_string(),
                "STOPPING=1".to_string(),
            ]
        );
    }
}
