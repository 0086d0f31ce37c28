//! Generative tests (proptest): arbitrary bytes and input-shaped text into every parser of
//! untrusted input — the config file and both sides' validation, the IPVS netlink decoder,
//! the health checks' HTTP response framing and judging, their DNS, SMTP and ICMP replies, the ipvsadm-save importer. The
//! properties: never a panic; every error one line; a config error starts with
//! `file:line:col` or names a `--flag`. Case counts are fixed per property (see each
//! `ProptestConfig`) so the unit tier stays fast.

mod config;
mod dns;
mod http;
mod import;
mod wire;

/// Panics unless `msg` is one line (no line break anywhere, not empty).
fn assert_one_line(msg: &str, what: &str) {
    assert!(
        !msg.trim().is_empty() && !msg.contains('\n') && !msg.contains('\r'),
        "{what}: not one line: {msg:?}"
    );
}
