//! The one error type of the library: every command returns it, and its kind decides the
//! exit code (2 = fix your input, nothing was changed; 1 = the node or the kernel).

use crate::kernel::KernelError;
use crate::state_dir::{LockError, StateError};

/// Why a command failed; `exit_code` maps it for the CLI (2 = fix your input, 1 = the node).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input or a failed preflight: nothing was changed.
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{error}{rollback}")]
    Apply {
        error: KernelError,
        rollback: String,
    },
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The state directory is busy (another rs-agent's pass): nothing was changed.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The process's environment refused what the command needs (a signal handler).
    #[error("{0}")]
    Environment(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_) | Error::Lock(_) => 2,
            _ => 1,
        }
    }
}

impl From<crate::real_server::plan::PlanError> for Error {
    fn from(e: crate::real_server::plan::PlanError) -> Self {
        Error::Input(e.0)
    }
}
