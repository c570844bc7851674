//! The control service: what `receptorctl` and other nodes talk to.
//!
//! A client connects (unix socket, TCP, or a mesh stream to the service `control`),
//! is greeted with `Receptor Control, node <id>`, and sends one command per line,
//! either as text (`ping bar`) or as a JSON object (`{"command":"ping","target":"bar"}`).
//! Each command answers with one line, `ERROR: <message>` or a compact JSON object
//! encoded as Go's `encoding/json` encodes it, except commands that stream (`work
//! submit`, `work results`, `connect`), which use the connection themselves. The
//! protocol is Go receptor 1.6.9's, so the unmodified `receptorctl` 1.6.9 works.
//!
//! * [`command`] is the contract between the session loop and the commands;
//! * [`registry`] holds the command table other modules register into (`work`,
//!   `connect`);
//! * [`limits`] holds the bounds on clients (`control-limits`);
//! * [`session`] reads and parses lines and dispatches them;
//! * [`service`] and [`listener`] serve sessions over streams, unix sockets and TCP;
//! * [`status`], [`ping`] and [`reload`] are the built-in commands; [`connect`] is
//!   registered by the daemon (it needs the node's TLS configurations).

pub mod command;
pub mod connect;
pub mod limits;
pub mod listener;
#[cfg(test)]
mod mesh_tests;
pub mod metrics;
pub mod ping;
pub mod registry;
pub mod reload;
pub mod service;
pub mod session;
pub mod status;
#[cfg(test)]
mod tests;
pub mod topology;

use std::sync::Arc;

pub use command::{Args, ControlCommand, ControlConn, PeerKind, Reply};
pub use limits::ControlLimits;
pub use listener::{ControlListener, ListenAddr, UnixListenError};
pub use registry::CommandRegistry;
pub use reload::{ReloadFailure, ReloadFn, ReloadFuture};
pub use service::ControlService;

use crate::mesh::Mesh;

/// Errors of the control service.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A command name was registered twice.
    #[error("control function named {0} already exists")]
    DuplicateCommand(String),
    /// The unix socket could not be set up.
    #[error("error opening Unix socket: {0}")]
    UnixSocket(#[from] UnixListenError),
    /// The TCP listener could not be bound.
    #[error("error listening on TCP socket: {0}")]
    TcpListen(String),
}

/// Registers the built-in commands `status`, `ping`, `traceroute`, `reload` (with the
/// daemon's reload callback, if it has a configuration file to reload) and `topology`.
pub fn register_builtins(
    registry: &CommandRegistry,
    mesh: &Mesh,
    reload: Option<ReloadFn>,
) -> Result<(), ControlError> {
    registry.register(Arc::new(status::StatusCommand::new(mesh.clone())))?;
    registry.register(Arc::new(ping::PingCommand::new(mesh.clone())))?;
    registry.register(Arc::new(ping::TracerouteCommand::new(mesh.clone())))?;
    registry.register(Arc::new(reload::ReloadCommand::new(reload)))?;
    registry.register(Arc::new(topology::TopologyCommand::new(mesh.clone())))?;
    Ok(())
}
