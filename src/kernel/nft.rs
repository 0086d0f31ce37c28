//! rs-agent's nftables tables (`arp rs_agent`, `ip6 rs_agent`), driven through `nft -j`.
//!
//! Rules are built with the `nftables` crate's schema and sent as one JSON batch that adds,
//! deletes and re-adds the table: nft applies it as a single transaction, so a table is
//! either entirely old or entirely new. We run `nft` ourselves to keep its stderr (the crate
//! drops it on failure) and only ever list our own table (the crate cannot parse every
//! statement other tools use).

use crate::model::{NftFamily, NftRule, NFT_TABLE};
use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadBase};
use nftables::expr::{PayloadField, PayloadRaw};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{Mangle, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use std::borrow::Cow;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run `nft`: {0}; install the nftables package (apt-get install nftables)")]
    Spawn(std::io::Error),
    #[error("nft {action} failed: {stderr}")]
    Failed { action: String, stderr: String },
}

fn nf_family(family: NftFamily) -> NfFamily {
    match family {
        NftFamily::Arp => NfFamily::ARP,
        NftFamily::Ip6 => NfFamily::IP6,
    }
}

fn chain_of(rule: &NftRule) -> &'static str {
    match rule {
        NftRule::DropArpFor { .. } | NftRule::DropNsFor { .. } | NftRule::Unknown { .. } => "input",
        NftRule::MangleArpFrom { .. } | NftRule::DropNaFor { .. } => "output",
    }
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn eq(left: Expression<'static>, right: String) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right: Expression::String(Cow::Owned(right)),
        op: Operator::EQ,
    })
}

/// The ND target address (bits 64..192 of the ICMPv6 header) as nft prints it.
fn nd_target_match(vip: &Ipv6Addr) -> Statement<'static> {
    let raw = Expression::Named(NamedExpression::Payload(Payload::PayloadRaw(PayloadRaw {
        base: PayloadBase::TH,
        offset: 64,
        len: 128,
    })));
    eq(raw, format!("0x{:032x}", u128::from(*vip)))
}

/// The statements of one rule, exactly as `nft -j list` prints them back.
pub fn statements(rule: &NftRule) -> Vec<Statement<'static>> {
    match rule {
        NftRule::DropArpFor { vip } => vec![
            eq(payload("arp", "daddr ip"), vip.to_string()),
            Statement::Drop(None),
        ],
        NftRule::MangleArpFrom { iface, vip, rip } => vec![
            eq(
                Expression::Named(NamedExpression::Meta(Meta {
                    key: MetaKey::Oifname,
                })),
                iface.clone(),
            ),
            eq(payload("arp", "saddr ip"), vip.to_string()),
            Statement::Mangle(Mangle {
                key: payload("arp", "saddr ip"),
                value: Expression::String(Cow::Owned(rip.to_string())),
            }),
        ],
        NftRule::DropNsFor { vip } => vec![
            eq(payload("icmpv6", "type"), "nd-neighbor-solicit".into()),
            nd_target_match(vip),
            Statement::Drop(None),
        ],
        NftRule::DropNaFor { vip } => vec![
            eq(payload("icmpv6", "type"), "nd-neighbor-advert".into()),
            nd_target_match(vip),
            Statement::Drop(None),
        ],
        NftRule::Unknown { .. } => vec![],
    }
}

fn table(family: NftFamily) -> NfListObject<'static> {
    NfListObject::Table(Table {
        family: nf_family(family),
        name: NFT_TABLE.into(),
        handle: None,
    })
}

fn base_chain(family: NftFamily, name: &'static str, hook: NfHook) -> NfListObject<'static> {
    NfListObject::Chain(Chain {
        family: nf_family(family),
        table: NFT_TABLE.into(),
        name: name.into(),
        _type: Some(NfChainType::Filter),
        hook: Some(hook),
        prio: Some(0),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    })
}

/// One atomic batch that leaves exactly `rules` in our table of `family`, whatever the table
/// held before (add + delete makes the delete safe when the table is absent).
pub fn replace_batch(family: NftFamily, rules: &[NftRule]) -> Nftables<'static> {
    let mut objects = vec![
        NfObject::CmdObject(NfCmd::Add(table(family))),
        NfObject::CmdObject(NfCmd::Delete(table(family))),
        NfObject::CmdObject(NfCmd::Add(table(family))),
        NfObject::CmdObject(NfCmd::Add(base_chain(family, "input", NfHook::Input))),
        NfObject::CmdObject(NfCmd::Add(base_chain(family, "output", NfHook::Output))),
    ];
    for rule in rules.iter().filter(|r| r.family() == family) {
        objects.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(Rule {
            family: nf_family(family),
            table: NFT_TABLE.into(),
            chain: chain_of(rule).into(),
            expr: Cow::Owned(statements(rule)),
            handle: None,
            index: None,
            comment: None,
        }))));
    }
    Nftables {
        objects: Cow::Owned(objects),
    }
}

/// A batch that deletes our table of `family` (and succeeds if it is already gone).
pub fn delete_batch(family: NftFamily) -> Nftables<'static> {
    Nftables {
        objects: Cow::Owned(vec![
            NfObject::CmdObject(NfCmd::Add(table(family))),
            NfObject::CmdObject(NfCmd::Delete(table(family))),
        ]),
    }
}

/// An `nft` that dies with rs-agent (SIGKILL when the thread that started it ends). rs-agent
/// records a table in its journal before it writes it, and a `down` after a crash deletes
/// what the journal records; an `nft` left running by a killed rs-agent could still commit
/// its batch after that `down`, leaving a table no journal records. Killed with us, its batch
/// is committed whole or not at all (nft's batches are one kernel transaction).
fn dies_with_us(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the line above: then nothing would kill us.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        })
    }
}

/// Sends one batch to `nft -j -f -`; on failure the error carries nft's own message.
pub fn apply(batch: &Nftables, action: &str) -> Result<(), NftError> {
    let json = serde_json::to_vec(batch).map_err(|e| NftError::Failed {
        action: action.to_string(),
        stderr: e.to_string(),
    })?;
    let mut child = dies_with_us(Command::new("nft").args(["-j", "-f", "-"]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&json).map_err(NftError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if out.status.success() {
        return Ok(());
    }
    Err(NftError::Failed {
        action: action.to_string(),
        stderr: cause(&out),
    })
}

/// What a failed `nft` said, on one line; when it said nothing (killed, or it crashed), how it
/// ended, so the error never ends in an empty cause.
fn cause(out: &std::process::Output) -> String {
    let said = one_line(&String::from_utf8_lossy(&out.stderr));
    if !said.is_empty() {
        return said;
    }
    use std::os::unix::process::ExitStatusExt;
    match (out.status.code(), out.status.signal()) {
        (Some(code), _) => format!("nft exited with status {code} and printed nothing"),
        (None, Some(signal)) => format!("nft was killed by signal {signal}"),
        (None, None) => format!("nft ended: {}", out.status),
    }
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Reads our table of `family`: `None` when absent; rules normalised and sorted. Anything in
/// it that rs-agent would not have written becomes `NftRule::Unknown`, which forces a rewrite.
pub fn observe(family: NftFamily) -> Result<Option<Vec<NftRule>>, NftError> {
    finish_listing(family, spawn_listing(family)?)
}

/// Reads our tables of all `families` with the `nft` processes running side by side: each
/// takes a few milliseconds, and `run` observes on every repair.
pub fn observe_all(families: &[NftFamily]) -> Result<Vec<Option<Vec<NftRule>>>, NftError> {
    let mut children = Vec::with_capacity(families.len());
    for family in families {
        match spawn_listing(*family) {
            Ok(child) => children.push(child),
            Err(e) => {
                // Reap the listings already running: no zombie is left behind.
                for mut child in children {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(e);
            }
        }
    }
    families
        .iter()
        .zip(children)
        .map(|(f, child)| finish_listing(*f, child))
        .collect()
}

fn spawn_listing(family: NftFamily) -> Result<std::process::Child, NftError> {
    dies_with_us(Command::new("nft").args(["-j", "list", "table", &family.to_string(), NFT_TABLE]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)
}

fn finish_listing(
    family: NftFamily,
    child: std::process::Child,
) -> Result<Option<Vec<NftRule>>, NftError> {
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No such file or directory") {
            return Ok(None);
        }
        return Err(NftError::Failed {
            action: format!("listing table {family} {NFT_TABLE}"),
            stderr: cause(&out),
        });
    }
    Ok(Some(parse_listing(family, &out.stdout)))
}

/// Normalises `nft -j list table` output into rules (pure, unit-tested).
pub fn parse_listing(family: NftFamily, json: &[u8]) -> Vec<NftRule> {
    let listing: Nftables = match serde_json::from_slice(json) {
        Ok(l) => l,
        Err(e) => {
            return vec![NftRule::Unknown {
                text: format!("unparseable listing: {e}"),
            }]
        }
    };
    let mut rules = Vec::new();
    for object in listing.objects.iter() {
        match object {
            NfObject::ListObject(NfListObject::Rule(rule)) => {
                rules.push(normalise(family, &rule.chain, &rule.expr));
            }
            NfObject::ListObject(NfListObject::Chain(chain)) if !is_our_chain(chain) => {
                rules.push(NftRule::Unknown {
                    text: format!("chain {} is not as rs-agent writes it", chain.name),
                });
            }
            _ => {}
        }
    }
    rules.sort();
    rules
}

fn is_our_chain(chain: &Chain) -> bool {
    let hook = match chain.name.as_ref() {
        "input" => NfHook::Input,
        "output" => NfHook::Output,
        _ => return false,
    };
    chain.hook == Some(hook)
        && chain._type == Some(NfChainType::Filter)
        && chain.prio == Some(0)
        && chain.policy == Some(NfChainPolicy::Accept)
}

/// Recognises one listed rule: extract the candidate's parameters, then accept it only if
/// rendering the candidate gives back exactly the listed statements.
fn normalise(family: NftFamily, chain: &str, expr: &[Statement]) -> NftRule {
    let strings: Vec<&str> = expr
        .iter()
        .filter_map(|s| match s {
            Statement::Match(Match {
                right: Expression::String(v),
                ..
            }) => Some(v.as_ref()),
            Statement::Mangle(Mangle {
                value: Expression::String(v),
                ..
            }) => Some(v.as_ref()),
            _ => None,
        })
        .collect();
    let v4 = |i: usize| strings.get(i).and_then(|s| s.parse::<Ipv4Addr>().ok());
    let v6 = |i: usize| {
        strings
            .get(i)
            .and_then(|s| s.strip_prefix("0x"))
            .and_then(|h| u128::from_str_radix(h, 16).ok())
            .map(Ipv6Addr::from)
    };
    let candidate = match (family, chain) {
        (NftFamily::Arp, "input") => v4(0).map(|vip| NftRule::DropArpFor { vip }),
        (NftFamily::Arp, "output") => match (strings.first(), v4(1), v4(2)) {
            (Some(iface), Some(vip), Some(rip)) => Some(NftRule::MangleArpFrom {
                iface: iface.to_string(),
                vip,
                rip,
            }),
            _ => None,
        },
        (NftFamily::Ip6, "input") => v6(1).map(|vip| NftRule::DropNsFor { vip }),
        (NftFamily::Ip6, "output") => v6(1).map(|vip| NftRule::DropNaFor { vip }),
        _ => None,
    };
    candidate
        .filter(|c| statements(c) == expr)
        .unwrap_or_else(|| NftRule::Unknown {
            text: format!(
                "{chain}: {}",
                serde_json::to_string(expr).unwrap_or_default()
            ),
        })
}

/// True when the `nft` binary can be found on PATH.
pub fn nft_available() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("nft").is_file()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_silent_nft_failure_says_how_nft_ended() {
        let out = |raw: i32, stderr: &str| std::process::Output {
            status: std::process::ExitStatus::from_raw(raw),
            stdout: Vec::new(),
            stderr: stderr.as_bytes().to_vec(),
        };
        assert_eq!(cause(&out(9, "")), "nft was killed by signal 9");
        assert_eq!(
            cause(&out(1 << 8, "")),
            "nft exited with status 1 and printed nothing"
        );
        assert_eq!(cause(&out(1 << 8, "Error: x\n  ^^\n")), "Error: x | ^^");
    }
    use super::*;

    /// Captured from `nft -j list table arp rs_agent` (nft 1.0.6) after rs-agent wrote it.
    const ARP_LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "arp", "name": "rs_agent", "handle": 1}}, {"chain": {"family": "arp", "table": "rs_agent", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}}, {"chain": {"family": "arp", "table": "rs_agent", "name": "output", "handle": 2, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}}, {"rule": {"family": "arp", "table": "rs_agent", "chain": "input", "handle": 3, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "arp", "field": "daddr ip"}}, "right": "192.0.2.100"}}, {"drop": null}]}}, {"rule": {"family": "arp", "table": "rs_agent", "chain": "output", "handle": 4, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "eth0"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "arp", "field": "saddr ip"}}, "right": "192.0.2.100"}}, {"mangle": {"key": {"payload": {"protocol": "arp", "field": "saddr ip"}}, "value": "192.0.2.11"}}]}}]}"#;

    const IP6_LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "ip6", "name": "rs_agent", "handle": 2}}, {"chain": {"family": "ip6", "table": "rs_agent", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}}, {"chain": {"family": "ip6", "table": "rs_agent", "name": "output", "handle": 2, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}}, {"rule": {"family": "ip6", "table": "rs_agent", "chain": "input", "handle": 3, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "icmpv6", "field": "type"}}, "right": "nd-neighbor-solicit"}}, {"match": {"op": "==", "left": {"payload": {"base": "th", "offset": 64, "len": 128}}, "right": "0x20010db8000000000000000000000100"}}, {"drop": null}]}}, {"rule": {"family": "ip6", "table": "rs_agent", "chain": "output", "handle": 4, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "icmpv6", "field": "type"}}, "right": "nd-neighbor-advert"}}, {"match": {"op": "==", "left": {"payload": {"base": "th", "offset": 64, "len": 128}}, "right": "0x20010db8000000000000000000000100"}}, {"drop": null}]}}]}"#;

    #[test]
    fn listings_normalise_to_rules() {
        let vip: Ipv4Addr = "192.0.2.100".parse().expect("literal");
        assert_eq!(
            parse_listing(NftFamily::Arp, ARP_LISTING.as_bytes()),
            vec![
                NftRule::DropArpFor { vip },
                NftRule::MangleArpFrom {
                    iface: "eth0".into(),
                    vip,
                    rip: "192.0.2.11".parse().expect("literal"),
                },
            ]
        );
        let vip6: Ipv6Addr = "2001:db8::100".parse().expect("literal");
        assert_eq!(
            parse_listing(NftFamily::Ip6, IP6_LISTING.as_bytes()),
            vec![
                NftRule::DropNsFor { vip: vip6 },
                NftRule::DropNaFor { vip: vip6 },
            ]
        );
    }

    #[test]
    fn foreign_edits_are_unknown() {
        let accept = ARP_LISTING.replacen(r#"{"drop": null}"#, r#"{"accept": null}"#, 1);
        let rules = parse_listing(NftFamily::Arp, accept.as_bytes());
        assert!(
            matches!(rules.last(), Some(NftRule::Unknown { .. })),
            "{rules:?}"
        );
        let policy = ARP_LISTING.replacen(r#""policy": "accept""#, r#""policy": "drop""#, 1);
        let rules = parse_listing(NftFamily::Arp, policy.as_bytes());
        assert!(rules.iter().any(|r| matches!(r, NftRule::Unknown { .. })));
        let rules = parse_listing(NftFamily::Arp, b"{not json");
        assert!(matches!(rules[..], [NftRule::Unknown { .. }]));
    }

    #[test]
    fn replace_batch_is_add_delete_add_then_chains_and_rules() {
        let rules = parse_listing(NftFamily::Arp, ARP_LISTING.as_bytes());
        let json = serde_json::to_value(replace_batch(NftFamily::Arp, &rules)).expect("json");
        let objs = json["nftables"].as_array().expect("array");
        assert_eq!(objs.len(), 7);
        assert!(objs[0]["add"]["table"].is_object());
        assert!(objs[1]["delete"]["table"].is_object());
        assert_eq!(objs[3]["add"]["chain"]["hook"], "input");
        assert_eq!(objs[6]["add"]["rule"]["chain"], "output");
        assert_eq!(
            objs[6]["add"]["rule"]["expr"][2]["mangle"]["value"],
            "192.0.2.11"
        );
    }
}
