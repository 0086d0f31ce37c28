//! The signals a daemon obeys: SIGTERM and SIGINT stop it, SIGHUP reloads its configuration.

use crate::error::Error;
use std::future::Future;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

/// Installs the handlers for SIGTERM, SIGINT and SIGHUP, and returns the future that completes
/// at the first SIGTERM or SIGINT (the daemon's shutdown) and the stream of SIGHUPs.
///
/// Call it before the first pass: until then a signal's default action ends the process, and
/// systemd counts death by SIGHUP as a clean exit (no restart). A handler that cannot be
/// installed is the environment's fault (seccomp, a resource limit), not the configuration's.
pub fn install() -> Result<(impl Future<Output = ()>, Reloads), Error> {
    let mut term = handler(SignalKind::terminate(), "SIGTERM")?;
    let mut int = handler(SignalKind::interrupt(), "SIGINT")?;
    let hup = handler(SignalKind::hangup(), "SIGHUP")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    Ok((shutdown, Reloads(Source::Signal(hup))))
}

fn handler(kind: SignalKind, name: &str) -> Result<Signal, Error> {
    signal(kind).map_err(|e| Error::signal(name, e))
}

/// The requests to read the configuration again: SIGHUP, or a channel where there is no
/// process to signal (a test).
#[derive(Debug)]
pub struct Reloads(Source);

#[derive(Debug)]
enum Source {
    Signal(Signal),
    Channel(mpsc::UnboundedReceiver<()>),
    Never,
}

impl Reloads {
    /// Reloads requested by sending `()`; none once the sender is dropped.
    pub fn channel() -> (mpsc::UnboundedSender<()>, Reloads) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, Reloads(Source::Channel(rx)))
    }

    /// No reload is ever requested.
    pub fn never() -> Reloads {
        Reloads(Source::Never)
    }

    /// Resolves at the next request; never once there can be none. Cancel-safe: for a
    /// `select!`.
    pub async fn recv(&mut self) {
        let more = match &mut self.0 {
            Source::Signal(hup) => hup.recv().await,
            Source::Channel(rx) => rx.recv().await,
            Source::Never => None,
        };
        if more.is_none() {
            self.0 = Source::Never;
            std::future::pending::<()>().await;
        }
    }
}
