//! The `udp` plugin loaded by the real plugin host: sessions, datagrams both ways, the
//! end of a session, redial, stop, config errors, and the bytes the reference Go
//! receptor 1.6.9 exchanges with it.

use std::net::UdpSocket;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use receptor_core::mesh::Framing;
use receptor_core::plugin_host::{BackendConnection, BackendInstance, PluginHost};
use receptor_tests::plugin_host::{
    assert_route_from, free_udp_port, is_route_from, next_conn, recv_msg, send_msg, socket_type,
    GoNode, WAIT,
};
use serde_json::json;

fn udp_host() -> PluginHost {
    receptor_tests::plugin_host::host(&[receptor_tests::plugin_host::cdylib(
        "receptor-plugin-udp",
        "receptor_udp",
    )])
}

fn listener(host: &PluginHost, port: u16) -> BackendInstance {
    // Values as the command line delivers them: strings; core keys are ignored.
    host.start_backend(
        "udp-listener",
        &json!({"bindaddr": "127.0.0.1", "port": port.to_string(), "cost": "1.5", "nodecost": {"a": 2}}),
    )
    .expect("start udp-listener")
}

fn peer(host: &PluginHost, port: u16) -> BackendInstance {
    host.start_backend(
        "udp-peer",
        &json!({"address": format!("127.0.0.1:{port}"), "redial": true, "allowedpeers": ["a"]}),
    )
    .expect("start udp-peer")
}

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind a client");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s
}

fn recv_from(s: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 70000];
    let n = s.recv(&mut buf).expect("a datagram in time");
    buf.truncate(n);
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_and_peer_carry_datagrams_both_ways_one_session_per_peer() {
    let port = free_udp_port();
    let host = udp_host();
    let mut lis = listener(&host, port);
    let mut dial = peer(&host, port);

    // The dialer hands over a connected UDP socket at once.
    let out = next_conn(&mut dial, WAIT).await;
    assert_eq!((out.framing, out.inbound), (Framing::Datagram, false));
    assert_eq!(out.peer, format!("127.0.0.1:{port}"));
    assert_eq!(socket_type(&out.fd), libc::SOCK_DGRAM);

    // Its first datagram creates the listener's session and is that session's first message.
    send_msg(&out.fd, b"hello from the peer");
    let first = next_conn(&mut lis, WAIT).await;
    assert_eq!((first.framing, first.inbound), (Framing::Datagram, true));
    assert_eq!(socket_type(&first.fd), libc::SOCK_SEQPACKET);
    assert_eq!(
        recv_msg(&first.fd, WAIT).as_deref(),
        Some(&b"hello from the peer"[..])
    );
    send_msg(&first.fd, b"reply");
    assert_eq!(recv_msg(&out.fd, WAIT).as_deref(), Some(&b"reply"[..]));

    // Another address is another session.
    let other = client();
    other.send_to(b"second", ("127.0.0.1", port)).unwrap();
    let second = next_conn(&mut lis, WAIT).await;
    assert_ne!(second.token, first.token);
    assert_eq!(second.peer, other.local_addr().unwrap().to_string());
    assert_eq!(recv_msg(&second.fd, WAIT).as_deref(), Some(&b"second"[..]));
    send_msg(&second.fd, b"to the second");
    assert_eq!(recv_from(&other), b"to the second");

    // Messages keep their boundaries up to UDP's limit, both ways; larger ones from the
    // host are dropped without harming the session.
    let big: Vec<u8> = (0..65507u32).map(|i| (i % 253) as u8).collect();
    send_msg(&out.fd, &big);
    assert_eq!(recv_msg(&first.fd, WAIT), Some(big.clone()));
    send_msg(&first.fd, &big);
    assert_eq!(recv_msg(&out.fd, WAIT), Some(big.clone()));
    send_msg(&first.fd, &[9u8; 65508]);
    send_msg(&first.fd, b"after the oversized one");
    assert_eq!(
        recv_msg(&out.fd, WAIT).as_deref(),
        Some(&b"after the oversized one"[..])
    );
    // Nothing leaked to the other session.
    send_msg(&second.fd, b"still separate");
    assert_eq!(recv_from(&other), b"still separate");

    // An empty datagram starts nothing; the next real one does.
    let third = client();
    third.send_to(b"", ("127.0.0.1", port)).unwrap();
    third.send_to(b"x", ("127.0.0.1", port)).unwrap();
    let c = next_conn(&mut lis, WAIT).await;
    assert_eq!(c.peer, third.local_addr().unwrap().to_string());
    assert_eq!(recv_msg(&c.fd, WAIT).as_deref(), Some(&b"x"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_session_is_forgotten_and_the_next_datagram_starts_a_new_one() {
    let port = free_udp_port();
    let host = udp_host();
    let mut lis = listener(&host, port);
    let c = client();

    c.send_to(b"one", ("127.0.0.1", port)).unwrap();
    let a = next_conn(&mut lis, WAIT).await;
    assert_eq!(recv_msg(&a.fd, WAIT).as_deref(), Some(&b"one"[..]));
    c.send_to(b"one more", ("127.0.0.1", port)).unwrap();
    assert_eq!(recv_msg(&a.fd, WAIT).as_deref(), Some(&b"one more"[..]));

    // The host ends the session: closes its end and says so.
    let token = a.token;
    drop(a);
    lis.handle.session_closed(token);
    c.send_to(b"two", ("127.0.0.1", port)).unwrap();
    let b = next_conn(&mut lis, WAIT).await;
    assert_ne!(b.token, token);
    assert_eq!(recv_msg(&b.fd, WAIT).as_deref(), Some(&b"two"[..]));
    send_msg(&b.fd, b"answer");
    assert_eq!(recv_from(&c), b"answer");

    // Closing the end alone is enough too.
    drop(b);
    c.send_to(b"three", ("127.0.0.1", port)).unwrap();
    let d = next_conn(&mut lis, WAIT).await;
    assert_eq!(recv_msg(&d.fd, WAIT).as_deref(), Some(&b"three"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_keeps_one_session_and_redials_after_it_closed() {
    let port = free_udp_port();
    let host = udp_host();
    let mut dial = peer(&host, port);
    let first = next_conn(&mut dial, WAIT).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), dial.connections.recv())
            .await
            .is_err(),
        "the dialer must wait for session_closed"
    );
    let token = first.token;
    drop(first);
    let closed_at = Instant::now();
    dial.handle.session_closed(token);
    let second = next_conn(&mut dial, Duration::from_secs(15)).await;
    let waited = closed_at.elapsed();
    assert!(
        waited >= Duration::from_millis(4500) && waited < Duration::from_secs(10),
        "redial after {waited:?}, receptor waits 5 s"
    );
    assert_ne!(second.token, token);
    assert!(!second.inbound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_listener_ends_its_sessions_and_frees_its_port() {
    let port = free_udp_port();
    let host = udp_host();
    let mut lis = listener(&host, port);
    let c = client();
    c.send_to(b"hi", ("127.0.0.1", port)).unwrap();
    let conn: BackendConnection = next_conn(&mut lis, WAIT).await;
    assert_eq!(recv_msg(&conn.fd, WAIT).as_deref(), Some(&b"hi"[..]));
    lis.handle.stop();
    let end = tokio::time::timeout(WAIT, lis.connections.recv()).await;
    assert!(matches!(end, Ok(None)), "the stream ends after stop");
    assert_eq!(recv_msg(&conn.fd, WAIT).as_deref(), Some(&b""[..]), "EOF");
    let deadline = Instant::now() + WAIT;
    while UdpSocket::bind(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port still bound after stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn config_errors_name_the_key() {
    let host = udp_host();
    let err = host
        .start_backend("udp-listener", &json!({"bindaddr": "127.0.0.1"}))
        .unwrap_err()
        .to_string();
    // The plugin describes its fields: the node checks them before the plugin runs.
    assert_eq!(err, "udp-listener: port (integer) is required");
    let err = host
        .start_backend("udp-listener", &json!({"port": "x"}))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "udp-listener: port: expected an integer, got \"x\"");
    let err = host
        .start_backend("udp-peer", &json!({"address": "nocolon"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad address \"nocolon\""), "{err}");
    let err = host
        .start_backend("udp-peer", &json!({"address": "a:1", "path": "/"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown key \"path\""), "{err}");
    let err = host
        .start_backend(
            "udp-peer",
            &json!({"address": "a:1", "redial": "sometimes"}),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("redial: expected a boolean"), "{err}");
}

/// Receives on the dialer's socket, skipping ICMP errors from a port not yet bound.
fn recv_skipping_refusals(fd: &OwnedFd, within: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        if let Some(msg) = recv_msg(fd, left.min(Duration::from_millis(300))) {
            return Some(msg);
        }
        // Nothing yet: poke the Go node again (its session starts on our first datagram).
        // SAFETY: a one-byte buffer; errors (a refusal) are expected and ignored.
        unsafe {
            libc::send(
                fd.as_raw_fd(),
                [0x09u8].as_ptr().cast(),
                1,
                libc::MSG_NOSIGNAL,
            )
        };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_udp_listener_answers_our_peer_with_its_route() {
    let port = free_udp_port();
    let _go = GoNode::start(
        "go",
        &[
            "--udp-listener".into(),
            format!("port={port}"),
            "bindaddr=127.0.0.1".into(),
        ],
    );
    let host = udp_host();
    let mut dial = peer(&host, port);
    let out = next_conn(&mut dial, WAIT).await;
    // A message of an unknown type opens Go's session without meaning anything to it.
    let first = recv_skipping_refusals(&out.fd, Duration::from_secs(20))
        .expect("a datagram from the Go node");
    assert_route_from(&first, "go");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_udp_peer_opens_a_session_on_our_listener_with_its_route() {
    let port = free_udp_port();
    let host = udp_host();
    let mut lis = listener(&host, port);
    let mut go = GoNode::start(
        "gopeer",
        &["--udp-peer".into(), format!("address=127.0.0.1:{port}")],
    );
    let conn = next_conn(&mut lis, Duration::from_secs(20)).await;
    assert!(conn.inbound);
    let first = recv_msg(&conn.fd, WAIT).expect("Go's first message");
    assert_route_from(&first, "gopeer");
    // Go repeats its ROUTE every second until it hears from us: same session.
    let again = recv_msg(&conn.fd, Duration::from_secs(5)).expect("Go's next ROUTE");
    assert!(is_route_from(&again, "gopeer"));
    assert!(go.running(), "the Go node is still running");
}
