//! The replies a udp, dns, icmp or smtp check reads: the DNS decoder and judge, the SMTP reply
//! parser, the ICMP echo reply matcher, on arbitrary bytes and on reply-shaped ones (a valid
//! header and question, then records whose names are labels and compression pointers
//! anywhere).

use super::assert_one_line;
use crate::director::health::{dns, icmp, smtp, DnsProbe, DnsType};
use proptest::prelude::*;

fn probe(expect: bool) -> DnsProbe {
    DnsProbe {
        name: "www.example.com".into(),
        qtype: DnsType::A,
        expect: expect.then(|| "192.0.2.10".parse().expect("address")),
    }
}

/// A name as it may appear on the wire: labels of any length byte, a pointer anywhere, cut.
fn name() -> impl Strategy<Value = Vec<u8>> {
    let part = prop_oneof![
        (0u8..70, proptest::collection::vec(any::<u8>(), 0..8)).prop_map(|(len, bytes)| {
            let mut out = vec![len];
            out.extend(bytes);
            out
        }),
        any::<u16>().prop_map(|p| (p | 0xc000).to_be_bytes().to_vec()),
        (0x40u8..0xc0).prop_map(|b| vec![b]),
    ];
    proptest::collection::vec(part, 0..5).prop_map(|parts| {
        let mut out: Vec<u8> = parts.concat();
        out.push(0);
        out
    })
}

/// A reply to `query(id, probe(..))`: its header with any flags and counts, its question,
/// then records of any shape.
fn reply() -> impl Strategy<Value = Vec<u8>> {
    let record = (
        name(),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..20),
        any::<bool>(),
    )
        .prop_map(|(name, rtype, data, honest)| {
            let mut out = name;
            out.extend_from_slice(&rtype.to_be_bytes());
            out.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
            let len = if honest {
                data.len() as u16
            } else {
                data.len() as u16 * 3
            };
            out.extend_from_slice(&len.to_be_bytes());
            out.extend(data);
            out
        });
    (
        any::<u16>(),
        any::<u16>(),
        any::<u16>(),
        proptest::collection::vec(record, 0..4),
        any::<usize>(),
    )
        .prop_map(|(flags, qd, an, records, cut)| {
            let mut msg = dns::query(0x1234, &probe(false));
            msg[2..4].copy_from_slice(&flags.to_be_bytes());
            msg[4..6].copy_from_slice(&(qd % 3).to_be_bytes());
            msg[6..8].copy_from_slice(&(an % 6).to_be_bytes());
            msg.extend(records.concat());
            let keep = msg.len() - cut % (msg.len() / 4 + 1);
            msg.truncate(keep);
            msg
        })
}

fn judge_all(msg: &[u8]) {
    if let Err(e) = dns::parse(msg) {
        assert_one_line(&e.to_string(), "dns::parse");
    }
    for expect in [false, true] {
        if let Err(e) = dns::judge(msg, 0x1234, &probe(expect)) {
            assert_one_line(&e.to_string(), "dns::judge");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_bytes_never_panic_the_reply_parsers(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
        judge_all(&buf);
        let _ = smtp::reply(&buf);
        for (v6, header) in [(false, false), (false, true), (true, false)] {
            let _ = icmp::is_reply(&buf, v6, header, 1, 2);
        }
    }

    #[test]
    fn reply_shaped_bytes_never_panic_the_dns_decoder(msg in reply()) {
        judge_all(&msg);
        if let Ok(reply) = dns::parse(&msg) {
            for r in &reply.answers {
                prop_assert!(r.data.len() <= msg.len());
            }
        }
    }
}
