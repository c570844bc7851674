//! The mesh driver: one task owns the sans-IO state of `receptor-proto` and talks to
//! backend sessions and local services through bounded channels.
//!
//! The public surface below is the contract the rest of the daemon codes against.
//!
//! Architecture:
//! * `actor` — the node task, sole owner of [`receptor_proto::node::NodeState`]
//!   (sessions, link-state database, routing table, service ads). It receives
//!   control messages (ROUTE, SVCAD, REJECT) and API commands over a bounded queue
//!   and publishes forwarding tables for the data path.
//! * `session` — one task pair per backend connection: the reader splits
//!   frames/datagrams, runs DATA through the data path itself and passes the rest to
//!   the node task; the writer drains two bounded queues (control first) and writes
//!   batches.
//! * `datapath` — delivery, ping/unreachable responders and forwarding with
//!   HopsToLive, reading the published tables through a version check; forwarding
//!   never touches JSON and reuses the received buffer. The firewall hook is here.
//! * `fdio` — file descriptors from backends as tokio I/O.
//! * `tls_session` — TLS around byte-stream backend connections, and holding a
//!   peer to the node ID its certificate names ([`PeerIdentity`]).
//!
//! Bounds against abusive peers: the routing state machine's [`MeshLimits`] (known
//! nodes, links, update rate, route computations, expiry); per session, at most
//! `CONTROL_IN_FLIGHT_KIB` (256) KiB of control messages waiting for the node task
//! (so one peer cannot fill its queue and delay everyone's `status` or route
//! updates); read buffers that start small and grow only for peers that send large
//! frames; and a [`HandshakeSlot`] a backend can hold until the session is established,
//! to bound connections that never complete the handshake.

mod actor;
mod datapath;
mod fdio;
mod session;
mod snapshot;
mod tls_session;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use receptor_proto::data::{ServiceName, MAX_FORWARDING_HOPS, PING_SERVICE};
use receptor_proto::svcad::ServiceAdvertisement;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use actor::{Actor, Command, COMMAND_QUEUE};
use datapath::{DataPath, Delivery};
pub use datapath::{Firewall, FirewallMessage, FirewallVerdict};
use fdio::{DatagramSocket, FdStream};
pub use receptor_proto::limits::MeshLimits;
use session::{DatagramReader, DatagramWriter, StreamReader, StreamWriter};
pub use tls_session::{PeerTls, SessionTls, TlsConnection, TLS_HANDSHAKE_TIMEOUT};

/// How long a ping waits for its answer.
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Datagrams a local socket may have waiting before senders have to wait.
const SOCKET_QUEUE: usize = 1024;

/// How often [`Mesh::wait_routes_back`] asks the node task.
const ROUTES_BACK_POLL: Duration = Duration::from_millis(10);

/// Errors surfaced by mesh operations.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// No route is known to the destination node.
    #[error("no route to node")]
    NoRoute,
    /// The service name is longer than 8 bytes.
    #[error("service name too long")]
    ServiceNameTooLong,
    /// A local listener already uses that service name.
    #[error("service {0} is already listening")]
    ServiceInUse(String),
    /// The node is shutting down.
    #[error("netceptor shutdown")]
    Shutdown,
    /// The TLS handshake of a backend connection failed or timed out.
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(String),
    /// The peer announced a node ID its credentials do not vouch for.
    #[error("{0}")]
    PeerRefused(String),
    /// Any other failure, with its message.
    #[error("{0}")]
    Other(String),
}

/// Options a node is started with.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    /// This node's ID.
    pub node_id: String,
    /// Sessions silent for longer than this are dropped (at least 21 s).
    pub max_idle: Duration,
}

/// How a backend connection delimits messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A byte stream where every message is preceded by its u16 little-endian length.
    Len16Le,
    /// A message-preserving socket (UDP, SOCK_SEQPACKET): one message per datagram.
    Datagram,
}

/// Per-backend session parameters the core enforces.
#[derive(Debug, Clone, Default)]
pub struct SessionParams {
    /// Link cost of this backend (default 1.0).
    pub cost: f64,
    /// Listener-only: per-peer cost overrides.
    pub node_cost: BTreeMap<String, f64>,
    /// If set, only these node IDs may use this backend.
    pub allowed_peers: Option<Vec<String>>,
}

/// A place among a backend's connections that have not completed the mesh handshake
/// (a semaphore permit), given back once the session is established or ends.
#[derive(Clone, Debug)]
pub struct HandshakeSlot(Arc<std::sync::Mutex<Option<OwnedSemaphorePermit>>>);

impl HandshakeSlot {
    /// A slot holding `permit`.
    pub fn new(permit: OwnedSemaphorePermit) -> HandshakeSlot {
        HandshakeSlot(Arc::new(std::sync::Mutex::new(Some(permit))))
    }

    /// Gives the place back (idempotent).
    pub(crate) fn release(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// Decides whether a session's peer may use the node ID it announces (the
/// `ForwardingNode` of its ROUTE messages before the session is established), e.g.
/// from the certificate the peer presented. `Err` carries the reason; the session is
/// then dropped before the node registers the peer.
#[derive(Clone)]
pub struct PeerIdentity(Arc<IdentityCheck>);

/// The function behind a [`PeerIdentity`].
type IdentityCheck = dyn Fn(&str) -> Result<(), IdentityRefused> + Send + Sync;

/// Why a peer may not use the node ID it announced.
#[derive(Debug, thiserror::Error)]
#[error("it announced node ID {announced} but its certificate does not name it ({reason})")]
pub struct IdentityRefused {
    /// The node ID the peer announced.
    pub announced: String,
    /// What the check of its certificate found.
    pub reason: crate::tls::TlsError,
}

impl PeerIdentity {
    /// A check from a function of the announced node ID.
    pub fn new(
        check: impl Fn(&str) -> Result<(), IdentityRefused> + Send + Sync + 'static,
    ) -> Self {
        PeerIdentity(Arc::new(check))
    }

    /// Runs the check for `announced`.
    pub fn check(&self, announced: &str) -> Result<(), IdentityRefused> {
        (self.0)(announced)
    }
}

impl std::fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerIdentity(..)")
    }
}

/// A direct neighbour as shown by `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionInfo {
    /// The neighbour's node ID.
    pub node_id: String,
    /// The agreed link cost.
    pub cost: f64,
}

/// A snapshot of the mesh state for the `status` command.
#[derive(Debug, Clone, Default)]
pub struct MeshStatus {
    /// Direct neighbours.
    pub connections: Vec<ConnectionInfo>,
    /// Destination node → next-hop node.
    pub routing_table: BTreeMap<String, String>,
    /// Node → {peer → cost} for every known node.
    pub known_connection_costs: BTreeMap<String, BTreeMap<String, f64>>,
    /// Every service advertisement known, own ones with `time` = now.
    pub advertisements: Vec<ServiceAdvertisement>,
}

/// The answer to one ping.
#[derive(Debug, Clone)]
pub struct PingReply {
    /// The node that answered (the target, or the node that reported a problem).
    pub from: String,
    /// Round-trip time.
    pub rtt: Duration,
    /// `None` on success, else the problem (`message expired`, `timeout`, ...).
    pub error: Option<String>,
}

/// A datagram or an unreachable notice received on a [`PacketConn`].
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A DATA message addressed to this socket.
    Data {
        /// Sending node.
        from_node: String,
        /// Sending service.
        from_service: String,
        /// Payload.
        data: Bytes,
    },
    /// Some node reported that a message sent from this socket could not be delivered.
    Unreachable {
        /// The node that reported the problem.
        reported_by: String,
        /// Destination node of the undeliverable message.
        to_node: String,
        /// Destination service of the undeliverable message.
        to_service: String,
        /// `service unknown`, `message expired` or `blocked by firewall`.
        problem: String,
    },
}

/// Handle to a running mesh node; cheap to clone, every clone talks to the same node.
///
/// CONTRACT (implemented by the mesh driver): all methods are cancel-safe and never
/// block the caller on network I/O except where they await a reply.
#[derive(Clone)]
pub struct Mesh {
    inner: Arc<MeshInner>,
}

/// What every handle, session and socket shares.
pub(crate) struct MeshInner {
    node_id: String,
    commands: mpsc::Sender<Command>,
    data: Arc<DataPath>,
    /// Origin of the sessions' activity timestamps.
    base: Instant,
    shut_down: CancellationToken,
}

impl MeshInner {
    async fn request<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.ok()?;
        rx.await.ok()
    }
}

impl Mesh {
    /// Starts the node's driver task on the current tokio runtime (panics when
    /// called outside one), with the default [`MeshLimits`].
    pub fn start(opts: MeshOptions) -> Mesh {
        Mesh::start_with_limits(opts, MeshLimits::default())
    }

    /// [`Mesh::start`] with the given limits.
    pub fn start_with_limits(opts: MeshOptions, limits: MeshLimits) -> Mesh {
        let base = Instant::now();
        let data = Arc::new(DataPath::new(&opts.node_id));
        let shut_down = CancellationToken::new();
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let actor = Actor::new(&opts, limits, data.clone(), base, shut_down.clone());
        tokio::spawn(actor.run(rx));
        Mesh {
            inner: Arc::new(MeshInner {
                node_id: opts.node_id,
                commands: tx,
                data,
                base,
                shut_down,
            }),
        }
    }

    /// This node's ID.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Hands the mesh an established backend connection; the returned future ends
    /// when the session ends (EOF, reject, idle timeout, shutdown), with the reason.
    /// `Ok(())` means the peer closed the connection.
    pub async fn run_session(
        &self,
        io: OwnedFd,
        framing: Framing,
        params: SessionParams,
    ) -> Result<(), MeshError> {
        self.run_session_with_identity(io, framing, params, None)
            .await
    }

    /// [`Mesh::run_session`] whose peer must pass `identity` (when given) with the
    /// node ID it announces, as in [`Mesh::run_stream_session_with_identity`]: for a
    /// connection on which a backend plugin ran TLS itself.
    pub async fn run_session_with_identity(
        &self,
        io: OwnedFd,
        framing: Framing,
        params: SessionParams,
        identity: Option<PeerIdentity>,
    ) -> Result<(), MeshError> {
        self.run_backend_session(io, framing, params, identity, None)
            .await
    }

    /// [`Mesh::run_session_with_identity`] holding `handshake` until the session is
    /// established (or ends).
    pub async fn run_backend_session(
        &self,
        io: OwnedFd,
        framing: Framing,
        params: SessionParams,
        identity: Option<PeerIdentity>,
        handshake: Option<HandshakeSlot>,
    ) -> Result<(), MeshError> {
        let inner = self.inner.clone();
        let held = handshake;
        match framing {
            Framing::Len16Le => match FdStream::new(io) {
                Ok(FdStream::Tcp(s)) => {
                    let (r, w) = s.into_split();
                    let (r, w) = (StreamReader::new(r), StreamWriter::new(w));
                    session::run(inner, r, w, params, identity, held).await
                }
                Ok(FdStream::Unix(s)) => {
                    let (r, w) = s.into_split();
                    let (r, w) = (StreamReader::new(r), StreamWriter::new(w));
                    session::run(inner, r, w, params, identity, held).await
                }
                Err(e) => Err(MeshError::Other(format!("unusable connection: {e}"))),
            },
            Framing::Datagram => match DatagramSocket::new(io) {
                Ok(sock) => {
                    let (r, w) = (DatagramReader::new(sock.clone()), DatagramWriter::new(sock));
                    session::run(inner, r, w, params, identity, held).await
                }
                Err(e) => Err(MeshError::Other(format!("unusable connection: {e}"))),
            },
        }
    }

    /// Runs a session over any byte stream (e.g. a TLS stream) with u16-LE framing;
    /// ends like [`Mesh::run_session`].
    pub async fn run_stream_session<S>(&self, io: S, params: SessionParams) -> Result<(), MeshError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        self.run_stream_session_with_identity(io, params, None)
            .await
    }

    /// [`Mesh::run_stream_session`] whose peer must pass `identity` (when given)
    /// with the node ID it announces before the session is established; a refusal
    /// ends the session with [`MeshError::PeerRefused`].
    pub async fn run_stream_session_with_identity<S>(
        &self,
        io: S,
        params: SessionParams,
        identity: Option<PeerIdentity>,
    ) -> Result<(), MeshError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        self.run_stream_session_held(io, params, identity, None)
            .await
    }

    /// [`Mesh::run_stream_session_with_identity`] holding `handshake` until the
    /// session is established (or ends).
    pub(crate) async fn run_stream_session_held<S>(
        &self,
        io: S,
        params: SessionParams,
        identity: Option<PeerIdentity>,
        handshake: Option<HandshakeSlot>,
    ) -> Result<(), MeshError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (r, w) = tokio::io::split(io);
        let (r, w) = (StreamReader::new(r), StreamWriter::new(w));
        session::run(self.inner.clone(), r, w, params, identity, handshake).await
    }

    /// Whether `node` has shown that it can route back to this node (see
    /// [`receptor_proto::node::NodeState::routes_back`]); also true when this node has no
    /// route to `node` (nothing to wait for then).
    pub async fn routes_back(&self, node: &str) -> bool {
        self.inner
            .request(|reply| Command::RoutesBack {
                node: node.to_owned(),
                reply,
            })
            .await
            .unwrap_or(false)
    }

    /// Waits until `node` can route back to this node (or this node has no route to
    /// it), at most `limit`; false if the time ran out.
    /// A new neighbour learns its route to us only when it recomputes its routes (Go
    /// 100 ms after the link came up, ours at once, both followed by its own update listing
    /// us), so an answer it sends before then is lost.
    pub async fn wait_routes_back(&self, node: &str, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.routes_back(node).await {
                return true;
            }
            if tokio::time::Instant::now() >= deadline || self.inner.shut_down.is_cancelled() {
                return false;
            }
            tokio::time::sleep(ROUTES_BACK_POLL).await;
        }
    }

    /// Snapshot for `status`.
    pub async fn status(&self) -> MeshStatus {
        self.inner
            .request(|reply| Command::Status { reply })
            .await
            .unwrap_or_default()
    }

    /// The mesh's figures: links and their traffic, routing, datagrams.
    pub async fn metrics(&self) -> crate::metrics::MeshSnapshot {
        self.inner
            .request(|reply| Command::Metrics { reply })
            .await
            .unwrap_or_default()
    }

    /// Sends one ping to `target` (`localhost` = self) with the given hops-to-live
    /// (30 for a ping, 0..=30 for traceroute probes) and waits up to 10 s.
    pub async fn ping(&self, target: &str, hops_to_live: u8) -> PingReply {
        let start = Instant::now();
        let failed = |from: &str, e: String| PingReply {
            from: from.to_owned(),
            rtt: start.elapsed(),
            error: Some(e),
        };
        let mut pc = match self.listen(None, None).await {
            Ok(pc) => pc,
            Err(e) => return failed(self.node_id(), e.to_string()),
        };
        if let Err(e) = pc
            .send_to_hops(target, PING_SERVICE, &[], hops_to_live)
            .await
        {
            return failed(self.node_id(), e.to_string());
        }
        match tokio::time::timeout(PING_TIMEOUT, pc.recv()).await {
            Ok(Ok(Incoming::Data {
                from_node,
                from_service,
                ..
            })) => PingReply {
                // Like Go: the reply's address, without the `:ping` suffix.
                from: if from_service == PING_SERVICE {
                    from_node
                } else {
                    format!("{from_node}:{from_service}")
                },
                rtt: start.elapsed(),
                error: None,
            },
            Ok(Ok(Incoming::Unreachable {
                reported_by,
                problem,
                ..
            })) => failed(&reported_by, problem),
            Ok(Err(e)) => failed("", e.to_string()),
            Err(_) => failed("", "timeout".to_owned()),
        }
    }

    /// Opens a datagram socket on `service` (`None` = a fresh ephemeral name).
    /// With `advertise`, the service is advertised (ConnType, tags, work commands).
    pub async fn listen(
        &self,
        service: Option<&str>,
        advertise: Option<ServiceAdvertisement>,
    ) -> Result<PacketConn, MeshError> {
        if let Some(s) = service {
            if s.len() > receptor_proto::data::MAX_SERVICE_LEN {
                return Err(MeshError::ServiceNameTooLong);
            }
        }
        let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
        let (service, registration) = self
            .inner
            .request(|reply| Command::Listen {
                service: service.map(str::to_owned),
                advertise,
                socket: tx,
                reply,
            })
            .await
            .ok_or(MeshError::Shutdown)??;
        let name = ServiceName::new(&service).map_err(|_| MeshError::ServiceNameTooLong)?;
        Ok(PacketConn {
            service,
            name,
            registration,
            rx,
            inner: self.inner.clone(),
            hops_to_live: MAX_FORWARDING_HOPS,
        })
    }

    /// Replaces the work commands advertised with the `control` service ads.
    pub async fn set_work_commands(&self, cmds: Vec<receptor_proto::svcad::WorkCommand>) {
        let _ = self
            .inner
            .commands
            .send(Command::SetWorkCommands(cmds))
            .await;
    }

    /// Installs (or, with `None`, removes) the firewall consulted for every DATA
    /// message this node handles.
    pub async fn set_firewall(&self, firewall: Option<Arc<dyn Firewall>>) {
        let _ = self
            .inner
            .commands
            .send(Command::SetFirewall(firewall))
            .await;
    }

    /// Stops the node: closes sessions and local sockets.
    pub async fn shutdown(&self) {
        let _ = self
            .inner
            .request(|reply| Command::Shutdown { reply })
            .await;
    }

    /// Resolves once the node has shut down, through [`Mesh::shutdown`] or because
    /// another node runs with the same node ID (the daemon should then exit).
    pub async fn closed(&self) {
        self.inner.shut_down.cancelled().await;
    }
}

/// A datagram socket bound to one local service name.
/// Dropping it unregisters the service (and withdraws its advertisement).
pub struct PacketConn {
    service: String,
    name: ServiceName,
    registration: u64,
    rx: mpsc::Receiver<Delivery>,
    inner: Arc<MeshInner>,
    hops_to_live: u8,
}

impl PacketConn {
    /// The local service name (ephemeral sockets get 8 random characters).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Sends `data` to `(node, service)` with hops-to-live 30; waits for queue room.
    pub async fn send_to(&self, node: &str, service: &str, data: &[u8]) -> Result<(), MeshError> {
        self.send_to_hops(node, service, data, self.hops_to_live)
            .await
    }

    /// Sends `data` to `(node, service)` with the given hops-to-live.
    pub async fn send_to_hops(
        &self,
        node: &str,
        service: &str,
        data: &[u8],
        hops_to_live: u8,
    ) -> Result<(), MeshError> {
        let dp = &self.inner.data;
        let mut cursor = dp.cursor();
        dp.send(&mut cursor, self.name, node, service, data, hops_to_live)
            .await
    }

    /// Receives the next datagram or unreachable notice.
    pub async fn recv(&mut self) -> Result<Incoming, MeshError> {
        match self.rx.recv().await {
            Some(Delivery::Data {
                from_node,
                from_service,
                data,
            }) => Ok(Incoming::Data {
                from_node: from_node.to_string(),
                from_service: from_service.to_string_lossy(),
                data,
            }),
            Some(Delivery::Unreachable { reported_by, msg }) => Ok(Incoming::Unreachable {
                reported_by: reported_by.to_string(),
                to_node: msg.to_node,
                to_service: msg.to_service,
                problem: msg.problem,
            }),
            None => Err(MeshError::Shutdown),
        }
    }
}

impl Drop for PacketConn {
    fn drop(&mut self) {
        let cmd = Command::Unlisten {
            service: std::mem::take(&mut self.service),
            registration: self.registration,
        };
        // The node task also treats a closed socket queue as free, so a lost
        // unlisten only delays the cleanup; still try hard to deliver it.
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.inner.commands.try_send(cmd) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let tx = self.inner.commands.clone();
                rt.spawn(async move {
                    let _ = tx.send(cmd).await;
                });
            }
        }
    }
}
