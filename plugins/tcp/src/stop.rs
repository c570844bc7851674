//! A stop signal a thread can wait on with a timeout, or alongside a socket in `poll`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Set once by `stop`; wakes sleepers and pollers.
pub struct Stop {
    stopped: Mutex<bool>,
    cv: Condvar,
    /// Read end of a pipe that becomes readable when stopped.
    wake_rx: OwnedFd,
    wake_tx: OwnedFd,
}

impl Stop {
    /// A signal not yet set.
    pub fn new() -> io::Result<Stop> {
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and ours.
        let (wake_rx, wake_tx) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Stop {
            stopped: Mutex::new(false),
            cv: Condvar::new(),
            wake_rx,
            wake_tx,
        })
    }

    /// Sets the signal and wakes everyone waiting.
    pub fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
        // SAFETY: writing one byte from a valid buffer to our own pipe.
        let _ = unsafe { libc::write(self.wake_tx.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
    }

    /// Whether the signal is set.
    pub fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sleeps for `duration` unless stopped first; returns true if stopped.
    pub fn sleep(&self, duration: Duration) -> bool {
        self.wait_until(duration, || false)
    }

    /// Waits until `done` (checked under the signal's lock) is true, the signal is set,
    /// or `duration` passes; returns true if stopped. Whoever changes what `done` looks
    /// at calls [`Stop::notify`] afterwards.
    pub fn wait_until(&self, duration: Duration, mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + duration;
        let mut stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if *stopped || done() {
                return *stopped;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            stopped = self
                .cv
                .wait_timeout(stopped, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Wakes every waiter so that it re-checks its condition.
    pub fn notify(&self) {
        let _guard = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        self.cv.notify_all();
    }

    /// Blocks until `fd` is readable or the signal is set; returns true if stopped.
    pub fn poll_readable(&self, fd: &impl AsRawFd) -> bool {
        let mut fds = [
            libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.wake_rx.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
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
