//! Backend instances: starting them from config sections, handing their connections
//! to the mesh, and restarting them all on `reload`.
//!
//! A backend section naming `tls` gets TLS either from the core (TLS-TCP: the core runs
//! the handshake on the connection the plugin hands over) or from the plugin itself
//! (websockets, where TLS sits under HTTP: the plugin gets the settings inlined and
//! hands over the peer's leaf certificate). Either way the peer is held to the node ID
//! its certificate names (unless `skipreceptornamescheck`), with the same refusal.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::trust::{client_json, server_json};
use crate::config::{Config, Section};
use crate::mesh::{Framing, Mesh, MeshError, PeerIdentity, PeerTls, SessionParams, SessionTls};
use crate::plugin_host::{BackendConnection, BackendHandle, BackendInstance, PluginHost};
use crate::tls::{ClientTls, TlsRegistry};

/// Errors reading the core's keys of a backend section.
#[derive(Debug, thiserror::Error)]
pub enum BackendConfigError {
    /// A key has a value of the wrong shape.
    #[error("{origin}: {key}: {expected}")]
    BadValue {
        /// Where the section was written.
        origin: String,
        /// The key.
        key: &'static str,
        /// What was expected.
        expected: &'static str,
    },
}

/// The backends of one configuration generation; dropping or [`Backends::stop`]ping
/// them closes their listeners, dialers and sessions.
pub struct Backends {
    handles: Vec<BackendHandle>,
    cancel: CancellationToken,
}

impl Backends {
    /// Starts every backend section of `sections` and feeds its connections to `mesh`;
    /// a section naming `tls` gets that configuration of `tls` (run by the core, or
    /// handed to a plugin that does TLS itself).
    pub fn start(
        plugins: &PluginHost,
        mesh: &Mesh,
        config: &Config,
        tls: &TlsRegistry,
        sections: &[&Section],
    ) -> anyhow::Result<Backends> {
        let cancel = CancellationToken::new();
        let mut handles = Vec::new();
        for section in sections {
            let params = session_params(section)?;
            // The plugin says whether it runs TLS itself (ABI 1.2 capability).
            let own_tls = plugins.runs_own_tls(&section.kind);
            let core_tls = CoreTls::from_section(tls, section, own_tls)?;
            let plugin_tls = plugin_peer_tls(tls, section, own_tls)?;
            let value = with_tls_config(config, section, own_tls)?;
            let instance = plugins
                .start_backend(&section.kind, &value)
                .map_err(|e| anyhow::anyhow!("{}: {e}", section.origin))?;
            tracing::info!("started backend {} ({})", section.kind, section.origin);
            handles.push(instance.handle.clone());
            let feed = Feed {
                label: Arc::from(section.kind.as_str()),
                mesh: mesh.clone(),
                params,
                tls: core_tls.map(Arc::new),
                plugin_tls,
                handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
            };
            tokio::spawn(feed_sessions(instance, feed, cancel.clone()));
        }
        Ok(Backends { handles, cancel })
    }

    /// Stops every backend and closes the sessions they carried.
    pub fn stop(&self) {
        self.cancel.cancel();
        for handle in &self.handles {
            handle.stop();
        }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.stop();
    }
}

/// TLS handshakes one backend runs at a time; connections beyond are refused, so a
/// flood of connections that never finish their handshake stays bounded.
const MAX_HANDSHAKES: usize = 64;

/// What every connection of one backend gets.
#[derive(Clone)]
struct Feed {
    /// The backend kind, for logs.
    label: Arc<str>,
    mesh: Mesh,
    params: SessionParams,
    tls: Option<Arc<CoreTls>>,
    /// For a plugin that runs TLS itself: what the certificates it passes on are held to.
    plugin_tls: Option<PeerTls>,
    /// Permits for TLS handshakes in progress.
    handshakes: Arc<Semaphore>,
}

/// Runs one mesh session per connection the backend hands over, until cancelled.
async fn feed_sessions(mut instance: BackendInstance, feed: Feed, cancel: CancellationToken) {
    loop {
        let conn = tokio::select! {
            () = cancel.cancelled() => return,
            conn = instance.connections.recv() => match conn {
                Some(conn) => conn,
                None => return,
            },
        };
        let feed = feed.clone();
        let handle = instance.handle.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let (peer, token) = (conn.peer.clone(), conn.token);
            tracing::debug!(
                "{} connection with {peer} (inbound: {})",
                feed.label,
                conn.inbound
            );
            let outcome = tokio::select! {
                () = cancel.cancelled() => Ok(()),
                r = run_connection(&feed, conn) => r,
            };
            match outcome {
                Ok(()) => {}
                Err(e @ (MeshError::TlsHandshake(_) | MeshError::PeerRefused(_))) => {
                    tracing::warn!("{} connection with {peer} refused: {e}", feed.label);
                }
                Err(e) => tracing::info!("session with {peer} ended: {e}"),
            }
            handle.session_closed(token);
        });
    }
}

/// One connection's session, in TLS when the backend asks the core for it.
async fn run_connection(feed: &Feed, conn: BackendConnection) -> Result<(), MeshError> {
    let Some(tls) = &feed.tls else {
        let identity = plugin_identity(feed, &conn);
        return feed
            .mesh
            .run_session_with_identity(conn.fd, conn.framing, feed.params.clone(), identity)
            .await;
    };
    if conn.framing != Framing::Len16Le {
        return Err(MeshError::TlsHandshake(
            "TLS needs a byte-stream backend connection".to_owned(),
        ));
    }
    let session_tls = tls
        .for_connection(&conn.peer)
        .map_err(MeshError::TlsHandshake)?;
    let permit = feed.handshakes.clone().try_acquire_owned().map_err(|_| {
        MeshError::TlsHandshake(format!(
            "more than {MAX_HANDSHAKES} TLS handshakes in progress on this backend"
        ))
    })?;
    let tls_conn = session_tls.handshake(conn.fd).await?;
    drop(permit);
    feed.mesh
        .run_tls_session(tls_conn, feed.params.clone())
        .await
}

/// The check of a connection on which the plugin ran TLS and passed the peer's
/// certificate on; `None` without a certificate or without a TLS configuration to
/// hold it to (a `wss://` peer without `tls` uses the system roots and no names).
fn plugin_identity(feed: &Feed, conn: &BackendConnection) -> Option<PeerIdentity> {
    let cert = conn.peer_cert.as_deref()?;
    let Some(settings) = &feed.plugin_tls else {
        tracing::debug!(
            "{} connection with {}: no TLS configuration to check its certificate against",
            feed.label,
            conn.peer
        );
        return None;
    };
    settings.identity(&[CertificateDer::from(cert)])
}

/// Reads the keys the core enforces on every backend: `cost`, `nodecost`, `allowedpeers`.
pub fn session_params(section: &Section) -> Result<SessionParams, BackendConfigError> {
    let bad = |key, expected| BackendConfigError::BadValue {
        origin: section.origin.clone(),
        key,
        expected,
    };
    let cost = match section.value.get("cost") {
        None | Some(Value::Null) => 1.0,
        Some(v) => number(v)
            .filter(|c| *c > 0.0)
            .ok_or(bad("cost", "a number greater than 0"))?,
    };
    let mut node_cost = BTreeMap::new();
    match section.value.get("nodecost") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (node, v) in map {
                let c = number(v).filter(|c| *c > 0.0).ok_or(bad(
                    "nodecost",
                    "a map of node IDs to numbers greater than 0",
                ))?;
                node_cost.insert(node.clone(), c);
            }
        }
        Some(_) => {
            return Err(bad(
                "nodecost",
                "a map of node IDs to numbers greater than 0",
            ))
        }
    }
    let allowed_peers = match section.value.get("allowedpeers") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.split(',').map(|p| p.trim().to_owned()).collect()),
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or(bad("allowedpeers", "a list of node IDs"))?,
        ),
        Some(_) => return Err(bad("allowedpeers", "a list of node IDs")),
    };
    Ok(SessionParams {
        cost,
        node_cost,
        allowed_peers,
    })
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Backends that do their own TLS (`own_tls`: the plugin declared the capability, as the
/// websocket plugin does, TLS sitting below HTTP there) get the named `tls-server` /
/// `tls-client` inlined as `tlsconfig`, with file paths and hex pins; the core runs TLS
/// for every other backend section that names a `tls` configuration.
fn with_tls_config(config: &Config, section: &Section, own_tls: bool) -> anyhow::Result<Value> {
    let mut value = section.value.clone();
    let Some(name) = section.value.get("tls").and_then(Value::as_str) else {
        return Ok(value);
    };
    if name.is_empty() || !own_tls {
        return Ok(value);
    }
    let inlined = if is_listener(&section.kind) {
        config.tls_server(name).map(server_json)
    } else {
        config.tls_client(name).map(client_json)
    };
    let inlined =
        inlined.ok_or_else(|| anyhow::anyhow!("{}: unknown TLS config {name}", section.origin))?;
    if let Value::Object(map) = &mut value {
        map.insert("tlsconfig".to_owned(), inlined);
    }
    Ok(value)
}

/// The section's `tls` key: the name of a TLS configuration, `None` if absent or empty.
fn tls_name(section: &Section) -> anyhow::Result<Option<&str>> {
    match section.value.get("tls") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(anyhow::anyhow!(
            "{}: tls: expected the name of a TLS configuration",
            section.origin
        )),
    }
}

/// For a backend whose plugin does TLS itself and that names `tls`: the `tls-server`
/// (listener) or `tls-client` (dialer) the peer certificates it passes on are held to.
fn plugin_peer_tls(
    registry: &TlsRegistry,
    section: &Section,
    own_tls: bool,
) -> anyhow::Result<Option<PeerTls>> {
    let Some(name) = tls_name(section)? else {
        return Ok(None);
    };
    if !own_tls {
        return Ok(None);
    }
    let ctx = |e: crate::tls::TlsError| anyhow::anyhow!("{}: {e}", section.origin);
    Ok(Some(if is_listener(&section.kind) {
        PeerTls::Server(registry.server(name).map_err(ctx)?)
    } else {
        PeerTls::Client(registry.client(name).map_err(ctx)?)
    }))
}

fn is_listener(kind: &str) -> bool {
    kind.ends_with("-listener")
}

/// The TLS the core runs on one backend's connections.
enum CoreTls {
    /// A listener: accepted connections get the `tls-server`.
    Server(SessionTls),
    /// A dialer: connections get the `tls-client`, checking the server's certificate
    /// for the dialed host (from `address`, else from the connection's peer).
    Client {
        tls: Arc<ClientTls>,
        server_name: Option<ServerName<'static>>,
    },
}

impl CoreTls {
    /// Reads the section's `tls` key; `None` without it or when the plugin does TLS.
    fn from_section(
        registry: &TlsRegistry,
        section: &Section,
        own_tls: bool,
    ) -> anyhow::Result<Option<CoreTls>> {
        let Some(name) = tls_name(section)? else {
            return Ok(None);
        };
        if own_tls {
            return Ok(None);
        }
        let ctx = |e: crate::tls::TlsError| anyhow::anyhow!("{}: {e}", section.origin);
        if is_listener(&section.kind) {
            let tls = registry.server(name).map_err(ctx)?;
            return Ok(Some(CoreTls::Server(SessionTls::Server(tls))));
        }
        let tls = registry.client(name).map_err(ctx)?;
        let server_name = match section.value.get("address").and_then(Value::as_str) {
            Some(address) => Some(
                server_name(address)
                    .map_err(|e| anyhow::anyhow!("{}: address {address:?}: {e}", section.origin))?,
            ),
            None => None,
        };
        Ok(Some(CoreTls::Client { tls, server_name }))
    }

    /// The TLS side for a connection with `peer`.
    fn for_connection(&self, peer: &str) -> Result<SessionTls, String> {
        match self {
            CoreTls::Server(tls) => Ok(tls.clone()),
            CoreTls::Client {
                tls,
                server_name: name,
            } => {
                let server_name = match name {
                    Some(n) => n.clone(),
                    None => server_name(peer)?,
                };
                Ok(SessionTls::Client {
                    tls: tls.clone(),
                    server_name,
                })
            }
        }
    }
}

/// The name a dialer verifies the server's certificate for: the host part of
/// `host:port` (`[v6]:port` too), as Go's TLS dialer takes it.
fn server_name(address: &str) -> Result<ServerName<'static>, String> {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host:?} is not a usable TLS server name: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_is_the_host_of_the_address() {
        let name = |a: &str| server_name(a).map(|n| n.to_str().into_owned());
        assert_eq!(name("localhost:2222").as_deref(), Ok("localhost"));
        assert_eq!(name("127.0.0.1:2222").as_deref(), Ok("127.0.0.1"));
        assert_eq!(name("[::1]:2222").as_deref(), Ok("::1"));
        assert_eq!(
            name("node.example.com:1").as_deref(),
            Ok("node.example.com")
        );
        assert!(name("bad host:1").is_err());
    }
}
