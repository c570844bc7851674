//! The node task: the single owner of the sans-IO [`NodeState`] state.
//!
//! Sessions hand it their control messages (ROUTE, SVCAD, REJECT) and their end;
//! API calls (status, listen, ...) arrive as commands; timers come from
//! [`NodeState::poll_timeout`]. After every step it delivers what the node wants to send
//! to the sessions' control queues, acts on node events, and republishes the
//! forwarding tables the data path reads when routes, sessions or names changed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use receptor_proto::data::{ServiceName, PING_SERVICE, UNREACH_SERVICE};
use receptor_proto::hash::{node_hash, HashKeyedMap};
use receptor_proto::limits::MeshLimits;
use receptor_proto::message::MessageType;
use receptor_proto::node::{Event, NodeConfig, NodeState, SessionConfig, SessionId};
use receptor_proto::svcad::{ServiceAdvertisement, WorkCommand};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::datapath::{DataPath, DataTx, Delivery, Firewall, RouteTable, ServiceTable};
use super::{ConnectionInfo, HandshakeSlot, MeshError, MeshOptions, MeshStatus};
use crate::metrics::{LinkCounters, LinkSnapshot, MeshSnapshot, Transitions};

/// Capacity of the node task's command queue.
pub(crate) const COMMAND_QUEUE: usize = 1024;
/// Commands handled per wake-up before the node's output is flushed.
const COMMAND_BATCH: usize = 64;
/// How long a closing session's writer may take to flush before it is cut off.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// An item for a session's writer.
#[derive(Debug)]
pub(crate) enum WriterItem {
    /// A control message (ROUTE, SVCAD, REJECT).
    Message(Bytes),
    /// Flush what is queued, then close the connection.
    Close,
}

/// State a session shares with the node task.
pub(crate) struct SessionShared {
    /// DATA is accepted only once the peer is identified.
    pub(crate) established: AtomicBool,
    /// Milliseconds since the mesh started at the last received bytes.
    pub(crate) last_rx_ms: AtomicU64,
    /// Cancelled to stop the session's tasks.
    pub(crate) cancel: CancellationToken,
    /// Why the node closed the session, if it did.
    pub(crate) close_reason: Mutex<Option<MeshError>>,
    /// A full control queue was already reported for this session.
    warned_full: AtomicBool,
    /// Bytes and messages through this session.
    pub(crate) counters: LinkCounters,
}

impl SessionShared {
    pub(crate) fn new() -> Arc<SessionShared> {
        Arc::new(SessionShared {
            established: AtomicBool::new(false),
            last_rx_ms: AtomicU64::new(0),
            cancel: CancellationToken::new(),
            close_reason: Mutex::new(None),
            warned_full: AtomicBool::new(false),
            counters: LinkCounters::default(),
        })
    }

    pub(crate) fn take_close_reason(&self) -> Option<MeshError> {
        self.close_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// The node task's handles on one session.
pub(crate) struct SessionLink {
    pub(crate) control: mpsc::Sender<WriterItem>,
    pub(crate) data: DataTx,
    pub(crate) shared: Arc<SessionShared>,
    /// Given back when the session is established.
    pub(crate) handshake: Option<HandshakeSlot>,
}

/// Requests to the node task.
pub(crate) enum Command {
    OpenSession {
        config: SessionConfig,
        link: SessionLink,
        reply: oneshot::Sender<Result<SessionId, MeshError>>,
    },
    Message {
        session: SessionId,
        message: Bytes,
        /// The message's share of its session's in-flight budget, given back once
        /// the message is handled.
        _budget: OwnedSemaphorePermit,
    },
    SessionEnded {
        session: SessionId,
    },
    Status {
        reply: oneshot::Sender<MeshStatus>,
    },
    Metrics {
        reply: oneshot::Sender<MeshSnapshot>,
    },
    RoutesBack {
        node: String,
        reply: oneshot::Sender<bool>,
    },
    Listen {
        service: Option<String>,
        advertise: Option<ServiceAdvertisement>,
        socket: mpsc::Sender<Delivery>,
        reply: oneshot::Sender<Result<(String, u64), MeshError>>,
    },
    Unlisten {
        service: String,
        registration: u64,
    },
    SetWorkCommands(Vec<WorkCommand>),
    SetFirewall(Option<Arc<dyn Firewall>>),
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

struct LocalSocket {
    registration: u64,
    socket: mpsc::Sender<Delivery>,
    advertised: bool,
}

/// The node task.
pub(crate) struct Actor {
    node: NodeState,
    data: Arc<DataPath>,
    base: Instant,
    sessions: HashMap<SessionId, SessionLink>,
    sockets: HashMap<String, LocalSocket>,
    next_registration: u64,
    firewall: Option<Arc<dyn Firewall>>,
    names: HashKeyedMap<Arc<str>>,
    shut_down: CancellationToken,
    services_changed: bool,
    /// Routing figures and link history, for [`Command::Metrics`].
    routing: RoutingFigures,
    /// Time spent in node calls that computed routes, not yet reported to the node
    /// (the republishing of the tables in `flush` is added to it).
    route_cost: Option<Duration>,
}

/// What the node task counts itself (it is their only writer: no atomics needed).
#[derive(Default)]
struct RoutingFigures {
    sent: u64,
    received: u64,
    dropped: u64,
    /// Established sessions and their peers.
    peers: HashMap<SessionId, (String, f64)>,
    transitions: std::collections::BTreeMap<String, Transitions>,
}

impl RoutingFigures {
    fn down(&mut self, session: SessionId) {
        if let Some((peer, _)) = self.peers.remove(&session) {
            self.transitions.entry(peer).or_default().down += 1;
        }
    }
}

impl Actor {
    pub(crate) fn new(
        opts: &MeshOptions,
        limits: MeshLimits,
        data: Arc<DataPath>,
        base: Instant,
        shut_down: CancellationToken,
    ) -> Actor {
        let seed = rand::random::<u64>();
        let mut node = NodeState::new(
            NodeConfig {
                node_id: opts.node_id.clone(),
                max_idle: opts.max_idle,
            },
            base,
            SystemTime::now(),
            seed,
        );
        node.set_limits(limits);
        Actor {
            node,
            data,
            base,
            sessions: HashMap::new(),
            sockets: HashMap::new(),
            next_registration: 1,
            firewall: None,
            names: HashKeyedMap::default(),
            shut_down,
            services_changed: false,
            routing: RoutingFigures::default(),
            route_cost: None,
        }
    }

    /// Runs until every command sender is gone.
    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        self.flush();
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        loop {
            let deadline = self.node.poll_timeout();
            if let Some(d) = deadline {
                sleep.as_mut().reset(tokio::time::Instant::from_std(d));
            }
            tokio::select! {
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.handle_command(cmd);
                    for _ in 0..COMMAND_BATCH {
                        match commands.try_recv() {
                            Ok(cmd) => self.handle_command(cmd),
                            Err(_) => break,
                        }
                    }
                }
                () = &mut sleep, if deadline.is_some() => {}
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| d <= now) {
                self.sync_activity();
                self.timed(|node| node.handle_timeout(now));
            }
            self.flush();
        }
        debug!("mesh node task finished");
    }

    fn handle_command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::OpenSession {
                config,
                link,
                reply,
            } => {
                if self.node.is_shut_down() {
                    let _ = reply.send(Err(MeshError::Shutdown));
                    return;
                }
                // The link is registered before `flush` hands out the node's first
                // message for it.
                let sid = self.node.open_session(now, config);
                self.sessions.insert(sid, link);
                let _ = reply.send(Ok(sid));
            }
            Command::Message {
                session, message, ..
            } => {
                if MessageType::of(&message) == Ok(MessageType::Route) {
                    self.routing.received += 1;
                }
                self.timed(|node| node.handle_message(now, session, &message));
            }
            Command::SessionEnded { session } => {
                self.routing.down(session);
                self.sessions.remove(&session);
                self.node.session_closed(now, session);
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status(now));
            }
            Command::Metrics { reply } => {
                let _ = reply.send(self.metrics(now));
            }
            Command::RoutesBack { node, reply } => {
                // Without a route there is nothing to wait for: the dial fails at once.
                let routable = self.node.routing_table().contains_key(&node);
                let _ = reply.send(!routable || self.node.routes_back(&node));
            }
            Command::Listen {
                service,
                advertise,
                socket,
                reply,
            } => {
                let _ = reply.send(self.listen(now, service, advertise, socket));
            }
            Command::Unlisten {
                service,
                registration,
            } => self.unlisten(now, &service, registration),
            Command::SetWorkCommands(cmds) => self.node.set_work_commands(now, cmds),
            Command::SetFirewall(fw) => {
                self.firewall = fw;
                self.publish_routes();
            }
            Command::Shutdown { reply } => {
                self.shutdown(now);
                let _ = reply.send(());
            }
        }
    }

    /// Runs `f` on the node, noting its duration if it computed routes.
    fn timed(&mut self, f: impl FnOnce(&mut NodeState)) {
        let before = self.node.recomputations();
        let started = Instant::now();
        f(&mut self.node);
        if self.node.recomputations() != before {
            self.route_cost = Some(started.elapsed());
        }
    }

    fn sync_activity(&mut self) {
        for (sid, link) in &self.sessions {
            let ms = link.shared.last_rx_ms.load(Ordering::Relaxed);
            if ms > 0 {
                self.node
                    .note_activity(*sid, self.base + Duration::from_millis(ms));
            }
        }
    }

    fn status(&self, now: Instant) -> MeshStatus {
        let st = self.node.status(now);
        MeshStatus {
            connections: st
                .connections
                .into_iter()
                .map(|(node_id, cost)| ConnectionInfo { node_id, cost })
                .collect(),
            routing_table: st.routing_table,
            known_connection_costs: st.known_connection_costs,
            advertisements: st.advertisements,
        }
    }

    fn metrics(&self, now: Instant) -> MeshSnapshot {
        let st = self.node.status(now);
        let mut links: Vec<LinkSnapshot> = self
            .routing
            .peers
            .iter()
            .filter_map(|(sid, (peer, cost))| {
                let c = &self.sessions.get(sid)?.shared.counters;
                Some(LinkSnapshot {
                    peer: peer.clone(),
                    cost: *cost,
                    bytes_in: c.bytes_in.get(),
                    messages_in: c.messages_in.get(),
                    bytes_out: c.bytes_out.get(),
                    messages_out: c.messages_out.get(),
                })
            })
            .collect();
        links.sort_by(|a, b| a.peer.cmp(&b.peer));
        let data = &self.data.counters;
        MeshSnapshot {
            links,
            transitions: self.routing.transitions.clone(),
            known_nodes: u64::try_from(st.known_connection_costs.len()).unwrap_or(u64::MAX),
            routes: u64::try_from(st.routing_table.len()).unwrap_or(u64::MAX),
            routing_updates_sent: self.routing.sent,
            routing_updates_received: self.routing.received,
            routing_updates_dropped: self.routing.dropped,
            datagrams_delivered: data.delivered.get(),
            datagrams_forwarded: data.forwarded.get(),
            datagrams_dropped: data.dropped(),
        }
    }

    fn listen(
        &mut self,
        now: Instant,
        service: Option<String>,
        advertise: Option<ServiceAdvertisement>,
        socket: mpsc::Sender<Delivery>,
    ) -> Result<(String, u64), MeshError> {
        if self.node.is_shut_down() {
            return Err(MeshError::Shutdown);
        }
        let name = match service {
            Some(s) if !s.is_empty() => {
                if s.len() > receptor_proto::data::MAX_SERVICE_LEN {
                    return Err(MeshError::ServiceNameTooLong);
                }
                if s == PING_SERVICE || s == UNREACH_SERVICE {
                    return Err(MeshError::ServiceInUse(s));
                }
                if let Some(existing) = self.sockets.get(&s) {
                    if !existing.socket.is_closed() {
                        return Err(MeshError::ServiceInUse(s));
                    }
                    // Its PacketConn was dropped and the unlisten is on its way.
                    let reg = existing.registration;
                    self.unlisten(now, &s, reg);
                }
                s
            }
            _ => loop {
                let s = self.node.random_id();
                if !self.sockets.contains_key(&s) && s != PING_SERVICE && s != UNREACH_SERVICE {
                    break s;
                }
            },
        };
        let registration = self.next_registration;
        self.next_registration += 1;
        if let Some(ad) = &advertise {
            if let Some(cmds) = &ad.work_commands {
                self.node.set_work_commands(now, cmds.clone());
            }
            self.node
                .add_local_service(now, &name, ad.conn_type, ad.tags.clone());
        }
        self.sockets.insert(
            name.clone(),
            LocalSocket {
                registration,
                socket,
                advertised: advertise.is_some(),
            },
        );
        // Published before the caller gets its socket, so that replies to the
        // first thing it sends find it.
        self.publish_services();
        Ok((name, registration))
    }

    fn unlisten(&mut self, now: Instant, service: &str, registration: u64) {
        let Some(s) = self.sockets.get(service) else {
            return;
        };
        if s.registration != registration {
            return;
        }
        if s.advertised {
            self.node.remove_local_service(now, service);
        }
        self.sockets.remove(service);
        self.services_changed = true;
    }

    fn shutdown(&mut self, now: Instant) {
        if !self.node.is_shut_down() {
            self.node.shutdown(now);
        }
        // Dropping the senders ends every local socket's `recv`.
        self.sockets.clear();
        self.services_changed = true;
        self.shut_down.cancel();
    }

    /// Delivers the node's output.
    fn flush(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            let Some(link) = self.sessions.get(&t.session) else {
                continue;
            };
            let route = MessageType::of(&t.message) == Ok(MessageType::Route);
            match link.control.try_send(WriterItem::Message(t.message)) {
                Ok(()) => self.routing.sent += u64::from(route),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.routing.dropped += u64::from(route);
                    if !link.shared.warned_full.swap(true, Ordering::Relaxed) {
                        warn!(session = %t.session, "session control queue full (peer not reading?); dropping control messages");
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        while let Some(ev) = self.node.poll_event() {
            match ev {
                Event::Established {
                    session,
                    peer,
                    cost,
                    ..
                } => {
                    if let Some(link) = self.sessions.get_mut(&session) {
                        link.shared.established.store(true, Ordering::Release);
                        if let Some(slot) = link.handshake.take() {
                            slot.release();
                        }
                    }
                    self.routing.transitions.entry(peer.clone()).or_default().up += 1;
                    self.routing.peers.insert(session, (peer, cost));
                }
                Event::Closed { session, reason } => {
                    self.routing.down(session);
                    if let Some(link) = self.sessions.remove(&session) {
                        let err = match reason {
                            receptor_proto::node::CloseReason::Shutdown => MeshError::Shutdown,
                            other => MeshError::Other(other.to_string()),
                        };
                        *link
                            .shared
                            .close_reason
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = Some(err);
                        close_link(link);
                    }
                }
                Event::DuplicateNode => {
                    error!(node = %self.node.node_id(), "another node runs with our node ID; shutting down");
                    self.shutdown(Instant::now());
                }
            }
        }
        if self.node.take_routes_changed() {
            let started = Instant::now();
            self.publish_routes();
            if let Some(cost) = self.route_cost.take() {
                self.node.note_route_cost(cost + started.elapsed());
            }
        } else if let Some(cost) = self.route_cost.take() {
            self.node.note_route_cost(cost);
        }
        if std::mem::take(&mut self.services_changed) {
            self.publish_services();
        }
    }

    fn publish_routes(&mut self) {
        for (h, name) in self.node.names() {
            if !self.names.contains_key(h) {
                self.names.insert(*h, Arc::from(name.as_str()));
            }
        }
        let mut next_hop = HashKeyedMap::default();
        for (dest, route) in self.node.routes() {
            let Some(sid) = self.node.session_to(&route.next_hop) else {
                continue;
            };
            if let Some(link) = self.sessions.get(&sid) {
                next_hop.insert(node_hash(dest), link.data.clone());
            }
        }
        self.data.routes.publish(RouteTable {
            names: self.names.clone(),
            next_hop,
            firewall: self.firewall.clone(),
        });
    }

    fn publish_services(&mut self) {
        let sockets = self
            .sockets
            .iter()
            .filter_map(|(name, s)| Some((ServiceName::new(name).ok()?, s.socket.clone())))
            .collect();
        self.data.services.publish(ServiceTable { sockets });
    }
}

/// Asks a session's writer to flush and close; cuts it off if it cannot.
fn close_link(link: SessionLink) {
    match link.control.try_send(WriterItem::Close) {
        Ok(()) => {
            let cancel = link.shared.cancel.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = tokio::time::sleep(CLOSE_GRACE) => cancel.cancel(),
                }
            });
        }
        Err(_) => link.shared.cancel.cancel(),
    }
}
