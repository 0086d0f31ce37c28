//! The VM test tier: boots the Debian kernel under virtme-ng (one boot for all checks) and runs
//! the checks inside it, where loading ip_vs/dummy modules and creating namespaces cannot harm
//! the host. `cargo test --test vm [-- FILTER...]`; see docs/testing.md.
//!
//! The same binary plays both roles: on the host (no `--guest`) it boots the VM with itself as
//! the command; in the guest (`--guest RESULTS_DIR --agent PATH`) it runs the checks and reports
//! one `VMTEST` line per check to the console and to RESULTS_DIR/results (the console
//! interleaves with kernel messages; the file does not).
//!
//! To add checks: write `fn(&Ctx) -> Result<(), String>` in a module and list it in that
//! module's `CHECKS`; each check builds (and drops) its own namespaces with `guest` helpers.

mod director;
mod guest;
mod keepalived;
mod metrics;
mod realserver;
mod systemd;
mod units;

use guest::Ctx;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// A named check run inside the guest.
pub struct Check {
    pub name: &'static str,
    pub run: fn(&Ctx) -> Result<(), String>,
}

fn all_checks() -> Vec<&'static Check> {
    realserver::CHECKS
        .iter()
        .chain(director::CHECKS)
        .chain(keepalived::CHECKS)
        .chain(metrics::CHECKS)
        .chain(units::CHECKS)
        .collect()
}

/// Checks whose name contains any filter (all when there are none), like libtest's filters.
fn selected(filters: &[String]) -> Vec<&'static Check> {
    all_checks()
        .into_iter()
        .filter(|c| filters.is_empty() || filters.iter().any(|f| c.name.contains(f.as_str())))
        .collect()
}

const RESULTS_FILE: &str = "results";
const TAG: &str = "VMTEST";
/// Indent of the lines that continue a multi-line failure reason.
const CONTINUATION: &str = "    ";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--guest") {
        return guest_main(&args[1..]);
    }
    // cargo passes libtest flags (--nocapture, --test-threads=N…); only names are filters.
    let filters: Vec<String> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .cloned()
        .collect();
    if args.iter().any(|a| a == "--list") {
        for c in selected(&filters) {
            println!("{}: test", c.name);
        }
        return ExitCode::SUCCESS;
    }
    host_main(&filters)
}

// ---------------------------------------------------------------------------------------------
// Host side

/// Why the tier cannot run here; under CI that is a failure, elsewhere a loud skip.
fn skip(why: &str) -> ExitCode {
    println!("\n**** VM TIER SKIPPED: {why} ****\n");
    if std::env::var_os("CI").is_some() {
        println!("vm: CI is set, so a skipped VM tier is a failure");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn host_main(filters: &[String]) -> ExitCode {
    if selected(filters).is_empty() {
        println!("vm: no check matches {filters:?}; not booting");
        return ExitCode::SUCCESS;
    }
    if std::env::var_os("RS_AGENT_SKIP_VM").is_some() {
        return skip("RS_AGENT_SKIP_VM is set");
    }
    let Some(vng) = find_in_path("vng") else {
        return skip("`vng` (virtme-ng) not in PATH; pip install virtme-ng");
    };
    if find_in_path("qemu-system-x86_64").is_none() {
        return skip("qemu-system-x86_64 not in PATH; apt install qemu-system-x86");
    }
    // virtme-ng reads the kernel image with file(1); without it the guest runs nothing.
    if find_in_path("file").is_none() {
        return skip("`file` not in PATH (virtme-ng needs it); apt install file");
    }
    let kernel = match find_kernel() {
        Ok(k) => k,
        Err(why) => return skip(&why),
    };
    match boot(&vng, &kernel, filters) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            println!("vm: FAILED: {why}");
            ExitCode::FAILURE
        }
    }
}

fn find_in_path(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(prog))
        .find(|p| p.is_file())
}

/// A kernel whose modules are installed (the checks modprobe ip_vs, dummy…): $RS_AGENT_VM_KERNEL,
/// else the running kernel's /boot image, else the highest /boot/vmlinuz-*.
fn find_kernel() -> Result<PathBuf, String> {
    if let Some(k) = std::env::var_os("RS_AGENT_VM_KERNEL") {
        return Ok(PathBuf::from(k));
    }
    let has_modules = |p: &Path| {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        let version = name.trim_start_matches("vmlinuz-");
        Path::new("/lib/modules")
            .join(version)
            .join("modules.dep")
            .is_file()
    };
    let mut kernels: Vec<PathBuf> = fs::read_dir("/boot")
        .map_err(|e| format!("cannot list /boot: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().starts_with("/boot/vmlinuz-") && has_modules(p))
        .collect();
    kernels.sort();
    let running = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let running = PathBuf::from(format!("/boot/vmlinuz-{}", running.trim()));
    if kernels.contains(&running) {
        return Ok(running);
    }
    kernels.pop().ok_or_else(|| {
        "no /boot/vmlinuz-* with modules in /lib/modules; apt install linux-image-amd64".into()
    })
}

/// Boots once, runs the checks in the guest, and judges the results it wrote.
fn boot(vng: &Path, kernel: &Path, filters: &[String]) -> Result<(), String> {
    let dir = scratch_dir()?;
    let console = dir.join("console.log");
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let mut exec = vec![
        exe.to_string_lossy().into_owned(),
        "--guest".into(),
        dir.to_string_lossy().into_owned(),
        "--agent".into(),
        env!("CARGO_BIN_EXE_rs-agent").into(),
    ];
    exec.extend(filters.iter().cloned());
    let exec: Vec<String> = exec.iter().map(|a| shell_quote(a)).collect();
    let mut cmd = Command::new(vng);
    cmd.args(["--disable-kvm", "--verbose", "--user", "root"])
        .args(["--memory", "1G", "--cpus", "2"])
        .arg("--rwdir")
        .arg(&dir)
        .arg("--run")
        .arg(kernel)
        .arg("--exec")
        .arg(exec.join(" "));
    println!(
        "vm: booting {} (no KVM; this takes a while)",
        kernel.display()
    );
    let started = Instant::now();
    let status =
        run_bounded(cmd, &console, boot_timeout()).map_err(|e| keep(&dir, &console, &e))?;
    let elapsed = started.elapsed();
    let verdict = judge(&dir, &console);
    println!("vm: boot + checks took {:.1}s", elapsed.as_secs_f64());
    match verdict {
        Ok(()) if status.success() => {
            if std::env::var_os("RS_AGENT_VM_KEEP").is_some() {
                println!("vm: console log kept: {}", console.display());
            } else {
                let _ = fs::remove_dir_all(&dir);
            }
            Ok(())
        }
        Ok(()) => Err(keep(&dir, &console, &format!("vng exited with {status}"))),
        Err(why) => Err(keep(&dir, &console, &why)),
    }
}

fn boot_timeout() -> Duration {
    let secs = std::env::var("RS_AGENT_VM_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(900);
    Duration::from_secs(secs)
}

fn scratch_dir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("rs-agent-vm-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// Failure message that points at the kept console log, with its last non-kernel lines.
fn keep(dir: &Path, console: &Path, why: &str) -> String {
    let log = fs::read_to_string(console).unwrap_or_default();
    let lines: Vec<&str> = log.lines().filter(|l| !l.starts_with('[')).collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    format!(
        "{why}\n--- last console lines (kernel lines omitted) ---\n{tail}\n--- full log: {} (dir {} kept)",
        console.display(),
        dir.display()
    )
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `cmd` in its own process group with output copied to `log` (result lines echoed live);
/// kills the whole group (vng, qemu) if it outlives `limit`.
fn run_bounded(
    mut cmd: Command,
    log: &Path,
    limit: Duration,
) -> Result<std::process::ExitStatus, String> {
    let file = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err_file = file
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err_file)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start vng: {e}"))?;
    let copier = child.stdout.take().map(|out| {
        std::thread::spawn(move || {
            let mut file = file;
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                if let Some(at) = line.find(TAG) {
                    println!("  {}", &line[at..]);
                }
            }
        })
    });
    let status = wait_bounded(&mut child, limit);
    if let Some(copier) = copier {
        let _ = copier.join();
    }
    status
}

fn wait_bounded(child: &mut Child, limit: Duration) -> Result<std::process::ExitStatus, String> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Ok(None) => {
                // SAFETY: kill(2) on the process group we created; no memory is involved.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                return Err(format!("VM killed after {}s", limit.as_secs()));
            }
            Err(e) => return Err(format!("waiting for vng: {e}")),
        }
    }
}

/// Reads the guest's result lines (the results file, else the console) and prints the summary.
fn judge(dir: &Path, console: &Path) -> Result<(), String> {
    let from_file = fs::read_to_string(dir.join(RESULTS_FILE)).unwrap_or_default();
    let text = if from_file.contains(TAG) {
        from_file
    } else {
        fs::read_to_string(console).unwrap_or_default()
    };
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.find(TAG).map(|at| &l[at..]))
        .collect();
    let passed = lines.iter().filter(|l| l.starts_with("VMTEST ok ")).count();
    let failures = lines
        .iter()
        .filter(|l| l.starts_with("VMTEST FAIL "))
        .count();
    print_failures(&text);
    if let Some(t) = lines.iter().find(|l| l.starts_with("VMTEST time ")) {
        println!("vm: {}", &t["VMTEST ".len()..]);
    }
    println!("vm: {passed} passed, {failures} failed");
    let summary = lines.iter().any(|l| l.starts_with("VMTEST summary "));
    ensure_ok(
        summary,
        "the guest wrote no summary line (crashed or timed out?)",
    )?;
    ensure_ok(failures == 0, "some checks failed")
}

/// Prints each FAIL line with its indented continuation lines (multi-line reasons).
fn print_failures(text: &str) {
    let mut in_failure = false;
    for line in text.lines() {
        if let Some(at) = line.find(TAG) {
            in_failure = line[at..].starts_with("VMTEST FAIL ");
            if in_failure {
                println!("{}", &line[at..]);
            }
        } else if in_failure && line.starts_with(CONTINUATION) {
            println!("{line}");
        }
    }
}

fn ensure_ok(cond: bool, why: &str) -> Result<(), String> {
    guest::ensure(cond, || why.to_string())
}

// ---------------------------------------------------------------------------------------------
// Guest side

/// Modules the checks need; loaded into the guest kernel before any check runs.
const MODULES: &[&str] = &[
    "ip_vs",
    "ip_vs_rr",
    "ip_vs_wrr",
    "ip_vs_lc",
    "ip_vs_wlc",
    "ip_vs_sh",
    "ip_vs_mh",
    "dummy",
    "veth",
    "bridge",
    "nf_tables",
];
/// Tools the checks run.
const TOOLS: &[&str] = &[
    "ip",
    "sysctl",
    "nft",
    "ipvsadm",
    "busybox",
    "arping",
    "curl",
    "prometheus",
    "promtool",
];
/// Writable scratch in the guest (/run is a tmpfs under virtme-ng).
const GUEST_SCRATCH: &str = "/run/rs-agent-vm";

/// Writes result lines to the console and (synced) to the results file.
struct Reporter {
    file: Option<File>,
}

impl Reporter {
    fn line(&mut self, line: &str) {
        let line = line.replace('\n', &format!("\n{CONTINUATION}"));
        println!("{line}");
        if let Some(f) = self.file.as_mut() {
            let _ = writeln!(f, "{line}");
            let _ = f.sync_data();
        }
    }
}

fn guest_main(args: &[String]) -> ExitCode {
    let (Some(results_dir), Some("--agent"), Some(agent)) =
        (args.first(), args.get(1).map(String::as_str), args.get(2))
    else {
        eprintln!("usage: vm --guest RESULTS_DIR --agent RS_AGENT [FILTER...]");
        return ExitCode::from(2);
    };
    let mut report = Reporter {
        file: File::create(Path::new(results_dir).join(RESULTS_FILE)).ok(),
    };
    let started = Instant::now();
    let (mut passed, mut failed) = (0, 0);
    if let Err(why) = guest_setup() {
        report.line(&format!("{TAG} FAIL setup: {why}"));
        failed += 1;
    } else {
        for check in selected(&args[3..]) {
            let ctx = Ctx {
                agent: PathBuf::from(agent),
                scratch: Path::new(GUEST_SCRATCH).join(check.name),
            };
            match run_check(check, &ctx) {
                Ok(t) => {
                    report.line(&format!("{TAG} ok {} ({t:.1}s)", check.name));
                    passed += 1;
                }
                Err(why) => {
                    report.line(&format!("{TAG} FAIL {}: {why}", check.name));
                    failed += 1;
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    report.line(&format!("{TAG} time checks took {secs:.1}s in the guest"));
    report.line(&format!("{TAG} summary {passed} passed {failed} failed"));
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn guest_setup() -> Result<(), String> {
    for module in MODULES {
        guest::run("modprobe", &[module])?;
    }
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| find_in_path(t).is_none())
        .collect();
    guest::ensure(missing.is_empty(), || {
        format!("tools missing in the guest: {}", missing.join(", "))
    })?;
    fs::create_dir_all(GUEST_SCRATCH).map_err(|e| format!("{GUEST_SCRATCH}: {e}"))
}

/// Runs one check with a scratch dir of its own; a panic is a failure, not the end of the run.
fn run_check(check: &Check, ctx: &Ctx) -> Result<f64, String> {
    let started = Instant::now();
    fs::create_dir_all(&ctx.scratch).map_err(|e| format!("{}: {e}", ctx.scratch.display()))?;
    let outcome = catch_unwind(AssertUnwindSafe(|| (check.run)(ctx)));
    let _ = fs::remove_dir_all(&ctx.scratch);
    let leaked = remove_leftover_namespaces();
    match outcome {
        Ok(Ok(())) if leaked.is_empty() => Ok(started.elapsed().as_secs_f64()),
        Ok(Ok(())) => Err(format!("left namespaces behind: {}", leaked.join(", "))),
        Ok(Err(why)) => Err(why),
        Err(panic) => Err(format!("panicked: {}", panic_message(&panic))),
    }
}

/// Namespaces still present after a check (its guards should have deleted them); removes them
/// so the next check starts clean.
fn remove_leftover_namespaces() -> Vec<String> {
    let names: Vec<String> = fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    for name in &names {
        let _ = guest::output("ip", &["netns", "del", name]);
    }
    names
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".into()
    }
}
