//! [`MeshStream`]: one QUIC bidirectional stream, used as a byte stream.
//!
//! Closing follows Go receptor's semantics:
//!
//! * `shutdown()` (AsyncWrite) sends FIN: the peer reads EOF and can still write back.
//! * [`MeshStream::close`] ends the whole connection with application error 0
//!   "normal close" once the data written so far has been acknowledged.
//! * [`MeshStream::cancel_read`] (or dropping the reading half before EOF) asks the peer
//!   to stop sending (STOP_SENDING 499).
//! * Dropping the stream finishes it and lingers in the background: written data is
//!   still delivered; then a dialer closes the connection, while an accepting side
//!   waits (bounded by the idle timeout) for its client to close, because the client
//!   may still be reading.
//!
//! A stream on a shared connection (ALPN [`super::tls::MUX_ALPN`], between our nodes)
//! owns only its stream: closing or dropping it finishes the stream and leaves the
//! connection to its owner (the dialer's pool, or the listener until the peer closes it).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::{ConnectionError, RecvStream, SendStream, VarInt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::socket::lock;

/// Application error code of a normal close.
pub const CODE_NORMAL: u32 = 0;
/// Application error code of STOP_SENDING when a reader gives up.
pub const CODE_CANCEL_READ: u32 = 499;
/// Application error code of every failure.
pub const CODE_ERROR: u32 = 500;

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// We dialed (and own a private endpoint).
    Dialer,
    /// A listener accepted the connection.
    Acceptor,
}

/// Who owns the QUIC connection a stream runs on.
pub(crate) enum ConnOwner {
    /// The stream: it ends the connection when it is done (Go's one stream per
    /// connection).
    Stream,
    /// The connection is shared with other streams; the lease (a pooled dialer's count
    /// of streams in use) is held while the stream lives.
    Shared {
        /// Released when the stream ends.
        _lease: Option<super::pool::Lease>,
    },
}

/// What both halves share; the last one to go ends the connection (if the stream owns
/// it).
struct ConnGuard {
    conn: quinn::Connection,
    owner: ConnOwner,
    /// A dialer's private endpoint, kept until the connection is done.
    endpoint: Mutex<Option<quinn::Endpoint>>,
    role: Role,
    remote_node: String,
    remote_service: String,
    local_service: String,
    linger: Duration,
    closed: AtomicBool,
    /// The sending half of a dropped write half, finished but maybe not yet delivered.
    send_left: Mutex<Option<SendStream>>,
    /// Counts this stream as open while either half lives.
    _open: crate::metrics::GaugeHold,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let send = lock(&self.send_left).take();
        if let ConnOwner::Shared { .. } = self.owner {
            // quinn still delivers a finished stream's data after the handle is gone.
            drop(send);
            return;
        }
        let endpoint = lock(&self.endpoint).take();
        let conn = self.conn.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(linger(conn, send, endpoint, self.role, self.linger));
            }
            Err(_) => conn.close(VarInt::from_u32(CODE_NORMAL), b"normal close"),
        }
    }
}

/// Delivers what was written, then ends the connection (see the module docs).
async fn linger(
    conn: quinn::Connection,
    send: Option<SendStream>,
    endpoint: Option<quinn::Endpoint>,
    role: Role,
    limit: Duration,
) {
    let deadline = tokio::time::Instant::now() + limit;
    if let Some(mut send) = send {
        let _ = send.finish();
        let _ = tokio::time::timeout_at(deadline, send.stopped()).await;
    }
    if role == Role::Acceptor {
        let _ = tokio::time::timeout_at(deadline, conn.closed()).await;
    }
    conn.close(VarInt::from_u32(CODE_NORMAL), b"normal close");
    drop(endpoint);
}

/// A byte stream to a service on another node (one QUIC stream over the mesh).
///
/// Reads and writes apply QUIC flow control: a writer waits while the peer does not read.
pub struct MeshStream {
    read: MeshReadHalf,
    write: MeshWriteHalf,
}

/// The reading half of a [`MeshStream`].
pub struct MeshReadHalf {
    recv: RecvStream,
    eof: bool,
    guard: Arc<ConnGuard>,
}

/// The writing half of a [`MeshStream`].
pub struct MeshWriteHalf {
    send: Option<SendStream>,
    guard: Arc<ConnGuard>,
}

/// Everything needed to wrap an established connection.
pub(crate) struct StreamParts {
    pub conn: quinn::Connection,
    pub send: SendStream,
    pub recv: RecvStream,
    pub endpoint: Option<quinn::Endpoint>,
    pub owner: ConnOwner,
    pub role: Role,
    pub remote_node: String,
    pub remote_service: String,
    pub local_service: String,
    pub linger: Duration,
}

impl MeshStream {
    pub(crate) fn new(p: StreamParts) -> Self {
        let guard = Arc::new(ConnGuard {
            conn: p.conn,
            owner: p.owner,
            endpoint: Mutex::new(p.endpoint),
            role: p.role,
            remote_node: p.remote_node,
            remote_service: p.remote_service,
            local_service: p.local_service,
            linger: p.linger,
            closed: AtomicBool::new(false),
            send_left: Mutex::new(None),
            _open: crate::metrics::node().streams_open.hold(),
        });
        Self {
            read: MeshReadHalf {
                recv: p.recv,
                eof: false,
                guard: guard.clone(),
            },
            write: MeshWriteHalf {
                send: Some(p.send),
                guard,
            },
        }
    }

    /// The node at the other end.
    pub fn remote_node(&self) -> &str {
        &self.read.guard.remote_node
    }

    /// The service at the other end (a dialer's ephemeral service, seen from a listener).
    pub fn remote_service(&self) -> &str {
        &self.read.guard.remote_service
    }

    /// The local service this stream runs on.
    pub fn local_service(&self) -> &str {
        &self.read.guard.local_service
    }

    /// Splits the stream into halves that can be used from different tasks.
    pub fn into_split(self) -> (MeshReadHalf, MeshWriteHalf) {
        (self.read, self.write)
    }

    /// Asks the peer to stop sending (STOP_SENDING 499); later reads fail.
    pub fn cancel_read(&mut self) {
        self.read.cancel();
    }

    /// Ends the connection (application error 0 "normal close") after the data written so
    /// far has been acknowledged (waiting at most the idle timeout). Go's `CloseConnection`.
    ///
    /// Meant for the dialing side once the exchange is over. An accepting side should
    /// rather shut down or drop the stream: an acknowledgement only means the peer's QUIC
    /// stack has the data, and quic-go discards unread data when the connection closes.
    /// On a shared connection only the stream ends.
    pub async fn close(self) {
        let MeshStream { read, mut write } = self;
        let guard = read.guard.clone();
        guard.closed.store(true, Ordering::Release);
        if let Some(mut send) = write.send.take() {
            let _ = send.finish();
            if let ConnOwner::Shared { .. } = guard.owner {
                return;
            }
            let _ = tokio::time::timeout(guard.linger, send.stopped()).await;
        }
        drop(read);
        if let ConnOwner::Shared { .. } = guard.owner {
            return;
        }
        guard
            .conn
            .close(VarInt::from_u32(CODE_NORMAL), b"normal close");
    }

    /// The underlying QUIC connection.
    #[cfg(test)]
    pub(crate) fn connection(&self) -> &quinn::Connection {
        &self.read.guard.conn
    }

    /// Statistics of the underlying QUIC connection (path MTU, RTT, losses).
    pub fn connection_stats(&self) -> quinn::ConnectionStats {
        self.read.guard.conn.stats()
    }

    /// Whether the stream runs on a connection shared with other streams (a pooled
    /// connection between our nodes) rather than on a connection of its own.
    pub fn is_shared(&self) -> bool {
        matches!(self.read.guard.owner, ConnOwner::Shared { .. })
    }
}

impl MeshReadHalf {
    /// Asks the peer to stop sending (STOP_SENDING 499); later reads fail.
    pub fn cancel_read(&mut self) {
        self.cancel();
    }

    fn cancel(&mut self) {
        if !self.eof {
            let _ = self.recv.stop(VarInt::from_u32(CODE_CANCEL_READ));
            self.eof = true;
        }
    }

    /// The node at the other end.
    pub fn remote_node(&self) -> &str {
        &self.guard.remote_node
    }
}

impl MeshWriteHalf {
    /// The node at the other end.
    pub fn remote_node(&self) -> &str {
        &self.guard.remote_node
    }

    /// Ends the whole connection at once with application error 500 and `reason`:
    /// data not yet delivered is discarded and the peer's reads and writes fail (they do
    /// not see a normal end of stream). For relays whose other side failed. On a shared
    /// connection only this stream is reset (error 500): the peer's reads fail.
    pub fn abort(&mut self, reason: &str) {
        if let ConnOwner::Shared { .. } = self.guard.owner {
            if let Some(mut send) = self.send.take() {
                let _ = send.reset(VarInt::from_u32(CODE_ERROR));
            }
            return;
        }
        self.send = None;
        self.guard.closed.store(true, Ordering::Release);
        self.guard
            .conn
            .close(VarInt::from_u32(CODE_ERROR), reason.as_bytes());
    }
}

impl Drop for MeshReadHalf {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl Drop for MeshWriteHalf {
    fn drop(&mut self) {
        if let Some(mut send) = self.send.take() {
            let _ = send.finish();
            *lock(&self.guard.send_left) = Some(send);
        }
    }
}

/// Whether a connection error is the peer's normal close.
fn is_normal_close(e: &ConnectionError) -> bool {
    matches!(e, ConnectionError::ApplicationClosed(c) if c.error_code == VarInt::from_u32(CODE_NORMAL))
}

impl AsyncRead for MeshReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match this.recv.poll_read_buf(cx, buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => {
                if buf.filled().len() == before {
                    this.eof = true;
                }
                Poll::Ready(Ok(()))
            }
            // The peer closed the connection normally: the stream is over.
            Poll::Ready(Err(quinn::ReadError::ConnectionLost(e))) if is_normal_close(&e) => {
                this.eof = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(read_error(e))),
        }
    }
}

/// An I/O error for a lost connection that says why it was lost.
fn connection_lost(e: &ConnectionError) -> io::Error {
    let kind = match e {
        ConnectionError::TimedOut => io::ErrorKind::TimedOut,
        ConnectionError::ApplicationClosed(_) | ConnectionError::ConnectionClosed(_) => {
            io::ErrorKind::ConnectionAborted
        }
        ConnectionError::Reset => io::ErrorKind::ConnectionReset,
        _ => io::ErrorKind::NotConnected,
    };
    io::Error::new(kind, format!("connection lost: {e}"))
}

fn read_error(e: quinn::ReadError) -> io::Error {
    match e {
        quinn::ReadError::ConnectionLost(c) => connection_lost(&c),
        other => other.into(),
    }
}

fn write_error(e: quinn::WriteError) -> io::Error {
    match e {
        quinn::WriteError::ConnectionLost(c) => connection_lost(&c),
        quinn::WriteError::Stopped(code) => io::Error::new(
            io::ErrorKind::BrokenPipe,
            format!("stream stopped by peer: error {code}"),
        ),
        other => other.into(),
    }
}

fn closed_write() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "stream already closed for writing",
    )
}

impl AsyncWrite for MeshWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().send.as_mut() {
            Some(send) => Pin::new(send).poll_write(cx, buf).map_err(write_error),
            None => Poll::Ready(Err(closed_write())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written data is already in QUIC's send buffer; it goes out as fast as the
        // congestion controller allows.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().send.as_mut() {
            // Finishing twice is fine: the FIN is already queued.
            Some(send) => {
                let _ = send.finish();
                Poll::Ready(Ok(()))
            }
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncRead for MeshStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().read).poll_read(cx, buf)
    }
}

impl AsyncWrite for MeshStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().write).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().write).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().write).poll_shutdown(cx)
    }
}

impl std::fmt::Debug for MeshStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshStream")
            .field("remote_node", &self.remote_node())
            .field("remote_service", &self.remote_service())
            .field("local_service", &self.local_service())
            .finish()
    }
}
