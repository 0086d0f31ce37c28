//! rs-agent: the node agent for Linux Virtual Server Direct Routing (LVS-DR).
//!
//! Every command is the same pipeline: config → `Desired`, kernel → `Observed`,
//! `plan(desired, observed)` → ordered `Change`s, then apply. See docs/architecture.md.

pub mod cli;
pub mod config_file;
pub mod daemon;
pub mod director;
pub mod error;
pub mod kernel;
pub mod logging;
pub mod metrics;
pub mod model;
#[cfg(test)]
mod props;
pub mod real_server;
pub mod state_dir;
#[cfg(test)]
pub(crate) mod testing;

/// Aborts a background task when dropped (e.g. the drain endpoint when `run` returns).
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Logs how long a phase took, at debug level (`RS_AGENT_LOG=rs_agent=debug`): where a slow
/// command spends its time, without a profiler.
pub fn timing(phase: &str, since: std::time::Instant) {
    tracing::debug!(phase, ms = since.elapsed().as_secs_f64() * 1000.0, "timing");
}
