//! The contract between the control-service session loop and the commands it runs.
//!
//! A session reads one command line, parses it into a command name and [`Args`], and
//! hands the command the [`ControlConn`] so that streaming commands (`work submit`
//! reads a payload, `work results` streams bytes, `connect` bridges) can use the
//! connection directly. Bytes the client sent after the command line are still in the
//! connection's buffer, so a pipelined payload is not lost.

use std::pin::Pin;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};

/// Parameters of one command, in the form the client used.
#[derive(Debug, Clone)]
pub enum Args {
    /// String form: everything after the command word and one space, verbatim.
    Text(String),
    /// JSON form: the whole decoded object, `command` key included.
    Json(serde_json::Map<String, serde_json::Value>),
}

/// What kind of transport a control client came in on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerKind {
    /// A unix socket (exempt from work-signature verification, as in Go receptor).
    Unix,
    /// A TCP (or TLS) connection.
    Tcp,
    /// A mesh stream from another node.
    Mesh {
        /// The node the stream came from.
        node: String,
    },
}

/// Boxed reading half of a control connection.
pub type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
/// Boxed writing half of a control connection.
pub type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;

/// A client connection as a command sees it.
pub struct ControlConn {
    /// Buffered reader; bytes after the current command line are still in its buffer.
    pub reader: BufReader<BoxRead>,
    /// Writer; replies are written with one call per line.
    pub writer: BoxWrite,
    /// Transport the client came in on.
    pub peer: PeerKind,
    /// The service's limits (line length and timeouts, payload size and pauses).
    pub limits: super::limits::ControlLimits,
}

/// What a command produced.
#[derive(Debug)]
pub enum Reply {
    /// A JSON object, written Go-style on one line.
    Json(serde_json::Value),
    /// A JSON document already encoded Go-style (`receptor_proto::gojson`), without the
    /// trailing newline. For replies whose nested structs must keep their declaration
    /// order (a `serde_json::Value` sorts every object's keys).
    Encoded(String),
    /// The command wrote its own output; the session goes on reading commands.
    Done,
    /// The command wrote its own output and the session must end now.
    Close,
}

/// One control-service command (`status`, `ping`, `work`, ...).
#[async_trait]
pub trait ControlCommand: Send + Sync {
    /// The command word, lower case.
    fn name(&self) -> &'static str;

    /// Runs the command. `Err(msg)` is sent to the client as `ERROR: msg`.
    async fn run(&self, args: Args, conn: &mut ControlConn) -> Result<Reply, String>;
}
