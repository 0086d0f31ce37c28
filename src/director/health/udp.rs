//! The checks over one UDP exchange: `udp` (a datagram, a reply or no ICMP error) and `dns`
//! (a query, its reply judged by `dns`). The socket is connected, so only the real server's
//! datagrams are read and an ICMP port unreachable it provokes comes back as ECONNREFUSED.

use super::steps::{Bound, ProbeError};
use super::{dns, DnsProbe, UdpProbe};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::net::UdpSocket;

/// The part of a reply that is read and judged: more than any reply a check asks for.
pub const MAX_REPLY: usize = 4096;

/// A socket connected to `addr`, from an ephemeral port.
async fn connected(addr: SocketAddr) -> Result<UdpSocket, ProbeError> {
    let fail = |source| ProbeError::Connect { addr, source };
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(fail)?;
    socket.connect(addr).await.map_err(fail)?;
    Ok(socket)
}

/// Sends `datagram` and reads one reply into `buf`; `Ok(None)` when the bound ran out first.
async fn exchange<'b>(
    addr: SocketAddr,
    datagram: &[u8],
    bound: &Bound,
    buf: &'b mut [u8],
) -> Result<Option<&'b [u8]>, ProbeError> {
    let socket = connected(addr).await?;
    let fail = |source| ProbeError::Udp { addr, source };
    socket.send(datagram).await.map_err(fail)?;
    match bound.until(socket.recv(buf)).await {
        Some(Ok(n)) => Ok(buf.get(..n)),
        Some(Err(source)) => Err(fail(source)),
        None => Ok(None),
    }
}

/// A `udp` check.
pub async fn udp(addr: SocketAddr, probe: &UdpProbe, bound: &Bound) -> Result<(), ProbeError> {
    let mut buf = vec![0u8; MAX_REPLY];
    match exchange(addr, &probe.payload, bound, &mut buf).await? {
        Some(reply) => judge(reply, probe).map_err(|want| ProbeError::UdpReply { addr, want }),
        // No ICMP error within the timeout: what "no reply expected" asks for.
        None if !probe.expect_reply => Ok(()),
        None => Err(bound.elapsed("UDP reply", addr)),
    }
}

/// Judges a reply (a datagram arrived): Err with what it lacks, as the logs show it.
pub fn judge(reply: &[u8], probe: &UdpProbe) -> Result<(), String> {
    match &probe.expect {
        Some(want) if !contains(reply, want) => Err(shown(want)),
        _ => Ok(()),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Expected bytes as text when they are printable, else as hex.
fn shown(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.contains(|c: char| c.is_control()) => format!("{s:?}"),
        _ => format!(
            "0x{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}

/// A `dns` check: one query, one reply.
pub async fn dns(addr: SocketAddr, probe: &DnsProbe, bound: &Bound) -> Result<(), ProbeError> {
    let id = super::icmp::random_u16();
    let query = dns::query(id, probe);
    let mut buf = vec![0u8; MAX_REPLY];
    match exchange(addr, &query, bound, &mut buf).await? {
        Some(reply) => {
            dns::judge(reply, id, probe).map_err(|problem| ProbeError::Dns { addr, problem })
        }
        None => Err(bound.elapsed("DNS reply", addr)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(expect: Option<&[u8]>) -> UdpProbe {
        UdpProbe {
            payload: b"ping".to_vec(),
            expect: expect.map(<[u8]>::to_vec),
            expect_reply: true,
        }
    }

    #[test]
    fn judges_a_reply_by_its_bytes() {
        assert_eq!(judge(b"", &probe(None)), Ok(()));
        assert_eq!(judge(b"+PONG\r\n", &probe(Some(b"PONG"))), Ok(()));
        assert_eq!(judge(b"+PONG\r\n", &probe(Some(b""))), Ok(()));
        assert_eq!(
            judge(b"-ERR\r\n", &probe(Some(b"PONG"))),
            Err("\"PONG\"".into())
        );
        assert_eq!(
            judge(b"\x00\x01", &probe(Some(b"\x00\x02"))),
            Err("0x0002".into())
        );
        assert_eq!(judge(b"PON", &probe(Some(b"PONG"))), Err("\"PONG\"".into()));
    }
}
