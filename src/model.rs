//! Plain data for the real-server pipeline: what we want (`Desired`), what the kernel has
//! (`Observed`) and the steps between them (`Change`). No handles, no I/O: `plan` works on
//! these alone so that it can be tested exhaustively without a kernel.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `IFA_PROTO` value stamped on every address rs-agent adds: the kernel keeps it, `ip -d addr`
/// shows it (`proto 0x52`), and it works for IPv6, which has no address labels.
pub const ADDR_PROTO: u8 = 0x52;
/// Suffix of the IPv4 address label rs-agent attaches (`lo:rsagent`), visible in `ip addr`.
pub const LABEL_SUFFIX: &str = ":rsagent";
/// Name of the nftables table(s) rs-agent owns, in the `arp` and `ip6` families.
pub const NFT_TABLE: &str = "rs_agent";
/// Longest interface name (and address label) the kernel accepts: IFNAMSIZ - 1.
pub const IFNAMSIZ_MAX: usize = 15;

/// One network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub up: bool,
    /// IFF_LOWER_UP: up with a carrier (a cable, a switch port, an up lower device): only
    /// then does a frame sent on it leave the host. Sending without one "succeeds" (the kernel
    /// drops the frame without an error).
    #[serde(default)]
    pub carrier: bool,
    pub loopback: bool,
    pub noarp: bool,
    /// `IFLA_INFO_KIND` (e.g. "dummy", "veth"), when the link has one.
    pub kind: Option<String>,
    /// The hardware address (IFLA_ADDRESS), used as the sender of gratuitous ARP.
    #[serde(default)]
    pub mac: Vec<u8>,
}

/// One address as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addr {
    pub ifname: String,
    pub ip: IpAddr,
    pub prefix: u8,
    pub label: Option<String>,
    /// `IFA_PROTO` (0 when unset).
    pub proto: u8,
    pub secondary: bool,
    /// Where IPv6 duplicate address detection stands for it (always `Done` for IPv4).
    #[serde(default)]
    pub dad: Dad,
}

/// The duplicate address detection (DAD) state of an address, from `IFA_F_TENTATIVE` /
/// `IFA_F_DADFAILED`. rs-agent adds its IPv6 VIPs with `IFA_F_NODAD` (a VIP is shared by
/// design in LVS-DR), so only an address added some other way can be tentative or failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dad {
    /// Usable: DAD passed, was skipped (`nodad`, `lo`, NOARP devices) or does not apply.
    #[default]
    Done,
    /// DAD is still running (about a second): the kernel does not use the address yet.
    Tentative,
    /// Another node on the link answered for the address: the kernel never uses it.
    Failed,
}

impl Dad {
    /// Why an address in this state does not count as bound; `None` when it does.
    pub fn problem(self) -> Option<&'static str> {
        match self {
            Dad::Done => None,
            Dad::Tentative => Some("tentative: duplicate address detection is still running"),
            Dad::Failed => Some(
                "duplicate address detection failed: another node on the link answers for \
                 this address, and the kernel does not use it",
            ),
        }
    }
}

impl Addr {
    /// True when rs-agent added this address (its `IFA_PROTO` marker).
    pub fn is_ours(&self) -> bool {
        self.proto == ADDR_PROTO
    }

    /// True when the address carries one of rs-agent's marks: its `IFA_PROTO`, or for IPv4
    /// its label `<dev>:rsagent` — kernels before 5.18 keep no `IFA_PROTO`, and there the
    /// label is the only mark the kernel shows (IPv6 addresses have no label).
    pub fn carries_mark(&self) -> bool {
        self.is_ours()
            || (self.ip.is_ipv4()
                && self.label.is_some()
                && self.label == owned_label(&self.ifname))
    }

    /// True for a host address: /32 for IPv4, /128 for IPv6.
    pub fn is_host(&self) -> bool {
        self.prefix == host_prefix(&self.ip)
    }

    /// True when the address may be its interface's own rather than a VIP bound beside it:
    /// the first address of a subnet (a prefix shorter than a host's, and for IPv4 not a
    /// secondary), which carries the subnet's route and whose removal takes the subnet's
    /// secondary addresses with it. `--adopt` leaves such an address alone: `director down`
    /// would delete it.
    pub fn may_be_interface_own(&self) -> bool {
        let beside_another = self.is_host() || (self.ip.is_ipv4() && self.secondary);
        !beside_another
    }

    /// True when the kernel uses the address: it is not tentative and its DAD did not fail.
    pub fn is_usable(&self) -> bool {
        self.dad == Dad::Done
    }
}

/// The host prefix length of an address' family.
pub fn host_prefix(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The ARP-related per-interface sysctls rs-agent reads (`net.ipv4.conf.<if>.<key>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SysctlKey {
    ArpIgnore,
    ArpAnnounce,
    RpFilter,
}

impl SysctlKey {
    pub const ALL: [SysctlKey; 3] = [
        SysctlKey::ArpIgnore,
        SysctlKey::ArpAnnounce,
        SysctlKey::RpFilter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SysctlKey::ArpIgnore => "arp_ignore",
            SysctlKey::ArpAnnounce => "arp_announce",
            SysctlKey::RpFilter => "rp_filter",
        }
    }
}

impl fmt::Display for SysctlKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sysctl values read from the kernel, keyed by (interface or "all", key).
pub type Sysctls = BTreeMap<(String, SysctlKey), i64>;

/// The kernel's effective value of an ARP/rp_filter sysctl for an interface: for these three
/// keys the kernel uses max(`all`, interface) (IN_DEV_ARP_IGNORE etc. in inetdevice.h).
pub fn effective(sysctls: &Sysctls, iface: &str, key: SysctlKey) -> Option<i64> {
    let all = sysctls.get(&("all".to_string(), key)).copied();
    let own = sysctls.get(&(iface.to_string(), key)).copied();
    match (all, own) {
        (Some(a), Some(o)) => Some(a.max(o)),
        (a, o) => a.or(o),
    }
}

/// True when `value`, as the effective value of `key`, keeps a VIP on `lo`/dummy off ARP:
/// arp_ignore 1 or 2 (answer only for addresses of the receiving interface) and
/// arp_announce 2 (never announce an address of another interface). arp_ignore 3..7 still
/// answer for a VIP with global scope on `lo`, 8 answers nothing (not even the RIP), and
/// arp_announce above 2 behaves like 0 (`arp_ignore()` / `arp_solicit()` in net/ipv4/arp.c).
pub fn suppresses_arp(key: SysctlKey, value: i64) -> bool {
    match key {
        SysctlKey::ArpIgnore => matches!(value, 1 | 2),
        SysctlKey::ArpAnnounce => value == 2,
        SysctlKey::RpFilter => false,
    }
}

/// The nftables address families rs-agent may own a table in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NftFamily {
    Arp,
    Ip6,
}

impl fmt::Display for NftFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NftFamily::Arp => "arp",
            NftFamily::Ip6 => "ip6",
        })
    }
}

/// One rule of rs-agent's nft tables, in a normalised form that both the planner builds and
/// the observer parses back from `nft -j list table`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum NftRule {
    /// arp input: drop ARP whose target is the VIP (`arptables -A IN -d VIP -j DROP`).
    DropArpFor { vip: Ipv4Addr },
    /// arp output: rewrite a VIP sender address to the interface's own
    /// (`arptables -A OUT -o IF -s VIP -j mangle --mangle-ip-s RIP`).
    MangleArpFrom {
        iface: String,
        vip: Ipv4Addr,
        rip: Ipv4Addr,
    },
    /// ip6 input: drop neighbour solicitations for the VIP.
    DropNsFor { vip: Ipv6Addr },
    /// ip6 output: drop neighbour advertisements for the VIP.
    DropNaFor { vip: Ipv6Addr },
    /// A rule in our table that we did not write (someone edited it): forces a rewrite.
    Unknown { text: String },
}

impl NftRule {
    pub fn family(&self) -> NftFamily {
        match self {
            NftRule::DropArpFor { .. } | NftRule::MangleArpFrom { .. } => NftFamily::Arp,
            NftRule::DropNsFor { .. } | NftRule::DropNaFor { .. } => NftFamily::Ip6,
            NftRule::Unknown { .. } => NftFamily::Arp,
        }
    }
}

impl fmt::Display for NftRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NftRule::DropArpFor { vip } => write!(f, "input: arp daddr ip {vip} drop"),
            NftRule::MangleArpFrom { iface, vip, rip } => write!(
                f,
                "output: oifname \"{iface}\" arp saddr ip {vip} arp saddr ip set {rip}"
            ),
            NftRule::DropNsFor { vip } => {
                write!(f, "input: icmpv6 nd-neighbor-solicit target {vip} drop")
            }
            NftRule::DropNaFor { vip } => {
                write!(f, "output: icmpv6 nd-neighbor-advert target {vip} drop")
            }
            NftRule::Unknown { text } => write!(f, "unrecognised rule {text}"),
        }
    }
}

/// rs-agent's nft tables as found in the kernel: `None` = table absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NftObserved {
    pub arp: Option<Vec<NftRule>>,
    pub ip6: Option<Vec<NftRule>>,
}

impl NftObserved {
    pub fn table(&self, family: NftFamily) -> Option<&Vec<NftRule>> {
        match family {
            NftFamily::Arp => self.arp.as_ref(),
            NftFamily::Ip6 => self.ip6.as_ref(),
        }
    }
}

/// Everything the real-server planner needs to know about the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
    pub sysctls: Sysctls,
    pub nft: NftObserved,
}

impl Observed {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    pub fn addrs_on<'a>(&'a self, ifname: &'a str) -> impl Iterator<Item = &'a Addr> + 'a {
        self.addrs.iter().filter(move |a| a.ifname == ifname)
    }

    /// The interface's primary IPv4 address (the RIP), skipping the given VIPs.
    pub fn primary_v4(&self, ifname: &str, vips: &[IpAddr]) -> Option<Ipv4Addr> {
        self.addrs_on(ifname)
            .filter(|a| !a.secondary && !vips.contains(&a.ip))
            .find_map(|a| match a.ip {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
    }
}

/// One step of a plan. Applying a plan's changes in order moves the kernel from observed to
/// desired; each change knows its inverse so a failed apply can be rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum Change {
    CreateDummy {
        name: String,
    },
    /// Raise an ARP sysctl to suppress ARP for the VIPs.
    SetSysctl {
        iface: String,
        key: SysctlKey,
        from: i64,
        to: i64,
    },
    /// Put an ARP sysctl back to the value it had before rs-agent changed it.
    RestoreSysctl {
        iface: String,
        key: SysctlKey,
        from: i64,
        to: i64,
    },
    /// Atomically (re)write one of rs-agent's nft tables.
    NftReplace {
        family: NftFamily,
        rules: Vec<NftRule>,
        /// What the table held before (`None` = absent): the rollback target.
        previous: Option<Vec<NftRule>>,
    },
    NftDelete {
        family: NftFamily,
        previous: Vec<NftRule>,
    },
    SetLinkUp {
        name: String,
    },
    AddAddr {
        ifname: String,
        ip: IpAddr,
        prefix: u8,
        label: Option<String>,
    },
    DelAddr {
        ifname: String,
        ip: IpAddr,
        prefix: u8,
        label: Option<String>,
    },
    /// Re-add one of our VIPs that lost its label (the kernel cannot relabel an address in
    /// place: it is removed and added again, a window of microseconds).
    RelabelAddr {
        ifname: String,
        ip: IpAddr,
        prefix: u8,
        from: Option<String>,
        to: Option<String>,
    },
    /// Remove and add again one of our VIPs whose duplicate address detection failed (it was
    /// added without `IFA_F_NODAD`, e.g. by an older rs-agent or by hand): added again it
    /// skips DAD and is usable.
    ReAddAddr {
        ifname: String,
        ip: IpAddr,
        prefix: u8,
        label: Option<String>,
    },
    DeleteDummy {
        name: String,
    },
}

impl Change {
    /// Removing an observed address.
    pub fn del_addr(a: &Addr) -> Change {
        Change::DelAddr {
            ifname: a.ifname.clone(),
            ip: a.ip,
            prefix: a.prefix,
            label: a.label.clone(),
        }
    }
}

impl Change {
    /// Where this change sorts in a plan: ARP is suppressed before a VIP is bound, and the VIP
    /// is unbound before suppression is lifted, so there is never a moment of ARP flux.
    /// An `NftReplace` can do both at once (a VIP added, another removed: `up --vip B` after
    /// `up --vip A --vip B`), so addresses are removed before it and added after it.
    pub fn phase(&self) -> u8 {
        match self {
            Change::CreateDummy { .. } => 0,
            Change::SetSysctl { .. } => 1,
            Change::DelAddr { .. } => 2,
            Change::NftReplace { .. } => 3,
            Change::SetLinkUp { .. } => 4,
            Change::AddAddr { .. } | Change::RelabelAddr { .. } | Change::ReAddAddr { .. } => 5,
            Change::DeleteDummy { .. } => 6,
            Change::NftDelete { .. } => 7,
            Change::RestoreSysctl { .. } => 8,
        }
    }

    /// The change that undoes this one, for rolling back a partly applied plan. Bringing a
    /// link up has no inverse: the only link we bring up that we did not create is `lo`; nor
    /// has re-adding a VIP whose DAD failed: the failure cannot be restored, nor needs to be.
    pub fn inverse(&self) -> Option<Change> {
        Some(match self.clone() {
            Change::CreateDummy { name } => Change::DeleteDummy { name },
            Change::DeleteDummy { name } => Change::CreateDummy { name },
            Change::SetSysctl {
                iface,
                key,
                from,
                to,
            } => Change::RestoreSysctl {
                iface,
                key,
                from: to,
                to: from,
            },
            Change::RestoreSysctl {
                iface,
                key,
                from,
                to,
            } => Change::SetSysctl {
                iface,
                key,
                from: to,
                to: from,
            },
            Change::NftReplace {
                family,
                rules,
                previous: Some(previous),
            } => Change::NftReplace {
                family,
                rules: previous,
                previous: Some(rules),
            },
            Change::NftReplace {
                family,
                rules,
                previous: None,
            } => Change::NftDelete {
                family,
                previous: rules,
            },
            Change::NftDelete { family, previous } => Change::NftReplace {
                family,
                rules: previous,
                previous: None,
            },
            Change::SetLinkUp { .. } | Change::ReAddAddr { .. } => return None,
            Change::AddAddr {
                ifname,
                ip,
                prefix,
                label,
            } => Change::DelAddr {
                ifname,
                ip,
                prefix,
                label,
            },
            Change::DelAddr {
                ifname,
                ip,
                prefix,
                label,
            } => Change::AddAddr {
                ifname,
                ip,
                prefix,
                label,
            },
            Change::RelabelAddr {
                ifname,
                ip,
                prefix,
                from,
                to,
            } => Change::RelabelAddr {
                ifname,
                ip,
                prefix,
                from: to,
                to: from,
            },
        })
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::CreateDummy { name } => write!(f, "create dummy device {name}"),
            Change::SetSysctl {
                iface,
                key,
                from,
                to,
            } => write!(f, "set net.ipv4.conf.{iface}.{key} {from} -> {to}"),
            Change::RestoreSysctl {
                iface,
                key,
                from,
                to,
            } => write!(f, "restore net.ipv4.conf.{iface}.{key} {from} -> {to}"),
            Change::NftReplace { family, rules, .. } => {
                write!(f, "write nft table {family} {NFT_TABLE}:")?;
                for rule in rules {
                    write!(f, "\n    {rule}")?;
                }
                Ok(())
            }
            Change::NftDelete { family, .. } => write!(f, "delete nft table {family} {NFT_TABLE}"),
            Change::SetLinkUp { name } => write!(f, "set link {name} up"),
            Change::AddAddr {
                ifname, ip, prefix, ..
            } => write!(f, "add address {ip}/{prefix} to {ifname}"),
            Change::DelAddr {
                ifname, ip, prefix, ..
            } => write!(f, "remove address {ip}/{prefix} from {ifname}"),
            Change::RelabelAddr {
                ifname,
                ip,
                prefix,
                from,
                to,
            } => write!(
                f,
                "re-add address {ip}/{prefix} to {ifname} (label {} -> {})",
                from.as_deref().unwrap_or("none"),
                to.as_deref().unwrap_or(ifname)
            ),
            Change::ReAddAddr {
                ifname, ip, prefix, ..
            } => write!(
                f,
                "re-add address {ip}/{prefix} to {ifname} without duplicate address detection \
                 (it failed: another node on the link answers for it)"
            ),
            Change::DeleteDummy { name } => write!(f, "delete dummy device {name}"),
        }
    }
}

/// The label rs-agent gives an IPv4 address on `ifname`, if it fits the kernel's 15 bytes.
pub fn owned_label(ifname: &str) -> Option<String> {
    let label = format!("{ifname}{LABEL_SUFFIX}");
    (label.len() <= IFNAMSIZ_MAX).then_some(label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ip;

    #[test]
    fn effective_is_max_of_all_and_interface() {
        let mut s = Sysctls::new();
        s.insert(("all".into(), SysctlKey::ArpIgnore), 0);
        s.insert(("eth0".into(), SysctlKey::ArpIgnore), 1);
        s.insert(("all".into(), SysctlKey::ArpAnnounce), 2);
        s.insert(("eth0".into(), SysctlKey::ArpAnnounce), 0);
        assert_eq!(effective(&s, "eth0", SysctlKey::ArpIgnore), Some(1));
        assert_eq!(effective(&s, "eth0", SysctlKey::ArpAnnounce), Some(2));
        assert_eq!(effective(&s, "eth1", SysctlKey::ArpAnnounce), Some(2));
        assert_eq!(effective(&s, "eth0", SysctlKey::RpFilter), None);
    }

    #[test]
    fn only_ignore_1_or_2_and_announce_2_suppress() {
        let ignore: Vec<i64> = (0..=9)
            .filter(|v| suppresses_arp(SysctlKey::ArpIgnore, *v))
            .collect();
        assert_eq!(ignore, vec![1, 2]);
        let announce: Vec<i64> = (0..=9)
            .filter(|v| suppresses_arp(SysctlKey::ArpAnnounce, *v))
            .collect();
        assert_eq!(announce, vec![2]);
    }

    #[test]
    fn labels_fit_the_kernel_limit() {
        assert_eq!(owned_label("lo").as_deref(), Some("lo:rsagent"));
        assert_eq!(owned_label("lvs0").as_deref(), Some("lvs0:rsagent"));
        assert_eq!(owned_label("enp0s31f6"), None);
    }

    #[test]
    fn inverse_of_inverse_is_identity() {
        let changes = [
            Change::CreateDummy {
                name: "lvs0".into(),
            },
            Change::SetSysctl {
                iface: "eth0".into(),
                key: SysctlKey::ArpIgnore,
                from: 0,
                to: 1,
            },
            Change::NftReplace {
                family: NftFamily::Arp,
                rules: vec![NftRule::DropArpFor {
                    vip: Ipv4Addr::new(192, 0, 2, 100),
                }],
                previous: Some(vec![]),
            },
            Change::AddAddr {
                ifname: "lo".into(),
                ip: ip("192.0.2.100"),
                prefix: 32,
                label: Some("lo:rsagent".into()),
            },
        ];
        for c in changes {
            let inv = c.inverse().expect("has inverse");
            assert_eq!(inv.inverse().as_ref(), Some(&c), "{c}");
        }
        let created = Change::NftReplace {
            family: NftFamily::Ip6,
            rules: vec![],
            previous: None,
        };
        assert!(matches!(
            created.inverse(),
            Some(Change::NftDelete {
                family: NftFamily::Ip6,
                ..
            })
        ));
        assert_eq!(Change::SetLinkUp { name: "lo".into() }.inverse(), None);
    }
}
