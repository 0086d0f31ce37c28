//! How long to wait before retrying after failed passes: doubling from [`MIN_BACKOFF`] up to
//! [`MAX_BACKOFF`], so that a change the kernel keeps refusing is retried quickly at first and
//! then without spinning.

use std::time::Duration;
use tokio::time::Instant;

/// The first retry delay after a failed pass; doubles up to `MAX_BACKOFF`.
pub const MIN_BACKOFF: Duration = Duration::from_millis(200);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The failed passes since the last one that worked.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// How many passes failed in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn failing(&self) -> bool {
        self.failures > 0
    }

    /// Counts a failed pass; returns how long to wait before the retry.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        delay(self.failures)
    }

    /// Starts over (a pass worked, or something worth an immediate pass came); returns how
    /// many passes had failed.
    pub fn reset(&mut self) -> u32 {
        std::mem::take(&mut self.failures)
    }

    /// When a pass asked for `at` may run: while passes fail, no sooner than [`MIN_BACKOFF`]
    /// after the last one ended (`last_pass`), so that events bring a retry forward without
    /// making the retries spin.
    pub fn paced(&self, at: Instant, last_pass: Instant) -> Instant {
        match self.failing() {
            true => at.max(last_pass + MIN_BACKOFF),
            false => at,
        }
    }
}

/// The wait after `failures` failed passes: 200 ms, 400 ms, 800 ms, ... capped at
/// `MAX_BACKOFF`.
pub fn delay(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    MIN_BACKOFF.saturating_mul(1 << shift).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let ms: Vec<u128> = [1, 2, 3, 8, 9, 50, u32::MAX]
            .iter()
            .map(|f| delay(*f).as_millis())
            .collect();
        assert_eq!(ms, vec![200, 400, 800, 25_600, 30_000, 30_000, 30_000]);
        // Counted without overflow however long the kernel refuses.
        let mut backoff = Backoff {
            failures: u32::MAX - 1,
        };
        assert_eq!(backoff.failed(), MAX_BACKOFF);
        assert_eq!(backoff.failed(), MAX_BACKOFF);
        assert_eq!(backoff.failures(), u32::MAX);
    }

    #[test]
    fn counts_failures_until_reset() {
        let mut backoff = Backoff::default();
        assert!(!backoff.failing());
        assert_eq!(backoff.failed(), MIN_BACKOFF);
        assert_eq!(backoff.failed(), 2 * MIN_BACKOFF);
        assert!(backoff.failing());
        assert_eq!(backoff.reset(), 2);
        assert_eq!((backoff.failures(), backoff.failed()), (0, MIN_BACKOFF));
    }

    #[test]
    fn while_failing_passes_are_paced_after_the_last() {
        let last = Instant::now();
        let soon = last + Duration::from_millis(2);
        let mut backoff = Backoff::default();
        assert_eq!(backoff.paced(soon, last), soon);
        backoff.failed();
        assert_eq!(backoff.paced(soon, last), last + MIN_BACKOFF);
        let later = last + Duration::from_secs(5);
        assert_eq!(backoff.paced(later, last), later);
    }
}
