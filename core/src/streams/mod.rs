//! Stream connections between mesh services, as Go receptor 1.6.9 makes them.
//!
//! Go receptor carries every stream between services on different nodes (control
//! sessions across the mesh, remote work, `connect`, TCP/unix proxies) as a QUIC
//! connection whose UDP datagrams are the payloads of mesh DATA messages: QUIC v1,
//! TLS 1.3, ALPN `netceptor`, one bidirectional stream per connection whose first byte
//! is `0x00` (wire-protocol spec, section 8). This module does the same with quinn:
//!
//! * [`listen`] / [`listen_with`] open a service and yield a [`MeshStream`] per incoming
//!   connection, together with the dialing node's ID;
//! * [`dial`] / [`dial_with`] connect to `(node, service)` from a fresh ephemeral
//!   service, one private QUIC endpoint per connection as in Go;
//! * [`MeshStream`] is a tokio `AsyncRead + AsyncWrite` byte stream with half-close;
//! * [`StreamPool`] dials like [`dial_with`] but keeps the connections to our own nodes
//!   (negotiated with the ALPN protocol [`tls::MUX_ALPN`]) and opens later streams to
//!   the same service on them: no handshake per stream between Rust nodes;
//! * [`bridge`] relays bytes between two such streams (or any two connections), as
//!   `connect` and the TCP/unix proxies do.
//!
//! The datagram layer is abstracted by [`DatagramNetwork`] / [`DatagramSocket`]
//! (implemented by [`crate::mesh::Mesh`]); `socket` adapts it to quinn's UDP socket
//! trait, mapping each remote `(node, service)` to a synthetic IPv6 address. `tls`
//! builds the ConnType 1 (insecure, encrypted) and ConnType 2 (user TLS) configurations.
//!
//! Connection lifetime: a dial fails within the handshake timeout (15 s), or at once when
//! the mesh reports the target service unknown (Go reports that as `context canceled`) or
//! has no route to the node. An established connection ends when idle for 30 s (dialers
//! send keep-alives every 15 s), when either side closes it, or when the mesh reports the
//! peer's service gone.
//!
//! ```no_run
//! # async fn demo(mesh: receptor_core::mesh::Mesh) -> Result<(), receptor_core::streams::StreamError> {
//! use receptor_core::streams::{dial, listen};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! // Node "bar": serve "echo" (ConnType 1).
//! let mut listener = listen(&mesh, "echo", None).await?;
//! tokio::spawn(async move {
//!     while let Ok((stream, _from_node)) = listener.accept().await {
//!         let (mut r, mut w) = stream.into_split();
//!         let _ = tokio::io::copy(&mut r, &mut w).await;
//!         let _ = w.shutdown().await; // FIN; dropping `w` lingers until delivered
//!     }
//! });
//!
//! // Node "foo": talk to it.
//! let mut s = dial(&mesh, "bar", "echo", None).await?;
//! s.write_all(b"hello").await?;
//! s.shutdown().await?; // half-close: "bar" reads EOF and can still answer
//! let mut answer = Vec::new();
//! s.read_to_end(&mut answer).await?;
//! s.close().await; // CONNECTION_CLOSE 0 "normal close"
//! # Ok(()) }
//! ```
//!
//! Datagram size: quinn probes the path MTU up to [`StreamConfig::max_datagram_size`]
//! (16 KiB by default), capped by the peer's `max_udp_payload_size` transport parameter:
//! Go peers advertise 1452 bytes, so connections with them never exceed what quic-go
//! reads, while Rust-to-Rust connections use up to 16 KiB per mesh message.

pub mod bridge;
mod dialer;
mod listener;
mod pool;
mod socket;
mod stream;
pub mod tls;
mod transport;

#[cfg(test)]
mod memory;
#[cfg(test)]
mod mesh_tests;
#[cfg(test)]
mod pool_tests;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{EndpointConfig, IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};
use tokio::sync::broadcast;

pub use dialer::{dial, dial_options, dial_with, DialOptions};
pub use listener::{listen, listen_with, ListenOptions, PeerCheck, StreamListener};
pub use pool::{PooledStream, StreamPool};
pub use stream::{
    MeshReadHalf, MeshStream, MeshWriteHalf, CODE_CANCEL_READ, CODE_ERROR, CODE_NORMAL,
};
pub use tls::{InsecureKeyType, TlsSetupError};
pub use transport::{DatagramNetwork, DatagramSocket};

use crate::mesh::MeshError;
use socket::PeerEvent;
use stream::Role;

/// ConnType of a service advertisement: stream with the built-in insecure TLS.
pub const CONN_TYPE_STREAM: u8 = 1;
/// ConnType of a service advertisement: stream with user TLS.
pub const CONN_TYPE_STREAM_TLS: u8 = 2;

/// Errors of stream operations.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The mesh refused to open a socket, or is shutting down.
    #[error(transparent)]
    Mesh(#[from] MeshError),
    /// The mesh reported the dialed service unknown on the target node.
    #[error("service {service} unknown on node {node}")]
    ServiceUnknown {
        /// Target node.
        node: String,
        /// Target service.
        service: String,
    },
    /// The mesh has no route to the dialed node.
    #[error("no route to node {0}")]
    NoRoute(String),
    /// The handshake (or opening the stream) took too long.
    #[error("timeout")]
    Timeout,
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// quinn refused to start the connection.
    #[error("quic: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The QUIC connection failed or was closed (TLS refusals end up here).
    #[error("quic: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing the stream preamble failed.
    #[error("stream: {0}")]
    Write(#[from] quinn::WriteError),
    /// Setting up the QUIC endpoint failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The listener is closed.
    #[error("listener closed")]
    ListenerClosed,
}

/// QUIC parameters of mesh streams; the defaults are Go receptor 1.6.9's.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Connections silent for this long are dropped (30 s; advertised to the peer, which
    /// uses the smaller of both values).
    pub max_idle_timeout: Duration,
    /// Keep-alive period of dialers (15 s); listeners never send keep-alives.
    pub keep_alive: Option<Duration>,
    /// A dial (handshake and stream opening) fails after this long (15 s); also bounds
    /// a listener's handshakes.
    pub handshake_timeout: Duration,
    /// A listener closes connections whose first stream does not arrive within this
    /// (60 s) with error 500 "Accept Timeout".
    pub accept_stream_timeout: Duration,
    /// Largest QUIC datagram accepted and probed for (bytes, 1200..=65527; 16384 by
    /// default). Peers cap it with their own `max_udp_payload_size` (Go: 1452).
    pub max_datagram_size: u16,
    /// Key type of the certificate of ConnType 1 listeners.
    pub insecure_key: InsecureKeyType,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            max_idle_timeout: Duration::from_secs(30),
            keep_alive: Some(Duration::from_secs(15)),
            handshake_timeout: Duration::from_secs(15),
            accept_stream_timeout: Duration::from_secs(60),
            max_datagram_size: 16384,
            insecure_key: InsecureKeyType::default(),
        }
    }
}

/// Per-stream receive window (also the connection window of a connection with one
/// stream; a shared connection gets [`SHARED_RECEIVE_WINDOW`]).
const RECEIVE_WINDOW: u32 = 2 * 1024 * 1024;
/// Connection receive window of a listener's shared connections, which carry several
/// streams (each still bounded by [`RECEIVE_WINDOW`]).
const SHARED_RECEIVE_WINDOW: u32 = 8 * 1024 * 1024;
/// Streams a listener lets a client have open at once on a shared connection.
pub const MUX_MAX_STREAMS: u32 = 256;
/// Unacknowledged bytes a sender may have in flight (bounds its buffering).
const SEND_WINDOW: u64 = 2 * 1024 * 1024;
/// The RTT assumed before the first sample (quic-go's default).
const INITIAL_RTT: Duration = Duration::from_millis(100);
/// Smallest datagram QUIC allows.
const MIN_DATAGRAM: u16 = 1200;
/// Largest `max_udp_payload_size` QUIC allows.
const MAX_DATAGRAM: u16 = 65527;

impl StreamConfig {
    fn datagram_size(&self) -> u16 {
        self.max_datagram_size.clamp(MIN_DATAGRAM, MAX_DATAGRAM)
    }

    /// Endpoint parameters: the largest datagram we can receive. A listener's endpoint
    /// (`listener` = its node and service) derives its stateless-reset key from its
    /// address, so that after a restart the node answers packets of connections it no
    /// longer knows with a reset the peer accepts, and a pooled connection to it fails at
    /// once instead of at its idle timeout. The mesh carries these packets only between
    /// its nodes, which could drop them anyway: a reset forged by one of them gains it
    /// nothing.
    fn endpoint_config(
        &self,
        listener: Option<(&str, &str)>,
    ) -> Result<EndpointConfig, StreamError> {
        let mut cfg = match listener {
            Some((node, service)) => {
                let mut cfg = EndpointConfig::new(reset_key(node, service));
                // quinn's default generator signs its IDs with a per-process key and
                // silently drops packets for IDs it cannot verify: those of the
                // previous process included.
                cfg.cid_generator(|| Box::new(RandomCids));
                cfg
            }
            None => EndpointConfig::default(),
        };
        cfg.max_udp_payload_size(self.datagram_size())
            .map_err(|e| StreamError::Io(std::io::Error::other(e.to_string())))?;
        Ok(cfg)
    }

    /// Transport parameters for one side of a connection.
    fn transport_config(&self, role: Role) -> Result<TransportConfig, StreamError> {
        let mut t = TransportConfig::default();
        let idle = IdleTimeout::try_from(self.max_idle_timeout)
            .map_err(|e| StreamError::Io(std::io::Error::other(e.to_string())))?;
        t.max_idle_timeout(Some(idle));
        // quic-go's first RTT estimate: a lost handshake packet is sent again after
        // about 300 ms, not quinn's default of about 1 s.
        t.initial_rtt(INITIAL_RTT);
        t.keep_alive_interval(match role {
            Role::Dialer => self.keep_alive,
            Role::Acceptor => None,
        });
        // One bidirectional stream per connection, opened by the dialer.
        // (A listener raises this and the connection window once the handshake settles
        // on sharing.)
        t.max_concurrent_uni_streams(VarInt::from_u32(0));
        t.max_concurrent_bidi_streams(VarInt::from_u32(match role {
            Role::Dialer => 0,
            Role::Acceptor => 1,
        }));
        t.stream_receive_window(VarInt::from_u32(RECEIVE_WINDOW));
        t.receive_window(VarInt::from_u32(RECEIVE_WINDOW));
        t.send_window(SEND_WINDOW);
        let size = self.datagram_size();
        if size > MIN_DATAGRAM {
            let mut mtud = MtuDiscoveryConfig::default();
            mtud.upper_bound(size);
            t.mtu_discovery_config(Some(mtud));
        } else {
            t.mtu_discovery_config(None);
        }
        Ok(t)
    }

    /// How long a silent peer stays in a socket's address table.
    fn evict_after(&self) -> Duration {
        (self.max_idle_timeout * 2).max(Duration::from_secs(120))
    }
}

/// The stateless-reset key of the listener on `service` of `node` (see
/// [`StreamConfig::endpoint_config`]).
fn reset_key(node: &str, service: &str) -> Arc<dyn quinn::crypto::HmacKey> {
    let mut seed = b"receptor stateless reset\0".to_vec();
    seed.extend_from_slice(node.as_bytes());
    seed.push(0);
    seed.extend_from_slice(service.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &seed);
    Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        digest.as_ref(),
    ))
}

/// Connection IDs of a listener: 8 random bytes, any of which it answers with a
/// stateless reset when it knows no connection for it (rate-limited by quinn, and
/// always smaller than the packet that caused it).
struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let bytes: [u8; 8] = rand::random();
        quinn::ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// Closes `conn` when the mesh reports its peer's service gone or the mesh socket ends.
fn watch_peer(
    conn: quinn::Connection,
    mut events: broadcast::Receiver<PeerEvent>,
    peer: SocketAddr,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = conn.closed() => return,
                ev = events.recv() => match ev {
                    Ok(PeerEvent::ServiceUnknown(addr)) if addr == peer => {
                        conn.close(VarInt::from_u32(CODE_ERROR), b"remote service unreachable");
                        return;
                    }
                    Ok(PeerEvent::Shutdown) => {
                        conn.close(VarInt::from_u32(CODE_ERROR), b"netceptor shutdown");
                        return;
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        conn.closed().await;
                        return;
                    }
                },
            }
        }
    });
}

/// The tokio runtime as quinn wants it.
fn runtime() -> Arc<dyn quinn::Runtime> {
    Arc::new(quinn::TokioRuntime)
}
