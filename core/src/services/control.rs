//! The control service as a mesh service and on TLS TCP listeners.
//!
//! * [`serve_mesh`]: a `control-service` with a non-empty `service` (default
//!   `control`) listens on that mesh service, advertised with the tags
//!   `{"type":"Control Service"}` (the mesh adds the node's work commands to such ads),
//!   as ConnType 1, or ConnType 2 when `tls` names a `tls-server`. Each stream is a
//!   control session of a [`PeerKind::Mesh`] client: other nodes' remote work and
//!   `connect` come in this way.
//! * [`serve_tcp_tls`]: `tcplisten` with `tcptls`: TLS over TCP with the named
//!   `tls-server`; the handshake must finish within 10 s (else `TLS handshake error` is
//!   logged and the connection closed without a greeting).

use std::collections::BTreeMap;
use std::sync::Arc;

use receptor_proto::svcad::ServiceAdvertisement;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::tcp::{ACCEPT_BACKOFF, TLS_HANDSHAKE_TIMEOUT};
use super::{listen_options, serve_streams, ServiceError, ServiceHandle, MAX_CONNECTIONS};
use crate::control::listener::{describe, tcp_listen_addr};
use crate::control::{ControlService, PeerKind};
use crate::mesh::Mesh;
use crate::streams::listen_with;
use crate::tls::ServerTls;

/// Serves `control` on the mesh service `service` (ConnType 2 with `tls`).
pub async fn serve_mesh(
    mesh: &Mesh,
    control: &ControlService,
    service: &str,
    tls: Option<Arc<ServerTls>>,
) -> Result<ServiceHandle, ServiceError> {
    let tags = BTreeMap::from([(
        "type".to_owned(),
        ServiceAdvertisement::CONTROL_SERVICE_TYPE.to_owned(),
    )]);
    let listener = listen_with(mesh, service, listen_options(tls, tags)).await?;
    let what = format!("control service on mesh service {}", listener.service());
    let control = control.clone();
    let task = tokio::spawn(serve_streams(listener, move |stream, node| {
        let control = control.clone();
        async move {
            control.serve_stream(stream, PeerKind::Mesh { node }).await;
        }
    }));
    Ok(ServiceHandle::new(what, None, task))
}

/// Serves `control` over TLS on `tcplisten` (`port` or `host:port`).
pub async fn serve_tcp_tls(
    control: &ControlService,
    tcplisten: &str,
    tls: &ServerTls,
) -> Result<ServiceHandle, ServiceError> {
    let addr = tcp_listen_addr(tcplisten);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| ServiceError::TcpListen(format!("listen tcp {addr}: {}", describe(&e))))?;
    let local = listener.local_addr().ok();
    let acceptor = TlsAcceptor::from(tls.backend_config());
    let what = format!("control service on tls {addr}");
    let task = tokio::spawn(tls_accept_loop(listener, acceptor, control.clone()));
    Ok(ServiceHandle::new(what, local, task))
}

async fn tls_accept_loop(listener: TcpListener, acceptor: TlsAcceptor, control: ControlService) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut sessions = JoinSet::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    let control = control.clone();
                    sessions.spawn(async move {
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => control.serve_stream(tls, PeerKind::Tcp).await,
                            Ok(Err(e)) => tracing::warn!("TLS handshake error: {e}"),
                            Err(_) => tracing::warn!("TLS handshake error: timeout"),
                        }
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::warn!("error accepting control connection: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}
