//! Turning the file descriptors backends hand over into tokio I/O.
//!
//! A byte-stream backend gives a connected stream socket (TCP or a unix socket);
//! it becomes a tokio `TcpStream`/`UnixStream`. A message-preserving backend gives
//! a connected UDP socket or a `SOCK_SEQPACKET` socket; it is driven through
//! `AsyncFd` with `recv`/`send`, one message per call.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite};

/// Largest message a datagram backend can carry (the receive buffer Go uses).
pub(crate) const MAX_DATAGRAM: usize = 65_536;

/// Size of the receive buffers datagrams are read into (several datagrams share one
/// allocation; each message is split off it without copying).
const DATAGRAM_BUFFER: usize = 4 * MAX_DATAGRAM;

fn sockopt_int(fd: &OwnedFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is a valid open descriptor for the duration of the call; `val`
    // and `len` point to live stack variables of the sizes getsockopt expects.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(val)
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a valid descriptor with F_GETFL/F_SETFL has no memory effects.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A connected byte-stream socket as a tokio stream.
pub(crate) enum FdStream {
    /// TCP (IPv4 or IPv6).
    Tcp(tokio::net::TcpStream),
    /// A unix-domain stream socket.
    Unix(tokio::net::UnixStream),
}

impl FdStream {
    /// Wraps a connected `SOCK_STREAM` socket.
    pub(crate) fn new(fd: OwnedFd) -> io::Result<FdStream> {
        let ty = sockopt_int(&fd, libc::SOL_SOCKET, libc::SO_TYPE)?;
        if ty != libc::SOCK_STREAM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "length-prefixed framing needs a stream socket",
            ));
        }
        set_nonblocking(&fd)?;
        match sockopt_int(&fd, libc::SOL_SOCKET, libc::SO_DOMAIN)? {
            libc::AF_INET | libc::AF_INET6 => {
                let s = std::net::TcpStream::from(fd);
                // Frames are batched by the writer; do not delay them further.
                s.set_nodelay(true)?;
                Ok(FdStream::Tcp(tokio::net::TcpStream::from_std(s)?))
            }
            libc::AF_UNIX => Ok(FdStream::Unix(tokio::net::UnixStream::from_std(
                std::os::unix::net::UnixStream::from(fd),
            )?)),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unsupported socket family {other}"),
            )),
        }
    }
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            FdStream::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            FdStream::Unix(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            FdStream::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            FdStream::Unix(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            FdStream::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
            FdStream::Unix(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            FdStream::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            FdStream::Unix(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            FdStream::Tcp(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            FdStream::Unix(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}

/// A connected message-preserving socket (connected UDP or `SOCK_SEQPACKET`).
pub(crate) struct DatagramSocket {
    fd: AsyncFd<OwnedFd>,
    /// `SOCK_SEQPACKET`: a zero-length read means the peer closed.
    seqpacket: bool,
}

/// What one receive produced.
pub(crate) enum Received {
    /// A message.
    Message(BytesMut),
    /// A zero-length datagram (not a valid message).
    Empty,
    /// A datagram larger than [`MAX_DATAGRAM`], discarded.
    Truncated,
    /// The peer closed (seqpacket only).
    Eof,
}

impl DatagramSocket {
    /// Wraps a connected datagram or seqpacket socket.
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Arc<DatagramSocket>> {
        let ty = sockopt_int(&fd, libc::SOL_SOCKET, libc::SO_TYPE)?;
        let seqpacket = match ty {
            libc::SOCK_DGRAM => false,
            libc::SOCK_SEQPACKET => true,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "datagram framing needs a datagram or seqpacket socket",
                ))
            }
        };
        set_nonblocking(&fd)?;
        // SAFETY: an `OwnedFd` is a valid open descriptor that stays open, and
        // returns the same number from `as_raw_fd`, for as long as the `AsyncFd`
        // owning it exists.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(Arc::new(DatagramSocket { fd, seqpacket }))
    }

    /// Receives one message into `buf` (which keeps spare room for the next ones).
    pub(crate) async fn recv(&self, buf: &mut BytesMut) -> io::Result<Received> {
        if buf.capacity() - buf.len() < MAX_DATAGRAM {
            buf.reserve(DATAGRAM_BUFFER);
        }
        loop {
            let mut guard = self.fd.readable().await?;
            let spare = buf.spare_capacity_mut();
            let (ptr, cap) = (spare.as_mut_ptr(), spare.len());
            let res = guard.try_io(|fd| {
                // SAFETY: `ptr`/`cap` describe the spare (writable, possibly
                // uninitialised) capacity of `buf`, which nothing else touches
                // during the call; recv writes at most `cap` bytes there. MSG_TRUNC
                // makes it return the real datagram length, which may exceed `cap`.
                let n =
                    unsafe { libc::recv(fd.as_fd().as_raw_fd(), ptr.cast(), cap, libc::MSG_TRUNC) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            let n = match res {
                Ok(r) => r?,
                Err(_would_block) => continue,
            };
            if n == 0 {
                return Ok(if self.seqpacket {
                    Received::Eof
                } else {
                    Received::Empty
                });
            }
            if n > cap || n > MAX_DATAGRAM {
                return Ok(Received::Truncated);
            }
            // SAFETY: recv initialised the first `n` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n) };
            return Ok(Received::Message(buf.split_to(n)));
        }
    }

    /// Shuts the socket down in both directions (a seqpacket peer sees EOF).
    pub(crate) fn shutdown(&self) {
        // SAFETY: shutdown(2) on a descriptor we own; no memory is touched. Its
        // result does not matter (e.g. ENOTCONN on an unconnected UDP socket).
        unsafe { libc::shutdown(self.fd.get_ref().as_raw_fd(), libc::SHUT_RDWR) };
    }

    /// Sends one message.
    pub(crate) async fn send(&self, msg: &[u8]) -> io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            let res = guard.try_io(|fd| {
                // SAFETY: `msg` is a valid slice for the duration of the call.
                let n = unsafe {
                    libc::send(
                        fd.as_fd().as_raw_fd(),
                        msg.as_ptr().cast(),
                        msg.len(),
                        libc::MSG_NOSIGNAL,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match res {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}
