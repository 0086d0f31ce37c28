//! The DNS messages of a `dns` check (RFC 1035 4.1): one query encoded, one reply decoded and
//! judged. Pure: bytes in, verdict out. The reply is outside input: every read is
//! bounds-checked, compression pointers are followed a bounded number of times, and nothing
//! here panics on any bytes (src/props/dns.rs).

use super::DnsProbe;
use std::net::IpAddr;

/// Header flags of the query: a standard query with recursion desired.
const FLAG_RD: u16 = 0x0100;
const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;
const CLASS_IN: u16 = 1;
/// Compression pointers followed in one name; real replies need a few.
const MAX_JUMPS: usize = 32;
/// A name is at most 255 bytes on the wire (RFC 1035 2.3.4).
const MAX_NAME: usize = 255;

/// The query for `probe` with message id `id`.
pub fn query(id: u16, probe: &DnsProbe) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + probe.name.len() + 1);
    for word in [id, FLAG_RD, 1, 0, 0, 0] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    for label in probe.name.split('.').filter(|l| !l.is_empty()) {
        // Validated: 1..=63 bytes, so the length fits its byte.
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&probe.qtype.code().to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out
}

/// Why a reply does not make the server healthy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsProblem {
    #[error("malformed reply ({0})")]
    Malformed(&'static str),
    #[error("reply id {got} does not match the query's {want}")]
    Id { got: u16, want: u16 },
    #[error("a query, not a reply (QR not set)")]
    NotReply,
    #[error("reply is for another question")]
    Question,
    #[error("RCODE {}", rcode_name(*.0))]
    Rcode(u8),
    #[error("reply truncated (TC) with no answer record; rs-agent does not retry over TCP")]
    Truncated,
    #[error("no answer record")]
    NoAnswer,
    #[error("answer does not contain {0}")]
    Address(IpAddr),
}

/// The mnemonic of a response code (RFC 1035 4.1.1, RFC 2136).
fn rcode_name(rcode: u8) -> String {
    let name = match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        other => return other.to_string(),
    };
    name.to_string()
}

/// One answer record: its type and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub rtype: u16,
    pub data: &'a [u8],
}

/// The parts of a reply a check judges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<'a> {
    pub id: u16,
    pub flags: u16,
    /// The first question, when there is one: (name in lower case, type, class).
    pub question: Option<(String, u16, u16)>,
    pub answers: Vec<Record<'a>>,
}

impl Reply<'_> {
    pub fn rcode(&self) -> u8 {
        (self.flags & 0x000f) as u8
    }
}

/// Bounds-checked reading from a message.
struct Cursor<'a> {
    msg: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DnsProblem> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.msg.len());
        let end = end.ok_or(DnsProblem::Malformed("cut short"))?;
        let bytes = &self.msg[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn u16(&mut self) -> Result<u16, DnsProblem> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Reads a (possibly compressed) name at the cursor, moving past it; returns it in lower
    /// case with dots between labels ("" for the root).
    fn name(&mut self) -> Result<String, DnsProblem> {
        let (name, end) = read_name(self.msg, self.at)?;
        self.at = end;
        Ok(name)
    }
}

/// The name at `start` and where it ends in the message (after its first pointer, if any).
fn read_name(msg: &[u8], start: usize) -> Result<(String, usize), DnsProblem> {
    let mut name = String::new();
    let mut at = start;
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(at).ok_or(DnsProblem::Malformed("name cut short"))?;
        match len & 0xc0 {
            0x00 if len == 0 => break,
            0x00 => {
                let label = msg
                    .get(at + 1..at + 1 + len as usize)
                    .ok_or(DnsProblem::Malformed("label cut short"))?;
                if !name.is_empty() {
                    name.push('.');
                }
                name.extend(label.iter().map(|b| b.to_ascii_lowercase() as char));
                if name.len() > MAX_NAME {
                    return Err(DnsProblem::Malformed("name longer than 255 bytes"));
                }
                at += 1 + len as usize;
            }
            0xc0 => {
                let low = *msg
                    .get(at + 1)
                    .ok_or(DnsProblem::Malformed("pointer cut short"))?;
                end.get_or_insert(at + 2);
                jumps += 1;
                if jumps > MAX_JUMPS {
                    return Err(DnsProblem::Malformed("compression loop"));
                }
                at = (usize::from(len & 0x3f) << 8) | usize::from(low);
            }
            _ => return Err(DnsProblem::Malformed("unknown label type")),
        }
    }
    Ok((name, end.unwrap_or(at + 1)))
}

/// Decodes a reply: the header, the first question, the answer records (the authority and
/// additional sections are not read).
pub fn parse(msg: &[u8]) -> Result<Reply<'_>, DnsProblem> {
    let mut c = Cursor { msg, at: 0 };
    let id = c.u16()?;
    let flags = c.u16()?;
    let (qdcount, ancount) = (c.u16()?, c.u16()?);
    c.take(4)?;
    let mut question = None;
    for _ in 0..qdcount {
        let name = c.name()?;
        let (qtype, qclass) = (c.u16()?, c.u16()?);
        question.get_or_insert((name, qtype, qclass));
    }
    // Each record takes at least 11 bytes: a count beyond what the message holds is malformed,
    // and is found so before any allocation follows it.
    let mut answers = Vec::with_capacity(usize::from(ancount).min(msg.len() / 11));
    for _ in 0..ancount {
        c.name()?;
        let rtype = c.u16()?;
        c.take(6)?;
        let len = c.u16()?;
        answers.push(Record {
            rtype,
            data: c.take(usize::from(len))?,
        });
    }
    Ok(Reply {
        id,
        flags,
        question,
        answers,
    })
}

/// Judges a reply to the query with id `id` for `probe`.
pub fn judge(msg: &[u8], id: u16, probe: &DnsProbe) -> Result<(), DnsProblem> {
    let reply = parse(msg)?;
    if reply.id != id {
        return Err(DnsProblem::Id {
            got: reply.id,
            want: id,
        });
    }
    if reply.flags & FLAG_QR == 0 {
        return Err(DnsProblem::NotReply);
    }
    let asked = (
        probe.name.trim_end_matches('.').to_ascii_lowercase(),
        probe.qtype.code(),
        CLASS_IN,
    );
    if reply.question.as_ref().is_some_and(|q| *q != asked) {
        return Err(DnsProblem::Question);
    }
    if reply.rcode() != 0 {
        return Err(DnsProblem::Rcode(reply.rcode()));
    }
    if reply.answers.is_empty() {
        return Err(if reply.flags & FLAG_TC != 0 {
            DnsProblem::Truncated
        } else {
            DnsProblem::NoAnswer
        });
    }
    if let Some(want) = probe.expect {
        let found = reply.answers.iter().any(|r| match (r.rtype, r.data.len()) {
            (1, 4) | (28, 16) => address(r.data) == Some(want),
            _ => false,
        });
        if !found {
            return Err(DnsProblem::Address(want));
        }
    }
    Ok(())
}

/// The address in an A (4 bytes) or AAAA (16 bytes) record's data.
fn address(data: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(data) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(data).ok().map(IpAddr::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::director::health::DnsType;

    fn probe(name: &str, qtype: DnsType, expect: Option<&str>) -> DnsProbe {
        DnsProbe {
            name: name.into(),
            qtype,
            expect: expect.map(|a| a.parse().expect("address")),
        }
    }

    #[test]
    fn a_query_is_byte_exact() {
        let q = query(0xbeef, &probe("www.example.com", DnsType::A, None));
        let want: &[u8] = b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\
            \x03www\x07example\x03com\x00\x00\x01\x00\x01";
        assert_eq!(q, want);
        let root = query(1, &probe("", DnsType::Ns, None));
        assert_eq!(&root[12..], b"\x00\x00\x02\x00\x01");
        let srv = query(2, &probe("_sip._udp.example.com", DnsType::Srv, None));
        assert_eq!(&srv[12..18], b"\x04_sip\x04");
        assert_eq!(&srv[srv.len() - 4..], b"\x00\x21\x00\x01");
    }

    /// A reply to `www.example.com A` laid out as a recursive resolver sends one: the
    /// question, a CNAME and an A record whose names are compression pointers (one to a name
    /// inside the CNAME's data), and an authority NS record the check does not read.
    const CAPTURED: &[u8] = b"\xbe\xef\x81\x80\x00\x01\x00\x02\x00\x01\x00\x00\
        \x03www\x07example\x03com\x00\x00\x01\x00\x01\
        \xc0\x0c\x00\x05\x00\x01\x00\x00\x0e\x10\x00\x06\x03web\xc0\x10\
        \xc0\x2d\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04\xc0\x00\x02\x0a\
        \xc0\x10\x00\x02\x00\x01\x00\x00\x0e\x10\x00\x05\x02ns\xc0\x10";

    #[test]
    fn a_captured_reply_is_parsed() {
        let reply = parse(CAPTURED).expect("parsed");
        assert_eq!((reply.id, reply.rcode()), (0xbeef, 0));
        assert_eq!(reply.question, Some(("www.example.com".into(), 1, 1)));
        assert_eq!(
            reply.answers,
            vec![
                Record {
                    rtype: 5,
                    data: b"\x03web\xc0\x10"
                },
                Record {
                    rtype: 1,
                    data: &[192, 0, 2, 10]
                },
            ]
        );
        assert_eq!(
            read_name(CAPTURED, 0x2d).map(|(n, _)| n),
            Ok("web.example.com".into())
        );
    }

    #[test]
    fn judges_id_flags_rcode_answers_and_address() {
        let www = |expect| probe("WWW.example.com.", DnsType::A, expect);
        let judge = |msg: &[u8], id, p: &DnsProbe| judge(msg, id, p).map_err(|e| e.to_string());
        assert_eq!(judge(CAPTURED, 0xbeef, &www(None)), Ok(()));
        assert_eq!(judge(CAPTURED, 0xbeef, &www(Some("192.0.2.10"))), Ok(()));
        assert_eq!(
            judge(CAPTURED, 0xbeef, &www(Some("192.0.2.11"))),
            Err("answer does not contain 192.0.2.11".into())
        );
        assert_eq!(
            judge(CAPTURED, 1, &www(None)),
            Err("reply id 48879 does not match the query's 1".into())
        );
        assert_eq!(
            judge(CAPTURED, 0xbeef, &probe("example.com", DnsType::A, None)),
            Err("reply is for another question".into())
        );
        let mut nx = CAPTURED[..33].to_vec();
        nx[3] = 0x83; // RCODE 3
        nx[7] = 0; // no answers
        nx[9] = 0;
        assert_eq!(judge(&nx, 0xbeef, &www(None)), Err("RCODE NXDOMAIN".into()));
        nx[3] = 0x80;
        assert_eq!(
            judge(&nx, 0xbeef, &www(None)),
            Err("no answer record".into())
        );
        nx[2] |= 0x02;
        assert!(judge(&nx, 0xbeef, &www(None)).is_err_and(|e| e.contains("truncated (TC)")));
        let q = query(7, &www(None));
        assert_eq!(
            judge(&q, 7, &www(None)),
            Err("a query, not a reply (QR not set)".into())
        );
    }

    #[test]
    fn malformed_replies_are_errors() {
        let cut = &CAPTURED[..60];
        assert_eq!(parse(cut), Err(DnsProblem::Malformed("cut short")));
        assert!(parse(&CAPTURED[..5]).is_err());
        // A pointer to itself.
        let mut looped = CAPTURED[..12].to_vec();
        looped.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01");
        assert_eq!(
            parse(&looped),
            Err(DnsProblem::Malformed("compression loop"))
        );
        // A count of answers the message cannot hold.
        let mut many = CAPTURED[..33].to_vec();
        many[6] = 0xff;
        many[7] = 0xff;
        assert!(parse(&many).is_err());
    }
}
