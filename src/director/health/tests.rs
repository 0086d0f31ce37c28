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
                alpha: false,
            }),
            sorry,
            quorum: Default::default(),
            quorum_notify: Default::default(),
            real_notify: Vec::new(),
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

/// `effective` with the quorum states as a starting director has them.
fn eff(d: &DirectorDesired, health: &HashMap<Target, Health>) -> DirectorDesired {
    effective(d, health, &Quorums::default())
}

#[test]
fn healthy_is_the_config_unchanged() {
    let d = desired(OnFailure::Quiesce, None);
    assert_eq!(eff(&d, &HashMap::new()), d);
}

#[test]
fn quiesce_sets_weight_zero_and_keeps_the_rest() {
    let d = desired(OnFailure::Quiesce, None);
    let e = eff(&d, &down(&["198.51.100.2"]));
    assert_eq!(
        e.services[0].reals,
        vec![dr("198.51.100.2", 0), dr("198.51.100.3", 1)]
    );
}

#[test]
fn remove_drops_the_destination() {
    let d = desired(OnFailure::Remove, None);
    let e = eff(&d, &down(&["198.51.100.3"]));
    assert_eq!(e.services[0].reals, vec![dr("198.51.100.2", 3)]);
}

#[test]
fn sorry_server_only_when_all_are_down() {
    let sorry = dr("203.0.113.9", 1);
    let d = desired(OnFailure::Remove, Some(sorry.clone()));
    assert_eq!(
        eff(&d, &down(&["198.51.100.2"])).services[0].reals,
        vec![dr("198.51.100.3", 1)]
    );
    let e = eff(&d, &down(&["198.51.100.2", "198.51.100.3"]));
    assert_eq!(e.services[0].reals, vec![sorry.clone()]);
    let d = desired(OnFailure::Quiesce, Some(sorry.clone()));
    let e = eff(&d, &down(&["198.51.100.2", "198.51.100.3"]));
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

fn target(a: &str) -> Target {
    Target {
        service: key(),
        addr: ip(a),
        port: 80,
    }
}

/// With `alpha` a server nothing is known of yet is down (quiesced or removed as on_failure
/// says, so the first pass leaves it out); one good check with rise = 1 brings it up.
#[test]
fn alpha_servers_start_down_until_checked_good() {
    let mut h = Health::start(true);
    assert!(!h.up);
    assert!(
        !h.record(false, 1, 1),
        "a failure does not flip a down server"
    );
    assert!(h.record(true, 1, 1), "the first good check brings it up");
    assert!(Health::start(false).up && Health::default().up);
    for (on_failure, want) in [
        (
            OnFailure::Quiesce,
            vec![dr("198.51.100.2", 0), dr("198.51.100.3", 0)],
        ),
        (OnFailure::Remove, vec![]),
    ] {
        let mut d = desired(on_failure, None);
        if let Some(c) = &mut d.services[0].check {
            c.alpha = true;
        }
        assert_eq!(eff(&d, &HashMap::new()).services[0].reals, want);
        let up: HashMap<Target, Health> = [(target("198.51.100.3"), Health::settled(true, None))]
            .into_iter()
            .collect();
        let e = eff(&d, &up);
        assert!(
            e.services[0].reals.contains(&dr("198.51.100.3", 1)),
            "{e:?}"
        );
    }
}

/// A `misc_dynamic` weight replaces the configured one while the server is up; a down one is
/// taken out as usual whatever its weight.
#[test]
fn dynamic_weights_flow_into_the_table() {
    let d = desired(OnFailure::Quiesce, None);
    let health: HashMap<Target, Health> = [
        (target("198.51.100.2"), Health::settled(true, Some(8))),
        (target("198.51.100.3"), Health::settled(false, Some(5))),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        eff(&d, &health).services[0].reals,
        vec![dr("198.51.100.2", 8), dr("198.51.100.3", 0)]
    );
    let mut h = Health::default();
    assert!(h.reweigh(Some(8)));
    assert!(!h.reweigh(Some(8)), "the same weight is no change");
    assert!(!h.reweigh(None), "exit 0 keeps the weight");
    assert_eq!(h.weight, Some(8));
}

/// Below its quorum a service with a sorry server is served by it alone (keepalived takes
/// the healthy servers out too); without one the healthy servers stay in. Hysteresis holds
/// the state the service is in.
#[test]
fn below_quorum_the_sorry_server_serves_alone() {
    let sorry = dr("203.0.113.9", 1);
    let mut d = desired(OnFailure::Quiesce, Some(sorry.clone()));
    d.services[0].quorum = crate::director::model::Quorum {
        weight: 3,
        hysteresis: 1,
    };
    // Weights 3 and 1: .3 down leaves 3, below quorum + hysteresis at start.
    let health = down(&["198.51.100.3"]);
    let e = eff(&d, &health);
    assert_eq!(
        e.services[0].reals,
        vec![dr("198.51.100.2", 0), dr("198.51.100.3", 0), sorry.clone()]
    );
    // Once up (all healthy: 4), losing .3 keeps it up: 3 >= quorum - hysteresis.
    let mut quorums = Quorums::default();
    assert!(quorums.update(&d, &HashMap::new()).is_empty(), "starts up");
    assert!(quorums.update(&d, &health).is_empty(), "3 holds it up");
    let e = effective(&d, &health, &quorums);
    assert_eq!(
        e.services[0].reals,
        vec![dr("198.51.100.2", 3), dr("198.51.100.3", 0)]
    );
    let all_down = down(&["198.51.100.2", "198.51.100.3"]);
    let changes = quorums.update(&d, &all_down);
    assert_eq!(changes.len(), 1);
    assert!(!changes[0].up && changes[0].live_weight == 0);
    // Without a sorry server nothing healthy leaves, below quorum or not.
    d.services[0].sorry = None;
    assert_eq!(
        eff(&d, &health).services[0].reals,
        vec![dr("198.51.100.2", 3), dr("198.51.100.3", 0)]
    );
}
