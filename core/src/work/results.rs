//! Streaming a unit's results (`work results <id> [startpos]`).
//!
//! The stream sends the unit's `stdout` from a byte offset and, while the unit runs,
//! follows it until the unit has ended and every byte was sent. It never polls: new
//! output is announced by an inotify watch on the file (a command's child writes to it
//! directly; see [`super::inotify`]), and state changes by the unit's status channel. Both are armed before the
//! file is read, so nothing written or decided in between is missed.
//!
//! The stream ends when the unit succeeded or failed and all of its `StdoutSize` bytes
//! were sent, when it was cancelled (Go's stream for a cancelled unit never ends), or
//! when it is released.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::store::Unit;

/// Bytes read from the results file per chunk.
pub const CHUNK: usize = 256 * 1024;

/// Sends `unit`'s results from byte `startpos` to `out`, following the unit until it
/// ends. Returns the number of bytes sent; an error means `out` failed.
pub async fn stream_results<W: AsyncWrite + Unpin + ?Sized>(
    unit: &Arc<Unit>,
    startpos: u64,
    out: &mut W,
) -> io::Result<u64> {
    let mut status_rx = unit.subscribe();
    let path = unit.stdout_path();
    // Wait for the results file to exist (it is created just before the work starts).
    let mut watch = loop {
        let status = status_rx.borrow_and_update().clone();
        match unit.watcher().watch(&path) {
            Ok(watch) => break watch,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(unit = %unit.id(), "cannot watch results: {e}");
                return Ok(0);
            }
        }
        if status.is_final() || unit.is_released() {
            return Ok(0);
        }
        tokio::select! {
            changed = status_rx.changed() => if changed.is_err() { return Ok(0) },
            () = unit.released() => return Ok(0),
        }
    };
    let mut reader = ChunkReader::new(path, startpos);
    let mut sent = 0u64;
    loop {
        let status = status_rx.borrow_and_update().clone();
        loop {
            let chunk = match reader.next_chunk().await {
                Ok(chunk) => chunk,
                Err(e) => {
                    tracing::warn!(unit = %unit.id(), "cannot read results: {e}");
                    return Ok(sent);
                }
            };
            if chunk.is_empty() {
                break;
            }
            out.write_all(&chunk).await?;
            sent += chunk.len() as u64;
            crate::metrics::node()
                .result_bytes_streamed
                .add(chunk.len() as u64);
            reader.recycle(chunk);
        }
        if unit.is_released() || status.is_final() {
            out.flush().await?;
            return Ok(sent);
        }
        out.flush().await?;
        tokio::select! {
            changed = watch.changed() => {
                if let Err(e) = changed {
                    if !unit.is_released() {
                        tracing::warn!(unit = %unit.id(), "results watch ended: {e}");
                    }
                    return Ok(sent);
                }
            }
            changed = status_rx.changed() => if changed.is_err() { return Ok(sent) },
            () = unit.released() => {}
        }
    }
}

/// Reads a file from an offset in chunks, on the blocking pool.
struct ChunkReader {
    path: PathBuf,
    file: Option<File>,
    pos: u64,
    spare: Vec<u8>,
}

impl ChunkReader {
    fn new(path: PathBuf, pos: u64) -> ChunkReader {
        ChunkReader {
            path,
            file: None,
            pos,
            spare: Vec::new(),
        }
    }

    /// The next bytes after the current position; empty at end of file.
    async fn next_chunk(&mut self) -> io::Result<Vec<u8>> {
        let file = self.file.take();
        let path = self.path.clone();
        let pos = self.pos;
        let mut buf = std::mem::take(&mut self.spare);
        let (file, buf) = tokio::task::spawn_blocking(move || -> io::Result<(File, Vec<u8>)> {
            let mut file = match file {
                Some(file) => file,
                None => {
                    let mut file = File::open(&path)?;
                    file.seek(SeekFrom::Start(pos))?;
                    file
                }
            };
            buf.resize(CHUNK, 0);
            let n = loop {
                match file.read(&mut buf) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            buf.truncate(n);
            Ok((file, buf))
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())))?;
        self.file = Some(file);
        self.pos += buf.len() as u64;
        Ok(buf)
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        self.spare = buf;
    }
}
