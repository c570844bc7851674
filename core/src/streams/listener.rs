//! Listening for stream connections on a service.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Endpoint, VarInt};
use receptor_proto::svcad::{ServiceAdvertisement, WorkCommand};
use rustls::pki_types::CertificateDer;
use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit, Semaphore};

use super::socket::{lock, spawn_socket, AddressTable, PeerEvent};
use super::stream::{ConnOwner, MeshStream, Role, StreamParts, CODE_ERROR};
use super::{
    runtime, tls, watch_peer, DatagramNetwork, DatagramSocket, StreamConfig, StreamError,
    CONN_TYPE_STREAM, CONN_TYPE_STREAM_TLS, MUX_MAX_STREAMS, SHARED_RECEIVE_WINDOW,
};
use crate::tls::TlsError;

/// Connections accepted but not yet taken by [`StreamListener::accept`].
const ACCEPT_QUEUE: usize = 16;
/// Connections in handshake or waiting for their first stream; more are refused.
const MAX_PENDING: usize = 256;

/// Extra check of a ConnType 2 client: given the client's node ID (from its mesh
/// address) and its certificate chain, accept (`Ok`) or refuse with a reason. Used for
/// `requireclientcert` services, whose client certificate must name the client node.
pub type PeerCheck =
    Arc<dyn Fn(&str, &[CertificateDer<'static>]) -> Result<(), TlsError> + Send + Sync>;

/// How to listen.
#[derive(Clone, Default)]
pub struct ListenOptions {
    /// User TLS (ConnType 2); `None` = the insecure ConnType 1 scheme.
    pub tls: Option<rustls::ServerConfig>,
    /// Advertise the service to the mesh while listening.
    pub advertise: bool,
    /// Tags of the advertisement.
    pub tags: Option<BTreeMap<String, String>>,
    /// Work commands of the advertisement (the control service's).
    pub work_commands: Option<Vec<WorkCommand>>,
    /// Check of the client's certificate against its node ID (ConnType 2 only).
    pub peer_check: Option<PeerCheck>,
    /// QUIC parameters.
    pub config: StreamConfig,
}

impl std::fmt::Debug for ListenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenOptions")
            .field("tls", &self.tls.is_some())
            .field("advertise", &self.advertise)
            .field("tags", &self.tags)
            .field("work_commands", &self.work_commands)
            .field("peer_check", &self.peer_check.is_some())
            .field("config", &self.config)
            .finish()
    }
}

type Accepted = (MeshStream, String);

/// A service accepting stream connections.
///
/// Dropping it stops accepting (new connections are refused with CONNECTION_REFUSED);
/// streams already accepted keep working, and the service stays registered until the
/// last of them ends.
pub struct StreamListener {
    accepted: mpsc::Receiver<Accepted>,
    service: String,
    conn_type: u8,
}

/// Listens on `service` (ConnType 1 if `tls` is `None`, else ConnType 2), without
/// advertising it. An empty `service` picks an ephemeral name.
pub async fn listen<N: DatagramNetwork>(
    net: &N,
    service: &str,
    tls: Option<rustls::ServerConfig>,
) -> Result<StreamListener, StreamError> {
    listen_with(
        net,
        service,
        ListenOptions {
            tls,
            ..ListenOptions::default()
        },
    )
    .await
}

/// Listens on `service` with explicit options.
pub async fn listen_with<N: DatagramNetwork>(
    net: &N,
    service: &str,
    opts: ListenOptions,
) -> Result<StreamListener, StreamError> {
    let cfg = opts.config;
    let (tls_cfg, conn_type) = match opts.tls {
        None => (
            {
                let mut c = tls::insecure_server_config(cfg.insecure_key).await?;
                c.alpn_protocols = tls::server_alpn();
                c
            },
            CONN_TYPE_STREAM,
        ),
        Some(user) => (tls::user_server_config(user), CONN_TYPE_STREAM_TLS),
    };
    let quic_tls =
        QuicServerConfig::try_from(tls_cfg).map_err(|e| tls::TlsSetupError::Quic(e.to_string()))?;
    let mut server_cfg = quinn::ServerConfig::with_crypto(Arc::new(quic_tls));
    server_cfg.transport_config(Arc::new(cfg.transport_config(Role::Acceptor)?));

    let advertise = opts.advertise.then(|| ServiceAdvertisement {
        node_id: net.node_id().to_owned(),
        service: service.to_owned(),
        time: String::new(),
        conn_type,
        tags: opts.tags.clone(),
        work_commands: opts.work_commands.clone(),
    });
    let name = (!service.is_empty()).then_some(service);
    let sock = net.open(name, advertise).await?;
    let service = sock.service().to_owned();
    let (parts, _) = spawn_socket(sock, cfg.evict_after(), None);
    let events_rx = parts.events.subscribe();
    let endpoint = Endpoint::new_with_abstract_socket(
        cfg.endpoint_config(Some((net.node_id(), &service)))?,
        Some(server_cfg),
        parts.socket.clone(),
        runtime(),
    )?;
    let (tx, accepted) = mpsc::channel(ACCEPT_QUEUE);
    let ctx = Arc::new(AcceptCtx {
        table: parts.table.clone(),
        events: parts.events.clone(),
        tx,
        cfg,
        peer_check: opts.peer_check,
        local_service: service.clone(),
    });
    tokio::spawn(accept_loop(endpoint, events_rx, ctx));
    Ok(StreamListener {
        accepted,
        service,
        conn_type,
    })
}

impl StreamListener {
    /// Waits for the next connection that completed its handshake and sent the `0x00`
    /// preamble; yields the stream and the dialing node's ID.
    pub async fn accept(&mut self) -> Result<(MeshStream, String), StreamError> {
        self.accepted
            .recv()
            .await
            .ok_or(StreamError::ListenerClosed)
    }

    /// The service name listened on.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// ConnType of the service (1 insecure, 2 user TLS).
    pub fn conn_type(&self) -> u8 {
        self.conn_type
    }
}

impl std::fmt::Debug for StreamListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamListener")
            .field("service", &self.service)
            .field("conn_type", &self.conn_type)
            .finish()
    }
}

/// What the per-connection setup tasks share.
struct AcceptCtx {
    table: Arc<Mutex<AddressTable>>,
    events: broadcast::Sender<PeerEvent>,
    tx: mpsc::Sender<Accepted>,
    cfg: StreamConfig,
    peer_check: Option<super::PeerCheck>,
    local_service: String,
}

/// Whether a peer event means the mesh socket is gone.
fn is_shutdown(ev: &Result<PeerEvent, broadcast::error::RecvError>) -> bool {
    matches!(
        ev,
        Ok(PeerEvent::Shutdown) | Err(broadcast::error::RecvError::Closed)
    )
}

/// Takes incoming QUIC connections and sets each up in its own task; once the
/// [`StreamListener`] is dropped, refuses new ones until the accepted connections are
/// gone, then lets the endpoint (and with it the service) go.
async fn accept_loop(
    endpoint: Endpoint,
    mut events: broadcast::Receiver<PeerEvent>,
    ctx: Arc<AcceptCtx>,
) {
    if !accept_until_dropped(&endpoint, &mut events, &ctx).await {
        return;
    }
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming.refuse(),
                None => return,
            },
            () = endpoint.wait_idle() => return,
            ev = events.recv() => if is_shutdown(&ev) { return },
        }
    }
}

/// Accepts until the listener is dropped (returns `true`) or the endpoint or the mesh
/// socket ends (`false`).
async fn accept_until_dropped(
    endpoint: &Endpoint,
    events: &mut broadcast::Receiver<PeerEvent>,
    ctx: &Arc<AcceptCtx>,
) -> bool {
    let pending = Arc::new(Semaphore::new(MAX_PENDING));
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { return false };
                match pending.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(set_up(incoming, permit, ctx.clone()));
                    }
                    Err(_) => {
                        tracing::debug!(service = %ctx.local_service, "too many pending stream connections, refusing one");
                        incoming.refuse();
                    }
                }
            }
            ev = events.recv() => {
                if is_shutdown(&ev) {
                    // The mesh socket is gone: `accept()` reports the listener closed.
                    return false;
                }
            }
            () = ctx.tx.closed() => return true,
        }
    }
}

fn close(conn: &quinn::Connection, reason: &str) {
    conn.close(VarInt::from_u32(CODE_ERROR), reason.as_bytes());
}

/// Handshake, first stream, `0x00` preamble; then hands the stream to `accept()`.
async fn set_up(incoming: quinn::Incoming, permit: OwnedSemaphorePermit, ctx: Arc<AcceptCtx>) {
    let remote = incoming.remote_address();
    let conn = match incoming.accept() {
        Ok(connecting) => match tokio::time::timeout(ctx.cfg.handshake_timeout, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                tracing::debug!(service = %ctx.local_service, error = %e, "stream handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(service = %ctx.local_service, "stream handshake timed out");
                return;
            }
        },
        Err(e) => {
            tracing::debug!(service = %ctx.local_service, error = %e, "stream connection refused");
            return;
        }
    };
    let Some(peer) = lock(&ctx.table).name_of(remote) else {
        close(&conn, "unknown peer");
        return;
    };
    if let Some(check) = &ctx.peer_check {
        if let Err(reason) = check_peer(&conn, &peer.node, check) {
            tracing::warn!(node = %peer.node, %reason, "stream client refused");
            close(&conn, &reason.to_string());
            return;
        }
    }
    crate::metrics::node().stream_connections_accepted.inc();
    watch_peer(conn.clone(), ctx.events.subscribe(), remote);
    let shared = tls::is_shared(&conn);
    if shared {
        // Our own pooled dialer: any number of streams, each with its preamble.
        conn.set_max_concurrent_bi_streams(VarInt::from_u32(MUX_MAX_STREAMS));
        conn.set_receive_window(VarInt::from_u32(SHARED_RECEIVE_WINDOW));
    }
    let Some((send, recv)) = first_stream(&conn, ctx.cfg.accept_stream_timeout).await else {
        return;
    };
    drop(permit);
    let node = peer.node.to_string();
    let wrap = |send, recv| {
        MeshStream::new(StreamParts {
            conn: conn.clone(),
            send,
            recv,
            endpoint: None,
            owner: if shared {
                ConnOwner::Shared { _lease: None }
            } else {
                ConnOwner::Stream
            },
            role: Role::Acceptor,
            remote_node: node.clone(),
            remote_service: peer.service.to_string(),
            local_service: ctx.local_service.clone(),
            linger: ctx.cfg.max_idle_timeout,
        })
    };
    if ctx.tx.send((wrap(send, recv), node.clone())).await.is_err() {
        close(&conn, "Listener Closed");
        return;
    }
    if !shared {
        return;
    }
    // Further streams until the client closes the connection (the listener going away
    // closes it too). Each stream's preamble is read in a task of its own, so that a slow
    // one holds up no other; at most MUX_MAX_STREAMS are open at once.
    while let Ok((send, recv)) = conn.accept_bi().await {
        let stream = wrap(send, recv);
        let (ctx, node, conn) = (ctx.clone(), node.clone(), conn.clone());
        tokio::spawn(async move {
            let Some(stream) = preamble(stream, ctx.cfg.accept_stream_timeout).await else {
                return;
            };
            if ctx.tx.send((stream, node)).await.is_err() {
                close(&conn, "Listener Closed");
            }
        });
    }
}

/// Reads the `0x00` preamble of a further stream on a shared connection; a stream whose
/// preamble is wrong or late is dropped (reset), the connection stays.
async fn preamble(mut stream: MeshStream, limit: Duration) -> Option<MeshStream> {
    use tokio::io::AsyncReadExt;
    let mut first = [0u8; 1];
    match tokio::time::timeout(limit, stream.read_exact(&mut first)).await {
        Ok(Ok(_)) if first[0] == 0 => Some(stream),
        _ => {
            stream.into_split().1.abort("Read Data Error");
            None
        }
    }
}

/// Runs the user's peer check on the client's certificate chain.
fn check_peer(
    conn: &quinn::Connection,
    node: &str,
    check: &super::PeerCheck,
) -> Result<(), TlsError> {
    let chain = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .map(|chain| *chain)
        .unwrap_or_default();
    check(node, &chain)
}

/// Accepts the connection's stream and checks its `0x00` preamble (as Go, closing with
/// error 500 "Accept Timeout" or "Read Data Error").
async fn first_stream(
    conn: &quinn::Connection,
    limit: Duration,
) -> Option<(quinn::SendStream, quinn::RecvStream)> {
    let deadline = tokio::time::Instant::now() + limit;
    let (send, mut recv) = match tokio::time::timeout_at(deadline, conn.accept_bi()).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            close(conn, &format!("AcceptStream Error: {e}"));
            return None;
        }
        Err(_) => {
            close(conn, "Accept Timeout");
            return None;
        }
    };
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, recv.read_exact(&mut first)).await {
        Ok(Ok(())) if first[0] == 0 => Some((send, recv)),
        Ok(Ok(())) => {
            close(conn, "Read Data Error");
            None
        }
        Ok(Err(e)) => {
            close(conn, &format!("Read Error: {e}"));
            None
        }
        Err(_) => {
            close(conn, "Accept Timeout");
            None
        }
    }
}
