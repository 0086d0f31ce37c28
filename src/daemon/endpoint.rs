//! The daemons' small read-only HTTP endpoints (the real server's `/health`, both daemons'
//! `/metrics`): one request per connection, `GET`/`HEAD` only, bounded in connections, per
//! source, in time and in memory. Routes say what to answer; this module only speaks HTTP
//! and keeps the bounds, written once for every endpoint.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

const MAX_REQUEST: usize = 8 * 1024;
/// For the request head: a client that does not send one in time is closed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// For the whole response: a scrape of a large table under a slow scraper; Prometheus gives
/// up after its `scrape_timeout` (10 s by default) anyway.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once; one more is closed at once. A director checks once per
/// interval and Prometheus scrapes once per interval, so a handful is plenty; the bound keeps
/// idle clients from taking every file descriptor (the daemon's own passes need some).
pub const MAX_CONNECTIONS: usize = 32;

/// Connections one source address may hold open at once; one more from it is closed at once.
/// A director's check holds one (two while a reused connection is replaced), so one
/// misbehaving client on the LAN — holding connections open, or re-opening them as fast as
/// they are closed — can take at most this many of [`MAX_CONNECTIONS`] and never starve the
/// directors' checks (which would take a healthy server out of rotation).
pub const MAX_PER_SOURCE: usize = 4;

/// A chunk of a streamed body is handed on once it is this big.
pub const CHUNK: usize = 64 * 1024;

/// What a route is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Without the query string.
    pub path: String,
    /// The `Accept` header, if any (a scrape's format).
    pub accept: Option<String>,
}

impl Request {
    /// The request line and headers of `head` (lossy UTF-8).
    pub fn parse(head: &str) -> Request {
        let mut lines = head.lines();
        let mut parts = lines.next().unwrap_or("").split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("");
        let path = path.split('?').next().unwrap_or("").to_string();
        let accept = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("accept"))
            .map(|(_, value)| value.trim().to_string());
        Request {
            method,
            path,
            accept,
        }
    }
}

/// A body that is made on a blocking thread and handed on in chunks as it is made (a scrape
/// of a large IPVS table), so that a response never sits in memory whole.
pub type Producer = Box<dyn FnOnce(&mut Chunks) + Send>;

pub enum Body {
    Full(Vec<u8>),
    Streamed(Producer),
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Body,
}

impl Response {
    pub fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Body::Full(body.as_bytes().to_vec()),
        }
    }
}

/// Where a streamed body's producer sends its chunks; `send` is false once the client is
/// gone (the producer should stop).
pub struct Chunks {
    tx: mpsc::Sender<Vec<u8>>,
}

impl Chunks {
    pub fn send(&mut self, chunk: Vec<u8>) -> bool {
        chunk.is_empty() || self.tx.blocking_send(chunk).is_ok()
    }
}

/// A route's answer, when it is ready: a route may wait for what it answers from (the
/// daemon's loop, the kernel) without holding up the endpoint's other connections.
pub type Answer<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send + 'a>>;

/// One endpoint's routes.
pub trait Routes: Send + Sync + 'static {
    /// The paths it answers, for a 404's message.
    fn paths(&self) -> &'static [&'static str];
    /// The answer to a `GET`/`HEAD` of one of [`Routes::paths`].
    fn respond<'a>(&'a self, request: &'a Request) -> Answer<'a>;
}

/// An answer that is ready at once.
pub fn ready<'a>(response: Response) -> Answer<'a> {
    Box::pin(std::future::ready(response))
}

/// The response to `request` from the first of `routes` that has its path.
async fn route(routes: &[Arc<dyn Routes>], request: &Request) -> Response {
    if request.method != "GET" && request.method != "HEAD" {
        return Response::text(405, "method not allowed: read-only endpoint\n");
    }
    match routes
        .iter()
        .find(|r| r.paths().contains(&request.path.as_str()))
    {
        Some(r) => r.respond(request).await,
        None => {
            let known: Vec<&str> = routes.iter().flat_map(|r| r.paths()).copied().collect();
            Response::text(
                404,
                &format!("not found: the routes are {}\n", known.join(", ")),
            )
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    }
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Writes `response`. A streamed body is sent chunked (HTTP/1.1), its producer run on a
/// blocking thread, and ends with the last chunk only once the producer has finished: a
/// response cut short (a timeout, a failed producer) reads as cut short, never as a whole
/// scrape with series missing.
async fn write_response(
    stream: &mut TcpStream,
    response: Response,
    head_only: bool,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.content_type
    );
    match response.body {
        Body::Full(body) => {
            head += &format!("Content-Length: {}\r\n\r\n", body.len());
            stream.write_all(head.as_bytes()).await?;
            if !head_only {
                stream.write_all(&body).await?;
            }
        }
        Body::Streamed(producer) => {
            head += "Transfer-Encoding: chunked\r\n\r\n";
            stream.write_all(head.as_bytes()).await?;
            if !head_only {
                let (tx, mut rx) = mpsc::channel::<Vec<u8>>(2);
                let made = tokio::task::spawn_blocking(move || producer(&mut Chunks { tx }));
                while let Some(chunk) = rx.recv().await {
                    stream
                        .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                        .await?;
                    stream.write_all(&chunk).await?;
                    stream.write_all(b"\r\n").await?;
                }
                made.await.map_err(std::io::Error::other)?;
                stream.write_all(b"0\r\n\r\n").await?;
            }
        }
    }
    stream.shutdown().await
}

async fn serve_one(mut stream: TcpStream, routes: &[Arc<dyn Routes>]) -> Result<(), &'static str> {
    let head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| "request timed out")?
        .map_err(|_| "reading the request failed")?;
    let request = Request::parse(&head);
    let head_only = request.method == "HEAD";
    tokio::time::timeout(RESPONSE_TIMEOUT, async {
        let response = route(routes, &request).await;
        write_response(&mut stream, response, head_only).await
    })
    .await
    .map_err(|_| "response timed out")?
    .map_err(|_| "writing the response failed")
}

/// Binds `listen` for `what` (e.g. "metrics endpoint"); the error names the address and
/// the setting that gave it.
pub async fn bind(
    listen: SocketAddr,
    what: &str,
    setting: &str,
) -> Result<TcpListener, crate::error::Error> {
    TcpListener::bind(listen)
        .await
        .map_err(|e| crate::error::Error::Input(format!("{what} {listen}: {e}; check {setting}")))
}

/// Serves `routes` on `listener` until the task is dropped; each connection bounded in time,
/// at most [`MAX_CONNECTIONS`] at once and [`MAX_PER_SOURCE`] from one source.
pub async fn serve(listener: TcpListener, routes: Vec<Arc<dyn Routes>>, what: &'static str) {
    let routes: Arc<[Arc<dyn Routes>]> = routes.into();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let sources = Arc::new(PerSource::default());
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(source) = PerSource::take(&sources, source_of(peer.ip())) else {
            tracing::debug!(%peer, "{what}: {MAX_PER_SOURCE} connections open from it; closing");
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "{what}: {MAX_CONNECTIONS} connections open; closing");
            continue;
        };
        let routes = routes.clone();
        tokio::spawn(async move {
            let _slots = (slot, source);
            if let Err(e) = serve_one(stream, &routes).await {
                tracing::debug!(%peer, "{what}: {e}");
            }
        });
    }
}

/// The source a connection counts against: its IPv4 address, or its IPv6 /64 (one host is
/// given a whole /64 and can pick a new address in it for every connection).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let net = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(net.into())
        }
        v4 => v4,
    }
}

/// The connections open per source address.
#[derive(Default)]
struct PerSource(Mutex<std::collections::HashMap<IpAddr, usize>>);

/// One open connection of a source; counted down on drop.
struct SourceSlot {
    sources: Arc<PerSource>,
    ip: IpAddr,
}

impl PerSource {
    /// A slot for `ip`, unless it holds [`MAX_PER_SOURCE`] already.
    fn take(sources: &Arc<PerSource>, ip: IpAddr) -> Option<SourceSlot> {
        let mut open = sources.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= MAX_PER_SOURCE {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: sources.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.sources.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Hello;
    impl Routes for Hello {
        fn paths(&self) -> &'static [&'static str] {
            &["/hello"]
        }
        fn respond<'a>(&'a self, _: &'a Request) -> Answer<'a> {
            ready(Response::text(200, "hi\n"))
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn requests_are_routed_by_path_and_method() {
        let routes: Vec<Arc<dyn Routes>> = vec![Arc::new(Hello)];
        let req = Request::parse("GET /hello?x=1 HTTP/1.1\r\nAccept: text/plain\r\n\r\n");
        assert_eq!(req.path, "/hello");
        assert_eq!(req.accept.as_deref(), Some("text/plain"));
        assert_eq!(route(&routes, &req).await.status, 200);
        let head = Request::parse("HEAD /hello HTTP/1.0\r\n\r\n");
        assert_eq!(route(&routes, &head).await.status, 200);
        let other = route(&routes, &Request::parse("GET / HTTP/1.1\r\n\r\n")).await;
        assert_eq!(other.status, 404);
        let Body::Full(text) = other.body else {
            panic!("a 404 is a full body")
        };
        assert_eq!(
            String::from_utf8_lossy(&text),
            "not found: the routes are /hello\n"
        );
        assert_eq!(
            route(&routes, &Request::parse("POST /hello HTTP/1.1"))
                .await
                .status,
            405
        );
        assert_eq!(route(&routes, &Request::parse("")).await.status, 405);
    }

    #[test]
    fn one_source_holds_at_most_its_share() {
        let sources = Arc::new(PerSource::default());
        let (a, b): (IpAddr, IpAddr) = (
            "192.0.2.20".parse().expect("literal"),
            "192.0.2.30".parse().expect("literal"),
        );
        let held: Vec<SourceSlot> = (0..MAX_PER_SOURCE)
            .filter_map(|_| PerSource::take(&sources, a))
            .collect();
        assert_eq!(held.len(), MAX_PER_SOURCE);
        assert!(PerSource::take(&sources, a).is_none());
        assert!(PerSource::take(&sources, b).is_some());
        drop(held);
        assert!(PerSource::take(&sources, a).is_some());
        let one: IpAddr = "2001:db8::1".parse().expect("literal");
        let other: IpAddr = "2001:db8::ffff:2".parse().expect("literal");
        assert_eq!(source_of(one), source_of(other));
    }

    /// The body of a chunked response; `None` unless it ends with the last (empty) chunk.
    fn dechunk(mut text: &str) -> Option<String> {
        let mut body = String::new();
        loop {
            let (size, rest) = text.split_once("\r\n")?;
            let size = usize::from_str_radix(size, 16).ok()?;
            if size == 0 {
                return (rest == "\r\n").then_some(body);
            }
            body.push_str(rest.get(..size)?);
            text = rest.get(size..)?.strip_prefix("\r\n")?;
        }
    }

    /// A streamed body arrives whole, in order, over a real socket.
    #[tokio::test(flavor = "current_thread")]
    async fn a_streamed_body_arrives_whole() {
        struct Big;
        impl Routes for Big {
            fn paths(&self) -> &'static [&'static str] {
                &["/big"]
            }
            fn respond<'a>(&'a self, _: &'a Request) -> Answer<'a> {
                ready(Response {
                    status: 200,
                    content_type: "text/plain",
                    body: Body::Streamed(Box::new(|chunks| {
                        for i in 0..100u32 {
                            if !chunks.send(format!("{i:05}\n").repeat(2000).into_bytes()) {
                                return;
                            }
                        }
                    })),
                })
            }
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("bound");
        let server = crate::AbortOnDrop(tokio::spawn(serve(
            listener,
            vec![Arc::new(Big)],
            "test endpoint",
        )));
        let mut client = TcpStream::connect(addr).await.expect("connects");
        client
            .write_all(b"GET /big HTTP/1.1\r\n\r\n")
            .await
            .expect("sends");
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), client.read_to_end(&mut got))
            .await
            .expect("in time")
            .expect("reads");
        drop(server);
        let text = String::from_utf8_lossy(&got);
        let (head, chunked) = text.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
        let body = dechunk(chunked).expect("well-formed chunks ending with the last chunk");
        assert_eq!(body.len(), 100 * 2000 * 6);
        assert!(body.starts_with("00000\n") && body.ends_with("00099\n"));
    }
}
