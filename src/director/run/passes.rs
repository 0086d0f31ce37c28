//! The passes of `director run`: what it keeps between them (the open handles, what the last
//! successful one applied) and how much of the kernel each reads, by what started it.
//!
//! Owns the choice of scope and the direct write of a health flip. It must not plan itself
//! (`plan::dest_ops` and `reconcile` do), nor schedule a pass (the run loop does), nor
//! announce the VIPs a pass bound (they come back in the report).

use crate::director::config::DirectorDesired;
use crate::director::health::{self, Health, Quorums, Target};
use crate::director::plan::{self, changed_services, Scope};
use crate::director::state::DirectorState;
use crate::director::{lock_passes, skipping_unowned, DirectorReport, Kernel, UpOptions};
use crate::error::Error;
use crate::kernel::ipvs::ServiceKey;
use std::collections::HashMap;
use std::path::Path;

/// What started a pass, which decides how much of the kernel it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass {
    /// The first pass, the periodic one and any after a failure: the whole table.
    Full,
    /// SIGHUP: the services that differ from the last pass, dumped and reconciled.
    Scoped,
    /// A health verdict flipped: destination changes are written straight from the last
    /// pass (no dump first); anything else, or a write the kernel refuses, goes `Scoped`.
    Health,
}

/// How a pass treats configured services (and VIPs) that exist and are not rs-agent's: set
/// by `--adopt` until a pass has succeeded, then `Skip` for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unowned {
    /// No pass has succeeded yet, `--adopt` given: take them over, as the operator asked
    /// when starting.
    Adopt,
    /// No pass has succeeded yet, no `--adopt`: refuse them (exit 2).
    Refuse,
    /// A pass has succeeded: leave them alone with a warning (`skip_unowned`). One that
    /// appears later (a reload that names it, a colleague's ipvsadm) must not stop every
    /// later pass, health changes of all services included.
    Skip,
}

impl Unowned {
    fn options(self) -> UpOptions {
        UpOptions {
            dry_run: false,
            adopt: self == Unowned::Adopt,
            skip_unowned: self == Unowned::Skip,
            defer_announce: true,
        }
    }
}

/// What the daemon keeps between passes.
pub(super) struct Passes {
    /// Open handles; a failed pass drops them and the next pass opens new ones.
    kernel: Option<Kernel>,
    /// The services as the last successful pass applied them (health included); `None` after
    /// a failure, so that the next pass covers everything.
    applied: Option<DirectorDesired>,
    unowned: Unowned,
    /// The services the last pass left alone, to warn once when the set changes.
    skipped: Vec<ServiceKey>,
}

impl Passes {
    /// Before the first pass; `adopt`: `--adopt` was given.
    pub(super) fn new(adopt: bool) -> Passes {
        Passes {
            kernel: None,
            applied: None,
            unowned: if adopt {
                Unowned::Adopt
            } else {
                Unowned::Refuse
            },
            skipped: Vec::new(),
        }
    }

    /// The open handles, if the last pass left them open.
    pub(super) fn kernel(&self) -> Option<&Kernel> {
        self.kernel.as_ref()
    }

    /// One pass of the pipeline for the services as health makes them (see [`Pass`]): a
    /// health flip costs one netlink write, a one-weight SIGHUP one service's dump and one
    /// write, and the periodic full pass repairs whatever changed behind our back.
    pub(super) async fn reconcile(
        &mut self,
        desired: &DirectorDesired,
        (health, quorums): (&HashMap<Target, Health>, &Quorums),
        state_dir: &Path,
        pass: Pass,
    ) -> Result<DirectorReport, Error> {
        let _lock = lock_passes(state_dir).await?;
        let effective = health::effective(desired, health, quorums);
        if pass == Pass::Health {
            if let Some(report) = self.direct(&effective, state_dir)? {
                return Ok(report);
            }
        }
        let scope = self.scope(pass, &effective);
        let options = self.unowned.options();
        let kernel = self.connect(&effective).await?;
        match crate::director::reconcile(kernel, &effective, state_dir, options, &scope).await {
            Ok(report) => Ok(self.succeeded(effective, report, state_dir)),
            Err(e) => {
                self.kernel = None;
                self.applied = None;
                Err(e)
            }
        }
    }

    /// The services a pass reads and reconciles: those that differ from the last successful
    /// pass for a reload or a health flip, else (or when there was none) all.
    fn scope(&self, pass: Pass, effective: &DirectorDesired) -> Scope {
        match (&self.applied, pass) {
            (Some(applied), Pass::Scoped | Pass::Health) => {
                Scope::Only(changed_services(applied, effective))
            }
            _ => Scope::All,
        }
    }

    /// The open handles, opened anew after a failed pass.
    async fn connect(&mut self, effective: &DirectorDesired) -> Result<&mut Kernel, Error> {
        let kernel = match self.kernel.take() {
            Some(k) => k,
            None => Kernel::connect(effective, false).await?,
        };
        Ok(self.kernel.insert(kernel))
    }

    /// Takes in a successful pass: what it applied (without the services it left alone) and
    /// that later passes skip services someone else made.
    fn succeeded(
        &mut self,
        effective: DirectorDesired,
        report: DirectorReport,
        state_dir: &Path,
    ) -> DirectorReport {
        if report.skipped != self.skipped && !report.skipped.is_empty() {
            tracing::warn!("{}", skipping_unowned(&report.skipped, state_dir));
        }
        self.skipped.clone_from(&report.skipped);
        let mut applied = effective;
        // Not applied: a health flip must not write to them directly.
        applied
            .services
            .retain(|s| !report.skipped.contains(&s.service.key));
        self.applied = Some(applied);
        self.unowned = Unowned::Skip;
        report
    }

    /// A health flip as keepalived makes it: the destination ops between the last applied
    /// pass and `effective`, written without reading the kernel first. `None` when this
    /// cannot be done that way (no earlier pass, a service-level difference) or the kernel
    /// refused a write (someone changed the table): the caller then observes and plans.
    fn direct(
        &mut self,
        effective: &DirectorDesired,
        state_dir: &Path,
    ) -> Result<Option<DirectorReport>, Error> {
        let (Some(applied), Some(k)) = (&self.applied, self.kernel.as_mut()) else {
            return Ok(None);
        };
        let Some(ops) = plan::dest_ops(applied, effective) else {
            return Ok(None);
        };
        if ops.is_empty() {
            // Nothing the table shows changed (e.g. a flip while the sorry server serves).
            return Ok(Some(DirectorReport::default()));
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
        DirectorState::save_desired(state_dir, effective)?;
        Ok(Some(DirectorReport {
            ipvs: ops,
            writes,
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::director::run::checks::tests::two_checked_services;

    fn adopt_and_skip(passes: &Passes) -> (bool, bool) {
        let options = passes.unowned.options();
        (options.adopt, options.skip_unowned)
    }

    /// `--adopt` takes over at the first pass only; without it the first pass refuses; once a
    /// pass has succeeded, later ones leave such services alone either way.
    #[test]
    fn only_the_first_pass_adopts_or_refuses_services_someone_else_made() {
        for adopt in [true, false] {
            let mut passes = Passes::new(adopt);
            assert_eq!(adopt_and_skip(&passes), (adopt, false));
            let desired = two_checked_services(2, false);
            passes.succeeded(
                desired,
                DirectorReport::default(),
                Path::new("/nonexistent"),
            );
            assert_eq!(adopt_and_skip(&passes), (false, true));
        }
    }
}
