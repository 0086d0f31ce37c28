//! The keys of the udp, dns and smtp checks → their probes: a UDP payload and what the reply
//! must contain, a DNS question and the address its answer must hold, an SMTP client name.
//!
//! Owns the values of these keys only; which keys a type takes, and the check's timing, are
//! `check`'s.

use crate::config_file::director::RawCheck;
use crate::config_file::{ConfigError, ConfigFile};
use crate::director::health::{DnsProbe, DnsType, SmtpProbe, UdpProbe};
use std::net::IpAddr;
use toml::Spanned;

/// The largest payload or expected reply: one datagram that fits a 1500-byte MTU.
pub(super) const MAX_DATAGRAM: usize = 1400;

/// `payload`/`payload_hex`, `expect`/`expect_hex`, `expect_reply` → a udp probe.
pub(super) fn udp(file: &ConfigFile, raw: &RawCheck) -> Result<UdpProbe, ConfigError> {
    let payload = bytes(file, &raw.payload, &raw.payload_hex, "payload")?.unwrap_or_default();
    let expect = bytes(file, &raw.expect, &raw.expect_hex, "expect")?;
    let expect_reply = raw.expect_reply.as_ref().is_none_or(|r| *r.get_ref());
    if let (false, Some(v)) = (
        expect_reply,
        raw.expect.as_ref().or(raw.expect_hex.as_ref()),
    ) {
        return Err(file.err_at(
            v,
            "a reply cannot contain what is expected when none is (expect_reply = false); \
             remove it or set expect_reply = true",
        ));
    }
    Ok(UdpProbe {
        payload,
        expect,
        expect_reply,
    })
}

/// A text key or its `_hex` twin (`what`: the text key's name): at most one, as bytes.
fn bytes(
    file: &ConfigFile,
    text: &Option<Spanned<String>>,
    hex: &Option<Spanned<String>>,
    what: &str,
) -> Result<Option<Vec<u8>>, ConfigError> {
    let (value, bytes) = match (text, hex) {
        (Some(_), Some(h)) => {
            return Err(file.err_at(
                h,
                format!("{what} and {what}_hex are two forms of one value; keep one"),
            ))
        }
        (Some(t), None) => (t, t.get_ref().as_bytes().to_vec()),
        (None, Some(h)) => (h, from_hex(h.get_ref()).map_err(|m| file.err_at(h, m))?),
        (None, None) => return Ok(None),
    };
    if bytes.len() > MAX_DATAGRAM {
        return Err(file.err_at(
            value,
            format!(
                "{what} is {} bytes; at most {MAX_DATAGRAM} fit one datagram",
                bytes.len()
            ),
        ));
    }
    Ok(Some(bytes))
}

/// Hex digits, two a byte (`"0a1B"`); spaces between bytes are allowed.
pub(super) fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b' ').collect();
    let bad = || format!("{text:?} is not hex bytes; write two hex digits a byte, e.g. \"0a1b\"");
    if digits.len() % 2 != 0 {
        return Err(bad());
    }
    digits
        .chunks(2)
        .map(|pair| {
            let digit = |b: u8| (b as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(hi), Some(lo)) => Ok((hi * 16 + lo) as u8),
                _ => Err(bad()),
            }
        })
        .collect()
}

/// `query_name`, `query_type`, `expect` → a dns probe (`at`: the check's `type`, for a missing
/// `query_name`).
pub(super) fn dns(
    file: &ConfigFile,
    raw: &RawCheck,
    at: &Spanned<String>,
) -> Result<DnsProbe, ConfigError> {
    let name = raw.query_name.as_ref().ok_or_else(|| {
        file.err_at(
            at,
            "a dns check needs query_name = \"www.example.com\" (the name to ask for)",
        )
    })?;
    let qtype = match &raw.query_type {
        None => DnsType::A,
        Some(t) => DnsType::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(t.get_ref()))
            .ok_or_else(|| {
                file.err_at(
                    t,
                    format!(
                        "unknown query_type {:?}; expected A, AAAA, NS, MX, TXT, SOA, CNAME, PTR or SRV",
                        t.get_ref()
                    ),
                )
            })?,
    };
    let expect = raw
        .expect
        .as_ref()
        .map(|e| dns_expect(file, e, qtype))
        .transpose()?;
    Ok(DnsProbe {
        name: dns_name(name.get_ref()).map_err(|m| file.err_at(name, m))?,
        qtype,
        expect,
    })
}

/// The address a dns check's answer must hold: of the query type's family.
fn dns_expect(
    file: &ConfigFile,
    v: &Spanned<String>,
    qtype: DnsType,
) -> Result<IpAddr, ConfigError> {
    let addr: IpAddr = v.get_ref().parse().map_err(|_| {
        file.err_at(
            v,
            format!("expect {:?} is not an address; a dns check's expect is the address the answer must hold", v.get_ref()),
        )
    })?;
    match (qtype, addr) {
        (DnsType::A, IpAddr::V4(_)) | (DnsType::Aaaa, IpAddr::V6(_)) => Ok(addr),
        (DnsType::A | DnsType::Aaaa, _) => Err(file.err_at(
            v,
            format!(
                "expect {addr} cannot be in the answer to an {} query; use query_type = \"{}\"",
                qtype.name(),
                if addr.is_ipv4() { "A" } else { "AAAA" }
            ),
        )),
        _ => Err(file.err_at(
            v,
            format!(
                "expect applies to A and AAAA queries, not {}; remove it",
                qtype.name()
            ),
        )),
    }
}

/// A name a query can carry: labels of 1..=63 letters, digits, `-` or `_`, 253 bytes in all;
/// one trailing dot allowed, "." is the root. Returned without the trailing dot.
pub(super) fn dns_name(name: &str) -> Result<String, String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if name == "." {
        return Ok(String::new());
    }
    let bad = |why: &str| {
        format!("query_name {name:?} is not a DNS name ({why}); e.g. \"www.example.com\"")
    };
    if bare.is_empty() || bare.len() > 253 {
        return Err(bad("1 to 253 characters"));
    }
    for label in bare.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("each label 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("letters, digits, - and _ only"));
        }
    }
    Ok(bare.to_string())
}

/// `helo` → an smtp probe.
pub(super) fn smtp(file: &ConfigFile, raw: &RawCheck) -> Result<SmtpProbe, ConfigError> {
    let helo = match &raw.helo {
        None => None,
        Some(h) => {
            let name = h.get_ref();
            if name.is_empty()
                || name.len() > 255
                || name.contains(|c: char| c.is_whitespace() || c.is_control() || !c.is_ascii())
            {
                return Err(file.err_at(
                    h,
                    format!("helo {name:?} must be a host name, e.g. \"director.example.com\" (no spaces, sent as EHLO's argument)"),
                ));
            }
            Some(name.clone())
        }
    };
    Ok(SmtpProbe { helo })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_names() {
        assert_eq!(from_hex("0a1B ff"), Ok(vec![0x0a, 0x1b, 0xff]));
        assert_eq!(from_hex(""), Ok(vec![]));
        assert!(from_hex("abc").is_err());
        assert!(from_hex("zz").is_err());
        assert_eq!(dns_name("WWW.example.com."), Ok("WWW.example.com".into()));
        assert_eq!(dns_name("."), Ok(String::new()));
        assert_eq!(
            dns_name("_sip._udp.example.com"),
            Ok("_sip._udp.example.com".into())
        );
        for bad in [
            "",
            "a..b",
            "a b",
            "..",
            &"a".repeat(64),
            &["a"; 128].join("."),
        ] {
            assert!(dns_name(bad).is_err(), "{bad:?}");
        }
    }
}
