//! Command-line types (clap derive) and nothing else.

use clap::{Args, Parser, Subcommand};
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

Settings can live in /etc/rs-agent/rs-agent.toml (see docs/configuration.md); flags override it.
Exit codes: 0 success, 1 the node is not as wanted / a kernel operation failed,
2 bad input or failed preflight (nothing was changed).";

#[derive(Debug, Parser)]
#[command(name = "rs-agent", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// Directory for the state file that records what rs-agent changed (so `down` can undo it)
    #[arg(long, global = true, env = "RS_AGENT_STATE_DIR", default_value = crate::state::DEFAULT_STATE_DIR)]
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
    /// Validate the configuration and preflight (permissions, nft, drivers); change nothing
    Check(RealServerArgs),
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

    /// A LAN-facing interface (repeat); default: every up non-loopback interface with IPv4
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
    pub fn flags(&self) -> crate::config::RealServerFlags {
        crate::config::RealServerFlags {
            vips: self.vips.clone(),
            device: self.device.clone(),
            arp: self.arp.clone(),
            interfaces: self.interfaces.clone(),
        }
    }
}
