//! IPVS generic netlink messages: encoding and decoding, no I/O.
//!
//! Layouts from include/uapi/linux/ip_vs.h and the policies in net/netfilter/ipvs/ip_vs_ctl.c:
//! addresses are 16 bytes (`union nf_inet_addr`, IPv4 in the first 4), ports are big-endian,
//! service FLAGS is the 8-byte `struct ip_vs_flags { flags, mask }`, destination WEIGHT is u32,
//! an IPv4 persistence netmask is carried in network byte order.

use super::{
    AddressFamily, DestKey, Destination, Forward, IpvsOp, ObservedDestination, ObservedService,
    Protocol, Service, ServiceFlags, ServiceKey, Stats,
};
use netlink_packet_core::{DecodeError, NlaBuffer, NlasIterator, NLA_F_NESTED};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const GENL_NAME: &str = "IPVS";
pub const GENL_VERSION: u8 = 1;

// netlink message types and flags (linux/netlink.h)
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLMSG_HDRLEN: usize = 16;
pub const GENL_HDRLEN: usize = 4;

// generic netlink controller (linux/genetlink.h)
pub const GENL_ID_CTRL: u16 = 0x10;
pub const CTRL_CMD_GETFAMILY: u8 = 3;
pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;

/// IPVS_CMD_*
pub mod cmd {
    pub const NEW_SERVICE: u8 = 1;
    pub const SET_SERVICE: u8 = 2;
    pub const DEL_SERVICE: u8 = 3;
    pub const GET_SERVICE: u8 = 4;
    pub const NEW_DEST: u8 = 5;
    pub const SET_DEST: u8 = 6;
    pub const DEL_DEST: u8 = 7;
    pub const GET_DEST: u8 = 8;
    pub const GET_INFO: u8 = 15;
}

// IPVS_CMD_ATTR_*
const CMD_ATTR_SERVICE: u16 = 1;
const CMD_ATTR_DEST: u16 = 2;

// IPVS_SVC_ATTR_*
const SVC_AF: u16 = 1;
const SVC_PROTOCOL: u16 = 2;
const SVC_ADDR: u16 = 3;
const SVC_PORT: u16 = 4;
const SVC_FWMARK: u16 = 5;
const SVC_SCHED_NAME: u16 = 6;
const SVC_FLAGS: u16 = 7;
const SVC_TIMEOUT: u16 = 8;
const SVC_NETMASK: u16 = 9;
const SVC_STATS: u16 = 10;
const SVC_PE_NAME: u16 = 11;
const SVC_STATS64: u16 = 12;

// IPVS_DEST_ATTR_*
const DEST_ADDR: u16 = 1;
const DEST_PORT: u16 = 2;
const DEST_FWD_METHOD: u16 = 3;
const DEST_WEIGHT: u16 = 4;
const DEST_U_THRESH: u16 = 5;
const DEST_L_THRESH: u16 = 6;
const DEST_ACTIVE_CONNS: u16 = 7;
const DEST_INACT_CONNS: u16 = 8;
const DEST_PERSIST_CONNS: u16 = 9;
const DEST_STATS: u16 = 10;
const DEST_ADDR_FAMILY: u16 = 11;
const DEST_STATS64: u16 = 12;
const DEST_TUN_TYPE: u16 = 13;

// IPVS_INFO_ATTR_*
const INFO_VERSION: u16 = 1;
const INFO_CONN_TAB_SIZE: u16 = 2;

const AF_INET: u16 = libc::AF_INET as u16;
const AF_INET6: u16 = libc::AF_INET6 as u16;

fn af_code(af: AddressFamily) -> u16 {
    match af {
        AddressFamily::V4 => AF_INET,
        AddressFamily::V6 => AF_INET6,
    }
}

fn proto_code(p: Protocol) -> u16 {
    match p {
        Protocol::Tcp => libc::IPPROTO_TCP as u16,
        Protocol::Udp => libc::IPPROTO_UDP as u16,
        Protocol::Sctp => libc::IPPROTO_SCTP as u16,
    }
}

/// Appends one attribute (header, value, padding to 4 bytes).
fn put(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len() + (4 - len % 4) % 4, 0);
}

/// Appends a nested attribute whose payload `fill` writes.
fn nest(buf: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    fill(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    buf[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
}

fn addr16(ip: &IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

fn nul_string(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// A whole netlink message: header, genl header, attributes.
pub fn message(
    family: u16,
    flags: u16,
    seq: u32,
    command: u8,
    version: u8,
    attrs: &[u8],
) -> Vec<u8> {
    let len = NLMSG_HDRLEN + GENL_HDRLEN + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&family.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[command, version, 0, 0]);
    m.extend_from_slice(attrs);
    m
}

/// CTRL_CMD_GETFAMILY for "IPVS".
pub fn get_family(seq: u32) -> Vec<u8> {
    let mut attrs = Vec::new();
    put(&mut attrs, CTRL_ATTR_FAMILY_NAME, &nul_string(GENL_NAME));
    message(
        GENL_ID_CTRL,
        NLM_F_REQUEST,
        seq,
        CTRL_CMD_GETFAMILY,
        1,
        &attrs,
    )
}

/// The service's identity attributes (IPVS_SVC_ATTR_AF and either FWMARK or PROTOCOL/ADDR/PORT).
fn put_service_key(buf: &mut Vec<u8>, key: &ServiceKey) {
    put(buf, SVC_AF, &af_code(key.family()).to_ne_bytes());
    match key {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => {
            put(buf, SVC_PROTOCOL, &proto_code(*protocol).to_ne_bytes());
            put(buf, SVC_ADDR, &addr16(addr));
            put(buf, SVC_PORT, &port.to_be_bytes());
        }
        ServiceKey::Fwmark { mark, .. } => put(buf, SVC_FWMARK, &mark.to_ne_bytes()),
    }
}

fn netmask_bytes(af: AddressFamily, netmask: u32) -> [u8; 4] {
    match af {
        AddressFamily::V4 => netmask.to_be_bytes(),
        AddressFamily::V6 => netmask.to_ne_bytes(),
    }
}

/// The full service (what NEW/SET need: key, scheduler, flags+mask, timeout, netmask).
pub fn service_attrs(s: &Service) -> Vec<u8> {
    let mut attrs = Vec::new();
    nest(&mut attrs, CMD_ATTR_SERVICE, |b| {
        put_service_key(b, &s.key);
        put(b, SVC_SCHED_NAME, &nul_string(&s.scheduler));
        if let Some(pe) = &s.pe_name {
            put(b, SVC_PE_NAME, &nul_string(pe));
        }
        let flags = s.flags.0 & !ServiceFlags::HASHED.0;
        let mut fm = flags.to_ne_bytes().to_vec();
        fm.extend_from_slice(&u32::MAX.to_ne_bytes());
        put(b, SVC_FLAGS, &fm);
        put(b, SVC_TIMEOUT, &s.timeout.to_ne_bytes());
        put(b, SVC_NETMASK, &netmask_bytes(s.key.family(), s.netmask));
    });
    attrs
}

pub fn service_key_attrs(key: &ServiceKey) -> Vec<u8> {
    let mut attrs = Vec::new();
    nest(&mut attrs, CMD_ATTR_SERVICE, |b| put_service_key(b, key));
    attrs
}

fn put_dest_key(b: &mut Vec<u8>, addr: &IpAddr, port: u16) {
    put(b, DEST_ADDR, &addr16(addr));
    put(b, DEST_PORT, &port.to_be_bytes());
    put(
        b,
        DEST_ADDR_FAMILY,
        &af_code(AddressFamily::of(addr)).to_ne_bytes(),
    );
}

fn dest_attrs(key: &ServiceKey, d: &Destination) -> Vec<u8> {
    let mut attrs = service_key_attrs(key);
    nest(&mut attrs, CMD_ATTR_DEST, |b| {
        put_dest_key(b, &d.addr, d.port);
        put(b, DEST_FWD_METHOD, &d.forward.code().to_ne_bytes());
        put(b, DEST_WEIGHT, &d.weight.to_ne_bytes());
        put(b, DEST_U_THRESH, &d.upper_threshold.to_ne_bytes());
        put(b, DEST_L_THRESH, &d.lower_threshold.to_ne_bytes());
    });
    attrs
}

fn dest_key_attrs(key: &ServiceKey, d: &DestKey) -> Vec<u8> {
    let mut attrs = service_key_attrs(key);
    nest(&mut attrs, CMD_ATTR_DEST, |b| {
        put_dest_key(b, &d.addr, d.port)
    });
    attrs
}

/// The command and attributes that carry out one op.
pub fn op_payload(op: &IpvsOp) -> (u8, Vec<u8>) {
    match op {
        IpvsOp::AddService(s) => (cmd::NEW_SERVICE, service_attrs(s)),
        IpvsOp::EditService(s) => (cmd::SET_SERVICE, service_attrs(s)),
        IpvsOp::DelService(k) => (cmd::DEL_SERVICE, service_key_attrs(k)),
        IpvsOp::AddDest(k, d) => (cmd::NEW_DEST, dest_attrs(k, d)),
        IpvsOp::EditDest(k, d) => (cmd::SET_DEST, dest_attrs(k, d)),
        IpvsOp::DelDest(k, d) => (cmd::DEL_DEST, dest_key_attrs(k, d)),
    }
}

// ---------------------------------------------------------------- decoding

/// A reply the decoder cannot read: what is missing or out of range.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("netlink message length {len} in a {buf}-byte buffer")]
    MessageLength { len: usize, buf: usize },
    #[error("short buffer at offset {0}")]
    ShortBuffer(usize),
    /// A field shorter than its type: "short u16", "short IPv4 address", ...
    #[error("short {0}")]
    Short(&'static str),
    #[error(transparent)]
    Attribute(#[from] DecodeError),
    #[error("attribute longer than its message")]
    AttributeLength,
    #[error("{0} missing")]
    Missing(&'static str),
    #[error("unknown address family {0}")]
    AddressFamily(u16),
    #[error("unknown protocol {0}")]
    Protocol(u16),
    #[error("unknown forwarding method {0}")]
    Forward(u32),
}

/// One netlink message in a receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct RawMessage<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Splits a receive buffer into messages.
pub fn split_messages(mut buf: &[u8]) -> Result<Vec<RawMessage<'_>>, WireError> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32_at(buf, 0)? as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(WireError::MessageLength {
                len,
                buf: buf.len(),
            });
        }
        out.push(RawMessage {
            kind: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32_at(buf, 8)?,
            payload: &buf[NLMSG_HDRLEN..len],
        });
        let aligned = (len + 3) & !3;
        buf = &buf[aligned.min(buf.len())..];
    }
    Ok(out)
}

/// The errno of an NLMSG_ERROR payload (0 = ack).
pub fn error_code(payload: &[u8]) -> Result<i32, WireError> {
    let b: [u8; 4] = payload
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .ok_or(WireError::Short("NLMSG_ERROR"))?;
    Ok(-i32::from_ne_bytes(b))
}

fn u32_at(buf: &[u8], at: usize) -> Result<u32, WireError> {
    buf.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_ne_bytes)
        .ok_or(WireError::ShortBuffer(at))
}

/// The attributes of a generic netlink payload (after the 4-byte genl header), by kind.
fn attrs(bytes: &[u8]) -> Result<Vec<(u16, &[u8])>, WireError> {
    let mut out = Vec::new();
    for nla in NlasIterator::new(bytes) {
        let nla: NlaBuffer<&[u8]> = nla?;
        let (kind, len) = (nla.kind(), nla.length() as usize);
        let inner = nla.into_inner();
        out.push((kind, inner.get(4..len).ok_or(WireError::AttributeLength)?));
    }
    Ok(out)
}

fn genl_attrs(payload: &[u8]) -> Result<Vec<(u16, &[u8])>, WireError> {
    attrs(
        payload
            .get(GENL_HDRLEN..)
            .ok_or(WireError::Short("genl header"))?,
    )
}

fn find<'a>(list: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    list.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
}

fn need<'a>(
    list: &[(u16, &'a [u8])],
    kind: u16,
    what: &'static str,
) -> Result<&'a [u8], WireError> {
    find(list, kind).ok_or(WireError::Missing(what))
}

fn get_u16(v: &[u8]) -> Result<u16, WireError> {
    v.get(..2)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]))
        .ok_or(WireError::Short("u16"))
}

fn get_u32(v: &[u8]) -> Result<u32, WireError> {
    u32_at(v, 0)
}

fn get_u64(v: &[u8]) -> Result<u64, WireError> {
    v.get(..8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_ne_bytes)
        .ok_or(WireError::Short("u64"))
}

fn get_port(v: &[u8]) -> Result<u16, WireError> {
    v.get(..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(WireError::Short("port"))
}

fn get_string(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

fn get_af(v: &[u8]) -> Result<AddressFamily, WireError> {
    match get_u16(v)? {
        AF_INET => Ok(AddressFamily::V4),
        AF_INET6 => Ok(AddressFamily::V6),
        other => Err(WireError::AddressFamily(other)),
    }
}

fn get_addr(v: &[u8], af: AddressFamily) -> Result<IpAddr, WireError> {
    match af {
        AddressFamily::V4 => {
            let b: [u8; 4] = v
                .get(..4)
                .and_then(|s| s.try_into().ok())
                .ok_or(WireError::Short("IPv4 address"))?;
            Ok(IpAddr::V4(Ipv4Addr::from(b)))
        }
        AddressFamily::V6 => {
            let b: [u8; 16] = v
                .get(..16)
                .and_then(|s| s.try_into().ok())
                .ok_or(WireError::Short("IPv6 address"))?;
            Ok(IpAddr::V6(Ipv6Addr::from(b)))
        }
    }
}

/// The family id in a CTRL_CMD_NEWFAMILY reply.
pub fn parse_family_id(payload: &[u8]) -> Result<u16, WireError> {
    get_u16(need(
        &genl_attrs(payload)?,
        CTRL_ATTR_FAMILY_ID,
        "CTRL_ATTR_FAMILY_ID",
    )?)
}

/// IPVS version (e.g. 0x010201 = 1.2.1) and connection table size from a GET_INFO reply.
pub fn parse_info(payload: &[u8]) -> Result<(u32, u32), WireError> {
    let list = genl_attrs(payload)?;
    Ok((
        get_u32(need(&list, INFO_VERSION, "IPVS_INFO_ATTR_VERSION")?)?,
        get_u32(need(
            &list,
            INFO_CONN_TAB_SIZE,
            "IPVS_INFO_ATTR_CONN_TAB_SIZE",
        )?)?,
    ))
}

fn parse_stats(v: &[u8], wide: bool) -> Result<Stats, WireError> {
    let list = attrs(v)?;
    let get = |kind: u16| -> Result<u64, WireError> {
        match find(&list, kind) {
            None => Ok(0),
            Some(v) if wide || kind == 4 || kind == 5 => get_u64(v),
            Some(v) => get_u32(v).map(u64::from),
        }
    };
    Ok(Stats {
        conns: get(1)?,
        inpkts: get(2)?,
        outpkts: get(3)?,
        inbytes: get(4)?,
        outbytes: get(5)?,
        cps: get(6)?,
        inpps: get(7)?,
        outpps: get(8)?,
        inbps: get(9)?,
        outbps: get(10)?,
    })
}

fn stats_of(list: &[(u16, &[u8])], narrow: u16, wide: u16) -> Result<Stats, WireError> {
    match (find(list, wide), find(list, narrow)) {
        (Some(v), _) => parse_stats(v, true),
        (None, Some(v)) => parse_stats(v, false),
        (None, None) => Ok(Stats::default()),
    }
}

/// A service from a GET_SERVICE dump message.
pub fn parse_service(payload: &[u8]) -> Result<ObservedService, WireError> {
    let top = genl_attrs(payload)?;
    let list = attrs(need(&top, CMD_ATTR_SERVICE, "IPVS_CMD_ATTR_SERVICE")?)?;
    let af = get_af(need(&list, SVC_AF, "IPVS_SVC_ATTR_AF")?)?;
    let key = match find(&list, SVC_FWMARK).map(get_u32).transpose()? {
        Some(mark) if mark != 0 => ServiceKey::Fwmark { af, mark },
        _ => {
            let protocol = match get_u16(need(&list, SVC_PROTOCOL, "IPVS_SVC_ATTR_PROTOCOL")?)? {
                6 => Protocol::Tcp,
                17 => Protocol::Udp,
                132 => Protocol::Sctp,
                other => return Err(WireError::Protocol(other)),
            };
            ServiceKey::Addr {
                protocol,
                addr: get_addr(need(&list, SVC_ADDR, "IPVS_SVC_ATTR_ADDR")?, af)?,
                port: get_port(need(&list, SVC_PORT, "IPVS_SVC_ATTR_PORT")?)?,
            }
        }
    };
    let netmask_raw = need(&list, SVC_NETMASK, "IPVS_SVC_ATTR_NETMASK")?;
    let netmask = match af {
        AddressFamily::V4 => u32::from_be_bytes(
            netmask_raw
                .get(..4)
                .and_then(|s| s.try_into().ok())
                .ok_or(WireError::Short("netmask"))?,
        ),
        AddressFamily::V6 => get_u32(netmask_raw)?,
    };
    let service = Service {
        key,
        scheduler: get_string(need(&list, SVC_SCHED_NAME, "IPVS_SVC_ATTR_SCHED_NAME")?),
        flags: ServiceFlags(get_u32(need(&list, SVC_FLAGS, "IPVS_SVC_ATTR_FLAGS")?)?),
        timeout: get_u32(need(&list, SVC_TIMEOUT, "IPVS_SVC_ATTR_TIMEOUT")?)?,
        netmask,
        pe_name: find(&list, SVC_PE_NAME)
            .map(get_string)
            .filter(|s| !s.is_empty()),
    };
    Ok(ObservedService {
        service,
        stats: stats_of(&list, SVC_STATS, SVC_STATS64)?,
        destinations: Vec::new(),
    })
}

/// A destination from a GET_DEST dump message; `af` is the service's family, used when
/// the kernel is too old to send IPVS_DEST_ATTR_ADDR_FAMILY.
pub fn parse_dest(payload: &[u8], af: AddressFamily) -> Result<ObservedDestination, WireError> {
    let top = genl_attrs(payload)?;
    let list = attrs(need(&top, CMD_ATTR_DEST, "IPVS_CMD_ATTR_DEST")?)?;
    let af = match find(&list, DEST_ADDR_FAMILY) {
        Some(v) => get_af(v)?,
        None => af,
    };
    let fwd = get_u32(need(&list, DEST_FWD_METHOD, "IPVS_DEST_ATTR_FWD_METHOD")?)?;
    let u32_or0 = |k| {
        find(&list, k)
            .map(get_u32)
            .transpose()
            .map(|v| v.unwrap_or(0))
    };
    Ok(ObservedDestination {
        dest: Destination {
            addr: get_addr(need(&list, DEST_ADDR, "IPVS_DEST_ATTR_ADDR")?, af)?,
            port: get_port(need(&list, DEST_PORT, "IPVS_DEST_ATTR_PORT")?)?,
            forward: Forward::from_code(fwd).ok_or(WireError::Forward(fwd))?,
            weight: get_u32(need(&list, DEST_WEIGHT, "IPVS_DEST_ATTR_WEIGHT")?)?,
            upper_threshold: u32_or0(DEST_U_THRESH)?,
            lower_threshold: u32_or0(DEST_L_THRESH)?,
        },
        // A u8; absent before Linux 5.3 (IPIP then, the only tunnel there was).
        tun_type: find(&list, DEST_TUN_TYPE)
            .and_then(|v| v.first().copied())
            .unwrap_or(0),
        active_conns: u32_or0(DEST_ACTIVE_CONNS)?,
        inactive_conns: u32_or0(DEST_INACT_CONNS)?,
        persist_conns: u32_or0(DEST_PERSIST_CONNS)?,
        stats: stats_of(&list, DEST_STATS, DEST_STATS64)?,
    })
}

#[cfg(test)]
mod tests;
