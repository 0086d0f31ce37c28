//! Namespace tier for the udp, dns, icmp and smtp checks, on this machine's kernel (no IPVS
//! needed: checking is the director's half that runs without it). Each test makes a namespace
//! holding a real server's address on `lo`, runs servers the test writes (UDP echo, DNS, SMTP
//! banner) in it, and checks them from a thread inside it: the verdict and the reason of each
//! check (`health::probe::check`, what `director run`'s check tasks call), and for one type
//! the checking half of `director run` as a whole (`director::run::check_only`) taking a
//! stopped server out and bringing it back.

mod common;

use common::{in_netns, require_privileges, Netns};
use rs_agent::config_file::ConfigFile;
use rs_agent::director::health::probe::{self, Reason, Session};
use rs_agent::director::health::{HealthCheck, Target};
use rs_agent::director::{self, run::CheckTally};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

const RS: &str = "198.51.100.2";
const RS6: &str = "2001:db8::2";

/// A namespace with the real server's addresses on `lo`.
fn server_ns(test: &str) -> Netns {
    let ns = Netns::new(test, "rs");
    ns.exec(&["ip", "addr", "add", &format!("{RS}/32"), "dev", "lo"]);
    ns.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{RS6}/128"),
        "dev",
        "lo",
        "nodad",
    ]);
    ns
}

/// The check of a one-service config whose `[director.service.check]` is `check`, and the
/// real server it points at (`rs`: an address, `port`: the service's port).
fn check_of(
    rs: &str,
    port: u16,
    check: &str,
) -> (Target, HealthCheck, director::config::DirectorDesired) {
    let vip = if rs.contains(':') {
        "2001:db8::100"
    } else {
        "192.0.2.100"
    };
    let real = if rs.contains(':') {
        format!("[{rs}]:{port}")
    } else {
        format!("{rs}:{port}")
    };
    let config =
        format!(
        "[director]\ninterface = \"lo\"\n\n[[director.service]]\nvip = \"{vip}\"\nport = {port}\n\
         protocol = \"{}\"\nreals = [\"{real}\"]\n\n[director.service.check]\n{check}\n",
        if check.contains("\"smtp\"") { "tcp" } else { "udp" }
    );
    let file = ConfigFile::parse(None, config).expect("config");
    let desired = director::config::director(&file, &Default::default()).expect("valid config");
    let targets = director::health::targets(&desired);
    let (target, check) = targets.into_iter().next().expect("one checked real server");
    (target, check, desired)
}

/// One check: Ok, or the reason and the message.
async fn verdict(target: &Target, check: &HealthCheck) -> Result<(), (Reason, String)> {
    probe::check(target, check, &mut Session::default())
        .await
        .map_err(|e| (e.reason(), e.to_string()))
}

/// Asserts a failure of `reason` whose message contains `words`.
fn assert_fails(got: &Result<(), (Reason, String)>, reason: Reason, words: &str, what: &str) {
    match got {
        Err((r, msg)) if *r == reason && msg.contains(words) => {}
        other => panic!("{what}: want {reason:?} with {words:?}, got {other:?}"),
    }
}

/// Waits (polling, bounded at 10 s) until `done`; the caller asserts what it waited for.
async fn wait_for(done: impl Fn() -> bool) {
    let since = Instant::now();
    while !done() && since.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A UDP echo server: replies with what it got (`mode` 0), with something else (1), or not
/// at all (2). Counts datagrams.
async fn udp_echo(socket: UdpSocket, mode: Arc<AtomicUsize>, seen: Arc<AtomicU64>) {
    let mut buf = [0u8; 2048];
    while let Ok((n, from)) = socket.recv_from(&mut buf).await {
        seen.fetch_add(1, Ordering::SeqCst);
        let reply: &[u8] = match mode.load(Ordering::SeqCst) {
            0 => &buf[..n],
            1 => b"-ERR unknown\r\n",
            _ => continue,
        };
        let _ = socket.send_to(reply, from).await;
    }
}

/// A UDP echo server on `port` of the real server; aborting the handle stops it.
async fn start_udp_echo(
    port: u16,
    mode: Arc<AtomicUsize>,
    seen: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let socket = UdpSocket::bind((RS, port)).await.expect("udp server");
    tokio::spawn(udp_echo(socket, mode, seen))
}

#[test]
fn udp_checks_pass_on_a_reply_and_fail_on_a_wrong_one_or_port_unreachable() {
    require_privileges!();
    let ns = server_ns("udp");
    in_netns(&ns, |rt| {
        rt.block_on(async {
            let (target, check, _) = check_of(
                RS,
                7000,
                "type = \"udp\"\npayload = \"PING rs-agent\"\nexpect = \"PING\"\ntimeout_ms = 1000",
            );
            let (_, silent_ok, _) = check_of(
                RS,
                7000,
                "type = \"udp\"\npayload_hex = \"00ff\"\nexpect_reply = false\ntimeout_ms = 300",
            );
            let socket = UdpSocket::bind((RS, 7000)).await.expect("udp server");
            let (mode, seen) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicU64::new(0)));
            let server = tokio::spawn(udp_echo(socket, mode.clone(), seen.clone()));
            assert_eq!(verdict(&target, &check).await, Ok(()), "echoing server");
            mode.store(1, Ordering::SeqCst);
            let got = verdict(&target, &check).await;
            assert_fails(
                &got,
                Reason::Body,
                "UDP reply from 198.51.100.2:7000 does not contain \"PING\"",
                "wrong reply",
            );
            // A silent server: the check with a reply expected times out, naming the step;
            // the one without passes (no ICMP error).
            mode.store(2, Ordering::SeqCst);
            let got = verdict(&target, &check).await;
            assert_fails(
                &got,
                Reason::Timeout,
                "no UDP reply from 198.51.100.2:7000 within 1000 ms",
                "silent",
            );
            assert_eq!(
                verdict(&target, &silent_ok).await,
                Ok(()),
                "silent, no reply expected"
            );
            let before = seen.load(Ordering::SeqCst);
            assert!(
                before >= 4,
                "the server saw every check's datagram: {before}"
            );
            // Stopped: the kernel answers ICMP port unreachable, which fails both.
            server.abort();
            let _ = server.await;
            let got = verdict(&target, &check).await;
            assert_fails(&got, Reason::Refused, "ICMP port unreachable", "stopped");
            let got = verdict(&target, &silent_ok).await;
            assert_fails(
                &got,
                Reason::Refused,
                "ICMP port unreachable",
                "stopped, no reply expected",
            );
        })
    });
}

/// The checking half of `director run` on a udp check: a stopped server is taken out after
/// `fall` checks, a restarted one comes back after `rise`.
#[test]
fn a_stopped_udp_server_is_taken_out_and_comes_back() {
    require_privileges!();
    let ns = server_ns("udprun");
    let flips = in_netns(&ns, |rt| {
        rt.block_on(async {
            let (_, _, desired) = check_of(
                RS,
                7001,
                "type = \"udp\"\npayload = \"hello\"\ninterval_ms = 200\ntimeout_ms = 200\nrise = 1\nfall = 2",
            );
            let tally = CheckTally::default();
            let (mode, seen) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicU64::new(0)));
            let start = || start_udp_echo(7001, mode.clone(), seen.clone());
            let script = async {
                let server = start().await;
                wait_for(|| tally.ok.get() >= 3).await;
                let healthy = (tally.ok.get(), tally.flips.get());
                server.abort();
                let _ = server.await;
                wait_for(|| tally.flips.get() >= 1).await;
                let down = tally.flips.get();
                let server = start().await;
                wait_for(|| tally.flips.get() >= 2).await;
                server.abort();
                (healthy, down, tally.flips.get())
            };
            director::run::check_only(&desired, 16, &tally, script).await
        })
    });
    let ((ok, flips_while_healthy), down, up) = flips;
    assert!(
        ok >= 3 && flips_while_healthy == 0,
        "healthy server: {flips:?}"
    );
    assert_eq!(down, 1, "the stopped server was not taken out: {flips:?}");
    assert_eq!(up, 2, "the restarted server did not come back: {flips:?}");
}

/// `www.example.com` as a query's question carries it.
const WWW: &[u8] = b"\x03www\x07example\x03com\x00";

/// A DNS server for one name: answers its A query with 192.0.2.10 (`mode` 0), with
/// 192.0.2.99 (1), NXDOMAIN (2), or not at all (3); any other name NXDOMAIN.
async fn dns_server(socket: UdpSocket, mode: Arc<AtomicUsize>) {
    let mut buf = [0u8; 512];
    while let Ok((n, from)) = socket.recv_from(&mut buf).await {
        let query = &buf[..n];
        let Some(question) = query.get(12..) else {
            continue;
        };
        let ours =
            question.starts_with(WWW) && question.get(WWW.len()..) == Some(b"\x00\x01\x00\x01");
        let mode = mode.load(Ordering::SeqCst);
        let (rcode, answer) = match (ours, mode) {
            (_, 3) => continue,
            (true, 0) => (0u8, Some([192, 0, 2, 10])),
            (true, 1) => (0, Some([192, 0, 2, 99])),
            _ => (3, None),
        };
        let mut reply = query[..2].to_vec();
        reply.extend_from_slice(&[
            0x85,
            0x80 | rcode,
            0,
            1,
            0,
            u8::from(answer.is_some()),
            0,
            0,
            0,
            0,
        ]);
        reply.extend_from_slice(question);
        if let Some(addr) = answer {
            reply.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04");
            reply.extend_from_slice(&addr);
        }
        let _ = socket.send_to(&reply, from).await;
    }
}

#[test]
fn dns_checks_pass_on_the_answer_and_fail_on_nxdomain_a_wrong_address_or_silence() {
    require_privileges!();
    let ns = server_ns("dns");
    in_netns(&ns, |rt| {
        rt.block_on(async {
            let check = |name: &str, extra: &str| {
                let body =
                    format!("type = \"dns\"\nquery_name = \"{name}\"\ntimeout_ms = 1000\n{extra}");
                check_of(RS, 53, &body)
            };
            let (target, any, _) = check("www.example.com", "");
            let (_, addr, _) = check("www.example.com", "expect = \"192.0.2.10\"");
            let (_, other, _) = check("mail.example.com", "");
            let socket = UdpSocket::bind((RS, 53)).await.expect("dns server");
            let mode = Arc::new(AtomicUsize::new(0));
            let server = tokio::spawn(dns_server(socket, mode.clone()));
            assert_eq!(verdict(&target, &any).await, Ok(()), "answering");
            assert_eq!(
                verdict(&target, &addr).await,
                Ok(()),
                "answering the address"
            );
            let got = verdict(&target, &other).await;
            assert_fails(
                &got,
                Reason::Dns,
                "DNS reply from 198.51.100.2:53: RCODE NXDOMAIN",
                "another name",
            );
            mode.store(1, Ordering::SeqCst);
            assert_eq!(verdict(&target, &any).await, Ok(()), "any address will do");
            let got = verdict(&target, &addr).await;
            assert_fails(
                &got,
                Reason::Dns,
                "answer does not contain 192.0.2.10",
                "wrong address",
            );
            mode.store(2, Ordering::SeqCst);
            let got = verdict(&target, &any).await;
            assert_fails(&got, Reason::Dns, "RCODE NXDOMAIN", "NXDOMAIN");
            mode.store(3, Ordering::SeqCst);
            let got = verdict(&target, &any).await;
            assert_fails(
                &got,
                Reason::Timeout,
                "no DNS reply from 198.51.100.2:53 within 1000 ms",
                "silent",
            );
            server.abort();
            let _ = server.await;
            let got = verdict(&target, &any).await;
            assert_fails(&got, Reason::Refused, "ICMP port unreachable", "stopped");
        })
    });
}

/// ICMP echo over IPv4 and IPv6, on a raw socket (the namespace's ping_group_range lets no
/// group have ping sockets) and then on ping sockets (a range covering root's group); an
/// address without a route fails at once, one whose requests are dropped by nft times out.
#[test]
fn icmp_checks_pass_on_an_echo_reply_and_fail_when_unreachable_or_dropped() {
    require_privileges!();
    let ns = server_ns("icmp");
    let check = |rs: &str| check_of(rs, 80, "type = \"icmp\"\ntimeout_ms = 1000");
    let ((v4, c4, _), (v6, c6, _)) = (check(RS), check(RS6));
    let (none, cnone, _) = check("203.0.113.9");
    let run = |what: &'static str| {
        let (v4, c4, v6, c6, none, cnone) = (
            v4.clone(),
            c4.clone(),
            v6.clone(),
            c6.clone(),
            none.clone(),
            cnone.clone(),
        );
        in_netns(&ns, move |rt| {
            rt.block_on(async move {
                assert_eq!(verdict(&v4, &c4).await, Ok(()), "{what}: IPv4 echo");
                assert_eq!(verdict(&v6, &c6).await, Ok(()), "{what}: IPv6 echo");
                let got = verdict(&none, &cnone).await;
                assert_fails(&got, Reason::Connect, "ICMP echo to 203.0.113.9", what);
                // Several checks of one address at once: each gets its own reply.
                let many = futures::future::join_all((0..8).map(|_| verdict(&v4, &c4))).await;
                assert!(
                    many.iter().all(Result::is_ok),
                    "{what}: concurrent: {many:?}"
                );
            })
        })
    };
    assert_eq!(ns.sysctl_get("net.ipv4.ping_group_range"), "1\t0");
    run("raw socket");
    ns.sysctl("net.ipv4.ping_group_range", "0 2147483647");
    run("ping socket");
    for rule in [
        "add table inet rsatest",
        "add chain inet rsatest input { type filter hook input priority 0 ; }",
        "add rule inet rsatest input icmp type echo-request drop",
        "add rule inet rsatest input icmpv6 type echo-request drop",
    ] {
        ns.exec(&["nft", rule]);
    }
    let (v4, c4, v6, c6) = (v4.clone(), c4.clone(), v6.clone(), c6.clone());
    in_netns(&ns, move |rt| {
        rt.block_on(async move {
            let got = verdict(&v4, &c4).await;
            assert_fails(
                &got,
                Reason::Timeout,
                "no echo reply from 198.51.100.2 within 1000 ms",
                "dropped v4",
            );
            let got = verdict(&v6, &c6).await;
            assert_fails(
                &got,
                Reason::Timeout,
                "no echo reply from 2001:db8::2 within 1000 ms",
                "dropped v6",
            );
        })
    });
}

/// An SMTP server: a multi-line `220` banner (`code` 220) or `554`, `250` to EHLO, `221` to
/// QUIT (counted).
async fn smtp_server(listener: TcpListener, code: Arc<AtomicUsize>, quits: Arc<AtomicU64>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let (code, quits) = (code.clone(), quits.clone());
        tokio::spawn(async move {
            let banner: &[u8] = match code.load(Ordering::SeqCst) {
                220 => b"220-mx.example.com ESMTP\r\n220 ready\r\n",
                _ => b"554 5.3.2 no service here\r\n",
            };
            stream.write_all(banner).await.ok()?;
            let mut buf = [0u8; 512];
            // At most 4 commands.
            for _ in 0..4 {
                let n = stream.read(&mut buf).await.ok().filter(|n| *n > 0)?;
                let line = &buf[..n];
                if line.starts_with(b"EHLO ") {
                    stream
                        .write_all(b"250-mx.example.com\r\n250 8BITMIME\r\n")
                        .await
                        .ok()?;
                } else if line.starts_with(b"QUIT") {
                    quits.fetch_add(1, Ordering::SeqCst);
                    stream.write_all(b"221 bye\r\n").await.ok()?;
                    return Some(());
                } else {
                    stream.write_all(b"500 what\r\n").await.ok()?;
                }
            }
            Some(())
        });
    }
}

#[test]
fn smtp_checks_pass_on_a_220_banner_and_fail_on_554() {
    require_privileges!();
    let ns = server_ns("smtp");
    in_netns(&ns, |rt| {
        rt.block_on(async {
            let (target, plain, _) = check_of(RS, 25, "type = \"smtp\"\ntimeout_ms = 1000");
            let (_, helo, _) = check_of(
                RS,
                25,
                "type = \"smtp\"\nhelo = \"director.example.com\"\ntimeout_ms = 1000",
            );
            let listener = TcpListener::bind((RS, 25)).await.expect("smtp server");
            let (code, quits) = (Arc::new(AtomicUsize::new(220)), Arc::new(AtomicU64::new(0)));
            let server = tokio::spawn(smtp_server(listener, code.clone(), quits.clone()));
            assert_eq!(verdict(&target, &plain).await, Ok(()), "220 banner");
            assert_eq!(
                verdict(&target, &helo).await,
                Ok(()),
                "220 banner, EHLO 250"
            );
            assert_eq!(quits.load(Ordering::SeqCst), 2, "each check said QUIT");
            code.store(554, Ordering::SeqCst);
            let got = verdict(&target, &plain).await;
            assert_fails(
                &got,
                Reason::Status,
                "SMTP banner from 198.51.100.2:25 is \"554 5.3.2 no service here\", expected 220",
                "554",
            );
            server.abort();
            let _ = server.await;
            let got = verdict(&target, &plain).await;
            assert_fails(&got, Reason::Refused, "connect 198.51.100.2:25", "stopped");
        })
    });
}
