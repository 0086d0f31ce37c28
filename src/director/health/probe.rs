//! The checks themselves: TCP connect, HTTP(S) GET, command. Each is bounded by the check's
//! timeout as a whole (connect, TLS, request, response) and returns why it failed.

use super::http::{framing, Framing, Whole};
use super::{HealthCheck, HttpProbe, Probe, Target};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Enough of a response for a status line and a body substring.
const MAX_RESPONSE: usize = 64 * 1024;

/// A connection kept between checks (`reuse_connection`): plain TCP or TLS.
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// What a check task keeps between its checks: with `reuse_connection`, the connection its
/// last HTTP(S) check left open (boxed, so an idle task stays small); and the HTTP request,
/// built once.
#[derive(Default)]
pub struct Session {
    conn: Option<Box<dyn Conn>>,
    request: Option<String>,
}

/// Runs one check; Ok when healthy, Err with the reason otherwise. An HTTP(S) check with
/// `reuse_connection` sends its request on the session's connection when it holds one and
/// leaves the connection there when the server keeps it open.
pub async fn run(
    target: &Target,
    check: &HealthCheck,
    session: &mut Session,
) -> Result<(), String> {
    let addr = SocketAddr::new(target.addr, check.port.unwrap_or(target.port));
    let work = async {
        match &check.probe {
            Probe::Tcp => connect(addr).await.map(drop),
            Probe::Http(http) => http_check(addr, http, false, session).await,
            Probe::Https(http) => http_check(addr, http, true, session).await,
            Probe::Command { argv } => command(argv, target, addr).await,
        }
    };
    match tokio::time::timeout(check.timeout, work).await {
        Ok(result) => result,
        // A kept connection was taken out of the session for the exchange, and is dropped
        // with it.
        Err(_) => Err(format!("no answer within {} ms", check.timeout.as_millis())),
    }
}

/// An HTTP(S) check: on the kept connection if there is one, else (or if that one gets no
/// answer) on a new connection.
async fn http_check(
    addr: SocketAddr,
    http: &HttpProbe,
    tls: bool,
    session: &mut Session,
) -> Result<(), String> {
    let Session {
        conn: kept,
        request,
    } = session;
    let request: &str =
        request.get_or_insert_with(|| build_request(addr, http, if tls { 443 } else { 80 }));
    if let Some(mut conn) = kept.take() {
        // No answer at all on a kept connection means the server closed it while it was idle
        // (its keep-alive timeout, a graceful restart): like any HTTP client, try again on a
        // new connection, which then speaks for the server. A slow or wrong answer counts.
        if let Ok(answer) = exchange(&mut conn, addr, request, http).await {
            if answer.keep {
                *kept = Some(conn);
            }
            return answer.judge(http);
        }
    }
    let stream = connect(addr).await?;
    if tls {
        let stream = tls_connect(stream, addr, http).await?;
        fresh(stream, addr, request, http, kept).await
    } else {
        fresh(stream, addr, request, http, kept).await
    }
}

/// The exchange on a new connection, which is kept when reuse is on and the server allows it.
async fn fresh<S: Conn + 'static>(
    mut stream: S,
    addr: SocketAddr,
    request: &str,
    http: &HttpProbe,
    kept: &mut Option<Box<dyn Conn>>,
) -> Result<(), String> {
    let answer = exchange(&mut stream, addr, request, http).await?;
    if answer.keep {
        *kept = Some(Box::new(stream));
    }
    answer.judge(http)
}

/// Connects with an abortive close armed: dropping the stream sends a RST instead of the
/// FIN handshake, so a check leaves no TIME_WAIT socket behind on either side (2,000 checks a
/// second would otherwise keep ~120,000 of them) and costs fewer packets. The response has
/// been read by then; like HAProxy's checks, nothing is lost by not lingering.
async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let fail = |e: std::io::Error| format!("connect {addr}: {e}");
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(fail)?;
    socket.set_zero_linger().map_err(fail)?;
    socket.connect(addr).await.map_err(fail)
}

/// The request line and headers. Without a configured `host`, the Host header is the address
/// checked, with its port unless it is the scheme's default (RFC 9110, 7.2).
fn build_request(addr: SocketAddr, http: &HttpProbe, default_port: u16) -> String {
    let host = http.host.clone().unwrap_or_else(|| {
        let ip = match addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        if addr.port() == default_port {
            ip
        } else {
            format!("{ip}:{}", addr.port())
        }
    });
    let connection = if http.reuse_connection {
        "keep-alive"
    } else {
        "close"
    };
    format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: rs-agent-health\r\nAccept: */*\r\nConnection: {connection}\r\n\r\n",
        http.path
    )
}

/// The status code of an HTTP/1.x status line.
pub fn status_code(response: &[u8]) -> Option<u16> {
    let line = response.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Judges a (possibly truncated) response against the probe.
pub fn judge(response: &[u8], http: &HttpProbe) -> Result<(), String> {
    let status = status_code(response).ok_or("not an HTTP response")?;
    if status != http.status {
        return Err(format!("HTTP status {status}, expected {}", http.status));
    }
    if let Some(want) = &http.body {
        let body_at = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(response.len(), |p| p + 4);
        let body = String::from_utf8_lossy(&response[body_at..]);
        if !body.contains(want.as_str()) {
            return Err(format!("body does not contain {want:?}"));
        }
    }
    Ok(())
}

/// One response as read.
struct Answer {
    buf: Vec<u8>,
    /// Where the response is in `buf`, when it was read whole.
    whole: Option<Whole>,
    /// The connection can carry the next check's request.
    keep: bool,
}

impl Answer {
    fn judge(&self, http: &HttpProbe) -> Result<(), String> {
        match &self.whole {
            Some(whole) => judge(&whole.response(&self.buf), http),
            None => judge(&self.buf, http),
        }
    }
}

/// Sends the request and reads the response: up to its end when that can be told (always with
/// `reuse_connection`), else up to its status line without a body check, else up to the
/// connection's end; never more than `MAX_RESPONSE`. Err only when nothing at all came back.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    addr: SocketAddr,
    request: &str,
    http: &HttpProbe,
) -> Result<Answer, String> {
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending request to {addr}: {e}"))?;
    let mut buf = Vec::with_capacity(4096);
    let cut = |buf: Vec<u8>| Answer {
        buf,
        whole: None,
        keep: false,
    };
    loop {
        match framing(&buf) {
            // Anything after the response was not asked for: do not read the next answer
            // from it.
            Framing::Whole(whole) => {
                return Ok(Answer {
                    keep: http.reuse_connection && whole.keep && whole.end == buf.len(),
                    whole: Some(whole),
                    buf,
                })
            }
            // The status line is all a check without a body test needs, unless the
            // connection is to be kept.
            framed
                if http.body.is_none()
                    && buf.contains(&b'\n')
                    && (!http.reuse_connection || framed == Framing::Unframed) =>
            {
                return Ok(cut(buf))
            }
            _ if buf.len() >= MAX_RESPONSE => return Ok(cut(buf)),
            _ => {}
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) if buf.is_empty() => {
                return Err(format!("{addr} closed the connection without answering"))
            }
            Ok(0) => return Ok(cut(buf)),
            Ok(_) => {}
            // A TLS peer that closes without close_notify: judge what arrived.
            Err(_) if !buf.is_empty() => return Ok(cut(buf)),
            Err(e) => return Err(format!("reading from {addr}: {e}")),
        }
    }
}

/// Accepts any certificate: the check asks "does the server answer", not "is it who it says".
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

async fn tls_connect(
    stream: TcpStream,
    addr: SocketAddr,
    http: &HttpProbe,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let name = match &http.host {
        Some(h) => tls_server_name(h)?,
        None => rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS handshake with {addr}: {e}"))
}

/// The TLS server name (SNI) of a check's `Host` value: the host without any `:port`, and
/// without the brackets of an IPv6 literal.
pub fn tls_server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, String> {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None if host.matches(':').count() == 1 => host.split(':').next().unwrap_or(host),
        None => host,
    };
    rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|e| {
        format!("check host {host:?} is not a TLS server name ({e}); use a DNS name or an address")
    })
}

async fn command(argv: &[String], target: &Target, addr: SocketAddr) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("RS_ADDR", addr.ip().to_string())
        .env("RS_PORT", addr.port().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    if let ServiceKey::Addr {
        addr: vip, port, ..
    } = &target.service
    {
        cmd.env("VIP", vip.to_string())
            .env("VPORT", port.to_string());
    }
    let status = cmd
        .status()
        .await
        .map_err(|e| format!("running {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} exited with {status}"))
    }
}

use crate::kernel::ipvs::ServiceKey;

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(status: u16, body: Option<&str>) -> HttpProbe {
        HttpProbe {
            path: "/".into(),
            status,
            body: body.map(str::to_string),
            host: None,
            reuse_connection: false,
        }
    }

    #[test]
    fn judges_status_and_body() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(judge(ok, &probe(200, None)), Ok(()));
        assert_eq!(judge(ok, &probe(200, Some("ell"))), Ok(()));
        assert_eq!(
            judge(ok, &probe(200, Some("bye"))),
            Err("body does not contain \"bye\"".into())
        );
        assert_eq!(
            judge(ok, &probe(204, None)),
            Err("HTTP status 200, expected 204".into())
        );
        assert_eq!(
            judge(b"SSH-2.0-OpenSSH\r\n", &probe(200, None)),
            Err("not an HTTP response".into())
        );
        assert_eq!(
            status_code(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
    }

    #[test]
    fn request_names_host_and_closes() {
        let addr: SocketAddr = "[2001:db8::2]:80".parse().expect("addr");
        let r = build_request(addr, &probe(200, None), 80);
        assert!(
            r.starts_with("GET / HTTP/1.1\r\nHost: [2001:db8::2]\r\n"),
            "{r}"
        );
        assert!(r.ends_with("Connection: close\r\n\r\n"));
        let other: SocketAddr = "198.51.100.2:8081".parse().expect("addr");
        assert!(
            build_request(other, &probe(200, None), 80).contains("\r\nHost: 198.51.100.2:8081\r\n")
        );
        let tls: SocketAddr = "198.51.100.2:443".parse().expect("addr");
        assert!(build_request(tls, &probe(200, None), 443).contains("\r\nHost: 198.51.100.2\r\n"));
    }

    #[test]
    fn tls_name_leaves_off_port_and_brackets() {
        let name = |h: &str| tls_server_name(h).map(|n| n.to_str().into_owned());
        assert_eq!(name("www.example.com:8443"), Ok("www.example.com".into()));
        assert_eq!(name("www.example.com"), Ok("www.example.com".into()));
        assert_eq!(name("[2001:db8::2]:8443"), Ok("2001:db8::2".into()));
        assert_eq!(name("2001:db8::2"), Ok("2001:db8::2".into()));
        assert!(name("bad_name!").is_err());
    }
}
