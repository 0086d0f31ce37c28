//! Benchmark helper (bench/health.sh): watches the IPVS table of the current network namespace
//! with an in-process timer, because under emulation every new process costs 0.5-2 s and
//! polling with `ipvsadm` would measure that instead of the director.
//!
//! ```text
//! ipvs_watch quiesce --dest 198.51.100.11:80 --kill PID [--signal kill|usr1] [--settle-ms 3000] [--timeout-ms 20000] [--poll-ms 5]
//!     waits until DEST is in the table with weight > 0, waits --settle-ms more (so a few good
//!     checks pass), checks it is still up, then SIGKILLs PID (the real server's web server)
//!     and prints `detect_ms=<ms> how=quiesced|removed` once DEST has weight 0 or is gone.
//!     With `--signal usr1` it sends SIGUSR1 instead (bench_listener then answers 503). The
//!     line also carries `kill_mono_ns` and `seen_mono_ns` (CLOCK_MONOTONIC), to line the
//!     event up with bench_listener's request log.
//! ipvs_watch count [--min N] [--timeout-ms 60000]
//!     waits until at least N destinations have weight > 0 (if --min is given), then prints
//!     `dests=<all> up=<weight>0> quiesced=<weight 0> elapsed_ms=<ms>`.
//! ```

#[path = "common/clock.rs"]
mod clock;
use clock::monotonic_ns;

use rs_agent::kernel::ipvs::{IpvsClient, ObservedService};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

struct Opts {
    mode: String,
    dest: Option<SocketAddr>,
    kill: Option<i32>,
    settle: Duration,
    timeout: Duration,
    poll: Duration,
    min: Option<usize>,
    signal: i32,
}

fn parse() -> Result<Opts, String> {
    let mut args = std::env::args().skip(1);
    let mode = args
        .next()
        .ok_or("usage: ipvs_watch quiesce|count [options]")?;
    let mut o = Opts {
        mode,
        dest: None,
        kill: None,
        settle: Duration::from_millis(3000),
        timeout: Duration::from_millis(20_000),
        poll: Duration::from_millis(5),
        min: None,
        signal: libc::SIGKILL,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        let ms = |v: &str| v.parse::<u64>().map(Duration::from_millis);
        match flag.as_str() {
            "--dest" => o.dest = Some(value.parse().map_err(|e| bad(&e))?),
            "--kill" => o.kill = Some(value.parse().map_err(|e| bad(&e))?),
            "--settle-ms" => o.settle = ms(&value).map_err(|e| bad(&e))?,
            "--timeout-ms" => o.timeout = ms(&value).map_err(|e| bad(&e))?,
            "--poll-ms" => o.poll = ms(&value).map_err(|e| bad(&e))?,
            "--min" => o.min = Some(value.parse().map_err(|e| bad(&e))?),
            "--signal" => {
                o.signal = match value.as_str() {
                    "kill" => libc::SIGKILL,
                    "usr1" => libc::SIGUSR1,
                    _ => return Err(bad(&"expected kill or usr1")),
                }
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(o)
}

/// The weight of `dest` in any service, or None when no service holds it.
fn weight_of(table: &[ObservedService], dest: SocketAddr) -> Option<u32> {
    table
        .iter()
        .flat_map(|s| &s.destinations)
        .find(|d| d.dest.addr == dest.ip() && d.dest.port == dest.port())
        .map(|d| d.dest.weight)
}

/// Polls until `done` says yes or the deadline passes.
fn poll_until(
    client: &mut IpvsClient,
    o: &Opts,
    mut done: impl FnMut(&[ObservedService]) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + o.timeout;
    loop {
        let table = client.dump().map_err(|e| e.to_string())?;
        if done(&table) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {} ms", o.timeout.as_millis()));
        }
        std::thread::sleep(o.poll);
    }
}

fn quiesce(client: &mut IpvsClient, o: &Opts) -> Result<(), String> {
    let dest = o.dest.ok_or("quiesce needs --dest ADDR:PORT")?;
    let pid = o.kill.ok_or("quiesce needs --kill PID")?;
    poll_until(client, o, |t| weight_of(t, dest).is_some_and(|w| w > 0))
        .map_err(|e| format!("waiting for {dest} with weight > 0: {e}"))?;
    std::thread::sleep(o.settle);
    let table = client.dump().map_err(|e| e.to_string())?;
    match weight_of(&table, dest) {
        Some(w) if w > 0 => {}
        other => return Err(format!("{dest} not up before the kill (weight {other:?})")),
    }
    let started = Instant::now();
    let killed_at = std::time::SystemTime::now();
    let kill_mono = monotonic_ns();
    // SAFETY: kill(2) on a pid given by the caller; no memory is shared.
    if unsafe { libc::kill(pid, o.signal) } != 0 {
        return Err(format!("kill {pid}: {}", std::io::Error::last_os_error()));
    }
    let mut how = "";
    poll_until(client, o, |t| {
        how = match weight_of(t, dest) {
            None => "removed",
            Some(0) => "quiesced",
            Some(_) => return false,
        };
        true
    })
    .map_err(|e| format!("waiting for {dest} to be taken out: {e}"))?;
    let seen_mono = monotonic_ns();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    // Wall-clock times too, to line the kill up with other tools' timestamps (strace -tt).
    println!(
        "detect_ms={ms:.1} how={how} kill_at={:.6} seen_at={:.6} kill_mono_ns={kill_mono} seen_mono_ns={seen_mono}",
        epoch(killed_at),
        epoch(std::time::SystemTime::now())
    );
    Ok(())
}

/// Seconds since the epoch, as strace -tt and date +%s.%N print them.
fn epoch(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn count(client: &mut IpvsClient, o: &Opts) -> Result<(), String> {
    let started = Instant::now();
    let (mut all, mut up) = (0, 0);
    let mut tally = |t: &[ObservedService]| {
        let dests = t.iter().flat_map(|s| &s.destinations);
        all = dests.clone().count();
        up = dests.filter(|d| d.dest.weight > 0).count();
        o.min.is_none_or(|m| up >= m)
    };
    let waited = poll_until(client, o, &mut tally);
    let ms = started.elapsed().as_millis();
    println!("dests={all} up={up} quiesced={} elapsed_ms={ms}", all - up);
    waited.map_err(|e| format!("waiting for {:?} destinations up: {e}", o.min))
}

fn main() -> ExitCode {
    let result = parse().and_then(|o| {
        let mut client = IpvsClient::connect().map_err(|e| e.to_string())?;
        match o.mode.as_str() {
            "quiesce" => quiesce(&mut client, &o),
            "count" => count(&mut client, &o),
            m => Err(format!("unknown mode {m}; want quiesce or count")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipvs_watch: {e}");
            ExitCode::FAILURE
        }
    }
}
