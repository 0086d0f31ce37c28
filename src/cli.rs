//! Command-line types (clap derive) and nothing else.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const ABOUT: &str =
    "LVS-DR node agent: VIPs and ARP suppression on real servers, IPVS on the director";

const LONG_ABOUT: &str = "\
rs-agent configures the nodes of a Linux Virtual Server Direct Routing (LVS-DR) cluster.

On each real server it binds the virtual IPs (VIPs) to a device that never answers ARP (lo, or
a dummy device it creates) and keeps ARP for them off the LAN, either with the sysctls
arp_ignore=1/arp_announce=2 or with an nftables `arp` table equivalent to the classic arptables
DROP/mangle rules. `down` undoes exactly what `up` did; `status` proves the effect.

Typical real server (the VIP is 192.0.2.100, the LAN is on eth0):
    rs-agent up --vip 192.0.2.100              # sysctl method, VIP on lo
    rs-agent up --vip 192.0.2.100 --arp nft    # or: arptables-equivalent nft rules
    rs-agent status                            # exit 0 only when correctly configured
    rs-agent down                              # restore everything
    rs-agent run --vip 192.0.2.100             # up, then repair drift until stopped

Settings can live in /etc/rs-agent/rs-agent.toml (see docs/configuration.md); flags override it.
Exit codes: 0 success, 1 the node is not as wanted / a kernel operation failed,
2 bad input or failed preflight (nothing was changed).";

#[derive(Debug, Parser)]
#[command(name = "rs-agent", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// Directory for the state file that records what rs-agent changed (so `down` can undo it)
    #[arg(long, global = true, env = "RS_AGENT_STATE_DIR", default_value = crate::state_dir::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,

    /// More log output (-v info, -vv debug); logs go to stderr
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bind the VIPs and suppress ARP for them (real server); idempotent
    #[command(
        long_about = "Bind each VIP as a host address (/32, /128) on lo or a dummy device, \
        marked as rs-agent's own, after suppressing ARP for it on the LAN-facing interfaces. \
        Running it again changes nothing and says so; after a config change it applies only the \
        difference. If any step fails, the steps already taken are rolled back."
    )]
    Up(UpArgs),
    /// Undo exactly what `up` did (from the state file); safe to run twice
    #[command(
        long_about = "Remove rs-agent's own addresses, dummy device and nft tables, and \
        restore every sysctl it changed to its previous value. Foreign addresses, tables and \
        sysctl changes are never touched; a sysctl someone changed after `up` is left alone \
        with a warning."
    )]
    Down(DownArgs),
    /// Show desired vs observed and a verdict per VIP; exit 1 when not correctly configured
    #[command(
        long_about = "Judge the node from the kernel's effective values: is each VIP \
        bound, is ARP for it suppressed on every LAN-facing interface (max of `all` and the \
        interface's sysctl, or rs-agent's nft rules), and known traps (a VIP wider than /32 on \
        lo, strict rp_filter with several uplinks). Without --vip/--config it checks what the \
        last `up` applied."
    )]
    Status(StatusArgs),
    /// Apply like `up`, then keep the node configured: repair drift until stopped
    #[command(long_about = RUN_ABOUT)]
    Run(RunArgs),
    /// Validate the configuration and preflight (permissions, nft, drivers); change nothing
    Check(RealServerArgs),
    /// Take this real server out of rotation without failing a request (see `drain --help`)
    #[command(
        long_about = "Set the drain flag in the state directory. The running agent \
        (`rs-agent run` with health_listen / --health-listen set) then answers its /health \
        endpoint with 503, the director's HTTP check quiesces this real server (weight 0): \
        connections already open finish, new ones go to the others. `undrain` clears the flag."
    )]
    Drain,
    /// Clear the drain flag: the /health endpoint answers 200 again and the director restores the weight
    Undrain,
    /// The balancer side: VIPs, gratuitous ARP and kernel IPVS services
    #[command(subcommand)]
    Director(DirectorCommand),
}

const RUN_ABOUT: &str = "\
Apply the configuration exactly like `up` (all-or-nothing; exit 1 or 2 if that fails), then stay
running and keep the node that way. Whatever undoes the configuration — someone deletes the VIP,
relabels it, takes the device down, resets arp_ignore/arp_announce, flushes rs-agent's nft table —
is put back by the same observe → plan → apply pass that `up` runs, and logged at info as
`repaired: <change>`, one line per change.

When a pass runs:
  - on rtnetlink link and address events (debounced by 2 ms; a lost event means a full resync);
  - every --interval (default 2s, config `check_interval_ms`): sysctls and nft send no events;
  - on SIGHUP, after re-reading the config file: only the difference is applied; a reload the
    kernel refuses (e.g. an IPv6 VIP with IPv6 disabled) is undone, the running config kept.
A repair keeps what it made when a later step fails (suppression is never undone because one
VIP cannot be bound); a failed pass is logged and retried with backoff (200 ms doubling to 30 s);
the agent keeps running.

Stopping: SIGTERM or SIGINT exits 0 and leaves the node configured, so that stopping the agent
never drops traffic. `rs-agent down` is the only way to unconfigure.

Under systemd (Type=notify): READY=1 after the first successful apply, STATUS= with a one-line
summary, WATCHDOG=1 every WATCHDOG_USEC/2 when WatchdogSec= is set, RELOADING=1 ... READY=1
around each SIGHUP (what Type=notify-reload needs).

Endpoints (off unless given; both bound before anything is configured, so a taken port is
reported up front):
  - --health-listen ADDR:PORT (config `health_listen`): GET /health, 200 ok / 503 draining;
  - --metrics-listen ADDR:PORT (config `metrics_listen`): GET /metrics for Prometheus: repairs
    by kind, passes by what started them, reloads, and rs_agent_vip_bound /
    rs_agent_arp_suppressed judged from the kernel at each scrape as `rs-agent status` judges
    them (docs/metrics.md). The same address for both serves both routes on one listener.

Example:
    rs-agent run --vip 192.0.2.100 --arp sysctl
    rs-agent run --config /etc/rs-agent/rs-agent.toml --interval 500ms   # kill -HUP to reload
    rs-agent run --vip 192.0.2.100 --health-listen 198.51.100.2:8081 --metrics-listen 198.51.100.2:8081";

const DIRECTOR_EXAMPLE: &str = "\
Example (one service, two real servers, direct routing):
    rs-agent director up --interface eth0 --vip 192.0.2.100 --port 80 --scheduler rr \\
        --real 198.51.100.2 --real 198.51.100.3
    rs-agent director status          # the table as `ipvsadm -Ln` shows it, plus the VIP view
    rs-agent director down            # remove exactly rs-agent's services and VIPs
Many services: the [director] table of /etc/rs-agent/rs-agent.toml (docs/configuration.md);
`ipvsadm-save -n | rs-agent director import --interface eth0` writes one from a running table;
`rs-agent director up --config FILE --adopt` then takes that table over (services that exist
and are not rs-agent's are refused without --adopt).";

#[derive(Debug, Subcommand)]
pub enum DirectorCommand {
    /// Reconcile IPVS and the VIPs to the configuration (minimal change, never a flush)
    #[command(
        long_about = "Dump the kernel's IPVS table, compute the minimal change to reach the \
        configuration and apply it in batched netlink writes: changing one weight changes only that \
        real server, and services not in the configuration are never touched. Then bind each VIP \
        on the interface (labelled as rs-agent's own) and announce it with gratuitous ARP (IPv6: \
        unsolicited neighbour advertisement). All-or-nothing: on failure the table and addresses \
        are put back as they were.",
        after_help = DIRECTOR_EXAMPLE
    )]
    Up(DirectorUpArgs),
    /// Apply, then stay running: health-check real servers, repair drift, reload on SIGHUP
    #[command(
        long_about = "Apply like `director up`, then keep running: each service's \
        [director.service.check] (tcp, http, https or command; interval, timeout, rise, fall) runs \
        against every real server concurrently; a server that fails `fall` checks in a row is \
        quiesced (weight 0, existing connections finish) or removed (on_failure = \"remove\"), and \
        gets its configured weight back after `rise` good checks; the sorry_server takes over when \
        every real server of a service is down. A health flip is written at once from the last \
        pass (one netlink write, no dump); SIGHUP re-reads the config and reconciles only the \
        services it changed; the whole table is re-read and drift repaired every \
        --reconcile-interval. SIGTERM stops the agent and leaves the director configured. Under systemd \
        (Type=notify) it reports READY=1 after the first apply, STATUS= and WATCHDOG=1, and \
        RELOADING=1 ... READY=1 around each SIGHUP (what Type=notify-reload needs).",
        after_help = "See docs/health-checks.md for the check settings and units/rs-agent-director.service."
    )]
    Run(DirectorRunArgs),
    /// Remove exactly rs-agent's VIPs, then its IPVS services; foreign services survive
    Down(DownArgs),
    /// The IPVS table (ipvsadm -Ln layout, with stats), VIPs and pending changes; exit 1 on drift
    Status(DirectorStatusArgs),
    /// Validate the configuration and preflight (permissions, interface, IPVS); change nothing
    #[command(
        after_help = "The director unit runs it before every reload (ExecReload=), so that \
        `systemctl reload` fails on a bad config and the running agent keeps the one it has."
    )]
    Check(DirectorCheckArgs),
    /// Convert ipvsadm-save -n output, keepalived.conf or ldirectord.cf to [director] TOML
    #[command(long_about = IMPORT_ABOUT, after_help = IMPORT_EXAMPLE)]
    Import(ImportArgs),
}

/// `director check`: the settings, and whether to skip what needs the kernel.
#[derive(Debug, Args)]
pub struct DirectorCheckArgs {
    #[command(flatten)]
    pub settings: DirectorArgs,
    /// Validate the configuration only, without the kernel: no permissions, interface or IPVS
    /// checks, so it runs anywhere (CI, a workstation) and needs no root
    #[arg(long)]
    pub offline: bool,
}

/// Director settings; the quick flags describe one service and replace the file's services.
#[derive(Debug, Clone, Args)]
pub struct DirectorArgs {
    /// Config file (TOML, [director] table) [default: /etc/rs-agent/rs-agent.toml, if present]
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The director's LAN interface, where the VIPs are bound and announced
    #[arg(long, value_name = "IF")]
    pub interface: Option<String>,

    /// Virtual IP of the one service (with --port and --real)
    #[arg(long, value_name = "ADDR")]
    pub vip: Option<String>,

    /// Service port (1-65535)
    #[arg(long, value_name = "PORT")]
    pub port: Option<String>,

    /// tcp, udp or sctp [default: tcp]
    #[arg(long, value_name = "PROTO")]
    pub protocol: Option<String>,

    /// rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh or twos [default: wlc]
    #[arg(long, value_name = "NAME")]
    pub scheduler: Option<String>,

    /// Persistence timeout in seconds (clients stick to one real server)
    #[arg(long, value_name = "SECONDS")]
    pub persistence: Option<String>,

    /// dr (direct routing), tunnel or nat [default: dr]
    #[arg(long, value_name = "METHOD")]
    pub forward: Option<String>,

    /// A real server ADDR or ADDR:PORT (repeat); the port defaults to --port
    #[arg(long = "real", value_name = "ADDR[:PORT]")]
    pub reals: Vec<String>,
}

impl DirectorArgs {
    pub fn flags(&self) -> crate::director::config::DirectorFlags {
        crate::director::config::DirectorFlags {
            interface: self.interface.clone(),
            vip: self.vip.clone(),
            port: self.port.clone(),
            protocol: self.protocol.clone(),
            scheduler: self.scheduler.clone(),
            persistence: self.persistence.clone(),
            forward: self.forward.clone(),
            reals: self.reals.clone(),
        }
    }

    /// True when no quick flag and no --config was given.
    pub fn is_empty(&self) -> bool {
        self.config.is_none() && self.interface.is_none() && self.vip.is_none()
    }
}

#[derive(Debug, Args)]
pub struct DirectorUpArgs {
    #[command(flatten)]
    pub settings: DirectorArgs,

    /// Print the plan (what would change) and change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Take over configured services that already exist and are not rs-agent's (e.g. made by
    /// ipvsadm, then `director import`ed); without it `up` refuses to touch them
    #[arg(long)]
    pub adopt: bool,
}

#[derive(Debug, Args)]
pub struct DirectorRunArgs {
    #[command(flatten)]
    pub settings: DirectorArgs,

    /// As `director up --adopt`: take over configured services that exist and are not
    /// rs-agent's
    #[arg(long)]
    pub adopt: bool,

    /// Seconds between full re-reads of the IPVS table (drift repair in services no event touched)
    #[arg(long, value_name = "SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub reconcile_interval: u64,

    /// Health checks allowed in flight at once
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = in_flight)]
    pub max_in_flight: usize,

    /// Serve Prometheus metrics on http://ADDR:PORT/metrics (IPVS counters, health verdicts,
    /// passes; see docs/metrics.md) [default: off, or the config's metrics_listen]
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct DirectorStatusArgs {
    #[command(flatten)]
    pub settings: DirectorArgs,

    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

const IMPORT_ABOUT: &str = "\
Convert another director's configuration to the equivalent [director] TOML: the TOML on \
stdout, one warning per line on stderr. --from ipvsadm (the default) reads `ipvsadm-save -n` \
output from FILE or stdin; --from keepalived reads keepalived.conf and the files it includes \
(relative to it, so FILE is required); --from ldirectord reads ldirectord.cf (FILE required).

Carried: the services (address, port and protocol, or firewall mark; keepalived's \
virtual_server_group expanded), scheduler and its flags, persistence and its netmask, one-packet \
scheduling, the real servers (address, port, forwarding method, weight, thresholds), the sorry \
(fallback) server, and the health check where rs-agent has one: tcp, http, https (path, status, \
body, host) and command checks, with their interval, timeout, rise, fall and \
on_failure (quiesce for keepalived's inhibit_on_failure and ldirectord's quiescent=yes, else \
remove).

Nothing is dropped silently: everything rs-agent cannot carry yet (VRRP, quorum, notify \
scripts, digest and regex matches, DNS/SMTP/UDP/PING checks, global settings, unknown \
keywords...) is one warning naming its file:line. With --strict any warning is a refusal: the \
warnings are printed, no TOML, exit 2. The whole document is validated as `director up` would \
read it before a byte is printed; on an error (named file:line:col) nothing is printed and the \
exit is 2, so a `> director.toml` never leaves a broken file. See docs/migration.md.";

const IMPORT_EXAMPLE: &str = "\
Examples:
    ipvsadm-save -n | rs-agent director import --interface eth0 > director.toml
    rs-agent director import --from keepalived /etc/keepalived/keepalived.conf > director.toml
    rs-agent director import --from ldirectord --strict /etc/ha.d/ldirectord.cf > director.toml
    rs-agent director check --offline -c director.toml";

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The configuration to read [default for --from ipvsadm: stdin]
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// What FILE is
    #[arg(
        long = "from",
        value_enum,
        value_name = "SOURCE",
        default_value = "ipvsadm"
    )]
    pub from: ImportFrom,

    /// Refuse (exit 2, no TOML) when anything would not be carried; the warnings say what
    #[arg(long)]
    pub strict: bool,

    /// The director interface to write into the config
    #[arg(long, value_name = "IF", default_value = "eth0")]
    pub interface: String,
}

/// What `director import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFrom {
    /// `ipvsadm-save -n` output
    Ipvsadm,
    /// keepalived.conf (keepalived 2.2 syntax) and its includes
    Keepalived,
    /// ldirectord.cf
    Ldirectord,
}

/// Real-server settings; each flag overrides the config file's value.
#[derive(Debug, Clone, Args)]
pub struct RealServerArgs {
    /// Config file (TOML) [default: /etc/rs-agent/rs-agent.toml, if present]
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// A VIP to bind (repeat for several); replaces the config file's list
    #[arg(long = "vip", value_name = "ADDR")]
    pub vips: Vec<String>,

    /// Device for the VIPs: `lo`, or the name of a dummy device rs-agent creates [default: lo]
    #[arg(long, value_name = "lo|NAME")]
    pub device: Option<String>,

    /// How to suppress ARP: `sysctl` (arp_ignore/arp_announce) or `nft` (arp table) [default: sysctl]
    #[arg(long, value_name = "sysctl|nft")]
    pub arp: Option<String>,

    /// A LAN-facing interface (repeat); default: every non-loopback interface with IPv4, up or down
    #[arg(long = "interface", value_name = "IF")]
    pub interfaces: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub settings: RealServerArgs,

    /// Print the plan (what would change) and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub settings: RealServerArgs,

    /// Time between drift checks without a kernel event: 500ms, 2s, or milliseconds [default: 2s, or the config's check_interval_ms]
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,

    /// Serve the drain state on http://ADDR:PORT/health (200 ok / 503 draining) for the director's check [default: off, or the config's health_listen]
    #[arg(long, value_name = "ADDR:PORT")]
    pub health_listen: Option<String>,

    /// Serve Prometheus metrics on http://ADDR:PORT/metrics (repairs, passes, reloads; VIP bound and ARP suppressed as `status` judges them, read at each scrape); the same address as --health-listen shares its listener [default: off, or the config's metrics_listen]
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// Print what would be undone and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub settings: RealServerArgs,

    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

impl RealServerArgs {
    pub fn flags(&self) -> crate::real_server::config::RealServerFlags {
        crate::real_server::config::RealServerFlags {
            vips: self.vips.clone(),
            device: self.device.clone(),
            arp: self.arp.clone(),
            interfaces: self.interfaces.clone(),
        }
    }
}

/// A `--max-in-flight` value out of range (clap prefixes the flag).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a count of checks; expected 1..=65536")]
pub struct InFlightError(String);

/// `--max-in-flight`: 1..=65536 checks at once.
fn in_flight(value: &str) -> Result<usize, InFlightError> {
    match value.parse::<usize>() {
        Ok(n) if (1..=65_536).contains(&n) => Ok(n),
        _ => Err(InFlightError(value.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_in_flight_is_a_count_of_checks() {
        assert_eq!(in_flight("256"), Ok(256));
        assert_eq!(
            in_flight("0").map_err(|e| e.to_string()),
            Err("\"0\" is not a count of checks; expected 1..=65536".into())
        );
        assert!(in_flight("65537").is_err());
    }
}
