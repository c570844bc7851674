//! Receiving a unit's payload (`stdin`) from a submitting client: the bytes that follow
//! the `Work unit created` line, up to the client's half-close.
//!
//! The payload is streamed to the unit's `stdin` file as it arrives; memory holds at
//! most [`SMALL_PAYLOAD`] of it plus the write buffer, whatever its size. The client's
//! `control-limits` bound its size (`maxpayload`) and its pauses
//! (`payloadidletimeout`); see [`crate::control::limits`].

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::store::Unit;
use crate::control::command::BoxRead;
use crate::control::ControlLimits;

/// Payloads up to this size are held in memory until the unit starts.
const SMALL_PAYLOAD: usize = 64 * 1024;

/// Bytes buffered on their way to the `stdin` file.
const WRITE_BUFFER: usize = 256 * 1024;

/// Why a payload was not received whole.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PayloadError {
    /// More than `maxpayload` bytes were sent.
    #[error("payload larger than {max} bytes (control-limits maxpayload)")]
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// Nothing arrived for `payloadidletimeout`.
    #[error("no payload data for {0:?} (control-limits payloadidletimeout)")]
    Stalled(Duration),
    /// Reading from the client or writing the file failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads the client's next bytes (empty at the end of the payload), waiting at most
/// the payload idle timeout, and checks that `received` plus them stays within the
/// size limit.
async fn next_bytes<'r>(
    reader: &'r mut BufReader<BoxRead>,
    limits: &ControlLimits,
    received: u64,
) -> Result<&'r [u8], PayloadError> {
    let chunk = tokio::time::timeout(limits.payload_idle_timeout, reader.fill_buf())
        .await
        .map_err(|_| PayloadError::Stalled(limits.payload_idle_timeout))??;
    if let Some(max) = limits.max_payload {
        if received.saturating_add(chunk.len() as u64) > max {
            return Err(PayloadError::TooLarge { max });
        }
    }
    Ok(chunk)
}

/// Copies the rest of the payload into `out`; `received` bytes came before. Returns the
/// total.
async fn copy_rest<W: AsyncWrite + Unpin>(
    reader: &mut BufReader<BoxRead>,
    out: &mut W,
    limits: &ControlLimits,
    mut received: u64,
) -> Result<u64, PayloadError> {
    loop {
        let chunk = next_bytes(reader, limits, received).await?;
        if chunk.is_empty() {
            return Ok(received);
        }
        out.write_all(chunk).await?;
        let n = chunk.len();
        received += n as u64;
        reader.consume(n);
    }
}

/// Reads the payload until the client half-closes. Up to [`SMALL_PAYLOAD`] bytes it is
/// returned (an empty payload as `None`: the `stdin` file is already empty); a larger
/// one is written to the unit's `stdin` file as it arrives and `None` is returned.
pub(crate) async fn receive_small_payload(
    unit: &Unit,
    reader: &mut BufReader<BoxRead>,
    limits: &ControlLimits,
) -> Result<Option<Vec<u8>>, PayloadError> {
    let mut buf = Vec::new();
    loop {
        let chunk = next_bytes(reader, limits, buf.len() as u64).await?;
        if chunk.is_empty() {
            return Ok((!buf.is_empty()).then_some(buf));
        }
        if buf.len() + chunk.len() > SMALL_PAYLOAD {
            break;
        }
        buf.extend_from_slice(chunk);
        let n = chunk.len();
        reader.consume(n);
    }
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(unit.stdin_path())
        .await?;
    let mut file = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
    file.write_all(&buf).await?;
    let received = buf.len() as u64;
    drop(buf);
    copy_rest(reader, &mut file, limits, received).await?;
    file.flush().await?;
    Ok(None)
}

/// Copies the client's bytes into the unit's `stdin` until the client half-closes and
/// flushes them to disk; returns how many there were.
pub(crate) async fn receive_payload(
    unit: &Unit,
    reader: &mut BufReader<BoxRead>,
    limits: &ControlLimits,
) -> Result<u64, PayloadError> {
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(unit.stdin_path())
        .await?;
    let mut file = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
    let copied = copy_rest(reader, &mut file, limits, 0).await?;
    file.flush().await?;
    // Accepting the unit promises to run it even after a power loss.
    file.into_inner().sync_all().await?;
    Ok(copied)
}
