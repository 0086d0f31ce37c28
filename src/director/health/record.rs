//! What the director knows of each checked real server beyond its verdict: the run of results,
//! the transitions, the last failure and how long checks take. The run loop keeps these
//! (`Board`); the metrics read them at each scrape, and `director status` reads the copy the
//! loop writes into the state directory at every flip ([`View`]).
//!
//! Pure data and its file; it must not decide a verdict (that is [`super::Health`]'s).

use super::probe::{ProbeError, Reason};
use super::{Quorums, Target};
use crate::kernel::ipvs::ServiceKey;
use crate::metrics::Histogram;
use crate::state_dir::{StateError, DIRECTOR_HEALTH};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The last failed check of a real server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub reason: Reason,
    /// The HTTP status, when a status was why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// As the log says it (`connect 198.51.100.2:80: Connection refused (os error 111)`).
    pub message: String,
    /// When (Unix seconds).
    pub at: f64,
}

/// One checked real server, beyond what [`super::Health`] needs for its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub up: bool,
    /// Consecutive successes up to the last check (0 after a failure), and failures.
    pub successes: u32,
    pub failures: u32,
    /// Verdict changes, each way.
    pub went_up: u64,
    pub went_down: u64,
    /// When the verdict last changed (Unix seconds); `None`: as it started (up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Failure>,
    /// How long the last check took (seconds).
    pub last_seconds: f64,
    /// The weight its `misc_dynamic` check last set (absent: the configured one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Failures by reason since the start.
    #[serde(skip)]
    pub failures_by: HashMap<Reason, u64>,
}

impl Default for Record {
    fn default() -> Self {
        Record {
            up: true,
            successes: 0,
            failures: 0,
            went_up: 0,
            went_down: 0,
            since: None,
            last_failure: None,
            last_seconds: 0.0,
            weight: None,
            failures_by: HashMap::new(),
        }
    }
}

impl Record {
    /// Before any check, as `health` starts.
    pub fn start(health: super::Health) -> Record {
        Record {
            up: health.up,
            ..Record::default()
        }
    }

    /// Counts one result; `health`: the verdict after it, `flipped`: whether it changed.
    pub fn note(
        &mut self,
        result: &Result<(), ProbeError>,
        took: Duration,
        now: SystemTime,
        (health, flipped): (super::Health, bool),
    ) {
        self.weight = health.weight;
        self.last_seconds = took.as_secs_f64();
        let at = crate::metrics::unix_seconds(now);
        match result {
            Ok(()) => {
                self.successes = self.successes.saturating_add(1);
                self.failures = 0;
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                self.successes = 0;
                *self.failures_by.entry(e.reason()).or_default() += 1;
                self.last_failure = Some(Failure {
                    reason: e.reason(),
                    status: e.status(),
                    message: e.to_string(),
                    at,
                });
            }
        }
        self.up = health.up;
        if flipped {
            self.since = Some(at);
            match health.up {
                true => self.went_up += 1,
                false => self.went_down += 1,
            }
        }
    }

    /// Down because the server answers 503: how a real server's `rs-agent drain` (and most
    /// applications going away) say they are leaving.
    pub fn drained(&self) -> bool {
        !self.up && self.last_failure.as_ref().and_then(|f| f.status) == Some(503)
    }

    /// Worth writing down for `director status`: it is down, its verdict ever changed, or
    /// its check set its weight.
    fn noteworthy(&self) -> bool {
        !self.up || self.since.is_some() || self.weight.is_some()
    }
}

/// The records of every checked real server and the check durations of each service.
#[derive(Debug, Clone, Default)]
pub struct Board {
    /// Each behind an `Arc`: a scrape's copy of the board shares them, so the run loop's next
    /// change copies the map and one record, not every record.
    pub records: HashMap<Target, std::sync::Arc<Record>>,
    pub check_seconds: HashMap<ServiceKey, Histogram>,
    /// The quorum state of every checked service.
    pub quorums: Quorums,
    /// A record `director status` shows changed since the view was last written.
    pub view_stale: bool,
}

impl Board {
    /// Counts one finished check of `target`: `verdict` is its health after the result and
    /// whether the result flipped it.
    pub fn note(
        &mut self,
        target: &Target,
        result: &Result<(), ProbeError>,
        took: Duration,
        verdict: (super::Health, bool),
    ) {
        let now = SystemTime::now();
        let record = self
            .records
            .entry(target.clone())
            .or_insert_with(|| std::sync::Arc::new(Record::start(verdict.0)));
        let record = std::sync::Arc::make_mut(record);
        record.note(result, took, now, verdict);
        self.view_stale |= record.noteworthy();
        self.check_seconds
            .entry(target.service.clone())
            .or_insert_with(|| Histogram::new(crate::metrics::SECONDS))
            .observe(took.as_secs_f64());
    }

    /// Forgets the servers no longer checked (after a reload), and their services' durations.
    pub fn retain(&mut self, checked: impl Fn(&Target) -> bool) {
        self.records.retain(|t, _| checked(t));
        let services: std::collections::HashSet<&ServiceKey> =
            self.records.keys().map(|t| &t.service).collect();
        self.check_seconds.retain(|k, _| services.contains(k));
    }

    /// What `director status` is to see, as of now.
    pub fn view(&self) -> View {
        let mut servers: Vec<ServerView> = self
            .records
            .iter()
            .filter(|(_, r)| r.noteworthy())
            .map(|(target, record)| ServerView {
                target: target.clone(),
                record: Record::clone(record),
            })
            .collect();
        servers.sort_by_key(|s| s.target.to_string());
        let mut services: Vec<ServiceQuorum> = (self.quorums.states())
            .map(|(service, up)| ServiceQuorum {
                service: service.clone(),
                quorum_up: up,
            })
            .collect();
        services.sort_by_key(|s| s.service.to_string());
        View {
            pid: std::process::id(),
            servers,
            services,
        }
    }
}

/// One real server in the view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerView {
    #[serde(flatten)]
    pub target: Target,
    #[serde(flatten)]
    pub record: Record,
}

/// One checked service's quorum state in the view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceQuorum {
    pub service: ServiceKey,
    pub quorum_up: bool,
}

/// The running director's verdicts as `director status` reads them: written atomically into
/// the state directory at every flip. Only servers that are down or ever flipped are listed;
/// any other checked server is up and has been since the director started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct View {
    /// The `director run` that wrote it: the view is its, and stale once another holds (or
    /// nobody holds) the run lock.
    pub pid: u32,
    pub servers: Vec<ServerView>,
    /// Every checked service's quorum state.
    #[serde(default)]
    pub services: Vec<ServiceQuorum>,
}

impl View {
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let text = serde_json::to_string(self).map_err(|e| StateError::Write {
            path: dir.join(DIRECTOR_HEALTH).display().to_string(),
            source: std::io::Error::other(e),
        })?;
        crate::state_dir::write_atomic(dir, DIRECTOR_HEALTH, Some(text))
    }

    /// The view in `dir`, if one was written (a damaged one is an error naming the file,
    /// never a silent "all up").
    pub fn load(dir: &Path) -> Result<Option<View>, StateError> {
        crate::state_dir::load_json(&dir.join(DIRECTOR_HEALTH))
    }

    /// The verdicts as `health::effective` takes them.
    pub fn health(&self) -> HashMap<Target, super::Health> {
        self.servers
            .iter()
            .map(|s| {
                let health = super::Health::settled(s.record.up, s.record.weight);
                (s.target.clone(), health)
            })
            .collect()
    }

    /// The quorum states as `health::effective` takes them.
    pub fn quorums(&self) -> Quorums {
        Quorums::from_states(
            self.services
                .iter()
                .map(|s| (s.service.clone(), s.quorum_up)),
        )
    }

    pub fn get(&self, target: &Target) -> Option<&Record> {
        self.servers
            .iter()
            .find(|s| &s.target == target)
            .map(|s| &s.record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::ipvs::Protocol;

    fn target() -> Target {
        Target {
            service: ServiceKey::Addr {
                protocol: Protocol::Tcp,
                addr: [192, 0, 2, 100].into(),
                port: 80,
            },
            addr: [198, 51, 100, 2].into(),
            port: 80,
        }
    }

    fn up() -> super::super::Health {
        super::super::Health::settled(true, None)
    }

    fn down() -> super::super::Health {
        super::super::Health::settled(false, None)
    }

    /// With `alpha` a server starts down: its record says so before any flip, and the view
    /// lists it; a `misc_dynamic` weight is on the record and read back into the health.
    #[test]
    fn a_record_starts_as_its_health_and_keeps_a_dynamic_weight() {
        let mut board = Board::default();
        let t = target();
        board.note(&t, &refused(), Duration::ZERO, (down(), false));
        assert!(!board.records[&t].up, "alpha: down before any flip");
        assert_eq!(board.view().servers.len(), 1);
        let weighed = super::super::Health::settled(true, Some(8));
        board.note(&t, &Ok(()), Duration::ZERO, (weighed, true));
        let view = board.view();
        assert_eq!(view.health()[&t], weighed);
    }

    fn refused() -> Result<(), ProbeError> {
        Err(ProbeError::Connect {
            addr: "198.51.100.2:80".parse().expect("literal"),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        })
    }

    #[test]
    fn a_record_counts_runs_transitions_and_the_last_failure() {
        let mut board = Board::default();
        let t = target();
        let ms = Duration::from_millis(2);
        board.note(&t, &Ok(()), ms, (up(), false));
        board.note(&t, &refused(), ms, (up(), false));
        board.note(&t, &refused(), ms, (down(), true));
        let r = &board.records[&t];
        assert_eq!((r.up, r.successes, r.failures), (false, 0, 2));
        assert_eq!((r.went_up, r.went_down), (0, 1));
        assert!(r.since.is_some());
        let f = r.last_failure.as_ref().expect("failed");
        assert_eq!(f.reason, Reason::Refused);
        assert_eq!(r.failures_by[&Reason::Refused], 2);
        assert!(!r.drained());
        assert_eq!(board.check_seconds[&t.service].count(), 3);
        board.note(&t, &Ok(()), ms, (up(), true));
        let r = &board.records[&t];
        assert_eq!((r.up, r.successes, r.failures, r.went_up), (true, 1, 0, 1));
    }

    #[test]
    fn a_503_is_a_drain() {
        let mut board = Board::default();
        let t = target();
        let status = Err(ProbeError::Status {
            got: 503,
            want: 200,
        });
        board.note(&t, &status, Duration::ZERO, (down(), true));
        assert!(board.records[&t].drained());
    }

    /// The view lists only what status cannot assume (down, or ever flipped), and reads back.
    #[test]
    fn the_view_round_trips_and_lists_only_the_noteworthy() {
        let mut board = Board::default();
        let t = target();
        let other = Target {
            addr: [198, 51, 100, 3].into(),
            ..target()
        };
        board.note(&other, &Ok(()), Duration::ZERO, (up(), false));
        board.note(&t, &refused(), Duration::ZERO, (down(), true));
        let view = board.view();
        assert_eq!(view.servers.len(), 1);
        assert_eq!(view.health()[&t], down());
        let dir = std::env::temp_dir().join(format!("rsa-view-{}", std::process::id()));
        view.save(&dir).expect("saves");
        let back = View::load(&dir).expect("reads").expect("written");
        assert_eq!(back.servers[0].target, t);
        assert!(!back.servers[0].record.up);
        std::fs::write(dir.join(DIRECTOR_HEALTH), "{not json").expect("writes");
        let bad = View::load(&dir).expect_err("damaged").to_string();
        assert!(bad.contains(DIRECTOR_HEALTH), "{bad}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
