//! Backend instances: starting them from config sections, handing their connections
//! to the mesh, and on `reload` changing only the sections the new configuration
//! changes.
//!
//! A backend section naming `tls` gets TLS either from the core (TLS-TCP: the core runs
//! the handshake on the connection the plugin hands over) or from the plugin itself
//! (websockets, where TLS sits under HTTP: the plugin gets the settings inlined and
//! hands over the peer's leaf certificate). Either way the peer is held to the node ID
//! its certificate names (unless `skipreceptornamescheck`), with the same refusal.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::trust::{client_json, server_json};
use crate::config::{Config, Section};
use crate::mesh::{
    Framing, HandshakeSlot, Mesh, MeshError, PeerIdentity, PeerTls, SessionParams, SessionTls,
};
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

/// The running backends of a node: each configured backend section with its plugin
/// instance and the sessions it carries. [`Backends::reload`] changes only what the new
/// configuration changes; dropping or [`Backends::stop`]ping them closes every listener,
/// dialer and session.
pub struct Backends {
    running: Vec<Running>,
}

/// One backend section that was checked and can be started (again).
#[derive(Clone)]
struct Prepared {
    section: Section,
    /// The section as the plugin gets it (with `tlsconfig` for plugins doing TLS).
    value: Value,
    params: SessionParams,
    core_tls: Option<Arc<CoreTls>>,
    plugin_tls: Option<PeerTls>,
    /// `mesh-limits` `maxpendingsessions`.
    max_pending: usize,
}

/// One started backend section.
struct Running {
    prepared: Prepared,
    handle: BackendHandle,
    /// Ends the sessions this backend handed over.
    sessions: CancellationToken,
}

impl Running {
    /// Stops the plugin instance and ends the sessions it carried.
    fn stop(&self) {
        self.sessions.cancel();
        self.handle.stop();
    }
}

/// Why a reload of the backends did not apply. Whatever the reason, the backends that
/// ran before still run.
#[derive(Debug, thiserror::Error)]
pub enum BackendReloadError {
    /// A new or changed section is malformed; nothing was touched.
    #[error("{0:#}")]
    Invalid(anyhow::Error),
    /// A new or changed backend did not start; the ones it was to replace run again.
    #[error("{0:#}")]
    Start(anyhow::Error),
}

/// What a reload did, by section count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Sections present before and after, unchanged: left running untouched.
    pub kept: usize,
    /// Sections gone from the configuration (or changed): stopped.
    pub stopped: usize,
    /// Sections new in the configuration (or changed): started.
    pub started: usize,
}

/// How long a stopped backend gets to give back what it held (threads ended, sockets
/// closed) before the backend that replaces it starts anyway.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a replacement keeps trying to start after that (a plugin may close its
/// sockets just after giving its context back).
const RESTART_RETRY: Duration = Duration::from_secs(1);

/// Pause between those tries.
const RESTART_PAUSE: Duration = Duration::from_millis(50);

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
        let mut backends = Backends {
            running: Vec::new(),
        };
        for section in sections {
            let prepared = prepare(plugins, config, tls, section)?;
            backends.running.push(launch(plugins, mesh, prepared)?);
        }
        Ok(backends)
    }

    /// Moves the running backends to `sections` of `config`: a section present before
    /// and after with the same settings keeps running untouched (its listener stays
    /// bound, its sessions up); one that is gone stops; a new one starts; a changed one
    /// (seen as gone plus new) is started only once the old one has stopped and given
    /// back what it held (a removed one, too, has let go when this returns, so the next
    /// reload can bind its address). Every new section is checked before anything
    /// changes, and new sections that replace nothing start before any old one stops: a
    /// reload that fails leaves the backends that ran before running (if a replacement
    /// fails, the ones it replaced start again).
    pub async fn reload(
        &mut self,
        plugins: &PluginHost,
        mesh: &Mesh,
        config: &Config,
        tls: &TlsRegistry,
        sections: &[&Section],
    ) -> Result<ReloadSummary, BackendReloadError> {
        // Pair each new section with an identical running one (duplicates pair one to one).
        let mut matched = vec![false; self.running.len()];
        let mut added = Vec::new();
        for section in sections {
            let same = self
                .running
                .iter()
                .enumerate()
                .position(|(i, r)| !matched[i] && r.prepared.section == **section);
            match same {
                Some(i) => matched[i] = true,
                None => added.push(*section),
            }
        }
        let kept = matched.iter().filter(|m| **m).count();
        let prepared = added
            .iter()
            .map(|s| prepare(plugins, config, tls, s))
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(BackendReloadError::Invalid)?;
        // A changed section is a removed one and an added one of the same kind: each
        // removed section is paired with the added one of its kind closest to it.
        let mut replaces = vec![false; prepared.len()];
        for (r, _) in self.running.iter().zip(&matched).filter(|(_, m)| !**m) {
            let closest = prepared
                .iter()
                .enumerate()
                .filter(|(i, p)| !replaces[*i] && p.section.kind == r.prepared.section.kind)
                .max_by_key(|(_, p)| shared_keys(&p.section.value, &r.prepared.section.value))
                .map(|(i, _)| i);
            if let Some(i) = closest {
                replaces[i] = true;
            }
        }
        let (replacing, fresh): (Vec<_>, Vec<_>) =
            prepared.into_iter().zip(replaces).partition(|(_, r)| *r);
        let replacing: Vec<Prepared> = replacing.into_iter().map(|(p, _)| p).collect();
        let fresh: Vec<Prepared> = fresh.into_iter().map(|(p, _)| p).collect();

        // Additions that replace nothing: started while the old backends still run.
        let mut started = Vec::new();
        for p in fresh {
            match launch(plugins, mesh, p) {
                Ok(r) => started.push(r),
                Err(e) => {
                    stop_and_release(&started).await;
                    return Err(BackendReloadError::Start(e));
                }
            }
        }

        // Then the replacements: the old ones stop and let go first.
        let mut old = Vec::new();
        let mut still = Vec::new();
        for (r, m) in std::mem::take(&mut self.running).into_iter().zip(matched) {
            if m {
                still.push(r);
            } else {
                old.push(r);
            }
        }
        self.running = still;
        let stopped = old.len();
        stop_and_release(&old).await;
        for p in replacing {
            match launch_retrying(plugins, mesh, p).await {
                Ok(r) => started.push(r),
                Err(e) => {
                    // Back to what ran before: the new ones stop, the old ones start again.
                    stop_and_release(&started).await;
                    for r in old {
                        let origin = r.prepared.section.origin.clone();
                        match launch(plugins, mesh, r.prepared) {
                            Ok(r) => self.running.push(r),
                            Err(e) => tracing::error!(
                                "{origin}: cannot restart the backend after a failed reload: {e:#}"
                            ),
                        }
                    }
                    return Err(BackendReloadError::Start(e));
                }
            }
        }
        let summary = ReloadSummary {
            kept,
            stopped,
            started: started.len(),
        };
        self.running.extend(started);
        Ok(summary)
    }

    /// Stops every backend and closes the sessions they carried.
    pub fn stop(&self) {
        for r in &self.running {
            r.stop();
        }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How many top-level keys two section values share with equal values.
fn shared_keys(a: &Value, b: &Value) -> usize {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            a.iter().filter(|(k, v)| b.get(*k) == Some(*v)).count()
        }
        _ => 0,
    }
}

/// Stops `backends` and waits (at most [`RELEASE_TIMEOUT`]) until each has given back
/// what it held.
async fn stop_and_release(backends: &[Running]) {
    for r in backends {
        r.stop();
    }
    let deadline = tokio::time::Instant::now() + RELEASE_TIMEOUT;
    for r in backends {
        if tokio::time::timeout_at(deadline, r.handle.released())
            .await
            .is_err()
        {
            break;
        }
    }
    for r in backends.iter().filter(|r| !r.handle.is_released()) {
        tracing::warn!(
            "{}: the stopped {} backend has not let go of its resources after {:?}",
            r.prepared.section.origin,
            r.prepared.section.kind,
            RELEASE_TIMEOUT
        );
    }
}

/// Checks a backend section: the core's keys, its TLS configuration.
fn prepare(
    plugins: &PluginHost,
    config: &Config,
    tls: &TlsRegistry,
    section: &Section,
) -> anyhow::Result<Prepared> {
    // The plugin says whether it runs TLS itself (ABI 1.2 capability).
    let own_tls = plugins.runs_own_tls(&section.kind);
    Ok(Prepared {
        section: section.clone(),
        params: session_params(section)?,
        core_tls: CoreTls::from_section(tls, section, own_tls)?.map(Arc::new),
        plugin_tls: plugin_peer_tls(tls, section, own_tls)?,
        value: with_tls_config(config, section, own_tls)?,
        max_pending: config.mesh_limits.max_pending_sessions,
    })
}

/// Starts the plugin instance of a checked section and feeds its connections to `mesh`.
fn launch(plugins: &PluginHost, mesh: &Mesh, prepared: Prepared) -> anyhow::Result<Running> {
    let section = &prepared.section;
    let instance = plugins
        .start_backend(&section.kind, &prepared.value)
        .map_err(|e| anyhow::anyhow!("{}: {e}", section.origin))?;
    tracing::info!("started backend {} ({})", section.kind, section.origin);
    let handle = instance.handle.clone();
    let sessions = CancellationToken::new();
    let feed = Feed {
        label: Arc::from(section.kind.as_str()),
        mesh: mesh.clone(),
        params: prepared.params.clone(),
        tls: prepared.core_tls.clone(),
        plugin_tls: prepared.plugin_tls.clone(),
        handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
        pending: Arc::new(Semaphore::new(prepared.max_pending)),
        max_pending: prepared.max_pending,
        refusing: Arc::new(AtomicBool::new(false)),
    };
    tokio::spawn(feed_sessions(instance, feed, sessions.clone()));
    Ok(Running {
        prepared,
        handle,
        sessions,
    })
}

/// [`launch`], tried again for [`RESTART_RETRY`] while it fails.
async fn launch_retrying(
    plugins: &PluginHost,
    mesh: &Mesh,
    prepared: Prepared,
) -> anyhow::Result<Running> {
    let deadline = tokio::time::Instant::now() + RESTART_RETRY;
    loop {
        match launch(plugins, mesh, prepared.clone()) {
            Ok(r) => return Ok(r),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(e) => {
                tracing::debug!("{e:#}; trying again");
                tokio::time::sleep(RESTART_PAUSE).await;
            }
        }
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
    /// Permits for connections that have not completed the mesh handshake.
    pending: Arc<Semaphore>,
    /// The number of those permits.
    max_pending: usize,
    /// Connections are being refused for want of a permit (logged once per spell).
    refusing: Arc<AtomicBool>,
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
        // A connection beyond the backend's handshakes in progress is closed at once.
        let Ok(permit) = feed.pending.clone().try_acquire_owned() else {
            if !feed.refusing.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "{}: {} connections have not completed their handshake; closing new ones until fewer",
                    feed.label,
                    feed.max_pending
                );
            }
            instance.handle.session_closed(conn.token);
            continue;
        };
        if feed.refusing.swap(false, Ordering::Relaxed) {
            tracing::info!("{}: accepting connections again", feed.label);
        }
        let feed = feed.clone();
        let slot = HandshakeSlot::new(permit);
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
                r = run_connection(&feed, conn, slot) => r,
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
/// `slot` counts it among the backend's connections in their handshake until the
/// session is established.
async fn run_connection(
    feed: &Feed,
    conn: BackendConnection,
    slot: HandshakeSlot,
) -> Result<(), MeshError> {
    let Some(tls) = &feed.tls else {
        let identity = plugin_identity(feed, &conn);
        let params = feed.params.clone();
        return feed
            .mesh
            .run_backend_session(conn.fd, conn.framing, params, identity, Some(slot))
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
        .run_tls_session_held(tls_conn, feed.params.clone(), Some(slot))
        .await
}

/// The check of a connection on which the plugin ran TLS and passed the peer's
/// certificate on; `None` without a certificate or without a TLS configuration to
/// hold it to (see [`plugin_peer_tls`]).
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
///
/// A `wss://` peer without `tls` verifies its server with the system roots, which is the
/// node's built-in `default` tls-client: its certificate is held to that configuration,
/// so the node ID the server announces must be one of the certificate's ReceptorNames
/// unless a `tls-client` named `default` sets `skipreceptornamescheck`.
fn plugin_peer_tls(
    registry: &TlsRegistry,
    section: &Section,
    own_tls: bool,
) -> anyhow::Result<Option<PeerTls>> {
    let ctx = |e: crate::tls::TlsError| anyhow::anyhow!("{}: {e}", section.origin);
    let Some(name) = tls_name(section)? else {
        if is_wss_peer(section) {
            return Ok(Some(PeerTls::Client(
                registry.client(DEFAULT_CLIENT).map_err(ctx)?,
            )));
        }
        return Ok(None);
    };
    if !own_tls {
        return Ok(None);
    }
    Ok(Some(if is_listener(&section.kind) {
        PeerTls::Server(registry.server(name).map_err(ctx)?)
    } else {
        PeerTls::Client(registry.client(name).map_err(ctx)?)
    }))
}

/// The name of the node's built-in client configuration (system roots).
const DEFAULT_CLIENT: &str = "default";

/// Whether `section` is a `ws-peer` dialing a `wss://` URL.
fn is_wss_peer(section: &Section) -> bool {
    section.kind == "ws-peer"
        && section
            .value
            .get("address")
            .and_then(Value::as_str)
            .is_some_and(|a| a.trim_start().to_ascii_lowercase().starts_with("wss://"))
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
