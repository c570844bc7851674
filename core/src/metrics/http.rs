//! A small read-only HTTP/1.1 server on a TCP address, with TLS when a `tls-server` is
//! named: the opt-in Prometheus endpoint (`GET /metrics`, see [`metrics_handler`]) and
//! the mesh page (`crate::mesh_page`) use it.
//!
//! Deliberately small: one request per connection (`Connection: close`), a bounded
//! request head, a deadline for reading it, and at most [`MAX_CONNECTIONS`] clients at
//! once; only `GET` is answered (405 otherwise), paths the [`Handler`] does not know get
//! 404.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Snapshot;

/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client gets to send its request head (and a TLS handshake).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients served at once.
pub const MAX_CONNECTIONS: usize = 16;

/// Produces a fresh snapshot for each scrape.
pub type SnapshotFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Snapshot> + Send>> + Send + Sync>;

/// One answer: its content type and body.
#[derive(Debug, Clone)]
pub struct Page {
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

/// Answers a `GET` of a path (query string removed); `None` is 404.
pub type Handler =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = Option<Page>> + Send>> + Send + Sync>;

/// The Prometheus endpoint: `/metrics` (and `/`) answer a fresh snapshot as text.
pub fn metrics_handler(snapshot: SnapshotFn) -> Handler {
    Arc::new(move |path: String| {
        let snapshot = snapshot.clone();
        Box::pin(async move {
            match path.as_str() {
                "/metrics" | "/" => Some(Page {
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    body: snapshot().await.prometheus(),
                }),
                _ => None,
            }
        })
    })
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Binding the address failed.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The configured address.
        address: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// A running endpoint; stops when dropped.
pub struct HttpServer {
    local: std::net::SocketAddr,
    stop: CancellationToken,
}

impl HttpServer {
    /// The address actually bound (port 0 picks one).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Serves `handler` on `address` (`host:port`), through `tls` if set; `name` names the
/// endpoint in log lines.
pub async fn serve(
    name: &'static str,
    address: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: Handler,
) -> Result<HttpServer, HttpError> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| HttpError::Bind {
            address: address.to_owned(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| HttpError::Bind {
        address: address.to_owned(),
        source,
    })?;
    let stop = CancellationToken::new();
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let stopped = stop.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stopped.cancelled() => return,
                a = listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("{name} endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "{name} endpoint busy; connection closed");
                continue;
            };
            let handler = handler.clone();
            let tls = tls.clone();
            let stopped = stopped.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let served = async {
                    match tls {
                        Some(acceptor) => {
                            let tls_stream =
                                tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream))
                                    .await
                                    .map_err(|_| {
                                        std::io::Error::other("TLS handshake timed out")
                                    })??;
                            serve_one(tls_stream, &handler).await
                        }
                        None => serve_one(stream, &handler).await,
                    }
                };
                tokio::select! {
                    () = stopped.cancelled() => {}
                    r = served => if let Err(e) = r {
                        tracing::debug!(%peer, "{name} endpoint: {e}");
                    },
                }
            });
        }
    });
    Ok(HttpServer { local, stop })
}

/// Reads one request head and answers it.
async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    handler: &Handler,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let read = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = io.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            head.extend_from_slice(&buf[..n]);
            if head.len() > MAX_HEAD {
                return Err(std::io::Error::other("request head too long"));
            }
        }
        Ok(())
    };
    tokio::time::timeout(HEAD_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::other("request head timed out"))??;
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split(' ');
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match method {
        "GET" => match handler(path.to_owned()).await {
            Some(page) => ("200 OK", page.content_type, page.body),
            None => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        },
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    io.write_all(response.as_bytes()).await?;
    io.shutdown().await
}
