//! TLS for mesh streams.
//!
//! * ConnType 1 (no user TLS, e.g. the `control` service): the insecure configurations
//!   of [`crate::tls`] (a throw-away certificate named `netceptor-insecure-common-name`;
//!   the client's SNI is its own node ID). This gives encryption without authentication.
//! * ConnType 2 (user TLS): the caller's rustls configs are used as given, with ALPN
//!   `netceptor` forced; the client sends no SNI and passes the target node ID to its
//!   certificate verifier as the server name.
//!
//! Only TLS 1.3 is offered (QUIC requires it); the crypto provider is ring.

use rustls::pki_types::ServerName;

pub(crate) use crate::tls::{insecure_client_config, insecure_server_config};
pub use crate::tls::{InsecureKeyType, TlsSetupError, INSECURE_COMMON_NAME, INSECURE_REFUSAL};

/// The one ALPN protocol of mesh streams.
pub const ALPN: &[u8] = crate::tls::NETCEPTOR_ALPN;

/// A user server configuration made fit for mesh streams (ALPN `netceptor`).
pub(crate) fn user_server_config(mut cfg: rustls::ServerConfig) -> rustls::ServerConfig {
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg
}

/// A user client configuration made fit for mesh streams: ALPN `netceptor`, no SNI.
pub(crate) fn user_client_config(mut cfg: rustls::ClientConfig) -> rustls::ClientConfig {
    cfg.alpn_protocols = vec![ALPN.to_vec()];
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
