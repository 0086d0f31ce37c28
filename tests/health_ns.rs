//! Namespace tier for the director's HTTP checks that keep their connection
//! (`reuse_connection = true`), on this machine's kernel. Checking needs no IPVS: the checking
//! half of `director run` (`director::run::check_only`: the same check tasks, probes and
//! rise/fall state machine) runs against a real server in a namespace the test creates, and the
//! server counts what it sees — connections accepted and requests answered — as a client-side
//! witness of what the checker did on the wire.

mod common;

use common::{in_netns, require_privileges, Netns};
use rs_agent::config_file::ConfigFile;
use rs_agent::director::{self, run::CheckTally};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

const RS: &str = "198.51.100.2";
const PORT: u16 = 8080;

/// A keep-alive web server's view of the checks, and one switch.
#[derive(Default)]
struct Server {
    accepts: AtomicU64,
    requests: AtomicU64,
    /// Close each connection 30 ms after answering on it, without `Connection: close`: what a
    /// server whose keep-alive timeout is shorter than the check interval does.
    close_idle: AtomicBool,
    /// Which of `ANSWERS` to send.
    answer: AtomicUsize,
}

/// Healthy with a chunked body (in two chunks, so a body check only passes on the reassembled
/// body); failing (503, with a length, on a connection kept open); healthy with a length.
const ANSWERS: [&[u8]; 3] = [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nheal\r\n3\r\nthy\r\n0\r\n\r\n",
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nbusy\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nhealthy\n",
];

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, server: Arc<Server>) {
    let mut request = Vec::new();
    let mut chunk = [0u8; 512];
    // Bounded: at most 1,000 requests per connection, each at most 8 KiB.
    for _ in 0..1000 {
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 && request.len() < 8192 => request.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        }
        request.clear();
        server.requests.fetch_add(1, Ordering::SeqCst);
        let answer = ANSWERS[server.answer.load(Ordering::SeqCst) % ANSWERS.len()];
        if stream.write_all(answer).await.is_err() || stream.flush().await.is_err() {
            return;
        }
        if server.close_idle.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(30)).await;
            return;
        }
    }
}

/// Answers one connection, over TLS when `tls` is set.
async fn connection(stream: TcpStream, server: Arc<Server>, tls: Option<TlsAcceptor>) {
    match tls {
        None => answer(stream, server).await,
        Some(acceptor) => {
            if let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(2), acceptor.accept(stream)).await
            {
                answer(stream, server).await;
            }
        }
    }
}

/// Accepts until aborted; aborting it drops the listener and every connection (the server
/// process stopped).
async fn serve(listener: TcpListener, server: Arc<Server>, tls: Option<TlsAcceptor>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, _)) => {
                server.accepts.fetch_add(1, Ordering::SeqCst);
                connections.spawn(connection(stream, server.clone(), tls.clone()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Counters at one moment: (checks ok, checks failed, verdict flips, accepts, requests).
type Seen = (u64, u64, u64, u64, u64);

fn seen(tally: &CheckTally, server: &Server) -> Seen {
    (
        tally.ok.get(),
        tally.failed.get(),
        tally.flips.get(),
        server.accepts.load(Ordering::SeqCst),
        server.requests.load(Ordering::SeqCst),
    )
}

/// A TLS acceptor with a throwaway self-signed certificate made by `openssl` in `dir`.
fn tls_acceptor(dir: &std::path::Path) -> TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (cert_s, key_s) = (cert.to_string_lossy(), key.to_string_lossy());
    common::run_ok(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=rs-agent-test",
        "-keyout",
        &key_s,
        "-out",
        &cert_s,
    ]);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .expect("cert.pem")
        .collect::<Result<_, _>>()
        .expect("certificate");
    let key = PrivateKeyDer::from_pem_file(&key).expect("key.pem");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server certificate");
    TlsAcceptor::from(Arc::new(config))
}

/// One kept connection carries check after check; a server that closes it while idle costs
/// no failed check (the check retries on a new connection, as any HTTP client does); a 503 on
/// the kept connection fails the check (no retry) and the next check uses a new connection; a
/// recovered server's checks share one connection again; a stopped server is still taken out
/// after `fall` checks. `kind` is http or https.
fn kept_connection_scenario(test: &str, kind: &'static str) {
    require_privileges!(test);
    if kind == "https" && !common::on_path("openssl") {
        // Like the tools `privileged` looks for: a failure under CI, a loud skip elsewhere.
        common::skip(test, "needs openssl (apt install openssl)");
        return;
    }
    let ns = Netns::new("keep", kind);
    ns.exec(&["ip", "addr", "add", &format!("{RS}/32"), "dev", "lo"]);
    let dir = std::env::temp_dir().join(&ns.name);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let tls = (kind == "https").then(|| tls_acceptor(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    let config = format!(
        "[director]\ninterface = \"lo\"\n\n[[director.service]]\nvip = \"192.0.2.100\"\nport = 8080\n\
         reals = [\"{RS}:{PORT}\"]\n\n[director.service.check]\ntype = \"{kind}\"\npath = \"/health\"\n\
         body = \"healthy\"\nreuse_connection = true\ninterval_ms = 200\ntimeout_ms = 200\n\
         rise = 1\nfall = 2\n"
    );
    let file = ConfigFile::parse(None, config).expect("config");
    let desired = director::config::director(&file, &Default::default()).expect("valid config");
    let [a, b, c, d, e, f] = in_netns(&ns, move |rt| {
        rt.block_on(async move {
            let listener = TcpListener::bind((RS, PORT)).await.expect("listening");
            let server = Arc::new(Server::default());
            let task = tokio::spawn(serve(listener, server.clone(), tls));
            let tally = CheckTally::default();
            let script = async {
                let until_flips = |n: u64| {
                    let tally = &tally;
                    async move {
                        let since = Instant::now();
                        while tally.flips.get() < n && since.elapsed() < Duration::from_secs(5) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                };
                let pause = || tokio::time::sleep(Duration::from_secs(2));
                pause().await;
                let a = seen(&tally, &server);
                server.close_idle.store(true, Ordering::SeqCst);
                pause().await;
                let b = seen(&tally, &server);
                server.close_idle.store(false, Ordering::SeqCst);
                server.answer.store(1, Ordering::SeqCst);
                until_flips(1).await;
                let c = seen(&tally, &server);
                server.answer.store(2, Ordering::SeqCst);
                until_flips(2).await;
                let d = seen(&tally, &server);
                pause().await;
                let e = seen(&tally, &server);
                task.abort();
                until_flips(3).await;
                [a, b, c, d, e, seen(&tally, &server)]
            };
            director::run::check_only(&desired, 16, &tally, script).await
        })
    });
    // Each is (ok, failed, flips, accepts, requests).
    let (ok, failed, flips, accepts, requests) = a;
    assert!(ok >= 5, "{kind}: checks in 2 s at 200 ms: {a:?}");
    assert_eq!((failed, flips), (0, 0), "{kind}: {a:?}");
    assert_eq!(
        accepts, 1,
        "{kind}: every check on the one kept connection: {a:?}"
    );
    assert!(requests - ok <= 1, "{kind}: one request per check: {a:?}");
    assert_eq!(
        (b.1, b.2),
        (0, 0),
        "{kind}: a kept connection the server closed while idle failed a check: {b:?}"
    );
    let checks = b.0 - a.0;
    assert!(
        checks >= 5 && b.3 - a.3 + 1 >= checks,
        "{kind}: each check after the first on a new connection: {a:?} then {b:?}"
    );
    // A 503 on the kept connection is a failed check, not retried, and the next check goes
    // on a new connection: the server is taken out after fall = 2.
    assert_eq!(
        c.2, 1,
        "{kind}: a server answering 503 was not taken out: {c:?}"
    );
    let failures = c.1 - b.1;
    assert!(
        failures >= 2,
        "{kind}: out after fall = 2 failed checks: {b:?} then {c:?}"
    );
    assert!(
        c.3 - b.3 + 1 >= failures,
        "{kind}: each failed check drops its connection: {b:?} then {c:?}"
    );
    // Healthy again (rise = 1), and its connection is kept again.
    assert_eq!(
        d.2, 2,
        "{kind}: the recovered server did not come back: {d:?}"
    );
    assert!(
        e.0 - d.0 >= 5 && e.3 - d.3 <= 1 && e.1 == d.1,
        "{kind}: after recovery the checks share one connection again: {d:?} then {e:?}"
    );
    // Stopped: the kept connection is closed, the new one refused.
    assert_eq!(
        f.2, 3,
        "{kind}: the stopped server was not taken out: {f:?}"
    );
    assert!(
        f.1 - e.1 >= 2,
        "{kind}: out after fall = 2 failed checks: {e:?} then {f:?}"
    );
}

#[test]
fn a_kept_connection_carries_the_checks_and_a_closed_one_is_replaced() {
    kept_connection_scenario(
        "a_kept_connection_carries_the_checks_and_a_closed_one_is_replaced",
        "http",
    );
}

/// The same over TLS: one handshake for all the checks a kept connection carries.
#[test]
fn a_kept_tls_connection_carries_the_checks_and_a_closed_one_is_replaced() {
    kept_connection_scenario(
        "a_kept_tls_connection_carries_the_checks_and_a_closed_one_is_replaced",
        "https",
    );
}
