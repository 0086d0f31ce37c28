//! The `icmp` check: one echo request (ICMP type 8, or ICMPv6 type 128) to the real server's
//! address, healthy when the echo reply with the same identifier, sequence number and data
//! comes back from it.
//!
//! The socket is an unprivileged ICMP ("ping") socket when `net.ipv4.ping_group_range` covers
//! the agent's group (it governs IPv6 too): the kernel then picks the identifier and hands the
//! socket only its own replies. Otherwise it is a raw socket (CAP_NET_RAW, which the director's
//! unit grants for gratuitous ARP), which sees every echo reply the host receives: a filter
//! keeps other ICMP types out, and the identifier and sequence number, random for each
//! check, tell this check's reply from the others'.

use super::steps::{Bound, ProbeError};
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
/// The data of every request: recognisable in a capture.
const DATA: &[u8; 16] = b"rs-agent-health\0";

/// A random 16-bit number (std's per-instance random hasher keys; no crate needed).
pub fn random_u16() -> u16 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish() as u16
}

/// An echo request (`v6`: ICMPv6, whose checksum the kernel computes).
pub fn request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let kind = if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 };
    let mut out = vec![kind, 0, 0, 0];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(DATA);
    if !v6 {
        let sum = checksum(&out).to_be_bytes();
        out[2..4].copy_from_slice(&sum);
    }
    out
}

/// The Internet checksum (RFC 1071).
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// True when `packet` is the echo reply to request (`id`, `seq`). `with_ip_header`: a raw
/// IPv4 socket reads the IP header too (its length is in the first byte).
pub fn is_reply(packet: &[u8], v6: bool, with_ip_header: bool, id: u16, seq: u16) -> bool {
    let icmp = if with_ip_header {
        let ihl = packet.first().map_or(0, |b| usize::from(b & 0x0f) * 4);
        match packet.get(ihl..) {
            Some(rest) if ihl >= 20 => rest,
            _ => return false,
        }
    } else {
        packet
    };
    let want = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
    let mut head = [0u8; 8];
    head[0] = want;
    head[4..6].copy_from_slice(&id.to_be_bytes());
    head[6..8].copy_from_slice(&seq.to_be_bytes());
    icmp.len() == 8 + DATA.len()
        && icmp[0] == head[0]
        && icmp[1] == 0
        && icmp[4..8] == head[4..8]
        && &icmp[8..] == DATA
}

/// Which kind of socket carries the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ping,
    Raw,
}

/// An ICMP socket of `kind` for `v6`, non-blocking.
fn socket(v6: bool, kind: Kind) -> std::io::Result<OwnedFd> {
    let (domain, proto) = if v6 {
        (libc::AF_INET6, libc::IPPROTO_ICMPV6)
    } else {
        (libc::AF_INET, libc::IPPROTO_ICMP)
    };
    let ty = match kind {
        Kind::Ping => libc::SOCK_DGRAM,
        Kind::Raw => libc::SOCK_RAW,
    } | libc::SOCK_NONBLOCK
        | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) with constant arguments; the descriptor is owned at once.
    let fd = unsafe { libc::socket(domain, ty, proto) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if kind == Kind::Raw {
        only_echo_replies(&fd, v6)?;
    }
    Ok(fd)
}

/// Keeps every ICMP type but the echo reply off a raw socket (ICMP_FILTER, ICMP6_FILTER: a
/// set bit blocks its type).
fn only_echo_replies(fd: &OwnedFd, v6: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    /// `ICMP_FILTER` (linux/icmp.h) and `ICMP6_FILTER` (linux/icmpv6.h) are both 1.
    const FILTER: libc::c_int = 1;
    let rc = if v6 {
        let mut blocked = [u32::MAX; 8];
        blocked[usize::from(ECHO_REPLY_V6 >> 5)] &= !(1 << (ECHO_REPLY_V6 & 31));
        // SAFETY: setsockopt with a pointer to a live array of the size passed.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_ICMPV6,
                FILTER,
                blocked.as_ptr().cast(),
                std::mem::size_of_val(&blocked) as libc::socklen_t,
            )
        }
    } else {
        let blocked: u32 = !(1 << ECHO_REPLY_V4);
        // SAFETY: setsockopt with a pointer to a live u32 and its size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_RAW,
                FILTER,
                (&blocked as *const u32).cast(),
                std::mem::size_of::<u32>() as libc::socklen_t,
            )
        }
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A ping socket when allowed, else a raw one; as a tokio datagram socket (both take and give
/// `sockaddr_in`/`sockaddr_in6` addresses, as UDP sockets do).
fn open(v6: bool) -> Result<(tokio::net::UdpSocket, Kind), ProbeError> {
    let opened = match socket(v6, Kind::Ping) {
        Ok(fd) => Ok((fd, Kind::Ping)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
            socket(v6, Kind::Raw).map(|fd| (fd, Kind::Raw))
        }
        Err(e) => Err(e),
    };
    let (fd, kind) = opened.map_err(|source| ProbeError::IcmpSocket { source })?;
    let socket = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(fd))
        .map_err(|source| ProbeError::IcmpSocket { source })?;
    Ok((socket, kind))
}

/// An `icmp` check of `addr`.
pub async fn icmp(addr: IpAddr, bound: &Bound) -> Result<(), ProbeError> {
    let v6 = addr.is_ipv6();
    let (socket, kind) = open(v6)?;
    let (id, seq) = (random_u16(), random_u16());
    let to = SocketAddr::new(addr, 0);
    let fail = |source| ProbeError::Echo { addr, source };
    socket
        .send_to(&request(v6, id, seq), to)
        .await
        .map_err(fail)?;
    // A ping socket's identifier is its local "port", whatever the request said.
    let id = match kind {
        Kind::Ping => socket.local_addr().map_err(fail)?.port(),
        Kind::Raw => id,
    };
    let wait = async {
        let mut buf = [0u8; 1500];
        loop {
            let (n, from) = socket.recv_from(&mut buf).await.map_err(fail)?;
            let packet = buf.get(..n).unwrap_or_default();
            if from.ip() == addr && is_reply(packet, v6, kind == Kind::Raw && !v6, id, seq) {
                return Ok(());
            }
        }
    };
    bound.run("echo reply", addr, wait).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_byte_exact() {
        // RFC 1071's example.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        let v4 = request(false, 0x1234, 1);
        let mut want = vec![8, 0, 0x08, 0xde, 0x12, 0x34, 0, 1];
        want.extend_from_slice(b"rs-agent-health\0");
        assert_eq!(v4, want);
        assert_eq!(checksum(&v4), 0, "a packet with its checksum sums to zero");
        let v6 = request(true, 0x1234, 1);
        assert_eq!(&v6[..8], &[128, 0, 0, 0, 0x12, 0x34, 0, 1]);
    }

    #[test]
    fn only_the_matching_echo_reply_counts() {
        let reply = |kind: u8, id: u16, seq: u16| {
            let mut r = request(false, id, seq);
            r[0] = kind;
            r
        };
        assert!(is_reply(&reply(0, 7, 9), false, false, 7, 9));
        assert!(
            !is_reply(&reply(0, 7, 8), false, false, 7, 9),
            "another sequence"
        );
        assert!(
            !is_reply(&reply(0, 6, 9), false, false, 7, 9),
            "another check's id"
        );
        assert!(
            !is_reply(&reply(8, 7, 9), false, false, 7, 9),
            "a request, not a reply"
        );
        assert!(
            !is_reply(&reply(0, 7, 9)[..10], false, false, 7, 9),
            "cut short"
        );
        assert!(is_reply(&reply(129, 7, 9), true, false, 7, 9));
        // Behind an IPv4 header (raw socket): 20 bytes, IHL 5.
        let mut ip = vec![0x45; 1];
        ip.resize(20, 0);
        ip.extend_from_slice(&reply(0, 7, 9));
        assert!(is_reply(&ip, false, true, 7, 9));
        ip[0] = 0x4f; // IHL 15: 60 bytes, past the reply's start
        assert!(!is_reply(&ip, false, true, 7, 9));
        assert!(!is_reply(&[], false, true, 7, 9));
        assert!(!is_reply(&[0x41], false, true, 7, 9), "IHL below 5");
    }
}
