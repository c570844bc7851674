//! Streams over real [`Mesh`] nodes: Rust-to-Rust over backend sessions (directly and
//! through a relay), and against the Go receptor 1.6.9 reference binary (skipped with a
//! message when it is not installed).

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};

use super::tests::{echo_through, random_bytes, spawn_echo, TestResult, WAIT};
use super::*;
use crate::mesh::{Framing, Mesh, MeshOptions, SessionParams};

fn start(id: &str) -> Mesh {
    Mesh::start(MeshOptions {
        node_id: id.to_owned(),
        max_idle: Duration::from_secs(21),
    })
}

fn params() -> SessionParams {
    SessionParams {
        cost: 1.0,
        ..SessionParams::default()
    }
}

/// Joins two nodes with a backend session over a unix socket pair.
fn link(a: &Mesh, b: &Mesh) -> anyhow::Result<()> {
    let (x, y) = std::os::unix::net::UnixStream::pair()?;
    for (mesh, end) in [(a.clone(), x), (b.clone(), y)] {
        tokio::spawn(async move {
            let _ = mesh
                .run_session(OwnedFd::from(end), Framing::Len16Le, params())
                .await;
        });
    }
    Ok(())
}

/// Waits until `mesh` has a route to every node in `to`.
async fn routes(mesh: &Mesh, to: &[&str]) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let table = mesh.status().await.routing_table;
        if to.iter().all(|n| table.contains_key(*n)) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "no routes to {to:?}: {table:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn echo_between_two_meshes() -> TestResult {
    let (a, b) = (start("alpha"), start("beta"));
    link(&a, &b)?;
    routes(&a, &["beta"]).await?;
    routes(&b, &["alpha"]).await?;
    let mut tags = BTreeMap::new();
    tags.insert("type".to_owned(), "echo".to_owned());
    let listener = listen_with(
        &b,
        "echo",
        ListenOptions {
            advertise: true,
            tags: Some(tags.clone()),
            ..ListenOptions::default()
        },
    )
    .await?;
    spawn_echo(listener);

    // The advertisement reaches the other node with ConnType 1 and the tags.
    let deadline = Instant::now() + WAIT;
    loop {
        let ads = a.status().await.advertisements;
        if let Some(ad) = ads
            .iter()
            .find(|ad| ad.node_id == "beta" && ad.service == "echo")
        {
            assert_eq!(ad.conn_type, CONN_TYPE_STREAM);
            assert_eq!(ad.tags.as_ref(), Some(&tags));
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "no advertisement: {ads:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let data = Arc::new(random_bytes(10 * 1024 * 1024, 11));
    let stream = dial(&a, "beta", "echo", None).await?;
    assert_eq!(stream.remote_node(), "beta");
    let conn = stream.connection().clone();
    let back = echo_through(stream, data.clone()).await?;
    // Between Rust nodes, datagrams grow past quic-go's 1452 bytes.
    let mtu = conn.stats().path.current_mtu;
    assert!(mtu > 1452, "path MTU {mtu}");
    assert_eq!(back.len(), data.len());
    assert!(back == *data, "echoed bytes differ");

    // Half-close over the real mesh.
    let mut s = dial(&a, "beta", "echo", None).await?;
    s.write_all(b"half").await?;
    s.shutdown().await?;
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut got)).await??;
    assert_eq!(got, b"half");
    s.close().await;

    // A node can dial its own services, also as `localhost`.
    spawn_echo(listen(&a, "mine", None).await?);
    for name in ["alpha", "localhost"] {
        let s = dial(&a, name, "mine", None).await?;
        assert_eq!(s.remote_node(), "alpha");
        let back = echo_through(s, Arc::new(b"self".to_vec())).await?;
        assert_eq!(back, b"self");
    }

    // Unknown services fail on the mesh's unreachable notice, at once.
    let started = Instant::now();
    let err = dial(&a, "beta", "nosuch", None).await.err();
    assert!(
        matches!(err, Some(StreamError::ServiceUnknown { .. })),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // Unknown nodes have no route.
    let err = dial(&a, "gamma", "echo", None).await.err();
    assert!(matches!(err, Some(StreamError::NoRoute(_))), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn stream_through_a_relay_node() -> TestResult {
    let (a, r, b) = (start("alpha"), start("relay"), start("beta"));
    link(&a, &r)?;
    link(&r, &b)?;
    routes(&a, &["beta"]).await?;
    routes(&b, &["alpha"]).await?;
    let mut listener = listen(&b, "far", None).await?;
    let data = Arc::new(random_bytes(2 * 1024 * 1024, 12));
    let expected = data.clone();
    let server = tokio::spawn(async move {
        let (mut s, node) = listener.accept().await?;
        anyhow::ensure!(node == "alpha", "accepted from {node}");
        let mut got = Vec::new();
        s.read_to_end(&mut got).await?;
        anyhow::ensure!(got == *expected, "relay corrupted the stream");
        s.write_all(b"done").await?;
        Ok::<_, anyhow::Error>(s)
    });
    let mut s = dial(&a, "beta", "far", None).await?;
    s.write_all(&data).await?;
    s.shutdown().await?;
    let mut answer = [0u8; 4];
    tokio::time::timeout(WAIT, s.read_exact(&mut answer)).await??;
    assert_eq!(&answer, b"done");
    let _server_stream = server.await??;
    Ok(())
}

#[tokio::test]
async fn node_shutdown_ends_streams_and_listeners() -> TestResult {
    let (a, b) = (start("alpha"), start("beta"));
    link(&a, &b)?;
    routes(&a, &["beta"]).await?;
    let mut listener = listen(&b, "svc", None).await?;
    let mut s = dial(&a, "beta", "svc", None).await?;
    let (_server, _) = tokio::time::timeout(WAIT, listener.accept()).await??;
    a.shutdown().await;
    let mut buf = [0u8; 1];
    let res = tokio::time::timeout(WAIT, s.read(&mut buf)).await?;
    assert!(res.is_err(), "read after shutdown: {res:?}");
    b.shutdown().await;
    let res = tokio::time::timeout(WAIT, listener.accept()).await?;
    assert!(matches!(res, Err(StreamError::ListenerClosed)), "{res:?}");
    Ok(())
}

// ---- Go receptor 1.6.9 ----

/// A running Go receptor; killed on drop.
struct GoNode {
    _child: tokio::process::Child,
    port: u16,
    control: PathBuf,
    _dir: tempfile::TempDir,
}

fn reference_binary() -> Option<PathBuf> {
    let p = std::env::var_os("RECEPTOR_REFERENCE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root/.cache/receptor-reference/root/usr/bin/receptor"));
    p.exists().then_some(p)
}

async fn start_go(id: &str) -> anyhow::Result<Option<GoNode>> {
    let Some(bin) = reference_binary() else {
        eprintln!("reference receptor not installed: Go interop test skipped");
        return Ok(None);
    };
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let control = dir.path().join("go.sock");
    let cfg = format!(
        "---\n- node:\n    id: {id}\n    datadir: {data}\n- log-level: debug\n- tcp-listener:\n    bindaddr: 127.0.0.1\n    port: {port}\n- control-service:\n    service: control\n    filename: {sock}\n",
        data = dir.path().join("data").display(),
        sock = control.display(),
    );
    let cfg_path = dir.path().join("go.yml");
    std::fs::write(&cfg_path, cfg)?;
    let log = std::fs::File::create(dir.path().join("go.log"))?;
    let child = tokio::process::Command::new(bin)
        .arg("--config")
        .arg(&cfg_path)
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()?;
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() || !control.exists() {
        anyhow::ensure!(Instant::now() < deadline, "Go receptor did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Some(GoNode {
        _child: child,
        port,
        control,
        _dir: dir,
    }))
}

/// A Rust node with a TCP session to the Go node, routes known both ways.
async fn rust_node_linked_to(go: &GoNode, id: &str) -> anyhow::Result<Mesh> {
    let mesh = start(id);
    let tcp = TcpStream::connect(("127.0.0.1", go.port))
        .await?
        .into_std()?;
    let m = mesh.clone();
    tokio::spawn(async move {
        let _ = m
            .run_session(OwnedFd::from(tcp), Framing::Len16Le, params())
            .await;
    });
    routes(&mesh, &["gonode"]).await?;
    // Go must know us too before it can answer (it drops DATA from unknown nodes).
    let mut ctl = go_control(go).await?;
    let deadline = Instant::now() + WAIT;
    loop {
        ctl.get_mut().write_all(b"status\n").await?;
        let status = read_line(&mut ctl).await?;
        if status.contains(&format!("\"{id}\":\"{id}\"")) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "Go has no route to {id}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(mesh)
}

async fn go_control(go: &GoNode) -> anyhow::Result<BufReader<UnixStream>> {
    let mut ctl = BufReader::new(UnixStream::connect(&go.control).await?);
    assert_eq!(
        read_line(&mut ctl).await?,
        "Receptor Control, node gonode\n"
    );
    Ok(ctl)
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> anyhow::Result<String> {
    let mut line = String::new();
    tokio::time::timeout(WAIT, r.read_line(&mut line)).await??;
    Ok(line)
}

#[tokio::test]
async fn rust_mesh_dials_go_control_service() -> TestResult {
    let Some(go) = start_go("gonode").await? else {
        return Ok(());
    };
    let mesh = rust_node_linked_to(&go, "rustnode").await?;
    let s = dial(&mesh, "gonode", "control", None).await?;
    let mut s = BufReader::new(s);
    assert_eq!(read_line(&mut s).await?, "Receptor Control, node gonode\n");
    s.get_mut().write_all(b"status\n").await?;
    let status = read_line(&mut s).await?;
    let v: serde_json::Value = serde_json::from_str(&status).context(status.clone())?;
    assert_eq!(v["NodeID"], "gonode");
    assert!(status.contains("rustnode"), "{status}");
    // quic-go reads at most 1452 bytes per datagram.
    let mtu = s.get_ref().connection_stats().path.current_mtu;
    assert!(mtu <= 1452, "path MTU to Go {mtu}");
    // Half-close: Go finishes and closes its side.
    s.get_mut().shutdown().await?;
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut rest)).await??;
    s.into_inner().close().await;

    // Unknown Go services fail promptly.
    let started = Instant::now();
    let err = dial(&mesh, "gonode", "nosuch", None).await.err();
    assert!(
        matches!(err, Some(StreamError::ServiceUnknown { .. })),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    Ok(())
}

#[tokio::test]
async fn go_connects_to_rust_mesh_listener() -> TestResult {
    let Some(go) = start_go("gonode").await? else {
        return Ok(());
    };
    let mesh = rust_node_linked_to(&go, "rustnode").await?;
    let mut listener = listen(&mesh, "rsvc", None).await?;
    let server = tokio::spawn(async move {
        let (s, node) = listener.accept().await?;
        anyhow::ensure!(node == "gonode", "accepted from {node}");
        let conn = s.connection().clone();
        let (mut r, mut w) = s.into_split();
        let n = tokio::io::copy(&mut r, &mut w).await?;
        w.shutdown().await?;
        let mtu = conn.stats().path.current_mtu;
        anyhow::ensure!((1200..=1452).contains(&mtu), "path MTU to Go {mtu}");
        Ok::<_, anyhow::Error>(n)
    });
    let mut ctl = go_control(&go).await?;
    ctl.get_mut().write_all(b"connect rustnode rsvc\n").await?;
    assert_eq!(read_line(&mut ctl).await?, "Connecting\n");
    let payload = random_bytes(1024 * 1024, 13);
    let (mut ur, mut uw) = tokio::io::split(ctl);
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        uw.write_all(&sent).await?;
        uw.shutdown().await?;
        Ok::<_, std::io::Error>(uw)
    });
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, ur.read_to_end(&mut back)).await??;
    let _uw = writer.await??;
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "echo through Go differs");
    assert_eq!(server.await??, payload.len() as u64);

    // A service the Rust node does not have: Go's dial fails on our unreachable notice.
    let mut ctl = go_control(&go).await?;
    ctl.get_mut().write_all(b"connect rustnode nosvc\n").await?;
    assert_eq!(read_line(&mut ctl).await?, "ERROR: context canceled\n");
    Ok(())
}
