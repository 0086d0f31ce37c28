//! Director checks: rs-agent's IPVS services judged by a client on the LAN and by
//! `ipvsadm -Ln` / `ipvsadm-save -n`, the independent witnesses.

use crate::guest::{ensure, eventually, start_http, Ctx, Lab, Netns, Node, Proc};
use crate::Check;
use std::time::{Duration, Instant};

pub const CHECKS: &[Check] = &[
    Check {
        name: "director_lvs_dr_lab",
        run: lvs_dr_lab,
    },
    Check {
        name: "director_reconcile",
        run: reconcile,
    },
    Check {
        name: "director_import_round_trip",
        run: import_round_trip,
    },
    Check {
        name: "director_health_failover",
        run: health_failover,
    },
    Check {
        name: "director_drain_without_failures",
        run: drain_without_failures,
    },
    Check {
        name: "director_sighup_reload",
        run: sighup_reload,
    },
    Check {
        name: "director_https_and_command_checks",
        run: https_and_command_checks,
    },
    Check {
        name: "director_remove_and_sorry_server",
        run: remove_and_sorry_server,
    },
    Check {
        name: "director_announce_after_link_up",
        run: announce_after_link_up,
    },
];

pub(crate) const VIP: &str = "192.0.2.100";

/// The lines of `ipvsadm-save -n`, sorted: the table without counters, comparable as text.
fn saved(ns: &Netns) -> Result<Vec<String>, String> {
    let mut lines: Vec<String> = ns
        .run("ipvsadm-save", &["-n"])?
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    Ok(lines)
}

fn want_lines(lines: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    v.sort();
    v
}

fn table_is(ns: &Netns, want: &[&str], when: &str) -> Result<(), String> {
    let have = saved(ns)?;
    let want = want_lines(want);
    ensure(have == want, || {
        format!(
            "{when}: ipvsadm-save -n shows\n{}\nwant\n{}",
            have.join("\n"),
            want.join("\n")
        )
    })
}

/// A namespace standing in for a director: `lo` up, a NOARP dummy `eth0` on the real servers'
/// subnet (IPVS refuses destinations it has no route to).
fn bare_director(name: &str) -> Result<Netns, String> {
    let ns = Netns::new(name)?;
    ns.ip(&["link", "add", "eth0", "type", "dummy"])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    ns.ip(&["addr", "add", "198.51.100.1/24", "dev", "eth0"])?;
    ns.ip(&["addr", "add", "203.0.113.1/24", "dev", "eth0"])?;
    Ok(ns)
}

pub(crate) fn write(ctx: &Ctx, name: &str, text: &str) -> Result<String, String> {
    let path = ctx.scratch.join(name);
    crate::guest::write_file(&path, text)?;
    Ok(path.to_string_lossy().into_owned())
}

/// The classic LVS-DR lab end to end: rs-agent on both real servers (one per ARP method) and on
/// the director; the client gets both real servers in rr order through the VIP; ipvsadm shows
/// exactly the configured table; only the director's MAC answers ARP for the VIP; gratuitous
/// ARP corrects a client's stale neighbour entry at once.
fn lvs_dr_lab(ctx: &Ctx) -> Result<(), String> {
    let lab = Lab::build("dlab", ctx)?;
    ctx.agent(&lab.rs1.ns, &["up", "--vip", VIP, "--arp", "sysctl"])?;
    ctx.agent(&lab.rs2.ns, &["up", "--vip", VIP, "--arp", "nft"])?;
    // A stale entry for the VIP pointing nowhere: gratuitous ARP must override it.
    stale_entry(&lab, VIP)?;
    let args = [
        "director",
        "up",
        "--interface",
        "eth0",
        "--vip",
        VIP,
        "--port",
        "80",
        "--scheduler",
        "rr",
        "--real",
        "192.0.2.11",
        "--real",
        "192.0.2.12",
    ];
    let out = ctx.agent(&lab.director.ns, &args)?;
    ensure(out.contains("gratuitous ARP"), || {
        format!("no announcement reported: {out}")
    })?;
    client_knows_director(&lab, VIP, "after gratuitous ARP")?;
    table_is(
        &lab.director.ns,
        &[
            "-A -t 192.0.2.100:80 -s rr",
            "-a -t 192.0.2.100:80 -r 192.0.2.11:80 -g -w 1",
            "-a -t 192.0.2.100:80 -r 192.0.2.12:80 -g -w 1",
        ],
        "after director up",
    )?;
    let names = (0..6)
        .map(|_| lab.get_vip())
        .collect::<Result<Vec<_>, _>>()?;
    ensure(
        names.windows(2).all(|w| w[0] != w[1])
            && names.iter().any(|n| n == "rs1")
            && names.iter().any(|n| n == "rs2"),
        || format!("client saw {names:?}, want rs1 and rs2 in round-robin order"),
    )?;
    let answers = lab.client.arp_answers(Lab::VIP, 3)?;
    ensure(answers == [lab.director.mac.clone()], || {
        format!(
            "ARP for the VIP answered by {answers:?}, want only the director {}",
            lab.director.mac
        )
    })?;
    let status = ctx.agent(&lab.director.ns, &["director", "status"])?;
    ensure(
        status.contains("192.0.2.11:80") && status.contains("OK:"),
        || format!("director status:\n{status}"),
    )?;
    let again = ctx.agent(&lab.director.ns, &args)?;
    ensure(again.contains("nothing to do"), || {
        format!("second director up was not a no-op: {again}")
    })?;
    ctx.agent(&lab.director.ns, &["director", "down"])?;
    table_is(&lab.director.ns, &[], "after director down")?;
    let addrs = lab.director.ns.ip(&["-o", "addr", "show", "dev", "eth0"])?;
    ensure(!addrs.contains(VIP), || {
        format!("VIP still on the director after down: {addrs}")
    })
}

const BASE: &str = r#"
[director]
interface = "eth0"
garp_count = 0

[[director.service]]
vip = "192.0.2.100"
port = 80
scheduler = "SCHED"

[[director.service.real]]
address = "198.51.100.2"
weight = W2

[[director.service.real]]
address = "REAL3"
"#;

fn config(ctx: &Ctx, sched: &str, w2: u32, real3: &str) -> Result<String, String> {
    let text = BASE
        .replace("SCHED", sched)
        .replace("W2", &w2.to_string())
        .replace("REAL3", real3);
    write(ctx, "director.toml", &text)
}

/// Add, remove and re-weight real servers and change the scheduler through the config; each
/// step changes exactly what differs; a foreign service made with ipvsadm survives up and down.
fn reconcile(ctx: &Ctx) -> Result<(), String> {
    let ns = bare_director("drec")?;
    ns.run("ipvsadm", &["-A", "-t", "203.0.113.50:443", "-s", "wlc"])?;
    ns.run(
        "ipvsadm",
        &[
            "-a",
            "-t",
            "203.0.113.50:443",
            "-r",
            "203.0.113.7:443",
            "-g",
            "-w",
            "2",
        ],
    )?;
    let foreign = [
        "-A -t 203.0.113.50:443 -s wlc",
        "-a -t 203.0.113.50:443 -r 203.0.113.7:443 -g -w 2",
    ];
    let with_foreign = |ours: &[&str]| -> Vec<String> {
        ours.iter()
            .chain(foreign.iter())
            .map(|s| s.to_string())
            .collect()
    };

    let up = |cfg: &str| ctx.agent(&ns, &["director", "up", "--config", cfg]);
    let step = |cfg: &str, want: &[&str], changes: &[&str], when: &str| -> Result<(), String> {
        let out = up(cfg)?;
        let did: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("did: ") && !l.contains("gratuitous"))
            .collect();
        let did_ops: Vec<&str> = did
            .iter()
            .filter(|l| !l.contains("address") && !l.contains("netlink write"))
            .copied()
            .collect();
        // One write carries every change of a pass (batching), whatever their number.
        ensure(
            changes.is_empty() || out.contains("in 1 netlink write(s)"),
            || format!("{when}: not one netlink write:\n{out}"),
        )?;
        ensure(did_ops == changes, || {
            format!(
                "{when}: applied\n{}\nwant\n{}",
                did_ops.join("\n"),
                changes.join("\n")
            )
        })?;
        let want: Vec<String> = with_foreign(want);
        let want: Vec<&str> = want.iter().map(String::as_str).collect();
        table_is(&ns, &want, when)
    };

    let cfg = config(ctx, "rr", 1, "198.51.100.3")?;
    step(
        &cfg,
        &[
            "-A -t 192.0.2.100:80 -s rr",
            "-a -t 192.0.2.100:80 -r 198.51.100.2:80 -g -w 1",
            "-a -t 192.0.2.100:80 -r 198.51.100.3:80 -g -w 1",
        ],
        &[
            "did: add service TCP 192.0.2.100:80 scheduler rr",
            "did: add real server 198.51.100.2:80 to TCP 192.0.2.100:80 (Route weight 1)",
            "did: add real server 198.51.100.3:80 to TCP 192.0.2.100:80 (Route weight 1)",
        ],
        "first up",
    )?;
    let cfg = config(ctx, "rr", 5, "198.51.100.3")?;
    step(
        &cfg,
        &[
            "-A -t 192.0.2.100:80 -s rr",
            "-a -t 192.0.2.100:80 -r 198.51.100.2:80 -g -w 5",
            "-a -t 192.0.2.100:80 -r 198.51.100.3:80 -g -w 1",
        ],
        &["did: edit real server 198.51.100.2:80 of TCP 192.0.2.100:80 (Route weight 5)"],
        "re-weight",
    )?;
    let cfg = config(ctx, "wlc", 5, "198.51.100.4")?;
    step(
        &cfg,
        &[
            "-A -t 192.0.2.100:80 -s wlc",
            "-a -t 192.0.2.100:80 -r 198.51.100.2:80 -g -w 5",
            "-a -t 192.0.2.100:80 -r 198.51.100.4:80 -g -w 1",
        ],
        &[
            "did: edit service TCP 192.0.2.100:80 scheduler wlc",
            "did: add real server 198.51.100.4:80 to TCP 192.0.2.100:80 (Route weight 1)",
            "did: delete real server 198.51.100.3:80 from TCP 192.0.2.100:80",
        ],
        "scheduler change + replace a real server",
    )?;
    // Bad input changes nothing: unknown scheduler, real server of the wrong family.
    let bad = config(ctx, "rrr", 5, "198.51.100.4")?;
    let out = ctx.agent_output(&ns, &["director", "up", "--config", &bad])?;
    ensure(out.status.code() == Some(2), || {
        format!("unknown scheduler: exit {:?}", out.status.code())
    })?;
    let bad = config(ctx, "rr", 5, "2001:db8::4")?;
    let out = ctx.agent_output(&ns, &["director", "up", "--config", &bad])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure(
        out.status.code() == Some(2) && err.contains("address family"),
        || format!("family mismatch: {err}"),
    )?;
    ctx.agent(&ns, &["director", "down"])?;
    table_is(&ns, &foreign, "after down (the foreign service survives)")
}

/// `ipvsadm-save -n` of a hand-made table → `director import` → `director up` on an empty
/// table reproduces the same `ipvsadm-save -n`.
fn import_round_trip(ctx: &Ctx) -> Result<(), String> {
    let hand = bare_director("dimp1")?;
    for cmd in [
        "-A -t 192.0.2.100:80 -s wrr",
        "-a -t 192.0.2.100:80 -r 198.51.100.2:80 -g -w 3",
        "-a -t 192.0.2.100:80 -r 198.51.100.3:8080 -g -w 1 -x 100 -y 10",
        "-A -u 192.0.2.100:53 -s sh -b sh-fallback,sh-port -p 60",
        "-a -u 192.0.2.100:53 -r 198.51.100.2:53 -g -w 1",
        "-A -f 7 -s lc -p 300 -M 255.255.255.0",
        "-a -f 7 -r 203.0.113.9:0 -i -w 2",
        "-A -t 192.0.2.101:443 -s mh",
        "-a -t 192.0.2.101:443 -r 198.51.100.5:443 -m -w 1",
    ] {
        let args: Vec<&str> = cmd.split(' ').collect();
        hand.run("ipvsadm", &args)?;
    }
    let original = saved(&hand)?;
    let save_text = hand.run("ipvsadm-save", &["-n"])?;
    let save_file = write(ctx, "save.txt", &save_text)?;
    let toml = ctx.agent(
        &hand,
        &["director", "import", "--interface", "eth0", &save_file],
    )?;
    let cfg = write(ctx, "imported.toml", &toml)?;
    adopt_hand_made(ctx, &hand, &cfg, &original)?;
    let fresh = bare_director("dimp2")?;
    ctx.agent(&fresh, &["director", "up", "--config", &cfg])?;
    let copy = saved(&fresh)?;
    ensure(copy == original, || {
        format!(
            "round trip differs:\noriginal\n{}\nafter import + up\n{}\nTOML:\n{toml}",
            original.join("\n"),
            copy.join("\n")
        )
    })
}

/// The imported config on the very table it came from: `up` refuses the hand-made services
/// (exit 2, nothing changed) and `status` says why; `up --adopt` takes them over without
/// changing them; from then on they are rs-agent's and `down` removes them. Unprivileged,
/// `status` and `up --dry-run` say CAP_NET_ADMIN (exit 2).
fn adopt_hand_made(ctx: &Ctx, hand: &Netns, cfg: &str, original: &[String]) -> Result<(), String> {
    let out = ctx.agent_output(hand, &["director", "up", "--config", cfg])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure(
        out.status.code() == Some(2) && err.contains("not rs-agent's") && err.contains("--adopt"),
        || {
            format!(
                "up over hand-made services: exit {:?}: {err}",
                out.status.code()
            )
        },
    )?;
    ensure(saved(hand)? == original, || {
        "the refused up changed the table".to_string()
    })?;
    let out = ctx.agent_output(hand, &["director", "status", "--config", cfg])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure(
        out.status.code() == Some(1) && text.contains("director up --adopt"),
        || {
            format!(
                "status before adopting: exit {:?}:\n{text}",
                out.status.code()
            )
        },
    )?;
    // A VIP bound by hand is adopted with the services (and removed by `down`); one bound as
    // the first address of a subnet may be the interface's own: left alone, with a warning.
    hand.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "eth0"])?;
    hand.ip(&["addr", "add", "192.0.2.101/24", "dev", "eth0"])?;
    let out = ctx.agent(hand, &["director", "up", "--config", cfg, "--adopt"])?;
    ensure(
        out.contains("did: adopt service TCP 192.0.2.100:80")
            && out.contains("did: adopt service FWM 7")
            && out.contains("did: adopt VIP 192.0.2.100 on eth0")
            && !out.contains("adopt VIP 192.0.2.101")
            && out.contains("warning: VIP 192.0.2.101/24 on eth0 not adopted")
            && !out.contains("service TCP 192.0.2.100:80 scheduler"),
        || format!("up --adopt:\n{out}"),
    )?;
    ensure(saved(hand)? == original, || {
        format!(
            "adopting changed the table:\n{}",
            saved(hand).unwrap_or_default().join("\n")
        )
    })?;
    let again = ctx.agent(hand, &["director", "up", "--config", cfg])?;
    ensure(again.contains("nothing to do"), || {
        format!("up after adopting was not a no-op: {again}")
    })?;
    // What rs-agent never sets, set by hand on services now its own — a GUE tunnel, the SIP
    // persistence engine — is drift: `status` is NOT OK and `up` puts the table back.
    for edit in [
        "-e -f 7 -r 203.0.113.9:0 -i --tun-type gue --tun-port 6080 -w 2",
        "-E -u 192.0.2.100:53 -s sh -b sh-fallback,sh-port -p 60 --pe sip",
    ] {
        let args: Vec<&str> = edit.split(' ').collect();
        hand.run("ipvsadm", &args)?;
        ensure(saved(hand)? != original, || {
            format!("`ipvsadm {edit}` changed nothing")
        })?;
        let out = ctx.agent_output(hand, &["director", "status", "--config", cfg])?;
        ensure(out.status.code() == Some(1), || {
            format!(
                "status after `ipvsadm {edit}`: exit {:?}\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        ctx.agent(hand, &["director", "up", "--config", cfg])?;
        ensure(saved(hand)? == original, || {
            format!(
                "up after `ipvsadm {edit}`:\n{}",
                saved(hand).unwrap_or_default().join("\n")
            )
        })?;
    }
    let service = [
        "--interface",
        "eth0",
        "--vip",
        VIP,
        "--port",
        "80",
        "--real",
        "198.51.100.2",
    ];
    for command in [
        &["director", "status"][..],
        &["director", "up", "--dry-run"],
    ] {
        let args = [command, &service[..]].concat();
        let out = unprivileged(ctx, hand, &args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure(
            out.status.code() == Some(2)
                && err.contains("CAP_NET_ADMIN")
                && err.lines().count() == 1,
            || format!("unprivileged {args:?}: exit {:?}: {err}", out.status.code()),
        )?;
    }
    ctx.agent(hand, &["director", "down"])?;
    table_is(hand, &[], "after down of the adopted services")?;
    let addrs = hand.ip(&["-o", "addr", "show", "dev", "eth0"])?;
    ensure(
        !addrs.contains(&format!("{VIP}/32")) && addrs.contains("192.0.2.101/24"),
        || format!("down: the adopted VIP survived or the one not adopted went: {addrs}"),
    )
}

/// `rs-agent args` in `ns` as user nobody (no capabilities), with a state directory of its own.
fn unprivileged(ctx: &Ctx, ns: &Netns, args: &[&str]) -> Result<std::process::Output, String> {
    let state = ctx.scratch.join("state-unprivileged");
    let state = state.to_string_lossy();
    let agent = ctx.agent.to_string_lossy();
    let mut all = vec![
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        agent.as_ref(),
        "--state-dir",
        state.as_ref(),
    ];
    all.extend_from_slice(args);
    ns.output("setpriv", &all)
}

/// The lab's service: rr over rs1 (weight `w1`) and rs2, with `check` (the lines of a
/// `[director.service.check]` at 1 s, timeout 0.5 s, rise 2, fall 2) when given.
pub(crate) fn lab_config(check: Option<&str>, w1: u32) -> String {
    let check = check.map_or(String::new(), |probe| {
        format!("[director.service.check]\n{probe}\ninterval_ms = 1000\ntimeout_ms = 500\nrise = 2\nfall = 2\n\n")
    });
    format!(
        "[director]\ninterface = \"eth0\"\ngarp_count = 1\n\n[[director.service]]\nvip = \"{VIP}\"\nport = 80\n\
         scheduler = \"rr\"\n\n{check}[[director.service.real]]\naddress = \"192.0.2.11\"\nweight = {w1}\n\n\
         [[director.service.real]]\naddress = \"192.0.2.12\"\n"
    )
}

/// The weight ipvsadm shows for `real` (None: not in the table).
fn weight_of(ns: &Netns, real: &str) -> Result<Option<u32>, String> {
    let save = ns.run("ipvsadm-save", &["-n"])?;
    Ok(save
        .lines()
        .find(|l| l.contains(&format!("-r {real} ")))
        .and_then(|l| l.split("-w ").nth(1))
        .and_then(|w| w.split_whitespace().next())
        .and_then(|w| w.parse().ok()))
}

/// The classic failure, fixed: with an HTTP check at 1 s, stopping one real server's web server
/// quiesces it (weight 0) and after the detection window no request fails; restarting it brings
/// it back after `rise` checks. Then a flip the direct write cannot make: rs1 deleted by hand
/// and its web server stopped — with no periodic pass in the test's time (interval 1 h), only
/// the health pass's fallback (observe the service, re-plan) can put rs1 back, quiesced.
fn health_failover(ctx: &Ctx) -> Result<(), String> {
    let mut lab = Lab::build("dhc", ctx)?;
    ctx.agent(&lab.rs1.ns, &["up", "--vip", VIP])?;
    ctx.agent(&lab.rs2.ns, &["up", "--vip", VIP])?;
    let cfg = write(
        ctx,
        "health.toml",
        &lab_config(Some("type = \"http\"\npath = \"/\""), 1),
    )?;
    let _run = director_run_with(ctx, &lab, &cfg, "dhc", &["--reconcile-interval", "3600"])?;
    // Stop rs1's web server: after fall × interval (+ timeout) it must be quiesced.
    let stopped = Instant::now();
    lab.stop_http(0);
    wait_weight(
        &lab.director.ns,
        "192.0.2.11:80",
        0,
        Duration::from_secs(15),
        "after its web server stopped",
    )?;
    let detected = stopped.elapsed();
    // After the detection window: every request succeeds (all go to rs2).
    let mut failures = Vec::new();
    for _ in 0..10 {
        match lab.get_vip() {
            Ok(name) if name == "rs2" => {}
            other => failures.push(format!("{other:?}")),
        }
    }
    ensure(failures.is_empty(), || {
        format!("requests failed after detection ({detected:?}): {failures:?}")
    })?;
    // Restart it: back at weight 1 after rise = 2 good checks.
    lab.start_http(0, ctx)?;
    wait_weight(
        &lab.director.ns,
        "192.0.2.11:80",
        1,
        Duration::from_secs(15),
        "after restart",
    )?;
    let names = (0..4)
        .map(|_| lab.get_vip())
        .collect::<Result<Vec<_>, _>>()?;
    ensure(names.iter().any(|n| n == "rs1"), || {
        format!("rs1 not back in rotation: {names:?}")
    })?;
    lab.director.ns.run(
        "ipvsadm",
        &["-d", "-t", "192.0.2.100:80", "-r", "192.0.2.11:80"],
    )?;
    lab.stop_http(0);
    wait_weight(
        &lab.director.ns,
        "192.0.2.11:80",
        0,
        Duration::from_secs(15),
        "after a hand delete and its web server stopped",
    )?;
    // `director down` while `director run` manages the director: its next pass would put
    // everything back, so down refuses (exit 2) and changes nothing; so is an `up` with
    // another config (rs1 at weight 7), which run's next pass would undo.
    let other = write(ctx, "other.toml", &lab_config(None, 7))?;
    let state = ctx.scratch.join("state-dhc-run");
    let state = state.to_string_lossy();
    let agent = ctx.agent.to_string_lossy();
    for (command, says) in [
        (
            &["director", "down"][..],
            "stop rs-agent-director.service first",
        ),
        (
            &["director", "up", "--config", &other],
            "systemctl reload rs-agent-director.service",
        ),
    ] {
        let args = [&["--state-dir", state.as_ref()][..], command].concat();
        let out = lab.director.ns.output(&agent, &args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure(
            out.status.code() == Some(2)
                && err.contains("rs-agent director run")
                && err.contains(says),
            || {
                format!(
                    "{command:?} while run runs: exit {:?}: {err}",
                    out.status.code()
                )
            },
        )?;
        let weights = (
            weight_of(&lab.director.ns, "192.0.2.11:80")?,
            weight_of(&lab.director.ns, "192.0.2.12:80")?,
        );
        ensure(weights == (Some(0), Some(1)), || {
            format!("{command:?} refused but the weights are now {weights:?}")
        })?;
    }
    eprintln!("director_health_failover: quiesced {detected:?} after the stop");
    Ok(())
}

/// A VIP bound while the director's interface is down cannot be announced: `up` says so
/// (exit 0: the table and the VIP stand) and `run` announces it once the link is up — a
/// client's stale neighbour entry for the VIP then points at the director (the kernel itself
/// sends no gratuitous ARP on link up, so only rs-agent's retry can fix it). Then a run that
/// starts with a 10 s announcement (11 rounds 1 s apart) and a failing real server: the
/// server is quiesced while the announcement is still being sent.
fn announce_after_link_up(ctx: &Ctx) -> Result<(), String> {
    let mut lab = Lab::build("dga", ctx)?;
    let cfg = write(ctx, "announce.toml", &lab_config(None, 1))?;
    lab.director.ns.ip(&["link", "set", Node::IFACE, "down"])?;
    let out = ctx.agent_output(&lab.director.ns, &["director", "up", "--config", &cfg])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure(
        out.status.success() && text.contains("warning:") && text.contains("interface is down"),
        || {
            format!(
                "up on a down interface: {}",
                crate::guest::describe_failure("rs-agent", &["director", "up"], &out)
            )
        },
    )?;
    ensure(
        weight_of(&lab.director.ns, "192.0.2.12:80")? == Some(1),
        || "up on a down interface did not leave the table configured".to_string(),
    )?;
    ctx.agent(&lab.director.ns, &["director", "down"])?;
    stale_entry(&lab, VIP)?;
    let _run = director_run_with(ctx, &lab, &cfg, "dga", &["--reconcile-interval", "1"])?;
    std::thread::sleep(Duration::from_millis(1500));
    let before = lab.client.ns.ip(&["neigh", "show", VIP])?;
    ensure(before.contains(BOGUS_MAC), || {
        format!("client's entry changed while the director's link was down: {before:?}")
    })?;
    lab.director.ns.ip(&["link", "set", Node::IFACE, "up"])?;
    eventually(Duration::from_secs(10), || {
        client_knows_director(&lab, VIP, "after the director's link came up")
    })?;
    drop(_run);
    // Checks at 400 ms: the quiesce comes ~1 s into the 10 s announcement, so only a 10x
    // slowdown of the machine could push it past the announcement's end (timeouts of 350 ms
    // leave the healthy rs2 room under emulation).
    let long = lab_config(Some("type = \"http\"\npath = \"/\""), 1)
        .replace(
            "garp_count = 1\n",
            "garp_count = 11\ngarp_interval_ms = 1000\n",
        )
        .replace(
            "interval_ms = 1000\ntimeout_ms = 500",
            "interval_ms = 400\ntimeout_ms = 350",
        );
    let cfg = write(ctx, "announce-long.toml", &long)?;
    let _run = director_run_with(ctx, &lab, &cfg, "dga", &["--reconcile-interval", "3600"])?;
    let stopped = Instant::now();
    lab.stop_http(0);
    wait_weight(
        &lab.director.ns,
        "192.0.2.11:80",
        0,
        Duration::from_secs(20),
        "after its web server stopped during an announcement",
    )?;
    let detected = stopped.elapsed();
    // The order, not a duration: rs1 was quiesced while the announcement still ran — its next
    // rounds correct a stale entry set after the quiesce. A run whose announcement held up the
    // check results would quiesce only after the announcement's last round.
    stale_entry(&lab, VIP)?;
    eventually(Duration::from_secs(4), || {
        client_knows_director(&lab, VIP, "after a flip during the announcement")
    })
    .map_err(|e| {
        format!("{e}: rs1 quiesced {detected:?} after its web server stopped, but the start-up announcement was over by then (it held the check results up?)")
    })?;
    drop(_run);
    dropped_vip_is_no_longer_announced(ctx, &lab, &long)?;
    eprintln!(
        "director_announce_after_link_up: quiesced {detected:?} after the stop, mid-announcement"
    );
    Ok(())
}

/// A reload that drops one of two VIPs during the 10 s start-up announcement: the dropped one
/// is no longer announced (its later rounds would pull the traffic back from whichever node
/// took it over).
fn dropped_vip_is_no_longer_announced(ctx: &Ctx, lab: &Lab, long: &str) -> Result<(), String> {
    const NEW_VIP: &str = "192.0.2.101";
    stale_entry(lab, VIP)?;
    stale_entry(lab, NEW_VIP)?;
    let second = format!(
        "\n[[director.service]]\nvip = \"{NEW_VIP}\"\nport = 80\nscheduler = \"rr\"\n\n\
         [[director.service.real]]\naddress = \"192.0.2.12\"\n"
    );
    let cfg = write(ctx, "announce-move.toml", &format!("{long}{second}"))?;
    let run = director_run_with(ctx, lab, &cfg, "dga", &["--reconcile-interval", "3600"])?;
    eventually(Duration::from_secs(5), || {
        client_knows_director(lab, VIP, "from the start-up announcement")?;
        client_knows_director(lab, NEW_VIP, "from the start-up announcement")
    })?;
    // Only the second VIP's service (the first one's settings): nothing new to announce.
    write(ctx, "announce-move.toml", &long.replace(VIP, NEW_VIP))?;
    run.signal("HUP")?;
    eventually(Duration::from_secs(5), || {
        let addrs = lab.director.ns.ip(&["addr", "show", Node::IFACE])?;
        ensure(!addrs.contains(&format!("{VIP}/")), || {
            format!("{VIP} still bound after the reload dropped it: {addrs}")
        })
    })?;
    stale_entry(lab, VIP)?;
    // Two of the announcement's 1 s rounds.
    std::thread::sleep(Duration::from_millis(2500));
    let neigh = lab.client.ns.ip(&["neigh", "show", VIP])?;
    ensure(neigh.contains(BOGUS_MAC), || {
        format!("{VIP} was announced after a reload removed it: client's entry {neigh:?}")
    })
}

/// A MAC no host has: a client's neighbour entry for the VIP pointing there is stale.
const BOGUS_MAC: &str = "02:00:00:00:00:99";

/// Gives the lab's client a stale neighbour entry for `ip` (pointing at [`BOGUS_MAC`]), which
/// only an announcement from the director corrects.
fn stale_entry(lab: &Lab, ip: &str) -> Result<(), String> {
    let args = [
        "neigh",
        "replace",
        ip,
        "lladdr",
        BOGUS_MAC,
        "dev",
        Node::IFACE,
        "nud",
        "stale",
    ];
    lab.client.ns.ip(&args).map(drop)
}

/// The client's neighbour entry for `ip` names the director's MAC.
fn client_knows_director(lab: &Lab, ip: &str, when: &str) -> Result<(), String> {
    let neigh = lab.client.ns.ip(&["neigh", "show", ip])?;
    ensure(neigh.contains(&lab.director.mac), || {
        format!(
            "client's entry for {ip} {when}: {neigh:?}, want {}",
            lab.director.mac
        )
    })
}

/// Waits until ipvsadm shows `real` at weight `want`.
pub(crate) fn wait_weight(
    ns: &Netns,
    real: &str,
    want: u32,
    within: Duration,
    when: &str,
) -> Result<(), String> {
    eventually(within, || match weight_of(ns, real)? {
        Some(w) if w == want => Ok(()),
        other => Err(format!("{real} weight {other:?} {when}, want {want}")),
    })
}

/// Starts `rs-agent director run --config cfg` in the lab's director and waits for the first
/// apply (rs2 at weight 1).
fn director_run(ctx: &Ctx, lab: &Lab, cfg: &str, tag: &str) -> Result<Proc, String> {
    director_run_with(ctx, lab, cfg, tag, &[])
}

/// `director_run` with more `director run` options.
pub(crate) fn director_run_with(
    ctx: &Ctx,
    lab: &Lab,
    cfg: &str,
    tag: &str,
    options: &[&str],
) -> Result<Proc, String> {
    let state = ctx.scratch.join(format!("state-{tag}-run"));
    let state = state.to_string_lossy();
    let agent = ctx.agent.to_string_lossy();
    let mut args = vec!["--state-dir", &state, "director", "run", "--config", cfg];
    args.extend_from_slice(options);
    let run = lab.director.ns.spawn(&agent, &args)?;
    wait_weight(
        &lab.director.ns,
        "192.0.2.12:80",
        1,
        Duration::from_secs(30),
        "waiting for the first apply",
    )?;
    Ok(run)
}

/// `rs-agent drain` on a real server running `rs-agent run --health-listen`: the director's
/// HTTP check of /health quiesces it and not one client request fails, before, during or
/// after; `undrain` brings it back.
fn drain_without_failures(ctx: &Ctx) -> Result<(), String> {
    let lab = Lab::build("ddrain", ctx)?;
    let agent = ctx.agent.to_string_lossy().into_owned();
    let mut agents = Vec::new();
    for (rs, tag) in [(&lab.rs1, "rs1"), (&lab.rs2, "rs2")] {
        let state = ctx.scratch.join(format!("state-drain-{tag}"));
        let state = state.to_string_lossy().into_owned();
        let listen = format!("{}:8081", rs.ip);
        agents.push(rs.ns.spawn(
            &agent,
            &[
                "--state-dir",
                &state,
                "run",
                "--vip",
                VIP,
                "--health-listen",
                &listen,
            ],
        )?);
        let url = format!("http://{listen}/health");
        eventually(Duration::from_secs(20), || {
            lab.client.http_get(&url).map(drop)
        })?;
    }
    let cfg = write(
        ctx,
        "drain.toml",
        &lab_config(Some("type = \"http\"\nport = 8081\npath = \"/health\""), 1),
    )?;
    let _director = director_run(ctx, &lab, &cfg, "drain")?;
    let mut served = Vec::new();
    let fetch = |served: &mut Vec<String>| -> Result<(), String> {
        let name = lab
            .get_vip()
            .map_err(|e| format!("a request failed: {e} (served so far: {served:?})"))?;
        served.push(name);
        Ok(())
    };
    for _ in 0..4 {
        fetch(&mut served)?;
    }
    let state = ctx.scratch.join("state-drain-rs1");
    let state = state.to_string_lossy();
    lab.rs1.ns.run(&agent, &["--state-dir", &state, "drain"])?;
    // Keep requesting while the director notices: every request must succeed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while weight_of(&lab.director.ns, "192.0.2.11:80")? != Some(0) {
        ensure(Instant::now() < deadline, || {
            "rs1 was not quiesced within 20 s of `drain`".into()
        })?;
        fetch(&mut served)?;
    }
    let before = served.len();
    for _ in 0..4 {
        fetch(&mut served)?;
    }
    ensure(served[before..].iter().all(|n| n == "rs2"), || {
        format!("drained rs1 still served: {served:?}")
    })?;
    lab.rs1
        .ns
        .run(&agent, &["--state-dir", &state, "undrain"])?;
    wait_weight(
        &lab.director.ns,
        "192.0.2.11:80",
        1,
        Duration::from_secs(20),
        "after undrain",
    )?;
    for _ in 0..4 {
        fetch(&mut served)?;
    }
    ensure(served.iter().rev().take(4).any(|n| n == "rs1"), || {
        format!("rs1 not back after undrain: {served:?}")
    })?;
    drop(agents);
    Ok(())
}

/// SIGHUP with one weight changed and one real server added: `ipvsadm-save -n` shows exactly
/// that, and a download through the VIP that was running across the reload completes.
fn sighup_reload(ctx: &Ctx) -> Result<(), String> {
    let lab = Lab::build("dhup", ctx)?;
    let rs3 = lab.lan.attach("rs3", 13)?;
    let _www3 = start_http(&rs3, "rs3", &ctx.scratch.join("www-rs3"))?;
    let big = vec![b'x'; 3 * 1024 * 1024];
    for (rs, name) in [(&lab.rs1, "rs1"), (&lab.rs2, "rs2"), (&rs3, "rs3")] {
        ctx.agent(&rs.ns, &["up", "--vip", VIP])?;
        let path = ctx.scratch.join(format!("www-{name}")).join("big");
        std::fs::write(&path, &big).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    // A second service that the reload does not change: the SIGHUP pass reconciles only the
    // changed one; the periodic full pass still repairs drift in this one.
    let second = "\n[[director.service]]\nvip = \"192.0.2.100\"\nport = 8080\n\
                  scheduler = \"rr\"\nreals = [\"192.0.2.11:8080\"]\n";
    let cfg = write(ctx, "reload.toml", &(lab_config(None, 1) + second))?;
    let director = director_run(ctx, &lab, &cfg, "hup")?;
    table_is(
        &lab.director.ns,
        &[
            "-A -t 192.0.2.100:80 -s rr",
            "-a -t 192.0.2.100:80 -r 192.0.2.11:80 -g -w 1",
            "-a -t 192.0.2.100:80 -r 192.0.2.12:80 -g -w 1",
            "-A -t 192.0.2.100:8080 -s rr",
            "-a -t 192.0.2.100:8080 -r 192.0.2.11:8080 -g -w 1",
        ],
        "before the reload",
    )?;
    // A slow download (3 MiB at 300 KiB/s, ~10 s) established before the reload.
    let client = lab.client.ns.name.clone();
    let download = std::thread::spawn(move || {
        crate::guest::output(
            "ip",
            &[
                "netns",
                "exec",
                &client,
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download}",
                "--limit-rate",
                "300k",
                "--max-time",
                "50",
                "http://192.0.2.100/big",
            ],
        )
    });
    std::thread::sleep(Duration::from_secs(3));
    let more =
        lab_config(None, 3) + "\n[[director.service.real]]\naddress = \"192.0.2.13\"\n" + second;
    write(ctx, "reload.toml", &more)?;
    director.signal("HUP")?;
    let want = [
        "-A -t 192.0.2.100:80 -s rr",
        "-a -t 192.0.2.100:80 -r 192.0.2.11:80 -g -w 3",
        "-a -t 192.0.2.100:80 -r 192.0.2.12:80 -g -w 1",
        "-a -t 192.0.2.100:80 -r 192.0.2.13:80 -g -w 1",
        "-A -t 192.0.2.100:8080 -s rr",
        "-a -t 192.0.2.100:8080 -r 192.0.2.11:8080 -g -w 1",
    ];
    eventually(Duration::from_secs(20), || {
        table_is(&lab.director.ns, &want, "after SIGHUP")
    })?;
    // Drift in the service the reload did not touch: the full pass (every 5 s) repairs it.
    let hand_edit_is_repaired = |weight: &str, what: &str| {
        lab.director.ns.run(
            "ipvsadm",
            &[
                "-e",
                "-t",
                "192.0.2.100:8080",
                "-r",
                "192.0.2.11:8080",
                "-g",
                "-w",
                weight,
            ],
        )?;
        eventually(Duration::from_secs(20), || {
            table_is(&lab.director.ns, &want, what)
        })
    };
    hand_edit_is_repaired("9", "after a hand edit of the other service")?;
    let out = download
        .join()
        .map_err(|_| "download thread panicked".to_string())??;
    let size = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ensure(
        out.status.success() && size == big.len().to_string(),
        || {
            format!(
                "download across the reload: exit {:?}, {size} bytes of {}; {}",
                out.status.code(),
                big.len(),
                String::from_utf8_lossy(&out.stderr)
            )
        },
    )?;
    // A reload that validates but the kernel refuses (Debian 12's 6.1 kernel has no
    // ip_vs_twos; kernels from 6.2 on have it, so the guest's modprobe is told to fail it,
    // as a missing module fails — the guest's /run is its own): rolled back and kept out, so
    // the running configuration goes on being enforced — the next hand edit is repaired as
    // before, and no half of it stays.
    std::fs::create_dir_all("/run/modprobe.d").map_err(|e| format!("/run/modprobe.d: {e}"))?;
    crate::guest::write_file(
        std::path::Path::new("/run/modprobe.d/rs-agent-vm-test.conf"),
        "install ip_vs_twos /bin/false\n",
    )?;
    let twos = "\n[[director.service]]\nvip = \"192.0.2.100\"\nport = 8443\n\
                scheduler = \"twos\"\nreals = [\"192.0.2.11:8443\"]\n";
    write(ctx, "reload.toml", &(more + twos))?;
    director.signal("HUP")?;
    std::thread::sleep(Duration::from_secs(2));
    table_is(&lab.director.ns, &want, "after a reload the kernel refuses")?;
    hand_edit_is_repaired("7", "a hand edit after the refused reload")
}

/// The two check types the other checks do not use, end to end: an HTTPS check (against
/// `openssl s_server` with a throwaway self-signed certificate, on another port than the
/// service's) and a command check (`test -e` of a per-server flag file, via `$RS_ADDR`). Each
/// quiesces exactly its failing real server and restores it on recovery.
fn https_and_command_checks(ctx: &Ctx) -> Result<(), String> {
    let lab = Lab::build("dchk", ctx)?;
    let key = ctx.scratch.join("tls-key.pem");
    let cert = ctx.scratch.join("tls-cert.pem");
    let (key, cert) = (key.to_string_lossy(), cert.to_string_lossy());
    crate::guest::run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &cert,
            "-days",
            "2",
            "-subj",
            "/CN=rs-agent-test",
        ],
    )?;
    let tls = |rs: &Node| {
        rs.ns.spawn(
            "openssl",
            &[
                "s_server", "-accept", "8443", "-cert", &cert, "-key", &key, "-www", "-quiet",
            ],
        )
    };
    let mut tls1 = Some(tls(&lab.rs1)?);
    let _tls2 = tls(&lab.rs2)?;
    let flag = |ip: &str| ctx.scratch.join(format!("cmd-up-{ip}"));
    for ip in ["192.0.2.11", "192.0.2.12"] {
        crate::guest::write_file(&flag(ip), "")?;
    }
    let scratch = ctx.scratch.to_string_lossy();
    let cfg = format!(
        "[director]\ninterface = \"eth0\"\ngarp_count = 0\n\n\
         [[director.service]]\nvip = \"{VIP}\"\nport = 80\nscheduler = \"rr\"\n\
         reals = [\"192.0.2.11:80\", \"192.0.2.12:80\"]\n\n\
         [director.service.check]\ntype = \"https\"\nport = 8443\npath = \"/\"\n\
         interval_ms = 2000\ntimeout_ms = 1500\nrise = 2\nfall = 2\n\n\
         [[director.service]]\nvip = \"{VIP}\"\nport = 8080\nscheduler = \"rr\"\n\
         reals = [\"192.0.2.11:8080\", \"192.0.2.12:8080\"]\n\n\
         [director.service.check]\ntype = \"command\"\n\
         command = [\"/bin/sh\", \"-c\", \"test -e {scratch}/cmd-up-$RS_ADDR\"]\n\
         interval_ms = 2000\ntimeout_ms = 1500\nrise = 2\nfall = 2\n"
    );
    let cfg = write(ctx, "checks.toml", &cfg)?;
    let _run = director_run(ctx, &lab, &cfg, "chk")?;
    let ns = &lab.director.ns;
    let all_up = [
        "192.0.2.11:80",
        "192.0.2.12:80",
        "192.0.2.11:8080",
        "192.0.2.12:8080",
    ];
    // Passing checks keep everyone in: after more than fall x interval, all still weight 1.
    std::thread::sleep(Duration::from_secs(6));
    for real in all_up {
        ensure(weight_of(ns, real)? == Some(1), || {
            format!("{real} not at weight 1 while its check passes")
        })?;
    }
    // HTTPS: rs1's TLS server stops → only rs1:80 is quiesced; back after rise checks.
    tls1.take();
    wait_weight(
        ns,
        "192.0.2.11:80",
        0,
        Duration::from_secs(30),
        "after its TLS server stopped",
    )?;
    ensure(weight_of(ns, "192.0.2.12:80")? == Some(1), || {
        "rs2:80 quiesced although its HTTPS check passes".to_string()
    })?;
    tls1 = Some(tls(&lab.rs1)?);
    wait_weight(
        ns,
        "192.0.2.11:80",
        1,
        Duration::from_secs(30),
        "after its TLS server restarted",
    )?;
    // Command: rs2's flag file goes → only rs2:8080 is quiesced; back when it returns.
    std::fs::remove_file(flag("192.0.2.12")).map_err(|e| format!("removing the flag: {e}"))?;
    wait_weight(
        ns,
        "192.0.2.12:8080",
        0,
        Duration::from_secs(20),
        "after its command check failed",
    )?;
    ensure(weight_of(ns, "192.0.2.11:8080")? == Some(1), || {
        "rs1:8080 quiesced although its command check passes".to_string()
    })?;
    std::fs::write(flag("192.0.2.12"), "").map_err(|e| format!("restoring the flag: {e}"))?;
    wait_weight(
        ns,
        "192.0.2.12:8080",
        1,
        Duration::from_secs(20),
        "after its command check passed again",
    )?;
    drop(tls1);
    Ok(())
}

/// `on_failure = "remove"` with a sorry server: a dead real server leaves the table (not
/// weight 0); when the last one dies the sorry server (a third host, VIP bound and ARP
/// suppressed like a real server) is added and the client gets its page; the first real
/// server back replaces it; recovery restores the configured weights. Witnessed by
/// `ipvsadm-save -n` and by what the client fetches through the VIP.
fn remove_and_sorry_server(ctx: &Ctx) -> Result<(), String> {
    let mut lab = Lab::build("dsorry", ctx)?;
    let sorry = lab.lan.attach("sorry", 13)?;
    let _sorry_http = start_http(&sorry, "sorry", &ctx.scratch.join("www-sorry"))?;
    for ns in [&lab.rs1.ns, &lab.rs2.ns, &sorry.ns] {
        ctx.agent(ns, &["up", "--vip", VIP])?;
    }
    let cfg = format!(
        "[director]\ninterface = \"eth0\"\ngarp_count = 0\n\n\
         [[director.service]]\nvip = \"{VIP}\"\nport = 80\nscheduler = \"rr\"\n\
         sorry_server = \"192.0.2.13:80\"\nreals = [\"192.0.2.11:80\", \"192.0.2.12:80\"]\n\n\
         [director.service.check]\ntype = \"http\"\npath = \"/\"\ninterval_ms = 1000\n\
         timeout_ms = 500\nrise = 2\nfall = 2\non_failure = \"remove\"\n"
    );
    let cfg = write(ctx, "sorry.toml", &cfg)?;
    let _run = director_run(ctx, &lab, &cfg, "sorry")?;
    sorry_table(&lab, [Some(1), Some(1), None], "at start")?;
    lab.stop_http(0);
    sorry_table(&lab, [None, Some(1), None], "rs1's web server stopped")?;
    sorry_client_gets(&lab, "rs2", "rs1 removed")?;
    lab.stop_http(1);
    sorry_table(&lab, [None, None, Some(1)], "both web servers stopped")?;
    sorry_client_gets(&lab, "sorry", "every real server down")?;
    lab.start_http(1, ctx)?;
    sorry_table(&lab, [None, Some(1), None], "rs2's web server back")?;
    sorry_client_gets(&lab, "rs2", "rs2 back")?;
    lab.start_http(0, ctx)?;
    sorry_table(&lab, [Some(1), Some(1), None], "rs1's web server back")
}

/// Waits until the weights of rs1, rs2 and the sorry server (None: not in the table) are `want`.
fn sorry_table(lab: &Lab, want: [Option<u32>; 3], when: &str) -> Result<(), String> {
    let ns = &lab.director.ns;
    eventually(Duration::from_secs(15), || {
        let have = [
            weight_of(ns, "192.0.2.11:80")?,
            weight_of(ns, "192.0.2.12:80")?,
            weight_of(ns, "192.0.2.13:80")?,
        ];
        ensure(have == want, || {
            format!("{when}: weights of rs1, rs2, sorry are {have:?}, want {want:?}")
        })
    })
}

/// Three fetches through the VIP all answered by `want`.
fn sorry_client_gets(lab: &Lab, want: &str, when: &str) -> Result<(), String> {
    for _ in 0..3 {
        let name = lab.get_vip()?;
        ensure(name == want, || {
            format!("{when}: the client got {name:?}, want {want:?}")
        })?;
    }
    Ok(())
}
