//! `udp-peer`: a connected UDP socket per session, redialed with receptor's backoff.
//!
//! "Dialing" UDP only binds a local port and connects it to the peer's address, so it
//! succeeds whenever the name resolves; the session then lives until the host ends it
//! (idle timeout, rejection, or an ICMP port-unreachable surfacing as a read error) and
//! reports it through `session_closed`. The next dial follows 5 s later.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use receptor_plugin_sdk::{
    log, Backend, ConnectionSink, Framing, PluginError, Section, SessionToken, CORE_BACKEND_KEYS,
};

use crate::signal::Signal;

/// First wait between dials, and the wait after a session that was established.
pub const BACKOFF_START: Duration = Duration::from_secs(5);
/// Longest wait between dials.
pub const BACKOFF_MAX: Duration = Duration::from_secs(20);

/// The wait after `current`: times 1.5, at most [`BACKOFF_MAX`].
pub fn next_backoff(current: Duration) -> Duration {
    current.mul_f64(1.5).min(BACKOFF_MAX)
}

/// A running dialer.
struct Dialer {
    shared: Arc<Shared>,
}

struct Shared {
    signal: Signal,
    /// Tokens of sessions the host reported closed, not yet seen by the dial thread.
    closed: Mutex<Vec<u64>>,
}

impl Backend for Dialer {
    fn session_closed(&self, token: SessionToken) {
        let mut closed = self.shared.closed.lock().unwrap_or_else(|p| p.into_inner());
        if closed.len() < 64 {
            closed.push(token.0);
        }
        drop(closed);
        self.shared.signal.wake();
    }

    fn stop(&self) {
        self.shared.signal.stop();
    }
}

/// Validates a `udp-peer` section and starts dialing on a thread of its own.
pub fn start(section: &Section, sink: ConnectionSink) -> Result<Box<dyn Backend>, PluginError> {
    section.reject_unknown_keys(&["address", "redial"], CORE_BACKEND_KEYS)?;
    let address = section.required_string("address")?;
    check_address(&address)?;
    let redial = section.bool("redial")?.unwrap_or(true);
    let shared = Arc::new(Shared {
        signal: Signal::new()?,
        closed: Mutex::new(Vec::new()),
    });
    let thread_shared = Arc::clone(&shared);
    std::thread::Builder::new()
        .name(format!("udp-peer {address}"))
        .spawn(move || dial_loop(&address, redial, &sink, &thread_shared))?;
    Ok(Box::new(Dialer { shared }))
}

/// `host:port`, where host may be a name, an IPv4 address or a bracketed IPv6 address.
fn check_address(address: &str) -> Result<(), PluginError> {
    let bad = |why: &str| PluginError::new(format!("udp-peer: bad address {address:?}: {why}"));
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| bad("expected host:port"))?;
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    port.parse::<u16>()
        .map_err(|_| bad("port is not a number 0-65535"))?;
    Ok(())
}

/// Binds an ephemeral local port of the peer's address family and connects it.
fn dial(address: &str) -> std::io::Result<(UdpSocket, SocketAddr)> {
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
    Ok((socket, peer))
}

fn dial_loop(address: &str, redial: bool, sink: &ConnectionSink, shared: &Shared) {
    let mut backoff = BACKOFF_START;
    loop {
        if shared.signal.is_stopped() {
            return;
        }
        match dial(address) {
            Ok((socket, peer)) => {
                backoff = BACKOFF_START;
                log::debug(&format!("udp session to {address} ({peer})"));
                if let Some(token) =
                    sink.connection(OwnedFd::from(socket), Framing::Datagram, address, false)
                {
                    if wait_session_end(shared, token.0) {
                        return;
                    }
                }
            }
            Err(e) => log::warn(&format!("cannot connect to {address}: {e}")),
        }
        if !redial || shared.signal.sleep(backoff) {
            return;
        }
        backoff = next_backoff(backoff);
    }
}

/// Waits until the host reports the session closed; returns true if stopped first.
fn wait_session_end(shared: &Shared, token: u64) -> bool {
    let mut ended = false;
    loop {
        let stopped = shared.signal.wait_until(Duration::from_secs(3600), || {
            let mut closed = shared.closed.lock().unwrap_or_else(|p| p.into_inner());
            if closed.contains(&token) {
                closed.clear();
                ended = true;
            }
            ended
        });
        if stopped {
            return true;
        }
        if ended {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_receptor() {
        let mut waits = vec![BACKOFF_START];
        for _ in 0..5 {
            let last = *waits.last().unwrap();
            waits.push(next_backoff(last));
        }
        let secs: Vec<f64> = waits.iter().map(Duration::as_secs_f64).collect();
        assert_eq!(secs, vec![5.0, 7.5, 11.25, 16.875, 20.0, 20.0]);
    }

    #[test]
    fn addresses_are_checked() {
        assert!(check_address("localhost:2222").is_ok());
        assert!(check_address("[::1]:2222").is_ok());
        for bad in ["localhost", ":22", "host:http", "host:70000"] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }
}
