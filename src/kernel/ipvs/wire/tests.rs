//! Byte layouts checked against include/uapi/linux/ip_vs.h (little-endian host).

use super::*;
use crate::testing::{dr, ip, service, tcp};

fn tcp80() -> ServiceKey {
    tcp("192.0.2.100", 80)
}

fn rr(key: ServiceKey) -> Service {
    service(key, "rr")
}

#[test]
fn service_key_layout() {
    let attrs = service_key_attrs(&tcp80());
    #[rustfmt::skip]
    let want: Vec<u8> = vec![
        // IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED, len 4+8+8+20+8 = 48
        48, 0, 0x01, 0x80,
        6, 0, 1, 0, 2, 0, 0, 0,        // AF = AF_INET (2), padded
        6, 0, 2, 0, 6, 0, 0, 0,        // PROTOCOL = TCP (6)
        20, 0, 3, 0, 192, 0, 2, 100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // ADDR: 16 bytes
        6, 0, 4, 0, 0, 80, 0, 0,       // PORT = 80, big-endian
    ];
    assert_eq!(attrs, want);
}

#[test]
fn full_service_carries_flags_and_mask_netmask_in_network_order() {
    let mut s = rr(tcp80());
    s.flags = ServiceFlags(ServiceFlags::PERSISTENT.0 | ServiceFlags::HASHED.0);
    s.timeout = 300;
    s.netmask = 0xFFFF_FF00;
    let attrs = service_attrs(&s);
    let tail = &attrs[48..];
    #[rustfmt::skip]
    let want: Vec<u8> = vec![
        7, 0, 6, 0, b'r', b'r', 0, 0,                  // SCHED_NAME "rr\0"
        12, 0, 7, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, // FLAGS {PERSISTENT (HASHED dropped), mask ~0}
        8, 0, 8, 0, 0x2c, 0x01, 0, 0,                  // TIMEOUT 300
        8, 0, 9, 0, 255, 255, 255, 0,                  // NETMASK 255.255.255.0 as on the wire
    ];
    assert_eq!(tail, &want[..]);
    assert_eq!(
        u16::from_ne_bytes([attrs[0], attrs[1]]) as usize,
        attrs.len()
    );
}

#[test]
fn fwmark_ipv6_key_layout() {
    let attrs = service_key_attrs(&ServiceKey::Fwmark {
        af: AddressFamily::V6,
        mark: 7,
    });
    #[rustfmt::skip]
    let want: Vec<u8> = vec![
        20, 0, 0x01, 0x80,
        6, 0, 1, 0, 10, 0, 0, 0,       // AF_INET6 (10)
        8, 0, 5, 0, 7, 0, 0, 0,        // FWMARK 7
    ];
    assert_eq!(attrs, want);
}

#[test]
fn destination_layout() {
    let (command, attrs) = op_payload(&IpvsOp::AddDest(tcp80(), dr("192.0.2.2", 3)));
    assert_eq!(command, cmd::NEW_DEST);
    let dest = &attrs[48..];
    #[rustfmt::skip]
    let want: Vec<u8> = vec![
        72, 0, 0x02, 0x80,             // IPVS_CMD_ATTR_DEST nested
        20, 0, 1, 0, 192, 0, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // ADDR
        6, 0, 2, 0, 0, 80, 0, 0,       // PORT
        6, 0, 11, 0, 2, 0, 0, 0,       // ADDR_FAMILY AF_INET
        8, 0, 3, 0, 3, 0, 0, 0,        // FWD_METHOD DROUTE (3)
        8, 0, 4, 0, 3, 0, 0, 0,        // WEIGHT 3 (u32)
        8, 0, 5, 0, 0, 0, 0, 0,        // U_THRESH
        8, 0, 6, 0, 0, 0, 0, 0,        // L_THRESH
    ];
    assert_eq!(dest, &want[..]);
}

#[test]
fn message_header() {
    let m = message(0x23, NLM_F_REQUEST | NLM_F_ACK, 9, cmd::GET_INFO, 1, &[]);
    assert_eq!(
        m,
        vec![20, 0, 0, 0, 0x23, 0, 5, 0, 9, 0, 0, 0, 0, 0, 0, 0, 15, 1, 0, 0]
    );
    let parsed = split_messages(&m).expect("parse");
    assert_eq!(parsed.len(), 1);
    assert_eq!((parsed[0].kind, parsed[0].seq), (0x23, 9));
}

/// A GET_SERVICE reply is the same nested layout as a request, plus stats: decode what we encode.
#[test]
fn service_round_trip() {
    for s in [
        rr(tcp80()),
        Service {
            key: ServiceKey::Addr {
                protocol: Protocol::Udp,
                addr: ip("2001:db8::100"),
                port: 53,
            },
            scheduler: "mh".into(),
            flags: ServiceFlags(ServiceFlags::SCHED_SH_PORT.0 | ServiceFlags::PERSISTENT.0),
            timeout: 60,
            netmask: 64,
            pe_name: None,
        },
        Service {
            key: ServiceKey::Fwmark {
                af: AddressFamily::V4,
                mark: 42,
            },
            scheduler: "wlc".into(),
            flags: ServiceFlags::default(),
            timeout: 0,
            netmask: u32::MAX,
            pe_name: Some("sip".into()),
        },
    ] {
        let reply = message(
            0x23,
            NLM_F_MULTI,
            1,
            cmd::NEW_SERVICE,
            1,
            &service_attrs(&s),
        );
        let msgs = split_messages(&reply).expect("split");
        let got = parse_service(msgs[0].payload).expect("decode");
        assert_eq!(got.service, s);
    }
}

#[test]
fn dest_round_trip_and_stats() {
    let d = Destination {
        upper_threshold: 100,
        lower_threshold: 10,
        forward: Forward::Tunnel,
        ..dr("2001:db8::2", 65535)
    };
    let (_, mut attrs) = op_payload(&IpvsOp::EditDest(tcp80(), d.clone()));
    // Append ACTIVE_CONNS 5 and a STATS64 nest with CONNS 9 inside the dest nest.
    let dest_start = 48;
    let mut extra = Vec::new();
    put(&mut extra, DEST_ACTIVE_CONNS, &5u32.to_ne_bytes());
    nest(&mut extra, DEST_STATS64, |b| put(b, 1, &9u64.to_ne_bytes()));
    put(&mut extra, DEST_TUN_TYPE, &[1u8]); // GUE
    attrs.extend_from_slice(&extra);
    let len = (attrs.len() - dest_start) as u16;
    attrs[dest_start..dest_start + 2].copy_from_slice(&len.to_ne_bytes());
    let reply = message(0x23, NLM_F_MULTI, 1, cmd::NEW_DEST, 1, &attrs);
    let msgs = split_messages(&reply).expect("split");
    let got = parse_dest(msgs[0].payload, AddressFamily::V4).expect("decode");
    assert_eq!(got.dest, d);
    assert_eq!(got.active_conns, 5);
    assert_eq!(got.stats.conns, 9);
    assert_eq!(got.tun_type, 1);
}

#[test]
fn error_and_truncation() {
    let mut m = message(NLMSG_ERROR, 0, 3, 0, 0, &[]);
    m.truncate(NLMSG_HDRLEN);
    m.extend_from_slice(&(-17i32).to_ne_bytes());
    m[0] = m.len() as u8;
    let msgs = split_messages(&m).expect("split");
    assert_eq!(error_code(msgs[0].payload).ok(), Some(17));
    let long = split_messages(&[40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).map(drop);
    assert_eq!(
        long.map_err(|e| e.to_string()),
        Err("netlink message length 40 in a 16-byte buffer".into())
    );
    assert_eq!(
        error_code(&[0, 0]).map_err(|e| e.to_string()),
        Err("short NLMSG_ERROR".into())
    );
    assert_eq!(
        parse_service(&[0, 0, 0, 0])
            .map(drop)
            .map_err(|e| e.to_string()),
        Err("IPVS_CMD_ATTR_SERVICE missing".into())
    );
    assert!(parse_service(&[0, 0, 0, 0, 8, 0, 1, 0]).is_err());
}
