//! Real-server commands: `up`, `down`, `status`, `check`, and the `run` loop. Each is
//! observe → plan → apply.

use crate::error::Error;
use crate::kernel::{self, preflight, KernelError};
use crate::model::{Change, Observed};
use crate::state_dir::{self, RunLock, StateLock};
use model::{ArpMethod, Device, RealServerDesired};
use plan::Plan;
use rtnetlink::Handle;
use state::RealServerState;
use status::StatusReport;
use std::path::Path;

pub mod config;
pub mod drain;
pub mod metrics;
pub mod model;
pub mod plan;
mod run;
mod scrape;
pub mod state;
pub mod status;

pub use run::{run, RunSettings};

/// What a command did, for the CLI to print.
#[derive(Debug, Default)]
pub struct Report {
    pub applied: Vec<Change>,
    pub warnings: Vec<String>,
    pub dry_run: bool,
    /// Done besides the kernel changes (e.g. the drain flag cleared by `down`).
    pub notes: Vec<String>,
    /// What to say when there is nothing to do.
    pub nothing: &'static str,
    /// [`Apply::KeepProgress`] only: the changes the kernel refused, each with its error. The
    /// ones in `applied` were made and kept; the plan's later phases wait for the next pass.
    pub failed: Vec<String>,
}

/// How a pass applies its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    /// `up` and `run`'s first pass: all or nothing — a failure rolls back what the pass did,
    /// leaving the node as found.
    AllOrNothing,
    /// `run`'s repairs: phase by phase ([`Change::phase`]); every change of a phase is tried,
    /// and a failure stops the pass before the next phase. What was made is kept: the node
    /// as found was drifted, and the phase order (suppression before VIPs, VIPs removed
    /// before suppression) makes every such prefix safe — a repair that fails on one VIP
    /// neither undoes the ARP suppression it restored nor holds back the other VIPs.
    KeepProgress,
}

impl Report {
    /// True when this report describes changes made to the node (not a dry run's plan).
    pub fn changed(&self) -> bool {
        let nothing = self.applied.is_empty() && self.notes.is_empty();
        !self.dry_run && !nothing
    }

    pub fn print(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        for w in &self.warnings {
            writeln!(out, "warning: {w}")?;
        }
        for n in &self.notes {
            writeln!(out, "did: {n}")?;
        }
        if self.applied.is_empty() {
            if !self.notes.is_empty() {
                return Ok(());
            }
            return writeln!(out, "nothing to do: {}", self.nothing);
        }
        let verb = if self.dry_run { "would" } else { "did" };
        for c in &self.applied {
            writeln!(out, "{verb}: {c}")?;
        }
        Ok(())
    }
}

/// Checks everything that can be checked without changing anything (see `rs-agent check`).
/// CAP_NET_ADMIN is checked first, on its own ([`require_net_admin`]), by every command that
/// needs it before it observes: listing nft tables needs it too, and the preflight line
/// (exit 2) is the useful error, not nft's "Operation not permitted".
pub fn preflight(desired: &RealServerDesired, observed: &Observed) -> Result<(), Error> {
    require_net_admin()?;
    if desired.arp == ArpMethod::Nft {
        preflight::require_nft()?;
    }
    if let Device::Dummy(name) = &desired.device {
        if observed.link(name).is_none() {
            preflight::require_dummy(name)?;
        }
    }
    Ok(())
}

/// The preflight's first line: no CAP_NET_ADMIN is the host's setup (exit 2), nothing was
/// changed.
pub fn require_net_admin() -> Result<(), Error> {
    Ok(preflight::require_cap_net_admin()?)
}

/// `with_nft: false` skips listing the nft tables (two `nft` processes, half the cost of a
/// pass): for passes where neither the config nor the state file involves nft.
async fn observe(handle: &Handle, with_nft: bool) -> Result<Observed, Error> {
    Ok(kernel::observe_real_server(handle, with_nft).await?)
}

/// Validates and plans `up` against the node without changing it.
pub async fn check(desired: &RealServerDesired, state_dir: &Path) -> Result<Plan, Error> {
    require_net_admin()?;
    let handle = kernel::link::connect().map_err(KernelError::from)?;
    let observed = observe(&handle, true).await?;
    preflight(desired, &observed)?;
    let state = RealServerState::load(state_dir)?;
    Ok(plan::plan_up(desired, &observed, &state)?)
}

/// Binds the VIPs and suppresses ARP; idempotent; all-or-nothing (rolls back on failure).
pub async fn up(
    desired: &RealServerDesired,
    state_dir: &Path,
    dry_run: bool,
) -> Result<Report, Error> {
    if !dry_run {
        require_net_admin()?;
    }
    let handle = kernel::link::connect().map_err(KernelError::from)?;
    // The pass lock first, then the probe: a `run` starting meanwhile waits for this pass and
    // applies its own configuration after it; probed first, `up` could apply after the
    // daemon's first pass and stand until its next one.
    let _lock = match dry_run {
        true => None,
        false => {
            let lock = lock_passes(state_dir).await?;
            AGENT_RUN.refuse_up(state_dir)?;
            Some(lock)
        }
    };
    reconcile_locked(&handle, desired, state_dir, dry_run, Apply::AllOrNothing).await
}

/// One pass of the pipeline, observe → plan_up → apply: `up` runs it once, `run` on every
/// event, tick and SIGHUP.
async fn reconcile(
    handle: &Handle,
    desired: &RealServerDesired,
    state_dir: &Path,
    how: Apply,
) -> Result<Report, Error> {
    // One pass at a time per state directory, from load to save.
    let _lock = lock_passes(state_dir).await?;
    reconcile_locked(handle, desired, state_dir, false, how).await
}

/// [`reconcile`] under the pass lock the caller holds (none needed for a dry run).
async fn reconcile_locked(
    handle: &Handle,
    desired: &RealServerDesired,
    state_dir: &Path,
    dry_run: bool,
    how: Apply,
) -> Result<Report, Error> {
    let state = RealServerState::load(state_dir)?;
    // Our nft tables matter only when the config uses them or the state says we made some.
    let with_nft = needs_nft(desired, &state);
    let observed = observe(handle, with_nft).await?;
    let plan = match how {
        Apply::AllOrNothing => plan::plan_up(desired, &observed, &state)?,
        Apply::KeepProgress => plan::plan_repair(desired, &observed, &state)?,
    };
    if !dry_run {
        preflight(desired, &observed)?;
    }
    let mut report = Report {
        warnings: plan.warnings.clone(),
        dry_run,
        nothing: "the node already matches the configuration",
        ..Report::default()
    };
    if dry_run {
        report.applied = plan.changes;
        return Ok(report);
    }
    let mut journal = state.clone();
    journal.desired = Some(desired.clone());
    for c in &plan.changes {
        journal.record(c);
    }
    if plan.changes.is_empty() && journal == state {
        // Nothing to do and nothing new to record: `run` passes here every tick.
        return Ok(report);
    }
    journal.save(state_dir)?;
    if how == Apply::KeepProgress {
        let (applied, failed) = apply_phases(handle, &plan.changes).await;
        // Ownership of what was made; the journal saved above (which also claims what was
        // not made) stands if this save fails.
        let mut kept = state;
        kept.desired = Some(desired.clone());
        for c in &applied {
            kept.record(c);
            kept.forget(c);
        }
        kept.save(state_dir)?;
        report.applied = applied;
        report.failed = failed;
        return Ok(report);
    }
    if let Err(error) = apply_all(handle, &plan.changes, &mut journal).await {
        let (complete, rollback) = rollback(handle, &plan.changes, error.applied).await;
        // Only a complete rollback gives the old ownership back; after an incomplete one the
        // journal saved before applying still records what the pass may have left (a sysctl's
        // original value, a dummy device), so that `down` can still undo it.
        if complete {
            state.save(state_dir)?;
        }
        return Err(Error::Apply {
            error: error.error,
            rollback,
        });
    }
    journal.save(state_dir)?;
    report.applied = plan.changes;
    Ok(report)
}

struct PartialApply {
    error: KernelError,
    applied: usize,
}

async fn apply_all(
    handle: &Handle,
    changes: &[Change],
    journal: &mut RealServerState,
) -> Result<(), PartialApply> {
    for (i, change) in changes.iter().enumerate() {
        if let Err(error) = kernel::apply(handle, change).await {
            return Err(PartialApply { error, applied: i });
        }
        tracing::info!(change = %change, "applied");
        journal.forget(change);
    }
    Ok(())
}

/// [`Apply::KeepProgress`]: applies `changes` (sorted by phase) phase by phase, trying every
/// change of a phase and stopping before the next phase after a failure; the changes made,
/// and each failed one with its error.
async fn apply_phases(handle: &Handle, changes: &[Change]) -> (Vec<Change>, Vec<String>) {
    let mut applied = Vec::new();
    let mut failed = Vec::new();
    let mut phase = None;
    for change in changes {
        if !failed.is_empty() && phase != Some(change.phase()) {
            break;
        }
        phase = Some(change.phase());
        match kernel::apply(handle, change).await {
            Ok(()) => {
                tracing::info!(change = %change, "applied");
                applied.push(change.clone());
            }
            Err(e) => failed.push(format!("{change}: {e}")),
        }
    }
    (applied, failed)
}

/// Undoes the first `applied` changes in reverse order; whether that fully worked, and what
/// happened, for the error.
async fn rollback(handle: &Handle, changes: &[Change], applied: usize) -> (bool, String) {
    let mut failed = Vec::new();
    for change in changes[..applied].iter().rev() {
        let Some(inverse) = change.inverse() else {
            continue;
        };
        if let Err(e) = kernel::apply(handle, &inverse).await {
            failed.push(format!("{inverse}: {e}"));
        }
    }
    match (applied, failed.is_empty()) {
        (0, _) => (true, "; nothing was changed".to_string()),
        (n, true) => (
            true,
            format!("; rolled back the {n} change(s) already made"),
        ),
        (_, false) => (
            false,
            format!("; ROLLBACK INCOMPLETE: {}", failed.join("; ")),
        ),
    }
}

/// The drain flag is ours too: a node taken down is not left "drained" for its next `up`.
fn clear_drain_flag(state_dir: &Path, report: &mut Report) {
    match crate::real_server::drain::set_drained(state_dir, false) {
        Ok(true) => report.notes.push("cleared the drain flag".to_string()),
        Ok(false) => {}
        Err(e) => report.warnings.push(format!(
            "{}: cannot remove the drain flag: {e}; remove it by hand",
            crate::real_server::drain::flag_path(state_dir).display()
        )),
    }
}

/// The real-server pass lock (waits for another `up`, `down` or `run` pass to finish).
async fn lock_passes(state_dir: &Path) -> Result<StateLock, Error> {
    Ok(crate::state_dir::lock_pass(state_dir, state_dir::REAL_SERVER).await?)
}

pub(crate) const AGENT_RUN: RunLock = RunLock {
    file: state_dir::REAL_SERVER_RUN,
    command: "rs-agent run",
    unit: "rs-agent.service",
};

/// Undoes exactly what `up` did, from the state file. Safe to run twice and after a crash.
pub async fn down(state_dir: &Path, dry_run: bool) -> Result<Report, Error> {
    require_net_admin()?;
    let _lock = match dry_run {
        true => None,
        false => Some(lock_passes(state_dir).await?),
    };
    if !dry_run {
        AGENT_RUN.refuse_down(state_dir)?;
    }
    let handle = kernel::link::connect().map_err(KernelError::from)?;
    let observed = observe(&handle, true).await?;
    let mut state = RealServerState::load(state_dir)?;
    let plan = plan::plan_down(&state, &observed);
    let mut report = Report {
        warnings: plan.warnings.clone(),
        dry_run,
        nothing: "rs-agent has nothing configured on this node",
        ..Report::default()
    };
    if dry_run || plan.changes.is_empty() {
        if !dry_run {
            RealServerState::default().save(state_dir)?;
            clear_drain_flag(state_dir, &mut report);
        }
        report.applied = plan.changes;
        return Ok(report);
    }
    for change in &plan.changes {
        if let Err(e) = kernel::apply(&handle, change).await {
            state.save(state_dir)?;
            return Err(e.into());
        }
        tracing::info!(change = %change, "applied");
        state.forget(change);
        report.applied.push(change.clone());
    }
    // Everything we owned is released or reported: nothing is left to undo.
    RealServerState::default().save(state_dir)?;
    clear_drain_flag(state_dir, &mut report);
    Ok(report)
}

/// Desired vs observed, with a verdict per VIP; `None` when there is nothing to compare: no
/// configuration given and none applied (after `down`, or before the first `up`) — a node
/// rs-agent has nothing on, which is no error.
pub async fn status(
    desired: Option<&RealServerDesired>,
    state_dir: &Path,
) -> Result<Option<StatusReport>, Error> {
    let state = RealServerState::load(state_dir)?;
    let Some(desired) = desired.or(state.desired.as_ref()).cloned() else {
        if state.is_empty() {
            return Ok(None);
        }
        // Owned things without the configuration that made them (a journal from a crash
        // before the configuration was recorded): not "nothing configured".
        return Err(Error::Input(format!(
            "rs-agent owns things on this node ({}) but no applied configuration is recorded; \
             pass --config or --vip to check it, or `rs-agent down` to undo them",
            RealServerState::path(state_dir).display()
        )));
    };
    // Addresses and sysctls can be read by anyone; nft tables only with CAP_NET_ADMIN. They
    // are needed when the configuration or the state involves nft.
    if needs_nft(&desired, &state) {
        require_net_admin()?;
    }
    let handle = kernel::link::connect().map_err(KernelError::from)?;
    judge(&handle, &desired, &state, state_dir).await.map(Some)
}

/// Whether judging or planning the node needs rs-agent's nft tables read.
fn needs_nft(desired: &RealServerDesired, state: &RealServerState) -> bool {
    desired.arp == ArpMethod::Nft || !state.nft_tables.is_empty()
}

/// The verdict `status` prints, of the kernel as it is now; `run`'s metrics scrape makes the
/// same one, so that a dashboard and `status` never disagree. The nft tables are read when
/// needed, and otherwise whenever allowed (a hand-made `rs_agent` table can suppress ARP too).
async fn judge(
    handle: &Handle,
    desired: &RealServerDesired,
    state: &RealServerState,
    state_dir: &Path,
) -> Result<StatusReport, Error> {
    let with_nft = needs_nft(desired, state) || preflight::require_cap_net_admin().is_ok();
    let observed = observe(handle, with_nft).await?;
    let pending = plan::plan_up(desired, &observed, state).map(|p| p.changes);
    let mut report = status::evaluate_with(desired, &observed, Some(&state.addrs), pending);
    report.drained = crate::real_server::drain::is_drained(state_dir);
    Ok(report)
}
