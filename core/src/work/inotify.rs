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
//!
//! The instance is made when the first file is watched, so a node that never follows
//! results (a relay) holds none: a machine can run more nodes than the per-user instance
//! limit. When no instance can be made (that limit reached) or the kernel refuses a watch
//! (`max_user_watches`), the watch falls back to looking at the file every
//! [`POLL_INTERVAL`], with one warning: results are still delivered, a little later.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

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

/// How often a watch that could not get an inotify watch looks at its file.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

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

/// The shared inotify instance of a unit store, made on first use.
pub struct FileWatcher {
    state: Mutex<Instance>,
    /// Whether the fall-back to polling was already reported.
    warned: AtomicBool,
    stop: CancellationToken,
}

/// The inotify instance's life.
enum Instance {
    /// No file watched yet.
    Unmade,
    /// Made, with its reading task running.
    Made(Arc<Inner>),
    /// It could not be made: every watch polls.
    Unavailable,
}

impl std::fmt::Debug for FileWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fd = match &*self.state() {
            Instance::Made(inner) => Some(inner.fd.get_ref().as_raw_fd()),
            Instance::Unmade | Instance::Unavailable => None,
        };
        f.debug_struct("FileWatcher")
            .field("fd", &fd)
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
    how: Watching,
}

/// How a [`FileWatch`] learns of changes.
enum Watching {
    /// An inotify watch, woken by the reading task.
    Inotify {
        inner: Arc<Inner>,
        wd: i32,
        rx: watch::Receiver<u64>,
    },
    /// Looking at the file every [`POLL_INTERVAL`].
    Poll { path: PathBuf },
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.how {
            Watching::Inotify { wd, .. } => f.debug_struct("FileWatch").field("wd", wd).finish(),
            Watching::Poll { path } => f.debug_struct("FileWatch").field("poll", path).finish(),
        }
    }
}

impl FileWatcher {
    /// A watcher; its inotify instance and the task reading it are made when the first
    /// file is watched (which needs a tokio runtime).
    pub fn new() -> io::Result<FileWatcher> {
        Ok(FileWatcher {
            state: Mutex::new(Instance::Unmade),
            warned: AtomicBool::new(false),
            stop: CancellationToken::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, Instance> {
        // Every change of the state is a single assignment: consistent after a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The instance, made now if this is the first watch; `None` when it cannot be.
    fn instance(&self) -> Option<Arc<Inner>> {
        let mut state = self.state();
        match &*state {
            Instance::Made(inner) => return Some(inner.clone()),
            Instance::Unavailable => return None,
            Instance::Unmade => {}
        }
        match make_instance(&self.stop) {
            Ok(inner) => {
                *state = Instance::Made(inner.clone());
                Some(inner)
            }
            Err(e) => {
                self.fall_back(&e);
                *state = Instance::Unavailable;
                None
            }
        }
    }

    /// Says once that results files are polled, and why.
    fn fall_back(&self, why: &io::Error) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "cannot watch results files with inotify ({why}); looking at them every {} ms instead",
                POLL_INTERVAL.as_millis()
            );
        }
    }

    /// Starts watching `path` (which must exist). Changes made after this call wake
    /// [`FileWatch::changed`].
    pub fn watch(&self, path: &Path) -> io::Result<FileWatch> {
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
        let Some(inner) = self.instance() else {
            return poll_watch(path);
        };
        let mut watches = inner.watches();
        // SAFETY: the descriptor is valid and `c_path` is a NUL-terminated string that
        // outlives the call.
        let wd = unsafe {
            libc::inotify_add_watch(inner.fd.get_ref().as_raw_fd(), c_path.as_ptr(), MASK)
        };
        if wd < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOSPC) {
                // The per-user limit on watches.
                drop(watches);
                self.fall_back(&err);
                return poll_watch(path);
            }
            return Err(err);
        }
        let entry = watches.entry(wd).or_insert_with(|| Entry {
            tx: watch::Sender::new(0),
            refs: 0,
        });
        entry.refs += 1;
        let mut rx = entry.tx.subscribe();
        rx.mark_unchanged();
        drop(watches);
        Ok(FileWatch {
            how: Watching::Inotify { inner, wd, rx },
        })
    }
}

/// Makes the inotify instance and starts the task that reads it.
fn make_instance(stop: &CancellationToken) -> io::Result<Arc<Inner>> {
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
    tokio::spawn(dispatch(inner.clone(), stop.clone()));
    Ok(inner)
}

/// A watch that polls `path`, which must exist.
fn poll_watch(path: &Path) -> io::Result<FileWatch> {
    std::fs::metadata(path)?;
    Ok(FileWatch {
        how: Watching::Poll {
            path: path.to_owned(),
        },
    })
}

impl FileWatch {
    /// Waits until the file changed since the last call (or since the watch was made);
    /// a polling watch wakes every [`POLL_INTERVAL`] whether or not it changed. An error
    /// means the watch ended (the file was removed, or the store shut down).
    pub async fn changed(&mut self) -> io::Result<()> {
        match &mut self.how {
            Watching::Inotify { rx, .. } => rx
                .changed()
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::NotFound, "file watch ended")),
            Watching::Poll { path } => {
                tokio::time::sleep(POLL_INTERVAL).await;
                tokio::fs::metadata(&path).await.map(drop)
            }
        }
    }
}

#[cfg(test)]
impl FileWatch {
    /// The inotify watch descriptor; `None` for a polling watch.
    fn wd(&self) -> Option<i32> {
        match &self.how {
            Watching::Inotify { wd, .. } => Some(*wd),
            Watching::Poll { .. } => None,
        }
    }
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        let Watching::Inotify { inner, wd, .. } = &self.how else {
            return;
        };
        let mut watches = inner.watches();
        let Some(entry) = watches.get_mut(wd) else {
            return;
        };
        entry.refs -= 1;
        if entry.refs == 0 {
            watches.remove(wd);
            // SAFETY: removing a watch descriptor of our own inotify instance.
            unsafe { libc::inotify_rm_watch(inner.fd.get_ref().as_raw_fd(), *wd) };
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
        let (Some(wd_a), Some(wd_b)) = (a.wd(), b.wd()) else {
            anyhow::bail!("the watches poll");
        };
        assert_eq!(wd_a, wd_b);
        let inner = watcher
            .instance()
            .ok_or_else(|| anyhow::anyhow!("no instance"))?;
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
        assert_eq!(inner.watches().get(&wd_b).map(|e| e.refs), Some(1));
        drop(b);
        assert!(inner.watches().is_empty());
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
    async fn no_instance_is_made_before_the_first_watch() -> anyhow::Result<()> {
        let watcher = FileWatcher::new()?;
        assert!(matches!(*watcher.state(), Instance::Unmade));
        Ok(())
    }

    #[tokio::test]
    async fn polling_watch_sees_changes_and_removal() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("stdout");
        std::fs::write(&path, b"")?;
        let mut w = poll_watch(&path)?;
        assert!(w.wd().is_none());
        tokio::time::timeout(Duration::from_secs(10), w.changed()).await??;
        std::fs::remove_file(&path)?;
        let ended = tokio::time::timeout(Duration::from_secs(10), w.changed()).await?;
        assert_eq!(
            ended.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::NotFound)
        );
        assert!(poll_watch(&path).is_err());
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
