//! Metrics checks: the director's and the real servers' /metrics scraped by a real Prometheus
//! (Debian's `/usr/bin/prometheus`) inside the lab, judged against the independent witnesses —
//! `ipvsadm --stats --exact` for the counters, the web server a test stops for the verdict,
//! `ip addr` for a repair — and by `promtool check metrics` for the format.

use crate::director::{director_run_with, lab_config, write, VIP};
use crate::guest::{self, ensure, eventually, note, Ctx, Lab, Netns, Node, Proc, Tmpfs};
use crate::Check;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const CHECKS: &[Check] = &[Check {
    name: "metrics_prometheus_lab",
    run: prometheus_lab,
}];

/// The Grafana dashboard shipped in contrib/: every metric its panels query must be scraped.
const DASHBOARD: &str = include_str!("../../contrib/grafana/rs-agent.json");

const DIRECTOR_METRICS: &str = "192.0.2.2:9100";
const RS_METRICS_PORT: u16 = 9101;
/// A real server's scrape judges the node as `status` does, `nft` run included: ~0.8 s under
/// emulation, so its job gets 2 s (the director's and Prometheus's own stay at 1 s).
const RS_INTERVAL: &str = "2s";
const RS_TIMEOUT: &str = "1900ms";
/// Prometheus runs on a monitoring node of its own on the lab's LAN.
const MONITOR_LAST_OCTET: u8 = 3;
const PROMETHEUS: &str = "192.0.2.3:9090";
/// What Prometheus scrapes every second; its scrapes time out before the next one starts.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
/// The lab's check: HTTP at 1 s, fall 2 (`lab_config`).
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
const FALL: u32 = 2;
const REQUESTS: usize = 50;

/// One lab, one boot: the director and both real servers serve /metrics, a Prometheus on the
/// client scrapes all three every second, and what it stores is what the kernel counted.
fn prometheus_lab(ctx: &Ctx) -> Result<(), String> {
    let mut lab = Lab::build("dmet", ctx)?;
    let _agents = real_server_agents(ctx, &lab)?;
    let cfg = write(
        ctx,
        "metrics.toml",
        &lab_config(Some("type = \"http\"\npath = \"/\""), 1),
    )?;
    let _director = director_run_with(
        ctx,
        &lab,
        &cfg,
        "dmet",
        &["--metrics-listen", DIRECTOR_METRICS],
    )?;
    let mut targets = vec![DIRECTOR_METRICS.to_string()];
    targets.extend(lab.real_servers().map(rs_target));
    for target in &targets {
        let url = format!("http://{target}/metrics");
        eventually(Duration::from_secs(30), || {
            lab.client.http_get(&url).map(drop)
        })?;
    }
    // What one scrape takes here: Prometheus gives each 900 ms.
    for target in &targets {
        let url = format!("http://{target}/metrics");
        let args = [
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{time_total}",
            "--max-time",
            "10",
            &url,
        ];
        let took = lab.client.ns.run("curl", &args)?;
        note(&format!(
            "metrics: one text scrape of {target} took {took}s"
        ));
    }
    let prom = Prometheus::start(ctx, lab.lan.attach("mon", MONITOR_LAST_OCTET)?)?;
    prom.wait_targets_up(&targets)?;

    for target in &targets {
        openmetrics_ends_with_eof(&lab.client, target)?;
    }
    counters_match_ipvsadm(&lab, &prom)?;
    failover_seen(ctx, &mut lab, &prom)?;
    vip_repair_counted(&lab, &prom)?;
    // Scraped last, when failures, transitions and repairs have series too.
    let mut scrapes = Vec::new();
    for target in &targets {
        scrapes.push(promtool_clean(ctx, &lab.client, target)?);
    }
    dashboard_metrics_exist(&prom, &scrapes)
}

fn rs_target(rs: &Node) -> String {
    format!("{}:{RS_METRICS_PORT}", rs.ip)
}

/// `rs-agent run --vip VIP --metrics-listen` on both real servers, waited for until the VIP is
/// bound.
fn real_server_agents(ctx: &Ctx, lab: &Lab) -> Result<Vec<Proc>, String> {
    let agent = ctx.agent.to_string_lossy().into_owned();
    let mut agents = Vec::new();
    for (rs, tag) in [(&lab.rs1, "rs1"), (&lab.rs2, "rs2")] {
        let state = ctx.scratch.join(format!("state-met-{tag}"));
        let state = state.to_string_lossy().into_owned();
        let listen = rs_target(rs);
        let args = [
            "--state-dir",
            state.as_str(),
            "run",
            "--vip",
            VIP,
            "--metrics-listen",
            listen.as_str(),
        ];
        let log = ctx.scratch.join(format!("agent-{tag}.log"));
        agents.push(rs.ns.spawn_logged(&agent, &args, &log)?);
        eventually(Duration::from_secs(30), || vip_device(&rs.ns).map(drop))?;
    }
    Ok(agents)
}

/// The device that holds the VIP as a /32, or an error if none does.
fn vip_device(ns: &Netns) -> Result<String, String> {
    let addrs = ns.ip(&["-o", "addr", "show"])?;
    addrs
        .lines()
        .find(|l| l.contains(&format!(" {VIP}/32 ")))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(|dev| dev.trim_end_matches(':').to_string())
        .ok_or_else(|| format!("{VIP}/32 not bound in {}:\n{addrs}", ns.name))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Prometheus on a monitoring node, its TSDB on a tmpfs of its own.
struct Prometheus {
    // Declared first: killed before its tmpfs is unmounted.
    _proc: Proc,
    _tsdb: Tmpfs,
    node: Node,
    log: std::path::PathBuf,
}

impl Prometheus {
    fn start(ctx: &Ctx, node: Node) -> Result<Prometheus, String> {
        let tsdb = Tmpfs::mount(&ctx.scratch.join("tsdb"), "128m")?;
        let interval = format!("{}s", SCRAPE_INTERVAL.as_secs());
        let config = format!(
            "global:\n  scrape_interval: {interval}\n  scrape_timeout: 900ms\n  \
             evaluation_interval: {interval}\nscrape_configs:\n  - job_name: director\n    \
             static_configs:\n      - targets: [\"{DIRECTOR_METRICS}\"]\n  \
             - job_name: real_server\n    scrape_interval: {RS_INTERVAL}\n    \
             scrape_timeout: {RS_TIMEOUT}\n    static_configs:\n      - targets: \
             [\"192.0.2.11:{RS_METRICS_PORT}\", \"192.0.2.12:{RS_METRICS_PORT}\"]\n"
        );
        let file = write(ctx, "prometheus.yml", &config)?;
        let log = ctx.scratch.join("prometheus.log");
        let tsdb_path = tsdb.path.to_string_lossy().into_owned();
        let proc = node.ns.spawn_logged(
            "/usr/bin/prometheus",
            &[
                &format!("--config.file={file}"),
                &format!("--storage.tsdb.path={tsdb_path}"),
                "--storage.tsdb.retention.time=1h",
                &format!("--web.listen-address={PROMETHEUS}"),
                "--log.level=warn",
            ],
            &log,
        )?;
        Ok(Prometheus {
            _proc: proc,
            _tsdb: tsdb,
            node,
            log,
        })
    }

    /// GET `path` of the HTTP API with `params` URL-encoded; its `data` on status success.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let url = format!("http://{PROMETHEUS}{path}");
        let mut args = vec!["--silent", "--show-error", "--max-time", "10", "-G"];
        let encoded: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for p in &encoded {
            args.extend(["--data-urlencode", p.as_str()]);
        }
        args.push(&url);
        let body = self.node.ns.run("curl", &args)?;
        let reply: Value = serde_json::from_str(&body)
            .map_err(|e| format!("{path}: not JSON ({e}): {body:.300}"))?;
        match reply.get("status").and_then(Value::as_str) {
            Some("success") => Ok(reply.get("data").cloned().unwrap_or(Value::Null)),
            _ => Err(format!("{path} {params:?}: {body:.500}")),
        }
    }

    /// The series of an instant query: (labels, value) of each.
    fn query(&self, expr: &str) -> Result<Vec<(Labels, f64)>, String> {
        let data = self.api("/api/v1/query", &[("query", expr)])?;
        let series = data.get("result").and_then(Value::as_array).cloned();
        Ok(series
            .unwrap_or_default()
            .iter()
            .filter_map(|s| Some((labels(s.get("metric")?), number(s.get("value")?.get(1)?)?)))
            .collect())
    }

    /// The newest stored sample of each series of `selector`: (labels, timestamp, value).
    fn newest(&self, selector: &str) -> Result<Vec<(Labels, f64, f64)>, String> {
        let data = self.api("/api/v1/query", &[("query", &format!("{selector}[30s]"))])?;
        let series = data.get("result").and_then(Value::as_array).cloned();
        Ok(series
            .unwrap_or_default()
            .iter()
            .filter_map(|s| {
                let last = s.get("values")?.as_array()?.last()?;
                Some((
                    labels(s.get("metric")?),
                    last.get(0)?.as_f64()?,
                    number(last.get(1)?)?,
                ))
            })
            .collect())
    }

    /// The value of the one series of `selector` in a sample scraped after `after` (Unix s).
    fn value_after(&self, selector: &str, after: f64) -> Result<f64, String> {
        eventually(Duration::from_secs(60), || {
            match self.newest(selector)?.as_slice() {
                [(_, at, v)] if *at > after => Ok(*v),
                [(_, at, _)] => Err(format!(
                    "{selector}: newest sample at {at}, not after {after}"
                )),
                other => Err(format!("{selector}: want one series, got {other:?}")),
            }
        })
    }

    /// Waits until Prometheus has reported every target up (its scrape parsed and succeeded)
    /// at least once: a scrape that times out under load is retried at the next interval.
    fn wait_targets_up(&self, want: &[String]) -> Result<(), String> {
        let mut seen_up = BTreeSet::new();
        eventually(Duration::from_secs(180), || {
            let data = self.api("/api/v1/targets", &[])?;
            let active = data.get("activeTargets").and_then(Value::as_array);
            let health: BTreeMap<String, String> = active
                .into_iter()
                .flatten()
                .filter_map(|t| {
                    let instance = t.get("labels")?.get("instance")?.as_str()?;
                    let health = t.get("health")?.as_str()?;
                    let error = t.get("lastError").and_then(Value::as_str).unwrap_or("");
                    Some((instance.to_string(), format!("{health} {error}")))
                })
                .collect();
            for (instance, h) in &health {
                if h.trim() == "up" {
                    seen_up.insert(instance.clone());
                }
            }
            ensure(want.iter().all(|t| seen_up.contains(t)), || {
                format!("Prometheus targets: {health:?}, want {want:?} up")
            })
        })
        .map_err(|e| format!("{e}\nprometheus log:\n{}", self.log_tail()))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// A series' labels as Prometheus returns them.
type Labels = BTreeMap<String, String>;

fn labels(metric: &Value) -> Labels {
    metric
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// Prometheus's API gives sample values as strings.
fn number(v: &Value) -> Option<f64> {
    v.as_str()?.parse().ok()
}

/// A text-format scrape of `target` passes `promtool check metrics` without a word; returns
/// the scrape.
fn promtool_clean(ctx: &Ctx, client: &Node, target: &str) -> Result<String, String> {
    let text = client.ns.run(
        "curl",
        &[
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            &format!("http://{target}/metrics"),
        ],
    )?;
    let file = write(ctx, &format!("scrape-{target}.txt"), &text)?;
    let out = guest::output(
        "sh",
        &["-c", "exec promtool check metrics < \"$1\"", "sh", &file],
    )?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure(out.status.success() && said.trim().is_empty(), || {
        format!(
            "promtool check metrics on {target}'s scrape: exit {:?}:\n{said}",
            out.status.code()
        )
    })?;
    Ok(text)
}

/// What Prometheus asks for (its own Accept header) and what the issue names both get
/// OpenMetrics, which ends with `# EOF`.
fn openmetrics_ends_with_eof(client: &Node, target: &str) -> Result<(), String> {
    let url = format!("http://{target}/metrics");
    for accept in [
        "application/openmetrics-text; version=1.0.0",
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    ] {
        let header = format!("Accept: {accept}");
        let args = ["--silent", "--show-error", "--max-time", "10", "-D", "-", "-H", &header, &url];
        let reply = client.ns.run("curl", &args)?;
        let content_type = reply
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-type:"))
            .unwrap_or("");
        ensure(
            content_type.contains("application/openmetrics-text") && reply.ends_with("# EOF\n"),
            || format!("{url} with `{header}`: {content_type:?}, ends {:?}", tail(&reply)),
        )?;
    }
    Ok(())
}

fn tail(s: &str) -> &str {
    let at = s.len().saturating_sub(80);
    s.get(at..).unwrap_or(s)
}

/// IPVS's counters as `ipvsadm -Ln --stats --exact` prints them: `addr:port` → [conns,
/// inpkts, outpkts, inbytes, outbytes], the service under its own address.
fn ipvsadm_stats(ns: &Netns) -> Result<BTreeMap<String, Vec<u64>>, String> {
    let out = ns.run("ipvsadm", &["-Ln", "--stats", "--exact"])?;
    let mut stats = BTreeMap::new();
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (addr, nums) = match words.as_slice() {
            ["TCP" | "UDP" | "SCTP" | "->", addr, nums @ ..] if nums.len() == 5 => (addr, nums),
            _ => continue,
        };
        let nums: Option<Vec<u64>> = nums.iter().map(|n| n.parse().ok()).collect();
        if let Some(nums) = nums {
            stats.insert(addr.to_string(), nums);
        }
    }
    Ok(stats)
}

/// N requests through the VIP, then (traffic stopped, the kernel's counters settled) the
/// service's connections and incoming packets and each backend's connections as Prometheus
/// stored them from a scrape after that equal ipvsadm's exactly.
fn counters_match_ipvsadm(lab: &Lab, prom: &Prometheus) -> Result<(), String> {
    let url = format!("http://{}/?n=[1-{REQUESTS}]", Lab::VIP);
    let served = lab.client.ns.run(
        "curl",
        &[
            "--silent",
            "--show-error",
            "--max-time",
            "5",
            "-H",
            "Connection: close",
            &url,
        ],
    )?;
    let names: Vec<&str> = served.lines().collect();
    ensure(
        names.len() == REQUESTS && names.iter().all(|n| *n == "rs1" || *n == "rs2"),
        || format!("{REQUESTS} requests through the VIP got {names:?}"),
    )?;
    // The kernel folds its per-CPU counters into the totals from a 2 s timer: equal reads
    // 3 s apart are the final ones.
    let (stats, read_at) = eventually(Duration::from_secs(60), || {
        let first = ipvsadm_stats(&lab.director.ns)?;
        std::thread::sleep(Duration::from_secs(3));
        let second = ipvsadm_stats(&lab.director.ns)?;
        let at = unix_now();
        ensure(first == second, || {
            format!("still moving: {first:?} then {second:?}")
        })?;
        Ok((second, at))
    })?;
    let service = format!("{}:80", Lab::VIP);
    let svc = stats
        .get(&service)
        .ok_or_else(|| format!("ipvsadm shows no {service}: {stats:?}"))?;
    ensure(svc[0] >= REQUESTS as u64, || {
        format!(
            "ipvsadm counted {} connections for {REQUESTS} requests",
            svc[0]
        )
    })?;
    let sel = |family: &str| {
        format!(
            "{family}{{job=\"director\",local_address=\"{}\",local_port=\"80\"}}",
            Lab::VIP
        )
    };
    for (family, i) in [
        ("rs_agent_ipvs_service_connections_total", 0),
        ("rs_agent_ipvs_service_incoming_packets_total", 1),
    ] {
        let stored = prom.value_after(&sel(family), read_at)?;
        ensure(stored == svc[i] as f64, || {
            format!("Prometheus has {family} = {stored}, ipvsadm {}", svc[i])
        })?;
    }
    for rs in lab.real_servers() {
        let backend = format!("{}:80", rs.ip);
        let want = stats.get(&backend).map_or(0, |n| n[0]);
        let selector = format!(
            "rs_agent_ipvs_backend_connections_total{{job=\"director\",remote_address=\"{}\"}}",
            rs.ip
        );
        let stored = prom.value_after(&selector, read_at)?;
        ensure(stored == want as f64, || {
            format!("Prometheus has {selector} = {stored}, ipvsadm {want}")
        })?;
    }
    note(&format!(
        "metrics: after {REQUESTS} requests Prometheus = ipvsadm: {service} conns {} inpkts {}",
        svc[0], svc[1]
    ));
    Ok(())
}

/// The value of `rs_agent_real_server_up` for rs1 in Prometheus's newest sample.
fn rs1_up(prom: &Prometheus) -> Result<Option<f64>, String> {
    let series =
        prom.query("rs_agent_real_server_up{job=\"director\",remote_address=\"192.0.2.11\"}")?;
    Ok(series.first().map(|(_, v)| *v))
}

/// rs1's web server stopped: Prometheus sees `rs_agent_real_server_up` go to 0 (how long that
/// took is noted; bounded only by 10 × the issue's `interval × fall` + two scrapes), `director
/// status` says why, and after a restart it is back at 1.
fn failover_seen(ctx: &Ctx, lab: &mut Lab, prom: &Prometheus) -> Result<(), String> {
    eventually(Duration::from_secs(30), || match rs1_up(prom)? {
        Some(1.0) => Ok(()),
        other => Err(format!("rs1 up before the stop: {other:?}")),
    })?;
    let expected = CHECK_INTERVAL * FALL + SCRAPE_INTERVAL * 2;
    let stopped = Instant::now();
    lab.stop_http(0);
    eventually(expected * 10, || match rs1_up(prom)? {
        Some(0.0) => Ok(()),
        other => Err(format!(
            "rs1 up {other:?} {:?} after its web server stopped",
            stopped.elapsed()
        )),
    })?;
    let took = stopped.elapsed();
    note(&format!(
        "metrics: rs_agent_real_server_up 0 in Prometheus {:.1}s after the stop (interval x fall + 2 scrapes = {:.0}s)",
        took.as_secs_f64(),
        expected.as_secs_f64()
    ));
    // The daemon's state directory: status reads the configuration it applied and its health
    // view from there.
    let state = ctx.scratch.join("state-dmet-run");
    let status = lab.director.ns.output(
        &ctx.agent.to_string_lossy(),
        &[
            "--state-dir",
            &state.to_string_lossy(),
            "director",
            "status",
        ],
    )?;
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    let says_why = status.status.success() && text.contains("down") && text.contains("refused");
    ensure(says_why, || {
        format!(
            "director status with rs1 down: exit {:?}, want 0 and why (down, refused):\n{text}",
            status.status.code()
        )
    })?;
    let why = text.lines().find(|l| l.contains("refused")).unwrap_or("");
    note(&format!("metrics: director status says: {}", why.trim()));
    lab.start_http(0, ctx)?;
    eventually(Duration::from_secs(60), || match rs1_up(prom)? {
        Some(1.0) => Ok(()),
        other => Err(format!("rs1 up {other:?} after its web server restarted")),
    })
}

/// rs1's VIP deleted by hand: the agent binds it again, and Prometheus's
/// `rs_agent_repairs_total{kind="vip"}` for rs1 rises by exactly one.
fn vip_repair_counted(lab: &Lab, prom: &Prometheus) -> Result<(), String> {
    let selector = format!(
        "rs_agent_repairs_total{{job=\"real_server\",instance=\"{}\",kind=\"vip\"}}",
        rs_target(&lab.rs1)
    );
    let before = prom.value_after(&selector, unix_now())?;
    let device = vip_device(&lab.rs1.ns)?;
    lab.rs1
        .ns
        .ip(&["addr", "del", &format!("{VIP}/32"), "dev", &device])?;
    eventually(Duration::from_secs(30), || {
        vip_device(&lab.rs1.ns).map(drop)
    })?;
    let back = unix_now();
    let after = eventually(Duration::from_secs(60), || {
        let v = prom.value_after(&selector, back)?;
        ensure(v > before, || {
            format!("{selector} still {v} after the repair")
        })?;
        Ok(v)
    })?;
    // Two real-server scrapes later it is still one more: the repair is counted once.
    let settled = prom.value_after(&selector, unix_now() + 4.0)?;
    ensure(after == before + 1.0 && settled == after, || {
        format!("{selector}: {before} before the VIP was deleted, {after} then {settled} after its repair")
    })
}

/// Metric names a PromQL expression reads: identifiers outside label matchers, strings and
/// range brackets that are neither functions, aggregations' label lists nor keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Aggregations are followed by `by (...)` as often as by their parenthesis.
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "and",
        "or",
        "unless",
        "atan2",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut after_keyword = false;
    while i < chars.len() {
        let c = chars[i];
        let close = match c {
            '{' => Some('}'),
            '[' => Some(']'),
            '"' | '\'' | '`' => Some(c),
            '(' if after_keyword => Some(')'),
            _ => None,
        };
        if let Some(close) = close {
            after_keyword = false;
            i += 1;
            while i < chars.len() && chars[i] != close {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            after_keyword = LABEL_LISTS.contains(&word.as_str());
            let preceded_by_dollar = start > 0 && chars[start - 1] == '$';
            if next != Some(&'(') && !KEYWORDS.contains(&word.as_str()) && !preceded_by_dollar {
                names.insert(word);
            }
            continue;
        }
        if !c.is_whitespace() {
            after_keyword = false;
        }
        i += 1;
    }
    names
}

/// Every `expr` string anywhere in the dashboard's JSON.
fn dashboard_exprs() -> Result<Vec<String>, String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match v {
                        Value::String(s) if k == "expr" => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let json: Value = serde_json::from_str(DASHBOARD)
        .map_err(|e| format!("contrib/grafana/rs-agent.json: {e}"))?;
    let mut exprs = Vec::new();
    walk(&json, &mut exprs);
    Ok(exprs)
}

/// Sample names of a text-format scrape.
fn sample_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// Every metric a dashboard panel queries is a sample name of one of the lab's scrapes, and
/// every panel's query (Grafana's variables filled in) is PromQL that Prometheus evaluates.
fn dashboard_metrics_exist(prom: &Prometheus, scrapes: &[String]) -> Result<(), String> {
    let exprs = dashboard_exprs()?;
    ensure(exprs.len() >= 10, || {
        format!("only {} panel queries in the dashboard", exprs.len())
    })?;
    let scraped: BTreeSet<String> = scrapes.iter().flat_map(|s| sample_names(s)).collect();
    let queried: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    let missing: Vec<&String> = queried.iter().filter(|n| !scraped.contains(*n)).collect();
    ensure(missing.is_empty(), || {
        format!("the dashboard queries metrics no scrape has: {missing:?}")
    })?;
    for expr in &exprs {
        let filled = expr
            .replace("$__rate_interval", "1m")
            .replace("$director", ".*")
            .replace("$real_server", ".*");
        prom.query(&filled)
            .map_err(|e| format!("dashboard query {expr:?} does not evaluate: {e}"))?;
    }
    note(&format!(
        "metrics: the dashboard's {} queries read {} metrics, all scraped",
        exprs.len(),
        queried.len()
    ));
    Ok(())
}
