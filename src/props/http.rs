//! The health checks' HTTP/1.x response framing and judging, on what a real server (or
//! anything listening on its port) could answer.

use crate::director::health::http::{framing, head_len, Framing};
use crate::director::health::probe::{judge, status_code};
use crate::director::health::HttpProbe;
use proptest::prelude::*;

const STATUS_LINES: &[&str] = &[
    "HTTP/1.1 200 OK",
    "HTTP/1.0 200 OK",
    "HTTP/1.1 100 Continue",
    "HTTP/1.1 103 Early Hints",
    "HTTP/1.1 101 Switching Protocols",
    "HTTP/1.1 204 No Content",
    "HTTP/1.1 304 Not Modified",
    "HTTP/1.1 503 Unavailable",
    "HTTP/1.1 99999 Big",
    "HTTP/1.1 -1 Neg",
    "HTTP/1.1",
    "HTTP/2 200",
    "HTTP/1.",
    "HTTP/1.1 200",
    "http/1.1 200 OK",
    "",
];

const HEADERS: &[&str] = &[
    "Content-Length: 0",
    "Content-Length: 5",
    "Content-Length: 18446744073709551615",
    "Content-Length: 18446744073709551616",
    "Content-Length: -1",
    "Content-Length: 5, 5",
    "Content-Length: 6",
    "Transfer-Encoding: chunked",
    "Transfer-Encoding: gzip, chunked",
    "Transfer-Encoding: chunked, gzip",
    "Transfer-Encoding: gzip",
    "Connection: close",
    "Connection: keep-alive",
    "Connection: Keep-Alive, close",
    "Content-Type: text/plain",
    "NoColon",
    ": empty name",
    "X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
];

const BODIES: &[&str] = &[
    "",
    "hello",
    "5\r\nhello\r\n0\r\n\r\n",
    "5\nhello\n0\n\n",
    "5;ext=1\r\nhello\r\n0\r\nT: x\r\n\r\n",
    "ffffffffffffffff\r\nx",
    "fffffffffffffffff\r\n",
    "0\r\n",
    "0\r\n\r\n",
    "z\r\n",
    "5\r\nhelloXX",
    "3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n",
    "\r\n",
    "HTTP/1.1 200 OK\r\n\r\n",
];

/// An HTTP/1.x-shaped response: a status line, headers, line ends CRLF or bare LF, a body.
fn response() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(proptest::sample::select(STATUS_LINES), 1..3),
        proptest::collection::vec(proptest::sample::select(HEADERS), 0..5),
        proptest::bool::ANY,
        proptest::sample::select(BODIES),
        proptest::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(|(status, headers, crlf, body, tail)| {
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut text = String::new();
            // Several status lines: interim responses before the final one.
            for s in &status[..status.len() - 1] {
                text.push_str(&format!("{s}{eol}{eol}"));
            }
            text.push_str(status[status.len() - 1]);
            text.push_str(eol);
            for h in headers {
                text.push_str(&format!("{h}{eol}"));
            }
            text.push_str(eol);
            text.push_str(body);
            let mut bytes = text.into_bytes();
            bytes.extend(tail);
            bytes
        })
}

fn probe(body: Option<&str>) -> HttpProbe {
    HttpProbe {
        path: "/".into(),
        status: 200,
        body: body.map(str::to_string),
        host: None,
        reuse_connection: false,
    }
}

/// Framing's verdict is consistent with the bytes, and judging never panics.
fn check(buf: &[u8]) {
    assert!(head_len(buf).is_none_or(|n| n <= buf.len()));
    let _ = status_code(buf);
    for body in [None, Some("hello"), Some("")] {
        let _ = judge(buf, &probe(body));
    }
    let Framing::Whole(whole) = framing(buf) else {
        return;
    };
    assert!(whole.start <= whole.head_end && whole.head_end <= whole.end);
    assert!(whole.end <= buf.len(), "{whole:?} past {} bytes", buf.len());
    let mut at = whole.head_end;
    for range in &whole.body {
        assert!(at <= range.start && range.start <= range.end && range.end <= whole.end);
        at = range.end;
    }
    let response = whole.response(buf);
    for body in [None, Some("hello")] {
        let _ = judge(&response, &probe(body));
    }
    // The end is told by the bytes before it: the response alone frames the same, and no
    // shorter prefix of it is whole.
    assert_eq!(
        framing(&buf[..whole.end]),
        Framing::Whole(whole_clone(&whole))
    );
    for cut in [
        whole.end.saturating_sub(1),
        whole.head_end.saturating_sub(1),
        whole.start,
    ] {
        if cut < whole.end {
            let verdict = framing(&buf[..cut]);
            assert!(
                !matches!(verdict, Framing::Whole(_)),
                "{:?} is whole at {cut} and at {}",
                String::from_utf8_lossy(buf),
                whole.end
            );
        }
    }
}

fn whole_clone(w: &crate::director::health::http::Whole) -> crate::director::health::http::Whole {
    crate::director::health::http::Whole {
        start: w.start,
        head_end: w.head_end,
        end: w.end,
        body: w.body.clone(),
        keep: w.keep,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn http_shaped_responses_frame_consistently(buf in response()) {
        check(&buf);
    }

    #[test]
    fn arbitrary_bytes_never_panic_framing_or_judging(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
        check(&buf);
        let mut prefixed = b"HTTP/1.1 200 OK\r\n".to_vec();
        prefixed.extend_from_slice(&buf);
        check(&prefixed);
    }
}
