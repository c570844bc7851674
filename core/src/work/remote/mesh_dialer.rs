//! Reaching other nodes' control services over the mesh: a QUIC stream to
//! `(node, "control")`, with the insecure ConnType 1 scheme or, for a unit submitted
//! with `tlsclient`, that `tls-client` configuration (the remote node ID must be a
//! ReceptorName of the server's certificate). The streams to one node share a QUIC
//! connection when the node negotiates it (our nodes do, Go nodes get a connection per
//! stream as from a Go node): see [`StreamPool`].

use std::sync::Arc;

use async_trait::async_trait;

use super::dialer::{ControlDialer, DialError, Dialed, UnknownTlsClient};
use crate::mesh::Mesh;
use crate::streams::{DialOptions, StreamError, StreamPool};
use crate::tls::TlsRegistry;

/// The mesh service of control services.
pub const CONTROL_SERVICE: &str = "control";

/// Dials control services over the mesh.
pub struct MeshDialer {
    mesh: Mesh,
    tls: Arc<TlsRegistry>,
    pool: StreamPool,
}

impl std::fmt::Debug for MeshDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshDialer").finish_non_exhaustive()
    }
}

impl MeshDialer {
    /// A dialer over `mesh`, with the node's named TLS configurations.
    pub fn new(mesh: Mesh, tls: Arc<TlsRegistry>) -> MeshDialer {
        MeshDialer {
            mesh,
            tls,
            pool: StreamPool::new(),
        }
    }
}

/// QUIC transport error codes 0x100-0x1ff are TLS alerts (`CRYPTO_ERROR` in quic-go).
fn is_crypto_code(code: u64) -> bool {
    (0x100..=0x1ff).contains(&code)
}

fn classify(e: StreamError) -> DialError {
    let tls = match &e {
        StreamError::Tls(_) => true,
        StreamError::Connection(quinn::ConnectionError::TransportError(t)) => {
            is_crypto_code(u64::from(t.code))
        }
        StreamError::Connection(quinn::ConnectionError::ConnectionClosed(c)) => {
            is_crypto_code(u64::from(c.error_code))
        }
        _ => false,
    };
    if tls {
        DialError::Tls(e.to_string())
    } else {
        DialError::Unreachable(e.to_string())
    }
}

#[async_trait]
impl ControlDialer for MeshDialer {
    fn check_tls_client(&self, name: &str) -> Result<(), UnknownTlsClient> {
        if name.is_empty() {
            return Ok(());
        }
        self.tls
            .client(name)
            .map(|_| ())
            .map_err(|_| UnknownTlsClient(name.to_owned()))
    }

    async fn dial(&self, node: &str, tls_client: &str, fresh: bool) -> Result<Dialed, DialError> {
        let tls = if tls_client.is_empty() {
            None
        } else {
            let config = self
                .tls
                .client(tls_client)
                .and_then(|c| c.quic_config(node))
                .map_err(|e| DialError::Tls(e.to_string()))?;
            Some(config.as_ref().clone())
        };
        let opts = DialOptions {
            tls,
            ..DialOptions::default()
        };
        let dialed = self
            .pool
            .dial(&self.mesh, node, CONTROL_SERVICE, tls_client, opts, fresh)
            .await
            .map_err(classify)?;
        Ok(Dialed {
            stream: Box::new(dialed.stream),
            reused: dialed.reused,
        })
    }
}
