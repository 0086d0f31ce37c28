//! Namespace tier for the director's input handling on a kernel *without* IPVS (this
//! machine's): every bad input to `director up` and `director check`, and the missing module,
//! is a one-line error with exit code 2, and nothing is changed — the address the director
//! would bind is never added. What the director does with IPVS is proven in the VM tier
//! (tests/vm/director.rs).

mod common;

use common::{assert_same_snapshot, privileged, stderr, HostSpec, Lan};

const QUICK: [&str; 8] = [
    "director",
    "up",
    "--interface",
    "eth0",
    "--vip",
    "192.0.2.100",
    "--port",
    "80",
];

fn ipvs_in_kernel() -> bool {
    std::fs::read_to_string("/proc/net/ip_vs").is_ok()
}

#[test]
fn bad_director_input_exits_2_and_changes_nothing() {
    if !privileged("bad_director_input_exits_2_and_changes_nothing") {
        return;
    }
    let mut lan = Lan::new("dirbad");
    let director = lan.host(HostSpec::new("dir", "192.0.2.2"));
    let before = director.snapshot();
    let with = |extra: &[&str]| -> Vec<String> {
        QUICK.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let mut cases: Vec<(Vec<String>, &str)> = vec![
        (
            with(&["--scheduler", "rrr", "--real", "192.0.2.11"]),
            "unknown scheduler \"rrr\"; expected one of rr, wrr",
        ),
        (
            with(&["--real", "192.0.2.11", "--real", "192.0.2.11"]),
            "--real 192.0.2.11: real server given twice",
        ),
        (
            with(&["--real", "2001:db8::11"]),
            "not of the VIP's address family",
        ),
        (with(&["--real", "192.0.2.11:0"]), "port 0 is out of range"),
        (
            [
                "director",
                "up",
                "--interface",
                "eth0",
                "--vip",
                "192.0.2.100",
                "--port",
                "65536",
                "--real",
                "192.0.2.11",
            ]
            .map(str::to_string)
            .to_vec(),
            "--port 65536: port \"65536\" is out of range; expected 1..=65535",
        ),
        (
            [
                "director",
                "up",
                "--interface",
                "nosuch0",
                "--vip",
                "192.0.2.100",
                "--port",
                "80",
                "--real",
                "192.0.2.11",
            ]
            .map(str::to_string)
            .to_vec(),
            "nosuch0",
        ),
    ];
    if !ipvs_in_kernel() {
        // This machine's kernel: the missing module is reported with the fix.
        cases.push((
            with(&["--scheduler", "rr", "--real", "192.0.2.11"]),
            "modprobe ip_vs",
        ));
    }
    // `director check` validates exactly as `up` does (the units run it before a reload).
    let checks: Vec<(Vec<String>, &str)> = cases
        .iter()
        .map(|(args, want)| {
            let mut args = args.clone();
            args[1] = "check".into();
            (args, *want)
        })
        .collect();
    cases.extend(checks);
    for (args, want) in &cases {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = director.rs_agent(&argv);
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{argv:?}: exit {:?}, stderr {err}",
            out.status.code()
        );
        assert!(
            err.contains(want),
            "{argv:?}: stderr {err:?} lacks {want:?}"
        );
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{argv:?}: not one line: {err}"
        );
        assert_same_snapshot(&before, &director.snapshot(), &format!("after {argv:?}"));
    }
    let down = director.rs_agent(&["director", "down"]);
    assert!(
        down.status.success(),
        "down with nothing owned: {}",
        stderr(&down)
    );
}

#[test]
fn import_rejects_what_it_cannot_convert() {
    if !privileged("import_rejects_what_it_cannot_convert") {
        return;
    }
    let mut lan = Lan::new("dirimp");
    let director = lan.host(HostSpec::new("dir", "192.0.2.2"));
    let file = std::env::temp_dir().join(format!("rsa-import-{}.txt", std::process::id()));
    std::fs::write(
        &file,
        "-A -t 192.0.2.100:80 -s rr\n-a -t 192.0.2.100:80 -r 192.0.2.11:80 -g --bogus\n",
    )
    .expect("write input");
    let path = file.to_string_lossy().into_owned();
    let out = director.rs_agent(&["director", "import", &path]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("ipvsadm-save input:2:"),
        "{}",
        stderr(&out)
    );
}
