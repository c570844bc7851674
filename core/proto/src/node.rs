//! The mesh state of one node, as a deterministic state machine.
//!
//! [`NodeState`] owns everything a receptor node knows about the mesh: its backend
//! sessions and their establishment state, the link-state database
//! (`knownConnectionCosts`), the epoch/sequence of every known node, the seen
//! UpdateIDs, the routing table, the hash → name table and the service
//! advertisements. It performs no I/O and reads no clock: the driver feeds it
//! received messages and the current time, and collects what to send
//! ([`NodeState::poll_transmit`]), what happened ([`NodeState::poll_event`]) and when to call
//! back ([`NodeState::poll_timeout`] / [`NodeState::handle_timeout`]).
//!
//! DATA messages are not handled here: the driver forwards them with the routing
//! table and name table this node publishes (see [`NodeState::take_routes_changed`]).
//!
//! Protocol summary (Go receptor 1.6.9):
//! * A session starts with both sides sending a ROUTE every second (11 at most); the
//!   `ForwardingNode` of the first ROUTE received names the peer. Own ID,
//!   `allowedpeers` and duplicate-connection checks decide whether to accept it.
//! * Each node floods its own update (its established links and their costs) after a
//!   change and every 10 s; forwarded copies only change `ForwardingNode`. Go sends a
//!   triggered update 100 ms after the change; this node sends it at once when its last
//!   triggered update is at least [`UPDATE_SPACING`] old, and otherwise coalesces the
//!   changes into one update at the end of that spacing, so a change crosses a quiet mesh
//!   at the speed of its links while a burst of changes still costs at most one update
//!   per spacing.
//! * Updates are de-duplicated by UpdateID (1 h) and ordered by (epoch, sequence).
//! * Both ends of a link must advertise the same cost, and a neighbour must keep
//!   listing us once it has, or the session is rejected.
//! * Sessions silent for `max_idle` (≥ 21 s) are dropped (checked every 5 s).
//!
//! Beyond Go, [`MeshLimits`] bounds what peers can make the node hold and do: known
//! nodes, links, connections per update and name lengths (an update outside them is
//! ignored, not flooded on), routing updates per session and second (the excess is
//! coalesced to the newest per originating node), route computations (at most one per
//! `route_interval` while changes stream in) and how long an unreachable node is kept.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rand::distributions::Alphanumeric;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, info, warn};

use crate::go::time::GoTime;
use crate::hash::{node_hash, HashKeyedMap};
use crate::limits::{Budget, MeshLimits};
use crate::message::{MessageType, REJECT_MESSAGE};
use crate::routing::{shortest_paths, LinkCosts, LinkState, Route};
use crate::svcad::{ServiceAdvertisement, SvcadMessage, WorkCommand};
use crate::update::RoutingUpdate;

/// Period of a node's own routing updates (also the keepalive).
pub const ROUTE_UPDATE_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest time between two of a node's own triggered routing updates: a change after a
/// quiet spell is flooded at once, changes that follow within this time are coalesced into
/// one update sent when it has passed.
pub const UPDATE_SPACING: Duration = Duration::from_millis(100);
/// Period of the routing-table recomputation when nothing changes.
pub const RECOMPUTE_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Period of a node's own service advertisements.
pub const SERVICE_AD_INTERVAL: Duration = Duration::from_secs(60);
/// Delay of the advertisements after a new advertised service.
pub const SERVICE_AD_DELAY: Duration = Duration::from_secs(5);
/// Interval of the idle-session check.
pub const IDLE_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Smallest (and default) idle timeout.
pub const MIN_MAX_IDLE: Duration = Duration::from_secs(21);
/// How long a seen UpdateID is remembered.
pub const SEEN_UPDATE_EXPIRY: Duration = Duration::from_secs(3600);
/// Interval of the initial-connect ROUTE messages.
pub const INITIAL_CONNECT_INTERVAL: Duration = Duration::from_secs(1);
/// Initial-connect ROUTE messages sent before giving up on a session.
pub const INITIAL_CONNECT_MAX: u32 = 11;

/// Bounds on state a misbehaving peer could otherwise grow without limit (the
/// configurable ones are in [`MeshLimits`]).
const MAX_SEEN_UPDATES: usize = 262_144;
const MAX_SERVICE_ADS: usize = 100_000;

/// Identity of this node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's ID.
    pub node_id: String,
    /// Established sessions silent for longer than this are dropped (raised to 21 s
    /// if smaller).
    pub max_idle: Duration,
}

/// Parameters of one backend session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Link cost (must be > 0; non-positive values are replaced by 1).
    pub cost: f64,
    /// Per-peer cost overrides (listeners).
    pub node_cost: BTreeMap<String, f64>,
    /// If set, only these node IDs are accepted.
    pub allowed_peers: Option<Vec<String>>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            cost: 1.0,
            node_cost: BTreeMap::new(),
            allowed_peers: None,
        }
    }
}

/// Handle of a session inside a [`NodeState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session#{}", self.0)
    }
}

/// A message to send on a session.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// Where to send it.
    pub session: SessionId,
    /// The complete message (type byte included); floods share one buffer.
    pub message: Bytes,
}

/// Why a session was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum RejectReason {
    /// The peer announced our own node ID.
    OwnNodeId,
    /// The peer is not in the backend's `allowedpeers`.
    NotAllowed,
    /// A session to that node ID already exists.
    AlreadyConnected,
    /// A ROUTE arrived with another `ForwardingNode` than the peer's ID.
    NodeIdChanged {
        /// The ID that came in the message.
        to: String,
    },
    /// The peer's own update stopped listing us.
    NoLongerListsUs,
    /// The peer advertises another cost for the link.
    CostDisagreement {
        /// Our cost.
        ours: f64,
        /// The peer's cost.
        theirs: f64,
    },
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::OwnNodeId => f.write_str("it tried to connect using our own node ID"),
            RejectReason::NotAllowed => f.write_str("it is not in the allowed peers list"),
            RejectReason::AlreadyConnected => {
                f.write_str("it connected using a node ID we are already connected to")
            }
            RejectReason::NodeIdChanged { to } => {
                write!(f, "remote node ID changed unexpectedly to {to}")
            }
            RejectReason::NoLongerListsUs => {
                f.write_str("remote node no longer lists us as a connection")
            }
            RejectReason::CostDisagreement { ours, theirs } => write!(
                f,
                "we disagree about the connection cost (ours {ours}, theirs {theirs})"
            ),
        }
    }
}

/// Why the node ended a session.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CloseReason {
    /// We refused the peer (a REJECT was queued first).
    #[error("rejected connection with node {peer} because {reason}")]
    Rejected {
        /// The peer's node ID (as far as known).
        peer: String,
        /// Why.
        reason: RejectReason,
    },
    /// The peer sent REJECT.
    #[error("remote node rejected the connection")]
    RemoteRejected,
    /// Nothing was received for too long.
    #[error("timing out connection {peer}, idle for the past {idle:?}")]
    Idle {
        /// The peer's node ID.
        peer: String,
        /// The idle limit.
        idle: Duration,
    },
    /// The peer never identified itself.
    #[error("giving up on connection initialization")]
    GaveUp,
    /// The node is shutting down.
    #[error("netceptor shutdown")]
    Shutdown,
}

/// Something the driver must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A session identified its peer and was accepted; DATA may now flow on it.
    Established {
        /// The session.
        session: SessionId,
        /// The peer's node ID.
        peer: String,
        /// The agreed cost.
        cost: f64,
    },
    /// The node ended a session: close its transport (after sending what was
    /// queued for it, e.g. a REJECT).
    Closed {
        /// The session.
        session: SessionId,
        /// Why.
        reason: CloseReason,
    },
    /// Another process runs with our node ID and a newer epoch: this node has shut
    /// down (every session is closed) and must exit.
    DuplicateNode,
}

/// A status snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeStatus {
    /// Established neighbours and their costs, sorted by ID.
    pub connections: Vec<(String, f64)>,
    /// Destination → next hop.
    pub routing_table: BTreeMap<String, String>,
    /// The link-state database.
    pub known_connection_costs: LinkCosts,
    /// Every advertisement known; own ones with the current time.
    pub advertisements: Vec<ServiceAdvertisement>,
}

#[derive(Debug)]
enum SessionState {
    Connecting {
        sent: u32,
        next_send: Instant,
    },
    Established {
        peer: String,
        remote_established: bool,
    },
}

#[derive(Debug)]
struct Session {
    config: SessionConfig,
    cost: f64,
    state: SessionState,
    last_rx: Instant,
    /// A bad message was already logged at warning level for this session.
    complained: bool,
    /// Routing updates this session may still have processed at once.
    budget: Budget,
    /// Updates that came beyond the budget: the newest per originating node.
    coalesced: BTreeMap<String, RoutingUpdate>,
    /// Approximate bytes held by `coalesced`.
    coalesced_bytes: usize,
}

/// When our own next routing update is due, and why. Only triggered updates count
/// toward [`UPDATE_SPACING`]: a periodic one does not delay the answer to a change.
#[derive(Debug, Clone, Copy)]
enum UpdateTimer {
    /// The keepalive, [`ROUTE_UPDATE_INTERVAL`] after the last update.
    Periodic(Instant),
    /// A change is waiting to be flooded.
    Triggered(Instant),
}

impl UpdateTimer {
    fn due(self) -> Instant {
        match self {
            UpdateTimer::Periodic(t) | UpdateTimer::Triggered(t) => t,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct NodeInfo {
    epoch: u64,
    sequence: u64,
    /// When an update from the node was last accepted.
    heard: Instant,
}

/// Approximate memory an update held in a coalescing queue takes.
fn update_size(u: &RoutingUpdate) -> usize {
    64 + u.node_id.len()
        + u.update_id.len()
        + u.forwarding_node.len()
        + u.connections.keys().map(|k| k.len() + 48).sum::<usize>()
}

/// Whether `a` is a later state of its node than `b` (by epoch, then sequence).
fn newer(a: &RoutingUpdate, b: &RoutingUpdate) -> bool {
    (a.update_epoch, a.update_sequence) > (b.update_epoch, b.update_sequence)
}

/// Why a routing update was refused by the node's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    TooManyNodes,
    TooManyConnections,
    TooManyLinks,
    NameTooLong,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::TooManyNodes => "the link-state database holds the most nodes allowed",
            Refusal::TooManyConnections => "it lists more connections than allowed",
            Refusal::TooManyLinks => "the link-state database holds the most links allowed",
            Refusal::NameTooLong => "it names a node ID longer than allowed",
        })
    }
}

#[derive(Debug)]
struct StoredAd {
    ad: ServiceAdvertisement,
    time: GoTime,
}

#[derive(Debug)]
struct LocalService {
    conn_type: u8,
    tags: Option<BTreeMap<String, String>>,
}

/// UpdateIDs seen recently, in arrival order. They are kept as 64-bit keyed hashes:
/// an UpdateID is whatever string a peer sends, and the table must not grow with it.
#[derive(Debug)]
struct SeenUpdates {
    /// A randomly keyed SipHash: a peer cannot choose IDs that collide.
    key: std::collections::hash_map::RandomState,
    set: HashSet<u64, crate::hash::BuildIdentityHasher>,
    order: VecDeque<(Instant, u64)>,
}

impl SeenUpdates {
    fn new() -> SeenUpdates {
        SeenUpdates {
            key: std::collections::hash_map::RandomState::new(),
            set: HashSet::default(),
            order: VecDeque::new(),
        }
    }

    /// Records `id`; false if it was already there.
    fn insert(&mut self, now: Instant, id: &str) -> bool {
        use std::hash::BuildHasher;
        let h = self.key.hash_one(id);
        if self.set.contains(&h) {
            return false;
        }
        if self.order.len() >= MAX_SEEN_UPDATES {
            if let Some((_, old)) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(h);
        self.order.push_back((now, h));
        true
    }

    fn purge(&mut self, now: Instant) {
        while let Some((t, _)) = self.order.front() {
            if now.saturating_duration_since(*t) <= SEEN_UPDATE_EXPIRY {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.set.remove(&id);
            }
        }
    }
}

/// The mesh state machine of one node.
#[derive(Debug)]
pub struct NodeState {
    id: String,
    max_idle: Duration,
    limits: MeshLimits,
    epoch: u64,
    sequence: u64,
    rng: StdRng,
    instant_base: Instant,
    wall_base: SystemTime,
    next_session: u64,
    sessions: BTreeMap<SessionId, Session>,
    peers: BTreeMap<String, SessionId>,
    known_info: HashMap<String, NodeInfo>,
    known_costs: LinkState,
    seen: SeenUpdates,
    routes: BTreeMap<String, Route>,
    routing_table: BTreeMap<String, String>,
    names: HashKeyedMap<String>,
    ads: BTreeMap<(String, String), StoredAd>,
    local_services: BTreeMap<String, LocalService>,
    work_commands: Vec<WorkCommand>,
    update_timer: UpdateTimer,
    /// When the last of our own triggered routing updates was flooded.
    last_triggered: Option<Instant>,
    recompute_due: Instant,
    service_ads_due: Instant,
    idle_check_due: Instant,
    seen_purge_due: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    routes_changed: bool,
    /// Names were added since the forwarding tables were last published.
    names_changed: bool,
    /// When routes were last computed.
    last_recompute: Option<Instant>,
    /// Route computations so far.
    recomputations: u64,
    /// What the driver measured the last route computation (and what follows from
    /// it) to cost.
    route_cost: Duration,
    /// Updates refused by the limits, or dropped from a full coalescing queue.
    updates_refused: u64,
    shut_down: bool,
}

impl NodeState {
    /// A node starting at `now` (monotonic) = `wall` (wall clock), with its random
    /// choices (epoch bits, UpdateIDs) drawn from an RNG seeded with `seed`.
    pub fn new(config: NodeConfig, now: Instant, wall: SystemTime, seed: u64) -> NodeState {
        let mut rng = StdRng::seed_from_u64(seed);
        let unix = wall
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let epoch = (unix << 24).wrapping_add(rng.gen_range(0..(1u64 << 24)));
        let mut node = NodeState {
            max_idle: config.max_idle.max(MIN_MAX_IDLE),
            limits: MeshLimits::default(),
            id: config.node_id,
            epoch,
            sequence: 0,
            rng,
            instant_base: now,
            wall_base: wall,
            next_session: 1,
            sessions: BTreeMap::new(),
            peers: BTreeMap::new(),
            known_info: HashMap::new(),
            known_costs: LinkState::default(),
            seen: SeenUpdates::new(),
            routes: BTreeMap::new(),
            routing_table: BTreeMap::new(),
            names: HashKeyedMap::default(),
            ads: BTreeMap::new(),
            local_services: BTreeMap::new(),
            work_commands: Vec::new(),
            update_timer: UpdateTimer::Periodic(now + ROUTE_UPDATE_INTERVAL),
            last_triggered: None,
            recompute_due: now + RECOMPUTE_INTERVAL,
            service_ads_due: now + SERVICE_AD_INTERVAL,
            idle_check_due: now + IDLE_CHECK_INTERVAL,
            seen_purge_due: now + SEEN_UPDATE_EXPIRY / 2,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            routes_changed: true,
            names_changed: false,
            last_recompute: None,
            recomputations: 0,
            route_cost: Duration::ZERO,
            updates_refused: 0,
            shut_down: false,
        };
        let own = node.id.clone();
        node.add_name(&own);
        node
    }

    /// This node's ID.
    pub fn node_id(&self) -> &str {
        &self.id
    }

    /// Replaces the limits (they apply to what arrives from then on).
    pub fn set_limits(&mut self, limits: MeshLimits) {
        self.limits = limits;
    }

    /// The limits in force.
    pub fn limits(&self) -> &MeshLimits {
        &self.limits
    }

    /// Route computations since the node started: a driver that sees it change
    /// during a call can time the computation and report it with
    /// [`NodeState::note_route_cost`].
    pub fn recomputations(&self) -> u64 {
        self.recomputations
    }

    /// Reports what the last route computation cost (wall time, including
    /// republishing the forwarding tables). While changes stream in, computations are
    /// then spaced by at least four times that (and at least `route_interval`), so
    /// that they take at most a fifth of the node's time however large the graph and
    /// however slow the machine.
    pub fn note_route_cost(&mut self, cost: Duration) {
        self.route_cost = cost;
    }

    /// Shortest time between two route computations while changes stream in.
    fn route_spacing(&self) -> Duration {
        self.limits.route_interval.max(self.route_cost * 4)
    }

    /// Routing updates refused by the limits or dropped from a full coalescing queue
    /// since the node started.
    pub fn updates_refused(&self) -> u64 {
        self.updates_refused
    }

    /// This node's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the node has shut down (duplicate detected or [`NodeState::shutdown`]).
    pub fn is_shut_down(&self) -> bool {
        self.shut_down
    }

    /// 8 random characters from `[0-9a-zA-Z]` (UpdateIDs, ephemeral service names).
    pub fn random_id(&mut self) -> String {
        (&mut self.rng)
            .sample_iter(Alphanumeric)
            .take(8)
            .map(char::from)
            .collect()
    }

    // ----- sessions -----------------------------------------------------------------

    /// Registers a new backend session; its first initial-connect ROUTE is queued.
    pub fn open_session(&mut self, now: Instant, mut config: SessionConfig) -> SessionId {
        let sid = SessionId(self.next_session);
        self.next_session += 1;
        if self.shut_down {
            self.events.push_back(Event::Closed {
                session: sid,
                reason: CloseReason::Shutdown,
            });
            return sid;
        }
        if !(config.cost > 0.0 && config.cost.is_finite()) {
            warn!(
                cost = config.cost,
                "connection cost must be positive; using 1"
            );
            config.cost = 1.0;
        }
        let cost = config.cost;
        self.sessions.insert(
            sid,
            Session {
                config,
                cost,
                state: SessionState::Connecting {
                    sent: 0,
                    next_send: now,
                },
                last_rx: now,
                complained: false,
                budget: Budget::new(self.limits.route_updates_per_second, now),
                coalesced: BTreeMap::new(),
                coalesced_bytes: 0,
            },
        );
        self.send_initial(now, sid);
        sid
    }

    /// The transport of a session ended (EOF, I/O error, cancelled). No-op if the
    /// node already closed it. Our own update, without that link, is queued as in
    /// [`NodeState::handle_message`].
    pub fn session_closed(&mut self, now: Instant, sid: SessionId) {
        if let Some(sess) = self.sessions.remove(&sid) {
            if let SessionState::Established { peer, .. } = sess.state {
                info!(%peer, "connection closed");
                self.remove_connection(now, &peer);
            }
        }
        self.send_due_update(now);
    }

    /// Records that bytes arrived on a session at `at` (for the idle check), when
    /// the driver handled them itself (DATA).
    pub fn note_activity(&mut self, sid: SessionId, at: Instant) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            if at > s.last_rx {
                s.last_rx = at;
            }
        }
    }

    /// The peer of an established session.
    pub fn peer_of(&self, sid: SessionId) -> Option<&str> {
        match &self.sessions.get(&sid)?.state {
            SessionState::Established { peer, .. } => Some(peer),
            SessionState::Connecting { .. } => None,
        }
    }

    /// The session to an established neighbour.
    pub fn session_to(&self, peer: &str) -> Option<SessionId> {
        self.peers.get(peer).copied()
    }

    /// Whether `node` has shown that it can route back to this node: a neighbour has
    /// sent its own routing update listing us since the session was established (a
    /// node recomputes its routes as it floods that update), a farther node's own
    /// routing update has reached us. Until then, a message `node` sends us right away
    /// (the answer to a QUIC handshake, say) may be dropped for want of a route.
    pub fn routes_back(&self, node: &str) -> bool {
        if node == self.id {
            return true;
        }
        match self.peers.get(node).and_then(|sid| self.sessions.get(sid)) {
            Some(Session {
                state:
                    SessionState::Established {
                        remote_established, ..
                    },
                ..
            }) => *remote_established,
            _ => self.known_info.contains_key(node),
        }
    }

    /// Handles one complete message received on a session. DATA messages only count
    /// as activity: the driver forwards them. If the message changed our links (a new
    /// peer, a rejection) or named a node new to us, our own update is queued before this
    /// returns, unless one went out less than [`UPDATE_SPACING`] ago.
    pub fn handle_message(&mut self, now: Instant, sid: SessionId, msg: &[u8]) {
        let Some(sess) = self.sessions.get_mut(&sid) else {
            return;
        };
        if now > sess.last_rx {
            sess.last_rx = now;
        }
        let established = matches!(sess.state, SessionState::Established { .. });
        let ty = match MessageType::of(msg) {
            Ok(t) => t,
            Err(e) => {
                if established {
                    self.bad_message(sid, "unknown message type", &e);
                }
                return;
            }
        };
        match (established, ty) {
            (false, MessageType::Route) => self.handle_first_route(now, sid, &msg[1..]),
            (false, MessageType::Reject) | (true, MessageType::Reject) => {
                warn!(session = %sid, "received a rejection message from peer");
                self.close_session(now, sid, CloseReason::RemoteRejected, false);
            }
            (false, _) | (true, MessageType::Data) => {}
            (true, MessageType::Route) => self.handle_route(now, sid, &msg[1..]),
            (true, MessageType::ServiceAdvertisement) => self.handle_service_ad(now, sid, msg),
        }
        self.send_due_update(now);
    }

    /// Logs a message that was dropped: the first per session as a warning, the
    /// others at debug level, so a peer sending garbage cannot flood the log.
    fn bad_message(&mut self, sid: SessionId, what: &str, e: &dyn fmt::Display) {
        match self.sessions.get_mut(&sid) {
            Some(s) if !s.complained => {
                s.complained = true;
                warn!(session = %sid, error = %e, "{what} (further bad messages on this session logged at debug level)");
            }
            _ => debug!(session = %sid, error = %e, "{what}"),
        }
    }

    fn handle_first_route(&mut self, now: Instant, sid: SessionId, body: &[u8]) {
        let ri = match RoutingUpdate::decode(body) {
            Ok(ri) => ri,
            Err(e) => {
                self.bad_message(sid, "error unpacking routing update", &e);
                return;
            }
        };
        let remote = ri.forwarding_node;
        let Some(sess) = self.sessions.get_mut(&sid) else {
            return;
        };
        let reject = if remote == self.id {
            Some(RejectReason::OwnNodeId)
        } else if sess
            .config
            .allowed_peers
            .as_ref()
            .is_some_and(|a| !a.contains(&remote))
        {
            Some(RejectReason::NotAllowed)
        } else if self.peers.contains_key(&remote) {
            Some(RejectReason::AlreadyConnected)
        } else {
            None
        };
        if let Some(reason) = reject {
            let reason = CloseReason::Rejected {
                peer: remote,
                reason,
            };
            self.close_session(now, sid, reason, true);
            return;
        }
        if let Some(&c) = sess.config.node_cost.get(&remote) {
            sess.cost = c;
        }
        let cost = sess.cost;
        sess.state = SessionState::Established {
            peer: remote.clone(),
            remote_established: false,
        };
        info!(peer = %remote, cost, "connection established");
        self.peers.insert(remote.clone(), sid);
        self.add_name(&remote);
        self.known_costs.set_edge(&self.id, &remote, cost);
        self.known_costs.set_edge(&remote, &self.id, cost);
        // A new link is announced UPDATE_SPACING after it is established, as Go does,
        // not at once: a Go peer still finishing its side of the handshake does not take
        // an update that arrives then as our links.
        self.update_timer =
            UpdateTimer::Triggered(self.update_timer.due().min(now + UPDATE_SPACING));
        self.trigger_recompute(now);
        self.routes_changed = true;
        self.events.push_back(Event::Established {
            session: sid,
            peer: remote,
            cost,
        });
    }

    fn handle_route(&mut self, now: Instant, sid: SessionId, body: &[u8]) {
        let ri = match RoutingUpdate::decode(body) {
            Ok(ri) => ri,
            Err(e) => {
                self.bad_message(sid, "error unpacking routing update", &e);
                return;
            }
        };
        let Some(sess) = self.sessions.get_mut(&sid) else {
            return;
        };
        let cost = sess.cost;
        let SessionState::Established {
            peer,
            remote_established,
        } = &mut sess.state
        else {
            return;
        };
        let peer = peer.clone();
        if ri.forwarding_node != peer {
            let reason = RejectReason::NodeIdChanged {
                to: ri.forwarding_node,
            };
            self.close_session(now, sid, CloseReason::Rejected { peer, reason }, true);
            return;
        }
        if ri.node_id == peer {
            match ri.connections.get(&self.id) {
                None if *remote_established => {
                    let reason = RejectReason::NoLongerListsUs;
                    self.close_session(now, sid, CloseReason::Rejected { peer, reason }, true);
                    return;
                }
                // A late initial-connect message: not a routing update yet.
                None => return,
                Some(&theirs) => {
                    *remote_established = true;
                    if theirs != cost {
                        let reason = RejectReason::CostDisagreement { ours: cost, theirs };
                        self.close_session(now, sid, CloseReason::Rejected { peer, reason }, true);
                        return;
                    }
                }
            }
        }
        if sess.budget.take(now) {
            self.handle_routing_update(now, ri, sid);
            return;
        }
        // Over budget: keep the newest update per originating node for later.
        let room = self.limits.max_coalesced_bytes;
        match sess.coalesced.get_mut(&ri.node_id) {
            Some(held) => {
                if newer(&ri, held) {
                    sess.coalesced_bytes =
                        sess.coalesced_bytes - update_size(held) + update_size(&ri);
                    *held = ri;
                }
            }
            None => {
                let size = update_size(&ri);
                if sess.coalesced_bytes + size <= room {
                    sess.coalesced_bytes += size;
                    sess.coalesced.insert(ri.node_id.clone(), ri);
                    return;
                }
                self.updates_refused += 1;
                let e = "coalescing queue full";
                self.bad_message(sid, "routing updates beyond the rate limit dropped", &e);
            }
        }
    }

    /// Processes coalesced updates of every session as far as their budgets allow.
    fn drain_coalesced(&mut self, now: Instant) {
        let sids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.coalesced.is_empty())
            .map(|(sid, _)| *sid)
            .collect();
        for sid in sids {
            while let Some(sess) = self.sessions.get_mut(&sid) {
                if sess.coalesced.is_empty() || !sess.budget.take(now) {
                    break;
                }
                let Some((_, ri)) = sess.coalesced.pop_first() else {
                    break;
                };
                sess.coalesced_bytes = sess.coalesced_bytes.saturating_sub(update_size(&ri));
                self.handle_routing_update(now, ri, sid);
            }
        }
    }

    /// Ends a session from our side.
    fn close_session(&mut self, now: Instant, sid: SessionId, reason: CloseReason, reject: bool) {
        let Some(sess) = self.sessions.remove(&sid) else {
            return;
        };
        match &reason {
            CloseReason::Rejected { .. } | CloseReason::Idle { .. } | CloseReason::GaveUp => {
                warn!(session = %sid, "{reason}")
            }
            _ => info!(session = %sid, "{reason}"),
        }
        if reject {
            self.transmits.push_back(Transmit {
                session: sid,
                message: Bytes::from_static(REJECT_MESSAGE),
            });
        }
        if let SessionState::Established { peer, .. } = sess.state {
            self.remove_connection(now, &peer);
        }
        self.events.push_back(Event::Closed {
            session: sid,
            reason,
        });
    }

    fn remove_connection(&mut self, now: Instant, peer: &str) {
        self.peers.remove(peer);
        self.known_costs.remove_edge(peer, &self.id);
        self.known_costs.remove_edge(&self.id, peer);
        self.trigger_update(now);
        self.trigger_recompute(now);
        self.routes_changed = true;
    }

    /// Closes every session (no REJECT) and stops the node.
    pub fn shutdown(&mut self, now: Instant) {
        let sids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for sid in sids {
            self.close_session(now, sid, CloseReason::Shutdown, false);
        }
        self.shut_down = true;
    }

    // ----- routing updates ----------------------------------------------------------

    fn make_update(&mut self, suspected_duplicate: u64) -> RoutingUpdate {
        self.sequence += 1;
        let connections = self
            .peers
            .iter()
            .filter_map(|(p, sid)| Some((p.clone(), self.sessions.get(sid)?.cost)))
            .collect();
        RoutingUpdate {
            node_id: self.id.clone(),
            update_id: self.random_id(),
            update_epoch: self.epoch,
            update_sequence: self.sequence,
            connections,
            forwarding_node: self.id.clone(),
            suspected_duplicate,
        }
    }

    fn send_initial(&mut self, now: Instant, sid: SessionId) {
        let update = self.make_update(0);
        let Some(sess) = self.sessions.get_mut(&sid) else {
            return;
        };
        let SessionState::Connecting { sent, next_send } = &mut sess.state else {
            return;
        };
        *sent += 1;
        *next_send = now + INITIAL_CONNECT_INTERVAL;
        let gave_up = *sent >= INITIAL_CONNECT_MAX;
        self.transmits.push_back(Transmit {
            session: sid,
            message: Bytes::from(update.encode()),
        });
        if gave_up {
            self.close_session(now, sid, CloseReason::GaveUp, false);
        }
    }

    /// Floods our own update to every established session.
    fn send_routing_update(&mut self, suspected_duplicate: u64) {
        if self.peers.is_empty() {
            return;
        }
        let update = self.make_update(suspected_duplicate);
        debug!(update_id = %update.update_id, connections = ?update.connections, "sending routing update");
        self.flood(Bytes::from(update.encode()), None);
    }

    fn flood(&mut self, message: Bytes, except: Option<SessionId>) {
        for &sid in self.peers.values() {
            if Some(sid) != except {
                self.transmits.push_back(Transmit {
                    session: sid,
                    message: message.clone(),
                });
            }
        }
    }

    /// Schedules our own update for a change: now if the last triggered one is at least
    /// [`UPDATE_SPACING`] old (the caller's entry point sends it before returning, see
    /// [`NodeState::send_due_update`]), else when that spacing has passed.
    fn trigger_update(&mut self, now: Instant) {
        let earliest = self
            .last_triggered
            .map_or(now, |last| (last + UPDATE_SPACING).max(now));
        self.update_timer = UpdateTimer::Triggered(self.update_timer.due().min(earliest));
    }

    /// Floods our own update if it is due, and restarts the periodic timer from it.
    fn send_due_update(&mut self, now: Instant) {
        if self.shut_down || self.update_timer.due() > now {
            return;
        }
        if let UpdateTimer::Triggered(_) = self.update_timer {
            self.last_triggered = Some(now);
        }
        self.update_timer = UpdateTimer::Periodic(now + ROUTE_UPDATE_INTERVAL);
        self.send_routing_update(0);
    }

    /// Recomputes routes at once when the known links change after a quiet spell (Go
    /// waits 100 ms), so `status` lists a node's links with the route they imply; while
    /// changes keep coming, at most once per `route_interval`, so a flood of updates
    /// cannot keep the node computing routes.
    fn trigger_recompute(&mut self, now: Instant) {
        let spacing = self.route_spacing();
        match self.last_recompute {
            Some(last) if now < last + spacing => {
                self.recompute_due = self.recompute_due.min(last + spacing);
            }
            _ => {
                self.recompute_due = now + RECOMPUTE_INTERVAL;
                self.recompute_routes(now);
            }
        }
    }

    /// Whether `ri` stays within the limits on the link-state database.
    fn check_limits(&self, ri: &RoutingUpdate, known: bool) -> Result<(), Refusal> {
        let l = &self.limits;
        if ri.node_id.len() > l.max_node_id_len
            || ri.connections.keys().any(|k| k.len() > l.max_node_id_len)
        {
            return Err(Refusal::NameTooLong);
        }
        if ri.connections.len() > l.max_node_connections {
            return Err(Refusal::TooManyConnections);
        }
        if !known && self.known_costs.node_count() >= l.max_nodes {
            return Err(Refusal::TooManyNodes);
        }
        let held = self.known_costs.links(&ri.node_id).map_or(0, BTreeMap::len);
        if self.known_costs.link_count() - held + ri.connections.len() > l.max_links {
            return Err(Refusal::TooManyLinks);
        }
        Ok(())
    }

    fn handle_routing_update(&mut self, now: Instant, mut ri: RoutingUpdate, from: SessionId) {
        if ri.node_id.is_empty() {
            return;
        }
        if ri.node_id == self.id {
            if ri.update_epoch == self.epoch {
                return;
            }
            if ri.suspected_duplicate == self.epoch {
                warn!(node = %self.id, epoch = self.epoch, "we are a duplicate node; shutting down");
                self.shutdown(now);
                self.events.push_back(Event::DuplicateNode);
                return;
            }
            if ri.update_epoch > self.epoch {
                warn!(node = %self.id, "duplicate node ID detected");
                self.send_routing_update(ri.update_epoch);
            }
            return;
        }
        if let Err(refusal) = self.check_limits(&ri, self.known_info.contains_key(&ri.node_id)) {
            // Not recorded as seen and not flooded on: as if it never came.
            self.updates_refused += 1;
            let what = format!("routing update from {} ignored", ri.node_id);
            self.bad_message(from, &what, &refusal);
            return;
        }
        if !self.seen.insert(now, &ri.update_id) {
            return;
        }
        if ri.suspected_duplicate != 0 {
            warn!(node = %ri.node_id, suspected = ri.suspected_duplicate, "update suspects a duplicate node");
            if let Some(ni) = self.known_info.get_mut(&ri.node_id) {
                if ni.epoch == ri.suspected_duplicate {
                    ni.epoch = ri.update_epoch;
                    ni.sequence = ri.update_sequence;
                }
            }
        } else {
            match self.known_info.get(&ri.node_id) {
                Some(ni) => {
                    if ri.update_epoch < ni.epoch
                        || (ri.update_epoch == ni.epoch && ri.update_sequence <= ni.sequence)
                    {
                        return;
                    }
                }
                None => {
                    self.trigger_update(now);
                    self.add_name_deferred(&ri.node_id);
                }
            }
            debug!(update_id = %ri.update_id, node = %ri.node_id, "received routing update");
            self.known_info.insert(
                ri.node_id.clone(),
                NodeInfo {
                    epoch: ri.update_epoch,
                    sequence: ri.update_sequence,
                    heard: now,
                },
            );
            if self.known_costs.links(&ri.node_id) != Some(&ri.connections) {
                self.known_costs
                    .replace(&ri.node_id, ri.connections.clone());
                // Nodes that list the sender while it no longer lists them lose
                // that edge.
                for node in self.known_costs.listing(&ri.node_id) {
                    if node != self.id && !ri.connections.contains_key(&node) {
                        self.known_costs.remove_edge(&node, &ri.node_id);
                    }
                }
                self.trigger_recompute(now);
            }
        }
        ri.forwarding_node.clone_from(&self.id);
        self.flood(Bytes::from(ri.encode()), Some(from));
    }

    fn recompute_routes(&mut self, now: Instant) {
        self.last_recompute = Some(now);
        self.recomputations += 1;
        let routes = shortest_paths(&self.id, self.known_costs.costs());
        if std::mem::take(&mut self.names_changed) {
            self.routes_changed = true;
        }
        if routes != self.routes {
            self.routing_table = routes
                .iter()
                .map(|(d, r)| (d.clone(), r.next_hop.clone()))
                .collect();
            self.routes = routes;
            self.routes_changed = true;
            debug!(routes = ?self.routing_table, "routing table changed");
        }
    }

    // ----- names ---------------------------------------------------------------------

    /// Adds a name to the hash → name table (`localhost` means this node; the first
    /// name inserted for a hash wins) and returns its hash.
    pub fn add_name(&mut self, name: &str) -> u64 {
        let name = if name.eq_ignore_ascii_case("localhost") {
            self.id.as_str()
        } else {
            name
        };
        let h = node_hash(name);
        if let std::collections::hash_map::Entry::Vacant(e) = self.names.entry(h) {
            e.insert(name.to_owned());
            self.routes_changed = true;
        }
        h
    }

    /// [`NodeState::add_name`] for a node learnt from a routing update: the name is
    /// published with the routes its update leads to, not on its own.
    fn add_name_deferred(&mut self, name: &str) {
        let h = node_hash(name);
        if let std::collections::hash_map::Entry::Vacant(e) = self.names.entry(h) {
            e.insert(name.to_owned());
            self.names_changed = true;
        }
    }

    /// Forgets the nodes that are unreachable and were not heard from for the
    /// limits' `node_expiry`: their entry, their links and their name.
    fn expire_nodes(&mut self, now: Instant) {
        let Some(expiry) = self.limits.node_expiry else {
            return;
        };
        let stale: Vec<String> = self
            .known_info
            .iter()
            .filter(|(n, i)| {
                now.saturating_duration_since(i.heard) > expiry
                    && !self.routes.contains_key(n.as_str())
                    && !self.peers.contains_key(n.as_str())
            })
            .map(|(n, _)| n.clone())
            .collect();
        if stale.is_empty() {
            return;
        }
        info!(
            count = stale.len(),
            "forgetting unreachable nodes not heard from"
        );
        for n in &stale {
            self.known_info.remove(n);
            self.known_costs.remove_node(n);
            let h = node_hash(n);
            if self.names.get(&h) == Some(n) {
                self.names.remove(&h);
            }
        }
        self.routes_changed = true;
        self.trigger_recompute(now);
    }

    /// Number of nodes in the link-state database (this one included).
    pub fn known_node_count(&self) -> usize {
        self.known_costs.node_count()
    }

    /// The hash → name table.
    pub fn names(&self) -> &HashKeyedMap<String> {
        &self.names
    }

    /// Destination → route.
    pub fn routes(&self) -> &BTreeMap<String, Route> {
        &self.routes
    }

    /// Destination → next hop.
    pub fn routing_table(&self) -> &BTreeMap<String, String> {
        &self.routing_table
    }

    /// Established neighbours → session.
    pub fn peers(&self) -> &BTreeMap<String, SessionId> {
        &self.peers
    }

    /// The link-state database.
    pub fn known_connection_costs(&self) -> &LinkCosts {
        self.known_costs.costs()
    }

    /// True once after the routing table, the set of established sessions or the
    /// name table changed: the driver republishes its forwarding snapshot.
    pub fn take_routes_changed(&mut self) -> bool {
        std::mem::take(&mut self.routes_changed)
    }

    // ----- service advertisements ----------------------------------------------------

    fn wall_at(&self, now: Instant) -> GoTime {
        GoTime::from_system_time(self.wall_base + now.saturating_duration_since(self.instant_base))
    }

    /// Starts advertising a local service (sent 5 s later, then every 60 s).
    pub fn add_local_service(
        &mut self,
        now: Instant,
        service: &str,
        conn_type: u8,
        tags: Option<BTreeMap<String, String>>,
    ) {
        let time = self.wall_at(now);
        self.ads.insert(
            (self.id.clone(), service.to_owned()),
            StoredAd {
                ad: ServiceAdvertisement {
                    node_id: self.id.clone(),
                    service: service.to_owned(),
                    time: time.to_string(),
                    conn_type,
                    tags: tags.clone(),
                    work_commands: None,
                },
                time,
            },
        );
        self.local_services
            .insert(service.to_owned(), LocalService { conn_type, tags });
        self.service_ads_due = self.service_ads_due.min(now + SERVICE_AD_DELAY);
    }

    /// Stops advertising a local service and floods its cancellation.
    pub fn remove_local_service(&mut self, now: Instant, service: &str) {
        let local = self.local_services.remove(service);
        let stored = self.ads.remove(&(self.id.clone(), service.to_owned()));
        let conn_type = local
            .map(|l| l.conn_type)
            .or(stored.map(|s| s.ad.conn_type))
            .unwrap_or(0);
        let ad = ServiceAdvertisement {
            node_id: self.id.clone(),
            service: service.to_owned(),
            time: self.wall_at(now).to_string(),
            conn_type,
            tags: None,
            work_commands: None,
        };
        self.flood(Bytes::from(SvcadMessage::encode(&ad, true)), None);
    }

    /// Sets the work commands carried by control-service ads; they go out 5 s later.
    pub fn set_work_commands(&mut self, now: Instant, cmds: Vec<WorkCommand>) {
        self.work_commands = cmds;
        if !self.local_services.is_empty() {
            self.service_ads_due = self.service_ads_due.min(now + SERVICE_AD_DELAY);
        }
    }

    fn own_ad(&self, service: &str, local: &LocalService, time: GoTime) -> ServiceAdvertisement {
        let mut ad = ServiceAdvertisement {
            node_id: self.id.clone(),
            service: service.to_owned(),
            time: time.to_string(),
            conn_type: local.conn_type,
            tags: local.tags.clone(),
            work_commands: None,
        };
        if ad.is_control_service() && !self.work_commands.is_empty() {
            ad.work_commands = Some(self.work_commands.clone());
        }
        ad
    }

    fn send_service_ads(&mut self, now: Instant) {
        if self.peers.is_empty() {
            return;
        }
        let time = self.wall_at(now);
        let msgs: Vec<Bytes> = self
            .local_services
            .iter()
            .map(|(s, l)| Bytes::from(SvcadMessage::encode(&self.own_ad(s, l, time), false)))
            .collect();
        for m in msgs {
            self.flood(m, None);
        }
    }

    fn handle_service_ad(&mut self, _now: Instant, from: SessionId, msg: &[u8]) {
        let sa = match SvcadMessage::decode(&msg[1..]) {
            Ok(sa) => sa,
            Err(e) => {
                self.bad_message(from, "error handling service advertisement", &e);
                return;
            }
        };
        debug!(node = %sa.ad.node_id, service = %sa.ad.service, "received service advertisement");
        let key = (sa.ad.node_id.clone(), sa.ad.service.clone());
        match self.ads.get(&key) {
            Some(cur) if sa.time <= cur.time => return,
            None if !sa.cancel && self.ads.len() >= MAX_SERVICE_ADS => {
                warn!(node = %sa.ad.node_id, "too many service advertisements; ignoring");
                return;
            }
            _ => {}
        }
        if sa.cancel {
            self.ads.remove(&key);
        } else {
            self.ads.insert(
                key,
                StoredAd {
                    ad: sa.ad,
                    time: sa.time,
                },
            );
        }
        self.flood(Bytes::copy_from_slice(msg), Some(from));
    }

    /// Every advertisement known, sorted by (node, service); own ones carry `now`
    /// and, like Go, the work commands when there are any.
    pub fn advertisements(&self, now: Instant) -> Vec<ServiceAdvertisement> {
        let time = self.wall_at(now).to_string();
        self.ads
            .values()
            .map(|s| {
                let mut ad = s.ad.clone();
                if ad.node_id == self.id {
                    ad.time.clone_from(&time);
                    if !self.work_commands.is_empty() {
                        ad.work_commands = Some(self.work_commands.clone());
                    }
                }
                ad
            })
            .collect()
    }

    /// A status snapshot.
    pub fn status(&self, now: Instant) -> NodeStatus {
        NodeStatus {
            connections: self
                .peers
                .iter()
                .filter_map(|(p, sid)| Some((p.clone(), self.sessions.get(sid)?.cost)))
                .collect(),
            routing_table: self.routing_table.clone(),
            known_connection_costs: self.known_costs.costs().clone(),
            advertisements: self.advertisements(now),
        }
    }

    // ----- time ----------------------------------------------------------------------

    /// When [`NodeState::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.shut_down {
            return None;
        }
        let mut t = self
            .update_timer
            .due()
            .min(self.recompute_due)
            .min(self.service_ads_due)
            .min(self.idle_check_due)
            .min(self.seen_purge_due);
        for s in self.sessions.values() {
            if let SessionState::Connecting { next_send, .. } = s.state {
                t = t.min(next_send);
            }
            if !s.coalesced.is_empty() {
                t = t.min(s.budget.next_token(s.last_rx));
            }
        }
        Some(t)
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.shut_down {
            return;
        }
        let due: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| matches!(s.state, SessionState::Connecting { next_send, .. } if next_send <= now))
            .map(|(sid, _)| *sid)
            .collect();
        for sid in due {
            self.send_initial(now, sid);
        }
        self.drain_coalesced(now);
        if self.idle_check_due <= now {
            self.idle_check_due = now + IDLE_CHECK_INTERVAL;
            self.check_idle(now);
            self.expire_nodes(now);
        }
        self.send_due_update(now);
        if self.recompute_due <= now {
            self.recompute_due = now + RECOMPUTE_INTERVAL;
            self.recompute_routes(now);
        }
        if self.service_ads_due <= now {
            self.service_ads_due = now + SERVICE_AD_INTERVAL;
            self.send_service_ads(now);
        }
        if self.seen_purge_due <= now {
            self.seen_purge_due = now + SEEN_UPDATE_EXPIRY / 2;
            self.seen.purge(now);
        }
    }

    fn check_idle(&mut self, now: Instant) {
        let idle: Vec<(SessionId, String)> = self
            .sessions
            .iter()
            .filter_map(|(sid, s)| match &s.state {
                SessionState::Established { peer, .. }
                    if now.saturating_duration_since(s.last_rx) > self.max_idle =>
                {
                    Some((*sid, peer.clone()))
                }
                _ => None,
            })
            .collect();
        for (sid, peer) in idle {
            let reason = CloseReason::Idle {
                peer,
                idle: self.max_idle,
            };
            self.close_session(now, sid, reason, false);
        }
    }

    // ----- output --------------------------------------------------------------------

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests;
