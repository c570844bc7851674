//! `tcp-peer`: dials one address, keeps at most one session, redials with backoff.

use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::time::Duration;

use receptor_plugin_sdk::backend_support::redial;
use receptor_plugin_sdk::{log, Backend, ConnectionSink, Framing, PluginError, Section};

/// How long one connection attempt to one address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Validates a `tcp-peer` section and starts dialing on a thread of its own.
pub fn start(section: &Section, sink: ConnectionSink) -> Result<Box<dyn Backend>, PluginError> {
    redial::start_peer("tcp-peer", Framing::Len16Le, section, sink, connect)
}

/// Connects to the first of the address's socket addresses that answers.
fn connect(address: &str) -> std::io::Result<OwnedFd> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address found");
    for addr in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                if let Err(e) = stream.set_nodelay(true) {
                    log::warn(&format!("cannot set TCP_NODELAY for {addr}: {e}"));
                }
                log::debug(&format!("connected to {address} ({addr})"));
                return Ok(OwnedFd::from(stream));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}
