//! Director config: every bad input gives one line naming where it is and the fix.

use super::*;
use crate::director::health::Probe;
use std::path::PathBuf;

fn parse(text: &str) -> Result<DirectorDesired, String> {
    let file =
        ConfigFile::parse(Some(PathBuf::from("d.toml")), text.to_string()).map_err(|e| e.0)?;
    director(&file, &DirectorFlags::default()).map_err(|e| e.0)
}

fn svc(extra: &str, reals: &str) -> String {
    format!("[director]\ninterface = \"eth0\"\n[[director.service]]\nvip = \"192.0.2.100\"\nport = 80\n{extra}\n{reals}")
}

const REAL: &str = "[[director.service.real]]\naddress = \"198.51.100.2\"\n";

#[test]
fn defaults_are_dr_wlc_weight_1() {
    let d = parse(&svc("", REAL)).expect("valid");
    let s = &d.services[0];
    assert_eq!(s.service.scheduler, "wlc");
    assert_eq!(s.service.netmask, u32::MAX);
    assert_eq!(s.reals[0].forward, Forward::Route);
    assert_eq!((s.reals[0].port, s.reals[0].weight), (80, 1));
    assert_eq!(d.garp_count, 3);
}

#[test]
fn bad_inputs_name_position_and_fix() {
    let cases = [
        (
            svc("scheduler = \"rrr\"", REAL),
            "d.toml:6:13: unknown scheduler \"rrr\"; expected one of rr, wrr",
        ),
        (
            svc("", REAL).replace("port = 80", "port = 0"),
            "d.toml:5:8: port 0 is out of range; expected 1..=65535",
        ),
        (
            svc("", REAL).replace("port = 80", "port = 65536"),
            "d.toml:5:8: port 65536 is out of range",
        ),
        (
            svc("", &format!("{REAL}{REAL}")),
            "d.toml:10:11: real server 198.51.100.2:80 is listed twice",
        ),
        (
            svc("", "[[director.service.real]]\naddress = \"2001:db8::2\"\n"),
            "d.toml:8:11: real server 2001:db8::2 is not of the service's address family",
        ),
        (
            svc(
                "",
                "[[director.service.real]]\naddress = \"198.51.100.2\"\nforward = \"fast\"\n",
            ),
            "d.toml:9:11: unknown forwarding method \"fast\"",
        ),
        (
            svc("scheduler_flags = [\"sh-port\"]", REAL),
            "applies only to the sh and mh schedulers",
        ),
        (
            svc(
                "persistence_netmask = \"255.0.255.0\"\npersistence = 60",
                REAL,
            ),
            "netmask 255.0.255.0 is not contiguous",
        ),
        (
            svc(
                "",
                "[[director.service.real]]\naddress = \"198.51.100.2\"\nweight = -1\n",
            ),
            "weight -1 is out of range; expected 0..=65535",
        ),
        (
            "[director]\n[[director.service]]\nvip = \"192.0.2.100\"\nport = 80\n".to_string(),
            "no director interface; pass --interface",
        ),
        (
            "[director]\ninterface = \"eth0\"\n".to_string(),
            "no director service",
        ),
        (svc("sheduler = \"rr\"", REAL), "unknown field `sheduler`"),
    ];
    for (text, want) in cases {
        let got = parse(&text).expect_err(&text);
        assert!(
            got.contains(want),
            "config:\n{text}\nwant {want:?}\ngot  {got:?}"
        );
        assert!(
            !got.contains('\n') || got.starts_with("d.toml"),
            "one line: {got}"
        );
    }
}

#[test]
fn quick_flags_describe_one_service() {
    let file = ConfigFile::parse(None, String::new()).expect("empty");
    let flags = DirectorFlags {
        interface: Some("eth0".into()),
        vip: Some("192.0.2.100".into()),
        port: Some("80".into()),
        scheduler: Some("rr".into()),
        reals: vec!["198.51.100.2".into(), "198.51.100.3:80".into()],
        ..Default::default()
    };
    let d = director(&file, &flags).expect("valid");
    assert_eq!(d.services.len(), 1);
    assert_eq!(d.services[0].reals[1].port, 80);
    let nat = DirectorFlags {
        forward: Some("nat".into()),
        reals: vec!["198.51.100.3:8080".into()],
        ..flags.clone()
    };
    assert_eq!(
        director(&file, &nat).expect("nat").services[0].reals[0].port,
        8080
    );
    for (field, value, want) in [
        ("port", "0", "--port 0: port \"0\" is out of range"),
        (
            "real",
            "198.51.100.4:8080",
            "--real 198.51.100.4:8080: port 8080 differs from the service's port 80",
        ),
        ("port", "65536", "out of range"),
        ("scheduler", "rrr", "--scheduler rrr: unknown scheduler"),
        (
            "real",
            "198.51.100.2",
            "--real 198.51.100.2: real server given twice",
        ),
        ("real", "2001:db8::2", "not of the VIP's address family"),
    ] {
        let mut f = flags.clone();
        match field {
            "port" => f.port = Some(value.into()),
            "scheduler" => f.scheduler = Some(value.into()),
            _ => f.reals.push(value.into()),
        }
        let got = director(&file, &f).expect_err(value).0;
        assert!(
            got.contains(want),
            "{field}={value}: want {want:?}, got {got:?}"
        );
    }
}

#[test]
fn fwmark_and_ipv6_persistence() {
    let text = "[director]\ninterface = \"eth0\"\n[[director.service]]\nfwmark = 7\nfamily = \"ipv6\"\nscheduler = \"sh\"\nscheduler_flags = [\"sh-fallback\"]\npersistence = 60\npersistence_netmask = \"/64\"\n[[director.service.real]]\naddress = \"[2001:db8::2]:0\"\n";
    let d = parse(text).expect("valid");
    let s = &d.services[0].service;
    assert_eq!(
        s.key,
        ServiceKey::Fwmark {
            af: AddressFamily::V6,
            mark: 7
        }
    );
    assert_eq!(s.netmask, 64);
    assert!(s.flags.has(ServiceFlags::PERSISTENT) && s.flags.has(ServiceFlags::SCHED_SH_FALLBACK));
    assert!(d.vips().is_empty(), "a fwmark service has no VIP to bind");
}

#[test]
fn reals_shorthand_mixes_with_tables() {
    let text = svc("reals = [\"198.51.100.3\", \"198.51.100.4:80\"]", REAL);
    let d = parse(&text).expect("valid");
    let r = &d.services[0].reals;
    assert_eq!(r.len(), 3);
    assert_eq!(
        (r[2].port, r[2].weight, r[2].forward),
        (80, 1, Forward::Route)
    );
    let dup = svc("reals = [\"198.51.100.2\"]", REAL);
    assert!(parse(&dup).expect_err("duplicate").contains("listed twice"));
}

/// What the kernel would refuse at apply time, or what would make every check fail or be
/// ignored, is refused before anything is touched, with the position of the value.
#[test]
fn refuses_what_cannot_work() {
    let check = |body: &str| format!("[director.service.check]\n{body}\n");
    let real =
        |extra: &str| format!("[[director.service.real]]\naddress = \"198.51.100.2\"\n{extra}\n");
    let fwmark = "[director]\ninterface = \"eth0\"\n[[director.service]]\nfwmark = 7\nreals = [\"198.51.100.2\"]\n";
    let cases = [
        (
            svc("", &format!("{REAL}{}", check("type = \"http\"\nhost = \"a.example\\r\\nX-Injected: yes\""))),
            "d.toml:11:8: check host \"a.example\\r\\nX-Injected: yes\" must be a host name",
        ),
        (
            svc("", &format!("{REAL}{}", check("type = \"https\"\nhost = \"bad_name!\""))),
            "d.toml:11:8: check host \"bad_name!\" is not a TLS server name",
        ),
        (
            svc("", &format!("{REAL}{}", check("type = \"http\"\nhost = \"\""))),
            "must be a host name",
        ),
        (
            format!("{fwmark}{}", check("type = \"tcp\"")),
            "d.toml:7:8: real server 198.51.100.2 has no port for the tcp check to connect to; set port",
        ),
        (
            svc("sorry_server = \"198.51.100.2\"", &format!("{REAL}{}", check("type = \"tcp\""))),
            "d.toml:6:16: sorry_server 198.51.100.2:80 is also a real server of this service",
        ),
        (
            svc("sorry_server = \"198.51.100.9\"", REAL),
            "d.toml:6:16: a sorry_server is used only when health checks find the service below its quorum",
        ),
        (
            svc("", &real("upper_threshold = 0\nlower_threshold = 5")),
            "d.toml:10:19: lower_threshold 5 is above upper_threshold 0",
        ),
        (
            svc("", &REAL.replace("198.51.100.2", "224.0.0.1")),
            "d.toml:8:11: 224.0.0.1 is not a unicast address",
        ),
        (
            svc("reals = [\"0.0.0.0\"]", ""),
            "d.toml:6:10: 0.0.0.0 is not a unicast address",
        ),
        (
            svc("reals = [\"0.1.2.3\"]", ""),
            "d.toml:6:10: 0.1.2.3 is not a unicast address",
        ),
        (
            svc("reals = [\"[fe80::2]:80\"]", ""),
            "d.toml:6:10: fe80::2 is not a unicast address",
        ),
        (
            svc("reals = [\"[::ffff:198.51.100.2]:80\"]", ""),
            "d.toml:6:10: ::ffff:198.51.100.2 is not a unicast address",
        ),
        (
            svc("", &REAL.replace("198.51.100.2", "198.51.100.2:8080")),
            "d.toml:8:11: port 8080 differs from the service's port 80, which dr and tunnel forwarding cannot change",
        ),
        (
            svc("persistence = 0", REAL).replace("port = 80", "port = 0"),
            "d.toml:5:8: port 0 is out of range",
        ),
        (
            svc("family = \"ipv6\"", REAL),
            "d.toml:6:10: family applies only to fwmark services",
        ),
        (
            svc("", &format!("{REAL}{}", check("type = \"tcp\"\ninterval_ms = 500"))),
            "d.toml:11:15: interval_ms 500 is shorter than the default timeout_ms 1000; also set timeout_ms = 500 or less",
        ),
        (
            format!("{}\n{}", svc("", REAL), svc("", REAL).replace("[director]\ninterface = \"eth0\"\n", "")),
            "d.toml:11:7: service TCP 192.0.2.100:80 is defined twice",
        ),
        (
            svc("scheduler = \"rr\\nINJECTED: fake line\"", REAL),
            "unknown scheduler \"rr\\nINJECTED: fake line\"",
        ),
        (
            svc("", &format!("{REAL}{}", check("type = \"command\"\ncommand = [\"\"]"))),
            "d.toml:11:11: command must start with the program",
        ),
        (
            svc("", &format!("{REAL}{}", check("type = \"tcp\"\npath = \"/health\""))),
            "d.toml:11:8: path does not apply to a tcp check; remove it",
        ),
        (
            svc("", &format!("{REAL}{}", check("type = \"tcp\"\nreuse_connection = true"))),
            "d.toml:11:20: reuse_connection does not apply to a tcp check; remove it",
        ),
        (
            svc("", &format!("{REAL}{}", check("type = \"http\"\nreuse_connection = \"yes\""))),
            "d.toml:11:20: reuse_connection must be true or false (no quotes), not string \"yes\"",
        ),
        (
            svc("", &format!("{REAL}{}", check("type = \"http\"\ncommand = [\"/bin/true\"]"))),
            "d.toml:11:11: command does not apply to a http check",
        ),
        (
            svc("", &format!("{REAL}{}", check("type = \"command\"\ncommand = [\"/bin/true\"]\nbody = \"ok\""))),
            "d.toml:12:8: body does not apply to a command check",
        ),
    ];
    for (text, want) in cases {
        let got = parse(&text).expect_err(&text);
        assert!(
            got.contains(want),
            "config:\n{text}\nwant {want:?}\ngot  {got:?}"
        );
        assert!(!got.contains('\n'), "one line: {got}");
    }
    // The forms that stay valid: a check port on a fwmark service, an https host with a port
    // (the TLS name leaves it off), a nat real server on another port, thresholds in order.
    let ok = [
        format!("{fwmark}{}", check("type = \"tcp\"\nport = 80")),
        svc(
            "",
            &format!(
                "{REAL}{}",
                check("type = \"https\"\nhost = \"www.example.com:8443\"")
            ),
        ),
        svc(
            "",
            &REAL.replace("198.51.100.2\"", "198.51.100.2:8080\"\nforward = \"nat\""),
        ),
        svc("", &real("upper_threshold = 10\nlower_threshold = 5")),
        svc("persistence = 300", "reals = [\"198.51.100.2\"]").replace("port = 80", "port = 0"),
    ];
    for text in ok {
        parse(&text).unwrap_or_else(|e| panic!("config:\n{text}\nrefused: {e}"));
    }
    // reuse_connection reaches the probe of either HTTP type, and is off unless asked for.
    for (kind, reuse, want) in [
        ("http", "\nreuse_connection = true", true),
        ("https", "", false),
    ] {
        let text = svc(
            "",
            &format!("{REAL}{}", check(&format!("type = \"{kind}\"{reuse}"))),
        );
        let d = parse(&text).unwrap_or_else(|e| panic!("config:\n{text}\nrefused: {e}"));
        let probe = d.services[0].check.as_ref().map(|c| c.probe.clone());
        match probe {
            Some(Probe::Http(p) | Probe::Https(p)) => {
                assert_eq!(p.reuse_connection, want, "{text}")
            }
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn quick_flags_need_vip_and_bound_persistence() {
    let file = ConfigFile::parse(None, String::new()).expect("empty");
    let base = DirectorFlags {
        interface: Some("eth0".into()),
        vip: Some("192.0.2.100".into()),
        port: Some("0".into()),
        persistence: Some("300".into()),
        reals: vec!["198.51.100.2".into()],
        ..Default::default()
    };
    let d = director(&file, &base).expect("port 0 with persistence");
    assert_eq!(d.services[0].service.timeout, 300);
    let too_long = DirectorFlags {
        persistence: Some("4294967295".into()),
        ..base.clone()
    };
    let got = director(&file, &too_long).expect_err("persistence").0;
    assert!(
        got.starts_with("--persistence 4294967295: expected seconds 0..=2678400"),
        "{got}"
    );
    let no_vip = DirectorFlags { vip: None, ..base };
    let got = director(&file, &no_vip).expect_err("no vip").0;
    assert!(
        got.contains("describe the service of --vip; add --vip ADDR"),
        "{got}"
    );
}

/// Announcing blocks `director run`'s loop between rounds: a span past 10 s would starve the
/// checks and the 30 s watchdog, so it is refused naming the key; 10 s exactly is accepted.
#[test]
fn gratuitous_arp_span_is_bounded() {
    let text = |count: u32, ms: u32| {
        format!("[director]\ninterface = \"eth0\"\ngarp_count = {count}\ngarp_interval_ms = {ms}\n[[director.service]]\nvip = \"192.0.2.100\"\nport = 80\n{REAL}")
    };
    let err = parse(&text(5, 10_000)).expect_err("40 s span");
    assert!(
        err.starts_with("d.toml:4:20: gratuitous ARP would take 40000 ms") && !err.contains('\n'),
        "{err}"
    );
    assert!(parse(&text(2, 10_000)).is_ok());
    assert!(parse(&text(100, 100)).is_ok());
}

/// A VIP is refused in IPv4-mapped form as its real servers already are, from the file and
/// from `--vip`, saying which IPv4 address to give.
#[test]
fn an_ipv4_mapped_vip_is_refused_as_a_mapped_real_server_is() {
    let text = svc("", REAL).replace("192.0.2.100", "::ffff:192.0.2.100");
    let got = parse(&text).expect_err("mapped VIP");
    assert!(
        got.starts_with("d.toml:4:7: VIP ::ffff:192.0.2.100 is an IPv4-mapped IPv6 address")
            && got.ends_with("give the IPv4 address 192.0.2.100"),
        "{got}"
    );
    let file = ConfigFile::parse(None, String::new()).expect("empty");
    let flags = DirectorFlags {
        interface: Some("eth0".into()),
        vip: Some("::ffff:192.0.2.100".into()),
        port: Some("80".into()),
        reals: vec!["198.51.100.2".into()],
        ..Default::default()
    };
    let got = director(&file, &flags).expect_err("mapped --vip").0;
    assert!(
        got.starts_with("--vip ::ffff:192.0.2.100: VIP ::ffff:192.0.2.100 is an IPv4-mapped"),
        "{got}"
    );
}

/// Found by the generative tests (src/props/config.rs): a service without vip or fwmark was
/// named `d.toml: [[director.service]] #1`, without a line.
#[test]
fn a_service_without_vip_or_fwmark_points_at_its_header() {
    let text = "[director]\ninterface = \"eth0\"\n[[director.service]]\nvip = \"192.0.2.1\"\n\
                port = 80\n  [[ director.service ]] # the second\npersistence_netmask = \"/33\"\n";
    let got = parse(text).expect_err("no vip");
    assert_eq!(
        got,
        "d.toml:6:3: service has neither vip nor fwmark; add vip = \"192.0.2.100\" and port"
    );
    // Without a header to point at (an inline table): its first key.
    let text = "[director]\ninterface = \"eth0\"\nservice = [{ scheduler = \"rr\" }]\n";
    let got = parse(text).expect_err("no vip");
    assert!(
        got.starts_with("d.toml:3:26: service has neither vip"),
        "{got}"
    );
}

/// `metrics_listen` is off unless given; the flag wins; a bad address names its place.
#[test]
fn metrics_listen_is_validated_where_it_is_written() {
    let file = |text: &str| {
        ConfigFile::parse(Some(PathBuf::from("d.toml")), text.to_string()).expect("parses")
    };
    let off = file("[director]\ninterface = \"eth0\"\n");
    assert_eq!(metrics(&off, None).expect("valid"), None);
    let on =
        file("[director]\nmetrics_listen = \"192.0.2.10:9310\"\nmetrics_per_real_server = false\n");
    let m = metrics(&on, None).expect("valid").expect("on");
    assert_eq!((m.listen.port(), m.per_real_server), (9310, false));
    let flag = metrics(&on, Some("[2001:db8::10]:9311"))
        .expect("valid")
        .expect("on");
    assert_eq!((flag.listen.port(), flag.per_real_server), (9311, false));
    let bad = file("[director]\nmetrics_listen = \"9310\"\n");
    let e = metrics(&bad, None).expect_err("no address").0;
    assert!(
        e.starts_with("d.toml:2:18: \"9310\" is not a listen address; expected ADDR:PORT"),
        "{e}"
    );
    let e = metrics(&off, Some("nope")).expect_err("bad flag").0;
    assert!(e.starts_with("--metrics-listen nope: "), "{e}");
}
