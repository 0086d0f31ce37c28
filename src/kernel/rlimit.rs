//! This process's own kernel knobs: the open-file limit (RLIMIT_NOFILE) — raised for kept
//! check connections, put back in forked children — and timer slack (PR_SET_TIMERSLACK).
//!
//! Owns only the system calls and the limit from before the raise; it must not decide how
//! many files anything needs (its callers say) nor log or warn (they do).

use std::sync::atomic::{AtomicU64, Ordering};

/// Lets the kernel delay this process's timer wakeups by up to 5 ms (PR_SET_TIMERSLACK; the
/// default is 50 µs), so that checks due within a few milliseconds of each other run in one
/// wakeup instead of one each: at 2,000 checks a second this cut the checker's CPU by about a
/// quarter (bench/check-native.sh), for at most 5 ms of lateness on a 1 s check interval.
pub fn coalesce_timers() {
    const SLACK_NS: libc::c_ulong = 5_000_000;
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only this thread's timers
    // (tokio's current-thread runtime runs every check on it).
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, SLACK_NS, 0, 0, 0) };
}

/// The soft open-file limit before `fit_fd_limit` raised it (0: never raised).
static STARTING_FD_LIMIT: AtomicU64 = AtomicU64::new(0);

fn fd_limit() -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a local rlimit.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim)
}

/// Raises the soft open-file limit to `needed` (at most the hard limit) when it is lower, and
/// returns the soft limit now in force. Checks with `reuse_connection` hold a connection per
/// real server between checks, and the soft limit is often 1,024 (systemd's default for
/// services, whose hard limit is 524,288): 2,000 kept connections would otherwise fail with
/// "Too many open files".
pub fn fit_fd_limit(needed: u64) -> u64 {
    let Some(lim) = fd_limit() else { return 0 };
    let want = needed.min(lim.rlim_max);
    if want <= lim.rlim_cur {
        return lim.rlim_cur;
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        ..lim
    };
    // SAFETY: setrlimit with a valid pointer to a local rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return lim.rlim_cur;
    }
    let _ =
        STARTING_FD_LIMIT.compare_exchange(0, lim.rlim_cur, Ordering::Relaxed, Ordering::Relaxed);
    want
}

/// In a child process (a command check), between fork and exec: puts the soft open-file limit
/// back to what it was before `fit_fd_limit` raised it, so that the raise made for kept
/// connections is not inherited. Only system calls: safe after fork.
pub fn restore_fd_limit_in_child() -> std::io::Result<()> {
    let start = STARTING_FD_LIMIT.load(Ordering::Relaxed);
    if start == 0 {
        return Ok(());
    }
    let mut lim = fd_limit().ok_or_else(std::io::Error::last_os_error)?;
    lim.rlim_cur = start.min(lim.rlim_max);
    // SAFETY: setrlimit with a valid pointer to a local rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    /// The soft limit is raised only as far as needed and never above the hard one, and a
    /// child started with `restore_fd_limit_in_child` gets the limit from before the raise.
    #[test]
    fn the_soft_limit_is_raised_as_far_as_needed_and_not_inherited() {
        // Lowered first (always allowed) where it equals the hard one, so that there is room
        // to raise.
        let mut lim = fd_limit().expect("getrlimit");
        lim.rlim_cur = lim.rlim_cur.min((lim.rlim_max / 2).max(1024));
        // SAFETY: setrlimit with a valid pointer to a local rlimit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
        assert_eq!(fit_fd_limit(0), lim.rlim_cur);
        assert_eq!(fit_fd_limit(lim.rlim_cur), lim.rlim_cur);
        let want = (lim.rlim_cur + 1).min(lim.rlim_max);
        assert_eq!(fit_fd_limit(lim.rlim_cur + 1), want);
        assert_eq!(fd_limit().map(|l| l.rlim_cur), Some(want));
        if want > lim.rlim_cur {
            assert_eq!(STARTING_FD_LIMIT.load(Ordering::Relaxed), lim.rlim_cur);
        }
        let mut child = std::process::Command::new("/bin/sh");
        child
            .args(["-c", &format!("[ \"$(ulimit -n)\" = {} ]", lim.rlim_cur)])
            .stdin(std::process::Stdio::null());
        // SAFETY: the hook only makes system calls, which are safe between fork and exec.
        unsafe {
            child.pre_exec(restore_fd_limit_in_child);
        }
        let status = child.status().expect("runs /bin/sh");
        assert!(status.success(), "the child saw another open-file limit");
    }
}
