//! Mixed meshes with the reference Go receptor 1.6.9.
//!
//! The Go binary comes from `RECEPTOR_REFERENCE_BIN` (default: the Debian build
//! under `/root/.cache/receptor-reference`); these tests fail loudly if it is
//! missing. Go nodes listen on free 127.0.0.1 ports and are queried through their
//! control socket, as `receptorctl` would.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use receptor_core::mesh::{Framing, Incoming, Mesh, MeshError};
use receptor_proto::svcad::ServiceAdvertisement;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::common::*;

const DEFAULT_BIN: &str = "/root/.cache/receptor-reference/root/usr/bin/receptor";

fn reference_bin() -> PathBuf {
    let bin = std::env::var_os("RECEPTOR_REFERENCE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BIN));
    assert!(
        bin.is_file(),
        "reference Go receptor not found at {} (set RECEPTOR_REFERENCE_BIN)",
        bin.display()
    );
    bin
}

/// A Go receptor node with a TCP listener and a control socket.
struct GoNode {
    id: String,
    port: u16,
    control: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
}

impl GoNode {
    /// Starts a Go node; `listener_extra` are additional `--tcp-listener` options.
    async fn start(id: &str, listener_extra: &[&str]) -> GoNode {
        Self::start_with(id, listener_extra, &[]).await
    }

    /// Starts a Go node with more command-line arguments at the end.
    async fn start_with(id: &str, listener_extra: &[&str], more: &[String]) -> GoNode {
        let bin = reference_bin();
        let dir = tempfile::tempdir().expect("tempdir");
        let control = dir.path().join("control.sock");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("receptor.log")).expect("log file");
        let mut cmd = Command::new(bin);
        cmd.arg("--node")
            .arg(format!("id={id}"))
            .arg(format!("datadir={}", dir.path().join("data").display()))
            .args(["--log-level", "debug"])
            .arg("--tcp-listener")
            .arg(format!("port={port}"))
            .arg("bindaddr=127.0.0.1")
            .args(listener_extra)
            .arg("--control-service")
            .arg("service=control")
            .arg(format!("filename={}", control.display()))
            .args(more)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log);
        let child = cmd.spawn().expect("spawn the Go receptor");
        let node = GoNode {
            id: id.to_owned(),
            port,
            control,
            child,
            dir,
        };
        let sock = node.control.clone();
        wait_until(&format!("Go node {id} to start"), 15, || {
            let sock = sock.clone();
            async move { tokio::net::UnixStream::connect(&sock).await.is_ok() }
        })
        .await;
        node
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("receptor.log")).unwrap_or_default()
    }

    /// Sends one control command; returns the reply line.
    async fn command(&self, cmd: &str) -> String {
        control_command(&self.control, cmd).await
    }

    async fn json(&self, cmd: &str) -> Value {
        let line = self.command(cmd).await;
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}"))
    }

    async fn status(&self) -> Value {
        self.json(r#"{"command":"status"}"#).await
    }

    /// Connects `mesh` to this node's listener with a tokio TcpStream.
    async fn connect(&self, mesh: &Mesh, cost: f64) -> Session {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}\n{}", self.id, self.log()));
        let fd = OwnedFd::from(stream.into_std().expect("std stream"));
        spawn_session(mesh, fd, Framing::Len16Le, super::common::cost(cost))
    }
}

impl Drop for GoNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

async fn control_command(sock: &Path, cmd: &str) -> String {
    let stream = tokio::net::UnixStream::connect(sock)
        .await
        .expect("connect to control socket");
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    let greeting = lines.next_line().await.expect("read").expect("greeting");
    assert!(
        greeting.starts_with("Receptor Control, node "),
        "{greeting}"
    );
    w.write_all(format!("{cmd}\n").as_bytes())
        .await
        .expect("write");
    tokio::time::timeout(Duration::from_secs(40), lines.next_line())
        .await
        .expect("reply in time")
        .expect("read")
        .expect("reply line")
}

fn lists_connection(status: &Value, node: &str, cost: f64) -> bool {
    status["Connections"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["NodeID"] == node && c["Cost"].as_f64() == Some(cost))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_lists_and_pings_a_rust_node() {
    let go = GoNode::start("gonode", &[]).await;
    let rust = start("rustnode");
    let _s = go.connect(&rust, 1.0).await;

    // Go's view.
    wait_until("Go to list the Rust node", 15, || async {
        let status = go.status().await;
        lists_connection(&status, "rustnode", 1.0)
            && status["RoutingTable"]["rustnode"] == "rustnode"
            && status["KnownConnectionCosts"]["rustnode"]["gonode"].as_f64() == Some(1.0)
    })
    .await;
    // Replies need the Rust node's route back.
    wait_routes(&rust, &["gonode"]).await;
    let ping = go.json(r#"{"command":"ping","target":"rustnode"}"#).await;
    assert_eq!(ping["Success"], true, "{ping}\n{}", go.log());
    assert_eq!(ping["From"], "rustnode");

    // The Rust view.
    wait_routes(&rust, &["gonode"]).await;
    let st = rust.status().await;
    assert_eq!(st.connections.len(), 1);
    assert_eq!(st.connections[0].node_id, "gonode");
    assert_eq!(st.known_connection_costs["gonode"]["rustnode"], 1.0);
    let r = rust.ping("gonode", 30).await;
    assert_eq!((r.from.as_str(), r.error), ("gonode", None));

    // Unknown service on the Go node: Go answers with an unreachable notice.
    let mut pc = rust.listen(None, None).await.expect("listen");
    pc.send_to("gonode", "nosvc", b"hi").await.expect("send");
    match tokio::time::timeout(Duration::from_secs(5), pc.recv()).await {
        Ok(Ok(Incoming::Unreachable {
            reported_by,
            problem,
            to_service,
            ..
        })) => {
            assert_eq!(reported_by, "gonode");
            assert_eq!(problem, "service unknown");
            assert_eq!(to_service, "nosvc");
        }
        other => panic!("unexpected {other:?}"),
    }

    // Go's control service ad reaches us (Go sends its ads 5 s after start).
    wait_until("the Go control service ad", 12, || async {
        rust.status().await.advertisements.iter().any(|a| {
            a.node_id == "gonode"
                && a.service == "control"
                && a.conn_type == 1
                && a.tags
                    .as_ref()
                    .and_then(|t| t.get("type"))
                    .map(String::as_str)
                    == Some("Control Service")
        })
    })
    .await;

    // An advertised Rust service shows up in Go's status (ads go out after 5 s).
    let ad = ServiceAdvertisement {
        node_id: "rustnode".into(),
        service: "echo".into(),
        time: String::new(),
        conn_type: 0,
        tags: Some(
            [("type".to_owned(), "rust echo".to_owned())]
                .into_iter()
                .collect(),
        ),
        work_commands: None,
    };
    let _echo = rust.listen(Some("echo"), Some(ad)).await.expect("listen");
    wait_until("Go to list the Rust service ad", 12, || async {
        let st = go.status().await;
        st["Advertisements"].as_array().is_some_and(|ads| {
            ads.iter().any(|a| {
                a["NodeID"] == "rustnode"
                    && a["Service"] == "echo"
                    && a["Tags"]["type"] == "rust echo"
            })
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_traceroutes_through_a_go_node() {
    let go = GoNode::start("gohub", &[]).await;
    let r1 = start("rust1");
    let r2 = start("rust2");
    let _s1 = go.connect(&r1, 1.0).await;
    let _s2 = go.connect(&r2, 1.0).await;
    wait_routes(&r1, &["gohub", "rust2"]).await;
    wait_routes(&r2, &["gohub", "rust1"]).await;
    assert_eq!(r1.status().await.routing_table["rust2"], "gohub");
    let hops: Vec<(String, Option<String>)> = {
        let mut v = Vec::new();
        for i in 0..=30u8 {
            let r = r1.ping("rust2", i).await;
            let done = r.error.as_deref() != Some("message expired");
            v.push((r.from, r.error));
            if done {
                break;
            }
        }
        v
    };
    assert_eq!(
        hops,
        vec![
            ("rust1".to_owned(), Some("message expired".to_owned())),
            ("gohub".to_owned(), Some("message expired".to_owned())),
            ("rust2".to_owned(), None),
        ],
        "{}",
        go.log()
    );
    // And Go's traceroute to a Rust node.
    let tr = go
        .json(r#"{"command":"traceroute","target":"rust2"}"#)
        .await;
    assert_eq!(tr["0"]["From"], "gohub", "{tr}");
    assert_eq!(tr["1"]["From"], "rust2", "{tr}");
    assert!(tr["1"].get("Error").is_none(), "{tr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_go_nodes_talk_through_a_rust_node() {
    let go1 = GoNode::start("goleft", &[]).await;
    let go2 = GoNode::start("goright", &[]).await;
    let rust = start("rustmid");
    let _s1 = go1.connect(&rust, 1.0).await;
    let _s2 = go2.connect(&rust, 1.0).await;
    wait_until(
        "the Go nodes to route to each other via rustmid",
        20,
        || async {
            go1.status().await["RoutingTable"]["goright"] == "rustmid"
                && go2.status().await["RoutingTable"]["goleft"] == "rustmid"
        },
    )
    .await;
    let ping = go1.json(r#"{"command":"ping","target":"goright"}"#).await;
    assert_eq!(ping["Success"], true, "{ping}");
    assert_eq!(ping["From"], "goright");
    let ping = go2.json(r#"{"command":"ping","target":"goleft"}"#).await;
    assert_eq!(ping["Success"], true, "{ping}");
    // Traceroute from Go: hop 1 expires at the Rust node, which must say so.
    let tr = go1
        .json(r#"{"command":"traceroute","target":"goright"}"#)
        .await;
    assert_eq!(tr["0"]["From"], "goleft", "{tr}");
    assert_eq!(tr["1"]["From"], "rustmid", "{tr}");
    assert!(tr["1"].get("Error").is_none(), "{tr}");
    assert_eq!(tr["2"]["From"], "goright", "{tr}");
    // Streams (QUIC over the datagram layer) between the Go nodes cross the Rust
    // node too: connect to the other node's control service.
    let stream = tokio::net::UnixStream::connect(&go1.control)
        .await
        .expect("connect");
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    lines.next_line().await.expect("read").expect("greeting");
    w.write_all(b"connect goright control\n")
        .await
        .expect("write");
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("in time")
        .expect("read")
        .expect("line");
    assert_eq!(line, "Connecting");
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("in time")
        .expect("read")
        .expect("line");
    assert_eq!(line, "Receptor Control, node goright");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_node_costs_must_agree() {
    let go = GoNode::start("gocost", &[r#"nodecost={"rust25":2.5}"#]).await;
    // nodecost 2.5 on the Go side, 2.5 on ours: accepted.
    let r25 = start("rust25");
    let _s = go.connect(&r25, 2.5).await;
    wait_until("Go to accept cost 2.5", 15, || async {
        let st = go.status().await;
        lists_connection(&st, "rust25", 2.5)
            && st["KnownConnectionCosts"]["rust25"]["gocost"].as_f64() == Some(2.5)
    })
    .await;
    // Cost 2 against Go's 1: the link is dropped.
    let bad = start("rustbad");
    let s = go.connect(&bad, 2.0).await;
    let res = tokio::time::timeout(Duration::from_secs(15), s)
        .await
        .expect("the mismatched session ends")
        .expect("join");
    assert!(
        matches!(&res, Err(MeshError::Other(m)) if m.contains("disagree")) || res.is_ok(),
        "{res:?}"
    );
    let st = go.status().await;
    assert!(!lists_connection(&st, "rustbad", 2.0), "{st}");
    assert!(
        lists_connection(&st, "rust25", 2.5),
        "the good link survives: {st}"
    );
    wait_routes(&r25, &["gocost"]).await;
    let r = r25.ping("gocost", 30).await;
    assert_eq!(r.error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_dialer_connects_to_a_rust_listener() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let rust = start("rustlisten");
    let peer = vec!["--tcp-peer".to_owned(), format!("address=127.0.0.1:{port}")];
    let go = GoNode::start_with("godialer", &[], &peer).await;
    let (stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("Go dials in time")
        .expect("accept");
    let fd = OwnedFd::from(stream.into_std().expect("std"));
    let _s = spawn_session(&rust, fd, Framing::Len16Le, super::common::cost(1.0));
    wait_routes(&rust, &["godialer"]).await;
    wait_until("Go to route to the Rust listener", 15, || async {
        go.status().await["RoutingTable"]["rustlisten"] == "rustlisten"
    })
    .await;
    let ping = go.json(r#"{"command":"ping","target":"rustlisten"}"#).await;
    assert_eq!(ping["Success"], true, "{ping}");
    let r = rust.ping("godialer", 30).await;
    assert_eq!((r.from.as_str(), r.error), ("godialer", None));
}
