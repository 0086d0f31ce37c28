//! The IPVS generic netlink decoder, on bytes as a hostile or buggy kernel could send.

use super::assert_one_line;
use crate::kernel::ipvs::wire::{
    error_code, parse_dest, parse_family_id, parse_info, parse_service, split_messages,
};
use crate::kernel::ipvs::AddressFamily;
use proptest::prelude::*;

/// One netlink attribute: length, type, payload, padding to 4 bytes.
fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len() + 4).unwrap_or(u16::MAX);
    let mut out = len.to_ne_bytes().to_vec();
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

/// Leaf attributes of the kinds IPVS uses (1..=13), with payloads of the sizes the decoder
/// reads (2, 4, 8, 16 bytes) and of any other size.
fn leaves() -> impl Strategy<Value = Vec<u8>> {
    let payload = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..20),
        any::<u16>().prop_map(|v| v.to_ne_bytes().to_vec()),
        prop_oneof![Just(2u16), Just(10u16), Just(7u16)].prop_map(|af| af.to_ne_bytes().to_vec()),
        any::<u32>().prop_map(|v| v.to_ne_bytes().to_vec()),
        Just(b"rr\0".to_vec()),
    ];
    proptest::collection::vec((0u16..16, payload), 0..14)
        .prop_map(|attrs| attrs.iter().flat_map(|(k, p)| nla(*k, p)).collect())
}

/// A genl payload: the 4-byte genl header, then top-level attributes whose payloads nest
/// leaves (or are raw bytes), sometimes cut short.
fn genl_payload() -> impl Strategy<Value = Vec<u8>> {
    let top = proptest::collection::vec(
        (
            0u16..4,
            prop_oneof![3 => leaves(), 1 => proptest::collection::vec(any::<u8>(), 0..24)],
        ),
        0..3,
    );
    (top, any::<usize>()).prop_map(|(top, cut)| {
        let mut out = vec![1, 1, 0, 0];
        for (k, p) in top {
            out.extend(nla(k, &p));
        }
        // One payload in four is cut at a random byte.
        if cut % 4 == 0 {
            out.truncate(cut / 4 % (out.len() + 1));
        }
        out
    })
}

fn one_line<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) {
    if let Err(e) = r {
        assert_one_line(&e.to_string(), what);
    }
}

/// Every decoder entry point on one payload.
fn decode_all(payload: &[u8]) {
    one_line(error_code(payload), "error_code");
    one_line(parse_family_id(payload), "parse_family_id");
    one_line(parse_info(payload), "parse_info");
    one_line(parse_service(payload), "parse_service");
    one_line(parse_dest(payload, AddressFamily::V4), "parse_dest v4");
    one_line(parse_dest(payload, AddressFamily::V6), "parse_dest v6");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(buf in proptest::collection::vec(any::<u8>(), 0..256)) {
        match split_messages(&buf) {
            Ok(messages) => {
                for m in messages {
                    prop_assert!(m.payload.len() <= buf.len());
                    decode_all(m.payload);
                }
            }
            Err(e) => assert_one_line(&e.to_string(), "split_messages"),
        }
        decode_all(&buf);
    }

    #[test]
    fn attribute_shaped_payloads_never_panic_the_decoder(payload in genl_payload()) {
        decode_all(&payload);
        // The same payload inside a netlink message header.
        let len = u32::try_from(payload.len() + 16).unwrap_or(u32::MAX);
        let mut msg = len.to_ne_bytes().to_vec();
        msg.extend_from_slice(&[0x20, 0, 0x02, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        msg.extend_from_slice(&payload);
        let messages = split_messages(&msg).expect("one well-framed message");
        prop_assert_eq!(messages.len(), 1);
        prop_assert_eq!(messages[0].payload, &payload[..]);
    }
}
