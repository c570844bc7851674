//! Scenario: a Rust node (`hub`) with a TLS-TCP listener and a TLS-TCP dialer refuses
//! peers it must not trust, each with one clear log line, while a well-behaved Go peer
//! (`friend`) on the same listener stays connected and reachable:
//!
//! * a peer whose certificate names another node ID than the one it announces in its
//!   first ROUTE (the check Go 1.6.9 does not make), inbound and outbound, unless the
//!   hub's configuration sets `skipreceptornamescheck`;
//! * a certificate from a CA the hub does not trust, inbound and outbound;
//! * a certificate that does not match the pinned fingerprint, inbound and outbound;
//! * a peer that does not speak TLS, and a client that never starts the handshake
//!   (cut off after 15 s); more than 64 such clients at once are refused outright.
//!
//! Refused dialers are told their session ended and redial (with their backoff).

use anyhow::{ensure, Result};
use receptor_tests::wait::{wait_until, CONVERGE_TIMEOUT};
use receptor_tests::Implementation::{Go, Rust};
use receptor_tests::{free_port, Node, NodeConfig};
use serde_json::{json, Value};

use crate::backends_common::{ping_ok, wait_for_log_line, wait_for_peers};
use crate::tls_pki::{fingerprint, tls_client, tls_server, Ca, Cert, Pki};

/// A `tcp-listener` on 127.0.0.1 with TLS configuration `tls`.
fn tls_listener(port: u16, tls: &str) -> Value {
    json!({"port": port, "bindaddr": "127.0.0.1", "tls": tls})
}

/// A `tcp-peer` dialing 127.0.0.1 with TLS configuration `tls`.
fn tls_peer(port: u16, tls: &str) -> Value {
    json!({"address": format!("127.0.0.1:{port}"), "tls": tls})
}

/// Starts the Go node `friend` dialing the hub's listener with a certificate for itself.
fn start_friend(pki: &Pki, ca: &Ca, hub_port: u16) -> Result<Node> {
    let cert = pki.cert(ca, "friend", &["friend"], Go)?;
    start_friend_with(&cert, ca, hub_port)
}

fn start_friend_with(cert: &Cert, ca: &Ca, hub_port: u16) -> Result<Node> {
    Node::start(
        Go,
        NodeConfig::new("friend")
            .entry("tls-client", tls_client("cli", cert, ca, json!({})))
            .entry("tcp-peer", tls_peer(hub_port, "cli")),
    )
}

/// The hub keeps its friend after the refusals: still its only connection, reachable.
fn friend_unharmed(hub: &Node, friend: &Node) -> Result<()> {
    wait_for_peers(hub, &["friend"])?;
    hub.wait_for_ping("friend")?;
    friend.wait_for_ping("hub")?;
    ping_ok(hub, "friend")
}

#[test]
fn node_id_not_in_certificate_is_refused_both_ways() -> Result<()> {
    let pki = Pki::new()?;
    let ca = pki.ca("mesh", Rust)?;
    let hub_cert = pki.cert(&ca, "hub", &["hub"], Rust)?;
    // Certificates for a node called `someone`, used by nodes with other IDs (their own
    // start-up check is switched off so that they run at all).
    let someone_go = pki.cert(&ca, "someone-go", &["someone"], Go)?;
    let someone_rust = pki.cert(&ca, "someone-rust", &["someone"], Rust)?;
    let skip = json!({"skipreceptornamescheck": true});

    let liar_port = free_port()?;
    let _liar = Node::start(
        Go,
        NodeConfig::new("liar")
            .entry(
                "tls-server",
                tls_server("srv", &someone_go, &ca, skip.clone()),
            )
            .entry("tcp-listener", tls_listener(liar_port, "srv")),
    )?;
    let hub_port = free_port()?;
    let hub = Node::start(
        Rust,
        NodeConfig::new("hub")
            .entry("tls-server", tls_server("srv", &hub_cert, &ca, json!({})))
            .entry("tls-client", tls_client("cli", &hub_cert, &ca, json!({})))
            .entry("tcp-listener", tls_listener(hub_port, "srv"))
            .entry("tcp-peer", tls_peer(liar_port, "cli")),
    )?;
    let friend = start_friend(&pki, &ca, hub_port)?;
    let _mallory = Node::start(
        Rust,
        NodeConfig::new("mallory")
            .entry("tls-client", tls_client("cli", &someone_rust, &ca, skip))
            .entry("tcp-peer", tls_peer(hub_port, "cli")),
    )?;

    let inbound = wait_for_log_line(&hub, &["tcp-listener", "refused", "mallory", "someone"])?;
    let outbound = wait_for_log_line(&hub, &["tcp-peer", "refused", "liar", "someone"])?;
    for line in [&inbound, &outbound] {
        ensure!(
            line.contains("certificate"),
            "the refusal should say why: {line}"
        );
    }
    friend_unharmed(&hub, &friend)?;
    let log = hub.log();
    ensure!(
        !log.contains("peer=mallory") && !log.contains("peer=liar"),
        "a refused peer was registered:\n{log}"
    );
    Ok(())
}

#[test]
fn node_id_check_is_skipped_with_skipreceptornamescheck() -> Result<()> {
    let pki = Pki::new()?;
    let ca = pki.ca("mesh", Go)?;
    let hub_cert = pki.cert(&ca, "hub", &["hub"], Rust)?;
    let someone = pki.cert(&ca, "someone", &["someone"], Go)?;
    let skip = json!({"skipreceptornamescheck": true});
    let hub_port = free_port()?;
    let hub = Node::start(
        Rust,
        NodeConfig::new("hub")
            .entry(
                "tls-server",
                tls_server("srv", &hub_cert, &ca, skip.clone()),
            )
            .entry("tcp-listener", tls_listener(hub_port, "srv")),
    )?;
    let mallory = Node::start(
        Go,
        NodeConfig::new("mallory")
            .entry("tls-client", tls_client("cli", &someone, &ca, skip))
            .entry("tcp-peer", tls_peer(hub_port, "cli")),
    )?;
    wait_for_peers(&hub, &["mallory"])?;
    hub.wait_for_ping("mallory")?;
    mallory.wait_for_ping("hub")?;
    Ok(())
}

#[test]
fn certificate_from_an_untrusted_ca_is_refused_both_ways() -> Result<()> {
    let pki = Pki::new()?;
    let trusted = pki.ca("trusted", Go)?;
    let other = pki.ca("other", Rust)?;
    let hub_cert = pki.cert(&trusted, "hub", &["hub"], Rust)?;
    let intruder_cert = pki.cert(&other, "intruder", &["intruder"], Go)?;
    let outsider_cert = pki.cert(&other, "outsider", &["outsider"], Rust)?;

    let outsider_port = free_port()?;
    let _outsider = Node::start(
        Rust,
        NodeConfig::new("outsider")
            .entry(
                "tls-server",
                tls_server("srv", &outsider_cert, &trusted, json!({})),
            )
            .entry("tcp-listener", tls_listener(outsider_port, "srv")),
    )?;
    let hub_port = free_port()?;
    let hub = Node::start(
        Rust,
        NodeConfig::new("hub")
            .entry(
                "tls-server",
                tls_server("srv", &hub_cert, &trusted, json!({})),
            )
            .entry(
                "tls-client",
                tls_client("cli", &hub_cert, &trusted, json!({})),
            )
            .entry("tcp-listener", tls_listener(hub_port, "srv"))
            .entry("tcp-peer", tls_peer(outsider_port, "cli")),
    )?;
    let friend = start_friend(&pki, &trusted, hub_port)?;
    // A Go client sends no certificate the server's CA list does not cover (the
    // handshake then fails for want of one); a Rust client sends it and has it refused.
    let _intruder = Node::start(
        Rust,
        NodeConfig::new("intruder")
            .entry(
                "tls-client",
                tls_client("cli", &intruder_cert, &trusted, json!({})),
            )
            .entry("tcp-peer", tls_peer(hub_port, "cli")),
    )?;
    let go_intruder_cert = pki.cert(&other, "go-intruder", &["go-intruder"], Go)?;
    let _go_intruder = Node::start(
        Go,
        NodeConfig::new("go-intruder")
            .entry(
                "tls-client",
                tls_client("cli", &go_intruder_cert, &trusted, json!({})),
            )
            .entry("tcp-peer", tls_peer(hub_port, "cli")),
    )?;

    wait_for_log_line(
        &hub,
        &[
            "tcp-listener",
            "refused",
            "TLS handshake failed",
            "UnknownIssuer",
        ],
    )?;
    wait_for_log_line(
        &hub,
        &[
            "tcp-listener",
            "refused",
            "TLS handshake failed",
            "no certificates",
        ],
    )?;
    let outbound = [
        "tcp-peer",
        &format!("127.0.0.1:{outsider_port}"),
        "refused",
        "TLS handshake failed",
        "UnknownIssuer",
    ];
    wait_for_log_line(&hub, &outbound)?;
    // The dialer was told, and tried again.
    wait_until(CONVERGE_TIMEOUT, "a redial after the refusal", || {
        let log = hub.log();
        let n = log
            .lines()
            .filter(|l| outbound.iter().all(|w| l.contains(w)))
            .count();
        Ok((n >= 2).then_some(()))
    })?;
    friend_unharmed(&hub, &friend)
}

#[test]
fn certificate_not_matching_the_pin_is_refused_both_ways() -> Result<()> {
    let pki = Pki::new()?;
    let ca = pki.ca("mesh", Rust)?;
    let hub_cert = pki.cert(&ca, "hub", &["hub"], Rust)?;
    let friend_cert = pki.cert(&ca, "friend", &["friend"], Go)?;
    let unpinned_cert = pki.cert(&ca, "unpinned", &["unpinned"], Go)?;
    let server_cert = pki.cert(&ca, "server", &["server"], Rust)?;
    // Only the friend's certificate is pinned, on both sides of the hub.
    let pin = fingerprint(&friend_cert.cert)?;

    let server_port = free_port()?;
    let _server = Node::start(
        Go,
        NodeConfig::new("server")
            .entry(
                "tls-server",
                tls_server("srv", &server_cert, &ca, json!({})),
            )
            .entry("tcp-listener", tls_listener(server_port, "srv")),
    )?;
    let hub_port = free_port()?;
    let hub = Node::start(
        Rust,
        NodeConfig::new("hub")
            .entry(
                "tls-server",
                tls_server("srv", &hub_cert, &ca, json!({"pinnedclientcert": [pin]})),
            )
            .entry(
                "tls-client",
                tls_client("cli", &hub_cert, &ca, json!({"pinnedservercert": [pin]})),
            )
            .entry("tcp-listener", tls_listener(hub_port, "srv"))
            .entry("tcp-peer", tls_peer(server_port, "cli")),
    )?;
    let friend = start_friend_with(&friend_cert, &ca, hub_port)?;
    let _unpinned = Node::start(
        Go,
        NodeConfig::new("unpinned")
            .entry(
                "tls-client",
                tls_client("cli", &unpinned_cert, &ca, json!({})),
            )
            .entry("tcp-peer", tls_peer(hub_port, "cli")),
    )?;

    wait_for_log_line(&hub, &["tcp-listener", "refused", "pinned fingerprint"])?;
    wait_for_log_line(
        &hub,
        &[
            "tcp-peer",
            &format!("127.0.0.1:{server_port}"),
            "refused",
            "pinned fingerprint",
        ],
    )?;
    friend_unharmed(&hub, &friend)
}

#[test]
fn plaintext_peer_and_silent_client_are_refused() -> Result<()> {
    let pki = Pki::new()?;
    let ca = pki.ca("mesh", Go)?;
    let hub_cert = pki.cert(&ca, "hub", &["hub"], Rust)?;
    let hub_port = free_port()?;
    let hub = Node::start(
        Rust,
        NodeConfig::new("hub")
            .entry("tls-server", tls_server("srv", &hub_cert, &ca, json!({})))
            .entry("tcp-listener", tls_listener(hub_port, "srv")),
    )?;
    let friend = start_friend(&pki, &ca, hub_port)?;
    // A client that connects and never starts the handshake.
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", hub_port))?;
    silent.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    // A Go node that forgot `tls` on its peer: its first ROUTE is not a ClientHello.
    let _plain = Node::start(Go, NodeConfig::new("plain").tcp_peer(hub_port))?;

    wait_for_log_line(&hub, &["tcp-listener", "refused", "TLS handshake failed"])?;
    let line = wait_for_log_line(
        &hub,
        &["tcp-listener", "refused", "no handshake within 15s"],
    )?;
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut silent, &mut buf)?;
    ensure!(
        n == 0,
        "the silent client got {n} bytes instead of EOF ({line})"
    );
    friend_unharmed(&hub, &friend)
}

/// Both implementations refuse to start with a certificate that does not name the node
/// (unless `skipreceptornamescheck`), and say so.
#[test]
fn own_certificate_must_name_the_node() -> Result<()> {
    let pki = Pki::new()?;
    let ca = pki.ca("mesh", Rust)?;
    let someone = pki.cert(&ca, "someone", &["someone"], Go)?;
    for by in [Go, Rust] {
        let config = NodeConfig::new("hub")
            .entry("tls-server", tls_server("srv", &someone, &ca, json!({})))
            .entry("tcp-listener", tls_listener(free_port()?, "srv"));
        let log = Node::run_expecting_failure(by, config)?;
        ensure!(
            log.contains("nodeID=hub not found in certificate name(s)"),
            "{}: {log}",
            by.label()
        );
        let config = NodeConfig::new("hub")
            .entry(
                "tls-server",
                tls_server(
                    "srv",
                    &someone,
                    &ca,
                    json!({"skipreceptornamescheck": true}),
                ),
            )
            .entry("tcp-listener", tls_listener(free_port()?, "srv"));
        Node::start(by, config)?;
    }
    Ok(())
}

/// Connections that never start their handshake cannot pile up: beyond 64 handshakes
/// in progress a TLS listener refuses new connections at once, and serves again as
/// soon as the silent ones are gone.
#[test]
fn pending_handshakes_are_bounded() -> Result<()> {
    let pki = Pki::new()?;
    let ca = pki.ca("mesh", Rust)?;
    let hub_cert = pki.cert(&ca, "hub", &["hub"], Rust)?;
    let hub_port = free_port()?;
    let hub = Node::start(
        Rust,
        NodeConfig::new("hub")
            .entry("tls-server", tls_server("srv", &hub_cert, &ca, json!({})))
            .entry("tcp-listener", tls_listener(hub_port, "srv")),
    )?;
    let silent = (0..65)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", hub_port)))
        .collect::<std::io::Result<Vec<_>>>()?;
    wait_for_log_line(
        &hub,
        &["refused", "more than 64 TLS handshakes in progress"],
    )?;
    drop(silent);
    let friend = start_friend(&pki, &ca, hub_port)?;
    friend_unharmed(&hub, &friend)
}
