//! Real-server drain: `rs-agent drain` / `undrain` flip a flag file in the state directory,
//! and the running agent serves it on a tiny read-only HTTP endpoint (only when a listen
//! address is configured). The director's HTTP check of that endpoint then quiesces the real
//! server, so it leaves the rotation without a single failed request: connections already
//! open finish, new ones go elsewhere.
//!
//! Route: `GET /health` (and `HEAD`) → 200 "ok" or 503 "draining", on the daemon's
//! endpoint (`daemon::endpoint`, which answers anything else with 404/405).

use crate::daemon::endpoint::{ready, Answer, Request, Response, Routes};
use std::path::{Path, PathBuf};

pub fn flag_path(state_dir: &Path) -> PathBuf {
    state_dir.join(crate::state_dir::DRAIN_FLAG)
}

pub fn is_drained(state_dir: &Path) -> bool {
    flag_path(state_dir).exists()
}

/// Sets or clears the drain flag; says whether anything changed.
pub fn set_drained(state_dir: &Path, drained: bool) -> std::io::Result<bool> {
    let path = flag_path(state_dir);
    match (drained, path.exists()) {
        (true, false) => {
            crate::state_dir::create_dir(state_dir)?;
            std::fs::write(
                &path,
                "drained by `rs-agent drain`; `rs-agent undrain` clears it\n",
            )?;
            Ok(true)
        }
        (false, true) => std::fs::remove_file(&path).map(|_| true),
        _ => Ok(false),
    }
}

/// Whether `rs-agent run` manages this state directory, and where it serves /health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// No `rs-agent run` holds the state directory.
    NoAgent,
    /// `run` (pid, if known) serves /health at the address, if one is configured.
    Agent {
        pid: Option<u32>,
        listen: Option<String>,
    },
}

/// What `drain`/`undrain` did, as one true line: the flag, and who (if anyone) reports it.
pub fn describe(drain: bool, changed: bool, server: &Server) -> String {
    let prefix = if changed { "did" } else { "nothing to do" };
    let (state, code) = if drain {
        ("drain flag set", 503)
    } else {
        ("drain flag cleared", 200)
    };
    let served = match server {
        Server::Agent {
            pid,
            listen: Some(listen),
        } => {
            let who = crate::state_dir::describe_holder(*pid);
            return format!(
                "{prefix}: {state}: rs-agent run ({who}) answers {code} on http://{listen}/health"
            );
        }
        Server::Agent { pid, listen: None } => format!(
            "rs-agent run ({}) serves no /health (set health_listen / --health-listen), so the \
             director cannot see it",
            crate::state_dir::describe_holder(*pid)
        ),
        Server::NoAgent => "no rs-agent run manages this state directory, so no /health \
                            endpoint reports it yet"
            .to_string(),
    };
    format!("{prefix}: {state}, but {served}")
}

/// The answer to `GET /health`, given the drain state.
pub fn respond(drained: bool) -> (u16, &'static str) {
    if drained {
        (503, "draining\n")
    } else {
        (200, "ok\n")
    }
}

/// `/health` on the daemon's endpoint: 200 "ok", or 503 "draining" while the flag is set.
pub struct HealthRoute {
    pub state_dir: PathBuf,
}

impl Routes for HealthRoute {
    fn paths(&self) -> &'static [&'static str] {
        &["/health"]
    }

    fn respond<'a>(&'a self, _: &'a Request) -> Answer<'a> {
        let (status, body) = respond(is_drained(&self.state_dir));
        ready(Response::text(status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_answers_by_the_flag() {
        assert_eq!(respond(false), (200, "ok\n"));
        assert_eq!(respond(true), (503, "draining\n"));
    }

    #[test]
    fn drain_says_who_reports_the_flag() {
        let serving = Server::Agent {
            pid: Some(42),
            listen: Some("198.51.100.2:8081".into()),
        };
        assert_eq!(
            describe(true, true, &serving),
            "did: drain flag set: rs-agent run (pid 42) answers 503 on http://198.51.100.2:8081/health"
        );
        let silent = describe(true, true, &Server::NoAgent);
        assert!(
            silent.starts_with("did: drain flag set, but no rs-agent run")
                && !silent.contains("answers 503"),
            "{silent}"
        );
        let no_endpoint = Server::Agent {
            pid: None,
            listen: None,
        };
        let line = describe(false, false, &no_endpoint);
        assert!(
            line.starts_with("nothing to do: drain flag cleared, but rs-agent run (holder unknown) serves no /health"),
            "{line}"
        );
    }

    #[test]
    fn flag_round_trip() {
        let dir = std::env::temp_dir().join(format!("rsa-drain-unit-{}", std::process::id()));
        assert!(!is_drained(&dir));
        assert_eq!(set_drained(&dir, true).ok(), Some(true));
        assert_eq!(set_drained(&dir, true).ok(), Some(false));
        assert!(is_drained(&dir));
        assert_eq!(set_drained(&dir, false).ok(), Some(true));
        assert!(!is_drained(&dir));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
