//! `ws-listener`: an HTTP/1.1 server (optionally TLS) that upgrades requests on one path
//! to websocket sessions.
//!
//! As Go receptor's listener (gorilla/websocket behind Go's `http.ServeMux`):
//! * the path matches exactly, or as a prefix when it ends in `/` (so the default `/`
//!   takes every path); another path gets `404 Not Found`;
//! * an `Origin` header, if present, must name the same host as the `Host` header, else
//!   `403 Forbidden` (gorilla's default check);
//! * no subprotocol, no compression.
//!
//! A connection that is not a websocket upgrade is closed; TLS and the HTTP request must
//! complete within [`HANDSHAKE_TIMEOUT`] each. At most [`MAX_HANDSHAKES`] connections
//! are in the handshake or waiting for the host to take them; more are closed at once. None of this affects
//! sessions already running.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use receptor_plugin_sdk::backend_support::listen::ListenAddress;
use receptor_plugin_sdk::{
    log, Backend, ConnectionSink, PluginError, Section, SessionToken, CORE_BACKEND_KEYS,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_util::sync::CancellationToken;

use crate::session::{self, Io, Ws};
use crate::{runtime, tls};

/// How long the TLS handshake, and then the HTTP upgrade, may take (Go's
/// `ReadHeaderTimeout`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most connections in their handshake at once.
pub const MAX_HANDSHAKES: usize = 256;

/// A running listener.
struct Listener {
    stop: CancellationToken,
}

impl Backend for Listener {
    fn session_closed(&self, _token: SessionToken) {}

    fn stop(&self) {
        self.stop.cancel();
    }
}

/// What every connection of one listener needs.
struct Server {
    path: String,
    tls: Option<TlsAcceptor>,
    sink: ConnectionSink,
    handshakes: Arc<Semaphore>,
}

/// Validates a `ws-listener` section, binds, and serves on the plugin's runtime.
pub fn start(section: &Section, sink: ConnectionSink) -> Result<Box<dyn Backend>, PluginError> {
    section.reject_unknown_keys(
        &["bindaddr", "port", "path", "tlsconfig"],
        CORE_BACKEND_KEYS,
    )?;
    let listen = ListenAddress::from_section("ws-listener", section)?;
    let path = section.string("path")?.unwrap_or_else(|| "/".to_owned());
    if !path.starts_with('/') {
        return Err(PluginError::new(format!(
            "ws-listener: key \"path\": {path:?} must start with \"/\""
        )));
    }
    let tls = tls::server_config(section)?.map(TlsAcceptor::from);
    let std_listener = listen.bind(|addrs| std::net::TcpListener::bind(addrs))?;
    std_listener.set_nonblocking(true)?;
    let local = std_listener.local_addr()?;
    let rt = runtime::get()?;
    let listener = {
        let _guard = rt.enter();
        TcpListener::from_std(std_listener)?
    };
    let secure = tls.is_some();
    let server = Arc::new(Server {
        path,
        tls,
        sink,
        handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
    });
    let stop = CancellationToken::new();
    log::info(&format!(
        "listening for {} on {local} path {}",
        if secure { "wss" } else { "ws" },
        server.path
    ));
    rt.spawn(accept_loop(listener, server, stop.clone()));
    Ok(Box::new(Listener { stop }))
}

async fn accept_loop(listener: TcpListener, server: Arc<Server>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, addr) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors or similar: do not spin, try again shortly.
                log::warn(&format!("accept failed: {e}"));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Ok(permit) = Arc::clone(&server.handshakes).try_acquire_owned() else {
            log::warn(&format!(
                "connection from {addr} closed: {MAX_HANDSHAKES} handshakes in progress"
            ));
            continue;
        };
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let peer = addr.to_string();
            if let Some((ws, end)) = accept(stream, addr, server, permit).await {
                session::pump(ws, end, &peer).await;
            }
        });
    }
}

/// TLS, the upgrade and the hand-over of one connection; `None` if any failed.
// The upgrade callback's error type is tungstenite's HTTP response.
#[allow(clippy::result_large_err)]
async fn accept(
    stream: TcpStream,
    addr: SocketAddr,
    server: Arc<Server>,
    permit: OwnedSemaphorePermit,
) -> Option<(Ws, crate::pair::PacketEnd)> {
    if let Err(e) = stream.set_nodelay(true) {
        log::debug(&format!("cannot set TCP_NODELAY for {addr}: {e}"));
    }
    let io: Box<dyn Io> = match &server.tls {
        Some(acceptor) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => Box::new(tls),
                Ok(Err(e)) => {
                    log::warn(&format!("TLS handshake with {addr} failed: {e}"));
                    return None;
                }
                Err(_) => {
                    log::warn(&format!("TLS handshake with {addr} timed out"));
                    return None;
                }
            }
        }
        None => Box::new(stream),
    };
    let path = server.path.clone();
    let check = move |req: &Request, resp: Response| check_request(&path, req, resp);
    let upgrade =
        tokio_tungstenite::accept_hdr_async_with_config(io, check, Some(session::ws_config()));
    let ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, upgrade).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            log::warn(&format!("websocket upgrade from {addr} refused: {e}"));
            return None;
        }
        Err(_) => {
            log::warn(&format!("websocket upgrade from {addr} timed out"));
            return None;
        }
    };
    // The permit is held until the host took the session, so a host that does not take
    // sessions also bounds how many wait for it.
    let handed = session::hand_over(&server.sink, &ws, &addr.to_string(), true).await;
    drop(permit);
    match handed {
        Ok(Some((_token, end))) => Some((ws, end)),
        Ok(None) => None,
        Err(e) => {
            log::warn(&format!("cannot hand over the session from {addr}: {e}"));
            None
        }
    }
}

/// The upgrade callback: path and origin checks.
#[allow(clippy::result_large_err)] // the signature is tungstenite's
fn check_request(path: &str, req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
    if !path_matches(path, req.uri().path()) {
        return Err(error_response(
            StatusCode::NOT_FOUND,
            "404 page not found\n",
        ));
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = req.headers().get("origin") {
        let allowed = origin
            .to_str()
            .is_ok_and(|o| same_origin(o, header("host").unwrap_or("")));
        if !allowed {
            return Err(error_response(StatusCode::FORBIDDEN, "Forbidden\n"));
        }
    }
    Ok(resp)
}

fn error_response(status: StatusCode, body: &str) -> ErrorResponse {
    let mut resp = ErrorResponse::new(Some(body.to_owned()));
    *resp.status_mut() = status;
    resp
}

/// Go's `ServeMux` rule for one pattern: exact, or a prefix if it ends with `/`.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    if pattern.ends_with('/') {
        path.starts_with(pattern)
    } else {
        path == pattern
    }
}

/// gorilla's default origin check: the `Origin` URL's host (with port, if any) equals
/// the `Host` header, ignoring ASCII case. An origin that is not a URL with a host fails.
pub fn same_origin(origin: &str, host: &str) -> bool {
    let Some((_scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let origin_host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    !origin_host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_like_go_servemux() {
        assert!(path_matches("/", "/"));
        assert!(path_matches("/", "/anything/at/all"));
        assert!(path_matches("/netceptor", "/netceptor"));
        assert!(!path_matches("/netceptor", "/netceptor/x"));
        assert!(!path_matches("/netceptor", "/"));
        assert!(path_matches("/ws/", "/ws/x"));
        assert!(!path_matches("/ws/", "/ws"));
    }

    #[test]
    fn origin_must_name_the_host() {
        assert!(same_origin("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(same_origin("https://Example.COM:443/x", "example.com:443"));
        assert!(same_origin("http://user@host:1", "host:1"));
        assert!(!same_origin("http://evil.example:8080", "127.0.0.1:8080"));
        assert!(!same_origin("http://127.0.0.1", "127.0.0.1:8080"));
        assert!(!same_origin("null", "127.0.0.1:8080"));
        assert!(!same_origin("http://", ""));
    }
}
