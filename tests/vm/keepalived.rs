//! Migration checks: a keepalived configuration run by keepalived itself (Debian 12's 2.2.7,
//! its checker only) and the same file imported by `rs-agent director import --from
//! keepalived` and run by `rs-agent director run`, in the same lab. `ipvsadm-save -n` is the
//! witness: the same table at start, the same table once a real server's web server is
//! stopped (quiesced or removed, as the file says), and the same again once it is back.

use crate::director::write;
use crate::guest::{ensure, eventually, run, Ctx, Lab, Netns, Proc};
use crate::Check;
use std::time::Duration;

pub const CHECKS: &[Check] = &[Check {
    name: "keepalived_import_equivalence",
    run: equivalence,
}];

/// One file with each construct the importer carries: DR with wrr, persistence and its
/// granularity, quiescing (`inhibit_on_failure`) with TCP checks; a `virtual_server_group`
/// with HTTP checks and removal; a fwmark service; `alpha` with a `quorum` of 2 and a sorry
/// server (one server down: below quorum, the sorry server serves alone); a UDP service with a
/// MISC_CHECK.
const CONF: &str = r#"! rs-agent's VM tier: keepalived and rs-agent on the same file
global_defs {
    enable_script_security
    script_user root
}

virtual_server 192.0.2.100 80 {
    delay_loop 1
    lb_algo wrr
    lb_kind DR
    persistence_timeout 60
    persistence_granularity 255.255.255.0
    protocol TCP
    inhibit_on_failure
    real_server 192.0.2.11 80 {
        weight 3
        TCP_CHECK {
            connect_timeout 1
            retry 1
        }
    }
    real_server 192.0.2.12 80 {
        weight 1
        TCP_CHECK {
            connect_timeout 1
            retry 1
        }
    }
}

virtual_server_group web {
    192.0.2.101 80
    192.0.2.102 80
}

virtual_server group web {
    delay_loop 1
    lb_algo rr
    lb_kind DR
    protocol TCP
    real_server 192.0.2.11 80 {
        weight 1
        HTTP_GET {
            url {
                path /
                status_code 200
            }
            connect_timeout 1
            retry 1
        }
    }
    real_server 192.0.2.12 80 {
        weight 2
        HTTP_GET {
            url {
                path /
                status_code 200
            }
            connect_timeout 1
            retry 1
        }
    }
}

virtual_server fwmark 7 {
    delay_loop 1
    lb_algo lc
    lb_kind DR
    inhibit_on_failure
    real_server 192.0.2.11 80 {
        weight 1
        TCP_CHECK {
            connect_timeout 1
            retry 1
        }
    }
}

virtual_server 192.0.2.103 80 {
    delay_loop 1
    lb_algo rr
    lb_kind DR
    protocol TCP
    alpha
    quorum 2
    hysteresis 0
    sorry_server 192.0.2.13 80
    real_server 192.0.2.11 80 {
        weight 1
        TCP_CHECK {
            connect_timeout 1
            retry 1
        }
    }
    real_server 192.0.2.12 80 {
        weight 1
        TCP_CHECK {
            connect_timeout 1
            retry 1
        }
    }
}

virtual_server 192.0.2.100 53 {
    delay_loop 1
    lb_algo sh
    lb_kind DR
    protocol UDP
    real_server 192.0.2.12 53 {
        weight 1
        MISC_CHECK {
            misc_path /bin/true
        }
    }
}
"#;

/// rs1, whose web server the check stops.
const RS1: &str = "192.0.2.11:80";

/// The lines of `ipvsadm-save -n`, sorted.
fn table(ns: &Netns) -> Result<Vec<String>, String> {
    let mut lines: Vec<String> = ns
        .run("ipvsadm-save", &["-n"])?
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    Ok(lines)
}

/// True when no line of `lines` sends traffic to rs1 (it is quiesced or gone everywhere).
fn rs1_out(lines: &[String]) -> bool {
    !lines
        .iter()
        .any(|l| l.contains(&format!("-r {RS1} ")) && !l.ends_with(" -w 0"))
}

/// The table once it holds `want` and reads the same again a moment later (a change of
/// several entries is never compared half made); `what` names the wait in the error.
fn settled(
    ns: &Netns,
    within: Duration,
    what: &str,
    want: impl Fn(&[String]) -> bool,
) -> Result<Vec<String>, String> {
    eventually(within, || {
        let lines = table(ns)?;
        if !want(&lines) {
            return Err(format!("{what}: table now\n{}", lines.join("\n")));
        }
        std::thread::sleep(Duration::from_millis(1500));
        let again = table(ns)?;
        match again == lines {
            true => Ok(lines),
            false => Err(format!("{what}: still changing:\n{}", again.join("\n"))),
        }
    })
}

/// The three tables of one implementation: at start, with rs1's web server stopped, and
/// with it back.
struct Tables {
    start: Vec<String>,
    down: Vec<String>,
    back: Vec<String>,
}

const BOUND: Duration = Duration::from_secs(40);

/// Waits for the first table (`services` service lines), stops rs1's web server, waits for
/// rs1 to be out everywhere, starts it again and waits for the first table.
fn observe(lab: &mut Lab, ctx: &Ctx, who: &str) -> Result<Tables, String> {
    let ns = &lab.director.ns;
    let start = settled(ns, BOUND, &format!("{who}: first table"), |l| {
        l.iter().filter(|l| l.starts_with("-A ")).count() == 6
            && l.iter().filter(|l| l.starts_with("-a ")).count() == 10
    })?;
    lab.stop_http(0);
    let ns = &lab.director.ns;
    let down = settled(ns, BOUND, &format!("{who}: rs1 out"), rs1_out)?;
    lab.start_http(0, ctx)?;
    let ns = &lab.director.ns;
    let back = settled(ns, BOUND, &format!("{who}: rs1 back"), |l| l == start)?;
    Ok(Tables { start, down, back })
}

/// keepalived's checker, stopped with SIGTERM (it then removes what it made) and, failing
/// that, its processes killed by their pid files.
struct Keepalived {
    proc: Option<Proc>,
    pids: Vec<String>,
}

impl Keepalived {
    fn start(ns: &Netns, ctx: &Ctx, conf: &str) -> Result<Keepalived, String> {
        let pid = |name: &str| ctx.scratch.join(name).to_string_lossy().into_owned();
        let pids = vec![pid("ka.pid"), pid("ka-check.pid"), pid("ka-vrrp.pid")];
        let args = [
            "--dont-fork",
            "--log-console",
            "--check",
            "-f",
            conf,
            "-p",
            &pids[0],
            "-c",
            &pids[1],
            "-r",
            &pids[2],
        ];
        let proc = ns.spawn("keepalived", &args)?;
        Ok(Keepalived {
            proc: Some(proc),
            pids,
        })
    }

    fn stop(&mut self) -> Result<(), String> {
        if let Some(mut proc) = self.proc.take() {
            proc.signal("TERM")?;
            proc.wait(BOUND)?;
        }
        Ok(())
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        for path in &self.pids {
            if let Ok(pid) = std::fs::read_to_string(path) {
                let _ = run("kill", &["-KILL", pid.trim()]);
            }
        }
    }
}

fn equivalence(ctx: &Ctx) -> Result<(), String> {
    let mut lab = Lab::build("dka", ctx)?;
    let conf = write(ctx, "keepalived.conf", CONF)?;
    let mut keepalived = Keepalived::start(&lab.director.ns, ctx, &conf)?;
    let theirs = observe(&mut lab, ctx, "keepalived")?;
    keepalived.stop()?;
    // The constructs were exercised: below quorum the sorry server serves alone.
    let sorry = "-a -t 192.0.2.103:80 -r 192.0.2.13:80 -g -w 1".to_string();
    ensure(
        theirs.down.contains(&sorry)
            && !theirs
                .down
                .iter()
                .any(|l| l.starts_with("-a -t 192.0.2.103:80 -r 192.0.2.12")),
        || format!("keepalived below quorum:\n{}", theirs.down.join("\n")),
    )?;
    settled(&lab.director.ns, BOUND, "keepalived's table removed", |l| {
        !l.iter().any(|l| l.starts_with("-A "))
    })?;
    let imported = ctx.agent_output(
        &lab.director.ns,
        &[
            "director",
            "import",
            "--from",
            "keepalived",
            "--interface",
            "eth0",
            &conf,
        ],
    )?;
    let toml = String::from_utf8_lossy(&imported.stdout).into_owned();
    ensure(imported.status.success(), || {
        format!(
            "import refused the file: {}",
            String::from_utf8_lossy(&imported.stderr)
        )
    })?;
    let cfg = write(ctx, "imported.toml", &toml)?;
    let state = ctx.scratch.join("state-dka");
    let state = state.to_string_lossy();
    let agent = ctx.agent.to_string_lossy();
    let run_args = ["--state-dir", &state, "director", "run", "--config", &cfg];
    let director = lab.director.ns.spawn(&agent, &run_args)?;
    let ours = observe(&mut lab, ctx, "rs-agent")?;
    drop(director);
    lab.director
        .ns
        .run(&agent, &["--state-dir", &state, "director", "down"])?;
    for (when, k, r) in [
        ("at start", &theirs.start, &ours.start),
        ("with rs1's web server stopped", &theirs.down, &ours.down),
        ("with it back", &theirs.back, &ours.back),
    ] {
        ensure(k == r, || {
            format!(
                "tables differ {when}:\nkeepalived\n{}\nrs-agent\n{}\nimported TOML:\n{toml}\nwarnings:\n{}",
                k.join("\n"),
                r.join("\n"),
                String::from_utf8_lossy(&imported.stderr)
            )
        })?;
    }
    Ok(())
}
