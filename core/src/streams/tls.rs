//! TLS for mesh streams.
//!
//! * ConnType 1 (no user TLS, e.g. the `control` service): the insecure configurations
//!   of [`crate::tls`] (a throw-away certificate named `netceptor-insecure-common-name`;
//!   the client's SNI is its own node ID). This gives encryption without authentication.
//! * ConnType 2 (user TLS): the caller's rustls configs are used as given, with ALPN
//!   `netceptor` forced; the client sends no SNI and passes the target node ID to its
//!   certificate verifier as the server name.
//!
//! A listener also accepts the ALPN protocol [`MUX_ALPN`] (several streams on one
//! connection), which only our pooled dialers offer.
//!
//! Only TLS 1.3 is offered (QUIC requires it); the crypto provider is ring.

use rustls::pki_types::ServerName;

pub(crate) use crate::tls::{insecure_client_config, insecure_server_config};
pub use crate::tls::{InsecureKeyType, TlsSetupError, INSECURE_COMMON_NAME, INSECURE_REFUSAL};

/// The ALPN protocol of mesh streams, as Go receptor speaks it: one stream per
/// connection.
pub const ALPN: &[u8] = crate::tls::NETCEPTOR_ALPN;

/// The ALPN protocol of shared connections between our nodes: any number of streams per
/// connection, each opened with the same `0x00` preamble. A listener prefers it, a
/// pooled dialer offers it before [`ALPN`]; Go knows only `netceptor` and negotiates
/// that, so Go peers keep one stream per connection.
pub const MUX_ALPN: &[u8] = b"receptor-mux/1";

/// The protocols a listener accepts, preferred first.
pub(crate) fn server_alpn() -> Vec<Vec<u8>> {
    vec![MUX_ALPN.to_vec(), ALPN.to_vec()]
}

/// The protocols a dialer offers: `netceptor`, preceded by the shared-connection
/// protocol when the connection is to be pooled.
pub(crate) fn client_alpn(shared: bool) -> Vec<Vec<u8>> {
    if shared {
        vec![MUX_ALPN.to_vec(), ALPN.to_vec()]
    } else {
        vec![ALPN.to_vec()]
    }
}

/// Whether the handshake of `conn` settled on the shared-connection protocol.
pub(crate) fn is_shared(conn: &quinn::Connection) -> bool {
    conn.handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .is_some_and(|p| p == MUX_ALPN)
}

/// A user server configuration made fit for mesh streams (ALPN `netceptor`, and the
/// shared-connection protocol for our own peers).
pub(crate) fn user_server_config(mut cfg: rustls::ServerConfig) -> rustls::ServerConfig {
    cfg.alpn_protocols = server_alpn();
    cfg
}

/// A user client configuration made fit for mesh streams: ALPN `netceptor` (and the
/// shared-connection protocol if `shared`), no SNI.
pub(crate) fn user_client_config(
    mut cfg: rustls::ClientConfig,
    shared: bool,
) -> rustls::ClientConfig {
    cfg.alpn_protocols = client_alpn(shared);
    cfg.enable_sni = false;
    cfg
}

/// The name passed to the TLS client: `name` when rustls accepts it as a server name,
/// else a fixed placeholder (Go servers ignore SNI).
pub(crate) fn server_name_for(name: &str) -> String {
    match ServerName::try_from(name) {
        Ok(_) => name.to_owned(),
        Err(_) => "netceptor".to_owned(),
    }
}
