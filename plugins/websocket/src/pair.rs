//! `SOCK_SEQPACKET` socket pairs: how a websocket session reaches the host.
//!
//! The host gets one end with `DATAGRAM` framing; the plugin keeps the other end and
//! moves one websocket message to one packet and back. The kernel keeps message
//! boundaries and bounds what is buffered, and closing either end is seen by the other
//! as the end of the session (the plugin never writes an empty packet, which would read
//! the same as that end).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

/// A connected pair of message-preserving unix sockets (close-on-exec, non-blocking).
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors socketpair writes.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded, so both descriptors are open and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The plugin's end of a pair, driven by the plugin's runtime.
pub struct PacketEnd {
    fd: AsyncFd<OwnedFd>,
}

impl PacketEnd {
    /// Registers a non-blocking end with the current runtime.
    pub fn new(fd: OwnedFd) -> io::Result<PacketEnd> {
        // SAFETY: the descriptor is owned by the AsyncFd, which neither replaces nor
        // closes it while it is registered (it is closed after deregistration on drop).
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(PacketEnd { fd })
    }

    /// Receives one packet into `buf`. Returns its full length, which exceeds
    /// `buf.len()` if it was truncated; 0 means the host closed its end.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| recv_now(fd.get_ref(), buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one packet if one is waiting.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        recv_now(self.fd.get_ref(), buf)
    }

    /// Sends one packet, waiting while the host's side is full.
    pub async fn send(&self, msg: &[u8]) -> io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| send_now(fd.get_ref(), msg)) {
                Ok(result) => return result.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }
}

fn recv_now(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the buffer is valid and writable for its length for the duration of the call.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

fn send_now(fd: &OwnedFd, msg: &[u8]) -> io::Result<usize> {
    // SAFETY: the buffer is valid for its length for the duration of the call.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}
