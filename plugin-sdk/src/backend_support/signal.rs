//! A stop flag and wake-up for a plugin's threads.
//!
//! A backend's threads block: in `accept`, in `poll` over sockets, or waiting for the
//! host to report a session closed. [`Signal`] is a stop flag plus a self-pipe, so that
//! such a thread wakes when the instance is stopped or when another thread has news for
//! it ([`Signal::wake`]), whether it sleeps in [`Signal::wait_until`] or polls the
//! signal's descriptor next to its sockets.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A stop flag and a self-pipe.
pub struct Signal {
    stopped: AtomicBool,
    /// Read end: readable after [`Signal::wake`] or [`Signal::stop`].
    rx: OwnedFd,
    tx: OwnedFd,
}

impl Signal {
    /// A signal not yet stopped.
    pub fn new() -> io::Result<Signal> {
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so the descriptor is open and ours.
        let rx = unsafe { OwnedFd::from_raw_fd(fds[0]) };
        // SAFETY: likewise.
        let tx = unsafe { OwnedFd::from_raw_fd(fds[1]) };
        Ok(Signal {
            stopped: AtomicBool::new(false),
            rx,
            tx,
        })
    }

    /// Sets the stop flag and wakes the waiting thread.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Whether [`Signal::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Wakes the thread waiting on this signal so that it re-checks its state.
    pub fn wake(&self) {
        // A full pipe already holds a wake-up, so a failed write loses nothing.
        // SAFETY: writing one byte from a valid buffer to our own pipe.
        let _ = unsafe { libc::write(self.tx.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
    }

    /// Empties the pipe (call before re-checking state, then wait again).
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reading into a valid buffer of its stated length from our own pipe.
            let n = unsafe { libc::read(self.rx.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return;
            }
        }
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }

    /// Sleeps for `duration` unless stopped first; returns true if stopped.
    pub fn sleep(&self, duration: Duration) -> bool {
        self.wait_until(duration, || false)
    }

    /// Waits until `done` is true, the signal is stopped or `duration` passes; returns
    /// true if stopped. Whoever changes what `done` looks at calls [`Signal::wake`].
    pub fn wait_until(&self, duration: Duration, mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + duration;
        loop {
            self.drain();
            if self.is_stopped() {
                return true;
            }
            if done() {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut fds = [pollin(&self.rx)];
            let ms = libc::c_int::try_from(left.as_millis().saturating_add(1))
                .unwrap_or(libc::c_int::MAX);
            // SAFETY: fds is a valid array of one pollfd.
            unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        }
    }

    /// Blocks until `fd` is readable or the signal is stopped; returns true if stopped.
    /// A [`Signal::wake`] meanwhile also ends the wait (the caller re-checks `fd`).
    pub fn poll_readable(&self, fd: &impl AsRawFd) -> bool {
        let mut fds = [pollin(fd), pollin(&self.rx)];
        loop {
            self.drain();
            if self.is_stopped() {
                return true;
            }
            // SAFETY: fds is a valid array of two pollfd structs.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return self.is_stopped();
            }
        }
    }
}

/// A `pollfd` waiting for `fd` to become readable.
pub fn pollin(fd: &impl AsRawFd) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }
}

/// `poll(2)` without a timeout, retried on `EINTR`.
pub fn poll(fds: &mut [libc::pollfd]) -> io::Result<()> {
    let n = libc::nfds_t::try_from(fds.len()).map_err(|_| io::Error::other("too many fds"))?;
    loop {
        // SAFETY: fds is a valid, writable array of `n` pollfd structs.
        if unsafe { libc::poll(fds.as_mut_ptr(), n, -1) } >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Arc;

    #[test]
    fn wait_returns_on_condition_stop_or_timeout() {
        let s = Arc::new(Signal::new().unwrap());
        let started = Instant::now();
        assert!(!s.sleep(Duration::from_millis(50)));
        assert!(started.elapsed() >= Duration::from_millis(50));

        let flag = Arc::new(AtomicBool::new(false));
        let (s2, f2) = (Arc::clone(&s), Arc::clone(&flag));
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            f2.store(true, Ordering::SeqCst);
            s2.wake();
        });
        let started = Instant::now();
        assert!(!s.wait_until(Duration::from_secs(30), || flag.load(Ordering::SeqCst)));
        assert!(started.elapsed() < Duration::from_secs(10));
        t.join().unwrap();

        let s2 = Arc::clone(&s);
        let t = std::thread::spawn(move || s2.stop());
        assert!(s.wait_until(Duration::from_secs(30), || false));
        t.join().unwrap();
        assert!(s.is_stopped());
    }

    #[test]
    fn poll_readable_returns_on_data_or_stop() {
        let s = Arc::new(Signal::new().unwrap());
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        s.wake(); // a stale wake-up is drained, not mistaken for data
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            b.write_all(b"x").unwrap();
            b
        });
        assert!(!s.poll_readable(&a));
        let _b = t.join().unwrap();

        let (c, _d) = std::os::unix::net::UnixStream::pair().unwrap();
        let s2 = Arc::clone(&s);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            s2.stop();
        });
        assert!(s.poll_readable(&c));
        t.join().unwrap();
    }
}
