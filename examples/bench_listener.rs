//! Benchmark helper (bench/health.sh): the 2,000 "real servers" of the checking-cost bench.
//! Listens on 0.0.0.0 at each given port, answers any HTTP request with `200 ok` (a bare TCP
//! connect just gets closed), and every 500 ms writes the number of connections accepted so far
//! to COUNT_FILE, so the bench can verify that each checker really ran ~2,000 checks a second.
//! One tokio thread: cheap enough not to starve the checker under emulation (busybox httpd
//! would fork 2,000 times a second).
//!
//! `bench_listener COUNT_FILE PORT...`

use std::cell::Cell;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RESPONSE: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";

async fn serve(mut stream: TcpStream) {
    let mut request = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let read = async {
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&chunk[..n]),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .is_err()
    {
        return;
    }
    if !request.is_empty() {
        let _ = stream.write_all(RESPONSE).await;
        let _ = stream.shutdown().await;
    }
}

async fn accept_loop(listener: TcpListener, accepted: Rc<Cell<u64>>) {
    let mut errors = 0u64;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                accepted.set(accepted.get() + 1);
                tokio::task::spawn_local(serve(stream));
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
    raise_fd_limit();
    let accepted = Rc::new(Cell::new(0u64));
    for port in ports {
        let listener = TcpListener::bind(("0.0.0.0", port))
            .await
            .map_err(|e| format!("listening on port {port}: {e}"))?;
        tokio::task::spawn_local(accept_loop(listener, accepted.clone()));
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

/// Thousands of connections can be open at once: lift the soft fd limit to the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
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
