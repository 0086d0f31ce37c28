//! `GET /metrics` of `rs-agent run`: the route asks the run loop for a [`Snapshot`] over a
//! channel and renders it. The loop answers between passes, judging the kernel with its own
//! netlink handle — so a scrape shows the kernel as it is at scrape time, never a cached
//! pass result, and the kernel is never read by two tasks at once.

use super::metrics::{render, Snapshot};
use crate::daemon::endpoint::{Answer, Body, Request, Response, Routes};
use crate::metrics::Format;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long a scrape waits for the loop (a pass in progress, then the judgement) before it
/// answers 503; Prometheus' default `scrape_timeout` is 10 s.
pub const SCRAPE_WAIT: Duration = Duration::from_secs(5);

/// Scrapes queued for the loop at most; the endpoint serves no more connections than this.
const QUEUE: usize = crate::daemon::endpoint::MAX_CONNECTIONS;

/// One scrape's question to the loop: the snapshot, or why there is none (one line).
pub struct Scrape {
    pub reply: oneshot::Sender<Result<Snapshot, String>>,
}

/// The loop's end of the channel.
pub type Scrapes = mpsc::Receiver<Scrape>;

/// The route and the loop's end of its channel.
pub fn channel() -> (MetricsRoute, Scrapes) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let route = MetricsRoute {
        loop_: tx,
        wait: SCRAPE_WAIT,
    };
    (route, rx)
}

/// `/metrics` on the daemon's endpoint.
pub struct MetricsRoute {
    loop_: mpsc::Sender<Scrape>,
    /// [`SCRAPE_WAIT`], but for tests.
    wait: Duration,
}

impl MetricsRoute {
    /// The loop's snapshot, or the one-line reason for a 503.
    async fn ask(&self) -> Result<Snapshot, String> {
        let (reply, answer) = oneshot::channel();
        let asked = async {
            self.loop_
                .send(Scrape { reply })
                .await
                .map_err(|_| "rs-agent run is stopping".to_string())?;
            answer
                .await
                .map_err(|_| "rs-agent run is stopping".to_string())?
        };
        tokio::time::timeout(self.wait, asked)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "rs-agent run did not answer within {:?} (a pass is taking long; see its log)",
                    self.wait
                ))
            })
    }
}

impl Routes for MetricsRoute {
    fn paths(&self) -> &'static [&'static str] {
        &["/metrics"]
    }

    fn respond<'a>(&'a self, request: &'a Request) -> Answer<'a> {
        Box::pin(async move {
            let format = Format::negotiate(request.accept.as_deref());
            match self.ask().await {
                Ok(snapshot) => Response {
                    status: 200,
                    content_type: format.content_type(),
                    body: Body::Full(render(&snapshot, format)),
                },
                Err(reason) => {
                    tracing::warn!("metrics scrape: {reason}");
                    Response::text(503, &format!("{reason}\n"))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request::parse("GET /metrics HTTP/1.1\r\n\r\n")
    }

    /// A loop that has gone answers 503 at once, saying so.
    #[tokio::test(flavor = "current_thread")]
    async fn a_stopped_loop_is_a_503_with_its_reason() {
        let (route, scrapes) = channel();
        drop(scrapes);
        let response = route.respond(&request()).await;
        assert_eq!(response.status, 503);
        let Body::Full(body) = response.body else {
            panic!("a 503 is a full body")
        };
        assert_eq!(String::from_utf8_lossy(&body), "rs-agent run is stopping\n");
    }

    /// A loop that does not answer (a pass that hangs) is waited for a bounded time, then
    /// the scrape is a 503 saying why.
    #[tokio::test(flavor = "current_thread")]
    async fn a_busy_loop_is_waited_for_a_bounded_time() {
        let (mut route, _scrapes) = channel();
        route.wait = Duration::from_millis(20);
        let response = route.respond(&request()).await;
        assert_eq!(response.status, 503);
        let Body::Full(body) = response.body else {
            panic!("a 503 is a full body")
        };
        assert!(
            String::from_utf8_lossy(&body).starts_with("rs-agent run did not answer within 20ms"),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
}
