//! keepalived's quorum of a service: up while the weights of its healthy real servers add up
//! to the quorum, with hysteresis so that a pool hovering around it does not flap. Once up, a
//! service goes down when the sum falls below `quorum - hysteresis`; once down, it comes up
//! when the sum reaches `quorum + hysteresis`; at start it is up when the sum reaches
//! `quorum + hysteresis` (keepalived's `set_quorum_states`).
//!
//! Pure: the states are kept by whoever runs the checks ([`Quorums`]), read by
//! [`super::effective`].

use super::{is_up, weight_of, Health, Target};
use crate::director::model::{DirectorDesired, Quorum, ServiceDesired};
use crate::kernel::ipvs::ServiceKey;
use std::collections::HashMap;

/// The next state of a service that is `up` (or not) once its healthy weight is `sum`.
pub fn next(up: bool, sum: u64, q: Quorum) -> bool {
    let (weight, hysteresis) = (u64::from(q.weight), u64::from(q.hysteresis));
    match up {
        true => sum >= weight.saturating_sub(hysteresis).max(1),
        false => sum >= weight + hysteresis,
    }
}

/// The state of a service nothing is known of yet (a director starting, a new service).
pub fn initial(sum: u64, q: Quorum) -> bool {
    next(false, sum, q)
}

/// The weight of the healthy real servers of `s` (a `misc_dynamic` weight where one was set).
pub fn live_weight(s: &ServiceDesired, health: &HashMap<Target, Health>) -> u64 {
    let alpha = s.check.as_ref().is_some_and(|c| c.alpha);
    s.reals
        .iter()
        .filter(|d| is_up(health, &s.service.key, d, alpha))
        .map(|d| u64::from(weight_of(health, &s.service.key, d)))
        .sum()
}

/// One service's change of quorum state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub service: ServiceKey,
    pub up: bool,
    /// The healthy weight that made it change.
    pub live_weight: u64,
}

/// The quorum state of every checked service, as the run loop keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quorums(HashMap<ServiceKey, bool>);

impl Quorums {
    /// States as read back (from `director status`'s view).
    pub fn from_states(states: impl IntoIterator<Item = (ServiceKey, bool)>) -> Quorums {
        Quorums(states.into_iter().collect())
    }

    /// Whether `s` is up: its state if known, else as it would start.
    pub fn is_up(&self, s: &ServiceDesired, health: &HashMap<Target, Health>) -> bool {
        match self.0.get(&s.service.key) {
            Some(up) => *up,
            None => initial(live_weight(s, health), s.quorum),
        }
    }

    /// Moves every checked service of `desired` to its next state under `health` and
    /// forgets the services no longer there; the services that changed, in config order. A
    /// service seen for the first time takes its initial state without a change.
    pub fn update(
        &mut self,
        desired: &DirectorDesired,
        health: &HashMap<Target, Health>,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut seen = HashMap::with_capacity(self.0.len());
        for s in desired.services.iter().filter(|s| s.check.is_some()) {
            let sum = live_weight(s, health);
            let up = match self.0.get(&s.service.key) {
                Some(&was) => {
                    let up = next(was, sum, s.quorum);
                    if up != was {
                        changes.push(Change {
                            service: s.service.key.clone(),
                            up,
                            live_weight: sum,
                        });
                    }
                    up
                }
                None => initial(sum, s.quorum),
            };
            seen.insert(s.service.key.clone(), up);
        }
        self.0 = seen;
        changes
    }

    /// The state of the service `key`, if known.
    pub fn get(&self, key: &ServiceKey) -> Option<bool> {
        self.0.get(key).copied()
    }

    /// Every known state, for the metrics and the view.
    pub fn states(&self) -> impl Iterator<Item = (&ServiceKey, bool)> {
        self.0.iter().map(|(k, up)| (k, *up))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// keepalived's sample (doc/samples/keepalived.conf.quorum): quorum 7, hysteresis 2, ten
    /// servers of weight 1: up from 9 live, down again below 5 (7 - 2), no flap between.
    #[test]
    fn hysteresis_transitions() {
        let q = Quorum {
            weight: 7,
            hysteresis: 2,
        };
        // (state before, live weight, state after)
        let cases = [
            (false, 0, false),
            (false, 7, false),
            (false, 8, false),
            (false, 9, true),
            (false, 10, true),
            (true, 10, true),
            (true, 7, true),
            (true, 6, true),
            (true, 5, true),
            (true, 4, false),
            (true, 0, false),
        ];
        for (before, sum, after) in cases {
            assert_eq!(next(before, sum, q), after, "{before} at {sum}");
        }
        assert!(
            !initial(8, q) && initial(9, q),
            "starts up at quorum + hysteresis"
        );
    }

    /// The default (quorum 1, no hysteresis): up while any healthy server has a weight.
    #[test]
    fn the_default_quorum_is_any_live_weight() {
        let q = Quorum::default();
        for before in [true, false] {
            assert!(!next(before, 0, q));
            assert!(next(before, 1, q));
        }
        let q = Quorum {
            weight: 3,
            hysteresis: 0,
        };
        let cases = [
            (true, 2, false),
            (false, 3, true),
            (true, 3, true),
            (false, 2, false),
        ];
        for (before, sum, after) in cases {
            assert_eq!(next(before, sum, q), after, "{before} at {sum}");
        }
    }
}
