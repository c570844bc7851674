//! Helpers shared by the backend plugins' tests: the built cdylib loaded by the core's
//! plugin host, ports, the descriptors it hands over, and the reference Go receptor 1.6.9
//! run on 127.0.0.1.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use receptor_core::plugin_host::{BackendConnection, BackendInstance, LoadOptions, PluginHost};

/// How long a test waits for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(10);

/// The library `lib<name>.so` of this build (`package` names the crate it comes from).
pub fn cdylib(package: &str, name: &str) -> PathBuf {
    crate::binaries::plugin_lib(name).unwrap_or_else(|e| panic!("{package}: {e:#}"))
}

/// Loads the given plugin files into a host.
pub fn host(paths: &[PathBuf]) -> PluginHost {
    PluginHost::load(&LoadOptions {
        paths: paths.to_vec(),
        default_search: false,
        ..LoadOptions::default()
    })
    .expect("load plugins")
}

/// A port on 127.0.0.1 no other test process uses (free for TCP and UDP).
pub fn free_udp_port() -> u16 {
    crate::ports::free_port().expect("a free port")
}

/// A port on 127.0.0.1 no other test process uses (free for TCP and UDP).
pub fn free_tcp_port() -> u16 {
    crate::ports::free_port().expect("a free port")
}

/// The next connection the instance hands over, within `within`.
pub async fn next_conn(instance: &mut BackendInstance, within: Duration) -> BackendConnection {
    tokio::time::timeout(within, instance.connections.recv())
        .await
        .expect("a connection in time")
        .expect("the connection stream is open")
}

/// The reference Go receptor 1.6.9 (see `crate::binaries::reference_receptor`).
pub fn reference_receptor() -> PathBuf {
    crate::binaries::reference_receptor().expect("reference Go receptor")
}

/// A Go receptor process, killed when dropped.
pub struct GoNode {
    child: Child,
    _dir: tempfile::TempDir,
}

impl GoNode {
    /// Starts `receptor --node id=<id> datadir=<tmp> <args>` with debug logs on stderr.
    pub fn start(id: &str, args: &[String]) -> GoNode {
        let dir = tempfile::tempdir().expect("temp dir");
        let child = Command::new(reference_receptor())
            .arg("--node")
            .arg(format!("id={id}"))
            .arg(format!("datadir={}", dir.path().display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the reference Go receptor");
        GoNode { child, _dir: dir }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for GoNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `msg` is a netceptor ROUTE message (type byte 1, then JSON) from node `id`.
pub fn is_route_from(msg: &[u8], id: &str) -> bool {
    let Some((&1, json)) = msg.split_first() else {
        return false;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
        return false;
    };
    v["NodeID"] == id && v["ForwardingNode"] == id
}

/// Asserts that `msg` is a ROUTE message from node `id` (see [`is_route_from`]).
pub fn assert_route_from(msg: &[u8], id: &str) {
    assert!(
        is_route_from(msg, id),
        "expected the ROUTE of {id}, got {:?}",
        String::from_utf8_lossy(msg)
    );
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_tcp(port: u16, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits up to `within` for one message on a message-preserving descriptor;
/// `Some(empty)` is the end of the session.
pub fn recv_msg(fd: &impl AsRawFd, within: Duration) -> Option<Vec<u8>> {
    let mut pfd = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let ms = libc::c_int::try_from(within.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: pfd is a valid array of one pollfd.
    if unsafe { libc::poll(pfd.as_mut_ptr(), 1, ms) } <= 0 {
        return None;
    }
    let mut buf = vec![0u8; 70000];
    // SAFETY: buf is valid and writable for its length.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    let n = usize::try_from(n).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Sends one message, waiting for room while the descriptor (non-blocking) is full.
pub fn send_msg(fd: &impl AsRawFd, msg: &[u8]) {
    let deadline = Instant::now() + WAIT;
    loop {
        // SAFETY: msg is valid for its length.
        let n = unsafe {
            libc::send(
                fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if usize::try_from(n).ok() == Some(msg.len()) {
            return;
        }
        let e = std::io::Error::last_os_error();
        assert!(
            e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline,
            "send failed: {e}"
        );
        let mut pfd = [libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        }];
        // SAFETY: pfd is a valid array of one pollfd.
        unsafe { libc::poll(pfd.as_mut_ptr(), 1, 100) };
    }
}

/// The descriptor's socket type (`SOCK_STREAM`, `SOCK_SEQPACKET`, ...).
pub fn socket_type(fd: &impl AsRawFd) -> libc::c_int {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0);
    value
}
