//! One backend session: a reader and a writer around a connection.
//!
//! The reader splits the byte stream (or datagrams) into messages. DATA messages
//! go straight through the data path from the reader's task; ROUTE, SVCAD and
//! REJECT go to the node task. The writer drains two bounded queues, control
//! messages first, and writes whatever is queued in one batch (one syscall and one
//! flush for many frames).

use std::future::Future;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use receptor_proto::frame::{encode_frame, FrameDecoder, MAX_FRAME_LEN};
use receptor_proto::message::MessageType;
use receptor_proto::node::{SessionConfig, SessionId};
use receptor_proto::update::RoutingUpdate;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{debug, warn};

use super::actor::{Command, SessionLink, SessionShared, WriterItem};
use super::datapath::DataError;
use super::fdio::{DatagramSocket, Received};
use super::{HandshakeSlot, IdentityRefused, MeshError, MeshInner, PeerIdentity, SessionParams};

/// Control messages a session may have queued (ROUTE floods, SVCAD, REJECT).
const CONTROL_QUEUE: usize = 256;
/// DATA messages a session may have queued before senders wait.
const DATA_QUEUE: usize = 512;
/// A writer batch ends at this many bytes...
const BATCH_BYTES: usize = 256 * 1024;
/// ...or this many messages.
const BATCH_MESSAGES: usize = 512;
/// Largest read buffer growth step for byte streams.
const READ_CHUNK: usize = 64 * 1024;
/// First read buffer of a byte stream: a session that never sends large frames (or
/// never completes its handshake) keeps a small one.
const FIRST_READ_CHUNK: usize = 4 * 1024;
/// KiB of control messages (ROUTE, SVCAD, REJECT) one session may have waiting for the
/// node task (four maximum-size frames); its reader waits beyond that.
pub(crate) const CONTROL_IN_FLIGHT_KIB: u32 = 256;
/// Time a closing writer gets to shut the connection down.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// What a reader produced.
pub(crate) enum ReadOutcome {
    /// A non-empty message.
    Message(BytesMut),
    /// Input that is not a message but does not end the session.
    Skip(&'static str),
    /// The peer closed the connection.
    Eof,
}

/// Splits a connection's input into messages.
pub(crate) trait MessageReader: Send + 'static {
    /// The next message.
    fn next(&mut self) -> impl Future<Output = io::Result<ReadOutcome>> + Send;
}

/// Writes messages to a connection.
pub(crate) trait MessageWriter: Send + 'static {
    /// Writes every message of `batch`, in order.
    fn write_batch(&mut self, batch: &[Bytes]) -> impl Future<Output = io::Result<()>> + Send;
    /// Closes the sending side.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// u16-LE framed messages from a byte stream.
pub(crate) struct StreamReader<R> {
    io: R,
    decoder: FrameDecoder,
    /// Current growth step: doubles (up to [`READ_CHUNK`]) when a read fills it.
    chunk: usize,
}

impl<R> StreamReader<R> {
    pub(crate) fn new(io: R) -> Self {
        StreamReader {
            io,
            decoder: FrameDecoder::with_capacity(FIRST_READ_CHUNK),
            chunk: FIRST_READ_CHUNK,
        }
    }
}

impl<R: AsyncRead + Unpin + Send + 'static> MessageReader for StreamReader<R> {
    async fn next(&mut self) -> io::Result<ReadOutcome> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => return Ok(ReadOutcome::Message(frame)),
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            let buf = self.decoder.buffer_mut();
            if buf.capacity() - buf.len() < self.chunk / 4 {
                buf.reserve(self.chunk);
            }
            let spare = buf.capacity() - buf.len();
            let n = match self.io.read_buf(buf).await {
                Ok(n) => n,
                // A TLS peer that closes without close_notify (Go does): the framing
                // is self-delimiting, so an end between frames is a plain end.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(e),
            };
            if n >= spare && self.chunk < READ_CHUNK {
                self.chunk *= 2;
            }
            if n == 0 {
                if self.decoder.buffered() > 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed in the middle of a frame",
                    ));
                }
                return Ok(ReadOutcome::Eof);
            }
        }
    }
}

/// u16-LE framed messages to a byte stream.
pub(crate) struct StreamWriter<W> {
    io: W,
    buf: BytesMut,
}

impl<W> StreamWriter<W> {
    pub(crate) fn new(io: W) -> Self {
        // Grows with the first batch written.
        StreamWriter {
            io,
            buf: BytesMut::new(),
        }
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> MessageWriter for StreamWriter<W> {
    async fn write_batch(&mut self, batch: &[Bytes]) -> io::Result<()> {
        self.buf.clear();
        for m in batch {
            if let Err(e) = encode_frame(m, &mut self.buf) {
                warn!(error = %e, "message not sent");
            }
        }
        self.io.write_all(&self.buf).await?;
        // Needed by buffering wrappers such as TLS; a no-op on plain sockets.
        self.io.flush().await
    }

    async fn close(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

/// One message per datagram from a message-preserving socket.
pub(crate) struct DatagramReader {
    sock: Arc<DatagramSocket>,
    buf: BytesMut,
}

impl DatagramReader {
    pub(crate) fn new(sock: Arc<DatagramSocket>) -> Self {
        DatagramReader {
            sock,
            buf: BytesMut::new(),
        }
    }
}

impl MessageReader for DatagramReader {
    async fn next(&mut self) -> io::Result<ReadOutcome> {
        Ok(match self.sock.recv(&mut self.buf).await? {
            Received::Message(m) => ReadOutcome::Message(m),
            Received::Empty => ReadOutcome::Skip("zero-length datagram"),
            Received::Truncated => ReadOutcome::Skip("oversized datagram"),
            Received::Eof => ReadOutcome::Eof,
        })
    }
}

/// One message per datagram to a message-preserving socket.
pub(crate) struct DatagramWriter {
    sock: Arc<DatagramSocket>,
}

impl DatagramWriter {
    pub(crate) fn new(sock: Arc<DatagramSocket>) -> Self {
        DatagramWriter { sock }
    }
}

impl MessageWriter for DatagramWriter {
    async fn write_batch(&mut self, batch: &[Bytes]) -> io::Result<()> {
        for m in batch {
            if m.is_empty() || m.len() > MAX_FRAME_LEN {
                warn!(len = m.len(), "message not sent: bad size");
                continue;
            }
            match self.sock.send(m).await {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    warn!(
                        len = m.len(),
                        "message too large for the datagram backend; dropped"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn close(&mut self) {
        self.sock.shutdown();
    }
}

/// Remembers which kinds of bad input a session already logged, so a peer sending
/// garbage produces one warning, not one per message.
#[derive(Default)]
struct LogOnce(u64);

impl LogOnce {
    fn first(&mut self, kind: u32) -> bool {
        let bit = 1u64 << (kind % 64);
        let first = self.0 & bit == 0;
        self.0 |= bit;
        first
    }
}

/// How a session's reader stopped.
enum ReaderEnd {
    Eof,
    Cancelled,
    NodeGone,
    Failed(io::Error),
    /// The peer announced a node ID its credentials do not vouch for.
    Refused(String),
}

/// Runs a session until it ends; dropping the future ends the session. With
/// `identity`, every ROUTE that arrives before the session is established is first
/// shown to it (see [`PeerIdentity`]).
pub(crate) async fn run<R: MessageReader, W: MessageWriter>(
    inner: Arc<MeshInner>,
    reader: R,
    writer: W,
    params: SessionParams,
    identity: Option<PeerIdentity>,
    handshake: Option<HandshakeSlot>,
) -> Result<(), MeshError> {
    let shared = SessionShared::new();
    let guard = shared.cancel.clone().drop_guard();
    let task = tokio::spawn(session_task(
        inner, reader, writer, params, identity, handshake, shared,
    ));
    let res = task.await;
    guard.disarm();
    res.unwrap_or_else(|e| Err(MeshError::Other(format!("session task failed: {e}"))))
}

async fn session_task<R: MessageReader, W: MessageWriter>(
    inner: Arc<MeshInner>,
    reader: R,
    writer: W,
    params: SessionParams,
    identity: Option<PeerIdentity>,
    handshake: Option<HandshakeSlot>,
    shared: Arc<SessionShared>,
) -> Result<(), MeshError> {
    let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let (data_tx, data_rx) = mpsc::channel(DATA_QUEUE);
    let config = SessionConfig {
        // A zero cost means "not set" (`SessionParams::default()`).
        cost: if params.cost == 0.0 { 1.0 } else { params.cost },
        node_cost: params.node_cost,
        allowed_peers: params.allowed_peers,
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    let open = Command::OpenSession {
        config,
        link: SessionLink {
            control: control_tx,
            data: data_tx,
            shared: shared.clone(),
            handshake,
        },
        reply: reply_tx,
    };
    if inner.commands.send(open).await.is_err() {
        return Err(MeshError::Shutdown);
    }
    let sid = reply_rx.await.map_err(|_| MeshError::Shutdown)??;
    debug!(session = %sid, "session started");
    let writer = tokio::spawn(writer_loop(writer, control_rx, data_rx, shared.clone()));
    let end = reader_loop(&inner, sid, reader, identity.as_ref(), &shared).await;
    shared.cancel.cancel();
    let write_error = writer.await.ok().flatten();
    let _ = inner
        .commands
        .send(Command::SessionEnded { session: sid })
        .await;
    if let Some(reason) = shared.take_close_reason() {
        return Err(reason);
    }
    match end {
        ReaderEnd::Eof => Ok(()),
        ReaderEnd::NodeGone => Err(MeshError::Shutdown),
        ReaderEnd::Failed(e) => Err(MeshError::Other(format!("read error: {e}"))),
        ReaderEnd::Refused(why) => Err(MeshError::PeerRefused(why)),
        ReaderEnd::Cancelled => Err(match write_error {
            Some(e) => MeshError::Other(format!("write error: {e}")),
            None => MeshError::Other("session cancelled".into()),
        }),
    }
}

async fn reader_loop<R: MessageReader>(
    inner: &MeshInner,
    sid: SessionId,
    mut reader: R,
    identity: Option<&PeerIdentity>,
    shared: &SessionShared,
) -> ReaderEnd {
    let mut cursor = inner.data.cursor();
    let mut logged = LogOnce::default();
    let in_flight = Arc::new(Semaphore::new(CONTROL_IN_FLIGHT_KIB as usize));
    // One registration for the whole session; the read is polled first, so the
    // cancellation is only looked at when there is nothing to read.
    let cancelled = shared.cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        let next = tokio::select! {
            biased;
            r = reader.next() => r,
            () = &mut cancelled => return ReaderEnd::Cancelled,
        };
        if shared.cancel.is_cancelled() {
            return ReaderEnd::Cancelled;
        }
        let ms = u64::try_from(inner.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        shared.last_rx_ms.store(ms.max(1), Ordering::Relaxed);
        let msg = match next {
            Ok(ReadOutcome::Message(m)) => {
                shared.counters.messages_in.inc();
                shared.counters.bytes_in.add(m.len() as u64);
                m
            }
            Ok(ReadOutcome::Skip(why)) => {
                if logged.first(32) {
                    warn!(session = %sid, "{why} ignored");
                }
                continue;
            }
            Ok(ReadOutcome::Eof) => return ReaderEnd::Eof,
            Err(e) => {
                warn!(session = %sid, error = %e, "closing session");
                return ReaderEnd::Failed(e);
            }
        };
        if MessageType::of(&msg) == Ok(MessageType::Data) {
            // DATA is only accepted once the peer has identified itself.
            if !shared.established.load(Ordering::Acquire) {
                continue;
            }
            let res = tokio::select! {
                biased;
                r = inner.data.handle(&mut cursor, msg) => r,
                () = &mut cancelled => return ReaderEnd::Cancelled,
            };
            if let Err(e) = res {
                log_data_error(&mut logged, sid, e);
            }
            continue;
        }
        if let Some(identity) = identity {
            if let Err(why) = check_identity(identity, &msg, shared) {
                return ReaderEnd::Refused(why.to_string());
            }
        }
        // Frames are at most 64 KiB: a message takes at most 64 of the KiB permits.
        let kib = u32::try_from(msg.len().div_ceil(1024)).unwrap_or(CONTROL_IN_FLIGHT_KIB);
        let budget = tokio::select! {
            biased;
            p = in_flight.clone().acquire_many_owned(kib.min(CONTROL_IN_FLIGHT_KIB)) => match p {
                Ok(p) => p,
                Err(_) => return ReaderEnd::Cancelled,
            },
            () = &mut cancelled => return ReaderEnd::Cancelled,
        };
        let cmd = Command::Message {
            session: sid,
            message: msg.freeze(),
            _budget: budget,
        };
        if inner.commands.send(cmd).await.is_err() {
            return ReaderEnd::NodeGone;
        }
    }
}

/// Until the session is established, a ROUTE names the peer (its `ForwardingNode`,
/// read with the node's own decoder): the peer's credentials must vouch for that name
/// before the node sees the message. Once established, the node itself refuses a
/// ROUTE whose `ForwardingNode` changed, so the checked name stays the peer's.
fn check_identity(
    identity: &PeerIdentity,
    msg: &[u8],
    shared: &SessionShared,
) -> Result<(), IdentityRefused> {
    if shared.established.load(Ordering::Acquire) || MessageType::of(msg) != Ok(MessageType::Route)
    {
        return Ok(());
    }
    let Some(body) = msg.get(1..) else {
        return Ok(());
    };
    match RoutingUpdate::decode(body) {
        // Undecodable: the node ignores it too (and logs it).
        Err(_) => Ok(()),
        Ok(ri) => identity.check(&ri.forwarding_node),
    }
}

fn log_data_error(logged: &mut LogOnce, sid: SessionId, e: DataError) {
    if logged.first(e.index()) {
        warn!(session = %sid, error = %e, "dropped data message (further ones logged at debug level)");
    } else {
        debug!(session = %sid, error = %e, "dropped data message");
    }
}

async fn writer_loop<W: MessageWriter>(
    mut writer: W,
    mut control: mpsc::Receiver<WriterItem>,
    mut data: mpsc::Receiver<Bytes>,
    shared: Arc<SessionShared>,
) -> Option<io::Error> {
    let mut batch: Vec<Bytes> = Vec::with_capacity(64);
    let cancelled = shared.cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        let mut closing = false;
        tokio::select! {
            biased;
            () = &mut cancelled => return None,
            item = control.recv() => match item {
                Some(WriterItem::Message(m)) => batch.push(m),
                Some(WriterItem::Close) => closing = true,
                None => return None,
            },
            m = data.recv() => match m {
                Some(m) => batch.push(m),
                None => return None,
            },
        }
        let mut bytes: usize = batch.iter().map(Bytes::len).sum();
        while !closing && batch.len() < BATCH_MESSAGES && bytes < BATCH_BYTES {
            match control.try_recv() {
                Ok(WriterItem::Message(m)) => {
                    bytes += m.len();
                    batch.push(m);
                    continue;
                }
                Ok(WriterItem::Close) => {
                    closing = true;
                    break;
                }
                Err(_) => {}
            }
            match data.try_recv() {
                Ok(m) => {
                    bytes += m.len();
                    batch.push(m);
                }
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let res = tokio::select! {
                biased;
                r = writer.write_batch(&batch) => r,
                () = &mut cancelled => return None,
            };
            if let Err(e) = res {
                shared.cancel.cancel();
                return Some(e);
            }
            shared.counters.messages_out.add(batch.len() as u64);
            shared.counters.bytes_out.add(bytes as u64);
            batch.clear();
        }
        if closing {
            let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, writer.close()).await;
            shared.cancel.cancel();
            return None;
        }
    }
}
