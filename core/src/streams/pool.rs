//! Shared QUIC connections between our nodes: many streams, one handshake.
//!
//! Go receptor opens a QUIC connection (and runs a TLS handshake through the mesh) for
//! every stream. A [`StreamPool`] instead keeps the connections it dials and opens the
//! next stream to the same `(node, service, TLS client)` on one of them: a new stream
//! then costs no round trip before its first bytes.
//!
//! Sharing is negotiated in the handshake: the pool offers the ALPN protocol
//! [`MUX_ALPN`](super::tls::MUX_ALPN) before `netceptor`. Our listeners prefer it; Go
//! knows only `netceptor`, so a Go peer gets what it expects, one connection per stream,
//! and the pool remembers for a while ([`PLAIN_MEMORY`]) that the target does not share.
//!
//! Bounds: at most [`MAX_TARGETS`] targets, [`CONNS_PER_TARGET`] connections per target
//! and [`STREAMS_PER_CONN`] streams in use per connection (a dial beyond them gets a
//! connection of its own); a connection without streams for [`IDLE_CLOSE`] is closed.
//!
//! A kept connection can have died without notice (the peer restarted: its new process
//! answers with a stateless reset, see `StreamConfig::reset_key`). [`PooledStream::reused`]
//! tells the caller whether the stream went on a connection that already carried others,
//! so that a stream that fails before its first answer can be tried again on a fresh
//! dial ([`StreamPool::dial`] with `fresh`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use quinn::VarInt;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::dialer::{establish, open_stream, DialOptions, Established};
use super::stream::{ConnOwner, MeshStream, Role, StreamParts, CODE_ERROR, CODE_NORMAL};
use super::{tls, DatagramNetwork, StreamError};

/// Targets for which connections are kept.
pub const MAX_TARGETS: usize = 256;
/// Connections kept per target.
pub const CONNS_PER_TARGET: usize = 4;
/// Streams in use at once on one pooled connection (the listener grants
/// [`super::MUX_MAX_STREAMS`]).
pub const STREAMS_PER_CONN: usize = 128;
/// A pooled connection without streams for this long is closed.
pub const IDLE_CLOSE: Duration = Duration::from_secs(10);
/// How long a target that did not negotiate sharing (a Go node) is dialed without
/// trying to share.
pub const PLAIN_MEMORY: Duration = Duration::from_secs(60);

/// `(node, service, TLS client name)`.
type Key = (String, String, String);

/// Connections dialed to other nodes, kept to carry later streams.
#[derive(Debug, Default)]
pub struct StreamPool {
    targets: Mutex<HashMap<Key, Arc<Target>>>,
}

/// The pooled connections of one target.
#[derive(Debug, Default)]
struct Target {
    /// Held while a connection to the target is being set up, so that concurrent dials
    /// share its handshake instead of each running one.
    dialing: tokio::sync::Mutex<()>,
    state: Mutex<TargetState>,
}

#[derive(Debug, Default)]
struct TargetState {
    conns: Vec<Arc<Pooled>>,
    /// The target did not negotiate sharing; dial it plainly until then.
    plain_until: Option<Instant>,
}

/// One pooled connection.
#[derive(Debug)]
struct Pooled {
    conn: quinn::Connection,
    node: String,
    local_service: String,
    /// Streams in use.
    in_use: AtomicUsize,
    /// Woken when `in_use` changes.
    changed: Notify,
}

impl Pooled {
    fn usable(&self) -> bool {
        self.conn.close_reason().is_none() && self.in_use.load(Ordering::Acquire) < STREAMS_PER_CONN
    }
}

/// Counts a stream as in use on its pooled connection while it lives.
#[derive(Debug)]
pub(crate) struct Lease(Arc<Pooled>);

impl Lease {
    fn new(pooled: Arc<Pooled>) -> Lease {
        pooled.in_use.fetch_add(1, Ordering::AcqRel);
        pooled.changed.notify_one();
        Lease(pooled)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.in_use.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

/// A stream from [`StreamPool::dial`].
#[derive(Debug)]
pub struct PooledStream {
    /// The stream.
    pub stream: MeshStream,
    /// Whether it runs on a connection that was set up before this dial (and so may have
    /// died unnoticed): a failure before its first answer is worth one fresh dial.
    pub reused: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change is one call under the lock: the state stays consistent after a panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TargetState {
    /// A live pooled connection with room for another stream.
    fn pick(&mut self) -> Option<Arc<Pooled>> {
        self.conns.retain(|c| c.conn.close_reason().is_none());
        self.conns
            .iter()
            .filter(|c| c.usable())
            .min_by_key(|c| c.in_use.load(Ordering::Acquire))
            .cloned()
    }
}

impl StreamPool {
    /// An empty pool.
    pub fn new() -> StreamPool {
        StreamPool::default()
    }

    /// Connections kept now (all targets).
    pub fn connections(&self) -> usize {
        lock(&self.targets)
            .values()
            .map(|t| {
                lock(&t.state)
                    .conns
                    .iter()
                    .filter(|c| c.conn.close_reason().is_none())
                    .count()
            })
            .sum()
    }

    /// The target's entry; `None` when [`MAX_TARGETS`] are kept and none can go.
    fn target(&self, key: &Key) -> Option<Arc<Target>> {
        let mut targets = lock(&self.targets);
        if let Some(t) = targets.get(key) {
            return Some(t.clone());
        }
        if targets.len() >= MAX_TARGETS {
            let now = Instant::now();
            targets.retain(|_, t| {
                let mut state = lock(&t.state);
                state.conns.retain(|c| c.conn.close_reason().is_none());
                !state.conns.is_empty() || state.plain_until.is_some_and(|u| u > now)
            });
            if targets.len() >= MAX_TARGETS {
                return None;
            }
        }
        let t = Arc::new(Target::default());
        targets.insert(key.clone(), t.clone());
        Some(t)
    }

    /// Opens a stream to `service` on `node`: on a kept connection to it when there is
    /// one with room, else on a new connection that is kept for later streams if the
    /// peer negotiates sharing. `tls_name` names `opts.tls` (the key of the target);
    /// `fresh` skips the kept connections (a retry after a reused stream failed). Fails
    /// as [`super::dial_with`] does.
    pub async fn dial<N: DatagramNetwork>(
        &self,
        net: &N,
        node: &str,
        service: &str,
        tls_name: &str,
        opts: DialOptions,
        fresh: bool,
    ) -> Result<PooledStream, StreamError> {
        let node = if node.eq_ignore_ascii_case("localhost") {
            net.node_id()
        } else {
            node
        };
        let key = (node.to_owned(), service.to_owned(), tls_name.to_owned());
        let Some(target) = self.target(&key) else {
            return plain(net, node, service, opts).await;
        };
        let limit = opts.config.handshake_timeout;
        if !fresh {
            if let Some(s) = reuse(&target, service, limit).await {
                return Ok(s);
            }
        }
        if lock(&target.state)
            .plain_until
            .is_some_and(|u| u > Instant::now())
        {
            return plain(net, node, service, opts).await;
        }
        let _dialing = target.dialing.lock().await;
        if !fresh {
            // Another dial may have set one up meanwhile.
            if let Some(s) = reuse(&target, service, limit).await {
                return Ok(s);
            }
        }
        if lock(&target.state).conns.len() >= CONNS_PER_TARGET && !fresh {
            return plain(net, node, service, opts).await;
        }
        let linger = opts.config.max_idle_timeout;
        let est = establish(net, node, service, opts, true).await?;
        if !tls::is_shared(&est.conn) {
            lock(&target.state).plain_until = Some(Instant::now() + PLAIN_MEMORY);
            return own_stream(est, service, limit, linger).await;
        }
        let Established {
            conn,
            endpoint,
            node,
            local_service,
        } = est;
        let pooled = Arc::new(Pooled {
            conn,
            node,
            local_service,
            in_use: AtomicUsize::new(0),
            changed: Notify::new(),
        });
        let lease = Lease::new(pooled.clone());
        {
            let mut state = lock(&target.state);
            state.plain_until = None;
            state.conns.retain(|c| c.conn.close_reason().is_none());
            if state.conns.len() < CONNS_PER_TARGET {
                state.conns.push(pooled.clone());
            }
        }
        tokio::spawn(keep(pooled.clone(), endpoint));
        let stream = shared_stream(&pooled, lease, service, limit).await?;
        Ok(PooledStream {
            stream,
            reused: false,
        })
    }
}

/// A stream on a kept connection of `target`, if one has room and opening works.
async fn reuse(target: &Target, service: &str, limit: Duration) -> Option<PooledStream> {
    loop {
        let pooled = lock(&target.state).pick()?;
        let lease = Lease::new(pooled.clone());
        match shared_stream(&pooled, lease, service, limit).await {
            Ok(stream) => {
                return Some(PooledStream {
                    stream,
                    reused: true,
                })
            }
            Err(e) => {
                tracing::debug!(node = %pooled.node, error = %e, "pooled stream connection unusable");
                pooled.conn.close(VarInt::from_u32(CODE_ERROR), b"unusable");
                lock(&target.state)
                    .conns
                    .retain(|c| !Arc::ptr_eq(c, &pooled));
            }
        }
    }
}

/// Opens a stream on a pooled connection.
async fn shared_stream(
    pooled: &Arc<Pooled>,
    lease: Lease,
    service: &str,
    limit: Duration,
) -> Result<MeshStream, StreamError> {
    let (send, recv) = open_stream(&pooled.conn, limit).await?;
    Ok(MeshStream::new(StreamParts {
        conn: pooled.conn.clone(),
        send,
        recv,
        endpoint: None,
        owner: ConnOwner::Shared {
            _lease: Some(lease),
        },
        role: Role::Dialer,
        remote_node: pooled.node.clone(),
        remote_service: service.to_owned(),
        local_service: pooled.local_service.clone(),
        linger: Duration::ZERO,
    }))
}

/// A stream that owns its connection (the peer does not share connections).
async fn own_stream(
    est: Established,
    service: &str,
    limit: Duration,
    linger: Duration,
) -> Result<PooledStream, StreamError> {
    let (send, recv) = match open_stream(&est.conn, limit).await {
        Ok(pair) => pair,
        Err(e) => {
            est.endpoint
                .close(VarInt::from_u32(CODE_ERROR), e.to_string().as_bytes());
            return Err(e);
        }
    };
    let stream = MeshStream::new(StreamParts {
        conn: est.conn,
        send,
        recv,
        endpoint: Some(est.endpoint),
        owner: ConnOwner::Stream,
        role: Role::Dialer,
        remote_node: est.node,
        remote_service: service.to_owned(),
        local_service: est.local_service,
        linger,
    });
    Ok(PooledStream {
        stream,
        reused: false,
    })
}

/// A plain dial, for when the pool is full or the target does not share.
async fn plain<N: DatagramNetwork>(
    net: &N,
    node: &str,
    service: &str,
    opts: DialOptions,
) -> Result<PooledStream, StreamError> {
    Ok(PooledStream {
        stream: super::dial_with(net, node, service, opts).await?,
        reused: false,
    })
}

/// Keeps a pooled connection's endpoint until the connection ends; closes the
/// connection once it has carried no stream for [`IDLE_CLOSE`].
async fn keep(pooled: Arc<Pooled>, endpoint: quinn::Endpoint) {
    loop {
        let changed = pooled.changed.notified();
        let idle = pooled.in_use.load(Ordering::Acquire) == 0;
        tokio::select! {
            _ = pooled.conn.closed() => break,
            () = changed => {}
            () = tokio::time::sleep(IDLE_CLOSE), if idle => {
                if pooled.in_use.load(Ordering::Acquire) == 0 {
                    pooled.conn.close(VarInt::from_u32(CODE_NORMAL), b"normal close");
                    break;
                }
            }
        }
    }
    // Let the close reach the peer before the endpoint goes.
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}
