//! `udp-listener`: one session per remote `ip:port`, multiplexed over one UDP socket.
//!
//! The host wants one descriptor per session, so every remote address gets a
//! `SOCK_SEQPACKET` socket pair: the host holds one end, the listener's pump thread the
//! other. The pump `poll`s the UDP socket and its ends of the pairs and moves datagrams
//! between them unchanged (one mesh message per datagram):
//!
//! * a datagram from an address without a session creates one, and is that session's
//!   first message (empty datagrams are ignored: on a socket pair they would read as the
//!   end of the session);
//! * a message the host writes to its end goes out as one datagram to that address
//!   (messages over 65507 bytes cannot be sent over UDP and are dropped);
//! * when the host closes its end (or reports the session closed), the address is
//!   forgotten, so its next datagram starts a new session.
//!
//! Everything is bounded: at most [`MAX_SESSIONS`] sessions, the kernel's socket buffers
//! between pump and host (a datagram for a host that does not keep up is dropped, as
//! UDP would), and a small queue of sessions waiting to be handed over. The handing over
//! runs on a thread of its own, so a busy host never stalls the pump.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use receptor_plugin_sdk::backend_support::listen::ListenAddress;
use receptor_plugin_sdk::backend_support::seqpacket;
use receptor_plugin_sdk::backend_support::signal::{poll, pollin, Signal};
use receptor_plugin_sdk::{
    log, Backend, ConnectionSink, Framing, PluginError, Section, SessionToken, CORE_BACKEND_KEYS,
};

/// The largest message a UDP datagram carries (receptor's `UDPMaxPacketLen`).
pub const MAX_DATAGRAM: usize = 65507;
/// Most sessions one listener keeps at a time; datagrams from further addresses are dropped.
pub const MAX_SESSIONS: usize = 1024;
/// New sessions that may wait for the host before further new addresses are dropped.
const HANDOVER_QUEUE: usize = 64;
/// Most messages moved from one source before the pump looks at the others.
const BATCH: usize = 64;
/// Receive buffer: any datagram fits, and a larger message from the host shows as truncated.
const BUFFER: usize = 65536;
/// At most one warning of a kind per this period.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A running listener.
struct Listener {
    shared: Arc<Shared>,
}

/// State the pump shares with the instance and the hand-over thread.
struct Shared {
    signal: Signal,
    /// Session ids the host reported closed, not yet seen by the pump.
    closed: Mutex<Vec<u64>>,
    /// Host session tokens of handed-over sessions, to their session ids.
    tokens: Mutex<HashMap<u64, u64>>,
}

impl Backend for Listener {
    fn session_closed(&self, token: SessionToken) {
        let id = self
            .shared
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&token.0);
        if let Some(id) = id {
            let mut closed = self.shared.closed.lock().unwrap_or_else(|p| p.into_inner());
            // The pump also sees the host's end close; this list only speeds that up.
            if closed.len() < MAX_SESSIONS {
                closed.push(id);
            }
            drop(closed);
            self.shared.signal.wake();
        }
    }

    fn stop(&self) {
        self.shared.signal.stop();
    }
}

/// Validates a `udp-listener` section, binds, and starts the pump.
pub fn start(section: &Section, sink: ConnectionSink) -> Result<Box<dyn Backend>, PluginError> {
    section.reject_unknown_keys(&["bindaddr", "port"], CORE_BACKEND_KEYS)?;
    let udp = ListenAddress::from_section("udp-listener", section)?
        .bind(|addrs| UdpSocket::bind(addrs))?;
    udp.set_nonblocking(true)?;
    let local = udp.local_addr()?;
    let shared = Arc::new(Shared {
        signal: Signal::new()?,
        closed: Mutex::new(Vec::new()),
        tokens: Mutex::new(HashMap::new()),
    });
    let (tx, rx) = mpsc::sync_channel(HANDOVER_QUEUE);
    let handover_shared = Arc::clone(&shared);
    std::thread::Builder::new()
        .name(format!("udp-listener {local} handover"))
        .spawn(move || handover_loop(&rx, &sink, &handover_shared))?;
    let mut pump = Pump {
        udp,
        sessions: HashMap::new(),
        next_id: 1,
        handover: tx,
        shared: Arc::clone(&shared),
        buf: vec![0u8; BUFFER].into_boxed_slice(),
        full_warning: Throttle::default(),
        read_warning: Throttle::default(),
    };
    std::thread::Builder::new()
        .name(format!("udp-listener {local}"))
        .spawn(move || pump.run())?;
    log::info(&format!("listening on udp {local}"));
    Ok(Box::new(Listener { shared }))
}

/// A new session on its way to the host.
struct Handover {
    fd: OwnedFd,
    peer: SocketAddr,
    id: u64,
}

/// Hands new sessions to the host, one at a time; ends when the pump does.
fn handover_loop(rx: &Receiver<Handover>, sink: &ConnectionSink, shared: &Shared) {
    for h in rx {
        // If the host refuses, it closes its end and the pump forgets the session.
        if let Some(token) = sink.connection(h.fd, Framing::Datagram, &h.peer.to_string(), true) {
            let mut tokens = shared.tokens.lock().unwrap_or_else(|p| p.into_inner());
            if tokens.len() >= 4 * MAX_SESSIONS {
                // The host did not report closed sessions; their ends closing is enough.
                tokens.clear();
            }
            tokens.insert(token.0, h.id);
        }
    }
}

/// One remote address's session: the pump's end of its socket pair.
struct Session {
    id: u64,
    fd: OwnedFd,
}

/// Rate limit for repeated warnings.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    fn ready(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// The thread that moves datagrams between the UDP socket and the sessions.
struct Pump {
    udp: UdpSocket,
    sessions: HashMap<SocketAddr, Session>,
    next_id: u64,
    handover: SyncSender<Handover>,
    shared: Arc<Shared>,
    buf: Box<[u8]>,
    full_warning: Throttle,
    read_warning: Throttle,
}

impl Pump {
    fn run(&mut self) {
        let mut fds = Vec::new();
        let mut order: Vec<(SocketAddr, u64)> = Vec::new();
        let mut ready = Vec::new();
        loop {
            fds.clear();
            order.clear();
            fds.push(pollin(&self.shared.signal.fd()));
            fds.push(pollin(&self.udp));
            for (addr, session) in &self.sessions {
                order.push((*addr, session.id));
                fds.push(pollin(&session.fd));
            }
            if let Err(e) = poll(&mut fds) {
                log::error(&format!("udp listener poll failed: {e}"));
                if self.shared.signal.sleep(Duration::from_millis(100)) {
                    return;
                }
                continue;
            }
            if self.shared.signal.is_stopped() {
                return;
            }
            if fds[0].revents != 0 {
                self.shared.signal.drain();
                self.forget_closed();
            }
            ready.clear();
            ready.extend(
                order
                    .iter()
                    .zip(&fds[2..])
                    .filter(|(_, p)| p.revents != 0)
                    .map(|(s, _)| *s),
            );
            if fds[1].revents != 0 {
                self.read_udp();
            }
            for &(addr, id) in &ready {
                self.read_session(addr, id);
            }
        }
    }

    /// Drops the sessions the host reported closed.
    fn forget_closed(&mut self) {
        let ids =
            std::mem::take(&mut *self.shared.closed.lock().unwrap_or_else(|p| p.into_inner()));
        if !ids.is_empty() {
            self.sessions.retain(|_, s| !ids.contains(&s.id));
        }
    }

    /// Reads datagrams from the network into their sessions.
    fn read_udp(&mut self) {
        for _ in 0..BATCH {
            match self.udp.recv_from(&mut self.buf) {
                Ok((0, _)) => {}
                Ok((n, peer)) => self.deliver(peer, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // E.g. an ICMP error queued on the socket: nothing to undo.
                    if self.read_warning.ready() {
                        log::warn(&format!("udp receive failed: {e}"));
                    }
                    return;
                }
            }
        }
    }

    /// Passes the first `n` bytes of the buffer to `peer`'s session, creating it if new.
    fn deliver(&mut self, peer: SocketAddr, n: usize) {
        let msg = &self.buf[..n];
        if let Some(session) = self.sessions.get(&peer) {
            match seqpacket::send(&session.fd, msg) {
                Ok(_) => return,
                // The host does not keep up: drop, as the network would.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
                // The host closed the session: this datagram starts a new one.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN)
                    ) =>
                {
                    self.sessions.remove(&peer);
                }
                Err(e) => {
                    if self.read_warning.ready() {
                        log::warn(&format!("datagram from {peer} dropped: {e}"));
                    }
                    return;
                }
            }
        }
        if self.sessions.len() >= MAX_SESSIONS {
            if self.full_warning.ready() {
                log::warn(&format!(
                    "udp listener has {MAX_SESSIONS} sessions: datagrams from {peer} dropped"
                ));
            }
            return;
        }
        if let Err(e) = self.open_session(peer, n) {
            if self.full_warning.ready() {
                log::warn(&format!("cannot start a udp session for {peer}: {e}"));
            }
        }
    }

    fn open_session(&mut self, peer: SocketAddr, n: usize) -> io::Result<()> {
        let (ours, theirs) = seqpacket::pair()?;
        seqpacket::send(&ours, &self.buf[..n])?;
        let id = self.next_id;
        self.next_id += 1;
        match self.handover.try_send(Handover {
            fd: theirs,
            peer,
            id,
        }) {
            Ok(()) => {
                log::debug(&format!("udp session from {peer}"));
                self.sessions.insert(peer, Session { id, fd: ours });
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(io::Error::other(
                "too many new sessions waiting for the host",
            )),
            Err(TrySendError::Disconnected(_)) => Err(io::Error::other("hand-over thread gone")),
        }
    }

    /// Sends what the host wrote for `peer` out as datagrams; forgets the session when
    /// the host closed its end.
    fn read_session(&mut self, peer: SocketAddr, id: u64) {
        for _ in 0..BATCH {
            let Some(session) = self.sessions.get(&peer).filter(|s| s.id == id) else {
                return;
            };
            match seqpacket::recv(&session.fd, &mut self.buf) {
                Ok(0) => {
                    log::debug(&format!("udp session from {peer} ended"));
                    self.sessions.remove(&peer);
                    return;
                }
                Ok(n) if n > MAX_DATAGRAM => log::debug(&format!(
                    "message of {n} bytes for {peer} dropped: udp carries at most {MAX_DATAGRAM}"
                )),
                Ok(n) => match self.udp.send_to(&self.buf[..n], peer) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => log::debug(&format!("udp send to {peer} failed: {e}")),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug(&format!("udp session from {peer} failed: {e}"));
                    self.sessions.remove(&peer);
                    return;
                }
            }
        }
    }
}
