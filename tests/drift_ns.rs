//! Namespace tier for `rs-agent run`: the agent runs in a real server's namespace, someone
//! undoes its configuration by hand, and within a bounded time the node is repaired — judged
//! by `status` and by what a client on the LAN sees (only the director answers ARP for the
//! VIP) — while the agent keeps running. Stopping it leaves the node configured; `down`
//! then restores the node exactly.
//!
//! Needs root (skips loudly otherwise; fails when CI is set). Run with
//! `cargo test --test drift_ns`.

mod common;

use common::site::{assert_only_director_answers, site, Layout, Site};
use common::{assert_same_snapshot, poll, require_privileges, stdout, Host, RunAgent};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

const VIP: &str = "192.0.2.100";
const VIP2: &str = "192.0.2.101";
/// How long a repair may take: the check interval is 2 s, events are immediate.
const REPAIR_LIMIT: Duration = Duration::from_secs(5);

/// One real server, or two; the director holds both VIPs.
const ONE: Layout = Layout {
    rs_ifaces: &["eth0"],
    vlan: None,
    ipv6: false,
    vips: &[VIP, VIP2],
};
const TWO: Layout = Layout {
    rs_ifaces: &["eth0", "eth0"],
    ..ONE
};

/// `rs-agent run` in a host's namespace, its stderr in a file; SIGTERM on drop.
struct Agent {
    run: RunAgent,
    log: PathBuf,
}

impl Agent {
    fn start(rs: &Host, args: &[&str]) -> Agent {
        let log = std::env::temp_dir().join(format!("{}-run.log", rs.ns.name));
        let file = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let mut agent = Agent {
            run: RunAgent::start(rs, args, Stdio::from(file)),
            log,
        };
        let log = agent.log.clone();
        agent
            .run
            .wait_configured(rs, || std::fs::read_to_string(&log).unwrap_or_default());
        agent
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn repaired_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("repaired: "))
            .map(str::to_string)
            .collect()
    }

    fn assert_alive(&self) {
        let alive = self.run.alive();
        assert!(
            alive,
            "{}: rs-agent run died:\n{}",
            self.run.name,
            self.log()
        );
    }

    /// SIGTERM and the exit status (bounded wait).
    fn stop(&mut self) -> ExitStatus {
        self.run.stop()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // The RunAgent field stops the process after this.
        let _ = std::fs::remove_file(&self.log);
    }
}

fn vip_line(rs: &Host, vip: &str) -> Option<String> {
    let addrs = stdout(&rs.exec(&["ip", "-o", "-4", "addr", "show", "dev", "lo"]));
    addrs
        .lines()
        .find(|l| l.contains(&format!(" {vip}/32 ")))
        .map(str::to_string)
}

/// Does `drift` to the node, then waits until the agent has logged a new `repaired:` line
/// containing `expect` and `status` passes; then checks the client's view and the agent.
/// The lines are counted before the drift: the agent may repair and log it before the
/// command that made it has returned.
fn drift_and_repair(
    site: &Site,
    rs: &Host,
    agent: &Agent,
    (what, drift): (&str, impl FnOnce()),
    expect: &str,
) {
    let before = agent.repaired_lines().len();
    drift();
    let repaired = poll(REPAIR_LIMIT, || {
        let lines = agent.repaired_lines();
        lines.len() > before
            && lines[before..].iter().any(|l| l.contains(expect))
            && rs.rs_agent(&["status"]).status.success()
    });
    assert!(
        repaired,
        "{what}: not repaired within {REPAIR_LIMIT:?} (want a `repaired: {expect}` line):\n{}",
        agent.log()
    );
    agent.assert_alive();
    assert_only_director_answers(site, VIP, what);
}

/// Writes a real-server config for `vips` (sysctl method) checking every `check_interval_ms`.
fn write_config(path: &Path, vips: &[&str], check_interval_ms: u32) {
    let list: Vec<String> = vips.iter().map(|v| format!("\"{v}\"")).collect();
    let toml = format!(
        "[real_server]\nvips = [{}]\narp = \"sysctl\"\ncheck_interval_ms = {check_interval_ms}\n",
        list.join(", ")
    );
    std::fs::write(path, toml).expect("writing the config file");
}

#[test]
fn run_repairs_drift_and_stopping_keeps_the_node_configured() {
    require_privileges!();
    let site = site("drift", TWO);
    let (rs1, rs2) = (&site.servers[0], &site.servers[1]);
    let before = [rs1.snapshot(), rs2.snapshot()];
    let mut sysctl_agent = Agent::start(rs1, &["--vip", VIP, "--arp", "sysctl"]);
    let mut nft_agent = Agent::start(rs2, &["--vip", VIP, "--arp", "nft"]);
    assert_only_director_answers(&site, VIP, "after start");

    // The sysctl real server.
    let vip32 = format!("{VIP}/32");
    drift_and_repair(
        &site,
        rs1,
        &sysctl_agent,
        ("VIP deleted", || {
            rs1.exec(&["ip", "addr", "del", &vip32, "dev", "lo"]);
        }),
        "add address",
    );
    let reset_ignore = || {
        for scope in ["all", "eth0"] {
            rs1.ns
                .sysctl(&format!("net.ipv4.conf.{scope}.arp_ignore"), "0");
        }
    };
    drift_and_repair(
        &site,
        rs1,
        &sysctl_agent,
        ("arp_ignore reset", reset_ignore),
        "arp_ignore 0 -> 1",
    );
    drift_and_repair(
        &site,
        rs1,
        &sysctl_agent,
        ("arp_announce reset", || {
            rs1.ns.sysctl("net.ipv4.conf.eth0.arp_announce", "0")
        }),
        "arp_announce 0 -> 2",
    );
    // Re-added with another label, in one `ip` process: the agent reacts within
    // milliseconds, and must find the relabelled address, not race a second command.
    let batch = rs1.state_dir.join("relabel.ip");
    let text = format!("addr del {vip32} dev lo\naddr add {vip32} dev lo label lo:other\n");
    std::fs::write(&batch, text).expect("writing the ip batch file");
    drift_and_repair(
        &site,
        rs1,
        &sysctl_agent,
        ("label changed", || {
            rs1.exec(&["ip", "-batch", &batch.to_string_lossy()]);
        }),
        "label lo:other -> lo:rsagent",
    );
    let line = vip_line(rs1, VIP).unwrap_or_default();
    assert!(line.contains("lo:rsagent"), "label not restored: {line}");

    // The nft real server.
    drift_and_repair(
        &site,
        rs2,
        &nft_agent,
        ("nft table flushed", || {
            rs2.exec(&["nft", "flush table arp rs_agent"]);
        }),
        "write nft table arp",
    );
    drift_and_repair(
        &site,
        rs2,
        &nft_agent,
        ("nft table deleted", || {
            rs2.exec(&["nft", "delete table arp rs_agent"]);
        }),
        "write nft table arp",
    );
    drift_and_repair(
        &site,
        rs2,
        &nft_agent,
        ("VIP deleted (nft)", || {
            rs2.exec(&["ip", "addr", "del", &vip32, "dev", "lo"]);
        }),
        "add address",
    );

    // A stopped agent must not drop traffic: exit 0, node still configured.
    for (rs, agent) in [(rs1, &mut sysctl_agent), (rs2, &mut nft_agent)] {
        let status = agent.stop();
        assert!(
            status.success(),
            "{}: SIGTERM exit {status}:\n{}",
            rs.ns.name,
            agent.log()
        );
        assert!(
            vip_line(rs, VIP).is_some(),
            "{}: VIP gone after stop",
            rs.ns.name
        );
        rs.rs_agent_ok(&["status"]);
    }
    assert_only_director_answers(&site, VIP, "after stop");
    for (rs, before) in [rs1, rs2].into_iter().zip(before.iter()) {
        rs.rs_agent_ok(&["down"]);
        assert_same_snapshot(before, &rs.snapshot(), "run, drift, repairs, stop, down");
    }
}

#[test]
fn sighup_reloads_the_config_and_applies_only_the_difference() {
    require_privileges!();
    let site = site("hup", ONE);
    let rs = &site.servers[0];
    let before = rs.snapshot();
    let config = rs.state_dir.join("rs-agent.toml");
    let write = |vips: &[&str]| write_config(&config, vips, 500);
    write(&[VIP]);
    let path = config.to_string_lossy().into_owned();
    let mut agent = Agent::start(rs, &["--config", &path]);
    let first = vip_line(rs, VIP).expect("first VIP bound");

    write(&[VIP, VIP2]);
    common::run(&["kill", "-HUP", &agent.run.child.id().to_string()]);
    let bound = poll(REPAIR_LIMIT, || vip_line(rs, VIP2).is_some());
    assert!(bound, "second VIP not bound after SIGHUP:\n{}", agent.log());
    // The pass logs what it made after making it: wait for the line, not just the address.
    let applied = format!("reload applied: add address {VIP2}/32 to lo");
    let logged = poll(REPAIR_LIMIT, || agent.log().contains(&applied));
    assert!(
        logged,
        "the reload's change is not logged as such:\n{}",
        agent.log()
    );
    agent.assert_alive();
    let log = agent.log();
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(
        !log.lines().any(
            |l| (l.contains("repaired: ") || l.contains("reload applied: "))
                && l.contains(VIP)
                && !l.contains(VIP2)
        ),
        "the first VIP was touched on reload:\n{log}"
    );
    // Same address, same label, never removed: the line is unchanged.
    assert_eq!(vip_line(rs, VIP), Some(first));
    for vip in [VIP, VIP2] {
        assert_only_director_answers(&site, vip, "after SIGHUP");
    }

    // A broken config on SIGHUP is reported and the running configuration kept.
    std::fs::write(&config, "[real_server]\nvips = [\"not-an-ip\"]\n").expect("write");
    common::run(&["kill", "-HUP", &agent.run.child.id().to_string()]);
    let reported = poll(REPAIR_LIMIT, || {
        agent.log().contains("keeping the previous")
    });
    assert!(
        reported,
        "bad config on SIGHUP not reported:\n{}",
        agent.log()
    );
    agent.assert_alive();
    assert!(vip_line(rs, VIP2).is_some(), "bad reload dropped a VIP");

    assert!(agent.stop().success(), "{}", agent.log());
    rs.rs_agent_ok(&["down"]);
    assert_same_snapshot(&before, &rs.snapshot(), "run, SIGHUP, stop, down");
}

/// A listed LAN interface disappears (a VLAN or hot-plugged NIC removed): `run` keeps
/// repairing the rest — a deleted VIP comes back — while `status` is NOT OK naming it.
#[test]
fn run_keeps_repairing_when_a_listed_interface_disappears() {
    require_privileges!();
    let site = site("ifgone", ONE);
    let rs = &site.servers[0];
    rs.exec(&[
        "ip", "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p",
    ]);
    rs.exec(&["ip", "link", "set", "eth1", "up"]);
    rs.exec(&["ip", "addr", "add", "198.51.100.2/24", "dev", "eth1"]);
    let mut agent = Agent::start(
        rs,
        &[
            "--vip",
            VIP,
            "--interface",
            "eth0",
            "--interface",
            "eth1",
            "--interval",
            "200ms",
        ],
    );
    rs.exec(&["ip", "link", "del", "eth1"]);
    rs.exec(&["ip", "addr", "del", &format!("{VIP}/32"), "dev", "lo"]);
    let gone = "\"eth1\" is listed in the configuration but no longer exists";
    // The warning is logged after the pass that meets it: wait for it, not just the address.
    let repaired = poll(REPAIR_LIMIT, || {
        vip_line(rs, VIP).is_some() && agent.log().contains(gone)
    });
    assert!(
        repaired,
        "VIP not repaired, or eth1 not warned about, after eth1 disappeared:\n{}",
        agent.log()
    );
    // More passes (200 ms interval) meet the same missing interface: still one warning.
    std::thread::sleep(Duration::from_millis(600));
    agent.assert_alive();
    let log = agent.log();
    let warned = log.matches(gone);
    assert_eq!(warned.count(), 1, "want one warning naming eth1:\n{log}");
    assert_only_director_answers(&site, VIP, "after eth1 disappeared");
    let status = rs.rs_agent(&["status"]);
    let text = stdout(&status);
    assert_eq!(status.status.code(), Some(1), "{text}");
    assert!(
        text.contains("\"eth1\"") && text.contains("NOT OK"),
        "{text}"
    );
    assert!(agent.stop().success(), "{}", agent.log());
    rs.rs_agent_ok(&["down"]);
}

/// The kernel refuses part of the configuration (IPv6 disabled on `lo`, so the IPv6 VIP
/// cannot be bound): a reload that asks for it is undone, the running configuration kept and
/// no pass fails after it; and a repair that fails on that VIP keeps the ARP suppression it
/// restored in the same pass — the IPv4 VIP is never left answering ARP.
#[test]
fn a_refused_change_neither_sticks_on_reload_nor_undoes_a_repair() {
    require_privileges!();
    const VIP6: &str = "2001:db8::100";
    let site = site("refused", ONE);
    let rs = &site.servers[0];
    let config = rs.state_dir.join("rs-agent.toml");
    let write = |vips: &[&str]| write_config(&config, vips, 200);
    let v6_bound = || stdout(&rs.exec(&["ip", "-6", "addr", "show", "dev", "lo"])).contains(VIP6);
    let hup = |agent: &Agent| common::run(&["kill", "-HUP", &agent.run.child.id().to_string()]);
    write(&[VIP]);
    let path = config.to_string_lossy().into_owned();
    let mut agent = Agent::start(rs, &["--config", &path]);

    // A reload the kernel refuses goes back to the running configuration.
    rs.ns.sysctl("net.ipv6.conf.lo.disable_ipv6", "1");
    write(&[VIP, VIP6]);
    hup(&agent);
    let undone = poll(REPAIR_LIMIT, || {
        agent
            .log()
            .contains("the kernel refused the new configuration, going back to the running one")
    });
    assert!(undone, "refused reload not undone:\n{}", agent.log());
    // Several check intervals: the running configuration passes, nothing fails any more.
    std::thread::sleep(Duration::from_millis(1000));
    agent.assert_alive();
    let status = rs.rs_agent(&["status"]);
    assert!(status.status.success(), "{}", stdout(&status));
    assert!(
        !agent.log().contains("repair failed"),
        "passes kept failing after the reload was undone:\n{}",
        agent.log()
    );
    assert!(vip_line(rs, VIP).is_some() && !v6_bound());

    // The same reload once the kernel takes it; its change is a reload, not a repair, even
    // when the event of `::1` coming back on `lo` scheduled the pass before the SIGHUP.
    rs.ns.sysctl("net.ipv6.conf.lo.disable_ipv6", "0");
    hup(&agent);
    assert!(
        poll(REPAIR_LIMIT, v6_bound),
        "IPv6 VIP not bound after the reload:\n{}",
        agent.log()
    );
    let applied = poll(REPAIR_LIMIT, || {
        agent
            .log()
            .contains("reload applied: add address 2001:db8::100/128 to lo")
    });
    assert!(applied, "reload logged as something else:\n{}", agent.log());

    // Drift the kernel half refuses to repair. First IPv6 off on lo (which drops the IPv6
    // VIP): the passes fail and back off. Then the sysctls reset: the next pass restores
    // them, fails on the IPv6 VIP again, and keeps the sysctls (a rollback would put them
    // back to 0: ARP flux for the IPv4 VIP). In this order no pass can restore the sysctls
    // without also meeting the refused VIP (the periodic pass could, the other way round).
    rs.ns.sysctl("net.ipv6.conf.lo.disable_ipv6", "1");
    let failed = poll(REPAIR_LIMIT, || agent.log().contains("repair failed"));
    assert!(failed, "no failed repair reported:\n{}", agent.log());
    rs.exec(&[
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.conf.eth0.arp_ignore=0",
        "net.ipv4.conf.eth0.arp_announce=0",
    ]);
    let suppression = || {
        (
            rs.ns.sysctl_get("net.ipv4.conf.eth0.arp_ignore"),
            rs.ns.sysctl_get("net.ipv4.conf.eth0.arp_announce"),
        )
    };
    let wanted = ("1".to_string(), "2".to_string());
    let kept = poll(REPAIR_LIMIT, || {
        agent.log().contains("kept the") && suppression() == wanted
    });
    assert!(
        kept,
        "sysctls not restored by a failing pass:\n{}",
        agent.log()
    );
    for _ in 0..5 {
        assert_eq!(
            suppression(),
            wanted,
            "ARP suppression not kept while the IPv6 VIP fails:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_only_director_answers(&site, VIP, "while the IPv6 VIP cannot be bound");
    agent.assert_alive();

    // The passes keep failing and back off (6.4 s after the 6th); an IPv4 VIP deleted
    // meanwhile is repaired on its event, not when the backoff ends.
    let backed_off = poll(Duration::from_secs(15), || {
        agent.log().contains("attempt=6")
    });
    assert!(backed_off, "no 6th failed attempt:\n{}", agent.log());
    rs.exec(&["ip", "addr", "del", &format!("{VIP}/32"), "dev", "lo"]);
    let back = poll(Duration::from_secs(2), || vip_line(rs, VIP).is_some());
    assert!(
        back,
        "IPv4 VIP not repaired on its event while passes back off:\n{}",
        agent.log()
    );

    // IPv6 back: the retry binds the IPv6 VIP (backoff is at most a few seconds by now).
    rs.ns.sysctl("net.ipv6.conf.lo.disable_ipv6", "0");
    let repaired = poll(Duration::from_secs(10), || {
        v6_bound() && rs.rs_agent(&["status"]).status.success()
    });
    assert!(
        repaired,
        "not repaired once IPv6 was back:\n{}",
        agent.log()
    );
    assert!(agent.stop().success(), "{}", agent.log());
    rs.rs_agent_ok(&["down"]);
}
