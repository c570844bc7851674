//! `udp-peer`: a connected UDP socket per session, redialed with receptor's backoff.
//!
//! "Dialing" UDP only binds a local port and connects it to the peer's address, so it
//! succeeds whenever the name resolves; the session then lives until the host ends it
//! (idle timeout, rejection, or an ICMP port-unreachable surfacing as a read error) and
//! reports it through `session_closed`. The next dial follows 5 s later.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::OwnedFd;

use receptor_plugin_sdk::backend_support::redial;
use receptor_plugin_sdk::{log, Backend, ConnectionSink, Framing, PluginError, Section};

/// Validates a `udp-peer` section and starts dialing on a thread of its own.
pub fn start(section: &Section, sink: ConnectionSink) -> Result<Box<dyn Backend>, PluginError> {
    redial::start_peer("udp-peer", Framing::Datagram, section, sink, dial)
}

/// Binds an ephemeral local port of the peer's address family and connects it.
fn dial(address: &str) -> std::io::Result<OwnedFd> {
    let peer = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address found"))?;
    let local: SocketAddr = match peer {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(peer)?;
    log::debug(&format!("udp session to {address} ({peer})"));
    Ok(OwnedFd::from(socket))
}
