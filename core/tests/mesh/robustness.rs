//! Peers that send bad input: the bad session is dropped or the bad message
//! ignored, and the node keeps serving its other sessions.

use std::os::fd::OwnedFd;
use std::time::Duration;

use receptor_core::mesh::{Framing, Mesh};
use receptor_proto::data::DataHeader;
use receptor_proto::data::ServiceName;
use receptor_proto::hash::node_hash;
use receptor_proto::message::{Message, REJECT_MESSAGE};
use receptor_proto::update::RoutingUpdate;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::common::*;

/// A hand-driven peer speaking raw frames to a node.
struct RawPeer {
    id: String,
    io: UnixStream,
    seq: u64,
}

impl RawPeer {
    /// Connects a raw peer named `id` to `mesh`, whose session gets cost `c`.
    fn connect(mesh: &Mesh, id: &str, c: f64) -> (RawPeer, Session) {
        let (x, y) = std::os::unix::net::UnixStream::pair().expect("pair");
        y.set_nonblocking(true).expect("nonblocking");
        let session = spawn_session(mesh, OwnedFd::from(x), Framing::Len16Le, cost(c));
        let peer = RawPeer {
            id: id.to_owned(),
            io: UnixStream::from_std(y).expect("tokio stream"),
            seq: 0,
        };
        (peer, session)
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("write");
    }

    async fn send(&mut self, msg: &[u8]) {
        let mut frame = (msg.len() as u16).to_le_bytes().to_vec();
        frame.extend_from_slice(msg);
        self.send_raw(&frame).await;
    }

    /// The next message from the node; `None` on EOF or after 3 s of silence.
    async fn recv(&mut self) -> Option<Vec<u8>> {
        let read = async {
            let mut len = [0u8; 2];
            self.io.read_exact(&mut len).await.ok()?;
            let mut msg = vec![0u8; usize::from(u16::from_le_bytes(len))];
            self.io.read_exact(&mut msg).await.ok()?;
            Some(msg)
        };
        tokio::time::timeout(Duration::from_secs(3), read)
            .await
            .ok()
            .flatten()
    }

    fn update(&mut self, node: &str, conns: &[(&str, f64)]) -> Vec<u8> {
        self.seq += 1;
        RoutingUpdate {
            node_id: node.to_owned(),
            update_id: format!("{:08}", self.seq + 1000 * node.len() as u64),
            update_epoch: 77 << 24,
            update_sequence: self.seq,
            connections: conns.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            forwarding_node: self.id.clone(),
            suspected_duplicate: 0,
        }
        .encode()
    }

    /// Identifies itself and lists `node` with `cost`, like a Go node would.
    async fn establish(&mut self, node: &str, cost: f64) {
        let id = self.id.clone();
        let first = self.update(&id, &[]);
        self.send(&first).await;
        let listed = self.update(&id, &[(node, cost)]);
        self.send(&listed).await;
    }
}

async fn healthy(a: &Mesh, b: &str) {
    let r = a.ping(b, 30).await;
    assert_eq!(
        (r.from.as_str(), r.error),
        (b, None),
        "the node stays healthy"
    );
}

async fn ends_with_error(s: Session) -> String {
    let res = tokio::time::timeout(Duration::from_secs(10), s)
        .await
        .expect("the bad session ends")
        .expect("join");
    match res {
        Err(e) => e.to_string(),
        Ok(()) => "eof".to_owned(),
    }
}

async fn connected(a: &Mesh, peer: &str) -> bool {
    a.status()
        .await
        .connections
        .iter()
        .any(|c| c.node_id == peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_length_frame_drops_only_that_connection() {
    let a = start("za");
    let b = start("zb");
    let _ab = link(&a, &b, 1.0);
    wait_routes(&a, &["zb"]).await;
    wait_routes(&b, &["za"]).await;
    let (mut raw, s) = RawPeer::connect(&a, "zraw", 1.0);
    raw.establish("za", 1.0).await;
    wait_until("the raw peer to be connected", 5, || connected(&a, "zraw")).await;
    raw.send_raw(&[0, 0, 1, 2, 3]).await;
    let why = ends_with_error(s).await;
    assert!(why.contains("zero-length frame"), "{why}");
    wait_until("the raw peer to be gone", 5, || async {
        !connected(&a, "zraw").await
    })
    .await;
    healthy(&a, "zb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_messages_are_ignored_and_the_session_keeps_working() {
    let a = start("ga");
    let (mut raw, _s) = RawPeer::connect(&a, "graw", 1.0);
    raw.establish("ga", 1.0).await;
    wait_until("the raw peer to be connected", 5, || connected(&a, "graw")).await;
    let junk: Vec<Vec<u8>> = vec![
        vec![9, 1, 2, 3],                      // unknown type
        b"\x01{\"NodeID\":".to_vec(),          // truncated ROUTE JSON
        b"\x01[1,2,3]".to_vec(),               // ROUTE that is not an object
        b"\x01{\"UpdateEpoch\":1.5}".to_vec(), // fraction in an integer
        b"\x02{\"Time\":\"never\"}".to_vec(),  // SVCAD with a bad time
        b"\x02\xff\xfe".to_vec(),              // SVCAD that is not UTF-8
        vec![0, 29, 0],                        // DATA shorter than its header
        DataHeader {
            hops_to_live: 29,
            from_node: 1,
            to_node: 2,
            from_service: ServiceName::new("x").unwrap_or_default(),
            to_service: ServiceName::new("ping").unwrap_or_default(),
        }
        .encode()
        .to_vec(), // DATA from and to unknown node hashes
        vec![0u8; 5000],                       // DATA of zeros
    ];
    for j in &junk {
        raw.send(j).await;
    }
    // The session still processes messages: announce a neighbour "ghost".
    let upd = raw.update("graw", &[("ga", 1.0), ("ghost", 1.0)]);
    raw.send(&upd).await;
    let ghost = raw.update("ghost", &[("graw", 1.0)]);
    raw.send(&ghost).await;
    wait_until("the ghost to become routable", 5, || async {
        a.status()
            .await
            .routing_table
            .get("ghost")
            .map(String::as_str)
            == Some("graw")
    })
    .await;
    assert!(connected(&a, "graw").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_is_ignored_before_establishment_and_pings_are_answered_after() {
    let a = start("pa");
    let (mut raw, _s) = RawPeer::connect(&a, "praw", 1.0);
    let ping = DataHeader {
        hops_to_live: 29,
        from_node: node_hash("praw"),
        to_node: node_hash("pa"),
        from_service: ServiceName::new("eph12345").unwrap_or_default(),
        to_service: ServiceName::new("ping").unwrap_or_default(),
    }
    .encode();
    raw.send(&ping).await;
    raw.establish("pa", 1.0).await;
    // Everything before the reply: initial ROUTEs, the triggered update...
    let mut routes = 0;
    wait_until("a to route to praw", 5, || async {
        a.status().await.routing_table.contains_key("praw")
    })
    .await;
    raw.send(&ping).await;
    let reply = loop {
        let msg = raw.recv().await.expect("a message from the node");
        match Message::decode(&msg) {
            Ok(Message::Route(r)) => {
                assert_eq!(r.forwarding_node, "pa");
                routes += 1;
            }
            Ok(Message::Data { header, payload }) => {
                assert!(payload.is_empty());
                break header;
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(routes >= 1);
    assert_eq!(reply.hops_to_live, 29);
    assert_eq!(reply.from_node, node_hash("pa"));
    assert_eq!(reply.to_node, node_hash("praw"));
    assert!(reply.from_service.is("ping"));
    assert!(reply.to_service.is("eph12345"));
    // Exactly one reply: the DATA sent before establishment was dropped.
    while let Some(msg) = raw.recv().await {
        assert_ne!(msg[0], 0, "a second ping reply");
        if routes > 100 {
            break;
        }
        routes += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_announcing_a_mismatched_cost_is_rejected() {
    let a = start("ca");
    let b = start("cb");
    let _ab = link(&a, &b, 1.0);
    wait_routes(&a, &["cb"]).await;
    wait_routes(&b, &["ca"]).await;
    let (mut raw, s) = RawPeer::connect(&a, "craw", 1.0);
    raw.establish("ca", 2.0).await;
    // The node sends REJECT, then closes.
    let mut saw_reject = false;
    while let Some(msg) = raw.recv().await {
        if msg == REJECT_MESSAGE {
            saw_reject = true;
        }
    }
    assert!(saw_reject, "REJECT frame before the close");
    let why = ends_with_error(s).await;
    assert!(why.contains("disagree about the connection cost"), "{why}");
    assert!(!connected(&a, "craw").await);
    healthy(&a, "cb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frames_and_random_bytes_end_only_their_session() {
    let a = start("ta");
    let b = start("tb");
    let _ab = link(&a, &b, 1.0);
    wait_routes(&a, &["tb"]).await;
    wait_routes(&b, &["ta"]).await;

    // A frame announcing 60000 bytes, cut short by EOF.
    let (mut raw, s) = RawPeer::connect(&a, "traw", 1.0);
    raw.establish("ta", 1.0).await;
    raw.send_raw(&[0x60, 0xea, 0, 1, 2]).await;
    raw.io.shutdown().await.expect("shutdown");
    let why = ends_with_error(s).await;
    assert!(why.contains("middle of a frame"), "{why}");

    // Pseudo-random bytes on fresh connections.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..4 {
        let (mut raw, s) = RawPeer::connect(&a, "rnd", 1.0);
        let bytes: Vec<u8> = (0..65_536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        raw.send_raw(&bytes).await;
        drop(raw);
        let why = ends_with_error(s).await;
        assert!(!why.is_empty(), "round {round}");
    }
    healthy(&a, "tb").await;
    assert_eq!(a.status().await.connections.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_gets_eleven_initial_routes_then_is_dropped() {
    let a = start("sa");
    let (mut raw, s) = RawPeer::connect(&a, "sraw", 1.0);
    let start = std::time::Instant::now();
    let mut n = 0;
    while let Some(msg) = raw.recv().await {
        match Message::decode(&msg) {
            Ok(Message::Route(r)) => {
                assert_eq!(
                    (r.node_id.as_str(), r.forwarding_node.as_str()),
                    ("sa", "sa")
                );
                assert!(r.connections.is_empty());
                n += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let took = start.elapsed();
    assert_eq!(n, 11);
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(13),
        "{took:?}"
    );
    let why = ends_with_error(s).await;
    assert!(why.contains("giving up"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_peers_and_node_costs_are_enforced() {
    let a = start("aa");
    let (x, y) = std::os::unix::net::UnixStream::pair().expect("pair");
    y.set_nonblocking(true).expect("nonblocking");
    let params = receptor_core::mesh::SessionParams {
        cost: 1.0,
        node_cost: [("good".to_owned(), 3.5)].into_iter().collect(),
        allowed_peers: Some(vec!["good".to_owned()]),
    };
    let s = spawn_session(&a, OwnedFd::from(x), Framing::Len16Le, params.clone());
    let mut bad = RawPeer {
        id: "evil".into(),
        io: UnixStream::from_std(y).expect("stream"),
        seq: 0,
    };
    // Only the first ROUTE: the node refuses the peer on it and closes the connection,
    // so a second write could meet a closed socket.
    let first = bad.update("evil", &[]);
    bad.send(&first).await;
    let why = ends_with_error(s).await;
    assert!(why.contains("allowed peers"), "{why}");

    let (x, y) = std::os::unix::net::UnixStream::pair().expect("pair");
    y.set_nonblocking(true).expect("nonblocking");
    let _s = spawn_session(&a, OwnedFd::from(x), Framing::Len16Le, params);
    let mut good = RawPeer {
        id: "good".into(),
        io: UnixStream::from_std(y).expect("stream"),
        seq: 0,
    };
    good.establish("aa", 3.5).await;
    wait_until("good to be connected with cost 3.5", 5, || async {
        a.status()
            .await
            .connections
            .iter()
            .any(|c| c.node_id == "good" && c.cost == 3.5)
    })
    .await;
    // The node's own update lists the peer with the node cost.
    let update = loop {
        let msg = good.recv().await.expect("message");
        if let Ok(Message::Route(r)) = Message::decode(&msg) {
            if r.connections.contains_key("good") {
                break r;
            }
        }
    };
    assert_eq!(update.connections["good"], 3.5);
}
