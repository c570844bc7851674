//! quinn's UDP socket, emulated on a mesh datagram socket.
//!
//! quinn sends and receives through [`quinn::AsyncUdpSocket`]; here one QUIC UDP datagram
//! is the payload of one mesh DATA message. QUIC addresses peers by `SocketAddr`, so every
//! remote `(node, service)` gets a synthetic IPv6 address from an [`AddressTable`] that
//! maps both ways.
//!
//! Data flow (all queues bounded):
//!
//! ```text
//!  quinn --try_send--> [out queue] --pump--> DatagramSocket::send_to --> mesh
//!  quinn <-poll_recv-- [in queue]  <-pump--- DatagramSocket::recv    <-- mesh
//! ```
//!
//! One pump task owns the [`DatagramSocket`]. A full out queue makes `try_send` report
//! `WouldBlock`, which parks the QUIC connection until there is room (back-pressure from
//! the mesh to QUIC); a full in queue drops the datagram, as a full UDP receive buffer
//! would, and QUIC recovers from the loss. Unreachable notices and the end of the mesh are
//! broadcast as [`PeerEvent`]s to whoever watches a connection.
//!
//! This is the only code that depends on quinn's socket trait (which changes in quinn 0.12).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::{broadcast, mpsc};

use super::transport::DatagramSocket;
use crate::mesh::{Incoming, MeshError};

/// Datagrams waiting between quinn and the pump, per direction.
const QUEUE_DEPTH: usize = 128;
/// Capacity of the peer-event broadcast; a lagging watcher only misses early warnings.
const EVENT_DEPTH: usize = 32;
/// Above this many peers, stale entries are swept from the address table.
const TABLE_SWEEP_AT: usize = 1024;
/// Hard cap on peers per socket; datagrams from further new peers are dropped.
const TABLE_MAX: usize = 16384;
/// The problem text of the unreachable notice that ends a connection.
pub(crate) const PROBLEM_SERVICE_UNKNOWN: &str = "service unknown";

/// Something the pump learnt about a peer (or about the whole socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerEvent {
    /// A node reported that the peer's service does not exist (the peer went away).
    ServiceUnknown(SocketAddr),
    /// The mesh has no route to the peer's node.
    NoRoute(SocketAddr),
    /// The mesh socket is gone (node shutting down).
    Shutdown,
}

/// A `(node, service)` pair, cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerName {
    /// Node ID.
    pub node: Arc<str>,
    /// Service name.
    pub service: Arc<str>,
}

struct Entry {
    name: PeerName,
    last_used: Instant,
    pinned: bool,
}

/// Bidirectional map between `(node, service)` and synthetic IPv6 socket addresses.
///
/// Addresses are never reused: a peer forgotten after `evict_after` of silence (when its
/// QUIC connection has long timed out) gets a new address if it comes back.
pub(crate) struct AddressTable {
    by_name: HashMap<Arc<str>, HashMap<Arc<str>, SocketAddr>>,
    by_addr: HashMap<SocketAddr, Entry>,
    next: u128,
    evict_after: Duration,
    last_sweep: Instant,
}

/// `fd` (unique local) + "rcpt" in the first bytes of every synthetic address.
const ADDR_PREFIX: u128 = 0xfd72_6370_7400_0000_0000_0000_0000_0000;
/// Port used for every synthetic address.
const ADDR_PORT: u16 = 1;

impl AddressTable {
    /// An empty table that forgets peers silent for longer than `evict_after`.
    pub(crate) fn new(evict_after: Duration) -> Self {
        Self {
            by_name: HashMap::new(),
            by_addr: HashMap::new(),
            next: 1,
            evict_after,
            last_sweep: Instant::now(),
        }
    }

    /// The local address a socket reports (never used as a peer address).
    pub(crate) fn local_addr() -> SocketAddr {
        SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ADDR_PREFIX),
            ADDR_PORT,
            0,
            0,
        ))
    }

    /// The address of `(node, service)`, allocating one if needed; `None` if the table is full.
    pub(crate) fn address_of(
        &mut self,
        node: &str,
        service: &str,
        pinned: bool,
    ) -> Option<SocketAddr> {
        let now = Instant::now();
        if let Some(addr) = self.by_name.get(node).and_then(|m| m.get(service)).copied() {
            if let Some(e) = self.by_addr.get_mut(&addr) {
                e.last_used = now;
                e.pinned |= pinned;
            }
            return Some(addr);
        }
        self.maybe_sweep(now);
        if self.by_addr.len() >= TABLE_MAX {
            return None;
        }
        let addr = SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ADDR_PREFIX | (self.next & ((1u128 << 88) - 1))),
            ADDR_PORT,
            0,
            0,
        ));
        self.next += 1;
        let name = PeerName {
            node: Arc::from(node),
            service: Arc::from(service),
        };
        self.by_name
            .entry(name.node.clone())
            .or_default()
            .insert(name.service.clone(), addr);
        self.by_addr.insert(
            addr,
            Entry {
                name,
                last_used: now,
                pinned,
            },
        );
        Some(addr)
    }

    /// The address of `(node, service)` if known.
    pub(crate) fn lookup(&self, node: &str, service: &str) -> Option<SocketAddr> {
        self.by_name.get(node).and_then(|m| m.get(service)).copied()
    }

    /// The peer behind `addr`, marking it as used.
    pub(crate) fn resolve(&mut self, addr: SocketAddr) -> Option<PeerName> {
        let e = self.by_addr.get_mut(&addr)?;
        e.last_used = Instant::now();
        Some(e.name.clone())
    }

    /// The peer behind `addr`, without touching it.
    pub(crate) fn name_of(&self, addr: SocketAddr) -> Option<PeerName> {
        self.by_addr.get(&addr).map(|e| e.name.clone())
    }

    /// Number of known peers.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_addr.len()
    }

    fn maybe_sweep(&mut self, now: Instant) {
        if self.by_addr.len() < TABLE_SWEEP_AT
            || now.duration_since(self.last_sweep) < Duration::from_secs(1)
        {
            return;
        }
        self.last_sweep = now;
        let evict_after = self.evict_after;
        let by_name = &mut self.by_name;
        self.by_addr.retain(|_, e| {
            let keep = e.pinned || now.duration_since(e.last_used) < evict_after;
            if !keep {
                if let Some(m) = by_name.get_mut(&e.name.node) {
                    m.remove(&e.name.service);
                    if m.is_empty() {
                        by_name.remove(&e.name.node);
                    }
                }
            }
            keep
        });
    }
}

/// Locks a mutex, ignoring poisoning (the protected data stays consistent: every
/// critical section is a few map operations that cannot panic half-way).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A datagram on its way out.
struct Outgoing {
    dest: SocketAddr,
    data: Bytes,
}

/// A datagram on its way in.
struct Received {
    from: SocketAddr,
    data: Bytes,
}

/// The `AsyncUdpSocket` quinn drives.
pub(crate) struct MeshUdpSocket {
    out_tx: mpsc::Sender<Outgoing>,
    in_rx: Mutex<mpsc::Receiver<Received>>,
}

impl fmt::Debug for MeshUdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshUdpSocket").finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for MeshUdpSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(SendPoller {
            tx: self.out_tx.clone(),
            wait: Mutex::new(None),
        })
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let out = Outgoing {
            dest: transmit.destination,
            data: Bytes::copy_from_slice(transmit.contents),
        };
        match self.out_tx.try_send(out) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(io::ErrorKind::WouldBlock.into()),
            // The mesh socket is gone: datagrams are lost, as on a dead network. The
            // connection watchers close the connections.
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut rx = lock(&self.in_rx);
        let mut n = 0;
        let slots = bufs.len().min(meta.len());
        while n < slots {
            let item = if n == 0 {
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(item)) => item,
                    // Pump gone: nothing will ever arrive again.
                    Poll::Ready(None) | Poll::Pending => return Poll::Pending,
                }
            } else {
                match rx.try_recv() {
                    Ok(item) => item,
                    Err(_) => break,
                }
            };
            let Some(buf) = bufs.get_mut(n) else { break };
            if item.data.len() > buf.len() {
                // Larger than quinn's receive buffer: undecodable, drop it.
                continue;
            }
            buf[..item.data.len()].copy_from_slice(&item.data);
            if let Some(m) = meta.get_mut(n) {
                *m = RecvMeta {
                    addr: item.from,
                    len: item.data.len(),
                    stride: item.data.len(),
                    ecn: None,
                    dst_ip: None,
                };
            }
            n += 1;
        }
        if n == 0 {
            // Only oversized datagrams were queued; ask to be polled again.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(AddressTable::local_addr())
    }

    fn may_fragment(&self) -> bool {
        // The mesh carries each datagram whole (or not at all): PMTU discovery is safe.
        false
    }
}

type WaitRoom = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Wakes one QUIC connection when the out queue has room again.
struct SendPoller {
    tx: mpsc::Sender<Outgoing>,
    // Behind a mutex only to be `Sync`; accessed through `get_mut`, never locked.
    wait: Mutex<Option<WaitRoom>>,
}

impl fmt::Debug for SendPoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendPoller").finish_non_exhaustive()
    }
}

impl UdpPoller for SendPoller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let wait = this.wait.get_mut().unwrap_or_else(PoisonError::into_inner);
        if wait.is_none() {
            if this.tx.capacity() > 0 || this.tx.is_closed() {
                return Poll::Ready(Ok(()));
            }
            let tx = this.tx.clone();
            *wait = Some(Box::pin(async move {
                // The permit is released right away: this only waits for room.
                let _ = tx.reserve_owned().await;
            }));
        }
        let Some(fut) = wait.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        match fut.as_mut().poll(cx) {
            Poll::Ready(()) => {
                *wait = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A mesh socket wired up for quinn: the socket itself, its address table and the
/// peer events of its pump.
pub(crate) struct SocketParts {
    /// The socket to hand to `quinn::Endpoint::new_with_abstract_socket`.
    pub socket: Arc<MeshUdpSocket>,
    /// Address table shared with the pump.
    pub table: Arc<Mutex<AddressTable>>,
    /// Source of peer events (subscribe before starting anything that needs them).
    pub events: broadcast::Sender<PeerEvent>,
}

/// Wraps `sock` for quinn and spawns its pump on the current runtime. `pinned` peers are
/// entered in the address table up front and never evicted (a dialer's target).
pub(crate) fn spawn_socket<S: DatagramSocket>(
    sock: S,
    evict_after: Duration,
    pinned: Option<(&str, &str)>,
) -> (SocketParts, Option<SocketAddr>) {
    let (out_tx, out_rx) = mpsc::channel(QUEUE_DEPTH);
    let (in_tx, in_rx) = mpsc::channel(QUEUE_DEPTH);
    let (events, _) = broadcast::channel(EVENT_DEPTH);
    let mut table = AddressTable::new(evict_after);
    let pinned_addr = pinned.and_then(|(node, service)| table.address_of(node, service, true));
    let table = Arc::new(Mutex::new(table));
    tokio::spawn(pump(sock, out_rx, in_tx, table.clone(), events.clone()));
    let socket = Arc::new(MeshUdpSocket {
        out_tx,
        in_rx: Mutex::new(in_rx),
    });
    (
        SocketParts {
            socket,
            table,
            events,
        },
        pinned_addr,
    )
}

enum Step {
    Send(Outgoing),
    Recv(Result<Incoming, MeshError>),
    Closed,
}

/// Moves datagrams between quinn's queues and the mesh socket until either side ends.
async fn pump<S: DatagramSocket>(
    mut sock: S,
    mut out_rx: mpsc::Receiver<Outgoing>,
    in_tx: mpsc::Sender<Received>,
    table: Arc<Mutex<AddressTable>>,
    events: broadcast::Sender<PeerEvent>,
) {
    loop {
        let step = tokio::select! {
            out = out_rx.recv() => out.map_or(Step::Closed, Step::Send),
            inc = sock.recv() => Step::Recv(inc),
        };
        match step {
            Step::Closed => break,
            Step::Send(out) => {
                let Some(peer) = lock(&table).resolve(out.dest) else {
                    tracing::debug!(dest = %out.dest, "stream datagram to a forgotten peer dropped");
                    continue;
                };
                match sock.send_to(&peer.node, &peer.service, &out.data).await {
                    Ok(()) => {}
                    Err(MeshError::NoRoute) => {
                        let _ = events.send(PeerEvent::NoRoute(out.dest));
                    }
                    Err(MeshError::Shutdown) => {
                        let _ = events.send(PeerEvent::Shutdown);
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(node = %peer.node, service = %peer.service, error = %e, "stream datagram not sent");
                    }
                }
            }
            Step::Recv(Ok(Incoming::Data {
                from_node,
                from_service,
                data,
            })) => {
                let Some(from) = lock(&table).address_of(&from_node, &from_service, false) else {
                    tracing::debug!(node = %from_node, "stream peer table full, datagram dropped");
                    continue;
                };
                match in_tx.try_send(Received { from, data }) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
            Step::Recv(Ok(Incoming::Unreachable {
                reported_by,
                to_node,
                to_service,
                problem,
            })) => {
                tracing::debug!(%reported_by, %to_node, %to_service, %problem, "unreachable notice for stream socket");
                if problem == PROBLEM_SERVICE_UNKNOWN {
                    if let Some(addr) = lock(&table).lookup(&to_node, &to_service) {
                        let _ = events.send(PeerEvent::ServiceUnknown(addr));
                    }
                }
            }
            Step::Recv(Err(e)) => {
                tracing::debug!(error = %e, "stream socket closed by the mesh");
                let _ = events.send(PeerEvent::Shutdown);
                break;
            }
        }
    }
}
