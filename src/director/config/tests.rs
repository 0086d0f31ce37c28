//! Director config: every bad input gives one line naming where it is and the fix.

use super::*;
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
        reals: vec!["198.51.100.2".into(), "198.51.100.3:8080".into()],
        ..Default::default()
    };
    let d = director(&file, &flags).expect("valid");
    assert_eq!(d.services.len(), 1);
    assert_eq!(d.services[0].reals[1].port, 8080);
    for (field, value, want) in [
        ("port", "0", "--port 0: port \"0\" is out of range"),
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
    let text = svc("reals = [\"198.51.100.3\", \"198.51.100.4:8080\"]", REAL);
    let d = parse(&text).expect("valid");
    let r = &d.services[0].reals;
    assert_eq!(r.len(), 3);
    assert_eq!(
        (r[2].port, r[2].weight, r[2].forward),
        (8080, 1, Forward::Route)
    );
    let dup = svc("reals = [\"198.51.100.2\"]", REAL);
    assert!(parse(&dup).expect_err("duplicate").contains("listed twice"));
}
