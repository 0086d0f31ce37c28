//! Benchmark helper (bench/check-native.sh): what `director run`'s health checking costs, on
//! hardware where the kernel has no IPVS (so `director run` itself cannot start). Runs the
//! library's checking half (`director::run::check_only`: the same check tasks, jitter, bound on
//! checks in flight, timeouts and rise/fall state machine) for the config's services, on the
//! same single-threaded tokio runtime as `rs-agent`, and prints one line: CPU (user + system,
//! from getrusage) and checks over the measured window, and RSS.
//!
//! `check_cost CONFIG.toml WARMUP_SECS MEASURE_SECS [blocking]`
//!
//! With `blocking`, the same exchanges (TCP connect, or the same HTTP request read to the end)
//! at the same rate are done the simplest possible way instead — blocking sockets, one at a
//! time, no runtime — the simplest implementation, as a yardstick on this machine (over veth
//! the real servers' half of every TCP exchange runs in the checker's context too).

use rs_agent::config::ConfigFile;
use rs_agent::director::health::{self, Probe};
use rs_agent::director::{self, run::CheckTally};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
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

/// One exchange of the yardstick: what a tcp or http check does on the wire, blocking.
fn exchange(to: SocketAddr, request: Option<&[u8]>, timeout: Duration) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&to, timeout) else {
        return false;
    };
    let Some(request) = request else { return true };
    let _ = stream.set_read_timeout(Some(timeout));
    let mut reply = Vec::with_capacity(512);
    stream.write_all(request).is_ok()
        && stream.read_to_end(&mut reply).is_ok()
        && reply.starts_with(b"HTTP/1.")
}

/// The yardstick: every target once per its check interval, one exchange at a time, paced evenly.
fn blocking(
    desired: &director::config::DirectorDesired,
    warmup: u64,
    measure: u64,
) -> (f64, f64, f64, u64, u64) {
    let mut plan: Vec<(SocketAddr, Option<Vec<u8>>, Duration, Duration)> = Vec::new();
    for (target, check) in health::targets(desired) {
        let to = SocketAddr::new(target.addr, check.port.unwrap_or(target.port));
        let request = match &check.probe {
            Probe::Http(h) => Some(
                format!(
                    "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: rs-agent-health\r\nAccept: */*\r\nConnection: close\r\n\r\n",
                    h.path, target.addr
                )
                .into_bytes(),
            ),
            _ => None,
        };
        plan.push((to, request, check.interval, check.timeout));
    }
    let Some(interval) = plan.first().map(|p| p.2) else {
        return (0.0, 0.0, 0.0, 0, 0);
    };
    let period = interval / plan.len() as u32;
    let start = Instant::now();
    let total = Duration::from_secs(warmup + measure);
    let (mut mark, mut failed, mut checks) = (None, 0u64, 0u64);
    let mut i: u64 = 0;
    while start.elapsed() < total {
        if mark.is_none() && start.elapsed() >= Duration::from_secs(warmup) {
            mark = Some((Instant::now(), cpu_seconds(), checks));
        }
        let (to, request, _, timeout) = &plan[(i % plan.len() as u64) as usize];
        if !exchange(*to, request.as_deref(), *timeout) {
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
    let (config, warmup, measure, blocking_mode) = match args.as_slice() {
        [c, w, m] => (c, w, m, false),
        [c, w, m, f] if f == "blocking" => (c, w, m, true),
        _ => {
            eprintln!("usage: check_cost CONFIG.toml WARMUP_SECS MEASURE_SECS [blocking]");
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
    if blocking_mode {
        let (wall, user, sys, checks, failed) = blocking(&desired, warmup, measure);
        let cpu = user + sys;
        println!(
            "mode=blocking real_servers={reals} wall_s={wall:.1} cpu_s={cpu:.3} user_s={user:.3} \
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
