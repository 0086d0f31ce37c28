//! Links and addresses over rtnetlink: observe them, add/remove VIPs, create/delete the dummy.

use crate::model::{Addr, Dad, Link, ADDR_PROTO};
use futures::TryStreamExt;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressProtocol,
};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkDummy, LinkUnspec};
use std::net::IpAddr;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot open a netlink socket: {0}")]
    Connect(std::io::Error),
    #[error("{action}: {msg}")]
    Kernel { action: String, msg: String },
    #[error("no interface named {0:?}")]
    NoSuchLink(String),
}

const EPERM: i32 = 1;
const EOPNOTSUPP: i32 = 95;

/// Turns an rtnetlink error into a message with the fix where we know it.
fn kernel_err(action: String, e: rtnetlink::Error) -> LinkError {
    let msg = match &e {
        rtnetlink::Error::NetlinkError(m) => {
            let io = m.to_io();
            match -m.raw_code() {
                EPERM => format!("{io} (needs root or CAP_NET_ADMIN)"),
                EOPNOTSUPP if action.starts_with("creating dummy") => format!(
                    "{io}: this kernel has no dummy driver (modprobe dummy), use --device lo"
                ),
                _ => io.to_string(),
            }
        }
        other => other.to_string(),
    };
    LinkError::Kernel { action, msg }
}

/// An rtnetlink handle whose connection runs on the current tokio runtime.
pub fn connect() -> Result<Handle, LinkError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(LinkError::Connect)?;
    tokio::spawn(conn);
    Ok(handle)
}

fn to_link(msg: &LinkMessage) -> Option<Link> {
    let mut name = None;
    let mut kind = None;
    let mut mac = Vec::new();
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(a) => mac = a.clone(),
            LinkAttribute::LinkInfo(infos) => {
                kind = infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(InfoKind::Other(k)) => Some(k.clone()),
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    let flags = msg.header.flags;
    Some(Link {
        index: msg.header.index,
        name: name?,
        up: flags.contains(LinkFlags::Up),
        carrier: flags.contains(LinkFlags::LowerUp),
        loopback: flags.contains(LinkFlags::Loopback),
        noarp: flags.contains(LinkFlags::Noarp),
        kind,
        mac,
    })
}

pub async fn links(handle: &Handle) -> Result<Vec<Link>, LinkError> {
    let msgs: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| kernel_err("listing links".into(), e))?;
    Ok(msgs.iter().filter_map(to_link).collect())
}

/// The DAD state in an address' flags: `IFA_FLAGS` carries all 32 bits, the header only the
/// low 8 (which hold both DAD bits); a failed address keeps its tentative bit too.
fn dad_state(flags: AddressFlags) -> Dad {
    if flags.contains(AddressFlags::Dadfailed) {
        Dad::Failed
    } else if flags.contains(AddressFlags::Tentative) {
        Dad::Tentative
    } else {
        Dad::Done
    }
}

fn to_addr(msg: &AddressMessage, links: &[Link]) -> Option<Addr> {
    let mut local = None;
    let mut address = None;
    let mut label = None;
    let mut proto = 0;
    let mut flags = AddressFlags::from_bits_retain(u32::from(msg.header.flags.bits()));
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Label(l) => label = Some(l.clone()),
            AddressAttribute::Protocol(p) => proto = u8::from(*p),
            AddressAttribute::Flags(f) => flags |= *f,
            _ => {}
        }
    }
    let ifname = links
        .iter()
        .find(|l| l.index == msg.header.index)?
        .name
        .clone();
    Some(Addr {
        ifname,
        ip: local.or(address)?,
        prefix: msg.header.prefix_len,
        label,
        proto,
        secondary: msg.header.flags.contains(AddressHeaderFlags::Secondary),
        dad: dad_state(flags),
    })
}

pub async fn addrs(handle: &Handle, links: &[Link]) -> Result<Vec<Addr>, LinkError> {
    let msgs: Vec<AddressMessage> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| kernel_err("listing addresses".into(), e))?;
    Ok(msgs.iter().filter_map(|m| to_addr(m, links)).collect())
}

async fn index_of(handle: &Handle, name: &str) -> Result<u32, LinkError> {
    links(handle)
        .await?
        .into_iter()
        .find(|l| l.name == name)
        .map(|l| l.index)
        .ok_or_else(|| LinkError::NoSuchLink(name.to_string()))
}

/// Adds `ip/prefix` to `ifname`, stamped with rs-agent's IFA_PROTO and (IPv4) its label.
/// Every address rs-agent adds is a VIP, and a VIP is shared by design in LVS-DR: an IPv6 one
/// is added with IFA_F_NODAD, as duplicate address detection would keep it tentative for a
/// second, or disable it for good when another node (a real server) answers for it.
pub async fn add_addr(
    handle: &Handle,
    ifname: &str,
    ip: IpAddr,
    prefix: u8,
    label: Option<&str>,
) -> Result<(), LinkError> {
    let index = index_of(handle, ifname).await?;
    let mut req = handle.address().add(index, ip, prefix);
    if ip.is_ipv6() {
        req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
    }
    let attrs = &mut req.message_mut().attributes;
    attrs.push(AddressAttribute::Protocol(AddressProtocol::from(
        ADDR_PROTO,
    )));
    if let Some(label) = label {
        attrs.push(AddressAttribute::Label(label.to_string()));
    }
    req.execute()
        .await
        .map_err(|e| kernel_err(format!("adding {ip}/{prefix} to {ifname}"), e))
}

pub async fn del_addr(
    handle: &Handle,
    ifname: &str,
    ip: IpAddr,
    prefix: u8,
) -> Result<(), LinkError> {
    let index = index_of(handle, ifname).await?;
    let mut msg = AddressMessage::default();
    msg.header.index = index;
    msg.header.prefix_len = prefix;
    msg.header.family = match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    if ip.is_ipv4() {
        msg.attributes.push(AddressAttribute::Local(ip));
    }
    msg.attributes.push(AddressAttribute::Address(ip));
    handle
        .address()
        .del(msg)
        .execute()
        .await
        .map_err(|e| kernel_err(format!("removing {ip}/{prefix} from {ifname}"), e))
}

pub async fn create_dummy(handle: &Handle, name: &str) -> Result<(), LinkError> {
    handle
        .link()
        .add(LinkDummy::new(name).build())
        .execute()
        .await
        .map_err(|e| kernel_err(format!("creating dummy device {name}"), e))
}

pub async fn delete_link(handle: &Handle, name: &str) -> Result<(), LinkError> {
    let index = index_of(handle, name).await?;
    handle
        .link()
        .del(index)
        .execute()
        .await
        .map_err(|e| kernel_err(format!("deleting device {name}"), e))
}

pub async fn set_up(handle: &Handle, name: &str) -> Result<(), LinkError> {
    let index = index_of(handle, name).await?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| kernel_err(format!("setting {name} up"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth0() -> Vec<Link> {
        vec![crate::testing::link(2, "eth0", None)]
    }

    /// Carrier is IFF_LOWER_UP, apart from the administrative IFF_UP: an up interface with no
    /// cable has `up` and not `carrier`.
    #[test]
    fn carrier_is_lower_up() {
        let rows = [
            (LinkFlags::Up | LinkFlags::LowerUp, true, true),
            (LinkFlags::Up, true, false),
            (LinkFlags::empty(), false, false),
        ];
        for (flags, up, carrier) in rows {
            let mut msg = LinkMessage::default();
            msg.header.index = 2;
            msg.header.flags = flags;
            msg.attributes.push(LinkAttribute::IfName("eth0".into()));
            let link = to_link(&msg).expect("named link");
            assert_eq!((link.up, link.carrier), (up, carrier), "{flags:?}");
        }
    }

    fn message(header: AddressHeaderFlags, attr: Option<AddressFlags>) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.index = 2;
        msg.header.prefix_len = 128;
        msg.header.flags = header;
        let ip = crate::testing::ip("2001:db8::100");
        msg.attributes.push(AddressAttribute::Address(ip));
        msg.attributes.extend(attr.map(AddressAttribute::Flags));
        msg
    }

    /// The DAD bits are read from the header byte and from IFA_FLAGS alike; failed wins
    /// over tentative (the kernel leaves both set on a failed address).
    #[test]
    fn dad_state_comes_from_header_or_ifa_flags() {
        let rows = [
            (AddressHeaderFlags::Permanent, None, Dad::Done),
            (AddressHeaderFlags::Tentative, None, Dad::Tentative),
            (
                AddressHeaderFlags::Tentative | AddressHeaderFlags::Dadfailed,
                None,
                Dad::Failed,
            ),
            (
                AddressHeaderFlags::empty(),
                Some(AddressFlags::Tentative),
                Dad::Tentative,
            ),
            (
                AddressHeaderFlags::empty(),
                Some(AddressFlags::Dadfailed | AddressFlags::Tentative),
                Dad::Failed,
            ),
            (
                AddressHeaderFlags::Nodad,
                Some(AddressFlags::Nodad | AddressFlags::Noprefixroute),
                Dad::Done,
            ),
        ];
        for (header, attr, want) in rows {
            let addr = to_addr(&message(header, attr), &eth0()).expect("eth0 is known");
            assert_eq!(addr.dad, want, "header {header:?}, IFA_FLAGS {attr:?}");
            assert_eq!(addr.is_usable(), want == Dad::Done);
        }
    }
}
