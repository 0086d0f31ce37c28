//! Namespace tier for the director's input handling on a kernel *without* IPVS (this
//! machine's): every bad input to `director up` and `director check`, and the missing module,
//! is a one-line error with exit code 2, and nothing is changed — the address the director
//! would bind is never added. `up` cannot run here, so how the director binds an IPv6 VIP
//! (without duplicate address detection) is proven by driving its executor directly. What the
//! director does with IPVS is proven in the VM tier (tests/vm/director.rs).

mod common;

use common::{
    assert_refused, assert_same_snapshot, in_netns, poll, require_privileges, stderr, stdout,
    HostSpec, Lan, Netns,
};
use rs_agent::kernel::{self, link};
use rs_agent::model::{Addr, Change, Dad};
use std::time::Duration;

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
    require_privileges!();
    let mut lan = Lan::new("dirbad");
    let director = lan.host(HostSpec::new("dir", "192.0.2.2"));
    let before = director.snapshot();
    let with = |extra: &[&str]| -> Vec<String> {
        QUICK.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    // QUICK with one value given differently.
    let instead = |quick: &str, given: &str, extra: &[&str]| -> Vec<String> {
        let mut args = with(extra);
        let at = args
            .iter()
            .position(|a| a == quick)
            .expect("a value of QUICK");
        args[at] = given.to_string();
        args
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
            instead("80", "65536", &["--real", "192.0.2.11"]),
            "--port 65536: port \"65536\" is out of range; expected 1..=65535",
        ),
        (
            instead("eth0", "nosuch0", &["--real", "192.0.2.11"]),
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
        assert_refused(&director.rs_agent(&argv), &format!("{argv:?}"), &[want]);
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
    require_privileges!();
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

/// Applies one change in `ns` the way `director up` does.
fn apply_in(ns: &Netns, change: Change) {
    let what = change.to_string();
    let result = in_netns(ns, move |rt| {
        rt.block_on(async move {
            let handle = link::connect().map_err(|e| e.to_string())?;
            kernel::apply(&handle, &change)
                .await
                .map_err(|e| e.to_string())
        })
    });
    if let Err(e) = result {
        panic!("{what} in {}: {e}", ns.name);
    }
}

/// The address `ip` as the director observes it in `ns`.
fn observed_addr(ns: &Netns, ip: &str) -> Option<Addr> {
    let ip: std::net::IpAddr = ip.parse().expect("test literal");
    let addrs = in_netns(ns, |rt| {
        rt.block_on(async {
            let handle = link::connect().map_err(|e| e.to_string())?;
            let links = link::links(&handle).await.map_err(|e| e.to_string())?;
            link::addrs(&handle, &links)
                .await
                .map_err(|e| e.to_string())
        })
    })
    .unwrap_or_else(|e| panic!("observing addresses in {}: {e}", ns.name));
    addrs.into_iter().find(|a| a.ip == ip)
}

/// `ip -6 addr show dev eth0`'s line for `ip`, e.g. `inet6 2001:db8::100/128 scope global nodad`.
fn ip_addr_line(ns: &Netns, ip: &str) -> String {
    let out = stdout(&ns.exec(&["ip", "-6", "addr", "show", "dev", "eth0"]));
    out.lines()
        .find(|l| l.contains(&format!("inet6 {ip}/")))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// An IPv6 VIP is shared by design: the director binds it without duplicate address
/// detection, so it is usable at once (never tentative) and stays so although another node
/// on the LAN answers for it. Added by hand with DAD on this LAN it fails — the director
/// observes that as `dadfailed`, and re-adding it (what `up` plans for its own) fixes it.
#[test]
fn ipv6_vip_is_bound_without_duplicate_address_detection() {
    require_privileges!();
    const VIP: &str = "2001:db8::100";
    let mut lan = Lan::new("dirdad");
    let other = lan.host(HostSpec::new("other", "192.0.2.3").ipv6("2001:db8::3/64"));
    let director = lan.host(HostSpec::new("dir", "192.0.2.2").ipv6("2001:db8::2/64"));
    // The helper turns DAD off for its hosts; the director's LAN interface runs it here.
    director.ns.sysctl("net.ipv6.conf.eth0.accept_dad", "1");
    // Another node already answers for the VIP (a misconfigured real server, say).
    other.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{VIP}/128"),
        "dev",
        "eth0",
        "nodad",
    ]);

    let add = Change::AddAddr {
        ifname: "eth0".into(),
        ip: VIP.parse().expect("test literal"),
        prefix: 128,
        label: None,
    };
    apply_in(&director.ns, add.clone());
    let line = ip_addr_line(&director.ns, VIP);
    assert!(
        line.contains("nodad") && !line.contains("tentative"),
        "right after binding: {line:?}"
    );
    // DAD would have failed within about a second (one probe, answered at once).
    std::thread::sleep(Duration::from_millis(2500));
    let line = ip_addr_line(&director.ns, VIP);
    assert!(!line.contains("dadfailed"), "after 2.5 s: {line:?}");
    let seen = observed_addr(&director.ns, VIP).expect("VIP observed");
    assert_eq!(seen.dad, Dad::Done, "{seen:?}");

    // Control: the same address added with DAD fails it on this LAN, and is observed so.
    let del = add.inverse().expect("removing an address");
    apply_in(&director.ns, del);
    director.exec(&["ip", "addr", "add", &format!("{VIP}/128"), "dev", "eth0"]);
    let failed = poll(Duration::from_secs(5), || {
        ip_addr_line(&director.ns, VIP).contains("dadfailed")
    });
    assert!(
        failed,
        "DAD did not fail: {:?}",
        ip_addr_line(&director.ns, VIP)
    );
    let seen = observed_addr(&director.ns, VIP).expect("VIP observed");
    assert_eq!(seen.dad, Dad::Failed, "{seen:?}");

    // What `up` plans for a VIP of its own whose DAD failed.
    apply_in(
        &director.ns,
        Change::ReAddAddr {
            ifname: "eth0".into(),
            ip: VIP.parse().expect("test literal"),
            prefix: 128,
            label: None,
        },
    );
    let line = ip_addr_line(&director.ns, VIP);
    assert!(
        line.contains("nodad") && !line.contains("tentative") && !line.contains("dadfailed"),
        "after re-adding: {line:?}"
    );
    let seen = observed_addr(&director.ns, VIP).expect("VIP observed");
    assert_eq!(seen.dad, Dad::Done, "{seen:?}");
    assert!(seen.is_ours(), "re-added with rs-agent's marker: {seen:?}");
}
