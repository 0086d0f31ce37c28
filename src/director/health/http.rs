//! Where an HTTP/1.x response ends (RFC 9112, 6.3), so that a check can stop reading as soon
//! as the answer is whole, a kept connection (`reuse_connection`) can carry the next check's
//! request, and a body check reads the body without chunked framing. Pure: bytes in, verdict
//! out.

use std::borrow::Cow;
use std::ops::Range;

/// What the bytes read so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    /// The start of a response; more bytes are needed.
    Partial,
    /// A whole response.
    Whole(Whole),
    /// Not a response whose end can be told: no length (the body runs to the connection's
    /// end), a transfer coding other than chunked, malformed framing, or not HTTP/1.x. The
    /// connection cannot carry another request.
    Unframed,
}

/// A whole response in the buffer it was read into.
#[derive(Debug, PartialEq, Eq)]
pub struct Whole {
    /// Where the final response starts (after any 1xx interim responses).
    pub start: usize,
    /// Where its head (status line and headers, blank line included) ends.
    pub head_end: usize,
    /// Where the response ends.
    pub end: usize,
    /// The body's bytes: one range for a `Content-Length` body, one per chunk when chunked.
    pub body: Vec<Range<usize>>,
    /// The server keeps the connection open for another request (HTTP/1.1 without
    /// `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`).
    pub keep: bool,
}

impl Whole {
    /// The head followed by the body without chunk framing: what a check judges. Borrowed
    /// unless chunks have to be joined.
    pub fn response<'a>(&self, buf: &'a [u8]) -> Cow<'a, [u8]> {
        match self.body.as_slice() {
            [] => Cow::Borrowed(&buf[self.start..self.head_end]),
            [only] if only.start == self.head_end => Cow::Borrowed(&buf[self.start..only.end]),
            chunks => {
                let mut out = buf[self.start..self.head_end].to_vec();
                for range in chunks {
                    out.extend_from_slice(&buf[range.clone()]);
                }
                Cow::Owned(out)
            }
        }
    }
}

const STATUS_PREFIX: &[u8] = b"HTTP/1.";

/// Chunk-size and trailer lines longer than this are malformed, not partial.
const MAX_LINE: usize = 1024;

/// The length of the head at the start of `rest`, up to and including the empty line that
/// ends it. Lines end in CRLF, or in a bare LF, which RFC 9112 (2.2) lets a recipient accept.
pub fn head_len(rest: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(n) = rest[at..].iter().position(|b| *b == b'\n') {
        at += n + 1;
        match rest.get(at..) {
            Some([b'\n', ..]) => return Some(at + 1),
            Some([b'\r', b'\n', ..]) => return Some(at + 2),
            _ => {}
        }
    }
    None
}

/// Frames the response at the start of `buf`.
pub fn framing(buf: &[u8]) -> Framing {
    let mut start = 0;
    loop {
        let rest = &buf[start..];
        let shown = rest.len().min(STATUS_PREFIX.len());
        if rest[..shown] != STATUS_PREFIX[..shown] {
            return Framing::Unframed;
        }
        let Some(head_len) = head_len(rest) else {
            return Framing::Partial;
        };
        let Some(head) = Head::parse(&rest[..head_len]) else {
            return Framing::Unframed;
        };
        let body_start = start + head_len;
        let whole = |end: usize, body: Vec<Range<usize>>| {
            Framing::Whole(Whole {
                start,
                head_end: body_start,
                end,
                body,
                keep: head.keep,
            })
        };
        match head.status {
            // Switching protocols: what follows is not HTTP.
            101 => return Framing::Unframed,
            // An interim response (100 Continue, 103 Early Hints): the final one follows.
            100..=199 => {
                start = body_start;
                continue;
            }
            204 | 304 => return whole(body_start, Vec::new()),
            _ => {}
        }
        return match head.length {
            Length::Chunked => match chunks(buf, body_start) {
                Ok(Some((end, body))) => whole(end, body),
                Ok(None) => Framing::Partial,
                Err(()) => Framing::Unframed,
            },
            Length::Bytes(n) => match body_start.checked_add(n) {
                Some(end) if buf.len() >= end => {
                    whole(end, std::iter::once(body_start..end).collect())
                }
                Some(_) => Framing::Partial,
                None => Framing::Unframed,
            },
            Length::ToClose => Framing::Unframed,
        };
    }
}

/// How a response's body is delimited.
#[derive(Debug, PartialEq, Eq)]
enum Length {
    Bytes(usize),
    Chunked,
    /// By the end of the connection.
    ToClose,
}

/// What framing needs from a response head.
struct Head {
    status: u16,
    length: Length,
    keep: bool,
}

impl Head {
    fn parse(head: &[u8]) -> Option<Head> {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let mut status_line = lines.next()?.split_whitespace();
        let version = status_line.next()?;
        let status: u16 = status_line.next()?.parse().ok()?;
        let http10 = match version {
            "HTTP/1.0" => true,
            "HTTP/1.1" => false,
            _ => return None,
        };
        let (mut length, mut coded, mut chunked) = (None, false, false);
        let (mut close, mut keep_alive) = (false, false);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                let n: usize = value.parse().ok()?;
                // Two different lengths: the end cannot be told (RFC 9112, 6.3, item 5).
                if length.is_some_and(|l| l != n) {
                    return None;
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                coded = true;
                chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
            } else if name.eq_ignore_ascii_case("connection") {
                for token in value.split(',').map(str::trim) {
                    close |= token.eq_ignore_ascii_case("close");
                    keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                }
            }
        }
        // Transfer-Encoding overrides Content-Length; a coding that does not end in chunked
        // runs to the connection's end (RFC 9112, 6.3, items 3 and 4).
        let framing = match (coded, chunked, length) {
            (true, true, _) => Length::Chunked,
            (true, false, _) | (false, _, None) => Length::ToClose,
            (false, _, Some(n)) => Length::Bytes(n),
        };
        // A coded HTTP/1.0 response, or one with both a coding and a length, may have been
        // framed differently by something on the way: the connection is closed after it
        // (RFC 9112, 6.1 and 6.3, item 3).
        let suspect = coded && (http10 || length.is_some());
        Some(Head {
            status,
            length: framing,
            keep: !close && (!http10 || keep_alive) && !suspect,
        })
    }
}

/// Walks a chunked body from `at`: `Ok(Some((end, chunks)))` once the last chunk and the
/// trailer section are in, `Ok(None)` while more is needed, `Err` when it is malformed.
#[allow(clippy::type_complexity)]
fn chunks(buf: &[u8], mut at: usize) -> Result<Option<(usize, Vec<Range<usize>>)>, ()> {
    let mut body = Vec::new();
    loop {
        let Some((line, next)) = line_at(buf, at)? else {
            return Ok(None);
        };
        let size = buf[at..at + line]
            .split(|b| *b == b';')
            .next()
            .and_then(|s| std::str::from_utf8(s).ok())
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or(())?;
        at = next;
        if size == 0 {
            // The trailer section: field lines up to an empty one.
            loop {
                let Some((line, next)) = line_at(buf, at)? else {
                    return Ok(None);
                };
                at = next;
                if line == 0 {
                    return Ok(Some((at, body)));
                }
            }
        }
        // The chunk's data, then the end of its line.
        let end = at.checked_add(size).ok_or(())?;
        let next = match buf.get(end..end.checked_add(2).ok_or(())?.min(buf.len())) {
            None | Some([] | [b'\r']) => return Ok(None),
            Some([b'\r', b'\n']) => end + 2,
            Some([b'\n', ..]) => end + 1,
            Some(_) => return Err(()),
        };
        body.push(at..end);
        at = next;
    }
}

/// The line at `at`: its length without the line end (CRLF or a bare LF) and where the next
/// one starts; `None` if it has not all arrived, `Err` if it is longer than any sane chunk or
/// trailer line.
fn line_at(buf: &[u8], at: usize) -> Result<Option<(usize, usize)>, ()> {
    let rest = &buf[at.min(buf.len())..];
    match rest.iter().position(|b| *b == b'\n') {
        Some(n) if n <= MAX_LINE => {
            let len = if n > 0 && rest[n - 1] == b'\r' {
                n - 1
            } else {
                n
            };
            Ok(Some((len, at + n + 1)))
        }
        Some(_) => Err(()),
        None if rest.len() > MAX_LINE => Err(()),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(buf: &[u8]) -> Whole {
        match framing(buf) {
            Framing::Whole(w) => w,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn a_length_ends_the_response_and_http11_keeps_the_connection() {
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let w = whole(buf);
        assert_eq!((w.end, w.keep), (buf.len(), true));
        assert_eq!(w.response(buf), Cow::Borrowed(&buf[..]));
        // Every shorter prefix is partial: reading goes on.
        for n in 1..buf.len() {
            assert_eq!(framing(&buf[..n]), Framing::Partial, "{n} bytes");
        }
        // Bytes beyond the response are not part of it.
        let mut more = buf.to_vec();
        more.extend_from_slice(b"HTTP/1.1 200");
        assert_eq!(whole(&more).end, buf.len());
    }

    #[test]
    fn connection_headers_and_version_decide_keep() {
        let keep = |buf: &[u8]| whole(buf).keep;
        assert!(!keep(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!keep(
            b"HTTP/1.1 200 OK\r\nconnection: Upgrade, CLOSE\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(!keep(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(keep(
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"
        ));
    }

    #[test]
    fn a_chunked_body_is_whole_after_the_last_chunk_and_trailers() {
        let buf =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nheal\r\n3\r\nthy\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let w = whole(buf);
        assert_eq!((w.end, w.keep), (buf.len(), true));
        // The body check sees "healthy", which no chunk holds alone.
        let response = String::from_utf8(w.response(buf).into_owned()).expect("ascii");
        assert!(response.ends_with("\r\n\r\nhealthy"), "{response:?}");
        for n in 1..buf.len() {
            assert_eq!(framing(&buf[..n]), Framing::Partial, "{n} bytes");
        }
    }

    #[test]
    fn a_coding_with_a_length_or_in_http10_is_framed_but_not_kept() {
        let te_and_length =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        let w = whole(te_and_length);
        assert_eq!((w.end, w.keep), (te_and_length.len(), false));
        let http10 =
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        let w = whole(http10);
        assert_eq!((w.end, w.keep), (http10.len(), false));
    }

    #[test]
    fn bare_lf_line_ends_are_accepted() {
        let buf = b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok";
        let w = whole(buf);
        assert_eq!((w.end, w.keep), (buf.len(), true));
        assert_eq!(framing(&buf[..buf.len() - 1]), Framing::Partial);
        let chunked = b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n2\nok\n0\n\n";
        let w = whole(chunked);
        assert_eq!(w.end, chunked.len());
        assert!(w.response(chunked).ends_with(b"\n\nok"));
        // Mixed: a CRLF head ended by a bare LF.
        assert_eq!(whole(b"HTTP/1.1 204 No Content\r\nServer: x\r\n\n").end, 37);
    }

    #[test]
    fn a_huge_chunk_size_is_partial_or_malformed_never_a_panic() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        // The chunk's data would start after the 16-digit size line.
        let data_at = head.len() + 16 + 2;
        for size in [usize::MAX, usize::MAX - data_at, usize::MAX - data_at - 1] {
            let buf = format!("{head}{size:016x}\r\nok");
            assert!(
                !matches!(framing(buf.as_bytes()), Framing::Whole(_)),
                "{size:x}"
            );
        }
    }

    #[test]
    fn interim_and_bodiless_responses() {
        let buf = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let w = whole(buf);
        assert_eq!((w.start, w.end, w.body.len()), (25, buf.len(), 0));
        assert!(w.response(buf).starts_with(b"HTTP/1.1 204"));
        // 304 has no body although it may carry the length of the one it stands for.
        let buf = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n";
        assert_eq!(whole(buf).end, buf.len());
    }

    #[test]
    fn what_cannot_be_framed() {
        for buf in [
            // No length: the body runs to the connection's end.
            &b"HTTP/1.1 200 OK\r\n\r\nhello"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            b"HTTP/2 200\r\nContent-Length: 0\r\n\r\n",
            b"SSH-2.0-OpenSSH_9.2\r\n",
        ] {
            assert_eq!(
                framing(buf),
                Framing::Unframed,
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
        // A chunk-size line that never ends is malformed, not forever partial.
        let mut endless = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        endless.extend(std::iter::repeat_n(b'0', 2 * MAX_LINE));
        assert_eq!(framing(&endless), Framing::Unframed);
    }
}
