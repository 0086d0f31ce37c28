//! systemd's notify protocol (sd_notify(3)): one datagram per message to `$NOTIFY_SOCKET`.
//! A few lines of our own instead of a crate: a path or an abstract name (leading '@').

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
        match open(&path) {
            Ok(socket) => Notifier {
                socket: Some(socket),
            },
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET={path}: {e}; not notifying systemd");
                Notifier::default()
            }
        }
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

/// Resolves at each watchdog tick; never when systemd asked for no watchdog.
pub async fn watchdog_tick(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::ping_interval;
    use std::time::Duration;

    #[test]
    fn the_watchdog_is_pinged_at_half_its_period_and_never_in_a_busy_loop() {
        assert_eq!(ping_interval(0), None);
        assert_eq!(ping_interval(30_000_000), Some(Duration::from_secs(15)));
        // WATCHDOG_USEC=1 would be a zero period, which tokio's interval refuses (a panic).
        assert_eq!(ping_interval(1), Some(Duration::from_millis(1)));
        assert_eq!(ping_interval(1_500), Some(Duration::from_millis(1)));
    }
}
