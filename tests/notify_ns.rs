//! Namespace tier for the notify commands of `director run`: the checking half
//! (`director::run::check_only`, which runs the same notify commands and quorum states as
//! `run` without IPVS) checks a real server in a namespace the test creates while the test
//! stops and restarts it; the commands write what they were told into a file.

mod common;

use common::{in_netns, require_privileges, Netns};
use rs_agent::config_file::ConfigFile;
use rs_agent::director::{self, run::CheckTally};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const RS: &str = "198.51.100.2";
const PORT: u16 = 8080;

/// A directory removed when the test ends, however it ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The lines written so far, sorted (commands of one flip run in no given order).
fn lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// Waits (generously) until `path` holds `n` lines.
async fn until_lines(path: &Path, n: usize) -> Vec<String> {
    let since = Instant::now();
    while lines(path).len() < n && since.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lines(path)
}

/// With `alpha` the server starts down: its first good check runs notify_up and, the quorum
/// gained, quorum_up; stopping it runs notify_down and quorum_down; restarting it both ups.
#[test]
fn notify_commands_run_on_flips_and_quorum_changes() {
    require_privileges!();
    let ns = Netns::new("notify", "rs");
    ns.exec(&["ip", "addr", "add", &format!("{RS}/32"), "dev", "lo"]);
    let dir = TempDir(std::env::temp_dir().join(&ns.name));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let log = dir.0.join("notify.log");
    let cmd = |line: &str| {
        format!(
            "[\"/bin/sh\", \"-c\", \"echo {line} >> {}\"]",
            log.display()
        )
    };
    let config = format!(
        "[director]\ninterface = \"lo\"\n\n[[director.service]]\nvip = \"192.0.2.100\"\nport = 8080\n\
         quorum_up = {}\nquorum_down = {}\n\n[director.service.check]\ntype = \"tcp\"\n\
         interval_ms = 100\ntimeout_ms = 100\nrise = 1\nfall = 1\nalpha = true\n\n\
         [[director.service.real]]\naddress = \"{RS}:{PORT}\"\nnotify_up = {}\nnotify_down = {}\n",
        cmd("quorum $STATE $LIVE_WEIGHT"),
        cmd("quorum $STATE $LIVE_WEIGHT"),
        cmd("$NOTIFY $STATE $RS_ADDR:$RS_PORT $VIP"),
        cmd("$NOTIFY $STATE $RS_ADDR:$RS_PORT $VIP"),
    );
    let file = ConfigFile::parse(None, config).expect("config");
    let desired = director::config::director(&file, &Default::default()).expect("valid config");
    let path = log.clone();
    let [a, b, c] = in_netns(&ns, move |rt| {
        rt.block_on(async move {
            let tally = CheckTally::default();
            let script = async {
                let listener = TcpListener::bind((RS, PORT)).await.expect("listening");
                let a = until_lines(&path, 2).await;
                drop(listener);
                let b = until_lines(&path, 4).await;
                let listener = TcpListener::bind((RS, PORT))
                    .await
                    .expect("listening again");
                let c = until_lines(&path, 6).await;
                drop(listener);
                [a, b, c]
            };
            director::run::check_only(&desired, 16, &tally, script).await
        })
    });
    let up = format!("real_server up {RS}:{PORT} 192.0.2.100");
    let down = format!("real_server down {RS}:{PORT} 192.0.2.100");
    assert_eq!(
        a,
        ["quorum up 1", up.as_str()],
        "alpha: up at the first good check"
    );
    assert_eq!(
        b,
        ["quorum down 0", "quorum up 1", down.as_str(), up.as_str()],
        "stopped"
    );
    assert_eq!(
        c,
        [
            "quorum down 0",
            "quorum up 1",
            "quorum up 1",
            down.as_str(),
            up.as_str(),
            up.as_str()
        ],
        "restarted"
    );
}
