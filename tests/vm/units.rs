//! The boot units under a real systemd: `units/rs-agent.service` and
//! `units/rs-agent-director.service`, verbatim, started by a systemd manager with all their
//! hardening (dynamic user, two capabilities, read-only system, system-call filter…), then
//! judged from outside as in the other checks: the client's view of ARP and HTTP through the
//! VIP, `ipvsadm-save`, drift repair, reload, health checks, watchdog and stop.
//!
//! The manager is systemd as PID 1 of a PID namespace of its own (`systemd.rs`). Its unit path
//! is a scratch directory holding the two units and a drop-in per unit that changes only what
//! a test must: the binary and config paths (the installed ones do not exist here), the
//! network namespace the service runs in (the lab's real server and director), a short
//! `WatchdogSec` so that a missing `WATCHDOG=1` would show within the check, and no default
//! dependencies (the guest already booted: sysinit.target's services must not run again).

use crate::director::{lab_config, wait_weight, write, VIP};
use crate::guest::{ensure, eventually, run, write_file, Ctx, Lab, Netns};
use crate::systemd::{chmod, mkdir, Manager, SYSTEMD};
use crate::Check;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const CHECKS: &[Check] = &[Check {
    name: "units_under_systemd",
    run: units_under_systemd,
}];

const TARGET: &str = "rs-agent-vm.target";
const RS_UNIT: &str = "rs-agent.service";
const DIRECTOR_UNIT: &str = "rs-agent-director.service";
/// The drop-ins' watchdog: the agents must ping within it (units/ say 30 s).
const WATCHDOG_SEC: u32 = 10;
/// CAP_NET_ADMIN (12) and CAP_NET_RAW (13) as /proc/PID/status prints capability sets.
const CAP_NET_ADMIN: &str = "0000000000001000";
const CAP_NET_ADMIN_RAW: &str = "0000000000003000";

/// Where the units expect the binary and the config (README, "Boot units").
const INSTALLED_AGENT: &str = "/usr/local/sbin/rs-agent";
const INSTALLED_CONFIG: &str = "/etc/rs-agent/rs-agent.toml";

/// Copies the repository's unit and adds the test's drop-in (see the module comment). The
/// drop-in's ExecStart= and ExecReload= are the unit's own lines with the installed paths
/// replaced by `agent` and `config`, so the commands under test are the shipped ones.
fn install_unit(
    units: &Path,
    unit: &str,
    agent: &Path,
    config: &Path,
    netns: &str,
) -> Result<(), String> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("units")
        .join(unit);
    let shipped = fs::read_to_string(&source).map_err(|e| format!("{}: {e}", source.display()))?;
    write_file(&units.join(unit), &shipped)?;
    let mut exec = String::new();
    for key in ["ExecStart=", "ExecReload="] {
        exec.push_str(&format!("{key}\n"));
        for line in shipped.lines().filter(|l| l.starts_with(key)) {
            let local = line
                .replace(INSTALLED_AGENT, &agent.to_string_lossy())
                .replace(INSTALLED_CONFIG, &config.to_string_lossy());
            ensure(key != "ExecStart=" || local != line, || {
                format!("{unit}: {line:?} does not run {INSTALLED_AGENT}")
            })?;
            exec.push_str(&format!("{local}\n"));
        }
    }
    let dropin = units.join(format!("{unit}.d"));
    mkdir(&dropin)?;
    let text = format!(
        "[Unit]\nDefaultDependencies=no\n\
         [Service]\n{exec}NetworkNamespacePath=/run/netns/{netns}\nWatchdogSec={WATCHDOG_SEC}s\n"
    );
    write_file(&dropin.join("vm-test.conf"), &text)
}

fn has_vip(ns: &Netns) -> Result<bool, String> {
    Ok(ns
        .ip(&["-4", "addr", "show", "dev", "lo"])?
        .contains(&format!("{VIP}/32")))
}

/// Early-boot services of the guest's systemd that must not run in the check's manager.
const BOOT_SERVICES_MASKED: &[&str] = &[
    "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-setup-dev-early.service",
    "systemd-tmpfiles-clean.timer",
    "systemd-sysctl.service",
    "systemd-modules-load.service",
    "systemd-binfmt.service",
    "systemd-udev-trigger.service",
    "local-fs.target",
];

/// The director's HTTP check (lab_config's service at 1 s, fall 2, rise 2).
const HTTP_CHECK: Option<&str> = Some("type = \"http\"\npath = \"/\"");

/// What the check installs, where a dynamic user can read it.
struct Installed {
    /// The real server's config (`[real_server]`).
    rs_cfg: PathBuf,
    /// Written by the stand-in web server when it starts: what rs1's `lo` held then.
    saw: PathBuf,
    units: PathBuf,
}

/// Both units, as shipped, under systemd: `rs-agent.service` on rs1 (enabled, started at boot
/// before a web server) and `rs-agent-director.service` on the director reach READY=1 as one
/// dynamic user with only their capabilities; the client gets both real servers through the
/// VIP and only the director answers ARP for it; drift is repaired and journaled at the right
/// priority; reloads apply; the watchdog is fed; a crash is restarted; stop leaves the node
/// configured and `down` then unconfigures it.
fn units_under_systemd(ctx: &Ctx) -> Result<(), String> {
    for tool in ["unshare", "nsenter", "systemctl", "journalctl", SYSTEMD] {
        ensure(
            Path::new(tool).is_file() || run("sh", &["-c", &format!("command -v {tool}")]).is_ok(),
            || format!("{tool} missing in the guest (apt install systemd util-linux)"),
        )?;
    }
    let mut lab = Lab::build("units", ctx)?;
    ctx.agent(&lab.rs2.ns, &["up", "--vip", VIP])?;
    let installed = install(ctx, &lab)?;
    // After the lab: the manager's mount namespace must see the lab's /run/netns mounts.
    let manager = Manager::start(&installed.units, TARGET, &ctx.scratch.join("systemd.log"))?;
    let started = Instant::now();

    real_server_at_boot(&manager, &lab, &installed)?;
    director_started(&manager, &lab)?;
    // The operator's view while both run: `status` as root, with the default state directory
    // (the units' RuntimeDirectory), finds what the units applied and nothing missing.
    let agent = ctx.agent.to_string_lossy();
    for (ns, args, verdict) in [
        (
            &lab.rs1.ns,
            &["status"][..],
            "OK: the node is correctly configured",
        ),
        (
            &lab.director.ns,
            &["director", "status"],
            "OK: the IPVS table and VIPs match",
        ),
    ] {
        let said = ns.run(&agent, args)?;
        ensure(said.contains(verdict), || {
            format!("{args:?} as root: {said}")
        })?;
    }
    drift_repaired(&manager, &lab)?;
    reloads_applied(ctx, &manager, &lab, &installed)?;
    quiesce_journaled(&manager, &mut lab)?;
    watchdog_fed(&manager, started)?;
    crash_restarted(&manager, &lab)?;
    stop_keeps_config(&manager, &lab)?;
    drop(manager);
    // `down`, run by hand, undoes what the real-server unit's agent did.
    lab.rs1.ns.run(&agent, &["down"])?;
    ensure(!has_vip(&lab.rs1.ns)?, || {
        format!("`rs-agent down` after the unit stopped left {VIP} on rs1's lo")
    })?;
    let tables = lab.rs1.ns.run("nft", &["list", "tables"])?;
    ensure(!tables.contains("rs_agent"), || {
        format!("`rs-agent down` left an nft table: {tables}")
    })
}

/// Binary, configs, the two units with their drop-ins, the stand-in web server and the boot
/// target, with the real-server unit enabled as its [Install] section says (a wants link).
fn install(ctx: &Ctx, lab: &Lab) -> Result<Installed, String> {
    let root = &ctx.scratch;
    mkdir(root)?;
    let (bin, etc, units) = (root.join("bin"), root.join("etc"), root.join("units"));
    for dir in [&bin, &etc, &units] {
        mkdir(dir)?;
    }
    let agent = bin.join("rs-agent");
    fs::copy(&ctx.agent, &agent).map_err(|e| format!("{}: {e}", ctx.agent.display()))?;
    chmod(&agent, 0o755)?;
    let rs_cfg = etc.join("real-server.toml");
    write_file(&rs_cfg, &format!("[real_server]\nvips = [\"{VIP}\"]\n"))?;
    let dir_cfg = PathBuf::from(write(ctx, "etc/director.toml", &lab_config(HTTP_CHECK, 1))?);
    for cfg in [&rs_cfg, &dir_cfg] {
        chmod(cfg, 0o644)?;
    }
    install_unit(&units, RS_UNIT, &agent, &rs_cfg, &lab.rs1.ns.name)?;
    install_unit(
        &units,
        DIRECTOR_UNIT,
        &agent,
        &dir_cfg,
        &lab.director.ns.name,
    )?;
    // rs-agent.service says Before=nginx.service, and Type=notify makes "started" mean
    // READY=1 (applied): the stand-in must find the VIP bound.
    let saw = root.join("nginx-saw");
    write_file(
        &units.join("nginx.service"),
        &format!(
            "[Unit]\nDescription=stand-in web server\nDefaultDependencies=no\n\
             [Service]\nType=oneshot\nRemainAfterExit=yes\n\
             ExecStart=/bin/sh -c 'ip -n {} -4 addr show dev lo >{}'\n",
            lab.rs1.ns.name,
            saw.display()
        ),
    )?;
    write_file(
        &units.join(TARGET),
        "[Unit]\nDescription=rs-agent VM check\nDefaultDependencies=no\n\
         Wants=systemd-journald.socket nginx.service\n",
    )?;
    // The boot must not run the guest's early-boot services: systemd-tmpfiles would empty
    // /tmp (where a CI clone's binaries live), systemd-sysctl would reset kernel settings.
    // Nothing pulls them in (no default dependencies above); masked as well, to be sure.
    for unit in BOOT_SERVICES_MASKED {
        std::os::unix::fs::symlink("/dev/null", units.join(unit))
            .map_err(|e| format!("masking {unit}: {e}"))?;
    }
    let wants = units.join(format!("{TARGET}.wants"));
    mkdir(&wants)?;
    std::os::unix::fs::symlink(units.join(RS_UNIT), wants.join(RS_UNIT))
        .map_err(|e| format!("{}: {e}", wants.display()))?;
    Ok(Installed { rs_cfg, saw, units })
}

/// Started at boot, before the web server, which found the VIP bound; nobody answers ARP
/// for the VIP yet (no director).
fn real_server_at_boot(manager: &Manager, lab: &Lab, installed: &Installed) -> Result<(), String> {
    manager.expect_running(RS_UNIT, CAP_NET_ADMIN)?;
    let found = fs::read_to_string(&installed.saw).unwrap_or_default();
    ensure(found.contains(&format!("{VIP}/32")), || {
        format!("nginx.service started before {RS_UNIT} had bound {VIP}: it saw {found:?}")
    })?;
    let answers = lab.client.arp_answers(Lab::VIP, 2)?;
    ensure(answers.is_empty(), || {
        format!("before the director, ARP for {VIP} answered by {answers:?}; want nobody")
    })
}

/// `systemctl start` returns after READY=1 (the first apply): both real servers through the
/// VIP, and only the director answers ARP for it.
fn director_started(manager: &Manager, lab: &Lab) -> Result<(), String> {
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
    only_director_answers(lab, "with both units running")
}

fn only_director_answers(lab: &Lab, when: &str) -> Result<(), String> {
    let answers = lab.client.arp_answers(Lab::VIP, 2)?;
    ensure(answers == [lab.director.mac.clone()], || {
        format!(
            "{when}: ARP for {VIP} answered by {answers:?}; want only the director ({})",
            lab.director.mac
        )
    })
}

/// Waits until rs1's `lo` holds the VIP again (after it was deleted), naming `who`.
fn vip_back(manager: &Manager, lab: &Lab, who: &str) -> Result<(), String> {
    eventually(Duration::from_secs(10), || {
        ensure(has_vip(&lab.rs1.ns)?, || {
            format!("{who} did not put back {VIP} on rs1's lo within 10 s")
        })
    })
    .map_err(|e| format!("{e}\n{}", manager.diagnose(RS_UNIT)))
}

fn delete_vip(lab: &Lab) -> Result<(), String> {
    lab.rs1
        .ns
        .ip(&["addr", "del", &format!("{VIP}/32"), "dev", "lo"])
        .map(drop)
}

/// With both units running (one runtime directory, one user): rs1's VIP deleted and
/// `arp_ignore` reset are repaired, and the journal has a `repaired:` line for each.
fn drift_repaired(manager: &Manager, lab: &Lab) -> Result<(), String> {
    delete_vip(lab)?;
    vip_back(manager, lab, RS_UNIT)?;
    let key = "net.ipv4.conf.eth0.arp_ignore";
    lab.rs1.ns.sysctls(&[(key, "0")])?;
    eventually(Duration::from_secs(10), || {
        let v = lab.rs1.ns.run("sysctl", &["-n", key])?;
        ensure(v.trim() == "1", || {
            format!("{RS_UNIT} left {key} at {}", v.trim())
        })
    })
    .map_err(|e| format!("{e}\n{}", manager.diagnose(RS_UNIT)))?;
    // The agent logs after it acts, and journald reads its stream on its own time.
    eventually(Duration::from_secs(5), || {
        let journal = manager.journal(RS_UNIT)?;
        let repairs = journal.lines().filter(|l| l.contains("repaired")).count();
        ensure(repairs >= 2, || {
            format!("{RS_UNIT}'s journal shows {repairs} repair line(s), want 2:\n{journal}")
        })
    })
}

/// `systemctl reload` (ExecReload: `check`, then SIGHUP) on both: the real server's ARP method
/// becomes nft (the agent runs `nft` from inside the sandbox; the client's view is unchanged),
/// and the director's rs1 goes from weight 1 to 3; then a config with a typo is refused.
fn reloads_applied(
    ctx: &Ctx,
    manager: &Manager,
    lab: &Lab,
    installed: &Installed,
) -> Result<(), String> {
    write_file(
        &installed.rs_cfg,
        &format!("[real_server]\nvips = [\"{VIP}\"]\narp = \"nft\"\n"),
    )?;
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
    only_director_answers(lab, "with the nft method")?;
    let good = lab_config(HTTP_CHECK, 3);
    write(ctx, "etc/director.toml", &good)?;
    manager.systemctl(DIRECTOR_UNIT, &["reload", DIRECTOR_UNIT])?;
    wait_weight(
        &lab.director.ns,
        "192.0.2.11:80",
        3,
        Duration::from_secs(10),
        "after systemctl reload",
    )?;
    // A typo: ExecReload's `director check` fails the reload with the error line (logged at
    // priority err) and the agent is never signalled: same process, same table.
    let typo = good.replace("scheduler = \"rr\"", "scheduler = \"rrr\"");
    ensure(typo != good, || {
        "lab_config has no `scheduler = \"rr\"` line".into()
    })?;
    write(ctx, "etc/director.toml", &typo)?;
    let pid = manager.property(DIRECTOR_UNIT, "MainPID")?;
    let out = manager.nsenter("systemctl", &["reload", DIRECTOR_UNIT])?;
    ensure(!out.status.success(), || {
        "`systemctl reload` of a config with scheduler \"rrr\" succeeded".into()
    })?;
    let args = ["--no-pager", "-o", "cat", "-p", "err", "-u", DIRECTOR_UNIT];
    eventually(Duration::from_secs(5), || {
        let errors = manager.inside_output("journalctl", &args)?;
        ensure(
            errors.contains("director.toml:") && errors.contains("unknown scheduler \"rrr\""),
            || {
                format!(
                    "journalctl -p err -u {DIRECTOR_UNIT} shows:\n{errors}\nwant the config error"
                )
            },
        )
    })?;
    manager.expect_running(DIRECTOR_UNIT, CAP_NET_ADMIN_RAW)?;
    let after = manager.property(DIRECTOR_UNIT, "MainPID")?;
    ensure(after == pid, || {
        format!("the failed reload replaced the agent (MainPID {pid} → {after})")
    })?;
    wait_weight(
        &lab.director.ns,
        "192.0.2.11:80",
        3,
        Duration::from_secs(1),
        "after the refused reload",
    )?;
    write(ctx, "etc/director.toml", &good).map(drop)
}

/// Health checks from inside the sandbox: rs2's web server stops → weight 0, and the DOWN
/// warning is in `journalctl -p warning` while the info lines are not (syslog priorities).
fn quiesce_journaled(manager: &Manager, lab: &mut Lab) -> Result<(), String> {
    lab.stop_http(1);
    wait_weight(
        &lab.director.ns,
        "192.0.2.12:80",
        0,
        Duration::from_secs(15),
        "after rs2's web server stopped",
    )?;
    let args = [
        "--no-pager",
        "-o",
        "cat",
        "-p",
        "warning",
        "-u",
        DIRECTOR_UNIT,
    ];
    eventually(Duration::from_secs(5), || {
        let warnings = manager.inside_output("journalctl", &args)?;
        let down = warnings
            .lines()
            .any(|l| l.contains("real server 192.0.2.12:80 ") && l.contains("is DOWN"));
        ensure(down && !warnings.contains(" INFO "), || {
            format!(
                "journalctl -p warning -u {DIRECTOR_UNIT} shows:\n{warnings}\nwant the DOWN line and no INFO line"
            )
        })
    })
}

/// Two watchdog periods after the start: a unit that sent no WATCHDOG=1 would have been
/// killed and restarted by now (expect_running checks NRestarts).
fn watchdog_fed(manager: &Manager, started: Instant) -> Result<(), String> {
    let wait = Duration::from_secs(2 * u64::from(WATCHDOG_SEC)).saturating_sub(started.elapsed());
    std::thread::sleep(wait);
    for (unit, caps) in [(RS_UNIT, CAP_NET_ADMIN), (DIRECTOR_UNIT, CAP_NET_ADMIN_RAW)] {
        manager.expect_running(unit, caps)?;
        let fed = manager.property(unit, "WatchdogTimestampMonotonic")?;
        ensure(fed != "0" && !fed.is_empty(), || {
            format!("{unit}: systemd recorded no WATCHDOG=1 (WatchdogTimestampMonotonic={fed})")
        })?;
    }
    Ok(())
}

/// SIGKILL: Restart=on-failure brings the agent back, which takes over the node it left
/// configured (its state file, under the same user) and repairs drift again.
fn crash_restarted(manager: &Manager, lab: &Lab) -> Result<(), String> {
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
    delete_vip(lab)?;
    vip_back(manager, lab, &format!("the restarted {RS_UNIT}"))
}

/// `systemctl stop`: a clean exit (Result=success) for both, and the node stays configured:
/// the VIP bound on rs1, the IPVS table serving (rs2 is still down: rs1 answers).
fn stop_keeps_config(manager: &Manager, lab: &Lab) -> Result<(), String> {
    for unit in [RS_UNIT, DIRECTOR_UNIT] {
        manager.systemctl(unit, &["stop", unit])?;
        let result = manager.property(unit, "Result")?;
        ensure(result == "success", || {
            format!(
                "{unit} stopped with Result={result}\n{}",
                manager.diagnose(unit)
            )
        })?;
    }
    ensure(has_vip(&lab.rs1.ns)?, || {
        format!("after systemctl stop {RS_UNIT}, rs1's lo lost {VIP}")
    })?;
    let name = lab.get_vip()?;
    ensure(name == "rs1", || {
        format!("after stopping {DIRECTOR_UNIT} the VIP answered {name:?}; want rs1 (table kept)")
    })
}
