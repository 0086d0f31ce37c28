//! Helpers for checks running inside the guest: commands with a deadline, network namespaces
//! that remove themselves, and the LVS-DR lab topology shared by real-server and director checks.
//!
//! Everything here builds inside namespaces it creates; the VM's root namespace is never
//! configured (only modules are loaded into the kernel).

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for any one command, so a hung tool fails its check instead of the whole boot.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What every check receives: where the agent binary is and where it may write.
pub struct Ctx {
    /// The rs-agent binary built by cargo (the host's root filesystem is shared read-only).
    pub agent: PathBuf,
    /// A writable scratch directory for this check (tmpfs in the guest).
    pub scratch: PathBuf,
}

impl Ctx {
    /// Runs `rs-agent args` inside `ns`, with a state directory of that namespace's own (so
    /// several agents in one check do not share a journal). Returns the output whatever the
    /// exit status.
    pub fn agent_output(&self, ns: &Netns, args: &[&str]) -> Result<Output, String> {
        let state = self.scratch.join(format!("state-{}", ns.name));
        let agent = self.agent.to_string_lossy();
        let state = state.to_string_lossy();
        let mut all = vec!["--state-dir", state.as_ref()];
        all.extend_from_slice(args);
        ns.output(&agent, &all)
    }

    /// Runs `rs-agent args` inside `ns`; Ok(stdout) on exit 0.
    pub fn agent(&self, ns: &Netns, args: &[&str]) -> Result<String, String> {
        let out = self.agent_output(ns, args)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "in {}: {}",
                ns.name,
                describe_failure("rs-agent", args, &out)
            ))
        }
    }
}

/// Writes `text` to `path`; the error names the file.
pub fn write_file(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs `prog args`, killing it after [`COMMAND_TIMEOUT`]; returns its output whatever the exit
/// status. (Not coreutils `timeout`: under emulation every extra exec costs most of a second.)
pub fn output(prog: &str, args: &[&str]) -> Result<Output, String> {
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let secs = COMMAND_TIMEOUT.as_secs();
                return Err(format!("`{prog} {}` killed after {secs}s", args.join(" ")));
            }
            Err(e) => return Err(format!("waiting for {prog}: {e}")),
        }
    };
    let join = |h: std::thread::JoinHandle<Vec<u8>>| h.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout: join(stdout),
        stderr: join(stderr),
    })
}

/// Reads a child's pipe to the end on a thread of its own (so neither pipe can fill and block).
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// Runs `prog args`; Ok(stdout) on exit 0, else an error quoting the command and its stderr.
pub fn run(prog: &str, args: &[&str]) -> Result<String, String> {
    let out = output(prog, args)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(describe_failure(prog, args, &out))
    }
}

/// A one-line account of a failed command for a check's error message.
pub fn describe_failure(prog: &str, args: &[&str], out: &Output) -> String {
    format!(
        "`{prog} {}` exited {}: {}{}",
        args.join(" "),
        out.status
            .code()
            .map_or("by signal".into(), |c| c.to_string()),
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim(),
    )
}

/// Turns a false condition into a check failure with a message.
pub fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

/// A named network namespace, deleted (with everything in it) when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates the namespace with `lo` up (IPVS refuses destinations while `lo` is down) and
    /// IPv6 disabled, so snapshots do not change under DAD.
    pub fn new(name: &str) -> Result<Netns, String> {
        // A namespace left by an earlier crashed run would make `add` fail.
        let _ = output("ip", &["netns", "del", name]);
        run("ip", &["netns", "add", name])?;
        let ns = Netns { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.sysctls(&[
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
        ])?;
        Ok(ns)
    }

    /// `ip -n NS args`: cheaper than `ip netns exec NS ip args` (one exec, no mount namespace).
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn exec_args<'a>(&'a self, prog: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["netns", "exec", self.name.as_str(), prog];
        all.extend_from_slice(args);
        all
    }

    /// Runs a command inside the namespace; see [`output`].
    pub fn output(&self, prog: &str, args: &[&str]) -> Result<Output, String> {
        output("ip", &self.exec_args(prog, args))
    }

    /// Runs a command inside the namespace; see [`run`].
    pub fn run(&self, prog: &str, args: &[&str]) -> Result<String, String> {
        let out = self.output(prog, args)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "in {}: {}",
                self.name,
                describe_failure(prog, args, &out)
            ))
        }
    }

    /// Sets sysctls inside the namespace, all with one `sysctl` run.
    pub fn sysctls(&self, settings: &[(&str, &str)]) -> Result<(), String> {
        let assignments: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec!["-qw"];
        args.extend(assignments.iter().map(String::as_str));
        self.run("sysctl", &args).map(drop)
    }

    /// Starts a long-running process in the namespace; it is killed when the handle drops.
    pub fn spawn(&self, prog: &str, args: &[&str]) -> Result<Proc, String> {
        let child = Command::new("ip")
            .args(self.exec_args(prog, args))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("in {}: cannot start {prog}: {e}", self.name))?;
        Ok(Proc { child })
    }

    /// [`Netns::spawn`] with the process's stdout and stderr appended to `log`, for a daemon
    /// whose own account is the first thing to read when a check fails.
    pub fn spawn_logged(&self, prog: &str, args: &[&str], log: &Path) -> Result<Proc, String> {
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| format!("{}: {e}", log.display()))
        };
        let child = Command::new("ip")
            .args(self.exec_args(prog, args))
            .stdin(Stdio::null())
            .stdout(open()?)
            .stderr(open()?)
            .spawn()
            .map_err(|e| format!("in {}: cannot start {prog}: {e}", self.name))?;
        Ok(Proc { child })
    }

    /// Everything `ip` and `sysctl` report about the namespace's links, addresses and IPv4
    /// interface settings: equal snapshots mean nothing was left behind.
    pub fn snapshot(&self) -> Result<String, String> {
        let addrs = self.ip(&["-d", "addr"])?;
        let links = self.ip(&["-d", "link"])?;
        let sysctls = self.run("sysctl", &["net.ipv4.conf"])?;
        Ok(format!("{addrs}{links}{sysctls}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = output("ip", &["netns", "del", &self.name]);
    }
}

/// A background process, killed and reaped on drop.
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Sends a signal (e.g. "HUP") to the process.
    pub fn signal(&self, name: &str) -> Result<(), String> {
        run("kill", &[&format!("-{name}"), &self.child.id().to_string()]).map(drop)
    }

    /// Waits (bounded) for the process to exit on its own; its exit status.
    pub fn wait(&mut self, within: Duration) -> Result<std::process::ExitStatus, String> {
        eventually(within, || match self.child.try_wait() {
            Ok(Some(status)) => Ok(status),
            Ok(None) => Err(format!("pid {} still running", self.child.id())),
            Err(e) => Err(format!("waiting for pid {}: {e}", self.child.id())),
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tmpfs mounted on a directory of the guest (for files a 9p share cannot hold: mmap'd
/// databases, locks, sockets), unmounted on drop.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let target = path.to_string_lossy();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                &target,
            ],
        )?;
        Ok(Tmpfs { path: path.into() })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process of the check that has not been reaped yet must not keep it mounted.
        let _ = output("umount", &["-l", &self.path.to_string_lossy()]);
    }
}

/// A figure a check measured, on the console as a `VMTEST note` line (the host echoes it; it
/// counts neither as a pass nor as a failure).
pub fn note(text: &str) {
    println!("VMTEST note {text}");
}

/// Retries `f` every 100 ms until it succeeds or `within` has passed; returns the last error.
pub fn eventually<T>(
    within: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + within;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A node of the lab: its namespace and its LAN interface `eth0`.
pub struct Node {
    pub ns: Netns,
    pub ip: Ipv4Addr,
    pub mac: String,
}

impl Node {
    pub const IFACE: &'static str = "eth0";

    /// `curl` from this node; Ok(body) or the error curl reported.
    pub fn http_get(&self, url: &str) -> Result<String, String> {
        self.run_curl(url).map(|body| body.trim().to_string())
    }

    fn run_curl(&self, url: &str) -> Result<String, String> {
        self.ns.run(
            "curl",
            &["--silent", "--show-error", "--max-time", "2", url],
        )
    }

    /// Sends `count` ARP requests for `ip` from eth0; returns the MACs that answered.
    pub fn arp_answers(&self, ip: Ipv4Addr, count: u32) -> Result<Vec<String>, String> {
        let count = count.to_string();
        let ip = ip.to_string();
        let args = ["-c", &count, "-w", &count, "-I", Node::IFACE, &ip];
        // iputils arping exits 1 when nobody answered: that is a result, not an error.
        let out = self.ns.output("arping", &args)?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut macs: Vec<String> = text
            .lines()
            .filter(|l| l.contains("reply from"))
            .filter_map(|l| l.split('[').nth(1)?.split(']').next())
            .map(str::to_ascii_lowercase)
            .collect();
        macs.dedup();
        Ok(macs)
    }
}

/// A LAN: a bridge `br0` in a namespace of its own, to which nodes are attached.
pub struct Lan {
    tag: String,
    pub ns: Netns,
}

impl Lan {
    /// Creates the bridge; `tag` prefixes every namespace name so checks do not collide.
    pub fn new(tag: &str) -> Result<Lan, String> {
        let ns = Netns::new(&format!("{tag}-lan"))?;
        ns.ip(&["link", "add", "br0", "up", "type", "bridge"])?;
        Ok(Lan {
            tag: tag.into(),
            ns,
        })
    }

    /// A new namespace `<tag>-<role>` whose eth0 (192.0.2.`last`/24, MAC
    /// 02:00:00:00:00:`last`) is a veth to port `p-<role>` on the bridge.
    pub fn attach(&self, role: &str, last: u8) -> Result<Node, String> {
        let ns_name = format!("{}-{role}", self.tag);
        let ns = Netns::new(&ns_name)?;
        let mac = format!("02:00:00:00:00:{last:02x}");
        let ip = Ipv4Addr::new(192, 0, 2, last);
        let port = format!("p-{role}");
        let veth = [
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            Node::IFACE,
            "address",
            &mac,
            "netns",
            &ns_name,
        ];
        self.ns.ip(&veth)?;
        self.ns.ip(&["link", "set", &port, "master", "br0", "up"])?;
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", Node::IFACE])?;
        ns.ip(&["link", "set", Node::IFACE, "up"])?;
        Ok(Node { ns, ip, mac })
    }
}

/// The LVS-DR lab: one [`Lan`] with client, director and two real servers, and a tiny HTTP
/// server on each real server answering its own name. Nothing LVS-specific is configured (no
/// VIP, no IPVS, no ARP sysctls): checks do that, by hand or with rs-agent.
///
/// Addresses: client .1, director .2, rs1 .11, rs2 .12 in 192.0.2.0/24; the VIP is
/// [`Lab::VIP`]. MACs are fixed (02:00:00:00:00:<last octet>) so checks can name them.
pub struct Lab {
    // Declared first so they are dropped (killed) before their namespaces are deleted.
    http: Vec<Option<Proc>>,
    pub client: Node,
    pub director: Node,
    pub rs1: Node,
    pub rs2: Node,
    /// The bridge; held so it lives as long as the nodes (checks rarely touch it).
    #[allow(dead_code)]
    pub lan: Lan,
}

impl Lab {
    pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

    /// Builds the topology; `tag` keeps namespace names unique per check. On return the HTTP
    /// servers answer (checked from the client via the real servers' own addresses).
    pub fn build(tag: &str, ctx: &Ctx) -> Result<Lab, String> {
        let lan = Lan::new(tag)?;
        let mut lab = Lab {
            http: Vec::new(),
            client: lan.attach("client", 1)?,
            director: lan.attach("director", 2)?,
            rs1: lan.attach("rs1", 11)?,
            rs2: lan.attach("rs2", 12)?,
            lan,
        };
        for (name, rs) in [("rs1", &lab.rs1), ("rs2", &lab.rs2)] {
            let proc = start_http(rs, name, &ctx.scratch.join(format!("www-{name}")))?;
            lab.http.push(Some(proc));
            let url = format!("http://{}/", rs.ip);
            let body = eventually(Duration::from_secs(10), || lab.client.http_get(&url))?;
            ensure(body == name, || {
                format!("{url} answered {body:?}, not {name:?}")
            })?;
        }
        Ok(lab)
    }

    /// Stops the web server of real server `i` (0 = rs1): the classic failure.
    pub fn stop_http(&mut self, i: usize) {
        if let Some(slot) = self.http.get_mut(i) {
            slot.take();
        }
    }

    /// Starts the web server of real server `i` again.
    pub fn start_http(&mut self, i: usize, ctx: &Ctx) -> Result<(), String> {
        let (name, rs) = if i == 0 {
            ("rs1", &self.rs1)
        } else {
            ("rs2", &self.rs2)
        };
        let proc = start_http(rs, name, &ctx.scratch.join(format!("www-{name}")))?;
        if let Some(slot) = self.http.get_mut(i) {
            *slot = Some(proc);
        }
        Ok(())
    }

    pub fn real_servers(&self) -> [&Node; 2] {
        [&self.rs1, &self.rs2]
    }

    /// The server name behind `http://VIP/`, as the client sees it.
    pub fn get_vip(&self) -> Result<String, String> {
        self.client.http_get(&format!("http://{}/", Lab::VIP))
    }
}

/// Serves `dir/index.html` containing `name` on port 80 of every address of `node`.
pub fn start_http(node: &Node, name: &str, dir: &Path) -> Result<Proc, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let index = dir.join("index.html");
    write_file(&index, &format!("{name}\n"))?;
    let dir = dir.to_string_lossy();
    node.ns
        .spawn("busybox", &["httpd", "-f", "-p", "80", "-h", &dir])
}
