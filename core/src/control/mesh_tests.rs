//! `status`, `ping` and `traceroute` against real mesh nodes: two nodes `foo` and
//! `bar` joined by a socketpair, foo's control service driven over a duplex stream.
//!
//! These need the mesh driver (`Mesh::start`); until it is merged they are ignored.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use receptor_proto::svcad::{ServiceAdvertisement, WorkCommand};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::command::PeerKind;
use super::{CommandRegistry, ControlService};
use crate::mesh::{Framing, Mesh, MeshOptions, PacketConn, SessionParams};

const DEADLINE: Duration = Duration::from_secs(20);

struct Pair {
    foo: Mesh,
    bar: Mesh,
    _ads: Vec<PacketConn>,
}

fn start(node_id: &str) -> Mesh {
    Mesh::start(MeshOptions {
        node_id: node_id.to_owned(),
        max_idle: Duration::from_secs(30),
    })
}

fn control_ad(node: &str) -> ServiceAdvertisement {
    ServiceAdvertisement {
        node_id: node.to_owned(),
        service: "control".to_owned(),
        time: String::new(),
        conn_type: 1,
        tags: Some([("type".to_owned(), "Control Service".to_owned())].into()),
        work_commands: None,
    }
}

/// Starts foo and bar, links them, advertises both control services and waits until
/// foo knows a route to bar and bar's advertisement.
async fn pair() -> Pair {
    let foo = start("foo");
    let bar = start("bar");
    let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    for (mesh, end) in [(foo.clone(), a), (bar.clone(), b)] {
        end.set_nonblocking(true).expect("nonblocking");
        let fd = OwnedFd::from(end);
        let params = SessionParams {
            cost: 1.0,
            ..SessionParams::default()
        };
        tokio::spawn(async move { mesh.run_session(fd, Framing::Len16Le, params).await });
    }
    foo.set_work_commands(vec![WorkCommand {
        work_type: "cat".to_owned(),
        secure: false,
    }])
    .await;
    let mut ads = Vec::new();
    for (mesh, node) in [(&foo, "foo"), (&bar, "bar")] {
        ads.push(
            mesh.listen(Some("control"), Some(control_ad(node)))
                .await
                .expect("advertise control"),
        );
    }
    let started = Instant::now();
    loop {
        let status = foo.status().await;
        let routed = status.routing_table.get("bar").map(String::as_str) == Some("bar");
        let advertised = status.advertisements.iter().any(|ad| ad.node_id == "bar");
        if routed && advertised {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "foo never learned about bar");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Pair {
        foo,
        bar,
        _ads: ads,
    }
}

struct Client {
    reader: BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
    writer: tokio::io::WriteHalf<tokio::io::DuplexStream>,
}

impl Client {
    async fn start(service: &ControlService) -> Client {
        let (client, server) = tokio::io::duplex(1 << 16);
        let service = service.clone();
        tokio::spawn(async move { service.serve_stream(server, PeerKind::Unix).await });
        let (read, write) = tokio::io::split(client);
        let mut client = Client {
            reader: BufReader::new(read),
            writer: write,
        };
        assert_eq!(client.line().await, "Receptor Control, node foo");
        client
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        let read = tokio::time::timeout(DEADLINE, self.reader.read_line(&mut line)).await;
        assert!(matches!(read, Ok(Ok(n)) if n > 0), "no reply line");
        line.trim_end_matches('\n').to_owned()
    }

    async fn ask(&mut self, command: &str) -> String {
        let line = format!("{command}\n");
        self.writer.write_all(line.as_bytes()).await.expect("write");
        self.line().await
    }

    async fn ask_json(&mut self, command: &str) -> Value {
        let reply = self.ask(command).await;
        serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{e}: {reply}"))
    }
}

fn service(pair: &Pair) -> ControlService {
    ControlService::for_mesh(&pair.foo, CommandRegistry::new(), None).expect("builtins")
}

#[tokio::test]
async fn status_reports_the_mesh() {
    let pair = pair().await;
    let mut c = Client::start(&service(&pair)).await;

    let raw = c.ask("status").await;
    let keys: Vec<&str> = [
        "Advertisements",
        "Connections",
        "KnownConnectionCosts",
        "NodeID",
        "RoutingTable",
        "SystemCPUCount",
        "SystemMemoryMiB",
        "Version",
    ]
    .to_vec();
    let positions: Vec<usize> = keys
        .iter()
        .map(|k| {
            let key = format!("\"{k}\":");
            // "NodeID" also stands inside advertisements and connections, which come
            // before the top-level key: take its last occurrence.
            let found = if *k == "NodeID" {
                raw.rfind(&key)
            } else {
                raw.find(&key)
            };
            found.unwrap_or(usize::MAX)
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "key order: {raw}"
    );
    assert!(
        raw.starts_with(r#"{"Advertisements":[{"NodeID":""#),
        "{raw}"
    );

    let status: Value = serde_json::from_str(&raw).expect("json");
    assert_eq!(status["NodeID"], "foo");
    assert_eq!(status["Version"], "1.6.9");
    assert_eq!(
        status["Connections"],
        serde_json::json!([{"NodeID": "bar", "Cost": 1}])
    );
    assert_eq!(status["RoutingTable"], serde_json::json!({"bar": "bar"}));
    assert_eq!(
        status["KnownConnectionCosts"],
        serde_json::json!({"bar": {"foo": 1}, "foo": {"bar": 1}})
    );
    assert!(status["SystemCPUCount"].as_u64().unwrap_or(0) >= 1);
    assert!(status["SystemMemoryMiB"].as_u64().unwrap_or(0) >= 1);
    let ads = status["Advertisements"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let own = ads
        .iter()
        .find(|ad| ad["NodeID"] == "foo" && ad["Service"] == "control")
        .expect("foo's control ad");
    assert_eq!(own["ConnType"], 1);
    assert_eq!(own["Tags"], serde_json::json!({"type": "Control Service"}));
    assert_eq!(
        own["WorkCommands"],
        serde_json::json!([{"WorkType": "cat", "Secure": false}])
    );
    assert!(ads.iter().any(|ad| ad["NodeID"] == "bar"));

    assert_eq!(
        c.ask(r#"{"command":"status","requested_fields":["Version","NodeID","Bogus"]}"#)
            .await,
        r#"{"NodeID":"foo","Version":"1.6.9"}"#
    );
    // Go receptor crashes on these; here they are errors and the node keeps serving.
    assert_eq!(
        c.ask(r#"{"command":"status","requested_fields":"Version"}"#)
            .await,
        "ERROR: requested_fields must be a list of strings"
    );
    assert_eq!(
        c.ask(r#"{"command":"status","requested_fields":null}"#)
            .await,
        "ERROR: requested_fields must be a list of strings"
    );
    assert_eq!(
        c.ask("status x").await,
        "ERROR: status command does not take parameters"
    );
    assert_eq!(
        c.ask(r#"{"command":"status","requested_fields":["NodeID"]}"#)
            .await,
        r#"{"NodeID":"foo"}"#
    );
    pair.bar.shutdown().await;
    pair.foo.shutdown().await;
}

fn assert_time(hop: &Value) {
    let nanos = hop["Time"].as_i64().expect("Time in ns");
    assert_eq!(
        hop["TimeStr"],
        receptor_proto::go::duration::go_duration(nanos)
    );
}

#[tokio::test]
async fn ping_and_traceroute_through_the_mesh() {
    let pair = pair().await;
    let mut c = Client::start(&service(&pair)).await;

    for command in [
        "ping bar",
        r#"{"command":"ping","target":"bar"}"#,
        "PING bar",
    ] {
        let reply = c.ask_json(command).await;
        assert_eq!(reply["Success"], true, "{reply}");
        assert_eq!(reply["From"], "bar");
        assert_time(&reply);
    }
    for target in ["foo", "localhost"] {
        let reply = c.ask_json(&format!("ping {target}")).await;
        assert_eq!(reply["From"], "foo", "{reply}");
        assert_eq!(reply["Success"], true);
    }
    assert_eq!(
        c.ask("ping nosuchnode").await,
        r#"{"Error":"no route to node","Success":false}"#
    );
    assert_eq!(c.ask("ping").await, "ERROR: no ping target");
    assert_eq!(
        c.ask(r#"{"command":"ping","target":1}"#).await,
        "ERROR: ping target must be string"
    );

    let trace = c.ask_json("traceroute bar").await;
    let hops = trace.as_object().cloned().unwrap_or_default();
    assert_eq!(hops.len(), 2, "{trace}");
    assert_eq!(hops["0"]["From"], "foo");
    assert_eq!(hops["1"]["From"], "bar");
    assert!(hops.values().all(|h| h.get("Error").is_none()), "{trace}");
    hops.values().for_each(assert_time);

    let trace = c.ask_json("traceroute foo").await;
    assert_eq!(trace.as_object().map(|m| m.len()), Some(1), "{trace}");
    assert_eq!(trace["0"]["From"], "foo");

    let trace = c.ask_json("traceroute nosuchnode").await;
    assert_eq!(trace["0"]["From"], "foo", "{trace}");
    assert_eq!(trace["1"]["Error"], "no route to node");
    assert_eq!(trace["1"]["From"], "foo");
    assert_eq!(c.ask("traceroute").await, "ERROR: no traceroute target");
    pair.bar.shutdown().await;
    pair.foo.shutdown().await;
}
