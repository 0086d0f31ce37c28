//! Namespace tier for `rs-agent run --metrics-listen`: a real server's agent is scraped with
//! curl from inside its namespace, and every scrape is checked against what was done to the
//! node just before — the kernel at scrape time (a sysctl reset that no pass has seen yet), a
//! VIP deleted by hand and repaired (`rs_agent_repairs_total{kind="vip"}` up by exactly one),
//! a reload, the drain flag — in both formats, the text one linted by `promtool check metrics`.
//!
//! Needs root, curl and promtool (skips loudly otherwise; fails when CI is set). Run with
//! `cargo test --test metrics_ns`.

mod common;

use common::{poll, require_privileges, stdout, Host, HostSpec, Lan, RunAgent};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const VIP: &str = "192.0.2.100";
const RS_IP: &str = "192.0.2.2";
/// Generous: a repair on an event takes milliseconds; only a broken agent waits this long.
const LIMIT: Duration = Duration::from_secs(20);
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0";

/// `rs-agent run` in the real server's namespace, its stderr in a file; SIGTERM on drop.
struct Agent {
    run: RunAgent,
    log: PathBuf,
}

impl Agent {
    fn start(rs: &Host, args: &[&str]) -> Agent {
        let log = std::env::temp_dir().join(format!("{}-run.log", rs.ns.name));
        let file = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let mut agent = Agent {
            run: RunAgent::start(rs, args, Stdio::from(file)),
            log,
        };
        let log = agent.log.clone();
        agent
            .run
            .wait_configured(rs, || std::fs::read_to_string(&log).unwrap_or_default());
        agent
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// One HTTP answer as curl saw it.
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

/// Fetches `http://<addr><path>` from inside `rs`'s namespace (bounded by curl's own timeout
/// and the command's), with an `Accept` header when given.
fn fetch(rs: &Host, addr: &str, path: &str, accept: Option<&str>) -> Answer {
    let url = format!("http://{addr}{path}");
    let header = accept.map(|a| format!("Accept: {a}"));
    let mut args = vec![
        "curl",
        "-sS",
        "--max-time",
        "15",
        "-o",
        "-",
        "-w",
        "\n%{http_code} %{content_type}",
    ];
    if let Some(h) = &header {
        args.extend(["-H", h.as_str()]);
    }
    args.push(&url);
    let out = stdout(&rs.exec(&args));
    let (body, meta) = out.rsplit_once('\n').unwrap_or(("", &out));
    let (code, content_type) = meta.split_once(' ').unwrap_or((meta, ""));
    Answer {
        status: code.parse().unwrap_or(0),
        content_type: content_type.to_string(),
        body: body.to_string(),
    }
}

/// A text-format scrape of `addr`; asserts it is a 200 in the text format.
fn scrape(rs: &Host, addr: &str) -> String {
    let answer = fetch(rs, addr, "/metrics", None);
    assert_eq!(answer.status, 200, "scrape of {addr}: {}", answer.body);
    assert_eq!(
        answer.content_type, "text/plain; version=0.0.4; charset=utf-8",
        "scrape of {addr}"
    );
    answer.body
}

/// The value of the sample `series` (name and labels exactly as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn vip_series(family: &str, second: (&str, &str)) -> String {
    format!("{family}{{vip=\"{VIP}\",{}=\"{}\"}}", second.0, second.1)
}

/// `promtool check metrics` of `text`: clean means exit 0 and nothing said.
fn assert_promtool_clean(text: &str) {
    let mut child = Command::new("timeout")
        .args(["30", "promtool", "check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .expect("writing to promtool");
    }
    let out = child.wait_with_output().expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n{text}"
    );
}

/// Skips loudly unless curl and promtool are installed.
fn have_scrapers(test: &str) -> bool {
    let missing: Vec<&str> = ["curl", "promtool"]
        .into_iter()
        .filter(|t| !common::on_path(t))
        .collect();
    if missing.is_empty() {
        return true;
    }
    common::skip(test, &format!("needs {}", missing.join(", ")));
    false
}

fn lone_real_server(test: &str) -> (Lan, Host) {
    let mut lan = Lan::new(test);
    let rs = lan.host(HostSpec::new("rs1", &format!("{RS_IP}/24")));
    (lan, rs)
}

/// Polls scrapes of `addr` until `done` holds for one (bounded); returns that scrape.
fn scrape_until(
    rs: &Host,
    agent: &Agent,
    addr: &str,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let mut last = String::new();
    let ok = poll(LIMIT, || {
        last = scrape(rs, addr);
        done(&last)
    });
    assert!(
        ok,
        "{what}: not seen within {LIMIT:?}:\n{last}\nagent log:\n{}",
        agent.log()
    );
    last
}

/// Two listeners (/health and /metrics on their own ports); the scrape follows the kernel,
/// the repairs, a reload and the drain flag.
#[test]
fn metrics_follow_the_kernel_repairs_reloads_and_drain() {
    require_privileges!();
    if !have_scrapers("metrics_follow_the_kernel_repairs_reloads_and_drain") {
        return;
    }
    let (_lan, rs) = lone_real_server("metrics");
    let (health, metrics) = (format!("{RS_IP}:8081"), format!("{RS_IP}:9101"));
    // An hour between periodic checks: only events and SIGHUP start passes, so a sysctl
    // reset stays unrepaired until the reload.
    let args = [
        "--vip",
        VIP,
        "--interval",
        "3600s",
        "--health-listen",
        &health,
        "--metrics-listen",
        &metrics,
    ];
    let agent = Agent::start(&rs, &args);
    assert!(
        agent
            .log()
            .contains(&format!("serving /metrics listen={metrics}")),
        "{}",
        agent.log()
    );

    let text = scrape(&rs, &metrics);
    assert_promtool_clean(&text);
    let version = env!("CARGO_PKG_VERSION");
    let build = format!("rs_agent_build_info{{version=\"{version}\",role=\"real_server\"}}");
    assert_eq!(sample(&text, &build), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, &vip_series("rs_agent_vip_bound", ("device", "lo"))),
        Some(1.0),
        "{text}"
    );
    let eth0 = vip_series("rs_agent_arp_suppressed", ("interface", "eth0"));
    assert_eq!(sample(&text, &eth0), Some(1.0), "{text}");
    assert_eq!(sample(&text, "rs_agent_drained"), Some(0.0), "{text}");
    assert_eq!(
        sample(&text, "rs_agent_passes_total{kind=\"start\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(
        !text.contains("rs_agent_last_reload_timestamp_seconds"),
        "{text}"
    );

    // The kernel at scrape time: no pass has run since the reset, yet the scrape shows it.
    rs.ns.sysctl("net.ipv4.conf.eth0.arp_ignore", "0");
    let text = scrape(&rs, &metrics);
    assert_eq!(
        sample(&text, &eth0),
        Some(0.0),
        "a reset arp_ignore:\n{text}\n{}",
        agent.log()
    );
    // A reload's pass puts it back; the reload is accepted once that pass ran.
    rs.exec(&["kill", "-HUP", &agent.run.child.id().to_string()]);
    let text = scrape_until(&rs, &agent, &metrics, "the reload's repair", |t| {
        sample(t, &eth0) == Some(1.0)
            && sample(t, "rs_agent_reloads_total{result=\"accepted\"}") == Some(1.0)
    });
    assert_eq!(
        sample(&text, "rs_agent_reloads_total{result=\"refused\"}"),
        Some(0.0),
        "{text}"
    );
    assert!(sample(&text, "rs_agent_last_reload_timestamp_seconds").is_some_and(|t| t > 0.0));
    assert_eq!(
        sample(&text, "rs_agent_passes_total{kind=\"reload\"}"),
        Some(1.0),
        "{text}"
    );

    // A VIP deleted by hand is repaired on its event, and counted once.
    let repairs = "rs_agent_repairs_total{kind=\"vip\"}";
    let before = sample(&text, repairs).unwrap_or_else(|| panic!("no {repairs}:\n{text}"));
    rs.exec(&["ip", "addr", "del", &format!("{VIP}/32"), "dev", "lo"]);
    let text = scrape_until(&rs, &agent, &metrics, "the VIP's repair", |t| {
        sample(t, repairs).is_some_and(|n| n > before)
    });
    assert_eq!(
        sample(&text, repairs),
        Some(before + 1.0),
        "{text}\n{}",
        agent.log()
    );
    assert_eq!(
        sample(&text, &vip_series("rs_agent_vip_bound", ("device", "lo"))),
        Some(1.0),
        "{text}"
    );
    assert!(sample(&text, "rs_agent_passes_total{kind=\"event\"}").is_some_and(|n| n >= 1.0));
    assert_promtool_clean(&text);

    // The drain flag, on the other listener's /health and in the scrape.
    rs.rs_agent_ok(&["drain"]);
    assert_eq!(fetch(&rs, &health, "/health", None).status, 503);
    assert_eq!(
        sample(&scrape(&rs, &metrics), "rs_agent_drained"),
        Some(1.0)
    );
    assert_eq!(
        fetch(&rs, &metrics, "/health", None).status,
        404,
        "/health is not on the metrics port"
    );

    // OpenMetrics when asked for: its content type, and `# EOF` last.
    let om = fetch(&rs, &metrics, "/metrics", Some(OPENMETRICS));
    assert_eq!(om.status, 200);
    assert_eq!(
        om.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.body.ends_with("# EOF\n"), "{}", om.body);
    assert!(
        om.body.contains("# TYPE rs_agent_build info\n"),
        "{}",
        om.body
    );
}

/// One address for both settings: one listener answers /health and /metrics.
#[test]
fn one_address_serves_health_and_metrics() {
    require_privileges!();
    if !have_scrapers("one_address_serves_health_and_metrics") {
        return;
    }
    let (_lan, rs) = lone_real_server("metricsshared");
    let listen = format!("{RS_IP}:8081");
    let args = [
        "--vip",
        VIP,
        "--health-listen",
        &listen,
        "--metrics-listen",
        &listen,
    ];
    let agent = Agent::start(&rs, &args);
    assert!(
        agent
            .log()
            .contains(&format!("serving /health and /metrics listen={listen}")),
        "{}",
        agent.log()
    );
    let health = fetch(&rs, &listen, "/health", None);
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let text = scrape(&rs, &listen);
    assert_eq!(
        sample(&text, &vip_series("rs_agent_vip_bound", ("device", "lo"))),
        Some(1.0),
        "{text}"
    );
    let other = fetch(&rs, &listen, "/", None);
    assert_eq!(
        (other.status, other.body.as_str()),
        (404, "not found: the routes are /health, /metrics\n")
    );
}

/// A taken metrics port is bad input, found before anything is configured: exit 2, the
/// setting named, the node untouched.
#[test]
fn a_taken_metrics_port_is_refused_before_anything_changes() {
    require_privileges!();
    let (_lan, rs) = lone_real_server("metricstaken");
    let _taken = common::Listener::start(&rs.ns, 9101, "taken");
    let before = rs.snapshot();
    let listen = format!("{RS_IP}:9101");
    let out = rs.rs_agent(&["run", "--vip", VIP, "--metrics-listen", &listen]);
    common::assert_refused(
        &out,
        "run with a taken metrics port",
        &["metrics endpoint", "metrics_listen / --metrics-listen"],
    );
    common::assert_same_snapshot(&before, &rs.snapshot(), "refused run");
}

/// `metrics_listen` is validated by every command that reads the file, as `run` validates
/// it: `file:line:col` and the fix, exit 2, the node untouched.
#[test]
fn every_command_refuses_a_metrics_listen_without_a_port() {
    require_privileges!();
    let (_lan, rs) = lone_real_server("metricskey");
    let config = rs.state_dir.join("rs-agent.toml");
    let text = format!("[real_server]\nvips = [\"{VIP}\"]\nmetrics_listen = \"{RS_IP}\"\n");
    std::fs::write(&config, text).expect("writing the config file");
    let config = config.to_string_lossy().into_owned();
    let at = format!("{config}:3:18:");
    let mention = format!("\"{RS_IP}\" is not a listen address; expected ADDR:PORT");
    let before = rs.snapshot();
    for command in ["up", "status", "check", "run"] {
        let out = rs.rs_agent(&[command, "--config", &config]);
        let what = format!("{command} with metrics_listen without a port");
        common::assert_refused(&out, &what, &[&at, &mention]);
    }
    let out = rs.rs_agent(&["run", "--vip", VIP, "--metrics-listen", "bogus"]);
    common::assert_refused(
        &out,
        "run --metrics-listen bogus",
        &["--metrics-listen bogus:"],
    );
    common::assert_same_snapshot(&before, &rs.snapshot(), "refused commands");
}
