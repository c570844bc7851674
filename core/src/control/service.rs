//! The control service as the daemon sees it: a node ID for the greeting and the
//! command table, served over any byte stream.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, BufReader};

use super::command::{BoxRead, BoxWrite, ControlConn, PeerKind};
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
}

impl ControlService {
    /// A service for node `node_id` answering the commands of `registry` (commands
    /// registered later are served too).
    pub fn new(node_id: impl Into<String>, registry: CommandRegistry) -> Self {
        let node_id = node_id.into();
        let greeting = format!("Receptor Control, node {node_id}\n").into_bytes();
        ControlService {
            inner: Arc::new(Inner {
                node_id,
                greeting,
                registry,
            }),
        }
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
            peer,
        };
        session::run(&self.inner.greeting, &self.inner.registry, conn).await;
    }
}
