//! Dialing a peer and redialing it, as Go receptor does.
//!
//! A peer backend (`tcp-peer`, `udp-peer`, `ws-peer`) keeps at most one session to its
//! address. It dials; a dial that succeeds resets the wait to [`BACKOFF_START`] and the
//! session is handed to the host; a dial that fails is logged. Either way, once the
//! dial failed or the host reported the session closed, it waits and dials again
//! (unless `redial` is off): 5 s first, then 1.5 times longer each time, at most 20 s.
//!
//! [`Backoff`] is that wait sequence on its own (for dialers on an async runtime);
//! [`spawn_dialer`] is a complete peer backend on a thread of its own, given how to dial.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Signal;
use crate::{
    log, Backend, ConnectionSink, Framing, PluginError, Section, SessionToken, CORE_BACKEND_KEYS,
};

/// First wait between dials, and the wait after a session that was established.
pub const BACKOFF_START: Duration = Duration::from_secs(5);
/// Longest wait between dials.
pub const BACKOFF_MAX: Duration = Duration::from_secs(20);
/// Most closed-session reports a dialer keeps before its thread has seen them.
const MAX_CLOSED: usize = 64;

/// The waits between dials: [`BACKOFF_START`], then 1.5 times the last, at most
/// [`BACKOFF_MAX`]; [`Backoff::reset`] after every dial that succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_START,
        }
    }
}

impl Backoff {
    /// A sequence at its start.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the sequence again (a dial succeeded).
    pub fn reset(&mut self) {
        self.next = BACKOFF_START;
    }

    /// The wait before the next dial; the one after it grows.
    pub fn wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = wait.mul_f64(1.5).min(BACKOFF_MAX);
        wait
    }
}

/// `host:port`, where host may be a name, an IPv4 address or a bracketed IPv6 address;
/// errors name the section `kind`.
pub fn check_host_port(kind: &str, address: &str) -> Result<(), PluginError> {
    let bad = |why: &str| PluginError::new(format!("{kind}: bad address {address:?}: {why}"));
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

/// Starts a `host:port` peer section of `kind` (keys `address` and `redial`, default
/// true) as a threaded dialer handing the host connections with `framing`; see
/// [`spawn_dialer`] for `dial`.
pub fn start_peer<D>(
    kind: &'static str,
    framing: Framing,
    section: &Section,
    sink: ConnectionSink,
    dial: D,
) -> Result<Box<dyn Backend>, PluginError>
where
    D: FnMut(&str) -> io::Result<OwnedFd> + Send + 'static,
{
    section.reject_unknown_keys(&["address", "redial"], CORE_BACKEND_KEYS)?;
    let address = section.required_string("address")?;
    check_host_port(kind, &address)?;
    let redial = section.bool("redial")?.unwrap_or(true);
    let target = DialTarget {
        kind,
        address,
        redial,
        framing,
    };
    spawn_dialer(target, sink, dial)
}

/// What a threaded dialer needs to know besides how to dial.
#[derive(Debug, Clone)]
pub struct DialTarget {
    /// The section's kind (`tcp-peer`, ...), for the thread's name.
    pub kind: &'static str,
    /// The configured address, for logs and as the host's peer description.
    pub address: String,
    /// Whether to dial again after a failed dial or a closed session.
    pub redial: bool,
    /// How the host frames the connections handed to it.
    pub framing: Framing,
}

/// Starts a peer backend dialing `target` on a thread of its own. `dial` makes one
/// attempt and returns the connected descriptor (logging what it wants to about a
/// success); failures are logged as `cannot connect to <address>: <error>`.
pub fn spawn_dialer<D>(
    target: DialTarget,
    sink: ConnectionSink,
    mut dial: D,
) -> Result<Box<dyn Backend>, PluginError>
where
    D: FnMut(&str) -> io::Result<OwnedFd> + Send + 'static,
{
    let state = Arc::new(DialerState::new()?);
    let thread_state = Arc::clone(&state);
    std::thread::Builder::new()
        .name(format!("{} {}", target.kind, target.address))
        .spawn(move || {
            thread_state.run(&target.address, target.redial, &mut dial, |fd| {
                sink.connection(fd, target.framing, &target.address, false)
            });
        })?;
    Ok(Box::new(Dialer { state }))
}

/// The backend instance of a threaded dialer.
struct Dialer {
    state: Arc<DialerState>,
}

impl Backend for Dialer {
    fn session_closed(&self, token: SessionToken) {
        self.state.session_closed(token);
    }

    fn stop(&self) {
        self.state.signal.stop();
    }
}

/// What the instance shares with its dial thread.
struct DialerState {
    signal: Signal,
    /// Tokens of sessions the host reported closed, not yet seen by the dial thread.
    closed: Mutex<Vec<u64>>,
}

impl DialerState {
    fn new() -> io::Result<Self> {
        Ok(DialerState {
            signal: Signal::new()?,
            closed: Mutex::new(Vec::new()),
        })
    }

    fn session_closed(&self, token: SessionToken) {
        let mut closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
        if closed.len() < MAX_CLOSED {
            closed.push(token.0);
        }
        drop(closed);
        self.signal.wake();
    }

    /// Dials until stopped (or once, without `redial`); `hand_over` gives the host a
    /// connection and returns its session token, `None` if refused.
    fn run(
        &self,
        address: &str,
        redial: bool,
        dial: &mut dyn FnMut(&str) -> io::Result<OwnedFd>,
        mut hand_over: impl FnMut(OwnedFd) -> Option<SessionToken>,
    ) {
        let mut backoff = Backoff::new();
        loop {
            if self.signal.is_stopped() {
                return;
            }
            match dial(address) {
                Ok(fd) => {
                    backoff.reset();
                    if let Some(token) = hand_over(fd) {
                        if self.wait_session_end(token.0) {
                            return;
                        }
                    }
                }
                Err(e) => log::warn(&format!("cannot connect to {address}: {e}")),
            }
            if !redial || self.signal.sleep(backoff.wait()) {
                return;
            }
        }
    }

    /// Waits until the host reports the session closed; returns true if stopped first.
    fn wait_session_end(&self, token: u64) -> bool {
        let mut ended = false;
        loop {
            let stopped = self.signal.wait_until(Duration::from_secs(3600), || {
                let mut closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;
    use std::time::Instant;

    #[test]
    fn backoff_follows_receptor() {
        let mut backoff = Backoff::new();
        let secs: Vec<f64> = (0..6).map(|_| backoff.wait().as_secs_f64()).collect();
        assert_eq!(secs, vec![5.0, 7.5, 11.25, 16.875, 20.0, 20.0]);
        backoff.reset();
        assert_eq!(backoff.wait(), BACKOFF_START);
    }

    #[test]
    fn addresses_are_checked() {
        assert!(check_host_port("x-peer", "localhost:2222").is_ok());
        assert!(check_host_port("x-peer", "[::1]:2222").is_ok());
        for bad in ["localhost", ":22", "host:http", "host:70000"] {
            assert!(check_host_port("x-peer", bad).is_err(), "{bad}");
        }
        let e = check_host_port("x-peer", "h").unwrap_err();
        assert_eq!(
            e.to_string(),
            "x-peer: bad address \"h\": expected host:port"
        );
    }

    fn socket(_: &str) -> io::Result<OwnedFd> {
        Ok(OwnedFd::from(UnixStream::pair()?.0))
    }

    /// Runs the dial loop on a thread; returns its state, the tokens handed out and the
    /// thread.
    fn run_dialer(
        redial: bool,
        mut dial: impl FnMut(&str) -> io::Result<OwnedFd> + Send + 'static,
    ) -> (
        Arc<DialerState>,
        mpsc::Receiver<u64>,
        std::thread::JoinHandle<()>,
    ) {
        let state = Arc::new(DialerState::new().unwrap());
        let (tx, rx) = mpsc::channel();
        let thread_state = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            let mut next = 0;
            thread_state.run("peer:1", redial, &mut dial, |_fd| {
                next += 1;
                tx.send(next).unwrap();
                Some(SessionToken(next))
            });
        });
        (state, rx, thread)
    }

    fn join_within(thread: std::thread::JoinHandle<()>, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !thread.is_finished() {
            assert!(Instant::now() < deadline, "dial thread did not end");
            std::thread::sleep(Duration::from_millis(5));
        }
        thread.join().unwrap();
    }

    #[test]
    fn without_redial_one_session_then_done() {
        let (state, tokens, thread) = run_dialer(false, socket);
        let token = tokens.recv_timeout(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!thread.is_finished(), "the session is still open");
        state.session_closed(SessionToken(token + 1));
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !thread.is_finished(),
            "another session's closing is not ours"
        );
        state.session_closed(SessionToken(token));
        join_within(thread, Duration::from_secs(2));
        assert!(tokens.try_recv().is_err(), "no second dial");
    }

    #[test]
    fn without_redial_a_failed_dial_ends_the_loop() {
        let (_state, tokens, thread) = run_dialer(false, |_: &str| {
            Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"))
        });
        join_within(thread, Duration::from_secs(2));
        assert!(tokens.try_recv().is_err());
    }

    #[test]
    fn stop_ends_a_session_wait_and_a_backoff_sleep() {
        let (state, tokens, thread) = run_dialer(true, socket);
        tokens.recv_timeout(Duration::from_secs(10)).unwrap();
        state.signal.stop();
        join_within(thread, Duration::from_secs(2));

        let (state, _tokens, thread) = run_dialer(true, |_: &str| {
            Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"))
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!thread.is_finished(), "waits 5 s before redialing");
        state.signal.stop();
        join_within(thread, Duration::from_secs(2));
    }
}
