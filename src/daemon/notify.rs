//! systemd's notify protocol (sd_notify(3)): one datagram per message to `$NOTIFY_SOCKET`.
//! A few lines of our own instead of a crate: a path or an abstract name (leading '@').
//! [`Notifier`] sends any message; [`Lifecycle`] is a daemon's sequence of them (READY=1,
//! STATUS= when it changes, WATCHDOG=1, STOPPING=1).

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
/// systemd asked for, STOPPING=1 when it stops. `Type=notify-reload` would add RELOADING=1
/// (with MONOTONIC_USEC) before a reload and READY=1 after it, beside [`Lifecycle::ready`].
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

    pub fn stopping(&self) {
        self.notifier.send("STOPPING=1");
    }
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
}

#[cfg(test)]
impl Drop for FakeSystemd {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::{ping_interval, FakeSystemd};
    use std::time::Duration;

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
