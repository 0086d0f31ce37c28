//! The state directory (`--state-dir`, /run/rs-agent): every file name in it, the state
//! files each side keeps (one scheme for both: a journal of what rs-agent made, so `down`
//! undoes exactly that, and beside it the configuration last applied), written atomically,
//! the record of owned addresses both journals share, and the locks that keep two rs-agent
//! processes from interleaving their passes. It must not interpret a side's state beyond
//! that (each side's `state.rs` does) and never touches the kernel.

mod journal;
mod lock;
mod node;
mod owned;

pub use journal::{Journal, DIRECTOR_JOURNAL, REAL_SERVER_JOURNAL};
pub use owned::{OwnedAddr, OwnedAddrs};

pub use lock::{
    describe_holder, holder, probe, Holder, LockError, StateLock, DIRECTOR, DIRECTOR_RUN,
    REAL_SERVER, REAL_SERVER_RUN, WAIT,
};

use std::path::Path;

/// Default directory for state files (tmpfs: cleared at boot, like the addresses it describes).
pub const DEFAULT_STATE_DIR: &str = "/run/rs-agent";
/// The real server's drain flag (`rs-agent drain`): present = drained.
pub const DRAIN_FLAG: &str = "drained";
/// The running director's health verdicts, for `director status` (`director::health::View`).
pub const DIRECTOR_HEALTH: &str = "director-health.json";
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "{path}: cannot read state: {source}; remove it only if you are sure nothing is configured"
    )]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: corrupt state file: {source}; inspect it, or remove it and clean up by hand")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    /// `--state-dir` names a file (or a path through one): bad input, nothing was changed.
    #[error("{dir} is not a directory; give --state-dir a directory (default /run/rs-agent)")]
    NotADirectory { dir: String },
    /// Parsed, but names something no rs-agent writes (a state file is input, not truth).
    #[error("{path}: corrupt state file: {reason}; inspect it, or remove it and clean up by hand")]
    Invalid { path: String, reason: String },
    #[error("{path}: cannot write state: {source}; check --state-dir is writable")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Reads a JSON state file; a missing file is the default (empty) state.
pub fn load_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(T::default()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            let dir = path.parent().unwrap_or(path);
            return Err(not_a_directory(dir).unwrap_or(StateError::Read {
                path: path.display().to_string(),
                source: e,
            }));
        }
        Err(source) => {
            return Err(StateError::Read {
                path: path.display().to_string(),
                source,
            })
        }
    };
    serde_json::from_str(&text).map_err(|source| StateError::Parse {
        path: path.display().to_string(),
        source,
    })
}

/// The error for a state directory that is a file (or lies under one), if it is.
fn not_a_directory(dir: &Path) -> Option<StateError> {
    let file = dir.ancestors().find(|a| a.exists() && !a.is_dir())?;
    Some(StateError::NotADirectory {
        dir: file.display().to_string(),
    })
}

/// Creates the state directory (and its parents) if missing, readable by all (0755) whatever
/// the umask (the units set 0077): `status` run by a monitoring user reads the files in it.
/// A directory that exists keeps its mode (the operator's choice).
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(e) = not_a_directory(dir) {
        return Err(std::io::Error::other(e));
    }
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
}

/// Writes `dir/name` atomically (temp file + rename), or removes it when `text` is `None`.
/// The file is readable by all (0644) whatever the umask (the units set 0077): it holds VIPs
/// and the sysctl values to restore, nothing secret, and `status` run by a monitoring user
/// reads it.
pub fn write_atomic(dir: &Path, name: &str, text: Option<String>) -> Result<(), StateError> {
    let path = dir.join(name);
    let werr = |source| StateError::Write {
        path: path.display().to_string(),
        source,
    };
    let Some(text) = text else {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(werr(e)),
            _ => Ok(()),
        };
    };
    create_dir(dir).map_err(werr)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text + "\n").map_err(werr)?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(werr)?;
    std::fs::rename(&tmp, &path).map_err(werr)
}

/// A side's pass lock: one `up`, `down` or `run` pass at a time per state directory, from
/// loading the state file to saving it (waits for the holder, at most [`WAIT`]).
pub(crate) async fn lock_pass(state_dir: &Path, name: &str) -> Result<StateLock, LockError> {
    StateLock::acquire(state_dir, name, WAIT).await
}

/// A daemon's run lock: held by the daemon for its lifetime, so that `down` can tell it runs
/// (its next pass would re-apply what `down` removes) and a second daemon is refused.
pub(crate) struct RunLock {
    /// The lock file's name in the state directory.
    pub file: &'static str,
    /// The daemon's command line, for messages.
    pub command: &'static str,
    /// The systemd unit that runs it.
    pub unit: &'static str,
}

impl RunLock {
    /// `down` while the daemon manages the node would be undone by its next pass.
    pub(crate) fn refuse_down(&self, state_dir: &Path) -> Result<(), LockError> {
        self.refuse(
            state_dir,
            &format!(
                "stop {} first, or it re-applies what `down` removes",
                self.unit
            ),
        )
    }

    /// `up` while the daemon manages the node: the daemon's next pass would undo any
    /// difference between the two configurations.
    pub(crate) fn refuse_up(&self, state_dir: &Path) -> Result<(), LockError> {
        self.refuse(
            state_dir,
            &format!(
                "change the config it reads and `systemctl reload {}` instead (its next pass \
                 would undo what `up` changes), or stop it first",
                self.unit
            ),
        )
    }

    fn refuse(&self, state_dir: &Path, fix: &str) -> Result<(), LockError> {
        match lock::probe(state_dir, self.file)? {
            None => Ok(()),
            Some(holder) => Err(LockError::Managed(format!(
                "{} ({}) manages this node (state directory {}); {fix}",
                self.command,
                lock::describe_holder(holder),
                state_dir.display(),
            ))),
        }
    }

    /// Takes the lock for the daemon's lifetime; refused while another daemon holds it.
    /// A command probing the lock (`up`, `down`, `drain`) holds it shared for an instant, so
    /// a few short retries tell that apart from a daemon.
    pub(crate) async fn hold(&self, state_dir: &Path) -> Result<StateLock, LockError> {
        let mut attempt = StateLock::try_acquire(state_dir, self.file)?;
        for _ in 0..10 {
            if attempt.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            attempt = StateLock::try_acquire(state_dir, self.file)?;
        }
        let lock = match attempt {
            Ok(lock) => lock,
            Err(holder) => {
                return Err(LockError::Managed(format!(
                    "another {} ({}) already manages this node (state directory {}); stop it \
                     first: one {} per node",
                    self.command,
                    lock::describe_holder(holder),
                    state_dir.display(),
                    self.command,
                )))
            }
        };
        let kind = self.file.trim_end_matches(".lock");
        let claim = node::claim(kind).map_err(|e| {
            LockError::Managed(format!("claiming the node for {}: {e}", self.command))
        })?;
        match claim {
            Ok(claim) => Ok(lock.with(claim)),
            Err(Some(holder)) if !holder.may_be_rs_agent() => {
                tracing::warn!(
                    "the claim on this node for {} is held by pid {} of uid {}, which is no \
                     rs-agent; carrying on without it",
                    self.command,
                    holder.pid,
                    holder.uid
                );
                Ok(lock)
            }
            Err(holder) => Err(LockError::Managed(format!(
                "another {} ({}) already manages this node with another state directory; \
                 stop it first: one {} per node, with every VIP in its configuration",
                self.command,
                lock::describe_holder(holder.map(|h| h.pid)),
                self.command,
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_dir_that_is_a_file_is_named_as_bad_input() {
        let file = std::env::temp_dir().join(format!("rsa-state-file-{}", std::process::id()));
        std::fs::write(&file, "").expect("file");
        let loaded: Result<Option<u8>, _> = load_json(&file.join("x.json"));
        let e = loaded.expect_err("a file is no state directory");
        assert!(matches!(e, StateError::NotADirectory { .. }), "{e}");
        assert_eq!(
            crate::error::Error::State(e).exit_code(),
            2,
            "bad --state-dir is bad input"
        );
        let made = create_dir(&file.join("sub"));
        assert!(made.is_err_and(|e| e.to_string().contains("is not a directory")));
        let _ = std::fs::remove_file(&file);
    }
}
