//! The announcements of `director run`: gratuitous ARP / unsolicited NA for the VIPs, sent
//! in a task of their own so that their rounds never hold up check results, reloads or the
//! watchdog, retried until they reach the link.
//!
//! Owns the pending VIPs, the announcement in flight and why the last one failed. It must not
//! bind or unbind a VIP (a pass does) nor decide which VIPs are configured (the caller hands
//! in the configuration in force).

use crate::director::config::DirectorDesired;
use crate::director::plan;
use crate::director::Kernel;
use std::net::IpAddr;

/// An announcement being sent by its own task.
struct Announcing {
    vips: Vec<IpAddr>,
    interface: String,
    task: tokio::task::JoinHandle<Result<u32, String>>,
}

impl Announcing {
    /// Whether this announcement must stop: it claims a VIP that is no longer configured (its
    /// later rounds would pull traffic from the node that now holds it) or is sent on an
    /// interface the director no longer uses (both checked before a reload's pass, so that
    /// no round goes out once the VIP is removed), or a pass bound VIPs that are to be
    /// announced at once (`pending`: the new announcement takes this one's VIPs along).
    fn superseded(&self, desired: &DirectorDesired, pending: bool) -> bool {
        let vips = desired.vips();
        pending
            || self.interface != desired.interface
            || self.vips.iter().any(|v| !vips.contains(v))
    }
}

/// The VIPs to announce and the announcement in flight, if any.
#[derive(Default)]
pub(super) struct Announcer {
    /// VIPs bound by a pass whose announcement failed (e.g. the interface was down), or not
    /// yet sent: each later attempt tries again until it succeeds or the VIP is no longer
    /// configured.
    pending: Vec<IpAddr>,
    /// Why the last announcement attempt failed, to warn once per cause rather than every
    /// second (no CAP_NET_RAW, interface down); `None` after a success.
    error: Option<String>,
    in_flight: Option<Announcing>,
}

impl Announcer {
    /// As keepalived does on becoming master: every configured VIP, at start.
    pub(super) async fn every_vip(&mut self, kernel: Option<&Kernel>, desired: &DirectorDesired) {
        self.pending = desired.vips();
        self.start(kernel, desired).await;
    }

    /// VIPs a pass bound, for the next announcement.
    pub(super) fn queue(&mut self, vips: &[IpAddr]) {
        self.pending.extend(vips);
    }

    /// Nothing in flight and VIPs waiting: the retry timer's cue.
    pub(super) fn idle_with_pending(&self) -> bool {
        self.in_flight.is_none() && !self.pending.is_empty()
    }

    /// Stops the announcement in flight if it is [`Announcing::superseded`]; its VIPs are
    /// pending again (the next announcement takes those still configured and bound along).
    pub(super) fn stop_superseded(&mut self, desired: &DirectorDesired, pending: bool) {
        if let Some(a) = self.in_flight.take_if(|a| a.superseded(desired, pending)) {
            a.task.abort();
            self.pending.extend(a.vips);
        }
    }

    /// After a pass: the VIPs it bound are announced now, not at the next retry tick or after
    /// the announcement in flight; one for a VIP no longer configured stops.
    pub(super) async fn after_pass(&mut self, kernel: Option<&Kernel>, desired: &DirectorDesired) {
        let pending = !self.pending.is_empty();
        self.stop_superseded(desired, pending);
        if self.idle_with_pending() {
            self.start(kernel, desired).await;
        }
    }

    /// Starts announcing the pending VIPs that are bound on the interface, if it is up with a
    /// carrier, in a task of its own: its rounds (up to 10 s in all) run beside check results,
    /// reloads and the watchdog. Nothing starts when there is nothing to send now; VIPs that
    /// cannot be sent now stay pending and are tried again every second.
    pub(super) async fn start(&mut self, kernel: Option<&Kernel>, desired: &DirectorDesired) {
        self.in_flight = self.announcing(kernel, desired).await;
    }

    async fn announcing(
        &mut self,
        kernel: Option<&Kernel>,
        desired: &DirectorDesired,
    ) -> Option<Announcing> {
        let vips = desired.vips();
        self.pending.retain(|v| vips.contains(v));
        self.pending.sort_unstable();
        self.pending.dedup();
        let k = kernel?;
        if self.pending.is_empty() || desired.garp_count == 0 {
            self.pending.clear();
            return None;
        }
        let links = crate::kernel::link::links(&k.handle)
            .await
            .map_err(|e| tracing::debug!("listing links to announce VIPs: {e}"))
            .ok()?;
        // Only what the director serves: a VIP not bound here (someone else's whose DAD
        // failed, or removed meanwhile; a pass that binds it announces it then) is dropped.
        let addrs = crate::kernel::link::addrs(&k.handle, &links)
            .await
            .map_err(|e| tracing::debug!("listing addresses to announce VIPs: {e}"))
            .ok()?;
        self.pending = plan::announceable(&self.pending, &desired.interface, &addrs);
        if self.pending.is_empty() {
            return None;
        }
        let iface = links.into_iter().find(|l| l.name == desired.interface)?;
        let vips = std::mem::take(&mut self.pending);
        let (count, interval) = (desired.garp_count, desired.garp_interval);
        let task = tokio::spawn({
            let vips = vips.clone();
            async move { crate::director::announce(&iface, count, interval, &vips).await }
        });
        Some(Announcing {
            vips,
            interface: desired.interface.clone(),
            task,
        })
    }

    /// Resolves when the announcement in flight ends (with its VIPs and outcome); never when
    /// none is.
    pub(super) async fn end(&mut self) -> (Vec<IpAddr>, Result<u32, String>) {
        let Some(a) = &mut self.in_flight else {
            return std::future::pending().await;
        };
        let result = match (&mut a.task).await {
            Ok(result) => result,
            Err(e) => Err(format!("the announcing task ended: {e}")),
        };
        (std::mem::take(&mut a.vips), result)
    }

    /// Takes in how an announcement ended: failed VIPs are pending again, warned about once
    /// per cause (the VIPs are served meanwhile, and it is retried every second).
    pub(super) fn ended(&mut self, vips: Vec<IpAddr>, result: Result<u32, String>) {
        self.in_flight = None;
        match result {
            Ok(sent) => {
                tracing::info!(vips = ?vips, sent, "announced VIP(s)");
                self.error = None;
            }
            Err(e) => {
                if self.error.as_ref() == Some(&e) {
                    tracing::debug!("announcing VIP(s) failed again: {e}");
                } else {
                    tracing::warn!(
                        vips = ?vips,
                        "announcing VIP(s) failed, retrying every second until it succeeds: {e}"
                    );
                    self.error = Some(e);
                }
                self.pending.extend(vips);
            }
        }
    }

    /// Stops the announcement in flight (at shutdown).
    pub(super) fn abort(&mut self) {
        if let Some(a) = self.in_flight.take() {
            a.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::director::run::checks::tests::two_checked_services;

    /// An announcement in flight stops when a pass bound VIPs to announce (it is restarted
    /// with them), when it claims a VIP no longer configured, or when the interface changed.
    #[tokio::test(flavor = "current_thread")]
    async fn an_announcement_stops_when_its_vips_or_interface_change() {
        let desired = two_checked_services(2, false);
        let vip: std::net::IpAddr = [192, 0, 2, 100].into();
        let other: std::net::IpAddr = [192, 0, 2, 101].into();
        let announcing = |vips: Vec<IpAddr>, interface: &str| Announcing {
            vips,
            interface: interface.to_string(),
            task: tokio::spawn(async { Ok(0) }),
        };
        assert!(!announcing(vec![vip], "eth0").superseded(&desired, false));
        assert!(announcing(vec![vip], "eth0").superseded(&desired, true));
        assert!(announcing(vec![vip, other], "eth0").superseded(&desired, false));
        assert!(announcing(vec![vip], "eth1").superseded(&desired, false));
    }
}
