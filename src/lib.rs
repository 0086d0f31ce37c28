//! rs-agent: the node agent for Linux Virtual Server Direct Routing (LVS-DR).
//!
//! Every command is the same pipeline: config → `Desired`, kernel → `Observed`,
//! `plan(desired, observed)` → ordered `Change`s, then apply. See docs/architecture.md.

pub mod agent;
pub mod cli;
pub mod config;
pub mod director;
pub mod drain;
pub mod kernel;
pub mod model;
pub mod notify;
pub mod plan;
pub mod state;
pub mod status;

/// Aborts a background task when dropped (e.g. the drain endpoint when `run` returns).
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
