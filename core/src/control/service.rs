//! The control service as the daemon sees it: a node ID for the greeting, the
//! command table and the limits on clients, served over any byte stream.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::command::{BoxRead, BoxWrite, ControlConn, PeerKind};
use super::limits::ControlLimits;
use super::registry::CommandRegistry;
use super::reload::ReloadFn;
use super::{register_builtins, session, ControlError};
use crate::mesh::Mesh;

/// A node's control service; cheap to clone, every clone serves the same table.
#[derive(Clone, Debug)]
pub struct ControlService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node_id: String,
    greeting: Vec<u8>,
    registry: CommandRegistry,
    limits: ControlLimits,
    /// One permit per connection served over the unix-socket and TCP listeners.
    listener_slots: Arc<Semaphore>,
}

impl ControlService {
    /// A service for node `node_id` answering the commands of `registry` (commands
    /// registered later are served too), with the default limits.
    pub fn new(node_id: impl Into<String>, registry: CommandRegistry) -> Self {
        let node_id = node_id.into();
        let greeting = format!("Receptor Control, node {node_id}\n").into_bytes();
        let limits = ControlLimits::default();
        ControlService {
            inner: Arc::new(Inner {
                node_id,
                greeting,
                registry,
                listener_slots: Arc::new(Semaphore::new(limits.max_connections)),
                limits,
            }),
        }
    }

    /// The same service with other limits; call it before serving anything (clones
    /// made earlier keep the old limits).
    pub fn with_limits(self, limits: ControlLimits) -> Self {
        ControlService {
            inner: Arc::new(Inner {
                node_id: self.inner.node_id.clone(),
                greeting: self.inner.greeting.clone(),
                registry: self.inner.registry.clone(),
                listener_slots: Arc::new(Semaphore::new(limits.max_connections)),
                limits,
            }),
        }
    }

    /// The limits on clients.
    pub fn limits(&self) -> &ControlLimits {
        &self.inner.limits
    }

    /// A slot for one more listener connection, or `None` when
    /// [`ControlLimits::max_connections`] are being served.
    pub(crate) fn listener_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.inner.listener_slots.clone().try_acquire_owned().ok()
    }

    /// The service of a mesh node: registers the built-in commands (`status`, `ping`,
    /// `traceroute`, `reload` with the daemon's callback) into `registry` and greets
    /// with the mesh's node ID. Other modules may add their commands afterwards.
    pub fn for_mesh(
        mesh: &Mesh,
        registry: CommandRegistry,
        reload: Option<ReloadFn>,
    ) -> Result<Self, ControlError> {
        register_builtins(&registry, mesh, reload)?;
        Ok(Self::new(mesh.node_id(), registry))
    }

    /// The node ID shown in the greeting.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The command table.
    pub fn registry(&self) -> &CommandRegistry {
        &self.inner.registry
    }

    /// Runs one session over a bidirectional stream until it ends, then shuts the
    /// stream's write side down. Used for mesh streams and tests.
    pub async fn serve_stream<S>(&self, io: S, peer: PeerKind)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        self.serve_split(Box::pin(read), Box::pin(write), peer)
            .await;
    }

    /// Runs one session over separate read and write halves until it ends.
    pub async fn serve_split(&self, reader: BoxRead, writer: BoxWrite, peer: PeerKind) {
        let conn = ControlConn {
            reader: BufReader::new(reader),
            writer,
            limits: session_limits(&self.inner.limits, &peer),
            peer,
        };
        session::run(&self.inner.greeting, &self.inner.registry, conn).await;
    }
}

/// The limits of one session: a mesh stream from another node (a remote-work client
/// that may keep its session between commands) is not closed for idling.
fn session_limits(limits: &ControlLimits, peer: &PeerKind) -> ControlLimits {
    match peer {
        PeerKind::Mesh { .. } => ControlLimits {
            idle_timeout: None,
            ..*limits
        },
        PeerKind::Unix | PeerKind::Tcp => *limits,
    }
}
