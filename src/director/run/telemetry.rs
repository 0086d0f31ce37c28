//! What `director run` counts for its metrics and for `director status`: the health board,
//! the passes by kind, the reloads and the announcements. The run loop writes it; a scrape
//! copies it under the lock (held for a copy only, never across I/O).

use super::passes::Pass;
use crate::director::config::DirectorDesired;
use crate::director::health::Board;
use crate::metrics::Histogram;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// The passes of one kind.
#[derive(Debug, Clone)]
pub struct PassTally {
    pub count: u64,
    pub failures: u64,
    pub netlink_writes: u64,
    pub seconds: Histogram,
}

impl Default for PassTally {
    fn default() -> Self {
        PassTally {
            count: 0,
            failures: 0,
            netlink_writes: 0,
            seconds: Histogram::new(crate::metrics::SECONDS),
        }
    }
}

/// Everything a scrape reads besides the kernel's table.
#[derive(Debug, Clone)]
pub struct Telemetry {
    pub board: Arc<Board>,
    /// By [`Pass`]: full, reload, health.
    pub passes: [PassTally; 3],
    pub reloads_accepted: u64,
    pub reloads_refused: u64,
    pub last_reload: Option<SystemTime>,
    /// Gratuitous ARP / unsolicited NA packets sent.
    pub announcements: u64,
    /// The configuration in force (its weights are the configured ones).
    pub configured: Arc<DirectorDesired>,
    pub started: SystemTime,
}

impl Pass {
    /// The `kind` label of its metrics.
    pub fn name(self) -> &'static str {
        match self {
            Pass::Full => "full",
            Pass::Scoped => "reload",
            Pass::Health => "health",
        }
    }

    pub const ALL: [Pass; 3] = [Pass::Full, Pass::Scoped, Pass::Health];

    fn index(self) -> usize {
        match self {
            Pass::Full => 0,
            Pass::Scoped => 1,
            Pass::Health => 2,
        }
    }
}

impl Telemetry {
    pub fn new(configured: DirectorDesired) -> Telemetry {
        Telemetry {
            board: Arc::default(),
            passes: Default::default(),
            reloads_accepted: 0,
            reloads_refused: 0,
            last_reload: None,
            announcements: 0,
            configured: Arc::new(configured),
            started: SystemTime::now(),
        }
    }

    pub fn pass(&self, pass: Pass) -> &PassTally {
        &self.passes[pass.index()]
    }

    /// Counts one pass of `pass`'s kind: how long, how many netlink writes (None: failed).
    pub fn passed(&mut self, pass: Pass, took: Duration, writes: Option<u64>) {
        let tally = &mut self.passes[pass.index()];
        tally.count += 1;
        tally.seconds.observe(took.as_secs_f64());
        match writes {
            Some(w) => tally.netlink_writes += w,
            None => tally.failures += 1,
        }
    }

    /// The board, to change (copied first while a scrape still holds the old one).
    pub fn board_mut(&mut self) -> &mut Board {
        Arc::make_mut(&mut self.board)
    }
}

/// The telemetry shared by the run loop and the metrics endpoint.
#[derive(Debug, Clone)]
pub struct Shared(Arc<Mutex<Telemetry>>);

impl Shared {
    pub fn new(telemetry: Telemetry) -> Shared {
        Shared(Arc::new(Mutex::new(telemetry)))
    }

    /// The telemetry, locked (a panic elsewhere does not make it unreadable).
    pub fn lock(&self) -> MutexGuard<'_, Telemetry> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy as of now, for a scrape: the board is shared, not copied, until the loop
    /// changes it.
    pub fn snapshot(&self) -> Telemetry {
        self.lock().clone()
    }
}
