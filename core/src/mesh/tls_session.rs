//! TLS on byte-stream backends (`tcp-listener` / `tcp-peer` with `tls: <name>`).
//!
//! A backend plugin only opens the connection; the core runs TLS on it with the named
//! `tls-server` (accepted connections) or `tls-client` (dialed connections) before the
//! mesh session starts, and the usual u16-LE framing then runs inside TLS, as with Go
//! receptor. The handshake gets [`TLS_HANDSHAKE_TIMEOUT`] (Go's TLS dial timeout), so a
//! peer that connects and stays silent cannot hold a connection.
//!
//! Node identity (beyond Go 1.6.9, which never compares them): when the peer presented
//! a certificate, the node ID it announces in its ROUTE messages must be one of the
//! certificate's ReceptorNames, unless the TLS configuration sets
//! `skipreceptornamescheck` (or, for a client, `insecureskipverify`). The check runs
//! before the node registers the peer; a refusal drops only that session. [`PeerTls`]
//! makes the same check for connections on which a backend plugin ran TLS itself.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use super::fdio::FdStream;
use super::{IdentityRefused, Mesh, MeshError, PeerIdentity, SessionParams};
use crate::tls::{ClientTls, ServerTls};

/// How long a TLS handshake on a backend connection may take.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// The TLS side a backend connection runs.
#[derive(Debug, Clone)]
pub enum SessionTls {
    /// An accepted connection: the node is the TLS server.
    Server(Arc<ServerTls>),
    /// A dialed connection: the node is the TLS client and verifies the server's
    /// certificate for `server_name` (the host part of the dialed address).
    Client {
        /// The `tls-client` configuration.
        tls: Arc<ClientTls>,
        /// The name (DNS name or IP address) the server's certificate must carry.
        server_name: ServerName<'static>,
    },
}

impl SessionTls {
    /// The identity check for a peer that presented `certs` (leaf first); `None` when
    /// it presented none, as there is nothing to hold it to.
    fn identity(&self, certs: Option<&[CertificateDer<'_>]>) -> Option<PeerIdentity> {
        let settings = match self {
            SessionTls::Server(tls) => PeerTls::Server(tls.clone()),
            SessionTls::Client { tls, .. } => PeerTls::Client(tls.clone()),
        };
        settings.identity(certs?)
    }
}

/// The TLS configuration a peer's certificate is held to: the backend's `tls-server`
/// (the peer dialed in) or `tls-client` (the node dialed out). Also for connections on
/// which a backend plugin ran TLS itself (websockets) and passed the certificate on.
#[derive(Debug, Clone)]
pub enum PeerTls {
    /// The node accepted the connection with this `tls-server`.
    Server(Arc<ServerTls>),
    /// The node dialed the connection with this `tls-client`.
    Client(Arc<ClientTls>),
}

impl PeerTls {
    /// The check that the node ID a peer that presented `certs` (leaf first)
    /// announces is one of the leaf's ReceptorNames (passing whatever the settings
    /// skip); `None` when it presented none, as there is nothing to hold it to. A
    /// refusal reads "it announced node ID X but its certificate does not name it".
    pub fn identity(&self, certs: &[CertificateDer<'_>]) -> Option<PeerIdentity> {
        if certs.is_empty() {
            return None;
        }
        let certs: Vec<CertificateDer<'static>> =
            certs.iter().map(|c| c.clone().into_owned()).collect();
        let settings = self.clone();
        Some(PeerIdentity::new(move |announced| {
            let checked = match &settings {
                PeerTls::Server(tls) => tls.check_peer_node(Some(&certs), announced),
                PeerTls::Client(tls) => tls.check_peer_node(Some(&certs), announced),
            };
            checked.map_err(|reason| IdentityRefused {
                announced: announced.to_owned(),
                reason,
            })
        }))
    }
}

fn handshake_error(e: impl std::fmt::Display) -> MeshError {
    MeshError::TlsHandshake(e.to_string())
}

/// A backend connection whose TLS handshake is done, with the check its peer's
/// announced node ID must pass (when the peer presented a certificate).
pub struct TlsConnection {
    stream: TlsStream<FdStream>,
    identity: Option<PeerIdentity>,
}

impl std::fmt::Debug for TlsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnection")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl SessionTls {
    /// Runs the TLS handshake on a connected byte-stream socket, within
    /// [`TLS_HANDSHAKE_TIMEOUT`]; a failure or time-out is [`MeshError::TlsHandshake`].
    pub async fn handshake(&self, io: OwnedFd) -> Result<TlsConnection, MeshError> {
        let stream =
            FdStream::new(io).map_err(|e| MeshError::Other(format!("unusable connection: {e}")))?;
        let handshake = async {
            Ok::<TlsStream<FdStream>, std::io::Error>(match self {
                SessionTls::Server(server) => TlsAcceptor::from(server.backend_config())
                    .accept(stream)
                    .await?
                    .into(),
                SessionTls::Client { tls, server_name } => TlsConnector::from(tls.backend_config())
                    .connect(server_name.clone(), stream)
                    .await?
                    .into(),
            })
        };
        let stream = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| {
                MeshError::TlsHandshake(format!(
                    "no handshake within {}s",
                    TLS_HANDSHAKE_TIMEOUT.as_secs()
                ))
            })?
            .map_err(handshake_error)?;
        let identity = self.identity(stream.get_ref().1.peer_certificates());
        Ok(TlsConnection { stream, identity })
    }
}

impl Mesh {
    /// Runs the mesh session (u16-LE framing inside TLS) of a connection whose
    /// handshake is done, holding the peer to its certificate's ReceptorNames. Ends
    /// like [`Mesh::run_session`]; an identity refusal is [`MeshError::PeerRefused`].
    pub async fn run_tls_session(
        &self,
        conn: TlsConnection,
        params: SessionParams,
    ) -> Result<(), MeshError> {
        self.run_tls_session_held(conn, params, None).await
    }

    /// [`Mesh::run_tls_session`] holding `handshake` until the session is established
    /// (or ends).
    pub async fn run_tls_session_held(
        &self,
        conn: TlsConnection,
        params: SessionParams,
        handshake: Option<super::HandshakeSlot>,
    ) -> Result<(), MeshError> {
        self.run_stream_session_held(conn.stream, params, conn.identity, handshake)
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::mesh::{IdentityRefused, Mesh, MeshError, MeshOptions, PeerIdentity, SessionParams};
    use crate::tls::TlsError;

    fn mesh(id: &str) -> Mesh {
        Mesh::start(MeshOptions {
            node_id: id.to_owned(),
            max_idle: Duration::from_secs(21),
        })
    }

    fn params() -> SessionParams {
        SessionParams {
            cost: 1.0,
            ..SessionParams::default()
        }
    }

    /// Connects `a` (checking its peer with `identity`) and `b` over an in-memory
    /// stream; returns how `a`'s session ended, or `None` if it still runs after `b`
    /// shows up in `a`'s connections.
    async fn connect(a: &Mesh, b: &Mesh, identity: PeerIdentity) -> Option<Result<(), MeshError>> {
        let (x, y) = tokio::io::duplex(64 * 1024);
        let (a2, b2) = (a.clone(), b.clone());
        let mut sa = tokio::spawn(async move {
            a2.run_stream_session_with_identity(x, params(), Some(identity))
                .await
        });
        tokio::spawn(async move { b2.run_stream_session(y, params()).await });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            tokio::select! {
                r = &mut sa => return Some(r.unwrap_or(Err(MeshError::Shutdown))),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            let peers = a.status().await.connections;
            if peers.iter().any(|c| c.node_id == b.node_id()) {
                return None;
            }
            assert!(tokio::time::Instant::now() < deadline, "no outcome");
        }
    }

    fn only(allowed: &'static str) -> PeerIdentity {
        PeerIdentity::new(move |announced| {
            if announced == allowed {
                Ok(())
            } else {
                Err(IdentityRefused {
                    announced: announced.to_owned(),
                    reason: TlsError::PeerNodeMismatch(format!("it is not {allowed}")),
                })
            }
        })
    }

    #[tokio::test]
    async fn a_peer_failing_the_identity_check_is_never_registered() {
        let (a, b) = (mesh("alpha"), mesh("mallory"));
        match connect(&a, &b, only("bravo")).await {
            Some(Err(MeshError::PeerRefused(why))) => {
                assert_eq!(
                    why,
                    "it announced node ID mallory but its certificate does not name it \
                     (it is not bravo)"
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(a.status().await.connections.is_empty());
    }

    #[tokio::test]
    async fn a_peer_passing_the_identity_check_is_connected() {
        let (a, b) = (mesh("alpha"), mesh("bravo"));
        assert!(connect(&a, &b, only("bravo")).await.is_none());
    }
}
