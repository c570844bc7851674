//! The mesh driver: one task owns the sans-IO state of `receptor-proto` and talks to
//! backend sessions and local services through bounded channels.
//!
//! The public surface below is the contract the rest of the daemon codes against.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use receptor_proto::svcad::ServiceAdvertisement;

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
    _private: (),
}

impl Mesh {
    /// Starts the node's driver task on the current tokio runtime.
    pub fn start(_opts: MeshOptions) -> Mesh {
        unimplemented!("mesh driver")
    }

    /// This node's ID.
    pub fn node_id(&self) -> &str {
        unimplemented!("mesh driver")
    }

    /// Hands the mesh an established backend connection; the returned future ends
    /// when the session ends (EOF, reject, idle timeout, shutdown), with the reason.
    pub async fn run_session(
        &self,
        _io: std::os::fd::OwnedFd,
        _framing: Framing,
        _params: SessionParams,
    ) -> Result<(), MeshError> {
        unimplemented!("mesh driver")
    }

    /// Snapshot for `status`.
    pub async fn status(&self) -> MeshStatus {
        unimplemented!("mesh driver")
    }

    /// Sends one ping to `target` (`localhost` = self) with the given hops-to-live
    /// (30 for a ping, 0..=30 for traceroute probes) and waits up to 10 s.
    pub async fn ping(&self, _target: &str, _hops_to_live: u8) -> PingReply {
        unimplemented!("mesh driver")
    }

    /// Opens a datagram socket on `service` (`None` = a fresh ephemeral name).
    /// With `advertise`, the service is advertised (ConnType, tags, work commands).
    pub async fn listen(
        &self,
        _service: Option<&str>,
        _advertise: Option<ServiceAdvertisement>,
    ) -> Result<PacketConn, MeshError> {
        unimplemented!("mesh driver")
    }

    /// Replaces the work commands advertised with the `control` service ads.
    pub async fn set_work_commands(&self, _cmds: Vec<receptor_proto::svcad::WorkCommand>) {
        unimplemented!("mesh driver")
    }

    /// Stops the node: closes sessions and local sockets.
    pub async fn shutdown(&self) {
        unimplemented!("mesh driver")
    }
}

/// A datagram socket bound to one local service name.
/// Dropping it unregisters the service (and withdraws its advertisement).
pub struct PacketConn {
    _private: (),
}

impl PacketConn {
    /// The local service name (ephemeral sockets get 8 random characters).
    pub fn service(&self) -> &str {
        unimplemented!("mesh driver")
    }

    /// Sends `data` to `(node, service)` with hops-to-live 30; waits for queue room.
    pub async fn send_to(
        &self,
        _node: &str,
        _service: &str,
        _data: &[u8],
    ) -> Result<(), MeshError> {
        unimplemented!("mesh driver")
    }

    /// Receives the next datagram or unreachable notice.
    pub async fn recv(&mut self) -> Result<Incoming, MeshError> {
        unimplemented!("mesh driver")
    }
}
