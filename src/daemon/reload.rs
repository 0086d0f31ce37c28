//! Reload with rollback: the settings a daemon runs with, and the ones a reload replaced until
//! a pass with the new ones worked. A configuration that validates yet the kernel refuses (a
//! scheduler module it lacks, IPv6 disabled for an IPv6 VIP) is undone rather than failing
//! every later pass.

/// The settings running, and those to go back to while a reload's are untried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running<S> {
    settings: S,
    /// The settings a reload replaced, if they worked: what to go back to when the kernel
    /// refuses the new ones.
    fallback: Option<S>,
}

/// Which settings a pass of [`Running::apply`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The settings the reload brought.
    New,
    /// The running settings again, after the kernel refused the new ones: the pass for them
    /// undoes what the refused pass made.
    Back,
}

/// What [`Running::apply`] came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded<R, E> {
    /// The new settings run.
    Applied(R),
    /// The kernel refused them (`refused`); the settings that ran before are back, and `again`
    /// is the pass that re-applied them.
    WentBack { refused: E, again: Result<R, E> },
    /// The kernel refused them and there is nothing to go back to (the running settings were
    /// failing too): the new ones stay, for the retries.
    Failed(E),
}

impl<S> Running<S> {
    pub fn new(settings: S) -> Running<S> {
        Running {
            settings,
            fallback: None,
        }
    }

    pub fn settings(&self) -> &S {
        &self.settings
    }

    /// True between a reload and the pass that shows whether the kernel takes it.
    pub fn untried(&self) -> bool {
        self.fallback.is_some()
    }

    /// Runs with a reload's settings from now on. The ones replaced are kept to go back to if
    /// they `worked` — unless older ones are kept already (a second reload before the pass
    /// that tries the first goes back to the settings that worked). Settings that were failing
    /// are nothing to go back to.
    pub fn replace(&mut self, new: S, worked: bool) {
        let old = std::mem::replace(&mut self.settings, new);
        if worked && self.fallback.is_none() {
            self.fallback = Some(old);
        }
    }

    /// A pass with the running settings worked: they are the ones to keep.
    pub fn worked(&mut self) {
        self.fallback = None;
    }

    /// A pass with the running settings failed: when they came from a reload not yet tried,
    /// go back to the ones before it and return true (the caller runs a pass for them).
    pub fn refused(&mut self) -> bool {
        match self.fallback.take() {
            Some(old) => {
                self.settings = old;
                true
            }
            None => false,
        }
    }

    /// A reload applied at once: runs with `new`, applies a pass for it and, when the kernel
    /// refuses it, goes back to the running settings (if they `worked`) and applies a pass
    /// for those ([`Attempt::Back`]). For a daemon that applies a reload as soon as it reads
    /// it; one that schedules the pass uses [`Running::replace`], then [`Running::worked`] or
    /// [`Running::refused`] on its result.
    pub async fn apply<R, E>(
        &mut self,
        new: S,
        worked: bool,
        mut pass: impl AsyncFnMut(&S, Attempt) -> Result<R, E>,
    ) -> Reloaded<R, E> {
        self.replace(new, worked);
        match pass(&self.settings, Attempt::New).await {
            Ok(report) => {
                self.worked();
                Reloaded::Applied(report)
            }
            Err(refused) if self.refused() => {
                let again = pass(&self.settings, Attempt::Back).await;
                Reloaded::WentBack { refused, again }
            }
            Err(refused) => Reloaded::Failed(refused),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel that refuses any settings above `limit`; records the passes asked of it.
    struct FakeKernel {
        limit: u32,
        passes: Vec<(u32, Attempt)>,
    }

    impl FakeKernel {
        async fn pass(&mut self, settings: &u32, attempt: Attempt) -> Result<u32, String> {
            self.passes.push((*settings, attempt));
            match *settings <= self.limit {
                true => Ok(*settings),
                false => Err(format!("refused {settings}")),
            }
        }
    }

    fn kernel(limit: u32) -> FakeKernel {
        FakeKernel {
            limit,
            passes: Vec::new(),
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(f)
    }

    #[test]
    fn a_refused_reload_keeps_the_running_settings() {
        let mut k = kernel(5);
        let mut running = Running::new(3);
        let result = block_on(running.apply(9, true, async |s, a| k.pass(s, a).await));
        assert_eq!(
            result,
            Reloaded::WentBack {
                refused: "refused 9".to_string(),
                again: Ok(3)
            }
        );
        assert_eq!(*running.settings(), 3);
        assert!(!running.untried());
        // The running settings are applied again: the refused pass may have made part of it.
        assert_eq!(k.passes, [(9, Attempt::New), (3, Attempt::Back)]);
    }

    #[test]
    fn an_accepted_reload_runs_from_then_on() {
        let mut k = kernel(5);
        let mut running = Running::new(3);
        let result = block_on(running.apply(4, true, async |s, a| k.pass(s, a).await));
        assert_eq!(result, Reloaded::Applied(4));
        assert_eq!(*running.settings(), 4);
        // What ran before is forgotten: a later refusal does not go back to it.
        assert!(!running.refused());
        assert_eq!(*running.settings(), 4);
        assert_eq!(k.passes, [(4, Attempt::New)]);
    }

    #[test]
    fn failing_settings_are_nothing_to_go_back_to() {
        let mut k = kernel(5);
        let mut running = Running::new(7);
        let result = block_on(running.apply(8, false, async |s, a| k.pass(s, a).await));
        assert_eq!(result, Reloaded::Failed("refused 8".to_string()));
        assert_eq!(*running.settings(), 8);
        assert_eq!(k.passes, [(8, Attempt::New)]);
    }

    #[test]
    fn a_second_reload_before_the_pass_goes_back_to_the_settings_that_worked() {
        let mut running = Running::new(1);
        running.replace(2, true);
        running.replace(3, true);
        assert!(running.untried());
        assert!(running.refused());
        assert_eq!(*running.settings(), 1);
        // Once gone back, a second refusal has nothing older to go to.
        assert!(!running.refused());
        assert_eq!(*running.settings(), 1);
    }
}
