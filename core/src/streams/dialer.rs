//! Dialing a stream service on another node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Endpoint, VarInt};
use tokio::sync::broadcast;

use super::socket::{spawn_socket, PeerEvent};
use super::stream::{MeshStream, Role, StreamParts, CODE_ERROR};
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
    let cfg = opts.config;
    // As in Go, `localhost` (any case) means this node.
    let node = if node.eq_ignore_ascii_case("localhost") {
        net.node_id()
    } else {
        node
    };
    let (tls_cfg, server_name) = match opts.tls {
        // SNI = our own node ID, as Go sends it.
        None => (
            tls::insecure_client_config()?,
            tls::server_name_for(net.node_id()),
        ),
        Some(user) => (tls::user_client_config(user), tls::server_name_for(node)),
    };
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
        cfg.endpoint_config()?,
        None,
        parts.socket.clone(),
        runtime(),
    )?;

    let setup = async {
        let conn = endpoint
            .connect_with(client_cfg, target, &server_name)?
            .await?;
        let (mut send, recv) = conn.open_bi().await?;
        send.write_all(&[0]).await?;
        Ok::<_, StreamError>((conn, send, recv))
    };
    let result = tokio::select! {
        r = tokio::time::timeout(cfg.handshake_timeout, setup) => r.unwrap_or(Err(StreamError::Timeout)),
        e = problem_with(&mut events, target, node, service) => Err(e),
    };
    let (conn, send, recv) = match result {
        Ok(ok) => ok,
        Err(e) => {
            endpoint.close(VarInt::from_u32(CODE_ERROR), e.to_string().as_bytes());
            return Err(e);
        }
    };
    watch_peer(conn.clone(), events, target);
    Ok(MeshStream::new(StreamParts {
        conn,
        send,
        recv,
        endpoint: Some(endpoint),
        role: Role::Dialer,
        remote_node: node.to_owned(),
        remote_service: service.to_owned(),
        local_service,
        linger: cfg.max_idle_timeout,
    }))
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
