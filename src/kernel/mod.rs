//! Executors: one module per kernel interface. They turn `Change`s into calls and kernel
//! replies into `Observed`; they make no decisions.

pub mod events;
pub mod ipvs;
pub mod link;
pub mod nft;
pub mod preflight;
pub mod rlimit;
pub mod sysctl;

use crate::model::{Change, NftFamily, NftObserved, Observed};
use rtnetlink::Handle;

/// A kernel interface refused or failed; the message names the operation.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Link(#[from] link::LinkError),
    #[error(transparent)]
    Sysctl(#[from] sysctl::SysctlError),
    #[error(transparent)]
    Nft(#[from] nft::NftError),
    #[error(transparent)]
    Ipvs(#[from] ipvs::IpvsError),
}

/// Reads everything the real-server planner compares against.
pub async fn observe_real_server(handle: &Handle, with_nft: bool) -> Result<Observed, KernelError> {
    let links = link::links(handle).await?;
    let addrs = link::addrs(handle, &links).await?;
    let sysctls = sysctl::observe(links.iter().map(|l| l.name.as_str()))?;
    let nft = if with_nft && nft::nft_available() {
        let mut tables = nft::observe_all(&[NftFamily::Arp, NftFamily::Ip6])?.into_iter();
        NftObserved {
            arp: tables.next().flatten(),
            ip6: tables.next().flatten(),
        }
    } else {
        NftObserved::default()
    };
    Ok(Observed {
        links,
        addrs,
        sysctls,
        nft,
    })
}

/// Carries out one change.
pub async fn apply(handle: &Handle, change: &Change) -> Result<(), KernelError> {
    match change {
        Change::CreateDummy { name } => link::create_dummy(handle, name).await?,
        Change::DeleteDummy { name } => link::delete_link(handle, name).await?,
        Change::SetSysctl { iface, key, to, .. } | Change::RestoreSysctl { iface, key, to, .. } => {
            sysctl::write(iface, *key, *to)?
        }
        Change::NftReplace { family, rules, .. } => nft::apply(
            &nft::replace_batch(*family, rules),
            &format!("writing table {family} rs_agent"),
        )?,
        Change::NftDelete { family, .. } => nft::apply(
            &nft::delete_batch(*family),
            &format!("deleting table {family} rs_agent"),
        )?,
        Change::SetLinkUp { name } => link::set_up(handle, name).await?,
        Change::AddAddr {
            ifname,
            ip,
            prefix,
            label,
        } => link::add_addr(handle, ifname, *ip, *prefix, label.as_deref()).await?,
        Change::DelAddr {
            ifname, ip, prefix, ..
        } => link::del_addr(handle, ifname, *ip, *prefix).await?,
        // A new label, or a new address after failed DAD: both remove and add again. When the
        // add fails, a relabelled VIP is put back as it was, so that the rollback of the
        // changes before this one leaves the node as found (a VIP whose DAD failed was not in
        // use: there is nothing to put back).
        Change::RelabelAddr {
            ifname,
            ip,
            prefix,
            from,
            to,
        } => {
            link::del_addr(handle, ifname, *ip, *prefix).await?;
            if let Err(e) = link::add_addr(handle, ifname, *ip, *prefix, to.as_deref()).await {
                let _ = link::add_addr(handle, ifname, *ip, *prefix, from.as_deref()).await;
                return Err(e.into());
            }
        }
        Change::ReAddAddr {
            ifname,
            ip,
            prefix,
            label,
        } => {
            link::del_addr(handle, ifname, *ip, *prefix).await?;
            link::add_addr(handle, ifname, *ip, *prefix, label.as_deref()).await?
        }
    }
    Ok(())
}
