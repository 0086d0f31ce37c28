//! Real-server checks: what rs-agent does to a node, judged from the kernel and from a client
//! on the LAN. Also a sanity check that the guest can run an LVS-DR cluster at all.

use crate::guest::{ensure, eventually, Ctx, Lab, Lan, Netns, Node};
use crate::Check;
use std::time::Duration;

pub const CHECKS: &[Check] = &[
    Check {
        name: "ipvs_available",
        run: ipvs_available,
    },
    Check {
        name: "lvs_dr_manual_smoke",
        run: lvs_dr_manual_smoke,
    },
    Check {
        name: "dummy_device",
        run: dummy_device,
    },
    Check {
        name: "dummy_device_drift",
        run: dummy_device_drift,
    },
];

const VIP: &str = "192.0.2.100";

/// `ipvsadm -Ln` works in a fresh namespace: the director tier has an IPVS to talk to.
fn ipvs_available(_ctx: &Ctx) -> Result<(), String> {
    let ns = Netns::new("ipvs")?;
    let table = ns.run("ipvsadm", &["-Ln"])?;
    ensure(table.contains("IP Virtual Server"), || {
        format!("unexpected `ipvsadm -Ln` output: {table}")
    })
}

/// An LVS-DR cluster configured by hand (ipvsadm, VIP on lo, ARP sysctls; no rs-agent) serves
/// the client from both real servers in turn: proves the lab topology and the guest's IPVS.
fn lvs_dr_manual_smoke(ctx: &Ctx) -> Result<(), String> {
    let lab = Lab::build("smoke", ctx)?;
    let vip_host = format!("{VIP}/32");
    lab.director
        .ns
        .ip(&["addr", "add", &vip_host, "dev", Node::IFACE])?;
    let service = format!("{VIP}:80");
    let director = &lab.director.ns;
    director.run("ipvsadm", &["-A", "-t", &service, "-s", "rr"])?;
    for rs in lab.real_servers() {
        let dest = format!("{}:80", rs.ip);
        director.run("ipvsadm", &["-a", "-t", &service, "-r", &dest, "-g"])?;
        rs.ns.sysctls(&[
            ("net.ipv4.conf.all.arp_ignore", "1"),
            ("net.ipv4.conf.all.arp_announce", "2"),
        ])?;
        rs.ns.ip(&["addr", "add", &vip_host, "dev", "lo"])?;
    }
    let answers = lab.client.arp_answers(Lab::VIP, 2)?;
    ensure(answers == [lab.director.mac.clone()], || {
        format!(
            "ARP for the VIP answered by {answers:?}, want only the director {}",
            lab.director.mac
        )
    })?;
    let names = (0..4)
        .map(|_| lab.get_vip())
        .collect::<Result<Vec<_>, _>>()?;
    let alternating = names.windows(2).all(|w| w[0] != w[1]);
    let both = names.iter().any(|n| n == "rs1") && names.iter().any(|n| n == "rs2");
    let table = director.run("ipvsadm", &["-Ln"]).unwrap_or_default();
    ensure(alternating && both, || {
        format!("client saw {names:?}, want rs1 and rs2 alternating; director:\n{table}")
    })
}

/// `up --device lvs0` creates a NOARP dummy device holding the VIP under rs-agent's label and
/// keeps ARP for it off the LAN; `down` leaves the namespace exactly as it found it.
fn dummy_device(ctx: &Ctx) -> Result<(), String> {
    let lan = Lan::new("dummy")?;
    let client = lan.attach("client", 1)?;
    let rs = lan.attach("rs", 11)?;
    arp_flux_is_detectable(&client, &rs)?;

    let before = rs.ns.snapshot()?;
    ctx.agent(&rs.ns, &["up", "--vip", VIP, "--device", "lvs0"])?;
    dummy_holds_vip(&rs.ns)?;
    ctx.agent(&rs.ns, &["status"])?;
    arp_suppressed(&rs.ns)?;
    let answers = client.arp_answers(Lab::VIP, 2)?;
    ensure(answers.is_empty(), || {
        format!("ARP for the VIP answered by {answers:?} after `up`")
    })?;
    let again = ctx.agent(&rs.ns, &["up", "--vip", VIP, "--device", "lvs0"])?;
    ensure(again.contains("nothing to do"), || {
        format!("second `up` was not a no-op: {again}")
    })?;
    // Moving the VIP to lo and back is a change, not a refusal: the old device's copy goes
    // (lvs0 with it), and ARP for the VIP stays off the LAN.
    ctx.agent(&rs.ns, &["up", "--vip", VIP])?;
    let on_lo = rs.ns.ip(&["-o", "-4", "addr", "show", "to", VIP])?;
    ensure(
        on_lo.contains(" lo ") && rs.ns.ip(&["link", "show", "lvs0"]).is_err(),
        || format!("after moving to lo: {on_lo}"),
    )?;
    ctx.agent(&rs.ns, &["up", "--vip", VIP, "--device", "lvs0"])?;
    dummy_holds_vip(&rs.ns)?;
    let held = rs.ns.ip(&["-o", "-4", "addr", "show", "to", VIP])?;
    ensure(!held.contains(" lo "), || format!("VIP left on lo: {held}"))?;
    let answers = client.arp_answers(Lab::VIP, 2)?;
    ensure(answers.is_empty(), || {
        format!("ARP for the VIP answered by {answers:?} after moving devices")
    })?;

    ctx.agent(&rs.ns, &["down"])?;
    ensure(rs.ns.ip(&["link", "show", "lvs0"]).is_err(), || {
        "lvs0 still exists after `down`".into()
    })?;
    let after = rs.ns.snapshot()?;
    ensure(before == after, || {
        format!("namespace differs after `down`:\n{}", diff(&before, &after))
    })
}

/// `run --device lvs0` repairs the drift only a dummy device has: the device deleted (made
/// again, VIP and label included) and the device set down (set up again); ARP for the VIP
/// stays off the LAN throughout. SIGTERM leaves lvs0 in place; `down` removes it.
fn dummy_device_drift(ctx: &Ctx) -> Result<(), String> {
    let lan = Lan::new("ddrift")?;
    let client = lan.attach("client", 1)?;
    let rs = lan.attach("rs", 11)?;
    // The state directory `ctx.agent` uses for this namespace, so that `down` below finds it.
    let state = ctx.scratch.join(format!("state-{}", rs.ns.name));
    let (agent, state) = (ctx.agent.to_string_lossy(), state.to_string_lossy());
    let args = [
        "--state-dir",
        &state,
        "run",
        "--vip",
        VIP,
        "--device",
        "lvs0",
    ];
    let mut run = rs.ns.spawn(&agent, &args)?;
    let repaired = |what: &str| {
        eventually(Duration::from_secs(10), || dummy_holds_vip(&rs.ns))
            .map_err(|e| format!("not repaired within 10 s after {what}: {e}"))
    };
    repaired("start")?;
    rs.ns.ip(&["link", "del", "lvs0"])?;
    repaired("`ip link del lvs0`")?;
    rs.ns.ip(&["link", "set", "lvs0", "down"])?;
    repaired("`ip link set lvs0 down`")?;
    let answers = client.arp_answers(Lab::VIP, 2)?;
    ensure(answers.is_empty(), || {
        format!("ARP for the VIP answered by {answers:?} after the repairs")
    })?;
    run.signal("TERM")?;
    let status = run.wait(Duration::from_secs(10))?;
    ensure(status.success(), || {
        format!("`run` exited {status} on SIGTERM")
    })?;
    dummy_holds_vip(&rs.ns).map_err(|e| format!("after SIGTERM: {e}"))?;
    ctx.agent(&rs.ns, &["down"])?;
    ensure(rs.ns.ip(&["link", "show", "lvs0"]).is_err(), || {
        "lvs0 still exists after `down`".into()
    })
}

/// Control for `dummy_device`: a VIP on a dummy device *without* ARP suppression is answered
/// by the real server's MAC (Linux's weak host model), so the later "no answer" means something.
fn arp_flux_is_detectable(client: &Node, rs: &Node) -> Result<(), String> {
    rs.ns.ip(&["link", "add", "ctl0", "type", "dummy"])?;
    rs.ns.ip(&["link", "set", "ctl0", "up"])?;
    rs.ns
        .ip(&["addr", "add", &format!("{VIP}/32"), "dev", "ctl0"])?;
    let answers = client.arp_answers(Lab::VIP, 2);
    rs.ns.ip(&["link", "del", "ctl0"])?;
    let answers = answers?;
    ensure(answers == [rs.mac.clone()], || {
        format!(
            "control: unsuppressed VIP answered by {answers:?}, want {}",
            rs.mac
        )
    })
}

/// lvs0 is a dummy device, up, holding VIP/32 labelled `lvs0:rsagent`.
fn dummy_holds_vip(ns: &Netns) -> Result<(), String> {
    let link = ns.ip(&["-d", "-o", "link", "show", "lvs0"])?;
    ensure(
        link.contains(" dummy ") || link.contains("\tdummy "),
        || format!("lvs0 is not a dummy device: {link}"),
    )?;
    ensure(link.contains(",UP") || link.contains("<UP"), || {
        format!("lvs0 is not up: {link}")
    })?;
    let addrs = ns.ip(&["-o", "-4", "addr", "show", "dev", "lvs0"])?;
    let want = format!("inet {VIP}/32");
    ensure(
        addrs.contains(&want) && addrs.contains("lvs0:rsagent"),
        || format!("lvs0 lacks {want} labelled lvs0:rsagent: {addrs}"),
    )
}

/// The effective arp_ignore/arp_announce on eth0 (max of `all` and the interface) are 1 and 2.
fn arp_suppressed(ns: &Netns) -> Result<(), String> {
    for (key, want) in [("arp_ignore", 1), ("arp_announce", 2)] {
        let read = |iface: &str| -> Result<i64, String> {
            let v = ns.run("sysctl", &["-n", &format!("net.ipv4.conf.{iface}.{key}")])?;
            v.trim()
                .parse()
                .map_err(|e| format!("{key} on {iface}: {e}"))
        };
        let effective = read("all")?.max(read(Node::IFACE)?);
        ensure(effective == want, || {
            format!("effective {key} on eth0 is {effective}, want {want}")
        })?;
    }
    Ok(())
}

/// Lines only in `before` (-) and only in `after` (+).
fn diff(before: &str, after: &str) -> String {
    let b: Vec<&str> = before.lines().collect();
    let a: Vec<&str> = after.lines().collect();
    let gone = b
        .iter()
        .filter(|l| !a.contains(l))
        .map(|l| format!("- {l}"));
    let new = a
        .iter()
        .filter(|l| !b.contains(l))
        .map(|l| format!("+ {l}"));
    gone.chain(new).collect::<Vec<_>>().join("\n")
}
