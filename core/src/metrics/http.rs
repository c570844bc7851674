//! The opt-in Prometheus endpoint: `GET /metrics` over HTTP/1.1 on a TCP address, with
//! TLS when the `metrics` item names a `tls-server`.
//!
//! Deliberately small: one request per connection (`Connection: close`), a bounded
//! request head, a deadline for reading it, and at most [`MAX_CONNECTIONS`] clients at
//! once; anything but `GET /metrics` (or `/`) gets 404 or 405.

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
pub struct MetricsServer {
    local: std::net::SocketAddr,
    stop: CancellationToken,
}

impl MetricsServer {
    /// The address actually bound (port 0 picks one).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Serves `snapshot` as Prometheus text on `address` (`host:port`), through `tls` if set.
pub async fn serve(
    address: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
    snapshot: SnapshotFn,
) -> Result<MetricsServer, HttpError> {
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
                    tracing::warn!("metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "metrics endpoint busy; connection closed");
                continue;
            };
            let snapshot = snapshot.clone();
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
                            serve_one(tls_stream, &snapshot).await
                        }
                        None => serve_one(stream, &snapshot).await,
                    }
                };
                tokio::select! {
                    () = stopped.cancelled() => {}
                    r = served => if let Err(e) = r {
                        tracing::debug!(%peer, "metrics endpoint: {e}");
                    },
                }
            });
        }
    });
    Ok(MetricsServer { local, stop })
}

/// Reads one request head and answers it.
async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    snapshot: &SnapshotFn,
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
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics" | "/") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            snapshot().await.prometheus(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    io.write_all(response.as_bytes()).await?;
    io.shutdown().await
}
