//! Unix-socket and TCP listeners of the control service.
//!
//! A unix socket is guarded like Go receptor guards it: `<path>.lock` is created (0600)
//! and locked with `flock(LOCK_EX|LOCK_NB)`, so a second node configured with the same
//! path fails to start instead of stealing the socket; then a stale socket file is
//! removed, the socket is bound and chmod-ed to exactly the configured permissions
//! (the umask does not matter). The lock file stays; the socket file is removed when
//! the listener closes.
//!
//! A TCP listener may be TLS (`tcptls`): as in Go receptor, the handshake runs in the
//! connection's own task with a deadline, and a failed handshake only ends that connection.
//!
//! Each listener runs an accept task that owns the sessions it started: closing or
//! dropping the [`ControlListener`] stops accepting and ends those sessions. The
//! listeners of one [`ControlService`] share its `maxconnections` slots
//! ([`super::limits`]); a connection accepted when none is free is refused with an
//! error line.

use std::ffi::CString;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::command::{BoxRead, BoxWrite, PeerKind};
use super::limits::too_many_connections_line;
use super::service::ControlService;

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a TLS client may take to complete its handshake (Go receptor's deadline).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long telling a refused client why may take.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A unix socket path.
    Unix(PathBuf),
    /// A bound TCP address (the real port when port 0 was asked for).
    Tcp(SocketAddr),
}

/// A running control-service listener; dropping it stops it.
#[derive(Debug)]
pub struct ControlListener {
    addr: ListenAddr,
    task: JoinHandle<()>,
    _socket_file: Option<SocketFileGuard>,
}

impl ControlListener {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> &ListenAddr {
        &self.addr
    }

    /// Stops accepting and aborts this listener's sessions.
    pub async fn close(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Holds the `.lock` file (and thereby the flock) and removes the socket file when
/// dropped, before the lock is released.
#[derive(Debug)]
pub(crate) struct SocketFileGuard {
    path: PathBuf,
    _lock: OwnedFd,
}

impl Drop for SocketFileGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why a unix socket could not be set up; the messages are Go receptor's.
#[derive(Debug, thiserror::Error)]
pub enum UnixListenError {
    /// The lock file could not be opened or is locked by another process.
    #[error("could not acquire lock on socket file: {0}")]
    Lock(String),
    /// The old socket file could not be removed.
    #[error("could not overwrite socket file: {0}")]
    Overwrite(String),
    /// `bind`/`listen` failed.
    #[error("could not listen on socket file: {0}")]
    Listen(String),
    /// `chmod` failed.
    #[error("error setting socket file permissions: {0}")]
    Chmod(String),
}

/// An I/O error's description as Go prints errno texts: lower-case first letter, no
/// ` (os error N)` suffix.
pub(crate) fn describe(err: &io::Error) -> String {
    let text = err.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// An OS error as Go prints it: `<op> <path>: <description>`.
fn os_error(op: &str, path: &Path, err: &io::Error) -> String {
    format!("{op} {}: {}", path.display(), describe(err))
}

/// Opens `path` (creating it 0600, read-only, close-on-exec) and takes an exclusive,
/// non-blocking flock on it.
fn lock_file(path: &Path) -> Result<OwnedFd, UnixListenError> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| UnixListenError::Lock("invalid argument".to_owned()))?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call; the
    // flags and mode are plain integers.
    let fd = unsafe {
        libc::open(
            c_path.as_ptr(),
            libc::O_CREAT | libc::O_RDONLY | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        let err = io::Error::last_os_error();
        // Go reports the bare errno text here, without the path.
        return Err(UnixListenError::Lock(describe(&err)));
    }
    // SAFETY: `fd` was just returned by a successful `open` and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `fd` is an open descriptor for the whole call.
    let rc = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return Err(UnixListenError::Lock(
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                "fslock is already locked".to_owned()
            } else {
                describe(&err)
            },
        ));
    }
    Ok(fd)
}

/// Takes the lock, replaces any stale socket file, binds and chmods.
pub(crate) fn bind_unix(
    path: &Path,
    permissions: u32,
) -> Result<(UnixListener, SocketFileGuard), UnixListenError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock = lock_file(Path::new(&lock_path))?;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(UnixListenError::Overwrite(os_error("unlinkat", path, &e))),
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        UnixListenError::Listen(format!(
            "listen unix {}: bind: {}",
            path.display(),
            describe(&e)
        ))
    })?;
    let guard = SocketFileGuard {
        path: path.to_owned(),
        _lock: lock,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(permissions & 0o7777))
        .map_err(|e| UnixListenError::Chmod(os_error("chmod", path, &e)))?;
    Ok((listener, guard))
}

/// The address a `tcplisten` value means: a bare port binds all IPv4 interfaces,
/// anything with a `:` is used as `host:port`.
pub fn tcp_listen_addr(tcplisten: &str) -> String {
    if tcplisten.contains(':') {
        tcplisten.to_owned()
    } else {
        format!("0.0.0.0:{tcplisten}")
    }
}

enum Acceptor {
    Unix(UnixListener),
    /// TCP, with the TLS acceptor when the listener is `tcptls`.
    Tcp(TcpListener, Option<TlsAcceptor>),
}

/// An accepted connection, before any TLS handshake.
enum Accepted {
    Ready(BoxRead, BoxWrite, PeerKind),
    Tls(TcpStream, TlsAcceptor),
}

impl Acceptor {
    async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Acceptor::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                let (read, write) = stream.into_split();
                Ok(Accepted::Ready(
                    Box::pin(read),
                    Box::pin(write),
                    PeerKind::Unix,
                ))
            }
            Acceptor::Tcp(listener, tls) => {
                let (stream, _) = listener.accept().await?;
                // Replies are small single writes; don't let Nagle hold them back.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!("could not set TCP_NODELAY on a control connection: {e}");
                }
                if let Some(tls) = tls {
                    return Ok(Accepted::Tls(stream, tls.clone()));
                }
                let (read, write) = stream.into_split();
                Ok(Accepted::Ready(
                    Box::pin(read),
                    Box::pin(write),
                    PeerKind::Tcp,
                ))
            }
        }
    }
}

/// Runs one accepted connection: the TLS handshake (if any), then the session.
async fn serve_accepted(service: ControlService, accepted: Accepted) {
    match accepted {
        Accepted::Ready(reader, writer, peer) => service.serve_split(reader, writer, peer).await,
        Accepted::Tls(stream, tls) => {
            let peer_addr = stream.peer_addr().ok();
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(stream)) => service.serve_stream(stream, PeerKind::Tcp).await,
                Ok(Err(e)) => {
                    tracing::warn!("TLS handshake error from {peer_addr:?}: {e}");
                }
                Err(_) => tracing::warn!("TLS handshake timeout from {peer_addr:?}"),
            }
        }
    }
}

/// Turns away a connection beyond [`ControlLimits::max_connections`]: one error line
/// instead of the greeting (none on TLS, which has not shaken hands), then close.
///
/// [`ControlLimits::max_connections`]: super::limits::ControlLimits::max_connections
async fn refuse(accepted: Accepted, max: usize) {
    if let Accepted::Ready(_reader, mut writer, _) = accepted {
        let line = too_many_connections_line(max);
        let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
            writer.write_all(line.as_bytes()).await?;
            writer.shutdown().await
        })
        .await;
    }
}

async fn accept_loop(acceptor: Acceptor, service: ControlService) {
    let mut sessions = JoinSet::new();
    // Whether the last connection was refused: a warning is logged when refusals start.
    let mut refusing = false;
    loop {
        tokio::select! {
            accepted = acceptor.accept() => match accepted {
                Ok(accepted) => match service.listener_slot() {
                    Some(slot) => {
                        refusing = false;
                        let service = service.clone();
                        sessions.spawn(async move {
                            serve_accepted(service, accepted).await;
                            drop(slot);
                        });
                    }
                    None => {
                        let max = service.limits().max_connections;
                        if !refusing {
                            tracing::warn!(
                                "{max} control connections are open (control-limits maxconnections): refusing new ones"
                            );
                            refusing = true;
                        }
                        sessions.spawn(refuse(accepted, max));
                    }
                },
                Err(e) => {
                    tracing::warn!("error accepting control connection: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

impl ControlService {
    /// Listens on the unix socket `path` with the given permission bits (receptor's
    /// default is `0o600`). Must be called from within a tokio runtime.
    pub async fn serve_unix(
        &self,
        path: impl AsRef<Path>,
        permissions: u32,
    ) -> Result<ControlListener, super::ControlError> {
        let path = path.as_ref();
        let (listener, guard) = bind_unix(path, permissions)?;
        let task = tokio::spawn(accept_loop(Acceptor::Unix(listener), self.clone()));
        Ok(ControlListener {
            addr: ListenAddr::Unix(path.to_owned()),
            task,
            _socket_file: Some(guard),
        })
    }

    /// Listens on TCP; `tcplisten` is the config value (`port` or `host:port`).
    pub async fn serve_tcp(&self, tcplisten: &str) -> Result<ControlListener, super::ControlError> {
        self.serve_tcp_with(tcplisten, None).await
    }

    /// Listens on TCP with TLS (`tcptls`: the rustls configuration of the named
    /// `tls-server`); `tcplisten` as for [`ControlService::serve_tcp`].
    pub async fn serve_tcp_tls(
        &self,
        tcplisten: &str,
        tls: Arc<rustls::ServerConfig>,
    ) -> Result<ControlListener, super::ControlError> {
        self.serve_tcp_with(tcplisten, Some(TlsAcceptor::from(tls)))
            .await
    }

    async fn serve_tcp_with(
        &self,
        tcplisten: &str,
        tls: Option<TlsAcceptor>,
    ) -> Result<ControlListener, super::ControlError> {
        let addr = tcp_listen_addr(tcplisten);
        let listener = TcpListener::bind(&addr).await.map_err(|e| {
            super::ControlError::TcpListen(format!("listen tcp {addr}: bind: {}", describe(&e)))
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| super::ControlError::TcpListen(describe(&e)))?;
        let task = tokio::spawn(accept_loop(Acceptor::Tcp(listener, tls), self.clone()));
        Ok(ControlListener {
            addr: ListenAddr::Tcp(local),
            task,
            _socket_file: None,
        })
    }
}
