//! The IPVS generic netlink socket: family lookup, info, dumps and batched changes.
//!
//! Changes are sent many to one `sendmsg` (the kernel processes every message of a datagram
//! in order) without per-message acks; the kernel still answers each failure with an
//! NLMSG_ERROR carrying its sequence number, and a GET_INFO request at the end of the batch is
//! the barrier that says every change before it was processed. One weight change is therefore
//! one write.

use super::wire::{self, cmd, RawMessage, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP, NLM_F_REQUEST};
use super::{AddressFamily, IpvsError, IpvsOp, ObservedService};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket};

/// Largest datagram of changes sent at once.
const BATCH_BYTES: usize = 64 * 1024;
/// How much one read asks for. The kernel sizes every dump skb to the largest read the socket
/// has made (up to 32 KiB), and with `init_on_alloc` (Debian's default) it zeroes each one: a
/// 16,000-destination table dumps as 2,000 skbs, so 32 KiB reads cost 64 MiB of zeroing. Reads
/// just under 8 KiB keep each skb in the kmalloc-8k cache. A dump skb is never smaller than
/// NLMSG_GOODSIZE (at most one page, or 8 KiB on large-page systems), so the read never is
/// either; a reply that still does not fit is reported as truncated, never parsed short.
fn recv_len() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if (1..8192).contains(&page) {
        7680
    } else {
        8192
    }
}

/// Threads for dumping `services` services' destinations: one per 256 services, at most one
/// per CPU and at most 4.
fn dump_workers(services: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (services / 256).clamp(1, cpus.min(4))
}

/// What GET_INFO reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IpvsInfo {
    /// e.g. "1.2.1"
    pub version: String,
    pub conn_tab_size: u32,
}

pub struct IpvsClient {
    sock: Socket,
    family: u16,
    seq: u32,
    writes: u64,
    buf: Vec<u8>,
}

fn io(context: &str) -> impl FnOnce(std::io::Error) -> IpvsError + '_ {
    move |source| IpvsError::Io {
        context: context.to_string(),
        source,
    }
}

impl IpvsClient {
    /// Opens a generic netlink socket and resolves the "IPVS" family.
    pub fn connect() -> Result<Self, IpvsError> {
        let mut sock =
            Socket::new(NETLINK_GENERIC).map_err(io("opening a generic netlink socket"))?;
        sock.bind_auto().map_err(io("binding the netlink socket"))?;
        // Errors for failed changes echo only the header, not our whole request.
        sock.set_cap_ack(true)
            .map_err(io("setting NETLINK_CAP_ACK"))?;
        let _ = sock.set_rx_buf_sz(4 * 1024 * 1024);
        let mut client = Self {
            sock,
            family: 0,
            seq: 0,
            writes: 0,
            buf: Vec::with_capacity(recv_len()),
        };
        let seq = client.next_seq();
        client.send(&wire::get_family(seq))?;
        let reply = client.read_reply(seq)?;
        match reply {
            Reply::Message(payload) => {
                client.family = wire::parse_family_id(&payload).map_err(IpvsError::Decode)?;
                Ok(client)
            }
            Reply::Error(libc::ENOENT) => Err(IpvsError::ModuleAbsent),
            Reply::Error(errno) => Err(IpvsError::Io {
                context: "looking up the IPVS generic netlink family".into(),
                source: std::io::Error::from_raw_os_error(errno),
            }),
        }
    }

    /// Sendmsg calls that carried changes, since connect.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, bytes: &[u8]) -> Result<(), IpvsError> {
        self.sock
            .send(bytes, 0)
            .map(|_| ())
            .map_err(io("sending to the kernel"))
    }

    /// Reads one datagram into `self.buf`.
    fn recv(&mut self) -> Result<(), IpvsError> {
        self.buf.clear();
        let room = self.buf.capacity();
        let len = self
            .sock
            .recv(&mut self.buf, libc::MSG_TRUNC)
            .map_err(io("reading from the kernel"))?;
        if len > room {
            return Err(IpvsError::Io {
                context: format!("reading from the kernel: a {len}-byte reply does not fit the {room}-byte buffer"),
                source: std::io::Error::from_raw_os_error(libc::EMSGSIZE),
            });
        }
        Ok(())
    }

    /// The single reply (message or error) to a non-dump request.
    fn read_reply(&mut self, seq: u32) -> Result<Reply, IpvsError> {
        loop {
            self.recv()?;
            for m in wire::split_messages(&self.buf).map_err(IpvsError::Decode)? {
                if m.seq != seq {
                    continue;
                }
                return classify(&m);
            }
        }
    }

    /// IPVS version and connection table size.
    pub fn info(&mut self) -> Result<IpvsInfo, IpvsError> {
        let seq = self.next_seq();
        self.send(&wire::message(
            self.family,
            NLM_F_REQUEST,
            seq,
            cmd::GET_INFO,
            wire::GENL_VERSION,
            &[],
        ))?;
        match self.read_reply(seq)? {
            Reply::Message(payload) => {
                let (v, size) = wire::parse_info(&payload).map_err(IpvsError::Decode)?;
                Ok(IpvsInfo {
                    version: format!("{}.{}.{}", (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff),
                    conn_tab_size: size,
                })
            }
            Reply::Error(errno) => Err(IpvsError::Io {
                context: "IPVS GET_INFO".into(),
                source: std::io::Error::from_raw_os_error(errno),
            }),
        }
    }

    /// Runs one dump, handing each message's payload to `each`.
    fn dump_with(
        &mut self,
        command: u8,
        attrs: &[u8],
        what: &dyn std::fmt::Display,
        mut each: impl FnMut(&[u8]) -> Result<(), IpvsError>,
    ) -> Result<(), IpvsError> {
        let seq = self.next_seq();
        let flags = NLM_F_REQUEST | NLM_F_DUMP;
        self.send(&wire::message(
            self.family,
            flags,
            seq,
            command,
            wire::GENL_VERSION,
            attrs,
        ))?;
        loop {
            self.recv()?;
            for m in wire::split_messages(&self.buf).map_err(IpvsError::Decode)? {
                if m.seq != seq {
                    continue;
                }
                match m.kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno = wire::error_code(m.payload).map_err(IpvsError::Decode)?;
                        return Err(IpvsError::Io {
                            context: format!("dumping {what}"),
                            source: std::io::Error::from_raw_os_error(errno),
                        });
                    }
                    _ => each(m.payload)?,
                }
            }
        }
    }

    /// Every service in the kernel's table with its destinations and stats.
    ///
    /// The kernel dumps destinations one service per request, so a table of thousands of
    /// services is thousands of round trips; large tables are split over a few threads, each
    /// with its own socket (the threads inherit this thread's network namespace).
    pub fn dump(&mut self) -> Result<Vec<ObservedService>, IpvsError> {
        self.dump_where(|_| true)
    }

    /// `dump`, of only the services `keep` accepts (the others are not in the result).
    pub fn dump_where(
        &mut self,
        keep: impl Fn(&super::ServiceKey) -> bool,
    ) -> Result<Vec<ObservedService>, IpvsError> {
        let mut services = Vec::new();
        self.dump_with(cmd::GET_SERVICE, &[], &"IPVS services", |payload| {
            let service = wire::parse_service(payload).map_err(IpvsError::Decode)?;
            if keep(&service.service.key) {
                services.push(service);
            }
            Ok(())
        })?;
        let workers = dump_workers(services.len());
        if workers <= 1 {
            self.dump_dests(&mut services)?;
            return Ok(services);
        }
        let per_worker = services.len().div_ceil(workers);
        let mut parts = services.chunks_mut(per_worker);
        let mine = parts.next().unwrap_or_default();
        std::thread::scope(|scope| {
            let others: Vec<_> = parts
                .map(|part| scope.spawn(move || IpvsClient::connect()?.dump_dests(part)))
                .collect();
            let mut result = self.dump_dests(mine);
            for handle in others {
                let joined = handle.join().unwrap_or(Err(IpvsError::DumpPanicked));
                result = result.and(joined);
            }
            result
        })?;
        Ok(services)
    }

    /// Fills in the destinations of each service.
    fn dump_dests(&mut self, services: &mut [ObservedService]) -> Result<(), IpvsError> {
        for s in services {
            let key = wire::service_key_attrs(&s.service.key);
            let af: AddressFamily = s.service.key.family();
            let what = DestsOf(&s.service.key);
            let dests = &mut s.destinations;
            self.dump_with(cmd::GET_DEST, &key, &what, |payload| {
                dests.push(wire::parse_dest(payload, af).map_err(IpvsError::Decode)?);
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Applies the ops in order, many per write. Returns the first failure (naming the op);
    /// ops after a failed one in the same batch may have been applied — callers re-dump and
    /// roll back.
    pub fn apply(&mut self, ops: &[IpvsOp]) -> Result<(), IpvsError> {
        let mut start = 0;
        while start < ops.len() {
            let first_seq = self.seq.wrapping_add(1);
            let mut batch = Vec::with_capacity(BATCH_BYTES);
            let mut end = start;
            while end < ops.len() && batch.len() < BATCH_BYTES {
                let (command, attrs) = wire::op_payload(&ops[end]);
                let seq = self.next_seq();
                batch.extend(wire::message(
                    self.family,
                    NLM_F_REQUEST,
                    seq,
                    command,
                    wire::GENL_VERSION,
                    &attrs,
                ));
                end += 1;
            }
            let barrier = self.next_seq();
            batch.extend(wire::message(
                self.family,
                NLM_F_REQUEST,
                barrier,
                cmd::GET_INFO,
                wire::GENL_VERSION,
                &[],
            ));
            self.send(&batch)?;
            self.writes += 1;
            let failure = self.collect_failures(first_seq, barrier)?;
            if let Some((index, errno)) = failure {
                let op = &ops[start + index];
                return Err(IpvsError::Op {
                    op: op.to_string(),
                    source: std::io::Error::from_raw_os_error(errno),
                    hint: IpvsError::hint_for(errno, op),
                });
            }
            start = end;
        }
        Ok(())
    }

    /// Reads until the barrier's reply; the first failed op (index in batch, errno), if any.
    fn collect_failures(
        &mut self,
        first_seq: u32,
        barrier: u32,
    ) -> Result<Option<(usize, i32)>, IpvsError> {
        let mut first: Option<(usize, i32)> = None;
        loop {
            self.recv()?;
            for m in wire::split_messages(&self.buf).map_err(IpvsError::Decode)? {
                if m.seq == barrier {
                    return Ok(first);
                }
                if m.kind != NLMSG_ERROR {
                    continue;
                }
                let errno = wire::error_code(m.payload).map_err(IpvsError::Decode)?;
                let index = m.seq.wrapping_sub(first_seq) as usize;
                if errno != 0 && first.is_none() {
                    first = Some((index, errno));
                }
            }
        }
    }
}

/// Names a destination dump in an error, formatted only if one happens.
struct DestsOf<'a>(&'a super::ServiceKey);

impl std::fmt::Display for DestsOf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the real servers of {}", self.0)
    }
}

enum Reply {
    Message(Vec<u8>),
    Error(i32),
}

fn classify(m: &RawMessage) -> Result<Reply, IpvsError> {
    if m.kind == NLMSG_ERROR {
        let errno = wire::error_code(m.payload).map_err(IpvsError::Decode)?;
        return Ok(Reply::Error(errno));
    }
    Ok(Reply::Message(m.payload.to_vec()))
}
