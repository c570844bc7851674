//! Rust nodes linked to each other in one process.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::time::Duration;

use receptor_core::mesh::{Framing, Incoming, Mesh, MeshError};
use receptor_proto::svcad::{ServiceAdvertisement, WorkCommand};

use super::common::*;

/// a - b - c, costs 1 and 2.
async fn line() -> (Mesh, Mesh, Mesh, Vec<Session>) {
    let a = start("a");
    let b = start("b");
    let c = start("c");
    let (s1, s2) = link(&a, &b, 1.0);
    let (s3, s4) = tcp_link(&b, &c, 2.0).await;
    wait_routes(&a, &["b", "c"]).await;
    wait_routes(&b, &["a", "c"]).await;
    wait_routes(&c, &["a", "b"]).await;
    (a, b, c, vec![s1, s2, s3, s4])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_connections_routes_and_costs() {
    let (a, b, c, _sessions) = line().await;
    let st = a.status().await;
    assert_eq!(st.connections.len(), 1);
    assert_eq!(st.connections[0].node_id, "b");
    assert_eq!(st.connections[0].cost, 1.0);
    assert_eq!(st.routing_table.get("b").map(String::as_str), Some("b"));
    assert_eq!(st.routing_table.get("c").map(String::as_str), Some("b"));
    assert!(!st.routing_table.contains_key("a"));
    let want: BTreeMap<String, BTreeMap<String, f64>> = [
        ("a", vec![("b", 1.0)]),
        ("b", vec![("a", 1.0), ("c", 2.0)]),
        ("c", vec![("b", 2.0)]),
    ]
    .into_iter()
    .map(|(n, v)| {
        (
            n.to_owned(),
            v.into_iter().map(|(p, c)| (p.to_owned(), c)).collect(),
        )
    })
    .collect();
    assert_eq!(st.known_connection_costs, want);
    let st = b.status().await;
    let mut conns: Vec<(String, f64)> = st
        .connections
        .iter()
        .map(|c| (c.node_id.clone(), c.cost))
        .collect();
    conns.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(conns, vec![("a".to_owned(), 1.0), ("c".to_owned(), 2.0)]);
    assert_eq!(
        c.status().await.routing_table.get("a").map(String::as_str),
        Some("b")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_traceroute_across_the_line() {
    let (a, _b, c, _sessions) = line().await;
    let r = a.ping("c", 30).await;
    assert_eq!(r.error, None);
    assert_eq!(r.from, "c");
    assert!(r.rtt < Duration::from_secs(5));
    let r = c.ping("a", 30).await;
    assert_eq!((r.from.as_str(), r.error), ("a", None));

    // Traceroute: hop 0 expires at a itself, hop 1 at b, hop 2 reaches c.
    let r0 = a.ping("c", 0).await;
    assert_eq!(
        (r0.from.as_str(), r0.error.as_deref()),
        ("a", Some("message expired"))
    );
    let r1 = a.ping("c", 1).await;
    assert_eq!(
        (r1.from.as_str(), r1.error.as_deref()),
        ("b", Some("message expired"))
    );
    let r2 = a.ping("c", 2).await;
    assert_eq!((r2.from.as_str(), r2.error), ("c", None));
    // A message addressed to a node is delivered whatever its hops-to-live.
    let r = a.ping("b", 1).await;
    assert_eq!((r.from.as_str(), r.error), ("b", None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_self_and_unknown_nodes() {
    let a = start("solo");
    let r = a.ping("localhost", 30).await;
    assert_eq!((r.from.as_str(), r.error), ("solo", None));
    let r = a.ping("solo", 0).await;
    assert_eq!((r.from.as_str(), r.error), ("solo", None));
    let r = a.ping("nowhere", 30).await;
    assert_eq!(r.error.as_deref(), Some("no route to node"));
    assert_eq!(r.from, "solo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_flow_between_packet_conns() {
    let (a, _b, c, _sessions) = line().await;
    let mut server = a.listen(Some("echo"), None).await.expect("listen");
    assert_eq!(server.service(), "echo");
    let mut client = c.listen(None, None).await.expect("listen");
    assert_eq!(client.service().len(), 8);
    client.send_to("a", "echo", b"hello").await.expect("send");
    let (from_node, from_service) = match server.recv().await.expect("recv") {
        Incoming::Data {
            from_node,
            from_service,
            data,
        } => {
            assert_eq!(&data[..], b"hello");
            (from_node, from_service)
        }
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(from_node, "c");
    assert_eq!(from_service, client.service());
    server
        .send_to(&from_node, &from_service, b"world")
        .await
        .expect("reply");
    match client.recv().await.expect("recv") {
        Incoming::Data {
            from_node,
            from_service,
            data,
        } => {
            assert_eq!((from_node.as_str(), from_service.as_str()), ("a", "echo"));
            assert_eq!(&data[..], b"world");
        }
        other => panic!("unexpected {other:?}"),
    }
    // Many datagrams, including large ones, arrive intact and in order.
    for i in 0..200u32 {
        let payload = vec![(i % 251) as u8; 1 + (i as usize * 97) % 16000];
        client.send_to("a", "echo", &payload).await.expect("send");
    }
    for i in 0..200u32 {
        match server.recv().await.expect("recv") {
            Incoming::Data { data, .. } => {
                assert_eq!(data.len(), 1 + (i as usize * 97) % 16000);
                assert!(data.iter().all(|&x| x == (i % 251) as u8));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Local delivery on the same node.
    let local = a.listen(None, None).await.expect("listen");
    local
        .send_to("localhost", "echo", b"me")
        .await
        .expect("send");
    match server.recv().await.expect("recv") {
        Incoming::Data { from_node, .. } => assert_eq!(from_node, "a"),
        other => panic!("unexpected {other:?}"),
    }
    drop(local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_services_are_reported_unreachable() {
    let (a, _b, c, _sessions) = line().await;
    let mut client = c.listen(None, None).await.expect("listen");
    client.send_to("a", "nosvc", b"x").await.expect("send");
    match tokio::time::timeout(Duration::from_secs(5), client.recv()).await {
        Ok(Ok(Incoming::Unreachable {
            reported_by,
            to_node,
            to_service,
            problem,
        })) => {
            assert_eq!(reported_by, "a");
            assert_eq!(to_node, "a");
            assert_eq!(to_service, "nosvc");
            assert_eq!(problem, "service unknown");
        }
        other => panic!("unexpected {other:?}"),
    }
    // Locally, the sender gets the error directly.
    let local = a.listen(None, None).await.expect("listen");
    let e = local.send_to("a", "nosvc", b"x").await.unwrap_err();
    assert_eq!(e.to_string(), "service unknown");
    let e = local.send_to("zz", "x", b"x").await.unwrap_err();
    assert!(matches!(e, MeshError::NoRoute));
    let e = local.send_to("c", "123456789", b"x").await.unwrap_err();
    assert!(matches!(e, MeshError::ServiceNameTooLong));
    let e = local.send_to("c", "x", &vec![0; 70_000]).await.unwrap_err();
    assert!(matches!(e, MeshError::Other(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_rules() {
    let a = start("l");
    let s = a.listen(Some("svc"), None).await.expect("listen");
    assert!(matches!(
        a.listen(Some("svc"), None).await,
        Err(MeshError::ServiceInUse(_))
    ));
    assert!(matches!(
        a.listen(Some("ping"), None).await,
        Err(MeshError::ServiceInUse(_))
    ));
    assert!(matches!(
        a.listen(Some("unreach"), None).await,
        Err(MeshError::ServiceInUse(_))
    ));
    assert!(matches!(
        a.listen(Some("toolongname"), None).await,
        Err(MeshError::ServiceNameTooLong)
    ));
    drop(s);
    let s = a.listen(Some("svc"), None).await.expect("name free again");
    a.shutdown().await;
    let mut s = s;
    assert!(matches!(s.recv().await, Err(MeshError::Shutdown)));
    assert!(matches!(
        a.listen(None, None).await,
        Err(MeshError::Shutdown)
    ));
    tokio::time::timeout(Duration::from_secs(1), a.closed())
        .await
        .expect("closed resolves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advertisements_reach_other_nodes_and_are_cancelled() {
    let (a, _b, c, _sessions) = line().await;
    let tags: BTreeMap<String, String> = [("type".to_owned(), "Control Service".to_owned())]
        .into_iter()
        .collect();
    let ad = ServiceAdvertisement {
        node_id: "a".into(),
        service: "control".into(),
        time: String::new(),
        conn_type: 1,
        tags: Some(tags),
        work_commands: None,
    };
    a.set_work_commands(vec![WorkCommand {
        work_type: "echo".into(),
        secure: false,
    }])
    .await;
    let svc = a.listen(Some("control"), Some(ad)).await.expect("listen");
    let own = a.status().await.advertisements;
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].work_commands.as_ref().map(Vec::len), Some(1));
    // Sent 5 s after the listener appeared.
    wait_until("c to learn a's control service", 12, || async {
        c.status().await.advertisements.iter().any(|ad| {
            ad.node_id == "a"
                && ad.service == "control"
                && ad.conn_type == 1
                && ad
                    .work_commands
                    .as_ref()
                    .is_some_and(|w| w[0].work_type == "echo")
        })
    })
    .await;
    drop(svc);
    wait_until("the cancel to reach c", 5, || async {
        c.status().await.advertisements.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagram_backends_carry_the_mesh() {
    let a = start("da");
    let b = start("db");
    let c = start("dc");
    // SOCK_SEQPACKET socketpair (how a websocket plugin would pump frames).
    let (x, y) = socketpair(libc::SOCK_SEQPACKET);
    let _s1 = spawn_session(&a, x, Framing::Datagram, cost(1.0));
    let _s2 = spawn_session(&b, y, Framing::Datagram, cost(1.0));
    // Connected UDP sockets on 127.0.0.1.
    let u1 = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let u2 = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    u1.connect(u2.local_addr().expect("addr")).expect("connect");
    u2.connect(u1.local_addr().expect("addr")).expect("connect");
    let _s3 = spawn_session(&b, OwnedFd::from(u1), Framing::Datagram, cost(1.0));
    let _s4 = spawn_session(&c, OwnedFd::from(u2), Framing::Datagram, cost(1.0));
    wait_routes(&a, &["db", "dc"]).await;
    wait_routes(&c, &["da", "db"]).await;
    let r = a.ping("dc", 30).await;
    assert_eq!((r.from.as_str(), r.error), ("dc", None));
    let mut server = c.listen(Some("big"), None).await.expect("listen");
    let client = a.listen(None, None).await.expect("listen");
    let payload = vec![7u8; 60_000];
    client.send_to("dc", "big", &payload).await.expect("send");
    match tokio::time::timeout(Duration::from_secs(5), server.recv()).await {
        Ok(Ok(Incoming::Data { data, .. })) => assert_eq!(data.len(), 60_000),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_on_peer_close_and_routes_follow() {
    let a = start("ea");
    let b = start("eb");
    let (sa, sb) = link(&a, &b, 1.0);
    wait_routes(&a, &["eb"]).await;
    b.shutdown().await;
    let rb = tokio::time::timeout(Duration::from_secs(5), sb)
        .await
        .expect("b's session ends")
        .expect("join");
    assert!(matches!(rb, Err(MeshError::Shutdown)), "{rb:?}");
    let ra = tokio::time::timeout(Duration::from_secs(5), sa)
        .await
        .expect("a's session ends")
        .expect("join");
    assert!(ra.is_ok(), "EOF from the peer: {ra:?}");
    wait_until("a to forget the route", 5, || async {
        let st = a.status().await;
        st.connections.is_empty() && st.routing_table.is_empty()
    })
    .await;
    // The node stays known, with no links (no expiry).
    let st = a.status().await;
    assert_eq!(st.known_connection_costs.get("eb"), Some(&BTreeMap::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_session_future_closes_the_session() {
    let a = start("fa");
    let b = start("fb");
    let (x, y) = std::os::unix::net::UnixStream::pair().expect("pair");
    let a2 = a.clone();
    let task = tokio::spawn(async move {
        a2.run_session(OwnedFd::from(x), Framing::Len16Le, cost(1.0))
            .await
    });
    let _sb = spawn_session(&b, OwnedFd::from(y), Framing::Len16Le, cost(1.0));
    wait_routes(&b, &["fa"]).await;
    task.abort();
    wait_until("b to see the link go", 5, || async {
        b.status().await.connections.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_connections_and_own_id_are_refused() {
    let a = start("ga");
    let b = start("gb");
    let (_s1, _s2) = link(&a, &b, 1.0);
    wait_routes(&a, &["gb"]).await;
    wait_routes(&b, &["ga"]).await;
    // A second link between the same nodes: one side refuses it.
    let (s3, s4) = link(&a, &b, 1.0);
    let (r3, r4) = tokio::join!(s3, s4);
    let (r3, r4) = (r3.expect("join"), r4.expect("join"));
    assert!(r3.is_err() || r4.is_err(), "{r3:?} {r4:?}");
    assert_eq!(a.status().await.connections.len(), 1);
    // A node connecting to itself.
    let (x, y) = link(&a, &a, 1.0);
    let (rx, ry) = tokio::join!(x, y);
    let msg = format!("{:?} {:?}", rx.expect("join"), ry.expect("join"));
    assert!(msg.contains("own node ID"), "{msg}");
    let r = a.ping("gb", 30).await;
    assert_eq!(r.error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sessions_work_over_any_async_stream() {
    let a = start("ha");
    let b = start("hb");
    let (x, y) = tokio::io::duplex(4096);
    let a2 = a.clone();
    let b2 = b.clone();
    let _s1 = tokio::spawn(async move { a2.run_stream_session(x, cost(1.0)).await });
    let _s2 = tokio::spawn(async move { b2.run_stream_session(y, cost(1.0)).await });
    wait_routes(&a, &["hb"]).await;
    wait_routes(&b, &["ha"]).await;
    let r = a.ping("hb", 30).await;
    assert_eq!((r.from.as_str(), r.error), ("hb", None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_node_id_shuts_one_node_down() {
    // dup - h1 - h2 - dup: the copy with the newer epoch must stop.
    let d1 = start("dup");
    let h1 = start("h1");
    let h2 = start("h2");
    let d2 = start("dup");
    let _l1 = link(&d1, &h1, 1.0);
    let _l2 = link(&h1, &h2, 1.0);
    let _l3 = link(&h2, &d2, 1.0);
    let stopped = tokio::time::timeout(Duration::from_secs(15), async {
        tokio::select! {
            () = d1.closed() => 1,
            () = d2.closed() => 2,
        }
    })
    .await
    .expect("one duplicate shuts down");
    let survivor = if stopped == 1 { &d2 } else { &d1 };
    let neighbour = if stopped == 1 { "h2" } else { "h1" };
    wait_routes(survivor, &[neighbour]).await;
    let r = survivor.ping(neighbour, 30).await;
    assert_eq!(r.error, None);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), survivor.closed())
            .await
            .is_err(),
        "only one of them stops"
    );
}
