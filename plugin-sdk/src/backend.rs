//! Backends: plugins that dial or accept connections and hand them to the core.
//!
//! A backend only moves connections. The core owns everything that happens on them
//! (framing, TLS, keepalive, costs, `allowedpeers`), so a plugin's job is: validate its
//! section, open sockets on its own threads, call [`ConnectionSink::connection`] with
//! each connected descriptor, and, for a dialer, redial when the host reports through
//! [`Backend::session_closed`] that the session ended.
//!
//! A plugin that must run TLS itself (websockets: TLS sits under HTTP) hands its
//! connections over with [`ConnectionSink::connection_tls`] instead, passing the peer's
//! leaf certificate so that the core can hold the peer to the node ID it names.

use std::os::fd::{IntoRawFd, OwnedFd};

use crate::abi;

/// How a connection delimits messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A byte stream, each message preceded by its u16 little-endian length (TCP).
    Len16Le,
    /// A message-preserving socket (UDP, `SOCK_SEQPACKET`): one message per datagram.
    Datagram,
}

impl Framing {
    /// The ABI code (`FRAMING_*`).
    pub fn to_abi(self) -> u32 {
        match self {
            Framing::Len16Le => abi::FRAMING_LEN16LE,
            Framing::Datagram => abi::FRAMING_DATAGRAM,
        }
    }

    /// Decodes an ABI code.
    pub fn from_abi(code: u32) -> Option<Framing> {
        match code {
            abi::FRAMING_LEN16LE => Some(Framing::Len16Le),
            abi::FRAMING_DATAGRAM => Some(Framing::Datagram),
            _ => None,
        }
    }
}

/// The host's name for one session, returned when a connection is handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionToken(pub u64);

/// Where a backend delivers its connections; cheap to clone, thread-safe. The host's
/// reference is released when the last clone is dropped, so keep clones only in the
/// threads of the instance and let them end when the instance stops.
#[derive(Clone)]
pub struct ConnectionSink {
    inner: std::sync::Arc<SinkInner>,
}

struct SinkInner {
    host: abi::BackendHost,
}

// SAFETY: the ABI requires the host's backend callbacks and context to be thread-safe.
unsafe impl Send for SinkInner {}
// SAFETY: as above; the struct is only read.
unsafe impl Sync for SinkInner {}

impl Drop for SinkInner {
    fn drop(&mut self) {
        if let Some(release) = self.host.release {
            // SAFETY: this is the plugin's one reference to ctx, given up exactly once.
            unsafe { release(self.host.ctx) };
        }
    }
}

impl ConnectionSink {
    /// Takes over the plugin's reference to a host context.
    ///
    /// # Safety
    /// `host` must come from the host's `start` call and be taken over only once.
    pub(crate) unsafe fn from_abi(host: abi::BackendHost) -> ConnectionSink {
        ConnectionSink {
            inner: std::sync::Arc::new(SinkInner { host }),
        }
    }

    /// Hands a connected socket to the host. `peer` describes the other end for logs
    /// (e.g. `127.0.0.1:2222`); `inbound` is true for an accepted connection. Returns
    /// the session token, or `None` if the host refused it (the descriptor is then
    /// closed; the instance is being stopped). May block while the host is busy.
    pub fn connection(
        &self,
        fd: OwnedFd,
        framing: Framing,
        peer: &str,
        inbound: bool,
    ) -> Option<SessionToken> {
        let host = &self.inner.host;
        let Some(connection) = host.connection else {
            drop(fd);
            return None;
        };
        let raw = fd.into_raw_fd();
        // SAFETY: ctx is alive while this sink holds its reference; the descriptor's
        // ownership moves to the host; `peer` is borrowed for the call.
        let token = unsafe {
            connection(
                host.ctx,
                raw,
                framing.to_abi(),
                abi::Str::new(peer),
                u32::from(inbound),
            )
        };
        (token != 0).then_some(SessionToken(token))
    }

    /// Whether the host takes connections with the peer's certificate
    /// ([`ConnectionSink::connection_tls`] reaches it): a host of ABI 1.1 or later.
    pub fn checks_peer_certificates(&self) -> bool {
        self.connection_tls_fn().is_some()
    }

    /// As [`ConnectionSink::connection`], for a connection on which the plugin ran TLS:
    /// `peer_cert` is the DER of the leaf certificate the peer presented (`None` if it
    /// presented none). The host then checks that the node ID the peer announces is
    /// one of the certificate's ReceptorNames (unless the backend's TLS configuration
    /// says `skipreceptornamescheck`). A host older than ABI 1.1 has no such callback:
    /// the connection is then handed over with [`ConnectionSink::connection`], unchecked.
    pub fn connection_tls(
        &self,
        fd: OwnedFd,
        framing: Framing,
        peer: &str,
        inbound: bool,
        peer_cert: Option<&[u8]>,
    ) -> Option<SessionToken> {
        let Some(connection_tls) = self.connection_tls_fn() else {
            return self.connection(fd, framing, peer, inbound);
        };
        let cert = peer_cert.unwrap_or(&[]);
        let raw = fd.into_raw_fd();
        // SAFETY: ctx is alive while this sink holds its reference; the descriptor's
        // ownership moves to the host; `peer` and `cert` are borrowed for the call.
        let token = unsafe {
            connection_tls(
                self.inner.host.ctx,
                raw,
                framing.to_abi(),
                abi::Str::new(peer),
                u32::from(inbound),
                cert.as_ptr(),
                cert.len(),
            )
        };
        (token != 0).then_some(SessionToken(token))
    }

    /// The host's `connection_tls`, if its `BackendHost` has one.
    fn connection_tls_fn(&self) -> ConnectionTlsFn {
        let host = &self.inner.host;
        let covered = abi::covers(
            host.struct_size,
            std::mem::offset_of!(abi::BackendHost, connection_tls),
            std::mem::size_of::<ConnectionTlsFn>(),
        );
        if covered {
            host.connection_tls
        } else {
            None
        }
    }
}

/// The type of [`abi::BackendHost::connection_tls`].
type ConnectionTlsFn = Option<
    unsafe extern "C" fn(
        *mut std::ffi::c_void,
        std::ffi::c_int,
        u32,
        abi::Str,
        u32,
        *const u8,
        usize,
    ) -> u64,
>;

/// A running backend instance (one configured `tcp-listener`, `tcp-peer`, ...).
pub trait Backend: Send + Sync + 'static {
    /// The session that started with `token` has ended. A dialer may now redial.
    fn session_closed(&self, token: SessionToken);

    /// Stops accepting or dialing. Must return promptly; threads may finish on their own
    /// afterwards, dropping their [`ConnectionSink`] clones.
    fn stop(&self);
}

#[cfg(test)]
mod tests {
    //! The sink against a host of each minor: a test host records the calls it gets.

    use std::ffi::{c_int, c_void};
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::sync::Mutex;

    use super::*;

    /// One call the test host received: which callback, the peer, inbound, the cert.
    type Call = (&'static str, String, bool, Option<Vec<u8>>);

    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<Call>>,
        releases: Mutex<u32>,
    }

    /// # Safety
    /// `ctx` must be a live `Recorder`.
    unsafe fn recorder<'a>(ctx: *mut c_void) -> &'a Recorder {
        // SAFETY: as documented.
        unsafe { &*(ctx as *const Recorder) }
    }

    unsafe extern "C" fn connection(
        ctx: *mut c_void,
        fd: c_int,
        _framing: u32,
        peer: abi::Str,
        inbound: u32,
    ) -> u64 {
        // SAFETY: the descriptor is ours now.
        let _fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ctx is valid for the call.
        let rec = unsafe { recorder(ctx) };
        // SAFETY: peer is valid for the call.
        let peer = unsafe { peer.to_string_lossy() };
        let mut calls = rec.calls.lock().unwrap();
        calls.push(("connection", peer, inbound != 0, None));
        calls.len() as u64
    }

    unsafe extern "C" fn connection_tls(
        ctx: *mut c_void,
        fd: c_int,
        _framing: u32,
        peer: abi::Str,
        inbound: u32,
        cert: *const u8,
        cert_len: usize,
    ) -> u64 {
        // SAFETY: the descriptor is ours now.
        let _fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ctx is valid for the call.
        let rec = unsafe { recorder(ctx) };
        // SAFETY: peer is valid for the call.
        let peer = unsafe { peer.to_string_lossy() };
        let cert = abi::Str {
            ptr: cert,
            len: cert_len,
        };
        // SAFETY: the certificate is borrowed for the call.
        let cert = unsafe { cert.as_bytes() };
        let mut calls = rec.calls.lock().unwrap();
        calls.push(("connection_tls", peer, inbound != 0, Some(cert.to_vec())));
        calls.len() as u64
    }

    unsafe extern "C" fn release(ctx: *mut c_void) {
        // SAFETY: ctx is the test's recorder.
        *unsafe { recorder(ctx) }.releases.lock().unwrap() += 1;
    }

    fn host(rec: &Recorder, struct_size: usize) -> abi::BackendHost {
        abi::BackendHost {
            struct_size,
            ctx: rec as *const Recorder as *mut c_void,
            connection: Some(connection),
            release: Some(release),
            connection_tls: Some(connection_tls),
        }
    }

    fn fd() -> OwnedFd {
        OwnedFd::from(UnixStream::pair().unwrap().0)
    }

    #[test]
    fn connection_tls_passes_the_certificate_to_a_1_1_host() {
        let rec = Recorder::default();
        // SAFETY: the host struct is valid while `rec` lives; taken over once.
        let sink = unsafe {
            ConnectionSink::from_abi(host(&rec, std::mem::size_of::<abi::BackendHost>()))
        };
        assert!(sink.checks_peer_certificates());
        let token = sink.connection_tls(fd(), Framing::Datagram, "a:1", true, Some(b"DER"));
        assert_eq!(token, Some(SessionToken(1)));
        let token = sink.connection_tls(fd(), Framing::Datagram, "b:2", false, None);
        assert_eq!(token, Some(SessionToken(2)));
        drop(sink);
        let calls = rec.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            vec![
                (
                    "connection_tls",
                    "a:1".to_owned(),
                    true,
                    Some(b"DER".to_vec())
                ),
                ("connection_tls", "b:2".to_owned(), false, Some(Vec::new())),
            ]
        );
        assert_eq!(*rec.releases.lock().unwrap(), 1);
    }

    #[test]
    fn connection_tls_falls_back_to_connection_on_a_1_0_host() {
        let rec = Recorder::default();
        // A 1.0 host's struct ends before connection_tls: whatever lies there is not
        // a field of it (here a function the sink must not call).
        // SAFETY: as above.
        let sink = unsafe { ConnectionSink::from_abi(host(&rec, abi::BACKEND_HOST_V1_0_SIZE)) };
        assert!(!sink.checks_peer_certificates());
        let token = sink.connection_tls(fd(), Framing::Len16Le, "c:3", true, Some(b"DER"));
        assert_eq!(token, Some(SessionToken(1)));
        drop(sink);
        let calls = rec.calls.lock().unwrap().clone();
        assert_eq!(calls, vec![("connection", "c:3".to_owned(), true, None)]);
        assert_eq!(*rec.releases.lock().unwrap(), 1);
    }
}
