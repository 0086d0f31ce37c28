//! Ownership (namespace tier): rs-agent removes only what it made, re-checked against the
//! kernel, whatever its state file says. Each test is a promise an adversarial review found
//! broken (issue #17), reproduced the way an operator would.

mod common;

use common::*;

fn addr_lines(host: &Host, dev: &str) -> String {
    stdout(&host.exec(&["ip", "-o", "addr", "show", "dev", dev]))
}

/// The state file names a dummy device `lvs0`, but the device of that name is a veth with an
/// address of its own (replaced by someone, or the file is stale or forged); and a file that
/// names the uplink `eth0` as the dummy. `down` deletes neither device nor their addresses.
#[test]
fn down_deletes_no_device_the_state_file_wrongly_calls_its_dummy() {
    require_privileges!();
    let mut lan = Lan::new("own-dummy");
    let rs = lan.host(HostSpec::new("rs", "192.0.2.10/24"));
    rs.exec(&[
        "ip", "link", "add", "lvs0", "type", "veth", "peer", "name", "lvs0p",
    ]);
    rs.exec(&["ip", "addr", "add", "198.51.100.7/24", "dev", "lvs0"]);
    rs.exec(&["ip", "link", "set", "lvs0", "up"]);
    let before = rs.snapshot();
    for dummy in ["lvs0", "eth0"] {
        std::fs::create_dir_all(&rs.state_dir).expect("state dir");
        let journal = format!(r#"{{"sysctls":[],"addrs":[],"dummy":"{dummy}","nft_tables":[]}}"#);
        std::fs::write(rs.state_dir.join("real-server.json"), journal).expect("journal");
        let down = rs.rs_agent(&["down"]);
        let said = format!("{}{}", stdout(&down), stderr(&down));
        assert!(
            !said.contains("delete dummy device"),
            "dummy {dummy}: down deleted a device:\n{said}"
        );
        assert!(
            said.contains("is not the dummy device"),
            "dummy {dummy}: {said}"
        );
        assert_same_snapshot(&before, &rs.snapshot(), &format!("down with dummy {dummy}"));
    }
    assert!(addr_lines(&rs, "lvs0").contains("198.51.100.7/24"));
}

/// `up` binds the VIP; an operator deletes it and adds it back by hand with a label of their
/// own (and once without one). `status` calls it not rs-agent's, and `down` leaves it.
#[test]
fn down_leaves_a_vip_an_operator_re_added_by_hand() {
    require_privileges!();
    let mut lan = Lan::new("own-readd");
    let rs = lan.host(HostSpec::new("rs", "192.0.2.10/24"));
    for label in [Some("lo:0"), None] {
        rs.rs_agent_ok(&["up", "--vip", "192.0.2.101"]);
        rs.exec(&["ip", "addr", "del", "192.0.2.101/32", "dev", "lo"]);
        let mut add = vec!["ip", "addr", "add", "192.0.2.101/32", "dev", "lo"];
        add.extend(label.map(|l| ["label", l]).into_iter().flatten());
        rs.exec(&add);
        rs.rs_agent_ok(&["down"]);
        let lo = addr_lines(&rs, "lo");
        assert!(
            lo.contains("192.0.2.101/32"),
            "label {label:?}: down removed the hand-made VIP:\n{lo}"
        );
        if let Some(l) = label {
            assert!(lo.contains(l), "label {l}: {lo}");
        }
        rs.exec(&["ip", "addr", "del", "192.0.2.101/32", "dev", "lo"]);
    }
}

/// `run` with two VIPs; someone adds one of them to eth0 and undoes the ARP suppression (the
/// nft table deleted, or arp_announce reset): the repair goes on around the VIP in the way,
/// so the other VIP is suppressed again and the client gets no answer from the real server.
#[test]
fn one_foreign_vip_does_not_stop_the_other_repairs() {
    require_privileges!();
    for arp in ["nft", "sysctl"] {
        let mut lan = Lan::new(&format!("own-rep-{arp}"));
        let rs = lan.host(HostSpec::new("rs", "192.0.2.10/24"));
        let client = lan.host(HostSpec::new("client", "192.0.2.20/24"));
        let log = rs.state_dir.with_extension("run.log");
        let file = std::fs::File::create(&log).expect("run log");
        let args = ["--vip", "192.0.2.100", "--vip", "192.0.2.101", "--arp", arp];
        let mut agent = RunAgent::start(&rs, &args, std::process::Stdio::from(file));
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        agent.wait_configured(&rs, read_log);

        rs.exec(&["ip", "addr", "add", "192.0.2.100/32", "dev", "eth0"]);
        match arp {
            "nft" => rs.exec(&["nft", "delete", "table", "arp", "rs_agent"]),
            _ => rs.exec(&[
                "sysctl",
                "-w",
                "net.ipv4.conf.all.arp_announce=0",
                "net.ipv4.conf.eth0.arp_announce=0",
            ]),
        };
        let suppressed = || match arp {
            "nft" => stdout(&rs.ns.try_exec(&["nft", "list", "table", "arp", "rs_agent"]))
                .contains("192.0.2.101"),
            _ => rs.ns.sysctl_get("net.ipv4.conf.eth0.arp_announce") == "2",
        };
        let repaired = poll(std::time::Duration::from_secs(20), || {
            suppressed() && read_log().contains("left unbound")
        });
        assert!(repaired, "{arp}: suppression not repaired:\n{}", read_log());
        let macs = arping_macs(&client, "192.0.2.101", 2);
        assert!(
            !macs.contains(&rs.mac),
            "{arp}: the real server answers ARP for 192.0.2.101 ({macs:?}):\n{}",
            read_log()
        );
        assert!(
            read_log().contains("VIP 192.0.2.100 is already an address of eth0"),
            "{arp}: {}",
            read_log()
        );
        assert!(agent.stop().success());
        let _ = std::fs::remove_file(&log);
    }
}

/// A second agent on the node with a state directory of its own (issue #17: the two fought
/// for ever, each removing the other's VIP) is refused, saying why; and `down` with that
/// other state directory removes nothing the first agent made.
#[test]
fn a_second_agent_with_another_state_dir_is_refused_and_owns_nothing() {
    require_privileges!();
    let mut lan = Lan::new("own-two");
    let rs = lan.host(HostSpec::new("rs", "192.0.2.10/24"));
    let log = rs.state_dir.with_extension("run.log");
    let file = std::fs::File::create(&log).expect("run log");
    let args = ["--vip", "192.0.2.100", "--arp", "sysctl"];
    let mut first = RunAgent::start(&rs, &args, std::process::Stdio::from(file));
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    first.wait_configured(&rs, read_log);

    let other = rs.state_dir.with_extension("other");
    let env = format!("RS_AGENT_STATE_DIR={}", other.display());
    let second = |cmd: &[&str]| {
        let mut full = vec!["env", "RS_AGENT_LOG=warn", env.as_str(), RS_AGENT];
        full.extend_from_slice(cmd);
        rs.ns.try_exec(
            &["timeout", "10"]
                .into_iter()
                .chain(full)
                .collect::<Vec<_>>(),
        )
    };
    let refused = second(&["run", "--vip", "192.0.2.101", "--arp", "nft"]);
    assert_refused(
        &refused,
        "a second run with another state directory",
        &[
            "already manages this node with another state directory",
            "one rs-agent run per node",
        ],
    );
    let down = second(&["down"]);
    assert!(down.status.success(), "{}", stderr(&down));
    let lo = stdout(&rs.exec(&["ip", "-o", "addr", "show", "dev", "lo"]));
    assert!(
        lo.contains("192.0.2.100/32"),
        "down with another state directory removed the first agent's VIP:\n{lo}"
    );
    assert!(!read_log().contains("repaired:"), "{}", read_log());
    assert!(first.stop().success());
    let _ = std::fs::remove_dir_all(&other);
    let _ = std::fs::remove_file(&log);
}

/// Holds 40 connections to argv[1]:argv[2], re-opened every 1.5 s, for argv[3] rounds
/// (bounded); prints `holding` once the first 40 are open, then how many it opened in all.
const FLOOD: &str = r#"
import socket, sys, time
opened = 0
for round in range(int(sys.argv[3])):
    conns = []
    for _ in range(40):
        try:
            conns.append(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1))
            opened += 1
        except OSError:
            pass
    if round == 0:
        print("holding", flush=True)
    time.sleep(1.5)
    for c in conns:
        c.close()
print(opened)
"#;

/// argv[3] GETs of http://argv[1]:argv[2]/health, 100 ms apart, 1 s timeout each, as a
/// director's check would; prints how many answered 200.
const CHECKS: &str = r#"
import socket, sys, time
ok = 0
for _ in range(int(sys.argv[3])):
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1) as c:
            c.sendall(b"GET /health HTTP/1.1\r\nHost: rs\r\nConnection: close\r\n\r\n")
            if c.recv(64).startswith(b"HTTP/1.1 200"):
                ok += 1
    except OSError:
        pass
    time.sleep(0.1)
print(ok)
"#;

/// One misbehaving LAN client holding and re-opening 40 connections to /health (issue #17:
/// 36 of 38 checks failed, so the director took a healthy server out) leaves every
/// director's check answered.
#[test]
fn one_client_cannot_starve_the_health_endpoint() {
    require_privileges!();
    let mut lan = Lan::new("own-flood");
    let rs = lan.host(HostSpec::new("rs", "192.0.2.10/24"));
    let flooder = lan.host(HostSpec::new("flood", "192.0.2.20/24"));
    let director = lan.host(HostSpec::new("dir", "192.0.2.30/24"));
    let listen = format!("{}:8081", rs.ip);
    let args = ["--vip", "192.0.2.100", "--health-listen", listen.as_str()];
    let mut agent = RunAgent::start(&rs, &args, std::process::Stdio::null());
    agent.wait_configured(&rs, String::new);
    let mut flood = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &flooder.ns.name,
            "timeout",
            "30",
            "python3",
            "-c",
            FLOOD,
        ])
        .args([rs.ip.as_str(), "8081", "4"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("flood started");
    // The checks start once the flood holds its first 40 connections (an event, not a delay).
    let mut out = std::io::BufReader::new(flood.stdout.take().expect("flood stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("flood reports");
    assert_eq!(line.trim(), "holding", "the flood did not start");
    let checks = director.exec(&["python3", "-c", CHECKS, &rs.ip, "8081", "38"]);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("flood output");
    let _ = flood.wait();
    let opened: u32 = rest.trim().parse().unwrap_or(0);
    assert!(opened >= 40, "the flood opened {opened} connections");
    assert_eq!(
        stdout(&checks).trim(),
        "38",
        "director checks answered 200 (of 38) during the flood: {}",
        stderr(&checks)
    );
    assert!(agent.stop().success());
}

/// `status` on a node rs-agent has nothing on (never configured, or after `down`) says so
/// and exits 0: it was exit 2, bad input, and monitoring paged after every planned `down`.
/// Given a configuration, a node without it is still NOT OK.
#[test]
fn status_after_down_says_nothing_is_configured_and_exits_0() {
    require_privileges!();
    let mut lan = Lan::new("own-st");
    let rs = lan.host(HostSpec::new("rs", "192.0.2.10/24"));
    let nothing = |when: &str| {
        let out = rs.rs_agent(&["status"]);
        assert_eq!(out.status.code(), Some(0), "{when}: {}", stderr(&out));
        assert!(
            stdout(&out).starts_with("nothing configured:"),
            "{when}: {}",
            stdout(&out)
        );
        let json = rs.rs_agent(&["status", "--json"]);
        assert!(
            stdout(&json).contains("\"configured\": false"),
            "{when}: {}",
            stdout(&json)
        );
    };
    nothing("before up");
    rs.rs_agent_ok(&["up", "--vip", "192.0.2.100"]);
    rs.rs_agent_ok(&["down"]);
    nothing("after down");
    let wanted = rs.rs_agent(&["status", "--vip", "192.0.2.100"]);
    assert_eq!(wanted.status.code(), Some(1), "{}", stdout(&wanted));
}
