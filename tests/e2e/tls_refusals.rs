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
use receptor_tests::{free_port, NodeConfig, NodeProcess};
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
fn start_friend(pki: &Pki, ca: &Ca, hub_port: u16) -> Result<NodeProcess> {
    let cert = pki.cert(ca, "friend", &["friend"], Go)?;
    start_friend_with(&cert, ca, hub_port)
}

fn start_friend_with(cert: &Cert, ca: &Ca, hub_port: u16) -> Result<NodeProcess> {
    NodeProcess::start(Go, dialing("friend", hub_port, cert, ca, json!({})))
}

/// Node `id` with a TLS listener on `port`: tls-server `srv` from `cert`, `ca` and `extra`.
fn listening(id: &str, port: u16, cert: &Cert, ca: &Ca, extra: Value) -> NodeConfig {
    NodeConfig::new(id)
        .entry("tls-server", tls_server("srv", cert, ca, extra))
        .entry("tcp-listener", tls_listener(port, "srv"))
}

/// Node `id` dialing `port` over TLS: tls-client `cli` from `cert`, `ca` and `extra`.
fn dialing(id: &str, port: u16, cert: &Cert, ca: &Ca, extra: Value) -> NodeConfig {
    NodeConfig::new(id)
        .entry("tls-client", tls_client("cli", cert, ca, extra))
        .entry("tcp-peer", tls_peer(port, "cli"))
}

/// The node `hub` listening on `port` and dialing `peer_port`, both with its own `cert`
/// and `ca` (`server` and `client` add to the tls-server and tls-client).
fn hub_config(
    port: u16,
    peer_port: u16,
    (cert, ca): (&Cert, &Ca),
    server: Value,
    client: Value,
) -> NodeConfig {
    NodeConfig::new("hub")
        .entry("tls-server", tls_server("srv", cert, ca, server))
        .entry("tls-client", tls_client("cli", cert, ca, client))
        .entry("tcp-listener", tls_listener(port, "srv"))
        .entry("tcp-peer", tls_peer(peer_port, "cli"))
}

/// The hub keeps its friend after the refusals: still its only connection, reachable.
fn friend_unharmed(hub: &NodeProcess, friend: &NodeProcess) -> Result<()> {
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
    let liar = listening("liar", liar_port, &someone_go, &ca, skip.clone());
    let _liar = NodeProcess::start(Go, liar)?;
    let hub_port = free_port()?;
    let hub = hub_config(hub_port, liar_port, (&hub_cert, &ca), json!({}), json!({}));
    let hub = NodeProcess::start(Rust, hub)?;
    let friend = start_friend(&pki, &ca, hub_port)?;
    let _mallory =
        NodeProcess::start(Rust, dialing("mallory", hub_port, &someone_rust, &ca, skip))?;

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
    let hub = NodeProcess::start(
        Rust,
        listening("hub", hub_port, &hub_cert, &ca, skip.clone()),
    )?;
    let mallory = NodeProcess::start(Go, dialing("mallory", hub_port, &someone, &ca, skip))?;
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
    let outsider = listening(
        "outsider",
        outsider_port,
        &outsider_cert,
        &trusted,
        json!({}),
    );
    let _outsider = NodeProcess::start(Rust, outsider)?;
    let hub_port = free_port()?;
    let hub = hub_config(
        hub_port,
        outsider_port,
        (&hub_cert, &trusted),
        json!({}),
        json!({}),
    );
    let hub = NodeProcess::start(Rust, hub)?;
    let friend = start_friend(&pki, &trusted, hub_port)?;
    // A Go client sends no certificate the server's CA list does not cover (the
    // handshake then fails for want of one); a Rust client sends it and has it refused.
    let intruder = dialing("intruder", hub_port, &intruder_cert, &trusted, json!({}));
    let _intruder = NodeProcess::start(Rust, intruder)?;
    let go_intruder_cert = pki.cert(&other, "go-intruder", &["go-intruder"], Go)?;
    let go_intruder = dialing(
        "go-intruder",
        hub_port,
        &go_intruder_cert,
        &trusted,
        json!({}),
    );
    let _go_intruder = NodeProcess::start(Go, go_intruder)?;

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
    let server = listening("server", server_port, &server_cert, &ca, json!({}));
    let _server = NodeProcess::start(Go, server)?;
    let hub_port = free_port()?;
    let hub = hub_config(
        hub_port,
        server_port,
        (&hub_cert, &ca),
        json!({"pinnedclientcert": [pin]}),
        json!({"pinnedservercert": [pin]}),
    );
    let hub = NodeProcess::start(Rust, hub)?;
    let friend = start_friend_with(&friend_cert, &ca, hub_port)?;
    let unpinned = dialing("unpinned", hub_port, &unpinned_cert, &ca, json!({}));
    let _unpinned = NodeProcess::start(Go, unpinned)?;

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
    let hub = NodeProcess::start(Rust, listening("hub", hub_port, &hub_cert, &ca, json!({})))?;
    let friend = start_friend(&pki, &ca, hub_port)?;
    // A client that connects and never starts the handshake.
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", hub_port))?;
    silent.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    // A Go node that forgot `tls` on its peer: its first ROUTE is not a ClientHello.
    let _plain = NodeProcess::start(Go, NodeConfig::new("plain").tcp_peer(hub_port))?;

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
        let config = listening("hub", free_port()?, &someone, &ca, json!({}));
        let log = NodeProcess::run_expecting_failure(by, config)?;
        ensure!(
            log.contains("nodeID=hub not found in certificate name(s)"),
            "{}: {log}",
            by.label()
        );
        let skip = json!({"skipreceptornamescheck": true});
        NodeProcess::start(by, listening("hub", free_port()?, &someone, &ca, skip))?;
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
    let hub = NodeProcess::start(Rust, listening("hub", hub_port, &hub_cert, &ca, json!({})))?;
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
