//! Scenario: a UDP proxy across a line of three nodes. `left` runs a `udp-server` (a local
//! UDP port whose datagrams go to `right:udpsvc`), `right` a `udp-client` (the service
//! `udpsvc`, forwarding to a UDP echo of the test). Datagrams of several sizes from two
//! local peers come back to the peer that sent them, boundaries intact.

use std::net::UdpSocket;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use receptor_tests::free_port;
use receptor_tests::Implementation::{self, Go, Rust};
use serde_json::json;

use crate::streams_traffic::proxied_line;

/// How long a peer waits for one answer before sending the datagram again.
const ANSWER_WAIT: Duration = Duration::from_secs(2);
/// Sends of one datagram before giving up (UDP may drop a datagram).
const ATTEMPTS: usize = 5;

/// A UDP echo on 127.0.0.1 that answers `echo:` + each datagram to its sender.
fn echo_target() -> Result<std::net::SocketAddr> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    let addr = sock.local_addr()?;
    thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = sock.send_to(&reply, from);
        }
    });
    Ok(addr)
}

/// Sends `data` from `peer` until its echo comes back (answers to earlier sends of other
/// datagrams are skipped).
fn round_trip(peer: &UdpSocket, data: &[u8]) -> Result<()> {
    let mut expected = b"echo:".to_vec();
    expected.extend_from_slice(data);
    let mut buf = vec![0u8; 65536];
    for _ in 0..ATTEMPTS {
        peer.send(data)?;
        let deadline = Instant::now() + ANSWER_WAIT;
        while Instant::now() < deadline {
            match peer.recv(&mut buf) {
                Ok(n) if buf[..n] == expected[..] => return Ok(()),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    bail!(
        "no echo of a {}-byte datagram after {ATTEMPTS} sends",
        data.len()
    )
}

fn udp_datagrams(impls: [Implementation; 3]) -> Result<()> {
    let target = echo_target()?;
    let port = free_port()?;
    let _nodes = proxied_line(
        impls,
        (
            "udp-server",
            json!({"port": port, "bindaddr": "127.0.0.1", "remotenode": "right", "remoteservice": "udpsvc"}),
        ),
        (
            "udp-client",
            json!({"service": "udpsvc", "address": target.to_string()}),
        ),
        "udpsvc",
    )?;
    let peers = [
        UdpSocket::bind("127.0.0.1:0")?,
        UdpSocket::bind("127.0.0.1:0")?,
    ];
    for peer in &peers {
        peer.connect(("127.0.0.1", port))?;
        peer.set_read_timeout(Some(Duration::from_millis(200)))?;
    }
    for (i, size) in [1usize, 100, 1200, 1400, 8000].into_iter().enumerate() {
        for (p, peer) in peers.iter().enumerate() {
            let data: Vec<u8> = (0..size).map(|b| (b * 7 + i * 13 + p) as u8).collect();
            round_trip(peer, &data)?;
        }
    }
    // A burst: most datagrams must come back (UDP may drop some under load).
    let burst = 50usize;
    let peer = &peers[0];
    for i in 0..burst {
        peer.send(format!("burst {i}").as_bytes())?;
    }
    let mut got = 0usize;
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(10);
    while got < burst && Instant::now() < deadline {
        if let Ok(n) = peer.recv(&mut buf) {
            if buf[..n].starts_with(b"echo:burst ") {
                got += 1;
            }
        }
    }
    ensure!(
        got * 10 >= burst * 9,
        "only {got} of {burst} burst datagrams came back"
    );
    Ok(())
}

mod go {
    use super::*;

    #[test]
    fn go_go_go() -> Result<()> {
        udp_datagrams([Go, Go, Go])
    }
}

mod rust_nodes {
    use super::*;

    #[test]
    fn go_rust_go() -> Result<()> {
        udp_datagrams([Go, Rust, Go])
    }

    #[test]
    fn rust_go_rust() -> Result<()> {
        udp_datagrams([Rust, Go, Rust])
    }

    #[test]
    fn rust_rust_rust() -> Result<()> {
        udp_datagrams([Rust, Rust, Rust])
    }
}
