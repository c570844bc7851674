//! Relaying bytes between two connections, like netcat, with half-close.
//!
//! Each direction copies through one fixed buffer ([`BUFFER_SIZE`], Go receptor's 64 KiB):
//! it reads at most that much, writes it all, then reads again. A slow writer therefore
//! stops the reader, and the reader's transport (TCP window, QUIC flow control) stops the
//! sender: memory per bridge is bounded by the two buffers, whatever the volume.
//!
//! End of stream in one direction shuts the other side's writing half down (TCP FIN,
//! QUIC FIN, TLS close_notify) and the other direction carries on, so request/response
//! protocols that half-close work through the bridge. The bridge is done when both
//! directions reached end of stream. The first read or write error ends both directions
//! at once; the caller then tears both connections down in a way the peers see as an
//! error (a TCP reset, a QUIC connection error), never as a normal end of stream.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes copied per read.
pub const BUFFER_SIZE: usize = 64 * 1024;

/// One connection of a bridge: its reading and writing halves and a name for messages.
pub struct End<'a, R: ?Sized, W: ?Sized> {
    /// What the connection is, e.g. `tcp connection`.
    pub name: &'static str,
    /// Its reading half.
    pub read: &'a mut R,
    /// Its writing half.
    pub write: &'a mut W,
}

/// Bytes moved by a bridge that ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transferred {
    /// From the first connection to the second.
    pub forward: u64,
    /// From the second connection to the first.
    pub backward: u64,
}

/// Why a bridge failed.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// Reading from a connection failed.
    #[error("read error on {name}: {source}")]
    Read {
        /// The connection.
        name: &'static str,
        /// The I/O error.
        source: io::Error,
    },
    /// Writing to (or shutting down) a connection failed.
    #[error("write error on {name}: {source}")]
    Write {
        /// The connection.
        name: &'static str,
        /// The I/O error.
        source: io::Error,
    },
}

/// Relays between `a` and `b` until both directions reached end of stream (`Ok`) or one
/// of them failed (`Err`, the other direction is abandoned).
pub async fn bridge<AR, AW, BR, BW>(
    a: End<'_, AR, AW>,
    b: End<'_, BR, BW>,
) -> Result<Transferred, BridgeError>
where
    AR: AsyncRead + Unpin + ?Sized,
    AW: AsyncWrite + Unpin + ?Sized,
    BR: AsyncRead + Unpin + ?Sized,
    BW: AsyncWrite + Unpin + ?Sized,
{
    let forward = pump(a.read, a.name, b.write, b.name);
    let backward = pump(b.read, b.name, a.write, a.name);
    let (forward, backward) = tokio::try_join!(forward, backward)?;
    Ok(Transferred { forward, backward })
}

/// Copies `from` to `to` until end of stream, then shuts `to` down.
async fn pump<R, W>(
    from: &mut R,
    from_name: &'static str,
    to: &mut W,
    to_name: &'static str,
) -> Result<u64, BridgeError>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let write_err = |source| BridgeError::Write {
        name: to_name,
        source,
    };
    let mut buf = vec![0u8; BUFFER_SIZE];
    let mut total = 0u64;
    loop {
        let n = from
            .read(&mut buf)
            .await
            .map_err(|source| BridgeError::Read {
                name: from_name,
                source,
            })?;
        if n == 0 {
            to.shutdown().await.map_err(write_err)?;
            return Ok(total);
        }
        to.write_all(&buf[..n]).await.map_err(write_err)?;
        // TLS streams keep records until flushed; plain sockets ignore this.
        to.flush().await.map_err(write_err)?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, split};

    /// `a` and `b` are the bridge's connections; the test holds their other ends.
    #[tokio::test]
    async fn copies_both_ways_and_propagates_half_close() -> anyhow::Result<()> {
        let (a, mut client) = duplex(1024);
        let (b, mut server) = duplex(1024);
        let task = tokio::spawn(async move {
            let (mut ar, mut aw) = split(a);
            let (mut br, mut bw) = split(b);
            bridge(
                End {
                    name: "a",
                    read: &mut ar,
                    write: &mut aw,
                },
                End {
                    name: "b",
                    read: &mut br,
                    write: &mut bw,
                },
            )
            .await
        });
        client.write_all(b"request").await?;
        client.shutdown().await?;
        let mut got = Vec::new();
        server.read_to_end(&mut got).await?;
        assert_eq!(got, b"request");
        // The server answers after it saw the end of the request.
        server.write_all(b"response").await?;
        server.shutdown().await?;
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await?;
        assert_eq!(answer, b"response");
        let t = task.await??;
        assert_eq!(
            t,
            Transferred {
                forward: 7,
                backward: 8
            }
        );
        Ok(())
    }

    /// A writer that stops accepting data after `limit` bytes.
    struct Stalled {
        taken: usize,
        limit: usize,
    }

    impl AsyncWrite for Stalled {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let room = self.limit - self.taken;
            if room == 0 {
                return std::task::Poll::Pending;
            }
            let n = room.min(buf.len());
            self.taken += n;
            std::task::Poll::Ready(Ok(n))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_stalled_writer_stops_the_reader() -> anyhow::Result<()> {
        // The source has far more than the buffer; the sink takes 10 bytes and stalls.
        let (src, mut feeder) = duplex(4096);
        let (mut src_r, mut src_w) = split(src);
        let mut sink = Stalled {
            taken: 0,
            limit: 10,
        };
        let mut idle = tokio::io::empty();
        let feed = tokio::spawn(async move {
            let chunk = vec![7u8; 4096];
            let mut sent = 0usize;
            // The feeder blocks as soon as the bridge stops reading.
            while tokio::time::timeout(
                std::time::Duration::from_millis(300),
                feeder.write_all(&chunk),
            )
            .await
            .is_ok()
            {
                sent += chunk.len();
            }
            sent
        });
        let run = bridge(
            End {
                name: "src",
                read: &mut src_r,
                write: &mut src_w,
            },
            End {
                name: "sink",
                read: &mut idle,
                write: &mut sink,
            },
        );
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(2), run).await;
        assert!(outcome.is_err(), "the bridge cannot finish");
        let sent = feed.await?;
        // At most: the sink's 10 bytes, one buffer in the bridge, the pipe's 4096 bytes
        // and one chunk in flight.
        assert!(
            sent <= 10 + BUFFER_SIZE + 2 * 4096,
            "{sent} bytes accepted although the sink stalled"
        );
        Ok(())
    }

    struct Failing;

    impl AsyncRead for Failing {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            _buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset")))
        }
    }

    #[tokio::test]
    async fn a_read_error_ends_both_directions() -> anyhow::Result<()> {
        let (b, _keep) = duplex(1024);
        let (mut br, mut bw) = split(b);
        let mut failing = Failing;
        let mut sink = tokio::io::sink();
        let outcome = bridge(
            End {
                name: "tcp connection",
                read: &mut failing,
                write: &mut sink,
            },
            End {
                name: "mesh",
                read: &mut br,
                write: &mut bw,
            },
        )
        .await;
        match outcome {
            Err(BridgeError::Read { name, .. }) => assert_eq!(name, "tcp connection"),
            other => panic!("unexpected {other:?}"),
        }
        Ok(())
    }
}
