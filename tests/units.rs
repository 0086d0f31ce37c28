//! The systemd units: `systemd-analyze verify` is clean and the offline security exposure is
//! at most 2.0 for both (the hardening target); the `Type=notify-reload` drop-ins say what the
//! docs say and verify with the units. Runs without root; skips loudly when
//! systemd-analyze is missing (and fails when CI is set).

use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: [&str; 2] = ["rs-agent.service", "rs-agent-director.service"];
const MAX_EXPOSURE: f64 = 2.0;

fn analyzer() -> Option<PathBuf> {
    let found = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
    (!path.is_empty()).then(|| PathBuf::from(path))
}

fn skip_or_fail(why: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("{why} (CI is set: the units must be checked)");
    }
    eprintln!("SKIP: units: {why}");
    true
}

/// The unit with ExecStart pointing at the binary cargo built (verify checks it exists).
fn staged(unit: &str, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(Path::new("units").join(unit)).expect("unit file readable");
    let text = text.replace("/usr/local/sbin/rs-agent", env!("CARGO_BIN_EXE_rs-agent"));
    let path = dir.join(unit);
    std::fs::write(&path, text).expect("write staged unit");
    path
}

#[test]
fn units_verify_and_meet_the_exposure_target() {
    let Some(sa) = analyzer() else {
        skip_or_fail("systemd-analyze not installed (apt install systemd)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("rsa-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for unit in UNITS {
        let path = staged(unit, &dir);
        let verify = Command::new(&sa)
            .arg("verify")
            .arg(&path)
            .output()
            .expect("run verify");
        let complaints = String::from_utf8_lossy(&verify.stderr);
        // Units it is ordered after/before but which this machine lacks are not our problem.
        let real: Vec<&str> = complaints
            .lines()
            .filter(|l| {
                !l.contains("not found") && !l.contains("Failed to open") && !l.trim().is_empty()
            })
            .collect();
        assert!(
            verify.status.success() && real.is_empty(),
            "{unit}: systemd-analyze verify:\n{complaints}"
        );

        let security = Command::new(&sa)
            .args(["security", "--offline=true"])
            .arg(&path)
            .output()
            .expect("run security");
        let text = String::from_utf8_lossy(&security.stdout);
        let exposure: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for").nth(1))
            .and_then(|rest| rest.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{unit}: no exposure level in:\n{text}"));
        eprintln!("{unit}: exposure {exposure}");
        assert!(
            exposure <= MAX_EXPOSURE,
            "{unit}: exposure {exposure} > {MAX_EXPOSURE}:\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The drop-in for systemd ≥ 253 (docs/troubleshooting.md, "Reload under Type=notify-reload"):
/// `Type=notify-reload`, and `ExecReload=` emptied then given the unit's own check line alone
/// (systemd sends the SIGHUP itself; the unit's `kill -HUP` would be a second reload).
#[test]
fn the_notify_reload_drop_ins_keep_the_check_and_drop_the_kill() {
    for unit in UNITS {
        let shipped = std::fs::read_to_string(Path::new("units").join(unit)).expect("unit");
        let dropin = std::fs::read_to_string(dropin_path(unit)).expect("drop-in readable");
        let settings = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.starts_with('#') && l.contains('='))
                .map(str::to_string)
                .collect()
        };
        let checks: Vec<String> = settings(&shipped)
            .into_iter()
            .filter(|l| l.starts_with("ExecReload=") && !l.contains("kill"))
            .collect();
        assert_eq!(checks.len(), 1, "{unit}: one check in ExecReload=");
        let mut want = vec!["Type=notify-reload".to_string(), "ExecReload=".to_string()];
        want.extend(checks);
        assert_eq!(settings(&dropin), want, "{unit}'s drop-in");
        assert!(
            dropin.contains("\n[Service]\n"),
            "{unit}'s drop-in: [Service]"
        );
    }
}

/// `systemd-analyze verify` of each unit with its drop-in: clean on systemd ≥ 253; on older
/// ones (Debian 12's 252) exactly the one complaint the docs warn of, which also shows that
/// verify read the drop-in.
#[test]
fn the_notify_reload_drop_ins_verify() {
    let Some(sa) = analyzer() else {
        skip_or_fail("systemd-analyze not installed (apt install systemd)");
        return;
    };
    let version = Command::new(&sa)
        .arg("--version")
        .output()
        .expect("version");
    let version: u32 = String::from_utf8_lossy(&version.stdout)
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("systemd-analyze --version: `systemd NNN (...)`");
    let dir = std::env::temp_dir().join(format!("rsa-dropins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for unit in UNITS {
        let path = staged(unit, &dir);
        let dropins = dir.join(format!("{unit}.d"));
        std::fs::create_dir_all(&dropins).expect("drop-in dir");
        let text = std::fs::read_to_string(dropin_path(unit)).expect("drop-in readable");
        let text = text.replace("/usr/local/sbin/rs-agent", env!("CARGO_BIN_EXE_rs-agent"));
        std::fs::write(dropins.join("notify-reload.conf"), text).expect("write drop-in");
        let verify = Command::new(&sa)
            .arg("verify")
            .arg(&path)
            .output()
            .expect("run verify");
        let complaints = String::from_utf8_lossy(&verify.stderr);
        let real: Vec<&str> = complaints
            .lines()
            .filter(|l| {
                !l.contains("not found") && !l.contains("Failed to open") && !l.trim().is_empty()
            })
            .collect();
        let expected: &[&str] = match version >= 253 {
            true => &[],
            false => &["Failed to parse service type, ignoring: notify-reload"],
        };
        assert!(verify.status.success(), "{unit} + drop-in:\n{complaints}");
        assert_eq!(
            real.len(),
            expected.len(),
            "{unit} + drop-in:\n{complaints}"
        );
        for (line, want) in real.iter().zip(expected) {
            assert!(
                line.ends_with(want),
                "{unit} + drop-in: {line:?}, want {want:?}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn dropin_path(unit: &str) -> PathBuf {
    Path::new("units/notify-reload")
        .join(format!("{unit}.d"))
        .join("notify-reload.conf")
}
