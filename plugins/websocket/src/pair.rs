//! `SOCK_SEQPACKET` socket pairs: how a websocket session reaches the host.
//!
//! The host gets one end with `DATAGRAM` framing; the plugin keeps the other end and
//! moves one websocket message to one packet and back. The kernel keeps message
//! boundaries and bounds what is buffered, and closing either end is seen by the other
//! as the end of the session (the plugin never writes an empty packet, which would read
//! the same as that end).

use std::io;
use std::os::fd::OwnedFd;

pub use receptor_plugin_sdk::backend_support::seqpacket::pair as seqpacket_pair;
use receptor_plugin_sdk::backend_support::seqpacket::{recv as recv_now, send as send_now};
use tokio::io::unix::AsyncFd;

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
