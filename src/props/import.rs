//! The importers: ipvsadm-save, keepalived.conf and ldirectord.cf.

use super::assert_one_line;
use crate::config_file::ConfigFile;
use crate::director::import::ipvsadm_save_to_toml;
use proptest::prelude::*;

const WORDS: &[&str] = &[
    "-A",
    "-a",
    "-t",
    "-u",
    "--sctp-service",
    "-f",
    "-6",
    "-s",
    "-p",
    "-M",
    "-b",
    "-o",
    "-r",
    "-g",
    "-i",
    "-m",
    "--tun-type",
    "-w",
    "-x",
    "-y",
    "192.0.2.100:80",
    "192.0.2.100:http",
    "[2001:db8::100]:80",
    "[2001:db8::100]",
    "198.51.100.2:80",
    "198.51.100.2:8080",
    "198.51.100.2",
    "[2001:db8::2]:80",
    "web1:http",
    "::ffff:192.0.2.1",
    "7",
    "0",
    "-1",
    "4294967296",
    "rr",
    "wlc",
    "mh",
    "bogus",
    "sh-fallback,sh-port",
    "mh-port",
    "ipip",
    "gue",
    "300",
    "64",
    "255.255.255.0",
    "99999999",
    "\"q\"",
    "\\",
    "#",
    "\u{1}",
    "é",
];

/// ipvsadm-save-shaped lines from its words, and noise.
fn input() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        8 => proptest::collection::vec(proptest::sample::select(WORDS), 0..10)
            .prop_map(|w| w.join(" ")),
        1 => "[ -~]{0,30}",
        1 => Just("-A -t 192.0.2.100:80 -s rr".to_string()),
        2 => Just("-a -t 192.0.2.100:80 -r 198.51.100.2:80 -g -w 1".to_string()),
    ];
    proptest::collection::vec(line, 0..10).prop_map(|l| l.join("\n"))
}

fn check(input: &str) {
    match ipvsadm_save_to_toml(input, "eth0") {
        Err(e) => {
            assert_one_line(&e.0, input);
            assert!(
                e.0.starts_with("ipvsadm-save input:") || e.0.starts_with("ipvsadm-save input: "),
                "not naming the input: {e} for {input:?}"
            );
        }
        // What import prints, `director up` reads.
        Ok(toml) => {
            let file = ConfigFile::parse(None, toml.clone())
                .unwrap_or_else(|e| panic!("{e}\nfor {input:?}:\n{toml}"));
            crate::director::config::director(&file, &Default::default())
                .unwrap_or_else(|e| panic!("{e}\nfor {input:?}:\n{toml}"));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn ipvsadm_save_shaped_input_imports_validly_or_names_its_line(text in input()) {
        check(&text);
    }

    #[test]
    fn arbitrary_text_into_import_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check(&String::from_utf8_lossy(&bytes));
    }
}

const KEEPALIVED_WORDS: &[&str] = &[
    "virtual_server",
    "virtual_server_group",
    "real_server",
    "fwmark",
    "group",
    "G",
    "{",
    "}",
    "}\n",
    "{\n",
    "\n",
    "lb_algo",
    "lb_kind",
    "DR",
    "NAT",
    "TUN",
    "type",
    "gue",
    "protocol",
    "UDP",
    "persistence_timeout",
    "persistence_granularity",
    "sorry_server",
    "inhibit_on_failure",
    "delay_loop",
    "weight",
    "TCP_CHECK",
    "HTTP_GET",
    "SSL_GET",
    "MISC_CHECK",
    "DNS_CHECK",
    "url",
    "path",
    "status_code",
    "200-299",
    "digest",
    "misc_path",
    "misc_dynamic",
    "connect_timeout",
    "connect_port",
    "retry",
    "delay_before_retry",
    "quorum",
    "vrrp_instance",
    "virtual_ipaddress",
    "global_defs",
    "include",
    "192.0.2.100",
    "192.0.2.1-300",
    "192.0.2.0/20",
    "2001:db8::1-ffff",
    "198.51.100.2",
    "80",
    "0",
    "99999999",
    "1.5",
    "-1",
    "\"q w\"",
    "'s",
    "\"",
    "#",
    "!",
    "@x",
    "$A=1",
    "\\",
    "é",
];

/// keepalived.conf-shaped text from its words, and noise.
fn keepalived_input() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        9 => proptest::sample::select(KEEPALIVED_WORDS).prop_map(str::to_string),
        1 => "[ -~]{0,12}",
    ];
    proptest::collection::vec(word, 0..60).prop_map(|w| w.join(" "))
}

const LDIRECTORD_LINES: &[&str] = &[
    "virtual=192.0.2.100:80",
    "virtual=7",
    "virtual=[2001:db8::100]:80",
    "virtual=host:http",
    "\treal=198.51.100.2:80 gate",
    "\treal=198.51.100.2:8080 masq 3",
    "\treal=198.51.100.2->198.51.100.9 ipip 2 \"a\", \"b\"",
    "\treal=198.51.100.2->198.0.0.1 gate",
    "\treal=[2001:db8::2]:80 gate",
    "\treal=web:http gate",
    "\tchecktype=negotiate",
    "\tchecktype=connect",
    "\tchecktype=external",
    "\tchecktype=off",
    "\tchecktype=3",
    "\tservice=http",
    "\tservice=https",
    "\tservice=dns",
    "\trequest=\"/x\"",
    "\treceive=\"o.k\"",
    "\tcheckcommand=/bin/true",
    "\tfallback=198.51.100.250:80",
    "\tquiescent=no",
    "\tprotocol=udp",
    "\tnetmask=24",
    "\tpersistent=99999999999",
    "checkinterval=0.001",
    "checktimeout=1e300",
    "negotiatetimeout=nan",
    "failurecount=1000",
    "quiescent=maybe",
    "autoreload=yes",
    "# comment",
    "",
    "no equals sign",
];

/// ldirectord.cf-shaped lines, and noise.
fn ldirectord_input() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        9 => proptest::sample::select(LDIRECTORD_LINES).prop_map(str::to_string),
        1 => "[ -~\t]{0,30}",
    ];
    proptest::collection::vec(line, 0..20).prop_map(|l| l.join("\n"))
}

/// A result of either new importer: an error is one line naming the input; a document is
/// one `director up` reads, and so is every warning one line.
fn check_imported(
    result: Result<crate::director::import::Imported, crate::config_file::ConfigError>,
    name: &str,
    input: &str,
) {
    match result {
        Err(e) => {
            assert_one_line(&e.0, input);
            assert!(
                e.0.starts_with(name),
                "not naming the input: {e} for {input:?}"
            );
        }
        Ok(imported) => {
            for w in &imported.warnings {
                assert_one_line(w, input);
            }
            let file = ConfigFile::parse(None, imported.toml.clone())
                .unwrap_or_else(|e| panic!("{e}\nfor {input:?}:\n{}", imported.toml));
            crate::director::config::director(&file, &Default::default())
                .unwrap_or_else(|e| panic!("{e}\nfor {input:?}:\n{}", imported.toml));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn keepalived_shaped_input_imports_validly_or_names_its_place(text in keepalived_input()) {
        let r = crate::director::import::keepalived_text_to_toml("keepalived.conf", &text, "eth0");
        check_imported(r, "keepalived.conf", &text);
    }

    #[test]
    fn arbitrary_text_into_keepalived_import_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let text = String::from_utf8_lossy(&bytes);
        let r = crate::director::import::keepalived_text_to_toml("keepalived.conf", &text, "eth0");
        check_imported(r, "keepalived.conf", &text);
    }

    #[test]
    fn ldirectord_shaped_input_imports_validly_or_names_its_line(text in ldirectord_input()) {
        let r = crate::director::import::ldirectord_text_to_toml("ldirectord.cf", &text, "eth0");
        check_imported(r, "ldirectord.cf", &text);
    }

    #[test]
    fn arbitrary_text_into_ldirectord_import_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let text = String::from_utf8_lossy(&bytes);
        let r = crate::director::import::ldirectord_text_to_toml("ldirectord.cf", &text, "eth0");
        check_imported(r, "ldirectord.cf", &text);
    }
}
