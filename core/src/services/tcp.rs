//! TCP proxies: `tcp-server` (accept TCP here, connect across the mesh) and `tcp-client`
//! (accept from the mesh, connect to a TCP address).
//!
//! TLS names, with Go's meaning: on a `tcp-server`, `tlsserver` is the `tls-server` the
//! TCP listener speaks and `tlsclient` the `tls-client` of the mesh connection (it must
//! find the remote node's ID in the service's certificate); on a `tcp-client`,
//! `tlsserver` is the `tls-server` of the mesh service (ConnType 2) and `tlsclient` the
//! `tls-client` used towards `address` (checked against the address's host name).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::relay::{relay, LocalStream};
use super::{
    listen_options, serve_streams, tags, tls_name, ServiceError, ServiceHandle, MAX_CONNECTIONS,
};
use crate::config::{TcpClientConfig, TcpServerConfig};
use crate::control::listener::describe;
use crate::mesh::Mesh;
use crate::streams::dial_options;
use crate::streams::{dial_with, listen_with, DialOptions, MeshStream};
use crate::tls::TlsRegistry;

/// How long a TLS handshake on an accepted connection may take.
pub(crate) const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors).
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Starts a `tcp-server`.
pub(super) async fn start_server(
    mesh: &Mesh,
    cfg: &TcpServerConfig,
    tls: &TlsRegistry,
) -> Result<ServiceHandle, ServiceError> {
    let acceptor = match tls_name(&cfg.tls_server) {
        Some(name) => Some(TlsAcceptor::from(tls.server(name)?.backend_config())),
        None => None,
    };
    let dial = dial_options(mesh, tls_name(&cfg.tls_client), tls, &cfg.remote_node)?;
    let listener = bind(&cfg.bind_addr, cfg.port).await?;
    let local = listener.local_addr().ok();
    let what = format!(
        "tcp-server {}:{} -> {}:{}",
        cfg.bind_addr, cfg.port, cfg.remote_node, cfg.remote_service
    );
    let target = Arc::new(Target {
        mesh: mesh.clone(),
        node: cfg.remote_node.clone(),
        service: cfg.remote_service.clone(),
        dial,
    });
    let task = tokio::spawn(accept_loop(listener, move |tcp| {
        let target = target.clone();
        let acceptor = acceptor.clone();
        async move { inbound(tcp, acceptor, target).await }
    }));
    Ok(ServiceHandle::new(what, local, task))
}

/// Where a `tcp-server` (or `unix-socket-server`) sends its connections.
pub(super) struct Target {
    pub mesh: Mesh,
    pub node: String,
    pub service: String,
    pub dial: DialOptions,
}

impl Target {
    /// Opens a mesh stream to the target.
    pub async fn dial(&self) -> Option<MeshStream> {
        match dial_with(&self.mesh, &self.node, &self.service, self.dial.clone()).await {
            Ok(stream) => Some(stream),
            Err(e) => {
                tracing::error!(
                    "Error connecting on Receptor network to {}:{}: {e}",
                    self.node,
                    self.service
                );
                None
            }
        }
    }
}

async fn bind(addr: &str, port: u16) -> Result<TcpListener, ServiceError> {
    TcpListener::bind((addr, port))
        .await
        .map_err(|e| ServiceError::TcpListen(format!("listen tcp {addr}:{port}: {}", describe(&e))))
}

/// Accepts TCP connections and runs `handle` on each in its own task, at most
/// [`MAX_CONNECTIONS`] at a time.
async fn accept_loop<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = JoinSet::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    // Go sets TCP_NODELAY on every connection.
                    let _ = tcp.set_nodelay(true);
                    let work = handle(tcp);
                    tasks.spawn(async move {
                        work.await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::warn!("Error accepting TCP connection: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// One `tcp-server` connection: TLS handshake if configured, mesh dial, relay.
async fn inbound(tcp: TcpStream, acceptor: Option<TlsAcceptor>, target: Arc<Target>) {
    let local = match acceptor {
        None => LocalStream::Tcp(tcp),
        Some(acceptor) => {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => LocalStream::TlsServer(Box::new(tls)),
                Ok(Err(e)) => {
                    tracing::warn!("TLS handshake error: {e}");
                    return;
                }
                Err(_) => {
                    tracing::warn!("TLS handshake error: timeout");
                    return;
                }
            }
        }
    };
    match target.dial().await {
        Some(mesh) => relay(local, "tcp service", mesh).await,
        None => local.abort(),
    }
}

/// Starts a `tcp-client`.
pub(super) async fn start_client(
    mesh: &Mesh,
    cfg: &TcpClientConfig,
    tls: &TlsRegistry,
) -> Result<ServiceHandle, ServiceError> {
    let server_tls = match tls_name(&cfg.tls_server) {
        Some(name) => Some(tls.server(name)?),
        None => None,
    };
    let connector = match tls_name(&cfg.tls_client) {
        Some(name) => {
            let host = host_of(&cfg.address);
            let server_name = ServerName::try_from(host.to_owned())
                .map_err(|_| ServiceError::Resolve(cfg.address.clone()))?;
            Some((
                TlsConnector::from(tls.client(name)?.backend_config()),
                server_name,
            ))
        }
        None => None,
    };
    let opts = listen_options(server_tls, tags("TCP Proxy", "address", &cfg.address));
    let listener = listen_with(mesh, &cfg.service, opts).await?;
    let what = format!("tcp-client {} -> {}", cfg.service, cfg.address);
    let address: Arc<str> = Arc::from(cfg.address.as_str());
    let task = tokio::spawn(serve_streams(listener, move |stream, _node| {
        let address = address.clone();
        let connector = connector.clone();
        async move { outbound(stream, &address, connector).await }
    }));
    Ok(ServiceHandle::new(what, None, task))
}

/// One `tcp-client` connection: connect to the address (with TLS if configured), relay.
async fn outbound(
    stream: MeshStream,
    address: &str,
    connector: Option<(TlsConnector, ServerName<'static>)>,
) {
    let tcp = match TcpStream::connect(address).await {
        Ok(tcp) => tcp,
        Err(e) => {
            tracing::error!("Error connecting via TCP to {address}: {e}");
            abort_stream(stream, "tcp connect failed");
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let local = match connector {
        None => LocalStream::Tcp(tcp),
        Some((connector, name)) => match connector.connect(name, tcp).await {
            Ok(tls) => LocalStream::TlsClient(Box::new(tls)),
            Err(e) => {
                tracing::error!("Error connecting via TCP to {address}: TLS: {e}");
                abort_stream(stream, "tls handshake failed");
                return;
            }
        },
    };
    relay(local, "tcp connection", stream).await;
}

/// Ends a mesh stream whose local side could not be set up.
pub(super) fn abort_stream(stream: MeshStream, reason: &str) {
    let (_, mut w) = stream.into_split();
    w.abort(reason);
}

/// The host part of `host:port` (IPv6 brackets removed).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}
