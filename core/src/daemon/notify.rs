//! Service-manager notifications (systemd's `sd_notify` protocol): when the process runs
//! under a manager that set `$NOTIFY_SOCKET`, each state change is one datagram of
//! `KEY=VALUE` lines sent to that unix socket (a path, or an abstract name written with a
//! leading `@`). Without the variable nothing is sent.
//!
//! The node sends `READY=1` once its control sockets and backend listeners are up,
//! `RELOADING=1` (with `MONOTONIC_USEC`, as systemd asks) when a reload starts and
//! `READY=1` again when it ends, and `STOPPING=1` when it shuts down.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable naming the manager's socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// The node is up: control sockets and listeners accept connections.
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={status}"));
}

/// A reload starts; [`ready`] follows when it ends, whatever its outcome.
pub fn reloading() {
    send(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading",
        monotonic_usec()
    ));
}

/// The node is shutting down.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=shutting down");
}

/// Sends `message` to `$NOTIFY_SOCKET`, if set. A failure is logged, never fatal: the
/// manager's bookkeeping must not stop the node.
fn send(message: &str) {
    let Some(target) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    let target = target.to_string_lossy().into_owned();
    if let Err(e) = send_to(&target, message) {
        tracing::warn!("cannot notify the service manager at {target}: {e}");
    }
}

/// Sends one datagram to the socket `target` (a path, or `@name` for an abstract name).
pub fn send_to(target: &str, message: &str) -> io::Result<()> {
    let address = match target.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None if target.starts_with('/') => SocketAddr::from_pathname(target)?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an absolute path or an abstract socket name",
            ))
        }
    };
    let socket = UnixDatagram::unbound()?;
    let sent = socket.send_to_addr(message.as_bytes(), &address)?;
    if sent != message.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "datagram cut short",
        ));
    }
    Ok(())
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares reload times with.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `now`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().map_err(|e| e.to_string());
        let Ok(dir) = dir else { panic!("tempdir") };
        let path = dir.path().join("notify");
        let Ok(listener) = UnixDatagram::bind(&path) else {
            panic!("bind")
        };
        assert!(send_to(&path.display().to_string(), "READY=1").is_ok());
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap_or(0);
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("receptor-notify-test-{}", std::process::id());
        let Ok(addr) = SocketAddr::from_abstract_name(name.as_bytes()) else {
            panic!("abstract address")
        };
        let Ok(abstract_listener) = UnixDatagram::bind_addr(&addr) else {
            panic!("bind abstract")
        };
        assert!(send_to(&format!("@{name}"), "STOPPING=1").is_ok());
        let n = abstract_listener.recv(&mut buf).unwrap_or(0);
        assert_eq!(&buf[..n], b"STOPPING=1");

        assert!(send_to("relative/path", "READY=1").is_err());
        assert!(monotonic_usec() > 0);
    }
}
