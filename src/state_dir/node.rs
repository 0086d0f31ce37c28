//! One daemon of a kind per node, whatever its state directory: the daemon binds an abstract
//! unix socket named after its kind for its lifetime. Abstract sockets belong to the network
//! namespace — the node rs-agent manages — and vanish with the process however it ends, so a
//! killed daemon leaves no stale claim. A second daemon finds the name taken and asks the
//! socket who holds it (SO_PEERCRED, over a non-blocking connect: a listener that never
//! accepts must not hang the asker). Two agents on one node with two state directories would
//! otherwise each take the other's marked VIPs for their own and share sysctls that one of
//! them restores under the other's VIPs.
//!
//! Abstract names have no permissions: any user of the namespace could bind one first. A
//! claim held by a process of another, unprivileged user is therefore no rs-agent's and is
//! not obeyed (the caller warns and runs without the claim).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};

/// Held for the daemon's lifetime.
#[derive(Debug)]
pub struct NodeClaim {
    _socket: UnixListener,
}

/// Who holds a claim, as far as the socket tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub uid: u32,
}

impl Holder {
    /// A process that may be an rs-agent of this node: root's, or this user's.
    pub fn may_be_rs_agent(&self) -> bool {
        // SAFETY: geteuid has no preconditions.
        self.uid == 0 || self.uid == unsafe { libc::geteuid() }
    }
}

fn name(kind: &str) -> String {
    format!("rs-agent/{kind}")
}

/// Claims the node for a daemon of `kind`; `Err(holder)` when another process holds the claim
/// (`None`: it could not be asked).
pub fn claim(kind: &str) -> std::io::Result<Result<NodeClaim, Option<Holder>>> {
    let addr = SocketAddr::from_abstract_name(name(kind))?;
    match UnixListener::bind_addr(&addr) {
        Ok(socket) => Ok(Ok(NodeClaim { _socket: socket })),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Ok(Err(holder(&name(kind)))),
        Err(e) => Err(e),
    }
}

/// The process holding the abstract socket `name`, if a non-blocking connect reaches it.
fn holder(name: &str) -> Option<Holder> {
    // SAFETY: socket(2) with constant arguments; the fd is owned at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = name.as_bytes();
    if bytes.len() + 1 > addr.sun_path.len() {
        return None;
    }
    // sun_path[0] stays 0: an abstract name.
    for (dst, src) in addr.sun_path[1..].iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + bytes.len();
    // SAFETY: `addr` is a valid sockaddr_un of at least `len` bytes.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if rc != 0 {
        return None;
    }
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut cred_len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `cred_len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut cred_len,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(Holder {
        pid: cred.pid as u32,
        uid: cred.uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_naming_the_holder_and_freed_on_drop() {
        let kind = format!("unit-{}", std::process::id());
        let first = claim(&kind).expect("bind").expect("free");
        match claim(&kind).expect("bind") {
            Err(Some(holder)) => {
                assert_eq!(holder.pid, std::process::id());
                assert!(holder.may_be_rs_agent());
            }
            other => panic!("claimed twice: {other:?}"),
        }
        drop(first);
        assert!(claim(&kind).expect("bind").is_ok());
    }

    /// A holder that never accepts, with its backlog full: asking it must not block.
    #[test]
    fn asking_a_full_holder_does_not_hang() {
        let kind = format!("unit-full-{}", std::process::id());
        let _first = claim(&kind).expect("bind").expect("free");
        let started = std::time::Instant::now();
        for _ in 0..300 {
            let _ = claim(&kind);
        }
        // Bounded generously: a blocking connect would not return at all.
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }
}
