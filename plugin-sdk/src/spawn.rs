//! Starting a command under a small supervisor process that outlives the node.
//!
//! A unit must survive a restart of the node and its exit status must not be lost, but
//! only a parent can learn a process's exit status. So the command is started like this:
//!
//! ```text
//! node ──fork──▶ supervisor (setsid: new session and process group, cwd = unit folder)
//!                   └──fork+exec──▶ command (stdin = unit stdin, stdout+stderr = unit stdout)
//! ```
//!
//! The supervisor waits for the command and writes its raw wait status to
//! `<unitdir>/waitstatus` (the number and a newline, in one `write`; a record without
//! its newline does not count), then exits. The file is not fsynced: it only has to
//! outlive the node process (a crash or restart of the node, not of the machine), and
//! the node makes the unit's end durable itself (results and final status are fsynced
//! before the unit is reported finished). The node
//! waits for the supervisor: directly while it is its child, through a pidfd after a
//! restart. The supervisor's pid is also the process group id, so a cancel kills the whole
//! group (the command and anything it forked) with one `kill(-pgid, SIGKILL)`.
//!
//! The supervisor is a fork of a multi-threaded process that does not exec, so after the
//! fork it only makes raw system calls, on memory prepared before the fork.
//!
//! Forking the node itself for every unit costs the node a copy of its page tables and,
//! while the supervisor lives, a copy-on-write fault for every page it writes. A node
//! therefore asks a small helper process to fork supervisors for it ([`crate::spawner`]);
//! [`start`] (forking the caller) is the fallback when that helper is not available.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Name of the file the supervisor writes the command's wait status to.
pub const WAIT_STATUS_FILE: &str = "waitstatus";

/// A started command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spawned {
    /// The supervisor: a child of this process, leader of the command's process group.
    pub supervisor: libc::pid_t,
    /// The command.
    pub command: libc::pid_t,
}

/// Why a command did not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// `execv` of the command failed in the new process.
    #[error("fork/exec {path}: {}", go_errno_text(*.errno))]
    Exec {
        /// The program path.
        path: String,
        /// `errno` of the failed `execv`.
        errno: i32,
    },
    /// Setting up the processes failed.
    #[error("cannot start command: {0}")]
    Os(#[from] io::Error),
}

/// An errno as Go prints it (`no such file or directory`).
pub fn go_errno_text(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in argument"))
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so the descriptor is new and owned by nobody else.
    let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: likewise.
    let write = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    Ok((read, write))
}

/// Reads exactly 4 bytes, or returns `None` at end of file.
fn read_i32(fd: &OwnedFd) -> io::Result<Option<i32>> {
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the unfilled tail of a local buffer.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        if n == 0 {
            return Ok(None);
        }
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        got += n as usize;
    }
    Ok(Some(i32::from_ne_bytes(buf)))
}

/// Waits for a child and returns its raw wait status.
pub fn wait_child(pid: libc::pid_t) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Everything the processes need after the fork, prepared before it.
pub(crate) struct Prepared {
    program: CString,
    argv: Vec<CString>,
    status_file: CString,
    unit_dir: CString,
    max_fd: libc::c_int,
}

/// A supervisor that was forked and is starting the command.
#[derive(Debug)]
pub struct Starting {
    /// The supervisor, soon leader of the command's process group.
    pub supervisor: libc::pid_t,
    program: String,
    pid_read: OwnedFd,
    err_read: OwnedFd,
    /// The supervisor is our child (we reap it); otherwise the spawner's.
    ours: bool,
}

/// The reading ends of the two pipes through which a supervisor reports the start of its
/// command, and the writing ends it is given.
#[derive(Debug)]
pub struct StartPipes {
    pid_read: OwnedFd,
    err_read: OwnedFd,
    /// Given to the supervisor: it writes the command's pid (or `-errno`) here.
    pub pid_write: OwnedFd,
    /// Given to the supervisor: the command writes its `execv` errno here.
    pub err_write: OwnedFd,
}

impl StartPipes {
    /// Two new pipes.
    pub fn new() -> io::Result<StartPipes> {
        let (pid_read, pid_write) = pipe()?;
        let (err_read, err_write) = pipe()?;
        Ok(StartPipes {
            pid_read,
            err_read,
            pid_write,
            err_write,
        })
    }

    /// The supervisor `supervisor` (started by somebody else, who reaps it) was given the
    /// writing ends; ours are closed here, so that the reading ends see the end of file
    /// once the supervisor and the command have closed theirs.
    pub fn started_elsewhere(self, supervisor: libc::pid_t, program: &Path) -> Starting {
        Starting {
            supervisor,
            program: program.display().to_string(),
            pid_read: self.pid_read,
            err_read: self.err_read,
            ours: false,
        }
    }
}

impl Starting {
    fn reap(&self) {
        if self.ours {
            let _ = wait_child(self.supervisor);
        }
    }

    /// Waits until the command runs (its `execv` succeeded) and returns both pids. On an
    /// error the supervisor has been reaped (if it is our child).
    pub fn wait_started(self) -> Result<Spawned, SpawnError> {
        let supervisor = self.supervisor;
        let command = match read_i32(&self.pid_read) {
            Ok(Some(pid)) if pid > 0 => pid,
            other => {
                self.reap();
                let err = match other {
                    Ok(Some(errno)) => io::Error::from_raw_os_error(-errno),
                    Ok(None) => {
                        io::Error::other("command runner exited before starting the command")
                    }
                    Err(e) => e,
                };
                return Err(err.into());
            }
        };
        match read_i32(&self.err_read) {
            Ok(None) => Ok(Spawned {
                supervisor,
                command,
            }),
            Ok(Some(errno)) => {
                self.reap();
                Err(SpawnError::Exec {
                    path: self.program,
                    errno,
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Starts `program` with `args` (`argv[0]` included) under a supervisor and waits until it
/// runs; the command's stdin is `stdin`, its stdout and stderr both `stdout`. `unit_dir`
/// must be absolute.
pub fn spawn(
    program: &Path,
    args: &[String],
    unit_dir: &Path,
    stdin: &File,
    stdout: &File,
) -> Result<Spawned, SpawnError> {
    start(program, args, unit_dir, stdin, stdout)?.wait_started()
}

/// Forks the supervisor of `program` and returns without waiting for the command to
/// start ([`Starting::wait_started`] does): the caller's thread is free as soon as the
/// fork returns. Arguments as for [`spawn`].
pub fn start(
    program: &Path,
    args: &[String],
    unit_dir: &Path,
    stdin: &File,
    stdout: &File,
) -> Result<Starting, SpawnError> {
    let prepared = prepare(program, args, unit_dir)?;
    let pipes = StartPipes::new()?;
    let supervisor = fork_supervisor(
        &prepared,
        [
            stdin.as_raw_fd(),
            stdout.as_raw_fd(),
            pipes.pid_write.as_raw_fd(),
            pipes.err_write.as_raw_fd(),
        ],
    )?;
    let mut starting = pipes.started_elsewhere(supervisor, program);
    starting.ours = true;
    Ok(starting)
}

/// Everything a supervisor of `program` needs, prepared before the fork.
pub(crate) fn prepare(program: &Path, args: &[String], unit_dir: &Path) -> io::Result<Prepared> {
    prepare_bytes(
        program.as_os_str().as_bytes(),
        args.iter().map(String::as_bytes),
        unit_dir.as_os_str().as_bytes(),
    )
}

/// [`prepare`] from raw bytes (as the spawner receives them).
pub(crate) fn prepare_bytes<'a>(
    program: &[u8],
    args: impl Iterator<Item = &'a [u8]>,
    unit_dir: &[u8],
) -> io::Result<Prepared> {
    let mut status_file = unit_dir.to_vec();
    status_file.push(b'/');
    status_file.extend_from_slice(WAIT_STATUS_FILE.as_bytes());
    Ok(Prepared {
        program: cstring(program)?,
        argv: args.map(cstring).collect::<io::Result<_>>()?,
        status_file: cstring(&status_file)?,
        unit_dir: cstring(unit_dir)?,
        max_fd: max_fd(),
    })
}

/// Forks a supervisor for `prepared` with `fds` (stdin, stdout, pid pipe, error pipe)
/// and returns its pid; the child never returns.
pub(crate) fn fork_supervisor(prepared: &Prepared, fds: [RawFd; 4]) -> io::Result<libc::pid_t> {
    let mut argv_ptrs: Vec<*const libc::c_char> =
        prepared.argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    // SAFETY: fork has no memory-safety preconditions; in the child only the
    // async-signal-safe code of `supervise` runs, which never returns.
    let supervisor = unsafe { libc::fork() };
    if supervisor < 0 {
        return Err(io::Error::last_os_error());
    }
    if supervisor == 0 {
        // SAFETY: we are the freshly forked child; every pointer refers to memory
        // prepared before the fork and still mapped in this copy of the process.
        unsafe { supervise(prepared, &argv_ptrs, fds) }
    }
    Ok(supervisor)
}

fn max_fd() -> libc::c_int {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if ok && limit.rlim_cur != libc::RLIM_INFINITY {
        libc::c_int::try_from(limit.rlim_cur).unwrap_or(libc::c_int::MAX)
    } else {
        1 << 20
    }
}

/// The supervisor, in the forked child. Only raw system calls from here on.
///
/// # Safety
/// Must be called only in a freshly forked child, with `argv` a NULL-terminated array of
/// pointers into `prepared`.
unsafe fn supervise(prepared: &Prepared, argv: &[*const libc::c_char], fds: [RawFd; 4]) -> ! {
    // Every call below is an async-signal-safe system call on memory prepared before the
    // fork (the caller's contract); the process ends with _exit and never returns to Rust
    // code.
    // SAFETY: as above.
    unsafe { libc::setsid() };
    // Move the four descriptors we need to 0..=3 (stdin, stdout, pid pipe, error
    // pipe), through temporaries above them so no dup2 clobbers another source.
    let mut moved = [0 as RawFd; 4];
    for (i, fd) in fds.iter().enumerate() {
        // SAFETY: as above.
        moved[i] = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10) };
        if moved[i] < 0 {
            // SAFETY: as above.
            unsafe { report_and_exit(fds[2], -errno()) };
        }
    }
    let targets: [(RawFd, RawFd); 5] = [
        (moved[0], 0),
        (moved[1], 1),
        (moved[1], 2),
        (moved[2], 3),
        (moved[3], 4),
    ];
    for (from, to) in targets {
        // SAFETY: as above.
        if unsafe { libc::dup2(from, to) } < 0 {
            // SAFETY: as above.
            unsafe { report_and_exit(moved[2], -errno()) };
        }
    }
    // SAFETY: as above; descriptors of this (forked) process only.
    unsafe { close_from(5, prepared.max_fd) };
    // SAFETY: as above.
    unsafe { libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: as above.
    unsafe { libc::fcntl(4, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: as above.
    unsafe { reset_signals() };

    // SAFETY: as above.
    let command = unsafe { libc::fork() };
    if command == 0 {
        // SAFETY: as above; the program and argv are NUL-terminated.
        unsafe { libc::execv(prepared.program.as_ptr(), argv.as_ptr()) };
        let e = errno();
        // SAFETY: as above.
        unsafe { write_all(4, &e.to_ne_bytes()) };
        // SAFETY: as above.
        unsafe { libc::_exit(127) };
    }
    if command < 0 {
        // SAFETY: as above.
        unsafe { report_and_exit(3, -errno()) };
    }
    for fd in [4, 0, 1, 2] {
        // SAFETY: as above.
        unsafe { libc::close(fd) };
    }
    // SAFETY: as above; the path is NUL-terminated.
    unsafe { libc::chdir(prepared.unit_dir.as_ptr()) };
    // SAFETY: as above.
    unsafe { write_all(3, &command.to_ne_bytes()) };
    // SAFETY: as above.
    unsafe { libc::close(3) };

    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: as above.
        let r = unsafe { libc::waitpid(command, &mut status, 0) };
        if r == command {
            break;
        }
        if errno() != libc::EINTR {
            // SAFETY: as above.
            unsafe { libc::_exit(1) };
        }
    }
    // SAFETY: as above.
    unsafe { write_status(prepared, status) };
    // SAFETY: as above.
    unsafe { libc::_exit(0) }
}

/// # Safety
/// Async-signal-safe; called only in the supervisor.
unsafe fn report_and_exit(fd: RawFd, value: i32) -> ! {
    // SAFETY: a raw write of a local buffer.
    unsafe { write_all(fd, &value.to_ne_bytes()) };
    // SAFETY: ends the process.
    unsafe { libc::_exit(126) }
}

/// # Safety
/// Async-signal-safe; called only in the supervisor.
unsafe fn write_status(prepared: &Prepared, status: libc::c_int) {
    // Decimal text of the status, built without allocating.
    let mut text = [0u8; 16];
    let mut len = 0;
    let negative = status < 0;
    let mut value = i64::from(status).unsigned_abs();
    let mut digits = [0u8; 12];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (value % 10) as u8;
        n += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    if negative {
        text[len] = b'-';
        len += 1;
    }
    while n > 0 {
        n -= 1;
        text[len] = digits[n];
        len += 1;
    }
    text[len] = b'\n';
    len += 1;
    // SAFETY: a NUL-terminated path prepared before the fork; a raw call only.
    let fd = unsafe {
        libc::open(
            prepared.status_file.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        return;
    }
    // SAFETY: a raw write of a local buffer.
    unsafe { write_all(fd, &text[..len]) };
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(fd) };
}

/// # Safety
/// Async-signal-safe.
unsafe fn write_all(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: writing from a live slice of the given length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

fn errno() -> i32 {
    // SAFETY: __errno_location has no preconditions.
    let slot = unsafe { libc::__errno_location() };
    // SAFETY: it returns the calling thread's errno slot, valid to read.
    unsafe { *slot }
}

/// # Safety
/// Async-signal-safe.
unsafe fn close_from(first: RawFd, max_fd: libc::c_int) {
    // SAFETY: closing descriptors of this (forked) process only.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        )
    };
    if r == 0 {
        return;
    }
    for fd in first..max_fd {
        // SAFETY: likewise.
        unsafe { libc::close(fd) };
    }
}

/// # Safety
/// Async-signal-safe.
unsafe fn reset_signals() {
    for sig in 1..32 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: a plain signal-disposition call with valid arguments.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    // SAFETY: an all-zero sigset_t is a valid value to initialise.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a plain signal-set call on a local set.
    unsafe { libc::sigemptyset(&mut empty) };
    // SAFETY: a plain signal-mask call with an initialised set.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) };
}

/// The wait status the supervisor recorded in `unit_dir`, if it finished. Only a
/// complete record counts: the number and its newline (the supervisor writes it with
/// one `write`, and may have been killed before it).
pub fn read_wait_status(unit_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(unit_dir.join(WAIT_STATUS_FILE)).ok()?;
    text.strip_suffix('\n')?.parse().ok()
}

/// A wait status as Go's `ProcessState.String()` prints it, and whether it is a success.
pub fn describe_wait_status(status: i32) -> (bool, String) {
    if libc::WIFEXITED(status) {
        let code = libc::WEXITSTATUS(status);
        return (code == 0, format!("exit status {code}"));
    }
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let mut text = format!("signal: {}", signal_name(sig));
        if libc::WCOREDUMP(status) {
            text.push_str(" (core dumped)");
        }
        return (false, text);
    }
    (false, format!("exit status {}", -1))
}

/// Go's names for Linux signals.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "hangup",
        2 => "interrupt",
        3 => "quit",
        4 => "illegal instruction",
        5 => "trace/breakpoint trap",
        6 => "aborted",
        7 => "bus error",
        8 => "floating point exception",
        9 => "killed",
        10 => "user defined signal 1",
        11 => "segmentation fault",
        12 => "user defined signal 2",
        13 => "broken pipe",
        14 => "alarm clock",
        15 => "terminated",
        16 => "stack fault",
        17 => "child exited",
        18 => "continued",
        19 => "stopped (signal)",
        20 => "stopped",
        21 => "stopped (tty input)",
        22 => "stopped (tty output)",
        23 => "urgent I/O condition",
        24 => "CPU time limit exceeded",
        25 => "file size limit exceeded",
        26 => "virtual timer expired",
        27 => "profiling timer expired",
        28 => "window changed",
        29 => "I/O possible",
        30 => "power failure",
        31 => "bad system call",
        _ => return format!("signal {sig}"),
    };
    name.to_owned()
}
