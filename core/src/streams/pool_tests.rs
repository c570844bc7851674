//! The stream pool over the in-memory datagram network: streams between our nodes
//! share one connection, a peer that only speaks `netceptor` (as Go does) gets a
//! connection per stream, and a kept connection to a restarted listener fails at once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use quinn::crypto::rustls::QuicServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::memory::{MemoryNet, MemoryNode};
use super::socket::spawn_socket;
use super::tests::{TestResult, WAIT};
use super::*;

fn fast_options() -> DialOptions {
    DialOptions {
        config: StreamConfig {
            insecure_key: InsecureKeyType::EcdsaP256,
            ..StreamConfig::default()
        },
        ..DialOptions::default()
    }
}

async fn fast_listener(node: &MemoryNode, service: &str) -> Result<StreamListener, StreamError> {
    listen_with(
        node,
        service,
        ListenOptions {
            config: fast_options().config,
            ..ListenOptions::default()
        },
    )
    .await
}

/// Echoes every accepted stream; sends the dialing side's service (which names the
/// connection: one ephemeral service per dialed connection) on `seen`.
fn spawn_echo_noting(
    mut listener: StreamListener,
    seen: tokio::sync::mpsc::UnboundedSender<String>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = seen.send(stream.remote_service().to_owned());
            tokio::spawn(async move {
                let (mut r, mut w) = stream.into_split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
    })
}

/// Sends `text` on `stream`, half-closes, and reads the echo.
async fn echo(stream: MeshStream, text: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (mut r, mut w) = stream.into_split();
    w.write_all(text).await?;
    w.shutdown().await?;
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, r.read_to_end(&mut back))
        .await
        .context("echo timed out")??;
    Ok(back)
}

#[tokio::test]
async fn streams_between_our_nodes_share_one_connection() -> TestResult {
    let net = MemoryNet::new();
    let (a, b) = (net.node("alpha"), net.node("beta"));
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let _echo = spawn_echo_noting(fast_listener(&b, "svc").await?, seen_tx);
    let pool = Arc::new(StreamPool::new());

    // Sequential streams: the first sets the connection up, the others reuse it.
    for i in 0..5u8 {
        let s = pool
            .dial(&a, "beta", "svc", "", fast_options(), false)
            .await?;
        assert_eq!(s.reused, i > 0, "stream {i}");
        assert!(s.stream.is_shared());
        assert_eq!(echo(s.stream, &[b'a' + i]).await?, [b'a' + i]);
    }
    // Eight at once, all on the same connection.
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let (pool, a) = (pool.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            let s = pool
                .dial(&a, "beta", "svc", "", fast_options(), false)
                .await?;
            anyhow::ensure!(s.reused, "stream {i} did not reuse the connection");
            echo(s.stream, &[i; 3]).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await??, vec![u8::try_from(i)?; 3]);
    }
    assert_eq!(pool.connections(), 1);
    let mut dialers = HashSet::new();
    for _ in 0..13 {
        dialers.insert(
            tokio::time::timeout(WAIT, seen.recv())
                .await?
                .context("listener gone")?,
        );
    }
    assert_eq!(dialers.len(), 1, "streams came from {dialers:?}");

    // A fresh dial does not reuse the kept connection.
    let s = pool
        .dial(&a, "beta", "svc", "", fast_options(), true)
        .await?;
    assert!(!s.reused);
    assert_eq!(echo(s.stream, b"fresh").await?, b"fresh");
    let fresh = tokio::time::timeout(WAIT, seen.recv())
        .await?
        .context("listener gone")?;
    assert!(!dialers.contains(&fresh));
    Ok(())
}

/// A listener that speaks only ALPN `netceptor`, one stream per connection, like Go
/// receptor; counts the connections it accepts and echoes each one's stream.
async fn netceptor_only_listener(
    node: &MemoryNode,
    service: &str,
) -> anyhow::Result<(quinn::Endpoint, Arc<AtomicUsize>)> {
    let cfg = fast_options().config;
    let mut tls = tls::insecure_server_config(cfg.insecure_key).await?;
    tls.alpn_protocols = vec![tls::ALPN.to_vec()];
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    server.transport_config(Arc::new(cfg.transport_config(stream::Role::Acceptor)?));
    let sock = node.open(Some(service), None).await?;
    let (parts, _) = spawn_socket(sock, cfg.evict_after(), None);
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        cfg.endpoint_config(None)?,
        Some(server),
        parts.socket.clone(),
        runtime(),
    )?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let (ep, count) = (endpoint.clone(), accepted.clone());
    tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let Ok((mut send, mut recv)) = conn.accept_bi().await else {
                    return;
                };
                if let Ok(data) = recv.read_to_end(1 << 20).await {
                    // Drop the preamble byte; echo the rest.
                    let _ = send.write_all(data.get(1..).unwrap_or_default()).await;
                    let _ = send.finish();
                    let _ = tokio::time::timeout(WAIT, conn.closed()).await;
                }
            });
        }
    });
    Ok((endpoint, accepted))
}

#[tokio::test]
async fn a_netceptor_only_peer_gets_a_connection_per_stream() -> TestResult {
    let net = MemoryNet::new();
    let (a, b) = (net.node("alpha"), net.node("beta"));
    let (_endpoint, accepted) = netceptor_only_listener(&b, "svc").await?;
    let pool = StreamPool::new();
    for i in 0..3u8 {
        let s = pool
            .dial(&a, "beta", "svc", "", fast_options(), false)
            .await?;
        assert!(!s.reused);
        assert!(!s.stream.is_shared());
        assert_eq!(echo(s.stream, &[b'x', i]).await?, [b'x', i]);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    assert_eq!(pool.connections(), 0);
    Ok(())
}

#[tokio::test]
async fn a_kept_connection_to_a_restarted_listener_fails_at_once() -> TestResult {
    let net = MemoryNet::new();
    let (a, b) = (net.node("alpha"), net.node("beta"));
    let (seen_tx, _seen) = tokio::sync::mpsc::unbounded_channel();
    let first = spawn_echo_noting(fast_listener(&b, "svc").await?, seen_tx.clone());
    let pool = StreamPool::new();
    let s = pool
        .dial(&a, "beta", "svc", "", fast_options(), false)
        .await?;
    assert_eq!(echo(s.stream, b"one").await?, b"one");

    // "beta" restarts: its old endpoint is gone (as with the process), a new listener
    // takes the service.
    first.abort();
    net.unregister("beta", "svc");
    let _second = spawn_echo_noting(fast_listener(&b, "svc").await?, seen_tx);

    let s = pool
        .dial(&a, "beta", "svc", "", fast_options(), false)
        .await?;
    assert!(s.reused);
    let started = Instant::now();
    let failed = echo(s.stream, b"two").await;
    assert!(failed.is_err(), "the old connection still answered");
    // A stateless reset, not the 30 s idle timeout.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}: {failed:?}",
        started.elapsed()
    );
    // The dead connection is forgotten: the next stream gets a new one that works.
    let s = pool
        .dial(&a, "beta", "svc", "", fast_options(), false)
        .await?;
    assert!(!s.reused);
    assert_eq!(echo(s.stream, b"three").await?, b"three");
    Ok(())
}
