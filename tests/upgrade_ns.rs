//! Upgrade safety (namespace tier): a node configured by rs-agent 0.1 is understood by this
//! version. The kernel side is made by `up` (unchanged between the two); the state directory
//! is then replaced by the files 0.1 wrote for the same command (tests/fixtures/state-0.1).
//! `status`, `up`, `run` and `down` must read them: `down` gives back the node as it was.

mod common;

use common::*;
use std::process::Stdio;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/state-0.1");

/// Empties the state directory and puts 0.1's journal for `method` in it.
fn install_0_1_state(rs: &Host, method: &str) {
    for entry in std::fs::read_dir(&rs.state_dir).expect("state dir listed") {
        let path = entry.expect("state dir entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            std::fs::remove_file(&path).expect("new state file removed");
        }
    }
    let fixture = format!("{FIXTURES}/real-server-{method}.json");
    std::fs::copy(&fixture, rs.state_dir.join("real-server.json")).expect("fixture copied");
}

#[test]
fn a_real_server_configured_by_0_1_is_kept_and_undone_exactly() {
    require_privileges!();
    for method in ["sysctl", "nft"] {
        let mut lan = Lan::new(&format!("upg-{method}"));
        let rs = lan.host(HostSpec::new("rs", "192.0.2.10/24"));
        let before = rs.snapshot();
        let args = [
            "--vip",
            "192.0.2.100",
            "--vip",
            "2001:db8::100",
            "--arp",
            method,
        ];
        let up: Vec<&str> = std::iter::once("up").chain(args).collect();
        rs.rs_agent_ok(&up);
        let made = rs.snapshot();
        install_0_1_state(&rs, method);

        // Without a config: `status` finds 0.1's configuration in its journal.
        let status = rs.rs_agent(&["status"]);
        assert!(
            status.status.success(),
            "{method}: status after the upgrade: {}\n{}",
            stdout(&status),
            stderr(&status)
        );
        let again = rs.rs_agent_ok(&up);
        assert!(
            again.contains("nothing to do"),
            "{method}: up after the upgrade changed something:\n{again}"
        );

        // `run` keeps what 0.1 made, and the journal it leaves still records all of it.
        let log = rs.state_dir.with_extension("run.log");
        let file = std::fs::File::create(&log).expect("run log created");
        let run_args: Vec<&str> = args.to_vec();
        let mut agent = RunAgent::start(&rs, &run_args, Stdio::from(file));
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        agent.wait_configured(&rs, read_log);
        assert!(
            agent.stop().success(),
            "{method}: run failed:\n{}",
            read_log()
        );
        assert!(
            !read_log().contains("repaired:"),
            "{method}: run repaired a node 0.1 configured:\n{}",
            read_log()
        );
        assert_same_snapshot(
            &made,
            &rs.snapshot(),
            &format!("{method}: up and run after 0.1"),
        );

        let down = rs.rs_agent_ok(&["down"]);
        assert_same_snapshot(
            &before,
            &rs.snapshot(),
            &format!("{method}: down after 0.1"),
        );
        for undone in ["192.0.2.100/32 from lo", "2001:db8::100/128 from lo"] {
            assert!(
                down.contains(undone),
                "{method}: down did not remove {undone}:\n{down}"
            );
        }
        let _ = std::fs::remove_file(&log);
    }
}
