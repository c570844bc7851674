//! The DATA path: delivering, answering and forwarding datagrams.
//!
//! Session readers and local senders run DATA messages through [`DataPath::handle`]
//! themselves, using tables the node task publishes ([`RouteTable`],
//! [`ServiceTable`]); the node task never sees DATA. Forwarding decodes only the
//! 36-byte header, decrements HopsToLive in place and hands the same buffer to the
//! next hop's bounded queue (waiting for room: back-pressure reaches the sender).
//!
//! Every DATA message this node handles (originated, delivered or in transit)
//! passes [`DataPath::step`], where the firewall hook sits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use receptor_proto::data::{
    DataHeader, ServiceName, UnreachableMessage, DATA_HEADER_LEN, HOPS_TO_LIVE_OFFSET,
    PING_SERVICE, PROBLEM_EXPIRED, PROBLEM_REJECTED, PROBLEM_SERVICE_UNKNOWN, UNREACH_SERVICE,
};
use receptor_proto::frame::MAX_FRAME_LEN;
use receptor_proto::hash::HashKeyedMap;
use tokio::sync::mpsc;
use tracing::{debug, trace};

use super::snapshot::{Cached, Published};
use super::MeshError;
use crate::metrics::DataCounters;

/// A session's queue of outgoing DATA messages.
pub(crate) type DataTx = mpsc::Sender<Bytes>;

/// What a firewall decides for one DATA message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirewallVerdict {
    /// Let it through.
    Accept,
    /// Discard it and tell the sender (`blocked by firewall`).
    Reject,
    /// Discard it silently.
    Drop,
}

/// The addresses of a DATA message, as a firewall sees them.
#[derive(Debug, Clone, Copy)]
pub struct FirewallMessage<'a> {
    /// Sending node.
    pub from_node: &'a str,
    /// Destination node.
    pub to_node: &'a str,
    /// Sending service (raw bytes, usually ASCII).
    pub from_service: &'a [u8],
    /// Destination service.
    pub to_service: &'a [u8],
}

/// Rules applied to every DATA message the node handles (`node.firewallrules`).
pub trait Firewall: Send + Sync + 'static {
    /// The verdict for one message.
    fn check(&self, msg: &FirewallMessage<'_>) -> FirewallVerdict;
}

/// Forwarding state published by the node task.
#[derive(Default)]
pub(crate) struct RouteTable {
    /// Hash → node name (Go's name-hash table).
    pub(crate) names: HashKeyedMap<Arc<str>>,
    /// Destination hash → queue of the next-hop session.
    pub(crate) next_hop: HashKeyedMap<DataTx>,
    /// Firewall rules, if any.
    pub(crate) firewall: Option<Arc<dyn Firewall>>,
}

/// Something delivered to a local socket.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// A datagram.
    Data {
        /// Sending node.
        from_node: Arc<str>,
        /// Sending service.
        from_service: ServiceName,
        /// Payload (shares the received buffer).
        data: Bytes,
    },
    /// An unreachable notice about a message this socket sent.
    Unreachable {
        /// The node that reported it.
        reported_by: Arc<str>,
        /// The notice.
        msg: UnreachableMessage,
    },
}

/// Local sockets by service name, published by the node task.
#[derive(Default)]
pub(crate) struct ServiceTable {
    pub(crate) sockets: HashMap<ServiceName, mpsc::Sender<Delivery>>,
}

/// Why a DATA message was not handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DataError {
    /// Shorter than the DATA header.
    #[error("data too short to be a valid message")]
    TooShort,
    /// A node hash not in the name table.
    #[error("hash not found")]
    HashNotFound,
    /// No route to the destination.
    #[error("no route to node")]
    NoRoute,
    /// The next hop's session is closing.
    #[error("no connection to next hop")]
    NextHopGone,
    /// Locally originated message to a local service nobody listens on.
    #[error("service unknown")]
    ServiceUnknown,
    /// An unreachable notice whose payload is not valid JSON.
    #[error("bad unreachable message")]
    BadUnreachable,
}

impl DataError {
    /// A small index per kind, for log-once bookkeeping.
    pub(crate) fn index(self) -> u32 {
        self as u32
    }
}

/// A reader's cached view of the published tables.
pub(crate) struct Cursor {
    routes: Cached<RouteTable>,
    services: Cached<ServiceTable>,
}

/// Shared by everything that handles DATA messages.
pub(crate) struct DataPath {
    node_id: Arc<str>,
    own_hash: u64,
    pub(crate) routes: Published<RouteTable>,
    pub(crate) services: Published<ServiceTable>,
    /// What happened to the DATA messages handled here.
    pub(crate) counters: DataCounters,
}

/// Longest payload a DATA message can carry on every backend.
pub(crate) const MAX_PAYLOAD: usize = MAX_FRAME_LEN - DATA_HEADER_LEN;

/// How long a DATA message waits for room in a local socket's queue.
const LOCAL_DELIVERY_WAIT: Duration = Duration::from_millis(500);

/// Follow-up messages one DATA message may cause (ping reply, unreachable, and an
/// unreachable about those); a safety bound, never reached in practice.
const MAX_FOLLOW_UPS: usize = 4;

impl DataPath {
    /// A data path for node `node_id` with empty tables.
    pub(crate) fn new(node_id: &str) -> DataPath {
        DataPath {
            node_id: Arc::from(node_id),
            own_hash: receptor_proto::hash::node_hash(node_id),
            routes: Published::new(RouteTable::default()),
            services: Published::new(ServiceTable::default()),
            counters: DataCounters::default(),
        }
    }

    /// A cursor on the current tables.
    pub(crate) fn cursor(&self) -> Cursor {
        Cursor {
            routes: Cached::new(&self.routes),
            services: Cached::new(&self.services),
        }
    }

    /// Handles a DATA message received from a session or originated here, and what
    /// it causes (ping replies, unreachable notices). Returns the error of the
    /// message itself; errors of follow-ups are only logged.
    pub(crate) async fn handle(&self, cur: &mut Cursor, msg: BytesMut) -> Result<(), DataError> {
        self.handle_to(cur, msg, None).await
    }

    /// [`DataPath::handle`] for a message whose destination name the caller knows (a locally
    /// originated one): like Go, it is addressed even when the name is in no table, so that
    /// it expires here (HopsToLive 0) or fails with `no route to node`.
    async fn handle_to(
        &self,
        cur: &mut Cursor,
        msg: BytesMut,
        to_node: Option<&str>,
    ) -> Result<(), DataError> {
        let mut next = self.step(cur, msg, to_node).await?;
        let mut budget = MAX_FOLLOW_UPS;
        while let Some(m) = next.take() {
            if budget == 0 {
                debug!("dropping follow-up message: too many in a row");
                break;
            }
            budget -= 1;
            match self.step(cur, m, None).await {
                Ok(follow) => next = follow,
                Err(e) => debug!(error = %e, "could not send reply"),
            }
        }
        Ok(())
    }

    /// Originates a DATA message from local service `from_service`.
    pub(crate) async fn send(
        &self,
        cur: &mut Cursor,
        from_service: ServiceName,
        to_node: &str,
        to_service: &str,
        payload: &[u8],
        hops_to_live: u8,
    ) -> Result<(), MeshError> {
        let to_service = ServiceName::new(to_service).map_err(|_| MeshError::ServiceNameTooLong)?;
        if payload.len() > MAX_PAYLOAD {
            return Err(MeshError::Other(format!(
                "message too long ({} bytes, at most {MAX_PAYLOAD})",
                payload.len()
            )));
        }
        let to_node = if to_node.eq_ignore_ascii_case("localhost") {
            &*self.node_id
        } else {
            to_node
        };
        let header = DataHeader {
            hops_to_live,
            from_node: self.own_hash,
            to_node: receptor_proto::hash::node_hash(to_node),
            from_service,
            to_service,
        };
        let mut msg = BytesMut::with_capacity(DATA_HEADER_LEN + payload.len());
        msg.extend_from_slice(&header.encode());
        msg.extend_from_slice(payload);
        self.handle_to(cur, msg, Some(to_node))
            .await
            .map_err(|e| match e {
                DataError::NoRoute | DataError::HashNotFound | DataError::NextHopGone => {
                    MeshError::NoRoute
                }
                other => MeshError::Other(other.to_string()),
            })
    }

    /// One DATA message through firewall, local delivery or forwarding. `known_to` names the
    /// destination when the name table may not (locally originated messages).
    async fn step(
        &self,
        cur: &mut Cursor,
        mut msg: BytesMut,
        known_to: Option<&str>,
    ) -> Result<Option<BytesMut>, DataError> {
        let hdr = DataHeader::decode(&msg).map_err(|_| DataError::TooShort)?;
        let routes = cur.routes.get(&self.routes);
        let from_name = routes
            .names
            .get(&hdr.from_node)
            .ok_or(DataError::HashNotFound)?;
        let to_name: &str = match routes.names.get(&hdr.to_node) {
            Some(name) => name,
            None => known_to.ok_or(DataError::HashNotFound)?,
        };

        // Firewall hook: every DATA message handled by this node is checked here.
        if let Some(fw) = &routes.firewall {
            let verdict = fw.check(&FirewallMessage {
                from_node: from_name,
                to_node: to_name,
                from_service: hdr.from_service.as_bytes(),
                to_service: hdr.to_service.as_bytes(),
            });
            match verdict {
                FirewallVerdict::Accept => {}
                FirewallVerdict::Drop => {
                    self.counters.dropped_firewall.inc();
                    return Ok(None);
                }
                FirewallVerdict::Reject => {
                    self.counters.dropped_firewall.inc();
                    if hdr.from_service.is(UNREACH_SERVICE) {
                        return Ok(None);
                    }
                    return Ok(Some(self.unreachable(
                        &hdr,
                        from_name,
                        to_name,
                        PROBLEM_REJECTED,
                    )));
                }
            }
        }

        if hdr.to_node == self.own_hash {
            self.counters.delivered.inc();
            let services = cur.services.get(&self.services);
            return self
                .deliver_local(services, &hdr, from_name, to_name, msg)
                .await;
        }

        if hdr.hops_to_live == 0 {
            self.counters.dropped_hop_limit.inc();
            if hdr.from_service.is(UNREACH_SERVICE) {
                return Ok(None);
            }
            return Ok(Some(self.unreachable(
                &hdr,
                from_name,
                to_name,
                PROBLEM_EXPIRED,
            )));
        }
        let Some(tx) = routes.next_hop.get(&hdr.to_node) else {
            self.counters.dropped_unreachable.inc();
            return Err(DataError::NoRoute);
        };
        msg[HOPS_TO_LIVE_OFFSET] -= 1;
        trace!(to = %to_name, len = msg.len(), "forwarding data");
        if tx.send(msg.freeze()).await.is_err() {
            self.counters.dropped_unreachable.inc();
            return Err(DataError::NextHopGone);
        }
        self.counters.forwarded.inc();
        Ok(None)
    }

    async fn deliver_local(
        &self,
        services: &ServiceTable,
        hdr: &DataHeader,
        from_name: &Arc<str>,
        to_name: &str,
        msg: BytesMut,
    ) -> Result<Option<BytesMut>, DataError> {
        if hdr.to_service.is(PING_SERVICE) {
            let reply = self.build(PING_SERVICE, hdr.from_node, hdr.from_service, &[]);
            return Ok(Some(reply));
        }
        if hdr.to_service.is(UNREACH_SERVICE) {
            let notice = UnreachableMessage::from_json(&msg[DATA_HEADER_LEN..])
                .map_err(|_| DataError::BadUnreachable)?;
            debug!(from = %from_name, problem = %notice.problem, to_node = %notice.to_node,
                   to_service = %notice.to_service, "received unreachable message");
            if notice.from_node == *self.node_id {
                if let Ok(svc) = ServiceName::new(&notice.from_service) {
                    if let Some(tx) = services.sockets.get(&svc) {
                        let _ = tx.try_send(Delivery::Unreachable {
                            reported_by: from_name.clone(),
                            msg: notice,
                        });
                    }
                }
            }
            return Ok(None);
        }
        if let Some(tx) = services.sockets.get(&hdr.to_service) {
            let delivery = Delivery::Data {
                from_node: from_name.clone(),
                from_service: hdr.from_service,
                data: msg.freeze().slice(DATA_HEADER_LEN..),
            };
            // Back-pressure reaches local sockets too, but a socket nobody reads
            // must not stall the session for good: after a while the datagram is
            // dropped, as a full UDP receive buffer would drop it.
            let delivery = match tx.try_send(delivery) {
                Ok(()) => return Ok(None),
                Err(mpsc::error::TrySendError::Full(d)) => Some(d),
                Err(mpsc::error::TrySendError::Closed(_)) => None,
            };
            if let Some(d) = delivery {
                match tx.send_timeout(d, LOCAL_DELIVERY_WAIT).await {
                    Err(mpsc::error::SendTimeoutError::Closed(_)) => {}
                    Ok(()) => return Ok(None),
                    Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                        trace!(service = %hdr.to_service, "local socket not reading; datagram dropped");
                        return Ok(None);
                    }
                }
            }
        }
        if hdr.from_node == self.own_hash {
            return Err(DataError::ServiceUnknown);
        }
        Ok(Some(self.unreachable(
            hdr,
            from_name,
            to_name,
            PROBLEM_SERVICE_UNKNOWN,
        )))
    }

    /// A message from our service `from_service` (reserved names only).
    fn build(
        &self,
        from_service: &str,
        to_node: u64,
        to_service: ServiceName,
        payload: &[u8],
    ) -> BytesMut {
        let header = DataHeader {
            hops_to_live: receptor_proto::data::MAX_FORWARDING_HOPS,
            from_node: self.own_hash,
            to_node,
            from_service: ServiceName::new(from_service).unwrap_or_default(),
            to_service,
        };
        let mut msg = BytesMut::with_capacity(DATA_HEADER_LEN + payload.len());
        msg.extend_from_slice(&header.encode());
        msg.extend_from_slice(payload);
        msg
    }

    /// An unreachable notice about `hdr` for its sender.
    fn unreachable(&self, hdr: &DataHeader, from: &str, to: &str, problem: &str) -> BytesMut {
        let notice = UnreachableMessage {
            from_node: from.to_owned(),
            to_node: to.to_owned(),
            from_service: hdr.from_service.to_string_lossy(),
            to_service: hdr.to_service.to_string_lossy(),
            problem: problem.to_owned(),
        };
        let unreach = ServiceName::new(UNREACH_SERVICE).unwrap_or_default();
        self.build(UNREACH_SERVICE, hdr.from_node, unreach, &notice.to_json())
    }
}
