//! One pass of the director pipeline on open kernel handles: observe (addresses, IPVS) →
//! plan → journal → apply, rolled back as a whole when the kernel refuses a change, then the
//! announcement of the VIPs it bound.
//!
//! Owns the open handles (`Kernel`), the pass's steps and their messages. It must not decide
//! what changes (that is `plan`, a pure function) nor when a pass runs (the commands in
//! `director` and the scheduler in `run`); the state file is read and written only through
//! `DirectorState`.

use super::config::DirectorDesired;
use super::garp;
use super::plan::{self, DirectorPlan, Scope};
use super::report::DirectorReport;
use super::state::DirectorState;
use super::UpOptions;
use crate::error::Error;
use crate::kernel::ipvs::{IpvsClient, ObservedService, ServiceKey};
use crate::kernel::{link, preflight, KernelError};
use crate::model::{Addr, Change, Link};
use rtnetlink::Handle;
use std::path::Path;
use std::time::Instant;

/// The open kernel handles: `up` opens them once, `run` keeps them across passes so that a
/// health flip costs one dump and one write, not a new socket, family lookup and preflight.
pub struct Kernel {
    pub(super) handle: Handle,
    pub(super) client: IpvsClient,
    /// The links `connect` listed, for the first pass to use instead of listing them again.
    links: Option<Vec<Link>>,
}

impl Kernel {
    /// Preflight (unless `dry_run`), the interface check, then the sockets.
    pub async fn connect(desired: &DirectorDesired, dry_run: bool) -> Result<Kernel, Error> {
        if !dry_run {
            preflight::require_cap_net_admin()?;
        }
        let handle = link::connect().map_err(KernelError::from)?;
        // The interface is input: check it before asking anything of IPVS.
        let links = link::links(&handle).await.map_err(KernelError::from)?;
        require_interface(desired, &links)?;
        let client = IpvsClient::connect()?;
        Ok(Kernel {
            handle,
            client,
            links: Some(links),
        })
    }
}

/// The kernel as the director planner sees it.
pub struct DirectorObserved {
    pub ipvs: Vec<ObservedService>,
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
}

pub async fn observe(handle: &Handle, client: &mut IpvsClient) -> Result<DirectorObserved, Error> {
    observe_with(handle, client, None, &Scope::All).await
}

/// `observe`, reusing a link list taken a moment ago (by `Kernel::connect`) if given.
async fn observe_with(
    handle: &Handle,
    client: &mut IpvsClient,
    links: Option<Vec<Link>>,
    scope: &Scope,
) -> Result<DirectorObserved, Error> {
    let t = Instant::now();
    let links = match links {
        Some(links) => links,
        None => link::links(handle).await.map_err(KernelError::from)?,
    };
    let addrs = link::addrs(handle, &links)
        .await
        .map_err(KernelError::from)?;
    crate::timing("observe links and addresses", t);
    let t = Instant::now();
    let ipvs = match scope {
        Scope::Only(keys) if keys.is_empty() => Vec::new(),
        _ => client.dump_where(|k| scope.contains(k))?,
    };
    crate::timing("observe IPVS", t);
    Ok(DirectorObserved { ipvs, links, addrs })
}

fn require_interface<'a>(desired: &DirectorDesired, links: &'a [Link]) -> Result<&'a Link, Error> {
    links.iter().find(|l| l.name == desired.interface).ok_or_else(|| {
        Error::Input(format!(
            "interface {} does not exist on this node; pass an existing LAN interface with --interface (see `ip link`)",
            desired.interface
        ))
    })
}

/// Applies address changes in order; on failure, the number applied and the error.
pub(super) async fn apply_addrs(
    handle: &Handle,
    changes: &[Change],
) -> Result<(), (usize, KernelError)> {
    for (i, c) in changes.iter().enumerate() {
        if let Err(e) = crate::kernel::apply(handle, c).await {
            return Err((i, e));
        }
        tracing::info!(change = %c, "applied");
    }
    Ok(())
}

/// Puts IPVS back as it was in `before` for the services the plan touched, and undoes the
/// address changes already made. Whether that fully worked, and what happened, for the error
/// message.
async fn rollback(
    handle: &Handle,
    client: &mut IpvsClient,
    before: &[ObservedService],
    plan: &DirectorPlan,
    addrs_applied: usize,
) -> (bool, String) {
    let mut failed = Vec::new();
    for c in plan.addrs[..addrs_applied].iter().rev() {
        if let Some(inverse) = c.inverse() {
            if let Err(e) = crate::kernel::apply(handle, &inverse).await {
                failed.push(format!("{inverse}: {e}"));
            }
        }
    }
    match client.dump() {
        Ok(now) => {
            let ops = plan::restore(before, &now, &plan.touched());
            if let Err(e) = client.apply(&ops) {
                failed.push(e.to_string());
            }
        }
        Err(e) => failed.push(e.to_string()),
    }
    if failed.is_empty() {
        (
            true,
            "; rolled back: the IPVS table and addresses are as before".to_string(),
        )
    } else {
        (
            false,
            format!("; ROLLBACK INCOMPLETE: {}", failed.join("; ")),
        )
    }
}

/// One pass of the pipeline on open handles: observe → plan → apply (see `up`), for the
/// services in `scope` (the VIPs always in full).
pub async fn reconcile(
    kernel: &mut Kernel,
    desired: &DirectorDesired,
    state_dir: &Path,
    options: UpOptions,
    scope: &Scope,
) -> Result<DirectorReport, Error> {
    let Kernel {
        handle,
        client,
        links,
    } = kernel;
    let handle = &*handle;
    let writes_before = client.writes();
    let observed = observe_with(handle, client, links.take(), scope).await?;
    let iface = require_interface(desired, &observed.links)?.clone();
    let t = Instant::now();
    let state = DirectorState::load(state_dir)?;
    let (mut report, plan) = plan_pass(desired, &observed, &state, state_dir, options, scope)?;
    crate::timing("load state and plan", t);
    if options.dry_run {
        report.ipvs = plan.ipvs;
        report.addrs = plan.addrs;
        return Ok(report);
    }
    let journal = journal_ownership(&state, &report, &plan, state_dir)?;
    for line in report.adoptions() {
        tracing::info!("{line}");
    }
    if plan.is_empty() {
        return Ok(report);
    }
    apply(handle, client, &observed.ipvs, &plan, &state, state_dir).await?;
    record_applied(journal, &plan, desired, state_dir)?;
    report.warnings.extend(readded_after_dad(&plan.addrs));
    announce_bound(&iface, desired, options, &plan.addrs, &mut report).await;
    report.writes = client.writes() - writes_before;
    report.ipvs = plan.ipvs;
    report.addrs = plan.addrs;
    Ok(report)
}

/// The plan for `scope`, and the report of the pass so far: the configured services that
/// exist and are not rs-agent's, adopted or left alone as `options` say (or the refusal),
/// and with `--adopt` the VIPs taken over and warnings for those that may not be.
fn plan_pass(
    desired: &DirectorDesired,
    observed: &DirectorObserved,
    state: &DirectorState,
    state_dir: &Path,
    options: UpOptions,
    scope: &Scope,
) -> Result<(DirectorReport, DirectorPlan), Error> {
    let unowned = plan::unowned(desired, &observed.ipvs, state, scope);
    let (adopted, skipped) = match (unowned.is_empty(), options.adopt, options.skip_unowned) {
        (true, _, _) | (false, true, _) => (unowned, Vec::new()),
        (false, false, true) => (Vec::new(), unowned),
        (false, false, false) => return Err(refuse_unowned(&unowned, state_dir)),
    };
    let narrowed;
    let scope = match skipped.is_empty() {
        true => scope,
        false => {
            narrowed = plan::scope_without(scope, desired, state, &skipped);
            &narrowed
        }
    };
    let plan = plan::plan_scoped(desired, &observed.ipvs, &observed.addrs, state, scope);
    let (adopted_vips, declined): (Vec<Addr>, Vec<Addr>) = match options.adopt {
        true => plan::unowned_vips(desired, &observed.addrs, state)
            .into_iter()
            .partition(|a| !a.may_be_interface_own()),
        false => Default::default(),
    };
    let report = DirectorReport {
        dry_run: options.dry_run,
        adopted,
        adopted_vips,
        skipped,
        warnings: declined.iter().map(not_adopted).collect(),
        nothing: "the IPVS table and VIPs already match the configuration",
        ..DirectorReport::default()
    };
    Ok((report, plan))
}

/// Journals what the pass takes over or creates before the kernel changes, so that `down`
/// removes it even after a crash mid-apply; the journal, for `record_applied`.
fn journal_ownership(
    state: &DirectorState,
    report: &DirectorReport,
    plan: &DirectorPlan,
    state_dir: &Path,
) -> Result<DirectorState, Error> {
    let mut journal = state.clone();
    journal.own(&report.adopted);
    report.adopted_vips.iter().for_each(|a| journal.own_addr(a));
    journal.record_ops(&plan.ipvs);
    plan.addrs.iter().for_each(|c| journal.record_addr(c));
    // A pass that only edits what we already own (a weight, a scheduler) has nothing new to
    // record.
    if journal != *state {
        journal.save(state_dir)?;
    }
    Ok(journal)
}

/// Applies the plan, IPVS first, then the addresses; all-or-nothing: on a refusal, puts back
/// what the pass changed ([`rollback`]) and says how that went.
async fn apply(
    handle: &Handle,
    client: &mut IpvsClient,
    before: &[ObservedService],
    plan: &DirectorPlan,
    state: &DirectorState,
    state_dir: &Path,
) -> Result<(), Error> {
    let t = Instant::now();
    let applied = match client.apply(&plan.ipvs) {
        Ok(()) => apply_addrs(handle, &plan.addrs).await,
        Err(e) => Err((0, KernelError::Ipvs(e))),
    };
    crate::timing("apply", t);
    let Err((addrs_applied, error)) = applied else {
        return Ok(());
    };
    let (complete, rollback) = rollback(handle, client, before, plan, addrs_applied).await;
    // Only a complete rollback gives the old ownership back; after an incomplete one the
    // journal (saved before applying) still records what this pass may have left behind,
    // so that `down` removes it and the next `up` does not take it for someone else's.
    if complete {
        state.save(state_dir)?;
    }
    Err(Error::Apply { error, rollback })
}

/// After a successful apply: logs each IPVS change, forgets from the journal what the plan
/// removed and saves it with the configuration now in force.
fn record_applied(
    mut journal: DirectorState,
    plan: &DirectorPlan,
    desired: &DirectorDesired,
    state_dir: &Path,
) -> Result<(), Error> {
    let recorded = journal.clone();
    for op in &plan.ipvs {
        tracing::info!(op = %op, "applied");
    }
    journal.forget_ops(&plan.ipvs);
    plan.addrs.iter().for_each(|c| journal.forget_addr(c));
    let t = Instant::now();
    DirectorState::save_desired(state_dir, desired)?;
    if journal != recorded {
        journal.save(state_dir)?;
    }
    crate::timing("save state", t);
    Ok(())
}

/// A warning for each VIP re-added after failed duplicate address detection.
fn readded_after_dad(changes: &[Change]) -> impl Iterator<Item = String> + '_ {
    changes.iter().filter_map(|c| match c {
        // DAD failed: another node answered for the VIP when it was added. Taking it back
        // (and announcing it) is what the configuration asks, but that node — a second
        // director? — is worth a look.
        Change::ReAddAddr { ip, ifname, .. } => Some(format!(
            "VIP {ip} on {ifname} had failed duplicate address detection (another node on \
             the link claimed it); re-added without DAD and announced: check that no other \
             director or host holds {ip}"
        )),
        _ => None,
    })
}

/// Announces the VIPs `changes` bound, or with `defer_announce` leaves them to the caller
/// (`report.unannounced`).
async fn announce_bound(
    iface: &Link,
    desired: &DirectorDesired,
    options: UpOptions,
    changes: &[Change],
    report: &mut DirectorReport,
) {
    let new_vips = newly_bound(changes);
    let to_announce = !new_vips.is_empty() && desired.garp_count > 0;
    if to_announce && options.defer_announce {
        report.unannounced = new_vips;
    } else if to_announce {
        // The VIPs are bound and IPVS serves them: a failed announcement (the interface is
        // down, no CAP_NET_RAW) only delays neighbours learning the director's MAC, so it is
        // a warning, not a reason to undo a working change.
        match announce(iface, desired.garp_count, desired.garp_interval, &new_vips).await {
            Ok(sent) => report.announced = sent,
            Err(e) => report.warnings.push(format!(
                "{e}; the VIP(s) are bound and IPVS serves them, but neighbours with a stale \
                 ARP/ND entry reach them only once it expires (`director run` retries until it \
                 succeeds and announces every VIP when it starts){}",
                by_hand(&iface.name, &new_vips)
            )),
        }
    }
}

/// The VIPs address changes bind (added, or re-added after failed DAD): those to announce.
fn newly_bound(changes: &[Change]) -> Vec<std::net::IpAddr> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::AddAddr { ip, .. } | Change::ReAddAddr { ip, .. } => Some(*ip),
            _ => None,
        })
        .collect()
}

/// The warning for a configured VIP bound by someone else that `--adopt` leaves alone
/// because it may be the interface's own address ([`Addr::may_be_interface_own`]).
fn not_adopted(a: &Addr) -> String {
    let (ip, prefix, ifname) = (a.ip, a.prefix, &a.ifname);
    format!(
        "VIP {ip}/{prefix} on {ifname} not adopted: it is the first address of its subnet and \
         may be {ifname}'s own address (`director down` would delete it); it stays bound and \
         not rs-agent's. If it is only the VIP: `ip addr del {ip}/{prefix} dev {ifname}`, then \
         `rs-agent director up` binds it as rs-agent's"
    )
}

/// How to announce an IPv4 VIP by hand, for a warning ("" when all are IPv6).
fn by_hand(ifname: &str, vips: &[std::net::IpAddr]) -> String {
    vips.iter()
        .find(|v| v.is_ipv4())
        .map_or_else(String::new, |v| {
            format!("; by hand: `arping -U -c 3 -I {ifname} {v}`")
        })
}

/// Gratuitous ARP / unsolicited NA for `vips` on `iface`, as the configuration asks; refused
/// (nothing sent) when the interface could not deliver it ([`cannot_announce`]).
pub(crate) async fn announce(
    iface: &Link,
    count: u32,
    interval: std::time::Duration,
    vips: &[std::net::IpAddr],
) -> Result<u32, String> {
    if let Some(why) = cannot_announce(iface) {
        return Err(why);
    }
    garp::announce(&iface.name, iface.index, &iface.mac, vips, count, interval).await
}

/// A few service keys for a message, and how many more.
fn some_services(keys: &[ServiceKey]) -> String {
    const SHOWN: usize = 3;
    let mut names: Vec<String> = keys.iter().take(SHOWN).map(ToString::to_string).collect();
    if keys.len() > SHOWN {
        names.push(format!("and {} more", keys.len() - SHOWN));
    }
    names.join(", ")
}

/// Why a gratuitous ARP / unsolicited NA sent on `iface` now would reach no neighbour, if so.
/// Without a carrier the kernel drops the frames and the send reports success: checked here,
/// so that the VIPs stay pending and `director run` announces them when the carrier is back.
fn cannot_announce(iface: &Link) -> Option<String> {
    let name = &iface.name;
    match (iface.up, iface.carrier) {
        (true, true) => None,
        (false, _) => Some(format!(
            "gratuitous ARP on {name}: not sent: the interface is down (`ip link set {name} up`)"
        )),
        (true, false) => Some(format!(
            "gratuitous ARP on {name}: not sent: the interface has no carrier (cable, switch port \
             or lower device down; see `ip link show {name}`: NO-CARRIER)"
        )),
    }
}

/// The error for configured services that exist and are not rs-agent's.
fn refuse_unowned(keys: &[ServiceKey], state_dir: &Path) -> Error {
    Error::Input(format!(
        "configured IPVS service(s) {} already exist and are not rs-agent's (not in {}); \
         pass --adopt to take them over (`director down` then removes them), or delete them \
         first (ipvsadm -D)",
        some_services(keys),
        DirectorState::path(state_dir).display()
    ))
}

/// The warning of `director run` for configured services it leaves alone (`skip_unowned`).
pub(crate) fn skipping_unowned(keys: &[ServiceKey], state_dir: &Path) -> String {
    format!(
        "configured IPVS service(s) {} exist and are not rs-agent's (not in {}): left alone, \
         health checks do not change them; the other services are reconciled as usual; \
         restart with --adopt to take them over, or delete them (ipvsadm -D)",
        some_services(keys),
        DirectorState::path(state_dir).display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VIP is announced only on an interface that is up *with a carrier*: without one the
    /// kernel drops the frames and reports success, and the announcement would be lost.
    #[test]
    fn announcements_wait_for_an_up_interface_with_a_carrier() {
        let link = |up, carrier| Link {
            index: 2,
            name: "eth0".into(),
            up,
            carrier,
            loopback: false,
            noarp: false,
            kind: None,
            mac: vec![2, 0, 0, 0, 0, 1],
        };
        assert_eq!(cannot_announce(&link(true, true)), None);
        let down = cannot_announce(&link(false, false)).unwrap_or_default();
        assert!(
            down.contains("eth0") && down.contains("interface is down"),
            "{down}"
        );
        let no_carrier = cannot_announce(&link(true, false)).unwrap_or_default();
        assert!(
            no_carrier.contains("eth0") && no_carrier.contains("no carrier"),
            "{no_carrier}"
        );
        assert!(!no_carrier.contains('\n'));
    }

    #[test]
    fn unowned_services_are_refused_naming_a_few_and_the_fix() {
        let keys: Vec<ServiceKey> = (1..=5)
            .map(|i| ServiceKey::Addr {
                protocol: crate::kernel::ipvs::Protocol::Tcp,
                addr: std::net::IpAddr::from([192, 0, 2, i]),
                port: 80,
            })
            .collect();
        let Error::Input(m) = refuse_unowned(&keys, Path::new("/var/lib/rs-agent")) else {
            panic!("not an input error");
        };
        assert!(
            m.contains("TCP 192.0.2.1:80") && m.contains("TCP 192.0.2.3:80"),
            "{m}"
        );
        assert!(
            !m.contains("192.0.2.4:80") && m.contains("and 2 more"),
            "{m}"
        );
        assert!(m.contains("--adopt") && m.contains("director.json") && !m.contains('\n'));
    }

    fn addr(ip: &str, prefix: u8, secondary: bool) -> Addr {
        Addr {
            ifname: "eth0".into(),
            ip: ip.parse().expect("literal"),
            prefix,
            label: None,
            proto: 0,
            secondary,
            dad: crate::model::Dad::Done,
        }
    }

    /// `--adopt` takes a hand-bound VIP only when it cannot be the interface's own address:
    /// `down` deletes what was adopted, and deleting the first address of a subnet takes the
    /// subnet's route (and its secondaries) with it.
    #[test]
    fn adopt_leaves_alone_what_may_be_the_interfaces_own_address() {
        let adoptable = |a: &Addr| !a.may_be_interface_own();
        assert!(adoptable(&addr("192.0.2.100", 32, false)));
        assert!(adoptable(&addr("192.0.2.100", 24, true)), "a secondary");
        assert!(adoptable(&addr("2001:db8::100", 128, false)));
        assert!(
            !adoptable(&addr("192.0.2.1", 24, false)),
            "a subnet's first"
        );
        assert!(!adoptable(&addr("2001:db8::1", 64, false)));
        // IFA_F_SECONDARY on IPv6 is IFA_F_TEMPORARY (a privacy address), not a secondary.
        assert!(!adoptable(&addr("2001:db8::1", 64, true)));
        let m = not_adopted(&addr("192.0.2.1", 24, false));
        assert!(
            m.starts_with("VIP 192.0.2.1/24 on eth0 not adopted")
                && m.contains("ip addr del 192.0.2.1/24 dev eth0")
                && !m.contains('\n'),
            "{m}"
        );
    }
}
