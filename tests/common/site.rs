//! The LVS-DR site of the real-server tiers: a client, a director holding the VIPs on its LAN
//! interface, and real servers at the kernel's ARP defaults; all on 192.0.2.0/24 (and
//! 2001:db8::/64 when asked), each host in a namespace of its own.

use super::{arping_macs, Host, HostSpec, Lan};
use std::collections::BTreeSet;

/// The hosts of one site. The client is 192.0.2.10, the director 192.0.2.1, real server `i`
/// (from 0) 192.0.2.`i + 2`; the same last numbers in 2001:db8::/64.
pub struct Site {
    pub client: Host,
    pub director: Host,
    pub servers: Vec<Host>,
    // Declared last so the hosts' namespaces go first; order does not matter for cleanup.
    _lan: Lan,
}

/// Variations of the site's LAN.
#[derive(Clone, Copy)]
pub struct Layout {
    /// One veth name per real server (a dotted name is not a VLAN, just a name).
    pub rs_ifaces: &'static [&'static str],
    /// Every host on this 802.1Q VLAN (`eth0.<id>`) instead of untagged.
    pub vlan: Option<u16>,
    /// Give every host an address in 2001:db8::/64 too.
    pub ipv6: bool,
    /// The IPv4 VIPs the director holds (as /32) on its LAN interface.
    pub vips: &'static [&'static str],
}

impl Site {
    pub fn rs1(&self) -> &Host {
        &self.servers[0]
    }

    pub fn rs2(&self) -> &Host {
        &self.servers[1]
    }
}

pub fn site(test: &str, layout: Layout) -> Site {
    let mut lan = Lan::new(test);
    let spec = |role: &str, n: usize, iface: &str| {
        let mut s = HostSpec::new(role, &format!("192.0.2.{n}/24")).iface(iface);
        if layout.ipv6 {
            s = s.ipv6(&format!("2001:db8::{n}/64"));
        }
        if let Some(id) = layout.vlan {
            s = s.vlan(id);
        }
        s
    };
    let client = lan.host(spec("client", 10, "eth0"));
    let director = lan.host(spec("dir", 1, "eth0"));
    let servers: Vec<Host> = (layout.rs_ifaces.iter().enumerate())
        .map(|(i, iface)| lan.host(spec(&format!("rs{}", i + 1), i + 2, iface)))
        .collect();
    for vip in layout.vips {
        director.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{vip}/32"),
            "dev",
            &director.iface,
        ]);
    }
    for rs in &servers {
        // The kernel defaults, stated: a new namespace copies IPv4 conf from the root one.
        for scope in ["all", "default", rs.iface.as_str()] {
            let scope = scope.replace('.', "/");
            for key in ["arp_ignore", "arp_announce"] {
                rs.ns.sysctl(&format!("net.ipv4.conf.{scope}.{key}"), "0");
            }
        }
    }
    Site {
        client,
        director,
        servers,
        _lan: lan,
    }
}

/// A set of MACs, as [`arping_macs`] returns them.
pub fn set(macs: &[&str]) -> BTreeSet<String> {
    macs.iter().map(|m| m.to_string()).collect()
}

/// The client's view: 3 ARP requests for `vip` are answered by the director only.
pub fn assert_only_director_answers(site: &Site, vip: &str, what: &str) {
    only_director_answers(site, vip, 3, what);
}

/// The LVS-DR view of ARP, probed harder: 5 requests for `vip` answered by the director only,
/// and each real server still answers for its own address.
pub fn assert_lvs_dr_arp(site: &Site, vip: &str, what: &str) {
    only_director_answers(site, vip, 5, what);
    for rs in &site.servers {
        assert_eq!(
            arping_macs(&site.client, &rs.ip, 2),
            set(&[&rs.mac]),
            "{what}: ARP for the real server's own address {} must still be answered",
            rs.ip
        );
    }
}

fn only_director_answers(site: &Site, vip: &str, probes: u32, what: &str) {
    let servers: Vec<String> = (site.servers.iter())
        .map(|rs| format!("{}={}", rs.ip, rs.mac))
        .collect();
    assert_eq!(
        arping_macs(&site.client, vip, probes),
        set(&[&site.director.mac]),
        "{what}: ARP for {vip} must be answered by the director ({}) only; real servers {}",
        site.director.mac,
        servers.join(" ")
    );
}
