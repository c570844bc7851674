//! `SOCK_SEQPACKET` socket pairs and the non-blocking calls that move messages on them.
//!
//! A transport whose messages the plugin moves itself (a UDP listener demultiplexing
//! peers, a websocket session) hands the host one end of a pair with `DATAGRAM` framing
//! and keeps the other: the kernel keeps message boundaries and bounds what is buffered,
//! and closing either end is seen by the other as the end of the session (so the plugin
//! never sends an empty message, which would read the same).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A connected pair of message-preserving unix sockets (close-on-exec, non-blocking).
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
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
    // SAFETY: socketpair succeeded, so the descriptor is open and ours.
    let first = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: likewise.
    let second = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    Ok((first, second))
}

/// Sends one message without blocking (and without `SIGPIPE` if the other end is gone).
pub fn send(fd: &impl AsRawFd, msg: &[u8]) -> io::Result<usize> {
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

/// Receives one message without blocking. Returns the message's full length, which is
/// larger than `buf` if it was truncated; 0 means the other end closed.
pub fn recv(fd: &impl AsRawFd, buf: &mut [u8]) -> io::Result<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_keeps_message_boundaries_and_reports_truncation_and_eof() {
        let (a, b) = pair().unwrap();
        assert_eq!(send(&a, b"one").unwrap(), 3);
        assert_eq!(send(&a, &[7u8; 100]).unwrap(), 100);
        let mut buf = [0u8; 16];
        assert_eq!(recv(&b, &mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"one");
        assert_eq!(recv(&b, &mut buf).unwrap(), 100, "truncated, full length");
        let e = recv(&b, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(a);
        assert_eq!(recv(&b, &mut buf).unwrap(), 0);
        let e = send(&b, b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPIPE));
    }
}
