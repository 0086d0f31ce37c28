//! A systemd manager for VM checks, used by `units.rs` to run the shipped units under a real
//! service manager. The guest's PID 1 is virtme-ng's init, so systemd runs as PID 1 of a PID
//! namespace of its own (`unshare --pid --fork --mount-proc`, `container=` set: what
//! systemd-nspawn does, on the guest's own root). `systemctl` and `journalctl` run inside its
//! PID and mount namespaces (`nsenter`): systemd refuses clients whose PID it cannot see.

use crate::guest::{ensure, eventually, output};
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// systemd itself (Debian 12: also /usr/lib/systemd/systemd).
pub const SYSTEMD: &str = "/lib/systemd/systemd";

/// A systemd manager as PID 1 of its own PID namespace; killing it (on drop) ends every
/// process of that namespace, the services included.
pub struct Manager {
    unshare: Child,
    /// systemd's PID as this (the outer) namespace numbers it.
    pid: u32,
}

impl Manager {
    /// Starts systemd with `unit_dir` first in its unit path (then the system's units) and
    /// `target` as the boot target; returns once the boot is finished.
    pub fn start(unit_dir: &Path, target: &str, log: &Path) -> Result<Manager, String> {
        let log_file = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err_file = log_file
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child", SYSTEMD])
            .args([
                "--system",
                &format!("--unit={target}"),
                "--log-target=console",
            ])
            .args(["--show-status=no", "--log-color=no"])
            .env("container", "rs-agent-vm")
            .env(
                "SYSTEMD_UNIT_PATH",
                format!("{}:/lib/systemd/system", unit_dir.display()),
            )
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start unshare {SYSTEMD}: {e}"))?;
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let mut manager = Manager { unshare, pid: 0 };
        manager.pid = eventually(Duration::from_secs(10), || {
            fs::read_to_string(&children)
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .ok_or_else(|| format!("unshare started no systemd ({children} is empty)"))
        })?;
        // "running", or "degraded" if some unit of the boot target failed (reported below).
        eventually(Duration::from_secs(60), || {
            let state = manager.systemctl_output(&["is-system-running"])?;
            match state.trim() {
                "running" | "degraded" => Ok(()),
                other => Err(format!(
                    "systemd did not come up: is-system-running says {other:?}"
                )),
            }
        })
        .map_err(|e| format!("{e}\n{}", tail(log, 20)))?;
        Ok(manager)
    }

    /// `prog args` in the manager's PID and mount namespaces.
    pub fn nsenter(&self, prog: &str, args: &[&str]) -> Result<Output, String> {
        let pid = self.pid.to_string();
        let mut all = vec!["--target", pid.as_str(), "--pid", "--mount", prog];
        all.extend_from_slice(args);
        output("nsenter", &all)
    }

    /// `prog args` inside (see [`Manager::nsenter`]); stdout whatever the exit status.
    pub fn inside_output(&self, prog: &str, args: &[&str]) -> Result<String, String> {
        let out = self.nsenter(prog, args)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn systemctl_output(&self, args: &[&str]) -> Result<String, String> {
        self.inside_output("systemctl", args)
    }

    /// `systemctl args`; Err (with the unit's status and journal) unless it exits 0.
    pub fn systemctl(&self, unit: &str, args: &[&str]) -> Result<(), String> {
        let out = self.nsenter("systemctl", args)?;
        ensure(out.status.success(), || {
            format!(
                "`systemctl {}` exited {:?}: {}\n{}",
                args.join(" "),
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim(),
                self.diagnose(unit)
            )
        })
    }

    /// One property of a unit (`systemctl show -p NAME --value`).
    pub fn property(&self, unit: &str, name: &str) -> Result<String, String> {
        let value = self.systemctl_output(&["show", "-p", name, "--value", unit])?;
        Ok(value.trim().to_string())
    }

    /// The unit's journal, message text only.
    pub fn journal(&self, unit: &str) -> Result<String, String> {
        self.inside_output("journalctl", &["--no-pager", "-o", "cat", "-u", unit])
    }

    /// What to print when a unit misbehaves: its status and the end of its journal.
    pub fn diagnose(&self, unit: &str) -> String {
        let status = self
            .systemctl_output(&["status", "--no-pager", "--lines=0", unit])
            .unwrap_or_else(|e| e);
        let journal = self.journal(unit).unwrap_or_else(|e| e);
        let lines: Vec<&str> = journal.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!("--- systemctl status {unit}\n{status}--- journal (last lines)\n{tail}")
    }

    /// The main process's line `key:` of /proc/PID/status, read inside the namespace.
    pub fn main_status(&self, unit: &str, key: &str) -> Result<String, String> {
        let pid = self.property(unit, "MainPID")?;
        let status = self.inside_output("cat", &[&format!("/proc/{pid}/status")])?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| format!("{unit}: no {key} in /proc/{pid}/status (MainPID {pid})"))
    }

    /// The service is up, under a dynamic (non-root) user, with exactly `caps` effective, has
    /// told systemd a status line, and has not been restarted.
    pub fn expect_running(&self, unit: &str, caps: &str) -> Result<(), String> {
        let active = self.property(unit, "ActiveState")?;
        ensure(active == "active", || {
            format!("{unit} is {active}, not active\n{}", self.diagnose(unit))
        })?;
        let uid = self.main_status(unit, "Uid")?;
        ensure(!uid.split_whitespace().any(|u| u == "0"), || {
            format!("{unit} runs with uids {uid}; want a dynamic user, never root")
        })?;
        let eff = self.main_status(unit, "CapEff")?;
        ensure(eff == caps, || {
            format!("{unit}: effective capabilities {eff}, want {caps}")
        })?;
        let status = self.property(unit, "StatusText")?;
        ensure(!status.is_empty(), || {
            format!("{unit} sent no STATUS= line\n{}", self.diagnose(unit))
        })?;
        let restarts = self.property(unit, "NRestarts")?;
        ensure(restarts == "0", || {
            format!(
                "{unit} was restarted {restarts} time(s)\n{}",
                self.diagnose(unit)
            )
        })
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if self.pid != 0 {
            // SAFETY: kill(2) on a PID we started; no memory is involved.
            unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// The last `n` lines of a file, for failure messages.
fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "--- {} (last lines)\n{}",
        path.display(),
        lines[lines.len().saturating_sub(n)..].join("\n")
    )
}

pub fn chmod(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {mode:o} {}: {e}", path.display()))
}

pub fn mkdir(path: &Path) -> Result<(), String> {
    fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
    chmod(path, 0o755)
}
