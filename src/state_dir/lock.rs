//! Locks in the state directory, so that two rs-agent processes never interleave their
//! observe → plan → apply passes (each would record only its own ownership, and the last
//! writer's state file would forget the other's changes).
//!
//! - A *pass lock* (`real-server.lock`, `director.lock`) is held exclusively for one `up`, one
//!   `down` or one pass of `run`; a second invocation waits for it, up to [`WAIT`].
//! - The *run locks* (`real-server-run.lock`, `director-run.lock`) are held by `run` and
//!   `director run` for their lifetime: `down` tests them and refuses to undo what the daemon
//!   would immediately re-apply (one daemon per node whatever the state directory: `node.rs`).
//!
//! Both are `flock(2)` locks, released by the kernel when the process ends however it ends,
//! so a killed process never leaves a stale lock. Each holder writes its pid into the file,
//! for the messages.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a command waits for another's pass to finish.
pub const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// The real-server pass lock's file name.
pub const REAL_SERVER: &str = "real-server.lock";
/// The director pass lock's file name.
pub const DIRECTOR: &str = "director.lock";
/// Held by `rs-agent run` while it runs.
pub const REAL_SERVER_RUN: &str = "real-server-run.lock";
/// Held by `rs-agent director run` while it runs.
pub const DIRECTOR_RUN: &str = "director-run.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: cannot open the lock file: {source}; check --state-dir is writable")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path}: another rs-agent ({holder}) has held this lock for {secs} s; wait for it to \
         finish, or stop it"
    )]
    Timeout {
        path: String,
        holder: String,
        secs: u64,
    },
    /// A daemon manages the node (its run lock or its claim on the node is held): the
    /// message names it and what to do instead.
    #[error("{0}")]
    Managed(String),
    #[error("{path}: cannot lock: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
}

/// An exclusive `flock` on a file in the state directory; released on drop.
#[derive(Debug)]
pub struct StateLock {
    file: File,
    /// A daemon's claim on the node, held as long as its run lock.
    node: Option<super::node::NodeClaim>,
}

/// `flock(LOCK_EX | LOCK_NB)`: Ok(true) when taken, Ok(false) when someone else holds it.
fn try_lock(file: &File) -> std::io::Result<bool> {
    try_flock(file, libc::LOCK_EX)
}

fn try_flock(file: &File, mode: i32) -> std::io::Result<bool> {
    // SAFETY: flock on a file descriptor this function borrows; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(false),
        Some(libc::EINTR) => try_flock(file, mode),
        _ => Err(e),
    }
}

/// Whether another process holds `dir/name` (exclusively) right now: `Some(its pid, if it
/// wrote one)`. Probes with a *shared* lock, released at once, so that any number of probes
/// (concurrent `up`s asking whether `run` runs) never see each other as the holder.
pub fn probe(dir: &Path, name: &str) -> Result<Option<Option<u32>>, LockError> {
    let path = dir.join(name);
    let file = open(&path)?;
    match try_flock(&file, libc::LOCK_SH) {
        Ok(true) => Ok(None),
        Ok(false) => Ok(Some(read_holder(&path))),
        Err(source) => Err(LockError::Lock {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Opens (creating) the lock file; read-only when it is someone else's file we may not write
/// (a lock needs no write access; only the pid is then not recorded).
fn open(path: &Path) -> Result<File, LockError> {
    let open_err = |source| LockError::Open {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        super::create_dir(dir).map_err(open_err)?;
    }
    let rw = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path);
    match rw {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            File::open(path).map_err(open_err)
        }
        Err(e) => Err(open_err(e)),
    }
}

/// Who holds a lock, from the pid its holder wrote: "pid N" or "holder unknown".
pub fn describe_holder(holder: Option<u32>) -> String {
    holder.map_or_else(|| "holder unknown".to_string(), |pid| format!("pid {pid}"))
}

fn read_holder(path: &Path) -> Option<u32> {
    read_holder_line(path)?.0
}

/// A lock holder's pid and the word it noted after it, as far as its file says.
pub type Holder = (Option<u32>, Option<String>);

/// The holder's line: its pid and what it added after it (see [`StateLock::note`]).
fn read_holder_line(path: &Path) -> Option<Holder> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    let mut words = text.split_whitespace();
    let pid = words.next().and_then(|w| w.parse().ok());
    Some((pid, words.next().map(str::to_string)))
}

/// Whether `dir/name` is held by another process right now, and its holder's line (see
/// [`probe`]).
pub fn holder(dir: &Path, name: &str) -> Result<Option<Holder>, LockError> {
    Ok(probe(dir, name)?.map(|_| read_holder_line(&dir.join(name)).unwrap_or((None, None))))
}

fn record_pid(file: &mut File) {
    let pid = std::process::id();
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{pid}"));
}

impl StateLock {
    /// This lock, holding `claim` as long as itself.
    pub(crate) fn with(mut self, claim: super::node::NodeClaim) -> Self {
        self.node = Some(claim);
        self
    }

    /// Rewrites the holder's line as `PID WORD` (e.g. `run`'s /health address), for others.
    pub fn note(&mut self, word: &str) {
        let pid = std::process::id();
        let file = &mut self.file;
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{pid} {word}"));
    }

    /// Takes `dir/name`, waiting up to `wait` for the current holder (without blocking the
    /// async runtime: the health endpoint keeps answering meanwhile).
    pub async fn acquire(dir: &Path, name: &str, wait: Duration) -> Result<StateLock, LockError> {
        let path = dir.join(name);
        let mut file = open(&path)?;
        let start = Instant::now();
        loop {
            match try_lock(&file) {
                Ok(true) => {
                    record_pid(&mut file);
                    return Ok(StateLock { file, node: None });
                }
                Ok(false) if start.elapsed() < wait => tokio::time::sleep(POLL).await,
                Ok(false) => {
                    return Err(LockError::Timeout {
                        holder: describe_holder(read_holder(&path)),
                        path: path.display().to_string(),
                        secs: wait.as_secs(),
                    })
                }
                Err(source) => {
                    return Err(LockError::Lock {
                        path: path.display().to_string(),
                        source,
                    })
                }
            }
        }
    }

    /// Takes `dir/name` without waiting: `Ok(Err(holder))` when another process holds it.
    pub fn try_acquire(
        dir: &Path,
        name: &str,
    ) -> Result<Result<StateLock, Option<u32>>, LockError> {
        let path: PathBuf = dir.join(name);
        let mut file = open(&path)?;
        match try_lock(&file) {
            Ok(true) => {
                record_pid(&mut file);
                Ok(Ok(StateLock { file, node: None }))
            }
            Ok(false) => Ok(Err(read_holder(&path))),
            Err(source) => Err(LockError::Lock {
                path: path.display().to_string(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("rsa-lock-unit-{tag}-{}", std::process::id()))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_second_holder_waits_then_times_out_naming_the_first() {
        let d = dir("wait");
        let first = StateLock::acquire(&d, "x.lock", WAIT).await.expect("first");
        let err = StateLock::acquire(&d, "x.lock", Duration::from_millis(100))
            .await
            .expect_err("held");
        let msg = err.to_string();
        let pid = std::process::id();
        assert!(
            msg.contains("x.lock") && msg.contains(&format!("pid {pid}")),
            "{msg}"
        );
        assert!(matches!(StateLock::try_acquire(&d, "x.lock"), Ok(Err(Some(p))) if p == pid));
        drop(first);
        assert!(StateLock::acquire(&d, "x.lock", Duration::ZERO)
            .await
            .is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn probes_do_not_see_each_other_but_see_the_holder() {
        let d = dir("probe");
        // Two probes at once (a shared lock held by the first): neither is "the holder".
        let path = d.join("run.lock");
        assert_eq!(probe(&d, "run.lock").expect("probe"), None);
        let other = open(&path).expect("open");
        assert!(try_flock(&other, libc::LOCK_SH).expect("flock"));
        assert_eq!(probe(&d, "run.lock").expect("probe"), None);
        drop(other);
        // The daemon's exclusive lock is seen, with its pid.
        let held = StateLock::acquire(&d, "run.lock", WAIT)
            .await
            .expect("hold");
        assert_eq!(
            probe(&d, "run.lock").expect("probe"),
            Some(Some(std::process::id()))
        );
        drop(held);
        assert_eq!(probe(&d, "run.lock").expect("probe"), None);
        let _ = std::fs::remove_dir_all(&d);
    }
}
