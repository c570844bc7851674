//! Unix-socket proxies: `unix-socket-server` (accept on a socket file here, connect
//! across the mesh) and `unix-socket-client` (accept from the mesh, connect to an
//! existing socket file).
//!
//! The server's socket file is set up like the control service's: a `<file>.lock` is
//! locked so that two nodes cannot share it, a stale file is replaced, and the socket is
//! chmod-ed to exactly `permissions`; the file is removed when the proxy stops. `tls` is
//! a `tls-client` (server half, for the mesh connection) or a `tls-server` (client half,
//! for the mesh service).

use std::sync::Arc;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::relay::{relay, LocalStream};
use super::tcp::{abort_stream, Target, ACCEPT_BACKOFF};
use super::{
    listen_options, serve_streams, tags, tls_name, ServiceError, ServiceHandle, MAX_CONNECTIONS,
};
use crate::config::{UnixSocketClientConfig, UnixSocketServerConfig};
use crate::control::listener::bind_unix;
use crate::mesh::Mesh;
use crate::streams::dial_options;
use crate::streams::{listen_with, MeshStream};
use crate::tls::TlsRegistry;

/// Starts a `unix-socket-server`.
pub(super) async fn start_server(
    mesh: &Mesh,
    cfg: &UnixSocketServerConfig,
    tls: &TlsRegistry,
) -> Result<ServiceHandle, ServiceError> {
    let dial = dial_options(mesh, tls_name(&cfg.tls), tls, &cfg.remote_node)?;
    let (listener, guard) = bind_unix(&cfg.filename, cfg.permissions)?;
    let what = format!(
        "unix-socket-server {} -> {}:{}",
        cfg.filename.display(),
        cfg.remote_node,
        cfg.remote_service
    );
    let target = Arc::new(Target {
        mesh: mesh.clone(),
        node: cfg.remote_node.clone(),
        service: cfg.remote_service.clone(),
        dial,
    });
    let task = tokio::spawn(async move {
        // The guard removes the socket file (and releases the lock) when the task ends.
        let _guard = guard;
        accept_loop(listener, target).await;
    });
    Ok(ServiceHandle::new(what, None, task))
}

async fn accept_loop(listener: UnixListener, target: Arc<Target>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = JoinSet::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((unix, _)) => {
                    let target = target.clone();
                    tasks.spawn(async move {
                        let local = LocalStream::Unix(unix);
                        match target.dial().await {
                            Some(mesh) => relay(local, "unix socket service", mesh).await,
                            None => local.abort(),
                        }
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::warn!("Error accepting Unix socket connection: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// Starts a `unix-socket-client`.
pub(super) async fn start_client(
    mesh: &Mesh,
    cfg: &UnixSocketClientConfig,
    tls: &TlsRegistry,
) -> Result<ServiceHandle, ServiceError> {
    let server_tls = match tls_name(&cfg.tls) {
        Some(name) => Some(tls.server(name)?),
        None => None,
    };
    let filename = cfg.filename.display().to_string();
    let opts = listen_options(server_tls, tags("Unix Proxy", "filename", &filename));
    let listener = listen_with(mesh, &cfg.service, opts).await?;
    let what = format!("unix-socket-client {} -> {filename}", cfg.service);
    let path = Arc::new(cfg.filename.clone());
    let task = tokio::spawn(serve_streams(listener, move |stream, _node| {
        let path = path.clone();
        async move { outbound(stream, &path).await }
    }));
    Ok(ServiceHandle::new(what, None, task))
}

async fn outbound(stream: MeshStream, path: &std::path::Path) {
    match UnixStream::connect(path).await {
        Ok(unix) => relay(LocalStream::Unix(unix), "unix socket connection", stream).await,
        Err(e) => {
            tracing::error!("Error connecting via Unix socket {}: {e}", path.display());
            abort_stream(stream, "unix socket connect failed");
        }
    }
}
