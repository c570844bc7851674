//! Waiting for files to change, without polling: one Linux inotify instance per unit
//! store, registered with tokio's reactor, shared by every result stream.
//!
//! A command's child writes straight into the unit's `stdout` file, so the node has no
//! other way to learn that new output is there. A stream asks the [`FileWatcher`] for a
//! [`FileWatch`] on a file; watches of the same file share one inotify watch (the kernel
//! gives them the same descriptor), counted, and removed when the last one is dropped.
//! One instance serves any number of files (the per-user limit on inotify *instances*
//! is only 128 by default, the limit on watches far higher).
//!
//! A task reads the events and bumps a counter in a `watch` channel per watched file;
//! it ends when the watcher is dropped.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Events a watch wakes up for: data written, writer closed, file gone.
const MASK: u32 = libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

/// Size of `struct inotify_event` without its name.
const EVENT_HEADER: usize = 16;

struct Entry {
    tx: watch::Sender<u64>,
    refs: usize,
}

struct Inner {
    fd: AsyncFd<OwnedFd>,
    watches: Mutex<HashMap<i32, Entry>>,
}

impl Inner {
    fn watches(&self) -> MutexGuard<'_, HashMap<i32, Entry>> {
        // Every change of the map is a single insert/remove/increment: still consistent
        // after a panic elsewhere.
        self.watches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The shared inotify instance of a unit store.
pub struct FileWatcher {
    inner: Arc<Inner>,
    stop: CancellationToken,
}

impl std::fmt::Debug for FileWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatcher")
            .field("fd", &self.inner.fd.get_ref().as_raw_fd())
            .finish_non_exhaustive()
    }
}

impl Drop for FileWatcher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A watch on one file; see [`FileWatch::changed`].
pub struct FileWatch {
    inner: Arc<Inner>,
    wd: i32,
    rx: watch::Receiver<u64>,
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatch").field("wd", &self.wd).finish()
    }
}

impl FileWatcher {
    /// Creates the inotify instance and the task that reads its events (needs a tokio
    /// runtime).
    pub fn new() -> io::Result<FileWatcher> {
        // SAFETY: inotify_init1 takes only flags and returns a new descriptor or -1.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor we just created and nobody else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the AsyncFd takes ownership of the OwnedFd, which keeps the same open
        // descriptor until the AsyncFd (and with it the OwnedFd) is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }?;
        let inner = Arc::new(Inner {
            fd,
            watches: Mutex::new(HashMap::new()),
        });
        let stop = CancellationToken::new();
        tokio::spawn(dispatch(inner.clone(), stop.clone()));
        Ok(FileWatcher { inner, stop })
    }

    /// Starts watching `path` (which must exist). Changes made after this call wake
    /// [`FileWatch::changed`].
    pub fn watch(&self, path: &Path) -> io::Result<FileWatch> {
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
        let mut watches = self.inner.watches();
        // SAFETY: the descriptor is valid and `c_path` is a NUL-terminated string that
        // outlives the call.
        let wd = unsafe {
            libc::inotify_add_watch(self.inner.fd.get_ref().as_raw_fd(), c_path.as_ptr(), MASK)
        };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        let entry = watches.entry(wd).or_insert_with(|| Entry {
            tx: watch::Sender::new(0),
            refs: 0,
        });
        entry.refs += 1;
        let mut rx = entry.tx.subscribe();
        rx.mark_unchanged();
        Ok(FileWatch {
            inner: self.inner.clone(),
            wd,
            rx,
        })
    }
}

impl FileWatch {
    /// Waits until the file changed since the last call (or since the watch was made).
    /// An error means the watch ended (the file was removed, or the store shut down).
    pub async fn changed(&mut self) -> io::Result<()> {
        self.rx
            .changed()
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::NotFound, "file watch ended"))
    }
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        let mut watches = self.inner.watches();
        let Some(entry) = watches.get_mut(&self.wd) else {
            return;
        };
        entry.refs -= 1;
        if entry.refs == 0 {
            watches.remove(&self.wd);
            // SAFETY: removing a watch descriptor of our own inotify instance.
            unsafe { libc::inotify_rm_watch(self.inner.fd.get_ref().as_raw_fd(), self.wd) };
        }
    }
}

/// Reads inotify events and wakes the watches they are for.
async fn dispatch(inner: Arc<Inner>, stop: CancellationToken) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut guard = tokio::select! {
            ready = inner.fd.readable() => match ready {
                Ok(guard) => guard,
                Err(e) => {
                    tracing::warn!("inotify failed: {e}");
                    return;
                }
            },
            () = stop.cancelled() => return,
        };
        loop {
            // SAFETY: reading into a buffer of the length passed.
            let n = unsafe {
                libc::read(
                    inner.fd.get_ref().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n > 0 {
                // n > 0 was just checked.
                deliver(&inner, &buf[..n as usize]);
                continue;
            }
            let err = io::Error::last_os_error();
            if n < 0 && err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if n < 0 && err.kind() != io::ErrorKind::WouldBlock {
                tracing::warn!("reading inotify events failed: {err}");
                return;
            }
            break;
        }
        guard.clear_ready();
    }
}

fn deliver(inner: &Inner, mut events: &[u8]) {
    let mut watches = inner.watches();
    while events.len() >= EVENT_HEADER {
        let field = |i: usize| -> [u8; 4] {
            let mut b = [0u8; 4];
            b.copy_from_slice(&events[i..i + 4]);
            b
        };
        let wd = i32::from_ne_bytes(field(0));
        let mask = u32::from_ne_bytes(field(4));
        let name_len = u32::from_ne_bytes(field(12)) as usize;
        if mask & libc::IN_IGNORED != 0 {
            // The kernel dropped the watch (file deleted): end its waiters.
            watches.remove(&wd);
        } else if let Some(entry) = watches.get(&wd) {
            entry.tx.send_modify(|n| *n = n.wrapping_add(1));
        }
        events = events.get(EVENT_HEADER + name_len..).unwrap_or(&[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_on_write_and_shares_watches() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("stdout");
        std::fs::write(&path, b"")?;
        let watcher = FileWatcher::new()?;
        let mut a = watcher.watch(&path)?;
        let mut b = watcher.watch(&path)?;
        assert_eq!(a.wd, b.wd);
        let writer_path = path.clone();
        let writer = std::thread::spawn(move || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().append(true).open(writer_path)?;
            f.write_all(b"hello")
        });
        tokio::time::timeout(Duration::from_secs(10), a.changed()).await??;
        tokio::time::timeout(Duration::from_secs(10), b.changed()).await??;
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))??;
        drop(a);
        assert_eq!(watcher.inner.watches().get(&b.wd).map(|e| e.refs), Some(1));
        drop(b);
        assert!(watcher.inner.watches().is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn many_watches_need_one_instance() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let watcher = FileWatcher::new()?;
        let mut watches = Vec::new();
        // More than the default per-user limit of inotify instances (128).
        for i in 0..300 {
            let path = dir.path().join(format!("f{i}"));
            std::fs::write(&path, b"")?;
            watches.push(watcher.watch(&path)?);
        }
        std::fs::write(dir.path().join("f299"), b"x")?;
        let last = watches
            .last_mut()
            .ok_or_else(|| anyhow::anyhow!("no watch"))?;
        tokio::time::timeout(Duration::from_secs(10), last.changed()).await??;
        Ok(())
    }

    #[tokio::test]
    async fn removal_ends_the_watch() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("stdout");
        std::fs::write(&path, b"")?;
        let watcher = FileWatcher::new()?;
        let mut w = watcher.watch(&path)?;
        std::fs::remove_file(&path)?;
        // First the delete event, then the end of the watch.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::timeout_at(deadline, w.changed())
            .await?
            .is_ok()
        {}
        Ok(())
    }

    #[tokio::test]
    async fn missing_file_is_an_error() -> anyhow::Result<()> {
        let watcher = FileWatcher::new()?;
        assert!(watcher
            .watch(Path::new("/nonexistent/receptor/stdout"))
            .is_err());
        Ok(())
    }
}
