//! The config file and its validation, for both sides.

use super::assert_one_line;
use crate::config_file::ConfigFile;
use crate::director::config::{director, DirectorFlags};
use crate::real_server::config::{real_server, run_keys, RealServerFlags, RunFlags};
use proptest::prelude::*;
use std::path::PathBuf;

const TABLES: &[&str] = &[
    "[real_server]",
    "[director]",
    "[[director.service]]",
    "[[director.service.real]]",
    "[director.service.check]",
    "[real_server.x]",
    "[[real_server]]",
];

const KEYS: &[&str] = &[
    "vips",
    "device",
    "arp",
    "interfaces",
    "check_interval_ms",
    "health_listen",
    "metrics_listen",
    "interface",
    "garp_count",
    "garp_interval_ms",
    "vip",
    "port",
    "protocol",
    "fwmark",
    "family",
    "scheduler",
    "scheduler_flags",
    "persistence",
    "persistence_netmask",
    "one_packet",
    "reals",
    "real",
    "check",
    "sorry_server",
    "address",
    "weight",
    "forward",
    "upper_threshold",
    "lower_threshold",
    "type",
    "path",
    "status",
    "body",
    "host",
    "reuse_connection",
    "command",
    "interval_ms",
    "timeout_ms",
    "rise",
    "fall",
    "on_failure",
    "payload",
    "payload_hex",
    "expect",
    "expect_hex",
    "expect_reply",
    "query_name",
    "query_type",
    "helo",
    "bogus",
    "\"quoted key\"",
    "a.b",
];

const VALUES: &[&str] = &[
    "\"192.0.2.1\"",
    "\"192.0.2.1/32\"",
    "\"::ffff:192.0.2.1\"",
    "\"2001:db8::1\"",
    "\"fe80::1\"",
    "\"0.0.0.0\"",
    "\"255.255.255.255\"",
    "\"224.0.0.1\"",
    "\"300.1.1.1\"",
    "[\"192.0.2.1\"]",
    "[\"192.0.2.1\", \"192.0.2.1\"]",
    "[\"2001:db8::1\", \"192.0.2.7\"]",
    "[\"198.51.100.2\", \"198.51.100.3:80\", \"[2001:db8::2]:80\"]",
    "[\"198.51.100.2:8080\"]",
    "[]",
    "[1, 2]",
    "[[\"a\"]]",
    "0",
    "-1",
    "1",
    "5",
    "80",
    "100",
    "300",
    "65535",
    "65536",
    "3600000",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "true",
    "false",
    "1.5",
    "nan",
    "inf",
    "1979-05-27",
    "{ a = 1 }",
    "{}",
    "\"eth0\"",
    "\"eth0.100\"",
    "\"lo\"",
    "\"lvs0\"",
    "\"eth0:1\"",
    "\"a-very-long-interface-name\"",
    "\"\"",
    "\"rr\"",
    "\"wlc\"",
    "\"mh\"",
    "\"bogus\"",
    "\"tcp\"",
    "\"udp\"",
    "\"sctp\"",
    "\"http\"",
    "\"https\"",
    "\"command\"",
    "\"dr\"",
    "\"nat\"",
    "\"tunnel\"",
    "\"nft\"",
    "\"sysctl\"",
    "\"ipv4\"",
    "\"ipv6\"",
    "\"quiesce\"",
    "\"remove\"",
    "\"/health\"",
    "\"health\"",
    "\"192.0.2.2:8081\"",
    "\":99999\"",
    "\"[2001:db8::2]:8081\"",
    "\"255.255.255.0\"",
    "\"/64\"",
    "\"/33\"",
    "[\"/bin/true\"]",
    "[\"\"]",
    "[\"mh-port\"]",
    "[\"sh-fallback\", \"bogus\"]",
    "\"a\\nb\"",
    "\"\\u0000\"",
    "\"é\"",
    "'literal'",
    "\"\"\"multi\nline\"\"\"",
    "[",
    "\"unterminated",
    "= =",
];

/// The tables and the keys each takes, with values that fit the key (others come from
/// [`VALUES`]).
/// A table's header and its keys, each with values that fit it.
type Table = (
    &'static str,
    &'static [(&'static str, &'static [&'static str])],
);

const SCHEMA: &[Table] = &[
    (
        "[real_server]",
        &[
            (
                "vips",
                &[
                    "[\"192.0.2.100\"]",
                    "[\"192.0.2.100\", \"2001:db8::100\"]",
                    "[\"::ffff:192.0.2.1\"]",
                ],
            ),
            ("device", &["\"lo\"", "\"lvs0\"", "\"eth0:1\""]),
            ("arp", &["\"sysctl\"", "\"nft\"", "\"arptables\""]),
            (
                "interfaces",
                &["[\"eth0\"]", "[\"eth0.100\", \"eth1\"]", "[\"lo\"]", "[]"],
            ),
            ("check_interval_ms", &["500", "5", "-1", "3600001"]),
            (
                "health_listen",
                &["\"192.0.2.2:8081\"", "\"bogus\"", "\":99999\""],
            ),
            (
                "metrics_listen",
                &["\"192.0.2.2:9101\"", "\"192.0.2.2\"", "\"[::1]:9101\""],
            ),
        ],
    ),
    (
        "[director]",
        &[
            (
                "interface",
                &["\"eth0\"", "\"eth0.100\"", "\"a-very-long-interface-name\""],
            ),
            ("garp_count", &["0", "3", "100", "101"]),
            ("garp_interval_ms", &["200", "10000", "-5"]),
        ],
    ),
    (
        "[[director.service]]",
        &[
            // With the port: a service needs both.
            (
                "vip",
                &[
                    "\"192.0.2.100\"\nport = 80",
                    "\"2001:db8::100\"\nport = 443",
                    "\"192.0.2.100\"\nport = 0",
                    "\"192.0.2.100\"\nport = 65536",
                    "\"::ffff:192.0.2.100\"\nport = 80",
                    "\"224.0.0.1\"\nport = 80",
                    "\"192.0.2.100\"",
                ],
            ),
            ("protocol", &["\"tcp\"", "\"udp\"", "\"sctp\"", "\"icmp\""]),
            ("fwmark", &["7", "0", "4294967296"]),
            ("family", &["\"ipv4\"", "\"ipv6\"", "\"ipx\""]),
            ("scheduler", &["\"rr\"", "\"mh\"", "\"sh\"", "\"rrr\""]),
            (
                "scheduler_flags",
                &[
                    "[\"mh-port\"]",
                    "[\"sh-fallback\", \"sh-port\"]",
                    "[\"flag-1\"]",
                    "[\"bogus\"]",
                ],
            ),
            ("persistence", &["300", "0", "2678401"]),
            (
                "persistence_netmask",
                &["\"255.255.255.0\"", "\"/64\"", "\"/33\"", "\"255.0.255.0\""],
            ),
            ("one_packet", &["true", "false"]),
            (
                "reals",
                &[
                    "[\"198.51.100.2\"]",
                    "[\"198.51.100.2:80\", \"[2001:db8::2]:80\"]",
                    "[\"198.51.100.2:8080\"]",
                    "[\"0.1.2.3\"]",
                ],
            ),
            (
                "sorry_server",
                &["\"203.0.113.9\"", "\"203.0.113.9:80\"", "\"x\""],
            ),
        ],
    ),
    (
        "[[director.service.real]]",
        &[
            (
                "address",
                &[
                    "\"198.51.100.3\"",
                    "\"198.51.100.3:8080\"",
                    "\"[2001:db8::3]:80\"",
                    "\"ff02::1\"",
                ],
            ),
            ("weight", &["1", "0", "65536", "-1"]),
            ("forward", &["\"dr\"", "\"nat\"", "\"tunnel\"", "\"masq\""]),
            ("upper_threshold", &["100", "0", "-1"]),
            ("lower_threshold", &["10", "200"]),
        ],
    ),
    (
        "[director.service.check]",
        &[
            (
                "type",
                &[
                    "\"tcp\"",
                    "\"http\"",
                    "\"https\"",
                    "\"command\"",
                    "\"icmp\"",
                    "\"udp\"",
                    "\"dns\"",
                    "\"smtp\"",
                    "\"ping\"",
                ],
            ),
            ("port", &["8081", "0"]),
            ("path", &["\"/health\"", "\"health\"", "\"/a b\""]),
            ("status", &["200", "99", "600"]),
            ("body", &["\"ok\"", "\"\""]),
            ("host", &["\"example.org\"", "\"a b\"", "\"192.0.2.1\""]),
            ("reuse_connection", &["true", "false"]),
            ("command", &["[\"/bin/true\"]", "[]", "[\"\"]"]),
            ("interval_ms", &["1000", "0", "10"]),
            ("timeout_ms", &["500", "2000", "0"]),
            ("rise", &["1", "0", "101"]),
            ("fall", &["3", "-1"]),
            ("on_failure", &["\"quiesce\"", "\"remove\"", "\"drop\""]),
            ("payload", &["\"ping\"", "\"\""]),
            ("payload_hex", &["\"00ff\"", "\"0\"", "\"zz\""]),
            ("expect", &["\"PONG\"", "\"192.0.2.1\"", "\"2001:db8::1\""]),
            ("expect_hex", &["\"0a\"", "\"x\""]),
            ("expect_reply", &["true", "false"]),
            ("query_name", &["\"www.example.com\"", "\"a..b\"", "\".\""]),
            ("query_type", &["\"A\"", "\"aaaa\"", "\"MX\"", "\"AXFR\""]),
            ("helo", &["\"director.example.com\"", "\"a b\""]),
        ],
    ),
];

/// Table `t` of the schema with some of its keys (each once, as TOML requires), each with a
/// fitting value (mostly the first, a valid one) or, one time in thirty, any value. The first key (the one the table
/// needs) is there nine times in ten.
fn table(t: usize) -> impl Strategy<Value = String> {
    let keys = proptest::collection::vec(
        (
            any::<prop::sample::Index>(),
            0u8..30,
            proptest::sample::select(VALUES),
        ),
        0..8,
    );
    (keys, any::<prop::sample::Index>(), 0u8..10).prop_map(move |(keys, first, required)| {
        let (header, schema) = SCHEMA[t];
        let mut used = Vec::new();
        let mut out = format!("{header}\n");
        if required > 0 {
            let (key, good) = schema[0];
            used.push(key);
            out.push_str(&format!("{key} = {}\n", good[first.index(good.len())]));
        }
        for (i, odd, any) in keys {
            let (key, good) = schema[i.index(schema.len())];
            if used.contains(&key) {
                continue;
            }
            used.push(key);
            let value = match odd {
                0 => any,
                n if n % 3 != 0 => good[0],
                _ => good[i.index(good.len())],
            };
            out.push_str(&format!("{key} = {value}\n"));
        }
        out
    })
}

/// One line of config-shaped text: a table header, a `key = value`, or noise.
fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => proptest::sample::select(TABLES).prop_map(str::to_string),
        6 => (proptest::sample::select(KEYS), proptest::sample::select(VALUES))
            .prop_map(|(k, v)| format!("{k} = {v}")),
        1 => "[ -~]{0,20}",
        1 => Just(String::new()),
    ]
}

/// A `[[director.service]]` with its real servers and maybe a check.
fn service() -> impl Strategy<Value = String> {
    let reals = proptest::collection::vec(table(3), 0..3);
    (table(2), reals, proptest::option::of(table(4)))
        .prop_map(|(s, reals, check)| s + &reals.concat() + &check.unwrap_or_default())
}

/// A document: the schema's tables in their order (mostly), or lines of anything.
fn document() -> impl Strategy<Value = String> {
    let tables = (
        proptest::option::of(table(0)),
        proptest::option::weighted(0.85, table(1)),
        proptest::collection::vec(service(), 0..3),
    )
        .prop_map(|(rs, d, services)| {
            rs.unwrap_or_default() + &d.unwrap_or_default() + &services.concat()
        });
    prop_oneof![
        4 => tables,
        1 => proptest::collection::vec(line(), 0..16).prop_map(|l| l.join("\n") + "\n"),
    ]
}

/// A config error: one line that starts with `rs.toml:LINE:COL: ` or names a `--flag`.
fn assert_config_error(msg: &str, text: &str) {
    assert_one_line(msg, text);
    let located = msg.strip_prefix("rs.toml:").and_then(|rest| {
        let mut parts = rest.splitn(3, ':');
        let line = parts.next()?.parse::<usize>().ok()?;
        let col = parts.next()?.parse::<usize>().ok()?;
        let rest = parts.next()?;
        (line >= 1 && col >= 1 && rest.starts_with(' ')).then_some(())
    });
    assert!(
        located.is_some() || msg.contains("--"),
        "neither file:line:col nor a --flag: {msg:?}\nfor:\n{text}"
    );
}

fn real_server_flags() -> impl Strategy<Value = RealServerFlags> {
    let vip = proptest::sample::select(&["192.0.2.1", "::ffff:192.0.2.1", "x", "192.0.2.1/32"][..]);
    (proptest::option::of(vip), proptest::bool::ANY).prop_map(|(vip, nft)| RealServerFlags {
        vips: vip.map(|v| vec![v.to_string()]).unwrap_or_default(),
        arp: nft.then(|| "nft".to_string()),
        ..Default::default()
    })
}

/// Parses and validates `text` both ways; asserts every error's shape.
fn check_text(text: String, flags: &RealServerFlags) {
    let file = match ConfigFile::parse(Some(PathBuf::from("rs.toml")), text.clone()) {
        Ok(f) => f,
        Err(e) => return assert_config_error(&e.0, &text),
    };
    if let Err(e) = real_server(&file, flags) {
        assert_config_error(&e.0, &text);
    }
    let flags = RunFlags {
        interval: Some("500ms"),
        ..RunFlags::default()
    };
    if let Err(e) = run_keys(&file, flags) {
        assert_config_error(&e.0, &text);
    }
    if let Err(e) = director(&file, &DirectorFlags::default()) {
        assert_config_error(&e.0, &text);
    }
    let quick = DirectorFlags {
        interface: Some("eth0".into()),
        vip: Some("192.0.2.9".into()),
        port: Some("80".into()),
        ..Default::default()
    };
    if let Err(e) = director(&file, &quick) {
        assert_config_error(&e.0, &text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn config_shaped_text_never_panics_and_errors_are_located(
        text in document(),
        flags in real_server_flags(),
    ) {
        check_text(text, &flags);
    }

    #[test]
    fn arbitrary_bytes_as_a_config_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_text(String::from_utf8_lossy(&bytes).into_owned(), &RealServerFlags::default());
    }
}
