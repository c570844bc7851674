//! Scenario: meshes over WebSocket (one mesh message per binary message). A line
//! `a - b - c` where `b` dials `a`'s `ws-listener` (path `/`) and `c` dials `b`'s
//! (path `/mesh`), with Go and Rust nodes mixed; every node pings every other, and the
//! end nodes run work on each other across the middle node. Then bad input to a Rust
//! node's `ws-listener`: bytes that are not HTTP, an upgrade followed by a text
//! message, by bytes that are not websocket frames, or by binary messages that are not
//! mesh messages. Each is reported and dropped, and the node keeps serving its Go
//! neighbour on the same listener.
//!
//! Over TLS (`wss`), a Rust node holds its peers to the node ID their certificate names,
//! as on TLS-TCP links: a Go peer whose certificate names another node than the one it
//! announces is refused, whether it dialed the Rust node's `ws-listener` (client
//! certificate) or the Rust node dialed it (server certificate), with one clear log
//! line, while a well-behaved Go peer on the same listener stays connected; with
//! `skipreceptornamescheck` the same peers are accepted. A `wss://` peer without `tls`
//! (system roots; here the test CA through `SSL_CERT_FILE`) is held to its node ID the
//! same way, unless a `tls-client` named `default` sets `skipreceptornamescheck`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use receptor_tests::Implementation::{self, Go, Rust};
use receptor_tests::{free_port, NodeConfig, NodeProcess};
use serde_json::json;

use crate::backends_common::{line_of_three, ping_ok, wait_for_log_line, wait_for_peers};
use crate::tls_pki::{tls_client, tls_server, Ca, Pki};

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
    line_of_three(implementations, configs)
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
    let node = NodeProcess::start(
        Rust,
        NodeConfig::new("target").entry("ws-listener", ws_listener(port, "/")),
    )?;
    let neighbour = NodeProcess::start(
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

/// A `ws-listener` on 127.0.0.1 with TLS configuration `tls` (a `tls-server`).
fn wss_listener(port: u16, tls: &str) -> serde_json::Value {
    json!({"port": port, "bindaddr": "127.0.0.1", "tls": tls})
}

/// A `ws-peer` dialing `wss://127.0.0.1:port/` with TLS configuration `tls`.
fn wss_peer(port: u16, tls: &str) -> serde_json::Value {
    json!({"address": format!("wss://127.0.0.1:{port}/"), "tls": tls})
}

/// A Rust `hub` with a wss listener and a wss dialer towards `liar_port`, its TLS
/// configurations with `extra` keys; its certificate names it.
fn start_wss_hub(
    pki: &Pki,
    ca: &Ca,
    hub_port: u16,
    liar_port: u16,
    extra: serde_json::Value,
) -> Result<NodeProcess> {
    let cert = pki.cert(ca, "hub", &["hub"], Rust)?;
    NodeProcess::start(
        Rust,
        NodeConfig::new("hub")
            .entry("tls-server", tls_server("srv", &cert, ca, extra.clone()))
            .entry("tls-client", tls_client("cli", &cert, ca, extra))
            .entry("ws-listener", wss_listener(hub_port, "srv"))
            .entry("ws-peer", wss_peer(liar_port, "cli")),
    )
}

/// A Go node with a certificate naming `someone`, started with
/// `skipreceptornamescheck` (Go checks neither its own certificate then nor, ever, its
/// peers'), so it connects as far as the hub lets it.
fn start_liar(pki: &Pki, ca: &Ca, id: &str, config: NodeConfig) -> Result<NodeProcess> {
    let someone = pki.cert(ca, &format!("someone-{id}"), &["someone"], Go)?;
    let skip = json!({"skipreceptornamescheck": true});
    let config = if id == "liar" {
        config.entry("tls-server", tls_server("srv", &someone, ca, skip))
    } else {
        config.entry("tls-client", tls_client("cli", &someone, ca, skip))
    };
    NodeProcess::start(Go, config)
}

/// The hub between the two liars: `liar` listens for it, `mallory` dials it. Returns
/// the nodes, the hub's port and the liar's.
fn start_wss_trio(
    pki: &Pki,
    ca: &Ca,
    hub_extra: serde_json::Value,
) -> Result<([NodeProcess; 3], u16, u16)> {
    let (hub_port, liar_port) = (free_port()?, free_port()?);
    let liar = start_liar(
        pki,
        ca,
        "liar",
        NodeConfig::new("liar").entry("ws-listener", wss_listener(liar_port, "srv")),
    )?;
    let hub = start_wss_hub(pki, ca, hub_port, liar_port, hub_extra)?;
    let mallory = start_liar(
        pki,
        ca,
        "mallory",
        NodeConfig::new("mallory").entry("ws-peer", wss_peer(hub_port, "cli")),
    )?;
    Ok(([hub, liar, mallory], hub_port, liar_port))
}

#[test]
fn wss_node_id_not_in_certificate_is_refused_both_ways() -> Result<()> {
    let pki = Pki::new()?;
    let ca = pki.ca("mesh", Rust)?;
    let ([hub, _liar, _mallory], hub_port, liar_port) = start_wss_trio(&pki, &ca, json!({}))?;
    let friend_cert = pki.cert(&ca, "friend", &["friend"], Go)?;
    let friend = NodeProcess::start(
        Go,
        NodeConfig::new("friend")
            .entry(
                "tls-client",
                tls_client("cli", &friend_cert, &ca, json!({})),
            )
            .entry("ws-peer", wss_peer(hub_port, "cli")),
    )?;

    let expected = |announced: &str| {
        format!("it announced node ID {announced} but its certificate does not name it")
    };
    let (mallory_why, liar_why) = (expected("mallory"), expected("liar"));
    let inbound = wait_for_log_line(&hub, &["ws-listener", "refused", &mallory_why])?;
    let outbound = wait_for_log_line(
        &hub,
        &[
            "ws-peer",
            &format!("wss://127.0.0.1:{liar_port}/"),
            "refused",
            &liar_why,
        ],
    )?;
    for line in [&inbound, &outbound] {
        ensure!(
            line.contains("Receptor node ID someone"),
            "the refusal should name the certificate's node ID: {line}"
        );
    }
    // The hub keeps its friend: its only connection, reachable both ways.
    wait_for_peers(&hub, &["friend"])?;
    hub.wait_for_ping("friend")?;
    friend.wait_for_ping("hub")?;
    ping_ok(&hub, "friend")?;
    let log = hub.log();
    ensure!(
        !log.contains("peer=mallory") && !log.contains("peer=liar"),
        "a refused peer was registered:\n{log}"
    );
    Ok(())
}

#[test]
fn wss_node_id_check_is_skipped_with_skipreceptornamescheck() -> Result<()> {
    let pki = Pki::new()?;
    let ca = pki.ca("mesh", Go)?;
    let skip = json!({"skipreceptornamescheck": true});
    let ([hub, liar, mallory], _, _) = start_wss_trio(&pki, &ca, skip)?;
    wait_for_peers(&hub, &["liar", "mallory"])?;
    hub.wait_for_ping("liar")?;
    hub.wait_for_ping("mallory")?;
    liar.wait_for_ping("hub")?;
    mallory.wait_for_ping("hub")?;
    ensure!(
        !hub.log().contains("does not name it"),
        "a peer was refused:\n{}",
        hub.log()
    );
    Ok(())
}

/// A Go node listening on `wss` with a certificate from `ca` naming `names` (no client
/// certificates), `skipreceptornamescheck` on, so that it starts whatever it is called.
fn start_wss_go_listener(
    pki: &Pki,
    ca: &Ca,
    id: &str,
    names: &[&str],
    port: u16,
) -> Result<NodeProcess> {
    let cert = pki.cert(ca, &format!("{id}-server"), names, Go)?;
    let srv = json!({"name": "srv", "cert": cert.cert.display().to_string(),
                     "key": cert.key.display().to_string(), "skipreceptornamescheck": true});
    NodeProcess::start(
        Go,
        NodeConfig::new(id)
            .entry("tls-server", srv)
            .entry("ws-listener", wss_listener(port, "srv")),
    )
}

/// A `ws-peer` dialing `wss://127.0.0.1:port/` with no TLS configuration (system roots).
fn wss_peer_system_roots(port: u16) -> serde_json::Value {
    json!({"address": format!("wss://127.0.0.1:{port}/")})
}

#[test]
fn wss_peer_with_system_roots_is_held_to_its_node_id() -> Result<()> {
    let pki = Pki::new()?;
    let ca = pki.ca("mesh", Go)?;
    let (honest_port, liar_port) = (free_port()?, free_port()?);
    let _honest = start_wss_go_listener(&pki, &ca, "honest", &["honest"], honest_port)?;
    let _liar = start_wss_go_listener(&pki, &ca, "liar", &["someone"], liar_port)?;
    // The test CA stands for the system roots: rustls-native-certs reads SSL_CERT_FILE.
    let roots = format!("SSL_CERT_FILE={}", ca.cert.display());
    let wrapper = ["env", roots.as_str()];
    let dialer = NodeProcess::start_wrapped(
        Rust,
        NodeConfig::new("dialer")
            .entry("ws-peer", wss_peer_system_roots(honest_port))
            .entry("ws-peer", wss_peer_system_roots(liar_port)),
        &wrapper,
    )?;
    wait_for_log_line(
        &dialer,
        &[
            "ws-peer",
            &format!("wss://127.0.0.1:{liar_port}/"),
            "refused",
            "it announced node ID liar but its certificate does not name it",
        ],
    )?;
    wait_for_peers(&dialer, &["honest"])?;
    dialer.wait_for_ping("honest")?;

    // A `tls-client` named `default` with `skipreceptornamescheck` turns the check off
    // (a tls-client needs a certificate and key, as in Go).
    let own = pki.cert(&ca, "lenient", &["lenient"], Go)?;
    let lenient = NodeProcess::start_wrapped(
        Rust,
        NodeConfig::new("lenient")
            .entry(
                "tls-client",
                json!({"name": "default", "cert": own.cert.display().to_string(),
                       "key": own.key.display().to_string(), "skipreceptornamescheck": true}),
            )
            .entry("ws-peer", wss_peer_system_roots(liar_port)),
        &wrapper,
    )?;
    wait_for_peers(&lenient, &["liar"])?;
    lenient.wait_for_ping("liar")?;
    Ok(())
}
