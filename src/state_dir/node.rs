//! One daemon of a kind per node, whatever its state directory: the daemon binds an abstract
//! unix socket named after its kind for its lifetime. Abstract sockets belong to the network
//! namespace — the node rs-agent manages — and vanish with the process however it ends, so a
//! killed daemon leaves no stale claim. A second daemon finds the name taken and asks the
//! socket who holds it (SO_PEERCRED). Two agents on one node with two state directories would
//! otherwise each take the other's marked VIPs for their own and share sysctls that one of
//! them restores under the other's VIPs.

use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};

/// Held for the daemon's lifetime.
#[derive(Debug)]
pub struct NodeClaim {
    _socket: UnixListener,
}

fn address(kind: &str) -> std::io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(format!("rs-agent/{kind}"))
}

/// Claims the node for a daemon of `kind`; `Err(pid)` when another process holds the claim.
pub fn claim(kind: &str) -> std::io::Result<Result<NodeClaim, Option<u32>>> {
    let addr = address(kind)?;
    match UnixListener::bind_addr(&addr) {
        Ok(socket) => Ok(Ok(NodeClaim { _socket: socket })),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Ok(Err(holder(&addr))),
        Err(e) => Err(e),
    }
}

/// The pid of the process holding `addr`, if it can be asked.
fn holder(addr: &SocketAddr) -> Option<u32> {
    let stream = UnixStream::connect_addr(addr).ok()?;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(cred.pid as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_naming_the_holder_and_freed_on_drop() {
        let kind = format!("unit-{}", std::process::id());
        let first = claim(&kind).expect("bind").expect("free");
        match claim(&kind).expect("bind") {
            Err(pid) => assert_eq!(pid, Some(std::process::id())),
            Ok(_) => panic!("claimed twice"),
        }
        drop(first);
        assert!(claim(&kind).expect("bind").is_ok());
    }
}
