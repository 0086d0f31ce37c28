use super::*;
use crate::testing::{dr, ip, service, tcp};
use std::time::Duration;

#[test]
fn rise_and_fall_need_consecutive_results() {
    let mut h = Health::default();
    // fall = 3: two failures, one success, resets.
    assert!(!h.record(false, 2, 3));
    assert!(!h.record(false, 2, 3));
    assert!(!h.record(true, 2, 3));
    assert!(!h.record(false, 2, 3));
    assert!(!h.record(false, 2, 3));
    assert!(
        h.record(false, 2, 3),
        "third consecutive failure takes it down"
    );
    assert!(!h.up);
    assert!(!h.record(true, 2, 3));
    assert!(h.record(true, 2, 3), "rise = 2 brings it back");
    assert!(h.up);
    let mut h = Health::default();
    assert!(h.record(false, 0, 0), "0 is treated as 1");
}

fn key() -> ServiceKey {
    tcp("192.0.2.100", 80)
}

fn desired(on_failure: OnFailure, sorry: Option<Destination>) -> DirectorDesired {
    DirectorDesired {
        interface: "eth0".into(),
        garp_count: 0,
        garp_interval: Duration::ZERO,
        services: vec![ServiceDesired {
            service: service(key(), "rr"),
            reals: vec![dr("198.51.100.2", 3), dr("198.51.100.3", 1)],
            check: Some(HealthCheck {
                probe: Probe::Tcp,
                port: None,
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                rise: 1,
                fall: 1,
                on_failure,
            }),
            sorry,
        }],
    }
}

fn down(addrs: &[&str]) -> HashMap<Target, Health> {
    addrs
        .iter()
        .map(|a| {
            let mut h = Health::default();
            h.record(false, 1, 1);
            (
                Target {
                    service: key(),
                    addr: ip(a),
                    port: 80,
                },
                h,
            )
        })
        .collect()
}

#[test]
fn healthy_is_the_config_unchanged() {
    let d = desired(OnFailure::Quiesce, None);
    assert_eq!(effective(&d, &HashMap::new()), d);
}

#[test]
fn quiesce_sets_weight_zero_and_keeps_the_rest() {
    let d = desired(OnFailure::Quiesce, None);
    let e = effective(&d, &down(&["198.51.100.2"]));
    assert_eq!(
        e.services[0].reals,
        vec![dr("198.51.100.2", 0), dr("198.51.100.3", 1)]
    );
}

#[test]
fn remove_drops_the_destination() {
    let d = desired(OnFailure::Remove, None);
    let e = effective(&d, &down(&["198.51.100.3"]));
    assert_eq!(e.services[0].reals, vec![dr("198.51.100.2", 3)]);
}

#[test]
fn sorry_server_only_when_all_are_down() {
    let sorry = dr("203.0.113.9", 1);
    let d = desired(OnFailure::Remove, Some(sorry.clone()));
    assert_eq!(
        effective(&d, &down(&["198.51.100.2"])).services[0].reals,
        vec![dr("198.51.100.3", 1)]
    );
    let e = effective(&d, &down(&["198.51.100.2", "198.51.100.3"]));
    assert_eq!(e.services[0].reals, vec![sorry.clone()]);
    let d = desired(OnFailure::Quiesce, Some(sorry.clone()));
    let e = effective(&d, &down(&["198.51.100.2", "198.51.100.3"]));
    assert_eq!(
        e.services[0].reals,
        vec![dr("198.51.100.2", 0), dr("198.51.100.3", 0), sorry]
    );
}

#[test]
fn targets_lists_checked_reals() {
    let d = desired(OnFailure::Quiesce, None);
    let t = targets(&d);
    assert_eq!(t.len(), 2);
    assert_eq!(
        t[1].0.to_string(),
        "real server 198.51.100.3:80 of TCP 192.0.2.100:80"
    );
}
