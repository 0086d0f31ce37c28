//! The checking half of `director run`: one tokio task per real server, each with its own
//! jittered timer and timeout, at most `max_in_flight` probes at once, and the rise/fall
//! counting that turns their results into verdicts.
//!
//! Owns the check tasks, their generations across reloads and the judging of results. It
//! must not touch IPVS or the state file (a flipped verdict is the caller's cue for a pass)
//! nor decide what a probe does (that is `health::probe`).

use super::scripts::{self, Scripts};
use crate::director::config::DirectorDesired;
use crate::director::health::probe::{self, ProbeError};
use crate::director::health::quorum::Change;
use crate::director::health::{self, Board, Health, HealthCheck, Quorums, Target};
use crate::kernel::rlimit::{coalesce_timers, fit_fd_limit};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

/// One finished check.
pub(super) struct CheckResult {
    /// The configuration the check ran under (bumped by each reload): a result still queued
    /// from before a reload is dropped, not counted toward the new settings' rise/fall.
    generation: u64,
    target: Target,
    result: Result<(), ProbeError>,
    /// How long the probe took (not counting the wait for a slot).
    took: std::time::Duration,
    rise: u32,
    fall: u32,
    /// The server starts down (`alpha`) when this is the first result counted for it.
    alpha: bool,
    /// The weight the check reported (misc_dynamic), if any.
    weight: Option<u32>,
}

impl CheckResult {
    /// Counts this result toward its server's verdict under `generation` (the configuration
    /// in force): the health after it, whether the verdict flipped and whether the weight
    /// changed. A result of another generation (queued before a reload) is dropped (`None`):
    /// it was judged under settings that no longer apply.
    fn count(
        &self,
        health: &mut HashMap<Target, Health>,
        generation: u64,
    ) -> Option<(Health, bool, bool)> {
        if self.generation != generation {
            return None;
        }
        let h = health
            .entry(self.target.clone())
            .or_insert_with(|| Health::start(self.alpha));
        let flipped = h.record(self.result.is_ok(), self.rise, self.fall);
        let reweighed = self.result.is_ok() && h.reweigh(self.weight);
        Some((*h, flipped, reweighed))
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
        let (result, took) = match slots.acquire().await {
            Ok(_permit) => {
                let probing = tokio::time::Instant::now();
                // Boxed: a probe's state (buffers, TLS) is kilobytes; held inline it would
                // make every idle check task that big, not only the `max_in_flight` running
                // ones.
                let result = Box::pin(probe::check(&target, &check, &mut session)).await;
                (result, probing.elapsed())
            }
            Err(_) => return,
        };
        let message = CheckResult {
            generation,
            target: target.clone(),
            result,
            took,
            rise: check.rise,
            fall: check.fall,
            alpha: check.alpha,
            weight: session.take_weight(),
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
pub(super) struct Checks {
    set: JoinSet<()>,
    running: HashMap<Target, Running>,
    /// Bumped by each `sync`: the generation the tasks it starts run under.
    generation: u64,
}

impl Checks {
    /// Makes the running tasks match `desired`'s checks; new ones start under a new generation.
    pub(super) fn sync(
        &mut self,
        desired: &DirectorDesired,
        tx: &mpsc::Sender<CheckResult>,
        slots: &Arc<Semaphore>,
    ) {
        self.generation += 1;
        let generation = self.generation;
        let want: HashMap<Target, HealthCheck> = health::targets(desired).into_iter().collect();
        fit_kept_connections(&want);
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
    pub(super) fn generation_of(&self, target: &Target) -> Option<u64> {
        self.running.get(target).map(|r| r.generation)
    }

    pub(super) fn is_checked(&self, target: &Target) -> bool {
        self.running.contains_key(target)
    }

    pub(super) fn abort_all(&mut self) {
        self.set.abort_all();
        self.running.clear();
    }
}

/// Open files kept free for everything but kept connections: checks in flight (256 by
/// default), netlink sockets, the state file, the log.
const FD_HEADROOM: u64 = 512;

/// Raises the open-file limit for the checks that keep a connection open between checks
/// (`reuse_connection`), with a warning when it cannot go high enough.
fn fit_kept_connections(want: &HashMap<Target, HealthCheck>) {
    let kept = want.values().filter(|c| c.keeps_connection()).count();
    if kept > 0 {
        let limit = fit_fd_limit(kept as u64 + FD_HEADROOM);
        if let Some(warning) = fd_shortfall(kept, limit) {
            tracing::warn!("{warning}");
        }
    }
}

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

/// What the results judged together changed: the verdicts that flipped (to up: true), and
/// whether a `misc_dynamic` weight changed.
#[derive(Debug, Default)]
pub(super) struct Judged {
    pub flips: Vec<(Target, bool)>,
    pub reweighed: bool,
}

impl Judged {
    /// The table may have to change: a pass is due.
    pub fn changed(&self) -> bool {
        !self.flips.is_empty() || self.reweighed
    }
}

/// Counts one check result toward its server's verdict (under `generation`, the one of the
/// task now checking that server; `None`: no longer checked) and onto its `board` record,
/// and logs a flip or a new weight into `judged`.
fn judge(
    done: &CheckResult,
    health: &mut HashMap<Target, Health>,
    generation: Option<u64>,
    board: &mut Board,
    judged: &mut Judged,
) {
    if let Err(why) = &done.result {
        tracing::debug!(target_rs = %done.target, why = %why, "check failed");
    }
    let Some((now, flipped, reweighed)) = generation.and_then(|g| done.count(health, g)) else {
        return;
    };
    board.note(&done.target, &done.result, done.took, (now, flipped));
    if reweighed {
        let weight = now.weight.unwrap_or_default();
        tracing::info!("{} has weight {weight} (misc_dynamic)", done.target);
        judged.reweighed = true;
    }
    if !flipped {
        return;
    }
    match &done.result {
        Ok(()) => tracing::info!("{} is UP after {} good check(s)", done.target, done.rise),
        Err(why) => tracing::warn!(
            "{} is DOWN after {} failed check(s): {why}",
            done.target,
            done.fall
        ),
    }
    judged.flips.push((done.target.clone(), now.up));
}

/// Judges `first` and every result already queued behind it, so that they count toward one
/// pass: when many servers fail together (a switch dies), one pass takes them all out.
pub(super) fn judge_queued(
    first: &CheckResult,
    rx: &mut mpsc::Receiver<CheckResult>,
    health: &mut HashMap<Target, Health>,
    checks: &Checks,
    board: &mut Board,
) -> Judged {
    let mut judged = Judged::default();
    let generation = checks.generation_of(&first.target);
    judge(first, health, generation, board, &mut judged);
    while let Ok(more) = rx.try_recv() {
        let generation = checks.generation_of(&more.target);
        judge(&more, health, generation, board, &mut judged);
    }
    judged
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
    // Kept as `run` keeps them (records and durations for the metrics, quorum states, notify
    // commands), so that their cost is measured too.
    let mut board = Board::default();
    let mut quorums = Quorums::default();
    quorums.update(desired, &health);
    let mut scripts = Scripts::default();
    tokio::pin!(until);
    let out = loop {
        tokio::select! {
            Some(done) = rx.recv() => {
                let counter = if done.result.is_ok() { &tally.ok } else { &tally.failed };
                counter.set(counter.get() + 1);
                let mut judged = Judged::default();
                let generation = checks.generation_of(&done.target);
                judge(&done, &mut health, generation, &mut board, &mut judged);
                let flips = judged.flips.len() as u64;
                tally.flips.set(tally.flips.get() + flips);
                if judged.changed() {
                    notify(desired, &judged, &health, &mut quorums, &mut scripts);
                }
            }
            out = &mut until => break out,
        }
    };
    checks.abort_all();
    scripts.abort_all();
    out
}

/// After verdicts changed: each flipped server's notify command, then each service whose
/// quorum state changed (logged, and its quorum_up / quorum_down). The changes of quorum.
pub(super) fn notify(
    desired: &DirectorDesired,
    judged: &Judged,
    health: &HashMap<Target, Health>,
    quorums: &mut Quorums,
    scripts: &mut Scripts,
) -> Vec<Change> {
    for (target, up) in &judged.flips {
        if let Some(script) = scripts::real_server(desired, target, *up) {
            scripts.start(script);
        }
    }
    let changes = quorums.update(desired, health);
    for change in &changes {
        match change.up {
            true => tracing::info!(
                "service {} gained its quorum (live weight {})",
                change.service,
                change.live_weight
            ),
            false => tracing::warn!(
                "service {} lost its quorum (live weight {})",
                change.service,
                change.live_weight
            ),
        }
        if let Some(script) = scripts::service(desired, change) {
            scripts.start(script);
        }
    }
    changes
}

#[cfg(test)]
pub(super) mod tests {
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
            result: Err(ProbeError::NoAnswer(
                "198.51.100.2:80".parse().expect("literal"),
            )),
            took: std::time::Duration::ZERO,
            rise: 2,
            fall,
            alpha: false,
            weight: None,
        }
    }

    /// After a reload (generation 1) failures still queued from before it (generation 0) do
    /// not count toward the new settings' fall: only the new generation's results flip.
    #[test]
    fn results_from_before_a_reload_are_not_counted() {
        let mut health = HashMap::new();
        let flips = |r: CheckResult, health: &mut HashMap<Target, Health>| {
            r.count(health, 1).is_some_and(|(_, flipped, _)| flipped)
        };
        for _ in 0..5 {
            assert!(!flips(failed(0, 2), &mut health));
        }
        assert!(
            health.values().all(|h| h.up),
            "stale results changed a verdict"
        );
        assert!(!flips(failed(1, 2), &mut health));
        assert!(
            flips(failed(1, 2), &mut health),
            "fall = 2 failures must flip"
        );
        assert!(health.values().all(|h| !h.up));
    }

    /// Two services with an hour-long TCP check (the tasks only sleep), port 81's rise as given.
    pub(in crate::director::run) fn two_checked_services(
        rise_81: u32,
        with_81: bool,
    ) -> DirectorDesired {
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
        let mut board = Board::default();
        let first = rx.recv().await.expect("queued");
        let judged = judge_queued(&first, &mut rx, &mut health, &checks, &mut board);
        assert_eq!(judged.flips.len(), 4, "{judged:?}");
        assert_eq!(board.records.len(), 4, "every result is on the board");
        assert!(rx.try_recv().is_err(), "results left for another pass");
        let down = targets
            .iter()
            .filter(|t| health.get(*t).is_some_and(|h| !h.up));
        assert_eq!(down.count(), 4, "{health:?}");
        checks.abort_all();
    }
}
