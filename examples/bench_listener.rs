//! Benchmark helper (bench/health.sh): the 2,000 "real servers" of the checking-cost bench.
//! Listens on 0.0.0.0 at each given port, answers any HTTP request with `200 ok` (a bare TCP
//! connect just gets closed; a client asking for keep-alive gets its connection kept), and every
//! 500 ms writes the number of exchanges so far (connections accepted, plus requests after the
//! first on a kept one) to COUNT_FILE, so the bench can verify that each checker really ran
//! ~2,000 checks a second.
//! One tokio thread: cheap enough not to starve the checker under emulation (busybox httpd
//! would fork 2,000 times a second).
//!
//! `bench_listener COUNT_FILE PORT...`
//!
//! With `BENCH_TLS=CERT.pem:KEY.pem` in the environment every port speaks HTTPS instead.
//!
//! For the detection bench's phase-free measurement: with `BENCH_LOG=FILE` in the environment
//! every answered request is appended to FILE as `<CLOCK_MONOTONIC ns> <status>`, and SIGUSR1
//! switches the answers from `200 OK` to `503 Service Unavailable` (the web application broke,
//! the server still accepts), so the bench can line each failed check up with the moment the
//! director took the server out.

#[path = "common/clock.rs"]
mod clock;
use clock::monotonic_ns;

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

const RESPONSE: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
const FAILING: &[u8] =
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 5\r\nConnection: close\r\n\r\nfail\n";
const KEPT_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
const KEPT_FAILING: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nfail\n";

/// What every connection shares: the failing switch and the request log.
#[derive(Default)]
struct Shared {
    failing: Cell<bool>,
    log: RefCell<Option<File>>,
}

/// Answers the requests of one connection: one and close, or, when the client asks for a kept
/// connection (HTTP/1.1 `Connection: keep-alive`, as rs-agent's `reuse_connection` checks do),
/// each request on it, counting every request after the first in `extra` (so that with the
/// connection itself, counted when accepted, every check is counted once).
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    shared: Rc<Shared>,
    extra: Rc<Cell<u64>>,
) {
    let mut request = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    for served in 0u64.. {
        // The first request comes with the connection; a kept one may idle for an interval.
        let wait = Duration::from_secs(if served == 0 { 2 } else { 60 });
        let read = async {
            while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
            }
            true
        };
        if !matches!(tokio::time::timeout(wait, read).await, Ok(true)) {
            return;
        }
        if served > 0 {
            extra.set(extra.get() + 1);
        }
        let keep = String::from_utf8_lossy(&request)
            .to_ascii_lowercase()
            .contains("\r\nconnection: keep-alive\r\n");
        request.clear();
        let failing = shared.failing.get();
        if let Some(log) = shared.log.borrow_mut().as_mut() {
            let status = if failing { 503 } else { 200 };
            let _ = writeln!(log, "{} {status}", monotonic_ns());
        }
        let answer = match (keep, failing) {
            (true, false) => KEPT_RESPONSE,
            (true, true) => KEPT_FAILING,
            (false, false) => RESPONSE,
            (false, true) => FAILING,
        };
        if stream.write_all(answer).await.is_err() || !keep {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// Serves one accepted connection, after a TLS handshake when `tls` is set.
async fn connection(
    stream: TcpStream,
    shared: Rc<Shared>,
    accepted: Rc<Cell<u64>>,
    tls: Option<TlsAcceptor>,
) {
    match tls {
        None => serve(stream, shared, accepted).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(Duration::from_secs(2), acceptor.accept(stream));
            if let Ok(Ok(stream)) = handshake.await {
                serve(stream, shared, accepted).await;
            }
        }
    }
}

/// The TLS side of `BENCH_TLS=CERT.pem:KEY.pem`.
fn tls_acceptor(spec: &str) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = spec
        .split_once(':')
        .ok_or("BENCH_TLS must be CERT.pem:KEY.pem")?;
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("TLS: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop(
    listener: TcpListener,
    accepted: Rc<Cell<u64>>,
    shared: Rc<Shared>,
    tls: Option<TlsAcceptor>,
) {
    let mut errors = 0u64;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                accepted.set(accepted.get() + 1);
                tokio::task::spawn_local(connection(
                    stream,
                    shared.clone(),
                    accepted.clone(),
                    tls.clone(),
                ));
            }
            Err(e) => {
                // Counted, and reported now and then: a full fd table must not flood the log.
                errors += 1;
                if errors.is_power_of_two() {
                    eprintln!("bench_listener: accept ({errors} errors so far): {e}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn run(count_file: PathBuf, ports: Vec<u16>) -> Result<(), String> {
    // Thousands of connections can be open at once: the soft fd limit up to the hard one.
    rs_agent::kernel::rlimit::fit_fd_limit(u64::MAX);
    let accepted = Rc::new(Cell::new(0u64));
    let shared = Rc::new(Shared::default());
    let tls = match std::env::var("BENCH_TLS") {
        Ok(spec) => Some(tls_acceptor(&spec)?),
        Err(_) => None,
    };
    if let Some(path) = std::env::var_os("BENCH_LOG") {
        let file = File::create(&path).map_err(|e| format!("BENCH_LOG {path:?}: {e}"))?;
        *shared.log.borrow_mut() = Some(file);
    }
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .map_err(|e| format!("SIGUSR1 handler: {e}"))?;
    let switch = shared.clone();
    tokio::task::spawn_local(async move {
        while usr1.recv().await.is_some() {
            switch.failing.set(true);
        }
    });
    for port in ports {
        let listener = TcpListener::bind(("0.0.0.0", port))
            .await
            .map_err(|e| format!("listening on port {port}: {e}"))?;
        tokio::task::spawn_local(accept_loop(
            listener,
            accepted.clone(),
            shared.clone(),
            tls.clone(),
        ));
    }
    let tmp = count_file.with_extension("tmp");
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let written = std::fs::write(&tmp, format!("{}\n", accepted.get()))
            .and_then(|()| std::fs::rename(&tmp, &count_file));
        if let Err(e) = written {
            eprintln!("bench_listener: {}: {e}", count_file.display());
        }
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(count_file) = args.next().map(PathBuf::from) else {
        eprintln!("usage: bench_listener COUNT_FILE PORT...");
        return ExitCode::FAILURE;
    };
    let ports: Result<Vec<u16>, _> = args.map(|p| p.parse::<u16>()).collect();
    let ports = match ports {
        Ok(p) if !p.is_empty() => p,
        _ => {
            eprintln!("usage: bench_listener COUNT_FILE PORT...");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench_listener: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, run(count_file, ports)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_listener: {e}");
            ExitCode::FAILURE
        }
    }
}
