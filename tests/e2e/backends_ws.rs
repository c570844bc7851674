//! Scenario: meshes over WebSocket (one mesh message per binary message). A line
//! `a - b - c` where `b` dials `a`'s `ws-listener` (path `/`) and `c` dials `b`'s
//! (path `/mesh`), with Go and Rust nodes mixed; every node pings every other, and the
//! end nodes run work on each other across the middle node. Then bad input to a Rust
//! node's `ws-listener`: bytes that are not HTTP, an upgrade followed by a text
//! message, by bytes that are not websocket frames, or by binary messages that are not
//! mesh messages. Each is reported and dropped, and the node keeps serving its Go
//! neighbour on the same listener.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use receptor_tests::Implementation::{self, Go, Rust};
use receptor_tests::{free_port, Node, NodeConfig};
use serde_json::json;

use crate::backends_common::{
    ping_all, ping_ok, remote_work_between_the_ends, wait_for_log_line, wait_for_peers,
};

fn ws_listener(port: u16, path: &str) -> serde_json::Value {
    json!({"port": port, "bindaddr": "127.0.0.1", "path": path})
}

fn ws_peer(port: u16, path: &str) -> serde_json::Value {
    json!({"address": format!("ws://127.0.0.1:{port}{path}")})
}

fn ws_line(implementations: [Implementation; 3]) -> Result<()> {
    let (p0, p1) = (free_port()?, free_port()?);
    let configs = [
        NodeConfig::new("a")
            .work_command("cat", "cat", None)
            .entry("ws-listener", ws_listener(p0, "/")),
        NodeConfig::new("b")
            .entry("ws-peer", ws_peer(p0, "/"))
            .entry("ws-listener", ws_listener(p1, "/mesh")),
        NodeConfig::new("c")
            .work_command("cat", "cat", None)
            .entry("ws-peer", ws_peer(p1, "/mesh")),
    ];
    let nodes = implementations
        .into_iter()
        .zip(configs)
        .map(|(by, config)| Node::start(by, config))
        .collect::<Result<Vec<_>>>()?;
    wait_for_peers(&nodes[0], &["b"])?;
    wait_for_peers(&nodes[1], &["a", "c"])?;
    wait_for_peers(&nodes[2], &["b"])?;
    ping_all(&nodes.iter().collect::<Vec<_>>())?;
    remote_work_between_the_ends(&nodes)
}

#[test]
fn go_rust_go() -> Result<()> {
    ws_line([Go, Rust, Go])
}

#[test]
fn rust_go_rust() -> Result<()> {
    ws_line([Rust, Go, Rust])
}

#[test]
fn rust_rust_rust() -> Result<()> {
    ws_line([Rust, Rust, Rust])
}

/// How long the test waits for the node to answer or close a bad connection.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

fn connect(port: u16) -> Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port)).context("connecting to the listener")?;
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    Ok(s)
}

/// Connects and completes a websocket upgrade on `/`.
fn upgrade(port: u16) -> Result<TcpStream> {
    let mut s = connect(port)?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            bail!("connection closed during the upgrade: {head:?}");
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    ensure!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
    Ok(s)
}

/// A masked client frame (payload under 126 bytes).
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads until the node closes the connection (a close frame may come first); fails
/// if it keeps it open past [`READ_TIMEOUT`].
fn expect_closed(mut s: TcpStream, what: &str) -> Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => bail!("{what}: the node did not close the connection: {e}"),
        }
    }
}

#[test]
fn bad_websocket_input_is_refused() -> Result<()> {
    let port = free_port()?;
    let node = Node::start(
        Rust,
        NodeConfig::new("target").entry("ws-listener", ws_listener(port, "/")),
    )?;
    let neighbour = Node::start(
        Go,
        NodeConfig::new("neighbour").entry("ws-peer", ws_peer(port, "/")),
    )?;
    wait_for_peers(&node, &["neighbour"])?;

    // Not HTTP at all.
    let mut s = connect(port)?;
    s.write_all(b"\x16\x03\x01\x00\xffgarbage that is not a request\r\n\r\n")?;
    expect_closed(s, "non-HTTP bytes")?;
    wait_for_log_line(&node, &["websocket upgrade from", "refused"])?;

    // A text message: receptor sends binary messages only.
    let mut s = upgrade(port)?;
    s.write_all(&frame(0x1, b"{\"hello\": \"text\"}"))?;
    expect_closed(s, "a text message")?;
    wait_for_log_line(&node, &["text message received"])?;

    // Bytes that are not websocket frames (reserved opcode, unmasked).
    let mut s = upgrade(port)?;
    s.write_all(&[0xf3, 0x05, b'h', b'e', b'l', b'l', b'o'])?;
    expect_closed(s, "invalid frames")?;
    wait_for_log_line(&node, &["websocket session with", "failed"])?;

    // Binary messages that are not mesh messages: dropped by the node, which then
    // gives up on the peer that never identifies itself.
    let mut s = upgrade(port)?;
    s.write_all(&frame(0x2, b"\xff\xfe garbage"))?;
    s.write_all(&frame(0x2, b"\x01{ not json"))?;
    wait_for_log_line(&node, &["WARN", "error unpacking routing update"])?;
    drop(s);

    // Still serving.
    neighbour.wait_for_ping("target")?;
    ping_ok(&node, "neighbour")?;
    Ok(())
}
