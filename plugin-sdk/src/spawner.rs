//! A small helper process that forks command supervisors ([`crate::spawn`]) for the node.
//!
//! Forking the node for every unit copies its page tables and leaves every page it writes
//! afterwards to a copy-on-write fault while the supervisor lives (the supervisor never
//! execs). The spawner is the host binary executed again with the hidden first argument
//! [`SPAWNER_ARG`] (the host's `main` calls [`run_if_requested`] first thing): one small
//! single-threaded process that forks the supervisors instead.
//!
//! ```text
//! node ──request + 4 fds (SCM_RIGHTS)──▶ spawner ──fork──▶ supervisor ──fork+exec──▶ command
//!      ◀──────── reply: pid + pidfd ─────────┘
//! ```
//!
//! The two talk over a `SOCK_SEQPACKET` socket pair (one message per request or reply):
//! * request: `id` (u64 LE), then the program, the unit folder and each argument, every
//!   one NUL-terminated, with the unit's stdin, stdout and the two start pipes of
//!   [`crate::spawn::StartPipes`] attached;
//! * reply: `id`, then the supervisor's pid (i32 LE) or `-errno`, with a pidfd of the
//!   supervisor attached on success (taken before the spawner can reap it, so it can
//!   never name a recycled pid).
//!
//! The spawner reaps the supervisors; the node waits for them through their pidfds. A
//! supervisor does not depend on the spawner, so units outlive both the spawner and the
//! node. If the spawner dies, the requests it had not answered fail (the unit is Failed
//! with a detail that says so) and the next request starts a new one ([`Spawner`]).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::spawn;

/// First argument that makes the host binary run as a spawner on its stdin.
pub const SPAWNER_ARG: &str = "__receptor-spawner";

/// Largest request: the program, the folder and the arguments.
pub const MAX_REQUEST: usize = 64 * 1024;

/// What the spawner sends first, so that a binary that is not a spawner is detected.
const HELLO: &[u8] = b"receptor-spawner 1";

/// How long a new spawner has to say hello.
const HELLO_TIMEOUT_MS: i32 = 10_000;

/// Waits until `fd` is readable (or closed), at most `timeout_ms`.
fn wait_readable(fd: RawFd, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if r >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return r > 0;
        }
    }
}

/// Descriptors attached to a request.
const REQUEST_FDS: usize = 4;

/// Runs the spawner if this process was started as one (first argument [`SPAWNER_ARG`]):
/// then it serves its stdin until the node closes it, and exits. Returns otherwise.
pub fn run_if_requested() {
    if std::env::args_os().nth(1).is_some_and(|a| a == SPAWNER_ARG) {
        std::process::exit(serve(0));
    }
}

/// The spawner's loop on socket `sock`; returns the exit status.
fn serve(sock: RawFd) -> i32 {
    // SIGCHLD is read from a signalfd (blocked here; supervisors unblock it).
    // SAFETY: an all-zero sigset_t is a valid value to initialise.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: plain signal-set call on a local set.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: likewise.
    unsafe { libc::sigaddset(&mut set, libc::SIGCHLD) };
    // SAFETY: plain signal-mask call with an initialised set.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    // SAFETY: creates a descriptor for the initialised set.
    let sigfd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if sigfd < 0 {
        return 1;
    }
    if send_message(sock, HELLO, None).is_err() {
        return 1;
    }
    let mut buf = vec![0u8; MAX_REQUEST];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: sock,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sigfd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return 1;
        }
        if fds[1].revents != 0 {
            drain_signalfd(sigfd);
            reap();
        }
        if fds[0].revents == 0 {
            continue;
        }
        let (len, received) = match receive_message(sock, &mut buf) {
            Ok(Some(message)) => message,
            // The node is gone: the supervisors carry on without us.
            Ok(None) => return 0,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return 1,
        };
        let (id, result) = handle(&buf[..len], received);
        let (value, pidfd) = match result {
            Ok((pid, pidfd)) => (pid, Some(pidfd)),
            Err(e) => (-e.raw_os_error().unwrap_or(libc::EIO), None),
        };
        let mut reply = [0u8; 12];
        reply[..8].copy_from_slice(&id.to_le_bytes());
        reply[8..].copy_from_slice(&value.to_le_bytes());
        if send_message(sock, &reply, pidfd.as_ref().map(AsRawFd::as_raw_fd)).is_err() {
            return 1;
        }
        reap();
    }
}

/// Starts one supervisor for a request; returns the request id and the supervisor's pid
/// and pidfd.
fn handle(message: &[u8], fds: Vec<OwnedFd>) -> (u64, io::Result<(i32, OwnedFd)>) {
    let Some((id, rest)) = message.split_first_chunk::<8>() else {
        return (0, Err(io::Error::from_raw_os_error(libc::EINVAL)));
    };
    let id = u64::from_le_bytes(*id);
    let invalid = || io::Error::from_raw_os_error(libc::EINVAL);
    let result = (|| {
        let fds: [OwnedFd; REQUEST_FDS] = fds.try_into().map_err(|_| invalid())?;
        let mut fields = rest
            .strip_suffix(&[0])
            .ok_or_else(invalid)?
            .split(|b| *b == 0);
        let program = fields.next().ok_or_else(invalid)?;
        let unit_dir = fields.next().ok_or_else(invalid)?;
        let prepared = spawn::prepare_bytes(program, fields, unit_dir)?;
        let pid = spawn::fork_supervisor(&prepared, fds.each_ref().map(AsRawFd::as_raw_fd))?;
        // The child is not reaped before this (only `reap` does that), so the pid is
        // still its own.
        let pidfd = pidfd_open(pid)?;
        Ok((pid, pidfd))
    })();
    (id, result)
}

fn drain_signalfd(sigfd: RawFd) {
    let mut info = [0u8; 128];
    // SAFETY: reading into a local buffer of the given size.
    while unsafe { libc::read(sigfd, info.as_mut_ptr().cast(), info.len()) } > 0 {}
}

/// Reaps every supervisor that has ended.
fn reap() {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        if unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } <= 0 {
            return;
        }
    }
}

/// A pidfd for `pid`.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("bad descriptor"))?;
    // SAFETY: the descriptor was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Room for the control message of up to four descriptors.
#[repr(C, align(8))]
struct ControlBuf([u8; 64]);

/// Sends one message with up to [`REQUEST_FDS`] descriptors attached.
fn send_fds(sock: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut control = ControlBuf([0; 64]);
    // SAFETY: msghdr is plain old data; all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let data_len = std::mem::size_of_val(fds);
        // SAFETY: CMSG_SPACE/CMSG_LEN compute sizes only.
        let space = unsafe { libc::CMSG_SPACE(data_len as u32) } as usize;
        if space > control.0.len() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // (The control buffer is aligned, zeroed and large enough for one header with
        // `data_len` bytes of data, checked above.)
        // SAFETY: CMSG_FIRSTHDR only reads `msg`'s control fields set above.
        let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        // SAFETY: CMSG_LEN only computes a size.
        let cmsg_len = unsafe { libc::CMSG_LEN(data_len as u32) } as usize;
        // SAFETY: cmsg points to the start of the aligned control buffer, which is large
        // enough for one header and its data.
        unsafe {
            cmsg.write(libc::cmsghdr {
                cmsg_len,
                cmsg_level: libc::SOL_SOCKET,
                cmsg_type: libc::SCM_RIGHTS,
            })
        };
        // SAFETY: computes the data address of this header.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        // SAFETY: the buffer has room for the descriptors after the header.
        unsafe { std::ptr::copy_nonoverlapping(fds.as_ptr(), data.cast(), fds.len()) };
    }
    loop {
        // SAFETY: `msg` points to live buffers for the duration of the call.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn send_message(sock: RawFd, bytes: &[u8], fd: Option<RawFd>) -> io::Result<()> {
    match fd {
        Some(fd) => send_fds(sock, bytes, &[fd]),
        None => send_fds(sock, bytes, &[]),
    }
}

/// Receives one message into `buf`: its length and the descriptors attached to it, or
/// `None` at end of file. A message cut short (larger than `buf`) is an error.
/// The descriptors an `SCM_RIGHTS` message carried, taken over as owned descriptors.
///
/// # Safety
/// `msg` must be the header of a `recvmsg` call that just succeeded, its control buffer
/// aligned for `cmsghdr` and still alive, and its descriptors not yet taken.
#[doc(hidden)]
pub unsafe fn received_fds(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    // SAFETY: the kernel filled the control buffer; CMSG_FIRSTHDR only reads `msg`.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: the CMSG macros walk headers within msg_controllen of an aligned buffer.
        let header = unsafe { cmsg.read() };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: computes the data address of this header.
            let data = unsafe { libc::CMSG_DATA(cmsg) };
            let len = header.cmsg_len as usize - (data as usize - cmsg as usize);
            for i in 0..len / std::mem::size_of::<RawFd>() {
                let at = data.cast::<RawFd>().wrapping_add(i);
                // SAFETY: the payload holds `len` bytes of descriptors, maybe unaligned.
                let fd = unsafe { at.read_unaligned() };
                // SAFETY: every SCM_RIGHTS descriptor received is new and ours.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        // SAFETY: the next header within msg_controllen, or null.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
    fds
}

fn receive_message(sock: RawFd, buf: &mut [u8]) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = ControlBuf([0; 64]);
    // SAFETY: msghdr is plain old data; all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len();
    // SAFETY: `msg` points to live buffers for the duration of the call.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `msg` was just filled by a successful recvmsg.
    let fds = unsafe { received_fds(&msg) };
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    if n == 0 {
        return Ok(None);
    }
    Ok(Some((n as usize, fds)))
}

/// What the node gets back for one request: the supervisor's pid and a pidfd for it.
pub type SpawnReply = io::Result<(libc::pid_t, OwnedFd)>;

type Pending = Arc<Mutex<HashMap<u64, SyncSender<SpawnReply>>>>;

/// One running spawner process.
struct Connection {
    sock: Arc<OwnedFd>,
    child: Arc<Mutex<Child>>,
    pending: Pending,
    next_id: u64,
}

impl Connection {
    fn alive(&self) -> bool {
        lock(&self.child).try_wait().is_ok_and(|s| s.is_none())
    }
}

/// The node's side of the spawner: starts it on first use, and again after it died.
pub struct Spawner {
    exe: PathBuf,
    conn: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawner")
            .field("exe", &self.exe)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a request did not reach a spawner.
#[derive(Debug, thiserror::Error)]
pub enum SpawnerError {
    /// The executable did not start as a spawner (it does not know [`SPAWNER_ARG`]).
    #[error("{0} is not a receptor spawner")]
    NotASpawner(String),
    /// The request is larger than [`MAX_REQUEST`].
    #[error("command line too long for the spawner ({0} bytes)")]
    TooLong(usize),
    /// Starting or talking to the spawner failed.
    #[error("command spawner: {0}")]
    Io(#[from] io::Error),
}

impl Spawner {
    /// A spawner run from `exe` (the host binary), started at the first request.
    pub fn new(exe: PathBuf) -> Spawner {
        Spawner {
            exe,
            conn: Mutex::new(None),
        }
    }

    /// The spawner of the running host binary.
    pub fn for_current_exe() -> io::Result<Spawner> {
        Ok(Spawner::new(std::env::current_exe()?))
    }

    /// The spawner process's pid, if one runs.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.conn)
            .as_ref()
            .filter(|c| c.alive())
            .map(|c| lock(&c.child).id())
    }

    /// Asks the spawner to start a supervisor of `program` (see
    /// [`crate::spawn::start`] for the arguments; `pid_write` and `err_write` are the
    /// writing ends of [`crate::spawn::StartPipes`]). Returns at once; the reply comes on
    /// the receiver (an error there if the spawner died first). A spawner that is not
    /// running is started (again) first.
    pub fn request(
        &self,
        program: &Path,
        args: &[String],
        unit_dir: &Path,
        fds: [&dyn AsRawFd; REQUEST_FDS],
    ) -> Result<Receiver<SpawnReply>, SpawnerError> {
        let mut message = Vec::with_capacity(256);
        message.extend_from_slice(&0u64.to_le_bytes());
        for field in [
            program.as_os_str().as_bytes(),
            unit_dir.as_os_str().as_bytes(),
        ]
        .into_iter()
        .chain(args.iter().map(String::as_bytes))
        {
            if field.contains(&0) {
                return Err(
                    io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in argument").into(),
                );
            }
            message.extend_from_slice(field);
            message.push(0);
        }
        if message.len() > MAX_REQUEST {
            return Err(SpawnerError::TooLong(message.len()));
        }
        let raw = fds.map(AsRawFd::as_raw_fd);
        let mut conn = lock(&self.conn);
        // One retry: a spawner that died since the last request is replaced.
        for attempt in 0..2 {
            if !conn.as_ref().is_some_and(Connection::alive) {
                *conn = Some(self.start()?);
            }
            let Some(c) = conn.as_mut() else {
                continue;
            };
            c.next_id += 1;
            let id = c.next_id;
            message[..8].copy_from_slice(&id.to_le_bytes());
            let (tx, rx) = sync_channel(1);
            lock(&c.pending).insert(id, tx);
            match send_fds(c.sock.as_raw_fd(), &message, &raw) {
                Ok(()) => return Ok(rx),
                Err(e) => {
                    lock(&c.pending).remove(&id);
                    if attempt == 1 {
                        return Err(e.into());
                    }
                    *conn = None;
                }
            }
        }
        Err(io::Error::other("spawner unavailable").into())
    }

    fn start(&self) -> Result<Connection, SpawnerError> {
        let mut pair = [0 as RawFd; 2];
        // SAFETY: `pair` has room for the two descriptors socketpair writes.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                pair.as_mut_ptr(),
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: socketpair succeeded; the descriptor is new and owned by nobody else.
        let ours = unsafe { OwnedFd::from_raw_fd(pair[0]) };
        // SAFETY: likewise.
        let theirs = unsafe { OwnedFd::from_raw_fd(pair[1]) };
        let child = Command::new(&self.exe)
            .arg(SPAWNER_ARG)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .spawn()?;
        let child = Arc::new(Mutex::new(child));
        let sock = Arc::new(ours);
        let mut hello = [0u8; 64];
        let greeted = wait_readable(sock.as_raw_fd(), HELLO_TIMEOUT_MS)
            && match receive_message(sock.as_raw_fd(), &mut hello) {
                Ok(Some((n, _))) => &hello[..n] == HELLO,
                _ => false,
            };
        if !greeted {
            let mut child = lock(&child);
            let _ = child.kill();
            let _ = child.wait();
            return Err(SpawnerError::NotASpawner(self.exe.display().to_string()));
        }
        let pending: Pending = Arc::default();
        let reader = {
            let (sock, pending, child) = (sock.clone(), pending.clone(), child.clone());
            std::thread::Builder::new()
                .name("spawner-replies".to_owned())
                .stack_size(128 * 1024)
                .spawn(move || read_replies(&sock, &pending, &child))
        };
        if let Err(e) = reader {
            let mut child = lock(&child);
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.into());
        }
        Ok(Connection {
            sock,
            child,
            pending,
            next_id: 0,
        })
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        if let Some(c) = lock(&self.conn).take() {
            // Closing our end ends the spawner; the reader thread reaps it.
            // SAFETY: shutting down a socket we own; the reader sees end of file.
            unsafe { libc::shutdown(c.sock.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }
}

/// Hands each reply to its request until the spawner goes away; then fails the requests
/// it never answered and reaps it.
fn read_replies(sock: &OwnedFd, pending: &Pending, child: &Mutex<Child>) {
    let mut buf = [0u8; 64];
    loop {
        match receive_message(sock.as_raw_fd(), &mut buf) {
            Ok(Some((12, mut fds))) => {
                let id = u64::from_le_bytes(buf[..8].try_into().unwrap_or_default());
                let value = i32::from_le_bytes(buf[8..12].try_into().unwrap_or_default());
                let reply = match (value, fds.pop()) {
                    (pid, Some(pidfd)) if pid > 0 => Ok((pid, pidfd)),
                    (errno, _) => Err(io::Error::from_raw_os_error(-errno)),
                };
                if let Some(tx) = lock(pending).remove(&id) {
                    let _ = tx.send(reply);
                }
            }
            Ok(Some(_)) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(None) | Err(_) => break,
        }
    }
    let mut child = lock(child);
    let _ = child.kill();
    let _ = child.wait();
    for (_, tx) in lock(pending).drain() {
        let _ = tx.send(Err(io::Error::other(
            "the command spawner exited before starting the command",
        )));
    }
}
