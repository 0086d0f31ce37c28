//! What the steps of every check share: why a step failed ([`ProbeError`], and the fixed set
//! of [`Reason`]s the metrics label it with), the deadline each step of a udp, dns, icmp or
//! smtp check runs within ([`Bound`]), and the TCP connect. The probes (`probe`, `udp`, `icmp`,
//! `smtp`) use these; this module uses none of them.

use std::net::{IpAddr, SocketAddr};
use tokio::net::{TcpSocket, TcpStream};

/// Why a check failed: the step and the server's address or the program, as the logs say it.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no answer within {ms} ms")]
    Timeout { ms: u128 },
    #[error("connect {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("sending request to {addr}: {source}")]
    Send {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0} closed the connection without answering")]
    NoAnswer(SocketAddr),
    #[error("reading from {addr}: {source}")]
    Read {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("not an HTTP response")]
    NotHttp,
    #[error("HTTP status {got}, expected {want}")]
    Status { got: u16, want: u16 },
    #[error("body does not contain {0:?}")]
    Body(String),
    #[error("TLS setup: {0}")]
    TlsSetup(rustls::Error),
    #[error(transparent)]
    TlsName(#[from] TlsNameError),
    #[error("TLS handshake with {addr}: {source}")]
    TlsHandshake {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("empty command")]
    EmptyCommand,
    #[error("running {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} exited with {status}")]
    Exited {
        program: String,
        status: std::process::ExitStatus,
    },
    /// One step of a udp, dns, icmp or smtp check ran out of the check's timeout.
    #[error("no {what} from {peer} within {ms} ms")]
    NoReply {
        what: &'static str,
        peer: String,
        ms: u128,
    },
    #[error("{}", udp_failure(addr, source))]
    Udp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("UDP reply from {addr} does not contain {want}")]
    UdpReply { addr: SocketAddr, want: String },
    #[error("DNS reply from {addr}: {problem}")]
    Dns {
        addr: SocketAddr,
        problem: super::dns::DnsProblem,
    },
    #[error(
        "opening an ICMP socket: {source} (needs net.ipv4.ping_group_range to cover the \
         agent's group, or CAP_NET_RAW)"
    )]
    IcmpSocket { source: std::io::Error },
    #[error("ICMP echo to {addr}: {source}")]
    Echo {
        addr: IpAddr,
        source: std::io::Error,
    },
    #[error("SMTP {step} from {addr} is {line:?}, expected {want}")]
    Smtp {
        addr: SocketAddr,
        step: &'static str,
        want: u16,
        line: String,
    },
    #[error("{addr} sent no SMTP reply as its {step}")]
    NotSmtp {
        addr: SocketAddr,
        step: &'static str,
    },
}

/// A UDP exchange that failed; ECONNREFUSED is an ICMP port unreachable from the server.
fn udp_failure(addr: &SocketAddr, source: &std::io::Error) -> String {
    if source.kind() == std::io::ErrorKind::ConnectionRefused {
        format!("UDP to {addr}: ICMP port unreachable (nothing listens)")
    } else {
        format!("UDP to {addr}: {source}")
    }
}

/// The check's timeout as a deadline that each step of a udp, dns, icmp or smtp check runs
/// within, so that a step running out names itself and the server.
pub struct Bound {
    deadline: tokio::time::Instant,
    ms: u128,
}

impl Bound {
    pub fn new(timeout: std::time::Duration) -> Bound {
        Bound {
            deadline: tokio::time::Instant::now() + timeout,
            ms: timeout.as_millis(),
        }
    }

    /// Runs one step; when the deadline comes first, "no `what` from `peer`".
    pub async fn run<T>(
        &self,
        what: &'static str,
        peer: impl std::fmt::Display,
        step: impl std::future::Future<Output = Result<T, ProbeError>>,
    ) -> Result<T, ProbeError> {
        match self.until(step).await {
            Some(result) => result,
            None => Err(self.elapsed(what, peer)),
        }
    }

    /// Runs `step` until the deadline: None when the deadline came first.
    pub async fn until<F: std::future::Future>(&self, step: F) -> Option<F::Output> {
        tokio::time::timeout_at(self.deadline, step).await.ok()
    }

    /// The error of a step that ran out of time.
    pub fn elapsed(&self, what: &'static str, peer: impl std::fmt::Display) -> ProbeError {
        ProbeError::NoReply {
            what,
            peer: peer.to_string(),
            ms: self.ms,
        }
    }
}

/// Why a check failed, as a small fixed set: the `reason` label of the metrics and the word
/// `director status` leads with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The server refused the connection (nothing listens).
    Refused,
    /// The connection could not be made otherwise (no route, host unreachable, reset).
    Connect,
    /// No answer within the check's timeout.
    Timeout,
    /// Sending, reading, or an answer cut off.
    Io,
    /// An HTTP status or SMTP reply code other than the expected one, or not that protocol.
    Status,
    /// The body, or a UDP reply, lacks the expected text.
    Body,
    /// TLS setup, server name or handshake.
    Tls,
    /// A command check exited non-zero (or by a signal).
    ExitCode,
    /// A command check could not be started.
    Command,
    /// A DNS reply with an error code (NXDOMAIN, SERVFAIL, ...), no answer record or not the
    /// expected address; or no reply to the query at all (another id, malformed).
    Dns,
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Reason::Refused,
        Reason::Connect,
        Reason::Timeout,
        Reason::Io,
        Reason::Status,
        Reason::Body,
        Reason::Tls,
        Reason::ExitCode,
        Reason::Command,
        Reason::Dns,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::Refused => "refused",
            Reason::Connect => "connect",
            Reason::Timeout => "timeout",
            Reason::Io => "io",
            Reason::Status => "status",
            Reason::Body => "body",
            Reason::Tls => "tls",
            Reason::ExitCode => "exit_code",
            Reason::Command => "command",
            Reason::Dns => "dns",
        }
    }
}

impl ProbeError {
    pub fn reason(&self) -> Reason {
        match self {
            ProbeError::Timeout { .. } | ProbeError::NoReply { .. } => Reason::Timeout,
            ProbeError::Connect { source, .. } | ProbeError::Udp { source, .. }
                if source.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                Reason::Refused
            }
            ProbeError::Connect { .. }
            | ProbeError::Udp { .. }
            | ProbeError::IcmpSocket { .. }
            | ProbeError::Echo { .. } => Reason::Connect,
            ProbeError::Send { .. } | ProbeError::NoAnswer(_) | ProbeError::Read { .. } => {
                Reason::Io
            }
            ProbeError::NotHttp
            | ProbeError::Status { .. }
            | ProbeError::Smtp { .. }
            | ProbeError::NotSmtp { .. } => Reason::Status,
            ProbeError::Body(_) | ProbeError::UdpReply { .. } => Reason::Body,
            ProbeError::Dns { .. } => Reason::Dns,
            ProbeError::TlsSetup(_) | ProbeError::TlsName(_) | ProbeError::TlsHandshake { .. } => {
                Reason::Tls
            }
            ProbeError::Exited { .. } => Reason::ExitCode,
            ProbeError::EmptyCommand | ProbeError::Spawn { .. } => Reason::Command,
        }
    }

    /// The HTTP status a server answered with, when that is why the check failed (503 is how
    /// a real server's `rs-agent drain` says it is leaving).
    pub fn status(&self) -> Option<u16> {
        match self {
            ProbeError::Status { got, .. } => Some(*got),
            _ => None,
        }
    }
}

/// A check's `host` that cannot be sent as a TLS server name (SNI).
#[derive(Debug, thiserror::Error)]
#[error("check host {host:?} is not a TLS server name ({source}); use a DNS name or an address")]
pub struct TlsNameError {
    pub(super) host: String,
    pub(super) source: rustls::pki_types::InvalidDnsNameError,
}

/// Connects with an abortive close armed: dropping the stream sends a RST instead of the
/// FIN handshake, so a check leaves no TIME_WAIT socket behind on either side (2,000 checks a
/// second would otherwise keep ~120,000 of them) and costs fewer packets. The response has
/// been read by then; like HAProxy's checks, nothing is lost by not lingering.
pub(super) async fn connect(addr: SocketAddr) -> Result<TcpStream, ProbeError> {
    let fail = |source| ProbeError::Connect { addr, source };
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(fail)?;
    socket.set_zero_linger().map_err(fail)?;
    socket.connect(addr).await.map_err(fail)
}
