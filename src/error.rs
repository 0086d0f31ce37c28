//! The one error type of the library: every command returns it, and its kind decides the
//! exit code (2 = fix your input or the node's setup, nothing was changed; 1 = the node or
//! the kernel failed, or the state directory).

use crate::config_file::ConfigError;
use crate::kernel::preflight::PreflightError;
use crate::kernel::KernelError;
use crate::real_server::plan::PlanError;
use crate::state_dir::{LockError, StateError};

/// What kind of failure an [`Error`] is; the kind alone decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad config, flags or usage, or a plan the node cannot carry out: nothing was changed.
    Input,
    /// The host lacks something the command needs (CAP_NET_ADMIN, the `nft` binary, a kernel
    /// driver, a signal handler, a writable stdout): nothing was changed.
    Environment,
    /// The state directory's lock could not be taken (another rs-agent's pass holds it, or
    /// the lock file cannot be opened): nothing was changed.
    Busy,
    /// A kernel interface refused or failed, possibly after some changes (rolled back where
    /// the message says so).
    Kernel,
    /// A state file could not be read, parsed or written.
    State,
}

impl ErrorKind {
    /// 2 when nothing was changed and the fix is the caller's (input, environment, a busy
    /// lock); 1 when the node, the kernel or the state directory failed.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Input | ErrorKind::Environment | ErrorKind::Busy => 2,
            ErrorKind::Kernel | ErrorKind::State => 1,
        }
    }
}

/// Why a command failed; [`Error::kind`] says which kind of failure, and so the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input or a refusal, as a one-line message: nothing was changed.
    #[error("{0}")]
    Input(String),
    /// The config file or a flag is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The desired state does not fit this node.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A preflight check found the host lacking (a capability, a binary, a driver).
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    /// A signal handler could not be installed.
    #[error("cannot handle {name}: {source}")]
    Signal {
        name: String,
        source: std::io::Error,
    },
    /// A report could not be written to stdout (a closed pipe), before anything was changed.
    #[error("writing output: {0}")]
    Output(std::io::Error),
    #[error(transparent)]
    State(#[from] StateError),
    /// A change failed; `rollback` says what was undone (or could not be).
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
}

impl Error {
    /// The signal handler for `name` (e.g. "SIGHUP") could not be installed.
    pub fn signal(name: &str, source: std::io::Error) -> Self {
        Error::Signal {
            name: name.to_string(),
            source,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Input(_) | Error::Config(_) | Error::Plan(_) => ErrorKind::Input,
            Error::Preflight(_) | Error::Signal { .. } | Error::Output(_) => ErrorKind::Environment,
            Error::Lock(_) => ErrorKind::Busy,
            Error::Apply { .. } | Error::Kernel(_) => ErrorKind::Kernel,
            Error::State(StateError::NotADirectory { .. }) => ErrorKind::Input,
            Error::State(_) => ErrorKind::State,
        }
    }

    /// The process exit code for this error (see [`ErrorKind::exit_code`]).
    pub fn exit_code(&self) -> i32 {
        self.kind().exit_code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::sysctl::SysctlError;
    use crate::model::SysctlKey;
    use std::io;

    fn io_err() -> io::Error {
        io::Error::from_raw_os_error(libc::EIO)
    }

    #[test]
    fn each_kind_has_its_exit_code() {
        let cases = [
            (ErrorKind::Input, 2),
            (ErrorKind::Environment, 2),
            (ErrorKind::Busy, 2),
            (ErrorKind::Kernel, 1),
            (ErrorKind::State, 1),
        ];
        for (kind, code) in cases {
            assert_eq!(kind.exit_code(), code, "{kind:?}");
        }
    }

    #[test]
    fn each_variant_has_its_kind_and_exit_code() {
        let state = || StateError::Write {
            path: "/var/lib/rs-agent/state.json".into(),
            source: io_err(),
        };
        let cases: Vec<(Error, ErrorKind, i32)> = vec![
            (Error::Input("bad".into()), ErrorKind::Input, 2),
            (ConfigError("bad".into()).into(), ErrorKind::Input, 2),
            (PlanError("bad".into()).into(), ErrorKind::Input, 2),
            (PreflightError::NetAdmin.into(), ErrorKind::Environment, 2),
            (
                Error::Signal {
                    name: "SIGHUP".into(),
                    source: io_err(),
                },
                ErrorKind::Environment,
                2,
            ),
            (Error::Output(io_err()), ErrorKind::Environment, 2),
            (
                LockError::Timeout {
                    path: "/var/lib/rs-agent/pass.lock".into(),
                    holder: "pid 1".into(),
                    secs: 30,
                }
                .into(),
                ErrorKind::Busy,
                2,
            ),
            (state().into(), ErrorKind::State, 1),
            (
                KernelError::from(SysctlError::Read {
                    iface: "lo".into(),
                    key: SysctlKey::ArpIgnore,
                    msg: "Input/output error".into(),
                })
                .into(),
                ErrorKind::Kernel,
                1,
            ),
        ];
        for (error, kind, code) in cases {
            assert_eq!(error.kind(), kind, "{error}");
            assert_eq!(error.exit_code(), code, "{error}");
        }
    }

    #[test]
    fn conversions_keep_the_message() {
        let e: Error = ConfigError("rs.toml:3:7: bad VIP".into()).into();
        assert!(matches!(e, Error::Config(_)));
        assert_eq!(e.to_string(), "rs.toml:3:7: bad VIP");
        let e: Error = PreflightError::Dummy { name: "rs0".into() }.into();
        assert!(e
            .to_string()
            .starts_with("--device rs0: this kernel has no dummy driver"));
        assert_eq!(
            Error::Signal {
                name: "SIGTERM".into(),
                source: io_err()
            }
            .to_string(),
            format!("cannot handle SIGTERM: {}", io_err())
        );
        assert_eq!(
            Error::Output(io_err()).to_string(),
            format!("writing output: {}", io_err())
        );
    }
}
