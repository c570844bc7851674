//! Services a node runs on top of the mesh: the control service as a mesh service, and
//! the proxies of the configuration that carry TCP, unix-socket and UDP traffic across
//! the mesh (Go receptor's `tcp-server`, `tcp-client`, `udp-server`, `udp-client`,
//! `unix-socket-server`, `unix-socket-client`).
//!
//! A proxy has two halves on two nodes. The *server* half listens locally (a TCP port,
//! a unix socket, a UDP port) and, for each connection (or each UDP peer), opens a
//! connection across the mesh to `(remotenode, remoteservice)`. The *client* half listens
//! on a mesh service, advertised with tags that say what it does (`{"type":"TCP Proxy",
//! "address":...}`, `{"type":"Unix Proxy","filename":...}`, `{"type":"UDP Proxy",
//! "address":...}`), and connects each incoming connection to its local target. Either
//! half interoperates with Go receptor's.
//!
//! * TCP and unix connections ride on mesh streams (QUIC, see [`crate::streams`]) and are
//!   relayed by [`crate::streams::bridge`]: 64 KiB per direction, half-close propagated, back-pressure
//!   from end to end, errors turned into resets (see [`relay`]). `tlsserver` /
//!   `tlsclient` (TCP proxies) and `tls` (unix proxies) name the node's `tls-server` /
//!   `tls-client` configurations, with Go's meaning for each side.
//! * UDP datagrams ride on mesh datagrams, one mesh socket (or UDP socket) per peer as
//!   Go does; see `udp` for the bounds this module adds (peer count, queues, idle
//!   expiry).
//! * [`command`] runs a command on a pseudo-terminal for each connection to a
//!   `command-service`.
//! * [`ip_router`] carries IP packets between tun devices of nodes (`ip-router`).
//! * [`control`] serves the control service on the mesh (`service`, advertised as
//!   `{"type":"Control Service"}` with the node's work commands) and on TLS TCP
//!   listeners (`tcptls`).
//!
//! Each running listener is a [`ServiceHandle`]; dropping it stops the listener and
//! every connection it carries.

pub mod command;
pub mod control;
pub mod ip_router;
pub mod relay;
mod tcp;
mod udp;
mod unix;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::Config;
use crate::control::UnixListenError;
use crate::mesh::{Mesh, MeshError};
use crate::streams::{ListenOptions, MeshStream, PeerCheck, StreamError, StreamListener};
use crate::tls::{ServerTls, TlsError, TlsRegistry};

/// Connections one proxy carries at once; further ones wait to be accepted.
pub const MAX_CONNECTIONS: usize = 1024;

/// Errors starting a service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A TLS configuration is unknown or unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A TCP listener could not be bound.
    #[error("error listening on TCP: {0}")]
    TcpListen(String),
    /// A unix socket could not be set up.
    #[error("error opening Unix socket: {0}")]
    UnixListen(#[from] UnixListenError),
    /// The mesh refused a stream service.
    #[error("error listening on Receptor network: {0}")]
    MeshListen(#[from] StreamError),
    /// The mesh refused a datagram service.
    #[error("error listening on service {service}: {source}")]
    MeshPacketListen {
        /// The service.
        service: String,
        /// Why.
        source: MeshError,
    },
    /// A UDP socket could not be bound.
    #[error("error listening on UDP: {0}")]
    UdpListen(String),
    /// An `ip-router` could not set up its tun device.
    #[error("{what}: {source}")]
    IpRouter {
        /// What failed.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// An address does not resolve.
    #[error("could not resolve address {0}")]
    Resolve(String),
}

/// A running listener; dropping it (or [`ServiceHandle::stop`]) stops it and every
/// connection it carries.
#[derive(Debug)]
pub struct ServiceHandle {
    what: String,
    local_addr: Option<SocketAddr>,
    task: JoinHandle<()>,
}

impl ServiceHandle {
    fn new(what: String, local_addr: Option<SocketAddr>, task: JoinHandle<()>) -> Self {
        tracing::debug!("started {what}");
        ServiceHandle {
            what,
            local_addr,
            task,
        }
    }

    /// What the service is, e.g. `tcp-server 127.0.0.1:8080 -> bar:web`.
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// The bound address of TCP and UDP listeners (the real port if 0 was asked for).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Stops the service.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The proxies and command services of a configuration.
#[derive(Debug, Default)]
pub struct Services {
    handles: Vec<ServiceHandle>,
}

impl Services {
    /// Starts every `tcp-server`, `tcp-client`, `udp-server`, `udp-client`,
    /// `unix-socket-server`, `unix-socket-client`, `command-service` and `ip-router` of
    /// `config` on `mesh`; the first
    /// failure stops the ones already started and is returned with its section kind.
    pub async fn start(
        mesh: &Mesh,
        config: &Config,
        tls: &TlsRegistry,
    ) -> Result<Services, (&'static str, ServiceError)> {
        let mut handles = Vec::new();
        for c in &config.tcp_servers {
            handles.push(
                tcp::start_server(mesh, c, tls)
                    .await
                    .map_err(|e| ("tcp-server", e))?,
            );
        }
        for c in &config.tcp_clients {
            handles.push(
                tcp::start_client(mesh, c, tls)
                    .await
                    .map_err(|e| ("tcp-client", e))?,
            );
        }
        for c in &config.udp_servers {
            handles.push(
                udp::start_server(mesh, c)
                    .await
                    .map_err(|e| ("udp-server", e))?,
            );
        }
        for c in &config.udp_clients {
            handles.push(
                udp::start_client(mesh, c)
                    .await
                    .map_err(|e| ("udp-client", e))?,
            );
        }
        for c in &config.unix_socket_servers {
            handles.push(
                unix::start_server(mesh, c, tls)
                    .await
                    .map_err(|e| ("unix-socket-server", e))?,
            );
        }
        for c in &config.unix_socket_clients {
            handles.push(
                unix::start_client(mesh, c, tls)
                    .await
                    .map_err(|e| ("unix-socket-client", e))?,
            );
        }
        for c in &config.command_services {
            handles.push(
                command::start(mesh, c, tls)
                    .await
                    .map_err(|e| ("command-service", e))?,
            );
        }
        for c in &config.ip_routers {
            handles.push(
                ip_router::start(mesh, c)
                    .await
                    .map_err(|e| ("ip-router", e))?,
            );
        }
        Ok(Services { handles })
    }

    /// The running services.
    pub fn handles(&self) -> &[ServiceHandle] {
        &self.handles
    }

    /// Stops every service.
    pub fn stop(&mut self) {
        self.handles.clear();
    }
}

/// A TLS name from the configuration: absent and empty both mean "no TLS", as in Go.
fn tls_name(name: &Option<String>) -> Option<&str> {
    name.as_deref().filter(|n| !n.is_empty())
}

/// Listen options of an advertised stream service with `tags`, with the user TLS
/// configuration `tls` (ConnType 2) or without (ConnType 1).
pub fn listen_options(
    tls: Option<Arc<ServerTls>>,
    tags: BTreeMap<String, String>,
) -> ListenOptions {
    let mut opts = ListenOptions {
        advertise: true,
        tags: Some(tags),
        ..ListenOptions::default()
    };
    if let Some(tls) = tls {
        opts.tls = Some((*tls.quic_listener_config()).clone());
        let check: PeerCheck = Arc::new(move |node, chain| tls.check_quic_client(chain, node));
        opts.peer_check = Some(check);
    }
    opts
}

/// The tags of an advertised proxy service.
fn tags(kind: &str, key: &str, value: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("type".to_owned(), kind.to_owned()),
        (key.to_owned(), value.to_owned()),
    ])
}

/// Accepts mesh streams and runs `handle` on each in its own task, at most
/// [`MAX_CONNECTIONS`] at a time; returns when the listener fails. The tasks end with it.
async fn serve_streams<F, Fut>(mut listener: StreamListener, handle: F)
where
    F: Fn(MeshStream, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = JoinSet::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, node)) => {
                    let work = handle(stream, node);
                    tasks.spawn(async move {
                        work.await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::error!(service = %listener.service(), "error accepting connection on Receptor network: {e}");
                    return;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}
