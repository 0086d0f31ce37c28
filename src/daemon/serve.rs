//! The loop every daemon shares: it waits for the shutdown, a reload request, the watchdog's
//! next ping or the daemon's own next wake-up (a kernel event, a timer, a health result), and
//! hands each to the daemon; what a pass does stays the daemon's. A reload is told to systemd
//! here, once for every daemon: RELOADING=1 before it, READY=1 after it.

use super::notify::Lifecycle;
use super::signals::Reloads;
use std::future::Future;

/// What the loop asks of a daemon. `serve` is generic over it, so the futures need not be
/// `Send`.
pub trait Daemon {
    /// Why the daemon woke (an event, a due pass): what [`Daemon::wake`] returns.
    type Wake;

    /// Waits for the daemon's next reason to act, besides signals and the watchdog. Must be
    /// cancel-safe: a shutdown or a reload may come first, and it is called again after. It
    /// awaits the kernel or a timer: one always ready would keep a current-thread runtime
    /// from running its timers (the watchdog's among them).
    fn wake(&mut self) -> impl Future<Output = Self::Wake>;

    /// Acts on it, e.g. runs a pass or schedules one.
    fn handle(&mut self, wake: Self::Wake) -> impl Future<Output = ()>;

    /// A reload was requested (SIGHUP): read the configuration again, and apply it now or
    /// schedule the pass that will. systemd hears READY=1 when it returns, so it returns
    /// only once the reload came to something (applied, refused, rolled back or scheduled).
    fn reload(&mut self) -> impl Future<Output = ()>;

    /// The line for `systemctl status`; sent after each wake-up and reload when it changed.
    fn status(&self) -> String;

    /// The shutdown came: runs before STOPPING=1.
    fn stopping(&mut self) {}
}

/// Sends READY=1 (the daemon's first pass is done), then serves `daemon` until `shutdown`
/// completes, and sends STOPPING=1. Each reload is sent between RELOADING=1 and READY=1
/// ([`Lifecycle::reload`]), refused ones too, then the STATUS= line if it changed. The production caller passes the future of
/// [`super::signals::install`]; a test completes a future of its own.
pub async fn serve<D: Daemon>(
    daemon: &mut D,
    lifecycle: &mut Lifecycle,
    reloads: &mut Reloads,
    shutdown: impl Future<Output = ()>,
) {
    lifecycle.ready(daemon.status());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = reloads.recv() => lifecycle.reload(daemon.reload()).await,
            _ = lifecycle.watchdog() => continue,
            wake = daemon.wake() => daemon.handle(wake).await,
        }
        lifecycle.status(daemon.status());
    }
    daemon.stopping();
    lifecycle.stopping();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::notify::{monotonic_usec, FakeSystemd};
    use std::time::Duration;
    use tokio::sync::{mpsc, oneshot};

    /// Counts what the loop hands it; tells the test about each reload.
    #[derive(Default)]
    struct Fake {
        woken: u32,
        reloads: u32,
        /// The reloads whose configuration loaded: the status line counts them.
        applied: u32,
        /// Reloads to refuse (a configuration that does not load), by their number.
        refuse: Vec<u32>,
        stopped: bool,
        reloaded: Option<mpsc::UnboundedSender<u32>>,
        /// Wake-ups to return before waiting forever.
        wakes: u32,
        /// Completes the shutdown at this many wake-ups.
        stop_at: Option<(u32, oneshot::Sender<()>)>,
    }

    impl Daemon for Fake {
        type Wake = ();

        async fn wake(&mut self) {
            if self.woken >= self.wakes {
                std::future::pending::<()>().await;
            }
        }

        async fn handle(&mut self, (): ()) {
            self.woken += 1;
            if self
                .stop_at
                .as_ref()
                .is_some_and(|(at, _)| self.woken == *at)
            {
                if let Some((_, tx)) = self.stop_at.take() {
                    let _ = tx.send(());
                }
            }
        }

        async fn reload(&mut self) {
            self.reloads += 1;
            if !self.refuse.contains(&self.reloads) {
                self.applied += 1;
            }
            if let Some(tx) = &self.reloaded {
                let _ = tx.send(self.reloads);
            }
        }

        fn status(&self) -> String {
            format!("{} wake-ups, {} reloads applied", self.woken, self.applied)
        }

        fn stopping(&mut self) {
            self.stopped = true;
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
            .block_on(f)
    }

    /// Generous: only a broken loop waits this long.
    const BOUND: Duration = Duration::from_secs(30);

    #[test]
    fn the_shutdown_future_stops_the_loop() {
        let (reload_tx, mut reloads) = Reloads::channel();
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let (stop_tx, stop) = oneshot::channel::<()>();
        let mut fake = Fake {
            reloaded: Some(seen_tx),
            wakes: 3,
            ..Fake::default()
        };
        let mut lifecycle = Lifecycle::default();
        let driver = async move {
            // The loop serves until the shutdown: a reload after the wake-ups is handled.
            reload_tx.send(()).expect("the loop listens");
            assert_eq!(seen.recv().await, Some(1));
            stop_tx.send(()).expect("the loop waits for the shutdown");
        };
        let shutdown = async {
            let _ = stop.await;
        };
        let served = serve(&mut fake, &mut lifecycle, &mut reloads, shutdown);
        block_on(async {
            tokio::time::timeout(BOUND, async { tokio::join!(served, driver) })
                .await
                .expect("the loop stopped when its shutdown future completed")
        });
        assert!(fake.stopped);
        assert_eq!(fake.reloads, 1);
    }

    /// What systemd hears of two reloads, the second refused: each between RELOADING=1 (with
    /// the time, in the same datagram) and READY=1; the STATUS= line after the one that
    /// changed it (the refused one leaves it as it was, and an unchanged line is not sent).
    #[test]
    fn each_reload_is_told_between_reloading_and_ready_refused_or_not() {
        let systemd = FakeSystemd::new("serve-reload");
        let mut lifecycle = systemd.lifecycle();
        let (reload_tx, mut reloads) = Reloads::channel();
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let (stop_tx, stop) = oneshot::channel::<()>();
        let mut fake = Fake {
            reloaded: Some(seen_tx),
            refuse: vec![2],
            ..Fake::default()
        };
        let driver = async move {
            for n in 1..=2 {
                reload_tx.send(()).expect("the loop listens");
                assert_eq!(seen.recv().await, Some(n));
            }
            stop_tx.send(()).expect("the loop waits for the shutdown");
        };
        let shutdown = async {
            let _ = stop.await;
        };
        let before = monotonic_usec().expect("CLOCK_MONOTONIC");
        let served = serve(&mut fake, &mut lifecycle, &mut reloads, shutdown);
        block_on(async {
            tokio::time::timeout(BOUND, async { tokio::join!(served, driver) })
                .await
                .expect("the loop stopped when its shutdown future completed")
        });
        let after = monotonic_usec().expect("CLOCK_MONOTONIC");
        assert_eq!((fake.reloads, fake.applied), (2, 1));
        assert_eq!(
            systemd.heard_in(before..=after),
            [
                "READY=1".to_string(),
                "STATUS=0 wake-ups, 0 reloads applied".to_string(),
                FakeSystemd::reloading(),
                "READY=1".to_string(),
                "STATUS=0 wake-ups, 1 reloads applied".to_string(),
                FakeSystemd::reloading(),
                "READY=1".to_string(),
                "STOPPING=1".to_string(),
            ]
        );
    }

    #[test]
    fn a_completed_shutdown_stops_a_daemon_that_keeps_waking() {
        let (stop_tx, stop) = oneshot::channel::<()>();
        let mut fake = Fake {
            wakes: u32::MAX,
            stop_at: Some((100, stop_tx)),
            ..Fake::default()
        };
        let mut lifecycle = Lifecycle::default();
        let mut reloads = Reloads::never();
        let shutdown = async {
            let _ = stop.await;
        };
        block_on(async {
            tokio::time::timeout(
                BOUND,
                serve(&mut fake, &mut lifecycle, &mut reloads, shutdown),
            )
            .await
            .expect("a busy daemon does not starve the shutdown")
        });
        assert!(fake.stopped);
        assert!(fake.woken >= 100);
    }
}
