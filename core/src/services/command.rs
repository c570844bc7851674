//! `command-service`: each connection to a mesh service runs a command whose terminal is
//! the connection, as Go receptor 1.6.9 does.
//!
//! It lives in the core, beside the proxies, rather than in a plugin: it is a mesh stream
//! service (QUIC streams accepted on the mesh, optionally with one of the node's named
//! `tls-server` configurations), and the plugin ABI gives plugins backends and work types,
//! not mesh services or the node's TLS configurations.
//!
//! What a client sees, as with Go: the command (split into words like Go's `shlex`, no
//! shell) runs in a new session whose controlling terminal is a pseudo-terminal, so its
//! stdin, stdout and stderr are that terminal: output arrives with the terminal's line
//! endings (`\r\n`) and stderr mixed in, and what the client types is echoed. The
//! advertisement's tags are `{"type":"Command Service"}`. When the command closes its
//! terminal (it ended), the output still buffered is delivered and the stream ends
//! normally; the exit status is only logged.
//!
//! When the client leaves (end of its input, the connection closed or lost), the session
//! is over, as in Go; unlike Go 1.6.9, which leaves the command running when the client
//! was across the mesh, the command's process group gets SIGHUP (a terminal hang-up),
//! its remaining output is still forwarded while the client reads, and SIGKILL follows
//! after [`HANGUP_GRACE`]. A session cut short (the service stops, the node shuts down)
//! kills the group too. The process is always reaped (by tokio when the session is cut
//! short).

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::process::Child;

use super::tcp::abort_stream;
use super::{listen_options, serve_streams, tls_name, ServiceError, ServiceHandle};
use crate::config::CommandServiceConfig;
use crate::mesh::Mesh;
use crate::streams::bridge::BUFFER_SIZE;
use crate::streams::{listen_with, MeshReadHalf, MeshStream, MeshWriteHalf};
use crate::tls::TlsRegistry;

/// How long a hung-up command may take to close its terminal before its process group is
/// killed.
pub const HANGUP_GRACE: Duration = Duration::from_secs(2);

/// Starts a `command-service`.
pub(super) async fn start(
    mesh: &Mesh,
    cfg: &CommandServiceConfig,
    tls: &TlsRegistry,
) -> Result<ServiceHandle, ServiceError> {
    let server_tls = match tls_name(&cfg.tls) {
        Some(name) => Some(tls.server(name)?),
        None => None,
    };
    let tags = BTreeMap::from([("type".to_owned(), "Command Service".to_owned())]);
    let listener = listen_with(mesh, &cfg.service, listen_options(server_tls, tags)).await?;
    let what = format!("command-service {} -> {}", cfg.service, cfg.command);
    let argv: Arc<[String]> = Arc::from(cfg.argv.as_slice());
    let task = tokio::spawn(serve_streams(listener, move |stream, node| {
        let argv = argv.clone();
        async move { session(stream, &node, &argv).await }
    }));
    Ok(ServiceHandle::new(what, None, task))
}

/// One connection: a terminal, the command on it, the relay, and the clean-up.
async fn session(stream: MeshStream, node: &str, argv: &[String]) {
    let started = open_pty().and_then(|(master, slave)| {
        let terminal = Terminal::new(master)?;
        Ok((spawn(argv, slave)?, terminal))
    });
    let (mut child, terminal) = match started {
        Ok(started) => started,
        Err(e) => {
            tracing::error!("Error running command {:?} for {node}: {e}", argv.join(" "));
            abort_stream(stream, "error running command");
            return;
        }
    };
    let group = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok());
    // Should this session be dropped half-way (the service stops, the node shuts
    // down), the command's process group goes with it.
    let mut guard = GroupGuard(group);
    tracing::debug!(?group, "command service session for {node}");
    let (mut from_client, mut to_client) = stream.into_split();
    let outcome = {
        let output = forward_output(&terminal, &mut to_client);
        tokio::pin!(output);
        tokio::select! {
            out = &mut output => Ended::Command(out),
            why = forward_input(&mut from_client, &terminal) => {
                // The client is gone: hang up, then deliver what is left while the
                // command winds down, for at most the grace period.
                signal_group(group, libc::SIGHUP);
                match tokio::time::timeout(HANGUP_GRACE, output).await {
                    Ok(_) => Ended::ClientThenCommand(why),
                    Err(_) => Ended::ClientOnly(why),
                }
            }
        }
    };
    match &outcome {
        Ended::Command(Ok(_)) => {
            let _ = to_client.shutdown().await;
        }
        Ended::Command(Err(e)) => to_client.abort(&e.to_string()),
        Ended::ClientThenCommand(..) | Ended::ClientOnly(_) => {}
    }
    // Whatever is left of the command's process group goes, and the command is reaped.
    guard.kill();
    let status = child.wait().await;
    match outcome {
        Ended::Command(Ok(bytes)) => {
            tracing::debug!("command for {node} ended ({bytes} bytes out), {status:?}");
        }
        Ended::Command(Err(e)) => {
            tracing::warn!("command service session for {node} failed: {e}");
        }
        Ended::ClientThenCommand(why) | Ended::ClientOnly(why) => {
            tracing::debug!("client {node} left ({why}); command {status:?}");
        }
    }
}

/// How a session ended.
enum Ended {
    /// The command closed its terminal first (bytes forwarded) or forwarding failed.
    Command(io::Result<u64>),
    /// The client left, then the command ended within the grace period.
    ClientThenCommand(ClientLeft),
    /// The client left and the command had to be killed.
    ClientOnly(ClientLeft),
}

/// Why the client is considered gone.
#[derive(Debug)]
enum ClientLeft {
    /// End of its input (or a normal close of the connection).
    Eof,
    /// Reading from it failed.
    Read(io::Error),
    /// Writing its input to the terminal failed.
    Terminal(io::Error),
}

impl std::fmt::Display for ClientLeft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientLeft::Eof => write!(f, "end of input"),
            ClientLeft::Read(e) => write!(f, "read error: {e}"),
            ClientLeft::Terminal(e) => write!(f, "terminal write error: {e}"),
        }
    }
}

/// Copies the client's bytes to the terminal until the client is gone; never returns
/// otherwise.
async fn forward_input(from: &mut MeshReadHalf, terminal: &Terminal) -> ClientLeft {
    let mut buf = vec![0u8; BUFFER_SIZE];
    let mut writer = terminal;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => return ClientLeft::Eof,
            Ok(n) => n,
            Err(e) => return ClientLeft::Read(e),
        };
        if let Err(e) = writer.write_all(&buf[..n]).await {
            return ClientLeft::Terminal(e);
        }
    }
}

/// Copies the terminal's output to the client until the terminal is closed by the
/// command (then `Ok` with the byte count).
async fn forward_output(terminal: &Terminal, to: &mut MeshWriteHalf) -> io::Result<u64> {
    let mut buf = vec![0u8; BUFFER_SIZE];
    let mut reader = terminal;
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            to.flush().await?;
            return Ok(total);
        }
        to.write_all(&buf[..n]).await?;
        total += n as u64;
    }
}

/// Kills the command's process group when dropped, unless [`GroupGuard::kill`] did
/// already (after which the group's leader is reaped and its id may be reused).
struct GroupGuard(Option<libc::pid_t>);

impl GroupGuard {
    /// SIGKILLs the group now, once.
    fn kill(&mut self) {
        signal_group(self.0.take(), libc::SIGKILL);
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `sig` to the process group `group` (the command's session), if there is one.
fn signal_group(group: Option<libc::pid_t>, sig: libc::c_int) {
    if let Some(pgid) = group.filter(|p| *p > 0) {
        // SAFETY: kill(2) touches no memory of ours. The group is led by our child, which
        // is not reaped before the last signal, so its id cannot have been reused.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Starts `argv` in a new session whose controlling terminal, stdin, stdout and stderr
/// are the terminal's `slave` side.
fn spawn(argv: &[String], slave: OwnedFd) -> io::Result<Child> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    // A new session (and process group), with the terminal as its controlling
    // terminal: stdin (fd 0) is the terminal's slave side.
    let controlling_terminal = || {
        // SAFETY: setsid is async-signal-safe and touches no memory.
        if unsafe { libc::setsid() } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: ioctl is async-signal-safe; TIOCSCTTY takes no pointer.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // async-signal-safe functions (setsid, ioctl), touching no memory of the parent.
    unsafe {
        cmd.as_std_mut().pre_exec(controlling_terminal);
    }
    cmd.spawn()
}

/// A new pseudo-terminal: (master, slave), both close-on-exec, the master non-blocking.
fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: posix_openpt takes flags only and returns a new descriptor or -1.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by posix_openpt and is owned by nobody else.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: grantpt takes a descriptor we own; no memory is passed.
    if unsafe { libc::grantpt(master.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: unlockpt takes a descriptor we own; no memory is passed.
    if unsafe { libc::unlockpt(master.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: `name` is a writable buffer whose exact length is passed; ptsname_r writes
    // a NUL-terminated path into it or fails.
    let rc = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: on success ptsname_r left a NUL-terminated string in `name`, which lives
    // for the rest of this function.
    let path = unsafe { CStr::from_ptr(name.as_ptr()) };
    // SAFETY: `path` is a valid C string; open returns a new descriptor or -1.
    let sfd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if sfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `sfd` was just returned by open and is owned by nobody else.
    let slave = unsafe { OwnedFd::from_raw_fd(sfd) };
    set_nonblocking(master.as_raw_fd())?;
    Ok((master, slave))
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The master side of the command's terminal. Reading it after the last slave
/// descriptor closed fails with EIO on Linux; that is its end of stream.
struct Terminal(AsyncFd<OwnedFd>);

impl Terminal {
    fn new(master: OwnedFd) -> io::Result<Terminal> {
        // SAFETY: an `OwnedFd` is a valid open descriptor that stays open, and returns the
        // same number from `as_raw_fd`, for as long as the `AsyncFd` owning it exists.
        let fd = unsafe { AsyncFd::register(master) }.map_err(io::Error::from)?;
        Ok(Terminal(fd))
    }
}

impl AsyncRead for &Terminal {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let result = guard.try_io(|fd| {
                // SAFETY: `unfilled` is a valid writable buffer of the given length, and
                // the descriptor is open for the lifetime of `self`.
                let n = unsafe {
                    libc::read(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len())
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n.unsigned_abs())
                }
            });
            match result {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Every slave descriptor is closed: the command is done with it.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => {
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for &Terminal {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            let result = guard.try_io(|fd| {
                // SAFETY: `data` is a valid readable buffer of the given length, and the
                // descriptor is open for the lifetime of `self`.
                let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n.unsigned_abs())
                }
            });
            match result {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
