use super::*;
use crate::director::health::probe::ProbeError;
use crate::kernel::ipvs::{ObservedDestination, Stats};
use std::time::Duration;

/// One configured service, 192.0.2.100:80 with two checked real servers and a sorry server.
fn configured() -> crate::director::config::DirectorDesired {
    let text = "[director]\ninterface = \"eth0\"\n[[director.service]]\nvip = \"192.0.2.100\"\n\
                port = 80\nscheduler = \"wlc\"\nreals = [\"198.51.100.2\", \"198.51.100.3\"]\n\
                sorry_server = \"198.51.100.9\"\n\
                [director.service.check]\ntype = \"tcp\"\nrise = 1\nfall = 1\n";
    let file = crate::config_file::ConfigFile::parse(None, text.into()).expect("parses");
    crate::director::config::director(&file, &Default::default()).expect("validates")
}

fn target(last: u8) -> Target {
    Target {
        service: ServiceKey::Addr {
            protocol: crate::kernel::ipvs::Protocol::Tcp,
            addr: [192, 0, 2, 100].into(),
            port: 80,
        },
        addr: [198, 51, 100, last].into(),
        port: 80,
    }
}

/// The kernel as the configuration has it with .3 quiesced, and a foreign fwmark service.
fn table(desired: &crate::director::config::DirectorDesired) -> Vec<ObservedService> {
    let service = &desired.services[0];
    let dest = |i: usize, weight, conns| ObservedDestination {
        dest: crate::kernel::ipvs::Destination {
            weight,
            ..service.reals[i].clone()
        },
        tun_type: 0,
        active_conns: 2,
        inactive_conns: 1,
        persist_conns: 0,
        stats: Stats {
            conns,
            inpkts: conns * 10,
            inbytes: conns * 1000,
            ..Stats::default()
        },
    };
    let foreign = ObservedService {
        service: crate::kernel::ipvs::Service {
            key: ServiceKey::Fwmark {
                af: AddressFamily::V4,
                mark: 7,
            },
            ..service.service.clone()
        },
        stats: Stats::default(),
        destinations: vec![],
    };
    vec![
        ObservedService {
            service: service.service.clone(),
            stats: Stats {
                conns: 5,
                inpkts: 50,
                inbytes: 5000,
                ..Stats::default()
            },
            destinations: vec![dest(0, 1, 4), dest(1, 0, 1)],
        },
        foreign,
    ]
}

fn scrape(per_real_server: bool) -> Scrape {
    let desired = configured();
    let ipvs = table(&desired);
    let mut telemetry = Telemetry::new(desired.clone());
    telemetry.started = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let board = telemetry.board_mut();
    let ms = Duration::from_millis(3);
    board.note(
        &target(2),
        &Ok(()),
        ms,
        (crate::director::health::Health::settled(true, None), false),
    );
    let refused = || {
        Err(ProbeError::Connect {
            addr: "198.51.100.3:80".parse().expect("literal"),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        })
    };
    board.note(
        &target(3),
        &refused(),
        ms,
        (crate::director::health::Health::settled(false, None), true),
    );
    board.note(
        &target(3),
        &refused(),
        ms,
        (crate::director::health::Health::settled(false, None), false),
    );
    let owned = [desired.services[0].service.key.clone()].into();
    Scrape {
        ipvs,
        owned,
        telemetry,
        per_real_server,
    }
}

fn text(scrape: &Scrape, format: Format) -> String {
    let mut out = Vec::new();
    render(scrape, format, &mut |chunk| {
        out.extend_from_slice(&chunk);
        true
    });
    String::from_utf8(out).expect("utf-8")
}

/// The lines of one family: its HELP and TYPE lines and its samples.
fn block<'a>(text: &'a str, family: &str) -> Vec<&'a str> {
    let head = format!("# HELP {family} ");
    let mut lines = text.lines().skip_while(|l| !l.starts_with(&head));
    let mut out: Vec<&str> = lines.next().into_iter().collect();
    out.extend(lines.take_while(|l| !l.starts_with("# HELP ")));
    out
}

const SVC: &str = "local_address=\"192.0.2.100\",local_port=\"80\",local_mark=\"\",proto=\"TCP\"";

#[test]
fn the_table_is_rendered_with_node_exporters_labels() {
    let text = text(&scrape(true), Format::Text);
    assert_eq!(
        block(&text, "rs_agent_ipvs_backend_connections_total")[1..],
        [
            "# TYPE rs_agent_ipvs_backend_connections_total counter".to_string(),
            format!("rs_agent_ipvs_backend_connections_total{{{SVC},remote_address=\"198.51.100.2\",remote_port=\"80\"}} 4"),
            format!("rs_agent_ipvs_backend_connections_total{{{SVC},remote_address=\"198.51.100.3\",remote_port=\"80\"}} 1"),
        ]
    );
    assert_eq!(
        block(&text, "rs_agent_ipvs_service_info")[2..],
        [
            format!("rs_agent_ipvs_service_info{{{SVC},scheduler=\"wlc\",owner=\"rs-agent\"}} 1"),
            "rs_agent_ipvs_service_info{local_address=\"\",local_port=\"0\",local_mark=\"00000007\",\
             proto=\"FWM\",family=\"ipv4\",scheduler=\"wlc\",owner=\"foreign\"} 1"
                .to_string(),
        ]
    );
    assert_eq!(
        block(&text, "rs_agent_ipvs_backend_weight")[2..],
        [
            format!("rs_agent_ipvs_backend_weight{{{SVC},remote_address=\"198.51.100.2\",remote_port=\"80\"}} 1"),
            format!("rs_agent_ipvs_backend_weight{{{SVC},remote_address=\"198.51.100.3\",remote_port=\"80\"}} 0"),
        ]
    );
    assert!(text.contains(&format!(
        "rs_agent_ipvs_service_connections_active{{{SVC}}} 4\n"
    )));
}

#[test]
fn health_is_rendered_per_real_server_and_per_service() {
    let text = text(&scrape(true), Format::Text);
    let rs = |last: u8| format!("{SVC},remote_address=\"198.51.100.{last}\",remote_port=\"80\"");
    assert_eq!(
        block(&text, "rs_agent_real_server_up")[2..],
        [
            format!("rs_agent_real_server_up{{{}}} 1", rs(2)),
            format!("rs_agent_real_server_up{{{}}} 0", rs(3)),
        ]
    );
    assert_eq!(
        block(&text, "rs_agent_real_server_state")[2..],
        [
            format!("rs_agent_real_server_state{{{},state=\"up\"}} 1", rs(2)),
            format!("rs_agent_real_server_state{{{},state=\"down\"}} 1", rs(3)),
        ],
        "one server is still up: the sorry server is not serving"
    );
    assert_eq!(
        block(&text, "rs_agent_service_real_servers")[2..],
        ["up", "down", "drained", "unchecked"]
            .iter()
            .zip([1, 1, 0, 0])
            .map(|(state, n)| format!(
                "rs_agent_service_real_servers{{{SVC},state=\"{state}\"}} {n}"
            ))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        block(&text, "rs_agent_check_failures_total")[2..],
        [format!(
            "rs_agent_check_failures_total{{{},reason=\"refused\"}} 2",
            rs(3)
        )]
    );
    assert_eq!(
        block(&text, "rs_agent_real_server_transitions_total")[2..],
        [
            format!(
                "rs_agent_real_server_transitions_total{{{},direction=\"up\"}} 0",
                rs(2)
            ),
            format!(
                "rs_agent_real_server_transitions_total{{{},direction=\"down\"}} 0",
                rs(2)
            ),
            format!(
                "rs_agent_real_server_transitions_total{{{},direction=\"up\"}} 0",
                rs(3)
            ),
            format!(
                "rs_agent_real_server_transitions_total{{{},direction=\"down\"}} 1",
                rs(3)
            ),
        ]
    );
    assert_eq!(
        block(&text, "rs_agent_check_consecutive_failures")[2..],
        [
            format!("rs_agent_check_consecutive_failures{{{}}} 0", rs(2)),
            format!("rs_agent_check_consecutive_failures{{{}}} 2", rs(3)),
        ]
    );
    assert!(text.contains(&format!(
        "rs_agent_check_duration_seconds_count{{{SVC}}} 3\n"
    )));
    assert!(text.contains("rs_agent_start_time_seconds 1700000000\n"));
}

/// With every real server down the sorry server serves, and says so.
#[test]
fn the_sorry_server_is_shown_while_it_serves() {
    let mut scrape = scrape(true);
    let board = scrape.telemetry.board_mut();
    board.note(
        &target(2),
        &Err(ProbeError::Status {
            got: 503,
            want: 200,
        }),
        Duration::ZERO,
        (crate::director::health::Health::settled(false, None), true),
    );
    let text = text(&scrape, Format::Text);
    let rs = |last: u8| format!("{SVC},remote_address=\"198.51.100.{last}\",remote_port=\"80\"");
    assert_eq!(
        block(&text, "rs_agent_real_server_state")[2..],
        [
            format!(
                "rs_agent_real_server_state{{{},state=\"drained\"}} 1",
                rs(2)
            ),
            format!("rs_agent_real_server_state{{{},state=\"down\"}} 1", rs(3)),
            format!("rs_agent_real_server_state{{{},state=\"sorry\"}} 1", rs(9)),
        ]
    );
}

/// Every family is there once, with its samples together (as both formats require), and the
/// switch drops exactly the per real server ones.
#[test]
fn every_family_once_and_the_cardinality_switch() {
    for format in [Format::Text, Format::OpenMetrics] {
        let full = text(&scrape(true), format);
        let mut seen = Vec::new();
        for line in full.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split_whitespace().nth(2).unwrap_or_default();
            assert!(!seen.contains(&name), "{name} twice");
            seen.push(name);
        }
        assert_eq!(seen.len(), families::ALL.len(), "{full}");
        assert_eq!(format == Format::OpenMetrics, full.ends_with("# EOF\n"));
        let lean = text(&scrape(false), format);
        assert!(!lean.contains("remote_address"), "{lean}");
        assert!(lean.contains("rs_agent_service_real_servers{"));
        assert!(lean.contains("rs_agent_ipvs_service_connections_total{"));
    }
}

/// A large table comes out in chunks that add up to the whole, and a client that goes away
/// stops the rendering.
#[test]
fn a_large_scrape_is_chunked_and_stops_when_the_client_goes() {
    let mut scrape = scrape(true);
    let one = scrape.ipvs[0].destinations[0].clone();
    scrape.ipvs[0].destinations = (0..2000u32)
        .map(|i| {
            let mut d = one.clone();
            d.dest.addr = std::net::Ipv4Addr::from(0xC633_6400 + i).into();
            d
        })
        .collect();
    let mut sizes = Vec::new();
    render(&scrape, Format::Text, &mut |chunk| {
        sizes.push(chunk.len());
        true
    });
    assert!(sizes.len() > 3, "{sizes:?}");
    assert!(sizes.iter().all(|n| *n < CHUNK + 4096), "{sizes:?}");
    let mut calls = 0;
    render(&scrape, Format::Text, &mut |_| {
        calls += 1;
        false
    });
    assert_eq!(calls, 1, "rendering went on after the client left");
}
