//! Relaying a local connection (TCP, TLS over TCP, unix socket) to a mesh stream.
//!
//! A normal end in both directions closes both connections normally. A failure on
//! either side tears both down so that each peer sees an error rather than a clean end
//! of stream (which would pass a truncated transfer off as complete): the TCP connection
//! is reset (RST), the QUIC connection is closed with application error 500.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::streams::bridge::{bridge, End};
use crate::streams::MeshStream;

/// A connection on this machine's side of a proxy.
pub enum LocalStream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS accepted on a TCP listener.
    TlsServer(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS dialed over TCP.
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// A unix stream socket.
    Unix(UnixStream),
}

impl LocalStream {
    /// Drops the connection so that the peer sees an error: TCP connections are reset.
    pub(crate) fn abort(self) {
        match &self {
            LocalStream::Tcp(s) => reset_on_close(s),
            LocalStream::TlsServer(s) => reset_on_close(s.get_ref().0),
            LocalStream::TlsClient(s) => reset_on_close(s.get_ref().0),
            // A unix socket has no way to say "error": the peer reads EOF.
            LocalStream::Unix(_) => {}
        }
    }
}

/// Makes the next close of `sock` send a TCP reset (SO_LINGER with a zero timeout, which
/// never blocks).
pub(crate) fn reset_on_close(sock: &impl AsFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the descriptor is open for the duration of the call (borrowed from a live
    // socket), and `linger` is a valid, initialised `struct linger` whose exact size is
    // passed along; setsockopt only reads it.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(
            "could not arm a reset on close: {}",
            io::Error::last_os_error()
        );
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            LocalStream::Tcp($s) => {
                let $s = Pin::new($s);
                $e
            }
            LocalStream::TlsServer($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
            LocalStream::TlsClient($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
            LocalStream::Unix($s) => {
                let $s = Pin::new($s);
                $e
            }
        }
    };
}

impl AsyncRead for LocalStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for LocalStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

/// Relays `local` (called `local_name` in messages) and `mesh` until both directions
/// ended; on failure tears both down (see the module docs).
pub async fn relay(local: LocalStream, local_name: &'static str, mesh: MeshStream) {
    let peer = format!("{}:{}", mesh.remote_node(), mesh.remote_service());
    let (mut lr, mut lw) = tokio::io::split(local);
    let (mut mr, mut mw) = mesh.into_split();
    let outcome = bridge(
        End {
            name: local_name,
            read: &mut lr,
            write: &mut lw,
        },
        End {
            name: "receptor connection",
            read: &mut mr,
            write: &mut mw,
        },
    )
    .await;
    match outcome {
        Ok(t) => tracing::debug!(
            %peer,
            "{local_name} relay done ({} bytes out, {} bytes in)",
            t.forward,
            t.backward
        ),
        Err(e) => {
            tracing::warn!(%peer, "{local_name} relay failed: {e}");
            mw.abort(&e.to_string());
            lr.unsplit(lw).abort();
        }
    }
}
