//! `ws-peer`: dials a `ws://` or `wss://` URL, keeps at most one session, redials with
//! receptor's backoff.
//!
//! The upgrade request is what gorilla/websocket sends for Go receptor: `GET <path>`
//! with `Host` from the URL, `Origin: http://<host:port>` (`https://` for `wss`), and
//! the optional `extraheader` (`Name:value`). A dial (TCP, TLS, upgrade) that succeeds
//! resets the backoff to 5 s; one that fails waits 5 s, then 1.5 times longer each
//! time, at most 20 s. After the host reports the session closed, the next dial
//! follows the backoff (5 s after a session that was established).

use std::sync::Arc;
use std::time::Duration;

use receptor_plugin_sdk::backend_support::Backoff;
use receptor_plugin_sdk::{
    log, Backend, ConnectionSink, PluginError, Section, SessionToken, CORE_BACKEND_KEYS,
};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_util::sync::CancellationToken;

use crate::session::{self, Io, Ws};
use crate::{proxy, runtime, tls};

/// How long one dial (TCP connect, TLS, upgrade) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// A running dialer.
struct Dialer {
    stop: CancellationToken,
    /// Tokens of sessions the host reported closed.
    closed: mpsc::Sender<u64>,
}

impl Backend for Dialer {
    fn session_closed(&self, token: SessionToken) {
        // Full only if the host reports far more closings than there were sessions.
        let _ = self.closed.try_send(token.0);
    }

    fn stop(&self) {
        self.stop.cancel();
    }
}

/// Where and how to dial.
struct Target {
    /// The URL as configured, for logs.
    address: String,
    /// The URL with at least `/` as its path.
    uri: Uri,
    /// Whether the URL is `wss`.
    secure: bool,
    /// Host to connect to (IPv6 without brackets) and its port.
    host: String,
    port: u16,
    /// `http://host[:port]` or `https://...`, as gorilla sends for receptor.
    origin: String,
    extra_header: Option<(HeaderName, HeaderValue)>,
    /// TLS settings and the name to verify, for `wss`.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// Validates a `ws-peer` section and starts dialing on the plugin's runtime.
pub fn start(section: &Section, sink: ConnectionSink) -> Result<Box<dyn Backend>, PluginError> {
    section.reject_unknown_keys(
        &["address", "redial", "extraheader", "tlsconfig"],
        CORE_BACKEND_KEYS,
    )?;
    let address = section.required_string("address")?;
    let redial = section.bool("redial")?.unwrap_or(true);
    let mut target = parse_url(&address)?;
    if let Some(h) = section.string("extraheader")?.filter(|h| !h.is_empty()) {
        target.extra_header = Some(parse_header(&h)?);
    }
    let secure = target.secure;
    // Check a named TLS config even for ws:// (Go does), but use it only for wss://.
    let tls_config = if secure || section.get("tlsconfig").is_some() || section.get("tls").is_some()
    {
        Some(tls::client_config(section)?)
    } else {
        None
    };
    if secure {
        if let Some(config) = tls_config {
            let name = tls::server_name(&target.host)
                .map_err(|e| PluginError::new(format!("ws-peer: {e}")))?;
            target.tls = Some((TlsConnector::from(config), name));
        }
    }
    let rt = runtime::get()?;
    let stop = CancellationToken::new();
    let (closed_tx, closed_rx) = mpsc::channel(64);
    rt.spawn(dial_loop(
        Arc::new(target),
        redial,
        sink,
        closed_rx,
        stop.clone(),
    ));
    Ok(Box::new(Dialer {
        stop,
        closed: closed_tx,
    }))
}

fn parse_url(address: &str) -> Result<Target, PluginError> {
    let bad = |why: &str| PluginError::new(format!("ws-peer: bad address {address:?}: {why}"));
    let uri: Uri = address
        .parse()
        .map_err(|e| bad(&format!("not a URL: {e}")))?;
    let scheme = uri
        .scheme_str()
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| bad("expected ws://host:port/path or wss://..."))?;
    let secure = match scheme.as_str() {
        "ws" => false,
        "wss" => true,
        _ => return Err(bad("the scheme must be ws or wss")),
    };
    let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    let host_port = authority
        .as_str()
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, h)| h)
        .to_owned();
    // The port is what follows the last colon after the host (an IPv6 host is bracketed).
    let port_text = host_port
        .rsplit_once(']')
        .map_or(host_port.as_str(), |(_, rest)| rest)
        .rsplit_once(':')
        .map(|(_, p)| p);
    let port = match port_text {
        None | Some("") => {
            if secure {
                443
            } else {
                80
            }
        }
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| bad("port is not a number 0-65535"))?,
    };
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| p.starts_with('/'))
        .unwrap_or("/");
    let uri = Uri::builder()
        .scheme(scheme.as_str())
        .authority(authority.as_str())
        .path_and_query(path)
        .build()
        .map_err(|e| bad(&e.to_string()))?;
    Ok(Target {
        address: address.to_owned(),
        uri,
        secure,
        host: host.to_owned(),
        port,
        origin: format!("{}://{host_port}", if secure { "https" } else { "http" }),
        extra_header: None,
        tls: None,
    })
}

/// `Name:value`, split at the first colon.
fn parse_header(h: &str) -> Result<(HeaderName, HeaderValue), PluginError> {
    let bad = |why: &str| PluginError::new(format!("ws-peer: key \"extraheader\": {h:?}: {why}"));
    let (name, value) = h
        .split_once(':')
        .ok_or_else(|| bad("extra header must be in the form key:value"))?;
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("invalid header name"))?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| bad("invalid header value"))?;
    Ok((name, value))
}

async fn dial_loop(
    target: Arc<Target>,
    redial: bool,
    sink: ConnectionSink,
    mut closed: mpsc::Receiver<u64>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new();
    loop {
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(DIAL_TIMEOUT, connect(&target)) => r,
        };
        match attempt {
            Ok(Ok(ws)) => {
                backoff.reset();
                log::debug(&format!("websocket connected to {}", target.address));
                match session::hand_over(&sink, &ws, &target.address, false).await {
                    Ok(Some((token, end))) => {
                        let peer = target.address.clone();
                        tokio::spawn(async move { session::pump(ws, end, &peer).await });
                        if wait_session_end(&mut closed, token.0, &stop).await {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => log::warn(&format!(
                        "cannot hand over the session to {}: {e}",
                        target.address
                    )),
                }
            }
            Ok(Err(e)) => log::warn(&format!("cannot connect to {}: {e}", target.address)),
            Err(_) => log::warn(&format!("cannot connect to {}: timed out", target.address)),
        }
        if !redial {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.wait()) => {}
        }
    }
}

/// Waits until the host reports the session closed; returns true if stopped first.
async fn wait_session_end(
    closed: &mut mpsc::Receiver<u64>,
    token: u64,
    stop: &CancellationToken,
) -> bool {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return true,
            t = closed.recv() => match t {
                Some(t) if t == token => return false,
                Some(_) => {}
                None => return true,
            },
        }
    }
}

/// Connects, does TLS for `wss`, and upgrades.
async fn connect(target: &Target) -> Result<Ws, String> {
    let tcp = match proxy::from_env(target.secure, &target.host, target.port)? {
        Some(p) => proxy::connect(&p, &target.host, target.port)
            .await
            .map_err(|e| format!("through proxy {}:{}: {e}", p.host, p.port))?,
        None => TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| e.to_string())?,
    };
    if let Err(e) = tcp.set_nodelay(true) {
        log::debug(&format!("cannot set TCP_NODELAY: {e}"));
    }
    let io: Box<dyn Io> = match &target.tls {
        Some((connector, name)) => Box::new(
            connector
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?,
        ),
        None => Box::new(tcp),
    };
    let mut request = target
        .uri
        .clone()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let headers = request.headers_mut();
    if let Some((name, value)) = &target.extra_header {
        headers.append(name.clone(), value.clone());
    }
    let origin = HeaderValue::from_str(&target.origin).map_err(|e| e.to_string())?;
    headers.insert("origin", origin);
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(request, io, Some(session::ws_config()))
            .await
            .map_err(|e| format!("websocket upgrade failed: {e}"))?;
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_path_and_origin() {
        let t = parse_url("ws://127.0.0.1:8080/netceptor").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8080));
        assert_eq!(t.uri.to_string(), "ws://127.0.0.1:8080/netceptor");
        assert_eq!(t.origin, "http://127.0.0.1:8080");
        let t = parse_url("WSS://[::1]").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 443));
        assert_eq!(t.uri.path(), "/");
        assert_eq!(t.origin, "https://[::1]");
        let t = parse_url("ws://example.com:1/a?b=c").unwrap();
        assert_eq!(t.uri.path_and_query().unwrap().as_str(), "/a?b=c");
        for bad in ["127.0.0.1:8080", "http://h:1/", "ws:///x", "ws://h:99999/"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn extra_header_is_name_colon_value() {
        let (n, v) = parse_header("X-Token: abc:def").unwrap();
        assert_eq!((n.as_str(), v.to_str().unwrap()), ("x-token", "abc:def"));
        assert!(parse_header("novalue").is_err());
        assert!(parse_header("bad name:x").is_err());
    }
}
