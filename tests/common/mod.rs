//! Topology helper for the namespace test tier, shared by the real-server and director tests.
//!
//! Every test builds its own LAN: a bridge in a namespace of its own, and one namespace per
//! host attached to it through a veth pair. Names carry the test name and the pid, so tests
//! run in parallel (and alongside other checkouts) without colliding; every namespace is a
//! guard that deletes it on drop, also when the test panics. Nothing is ever added to the
//! root namespace, and only documentation prefixes are used (192.0.2.0/24, 198.51.100.0/24,
//! 203.0.113.0/24, 2001:db8::/32).
//!
//! Every external command runs under `timeout`, every loop has a bound on count and time.

#![allow(dead_code)] // each test binary uses a different part of the helper

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Upper bound for any single command a test runs.
const COMMAND_TIMEOUT_SECS: u64 = 30;

/// The binary under test.
pub const RS_AGENT: &str = env!("CARGO_BIN_EXE_rs-agent");

pub mod site;

/// True when the test may run. Not root: skip loudly, unless CI is set (then fail).
/// Skips are written straight to the process's stderr: the harness would swallow `eprintln!`.
pub fn privileged(test: &str) -> bool {
    let missing: Vec<&str> = ["ip", "nft", "arping", "socat", "sysctl", "timeout", "ss"]
        .into_iter()
        .filter(|tool| !on_path(tool))
        .collect();
    let reason = if !is_root() {
        "needs root".to_string()
    } else if !missing.is_empty() {
        format!("needs {}", missing.join(", "))
    } else {
        return true;
    };
    skip(test, &reason);
    false
}

/// Returns from the calling test unless it may run ([`privileged`]: a loud skip without root
/// or a tool, a failure when CI is set). The test is named after the enclosing function, or
/// by the name given (in a helper that runs the test).
macro_rules! require_privileges {
    () => {{
        fn here() {}
        let test = $crate::common::enclosing_fn(std::any::type_name_of_val(&here));
        $crate::common::require_privileges!(test)
    }};
    ($test:expr) => {
        if !$crate::common::privileged($test) {
            return;
        }
    };
}
pub(crate) use require_privileges;

/// The name of the function a `fn here() {}` of [`require_privileges`] sits in, from its type
/// name (`realserver_ns::some_test::here`).
pub fn enclosing_fn(here: &'static str) -> &'static str {
    let path = here.strip_suffix("::here").unwrap_or(here);
    path.rsplit("::").next().unwrap_or(path)
}

/// Skips the rest of `test` loudly; a failure instead when CI is set (CI must run it all).
pub fn skip(test: &str, reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {reason} (CI is set, so this is a failure, not a skip)");
    }
    skip_note(test, reason);
}

/// Says (on the process's stderr, past the harness) that part of a test was skipped.
pub fn skip_note(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP: {test}: {reason}");
}

/// True when this kernel can create 802.1Q VLAN devices (module 8021q), probed in a
/// throwaway namespace.
pub fn vlan_supported() -> bool {
    let probe = Netns::new("probe", "vlan");
    probe.exec(&[
        "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1",
    ]);
    probe
        .try_exec(&[
            "ip", "link", "add", "link", "v0", "name", "v0.5", "type", "vlan", "id", "5",
        ])
        .status
        .success()
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// Runs `args` (bounded in time) and returns its output, whatever the exit status.
pub fn run(args: &[&str]) -> Output {
    let secs = COMMAND_TIMEOUT_SECS.to_string();
    Command::new("timeout")
        .args(["-k", "2", &secs])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

/// Runs `args` and panics with its stderr unless it succeeds.
pub fn run_ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
    );
    out
}

/// Stdout of a command as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stderr of a command as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The contract for what a command refuses: exit 2 and one line on stderr, which names every
/// one of `mentions`; returns that stderr. `what` names the case in a failure.
pub fn assert_refused(out: &Output, what: &str, mentions: &[&str]) -> String {
    let err = stderr(out);
    let code = out.status.code();
    assert_eq!(code, Some(2), "{what}: exit {code:?}, stderr {err}");
    assert_eq!(err.trim().lines().count(), 1, "{what}: not one line: {err}");
    for mention in mentions {
        assert!(
            err.contains(mention),
            "{what}: stderr {err:?} lacks {mention:?}"
        );
    }
    err
}

/// Makes names unique within one test process (a test may build several LANs).
static SEQUENCE: AtomicUsize = AtomicUsize::new(0);

/// A network namespace that exists as long as this value does.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

/// The test process that named `name` (`rsa-<test>-<role>-<pid>-<n>`), if it is one of ours.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("rsa-")?;
    let mut parts = rest.rsplitn(3, '-');
    let (_n, pid) = (parts.next()?.parse::<usize>().ok()?, parts.next()?);
    parts.next()?;
    pid.parse().ok()
}

/// True when `name` is one of ours and the test process that made it no longer exists.
fn orphaned(name: &str) -> bool {
    owner_pid(name).is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// Deletes the namespaces of test processes that no longer exist, and their state
/// directories, logs and binary copies in the temporary directory (`rsa-...-<pid>-<n>`,
/// `...-run.log`, `...-bin`).
/// Drop guards clean up after a panic, but not after a process that was killed (a CI job
/// cancelled, a timeout): the first namespace a test process creates sweeps what such
/// processes left behind.
fn sweep_dead_owners() {
    let listed = run(&["ip", "netns", "list"]);
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        if let Some(name) = line.split_whitespace().next().filter(|n| orphaned(n)) {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let owner = name
            .strip_suffix("-run.log")
            .or_else(|| name.strip_suffix("-bin"));
        if orphaned(owner.unwrap_or(&name)) {
            let path = entry.path();
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    }
}

impl Netns {
    /// Creates `rsa-<test>-<role>-<pid>-<n>` with `lo` up.
    pub fn new(test: &str, role: &str) -> Netns {
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(sweep_dead_owners);
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let name = format!("rsa-{test}-{role}-{}-{n}", std::process::id());
        run_ok(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `args` inside the namespace; any exit status.
    pub fn try_exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Runs `args` inside the namespace; panics with stderr on failure.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run_ok(&full)
    }

    /// Sets one sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
    }

    /// Reads one sysctl inside the namespace.
    pub fn sysctl_get(&self, key: &str) -> String {
        stdout(&self.exec(&["sysctl", "-n", key]))
            .trim()
            .to_string()
    }

    /// Everything rs-agent could touch, as text, for before/after equality: addresses,
    /// links, the IPv4/IPv6 per-interface sysctls and the whole nft ruleset.
    pub fn snapshot(&self) -> String {
        let mut text = String::new();
        for args in [
            &["ip", "-d", "addr", "show"][..],
            &["ip", "-d", "link", "show"][..],
            &["nft", "list", "ruleset"][..],
        ] {
            text.push_str(&format!("### {}\n", args.join(" ")));
            text.push_str(&stdout(&self.exec(args)));
        }
        text.push_str("### sysctl -a (net.ipv4.conf, net.ipv6.conf)\n");
        let all = stdout(&self.try_exec(&["sysctl", "-a"]));
        let mut conf: Vec<&str> = all
            .lines()
            .filter(|l| l.starts_with("net.ipv4.conf.") || l.starts_with("net.ipv6.conf."))
            .collect();
        conf.sort_unstable();
        for line in conf {
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = run(&["ip", "netns", "del", &self.name]);
        if !out.status.success() {
            eprintln!(
                "warning: deleting namespace {}: {}",
                self.name,
                stderr(&out).trim()
            );
        }
    }
}

/// Panics with a line diff when two snapshots differ.
pub fn assert_same_snapshot(before: &str, after: &str, what: &str) {
    if before == after {
        return;
    }
    let old: BTreeSet<&str> = before.lines().collect();
    let new: BTreeSet<&str> = after.lines().collect();
    let mut diff = String::new();
    for line in old.difference(&new) {
        diff.push_str(&format!("- {line}\n"));
    }
    for line in new.difference(&old) {
        diff.push_str(&format!("+ {line}\n"));
    }
    if diff.is_empty() {
        diff.push_str("(same lines, different order)\n");
    }
    panic!("{what}: namespace state changed:\n{diff}");
}

/// How to attach a host to a LAN.
#[derive(Debug, Clone)]
pub struct HostSpec {
    /// Role in the namespace name, e.g. `rs1`.
    pub role: String,
    /// Interface name inside the host, e.g. `eth0` (a dotted name like `eth0.100` works).
    pub iface: String,
    /// IPv4 address with prefix length, e.g. `192.0.2.2/24`.
    pub ipv4: String,
    /// Optional IPv6 address with prefix length, e.g. `2001:db8::2/64`.
    pub ipv6: Option<String>,
    /// Put the addresses on an 802.1Q VLAN `<iface>.<id>` on top of `iface` instead.
    pub vlan: Option<u16>,
}

impl HostSpec {
    /// A host on `eth0` with one IPv4 address.
    pub fn new(role: &str, ipv4: &str) -> HostSpec {
        HostSpec {
            role: role.to_string(),
            iface: "eth0".to_string(),
            ipv4: ipv4.to_string(),
            ipv6: None,
            vlan: None,
        }
    }

    pub fn vlan(mut self, id: u16) -> HostSpec {
        self.vlan = Some(id);
        self
    }

    pub fn iface(mut self, iface: &str) -> HostSpec {
        self.iface = iface.to_string();
        self
    }

    pub fn ipv6(mut self, ipv6: &str) -> HostSpec {
        self.ipv6 = Some(ipv6.to_string());
        self
    }
}

/// A host on a LAN: its namespace, LAN interface (the VLAN one, if any), addresses and MAC (upper case, as arping
/// prints it), and a state directory of its own for rs-agent.
#[derive(Debug)]
pub struct Host {
    pub ns: Netns,
    pub iface: String,
    /// The IPv4 address without prefix length.
    pub ip: String,
    pub ipv6: Option<String>,
    pub mac: String,
    pub state_dir: PathBuf,
}

impl Host {
    /// Runs rs-agent in this host's namespace with its own state directory.
    pub fn rs_agent(&self, args: &[&str]) -> Output {
        let state = self.state_dir.to_string_lossy().into_owned();
        let mut full = vec!["env", "RS_AGENT_LOG=warn"];
        let state_env = format!("RS_AGENT_STATE_DIR={state}");
        full.push(&state_env);
        full.push(RS_AGENT);
        full.extend_from_slice(args);
        self.ns.try_exec(&full)
    }

    /// Runs rs-agent and panics unless it exits 0; returns stdout.
    pub fn rs_agent_ok(&self, args: &[&str]) -> String {
        let out = self.rs_agent(args);
        assert!(
            out.status.success(),
            "rs-agent {args:?} on {} failed ({}):\nstdout: {}\nstderr: {}",
            self.ns.name,
            out.status,
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    /// rs-agent copied where any user can run it (`<state dir>-bin/rs-agent`, mode 0755), for
    /// tests that run it as nobody: the checkout may sit under a 0700 directory (/root, or a
    /// home adduser made on Debian 12) that nobody cannot traverse. Removed with the host.
    pub fn world_runnable_rs_agent(&self) -> String {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.bin_dir();
        let bin = dir.join("rs-agent");
        if !bin.exists() {
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
            let copy = dir.join("rs-agent.partial");
            std::fs::copy(RS_AGENT, &copy)
                .unwrap_or_else(|e| panic!("copying {RS_AGENT} to {}: {e}", copy.display()));
            for path in [&dir, &copy] {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                    .unwrap_or_else(|e| panic!("chmod 755 {}: {e}", path.display()));
            }
            std::fs::rename(&copy, &bin)
                .unwrap_or_else(|e| panic!("renaming {}: {e}", copy.display()));
        }
        bin.to_string_lossy().into_owned()
    }

    fn bin_dir(&self) -> PathBuf {
        let mut name = self.state_dir.as_os_str().to_owned();
        name.push("-bin");
        PathBuf::from(name)
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        self.ns.exec(args)
    }

    pub fn snapshot(&self) -> String {
        self.ns.snapshot()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state_dir);
        let _ = std::fs::remove_dir_all(self.bin_dir());
    }
}

/// An Ethernet segment: a bridge in its own namespace, hosts attached by veth pairs.
#[derive(Debug)]
pub struct Lan {
    test: String,
    bridge: Netns,
    ports: usize,
}

impl Lan {
    pub fn new(test: &str) -> Lan {
        let bridge = Netns::new(test, "lan");
        bridge.exec(&[
            "ip",
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        ]);
        bridge.exec(&["ip", "link", "set", "br0", "up"]);
        Lan {
            test: test.to_string(),
            bridge,
            ports: 0,
        }
    }

    /// Creates a host namespace and plugs it into the bridge. Its MAC is fixed and
    /// locally administered: 02:00:00:00:00:<port>.
    pub fn host(&mut self, spec: HostSpec) -> Host {
        self.ports += 1;
        let ns = Netns::new(&self.test, &spec.role);
        // No duplicate address detection: link-local addresses would otherwise stay
        // tentative for a second and make before/after snapshots differ.
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
        let port = format!("p{}", self.ports);
        let mac = format!("02:00:00:00:00:{:02X}", self.ports % 256);
        self.bridge.exec(&[
            "ip",
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            &spec.iface,
            "netns",
            &ns.name,
            "address",
            &mac,
        ]);
        self.bridge
            .exec(&["ip", "link", "set", &port, "master", "br0", "up"]);
        ns.exec(&["ip", "link", "set", &spec.iface, "up"]);
        let iface = match spec.vlan {
            None => spec.iface.clone(),
            Some(id) => {
                let vlan = format!("{}.{id}", spec.iface);
                let id = id.to_string();
                ns.exec(&[
                    "ip",
                    "link",
                    "add",
                    "link",
                    &spec.iface,
                    "name",
                    &vlan,
                    "type",
                    "vlan",
                    "id",
                    &id,
                ]);
                ns.exec(&["ip", "link", "set", &vlan, "up"]);
                vlan
            }
        };
        ns.exec(&["ip", "addr", "add", &spec.ipv4, "dev", &iface]);
        if let Some(v6) = &spec.ipv6 {
            ns.exec(&["ip", "addr", "add", v6, "dev", &iface, "nodad"]);
        }
        if spec.ipv6.is_some() {
            // The link-local address is tentative for about a second after link up.
            let settled = poll(Duration::from_secs(5), || {
                stdout(&ns.exec(&["ip", "-6", "addr", "show", "tentative"]))
                    .trim()
                    .is_empty()
            });
            assert!(settled, "IPv6 DAD did not finish in {}", ns.name);
        }
        let state_dir = std::env::temp_dir().join(&ns.name);
        std::fs::create_dir_all(&state_dir)
            .unwrap_or_else(|e| panic!("creating {}: {e}", state_dir.display()));
        Host {
            ip: strip_prefix_len(&spec.ipv4),
            ipv6: spec.ipv6.as_deref().map(strip_prefix_len),
            iface,
            mac,
            ns,
            state_dir,
        }
    }
}

fn strip_prefix_len(addr: &str) -> String {
    addr.split('/').next().unwrap_or(addr).to_string()
}

/// The MACs that answer `count` broadcast ARP requests for `vip` from `client`. `-b` keeps
/// arping on broadcast (it would otherwise switch to unicast to the first answer and hide
/// the other answerers); `-w` bounds the time.
pub fn arping_macs(client: &Host, vip: &str, count: u32) -> BTreeSet<String> {
    let count_s = count.to_string();
    let deadline = (count + 1).to_string();
    let out = client.ns.try_exec(&[
        "arping",
        "-b",
        "-c",
        &count_s,
        "-w",
        &deadline,
        "-I",
        &client.iface,
        vip,
    ]);
    parse_arping(&stdout(&out), vip)
}

/// Extracts the MACs from lines like `Unicast reply from 192.0.2.100 [AA:BB:..]  0.6ms`.
pub fn parse_arping(text: &str, vip: &str) -> BTreeSet<String> {
    let prefix = format!("Unicast reply from {vip} [");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(&prefix))
        .filter_map(|rest| rest.split(']').next())
        .map(str::to_uppercase)
        .collect()
}

/// The MAC `ns` has in its neighbour table for `addr`, if any (any state with an lladdr).
pub fn neighbour_mac(ns: &Netns, addr: &str) -> Option<String> {
    let out = stdout(&ns.exec(&["ip", "neigh", "show", "to", addr]));
    out.lines()
        .filter(|l| !l.contains("FAILED"))
        .find_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "lladdr")?;
            words.next()
        })
        .map(str::to_uppercase)
}

/// A TCP listener that answers every connection with a fixed line, for at most 120 s;
/// stopped on drop.
#[derive(Debug)]
pub struct Listener {
    child: Child,
}

impl Listener {
    /// Listens on `port` (all addresses, IPv4 and IPv6) in `ns` and answers `reply`; returns once the
    /// socket is listening (bounded wait).
    pub fn start(ns: &Netns, port: u16, reply: &str) -> Listener {
        let listen = format!("TCP6-LISTEN:{port},reuseaddr,fork,ipv6only=0");
        let answer = format!("SYSTEM:echo {reply}");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "timeout", "120", "socat"])
            .args([&listen, &answer])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting socat in {}: {e}", ns.name));
        let listener = Listener { child };
        let filter = format!("sport = :{port}");
        let ready = poll(Duration::from_secs(5), || {
            !stdout(&ns.exec(&["ss", "-Hltn", &filter]))
                .trim()
                .is_empty()
        });
        assert!(ready, "socat in {} did not listen on {port}", ns.name);
        listener
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // `ip netns exec` execs `timeout`, which passes SIGTERM on to socat.
        let pid = self.child.id().to_string();
        let _ = run(&["kill", "-TERM", &pid]);
        let stopped = poll(Duration::from_secs(3), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Connects from `client` to `addr:port` and returns what the server said (trimmed), or
/// the error output; bounded by socat's own timeouts and the command timeout.
pub fn tcp_fetch(client: &Netns, addr: &str, port: u16) -> Result<String, String> {
    let target = format!("TCP:{addr}:{port},connect-timeout=3");
    let out = client.try_exec(&["socat", "-T", "3", "-u", &target, "-"]);
    if out.status.success() {
        Ok(stdout(&out).trim().to_string())
    } else {
        Err(stderr(&out).trim().to_string())
    }
}

/// Sends one UDP datagram from `ns` to `addr` (IPv4, or IPv6 in brackets) port 9 (discard),
/// optionally from a given source address: enough to make the kernel resolve the next hop.
pub fn send_udp(ns: &Netns, source: Option<&str>, addr: &str, v6: bool) {
    let family = if v6 { "UDP6" } else { "UDP4" };
    let mut target = format!("{family}-SENDTO:{addr}:9");
    if let Some(source) = source {
        target.push_str(&format!(",bind={source}"));
    }
    let out = ns.try_exec(&["socat", "-u", "SYSTEM:echo probe", &target]);
    assert!(
        out.status.success(),
        "sending UDP to {addr} in {}: {}",
        ns.name,
        stderr(&out)
    );
}

/// Waits (at most 1.5 s) for `ns` to resolve `addr` and returns the MAC, if any. Returning
/// `None` means nobody answered within that time, which on a veth LAN is ample.
pub fn resolved_mac(ns: &Netns, addr: &str) -> Option<String> {
    let mut mac = None;
    poll(Duration::from_millis(1500), || {
        mac = neighbour_mac(ns, addr);
        mac.is_some()
    });
    mac
}

/// Calls `done` every 100 ms until it returns true or `limit` has passed.
pub fn poll(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        sleep(Duration::from_millis(100));
    }
}

#[test]
fn require_privileges_names_the_enclosing_test() {
    fn here() {}
    let name = enclosing_fn(std::any::type_name_of_val(&here));
    assert_eq!(name, "require_privileges_names_the_enclosing_test");
}

#[test]
fn owner_pid_reads_only_our_names() {
    assert_eq!(owner_pid("rsa-drift-rs1-21035-6"), Some(21035));
    assert_eq!(owner_pid("rsa-hup-lan-7-0"), Some(7));
    assert_eq!(owner_pid("rsa-21035-6"), None);
    assert_eq!(owner_pid("other-drift-rs1-21035-6"), None);
    assert_eq!(owner_pid("rsa-drift-rs1-x-6"), None);
    assert_eq!(owner_pid("rsa-units-rs1"), None);
}

/// `rs-agent run` in a host's namespace (stdin and stdout closed, stderr as given), stopped
/// with SIGTERM and a bounded wait on drop.
pub struct RunAgent {
    pub child: Child,
    pub name: String,
}

impl RunAgent {
    pub fn start(rs: &Host, args: &[&str], stderr: Stdio) -> RunAgent {
        let state = format!("RS_AGENT_STATE_DIR={}", rs.state_dir.display());
        // `ip netns exec` and `env` exec, so the child's pid is rs-agent's own; `timeout`
        // would stand in between, so the bound is the guard's drop (and the test's own).
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &rs.ns.name,
                "env",
                "RS_AGENT_LOG=info",
                &state,
            ])
            .arg(RS_AGENT)
            .arg("run")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting rs-agent run in {}: {e}", rs.ns.name));
        RunAgent {
            child,
            name: rs.ns.name.clone(),
        }
    }

    /// Still running: its process exists and is not a zombie (not yet reaped).
    pub fn alive(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()));
        stat.is_ok_and(|s| !s.contains(") Z "))
    }

    /// Waits (bounded) until `status` says the node is configured; panics, with `context`
    /// (e.g. the agent's log), if run exits or 10 s pass.
    pub fn wait_configured(&mut self, rs: &Host, context: impl Fn() -> String) {
        let ready = poll(Duration::from_secs(10), || {
            if !self.alive() {
                panic!("{}: rs-agent run exited early:\n{}", self.name, context());
            }
            // Before the first pass there is nothing configured, which `status` says with 0.
            let status = rs.rs_agent(&["status"]);
            status.status.success()
                && stdout(&status).contains("OK: the node is correctly configured")
        });
        assert!(
            ready,
            "{}: not configured in 10 s:\n{}",
            self.name,
            context()
        );
    }

    /// SIGTERM, then the exit status (bounded wait; killed and a panic after 5 s).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        run(&["kill", "-TERM", &pid]);
        let mut status = None;
        poll(Duration::from_secs(5), || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status.unwrap_or_else(|| {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!("{}: rs-agent run ignored SIGTERM for 5 s", self.name)
        })
    }
}

impl Drop for RunAgent {
    fn drop(&mut self) {
        if self.alive() {
            let pid = self.child.id().to_string();
            run(&["kill", "-TERM", &pid]);
            if !poll(Duration::from_secs(3), || !self.alive()) {
                let _ = self.child.kill();
            }
        }
        // Reap it: it has exited or been killed by now.
        let _ = self.child.wait();
    }
}

/// Runs `body` on a thread that has entered `ns`'s network namespace, with a tokio runtime of
/// its own: the executors, driven directly, see only that namespace.
pub fn in_netns<T: Send + 'static>(
    ns: &Netns,
    body: impl FnOnce(&tokio::runtime::Runtime) -> T + Send + 'static,
) -> T {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        // SAFETY: setns on a valid namespace fd; it changes only this thread's namespace.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        body(&rt)
    })
    .join()
    .expect("namespace thread panicked")
}
