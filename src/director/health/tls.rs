//! A TLS client connection for HTTPS checks that holds no buffer while it is idle.
//!
//! rustls's buffered connection keeps a 4 KiB receive buffer for its whole life, so 2,000 kept
//! connections (`reuse_connection = true`) cost 8 MiB for buffers that are empty between
//! checks. This drives rustls's unbuffered API instead: the ciphertext and plaintext buffers
//! are ours, allocated while a check reads or writes and freed as soon as they are empty, so
//! an idle kept connection holds only its keys and handshake state (~4 KiB).

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How much is read from the socket at a time.
const READ_CHUNK: usize = 8 * 1024;
/// The most ciphertext held for one incomplete message: a handshake flight with a long
/// certificate chain is the largest (rustls's own limit for the buffered API).
const MAX_INCOMING: usize = 64 * 1024 + 5;

/// A client TLS connection over a byte stream (TCP, or an in-memory pipe in the tests):
/// `AsyncRead` and `AsyncWrite` of the plaintext.
pub struct TlsConn<S = TcpStream> {
    tcp: S,
    tls: UnbufferedClientConnection,
    /// Ciphertext received and not yet processed (a partial record).
    incoming: Vec<u8>,
    /// Ciphertext to send, from `sent` on.
    outgoing: Vec<u8>,
    sent: usize,
    /// Plaintext received and not yet read, from `taken` on.
    plain: Vec<u8>,
    taken: usize,
    /// The peer sent close_notify, or closed the TCP connection after the handshake.
    eof: bool,
}

/// What one step of rustls's state machine left to do.
enum Step {
    /// It made progress (encoded, received or sent something): step again.
    Again,
    /// It needs bytes from the peer (the handshake waits, or nothing is left to read).
    NeedInput,
    /// Application data was encrypted (this many bytes of it).
    Wrote(usize),
    /// The handshake is done and nothing is pending: ready to send.
    Idle,
    /// Both sides closed the TLS session: nothing more can be sent or received.
    Closed,
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsConn<S> {
    /// Handshakes with the server over `tcp`.
    pub async fn connect(
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
        tcp: S,
    ) -> io::Result<TlsConn<S>> {
        let tls = UnbufferedClientConnection::new(config, name).map_err(invalid)?;
        let mut conn = TlsConn {
            tcp,
            tls,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            sent: 0,
            plain: Vec::new(),
            taken: 0,
            eof: false,
        };
        std::future::poll_fn(|cx| conn.poll_handshake(cx)).await?;
        // A record that came with the server's last flight (a session ticket) may be half
        // here: keep it, not the read's spare room.
        conn.trim();
        Ok(conn)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_send(cx))?;
            match self.step(None)? {
                Step::Again => {}
                Step::Idle => return Poll::Ready(Ok(())),
                Step::Closed => return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
                Step::NeedInput | Step::Wrote(_) => {
                    if !ready!(self.poll_receive(cx))? {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
            }
        }
    }

    /// One call into rustls: handles the state it reports, with `app` to encrypt when it
    /// allows sending. After an error the connection is not used again (the check drops it).
    fn step(&mut self, app: Option<&[u8]>) -> io::Result<Step> {
        let TlsConn {
            tls,
            incoming,
            outgoing,
            plain,
            eof,
            ..
        } = self;
        let UnbufferedStatus { mut discard, state } = tls.process_tls_records(incoming);
        let step = match state.map_err(invalid)? {
            ConnectionState::EncodeTlsData(mut data) => {
                grow_into(outgoing, 1024, |buf| match data.encode(buf) {
                    Ok(n) => Ok(Ok(n)),
                    Err(EncodeError::InsufficientSize(e)) => Ok(Err(e.required_size)),
                    Err(e) => Err(invalid(e)),
                })?;
                Step::Again
            }
            // Sent before the next read or write (`poll_send` comes first in each).
            ConnectionState::TransmitTlsData(data) => {
                data.done();
                Step::Again
            }
            ConnectionState::BlockedHandshake => Step::NeedInput,
            ConnectionState::ReadTraffic(mut records) => {
                while let Some(record) = records.next_record() {
                    let record = record.map_err(invalid)?;
                    discard += record.discard;
                    plain.extend_from_slice(record.payload);
                }
                Step::Again
            }
            // Reported once; after it the peer sends nothing more.
            ConnectionState::PeerClosed => {
                *eof = true;
                Step::Again
            }
            ConnectionState::Closed => {
                *eof = true;
                Step::Closed
            }
            ConnectionState::WriteTraffic(mut traffic) => match app {
                Some(data) => {
                    grow_into(outgoing, data.len() + 64, |buf| {
                        match traffic.encrypt(data, buf) {
                            Ok(n) => Ok(Ok(n)),
                            Err(EncryptError::InsufficientSize(e)) => Ok(Err(e.required_size)),
                            Err(e) => Err(invalid(e)),
                        }
                    })?;
                    Step::Wrote(data.len())
                }
                None => Step::Idle,
            },
            _ => return Err(invalid("unexpected TLS state (early data)")),
        };
        // Freed (or trimmed) by `trim` where the connection may go idle, not per record.
        incoming.drain(..discard.min(incoming.len()));
        Ok(step)
    }

    /// Sends what is queued; frees the buffer once it is all sent.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads ciphertext from the socket; false at its end. Holds no buffer while it waits.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let start = self.incoming.len();
        if start >= MAX_INCOMING {
            return Poll::Ready(Err(invalid("TLS message over 64 KiB")));
        }
        self.incoming.resize(start + READ_CHUNK, 0);
        let mut buf = ReadBuf::new(&mut self.incoming[start..]);
        let polled = Pin::new(&mut self.tcp).poll_read(cx, &mut buf);
        let n = buf.filled().len();
        self.incoming.truncate(start + n);
        if polled.is_pending() {
            self.trim();
        }
        ready!(polled)?;
        Poll::Ready(Ok(n > 0))
    }

    /// Gives back the receive buffer's spare room before the connection may go idle: all it
    /// keeps is a partial record that arrived (a session ticket cut by the network, say).
    fn trim(&mut self) {
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        } else {
            self.incoming.shrink_to_fit();
        }
    }
}

/// Appends to `buf` what `write` puts into a slice of `room` bytes. `write` returns Ok(n) for
/// n bytes written, or Err(size) when it needs a slice of `size` bytes (and wrote nothing):
/// then it is called once more with that room.
fn grow_into(
    buf: &mut Vec<u8>,
    room: usize,
    mut write: impl FnMut(&mut [u8]) -> io::Result<Result<usize, usize>>,
) -> io::Result<()> {
    let start = buf.len();
    let mut room = room;
    for _ in 0..2 {
        buf.resize(start + room, 0);
        match write(&mut buf[start..]) {
            Ok(Ok(n)) => {
                buf.truncate(start + n);
                return Ok(());
            }
            Ok(Err(needed)) => room = needed,
            Err(e) => {
                buf.truncate(start);
                return Err(e);
            }
        }
    }
    buf.truncate(start);
    Err(invalid("TLS record does not fit the size rustls asked for"))
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsConn<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.taken < this.plain.len() {
                let n = out.remaining().min(this.plain.len() - this.taken);
                out.put_slice(&this.plain[this.taken..this.taken + n]);
                this.taken += n;
                if this.taken == this.plain.len() {
                    this.plain = Vec::new();
                    this.taken = 0;
                }
                // The caller may have all it wanted now, and leave the connection idle.
                this.trim();
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            ready!(this.poll_send(cx))?;
            match this.step(None)? {
                Step::Again | Step::Closed => {}
                Step::NeedInput | Step::Idle | Step::Wrote(_) => {
                    // The TCP connection's end without close_notify: the end of the data.
                    if !ready!(this.poll_receive(cx))? {
                        this.eof = true;
                    }
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsConn<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            ready!(this.poll_send(cx))?;
            match this.step(Some(data))? {
                Step::Again => {}
                Step::Wrote(n) => {
                    // Sent now if the socket takes it, else before the next read or write.
                    if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                        return Poll::Ready(Err(e));
                    }
                    return Poll::Ready(Ok(n));
                }
                Step::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Step::NeedInput | Step::Idle => {
                    if !ready!(this.poll_receive(cx))? {
                        return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
                    }
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx)
    }

    /// Sends what is queued and shuts the TCP connection's sending side, without a
    /// close_notify: checks end their connections with a reset (see `probe::connect`).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn server_config(
        version: &'static rustls::SupportedProtocolVersion,
    ) -> Arc<rustls::ServerConfig> {
        let cert = CertificateDer::from_pem_slice(include_bytes!("testdata/cert.pem"))
            .expect("test certificate");
        let key =
            PrivateKeyDer::from_pem_slice(include_bytes!("testdata/key.pem")).expect("test key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .expect("protocol version")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("server config");
        Arc::new(config)
    }

    /// How the server ends after its answers.
    #[derive(Clone, Copy, Debug)]
    enum End {
        CloseNotify,
        Drop,
    }

    /// A TLS server on the other end of a pipe: reads a request head, writes the next answer,
    /// for each answer; then ends as told.
    async fn serve(
        stream: DuplexStream,
        config: Arc<rustls::ServerConfig>,
        answers: Vec<Vec<u8>>,
        end: End,
    ) {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let mut tls = acceptor.accept(stream).await.expect("server handshake");
        for answer in answers {
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                if tls.read(&mut byte).await.expect("server read") == 0 {
                    return;
                }
                head.push(byte[0]);
            }
            tls.write_all(&answer).await.expect("server write");
            tls.flush().await.expect("server flush");
        }
        match end {
            End::CloseNotify => tls.shutdown().await.expect("close_notify"),
            End::Drop => drop(tls),
        }
    }

    fn response(body_len: usize) -> Vec<u8> {
        let body = "x".repeat(body_len);
        format!("HTTP/1.1 200 OK\r\nContent-Length: {body_len}\r\n\r\n{body}").into_bytes()
    }

    /// Reads `want` bytes in reads of at most `chunk` bytes.
    async fn read_exactly<S: AsyncRead + AsyncWrite + Unpin>(
        conn: &mut TlsConn<S>,
        want: usize,
        chunk: usize,
    ) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; chunk];
        while got.len() < want {
            let n = conn.read(&mut buf).await.expect("client read");
            assert!(n > 0, "end of stream after {} of {want} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    /// No buffer beyond a partial record received (a session ticket the pipe cut).
    fn holds_no_buffer<S>(conn: &TlsConn<S>) -> bool {
        conn.incoming.capacity() == conn.incoming.len()
            && conn.outgoing.capacity() == 0
            && conn.plain.capacity() == 0
    }

    /// Requests and answers on one connection (a small answer, then one of many TLS records
    /// read a little at a time, then a small one again), over TLS 1.3 (with the session
    /// tickets a rustls server sends after the handshake) and TLS 1.2; between exchanges the
    /// connection holds no buffer, and a poll finds it idle; the server's end reads as the end
    /// of the stream, with or without close_notify.
    #[test]
    fn exchanges_on_one_connection_and_holds_nothing_while_idle() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            for end in [End::CloseNotify, End::Drop] {
                let what = format!("{:?} {end:?}", version.version);
                let answers = vec![response(10), response(40_000), response(3)];
                let (client, server) = tokio::io::duplex(4096);
                runtime.block_on(async {
                    let server =
                        tokio::spawn(serve(server, server_config(version), answers.clone(), end));
                    let config = super::super::probe::tls_config().expect("client config");
                    let name = ServerName::try_from("rs-agent-unit-test").expect("name");
                    let mut conn = TlsConn::connect(config, name, client)
                        .await
                        .expect("client handshake");
                    assert!(holds_no_buffer(&conn), "{what}: after the handshake");
                    for (answer, chunk) in answers.iter().zip([4096, 100, 4096]) {
                        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                            .await
                            .expect("client write");
                        let got = read_exactly(&mut conn, answer.len(), chunk).await;
                        assert_eq!(&got, answer, "{what}");
                        assert!(
                            holds_no_buffer(&conn),
                            "{what}: after an exchange: {} {} {} {}",
                            conn.incoming.len(),
                            conn.incoming.capacity(),
                            conn.outgoing.capacity(),
                            conn.plain.capacity()
                        );
                    }
                    server.await.expect("server task");
                    let mut rest = Vec::new();
                    conn.read_to_end(&mut rest).await.expect("end of stream");
                    assert!(
                        rest.is_empty(),
                        "{what}: {} bytes after the answers",
                        rest.len()
                    );
                });
            }
        }
    }

    /// A kept connection polled between checks (as `still_idle` does) is pending while the
    /// server is quiet and holds no buffer afterwards.
    #[test]
    fn an_idle_poll_is_pending_and_leaves_no_buffer() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (client, server) = tokio::io::duplex(4096);
            let server = tokio::spawn(serve(
                server,
                server_config(&rustls::version::TLS13),
                vec![response(5), response(5)],
                End::CloseNotify,
            ));
            let config = super::super::probe::tls_config().expect("client config");
            let name = ServerName::try_from("rs-agent-unit-test").expect("name");
            let mut conn = TlsConn::connect(config, name, client)
                .await
                .expect("handshake");
            conn.write_all(b"GET / HTTP/1.1\r\n\r\n")
                .await
                .expect("write");
            read_exactly(&mut conn, response(5).len(), 4096).await;
            let mut byte = [0u8; 1];
            let mut buf = ReadBuf::new(&mut byte);
            let mut cx = Context::from_waker(std::task::Waker::noop());
            assert!(Pin::new(&mut conn)
                .poll_read(&mut cx, &mut buf)
                .is_pending());
            assert!(holds_no_buffer(&conn), "after the idle poll");
            conn.write_all(b"GET / HTTP/1.1\r\n\r\n")
                .await
                .expect("write");
            read_exactly(&mut conn, response(5).len(), 4096).await;
            server.await.expect("server task");
            // close_notify arrived: a poll is no longer pending (the connection is not idle).
            let mut buf = ReadBuf::new(&mut byte);
            let polled = Pin::new(&mut conn).poll_read(&mut cx, &mut buf);
            assert!(matches!(polled, Poll::Ready(Ok(()))) && buf.filled().is_empty());
        });
    }
}
