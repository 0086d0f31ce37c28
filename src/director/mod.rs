//! Director commands: `director up|down|status|import`. The same pipeline as the real server:
//! observe (IPVS dump + addresses) → plan (pure diff) → apply, with a state file that records
//! what is ours before anything is changed.
//!
//! This module holds the commands themselves (`up`, `down`, `check`) and their locks; the
//! pass they share is in `reconcile`, what they did in `report`. It must not plan (that is
//! `plan`) nor talk to a kernel interface other than through `kernel::` and `reconcile`.

pub mod config;
pub mod garp;
pub mod health;
pub mod import;
pub mod model;
pub mod plan;
mod reconcile;
mod report;
pub mod run;
pub mod state;
pub mod status;

pub(crate) use reconcile::{announce, skipping_unowned};
pub use reconcile::{observe, reconcile, DirectorObserved, Kernel};
pub use report::DirectorReport;

use crate::error::Error;
use crate::kernel::ipvs::{IpvsClient, IpvsError};
use crate::kernel::{link, preflight, KernelError};
use crate::state_dir::RunLock;
use config::DirectorDesired;
use plan::Scope;
use reconcile::apply_addrs;
use state::DirectorState;
use std::path::Path;

impl From<IpvsError> for Error {
    fn from(e: IpvsError) -> Self {
        match e {
            IpvsError::ModuleAbsent => Error::Input(e.to_string()),
            // Every IPVS command, reading the table included, needs CAP_NET_ADMIN: an
            // operator error (exit 2), said as one, not a kernel failure. (A refused write
            // already carries the hint.)
            e @ IpvsError::Op { .. } if e.permission_denied() => Error::Input(e.to_string()),
            e if e.permission_denied() => Error::Input(format!(
                "{e}: IPVS needs CAP_NET_ADMIN, for reading the table too; run as root (sudo)"
            )),
            other => Error::Kernel(KernelError::Ipvs(other)),
        }
    }
}

/// Held by `director run` for its lifetime (see [`RunLock`]).
pub(crate) const DIRECTOR_RUN: RunLock = RunLock {
    file: crate::state_dir::DIRECTOR_RUN,
    command: "rs-agent director run",
    unit: "rs-agent-director.service",
};

/// How `up` and each pass of `run` treat the kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpOptions {
    /// Plan and report only.
    pub dry_run: bool,
    /// Take over configured services that exist and are not rs-agent's (else refused).
    pub adopt: bool,
    /// Without `adopt`: leave such services alone and reconcile the rest instead of refusing
    /// the pass. `director run` after its first pass: a reload that names a service someone
    /// else made must not stop every later pass, health changes of all services included.
    pub skip_unowned: bool,
    /// Leave announcing the VIPs a pass binds to the caller (they come back in
    /// `DirectorReport::unannounced`): `director run` sends announcements in the background, so
    /// that their rounds never hold up check results, reloads or the watchdog.
    pub defer_announce: bool,
}

/// Reconciles IPVS and the VIPs to the configuration: minimal changes, never a flush, never a
/// foreign service; all-or-nothing. Newly bound VIPs are announced with gratuitous ARP/NA.
pub async fn up(
    desired: &DirectorDesired,
    state_dir: &Path,
    options: UpOptions,
) -> Result<DirectorReport, Error> {
    let mut kernel = Kernel::connect(desired, options.dry_run).await?;
    let _lock = match options.dry_run {
        true => None,
        // The pass lock first, then the probe (as in the real server's `up`): a `director
        // run` starting meanwhile then applies its configuration after this pass, not before.
        false => {
            let lock = lock_passes(state_dir).await?;
            DIRECTOR_RUN.refuse_up(state_dir)?;
            Some(lock)
        }
    };
    reconcile(&mut kernel, desired, state_dir, options, &Scope::All).await
}

/// The director pass lock: one `up`, `down` or `run` pass at a time per state directory,
/// from loading the state file to saving it (waits for the holder, bounded).
pub(crate) async fn lock_passes(state_dir: &Path) -> Result<crate::state_dir::StateLock, Error> {
    let lock = crate::state_dir::StateLock::acquire(
        state_dir,
        crate::state_dir::DIRECTOR,
        crate::state_dir::WAIT,
    );
    Ok(lock.await?)
}

/// `director check`: everything `up` verifies before it changes anything — CAP_NET_ADMIN,
/// the interface, the IPVS generic-netlink family — for an already validated config.
pub async fn check(desired: &DirectorDesired) -> Result<(), Error> {
    Kernel::connect(desired, false).await.map(drop)
}

/// Removes exactly rs-agent's VIPs (first, so no new traffic arrives) and then its services.
pub async fn down(state_dir: &Path, dry_run: bool) -> Result<DirectorReport, Error> {
    let _lock = match dry_run {
        true => None,
        false => Some(lock_passes(state_dir).await?),
    };
    if !dry_run {
        DIRECTOR_RUN.refuse_down(state_dir)?;
    }
    let mut state = DirectorState::load(state_dir)?;
    let mut report = DirectorReport {
        dry_run,
        nothing: "rs-agent has nothing configured on this director",
        ..DirectorReport::default()
    };
    if state.services.is_empty() && state.addrs.is_empty() {
        if !dry_run {
            // A configuration left beside an empty journal would make `status` compare.
            DirectorState::forget_desired(state_dir)?;
        }
        return Ok(report);
    }
    if !dry_run {
        preflight::require_cap_net_admin()?;
    }
    let handle = link::connect().map_err(KernelError::from)?;
    let mut client = IpvsClient::connect()?;
    let observed = observe(&handle, &mut client).await?;
    let plan = plan::plan_down(&observed.ipvs, &observed.addrs, &state);
    if dry_run {
        report.ipvs = plan.ipvs;
        report.addrs = plan.addrs;
        return Ok(report);
    }
    if let Err((i, e)) = apply_addrs(&handle, &plan.addrs).await {
        plan.addrs[..i].iter().for_each(|c| state.forget_addr(c));
        state.save(state_dir)?;
        return Err(e.into());
    }
    if let Err(e) = client.apply(&plan.ipvs) {
        state.addrs.clear();
        state.save(state_dir)?;
        return Err(e.into());
    }
    // Everything we owned is gone (or was already gone): nothing is left to undo.
    DirectorState::default().save(state_dir)?;
    DirectorState::forget_desired(state_dir)?;
    report.ipvs = plan.ipvs;
    report.addrs = plan.addrs;
    report.writes = client.writes();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_errno(errno: i32) -> Error {
        Error::from(IpvsError::Io {
            context: "dumping services".into(),
            source: std::io::Error::from_raw_os_error(errno),
        })
    }

    #[test]
    fn ipvs_permission_denied_is_an_operator_error_naming_the_capability() {
        match from_errno(libc::EPERM) {
            Error::Input(m) => {
                assert!(
                    m.contains("dumping services") && m.contains("CAP_NET_ADMIN"),
                    "{m}"
                )
            }
            other => panic!("EPERM became {other:?}"),
        }
        assert!(matches!(from_errno(libc::EIO), Error::Kernel(_)));
    }
}
