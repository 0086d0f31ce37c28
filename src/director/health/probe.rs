//! The checks themselves: TCP connect, HTTP(S) GET, command here; UDP and DNS (`udp`),
//! ICMP echo (`icmp`) and SMTP (`smtp`) in their own modules. Each is bounded by the check's
//! timeout as a whole (connect, TLS, request, response) and returns why it failed.

use super::http::{framing, head_len, Framing, Whole};
use super::tls::TlsConn;
use super::{HealthCheck, HttpProbe, Probe, Target};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub(super) use super::steps::connect;
pub use super::steps::{Bound, ProbeError, Reason, TlsNameError};

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
    /// The weight the last check reported (a `misc_dynamic` command's exit 2..=255).
    weight: Option<u32>,
}

impl Session {
    /// The weight the check just run reported, if it reported one.
    pub fn take_weight(&mut self) -> Option<u32> {
        self.weight.take()
    }
}

/// Runs one check; Ok when healthy, Err with the reason otherwise. An HTTP(S) check with
/// `reuse_connection` sends its request on the session's connection when it holds one and
/// leaves the connection there when the server keeps it open.
pub async fn check(
    target: &Target,
    check: &HealthCheck,
    session: &mut Session,
) -> Result<(), ProbeError> {
    let addr = SocketAddr::new(target.addr, check.port.unwrap_or(target.port));
    // The udp, dns, icmp and smtp checks bound each of their steps by the timeout themselves
    // (a udp check without `expect_reply` passes when its time runs out); the others are
    // bounded as a whole.
    let bound = Bound::new(check.timeout);
    match &check.probe {
        Probe::Tcp => within(check, connect(addr)).await.map(drop),
        Probe::Http(http) => within(check, http_check(addr, http, false, session)).await,
        Probe::Https(http) => within(check, http_check(addr, http, true, session)).await,
        Probe::Command { argv, dynamic } => within(check, command(argv, *dynamic, target, addr))
            .await
            .map(|weight| session.weight = weight),
        Probe::Udp(udp) => super::udp::udp(addr, udp, &bound).await,
        Probe::Dns(dns) => super::udp::dns(addr, dns, &bound).await,
        Probe::Icmp => super::icmp::icmp(target.addr, &bound).await,
        Probe::Smtp(smtp) => super::smtp::smtp(addr, smtp, &bound).await,
    }
}

/// `work` bounded by the check's timeout as a whole.
async fn within<T>(
    check: &HealthCheck,
    work: impl std::future::Future<Output = Result<T, ProbeError>>,
) -> Result<T, ProbeError> {
    match tokio::time::timeout(check.timeout, work).await {
        Ok(result) => result,
        // A kept connection was taken out of the session for the exchange, and is dropped
        // with it.
        Err(_) => Err(ProbeError::Timeout {
            ms: check.timeout.as_millis(),
        }),
    }
}

/// An HTTP(S) check: on the kept connection if there is one, else (or if that one is no longer
/// usable) on a new connection.
async fn http_check(
    addr: SocketAddr,
    http: &HttpProbe,
    tls: bool,
    session: &mut Session,
) -> Result<(), ProbeError> {
    let Session {
        conn: kept,
        request,
        ..
    } = session;
    let request: &str =
        request.get_or_insert_with(|| build_request(addr, http, if tls { 443 } else { 80 }));
    if let Some(mut conn) = kept.take() {
        // A kept connection the server closed while it was idle (its keep-alive timeout, a
        // graceful restart) — found out before sending, or by getting no answer at all — is
        // replaced by a new one, which then speaks for the server, as any HTTP client retries.
        // A slow, wrong or cut-off answer counts.
        if still_idle(&mut *conn) {
            if let Ok(answer) = exchange(&mut conn, addr, request, http).await {
                return settle(answer, move || conn, http, kept);
            }
        }
    }
    let stream = connect(addr).await?;
    if tls {
        let mut stream = tls_connect(stream, addr, http).await?;
        let answer = exchange(&mut stream, addr, request, http).await?;
        settle(answer, move || Box::new(stream), http, kept)
    } else {
        let mut stream = stream;
        let answer = exchange(&mut stream, addr, request, http).await?;
        settle(answer, move || Box::new(stream), http, kept)
    }
}

/// Judges the answer. The connection is kept for the next check only when this one passed and
/// the server keeps it open: a failing server is checked on a new connection each time.
fn settle(
    answer: Answer,
    conn: impl FnOnce() -> Box<dyn Conn>,
    http: &HttpProbe,
    kept: &mut Option<Box<dyn Conn>>,
) -> Result<(), ProbeError> {
    let verdict = answer.judge(http);
    if verdict.is_ok() && answer.keep {
        *kept = Some(conn());
    }
    verdict
}

/// Whether a kept connection can carry a request: nothing to read and not closed. One the
/// server closed, or wrote something unasked on (a 408 before closing), cannot. Finding out
/// costs no extra system call: this read would otherwise be the one that comes back empty
/// right after the request is sent.
fn still_idle(conn: &mut dyn Conn) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(conn)
        .poll_read(&mut cx, &mut buf)
        .is_pending()
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
pub fn judge(response: &[u8], http: &HttpProbe) -> Result<(), ProbeError> {
    let status = status_code(response).ok_or(ProbeError::NotHttp)?;
    if status != http.status {
        return Err(ProbeError::Status {
            got: status,
            want: http.status,
        });
    }
    if let Some(want) = &http.body {
        let body_at = head_len(response).unwrap_or(response.len());
        let body = String::from_utf8_lossy(&response[body_at..]);
        if !body.contains(want.as_str()) {
            return Err(ProbeError::Body(want.clone()));
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
    fn judge(&self, http: &HttpProbe) -> Result<(), ProbeError> {
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
) -> Result<Answer, ProbeError> {
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|source| ProbeError::Send { addr, source })?;
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
                    && !matches!(status_code(&buf), Some(100..=199))
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
        let room = (MAX_RESPONSE - buf.len()) as u64;
        match (&mut *stream).take(room).read_buf(&mut buf).await {
            Ok(0) if buf.is_empty() => return Err(ProbeError::NoAnswer(addr)),
            Ok(0) => return Ok(cut(buf)),
            Ok(_) => {}
            // A TLS peer that closes without close_notify: judge what arrived.
            Err(_) if !buf.is_empty() => return Ok(cut(buf)),
            Err(source) => return Err(ProbeError::Read { addr, source }),
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

/// The one TLS client configuration of every https check, built at the first. Without session
/// resumption: each new connection is a full handshake, as a new client's would be, and no
/// cache of sessions grows with the number of servers.
pub(super) fn tls_config() -> Result<Arc<rustls::ClientConfig>, ProbeError> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, rustls::Error>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
                .with_no_client_auth();
            config.resumption = rustls::client::Resumption::disabled();
            Ok(Arc::new(config))
        })
        .clone()
        .map_err(ProbeError::TlsSetup)
}

async fn tls_connect(
    stream: TcpStream,
    addr: SocketAddr,
    http: &HttpProbe,
) -> Result<TlsConn, ProbeError> {
    let name = match &http.host {
        Some(h) => tls_server_name(h)?,
        None => rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
    };
    TlsConn::connect(tls_config()?, name, stream)
        .await
        .map_err(|source| ProbeError::TlsHandshake { addr, source })
}

/// The TLS server name (SNI) of a check's `Host` value: the host without any `:port`, and
/// without the brackets of an IPv6 literal.
pub fn tls_server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, TlsNameError> {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None if host.matches(':').count() == 1 => host.split(':').next().unwrap_or(host),
        None => host,
    };
    rustls::pki_types::ServerName::try_from(name.to_string()).map_err(|source| TlsNameError {
        host: host.to_string(),
        source,
    })
}

/// A command check: healthy on exit 0; with `dynamic` (keepalived's misc_dynamic) also on
/// exit 2..=255, which reports the weight code − 2 (exit 0 reports none: the weight stays).
async fn command(
    argv: &[String],
    dynamic: bool,
    target: &Target,
    addr: SocketAddr,
) -> Result<Option<u32>, ProbeError> {
    let (program, args) = argv.split_first().ok_or(ProbeError::EmptyCommand)?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("RS_ADDR", addr.ip().to_string())
        .env("RS_PORT", addr.port().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    // SAFETY: the hook only makes system calls (getrlimit, setrlimit), which are safe between
    // fork and exec.
    unsafe {
        cmd.pre_exec(crate::kernel::rlimit::restore_fd_limit_in_child);
    }
    if let ServiceKey::Addr {
        addr: vip, port, ..
    } = &target.service
    {
        cmd.env("VIP", vip.to_string())
            .env("VPORT", port.to_string());
    }
    let status = cmd.status().await.map_err(|source| ProbeError::Spawn {
        program: program.clone(),
        source,
    })?;
    exit_weight(status, dynamic).ok_or_else(|| ProbeError::Exited {
        program: program.clone(),
        status,
    })
}

/// What a command's exit says: `Some(None)` healthy, `Some(Some(w))` healthy at weight `w`
/// (misc_dynamic), `None` failed (exit 1, any other code without misc_dynamic, a signal).
fn exit_weight(status: std::process::ExitStatus, dynamic: bool) -> Option<Option<u32>> {
    match status.code() {
        Some(0) => Some(None),
        Some(code @ 2..=255) if dynamic => Some(Some(code as u32 - 2)),
        _ => None,
    }
}

use crate::kernel::ipvs::ServiceKey;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn probe(status: u16, body: Option<&str>) -> HttpProbe {
        HttpProbe {
            path: "/".into(),
            status,
            body: body.map(str::to_string),
            host: None,
            reuse_connection: false,
        }
    }

    /// One exchange over an in-memory pipe: the server side writes `reply` once the request
    /// is in (pausing at each NUL), then stays open (`close` false) or closes. Returns
    /// (verdict, kept).
    async fn over_pipe(
        reply: &'static [u8],
        http: &HttpProbe,
        close: bool,
    ) -> (Result<(), String>, bool) {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let addr: SocketAddr = "198.51.100.2:80".parse().expect("addr");
        let serve = async move {
            let mut request = Vec::new();
            let mut chunk = [0u8; 512];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match server.read(&mut chunk).await {
                    Ok(n) if n > 0 => request.extend_from_slice(&chunk[..n]),
                    _ => return None,
                }
            }
            // A NUL marks a pause: what follows arrives in a later read.
            for part in reply.split(|b| *b == 0) {
                server.write_all(part).await.ok()?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (!close).then_some(server)
        };
        let request = build_request(addr, http, 80);
        let (answer, server) = tokio::join!(exchange(&mut client, addr, &request, http), serve);
        let answer = answer.expect("an answer");
        let mut kept = None;
        let verdict = settle(answer, move || Box::new(client), http, &mut kept);
        let verdict = verdict.map_err(|e| e.to_string());
        drop(server);
        (verdict, kept.is_some())
    }

    fn reusing(status: u16, body: Option<&str>) -> HttpProbe {
        HttpProbe {
            reuse_connection: true,
            ..probe(status, body)
        }
    }

    #[tokio::test]
    async fn a_connection_is_kept_only_after_a_pass_on_a_whole_answer_the_server_keeps() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
        type Verdict = (Result<(), String>, bool);
        let cases: [(&'static [u8], HttpProbe, bool, Verdict); 10] = [
            (ok, reusing(200, None), false, (Ok(()), true)),
            (ok, reusing(200, Some("ok")), false, (Ok(()), true)),
            (ok, probe(200, None), false, (Ok(()), false)),
            // A failing server gets a new connection at its next check.
            (
                b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n",
                reusing(200, None),
                false,
                (Err("HTTP status 503, expected 200".into()), false),
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                reusing(200, None),
                true,
                (Ok(()), false),
            ),
            // Bytes nobody asked for: the next answer could not be told from them.
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n",
                reusing(200, None),
                false,
                (Ok(()), false),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nheal\r\n3\r\nthy\r\n0\r\n\r\n",
                reusing(200, Some("healthy")),
                false,
                (Ok(()), true),
            ),
            // The status that counts is the final one, not an interim 1xx.
            (
                b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n\0HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                probe(200, None),
                false,
                (Ok(()), false),
            ),
            // No length, connection left open: judged on the status line, not kept, no wait.
            (
                b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nstreaming",
                reusing(200, None),
                false,
                (Ok(()), false),
            ),
            (
                b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
                reusing(200, Some("ok")),
                false,
                (Ok(()), true),
            ),
        ];
        for (reply, http, close, want) in cases {
            let got = tokio::time::timeout(Duration::from_secs(5), over_pipe(reply, &http, close))
                .await
                .unwrap_or_else(|_| panic!("no verdict: {:?}", String::from_utf8_lossy(reply)));
            assert_eq!(got, want, "{:?} {http:?}", String::from_utf8_lossy(reply));
        }
    }

    #[tokio::test]
    async fn a_kept_connection_with_something_to_read_or_closed_is_not_idle() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        assert!(still_idle(&mut client));
        server
            .write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
            .await
            .expect("write");
        assert!(!still_idle(&mut client));
        let (mut client, server) = tokio::io::duplex(1024);
        drop(server);
        assert!(!still_idle(&mut client));
    }

    /// keepalived's misc_dynamic: 0 healthy (weight unchanged), 1 failed, 2..=255 healthy at
    /// code − 2; without it only 0 is healthy; a signal is a failure either way.
    #[test]
    fn a_dynamic_exit_code_sets_the_weight() {
        use std::os::unix::process::ExitStatusExt;
        let exit = |code: i32| std::process::ExitStatus::from_raw(code << 8);
        let cases = [
            (0, true, Some(None)),
            (1, true, None),
            (2, true, Some(Some(0))),
            (10, true, Some(Some(8))),
            (255, true, Some(Some(253))),
            (0, false, Some(None)),
            (10, false, None),
        ];
        for (code, dynamic, want) in cases {
            assert_eq!(
                exit_weight(exit(code), dynamic),
                want,
                "exit {code} {dynamic}"
            );
        }
        let killed = std::process::ExitStatus::from_raw(9);
        assert_eq!(exit_weight(killed, true), None);
    }

    #[test]
    fn judges_status_and_body() {
        let judge =
            |response: &[u8], http: &HttpProbe| judge(response, http).map_err(|e| e.to_string());
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
        let name = |h: &str| {
            tls_server_name(h)
                .map(|n| n.to_str().into_owned())
                .map_err(|e| e.to_string())
        };
        assert_eq!(name("www.example.com:8443"), Ok("www.example.com".into()));
        assert_eq!(name("www.example.com"), Ok("www.example.com".into()));
        assert_eq!(name("[2001:db8::2]:8443"), Ok("2001:db8::2".into()));
        assert_eq!(name("2001:db8::2"), Ok("2001:db8::2".into()));
        assert_eq!(
            name("bad_name!"),
            Err(
                "check host \"bad_name!\" is not a TLS server name (invalid dns name); use a \
                 DNS name or an address"
                    .into()
            )
        );
    }
}
