//! What every daemon shares, written once: the signals it obeys, what it tells systemd, reload
//! with rollback, and backoff after failed passes. A daemon only schedules the pipeline; what a
//! pass does is its own.
//!
//! The pieces compose rather than impose one loop:
//! - [`signals::install`]: SIGTERM/SIGINT as a shutdown future, SIGHUP as [`Reloads`];
//!   installed before the first pass.
//! - [`Lifecycle`]: READY=1, STATUS= when it changes, WATCHDOG=1, RELOADING=1 … READY=1
//!   around each reload (for `Type=notify-reload`), STOPPING=1.
//! - [`Running`]: the running settings and the ones to go back to when the kernel refuses a
//!   reload's.
//! - [`Backoff`]: the doubling retry delay after failed passes, and the pacing of event-driven
//!   passes meanwhile.
//! - [`serve`]: the loop over a [`Daemon`], stopped by a future the caller passes (the signals'
//!   in production, a test's own in tests). A daemon with a loop of its own uses the pieces
//!   in its `select!` instead.

mod backoff;
pub mod endpoint;
pub mod notify;
mod reload;
mod serve;
pub mod signals;

pub use backoff::{delay, Backoff, MAX_BACKOFF, MIN_BACKOFF};
pub use notify::{Lifecycle, Notifier};
pub use reload::{Attempt, Reloaded, Running};
pub use serve::{serve, Daemon};
pub use signals::Reloads;
