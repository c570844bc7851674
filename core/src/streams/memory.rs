//! An in-memory datagram network for tests: nodes, services, bounded socket queues,
//! "service unknown" notices like the mesh sends them, and adjustable loss, reordering
//! and black-holing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use receptor_proto::svcad::ServiceAdvertisement;
use tokio::sync::mpsc;

use super::socket::lock;
use super::transport::{DatagramNetwork, DatagramSocket};
use crate::mesh::{Incoming, MeshError};

/// Datagrams queued per socket; more are dropped, as the mesh would.
const SOCKET_QUEUE: usize = 256;

/// What happens to datagrams between services.
#[derive(Debug, Clone, Default)]
pub(crate) struct Conditions {
    /// Probability of losing a datagram.
    pub loss: f64,
    /// Probability of delaying a datagram by `delay` (so later ones overtake it).
    pub reorder: f64,
    /// Delay of reordered datagrams.
    pub delay: Duration,
    /// Drop everything.
    pub blackhole: bool,
}

struct Hub {
    nodes: HashSet<String>,
    sockets: HashMap<(String, String), mpsc::Sender<Incoming>>,
    conditions: Conditions,
    rng: StdRng,
    next_ephemeral: u64,
}

/// A set of in-memory nodes that can reach each other.
#[derive(Clone)]
pub(crate) struct MemoryNet {
    hub: Arc<Mutex<Hub>>,
    /// Largest datagram carried so far.
    pub max_seen: Arc<AtomicUsize>,
    /// Datagrams lost on purpose so far.
    pub lost: Arc<AtomicUsize>,
    /// Datagrams delayed (reordered) so far.
    pub delayed: Arc<AtomicUsize>,
}

impl MemoryNet {
    pub(crate) fn new() -> Self {
        Self {
            hub: Arc::new(Mutex::new(Hub {
                nodes: HashSet::new(),
                sockets: HashMap::new(),
                conditions: Conditions::default(),
                rng: StdRng::seed_from_u64(7),
                next_ephemeral: 0,
            })),
            max_seen: Arc::new(AtomicUsize::new(0)),
            lost: Arc::new(AtomicUsize::new(0)),
            delayed: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Adds a node.
    pub(crate) fn node(&self, id: &str) -> MemoryNode {
        lock(&self.hub).nodes.insert(id.to_owned());
        MemoryNode {
            net: self.clone(),
            id: id.to_owned(),
        }
    }

    /// Changes the conditions for all later datagrams.
    pub(crate) fn set_conditions(&self, c: Conditions) {
        lock(&self.hub).conditions = c;
    }

    /// Forgets a service as if its socket had been closed (its owner keeps a dead socket).
    pub(crate) fn unregister(&self, node: &str, service: &str) {
        lock(&self.hub)
            .sockets
            .remove(&(node.to_owned(), service.to_owned()));
    }

    /// Whether a service is registered.
    pub(crate) fn is_registered(&self, node: &str, service: &str) -> bool {
        lock(&self.hub)
            .sockets
            .contains_key(&(node.to_owned(), service.to_owned()))
    }
}

/// One node of a [`MemoryNet`].
#[derive(Clone)]
pub(crate) struct MemoryNode {
    net: MemoryNet,
    id: String,
}

impl DatagramNetwork for MemoryNode {
    type Socket = MemorySocket;

    fn node_id(&self) -> &str {
        &self.id
    }

    async fn open(
        &self,
        service: Option<&str>,
        _advertise: Option<ServiceAdvertisement>,
    ) -> Result<MemorySocket, MeshError> {
        let mut hub = lock(&self.net.hub);
        let service = match service {
            Some(s) if s.len() > 8 => return Err(MeshError::ServiceNameTooLong),
            Some(s) => s.to_owned(),
            None => {
                hub.next_ephemeral += 1;
                format!("eph{:05}", hub.next_ephemeral)
            }
        };
        let key = (self.id.clone(), service.clone());
        if hub.sockets.contains_key(&key) {
            return Err(MeshError::ServiceInUse(service));
        }
        let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
        let registered = tx.downgrade();
        hub.sockets.insert(key, tx);
        Ok(MemorySocket {
            net: self.net.clone(),
            node: self.id.clone(),
            service,
            rx,
            registered,
        })
    }
}

/// A socket of a [`MemoryNode`].
pub(crate) struct MemorySocket {
    net: MemoryNet,
    node: String,
    service: String,
    rx: mpsc::Receiver<Incoming>,
    /// What the hub delivers to, to tell this socket's registration from a later
    /// socket's on the same service.
    registered: mpsc::WeakSender<Incoming>,
}

impl Drop for MemorySocket {
    fn drop(&mut self) {
        let Some(ours) = self.registered.upgrade() else {
            // Unregistered already; the service may belong to a new socket.
            return;
        };
        let mut hub = lock(&self.net.hub);
        let key = (self.node.clone(), self.service.clone());
        if hub
            .sockets
            .get(&key)
            .is_some_and(|tx| tx.same_channel(&ours))
        {
            hub.sockets.remove(&key);
        }
    }
}

impl DatagramSocket for MemorySocket {
    fn service(&self) -> &str {
        &self.service
    }

    async fn send_to(&self, node: &str, service: &str, data: &[u8]) -> Result<(), MeshError> {
        let mut hub = lock(&self.net.hub);
        if !hub.nodes.contains(node) {
            return Err(MeshError::NoRoute);
        }
        let Some(tx) = hub
            .sockets
            .get(&(node.to_owned(), service.to_owned()))
            .cloned()
        else {
            // The target node answers with a "service unknown" notice.
            if let Some(back) = hub.sockets.get(&(self.node.clone(), self.service.clone())) {
                let _ = back.try_send(Incoming::Unreachable {
                    reported_by: node.to_owned(),
                    to_node: node.to_owned(),
                    to_service: service.to_owned(),
                    problem: "service unknown".to_owned(),
                });
            }
            return Ok(());
        };
        let c = hub.conditions.clone();
        if c.blackhole || (c.loss > 0.0 && hub.rng.gen_bool(c.loss)) {
            self.net.lost.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let delay = c.reorder > 0.0 && hub.rng.gen_bool(c.reorder);
        drop(hub);
        self.net.max_seen.fetch_max(data.len(), Ordering::Relaxed);
        let msg = Incoming::Data {
            from_node: self.node.clone(),
            from_service: self.service.clone(),
            data: Bytes::copy_from_slice(data),
        };
        if delay {
            self.net.delayed.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                tokio::time::sleep(c.delay).await;
                let _ = tx.try_send(msg);
            });
        } else {
            let _ = tx.try_send(msg);
        }
        Ok(())
    }

    async fn recv(&mut self) -> Result<Incoming, MeshError> {
        self.rx.recv().await.ok_or(MeshError::Shutdown)
    }
}
