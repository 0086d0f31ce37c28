//! Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6) for the VIPs, so
//! that routers and clients on the LAN learn the director's MAC at once instead of waiting
//! for their caches to expire.
//!
//! IPv4: an ARP request for the VIP from the VIP (RFC 5227 "ARP announcement") on an
//! AF_PACKET SOCK_DGRAM socket to the broadcast address; the kernel adds the Ethernet header,
//! and packets on packet sockets bypass the `arp` nft output hook, so nothing mangles them.
//! IPv6: an ICMPv6 neighbour advertisement with the Override flag and our link-layer address to
//! ff02::1, hop limit 255 (receivers drop ND with any other), checksum filled by the kernel.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IP: u16 = 0x0800;
const ARPHRD_ETHER: u16 = 1;
const ARPOP_REQUEST: u16 = 1;
const ICMPV6_NEIGHBOUR_ADVERTISEMENT: u8 = 136;
const NA_FLAG_OVERRIDE: u32 = 0x2000_0000;
const ND_OPT_TARGET_LINKADDR: u8 = 2;

/// The 28-byte ARP announcement: "who has VIP? tell VIP (at MAC)".
pub fn arp_announcement(mac: [u8; 6], vip: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&ARPHRD_ETHER.to_be_bytes());
    p[2..4].copy_from_slice(&ETH_P_IP.to_be_bytes());
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&ARPOP_REQUEST.to_be_bytes());
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&vip.octets());
    // target hardware address stays zero
    p[24..28].copy_from_slice(&vip.octets());
    p
}

/// The 32-byte unsolicited neighbour advertisement for `vip` (checksum left to the kernel).
pub fn neighbour_advertisement(mac: [u8; 6], vip: Ipv6Addr) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0] = ICMPV6_NEIGHBOUR_ADVERTISEMENT;
    p[4..8].copy_from_slice(&NA_FLAG_OVERRIDE.to_be_bytes());
    p[8..24].copy_from_slice(&vip.octets());
    p[24] = ND_OPT_TARGET_LINKADDR;
    p[25] = 1; // length in units of 8 bytes
    p[26..32].copy_from_slice(&mac);
    p
}

fn socket(domain: i32, kind: i32, protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned by the OwnedFd from here on.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(rc: isize) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn send_arp(fd: &OwnedFd, ifindex: u32, payload: &[u8]) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_ARP.to_be();
    to.sll_ifindex = ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: pointers and lengths describe live, correctly sized buffers.
    let rc = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            payload.as_ptr().cast(),
            payload.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    check(rc)
}

fn setsockopt_int(fd: &OwnedFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: value is a live i32 and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    check(rc as isize)
}

fn send_na(fd: &OwnedFd, ifindex: u32, payload: &[u8]) -> io::Result<()> {
    // SAFETY: sockaddr_in6 is plain data; zeroed is a valid value.
    let mut to: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    to.sin6_family = libc::AF_INET6 as u16;
    to.sin6_addr.s6_addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();
    to.sin6_scope_id = ifindex;
    // SAFETY: as in send_arp.
    let rc = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            payload.as_ptr().cast(),
            payload.len(),
            0,
            (&to as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as u32,
        )
    };
    check(rc)
}

/// Why announcing failed, naming the interface and the step.
#[derive(Debug, thiserror::Error)]
pub enum GarpError {
    #[error("{ifname} has no Ethernet address; cannot send gratuitous ARP on it")]
    NoEthernetAddress { ifname: String },
    /// `what` is the step: a socket, a socket option, or the VIP being announced.
    #[error("gratuitous ARP on {ifname}: {what}: {source}{}", hint(source))]
    Io {
        ifname: String,
        what: String,
        source: io::Error,
    },
}

/// What the usual errnos of sending mean here.
fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => " (needs CAP_NET_RAW)",
        Some(libc::ENETDOWN) => " (the interface is down)",
        _ => "",
    }
}

/// [`send_announcements`] with its error as a `String`, as the director's passes keep it.
pub async fn announce(
    ifname: &str,
    ifindex: u32,
    mac: &[u8],
    vips: &[IpAddr],
    count: u32,
    interval: Duration,
) -> Result<u32, String> {
    send_announcements(ifname, ifindex, mac, vips, count, interval)
        .await
        .map_err(|e| e.to_string())
}

/// Announces each VIP `count` times, `interval` apart, on the interface; returns how many
/// packets were sent.
pub async fn send_announcements(
    ifname: &str,
    ifindex: u32,
    mac: &[u8],
    vips: &[IpAddr],
    count: u32,
    interval: Duration,
) -> Result<u32, GarpError> {
    let mac: [u8; 6] = mac.try_into().map_err(|_| GarpError::NoEthernetAddress {
        ifname: ifname.to_string(),
    })?;
    let ctx = |what: &str, source: io::Error| GarpError::Io {
        ifname: ifname.to_string(),
        what: what.to_string(),
        source,
    };
    let has_v4 = vips.iter().any(IpAddr::is_ipv4);
    let has_v6 = vips.iter().any(IpAddr::is_ipv6);
    let arp = if has_v4 {
        Some(
            socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM,
                i32::from(ETH_P_ARP.to_be()),
            )
            .map_err(|e| ctx("packet socket", e))?,
        )
    } else {
        None
    };
    let icmp6 = if has_v6 {
        let fd = socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6)
            .map_err(|e| ctx("ICMPv6 socket", e))?;
        setsockopt_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, 255)
            .map_err(|e| ctx("hop limit", e))?;
        setsockopt_int(
            &fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MULTICAST_IF,
            ifindex as i32,
        )
        .map_err(|e| ctx("multicast interface", e))?;
        Some(fd)
    } else {
        None
    };
    let mut sent = 0;
    for round in 0..count {
        if round > 0 {
            tokio::time::sleep(interval).await;
        }
        for vip in vips {
            match (vip, &arp, &icmp6) {
                (IpAddr::V4(v4), Some(fd), _) => send_arp(fd, ifindex, &arp_announcement(mac, *v4))
                    .map_err(|e| ctx(&v4.to_string(), e))?,
                (IpAddr::V6(v6), _, Some(fd)) => {
                    send_na(fd, ifindex, &neighbour_advertisement(mac, *v6))
                        .map_err(|e| ctx(&v6.to_string(), e))?
                }
                _ => continue,
            }
            sent += 1;
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_interface_the_step_and_the_fix() {
        let io = |errno| GarpError::Io {
            ifname: "eth0".into(),
            what: "192.0.2.100".into(),
            source: io::Error::from_raw_os_error(errno),
        };
        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        assert_eq!(
            io(libc::EPERM).to_string(),
            format!("gratuitous ARP on eth0: 192.0.2.100: {eperm} (needs CAP_NET_RAW)")
        );
        let eio = io::Error::from_raw_os_error(libc::EIO);
        assert_eq!(
            io(libc::EIO).to_string(),
            format!("gratuitous ARP on eth0: 192.0.2.100: {eio}")
        );
        let no_mac = GarpError::NoEthernetAddress {
            ifname: "tun0".into(),
        };
        assert_eq!(
            no_mac.to_string(),
            "tun0 has no Ethernet address; cannot send gratuitous ARP on it"
        );
    }

    #[test]
    fn arp_announcement_layout() {
        let p = arp_announcement([2, 0, 0, 0, 0, 1], Ipv4Addr::new(192, 0, 2, 100));
        #[rustfmt::skip]
        let want = [
            0, 1, 8, 0, 6, 4, 0, 1,         // Ethernet, IPv4, hlen 6, plen 4, request
            2, 0, 0, 0, 0, 1, 192, 0, 2, 100, // sender MAC, sender IP = VIP
            0, 0, 0, 0, 0, 0, 192, 0, 2, 100, // target MAC zero, target IP = VIP
        ];
        assert_eq!(p, want);
    }

    #[test]
    fn neighbour_advertisement_layout() {
        let vip: Ipv6Addr = "2001:db8::100".parse().expect("addr");
        let p = neighbour_advertisement([2, 0, 0, 0, 0, 1], vip);
        assert_eq!(&p[..8], &[136, 0, 0, 0, 0x20, 0, 0, 0]);
        assert_eq!(&p[8..24], &vip.octets());
        assert_eq!(&p[24..], &[2, 1, 2, 0, 0, 0, 0, 1]);
    }
}
