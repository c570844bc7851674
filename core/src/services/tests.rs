//! Services over real [`Mesh`] nodes joined by backend sessions over unix socket pairs:
//! proxies end to end with local TCP, unix and UDP peers, the control service on the
//! mesh, `connect`, back-pressure and error propagation.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};

use super::*;
use crate::config::{
    TcpClientConfig, TcpServerConfig, UdpClientConfig, UdpServerConfig, UnixSocketClientConfig,
    UnixSocketServerConfig,
};
use crate::control::connect::ConnectCommand;
use crate::control::{CommandRegistry, ControlService};
use crate::mesh::{Framing, MeshOptions, SessionParams};

type TestResult = anyhow::Result<()>;

const WAIT: Duration = Duration::from_secs(30);

fn start(id: &str) -> Mesh {
    Mesh::start(MeshOptions {
        node_id: id.to_owned(),
        max_idle: Duration::from_secs(21),
    })
}

/// Joins two nodes with a backend session over a unix socket pair.
fn link(a: &Mesh, b: &Mesh) -> anyhow::Result<()> {
    let (x, y) = std::os::unix::net::UnixStream::pair()?;
    for (mesh, end) in [(a.clone(), x), (b.clone(), y)] {
        tokio::spawn(async move {
            let params = SessionParams {
                cost: 1.0,
                ..SessionParams::default()
            };
            let _ = mesh
                .run_session(OwnedFd::from(end), Framing::Len16Le, params)
                .await;
        });
    }
    Ok(())
}

/// Two linked nodes, `alpha` and `beta`, with routes to each other.
async fn pair() -> anyhow::Result<(Mesh, Mesh)> {
    let (a, b) = (start("alpha"), start("beta"));
    link(&a, &b)?;
    for (mesh, to) in [(&a, "beta"), (&b, "alpha")] {
        let deadline = Instant::now() + WAIT;
        while !mesh.status().await.routing_table.contains_key(to) {
            anyhow::ensure!(Instant::now() < deadline, "no route to {to}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok((a, b))
}

/// Waits until `mesh` knows an advertisement of `(node, service)`; returns its tags.
async fn advertised(
    mesh: &Mesh,
    node: &str,
    service: &str,
) -> anyhow::Result<receptor_proto::svcad::ServiceAdvertisement> {
    let deadline = Instant::now() + WAIT;
    loop {
        let ads = mesh.status().await.advertisements;
        if let Some(ad) = ads
            .into_iter()
            .find(|ad| ad.node_id == node && ad.service == service)
        {
            return Ok(ad);
        }
        anyhow::ensure!(Instant::now() < deadline, "no ad of {node}:{service}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tcp_server(port: u16, node: &str, service: &str) -> TcpServerConfig {
    TcpServerConfig {
        port,
        bind_addr: "127.0.0.1".into(),
        remote_node: node.into(),
        remote_service: service.into(),
        tls_server: None,
        tls_client: None,
    }
}

fn tcp_client(service: &str, address: &str) -> TcpClientConfig {
    TcpClientConfig {
        service: service.into(),
        address: address.into(),
        tls_server: None,
        tls_client: None,
    }
}

/// A tcp-server on `a` for `service` on `beta`: its handle and its entry port.
async fn tcp_entry(a: &Mesh, service: &str) -> anyhow::Result<(ServiceHandle, u16)> {
    let cfg = tcp_server(0, "beta", service);
    let server = tcp::start_server(a, &cfg, &TlsRegistry::new()).await?;
    let port = server.local_addr().context("bound address")?.port();
    Ok((server, port))
}

/// A tcp-client on `b` offering `service`, which connects to `target`.
async fn tcp_exit(
    b: &Mesh,
    service: &str,
    target: std::net::SocketAddr,
) -> anyhow::Result<ServiceHandle> {
    let cfg = tcp_client(service, &target.to_string());
    Ok(tcp::start_client(b, &cfg, &TlsRegistry::new()).await?)
}

/// Reads `s` to its end and asserts that the end is a connection reset.
async fn assert_reset(s: &mut TcpStream) -> TestResult {
    let mut buf = Vec::new();
    let outcome = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await?;
    let err = outcome
        .err()
        .context("a reset, not a clean end of stream")?;
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    Ok(())
}

/// A TCP server that answers each connection with `reply:` + what it read, after the
/// client half-closed.
async fn reply_server() -> anyhow::Result<std::net::SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                if s.read_to_end(&mut got).await.is_ok() {
                    let _ = s.write_all(b"reply:").await;
                    let _ = s.write_all(&got).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn tcp_proxy_carries_a_half_closed_exchange() -> TestResult {
    let (a, b) = pair().await?;
    let target = reply_server().await?;
    let _client = tcp_exit(&b, "web", target).await?;
    let ad = advertised(&a, "beta", "web").await?;
    assert_eq!(ad.conn_type, crate::streams::CONN_TYPE_STREAM);
    assert_eq!(
        ad.tags,
        Some(tags("TCP Proxy", "address", &target.to_string()))
    );
    let (_server, port) = tcp_entry(&a, "web").await?;

    for round in 0..3 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        let msg = format!("request {round}");
        s.write_all(msg.as_bytes()).await?;
        s.shutdown().await?;
        let mut got = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut got)).await??;
        assert_eq!(got, format!("reply:{msg}").as_bytes());
    }
    Ok(())
}

#[tokio::test]
async fn tcp_proxy_moves_megabytes_both_ways() -> TestResult {
    let (a, b) = pair().await?;
    let sink = TcpListener::bind("127.0.0.1:0").await?;
    let sink_addr = sink.local_addr()?;
    let _client = tcp_exit(&b, "bulk", sink_addr).await?;
    let (_server, port) = tcp_entry(&a, "bulk").await?;

    const LEN: usize = 8 * 1024 * 1024;
    let data: Arc<Vec<u8>> = Arc::new((0..LEN).map(|i| (i * 31 % 251) as u8).collect());
    // The target reads everything, then sends it back.
    let echo = tokio::spawn(async move {
        let (mut s, _) = sink.accept().await?;
        let mut got = Vec::new();
        s.read_to_end(&mut got).await?;
        s.write_all(&got).await?;
        s.shutdown().await?;
        Ok::<_, anyhow::Error>(got.len())
    });
    let s = TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut r, mut w) = s.into_split();
    let out = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&out).await?;
        w.shutdown().await?;
        Ok::<_, std::io::Error>(w)
    });
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), r.read_to_end(&mut back)).await??;
    let _w = writer.await??;
    assert_eq!(echo.await??, LEN);
    assert_eq!(back.len(), LEN);
    assert!(back == *data, "bytes differ");
    Ok(())
}

#[tokio::test]
async fn a_target_that_does_not_read_stops_the_sender() -> TestResult {
    let (a, b) = pair().await?;
    let sink = TcpListener::bind("127.0.0.1:0").await?;
    let sink_addr = sink.local_addr()?;
    let _client = tcp_exit(&b, "slow", sink_addr).await?;
    let (_server, port) = tcp_entry(&a, "slow").await?;

    let s = TcpStream::connect(("127.0.0.1", port)).await?;
    // The target accepts but does not read.
    let (held, _) = tokio::time::timeout(WAIT, sink.accept()).await??;
    let (_r, mut w) = s.into_split();
    let chunk = vec![1u8; 64 * 1024];
    let mut sent = 0usize;
    // Write until the writes stall for a while.
    while let Ok(r) = tokio::time::timeout(Duration::from_millis(1500), w.write_all(&chunk)).await {
        r?;
        sent += chunk.len();
        anyhow::ensure!(
            sent <= 64 * 1024 * 1024,
            "64 MiB accepted although the target reads nothing"
        );
    }
    // Kernel socket buffers (both TCP connections), the bridges' buffers and the QUIC
    // windows: a few MiB, never the whole volume.
    eprintln!("buffered before the sender stalled: {sent} bytes");
    assert!(sent < 32 * 1024 * 1024, "{sent} bytes buffered");
    // Once the target reads, everything flows.
    drop(held);
    Ok(())
}

#[tokio::test]
async fn errors_reach_both_ends_as_errors() -> TestResult {
    let (a, b) = pair().await?;
    // The target resets the connection after reading a little.
    let target = TcpListener::bind("127.0.0.1:0").await?;
    let target_addr = target.local_addr()?;
    tokio::spawn(async move {
        if let Ok((mut s, _)) = target.accept().await {
            let mut buf = [0u8; 4];
            let _ = s.read_exact(&mut buf).await;
            relay::reset_on_close(&s);
        }
    });
    let _client = tcp_exit(&b, "rst", target_addr).await?;
    let (_server, port) = tcp_entry(&a, "rst").await?;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"abcd").await?;
    assert_reset(&mut s).await?;

    // A proxy to a service nobody offers resets its clients at once.
    let (_nowhere, port) = tcp_entry(&a, "nosvc").await?;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    assert_reset(&mut s).await?;

    // Nothing listens at a tcp-client's address: the client is reset too.
    let closed = TcpListener::bind("127.0.0.1:0").await?;
    let closed_addr = closed.local_addr()?;
    drop(closed);
    let _c2 = tcp_exit(&b, "closed", closed_addr).await?;
    let (_s2, port) = tcp_entry(&a, "closed").await?;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    assert_reset(&mut s).await?;
    Ok(())
}

#[tokio::test]
async fn unix_proxy_with_permissions() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let (a, b) = pair().await?;
    let dir = tempfile::tempdir()?;
    let target_path = dir.path().join("target.sock");
    let target = UnixListener::bind(&target_path)?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = target.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                if s.read_to_end(&mut got).await.is_ok() {
                    let _ = s.write_all(b"unix:").await;
                    let _ = s.write_all(&got).await;
                }
            });
        }
    });
    let tls = TlsRegistry::new();
    let _client = unix::start_client(
        &b,
        &UnixSocketClientConfig {
            service: "sock".into(),
            filename: target_path.clone(),
            tls: None,
        },
        &tls,
    )
    .await?;
    let ad = advertised(&a, "beta", "sock").await?;
    assert_eq!(
        ad.tags,
        Some(tags(
            "Unix Proxy",
            "filename",
            &target_path.display().to_string()
        ))
    );
    let entry: PathBuf = dir.path().join("entry.sock");
    let server = unix::start_server(
        &a,
        &UnixSocketServerConfig {
            filename: entry.clone(),
            permissions: 0o640,
            remote_node: "beta".into(),
            remote_service: "sock".into(),
            tls: None,
        },
        &tls,
    )
    .await?;
    let mode = std::fs::metadata(&entry)?.permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    let mut s = UnixStream::connect(&entry).await?;
    s.write_all(b"hello").await?;
    s.shutdown().await?;
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut got)).await??;
    assert_eq!(got, b"unix:hello");
    // Stopping the proxy removes its socket file.
    drop(server);
    let deadline = Instant::now() + WAIT;
    while entry.exists() {
        anyhow::ensure!(Instant::now() < deadline, "socket file left behind");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
async fn udp_proxy_passes_datagrams_per_peer() -> TestResult {
    let (a, b) = pair().await?;
    // The target echoes each datagram with a prefix, to whoever sent it.
    let target = UdpSocket::bind("127.0.0.1:0").await?;
    let target_addr = target.local_addr()?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = target.recv_from(&mut buf).await {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = target.send_to(&reply, from).await;
        }
    });
    let _client = udp::start_client(
        &b,
        &UdpClientConfig {
            service: "dns".into(),
            address: target_addr.to_string(),
        },
    )
    .await?;
    let ad = advertised(&a, "beta", "dns").await?;
    assert_eq!(ad.conn_type, 0);
    assert_eq!(
        ad.tags,
        Some(tags("UDP Proxy", "address", &target_addr.to_string()))
    );
    let server = udp::start_server(
        &a,
        &UdpServerConfig {
            port: 0,
            bind_addr: "127.0.0.1".into(),
            remote_node: "beta".into(),
            remote_service: "dns".into(),
        },
    )
    .await?;
    let entry = server.local_addr().context("bound address")?;
    // Two peers, each gets its own answers; datagram boundaries are kept.
    let p1 = UdpSocket::bind("127.0.0.1:0").await?;
    let p2 = UdpSocket::bind("127.0.0.1:0").await?;
    for (peer, name) in [(&p1, "one"), (&p2, "two")] {
        peer.connect(entry).await?;
        let mut buf = vec![0u8; 65536];
        // UDP may lose the very first datagrams while the mesh sockets are set up.
        let deadline = Instant::now() + WAIT;
        loop {
            peer.send(name.as_bytes()).await?;
            match tokio::time::timeout(Duration::from_millis(500), peer.recv(&mut buf)).await {
                Ok(n) => {
                    assert_eq!(&buf[..n?], format!("echo:{name}").as_bytes());
                    break;
                }
                Err(_) => anyhow::ensure!(Instant::now() < deadline, "no answer for {name}"),
            }
        }
        let big = vec![b'x'; 8000];
        peer.send(&big).await?;
        let n = tokio::time::timeout(WAIT, peer.recv(&mut buf)).await??;
        assert_eq!(n, 5 + big.len());
    }
    Ok(())
}

/// A control service for `mesh` with `connect`, served on the mesh service `control`.
async fn control_on(mesh: &Mesh) -> anyhow::Result<(ControlService, ServiceHandle)> {
    let registry = CommandRegistry::new();
    registry.register(Arc::new(ConnectCommand::new(
        mesh.clone(),
        Arc::new(TlsRegistry::new()),
    )))?;
    let control = ControlService::for_mesh(mesh, registry, None)?;
    let handle = control::serve_mesh(mesh, &control, "control", None).await?;
    Ok((control, handle))
}

#[tokio::test]
async fn control_service_on_the_mesh_and_connect() -> TestResult {
    let (a, b) = pair().await?;
    let (control_a, _ha) = control_on(&a).await?;
    let (_control_b, _hb) = control_on(&b).await?;
    let ad = advertised(&a, "beta", "control").await?;
    assert_eq!(
        ad.tags,
        Some(BTreeMap::from([(
            "type".to_owned(),
            "Control Service".to_owned()
        )]))
    );

    // A session on alpha's control service, through an in-memory pipe.
    let (client, server) = tokio::io::duplex(64 * 1024);
    let session = tokio::spawn({
        let control_a = control_a.clone();
        async move {
            control_a
                .serve_stream(server, crate::control::PeerKind::Unix)
                .await
        }
    });
    let (r, mut w) = tokio::io::split(client);
    let mut r = BufReader::new(r);
    let mut line = String::new();
    r.read_line(&mut line).await?;
    assert_eq!(line, "Receptor Control, node alpha\n");
    for (cmd, reply) in [
        ("connect beta", "ERROR: no connect target\n"),
        ("connect a b c d", "ERROR: too many parameters\n"),
        (
            "connect beta control nosuchtls",
            "ERROR: unknown TLS config nosuchtls\n",
        ),
        ("connect gamma control", "ERROR: no route to node\n"),
        ("connect beta nosuchsvc", "ERROR: service name too long\n"),
        ("connect beta nosvc", "ERROR: context canceled\n"),
    ] {
        w.write_all(format!("{cmd}\n").as_bytes()).await?;
        line.clear();
        tokio::time::timeout(WAIT, r.read_line(&mut line)).await??;
        assert_eq!(line, reply, "reply to {cmd}");
    }
    w.write_all(b"connect beta control \n").await?;
    for expected in ["Connecting\n", "Receptor Control, node beta\n"] {
        line.clear();
        tokio::time::timeout(WAIT, r.read_line(&mut line)).await??;
        assert_eq!(line, expected);
    }
    w.write_all(b"{\"command\":\"status\",\"requested_fields\":[\"NodeID\"]}\n")
        .await?;
    line.clear();
    tokio::time::timeout(WAIT, r.read_line(&mut line)).await??;
    assert_eq!(line, "{\"NodeID\":\"beta\"}\n");
    // Half-close: beta's session ends, the bridge ends, alpha's session ends.
    w.shutdown().await?;
    let mut rest = String::new();
    tokio::time::timeout(WAIT, r.read_to_string(&mut rest)).await??;
    assert_eq!(rest, "");
    tokio::time::timeout(WAIT, session).await??;
    Ok(())
}

/// A CA and one certificate (nodes alpha and beta, IP 127.0.0.1) made by our certificate
/// commands; the TLS registry of `node` with `tls-server` `srv` and `tls-client` `cli`.
fn tls_registry(dir: &std::path::Path, node: &str) -> anyhow::Result<TlsRegistry> {
    let p = |n: &str| dir.join(n).display().to_string();
    if !dir.join("node.crt").exists() {
        crate::certs::cert_init(&serde_json::json!({
            "commonname": "test ca", "bits": 2048, "outcert": p("ca.crt"), "outkey": p("ca.key"),
        }))?;
        crate::certs::cert_makereq(&serde_json::json!({
            "commonname": "node", "bits": 2048, "ipaddress": ["127.0.0.1"],
            "nodeid": ["alpha", "beta"], "outreq": p("node.csr"), "outkey": p("node.key"),
        }))?;
        crate::certs::cert_signreq(&serde_json::json!({
            "req": p("node.csr"), "cacert": p("ca.crt"), "cakey": p("ca.key"),
            "outcert": p("node.crt"), "verify": true,
        }))?;
    }
    Ok(TlsRegistry::from_sections(
        node,
        &[serde_json::json!({"name": "srv", "cert": p("node.crt"), "key": p("node.key")})],
        &[
            serde_json::json!({"name": "cli", "cert": p("node.crt"), "key": p("node.key"), "rootcas": p("ca.crt")}),
        ],
    )?)
}

#[tokio::test]
async fn tcp_proxy_with_tls_on_every_leg() -> TestResult {
    let (a, b) = pair().await?;
    let dir = tempfile::tempdir()?;
    let tls_a = tls_registry(dir.path(), "alpha")?;
    let tls_b = tls_registry(dir.path(), "beta")?;

    // The target speaks TLS (srv) and echoes.
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_b.server("srv")?.backend_config());
    let target = TcpListener::bind("127.0.0.1:0").await?;
    let target_addr = target.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = target.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(s).await {
                    let (mut r, mut w) = tokio::io::split(tls);
                    if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                        let _ = w.shutdown().await;
                    }
                }
            });
        }
    });
    // beta: mesh service with user TLS (ConnType 2), TLS towards the target.
    let mut client_cfg = tcp_client("secure", &target_addr.to_string());
    client_cfg.tls_server = Some("srv".into());
    client_cfg.tls_client = Some("cli".into());
    let _client = tcp::start_client(&b, &client_cfg, &tls_b).await?;
    let ad = advertised(&a, "beta", "secure").await?;
    assert_eq!(ad.conn_type, crate::streams::CONN_TYPE_STREAM_TLS);
    // alpha: TLS listener, user TLS on the mesh.
    let mut server_cfg = tcp_server(0, "beta", "secure");
    server_cfg.tls_server = Some("srv".into());
    server_cfg.tls_client = Some("cli".into());
    let server = tcp::start_server(&a, &server_cfg, &tls_a).await?;
    let port = server.local_addr().context("bound address")?.port();

    let connector = tokio_rustls::TlsConnector::from(tls_a.client("cli")?.backend_config());
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    let tls = connector.connect(name, tcp).await?;
    let (mut r, mut w) = tokio::io::split(tls);
    w.write_all(b"secret").await?;
    w.shutdown().await?;
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, r.read_to_end(&mut got)).await??;
    assert_eq!(got, b"secret");

    // A plain TCP client cannot talk to the TLS listener.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).await?;
    plain.write_all(b"hello\n").await?;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut buf)).await?;
    assert!(!buf.starts_with(b"hello"), "plain text went through");
    Ok(())
}
