//! Bad input changes nothing: files and values every command must refuse before it touches the
//! kernel (exit 2, one line naming the input and the fix, the namespace as it was), and a
//! `director import` that fails prints nothing.
//!
//! The namespace tests need root (skip loudly otherwise; fail when CI is set); the import
//! tests run the binary on stdin and need nothing. Run with `cargo test --test inputs_ns`.

mod common;

use common::{
    assert_refused, assert_same_snapshot, require_privileges, stderr, stdout, Host, HostSpec, Lan,
    RS_AGENT,
};
use std::io::Write;
use std::process::{Command, Output, Stdio};

const VIP: &str = "192.0.2.100";

/// A single real server on a LAN of its own.
fn lone_real_server(test: &str) -> (Lan, Host) {
    let mut lan = Lan::new(test);
    let rs = lan.host(HostSpec::new("rs1", "192.0.2.2/24"));
    (lan, rs)
}

/// Writes `text` as `name` in the host's state directory; returns its path.
fn config(rs: &Host, name: &str, text: &str) -> String {
    let path = rs.state_dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path.to_string_lossy().into_owned()
}

/// `up`, `status` and `check` refuse the values `run` refuses, naming `file:line:col`.
#[test]
fn every_command_refuses_what_run_refuses() {
    require_privileges!();
    let (_lan, rs) = lone_real_server("runkeys");
    let cases = [
        ("check_interval_ms = 5", 21, "check interval"),
        ("check_interval_ms = -1", 21, "check interval"),
        (
            "health_listen = \"bogus\"",
            17,
            "\"bogus\" is not a listen address",
        ),
        (
            "health_listen = \":99999\"",
            17,
            "\":99999\" is not a listen address",
        ),
    ];
    let before = rs.snapshot();
    for (i, (line, col, mention)) in cases.into_iter().enumerate() {
        let text = format!("[real_server]\nvips = [\"{VIP}\"]\n{line}\n");
        let file = config(&rs, &format!("bad{i}.toml"), &text);
        let at = format!("{file}:3:{col}:");
        for command in ["up", "status", "check"] {
            let out = rs.rs_agent(&[command, "--config", &file]);
            let what = format!("{command} with {line}");
            let err = assert_refused(&out, &what, &[&at, mention]);
            assert!(err.contains(&format!("rs-agent: {at}")), "{what}: {err}");
            assert_same_snapshot(&before, &rs.snapshot(), &what);
        }
    }
    let down = rs.rs_agent_ok(&["down"]);
    assert!(down.contains("nothing to do"), "after refusals: {down}");
}

/// `::ffff:192.0.2.100` is refused as a VIP on both sides, from flags and from the file, and
/// nothing is bound.
#[test]
fn an_ipv4_mapped_vip_binds_nothing() {
    require_privileges!();
    let (_lan, rs) = lone_real_server("mappedvip");
    let mapped = "::ffff:192.0.2.100";
    let file = config(
        &rs,
        "mapped.toml",
        &format!("[real_server]\nvips = [\"{mapped}\"]\n"),
    );
    let file_at = format!("{file}:2:9:");
    let cases: [(&[&str], &str); 4] = [
        (&["up", "--vip", mapped], "--vip ::ffff:192.0.2.100"),
        (&["up", "--config", &file], &file_at),
        (&["check", "--vip", mapped], "--vip ::ffff:192.0.2.100"),
        (
            &[
                "director",
                "up",
                "--interface",
                "eth0",
                "--vip",
                mapped,
                "--port",
                "80",
                "--real",
                "198.51.100.2",
            ],
            "--vip ::ffff:192.0.2.100",
        ),
    ];
    let before = rs.snapshot();
    for (args, at) in cases {
        let out = rs.rs_agent(args);
        let mentions = [at, "IPv4-mapped", "give the IPv4 address 192.0.2.100"];
        assert_refused(&out, &format!("{args:?}"), &mentions);
        assert_same_snapshot(&before, &rs.snapshot(), &format!("{args:?}"));
    }
}

/// rs-agent under `timeout SECS` in the host's namespace: a command that blocks is killed
/// (exit 124), so a hang is a failure and never a stuck test.
fn rs_agent_bounded(rs: &Host, secs: u32, args: &[&str]) -> Output {
    let state = format!("RS_AGENT_STATE_DIR={}", rs.state_dir.display());
    let secs = secs.to_string();
    let mut full = vec![
        "env",
        "RS_AGENT_LOG=warn",
        &state,
        "timeout",
        &secs,
        RS_AGENT,
    ];
    full.extend_from_slice(args);
    rs.ns.try_exec(&full)
}

/// A FIFO, a directory or a device as the config is refused at once (a FIFO is never opened:
/// opening one blocks until a writer comes), and so is an oversized file, without reading it.
#[test]
fn a_config_that_is_not_a_regular_file_or_too_big_is_refused_at_once() {
    require_privileges!();
    let (_lan, rs) = lone_real_server("configkind");
    let fifo = rs.state_dir.join("fifo.toml");
    common::run_ok(&["mkfifo", &fifo.to_string_lossy()]);
    let fifo = fifo.to_string_lossy().into_owned();
    let dir = rs.state_dir.to_string_lossy().into_owned();
    // Sparse: 200 MiB of holes; a read would take the whole size.
    let big = rs.state_dir.join("big.toml");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len(200 * 1024 * 1024))
        .unwrap_or_else(|e| panic!("making {}: {e}", big.display()));
    let big = big.to_string_lossy().into_owned();
    let not_regular = "not a config file; pass a regular file with --config";
    let too_big = "is 209715200 bytes, larger than the 16 MiB a config may be";
    let cases: [(&str, &str, &str); 4] = [
        (&fifo, "is a FIFO", not_regular),
        (&dir, "is a directory", not_regular),
        ("/dev/zero", "is a character device", not_regular),
        (&big, too_big, "pass the real config file"),
    ];
    let before = rs.snapshot();
    for (path, kind, fix) in cases {
        for command in [&["up"][..], &["check"], &["status"], &["director", "check"]] {
            let mut args = command.to_vec();
            args.extend_from_slice(&["--config", path]);
            let out = rs_agent_bounded(&rs, 20, &args);
            let what = format!("{args:?}");
            assert_ne!(
                out.status.code(),
                Some(124),
                "{what} blocked: killed by timeout"
            );
            assert_refused(&out, &what, &[&format!("{path}: {kind}"), fix]);
            assert_same_snapshot(&before, &rs.snapshot(), &what);
        }
    }
}

/// `rs-agent director import` with `input` on stdin (no namespace, no root needed).
fn import(input: &str) -> Output {
    let mut child = Command::new("timeout")
        .args(["-k", "2", "30", RS_AGENT, "director", "import"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running rs-agent director import");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).expect("writing stdin");
    }
    child
        .wait_with_output()
        .expect("waiting for director import")
}

/// `ipvsadm-save` without `-n` (service and host names) and tables rs-agent would refuse
/// print nothing, so `import > director.toml` never leaves a broken file; one line on stderr
/// names the input line.
#[test]
fn a_refused_import_prints_nothing() {
    let cases = [
        (
            "-A -t 192.0.2.100:http -s rr\n-a -t 192.0.2.100:http -r 198.51.100.2:http -g -w 1\n",
            "ipvsadm-save input:1:7: service \"192.0.2.100:http\"",
            "use ipvsadm-save -n",
        ),
        (
            "-A -t 192.0.2.100:80 -s rr\n-a -t 192.0.2.100:80 -r web1.example.org:80 -g -w 1\n",
            "ipvsadm-save input:2:25: real server \"web1.example.org:80\"",
            "use ipvsadm-save -n",
        ),
        (
            "-A -t 192.0.2.100:80 -s rr\n-a -t 192.0.2.100:80 -r 198.51.100.2:8080 -g -w 1\n",
            "ipvsadm-save input:2:1: rs-agent would refuse this line",
            "differs from the service's port 80",
        ),
        ("", "ipvsadm-save input: no service", "ipvsadm-save -n"),
    ];
    for (input, at, fix) in cases {
        let out = import(input);
        assert_eq!(stdout(&out), "", "{input:?}: printed on a refusal");
        assert_refused(&out, &format!("import of {input:?}"), &[at, fix]);
    }
    let good =
        import("-A -t 192.0.2.100:80 -s rr\n-a -t 192.0.2.100:80 -r 198.51.100.2:80 -g -w 2\n");
    assert!(good.status.success(), "good import: {}", stderr(&good));
    let toml = stdout(&good);
    assert!(
        toml.contains("vip = \"192.0.2.100\"\nport = 80\n") && toml.contains("weight = 2"),
        "{toml}"
    );
}

/// A usage error is one line naming what is wrong and where the help is, exit 2 (clap's own
/// was five to seven lines); help and version still print whole, exit 0. No root needed.
#[test]
fn a_usage_error_is_one_line() {
    let cli = |args: &[&str]| common::run(&[&[RS_AGENT][..], args].concat());
    for (args, says) in [
        (
            &["up", "--bogus"][..],
            "unexpected argument '--bogus' found; see `rs-agent up --help`",
        ),
        (
            &["director", "frobnicate"],
            "see `rs-agent director --help`",
        ),
        (&["up", "--vip"], "a value is required for '--vip <ADDR>'"),
        (
            &["-v", "director", "up", "--bogus"],
            "see `rs-agent director up --help`",
        ),
    ] {
        assert_refused(&cli(args), &format!("{args:?}"), &[says]);
    }
    for args in [&["--help"][..], &["up", "--help"], &["--version"]] {
        let out = cli(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(!stdout(&out).is_empty(), "{args:?} printed nothing");
    }
}

/// `director check --offline` validates a configuration on a machine without IPVS (this
/// one: CI, a workstation), no root needed: a good one passes, a bad one is the usual line.
#[test]
fn director_check_offline_needs_no_kernel() {
    let dir = std::env::temp_dir().join(format!("rsa-offline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let good = dir.join("good.toml");
    let bad = dir.join("bad.toml");
    let service = "[director]\ninterface = \"eth0\"\n[[director.service]]\nvip = \"192.0.2.100\"\nport = 80\n";
    std::fs::write(&good, format!("{service}reals = [\"198.51.100.2\"]\n")).expect("good");
    std::fs::write(&bad, format!("{service}scheduler = \"rrr\"\n")).expect("bad");
    let check = |file: &std::path::Path| {
        let path = file.to_string_lossy().into_owned();
        common::run(&[
            RS_AGENT,
            "director",
            "check",
            "--offline",
            "--config",
            &path,
        ])
    };
    let ok = check(&good);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(
        stdout(&ok).starts_with("ok: configuration valid (offline"),
        "{}",
        stdout(&ok)
    );
    assert_refused(
        &check(&bad),
        "offline check of a bad scheduler",
        &["bad.toml:6:13: unknown scheduler \"rrr\""],
    );
    let _ = std::fs::remove_dir_all(&dir);
}
