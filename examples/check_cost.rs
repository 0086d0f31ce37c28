//! Benchmark helper (bench/check-native.sh): what `director run`'s health checking costs, on
//! hardware where the kernel has no IPVS (so `director run` itself cannot start). Runs the
//! library's checking half (`director::run::check_only`: the same check tasks, jitter, bound on
//! checks in flight, timeouts and rise/fall state machine) for the config's services, on the
//! same single-threaded tokio runtime as `rs-agent`, and prints one line: CPU (user + system,
//! from getrusage) and checks over the measured window, and RSS.
//!
//! `check_cost CONFIG.toml WARMUP_SECS MEASURE_SECS [blocking|blocking-rst|blocking-reuse]`
//!
//! With `blocking`, the same exchanges (TCP connect, or the same HTTP request read to the end)
//! at the same rate are done the simplest possible way instead — blocking sockets, one at a
//! time, no runtime — the simplest implementation, as a yardstick on this machine (over veth
//! the real servers' half of every TCP exchange runs in the checker's context too).
//! `blocking-rst` closes each exchange with a reset once the status line is read, as
//! rs-agent's checks do; `blocking-reuse` does the same on one socket kept for all exchanges
//! (`connect(AF_UNSPEC)` resets and disconnects it, the next `connect` is a new connection):
//! what not creating and closing a socket per check would save.

use rs_agent::config_file::ConfigFile;
use rs_agent::director::health::http::{framing, Framing};
use rs_agent::director::health::{self, Probe};
use rs_agent::director::{self, run::CheckTally};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// User and system CPU seconds of this process so far.
fn cpu_seconds() -> (f64, f64) {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime), secs(usage.ru_stime))
}

/// A field of /proc/self/status in KiB (VmRSS, VmHWM).
fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// How the yardstick opens and closes its connections.
#[derive(Clone, Copy, PartialEq)]
enum Yardstick {
    /// A new socket per exchange, the response read to its end, a normal close (FIN).
    Fin,
    /// A new socket per exchange, closed with a reset after the status line.
    Rst,
    /// One socket for every exchange, reset and disconnected by `connect(AF_UNSPEC)`.
    Reuse,
}

/// `connect(2)` on a socket that already exists (blocking, bounded by its send timeout).
fn connect_raw(fd: i32, to: Option<SocketAddr>) -> bool {
    // SAFETY: the sockaddr structs are zeroed and filled within their own size; the kernel only
    // reads the length given.
    unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let len = match to {
            None => {
                storage.ss_family = libc::AF_UNSPEC as libc::sa_family_t;
                std::mem::size_of::<libc::sockaddr>()
            }
            Some(SocketAddr::V4(a)) => {
                let sin = &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in);
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
                std::mem::size_of::<libc::sockaddr_in>()
            }
            Some(SocketAddr::V6(a)) => {
                let sin6 = &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6);
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        libc::connect(
            fd,
            &storage as *const _ as *const libc::sockaddr,
            len as libc::socklen_t,
        ) == 0
    }
}

/// One exchange of the yardstick: what a tcp or http check does on the wire, blocking.
/// `spare` is the kept socket of `Yardstick::Reuse` (disconnected between exchanges).
fn exchange(
    to: SocketAddr,
    request: Option<&[u8]>,
    timeout: Duration,
    how: Yardstick,
    spare: &mut Option<TcpStream>,
) -> bool {
    let stream = match spare.take() {
        Some(s) if connect_raw(s.as_raw_fd(), Some(to)) => s,
        _ => match TcpStream::connect_timeout(&to, timeout) {
            Ok(s) => s,
            Err(_) => return false,
        },
    };
    let mut stream = stream;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout)); // also bounds a reused socket's connect
    if how != Yardstick::Fin {
        zero_linger(&stream);
    }
    let ok = match request {
        None => true,
        Some(request) if how == Yardstick::Fin => {
            let mut reply = Vec::with_capacity(512);
            stream.write_all(request).is_ok()
                && stream.read_to_end(&mut reply).is_ok()
                && reply.starts_with(b"HTTP/1.")
        }
        Some(request) => {
            let mut reply = [0u8; 4096];
            stream.write_all(request).is_ok()
                && matches!(stream.read(&mut reply), Ok(n) if reply[..n].starts_with(b"HTTP/1."))
        }
    };
    if how == Yardstick::Reuse && connect_raw(stream.as_raw_fd(), None) {
        *spare = Some(stream);
    }
    ok
}

/// Arms an abortive close: closing sends a reset, and leaves no TIME_WAIT socket.
fn zero_linger(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the option value is a linger struct of the size passed.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// An exchange of a `reuse_connection` check, blocking: the request on the kept connection
/// (a new one when there is none or it got no answer), the response read to its end.
fn kept_exchange(
    conn: &mut Option<TcpStream>,
    to: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> bool {
    for fresh in [false, true] {
        let mut stream = match conn.take() {
            Some(s) if !fresh => s,
            _ => match TcpStream::connect_timeout(&to, timeout) {
                Ok(s) => {
                    // Closed with a reset as rs-agent's are: no TIME_WAIT left at exit.
                    zero_linger(&s);
                    s
                }
                Err(_) => return false,
            },
        };
        let _ = stream.set_read_timeout(Some(timeout));
        if stream.write_all(request).is_err() {
            continue;
        }
        let mut reply = Vec::with_capacity(512);
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk) {
                Ok(n) if n > 0 => reply.extend_from_slice(&chunk[..n]),
                _ if reply.is_empty() => break,
                _ => return false,
            }
            if let Framing::Whole(whole) = framing(&reply) {
                if whole.keep {
                    *conn = Some(stream);
                }
                return reply.starts_with(b"HTTP/1.");
            }
        }
    }
    false
}

/// The yardstick: every target once per its check interval, one exchange at a time, paced evenly.
fn blocking(
    desired: &director::config::DirectorDesired,
    how: Yardstick,
    warmup: u64,
    measure: u64,
) -> (f64, f64, f64, u64, u64) {
    let mut plan: Vec<(SocketAddr, Option<Vec<u8>>, Duration, Duration)> = Vec::new();
    // Per target with `reuse_connection`: `Some(the kept connection, if any)`.
    let mut kept: Vec<Option<Option<TcpStream>>> = Vec::new();
    for (target, check) in health::targets(desired) {
        let to = SocketAddr::new(target.addr, check.port.unwrap_or(target.port));
        let (request, keep) = match &check.probe {
            Probe::Http(h) => (
                Some(
                    format!(
                        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: rs-agent-health\r\nAccept: */*\r\nConnection: {}\r\n\r\n",
                        h.path,
                        target.addr,
                        if h.reuse_connection { "keep-alive" } else { "close" },
                    )
                    .into_bytes(),
                ),
                h.reuse_connection,
            ),
            _ => (None, false),
        };
        plan.push((to, request, check.interval, check.timeout));
        kept.push(keep.then_some(None));
    }
    let Some(interval) = plan.first().map(|p| p.2) else {
        return (0.0, 0.0, 0.0, 0, 0);
    };
    let period = interval / plan.len() as u32;
    let start = Instant::now();
    let total = Duration::from_secs(warmup + measure);
    let (mut mark, mut failed, mut checks) = (None, 0u64, 0u64);
    let mut i: u64 = 0;
    let mut spare = None;
    while start.elapsed() < total {
        if mark.is_none() && start.elapsed() >= Duration::from_secs(warmup) {
            mark = Some((Instant::now(), cpu_seconds(), checks));
        }
        let at = (i % plan.len() as u64) as usize;
        let (to, request, _, timeout) = &plan[at];
        let ok = match (&mut kept[at], request) {
            (Some(conn), Some(request)) => kept_exchange(conn, *to, request, *timeout),
            _ => exchange(*to, request.as_deref(), *timeout, how, &mut spare),
        };
        if !ok {
            failed += 1;
        }
        checks += 1;
        i += 1;
        let next = start + period * i as u32;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let Some((t0, c0, n0)) = mark else {
        return (0.0, 0.0, 0.0, 0, failed);
    };
    let c1 = cpu_seconds();
    (
        t0.elapsed().as_secs_f64(),
        c1.0 - c0.0,
        c1.1 - c0.1,
        checks - n0,
        failed,
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (config, warmup, measure, yardstick) = match args.as_slice() {
        [c, w, m] => (c, w, m, None),
        [c, w, m, f] if f == "blocking" => (c, w, m, Some(Yardstick::Fin)),
        [c, w, m, f] if f == "blocking-rst" => (c, w, m, Some(Yardstick::Rst)),
        [c, w, m, f] if f == "blocking-reuse" => (c, w, m, Some(Yardstick::Reuse)),
        _ => {
            eprintln!(
                "usage: check_cost CONFIG.toml WARMUP_SECS MEASURE_SECS [blocking|blocking-rst|blocking-reuse]"
            );
            return ExitCode::from(2);
        }
    };
    let (Ok(warmup), Ok(measure)) = (warmup.parse::<u64>(), measure.parse::<u64>()) else {
        eprintln!("check_cost: WARMUP_SECS and MEASURE_SECS are whole seconds");
        return ExitCode::from(2);
    };
    let path = PathBuf::from(config);
    let desired = match ConfigFile::load(Some(&path))
        .and_then(|f| director::config::director(&f, &Default::default()))
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("check_cost: {}", e.0);
            return ExitCode::from(2);
        }
    };
    let reals: usize = desired.services.iter().map(|s| s.reals.len()).sum();
    if let Some(how) = yardstick {
        let (wall, user, sys, checks, failed) = blocking(&desired, how, warmup, measure);
        let mode = args.get(3).map_or("blocking", String::as_str);
        let cpu = user + sys;
        println!(
            "mode={mode} real_servers={reals} wall_s={wall:.1} cpu_s={cpu:.3} user_s={user:.3} \
             sys_s={sys:.3} cpu_pct_of_one_core={:.2} checks={checks} checks_per_s={:.0} \
             cpu_us_per_check={:.1} failed_total={failed} rss_mib={:.1}",
            100.0 * cpu / wall.max(f64::EPSILON),
            checks as f64 / wall.max(f64::EPSILON),
            if checks > 0 {
                1e6 * cpu / checks as f64
            } else {
                0.0
            },
            status_kib("VmRSS:") as f64 / 1024.0,
        );
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("check_cost: tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let tally = CheckTally::default();
    let window = async {
        tokio::time::sleep(Duration::from_secs(warmup)).await;
        let (t0, c0, n0) = (Instant::now(), cpu_seconds(), tally.checks());

        tokio::time::sleep(Duration::from_secs(measure)).await;
        let (wall, c1, n1) = (t0.elapsed().as_secs_f64(), cpu_seconds(), tally.checks());
        (wall, c1.0 - c0.0, c1.1 - c0.1, n1 - n0)
    };
    let (wall, user, sys, checks) =
        runtime.block_on(director::run::check_only(&desired, 256, &tally, window));
    let cpu = user + sys;
    println!(
        "mode=rs-agent real_servers={reals} wall_s={wall:.1} cpu_s={cpu:.3} user_s={user:.3} sys_s={sys:.3} \
         cpu_pct_of_one_core={:.2} checks={checks} checks_per_s={:.0} cpu_us_per_check={:.1} \
         failed_total={} flips_total={} rss_mib={:.1} hwm_mib={:.1}",
        100.0 * cpu / wall,
        checks as f64 / wall,
        if checks > 0 { 1e6 * cpu / checks as f64 } else { 0.0 },
        tally.failed.get(),
        tally.flips.get(),
        status_kib("VmRSS:") as f64 / 1024.0,
        status_kib("VmHWM:") as f64 / 1024.0,
    );
    ExitCode::SUCCESS
}
