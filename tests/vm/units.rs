//! The boot units under a real systemd: `units/rs-agent.service` and
//! `units/rs-agent-director.service`, verbatim, started by a systemd manager with all their
//! hardening (dynamic user, two capabilities, read-only system, system-call filter…), then
//! judged from outside as in the other checks: the client's view of ARP and HTTP through the
//! VIP, `ipvsadm-save`, drift repair, reload, health checks, watchdog and stop.
//!
//! The guest's PID 1 is virtme-ng's init, so the check starts systemd as PID 1 of a PID
//! namespace of its own (`unshare --pid --fork --mount-proc`, `container=` set: what
//! systemd-nspawn does, on the guest's own root). Its unit path is a scratch directory holding
//! the two units and a drop-in per unit that changes only what a test must: the binary and
//! config paths (the installed ones do not exist here), the network namespace the service runs
//! in (the lab's real server and director), and a short `WatchdogSec` so that a missing
//! `WATCHDOG=1` would show within the check. `systemctl` and `journalctl` run inside the
//! manager's namespaces (`nsenter`): systemd refuses clients whose PID it cannot see.

use crate::director::{lab_config, wait_weight, write, VIP};
use crate::guest::{ensure, eventually, output, run, Ctx, Lab, Netns};
use crate::Check;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CHECKS: &[Check] = &[Check {
    name: "units_under_systemd",
    run: units_under_systemd,
}];

const SYSTEMD: &str = "/lib/systemd/systemd";
const TARGET: &str = "rs-agent-vm.target";
const RS_UNIT: &str = "rs-agent.service";
const DIRECTOR_UNIT: &str = "rs-agent-director.service";
/// The drop-ins' watchdog: the agents must ping within it (units/ say 30 s).
const WATCHDOG_SEC: u32 = 4;
/// CAP_NET_ADMIN (12) and CAP_NET_RAW (13) as /proc/PID/status prints capability sets.
const CAP_NET_ADMIN: &str = "0000000000001000";
const CAP_NET_ADMIN_RAW: &str = "0000000000003000";

/// A systemd manager as PID 1 of its own PID namespace; killing it (on drop) ends every
/// process of that namespace, the services included.
struct Manager {
    unshare: Child,
    /// systemd's PID as this (the outer) namespace numbers it.
    pid: u32,
}

impl Manager {
    fn start(unit_dir: &Path, log: &Path) -> Result<Manager, String> {
        let log_file = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err_file = log_file
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child", SYSTEMD])
            .args([
                "--system",
                &format!("--unit={TARGET}"),
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

    /// `prog args` in the manager's PID and mount namespaces; stdout whatever the exit status.
    fn inside_output(&self, prog: &str, args: &[&str]) -> Result<String, String> {
        let pid = self.pid.to_string();
        let mut all = vec!["--target", pid.as_str(), "--pid", "--mount", prog];
        all.extend_from_slice(args);
        let out = output("nsenter", &all)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn systemctl_output(&self, args: &[&str]) -> Result<String, String> {
        self.inside_output("systemctl", args)
    }

    /// `systemctl args`; Err (with the unit's status and journal) unless it exits 0.
    fn systemctl(&self, unit: &str, args: &[&str]) -> Result<(), String> {
        let pid = self.pid.to_string();
        let mut all = vec!["--target", pid.as_str(), "--pid", "--mount", "systemctl"];
        all.extend_from_slice(args);
        let out = output("nsenter", &all)?;
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
    fn property(&self, unit: &str, name: &str) -> Result<String, String> {
        let value = self.systemctl_output(&["show", "-p", name, "--value", unit])?;
        Ok(value.trim().to_string())
    }

    /// The unit's journal, message text only.
    fn journal(&self, unit: &str) -> Result<String, String> {
        self.inside_output("journalctl", &["--no-pager", "-o", "cat", "-u", unit])
    }

    /// What to print when a unit misbehaves: its status and the end of its journal.
    fn diagnose(&self, unit: &str) -> String {
        let status = self
            .systemctl_output(&["status", "--no-pager", "--lines=0", unit])
            .unwrap_or_else(|e| e);
        let journal = self.journal(unit).unwrap_or_else(|e| e);
        let lines: Vec<&str> = journal.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!("--- systemctl status {unit}\n{status}--- journal (last lines)\n{tail}")
    }

    /// The main process's line `key:` of /proc/PID/status, read inside the namespace.
    fn main_status(&self, unit: &str, key: &str) -> Result<String, String> {
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
    fn expect_running(&self, unit: &str, caps: &str) -> Result<(), String> {
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

fn chmod(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {mode:o} {}: {e}", path.display()))
}

fn mkdir(path: &Path) -> Result<(), String> {
    fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
    chmod(path, 0o755)
}

/// Copies the repository's unit and adds the test's drop-in (see the module comment).
fn install_unit(units: &Path, unit: &str, exec: &str, netns: &str) -> Result<(), String> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("units")
        .join(unit);
    fs::copy(&source, units.join(unit)).map_err(|e| format!("{}: {e}", source.display()))?;
    let dropin = units.join(format!("{unit}.d"));
    mkdir(&dropin)?;
    let text = format!(
        "[Service]\nExecStart=\nExecStart={exec}\nNetworkNamespacePath=/run/netns/{netns}\n\
         WatchdogSec={WATCHDOG_SEC}s\n"
    );
    let path = dropin.join("vm-test.conf");
    fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn has_vip(ns: &Netns) -> Result<bool, String> {
    Ok(ns
        .ip(&["-4", "addr", "show", "dev", "lo"])?
        .contains(&format!("{VIP}/32")))
}

/// Both units, as shipped, under systemd: `rs-agent.service` on rs1 (enabled, started at boot
/// before a web server) and `rs-agent-director.service` on the director reach READY=1 as
/// dynamic users with only their capabilities; the client gets both real servers through the VIP and only the director
/// answers ARP for it; the real-server unit repairs drift (journal says so); reload applies a
/// weight change; a stopped web server is quiesced; the watchdog is fed; stop leaves the node
/// configured.
fn units_under_systemd(ctx: &Ctx) -> Result<(), String> {
    for tool in ["unshare", "nsenter", "systemctl", "journalctl", SYSTEMD] {
        ensure(
            Path::new(tool).is_file() || run("sh", &["-c", &format!("command -v {tool}")]).is_ok(),
            || format!("{tool} missing in the guest (apt install systemd util-linux)"),
        )?;
    }
    let mut lab = Lab::build("units", ctx)?;
    ctx.agent(&lab.rs2.ns, &["up", "--vip", VIP])?;

    // "Install": binary, configs and units where a dynamic user can read them.
    let root = ctx.scratch.clone();
    mkdir(&root)?;
    let (bin, etc, units) = (root.join("bin"), root.join("etc"), root.join("units"));
    for dir in [&bin, &etc, &units] {
        mkdir(dir)?;
    }
    let agent = bin.join("rs-agent");
    fs::copy(&ctx.agent, &agent).map_err(|e| format!("{}: {e}", ctx.agent.display()))?;
    chmod(&agent, 0o755)?;
    let rs_cfg = etc.join("real-server.toml");
    fs::write(&rs_cfg, format!("[real_server]\nvips = [\"{VIP}\"]\n"))
        .map_err(|e| format!("{}: {e}", rs_cfg.display()))?;
    let http_check = Some("type = \"http\"\npath = \"/\"");
    let dir_cfg = PathBuf::from(write(ctx, "etc/director.toml", &lab_config(http_check, 1))?);
    for cfg in [&rs_cfg, &dir_cfg] {
        chmod(cfg, 0o644)?;
    }
    let agent = agent.display();
    install_unit(
        &units,
        RS_UNIT,
        &format!("{agent} run --config {}", rs_cfg.display()),
        &lab.rs1.ns.name,
    )?;
    install_unit(
        &units,
        DIRECTOR_UNIT,
        &format!("{agent} director run --config {}", dir_cfg.display()),
        &lab.director.ns.name,
    )?;
    // The boot: the real-server unit, enabled as its [Install] section says (a wants link),
    // and a stand-in `nginx.service` that records what it finds when it starts. rs-agent.service
    // says Before=nginx.service, and Type=notify makes "started" mean READY=1 (applied).
    let saw = root.join("nginx-saw");
    let nginx = units.join("nginx.service");
    fs::write(
        &nginx,
        format!(
            "[Unit]\nDescription=stand-in web server\n[Service]\nType=oneshot\nRemainAfterExit=yes\n\
             ExecStart=/bin/sh -c 'ip -n {} -4 addr show dev lo >{}'\n",
            lab.rs1.ns.name,
            saw.display()
        ),
    )
    .map_err(|e| format!("{}: {e}", nginx.display()))?;
    let target = units.join(TARGET);
    fs::write(
        &target,
        "[Unit]\nDescription=rs-agent VM check\nWants=systemd-journald.socket nginx.service\n",
    )
    .map_err(|e| format!("{}: {e}", target.display()))?;
    let wants = units.join(format!("{TARGET}.wants"));
    mkdir(&wants)?;
    std::os::unix::fs::symlink(units.join(RS_UNIT), wants.join(RS_UNIT))
        .map_err(|e| format!("{}: {e}", wants.display()))?;

    // After the lab: the manager's mount namespace must see the lab's /run/netns mounts.
    let manager = Manager::start(&units, &root.join("systemd.log"))?;
    let started = Instant::now();

    // Real server, started at boot: up before the web server, which found the VIP bound; the
    // client sees no ARP answer for the VIP yet.
    manager.expect_running(RS_UNIT, CAP_NET_ADMIN)?;
    let found = fs::read_to_string(&saw).unwrap_or_default();
    ensure(found.contains(&format!("{VIP}/32")), || {
        format!("nginx.service started before {RS_UNIT} had bound {VIP}: it saw {found:?}")
    })?;
    let vip = VIP.parse().map_err(|e| format!("{VIP}: {e}"))?;
    let answers = lab.client.arp_answers(vip, 2)?;
    ensure(answers.is_empty(), || {
        format!("before the director, ARP for {VIP} answered by {answers:?}; want nobody")
    })?;

    // Director: READY=1 after the first apply; both real servers through the VIP.
    manager.systemctl(DIRECTOR_UNIT, &["start", DIRECTOR_UNIT])?;
    manager.expect_running(DIRECTOR_UNIT, CAP_NET_ADMIN_RAW)?;
    let mut seen = Vec::new();
    for _ in 0..6 {
        let name = lab.get_vip()?;
        if !seen.contains(&name) {
            seen.push(name);
        }
    }
    seen.sort();
    ensure(seen == ["rs1", "rs2"], || {
        format!("through the VIP the client reached {seen:?}; want rs1 and rs2")
    })?;
    let answers = lab.client.arp_answers(vip, 2)?;
    ensure(answers == [lab.director.mac.clone()], || {
        format!(
            "ARP for {VIP} answered by {answers:?}; want only the director ({})",
            lab.director.mac
        )
    })?;

    // The operator's view while both run: `status` as root, with the default state directory
    // (the units' RuntimeDirectory), finds what the units applied and nothing missing.
    let agent_bin = ctx.agent.to_string_lossy();
    lab.rs1.ns.run(&agent_bin, &["status"])?;
    lab.director.ns.run(&agent_bin, &["director", "status"])?;

    // Drift on rs1, with both units running: the VIP deleted, arp_ignore reset.
    lab.rs1
        .ns
        .ip(&["addr", "del", &format!("{VIP}/32"), "dev", "lo"])?;
    eventually(Duration::from_secs(10), || {
        ensure(has_vip(&lab.rs1.ns)?, || {
            format!("{RS_UNIT} did not put back {VIP} on rs1's lo within 10 s")
        })
    })
    .map_err(|e| format!("{e}\n{}", manager.diagnose(RS_UNIT)))?;
    lab.rs1
        .ns
        .sysctls(&[("net.ipv4.conf.eth0.arp_ignore", "0")])?;
    eventually(Duration::from_secs(10), || {
        let v = lab
            .rs1
            .ns
            .run("sysctl", &["-n", "net.ipv4.conf.eth0.arp_ignore"])?;
        ensure(v.trim() == "1", || {
            format!(
                "{RS_UNIT} left net.ipv4.conf.eth0.arp_ignore at {}",
                v.trim()
            )
        })
    })
    .map_err(|e| format!("{e}\n{}", manager.diagnose(RS_UNIT)))?;
    let journal = manager.journal(RS_UNIT)?;
    let repairs = journal.lines().filter(|l| l.contains("repaired")).count();
    ensure(repairs >= 2, || {
        format!("{RS_UNIT}'s journal shows {repairs} repair line(s), want 2:\n{journal}")
    })?;

    // Real-server reload: the ARP method becomes nft (the agent runs `nft` from inside the
    // sandbox); the client still sees only the director answer for the VIP.
    fs::write(
        &rs_cfg,
        format!("[real_server]\nvips = [\"{VIP}\"]\narp = \"nft\"\n"),
    )
    .map_err(|e| format!("{}: {e}", rs_cfg.display()))?;
    manager.systemctl(RS_UNIT, &["reload", RS_UNIT])?;
    eventually(Duration::from_secs(10), || {
        lab.rs1
            .ns
            .run("nft", &["list", "table", "arp", "rs_agent"])
            .map(drop)
    })
    .map_err(|e| {
        format!(
            "after reload with arp = \"nft\": {e}\n{}",
            manager.diagnose(RS_UNIT)
        )
    })?;
    let answers = lab.client.arp_answers(vip, 2)?;
    ensure(answers == [lab.director.mac.clone()], || {
        format!("with the nft method ARP for {VIP} answered by {answers:?}; want the director only")
    })?;

    // Director reload: rs1's weight 1 → 3, through `systemctl reload` (ExecReload: SIGHUP).
    write(ctx, "etc/director.toml", &lab_config(http_check, 3))?;
    manager.systemctl(DIRECTOR_UNIT, &["reload", DIRECTOR_UNIT])?;
    wait_weight(
        &lab.director.ns,
        "192.0.2.11:80",
        3,
        Duration::from_secs(10),
        "after systemctl reload",
    )?;

    // Health checks from inside the sandbox: rs2's web server stops → weight 0.
    lab.stop_http(1);
    wait_weight(
        &lab.director.ns,
        "192.0.2.12:80",
        0,
        Duration::from_secs(15),
        "after rs2's web server stopped",
    )?;

    // The journal has each line at its level's priority: the DOWN warning is in
    // `journalctl -p warning`, the info lines are not.
    let warnings = manager.inside_output(
        "journalctl",
        &[
            "--no-pager",
            "-o",
            "cat",
            "-p",
            "warning",
            "-u",
            DIRECTOR_UNIT,
        ],
    )?;
    ensure(
        warnings
            .lines()
            .any(|l| l.contains("real server 192.0.2.12:80 ") && l.contains("is DOWN"))
            && !warnings.contains(" INFO "),
        || {
            format!("journalctl -p warning -u {DIRECTOR_UNIT} shows:\n{warnings}\nwant the DOWN line and no INFO line")
        },
    )?;

    // Watchdog: two periods have passed; a unit that did not send WATCHDOG=1 would have been
    // killed and restarted by now (expect_running checks NRestarts).
    let wait = Duration::from_secs(2 * u64::from(WATCHDOG_SEC)).saturating_sub(started.elapsed());
    std::thread::sleep(wait);
    for (unit, caps) in [(RS_UNIT, CAP_NET_ADMIN), (DIRECTOR_UNIT, CAP_NET_ADMIN_RAW)] {
        manager.expect_running(unit, caps)?;
        let fed = manager.property(unit, "WatchdogTimestampMonotonic")?;
        ensure(fed != "0" && !fed.is_empty(), || {
            format!("{unit}: systemd recorded no WATCHDOG=1 (WatchdogTimestampMonotonic={fed})")
        })?;
    }

    // A crash: SIGKILL. Restart=on-failure brings the agent back, which takes over the node
    // it left configured (its state file, under the same user) and repairs drift again.
    let killed = manager.property(RS_UNIT, "MainPID")?;
    manager.inside_output("kill", &["-KILL", &killed])?;
    eventually(Duration::from_secs(20), || {
        let (restarts, active, pid) = (
            manager.property(RS_UNIT, "NRestarts")?,
            manager.property(RS_UNIT, "ActiveState")?,
            manager.property(RS_UNIT, "MainPID")?,
        );
        ensure(restarts == "1" && active == "active" && pid != killed, || {
            format!("after SIGKILL of {killed}: NRestarts={restarts} ActiveState={active} MainPID={pid}")
        })
    })
    .map_err(|e| format!("{e}\n{}", manager.diagnose(RS_UNIT)))?;
    lab.rs1
        .ns
        .ip(&["addr", "del", &format!("{VIP}/32"), "dev", "lo"])?;
    eventually(Duration::from_secs(10), || {
        ensure(has_vip(&lab.rs1.ns)?, || {
            format!("the restarted {RS_UNIT} did not put back {VIP} on rs1's lo within 10 s")
        })
    })
    .map_err(|e| format!("{e}\n{}", manager.diagnose(RS_UNIT)))?;

    // Stop: a clean exit, and the node stays configured (only `down` unconfigures).
    manager.systemctl(RS_UNIT, &["stop", RS_UNIT])?;
    let result = manager.property(RS_UNIT, "Result")?;
    ensure(result == "success", || {
        format!(
            "{RS_UNIT} stopped with Result={result}\n{}",
            manager.diagnose(RS_UNIT)
        )
    })?;
    ensure(has_vip(&lab.rs1.ns)?, || {
        format!("after systemctl stop {RS_UNIT}, rs1's lo lost {VIP}")
    })?;
    manager.systemctl(DIRECTOR_UNIT, &["stop", DIRECTOR_UNIT])?;
    let result = manager.property(DIRECTOR_UNIT, "Result")?;
    ensure(result == "success", || {
        format!(
            "{DIRECTOR_UNIT} stopped with Result={result}\n{}",
            manager.diagnose(DIRECTOR_UNIT)
        )
    })?;
    let name = lab.get_vip()?;
    ensure(name == "rs1", || {
        format!("after stopping {DIRECTOR_UNIT} the VIP answered {name:?}; want rs1 (table kept)")
    })?;
    // `down`, run by hand, undoes what the real-server unit's agent did.
    lab.rs1.ns.run(&agent_bin, &["down"])?;
    ensure(!has_vip(&lab.rs1.ns)?, || {
        format!("`rs-agent down` after the unit stopped left {VIP} on rs1's lo")
    })?;
    let tables = lab.rs1.ns.run("nft", &["list", "tables"])?;
    ensure(!tables.contains("rs_agent"), || {
        format!("`rs-agent down` left an nft table: {tables}")
    })?;
    drop(manager);
    Ok(())
}
