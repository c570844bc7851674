//! Dialing a stream service on another node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Endpoint, VarInt};
use tokio::sync::broadcast;

use super::socket::{spawn_socket, PeerEvent};
use super::stream::{ConnOwner, MeshStream, Role, StreamParts, CODE_ERROR};
use super::{runtime, tls, watch_peer, DatagramNetwork, DatagramSocket, StreamConfig, StreamError};
use crate::mesh::{Mesh, MeshError};
use crate::tls::{TlsError, TlsRegistry};

/// How long a dial waits for the target to be able to route back to this node before
/// it sends its first packet anyway.
const ROUTE_BACK_WAIT: Duration = Duration::from_secs(2);

/// How to dial.
#[derive(Debug, Clone, Default)]
pub struct DialOptions {
    /// User TLS (for ConnType 2 services); `None` = the insecure ConnType 1 scheme.
    /// The target node ID is passed to the certificate verifier as the server name
    /// and no SNI is sent.
    pub tls: Option<rustls::ClientConfig>,
    /// QUIC parameters.
    pub config: StreamConfig,
}

/// Dial options for `(node, _)` with the `tls-client` configuration `tls`, if any.
pub fn dial_options(
    mesh: &Mesh,
    tls: Option<&str>,
    registry: &TlsRegistry,
    node: &str,
) -> Result<DialOptions, TlsError> {
    let mut opts = DialOptions::default();
    if let Some(name) = tls {
        let target = if node.eq_ignore_ascii_case("localhost") {
            mesh.node_id()
        } else {
            node
        };
        opts.tls = Some((*registry.client(name)?.quic_config(target)?).clone());
    }
    Ok(opts)
}

/// Connects to `service` on `node` (ConnType 1 if `tls` is `None`, else ConnType 2).
pub async fn dial<N: DatagramNetwork>(
    net: &N,
    node: &str,
    service: &str,
    tls: Option<rustls::ClientConfig>,
) -> Result<MeshStream, StreamError> {
    dial_with(
        net,
        node,
        service,
        DialOptions {
            tls,
            ..DialOptions::default()
        },
    )
    .await
}

/// Connects to `service` on `node` with explicit options (`node` may be this node, also
/// spelt `localhost`).
///
/// Opens a fresh ephemeral service and a private QUIC endpoint on it (as Go does), runs
/// the handshake, opens the stream and writes the `0x00` preamble. Fails with
/// [`StreamError::ServiceUnknown`] as soon as the mesh reports the service unknown, with
/// [`StreamError::NoRoute`] when the mesh cannot route to `node`, and with
/// [`StreamError::Timeout`] after the handshake timeout.
pub async fn dial_with<N: DatagramNetwork>(
    net: &N,
    node: &str,
    service: &str,
    opts: DialOptions,
) -> Result<MeshStream, StreamError> {
    let linger = opts.config.max_idle_timeout;
    let timeout = opts.config.handshake_timeout;
    let est = establish(net, node, service, opts, false).await?;
    let (send, recv) = match open_stream(&est.conn, timeout).await {
        Ok(pair) => pair,
        Err(e) => {
            est.endpoint
                .close(VarInt::from_u32(CODE_ERROR), e.to_string().as_bytes());
            return Err(e);
        }
    };
    Ok(MeshStream::new(StreamParts {
        conn: est.conn,
        send,
        recv,
        endpoint: Some(est.endpoint),
        owner: ConnOwner::Stream,
        role: Role::Dialer,
        remote_node: est.node,
        remote_service: service.to_owned(),
        local_service: est.local_service,
        linger,
    }))
}

/// A QUIC connection to `(node, service)` on a private endpoint, handshake done.
pub(crate) struct Established {
    /// The connection (watched: closed when the mesh reports the peer's service gone).
    pub conn: quinn::Connection,
    /// Its private endpoint, to keep until the connection is done.
    pub endpoint: Endpoint,
    /// The target node (`localhost` resolved).
    pub node: String,
    /// The ephemeral local service.
    pub local_service: String,
}

/// Opens a fresh ephemeral service and a private QUIC endpoint on it and runs the
/// handshake with `(node, service)`, offering the shared-connection protocol if `shared`
/// (see [`dial_with`] for the failures).
pub(crate) async fn establish<N: DatagramNetwork>(
    net: &N,
    node: &str,
    service: &str,
    opts: DialOptions,
    shared: bool,
) -> Result<Established, StreamError> {
    let cfg = opts.config;
    // As in Go, `localhost` (any case) means this node.
    let node = if node.eq_ignore_ascii_case("localhost") {
        net.node_id()
    } else {
        node
    };
    let (mut tls_cfg, server_name) = match opts.tls {
        // SNI = our own node ID, as Go sends it.
        None => (
            tls::insecure_client_config()?,
            tls::server_name_for(net.node_id()),
        ),
        Some(user) => (
            tls::user_client_config(user, shared),
            tls::server_name_for(node),
        ),
    };
    tls_cfg.alpn_protocols = tls::client_alpn(shared);
    let quic_tls =
        QuicClientConfig::try_from(tls_cfg).map_err(|e| tls::TlsSetupError::Quic(e.to_string()))?;
    let mut client_cfg = quinn::ClientConfig::new(Arc::new(quic_tls));
    client_cfg.transport_config(Arc::new(cfg.transport_config(Role::Dialer)?));

    // A node that cannot route back yet (a neighbour in its first 100 ms) would drop
    // its answer to our first handshake packet, costing a retransmission timeout.
    if node != net.node_id() {
        net.ready_to_answer(node, ROUTE_BACK_WAIT).await;
    }
    let sock = net.open(None, None).await?;
    let local_service = sock.service().to_owned();
    let (parts, target) = spawn_socket(sock, cfg.evict_after(), Some((node, service)));
    let target = target.ok_or_else(|| MeshError::Other("stream address table full".into()))?;
    let mut events = parts.events.subscribe();
    let endpoint = Endpoint::new_with_abstract_socket(
        cfg.endpoint_config(None)?,
        None,
        parts.socket.clone(),
        runtime(),
    )?;

    let setup = async {
        Ok::<_, StreamError>(
            endpoint
                .connect_with(client_cfg, target, &server_name)?
                .await?,
        )
    };
    let result = tokio::select! {
        r = tokio::time::timeout(cfg.handshake_timeout, setup) => r.unwrap_or(Err(StreamError::Timeout)),
        e = problem_with(&mut events, target, node, service) => Err(e),
    };
    let conn = match result {
        Ok(conn) => conn,
        Err(e) => {
            endpoint.close(VarInt::from_u32(CODE_ERROR), e.to_string().as_bytes());
            return Err(e);
        }
    };
    crate::metrics::node().stream_connections_dialed.inc();
    watch_peer(conn.clone(), events, target);
    Ok(Established {
        conn,
        endpoint,
        node: node.to_owned(),
        local_service,
    })
}

/// Opens a bidirectional stream on `conn` and writes the `0x00` preamble, within
/// `limit` (a shared connection may first have to wait for stream credit).
pub(crate) async fn open_stream(
    conn: &quinn::Connection,
    limit: Duration,
) -> Result<(quinn::SendStream, quinn::RecvStream), StreamError> {
    let open = async {
        let (mut send, recv) = conn.open_bi().await?;
        send.write_all(&[0]).await?;
        Ok::<_, StreamError>((send, recv))
    };
    tokio::time::timeout(limit, open)
        .await
        .unwrap_or(Err(StreamError::Timeout))
}

/// Resolves when the pump reports a problem that dooms a dial to `target`.
async fn problem_with(
    events: &mut broadcast::Receiver<PeerEvent>,
    target: SocketAddr,
    node: &str,
    service: &str,
) -> StreamError {
    loop {
        match events.recv().await {
            Ok(PeerEvent::ServiceUnknown(addr)) if addr == target => {
                return StreamError::ServiceUnknown {
                    node: node.to_owned(),
                    service: service.to_owned(),
                }
            }
            Ok(PeerEvent::NoRoute(addr)) if addr == target => {
                return StreamError::NoRoute(node.to_owned())
            }
            Ok(PeerEvent::Shutdown) => return StreamError::Mesh(MeshError::Shutdown),
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}
