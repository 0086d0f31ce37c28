//! rtnetlink multicast events for links and addresses: the trigger for `run` to reconcile.
//! Events only say *that* something changed; the run loop observes everything again, so a
//! lost event (socket overrun, ENOBUFS) costs nothing but a full resync.

use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::SocketAddr;
use rtnetlink::MulticastGroup;

/// What the kernel reported, coarse: enough for a debug line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Address,
    Link,
    /// The socket overflowed and events were lost: resync everything.
    Overrun,
    Other,
}

/// A subscription to the link and IPv4/IPv6 address groups.
pub struct Events {
    rx: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
}

impl Events {
    /// Subscribes on the current tokio runtime.
    pub fn subscribe() -> Result<Events, std::io::Error> {
        let groups = [
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
        ];
        let (conn, _handle, rx) = rtnetlink::new_multicast_connection(&groups)?;
        tokio::spawn(conn);
        Ok(Events { rx })
    }

    /// The next event; `None` when the subscription ended (the socket failed).
    pub async fn next(&mut self) -> Option<Event> {
        let (msg, _) = self.rx.next().await?;
        Some(match msg.payload {
            NetlinkPayload::Overrun(_) => Event::Overrun,
            NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewAddress(_) | RouteNetlinkMessage::DelAddress(_),
            ) => Event::Address,
            NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewLink(_) | RouteNetlinkMessage::DelLink(_),
            ) => Event::Link,
            _ => Event::Other,
        })
    }
}
