//! Namespace tier for the real-server side: rs-agent runs on the real kernel inside
//! namespaces, and the tests assert what a client on the LAN observes (which MAC answers ARP
//! for the VIP, which server answers TCP) and that `down` leaves a node exactly as it was.
//!
//! Needs root (skips loudly otherwise; fails when CI is set). Run with
//! `cargo test --test realserver_ns`.

mod common;

use common::site::{assert_lvs_dr_arp, assert_only_director_answers, site, Layout, Site};
use common::{
    arping_macs, assert_refused, assert_same_snapshot, require_privileges, resolved_mac, send_udp,
    stderr, stdout, tcp_fetch, Host, HostSpec, Lan, Listener,
};

const VIP: &str = "192.0.2.100";
const VIP6: &str = "2001:db8::100";
const PORT: u16 = 8080;

/// The classic LVS-DR LAN: a client, a director holding the VIP, and two real servers.
const PLAIN: Layout = Layout {
    rs_ifaces: &["eth0", "eth0"],
    vlan: None,
    ipv6: false,
    vips: &[VIP],
};

/// Makes `rs` send an IPv4 packet with the VIP as source to the client and returns the MAC
/// the client then associates with the VIP (learned from rs's ARP request, when that
/// request carries the VIP as sender — the "announce" half of ARP flux).
fn vip_learned_from_request(site: &Site, rs: &Host) -> Option<String> {
    site.client.exec(&["ip", "neigh", "flush", "all"]);
    rs.exec(&["ip", "neigh", "flush", "all"]);
    send_udp(&rs.ns, Some(VIP), &site.client.ip, false);
    resolved_mac(&site.client.ns, VIP)
}

/// Sends the client's packets for the VIP to `rs`'s MAC and returns the server's answer.
fn fetch_via(site: &Site, rs: &Host, vip: &str) -> Result<String, String> {
    site.client.exec(&[
        "ip",
        "neigh",
        "replace",
        vip,
        "lladdr",
        &rs.mac,
        "dev",
        &site.client.iface,
        "nud",
        "permanent",
    ]);
    let answer = tcp_fetch(&site.client.ns, vip, PORT);
    site.client
        .exec(&["ip", "neigh", "del", vip, "dev", &site.client.iface]);
    answer
}

#[test]
fn arp_flux_then_fixed_by_sysctl_and_nft() {
    require_privileges!();
    let site = site("flux", PLAIN);

    // Baseline: the VIP on lo by hand, kernel ARP defaults — the real servers answer too.
    for rs in [site.rs1(), site.rs2()] {
        rs.exec(&["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
    }
    let flux = arping_macs(&site.client, VIP, 5);
    assert!(
        flux.contains(&site.rs1().mac) && flux.contains(&site.rs2().mac),
        "baseline should show ARP flux (real servers answering for {VIP}), got {flux:?}"
    );
    assert_eq!(
        vip_learned_from_request(&site, site.rs1()),
        Some(site.rs1().mac.clone()),
        "baseline: rs1's ARP request should carry the VIP as sender"
    );
    for rs in [site.rs1(), site.rs2()] {
        rs.exec(&["ip", "addr", "del", &format!("{VIP}/32"), "dev", "lo"]);
    }

    // The fix: one real server per method.
    site.rs1()
        .rs_agent_ok(&["up", "--vip", VIP, "--arp", "sysctl"]);
    site.rs2()
        .rs_agent_ok(&["up", "--vip", VIP, "--arp", "nft"]);
    assert_lvs_dr_arp(&site, VIP, "sysctl on rs1, nft on rs2");
    for rs in [site.rs1(), site.rs2()] {
        let learned = vip_learned_from_request(&site, rs);
        assert_ne!(
            learned,
            Some(rs.mac.clone()),
            "{}: its ARP requests must carry its RIP, not the VIP",
            rs.ns.name
        );
    }

    // Each real server accepts traffic for the VIP sent to its MAC.
    let _l1 = Listener::start(&site.rs1().ns, PORT, "rs1");
    let _l2 = Listener::start(&site.rs2().ns, PORT, "rs2");
    assert_eq!(fetch_via(&site, site.rs1(), VIP), Ok("rs1".to_string()));
    assert_eq!(fetch_via(&site, site.rs2(), VIP), Ok("rs2".to_string()));

    assert_no_flux_window(&site.rs1().rs_agent_ok(&["down"]), "down");
    assert_no_flux_window(&site.rs2().rs_agent_ok(&["down"]), "down");
}

/// The order of the changes `up`/`down` report (they are applied in that order) never opens
/// a window of ARP flux: on `up` ARP is suppressed before the VIP is bound, on `down` the VIP
/// is unbound before suppression is lifted.
fn assert_no_flux_window(report: &str, command: &str) {
    let lines: Vec<&str> = report.lines().filter(|l| l.starts_with("did:")).collect();
    let is_address = |l: &&str| l.contains("address") && l.contains(VIP);
    let is_arp = |l: &&str| l.contains("arp_") || l.contains("nft table");
    let address = lines.iter().position(is_address);
    let arp: Vec<usize> = (0..lines.len()).filter(|&i| is_arp(&lines[i])).collect();
    let address = address.unwrap_or_else(|| panic!("{command} did not touch {VIP}: {report}"));
    assert!(!arp.is_empty(), "{command} did not touch ARP: {report}");
    let in_order = match command {
        "up" => arp.iter().all(|&i| i < address),
        _ => arp.iter().all(|&i| i > address),
    };
    assert!(
        in_order,
        "{command}: ARP flux window in the order of changes:\n{report}"
    );
}

/// Foreign state that rs-agent must neither touch nor remove.
fn plant_foreign_state(rs: &Host) {
    rs.exec(&["ip", "addr", "add", "203.0.113.7/32", "dev", "lo"]);
    rs.exec(&["nft", "add table arp foreign"]);
    rs.exec(&[
        "nft",
        "add chain arp foreign input { type filter hook input priority 0; policy accept; }",
    ]);
    rs.exec(&[
        "nft",
        "add rule arp foreign input arp daddr ip 203.0.113.9 drop",
    ]);
    let iface = rs.iface.replace('.', "/");
    rs.ns
        .sysctl(&format!("net.ipv4.conf.{iface}.arp_ignore"), "2");
    rs.ns.sysctl("net.ipv4.conf.all.arp_announce", "1");
}

/// up, up again (nothing to do), down, down again: the node ends exactly as it began.
fn assert_up_down_restores(rs: &Host, method: &str) {
    let before = rs.snapshot();
    rs.rs_agent_ok(&["up", "--vip", VIP, "--arp", method]);
    let during = rs.snapshot();
    assert_ne!(before, during, "{method}: `up` changed nothing");
    for foreign in ["203.0.113.7/32", "table arp foreign", "203.0.113.9"] {
        assert!(during.contains(foreign), "{method}: `up` removed {foreign}");
    }
    let again = rs.rs_agent_ok(&["up", "--vip", VIP, "--arp", method]);
    assert!(
        again.contains("nothing to do"),
        "{method}: second `up` should say nothing to do, said: {again}"
    );
    assert_same_snapshot(&during, &rs.snapshot(), "second `up`");
    let down = rs.rs_agent_ok(&["down"]);
    assert!(down.contains("did:"), "{method}: `down` said: {down}");
    assert_same_snapshot(&before, &rs.snapshot(), &format!("{method}: up then down"));
    let again = rs.rs_agent_ok(&["down"]);
    assert!(
        again.contains("nothing to do"),
        "{method}: second `down` said: {again}"
    );
    assert_same_snapshot(&before, &rs.snapshot(), &format!("{method}: second down"));
}

#[test]
fn down_restores_exactly_and_keeps_foreign_state() {
    require_privileges!();
    let site = site("restore", PLAIN);
    plant_foreign_state(site.rs1());
    plant_foreign_state(site.rs2());
    assert_up_down_restores(site.rs1(), "sysctl");
    assert_up_down_restores(site.rs2(), "nft");
}

fn status_json(rs: &Host) -> (i32, serde_json::Value) {
    let out = rs.rs_agent(&["status", "--json"]);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json is not JSON ({e}): {}{}",
            stdout(&out),
            stderr(&out)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

#[test]
fn status_reports_ok_and_detects_tampering() {
    require_privileges!();
    let site = site("status", PLAIN);
    let (rs1, rs2) = (site.rs1(), site.rs2());
    rs1.rs_agent_ok(&["up", "--vip", VIP]);
    // rs2 takes its settings from a config file instead of flags.
    let config = rs2.state_dir.join("rs-agent.toml");
    let toml = format!(
        "[real_server]\nvips = [\"{VIP}\"]\ndevice = \"lo\"\narp = \"nft\"\ninterfaces = [\"eth0\"]\n"
    );
    std::fs::write(&config, toml).expect("writing the config file");
    let config = config.to_string_lossy().into_owned();
    rs2.rs_agent_ok(&["check", "--config", &config]);
    rs2.rs_agent_ok(&["up", "--config", &config]);
    let nft = stdout(&rs2.exec(&["nft", "list", "table", "arp", "rs_agent"]));
    assert!(
        nft.contains("drop"),
        "config arp = \"nft\" not applied: {nft}"
    );
    for rs in [rs1, rs2] {
        let text = rs.rs_agent_ok(&["status"]);
        assert!(text.contains("OK"), "status said: {text}");
        let (code, json) = status_json(rs);
        assert_eq!(code, 0, "{json}");
        assert_eq!(json["ok"], true, "{json}");
        assert_eq!(json["vips"][0]["vip"], VIP, "{json}");
        assert_eq!(json["vips"][0]["bound"], true, "{json}");
        assert_eq!(json["vips"][0]["suppressed"], true, "{json}");
    }

    // Someone removes the VIP by hand: status exits 1, and `up` repairs it.
    rs1.exec(&["ip", "addr", "del", &format!("{VIP}/32"), "dev", "lo"]);
    assert_eq!(rs1.rs_agent(&["status"]).status.code(), Some(1));
    let (code, json) = status_json(rs1);
    assert_eq!((code, &json["ok"]), (1, &serde_json::Value::Bool(false)));
    assert_eq!(json["vips"][0]["bound"], false, "{json}");
    rs1.rs_agent_ok(&["up", "--vip", VIP]);
    rs1.rs_agent_ok(&["status"]);

    // Someone resets the ARP sysctls: status exits 1.
    rs1.ns.sysctl("net.ipv4.conf.all.arp_ignore", "0");
    rs1.ns.sysctl("net.ipv4.conf.eth0.arp_ignore", "0");
    let (code, json) = status_json(rs1);
    assert_eq!(code, 1, "{json}");
    assert_eq!(json["vips"][0]["suppressed"], false, "{json}");

    // Someone deletes rs-agent's nft table: status exits 1.
    rs2.exec(&["nft", "delete table arp rs_agent"]);
    let (code, json) = status_json(rs2);
    assert_eq!(code, 1, "{json}");
    assert_eq!(json["vips"][0]["suppressed"], false, "{json}");

    rs1.rs_agent_ok(&["down"]);
    rs2.rs_agent_ok(&["down"]);
}

#[test]
fn bad_input_exits_2_with_one_line_and_changes_nothing() {
    require_privileges!();
    let site = site("badinput", PLAIN);
    let rs = site.rs1();
    let config = rs.state_dir.join("bad.toml");
    std::fs::write(
        &config,
        "[real_server]\nvips = [\"192.0.2.100\"]\narp = \"bogus\"\n",
    )
    .expect("writing the config file");
    let config = config.to_string_lossy().into_owned();
    let cases: [(&[&str], &str); 6] = [
        (&["--vip", "300.1.1.1"], "300.1.1.1"),
        (&["--vip", "192.0.2.2"], "192.0.2.2"),
        (&["--vip", VIP, "--interface", "nosuch0"], "nosuch0"),
        (&["--vip", VIP, "--device", "lvs0"], "dummy"),
        (&["--vip", VIP, "--arp", "bogus"], "bogus"),
        (&["--config", &config], "bogus"),
    ];
    let before = rs.snapshot();
    for (args, mention) in cases {
        for command in ["up", "check"] {
            let mut full = vec![command];
            full.extend_from_slice(args);
            assert_refused(&rs.rs_agent(&full), &format!("{full:?}"), &[mention]);
            assert_same_snapshot(&before, &rs.snapshot(), &format!("{full:?}"));
        }
    }
    let down = rs.rs_agent_ok(&["down"]);
    assert!(
        down.contains("nothing to do"),
        "after bad input, down said: {down}"
    );
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    require_privileges!();
    let site = site("dryrun", PLAIN);
    let rs = site.rs1();
    let before = rs.snapshot();
    let plan = rs.rs_agent_ok(&["up", "--vip", VIP, "--dry-run"]);
    for expected in [
        "would:",
        "arp_ignore",
        "arp_announce",
        "192.0.2.100/32 to lo",
    ] {
        assert!(
            plan.contains(expected),
            "sysctl plan lacks {expected}: {plan}"
        );
    }
    assert_same_snapshot(&before, &rs.snapshot(), "up --dry-run (sysctl)");
    let plan = rs.rs_agent_ok(&["up", "--vip", VIP, "--arp", "nft", "--dry-run"]);
    for expected in ["would:", "nft table arp rs_agent", "192.0.2.100/32 to lo"] {
        assert!(plan.contains(expected), "nft plan lacks {expected}: {plan}");
    }
    assert_same_snapshot(&before, &rs.snapshot(), "up --dry-run (nft)");
    let down = rs.rs_agent_ok(&["down"]);
    assert!(
        down.contains("nothing to do"),
        "after dry runs, down said: {down}"
    );

    // `down --dry-run` after a real `up` changes nothing either.
    rs.rs_agent_ok(&["up", "--vip", VIP]);
    let during = rs.snapshot();
    let plan = rs.rs_agent_ok(&["down", "--dry-run"]);
    assert!(plan.contains("would:"), "down --dry-run said: {plan}");
    assert_same_snapshot(&during, &rs.snapshot(), "down --dry-run");
    rs.rs_agent_ok(&["down"]);
    assert_same_snapshot(&before, &rs.snapshot(), "up then down");
}

/// Effective value of an IPv4 conf sysctl on `rs`'s LAN interface: the max of `all` and the
/// interface's own file, read by path (a dotted name is a directory, not a sysctl level).
fn effective(rs: &Host, key: &str) -> u32 {
    let read = |path: String| {
        let out = stdout(&rs.exec(&["cat", &path]));
        out.trim()
            .parse::<u32>()
            .unwrap_or_else(|e| panic!("{path}: {e}: {out:?}"))
    };
    let conf = "/proc/sys/net/ipv4/conf";
    read(format!("{conf}/all/{key}")).max(read(format!("{conf}/{}/{key}", rs.iface)))
}

/// rs1 with the sysctl method (LAN interfaces found by rs-agent), rs2 with nft (named):
/// ARP suppressed on the dotted interface, status OK, and `down` restores both nodes.
fn assert_dotted_site_works(site: &Site, what: &str) {
    let before = [site.rs1().snapshot(), site.rs2().snapshot()];
    let rs2_iface = site.rs2().iface.as_str();
    site.rs1().rs_agent_ok(&["up", "--vip", VIP]);
    site.rs2()
        .rs_agent_ok(&["up", "--vip", VIP, "--arp", "nft", "--interface", rs2_iface]);
    let iface = &site.rs1().iface;
    assert!(
        effective(site.rs1(), "arp_ignore") >= 1,
        "{what}: arp_ignore on {iface}"
    );
    assert_eq!(
        effective(site.rs1(), "arp_announce"),
        2,
        "{what}: arp_announce on {iface}"
    );
    let nft = stdout(
        &site
            .rs2()
            .exec(&["nft", "list", "table", "arp", "rs_agent"]),
    );
    let quoted = format!("\"{rs2_iface}\"");
    assert!(
        nft.contains(&quoted),
        "{what}: nft rules lack {quoted}: {nft}"
    );

    assert_lvs_dr_arp(site, VIP, what);
    for rs in [site.rs1(), site.rs2()] {
        rs.rs_agent_ok(&["status"]);
    }
    site.rs1().rs_agent_ok(&["down"]);
    site.rs2().rs_agent_ok(&["down"]);
    assert_same_snapshot(&before[0], &site.rs1().snapshot(), &format!("{what}: rs1"));
    assert_same_snapshot(&before[1], &site.rs2().snapshot(), &format!("{what}: rs2"));
}

#[test]
fn vlan_and_dotted_interface_names() {
    require_privileges!();
    // A veth merely named like a VLAN (untagged LAN).
    let dotted = Layout {
        rs_ifaces: &["eth0.100", "eth0.200"],
        ..PLAIN
    };
    assert_dotted_site_works(&site("dotted", dotted), "veth named eth0.100/eth0.200");
    // A real 802.1Q VLAN 100 on every host: rs-agent must pick eth0.100, not eth0.
    if !common::vlan_supported() {
        let reason = "802.1Q part: this kernel cannot create VLAN devices (no 8021q module)";
        common::skip_note("vlan_and_dotted_interface_names", reason);
        return;
    }
    let tagged = Layout {
        vlan: Some(100),
        ..PLAIN
    };
    assert_dotted_site_works(&site("vlan", tagged), "802.1Q eth0.100");
}

/// Sends a datagram to the VIP from the client and returns which MAC the client resolved
/// it to by NDP, if any (bounded: 1.5 s).
fn ndp_resolves_vip6_to(site: &Site) -> Option<String> {
    site.client.exec(&["ip", "-6", "neigh", "flush", "all"]);
    send_udp(&site.client.ns, None, &format!("[{VIP6}]"), true);
    resolved_mac(&site.client.ns, VIP6)
}

#[test]
fn ipv6_vip_is_not_answered_by_real_servers() {
    require_privileges!();
    let site = site(
        "ipv6",
        Layout {
            ipv6: true,
            ..PLAIN
        },
    );
    let before = [site.rs1().snapshot(), site.rs2().snapshot()];
    site.rs1().rs_agent_ok(&["up", "--vip", VIP6]);
    site.rs2()
        .rs_agent_ok(&["up", "--vip", VIP6, "--arp", "nft"]);
    let lo = stdout(&site.rs1().exec(&["ip", "-6", "addr", "show", "dev", "lo"]));
    assert!(lo.contains("2001:db8::100/128"), "VIP6 not on lo: {lo}");

    let nft = stdout(
        &site
            .rs2()
            .exec(&["nft", "list", "table", "ip6", "rs_agent"]),
    );
    assert!(
        nft.contains("nd-neighbor-solicit"),
        "no NS drop rule: {nft}"
    );

    // Nobody else holds the VIP yet: a real server answering NDP would be the only answer.
    // Linux already ignores neighbour solicitations for an address held on another
    // interface (checked by hand: VIP6 on lo → INCOMPLETE, on eth0 → answered), so for the
    // sysctl method this guards against regressions such as binding the VIP to the LAN
    // interface; the director below is the positive control that the probe sees answers.
    for attempt in 0..3 {
        let resolved = ndp_resolves_vip6_to(&site);
        assert_eq!(
            resolved, None,
            "attempt {attempt}: a real server answered NDP"
        );
    }
    // With the director holding it, the client resolves to the director.
    let dev = &site.director.iface;
    site.director.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{VIP6}/128"),
        "dev",
        dev,
        "nodad",
    ]);
    for attempt in 0..3 {
        let resolved = ndp_resolves_vip6_to(&site);
        assert_eq!(
            resolved,
            Some(site.director.mac.clone()),
            "attempt {attempt}: NDP for {VIP6} not resolved to the director"
        );
    }
    // Traffic for the VIP sent to a real server's MAC is accepted.
    let _l1 = Listener::start(&site.rs1().ns, PORT, "rs1");
    let _l2 = Listener::start(&site.rs2().ns, PORT, "rs2");
    assert_eq!(fetch6_via(&site, site.rs1()), Ok("rs1".to_string()));
    assert_eq!(fetch6_via(&site, site.rs2()), Ok("rs2".to_string()));

    site.rs1().rs_agent_ok(&["down"]);
    site.rs2().rs_agent_ok(&["down"]);
    assert_same_snapshot(&before[0], &site.rs1().snapshot(), "rs1 (sysctl, IPv6)");
    assert_same_snapshot(&before[1], &site.rs2().snapshot(), "rs2 (nft, IPv6)");
}

fn fetch6_via(site: &Site, rs: &Host) -> Result<String, String> {
    site.client.exec(&[
        "ip",
        "-6",
        "neigh",
        "replace",
        VIP6,
        "lladdr",
        &rs.mac,
        "dev",
        &site.client.iface,
        "nud",
        "permanent",
    ]);
    let answer = tcp_fetch(&site.client.ns, &format!("[{VIP6}]"), PORT);
    site.client
        .exec(&["ip", "-6", "neigh", "del", VIP6, "dev", &site.client.iface]);
    answer
}

/// An admin's own `table arp rs_agent` and `table ip6 rs_agent`, with a chain rs-agent
/// would never write.
fn plant_foreign_rs_agent_tables(rs: &Host) {
    for family in ["arp", "ip6"] {
        rs.exec(&["nft", &format!("add table {family} rs_agent")]);
        rs.exec(&[
            "nft",
            &format!(
                "add chain {family} rs_agent admin {{ type filter hook input priority 0; policy accept; }}"
            ),
        ]);
    }
    rs.exec(&[
        "nft",
        "add rule arp rs_agent admin arp daddr ip 203.0.113.9 drop",
    ]);
}

/// A single real server on a LAN of its own.
fn lone_real_server(test: &str) -> (Lan, Host) {
    let mut lan = Lan::new(test);
    let rs = lan.host(HostSpec::new("rs1", "192.0.2.2/24"));
    (lan, rs)
}

#[test]
fn rs_agent_tables_not_recorded_as_ours_are_left_alone() {
    require_privileges!();
    let (_lan, rs) = lone_real_server("foreignnft");
    plant_foreign_rs_agent_tables(&rs);
    let before = rs.snapshot();
    // sysctl method: the state records no table, so `down` must delete none.
    rs.rs_agent_ok(&["up", "--vip", VIP]);
    let down = rs.rs_agent_ok(&["down"]);
    assert!(!down.contains("nft table"), "`down` touched nft: {down}");
    assert_same_snapshot(&before, &rs.snapshot(), "up (sysctl) then down");
    // nft method: refuses to replace a table it did not create.
    let out = rs.rs_agent(&["up", "--vip", VIP, "--arp", "nft"]);
    let mentions = ["nft table arp rs_agent", "not rs-agent's"];
    assert_refused(&out, "up --arp nft", &mentions);
    assert_same_snapshot(&before, &rs.snapshot(), "refused up --arp nft");
}

#[test]
fn check_rejects_every_setting_run_rejects() {
    require_privileges!();
    let (_lan, rs) = lone_real_server("checkrun");
    let cases = [
        ("check_interval_ms = 50", "check interval"),
        ("health_listen = \"nonsense\"", "nonsense"),
    ];
    for (line, mention) in cases {
        let config = rs.state_dir.join("rs-agent.toml");
        std::fs::write(
            &config,
            format!("[real_server]\nvips = [\"{VIP}\"]\n{line}\n"),
        )
        .expect("writing the config file");
        let config = config.to_string_lossy().into_owned();
        for command in ["check", "run"] {
            let out = rs.rs_agent(&[command, "--config", &config]);
            assert_refused(&out, &format!("{command} with {line}"), &[mention]);
        }
    }
}

/// rs-agent in `rs`'s namespace as nobody, without any capability.
fn rs_agent_unprivileged(rs: &Host, args: &[&str]) -> std::process::Output {
    let state = format!("RS_AGENT_STATE_DIR={}", rs.state_dir.display());
    let bin = rs.world_runnable_rs_agent();
    let mut full = vec![
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "env",
        "RS_AGENT_LOG=warn",
        &state,
        &bin,
    ];
    full.extend_from_slice(args);
    rs.ns.try_exec(&full)
}

#[test]
fn without_cap_net_admin_check_status_and_down_give_the_preflight_line() {
    require_privileges!();
    let (_lan, rs) = lone_real_server("nocap");
    let preflight = |args: &[&str]| {
        let out = rs_agent_unprivileged(&rs, args);
        assert_refused(&out, &format!("{args:?}"), &["CAP_NET_ADMIN"]);
    };
    preflight(&["check", "--vip", VIP]);
    preflight(&["check", "--vip", VIP, "--arp", "nft"]);
    preflight(&["down"]);
    // status reads addresses and sysctls unprivileged; nft tables need the capability. `up`
    // runs with the units' umask (0077) in a state directory made as systemd makes it (0755):
    // the state file stays readable for a monitoring user.
    std::fs::create_dir_all(&rs.state_dir).expect("state dir");
    let up = format!(
        "umask 077 && exec env RS_AGENT_LOG=warn RS_AGENT_STATE_DIR={} {} up --vip {VIP}",
        rs.state_dir.display(),
        common::RS_AGENT
    );
    let up_then_status_as_nobody = || {
        let out = rs.ns.try_exec(&["sh", "-c", &up]);
        assert!(out.status.success(), "{}", stderr(&out));
        let out = rs_agent_unprivileged(&rs, &["status"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            stdout(&out),
            stderr(&out)
        );
    };
    up_then_status_as_nobody();
    preflight(&["status", "--vip", VIP, "--arp", "nft"]);
    rs.rs_agent_ok(&["down"]);
    // A state directory `up` creates itself under umask 077 is readable by all too (0755).
    std::fs::remove_dir_all(&rs.state_dir).expect("state dir removed");
    up_then_status_as_nobody();
    rs.rs_agent_ok(&["down"]);
}

/// `up` waiting for another pass while `run` starts is refused once it gets its turn: it
/// probes the run lock under the pass lock, so it never applies after the daemon's first
/// pass (which would leave its configuration standing while the daemon runs).
#[test]
fn up_waiting_while_run_starts_is_refused() {
    require_privileges!();
    use common::poll;
    use rs_agent::state_dir::{probe, REAL_SERVER, REAL_SERVER_RUN};
    use std::time::Duration;
    let (_lan, rs) = lone_real_server("uprace");
    std::fs::create_dir_all(&rs.state_dir).expect("state dir");
    // Another pass holds the pass lock (flock(1) stands in for it) until the daemon is up.
    let other_pass = LockHolder::hold(&rs, REAL_SERVER);
    let (out, pid) = std::thread::scope(|s| {
        let up = s.spawn(|| rs.rs_agent(&["up", "--vip", VIP, "--arp", "nft"]));
        // `up` is waiting for the pass lock; now the daemon starts and waits for it too.
        std::thread::sleep(Duration::from_millis(500));
        let mut agent = common::RunAgent::start(&rs, &["--vip", VIP], std::process::Stdio::null());
        assert!(poll(Duration::from_secs(5), || {
            probe(&rs.state_dir, REAL_SERVER_RUN).is_ok_and(|h| h.is_some())
        }));
        other_pass.release();
        let out = up.join().expect("up thread");
        agent.wait_configured(&rs, String::new);
        let pid = agent.child.id();
        assert!(agent.stop().success());
        (out, pid)
    });
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "up applied while run ran: {err}"
    );
    assert!(
        err.contains(&format!("rs-agent run (pid {pid}) manages this node")),
        "{err}"
    );
    rs.rs_agent_ok(&["down"]);
}

#[test]
fn down_refuses_while_run_manages_the_node() {
    require_privileges!();
    let (_lan, rs) = lone_real_server("downrun");
    let before = rs.snapshot();
    let mut agent = common::RunAgent::start(&rs, &["--vip", VIP], std::process::Stdio::null());
    agent.wait_configured(&rs, String::new);
    let during = rs.snapshot();
    let pid = agent.child.id();
    let manages = format!("rs-agent run (pid {pid}) manages this node");
    let mentions = [manages.as_str(), "stop rs-agent.service first"];
    assert_refused(&rs.rs_agent(&["down"]), "down", &mentions);
    assert_same_snapshot(&during, &rs.snapshot(), "refused down");
    // `up` too: run's next pass would undo whatever a different config changed.
    let out = rs.rs_agent(&["up", "--vip", VIP, "--arp", "nft"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("rs-agent run (pid {pid}) manages this node"))
            && err.contains("systemctl reload rs-agent.service"),
        "{err}"
    );
    assert_same_snapshot(&during, &rs.snapshot(), "refused up");
    let dry = rs.rs_agent(&["up", "--vip", VIP, "--dry-run"]);
    assert!(dry.status.success(), "up --dry-run: {}", stderr(&dry));
    // A second agent on the same state directory is refused too.
    let out = rs.rs_agent(&["run", "--vip", VIP]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(agent.stop().success());
    rs.rs_agent_ok(&["down"]);
    assert_same_snapshot(&before, &rs.snapshot(), "run, stop, down");
}

#[test]
fn up_waits_for_the_state_lock_and_concurrent_ups_keep_every_record() {
    require_privileges!();
    let (_lan, rs) = lone_real_server("lock");
    let before = rs.snapshot();
    // Someone holds the pass lock: `up` waits for it, then applies.
    let holder = LockHolder::hold(&rs, rs_agent::state_dir::REAL_SERVER);
    std::thread::scope(|s| {
        let up = s.spawn(|| rs.rs_agent(&["up", "--vip", VIP]));
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert!(!up.is_finished(), "up did not wait for the lock");
        let lo = stdout(&rs.exec(&["ip", "addr", "show", "dev", "lo"]));
        assert!(
            !lo.contains(VIP),
            "up applied while the lock was held: {lo}"
        );
        holder.release();
        let out = up.join().expect("up thread");
        assert!(out.status.success(), "up after the wait: {}", stderr(&out));
    });
    rs.rs_agent_ok(&["down"]);
    assert_same_snapshot(&before, &rs.snapshot(), "up after waiting, down");
    // Concurrent ups, each round undone by one down: nothing may be left behind.
    for round in 0..8 {
        let spawn = || {
            let state = format!("RS_AGENT_STATE_DIR={}", rs.state_dir.display());
            std::process::Command::new("ip")
                .args(["netns", "exec", &rs.ns.name, "env", &state])
                .args([common::RS_AGENT, "up", "--vip", VIP])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("starting up")
        };
        let children = [spawn(), spawn(), spawn()];
        for child in children {
            let out = child.wait_with_output().expect("up");
            assert!(out.status.success(), "round {round}: {}", stderr(&out));
        }
        rs.rs_agent_ok(&["down"]);
        assert_same_snapshot(
            &before,
            &rs.snapshot(),
            &format!("round {round}: concurrent ups, down"),
        );
    }
}

/// Kills and reaps a helper process on drop.
struct ChildGuard(std::process::Child);

/// Another process holding one of rs-agent's locks in `rs`'s state directory (flock(1)
/// running `cat`) until `release`: no sleep decides when it lets go.
struct LockHolder(ChildGuard);

impl LockHolder {
    /// Starts the holder and waits (bounded) until the lock is held.
    fn hold(rs: &Host, name: &str) -> LockHolder {
        std::fs::create_dir_all(&rs.state_dir).expect("state dir");
        let child = std::process::Command::new("flock")
            .arg(rs.state_dir.join(name))
            .arg("cat")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("starting flock");
        let holder = LockHolder(ChildGuard(child));
        let held = common::poll(std::time::Duration::from_secs(5), || {
            rs_agent::state_dir::probe(&rs.state_dir, name).is_ok_and(|h| h.is_some())
        });
        assert!(
            held,
            "flock did not take {name} in {}",
            rs.state_dir.display()
        );
        holder
    }

    /// Lets go: `cat` reads the end of its input, flock exits and the lock is free.
    fn release(mut self) {
        drop(self.0 .0.stdin.take());
        let _ = self.0 .0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_survives_a_broken_stderr() {
    require_privileges!();
    let (_lan, rs) = lone_real_server("brokenerr");
    let mut agent = common::RunAgent::start(&rs, &["--vip", VIP], std::process::Stdio::piped());
    // Close the read end: every log line now fails with EPIPE.
    drop(agent.child.stderr.take());
    agent.wait_configured(&rs, String::new);
    // Drift makes it log a repair into the broken pipe.
    rs.exec(&["ip", "addr", "del", &format!("{VIP}/32"), "dev", "lo"]);
    let repaired = common::poll(std::time::Duration::from_secs(5), || {
        rs.rs_agent(&["status"]).status.success()
    });
    assert!(repaired, "the VIP was not repaired");
    let status = agent.stop();
    assert_eq!(status.code(), Some(0), "run with a broken stderr: {status}");
    rs.rs_agent_ok(&["down"]);
}

/// rs-agent with stdout a pipe whose reader has gone: the report cannot be written.
fn rs_agent_closed_stdout(rs: &Host, args: &[&str]) -> std::process::Output {
    let state = format!("RS_AGENT_STATE_DIR={}", rs.state_dir.display());
    let mut child = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &rs.ns.name,
            "env",
            "RS_AGENT_LOG=warn",
            &state,
        ])
        .arg(common::RS_AGENT)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting rs-agent");
    drop(child.stdout.take());
    child.wait_with_output().expect("rs-agent")
}

#[test]
fn a_report_that_cannot_be_written_does_not_hide_an_applied_change() {
    require_privileges!();
    let (_lan, rs) = lone_real_server("epipe");
    let before = rs.snapshot();
    for args in [&["up", "--vip", VIP][..], &["down"][..]] {
        let out = rs_agent_closed_stdout(&rs, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(
            err.contains("writing output") && err.contains("the change was applied"),
            "{args:?}: {err}"
        );
        let bound = stdout(&rs.exec(&["ip", "addr", "show", "dev", "lo"])).contains(VIP);
        assert_eq!(bound, args[0] == "up", "{args:?} was not applied");
    }
    assert_same_snapshot(&before, &rs.snapshot(), "up and down with a closed stdout");
}

/// Opens argv[3] idle connections to argv[1]:argv[2] and prints how many the server closed:
/// polled every 50 ms until at least argv[4] are closed (at most 1.2 s), then counted again
/// 0.2 s later, so that closing too many shows too (all within the server's 2 s request
/// timeout, which closes the rest).
const IDLE_CLIENTS: &str = r#"
import socket, sys, time
conns = [socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)
         for _ in range(int(sys.argv[3]))]
for c in conns:
    c.setblocking(False)
closed = set()
def count():
    for i, c in enumerate(conns):
        if i in closed:
            continue
        try:
            if c.recv(1) == b"":
                closed.add(i)
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed.add(i)
    return len(closed)
deadline = time.monotonic() + 1.2
while count() < int(sys.argv[4]) and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(0.2)
print(count())
"#;

#[test]
fn drain_says_who_serves_it_status_shows_it_and_down_clears_it() {
    require_privileges!();
    let (_lan, rs) = lone_real_server("drain");
    rs.rs_agent_ok(&["up", "--vip", VIP]);
    // No agent: the flag is set, and nothing claims /health answers 503.
    let said = rs.rs_agent_ok(&["drain"]);
    assert!(
        said.starts_with("did: drain flag set, but no rs-agent run")
            && !said.contains("answers 503"),
        "{said}"
    );
    let status = rs.rs_agent_ok(&["status"]);
    assert!(
        status.contains("drained: the drain flag is set"),
        "{status}"
    );
    let (_, json) = status_json(&rs);
    assert_eq!(json["drained"], true, "{json}");
    // With an agent serving /health, drain names it.
    rs.rs_agent_ok(&["undrain"]);
    let listen = format!("{}:8081", rs.ip);
    let mut agent = common::RunAgent::start(
        &rs,
        &["--vip", VIP, "--health-listen", &listen],
        std::process::Stdio::null(),
    );
    agent.wait_configured(&rs, String::new);
    // One source cannot hold more than 4 connections (nor all 32 there are, each a
    // descriptor the agent's passes need): of 40 opened at once, 36 are closed at once.
    let out = rs.exec(&["python3", "-c", IDLE_CLIENTS, &rs.ip, "8081", "40", "36"]);
    assert_eq!(
        stdout(&out).trim(),
        "36",
        "closed of 40 idle: {}",
        stderr(&out)
    );
    let said = rs.rs_agent_ok(&["drain"]);
    let pid = agent.child.id();
    assert_eq!(
        said.trim(),
        format!(
            "did: drain flag set: rs-agent run (pid {pid}) answers 503 on http://{listen}/health"
        )
    );
    assert!(agent.stop().success());
    // `down` removes the flag with everything else of ours.
    let down = rs.rs_agent_ok(&["down"]);
    assert!(down.contains("did: cleared the drain flag"), "{down}");
    assert!(
        !rs.state_dir.join("drained").exists(),
        "drained survived down"
    );
}

/// arp_ignore 3 and arp_announce 3 look "higher" than 1 and 2 but do not suppress: `up`
/// corrects them and then only the director answers. `all.arp_ignore=4` cannot be corrected
/// per interface (the kernel uses the maximum): `status` is NOT OK and `up` refuses, exit 2,
/// one line, nothing touched.
#[test]
fn arp_sysctl_values_that_do_not_suppress() {
    require_privileges!();
    let site = site("arpvalues", PLAIN);
    let (rs1, rs2) = (site.rs1(), site.rs2());
    rs1.ns.sysctl("net.ipv4.conf.eth0.arp_ignore", "3");
    rs1.ns.sysctl("net.ipv4.conf.eth0.arp_announce", "3");
    let up = rs1.rs_agent_ok(&["up", "--vip", VIP]);
    assert!(up.contains("arp_ignore 3 -> 1"), "{up}");
    assert!(up.contains("arp_announce 3 -> 2"), "{up}");
    assert_eq!(
        (effective(rs1, "arp_ignore"), effective(rs1, "arp_announce")),
        (1, 2)
    );
    assert_lvs_dr_arp(&site, VIP, "arp_ignore 3, arp_announce 3 corrected");
    rs1.rs_agent_ok(&["status"]);

    rs2.rs_agent_ok(&["up", "--vip", VIP]);
    rs2.ns.sysctl("net.ipv4.conf.all.arp_ignore", "4");
    let (code, json) = status_json(rs2);
    assert_eq!(code, 1, "all.arp_ignore=4 must be NOT OK: {json}");
    assert_eq!(json["vips"][0]["suppressed"], false, "{json}");
    let before = rs2.snapshot();
    let out = rs2.rs_agent(&["up", "--vip", VIP]);
    let mentions = ["net.ipv4.conf.all.arp_ignore is 4", "=0"];
    assert_refused(&out, "up with all.arp_ignore=4", &mentions);
    assert_same_snapshot(&before, &rs2.snapshot(), "refused up");

    rs2.ns.sysctl("net.ipv4.conf.all.arp_ignore", "0");
    for rs in [rs1, rs2] {
        rs.rs_agent_ok(&["down"]);
    }
    assert_eq!(rs1.ns.sysctl_get("net.ipv4.conf.eth0.arp_ignore"), "3");
}

/// Edits to `table arp rs_agent` that leave a drop rule for the VIP in place still differ
/// from what `up` writes: `status` is NOT OK (exit 1) and `up` rewrites the table.
#[test]
fn status_is_not_ok_while_the_nft_table_differs() {
    require_privileges!();
    let site = site("nftdrift", PLAIN);
    let rs = site.rs2();
    rs.rs_agent_ok(&["up", "--vip", VIP, "--arp", "nft"]);
    rs.rs_agent_ok(&["status"]);
    let readdress = |from: &str, to: &str| {
        rs.exec(&["ip", "addr", "del", from, "dev", "eth0"]);
        rs.exec(&["ip", "addr", "add", to, "dev", "eth0"]);
    };
    type Tamper<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let cases: Vec<Tamper> = vec![
        (
            "the rewrite rule names an old RIP",
            Box::new(|| readdress("192.0.2.3/24", "192.0.2.33/24")),
        ),
        (
            "policy drop on our chain",
            Box::new(|| {
                rs.exec(&["nft", "chain arp rs_agent input { policy drop; }"]);
            }),
        ),
        (
            "an extra rule in our chain",
            Box::new(|| {
                rs.exec(&[
                    "nft",
                    "insert rule arp rs_agent input arp daddr ip 203.0.113.9 drop",
                ]);
            }),
        ),
    ];
    for (what, tamper) in cases {
        tamper();
        let out = rs.rs_agent(&["status"]);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {text}");
        assert!(text.contains("NOT OK"), "{what}: {text}");
        let up = rs.rs_agent_ok(&["up", "--vip", VIP, "--arp", "nft"]);
        assert!(up.contains("write nft table arp rs_agent"), "{what}: {up}");
        rs.rs_agent_ok(&["status"]);
    }
    let table = stdout(&rs.exec(&["nft", "list", "table", "arp", "rs_agent"]));
    assert!(
        table.contains("arp saddr ip set 192.0.2.33") && !table.contains("203.0.113.9"),
        "{table}"
    );
    assert_only_director_answers(&site, VIP, "after the nft table was repaired");
    rs.rs_agent_ok(&["down"]);
    readdress("192.0.2.33/24", "192.0.2.3/24");
}

/// Adds `ip`/32 on `ifname` in `ns` as director mode binds a VIP (IFA_PROTO marker, label
/// `<if>:rsagent`), through the library: iproute2 6.1 cannot set an address's protocol.
fn bind_as_director(ns: &str, ifname: &str, ip: &str) {
    use std::os::fd::AsRawFd;
    let ns_file = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("netns file");
    let ifname = ifname.to_string();
    let ip: std::net::IpAddr = ip.parse().expect("literal");
    // setns on a thread of its own: only that thread (and its netlink socket) moves.
    std::thread::spawn(move || {
        // SAFETY: plain setns(2) on a valid descriptor; it affects only this thread.
        let rc = unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let handle = rs_agent::kernel::link::connect().expect("rtnetlink");
            let label = rs_agent::model::owned_label(&ifname);
            rs_agent::kernel::link::add_addr(&handle, &ifname, ip, 32, label.as_deref())
                .await
                .expect("add the director's VIP");
        });
    })
    .join()
    .expect("bind thread");
}

/// A node that is director for one VIP and real server for another: the director's VIP on
/// the LAN interface carries the same marker as the real server's, yet the real server's `up`
/// and `down` (and `run`'s passes, which plan as `up` does) leave it bound.
#[test]
fn real_server_up_and_down_leave_a_director_vip_alone() {
    require_privileges!();
    let (_lan, rs) = lone_real_server("dirvip");
    bind_as_director(&rs.ns.name, "eth0", "192.0.2.200");
    let bound = |rs: &Host| stdout(&rs.exec(&["ip", "-o", "addr", "show", "dev", "eth0"]));
    assert!(bound(&rs).contains("192.0.2.200/32"), "{}", bound(&rs));
    let up = rs.rs_agent_ok(&["up", "--vip", VIP]);
    assert!(!up.contains("192.0.2.200"), "{up}");
    let down = rs.rs_agent_ok(&["down"]);
    assert!(!down.contains("192.0.2.200"), "{down}");
    assert!(bound(&rs).contains("192.0.2.200/32"), "{}", bound(&rs));
}
