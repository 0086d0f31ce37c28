//! Real-server drain: `rs-agent drain` / `undrain` flip a flag file in the state directory,
//! and the running agent serves it on a tiny read-only HTTP endpoint (only when a listen
//! address is configured). The director's HTTP check of that endpoint then quiesces the real
//! server, so it leaves the rotation without a single failed request: connections already
//! open finish, new ones go elsewhere.
//!
//! Routes: `GET /health` (and `HEAD`) → 200 "ok" or 503 "draining". Anything else: 404/405.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_REQUEST: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

pub fn flag_path(state_dir: &Path) -> PathBuf {
    state_dir.join(crate::state_dir::DRAIN_FLAG)
}

pub fn is_drained(state_dir: &Path) -> bool {
    flag_path(state_dir).exists()
}

/// Sets or clears the drain flag; says whether anything changed.
pub fn set_drained(state_dir: &Path, drained: bool) -> std::io::Result<bool> {
    let path = flag_path(state_dir);
    match (drained, path.exists()) {
        (true, false) => {
            crate::state_dir::create_dir(state_dir)?;
            std::fs::write(
                &path,
                "drained by `rs-agent drain`; `rs-agent undrain` clears it\n",
            )?;
            Ok(true)
        }
        (false, true) => std::fs::remove_file(&path).map(|_| true),
        _ => Ok(false),
    }
}

/// Whether `rs-agent run` manages this state directory, and where it serves /health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// No `rs-agent run` holds the state directory.
    NoAgent,
    /// `run` (pid, if known) serves /health at the address, if one is configured.
    Agent {
        pid: Option<u32>,
        listen: Option<String>,
    },
}

/// What `drain`/`undrain` did, as one true line: the flag, and who (if anyone) reports it.
pub fn describe(drain: bool, changed: bool, server: &Server) -> String {
    let prefix = if changed { "did" } else { "nothing to do" };
    let (state, code) = if drain {
        ("drain flag set", 503)
    } else {
        ("drain flag cleared", 200)
    };
    let served = match server {
        Server::Agent {
            pid,
            listen: Some(listen),
        } => {
            let who = crate::state_dir::describe_holder(*pid);
            return format!(
                "{prefix}: {state}: rs-agent run ({who}) answers {code} on http://{listen}/health"
            );
        }
        Server::Agent { pid, listen: None } => format!(
            "rs-agent run ({}) serves no /health (set health_listen / --health-listen), so the \
             director cannot see it",
            crate::state_dir::describe_holder(*pid)
        ),
        Server::NoAgent => "no rs-agent run manages this state directory, so no /health \
                            endpoint reports it yet"
            .to_string(),
    };
    format!("{prefix}: {state}, but {served}")
}

/// The response to one request line, given the drain state.
pub fn respond(request_line: &str, drained: bool) -> (u16, &'static str) {
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/health") if drained => (503, "draining\n"),
        ("GET" | "HEAD", "/health") => (200, "ok\n"),
        ("GET" | "HEAD", _) => (404, "not found: the only route is /health\n"),
        _ => (405, "method not allowed: read-only endpoint\n"),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    }
}

async fn serve_one(mut stream: TcpStream, state_dir: &Path) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next().unwrap_or("");
    let (status, body) = respond(line, is_drained(state_dir));
    let head_only = line.starts_with("HEAD ");
    let response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        reason(status),
        body.len(),
        if head_only { "" } else { body }
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Binds the endpoint (errors name the address) and returns the serving future.
pub async fn bind(listen: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(listen).await.map_err(|e| {
        format!("health endpoint {listen}: {e}; check health_listen / --health-listen")
    })
}

/// Connections served at once; one more is closed at once. A director checks once per
/// interval, so a handful is plenty; the bound keeps idle clients from taking every file
/// descriptor (the agent's own passes need some: the lock, nft, /proc/sys).
const MAX_CONNECTIONS: usize = 32;

/// Connections one source address may hold open at once; one more from it is closed at once.
/// A director's check holds one (two while a reused connection is replaced), so one
/// misbehaving client on the LAN — holding connections open, or re-opening them as fast as
/// they are closed — can take at most this many of [`MAX_CONNECTIONS`] and never starve the
/// directors' checks (which would take a healthy server out of rotation).
const MAX_PER_SOURCE: usize = 4;

/// The source a connection counts against: its IPv4 address, or its IPv6 /64 (one host is
/// given a whole /64 and can pick a new address in it for every connection).
fn source_of(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => {
            let net = u128::from(v6) & !((1u128 << 64) - 1);
            std::net::IpAddr::V6(net.into())
        }
        v4 => v4,
    }
}

/// The connections open per source address.
#[derive(Default)]
struct PerSource(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One open connection of a source; counted down on drop.
struct SourceSlot {
    sources: std::sync::Arc<PerSource>,
    ip: std::net::IpAddr,
}

impl PerSource {
    /// A slot for `ip`, unless it holds [`MAX_PER_SOURCE`] already.
    fn take(sources: &std::sync::Arc<PerSource>, ip: std::net::IpAddr) -> Option<SourceSlot> {
        let mut open = sources.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= MAX_PER_SOURCE {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: sources.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.sources.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Serves until the task is dropped; each connection bounded by a timeout, at most
/// [`MAX_CONNECTIONS`] at once and [`MAX_PER_SOURCE`] from one address.
pub async fn serve(listener: TcpListener, state_dir: PathBuf) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let sources = std::sync::Arc::new(PerSource::default());
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(source) = PerSource::take(&sources, source_of(peer.ip())) else {
            tracing::debug!(%peer, "health endpoint: {MAX_PER_SOURCE} connections open from it; closing");
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "health endpoint: {MAX_CONNECTIONS} connections open; closing");
            continue;
        };
        let dir = state_dir.clone();
        tokio::spawn(async move {
            let _slots = (slot, source);
            match tokio::time::timeout(REQUEST_TIMEOUT, serve_one(stream, &dir)).await {
                Ok(Err(e)) => tracing::debug!(%peer, "health endpoint: {e}"),
                Err(_) => tracing::debug!(%peer, "health endpoint: request timed out"),
                Ok(Ok(())) => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(respond("GET /health HTTP/1.1", false), (200, "ok\n"));
        assert_eq!(
            respond("GET /health?x=1 HTTP/1.1", true),
            (503, "draining\n")
        );
        assert_eq!(respond("HEAD /health HTTP/1.0", true).0, 503);
        assert_eq!(respond("GET / HTTP/1.1", false).0, 404);
        assert_eq!(respond("POST /health HTTP/1.1", false).0, 405);
        assert_eq!(respond("", false).0, 405);
    }

    #[test]
    fn drain_says_who_reports_the_flag() {
        let serving = Server::Agent {
            pid: Some(42),
            listen: Some("198.51.100.2:8081".into()),
        };
        assert_eq!(
            describe(true, true, &serving),
            "did: drain flag set: rs-agent run (pid 42) answers 503 on http://198.51.100.2:8081/health"
        );
        let silent = describe(true, true, &Server::NoAgent);
        assert!(
            silent.starts_with("did: drain flag set, but no rs-agent run")
                && !silent.contains("answers 503"),
            "{silent}"
        );
        let no_endpoint = Server::Agent {
            pid: None,
            listen: None,
        };
        let line = describe(false, false, &no_endpoint);
        assert!(
            line.starts_with("nothing to do: drain flag cleared, but rs-agent run (holder unknown) serves no /health"),
            "{line}"
        );
    }

    #[test]
    fn one_source_holds_at_most_its_share() {
        let sources = std::sync::Arc::new(PerSource::default());
        let (a, b): (std::net::IpAddr, std::net::IpAddr) = (
            "192.0.2.20".parse().expect("literal"),
            "192.0.2.30".parse().expect("literal"),
        );
        let held: Vec<SourceSlot> = (0..MAX_PER_SOURCE)
            .filter_map(|_| PerSource::take(&sources, a))
            .collect();
        assert_eq!(held.len(), MAX_PER_SOURCE);
        assert!(PerSource::take(&sources, a).is_none());
        assert!(PerSource::take(&sources, b).is_some());
        drop(held);
        assert!(PerSource::take(&sources, a).is_some());
        let one: std::net::IpAddr = "2001:db8::1".parse().expect("literal");
        let other: std::net::IpAddr = "2001:db8::ffff:2".parse().expect("literal");
        assert_eq!(source_of(one), source_of(other));
    }

    #[test]
    fn flag_round_trip() {
        let dir = std::env::temp_dir().join(format!("rsa-drain-unit-{}", std::process::id()));
        assert!(!is_drained(&dir));
        assert_eq!(set_drained(&dir, true).ok(), Some(true));
        assert_eq!(set_drained(&dir, true).ok(), Some(false));
        assert!(is_drained(&dir));
        assert_eq!(set_drained(&dir, false).ok(), Some(true));
        assert!(!is_drained(&dir));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
