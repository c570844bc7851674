//! Scenario: meshes over UDP (one mesh message per datagram). A line `a - b - c` where
//! `b` dials `a`'s `udp-listener` and `c` dials `b`'s, with Go and Rust nodes mixed;
//! every node pings every other, and the end nodes run work on each other across the
//! middle node. Then bad input: datagrams that are not mesh messages sent to a Rust
//! node's `udp-listener` are reported and ignored, and the node keeps serving its Go
//! neighbour on the same listener; and a refused `udp-peer` redials.

use std::net::UdpSocket;

use anyhow::{ensure, Context, Result};
use receptor_tests::Implementation::{self, Go, Rust};
use receptor_tests::{free_port, NodeConfig, NodeProcess};
use serde_json::json;

use crate::backends_common::{line_of_three, ping_ok, wait_for_log_line, wait_for_peers};

fn udp_listener(port: u16) -> serde_json::Value {
    json!({"port": port, "bindaddr": "127.0.0.1"})
}

fn udp_peer(port: u16) -> serde_json::Value {
    json!({"address": format!("127.0.0.1:{port}")})
}

fn udp_line(implementations: [Implementation; 3]) -> Result<()> {
    let (p0, p1) = (free_port()?, free_port()?);
    let configs = [
        NodeConfig::new("a")
            .work_command("cat", "cat", None)
            .entry("udp-listener", udp_listener(p0)),
        NodeConfig::new("b")
            .entry("udp-peer", udp_peer(p0))
            .entry("udp-listener", udp_listener(p1)),
        NodeConfig::new("c")
            .work_command("cat", "cat", None)
            .entry("udp-peer", udp_peer(p1)),
    ];
    line_of_three(implementations, configs)
}

#[test]
fn go_rust_go() -> Result<()> {
    udp_line([Go, Rust, Go])
}

#[test]
fn rust_go_rust() -> Result<()> {
    udp_line([Rust, Go, Rust])
}

#[test]
fn rust_rust_rust() -> Result<()> {
    udp_line([Rust, Rust, Rust])
}

#[test]
fn garbage_datagrams_are_ignored() -> Result<()> {
    let port = free_port()?;
    let node = NodeProcess::start(
        Rust,
        NodeConfig::new("target").entry("udp-listener", udp_listener(port)),
    )?;
    let neighbour = NodeProcess::start(
        Go,
        NodeConfig::new("neighbour").entry("udp-peer", udp_peer(port)),
    )?;
    wait_for_peers(&node, &["neighbour"])?;

    let sock = UdpSocket::bind("127.0.0.1:0").context("binding the sender")?;
    sock.connect(("127.0.0.1", port))?;
    let mut garbage: Vec<Vec<u8>> = vec![
        Vec::new(),                         // empty datagram
        b"\xff\xfe not a message".to_vec(), // unknown message type
        b"\x01{ this is not json".to_vec(), // ROUTE with a broken body
        b"\x00\x1d\x00".to_vec(),           // truncated DATA header
        b"\x02{\"NodeID\": 7}".to_vec(),    // SVCAD before the peer identified
        vec![0x01; 60_000],                 // large and meaningless
    ];
    // A ROUTE naming the node itself as the sender.
    garbage.push(
        format!(
            "\x01{}",
            json!({"NodeID": "target", "UpdateID": "x", "UpdateEpoch": 1, "UpdateSequence": 1,
                   "Connections": {}, "ForwardingNode": "target", "SuspectedDuplicate": 0})
        )
        .into_bytes(),
    );
    for datagram in &garbage {
        sock.send(datagram)
            .with_context(|| format!("sending {} bytes", datagram.len()))?;
    }
    let line = wait_for_log_line(&node, &["WARN", "routing update"])?;
    ensure!(
        line.contains("error unpacking routing update"),
        "unexpected report: {line}"
    );

    // Still serving: its neighbour (on the same listener) and the node itself answer.
    neighbour.wait_for_ping("target")?;
    ping_ok(&node, "neighbour")?;
    ensure!(
        node.status()?["NodeID"] == "target",
        "the node stopped answering"
    );
    Ok(())
}

/// A `udp-peer` whose target is not listening yet gets ICMP port-unreachable: the
/// session ends (connection refused) and the peer redials, so it connects once the
/// listener is there.
#[test]
fn refused_udp_peer_redials() -> Result<()> {
    let port = free_port()?;
    let dialer = NodeProcess::start(
        Rust,
        NodeConfig::new("dialer").entry("udp-peer", udp_peer(port)),
    )?;
    wait_for_log_line(&dialer, &["session with", "ended", "Connection refused"])?;
    let listener = NodeProcess::start(
        Go,
        NodeConfig::new("listener").entry("udp-listener", udp_listener(port)),
    )?;
    wait_for_peers(&dialer, &["listener"])?;
    listener.wait_for_ping("dialer")?;
    Ok(())
}
