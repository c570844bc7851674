//! One websocket session: hand the host its end of a socket pair, then move messages.
//!
//! Each binary websocket message becomes one packet for the host and each packet the
//! host writes becomes one binary message (one frame; fragmented messages from the
//! peer are reassembled by tungstenite). Pings are answered; empty messages are
//! dropped (no mesh message is empty). A text message ends the session: receptor only
//! sends binary. The session ends when either side does; the other side then sees it
//! end too (a close frame towards the websocket peer, end of stream towards the host).

use std::future::Future;
use std::io;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use receptor_plugin_sdk::{log, ConnectionSink, Framing, SessionToken};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::pair::{seqpacket_pair, PacketEnd};

/// The largest message carried: the largest a receptor mesh message can be.
pub const MAX_MESSAGE: usize = 65535;
/// Packets from the host sent before one flush.
const BATCH: usize = 32;
/// How long a closing handshake may take before the connection is just dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A byte stream a websocket runs over: plain TCP, or TLS on either side.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {
    /// The DER of the leaf certificate the peer presented in the TLS handshake, if any.
    fn peer_certificate(&self) -> Option<&[u8]>;
}

impl Io for TcpStream {
    fn peer_certificate(&self) -> Option<&[u8]> {
        None
    }
}

impl Io for tokio_rustls::server::TlsStream<TcpStream> {
    fn peer_certificate(&self) -> Option<&[u8]> {
        leaf(self.get_ref().1.peer_certificates())
    }
}

impl Io for tokio_rustls::client::TlsStream<TcpStream> {
    fn peer_certificate(&self) -> Option<&[u8]> {
        leaf(self.get_ref().1.peer_certificates())
    }
}

fn leaf<'a>(chain: Option<&'a [CertificateDer<'_>]>) -> Option<&'a [u8]> {
    chain.and_then(|c| c.first()).map(|c| c.as_ref())
}

/// A websocket over either kind of stream.
pub type Ws = WebSocketStream<Box<dyn Io>>;

/// The websocket settings of every session: messages and frames up to [`MAX_MESSAGE`].
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Creates the socket pair and hands the host its end (off the runtime's threads, as
/// the host may make the call wait). `None` if the host refused (it is stopping).
/// Over TLS the host also gets the peer's leaf certificate (if it presented one), to
/// hold the peer to the node ID the certificate names.
pub fn hand_over(
    sink: &ConnectionSink,
    ws: &Ws,
    peer: &str,
    inbound: bool,
) -> impl Future<Output = io::Result<Option<(SessionToken, PacketEnd)>>> + Send + 'static {
    // Taken now: the websocket itself is not `Sync`, so the future must not borrow it.
    let cert = ws.get_ref().peer_certificate().map(<[u8]>::to_vec);
    let (sink, peer) = (sink.clone(), peer.to_owned());
    async move {
        let (ours, theirs) = seqpacket_pair()?;
        let ours = PacketEnd::new(ours)?;
        let token = tokio::task::spawn_blocking(move || match cert {
            Some(cert) => {
                sink.connection_tls(theirs, Framing::Datagram, &peer, inbound, Some(&cert))
            }
            None => sink.connection(theirs, Framing::Datagram, &peer, inbound),
        })
        .await
        .map_err(io::Error::other)?;
        Ok(token.map(|t| (t, ours)))
    }
}

/// Why a session ended.
enum End {
    /// The host closed its end.
    Host,
    /// The peer closed the websocket or the connection.
    Peer,
    /// The peer sent a text message.
    Text,
    /// A websocket protocol or connection error.
    Ws(WsError),
    /// Writing to the host failed.
    HostIo(io::Error),
}

/// Moves messages until either side ends, then ends the other.
pub async fn pump(ws: Ws, end: PacketEnd, peer: &str) {
    let (mut tx, mut rx) = ws.split();
    let reason = tokio::select! {
        r = to_host(&mut rx, &end) => r,
        r = from_host(&mut tx, &end, peer) => r,
    };
    let close = match reason {
        End::Host => {
            log::debug(&format!("websocket session with {peer} ended by the node"));
            Some((CloseCode::Normal, ""))
        }
        End::Peer => {
            log::debug(&format!("websocket session with {peer} closed by the peer"));
            None
        }
        End::Text => {
            log::warn(&format!(
                "websocket session with {peer} closed: text message received, receptor sends binary messages"
            ));
            Some((CloseCode::Unsupported, "binary messages only"))
        }
        End::Ws(e) => {
            log::warn(&format!("websocket session with {peer} failed: {e}"));
            match e {
                WsError::Capacity(_) => Some((CloseCode::Size, "message too big")),
                WsError::Protocol(_) => Some((CloseCode::Protocol, "")),
                _ => None,
            }
        }
        End::HostIo(e) => {
            log::debug(&format!(
                "websocket session with {peer}: node side failed: {e}"
            ));
            Some((CloseCode::Away, ""))
        }
    };
    drop(end);
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if let Some((code, reason)) = close {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = tx.send(Message::Close(Some(frame))).await;
        }
        let _ = tx.close().await;
    })
    .await;
}

async fn to_host(rx: &mut SplitStream<Ws>, end: &PacketEnd) -> End {
    loop {
        match rx.next().await {
            Some(Ok(Message::Binary(data))) => {
                if data.is_empty() {
                    continue;
                }
                if let Err(e) = end.send(&data).await {
                    return if e.raw_os_error() == Some(libc::EPIPE) {
                        End::Host
                    } else {
                        End::HostIo(e)
                    };
                }
            }
            Some(Ok(Message::Text(_))) => return End::Text,
            Some(Ok(Message::Close(_))) | None => return End::Peer,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => return End::Peer,
            Some(Err(e)) => return End::Ws(e),
        }
    }
}

async fn from_host(tx: &mut SplitSink<Ws, Message>, end: &PacketEnd, peer: &str) -> End {
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    loop {
        let n = match end.recv(&mut buf).await {
            Ok(0) => return End::Host,
            Ok(n) => n,
            Err(e) => return End::HostIo(e),
        };
        if let Err(e) = feed(tx, &buf, n, peer).await {
            return End::Ws(e);
        }
        // Send whatever else is already waiting with the same flush.
        for _ in 0..BATCH {
            match end.try_recv(&mut buf) {
                Ok(0) => {
                    let _ = tx.flush().await;
                    return End::Host;
                }
                Ok(n) => {
                    if let Err(e) = feed(tx, &buf, n, peer).await {
                        return End::Ws(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return End::HostIo(e),
            }
        }
        if let Err(e) = tx.flush().await {
            return End::Ws(e);
        }
    }
}

/// Queues the packet of length `n` in `buf` as a binary message.
async fn feed(
    tx: &mut SplitSink<Ws, Message>,
    buf: &[u8],
    n: usize,
    peer: &str,
) -> Result<(), WsError> {
    if n > MAX_MESSAGE {
        log::debug(&format!(
            "message of {n} bytes for {peer} dropped: at most {MAX_MESSAGE} are carried"
        ));
        return Ok(());
    }
    tx.feed(Message::binary(buf[..n].to_vec())).await
}
