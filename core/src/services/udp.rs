//! UDP proxies: `udp-server` (receive on a UDP port here, forward across the mesh) and
//! `udp-client` (receive on a mesh service, forward to a UDP address).
//!
//! Datagrams travel as mesh datagrams, one per UDP datagram, unreliable as UDP is. As in
//! Go receptor, a `udp-server` opens one ephemeral mesh socket per UDP peer (so replies
//! find their way back to that peer) and a `udp-client` one UDP socket per mesh peer (so
//! the target's replies go back to that mesh peer). Unlike Go, which keeps every peer
//! forever, this module bounds the cost of peers:
//!
//! * at most [`MAX_PEERS`] peers per proxy; datagrams of further peers are dropped;
//! * a peer silent in both directions for [`PEER_IDLE`] is forgotten (its socket closed;
//!   a later datagram starts afresh);
//! * each peer has a queue of [`PEER_QUEUE`] datagrams; when its sender cannot keep up,
//!   new datagrams are dropped rather than buffered.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{tags, ServiceError, ServiceHandle};
use crate::config::{UdpClientConfig, UdpServerConfig};
use crate::control::listener::describe;
use crate::mesh::{Incoming, Mesh, PacketConn};
use receptor_proto::svcad::ServiceAdvertisement;

/// Peers one proxy serves at once.
pub const MAX_PEERS: usize = 1024;
/// Datagrams waiting per peer.
pub const PEER_QUEUE: usize = 64;
/// A peer silent for this long is forgotten.
pub const PEER_IDLE: Duration = Duration::from_secs(300);
/// Largest datagram read (Go's buffer size).
const DATAGRAM_BUFFER: usize = 64 * 1024;
/// Pause after a failed UDP receive, so that a persistent error does not spin.
const RECV_BACKOFF: Duration = Duration::from_millis(50);

/// The queues of the peers of one proxy, by peer address.
struct Peers<K> {
    queues: HashMap<K, mpsc::Sender<Bytes>>,
}

impl<K: Eq + Hash + Clone + std::fmt::Debug> Peers<K> {
    fn new() -> Self {
        Peers {
            queues: HashMap::new(),
        }
    }

    /// Queues `data` for `peer`, starting the peer with `start` if it has no live queue.
    /// Drops the datagram when the peer's queue is full or there are too many peers.
    async fn deliver<F, Fut>(&mut self, peer: &K, data: Bytes, start: F)
    where
        F: FnOnce(mpsc::Receiver<Bytes>) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let live = self.queues.get(peer).filter(|tx| !tx.is_closed()).cloned();
        let tx = match live {
            Some(tx) => tx,
            None => {
                self.queues.retain(|_, tx| !tx.is_closed());
                if self.queues.len() >= MAX_PEERS {
                    tracing::warn!(
                        "UDP proxy has {MAX_PEERS} peers; dropping a datagram from {peer:?}"
                    );
                    return;
                }
                let (tx, rx) = mpsc::channel(PEER_QUEUE);
                if !start(rx).await {
                    return;
                }
                self.queues.insert(peer.clone(), tx.clone());
                tx
            }
        };
        if tx.try_send(data).is_err() {
            tracing::debug!("UDP proxy queue of {peer:?} is full; dropping a datagram");
        }
    }
}

/// Starts a `udp-server`.
pub(super) async fn start_server(
    mesh: &Mesh,
    cfg: &UdpServerConfig,
) -> Result<ServiceHandle, ServiceError> {
    let addr = format!("{}:{}", cfg.bind_addr, cfg.port);
    let bind = tokio::net::lookup_host((cfg.bind_addr.as_str(), cfg.port))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ServiceError::Resolve(addr.clone()))?;
    let sock = UdpSocket::bind(bind)
        .await
        .map_err(|e| ServiceError::UdpListen(format!("listen udp {addr}: {}", describe(&e))))?;
    let local = sock.local_addr().ok();
    let node = if cfg.remote_node.eq_ignore_ascii_case("localhost") {
        mesh.node_id().to_owned()
    } else {
        cfg.remote_node.clone()
    };
    let what = format!("udp-server {addr} -> {node}:{}", cfg.remote_service);
    let target = Arc::new((node, cfg.remote_service.clone()));
    let task = tokio::spawn(server_loop(Arc::new(sock), mesh.clone(), target));
    Ok(ServiceHandle::new(what, local, task))
}

async fn server_loop(sock: Arc<UdpSocket>, mesh: Mesh, target: Arc<(String, String)>) {
    let mut peers = Peers::new();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; DATAGRAM_BUFFER];
    loop {
        tokio::select! {
            received = sock.recv_from(&mut buf) => match received {
                Ok((n, from)) => {
                    let data = Bytes::copy_from_slice(&buf[..n]);
                    peers.deliver(&from, data, |rx| async {
                        match mesh.listen(None, None).await {
                            Ok(pc) => {
                                tracing::debug!("Received new UDP connection from {from}");
                                tasks.spawn(server_peer(pc, rx, sock.clone(), from, target.clone()));
                                true
                            }
                            Err(e) => {
                                tracing::error!("Error listening on Receptor network: {e}");
                                false
                            }
                        }
                    }).await;
                }
                Err(e) => {
                    tracing::debug!("Error reading from UDP: {e}");
                    tokio::time::sleep(RECV_BACKOFF).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// One UDP peer of a `udp-server`: its datagrams go out from its own mesh socket, and
/// what the target sends back to that socket goes back to the peer.
async fn server_peer(
    mut pc: PacketConn,
    mut rx: mpsc::Receiver<Bytes>,
    sock: Arc<UdpSocket>,
    peer: SocketAddr,
    target: Arc<(String, String)>,
) {
    let (node, service) = (&target.0, &target.1);
    let mut idle_at = Instant::now() + PEER_IDLE;
    loop {
        tokio::select! {
            data = rx.recv() => {
                let Some(data) = data else { return };
                idle_at = Instant::now() + PEER_IDLE;
                if let Err(e) = pc.send_to(node, service, &data).await {
                    tracing::debug!("Error sending packet on Receptor network: {e}");
                }
            }
            incoming = pc.recv() => match incoming {
                Ok(Incoming::Data { from_node, from_service, data }) => {
                    if from_node != *node || from_service != *service {
                        tracing::debug!("Received packet from unexpected source {from_node}:{from_service}");
                        continue;
                    }
                    idle_at = Instant::now() + PEER_IDLE;
                    if let Err(e) = sock.send_to(&data, peer).await {
                        tracing::debug!("Error sending packet via UDP: {e}");
                    }
                }
                Ok(Incoming::Unreachable { problem, .. }) => {
                    tracing::debug!("UDP proxy to {node}:{service}: {problem}");
                }
                Err(_) => return,
            },
            () = tokio::time::sleep_until(idle_at) => return,
        }
    }
}

/// Starts a `udp-client`.
pub(super) async fn start_client(
    mesh: &Mesh,
    cfg: &UdpClientConfig,
) -> Result<ServiceHandle, ServiceError> {
    let target = tokio::net::lookup_host(cfg.address.as_str())
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ServiceError::Resolve(cfg.address.clone()))?;
    let ad = ServiceAdvertisement {
        node_id: mesh.node_id().to_owned(),
        service: cfg.service.clone(),
        time: String::new(),
        conn_type: 0,
        tags: Some(tags("UDP Proxy", "address", &cfg.address)),
        work_commands: None,
    };
    let pc = mesh
        .listen(Some(&cfg.service), Some(ad))
        .await
        .map_err(|source| ServiceError::MeshPacketListen {
            service: cfg.service.clone(),
            source,
        })?;
    let what = format!("udp-client {} -> {}", cfg.service, cfg.address);
    let task = tokio::spawn(client_loop(pc, target));
    Ok(ServiceHandle::new(what, None, task))
}

/// A datagram from the target for a mesh peer: `(node, service, payload)`.
type Reply = (String, String, Bytes);

async fn client_loop(mut pc: PacketConn, target: SocketAddr) {
    let mut peers: Peers<(String, String)> = Peers::new();
    let mut tasks = JoinSet::new();
    let (reply_tx, mut replies) = mpsc::channel::<Reply>(PEER_QUEUE);
    loop {
        tokio::select! {
            incoming = pc.recv() => match incoming {
                Ok(Incoming::Data { from_node, from_service, data }) => {
                    let peer = (from_node, from_service);
                    peers.deliver(&peer, data, |rx| async {
                        match connect_udp(target).await {
                            Ok(udp) => {
                                tracing::debug!("Opened new UDP connection to {target} for {}:{}", peer.0, peer.1);
                                tasks.spawn(client_peer(udp, rx, peer.clone(), reply_tx.clone()));
                                true
                            }
                            Err(e) => {
                                tracing::error!("Error connecting via UDP: {e}");
                                false
                            }
                        }
                    }).await;
                }
                Ok(Incoming::Unreachable { to_node, to_service, problem, .. }) => {
                    tracing::debug!("UDP proxy reply to {to_node}:{to_service}: {problem}");
                }
                Err(_) => return,
            },
            Some((node, service, data)) = replies.recv() => {
                if let Err(e) = pc.send_to(&node, &service, &data).await {
                    tracing::debug!("Error writing to the Receptor network: {e}");
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// A UDP socket connected to `target`, of the same address family.
async fn connect_udp(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let any: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let udp = UdpSocket::bind(any).await?;
    udp.connect(target).await?;
    Ok(udp)
}

/// One mesh peer of a `udp-client`: its datagrams go to the target from its own UDP
/// socket, and what the target sends back goes to the peer.
async fn client_peer(
    udp: UdpSocket,
    mut rx: mpsc::Receiver<Bytes>,
    peer: (String, String),
    replies: mpsc::Sender<Reply>,
) {
    let mut buf = vec![0u8; DATAGRAM_BUFFER];
    let mut idle_at = Instant::now() + PEER_IDLE;
    loop {
        tokio::select! {
            data = rx.recv() => {
                let Some(data) = data else { return };
                idle_at = Instant::now() + PEER_IDLE;
                if let Err(e) = udp.send(&data).await {
                    tracing::debug!("Error writing to UDP: {e}");
                }
            }
            received = udp.recv(&mut buf) => match received {
                Ok(n) => {
                    idle_at = Instant::now() + PEER_IDLE;
                    let reply = (peer.0.clone(), peer.1.clone(), Bytes::copy_from_slice(&buf[..n]));
                    if replies.send(reply).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // E.g. ECONNREFUSED after an ICMP port unreachable: the target is not
                    // listening (yet); keep the peer.
                    tracing::debug!("Error reading from UDP: {e}");
                    tokio::time::sleep(RECV_BACKOFF).await;
                }
            },
            () = tokio::time::sleep_until(idle_at) => return,
        }
    }
}
