//! Backend instances: starting them from config sections, handing their connections
//! to the mesh, and restarting them all on `reload`.

use std::collections::BTreeMap;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Section, TlsClientConfig, TlsServerConfig};
use crate::mesh::{Mesh, SessionParams};
use crate::plugin_host::{BackendHandle, BackendInstance, PluginHost};

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
    /// Starts every backend section of `sections` and feeds its connections to `mesh`.
    pub fn start(
        plugins: &PluginHost,
        mesh: &Mesh,
        config: &Config,
        sections: &[&Section],
    ) -> anyhow::Result<Backends> {
        let cancel = CancellationToken::new();
        let mut handles = Vec::new();
        for section in sections {
            let params = session_params(section)?;
            let value = with_tls_config(config, section)?;
            let instance = plugins
                .start_backend(&section.kind, &value)
                .map_err(|e| anyhow::anyhow!("{}: {e}", section.origin))?;
            tracing::info!("started backend {} ({})", section.kind, section.origin);
            handles.push(instance.handle.clone());
            tokio::spawn(feed_sessions(
                instance,
                mesh.clone(),
                params,
                cancel.clone(),
            ));
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

/// Runs one mesh session per connection the backend hands over, until cancelled.
async fn feed_sessions(
    mut instance: BackendInstance,
    mesh: Mesh,
    params: SessionParams,
    cancel: CancellationToken,
) {
    loop {
        let conn = tokio::select! {
            () = cancel.cancelled() => return,
            conn = instance.connections.recv() => match conn {
                Some(conn) => conn,
                None => return,
            },
        };
        let mesh = mesh.clone();
        let params = params.clone();
        let handle = instance.handle.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tracing::debug!(
                "backend connection with {} (inbound: {})",
                conn.peer,
                conn.inbound
            );
            let outcome = tokio::select! {
                () = cancel.cancelled() => Ok(()),
                r = mesh.run_session(conn.fd, conn.framing, params) => r,
            };
            if let Err(e) = outcome {
                tracing::info!("session with {} ended: {e}", conn.peer);
            }
            handle.session_closed(conn.token);
        });
    }
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

/// Backends that do their own TLS (websockets: TLS sits below HTTP) get the named
/// `tls-server` / `tls-client` inlined as `tlsconfig`, with file paths and hex pins.
fn with_tls_config(config: &Config, section: &Section) -> anyhow::Result<Value> {
    let mut value = section.value.clone();
    let Some(name) = section.value.get("tls").and_then(Value::as_str) else {
        return Ok(value);
    };
    if name.is_empty() || !section.kind.starts_with("ws-") {
        return Ok(value);
    }
    let inlined = if section.kind.ends_with("-listener") {
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

pub(super) fn server_json(c: &TlsServerConfig) -> Value {
    serde_json::json!({
        "cert": c.cert,
        "key": c.key,
        "requireclientcert": c.require_client_cert,
        "clientcas": c.client_cas,
        "pinnedclientcert": c.pinned_client_certs.iter().map(|p| hex(p)).collect::<Vec<_>>(),
        "skipreceptornamescheck": c.skip_receptor_names_check,
        "mintls13": c.min_tls13,
    })
}

pub(super) fn client_json(c: &TlsClientConfig) -> Value {
    serde_json::json!({
        "cert": c.cert,
        "key": c.key,
        "rootcas": c.root_cas,
        "insecureskipverify": c.insecure_skip_verify,
        "pinnedservercert": c.pinned_server_certs.iter().map(|p| hex(p)).collect::<Vec<_>>(),
        "skipreceptornamescheck": c.skip_receptor_names_check,
        "mintls13": c.min_tls13,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
