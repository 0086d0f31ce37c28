//! The health half of `director status`: the running `director run`'s verdicts (the view it
//! writes at every flip), which make the table status compares against the one the daemon
//! wants — a real server its check quiesced is not drift — and say why each server is down.

use crate::director::config::DirectorDesired;
use crate::director::health::{self, probe::Reason, Record, Target, View};
use crate::error::Error;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::Path;

/// One checked real server as `director status` reports it.
#[derive(Debug, Serialize)]
pub struct ServerHealth {
    pub service: String,
    pub real_server: SocketAddr,
    /// up, down or drained (down on a 503).
    pub state: &'static str,
    /// Why it is down, as the log says it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The failure's kind: refused, connect, timeout, io, status, body, tls, exit_code, command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_kind: Option<Reason>,
    pub successes_in_a_row: u32,
    pub failures_in_a_row: u32,
    /// When the verdict last changed (Unix seconds); absent: as the director started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<f64>,
}

/// The verdicts of the running `director run`.
#[derive(Debug, Serialize)]
pub struct HealthStatus {
    pub director_run_pid: u32,
    pub servers: Vec<ServerHealth>,
    /// The checked services below their quorum (their sorry server serves, if any).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub below_quorum: Vec<String>,
}

/// The running director's view, if a `director run` holds this state directory and wrote it
/// (a view left by one that is gone, or by another process, is not shown).
pub fn running_view(state_dir: &Path) -> Result<Option<View>, Error> {
    let Some(view) = View::load(state_dir)? else {
        return Ok(None);
    };
    let holder = crate::state_dir::probe(state_dir, crate::state_dir::DIRECTOR_RUN)?;
    Ok(match holder {
        Some(Some(pid)) if pid != view.pid => None,
        Some(_) => Some(view),
        None => None,
    })
}

/// The configuration as the daemon's verdicts make it, and what status says of each checked
/// server.
pub fn apply(desired: &DirectorDesired, view: &View) -> (DirectorDesired, HealthStatus) {
    let (health, quorums) = (view.health(), view.quorums());
    let effective = health::effective(desired, &health, &quorums);
    let servers = health::targets(desired)
        .into_iter()
        .map(|(target, check)| {
            // Not in the view: as it started (down with alpha).
            let start = Record::start(health::Health::start(check.alpha));
            server(&target, view.get(&target).unwrap_or(&start))
        })
        .collect();
    let below_quorum = (desired.services.iter())
        .filter(|s| s.check.is_some() && !quorums.is_up(s, &health))
        .map(|s| s.service.key.to_string())
        .collect();
    let status = HealthStatus {
        director_run_pid: view.pid,
        servers,
        below_quorum,
    };
    (effective, status)
}

fn server(target: &Target, record: &Record) -> ServerHealth {
    let state = match (record.up, record.drained()) {
        (true, _) => "up",
        (false, true) => "drained",
        (false, false) => "down",
    };
    let failure = record.last_failure.as_ref().filter(|_| !record.up);
    ServerHealth {
        service: target.service.to_string(),
        real_server: SocketAddr::new(target.addr, target.port),
        state,
        reason: failure.map(|f| describe(f.reason, &f.message)),
        reason_kind: failure.map(|f| f.reason),
        successes_in_a_row: record.successes,
        failures_in_a_row: record.failures,
        since: record.since,
    }
}

/// A failure in the words an operator expects first.
fn describe(reason: Reason, message: &str) -> String {
    match reason {
        // A TCP connect refused; a UDP check's refusal (an ICMP port unreachable) says so.
        Reason::Refused if message.starts_with("connect ") => "connect refused".to_string(),
        _ => message.to_string(),
    }
}

impl ServerHealth {
    /// `down: connect refused, 3 checks in a row, since 12:04:31`, `up since 12:05:02`, `up`.
    pub fn line(&self) -> String {
        let since = self.since.map(local_time);
        match (&self.reason, since) {
            (Some(why), Some(at)) => format!(
                "{}: {why}, {} checks in a row, since {at}",
                self.state, self.failures_in_a_row
            ),
            (Some(why), None) => format!(
                "{}: {why}, {} checks in a row",
                self.state, self.failures_in_a_row
            ),
            (None, Some(at)) => format!("{} since {at}", self.state),
            (None, None) => format!("{} (since the director started)", self.state),
        }
    }
}

/// `HH:MM:SS` in local time for today, `YYYY-MM-DD HH:MM:SS` before.
fn local_time(unix: f64) -> String {
    let at = unix as libc::time_t;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(at);
    let (Some(tm), Some(today)) = (local(at), local(now)) else {
        return format!("{unix:.0} (Unix time)");
    };
    let clock = format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (tm.tm_year, tm.tm_yday) == (today.tm_year, today.tm_yday) {
        clock
    } else {
        format!(
            "{}-{:02}-{:02} {clock}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday
        )
    }
}

fn local(t: libc::time_t) -> Option<libc::tm> {
    // SAFETY: localtime_r only writes the `tm` it is given; a zeroed tm is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    ok.then_some(tm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::director::health::{probe::ProbeError, Board};
    use std::time::Duration;

    /// A server the daemon has down is quiesced in what status compares with, and says why.
    #[test]
    fn a_quiesced_server_is_what_the_daemon_wants_and_says_why() {
        let text =
            "[director]\ninterface = \"eth0\"\n[[director.service]]\nvip = \"192.0.2.100\"\n\
                    port = 80\nreals = [\"198.51.100.2\", \"198.51.100.3\"]\n\
                    [director.service.check]\ntype = \"tcp\"\n";
        let file = crate::config_file::ConfigFile::parse(None, text.into()).expect("parses");
        let desired =
            crate::director::config::director(&file, &Default::default()).expect("validates");
        let (target, _) = health::targets(&desired)
            .into_iter()
            .next()
            .expect("a checked server");
        let mut board = Board::default();
        let refused = || {
            Err(ProbeError::Connect {
                addr: SocketAddr::new(target.addr, target.port),
                source: std::io::ErrorKind::ConnectionRefused.into(),
            })
        };
        for (up, flipped) in [(true, false), (true, false), (false, true)] {
            let health = health::Health::settled(up, None);
            board.note(&target, &refused(), Duration::ZERO, (health, flipped));
        }
        let (effective, status) = apply(&desired, &board.view());
        let weight = |d: &DirectorDesired| {
            d.services[0]
                .reals
                .iter()
                .find(|r| r.addr == target.addr)
                .map(|r| r.weight)
        };
        assert_eq!(weight(&desired), Some(1));
        assert_eq!(
            weight(&effective),
            Some(0),
            "quiesced, as the daemon has it"
        );
        assert_eq!(status.servers.len(), 2);
        let down = &status.servers[0];
        assert_eq!(down.state, "down");
        let line = down.line();
        assert!(
            line.starts_with("down: connect refused, 3 checks in a row, since "),
            "{line}"
        );
        assert_eq!(status.servers[1].line(), "up (since the director started)");
    }

    /// With `alpha` and nothing in the view yet, status has the servers down (as the daemon
    /// starts them) and the service below its quorum, its sorry server in.
    #[test]
    fn alpha_servers_are_down_until_the_view_says_otherwise() {
        let text =
            "[director]\ninterface = \"eth0\"\n[[director.service]]\nvip = \"192.0.2.100\"\n\
                    port = 80\nreals = [\"198.51.100.2\"]\nsorry_server = \"198.51.100.9\"\n\
                    [director.service.check]\ntype = \"tcp\"\nalpha = true\n";
        let file = crate::config_file::ConfigFile::parse(None, text.into()).expect("parses");
        let desired =
            crate::director::config::director(&file, &Default::default()).expect("validates");
        let (effective, status) = apply(&desired, &View::default());
        assert_eq!(status.servers[0].state, "down");
        assert_eq!(status.below_quorum, ["TCP 192.0.2.100:80"]);
        let weights: Vec<u32> = effective.services[0]
            .reals
            .iter()
            .map(|d| d.weight)
            .collect();
        assert_eq!(weights, [0, 1], "quiesced, and the sorry server");
    }
}
