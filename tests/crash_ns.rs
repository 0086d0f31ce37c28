//! Crash consistency (namespace tier): `up` or `down` killed with SIGKILL at any point, then
//! `down` run to the end, gives back the node exactly as it was (byte-identical snapshot of
//! addresses, links, nft ruleset and sysctls). The kill points are spread by a slow `nft` on
//! PATH (each call 100 ms late) and delays that walk through the command's run; the journal is
//! written before each change, so whatever was made is undone.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A directory whose `nft` runs the real one 100 ms late.
fn slow_nft(dir: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).expect("wrapper dir");
    let real = stdout(&run(&["sh", "-c", "command -v nft"]))
        .trim()
        .to_string();
    let script = format!("#!/bin/sh\nsleep 0.1\nexec {real} \"$@\"\n");
    let path = dir.join("nft");
    std::fs::write(&path, script).expect("wrapper written");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path_var = std::env::var("PATH").unwrap_or_default();
    format!("PATH={}:{path_var}", dir.display())
}

/// Starts `rs-agent ARGS` in the host's namespace and SIGKILLs it after `after`; true when it
/// had already finished by then.
fn kill_after(rs: &Host, path_env: &str, args: &[&str], after: Duration) -> bool {
    let state = format!("RS_AGENT_STATE_DIR={}", rs.state_dir.display());
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &rs.ns.name,
            "env",
            "RS_AGENT_LOG=off",
            &state,
            path_env,
        ])
        .arg(RS_AGENT)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rs-agent started");
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

#[test]
fn sigkill_at_any_point_of_up_or_down_then_down_restores_the_node_exactly() {
    require_privileges!();
    let mut lan = Lan::new("crash");
    let rs = lan.host(HostSpec::new("rs", "192.0.2.10/24"));
    let path_env = slow_nft(&rs.state_dir.with_extension("bin"));
    let before = rs.snapshot();
    let up = [
        "up",
        "--vip",
        "192.0.2.100",
        "--vip",
        "2001:db8::100",
        "--arp",
        "nft",
    ];
    let (mut tried, mut killed) = (0, 0);
    for step in 0..16u64 {
        let after = Duration::from_millis(5 + step * 15);
        for killing_down in [false, true] {
            tried += 1;
            let finished = match killing_down {
                false => kill_after(&rs, &path_env, &up, after),
                true => {
                    rs.rs_agent_ok(&up);
                    kill_after(&rs, &path_env, &["down"], after)
                }
            };
            killed += usize::from(!finished);
            rs.rs_agent_ok(&["down"]);
            let what = format!(
                "kill after {after:?} of {}",
                if killing_down { "down" } else { "up" }
            );
            assert_same_snapshot(&before, &rs.snapshot(), &what);
        }
    }
    // The delays must have reached inside the commands, not only past their end.
    assert!(
        killed >= tried / 2,
        "only {killed} of {tried} runs were killed before they ended"
    );
    eprintln!("crash_ns: {tried} trials, {killed} killed mid-run, all restored exactly");
    let _ = std::fs::remove_dir_all(rs.state_dir.with_extension("bin"));
}
