//! Streams against the real Go receptor 1.6.9.
//!
//! A Go node runs on 127.0.0.1 with a TCP listener and its control service; the Rust side
//! is a one-link netceptor peer ([`LinkPeer`]): just enough of the wire protocol (TCP
//! framing, ROUTE exchange, DATA messages with HighwayHash node names, unreachable
//! notices) to carry stream datagrams over a single session, so that quinn talks to
//! quic-go through Go's datagram layer. The tests are skipped (with a message) when the
//! reference binary is not installed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use highway::{HighwayHash, HighwayHasher, Key};
use receptor_proto::svcad::ServiceAdvertisement;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{mpsc, watch};

use super::socket::lock;
use super::*;
use crate::mesh::{Incoming, MeshError};

type TestResult = anyhow::Result<()>;

const WAIT: Duration = Duration::from_secs(30);

fn hh64(name: &str) -> u64 {
    HighwayHasher::new(Key([0; 4])).hash64(name.as_bytes())
}

#[test]
fn node_name_hash_matches_go() {
    assert_eq!(hh64("gonode"), 0xfc93_93bd_9ab3_4eba);
    assert_eq!(hh64("control"), 0x3bde_e1e3_b5f2_dbcd);
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RouteMsg {
    #[serde(rename = "NodeID")]
    node_id: String,
    #[serde(rename = "UpdateID")]
    update_id: String,
    update_epoch: u64,
    update_sequence: u64,
    connections: HashMap<String, f64>,
    forwarding_node: String,
    suspected_duplicate: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UnreachableMsg {
    to_node: String,
    from_service: String,
    to_service: String,
    problem: String,
}

struct PeerState {
    names: HashMap<u64, String>,
    sockets: HashMap<String, mpsc::Sender<Incoming>>,
    next_ephemeral: u32,
}

/// A Rust node with exactly one backend session, to a Go node.
#[derive(Clone)]
struct LinkPeer {
    id: String,
    frames: mpsc::Sender<Vec<u8>>,
    state: Arc<Mutex<PeerState>>,
    /// The Go node's ID once the session is established.
    remote: watch::Receiver<Option<String>>,
    /// Largest DATA payload sent to the Go node.
    max_sent: Arc<AtomicUsize>,
}

fn service_bytes(s: &str) -> [u8; 8] {
    let mut b = [0u8; 8];
    let n = s.len().min(8);
    b[..n].copy_from_slice(&s.as_bytes()[..n]);
    b
}

fn service_str(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim_end_matches('\0').to_owned()
}

fn data_message(from: &str, from_svc: &str, to: &str, to_svc: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(36 + payload.len());
    m.extend_from_slice(&[0, 29, 0, 0]);
    m.extend_from_slice(&hh64(from).to_be_bytes());
    m.extend_from_slice(&hh64(to).to_be_bytes());
    m.extend_from_slice(&service_bytes(from_svc));
    m.extend_from_slice(&service_bytes(to_svc));
    m.extend_from_slice(payload);
    m
}

impl LinkPeer {
    async fn connect(id: &str, port: u16) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        let (rd, mut wr) = tcp.into_split();
        let (frames, mut frames_rx) = mpsc::channel::<Vec<u8>>(256);
        tokio::spawn(async move {
            while let Some(msg) = frames_rx.recv().await {
                let Ok(len) = u16::try_from(msg.len()) else {
                    continue;
                };
                let mut f = Vec::with_capacity(msg.len() + 2);
                f.extend_from_slice(&len.to_le_bytes());
                f.extend_from_slice(&msg);
                if wr.write_all(&f).await.is_err() {
                    return;
                }
            }
        });
        let mut names = HashMap::new();
        names.insert(hh64(id), id.to_owned());
        let state = Arc::new(Mutex::new(PeerState {
            names,
            sockets: HashMap::new(),
            next_ephemeral: 0,
        }));
        let (remote_tx, remote) = watch::channel(None);
        let peer = LinkPeer {
            id: id.to_owned(),
            frames,
            state,
            remote,
            max_sent: Arc::new(AtomicUsize::new(0)),
        };
        tokio::spawn(peer.clone().read_loop(rd, remote_tx));
        tokio::spawn(peer.clone().route_loop());
        Ok(peer)
    }

    fn route(&self, seq: u64, epoch: u64) -> Vec<u8> {
        let mut connections = HashMap::new();
        if let Some(r) = self.remote.borrow().clone() {
            connections.insert(r, 1.0);
        }
        let msg = RouteMsg {
            node_id: self.id.clone(),
            update_id: format!("U{seq:07}"),
            update_epoch: epoch,
            update_sequence: seq,
            connections,
            forwarding_node: self.id.clone(),
            suspected_duplicate: 0,
        };
        let mut m = vec![1u8];
        m.extend_from_slice(&serde_json::to_vec(&msg).unwrap_or_default());
        m
    }

    /// ROUTE every second until established, then every 5 s (keepalive).
    async fn route_loop(self) {
        let epoch = (time::OffsetDateTime::now_utc().unix_timestamp() as u64) << 24;
        let mut seq = 0;
        loop {
            seq += 1;
            let established = self.remote.borrow().is_some();
            if self.frames.send(self.route(seq, epoch)).await.is_err() {
                return;
            }
            let mut remote = self.remote.clone();
            let pause = if established { 5 } else { 1 };
            let _ = tokio::time::timeout(Duration::from_secs(pause), async {
                if !established {
                    let _ = remote.wait_for(Option::is_some).await;
                }
                std::future::pending::<()>().await
            })
            .await;
        }
    }

    async fn read_loop(
        self,
        rd: tokio::net::tcp::OwnedReadHalf,
        remote_tx: watch::Sender<Option<String>>,
    ) {
        let mut rd = BufReader::new(rd);
        loop {
            let mut len = [0u8; 2];
            if rd.read_exact(&mut len).await.is_err() {
                return;
            }
            let mut msg = vec![0u8; usize::from(u16::from_le_bytes(len))];
            if rd.read_exact(&mut msg).await.is_err() {
                return;
            }
            match msg.first() {
                Some(1) => {
                    let Ok(r) = serde_json::from_slice::<RouteMsg>(&msg[1..]) else {
                        continue;
                    };
                    {
                        let mut st = lock(&self.state);
                        for n in [&r.node_id, &r.forwarding_node] {
                            st.names.insert(hh64(n), n.clone());
                        }
                    }
                    if remote_tx.borrow().is_none() {
                        let _ = remote_tx.send(Some(r.forwarding_node.clone()));
                    }
                }
                Some(0) if msg.len() >= 36 => self.on_data(&msg),
                _ => {}
            }
        }
    }

    fn on_data(&self, msg: &[u8]) {
        let from_hash = u64::from_be_bytes(msg[4..12].try_into().unwrap_or_default());
        let from_svc = service_str(&msg[20..28]);
        let to_svc = service_str(&msg[28..36]);
        let payload = Bytes::copy_from_slice(&msg[36..]);
        let st = lock(&self.state);
        let Some(from) = st.names.get(&from_hash).cloned() else {
            return;
        };
        if to_svc == "unreach" {
            let Ok(u) = serde_json::from_slice::<UnreachableMsg>(&payload) else {
                return;
            };
            if let Some(tx) = st.sockets.get(&u.from_service) {
                let _ = tx.try_send(Incoming::Unreachable {
                    reported_by: from,
                    to_node: u.to_node,
                    to_service: u.to_service,
                    problem: u.problem,
                });
            }
            return;
        }
        match st.sockets.get(&to_svc) {
            Some(tx) => {
                let _ = tx.try_send(Incoming::Data {
                    from_node: from,
                    from_service: from_svc,
                    data: payload,
                });
            }
            None => {
                let body = format!(
                    r#"{{"FromNode":"{from}","ToNode":"{}","FromService":"{from_svc}","ToService":"{to_svc}","Problem":"service unknown"}}"#,
                    self.id
                );
                let m = data_message(&self.id, "unreach", &from, "unreach", body.as_bytes());
                let _ = self.frames.try_send(m);
            }
        }
    }

    async fn established(&self) -> anyhow::Result<String> {
        let mut remote = self.remote.clone();
        let r = tokio::time::timeout(WAIT, remote.wait_for(Option::is_some)).await??;
        r.clone().context("no remote")
    }
}

struct LinkSocket {
    peer: LinkPeer,
    service: String,
    rx: mpsc::Receiver<Incoming>,
}

impl Drop for LinkSocket {
    fn drop(&mut self) {
        lock(&self.peer.state).sockets.remove(&self.service);
    }
}

impl DatagramNetwork for LinkPeer {
    type Socket = LinkSocket;

    fn node_id(&self) -> &str {
        &self.id
    }

    async fn open(
        &self,
        service: Option<&str>,
        _advertise: Option<ServiceAdvertisement>,
    ) -> Result<LinkSocket, MeshError> {
        let mut st = lock(&self.state);
        let service = match service {
            Some(s) => s.to_owned(),
            None => {
                st.next_ephemeral += 1;
                format!("rE{:06}", st.next_ephemeral)
            }
        };
        if st.sockets.contains_key(&service) {
            return Err(MeshError::ServiceInUse(service));
        }
        let (tx, rx) = mpsc::channel(256);
        st.sockets.insert(service.clone(), tx);
        Ok(LinkSocket {
            peer: self.clone(),
            service,
            rx,
        })
    }
}

impl DatagramSocket for LinkSocket {
    fn service(&self) -> &str {
        &self.service
    }

    async fn send_to(&self, node: &str, service: &str, data: &[u8]) -> Result<(), MeshError> {
        if self.peer.remote.borrow().as_deref() != Some(node) {
            return Err(MeshError::NoRoute);
        }
        self.peer.max_sent.fetch_max(data.len(), Ordering::Relaxed);
        let m = data_message(&self.peer.id, &self.service, node, service, data);
        self.peer
            .frames
            .send(m)
            .await
            .map_err(|_| MeshError::Shutdown)
    }

    async fn recv(&mut self) -> Result<Incoming, MeshError> {
        self.rx.recv().await.ok_or(MeshError::Shutdown)
    }
}

/// A running Go receptor; killed on drop.
struct GoNode {
    child: tokio::process::Child,
    port: u16,
    control: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for GoNode {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn reference_binary() -> Option<PathBuf> {
    let p = std::env::var_os("RECEPTOR_REFERENCE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root/.cache/receptor-reference/root/usr/bin/receptor"));
    p.exists().then_some(p)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start_go(id: &str) -> anyhow::Result<Option<GoNode>> {
    let Some(bin) = reference_binary() else {
        eprintln!("reference receptor not installed: Go interop test skipped");
        return Ok(None);
    };
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
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
    let node = GoNode {
        child,
        port,
        control,
        _dir: dir,
    };
    // Wait for the TCP listener and the control socket.
    let deadline = tokio::time::Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() || !node.control.exists() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "Go receptor did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Some(node))
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> anyhow::Result<String> {
    let mut line = String::new();
    tokio::time::timeout(WAIT, r.read_line(&mut line)).await??;
    Ok(line)
}

#[tokio::test]
async fn rust_dials_go_control_service() -> TestResult {
    let Some(go) = start_go("gonode").await? else {
        return Ok(());
    };
    let peer = LinkPeer::connect("rustnode", go.port).await?;
    assert_eq!(peer.established().await?, "gonode");
    let s = dial(&peer, "gonode", "control", None).await?;
    let mut s = BufReader::new(s);
    assert_eq!(read_line(&mut s).await?, "Receptor Control, node gonode\n");
    s.get_mut().write_all(b"status\n").await?;
    let status = read_line(&mut s).await?;
    let v: serde_json::Value = serde_json::from_str(&status).context(status.clone())?;
    assert_eq!(v["NodeID"], "gonode");
    assert!(status.contains("rustnode"), "{status}");
    // Half-close: Go finishes and closes its side; we read EOF.
    s.get_mut().shutdown().await?;
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut rest)).await??;
    s.into_inner().close().await;
    Ok(())
}

#[tokio::test]
async fn rust_dial_to_unknown_go_service_fails_fast() -> TestResult {
    let Some(go) = start_go("gonode").await? else {
        return Ok(());
    };
    let peer = LinkPeer::connect("rustnode", go.port).await?;
    peer.established().await?;
    let started = std::time::Instant::now();
    let err = dial(&peer, "gonode", "nosuch", None).await.err();
    assert!(
        matches!(err, Some(StreamError::ServiceUnknown { .. })),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn go_connects_to_rust_listener() -> TestResult {
    let Some(go) = start_go("gonode").await? else {
        return Ok(());
    };
    let peer = LinkPeer::connect("rustnode", go.port).await?;
    peer.established().await?;
    for (service, key) in [
        ("rsa", InsecureKeyType::Rsa2048),
        ("ecdsa", InsecureKeyType::EcdsaP256),
    ] {
        let mut listener = listen_with(
            &peer,
            service,
            ListenOptions {
                config: StreamConfig {
                    insecure_key: key,
                    ..StreamConfig::default()
                },
                ..ListenOptions::default()
            },
        )
        .await?;
        let server = tokio::spawn(async move {
            let (s, node) = listener.accept().await?;
            anyhow::ensure!(node == "gonode", "accepted from {node}");
            let (mut r, mut w) = s.into_split();
            let n = tokio::io::copy(&mut r, &mut w).await?;
            w.shutdown().await?;
            Ok::<_, anyhow::Error>(n)
        });
        let unix = UnixStream::connect(&go.control).await?;
        let mut unix = BufReader::new(unix);
        assert_eq!(
            read_line(&mut unix).await?,
            "Receptor Control, node gonode\n"
        );
        unix.get_mut()
            .write_all(format!("connect rustnode {service}\n").as_bytes())
            .await?;
        assert_eq!(read_line(&mut unix).await?, "Connecting\n");
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (mut ur, mut uw) = tokio::io::split(unix);
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            uw.write_all(&sent).await?;
            uw.shutdown().await?;
            Ok::<_, std::io::Error>(uw)
        });
        let mut back = Vec::new();
        tokio::time::timeout(WAIT, ur.read_to_end(&mut back)).await??;
        let _uw = writer.await??;
        assert_eq!(back.len(), payload.len(), "echo through Go ({service})");
        assert!(back == payload);
        assert_eq!(server.await??, payload.len() as u64);
    }
    // quic-go reads at most 1452 bytes per datagram.
    let biggest = peer.max_sent.load(Ordering::Relaxed);
    assert!(
        (1200..=1452).contains(&biggest),
        "largest datagram to Go: {biggest}"
    );
    Ok(())
}
