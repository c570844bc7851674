//! How remote work reaches another node's control service.
//!
//! In a running node the dialer opens a stream over the mesh to `(node, "control")`,
//! sharing one QUIC connection between the streams to a node that supports it (our own
//! nodes; see [`crate::streams::StreamPool`]); tests also reach control services on TCP
//! ports.

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream to a control service; `shutdown` half-closes it.
pub trait ControlIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ControlIo for T {}

/// A boxed control stream.
pub type ControlStream = Box<dyn ControlIo>;

/// Why a dial failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    /// The node cannot be reached now (no route, no answer, service unknown): worth
    /// retrying later.
    #[error("{0}")]
    Unreachable(String),
    /// The TLS handshake failed (Go's `CRYPTO_ERROR`): a unit that has not started
    /// fails.
    #[error("{0}")]
    Tls(String),
}

/// A stream from [`ControlDialer::dial`].
pub struct Dialed {
    /// The stream.
    pub stream: ControlStream,
    /// Whether it runs on a connection set up before the dial (kept from earlier
    /// streams), which may have died unnoticed: if it fails before the greeting, the
    /// caller dials again with `fresh`.
    pub reused: bool,
}

/// A `tlsclient` name that no `tls-client` configuration has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown TLS config {0}")]
pub struct UnknownTlsClient(pub String);

/// Opens streams to the control services of other nodes.
#[async_trait]
pub trait ControlDialer: Send + Sync + 'static {
    /// Checks a `tlsclient` name at submission (`unknown TLS config <name>`); the
    /// empty name means the mesh's default (no user TLS).
    fn check_tls_client(&self, name: &str) -> Result<(), UnknownTlsClient>;

    /// Connects to the control service of `node`, with the TLS client configuration
    /// `tls_client` (empty: none); on a kept connection unless `fresh`.
    async fn dial(&self, node: &str, tls_client: &str, fresh: bool) -> Result<Dialed, DialError>;
}
