//! Receiving a unit's payload (`stdin`) from a submitting client: the bytes that follow
//! the `Work unit created` line, up to the client's half-close.

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

use super::store::Unit;
use crate::control::command::BoxRead;

/// Payloads up to this size are held in memory until the unit starts.
const SMALL_PAYLOAD: usize = 64 * 1024;

/// Bytes buffered on their way to the `stdin` file.
const WRITE_BUFFER: usize = 256 * 1024;

/// Reads the payload until the client half-closes. Up to [`SMALL_PAYLOAD`] bytes it is
/// returned (an empty payload as `None`: the `stdin` file is already empty); a larger
/// one is written to the unit's `stdin` file as it arrives and `None` is returned.
pub(crate) async fn receive_small_payload(
    unit: &Unit,
    reader: &mut BufReader<BoxRead>,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    // Ends at the end of the payload, or one byte past the limit.
    (&mut *reader)
        .take(SMALL_PAYLOAD as u64 + 1)
        .read_to_end(&mut buf)
        .await?;
    if buf.len() <= SMALL_PAYLOAD {
        return Ok((!buf.is_empty()).then_some(buf));
    }
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(unit.stdin_path())
        .await?;
    let mut file = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
    file.write_all(&buf).await?;
    tokio::io::copy_buf(reader, &mut file).await?;
    file.flush().await?;
    Ok(None)
}

/// Copies the client's bytes into the unit's `stdin` until the client half-closes and
/// flushes them to disk; returns how many there were.
pub(crate) async fn receive_payload(
    unit: &Unit,
    reader: &mut BufReader<BoxRead>,
) -> std::io::Result<u64> {
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(unit.stdin_path())
        .await?;
    let mut file = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
    let copied = tokio::io::copy_buf(reader, &mut file).await?;
    file.flush().await?;
    // Accepting the unit promises to run it even after a power loss.
    file.into_inner().sync_all().await?;
    Ok(copied)
}
