//! Framing of messages on byte-stream backends (TCP, TLS).
//!
//! Every message is preceded by its length as a `u16` little-endian. Go receptor
//! computes the prefix without a range check (messages over 65535 bytes wrap and
//! desynchronise the stream) and crashes on a zero-length frame, so this codec never
//! emits either, and treats a received zero-length frame as a fatal error for that
//! connection only.

use bytes::{Buf, BytesMut};

/// Largest message a length prefix can describe.
pub const MAX_FRAME_LEN: usize = u16::MAX as usize;

/// Length of the frame prefix.
pub const FRAME_HEADER_LEN: usize = 2;

/// Framing errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame announced a length of zero (fatal for the connection).
    #[error("zero-length frame")]
    Empty,
    /// A message to send exceeds [`MAX_FRAME_LEN`].
    #[error("message of {0} bytes does not fit in a frame")]
    TooLong(usize),
}

/// The length prefix for a message of `len` bytes.
pub fn frame_header(len: usize) -> Result<[u8; FRAME_HEADER_LEN], FrameError> {
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let n = u16::try_from(len).map_err(|_| FrameError::TooLong(len))?;
    Ok(n.to_le_bytes())
}

/// Appends one framed message to `out`.
pub fn encode_frame(msg: &[u8], out: &mut BytesMut) -> Result<(), FrameError> {
    let header = frame_header(msg.len())?;
    out.reserve(FRAME_HEADER_LEN + msg.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(msg);
    Ok(())
}

/// Reassembles frames from an arbitrary byte stream.
///
/// Bytes are appended with [`FrameDecoder::buffer_mut`] (e.g. read straight from a
/// socket) or [`FrameDecoder::push`]; complete messages come out of
/// [`FrameDecoder::next_frame`] as `BytesMut` that share the decoder's allocation.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    /// A decoder whose buffer starts with `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        FrameDecoder {
            buf: BytesMut::with_capacity(capacity),
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The receive buffer, to read into directly.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Number of buffered bytes not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Returns the next complete message, `Ok(None)` if more bytes are needed.
    /// After an error the stream is unusable and the connection must be closed.
    pub fn next_frame(&mut self) -> Result<Option<BytesMut>, FrameError> {
        if self.buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let len = usize::from(u16::from_le_bytes([self.buf[0], self.buf[1]]));
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if self.buf.len() < FRAME_HEADER_LEN + len {
            // Make room for the rest of this frame in one go.
            self.buf.reserve(FRAME_HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(FRAME_HEADER_LEN);
        Ok(Some(self.buf.split_to(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_is_little_endian() {
        assert_eq!(frame_header(159), Ok([0x9f, 0x00]));
        assert_eq!(frame_header(0x1234), Ok([0x34, 0x12]));
        assert_eq!(frame_header(0), Err(FrameError::Empty));
        assert_eq!(frame_header(65536), Err(FrameError::TooLong(65536)));
        assert!(frame_header(65535).is_ok());
    }

    #[test]
    fn zero_length_frame_is_an_error() {
        let mut d = FrameDecoder::default();
        d.push(&[0, 0, 1, 2]);
        assert_eq!(d.next_frame(), Err(FrameError::Empty));
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let mut d = FrameDecoder::default();
        d.push(&[3]);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&[0, b'a', b'b']);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&[b'c', 1]);
        assert_eq!(d.next_frame().unwrap().as_deref(), Some(&b"abc"[..]));
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.buffered(), 1);
    }

    proptest! {
        #[test]
        fn round_trip_with_arbitrary_chunking(
            msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..3000), 0..20),
            chunk in 1usize..5000,
        ) {
            let mut wire = BytesMut::new();
            for m in &msgs {
                encode_frame(m, &mut wire).unwrap();
            }
            let mut d = FrameDecoder::default();
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                d.push(piece);
                while let Some(f) = d.next_frame().unwrap() {
                    out.push(f.to_vec());
                }
            }
            prop_assert_eq!(out, msgs);
            prop_assert_eq!(d.buffered(), 0);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
            let mut d = FrameDecoder::default();
            d.push(&bytes);
            while let Ok(Some(f)) = d.next_frame() {
                prop_assert!(!f.is_empty());
            }
        }
    }
}
