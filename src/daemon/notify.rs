//! systemd's notify protocol (sd_notify(3)): one datagram per message to `$NOTIFY_SOCKET`.
//! A few lines of our own instead of a crate: a path or an abstract name (leading '@').
//! [`Notifier`] sends any message; [`Lifecycle`] is a daemon's sequence of them (READY=1,
//! STATUS= when it changes, WATCHDOG=1, RELOADING=1 … READY=1 around a reload, STOPPING=1).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where to send readiness, status and watchdog messages; inert when not under systemd.
#[derive(Debug, Default)]
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; a socket that cannot be opened is logged and ignored.
    pub fn from_env() -> Notifier {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier::default();
        };
        let path = path.to_string_lossy().into_owned();
        match Notifier::at(&path) {
            Ok(notifier) => notifier,
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET={path}: {e}; not notifying systemd");
                Notifier::default()
            }
        }
    }

    /// To the socket at `path` (a file, or an abstract name after '@'), as `$NOTIFY_SOCKET` says.
    pub fn at(path: &str) -> std::io::Result<Notifier> {
        Ok(Notifier {
            socket: Some(open(path)?),
        })
    }

    /// Sends `state` (e.g. `READY=1`); failures are logged at debug: systemd may be gone.
    pub fn send(&self, state: &str) {
        if let Some((socket, addr)) = &self.socket {
            if let Err(e) = socket.send_to_addr(state.as_bytes(), addr) {
                tracing::debug!("sd_notify {state:?}: {e}");
            }
        }
    }

    /// Half the watchdog period systemd asked for (`WATCHDOG_USEC`, for this pid), if any.
    pub fn watchdog_interval() -> Option<Duration> {
        if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
            if pid.to_string_lossy().parse::<u32>().ok() != Some(std::process::id()) {
                return None;
            }
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        ping_interval(usec)
    }
}

/// How often to send WATCHDOG=1 for a watchdog period of `usec` microseconds (0: none): half
/// the period, as sd_watchdog_enabled(3) advises, and never under 1 ms — a period of a few
/// microseconds (a typo in `WatchdogSec=`) would otherwise make a zero or busy interval.
fn ping_interval(usec: u64) -> Option<Duration> {
    (usec > 0).then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

fn open(path: &str) -> std::io::Result<(UnixDatagram, std::os::unix::net::SocketAddr)> {
    let addr = match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)?
        }
        None => std::os::unix::net::SocketAddr::from_pathname(path)?,
    };
    Ok((UnixDatagram::unbound()?, addr))
}

/// What a daemon tells systemd over its life: READY=1 with a first STATUS= once it applied
/// its configuration, STATUS= again whenever the line changes, WATCHDOG=1 at half the period
/// systemd asked for, RELOADING=1 (with MONOTONIC_USEC=) and READY=1 around each reload
/// ([`Lifecycle::reload`]), STOPPING=1 when it stops.
#[derive(Debug, Default)]
pub struct Lifecycle {
    notifier: Notifier,
    /// The last STATUS= sent, so that an unchanged line is not sent again.
    status: String,
    /// Started by READY=1.
    watchdog: Option<tokio::time::Interval>,
}

impl Lifecycle {
    pub fn new(notifier: Notifier) -> Lifecycle {
        Lifecycle {
            notifier,
            ..Lifecycle::default()
        }
    }

    /// From `$NOTIFY_SOCKET`; inert when not under systemd.
    pub fn from_env() -> Lifecycle {
        Lifecycle::new(Notifier::from_env())
    }

    /// READY=1 and the first STATUS=; starts the watchdog pings (`WATCHDOG_USEC`).
    pub fn ready(&mut self, status: String) {
        self.notifier.send("READY=1");
        self.status(status);
        self.watchdog = Notifier::watchdog_interval().map(tokio::time::interval);
    }

    /// STATUS=`status`, unless that is the line systemd has already.
    pub fn status(&mut self, status: String) {
        if status != self.status {
            self.notifier.send(&format!("STATUS={status}"));
            self.status = status;
        }
    }

    /// Waits for the next watchdog ping and sends it (WATCHDOG=1); never resolves when systemd
    /// asked for no watchdog or before [`Lifecycle::ready`]. Cancel-safe: for a `select!`.
    pub async fn watchdog(&mut self) {
        watchdog_tick(&mut self.watchdog).await;
        self.notifier.send("WATCHDOG=1");
    }

    /// Runs `reload` between `RELOADING=1` and `READY=1`, whatever it comes to (applied,
    /// refused, rolled back): under `Type=notify-reload` systemd waits for that READY=1 and
    /// the unit would stay "reloading" until its timeout without it. MONOTONIC_USEC= goes in
    /// the RELOADING=1 datagram, as systemd ≥ 253 wants it: the proof that this reload began
    /// after its SIGHUP, not before. Under `Type=notify` (systemd 252) the pair is accepted
    /// too, and `systemctl reload` then waits for the READY=1 if it heard the RELOADING=1
    /// before ExecReload= ended.
    pub async fn reload<T>(&self, reload: impl std::future::Future<Output = T>) -> T {
        self.notifier.send(&reloading());
        let done = reload.await;
        self.notifier.send("READY=1");
        done
    }

    pub fn stopping(&self) {
        self.notifier.send("STOPPING=1");
    }
}

/// `RELOADING=1` with the monotonic time; without it when the clock cannot be read (it can,
/// on Linux), which systemd ≥ 253 then ignores for `Type=notify-reload` (a timeout).
fn reloading() -> String {
    match monotonic_usec() {
        Some(usec) => format!("RELOADING=1\nMONOTONIC_USEC={usec}"),
        None => {
            tracing::debug!("clock_gettime(CLOCK_MONOTONIC) failed; RELOADING=1 without a time");
            "RELOADING=1".to_string()
        }
    }
}

/// CLOCK_MONOTONIC in microseconds: the clock systemd compares MONOTONIC_USEC= with.
pub(crate) fn monotonic_usec() -> Option<u64> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec the call writes, and outlives it.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return None;
    }
    let sec = u64::try_from(now.tv_sec).ok()?;
    let usec = u64::try_from(now.tv_nsec).ok()? / 1_000;
    sec.checked_mul(1_000_000)?.checked_add(usec)
}

/// Resolves at each watchdog tick; never when systemd asked for no watchdog.
pub async fn watchdog_tick(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A notify socket standing in for systemd, for the daemons' tests: what they told it.
#[cfg(test)]
pub(crate) struct FakeSystemd {
    socket: std::os::unix::net::UnixDatagram,
    path: std::path::PathBuf,
}

#[cfg(test)]
impl FakeSystemd {
    pub(crate) fn new(tag: &str) -> FakeSystemd {
        let path = std::env::temp_dir().join(format!("rs-agent-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind a notify socket");
        socket.set_nonblocking(true).expect("non-blocking");
        FakeSystemd { socket, path }
    }

    /// A lifecycle that speaks to this socket.
    pub(crate) fn lifecycle(&self) -> Lifecycle {
        let path = self.path.to_str().expect("a UTF-8 temp path");
        Lifecycle::new(Notifier::at(path).expect("open"))
    }

    /// Every message received so far, in order.
    pub(crate) fn heard(&self) -> Vec<String> {
        let mut sent = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = self.socket.recv(&mut buf) {
            sent.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        sent
    }

    /// As [`FakeSystemd::heard`], with each `MONOTONIC_USEC=` checked to be a CLOCK_MONOTONIC
    /// time in `clock` (read by the test before and after) and then written as
    /// [`FakeSystemd::IN_CLOCK`], so that a test can compare whole datagrams.
    pub(crate) fn heard_in(&self, clock: std::ops::RangeInclusive<u64>) -> Vec<String> {
        let field = "MONOTONIC_USEC=";
        self.heard()
            .into_iter()
            .map(|datagram| {
                let lines: Vec<String> = datagram
                    .split('\n')
                    .map(|line| match line.strip_prefix(field) {
                        Some(usec) => {
                            let usec: u64 = usec.parse().unwrap_or_else(|_| {
                                panic!("{field}{usec:?} is not a number of microseconds")
                            });
                            assert!(clock.contains(&usec), "{field}{usec} not in {clock:?}");
                            format!("{field}{}", FakeSystemd::IN_CLOCK)
                        }
                        None => line.to_string(),
                    })
                    .collect();
                lines.join("\n")
            })
            .collect()
    }

    /// What [`FakeSystemd::heard_in`] writes for a MONOTONIC_USEC= it checked.
    pub(crate) const IN_CLOCK: &'static str = "<in the test's clock window>";

    /// The reload's first datagram as [`FakeSystemd::heard_in`] gives it.
    pub(crate) fn reloading() -> String {
        format!("RELOADING=1\nMONOTONIC_USEC={}", FakeSystemd::IN_CLOCK)
    }
}

#[cfg(test)]
impl Drop for FakeSystemd {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::{monotonic_usec, ping_interval, FakeSystemd};
    use std::time::Duration;

    fn clock() -> u64 {
        monotonic_usec().expect("CLOCK_MONOTONIC")
    }

    #[test]
    fn a_reload_is_told_between_reloading_with_the_time_and_ready() {
        let systemd = FakeSystemd::new("notify-reload");
        let mut lifecycle = systemd.lifecycle();
        lifecycle.ready("1 VIP bound".to_string());
        let before = clock();
        let reloaded = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(lifecycle.reload(async { "applied" }));
        let after = clock();
        lifecycle.status("2 VIPs bound".to_string());
        assert_eq!(reloaded, "applied");
        assert_eq!(
            systemd.heard_in(before..=after),
            [
                "READY=1".to_string(),
                "STATUS=1 VIP bound".to_string(),
                FakeSystemd::reloading(),
                "READY=1".to_string(),
                "STATUS=2 VIPs bound".to_string(),
            ]
        );
    }

    #[test]
    fn the_monotonic_clock_is_read_in_microseconds() {
        let start = std::time::Instant::now();
        let first = clock();
        std::thread::sleep(Duration::from_millis(2));
        let second = clock();
        let elapsed = start.elapsed().as_micros();
        // Microseconds, not nanoseconds or seconds: at least the 2 ms slept, at most the time
        // the whole measurement took, however loaded the machine.
        let between = u128::from(second - first);
        assert!(
            (2_000..=elapsed).contains(&between),
            "{first} → {second} in {elapsed} µs"
        );
    }

    #[test]
    fn a_lifecycle_sends_ready_then_each_new_status_then_stopping() {
        let systemd = FakeSystemd::new("notify");
        let mut lifecycle = systemd.lifecycle();
        lifecycle.ready("1 VIP bound".to_string());
        lifecycle.status("1 VIP bound".to_string());
        lifecycle.status("2 VIPs bound".to_string());
        lifecycle.stopping();
        assert_eq!(
            systemd.heard(),
            [
                "READY=1",
                "STATUS=1 VIP bound",
                "STATUS=2 VIPs bound",
                "STOPPING=1"
            ]
        );
    }

    #[test]
    fn the_watchdog_is_pinged_at_half_its_period_and_never_in_a_busy_loop() {
        assert_eq!(ping_interval(0), None);
        assert_eq!(ping_interval(30_000_000), Some(Duration::from_secs(15)));
        // WATCHDOG_USEC=1 would be a zero period, which tokio's interval refuses (a panic).
        assert_eq!(ping_interval(1), Some(Duration::from_millis(1)));
        assert_eq!(ping_interval(1_500), Some(Duration::from_millis(1)));
    }
}
