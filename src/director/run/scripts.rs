//! The notify commands of `director run`: a real server's `notify_up` / `notify_down` when its
//! verdict flips, a service's `quorum_up` / `quorum_down` when it gains or loses its quorum.
//!
//! Each runs as its own tokio task, without a shell, with what happened in its environment,
//! killed after [`TIMEOUT`]; at most [`MAX_RUNNING`] at once, and at most [`MAX_PENDING`]
//! started or waiting (one more is dropped with a warning). Its exit status is logged. It
//! never blocks the loop and never changes a verdict or the table.

use crate::director::config::DirectorDesired;
use crate::director::health::quorum::Change;
use crate::director::health::Target;
use crate::kernel::ipvs::ServiceKey;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How long one notify command may run before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Notify commands running at once.
pub const MAX_RUNNING: usize = 8;
/// Notify commands running or waiting for a slot; beyond that a new one is dropped.
pub const MAX_PENDING: usize = 256;

/// One command to run and what it is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Script {
    /// What it is for, as the log says it (`notify_down of real server ...`).
    pub what: String,
    pub argv: Vec<String>,
    pub env: Vec<(&'static str, String)>,
}

/// The environment naming a service: `SERVICE`, and `VIP` and `VPORT` or `FWMARK`.
fn service_env(key: &ServiceKey) -> Vec<(&'static str, String)> {
    let mut env = vec![("SERVICE", key.to_string())];
    match key {
        ServiceKey::Addr { addr, port, .. } => {
            env.push(("VIP", addr.to_string()));
            env.push(("VPORT", port.to_string()));
        }
        ServiceKey::Fwmark { mark, .. } => env.push(("FWMARK", mark.to_string())),
    }
    env
}

fn state(up: bool) -> &'static str {
    match up {
        true => "up",
        false => "down",
    }
}

/// The `notify_up` / `notify_down` of `target`, now `up` (or down), if it has one.
pub(super) fn real_server(desired: &DirectorDesired, target: &Target, up: bool) -> Option<Script> {
    let s = desired
        .services
        .iter()
        .find(|s| s.service.key == target.service)?;
    let argv = s.notify_of(target.addr, target.port)?.on(up)?;
    let mut env = vec![
        ("NOTIFY", "real_server".to_string()),
        ("STATE", state(up).into()),
    ];
    env.extend(service_env(&target.service));
    env.push(("RS_ADDR", target.addr.to_string()));
    env.push(("RS_PORT", target.port.to_string()));
    Some(Script {
        what: format!("notify_{} of {target}", state(up)),
        argv: argv.to_vec(),
        env,
    })
}

/// The `quorum_up` / `quorum_down` of the service that `change`d, if it has one.
pub(super) fn service(desired: &DirectorDesired, change: &Change) -> Option<Script> {
    let s = desired
        .services
        .iter()
        .find(|s| s.service.key == change.service)?;
    let argv = s.quorum_notify.on(change.up)?;
    let mut env = vec![
        ("NOTIFY", "service".to_string()),
        ("STATE", state(change.up).into()),
    ];
    env.extend(service_env(&change.service));
    env.push(("LIVE_WEIGHT", change.live_weight.to_string()));
    env.push(("QUORUM", s.quorum.weight.to_string()));
    env.push(("HYSTERESIS", s.quorum.hysteresis.to_string()));
    Some(Script {
        what: format!("quorum_{} of service {}", state(change.up), change.service),
        argv: argv.to_vec(),
        env,
    })
}

/// The running (and waiting) notify commands.
pub(super) struct Scripts {
    set: JoinSet<()>,
    slots: Arc<Semaphore>,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            set: JoinSet::new(),
            slots: Arc::new(Semaphore::new(MAX_RUNNING)),
        }
    }
}

impl Scripts {
    /// Starts `script` in the background (dropped, with a warning, when too many are pending).
    pub(super) fn start(&mut self, script: Script) {
        while self.set.try_join_next().is_some() {}
        if self.set.len() >= MAX_PENDING {
            return tracing::warn!(
                "{}: not run, {MAX_PENDING} notify commands are already running or waiting",
                script.what
            );
        }
        let slots = self.slots.clone();
        self.set.spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            run(&script, TIMEOUT).await;
        });
    }

    /// Stops every notify command (the director is stopping): running ones are killed.
    pub(super) fn abort_all(&mut self) {
        self.set.abort_all();
    }
}

/// Runs one notify command to its end or its timeout, and logs how it ended.
pub(super) async fn run(script: &Script, timeout: Duration) {
    let Some((program, args)) = script.argv.split_first() else {
        return;
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(script.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    // SAFETY: the hook only makes system calls (getrlimit, setrlimit), which are safe between
    // fork and exec.
    unsafe {
        cmd.pre_exec(crate::kernel::rlimit::restore_fd_limit_in_child);
    }
    let what = &script.what;
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return tracing::warn!("{what}: running {program} failed: {e}"),
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => tracing::info!("{what}: {program} exited 0"),
        Ok(Ok(status)) => tracing::warn!("{what}: {program} {status}"),
        Ok(Err(e)) => tracing::warn!("{what}: waiting for {program} failed: {e}"),
        Err(_) => tracing::warn!(
            "{what}: {program} still ran after {} s and was killed",
            timeout.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::director::health::targets;

    fn desired() -> DirectorDesired {
        let text =
            "[director]\ninterface = \"eth0\"\n[[director.service]]\nvip = \"192.0.2.100\"\n\
                    port = 80\nquorum = 2\nquorum_down = [\"/bin/q\", \"down\"]\n\
                    [director.service.check]\ntype = \"tcp\"\n\
                    [[director.service.real]]\naddress = \"198.51.100.2\"\nweight = 2\n\
                    notify_down = [\"/bin/n\", \"-d\"]\n\
                    [[director.service.real]]\naddress = \"198.51.100.3\"\n";
        let file = crate::config_file::ConfigFile::parse(None, text.into()).expect("parses");
        crate::director::config::director(&file, &Default::default()).expect("validates")
    }

    /// The command of the flip that has one, told which server and service and the state; none
    /// for a server or a state without one.
    #[test]
    fn a_flip_names_its_server_service_and_state() {
        let d = desired();
        let t = targets(&d);
        let script = real_server(&d, &t[0].0, false).expect("notify_down");
        assert_eq!(script.argv, ["/bin/n", "-d"]);
        let env: Vec<(&str, &str)> = script.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            env,
            [
                ("NOTIFY", "real_server"),
                ("STATE", "down"),
                ("SERVICE", "TCP 192.0.2.100:80"),
                ("VIP", "192.0.2.100"),
                ("VPORT", "80"),
                ("RS_ADDR", "198.51.100.2"),
                ("RS_PORT", "80"),
            ]
        );
        assert_eq!(real_server(&d, &t[0].0, true), None, "no notify_up");
        assert_eq!(real_server(&d, &t[1].0, false), None, "no commands");
        let change = Change {
            service: t[0].0.service.clone(),
            up: false,
            live_weight: 1,
        };
        let script = service(&d, &change).expect("quorum_down");
        assert_eq!(script.what, "quorum_down of service TCP 192.0.2.100:80");
        assert!(script.env.contains(&("LIVE_WEIGHT", "1".into())));
        assert!(script.env.contains(&("QUORUM", "2".into())));
        let up = Change { up: true, ..change };
        assert_eq!(service(&d, &up), None, "no quorum_up");
    }

    /// A command that outlives its timeout is killed, and the wait ends with it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_command_past_its_timeout_is_killed() {
        let script = Script {
            what: "test".into(),
            argv: vec!["/bin/sleep".into(), "30".into()],
            env: Vec::new(),
        };
        let bound = Duration::from_secs(20);
        tokio::time::timeout(bound, run(&script, Duration::from_millis(50)))
            .await
            .expect("killed at its timeout");
    }
}
