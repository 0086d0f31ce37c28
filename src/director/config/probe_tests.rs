//! The udp, dns, icmp and smtp checks' keys: each bad value one line with its position and the
//! fix; a key of another type refused; the good forms reach the probe.

use super::*;
use crate::director::health::{DnsProbe, DnsType, Probe, SmtpProbe, UdpProbe};
use std::path::PathBuf;

fn parse(text: &str) -> Result<DirectorDesired, String> {
    let file =
        ConfigFile::parse(Some(PathBuf::from("d.toml")), text.to_string()).map_err(|e| e.0)?;
    director(&file, &DirectorFlags::default()).map_err(|e| e.0)
}

/// One service with one real server and the check `body` (its `type` on line 10).
fn with_check(body: &str) -> String {
    format!(
        "[director]\ninterface = \"eth0\"\n[[director.service]]\nvip = \"192.0.2.100\"\nport = 53\n\n\
         [[director.service.real]]\naddress = \"198.51.100.2\"\n[director.service.check]\n{body}\n"
    )
}

#[test]
fn bad_keys_name_position_and_fix() {
    let long = format!("type = \"udp\"\npayload = \"{}\"", "x".repeat(1401));
    let cases = [
        (
            "type = \"udp\"\npayload = \"a\"\npayload_hex = \"61\"",
            "d.toml:12:15: payload and payload_hex are two forms of one value; keep one",
        ),
        (
            "type = \"udp\"\npayload_hex = \"abc\"",
            "d.toml:11:15: \"abc\" is not hex bytes; write two hex digits a byte",
        ),
        (
            &long,
            "d.toml:11:11: payload is 1401 bytes; at most 1400 fit one datagram",
        ),
        (
            "type = \"udp\"\nexpect_reply = false\nexpect = \"PONG\"",
            "d.toml:12:10: a reply cannot contain what is expected when none is (expect_reply = false); remove it or set expect_reply = true",
        ),
        (
            "type = \"udp\"\nexpect_reply = \"no\"",
            "d.toml:11:16: expect_reply must be true or false",
        ),
        (
            "type = \"udp\"\nquery_name = \"www.example.com\"",
            "d.toml:11:14: query_name does not apply to a udp check; remove it",
        ),
        (
            "type = \"dns\"",
            "d.toml:10:8: a dns check needs query_name = \"www.example.com\"",
        ),
        (
            "type = \"dns\"\nquery_name = \"www.example.com\"\nquery_type = \"AXFR\"",
            "d.toml:12:14: unknown query_type \"AXFR\"; expected A, AAAA, NS, MX, TXT, SOA, CNAME, PTR or SRV",
        ),
        (
            "type = \"dns\"\nquery_name = \"a..b\"",
            "d.toml:11:14: query_name \"a..b\" is not a DNS name (each label 1 to 63 characters)",
        ),
        (
            "type = \"dns\"\nquery_name = \"www.example.com\"\nexpect = \"2001:db8::1\"",
            "d.toml:12:10: expect 2001:db8::1 cannot be in the answer to an A query; use query_type = \"AAAA\"",
        ),
        (
            "type = \"dns\"\nquery_name = \"www.example.com\"\nexpect = \"www\"",
            "d.toml:12:10: expect \"www\" is not an address",
        ),
        (
            "type = \"dns\"\nquery_name = \"example.com\"\nquery_type = \"MX\"\nexpect = \"192.0.2.1\"",
            "d.toml:13:10: expect applies to A and AAAA queries, not MX; remove it",
        ),
        (
            "type = \"dns\"\nquery_name = \"example.com\"\nexpect_hex = \"00\"",
            "d.toml:12:14: expect_hex does not apply to a dns check; remove it",
        ),
        (
            "type = \"dns\"\nquery_name = \"example.com\"\npayload = \"x\"",
            "d.toml:12:11: payload does not apply to a dns check; remove it",
        ),
        (
            "type = \"icmp\"\nport = 7",
            "d.toml:11:8: port does not apply to an icmp check; remove it",
        ),
        (
            "type = \"icmp\"\nhelo = \"x\"",
            "d.toml:11:8: helo does not apply to an icmp check; remove it",
        ),
        (
            "type = \"smtp\"\nhelo = \"a b\"",
            "d.toml:11:8: helo \"a b\" must be a host name",
        ),
        (
            "type = \"smtp\"\nexpect = \"220\"",
            "d.toml:11:10: expect does not apply to a smtp check; remove it",
        ),
        (
            "type = \"tcp\"\nhelo = \"x\"",
            "d.toml:11:8: helo does not apply to a tcp check; remove it",
        ),
        (
            "type = \"ping\"",
            "d.toml:10:8: unknown check type \"ping\"; expected tcp, http, https, command, udp, dns, icmp or smtp",
        ),
    ];
    for (body, want) in cases {
        let text = with_check(body);
        let got = parse(&text).expect_err(&text);
        assert!(
            got.starts_with(want),
            "config:\n{text}\nwant {want:?}\ngot  {got:?}"
        );
        assert!(!got.contains('\n'), "one line: {got}");
    }
}

#[test]
fn good_keys_reach_the_probe() {
    let cases = [
        (
            "type = \"udp\"",
            Probe::Udp(UdpProbe {
                payload: vec![],
                expect: None,
                expect_reply: true,
            }),
        ),
        (
            "type = \"udp\"\npayload_hex = \"00 ff\"\nexpect = \"PONG\"\nport = 7",
            Probe::Udp(UdpProbe {
                payload: vec![0, 0xff],
                expect: Some(b"PONG".to_vec()),
                expect_reply: true,
            }),
        ),
        (
            "type = \"udp\"\npayload = \"hello\"\nexpect_reply = false",
            Probe::Udp(UdpProbe {
                payload: b"hello".to_vec(),
                expect: None,
                expect_reply: false,
            }),
        ),
        (
            "type = \"dns\"\nquery_name = \"www.example.com.\"\nquery_type = \"aaaa\"\nexpect = \"2001:db8::10\"",
            Probe::Dns(DnsProbe {
                name: "www.example.com".into(),
                qtype: DnsType::Aaaa,
                expect: "2001:db8::10".parse().ok(),
            }),
        ),
        (
            "type = \"dns\"\nquery_name = \"example.com\"",
            Probe::Dns(DnsProbe {
                name: "example.com".into(),
                qtype: DnsType::A,
                expect: None,
            }),
        ),
        ("type = \"icmp\"", Probe::Icmp),
        (
            "type = \"smtp\"\nhelo = \"director.example.com\"",
            Probe::Smtp(SmtpProbe {
                helo: Some("director.example.com".into()),
            }),
        ),
        ("type = \"smtp\"", Probe::Smtp(SmtpProbe { helo: None })),
    ];
    for (body, want) in cases {
        let text = with_check(body);
        let d = parse(&text).unwrap_or_else(|e| panic!("config:\n{text}\nrefused: {e}"));
        let probe = d.services[0].check.as_ref().map(|c| c.probe.clone());
        assert_eq!(probe, Some(want), "{text}");
    }
    // An icmp check needs no port, so a fwmark service's port-0 real servers can carry one;
    // a udp check there needs a port, as tcp does.
    let fwmark = "[director]\ninterface = \"eth0\"\n[[director.service]]\nfwmark = 7\nreals = [\"198.51.100.2\"]\n[director.service.check]\n";
    parse(&format!("{fwmark}type = \"icmp\"\n")).expect("icmp on a fwmark service");
    let got = parse(&format!("{fwmark}type = \"udp\"\n")).expect_err("udp without a port");
    assert!(
        got.contains("has no port for the udp check to connect to; set port"),
        "{got}"
    );
}
