//! The ipvsadm-save importer.

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
