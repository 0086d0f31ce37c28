//! What a director command did or would do (`DirectorReport`), and how the CLI prints it.
//!
//! Plain data filled in by `up`, `down` and each pass of `run`; it must not reach the kernel
//! or the state file, nor decide anything about what a pass does.

use crate::kernel::ipvs::{IpvsOp, ServiceKey};
use crate::model::{Addr, Change};

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

#[cfg(test)]
mod tests {
    use super::*;

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
