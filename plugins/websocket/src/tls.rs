//! TLS for `wss`: rustls configurations built from receptor's `tls-server` and
//! `tls-client` settings by `receptor-tls`, the implementation the core uses for its
//! own TLS backends, so both read the settings and check certificates the same way.
//!
//! A TCP backend's TLS is the core's business, but a websocket's TLS sits under HTTP, so
//! this plugin does it. The section keeps `tls` as written (the name of a `tls-server` or
//! `tls-client` config) and the core adds `tlsconfig`, that named config's fields as an
//! object, already checked against the node ID. What the settings mean (client
//! certificates, `clientcas`, pins, `insecureskipverify`, `mintls13`) is documented in
//! `receptor-tls`. Here:
//!
//! * a `ws-peer` without `tlsconfig` gets Go's built-in `default` client settings
//!   (system roots, TLS 1.2 or 1.3, no client certificate); the server's name is the
//!   host of the URL;
//! * no ALPN but `http/1.1` is ever offered: the upgrade needs HTTP/1.1, and a Go server
//!   would otherwise pick `h2`.
//!
//! The core compares the peer certificate's ReceptorNames with the node ID the peer
//! announces (the plugin hands it the leaf certificate), so that check is not done here.

use std::sync::Arc;

use receptor_plugin_sdk::{PluginError, Section};
use receptor_tls::{ClientTls, ServerTls, TlsError};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use serde_json::Value;

/// The only application protocol offered or accepted.
const ALPN_HTTP11: &[u8] = b"http/1.1";

fn err(what: impl std::fmt::Display) -> PluginError {
    PluginError::new(what.to_string())
}

/// The `tlsconfig` object of a section and the label of its errors
/// (`ws-listener: tls-server "name"`), or `None` when the section has no TLS. A `tls`
/// name without `tlsconfig` is an error.
fn tls_section<'a>(
    section: &'a Section,
    what: &str,
) -> Result<Option<(&'a Value, String)>, PluginError> {
    let name = section.string("tls")?.filter(|n| !n.is_empty());
    match (section.get("tlsconfig"), name) {
        (Some(v @ Value::Object(_)), name) => {
            let label = match name {
                Some(n) => format!("{}: {what} {n:?}", section.kind()),
                None => format!("{}: {what}", section.kind()),
            };
            Ok(Some((v, label)))
        }
        (Some(_), _) => Err(err(format!(
            "{}: key \"tlsconfig\": expected a map of {what} settings",
            section.kind()
        ))),
        (None, Some(name)) => Err(err(format!(
            "{}: {what} config {name:?} was not passed to the plugin (no \"tlsconfig\")",
            section.kind()
        ))),
        (None, None) => Ok(None),
    }
}

/// A settings error under its section's label; a bad fingerprint also names its key.
fn settings_error(label: &str, pins_key: &str, e: TlsError) -> PluginError {
    match e {
        TlsError::Fingerprint(_) => err(format!("{label}: key {pins_key:?}: {e}")),
        e => err(format!("{label}: {e}")),
    }
}

/// The server configuration of a `ws-listener` section, `None` without TLS.
pub fn server_config(section: &Section) -> Result<Option<Arc<ServerConfig>>, PluginError> {
    let Some((value, label)) = tls_section(section, "tls-server")? else {
        return Ok(None);
    };
    let tls = ServerTls::from_checked_section(value)
        .map_err(|e| settings_error(&label, "pinnedclientcert", e))?;
    let mut config = (*tls.backend_config()).clone();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Some(Arc::new(config)))
}

/// The client configuration of a `ws-peer` section. Without `tlsconfig`: Go's `default`
/// (the system roots, TLS 1.2 or 1.3, no client certificate).
pub fn client_config(section: &Section) -> Result<Arc<ClientConfig>, PluginError> {
    let tls = match tls_section(section, "tls-client")? {
        Some((value, label)) => ClientTls::from_checked_section(value)
            .map_err(|e| settings_error(&label, "pinnedservercert", e))?,
        None => ClientTls::default_config().map_err(|e| err(format!("{}: {e}", section.kind())))?,
    };
    let mut config = (*tls.backend_config()).clone();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// The name a client checks the server's certificate against: the URL's host.
pub fn server_name(host: &str) -> Result<ServerName<'static>, PluginError> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| err(format!("{host:?} is not a valid TLS server name: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_tls_name_needs_its_config() {
        let s = Section::from_value("ws-listener", json!({"port": 1, "tls": "srv"})).unwrap();
        let e = server_config(&s).unwrap_err().to_string();
        assert!(e.contains("\"srv\"") && e.contains("tlsconfig"), "{e}");
        let s = Section::from_value("ws-listener", json!({"port": 1})).unwrap();
        assert!(server_config(&s).unwrap().is_none());
        let s = Section::from_value(
            "ws-listener",
            json!({"tls": "srv", "tlsconfig": {"cert": "/nonexistent.pem", "key": "/nonexistent.key"}}),
        )
        .unwrap();
        let e = server_config(&s).unwrap_err().to_string();
        assert!(
            e.contains("tls-server \"srv\"") && e.contains("/nonexistent.pem"),
            "{e}"
        );
        let s = Section::from_value(
            "ws-peer",
            json!({"tls": "cli", "tlsconfig": {"cert": "/x.pem"}}),
        )
        .unwrap();
        let e = client_config(&s).unwrap_err().to_string();
        assert!(e.contains("both be supplied or neither"), "{e}");
        let s = Section::from_value(
            "ws-peer",
            json!({"tlsconfig": {"insecureskipverify": "yes", "pinnedservercert": ["12"]}}),
        )
        .unwrap();
        let e = client_config(&s).unwrap_err().to_string();
        assert!(
            e.contains("pinnedservercert") && e.contains("32 or 64"),
            "{e}"
        );
    }
}
