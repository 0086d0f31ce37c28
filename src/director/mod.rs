//! Director commands: `director up|down|status|import`. The same pipeline as the real server:
//! observe (IPVS dump + addresses) → plan (pure diff) → apply, with a state file that records
//! what is ours before anything is changed.

pub mod config;
pub mod garp;
pub mod health;
pub mod import;
pub mod plan;
pub mod raw;
pub mod run;
pub mod state;
pub mod status;

use crate::error::Error;
use crate::kernel::ipvs::{IpvsClient, IpvsError, IpvsOp, ObservedService, ServiceKey};
use crate::kernel::{link, preflight, KernelError};
use crate::model::{Addr, Change, Link};
use crate::state_dir::RunLock;
use config::DirectorDesired;
use plan::{DirectorPlan, Scope};
use rtnetlink::Handle;
use state::DirectorState;
use std::path::Path;

impl From<IpvsError> for Error {
    fn from(e: IpvsError) -> Self {
        match e {
            IpvsError::ModuleAbsent => Error::Input(e.to_string()),
            // Every IPVS command, reading the table included, needs CAP_NET_ADMIN: an
            // operator error (exit 2), said as one, not a kernel failure. (A refused write
            // already carries the hint.)
            e @ IpvsError::Op { .. } if e.permission_denied() => Error::Input(e.to_string()),
            e if e.permission_denied() => Error::Input(format!(
                "{e}: IPVS needs CAP_NET_ADMIN, for reading the table too; run as root (sudo)"
            )),
            other => Error::Kernel(KernelError::Ipvs(other)),
        }
    }
}

/// Held by `director run` for its lifetime (see [`RunLock`]).
pub(crate) const DIRECTOR_RUN: RunLock = RunLock {
    file: crate::state_dir::DIRECTOR_RUN,
    command: "rs-agent director run",
    unit: "rs-agent-director.service",
};

/// How `up` and each pass of `run` treat the kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpOptions {
    /// Plan and report only.
    pub dry_run: bool,
    /// Take over configured services that exist and are not rs-agent's (else refused).
    pub adopt: bool,
    /// Without `adopt`: leave such services alone and reconcile the rest instead of refusing
    /// the pass. `director run` after its first pass: a reload that names a service someone
    /// else made must not stop every later pass, health changes of all services included.
    pub skip_unowned: bool,
    /// Leave announcing the VIPs a pass binds to the caller (they come back in
    /// `DirectorReport::unannounced`): `director run` sends announcements in the background, so
    /// that their rounds never hold up check results, reloads or the watchdog.
    pub defer_announce: bool,
}

/// What a director command did, for the CLI.
#[derive(Debug, Default)]
pub struct DirectorReport {
    pub ipvs: Vec<IpvsOp>,
    pub addrs: Vec<Change>,
    pub announced: u32,
    /// Newly bound VIPs left for the caller to announce (`defer_announce`: `director run`).
    pub unannounced: Vec<std::net::IpAddr>,
    /// Configured services that existed and were not rs-agent's, taken over with `--adopt`.
    pub adopted: Vec<ServiceKey>,
    /// Configured VIPs that were bound and not rs-agent's, taken over with `--adopt`.
    pub adopted_vips: Vec<Addr>,
    /// Configured services that exist and are not rs-agent's, left alone (`skip_unowned`).
    pub skipped: Vec<ServiceKey>,
    /// What went wrong after the change was made (it stands), one line each, for stderr.
    pub warnings: Vec<String>,
    /// Netlink writes that carried IPVS changes.
    pub writes: u64,
    pub dry_run: bool,
    pub nothing: &'static str,
}

impl DirectorReport {
    /// True when this report describes changes made to the node (not a dry run's plan).
    pub fn changed(&self) -> bool {
        !self.dry_run && !self.is_empty()
    }

    /// Nothing changed, nor would change (adopting a service counts as a change: of ownership).
    pub fn is_empty(&self) -> bool {
        self.ipvs.is_empty()
            && self.addrs.is_empty()
            && self.adopted.is_empty()
            && self.adopted_vips.is_empty()
    }

    /// One line per service or VIP taken over with `--adopt`.
    pub fn adoptions(&self) -> impl Iterator<Item = String> + '_ {
        let services = self.adopted.iter().map(|key| {
            format!("adopt service {key} (rs-agent's from now on: `director down` removes it)")
        });
        let vips = self.adopted_vips.iter().map(|a| {
            format!(
                "adopt VIP {} on {} (rs-agent's from now on: `director down` removes it)",
                a.ip, a.ifname
            )
        });
        services.chain(vips)
    }

    pub fn print(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        if self.is_empty() {
            writeln!(out, "nothing to do: {}", self.nothing)?;
        } else {
            self.print_changes(out)?;
        }
        for w in &self.warnings {
            writeln!(out, "warning: {w}")?;
        }
        Ok(())
    }

    fn print_changes(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let verb = if self.dry_run { "would" } else { "did" };
        for line in self.adoptions() {
            writeln!(out, "{verb}: {line}")?;
        }
        for op in &self.ipvs {
            writeln!(out, "{verb}: {op}")?;
        }
        for c in &self.addrs {
            writeln!(out, "{verb}: {c}")?;
        }
        if !self.dry_run && !self.ipvs.is_empty() {
            writeln!(
                out,
                "did: {} IPVS change(s) in {} netlink write(s)",
                self.ipvs.len(),
                self.writes
            )?;
        }
        if self.announced > 0 {
            writeln!(
                out,
                "did: sent {} gratuitous ARP/NA announcement(s)",
                self.announced
            )?;
        }
        Ok(())
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
    let t = std::time::Instant::now();
    let links = match links {
        Some(links) => links,
        None => link::links(handle).await.map_err(KernelError::from)?,
    };
    let addrs = link::addrs(handle, &links)
        .await
        .map_err(KernelError::from)?;
    crate::timing("observe links and addresses", t);
    let t = std::time::Instant::now();
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
async fn apply_addrs(handle: &Handle, changes: &[Change]) -> Result<(), (usize, KernelError)> {
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

/// Reconciles IPVS and the VIPs to the configuration: minimal changes, never a flush, never a
/// foreign service; all-or-nothing. Newly bound VIPs are announced with gratuitous ARP/NA.
pub async fn up(
    desired: &DirectorDesired,
    state_dir: &Path,
    options: UpOptions,
) -> Result<DirectorReport, Error> {
    let mut kernel = Kernel::connect(desired, options.dry_run).await?;
    let _lock = match options.dry_run {
        true => None,
        // The pass lock first, then the probe (as in the real server's `up`): a `director
        // run` starting meanwhile then applies its configuration after this pass, not before.
        false => {
            let lock = lock_passes(state_dir).await?;
            DIRECTOR_RUN.refuse_up(state_dir)?;
            Some(lock)
        }
    };
    reconcile(&mut kernel, desired, state_dir, options, &Scope::All).await
}

/// The director pass lock: one `up`, `down` or `run` pass at a time per state directory,
/// from loading the state file to saving it (waits for the holder, bounded).
pub(crate) async fn lock_passes(state_dir: &Path) -> Result<crate::state_dir::StateLock, Error> {
    let lock = crate::state_dir::StateLock::acquire(
        state_dir,
        crate::state_dir::DIRECTOR,
        crate::state_dir::WAIT,
    );
    Ok(lock.await?)
}

/// The open kernel handles: `up` opens them once, `run` keeps them across passes so that a
/// health flip costs one dump and one write, not a new socket, family lookup and preflight.
pub struct Kernel {
    handle: Handle,
    client: IpvsClient,
    /// The links `connect` listed, for the first pass to use instead of listing them again.
    links: Option<Vec<Link>>,
}

impl Kernel {
    /// Preflight (unless `dry_run`), the interface check, then the sockets.
    pub async fn connect(desired: &DirectorDesired, dry_run: bool) -> Result<Kernel, Error> {
        if !dry_run {
            preflight::require_net_admin().map_err(Error::Input)?;
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

/// `director check`: everything `up` verifies before it changes anything — CAP_NET_ADMIN,
/// the interface, the IPVS generic-netlink family — for an already validated config.
pub async fn check(desired: &DirectorDesired) -> Result<(), Error> {
    Kernel::connect(desired, false).await.map(drop)
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
    let dry_run = options.dry_run;
    let Kernel {
        handle,
        client,
        links,
    } = kernel;
    let handle = &*handle;
    let writes_before = client.writes();
    let observed = observe_with(handle, client, links.take(), scope).await?;
    let iface = require_interface(desired, &observed.links)?.clone();
    let t = std::time::Instant::now();
    let state = DirectorState::load(state_dir)?;
    let unowned = plan::unowned(desired, &observed.ipvs, &state, scope);
    let (adopted, skipped) = match (unowned.is_empty(), options.adopt, options.skip_unowned) {
        (true, _, _) | (false, true, _) => (unowned, Vec::new()),
        (false, false, true) => (Vec::new(), unowned),
        (false, false, false) => return Err(refuse_unowned(&unowned, state_dir)),
    };
    let narrowed;
    let scope = match skipped.is_empty() {
        true => scope,
        false => {
            narrowed = plan::scope_without(scope, desired, &state, &skipped);
            &narrowed
        }
    };
    let plan = plan::plan_scoped(desired, &observed.ipvs, &observed.addrs, &state, scope);
    crate::timing("load state and plan", t);
    let (adopted_vips, declined): (Vec<Addr>, Vec<Addr>) = match options.adopt {
        true => plan::unowned_vips(desired, &observed.addrs, &state)
            .into_iter()
            .partition(|a| !a.may_be_interface_own()),
        false => Default::default(),
    };
    let mut report = DirectorReport {
        dry_run,
        adopted,
        adopted_vips,
        skipped,
        warnings: declined.iter().map(not_adopted).collect(),
        nothing: "the IPVS table and VIPs already match the configuration",
        ..DirectorReport::default()
    };
    if dry_run {
        report.ipvs = plan.ipvs;
        report.addrs = plan.addrs;
        return Ok(report);
    }
    let mut journal = state.clone();
    journal.own(&report.adopted);
    report.adopted_vips.iter().for_each(|a| journal.own_addr(a));
    journal.record_ops(&plan.ipvs);
    plan.addrs.iter().for_each(|c| journal.record_addr(c));
    // Ownership is journalled before the kernel changes; a pass that only edits what we
    // already own (a weight, a scheduler) has nothing new to record.
    if journal != state {
        journal.save(state_dir)?;
    }
    for line in report.adoptions() {
        tracing::info!("{line}");
    }
    if plan.is_empty() {
        return Ok(report);
    }

    let t = std::time::Instant::now();
    let applied = match client.apply(&plan.ipvs) {
        Ok(()) => apply_addrs(handle, &plan.addrs).await,
        Err(e) => Err((0, KernelError::Ipvs(e))),
    };
    crate::timing("apply", t);
    if let Err((addrs_applied, error)) = applied {
        let (complete, rollback) =
            rollback(handle, client, &observed.ipvs, &plan, addrs_applied).await;
        // Only a complete rollback gives the old ownership back; after an incomplete one the
        // journal (saved before applying) still records what this pass may have left behind,
        // so that `down` removes it and the next `up` does not take it for someone else's.
        if complete {
            state.save(state_dir)?;
        }
        return Err(Error::Apply { error, rollback });
    }
    let recorded = journal.clone();
    for op in &plan.ipvs {
        tracing::info!(op = %op, "applied");
    }
    journal.forget_ops(&plan.ipvs);
    plan.addrs.iter().for_each(|c| journal.forget_addr(c));
    let t = std::time::Instant::now();
    DirectorState::save_desired(state_dir, desired)?;
    if journal != recorded {
        journal.save(state_dir)?;
    }
    crate::timing("save state", t);

    for c in &plan.addrs {
        if let Change::ReAddAddr { ip, ifname, .. } = c {
            // DAD failed: another node answered for the VIP when it was added. Taking it back
            // (and announcing it) is what the configuration asks, but that node — a second
            // director? — is worth a look.
            report.warnings.push(format!(
                "VIP {ip} on {ifname} had failed duplicate address detection (another node on \
                 the link claimed it); re-added without DAD and announced: check that no other \
                 director or host holds {ip}"
            ));
        }
    }
    let new_vips = newly_bound(&plan.addrs);
    let to_announce = !new_vips.is_empty() && desired.garp_count > 0;
    if to_announce && options.defer_announce {
        report.unannounced = new_vips;
    } else if to_announce {
        // The VIPs are bound and IPVS serves them: a failed announcement (the interface is
        // down, no CAP_NET_RAW) only delays neighbours learning the director's MAC, so it is
        // a warning, not a reason to undo a working change.
        match announce(&iface, desired.garp_count, desired.garp_interval, &new_vips).await {
            Ok(sent) => report.announced = sent,
            Err(e) => report.warnings.push(format!(
                "{e}; the VIP(s) are bound and IPVS serves them, but neighbours with a stale \
                 ARP/ND entry reach them only once it expires (`director run` retries until it \
                 succeeds and announces every VIP when it starts){}",
                by_hand(&iface.name, &new_vips)
            )),
        }
    }
    report.writes = client.writes() - writes_before;
    report.ipvs = plan.ipvs;
    report.addrs = plan.addrs;
    Ok(report)
}

/// The VIPs address changes bind (added, or re-added after failed DAD): those to announce.
pub(crate) fn newly_bound(changes: &[Change]) -> Vec<std::net::IpAddr> {
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

/// Removes exactly rs-agent's VIPs (first, so no new traffic arrives) and then its services.
pub async fn down(state_dir: &Path, dry_run: bool) -> Result<DirectorReport, Error> {
    let _lock = match dry_run {
        true => None,
        false => Some(lock_passes(state_dir).await?),
    };
    if !dry_run {
        DIRECTOR_RUN.refuse_down(state_dir)?;
    }
    let mut state = DirectorState::load(state_dir)?;
    let mut report = DirectorReport {
        dry_run,
        nothing: "rs-agent has nothing configured on this director",
        ..DirectorReport::default()
    };
    if state.services.is_empty() && state.addrs.is_empty() {
        return Ok(report);
    }
    if !dry_run {
        preflight::require_net_admin().map_err(Error::Input)?;
    }
    let handle = link::connect().map_err(KernelError::from)?;
    let mut client = IpvsClient::connect()?;
    let observed = observe(&handle, &mut client).await?;
    let plan = plan::plan_down(&observed.ipvs, &observed.addrs, &state);
    if dry_run {
        report.ipvs = plan.ipvs;
        report.addrs = plan.addrs;
        return Ok(report);
    }
    if let Err((i, e)) = apply_addrs(&handle, &plan.addrs).await {
        plan.addrs[..i].iter().for_each(|c| state.forget_addr(c));
        state.save(state_dir)?;
        return Err(e.into());
    }
    if let Err(e) = client.apply(&plan.ipvs) {
        state.addrs.clear();
        state.save(state_dir)?;
        return Err(e.into());
    }
    // Everything we owned is gone (or was already gone): nothing is left to undo.
    DirectorState::default().save(state_dir)?;
    DirectorState::forget_desired(state_dir)?;
    report.ipvs = plan.ipvs;
    report.addrs = plan.addrs;
    report.writes = client.writes();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_errno(errno: i32) -> Error {
        Error::from(IpvsError::Io {
            context: "dumping services".into(),
            source: std::io::Error::from_raw_os_error(errno),
        })
    }

    #[test]
    fn ipvs_permission_denied_is_an_operator_error_naming_the_capability() {
        match from_errno(libc::EPERM) {
            Error::Input(m) => {
                assert!(
                    m.contains("dumping services") && m.contains("CAP_NET_ADMIN"),
                    "{m}"
                )
            }
            other => panic!("EPERM became {other:?}"),
        }
        assert!(matches!(from_errno(libc::EIO), Error::Kernel(_)));
    }

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

    /// A warning is printed even when there is nothing else to say (an `up --adopt` whose
    /// only news is a VIP it would not adopt).
    #[test]
    fn warnings_are_printed_when_nothing_changes() {
        let report = DirectorReport {
            warnings: vec!["VIP 192.0.2.1/24 on eth0 not adopted".into()],
            nothing: "the IPVS table and VIPs already match the configuration",
            ..DirectorReport::default()
        };
        let mut out = Vec::new();
        report.print(&mut out).expect("print to a Vec");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "nothing to do: the IPVS table and VIPs already match the configuration\n\
             warning: VIP 192.0.2.1/24 on eth0 not adopted\n"
        );
    }
}
