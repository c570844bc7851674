//! `tcp-peer`: dials one address, keeps at most one session, redials with backoff.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use receptor_plugin_sdk::{
    log, Backend, ConnectionSink, Framing, PluginError, Section, SessionToken, CORE_BACKEND_KEYS,
};

use crate::stop::Stop;

/// First wait between dials, and the wait after a session that was established.
pub const BACKOFF_START: Duration = Duration::from_secs(5);
/// Longest wait between dials.
pub const BACKOFF_MAX: Duration = Duration::from_secs(20);
/// How long one connection attempt to one address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The wait after `current`: times 1.5, at most [`BACKOFF_MAX`].
pub fn next_backoff(current: Duration) -> Duration {
    current.mul_f64(1.5).min(BACKOFF_MAX)
}

/// A running dialer.
struct Dialer {
    shared: Arc<Shared>,
}

struct Shared {
    stop: Stop,
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
        self.shared.stop.notify();
    }

    fn stop(&self) {
        self.shared.stop.stop();
    }
}

/// Validates a `tcp-peer` section and starts dialing on a thread of its own.
pub fn start(section: &Section, sink: ConnectionSink) -> Result<Box<dyn Backend>, PluginError> {
    section.reject_unknown_keys(&["address", "redial"], CORE_BACKEND_KEYS)?;
    let address = section.required_string("address")?;
    check_address(&address)?;
    let redial = section.bool("redial")?.unwrap_or(true);
    let shared = Arc::new(Shared {
        stop: Stop::new()?,
        closed: Mutex::new(Vec::new()),
    });
    let thread_shared = Arc::clone(&shared);
    std::thread::Builder::new()
        .name(format!("tcp-peer {address}"))
        .spawn(move || dial_loop(&address, redial, &sink, &thread_shared))?;
    Ok(Box::new(Dialer { shared }))
}

/// `host:port`, where host may be a name, an IPv4 address or a bracketed IPv6 address.
fn check_address(address: &str) -> Result<(), PluginError> {
    let bad = |why: &str| PluginError::new(format!("tcp-peer: bad address {address:?}: {why}"));
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

fn connect(address: &str) -> std::io::Result<(TcpStream, SocketAddr)> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address found");
    for addr in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok((stream, addr)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn dial_loop(address: &str, redial: bool, sink: &ConnectionSink, shared: &Shared) {
    let mut backoff = BACKOFF_START;
    loop {
        if shared.stop.is_stopped() {
            return;
        }
        match connect(address) {
            Ok((stream, addr)) => {
                backoff = BACKOFF_START;
                if let Err(e) = stream.set_nodelay(true) {
                    log::warn(&format!("cannot set TCP_NODELAY for {addr}: {e}"));
                }
                log::debug(&format!("connected to {address} ({addr})"));
                if let Some(token) =
                    sink.connection(OwnedFd::from(stream), Framing::Len16Le, address, false)
                {
                    if wait_session_end(shared, token.0) {
                        return;
                    }
                }
            }
            Err(e) => log::warn(&format!("cannot connect to {address}: {e}")),
        }
        if !redial || shared.stop.sleep(backoff) {
            return;
        }
        backoff = next_backoff(backoff);
    }
}

/// Waits until the host reports the session closed; returns true if stopped first.
fn wait_session_end(shared: &Shared, token: u64) -> bool {
    loop {
        let stopped = shared.stop.wait_until(Duration::from_secs(3600), || {
            shared
                .closed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&token)
        });
        if stopped {
            return true;
        }
        let mut closed = shared.closed.lock().unwrap_or_else(|p| p.into_inner());
        if closed.contains(&token) {
            closed.clear();
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
