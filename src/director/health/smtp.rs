//! The `smtp` check: the banner must be `220` (RFC 5321 4.2; multi-line `220-...` read to its
//! last line), `EHLO name` must get `250` when `helo` is set, then `QUIT`. Replies are parsed
//! by `reply` (pure); reads are bounded in size and, with the steps, by the check's timeout.

use super::steps::{connect, Bound, ProbeError};
use super::SmtpProbe;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The most read for one reply (a banner, the answer to EHLO with its extensions).
pub const MAX_REPLY: usize = 4096;

/// What the bytes read so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// No last line yet.
    Partial,
    /// A whole reply: its code, its first line (without the line break) and where it ends.
    Whole {
        code: u16,
        first: String,
        end: usize,
    },
    /// A line that does not start with a three-digit code.
    NotSmtp,
}

/// A reply at the start of `buf`: lines `DDD-text` continue it, `DDD text` (or `DDD`) ends it.
pub fn reply(buf: &[u8]) -> Parsed {
    let mut at = 0;
    let mut first = None;
    while let Some(nl) = buf
        .get(at..)
        .and_then(|rest| rest.iter().position(|b| *b == b'\n'))
    {
        let line = &buf[at..at + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        at += nl + 1;
        let code = match line.get(..3) {
            Some(d) if d.iter().all(u8::is_ascii_digit) => {
                d.iter().fold(0u16, |n, b| n * 10 + u16::from(b - b'0'))
            }
            _ => return Parsed::NotSmtp,
        };
        let first = first.get_or_insert_with(|| String::from_utf8_lossy(line).into_owned());
        match line.get(3) {
            Some(b'-') => continue,
            None | Some(b' ') => {
                return Parsed::Whole {
                    code,
                    first: std::mem::take(first),
                    end: at,
                }
            }
            Some(_) => return Parsed::NotSmtp,
        }
    }
    // A line longer than the whole budget cannot be a reply's start either.
    if buf.len() >= MAX_REPLY {
        return Parsed::NotSmtp;
    }
    Parsed::Partial
}

/// Reads one reply (`step`: which, for errors) and requires `want`; bytes after it stay in
/// `buf` for the next reply.
async fn expect<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    addr: SocketAddr,
    step: &'static str,
    want: u16,
) -> Result<(), ProbeError> {
    loop {
        match reply(buf) {
            Parsed::Whole { code, first, end } => {
                buf.drain(..end);
                return judge(code, &first, want).map_err(|line| ProbeError::Smtp {
                    addr,
                    step,
                    want,
                    line,
                });
            }
            Parsed::NotSmtp => return Err(ProbeError::NotSmtp { addr, step }),
            Parsed::Partial => {}
        }
        let room = (MAX_REPLY - buf.len().min(MAX_REPLY)) as u64;
        match (&mut *stream).take(room).read_buf(buf).await {
            Ok(0) => return Err(ProbeError::NoAnswer(addr)),
            Ok(_) => {}
            Err(source) => return Err(ProbeError::Read { addr, source }),
        }
    }
}

/// Err with the reply's first line (at most 120 characters, control characters escaped)
/// unless its code is `want`.
pub fn judge(code: u16, first: &str, want: u16) -> Result<(), String> {
    if code == want {
        return Ok(());
    }
    let line: String = first.chars().take(120).collect();
    Err(line.escape_debug().to_string())
}

/// An `smtp` check.
pub async fn smtp(addr: SocketAddr, probe: &SmtpProbe, bound: &Bound) -> Result<(), ProbeError> {
    let mut stream = bound.run("TCP handshake", addr, connect(addr)).await?;
    let mut buf = Vec::with_capacity(512);
    let banner = expect(&mut stream, &mut buf, addr, "banner", 220);
    bound.run("SMTP banner", addr, banner).await?;
    if let Some(name) = &probe.helo {
        let ehlo = async {
            send(&mut stream, addr, &format!("EHLO {name}\r\n")).await?;
            expect(&mut stream, &mut buf, addr, "reply to EHLO", 250).await
        };
        bound.run("reply to EHLO", addr, ehlo).await?;
    }
    // The verdict is in; QUIT is a courtesy: its 221 is waited for within the timeout, and
    // neither its absence nor its code counts.
    let quit = async {
        send(&mut stream, addr, "QUIT\r\n").await?;
        expect(&mut stream, &mut buf, addr, "reply to QUIT", 221).await
    };
    let _ = bound.until(quit).await;
    Ok(())
}

async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    addr: SocketAddr,
    line: &str,
) -> Result<(), ProbeError> {
    stream
        .write_all(line.as_bytes())
        .await
        .map_err(|source| ProbeError::Send { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(code: u16, first: &str, end: usize) -> Parsed {
        Parsed::Whole {
            code,
            first: first.into(),
            end,
        }
    }

    #[test]
    fn replies_end_at_their_last_line() {
        assert_eq!(
            reply(b"220 mx.example.com ESMTP\r\n"),
            whole(220, "220 mx.example.com ESMTP", 26)
        );
        assert_eq!(reply(b"220\n"), whole(220, "220", 4));
        let multi = b"220-mx.example.com ESMTP\r\n220-no UCE\r\n220 ready\r\n250 next";
        assert_eq!(reply(multi), whole(220, "220-mx.example.com ESMTP", 49));
        assert_eq!(reply(b"220-mx.example.com\r\n220 rea"), Parsed::Partial);
        assert_eq!(reply(b"22"), Parsed::Partial);
        assert_eq!(reply(b""), Parsed::Partial);
        assert_eq!(
            reply(b"554 5.3.2 no service\r\n"),
            whole(554, "554 5.3.2 no service", 22)
        );
        assert_eq!(reply(b"SSH-2.0-OpenSSH_9.2\r\n"), Parsed::NotSmtp);
        assert_eq!(reply(b"220x\r\n"), Parsed::NotSmtp);
        assert_eq!(reply(&[b'2'; MAX_REPLY]), Parsed::NotSmtp);
    }

    #[test]
    fn judges_the_code() {
        assert_eq!(judge(220, "220 ok", 220), Ok(()));
        assert_eq!(
            judge(554, "554 no\tservice", 220),
            Err("554 no\\tservice".into())
        );
        let long = format!("421 {}", "x".repeat(300));
        assert_eq!(judge(421, &long, 220).map_err(|l| l.len()), Err(120));
    }

    /// Over an in-memory pipe: the banner in two writes, EHLO answered in several lines, QUIT.
    #[tokio::test]
    async fn a_conversation_reads_each_reply_whole() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let addr: SocketAddr = "198.51.100.2:25".parse().expect("addr");
        let serve = async move {
            server.write_all(b"220-mx.example.com\r\n").await.ok()?;
            server.write_all(b"220 ready\r\n").await.ok()?;
            let mut line = [0u8; 64];
            let n = server.read(&mut line).await.ok()?;
            server.write_all(b"250-mx\r\n250 8BITMIME\r\n").await.ok()?;
            Some(String::from_utf8_lossy(&line[..n]).into_owned())
        };
        let talk = async {
            let mut buf = Vec::new();
            expect(&mut client, &mut buf, addr, "banner", 220).await?;
            send(&mut client, addr, "EHLO checker\r\n").await?;
            expect(&mut client, &mut buf, addr, "reply to EHLO", 250).await?;
            expect(&mut client, &mut buf, addr, "reply to QUIT", 221).await
        };
        let (said, heard) = tokio::join!(talk, serve);
        assert_eq!(heard.as_deref(), Some("EHLO checker\r\n"));
        // The server closed after the EHLO reply: no reply to QUIT.
        assert_eq!(
            said.map_err(|e| e.to_string()),
            Err("198.51.100.2:25 closed the connection without answering".into())
        );
    }
}
