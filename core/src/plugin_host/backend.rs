//! Running backend instances: connections from the plugin arrive on a bounded channel.
//!
//! The host context given to the plugin is an `Arc<BackendCtx>` shared with the
//! [`BackendHandle`]; the plugin holds one reference until it calls `release`. Handing
//! over a connection never blocks a thread of the host's runtime: if the channel is
//! full, a plugin thread waits for room (back-pressure) until the instance is stopped.
//! A plugin that ran TLS itself hands connections over with `connection_tls` (ABI 1.1),
//! which also carries the peer's leaf certificate for the daemon's node ID check.

use std::ffi::c_void;
use std::future::Future;
use std::os::fd::{FromRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, Wake, Waker};

use receptor_plugin_sdk::abi;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ffi::ErrorSlot, PluginError, SendPtr, SessionToken};
use crate::mesh::Framing;

/// How many connections may wait for the daemon before a plugin thread blocks.
const CONNECTION_QUEUE: usize = 16;

/// Session tokens are unique across every backend instance of the process (never 0).
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// The validated functions of a backend vtable.
#[derive(Clone, Copy)]
pub(super) struct BackendFns {
    start: unsafe extern "C" fn(
        *mut c_void,
        abi::Str,
        *const abi::BackendHost,
        *const abi::ErrorSink,
        *mut *mut c_void,
    ) -> abi::Status,
    session_closed: unsafe extern "C" fn(*mut c_void, u64),
    stop: unsafe extern "C" fn(*mut c_void),
}

impl BackendFns {
    /// Checks a plugin's vtable.
    ///
    /// # Safety
    /// `vt` must point to a vtable of at least its `struct_size` bytes.
    pub(super) unsafe fn from_vtable(vt: *const abi::BackendVtable) -> Result<BackendFns, String> {
        // SAFETY: a vtable of struct_size bytes (contract); only whole minors are read.
        let vt =
            unsafe { receptor_plugin_sdk::layout::read_prefix(vt) }.map_err(|e| e.to_string())?;
        match (vt.start, vt.session_closed, vt.stop) {
            (Some(start), Some(session_closed), Some(stop)) => Ok(BackendFns {
                start,
                session_closed,
                stop,
            }),
            _ => Err("backend vtable has a null function".to_owned()),
        }
    }
}

/// A connected socket a backend plugin handed over.
#[derive(Debug)]
pub struct BackendConnection {
    /// The connected descriptor (now owned by the daemon), in non-blocking mode.
    pub fd: OwnedFd,
    /// How messages are delimited on it.
    pub framing: Framing,
    /// The other end, for logs (e.g. `127.0.0.1:2222`).
    pub peer: String,
    /// True if accepted by a listener, false if dialed.
    pub inbound: bool,
    /// The DER of the leaf certificate the peer presented, when the plugin ran TLS on
    /// the connection itself and handed it over with `connection_tls` (ABI 1.1).
    pub peer_cert: Option<Vec<u8>>,
    /// Pass this to [`BackendHandle::session_closed`] when the session ends; unique
    /// among all connections of all backends.
    pub token: SessionToken,
}

/// A running backend instance: its connections and a handle to control it.
#[derive(Debug)]
pub struct BackendInstance {
    /// Connections as the plugin establishes them. Ends when the instance stops.
    pub connections: mpsc::Receiver<BackendConnection>,
    /// Controls the instance; dropping every clone stops it.
    pub handle: BackendHandle,
}

/// Controls a running backend instance; cheap to clone. The instance stops when
/// [`BackendHandle::stop`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct BackendHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BackendHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendHandle")
            .field("plugin", &self.inner.ctx.plugin)
            .field("kind", &self.inner.ctx.kind)
            .finish()
    }
}

struct Inner {
    /// The plugin's instance; `None` once stopped.
    instance: RwLock<Option<SendPtr>>,
    fns: BackendFns,
    ctx: Arc<BackendCtx>,
}

/// What the plugin's `BackendHost.ctx` points to.
struct BackendCtx {
    /// Taken out at stop, so that the receiver ends once in-flight hand-overs finish.
    tx: std::sync::Mutex<Option<mpsc::Sender<BackendConnection>>>,
    stopped: CancellationToken,
    /// Cancelled when the plugin gives its reference back (`release`): its threads have
    /// ended and what they held (a listening socket, say) is closed.
    released: CancellationToken,
    plugin: String,
    kind: String,
}

impl BackendHandle {
    /// Tells the plugin that the session with `token` ended (a dialer then redials).
    /// Does nothing after the instance stopped.
    pub fn session_closed(&self, token: SessionToken) {
        let guard = self
            .inner
            .instance
            .read()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(instance) = *guard {
            // SAFETY: the instance is alive until stop takes it out under the write lock.
            unsafe { (self.inner.fns.session_closed)(instance.0, token.0) };
        }
    }

    /// Stops the instance: no new connections are accepted from it (sessions already
    /// handed over are the daemon's and keep running). Idempotent.
    pub fn stop(&self) {
        self.inner.stop();
    }

    /// Whether the instance was stopped.
    pub fn is_stopped(&self) -> bool {
        self.inner.ctx.stopped.is_cancelled()
    }

    /// Waits until the plugin has given back its context (`release`), which it does
    /// once the instance's threads have ended and dropped what they held: after a
    /// [`BackendHandle::stop`], a listener's address can be bound again.
    pub async fn released(&self) {
        self.inner.ctx.released.cancelled().await;
    }

    /// Whether the plugin has given back its context (see [`BackendHandle::released`]).
    pub fn is_released(&self) -> bool {
        self.inner.ctx.released.is_cancelled()
    }

    /// The config section kind of the instance (e.g. `tcp-peer`).
    pub fn kind(&self) -> &str {
        &self.inner.ctx.kind
    }
}

impl Inner {
    fn stop(&self) {
        self.ctx.stopped.cancel();
        drop(self.ctx.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let taken = self
            .instance
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(instance) = taken {
            // SAFETY: the instance was taken out, so this is its only stop and no
            // session_closed call can use it afterwards.
            unsafe { (self.fns.stop)(instance.0) };
            tracing::debug!(plugin = %self.ctx.plugin, kind = %self.ctx.kind, "backend stopped");
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts one instance.
pub(super) fn start(
    plugin: &str,
    kind: &str,
    claim_ctx: SendPtr,
    fns: BackendFns,
    config: &serde_json::Value,
) -> Result<BackendInstance, PluginError> {
    let (tx, rx) = mpsc::channel(CONNECTION_QUEUE);
    let ctx = Arc::new(BackendCtx {
        tx: std::sync::Mutex::new(Some(tx)),
        stopped: CancellationToken::new(),
        released: CancellationToken::new(),
        plugin: plugin.to_owned(),
        kind: kind.to_owned(),
    });
    let host = abi::BackendHost {
        struct_size: std::mem::size_of::<abi::BackendHost>(),
        ctx: Arc::into_raw(Arc::clone(&ctx)) as *mut c_void,
        connection: Some(host_connection),
        release: Some(host_release),
        connection_tls: Some(host_connection_tls),
    };
    let json = config.to_string();
    let slot = ErrorSlot::for_call(plugin);
    let sink = slot.sink();
    let mut instance: *mut c_void = std::ptr::null_mut();
    // SAFETY: every pointer passed is valid for the call; the plugin takes over the
    // context reference created above (and releases it, also on failure).
    let status = unsafe {
        (fns.start)(
            claim_ctx.0,
            abi::Str::new(&json),
            &host,
            &sink,
            &mut instance,
        )
    };
    if status != abi::STATUS_OK || instance.is_null() {
        ctx.stopped.cancel();
        let message = if status == abi::STATUS_OK {
            "start returned no instance".to_owned()
        } else {
            slot.message(status)
        };
        if status == abi::STATUS_PANIC {
            tracing::error!(plugin, section = kind, "backend start panicked: {message}");
        } else {
            tracing::warn!(plugin, section = kind, "backend start failed: {message}");
        }
        return Err(PluginError::Call {
            plugin: plugin.to_owned(),
            message: format!("{kind}: {message}"),
        });
    }
    let handle = BackendHandle {
        inner: Arc::new(Inner {
            instance: RwLock::new(Some(SendPtr(instance))),
            fns,
            ctx,
        }),
    };
    Ok(BackendInstance {
        connections: rx,
        handle,
    })
}

unsafe extern "C" fn host_release(ctx: *mut c_void) {
    if !ctx.is_null() {
        // SAFETY: the plugin gives back the reference created by Arc::into_raw in start.
        let ctx = unsafe { Arc::from_raw(ctx as *const BackendCtx) };
        ctx.released.cancel();
        drop(ctx);
    }
}

unsafe extern "C" fn host_connection(
    ctx: *mut c_void,
    fd: std::ffi::c_int,
    framing: u32,
    peer: abi::Str,
    inbound: u32,
) -> u64 {
    if fd < 0 || ctx.is_null() {
        return 0;
    }
    // SAFETY: the descriptor's ownership moves to the host with this call.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the plugin holds a reference to ctx until it calls release.
    let ctx = unsafe { &*(ctx as *const BackendCtx) };
    // SAFETY: the peer string is borrowed for this call.
    let peer = unsafe { peer.to_string_lossy() };
    catch_unwind(AssertUnwindSafe(|| {
        deliver(ctx, fd, framing, peer, inbound != 0, None)
    }))
    .unwrap_or(0)
}

/// The most certificate bytes taken from a plugin (rustls takes no larger message).
const MAX_PEER_CERT: usize = 64 * 1024;

unsafe extern "C" fn host_connection_tls(
    ctx: *mut c_void,
    fd: std::ffi::c_int,
    framing: u32,
    peer: abi::Str,
    inbound: u32,
    peer_cert: *const u8,
    peer_cert_len: usize,
) -> u64 {
    if fd < 0 || ctx.is_null() {
        return 0;
    }
    // SAFETY: the descriptor's ownership moves to the host with this call.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the plugin holds a reference to ctx until it calls release.
    let ctx = unsafe { &*(ctx as *const BackendCtx) };
    // SAFETY: the peer string is borrowed for this call.
    let peer = unsafe { peer.to_string_lossy() };
    let cert = abi::Str {
        ptr: peer_cert,
        len: peer_cert_len,
    };
    // SAFETY: the certificate bytes are borrowed for this call.
    let cert = unsafe { cert.as_bytes() };
    if cert.len() > MAX_PEER_CERT {
        tracing::warn!(plugin = %ctx.plugin, kind = %ctx.kind, "connection from {peer} refused: a peer certificate of {} bytes", cert.len());
        return 0;
    }
    let cert = (!cert.is_empty()).then(|| cert.to_vec());
    catch_unwind(AssertUnwindSafe(|| {
        deliver(ctx, fd, framing, peer, inbound != 0, cert)
    }))
    .unwrap_or(0)
}

fn deliver(
    ctx: &BackendCtx,
    fd: OwnedFd,
    framing: u32,
    peer: String,
    inbound: bool,
    peer_cert: Option<Vec<u8>>,
) -> u64 {
    let Some(framing) = framing_from_abi(framing) else {
        tracing::warn!(plugin = %ctx.plugin, kind = %ctx.kind, "connection with unknown framing {framing} refused");
        return 0;
    };
    if let Err(e) = set_nonblocking(&fd) {
        tracing::warn!(plugin = %ctx.plugin, kind = %ctx.kind, "connection from {peer} refused: {e}");
        return 0;
    }
    let Some(tx) = ctx.tx.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
        return 0;
    };
    let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
    let conn = BackendConnection {
        fd,
        framing,
        peer,
        inbound,
        peer_cert,
        token: SessionToken(token),
    };
    let conn = match tx.try_send(conn) {
        Ok(()) => return token,
        Err(mpsc::error::TrySendError::Closed(_)) => return 0,
        Err(mpsc::error::TrySendError::Full(conn)) => conn,
    };
    if tokio::runtime::Handle::try_current().is_ok() {
        // Never block a thread of the host's runtime: refuse instead.
        tracing::warn!(plugin = %ctx.plugin, kind = %ctx.kind, "connection refused: queue full");
        return 0;
    }
    let sent = block_on(async {
        tokio::select! {
            r = tx.send(conn) => r.is_ok(),
            _ = ctx.stopped.cancelled() => false,
        }
    });
    if sent {
        token
    } else {
        0
    }
}

/// Puts a descriptor in non-blocking mode, as the async runtime needs.
fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let set = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if set < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn framing_from_abi(code: u32) -> Option<Framing> {
    match code {
        abi::FRAMING_LEN16LE => Some(Framing::Len16Le),
        abi::FRAMING_DATAGRAM => Some(Framing::Datagram),
        _ => None,
    }
}

/// Wakes a parked plugin thread.
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on the calling (plugin) thread.
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    //! The host's `BackendHost` callbacks, called as a plugin calls them: a stand-in
    //! plugin `start` keeps the host struct it is given, and the test hands over real
    //! socket descriptors through it.

    use std::cell::Cell;
    use std::os::fd::{AsRawFd, IntoRawFd};
    use std::os::unix::net::UnixStream;

    use super::*;

    /// What the stand-in plugin keeps: the host struct of its one instance.
    type Kept = Cell<Option<abi::BackendHost>>;

    unsafe extern "C" fn keep_start(
        claim_ctx: *mut c_void,
        _config: abi::Str,
        host: *const abi::BackendHost,
        _err: *const abi::ErrorSink,
        out_instance: *mut *mut c_void,
    ) -> abi::Status {
        // SAFETY: the host passes a valid struct.
        let host = unsafe { *host };
        // SAFETY: the test passes a `Kept` as claim_ctx.
        let kept = unsafe { &*(claim_ctx as *const Kept) };
        kept.set(Some(host));
        // SAFETY: out_instance is valid for writing during the call.
        unsafe { *out_instance = claim_ctx };
        abi::STATUS_OK
    }

    unsafe extern "C" fn no_session_closed(_instance: *mut c_void, _token: u64) {}

    unsafe extern "C" fn no_stop(_instance: *mut c_void) {}

    /// Starts an instance of the stand-in plugin; returns it and the host struct.
    fn started(kept: &Kept) -> (BackendInstance, abi::BackendHost) {
        let fns = BackendFns {
            start: keep_start,
            session_closed: no_session_closed,
            stop: no_stop,
        };
        let claim = SendPtr(kept as *const Kept as *mut c_void);
        let instance = start("test", "ws-listener", claim, fns, &serde_json::json!({}))
            .expect("the stand-in plugin starts");
        let host = kept.take().expect("start received the host struct");
        (instance, host)
    }

    /// Hands over one end of a fresh socket pair with `cert`; returns the token and
    /// the other end.
    fn hand_over(host: &abi::BackendHost, cert: &[u8]) -> (u64, UnixStream) {
        let connection_tls = host.connection_tls.expect("the host has connection_tls");
        let (ours, theirs) = UnixStream::pair().expect("a socket pair");
        // SAFETY: ctx is alive (the plugin's reference is not released yet); the
        // descriptor moves to the host; the strings are borrowed for the call.
        let token = unsafe {
            connection_tls(
                host.ctx,
                theirs.into_raw_fd(),
                abi::FRAMING_DATAGRAM,
                abi::Str::new("127.0.0.1:9"),
                1,
                cert.as_ptr(),
                cert.len(),
            )
        };
        (token, ours)
    }

    fn release(host: &abi::BackendHost) {
        // SAFETY: the plugin's one reference, given up once.
        unsafe { (host.release.expect("the host has release"))(host.ctx) };
    }

    #[test]
    fn the_host_announces_abi_1_1_and_connection_tls() {
        let kept = Kept::default();
        let (_instance, host) = started(&kept);
        assert_eq!(host.struct_size, std::mem::size_of::<abi::BackendHost>());
        assert!(abi::covers(
            host.struct_size,
            abi::BACKEND_HOST_V1_0_SIZE,
            std::mem::size_of_val(&host.connection_tls)
        ));
        assert!(host.connection_tls.is_some());
        release(&host);
    }

    #[test]
    fn connection_tls_delivers_the_peer_certificate_with_the_connection() {
        let kept = Kept::default();
        let (mut instance, host) = started(&kept);
        let cert = b"\x30\x82 the DER of a leaf certificate".to_vec();
        let (token, mut ours) = hand_over(&host, &cert);
        assert_ne!(token, 0, "the connection was refused");
        let conn = instance
            .connections
            .try_recv()
            .expect("a delivered connection");
        assert_eq!(conn.token, SessionToken(token));
        assert_eq!(conn.peer_cert.as_deref(), Some(cert.as_slice()));
        assert_eq!((conn.framing, conn.inbound), (Framing::Datagram, true));
        assert_eq!(conn.peer, "127.0.0.1:9");
        // The descriptor is the other end of our socket.
        std::io::Write::write_all(&mut ours, b"ping").expect("write");
        let mut buf = [0u8; 4];
        let mut theirs = UnixStream::from(conn.fd);
        theirs.set_nonblocking(false).expect("blocking mode");
        std::io::Read::read_exact(&mut theirs, &mut buf).expect("read");
        assert_eq!(&buf, b"ping");

        // No certificate (length 0) is a connection without one.
        let (token, _ours) = hand_over(&host, &[]);
        assert_ne!(token, 0);
        let conn = instance
            .connections
            .try_recv()
            .expect("a delivered connection");
        assert!(conn.peer_cert.is_none());
        release(&host);
    }

    #[test]
    fn an_oversized_certificate_is_refused_and_its_descriptor_closed() {
        let kept = Kept::default();
        let (mut instance, host) = started(&kept);
        let (token, ours) = hand_over(&host, &vec![0u8; MAX_PEER_CERT + 1]);
        assert_eq!(token, 0);
        assert!(instance.connections.try_recv().is_err());
        ours.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("read timeout");
        // The host closed its end: reading ours sees end of stream.
        let mut buf = [0u8; 1];
        assert_eq!(
            std::io::Read::read(&mut &ours, &mut buf).expect("read"),
            0,
            "fd {} still open at the host",
            ours.as_raw_fd()
        );
        release(&host);
    }

    #[test]
    fn a_stopped_backend_refuses_connection_tls() {
        let kept = Kept::default();
        let (instance, host) = started(&kept);
        instance.handle.stop();
        let (token, _ours) = hand_over(&host, b"cert");
        assert_eq!(token, 0);
        release(&host);
    }

    #[test]
    fn released_reports_when_the_plugin_gives_its_context_back() {
        let kept = Kept::default();
        let (instance, host) = started(&kept);
        instance.handle.stop();
        assert!(
            !instance.handle.is_released(),
            "released before the plugin said so"
        );
        release(&host);
        assert!(instance.handle.is_released());
    }
}
