//! Waiting for a file to change, without polling: a Linux inotify watch on one file,
//! registered with tokio's reactor.
//!
//! A command's child writes straight into the unit's `stdout` file, so the node has no
//! other way to learn that new output is there. Each result stream owns one watch; the
//! inotify descriptor is closed when the stream ends.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A watch on one file that wakes up when it is written to.
#[derive(Debug)]
pub struct FileWatch {
    fd: AsyncFd<OwnedFd>,
}

impl FileWatch {
    /// Starts watching `path` (which must exist) for writes, closes and removal.
    pub fn new(path: &Path) -> io::Result<FileWatch> {
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
        // SAFETY: inotify_init1 takes only flags and returns a new descriptor or -1.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor we just created and nobody else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        let mask = libc::IN_MODIFY
            | libc::IN_CLOSE_WRITE
            | libc::IN_ATTRIB
            | libc::IN_DELETE_SELF
            | libc::IN_MOVE_SELF;
        // SAFETY: the descriptor is valid and `c_path` is a NUL-terminated string that
        // outlives the call.
        let wd = unsafe { libc::inotify_add_watch(owned.as_raw_fd(), c_path.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the AsyncFd takes ownership of the OwnedFd, which keeps the same open
        // descriptor until the AsyncFd (and with it the OwnedFd) is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }?;
        Ok(FileWatch { fd })
    }

    /// Waits until the file changed since the last call (or since the watch was made),
    /// then consumes every queued event.
    pub async fn changed(&self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut buf = [0u8; 4096];
            let mut got_any = false;
            loop {
                // SAFETY: reading into a stack buffer of the length passed.
                let n = unsafe {
                    libc::read(
                        self.fd.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                };
                if n > 0 {
                    got_any = true;
                    continue;
                }
                let err = io::Error::last_os_error();
                if n < 0 && err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if n < 0 && err.kind() != io::ErrorKind::WouldBlock {
                    return Err(err);
                }
                break;
            }
            guard.clear_ready();
            if got_any {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_on_write() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("stdout");
        std::fs::write(&path, b"")?;
        let watch = FileWatch::new(&path)?;
        let writer_path = path.clone();
        let writer = std::thread::spawn(move || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().append(true).open(writer_path)?;
            f.write_all(b"hello")
        });
        tokio::time::timeout(Duration::from_secs(10), watch.changed()).await??;
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))??;
        assert_eq!(std::fs::read(&path)?, b"hello");
        Ok(())
    }

    #[test]
    fn missing_file_is_an_error() {
        assert!(FileWatch::new(Path::new("/nonexistent/receptor/stdout")).is_err());
    }
}
