//! Scenario: a line `alpha - beta - gamma` whose links are TLS with mutual
//! authentication: `beta` dials `alpha` over TLS-TCP (checking alpha's certificate for
//! the DNS name `localhost`), `gamma` dials `beta` over TLS-WebSocket (`wss://`,
//! checking the IP address 127.0.0.1). Every node presents a certificate made with its
//! own implementation's `--cert-makereq`/`--cert-signreq`, signed by one CA, so Go
//! accepts the certificates Rust makes and the reverse; a Rust node also holds its
//! TLS-TCP peer to the node ID the peer's certificate names (beyond Go 1.6.9), which
//! these certificates pass. Once converged, every node pings every other, and the end
//! nodes run work on each other (`receptorctl work submit --node`), so the QUIC
//! streams of remote work cross both TLS links.

use anyhow::Result;
use receptor_tests::Implementation::{self, Go, Rust};
use receptor_tests::{free_port, NodeConfig, NodeProcess};
use serde_json::json;

use crate::backends_common::{ping_all, remote_work_between_the_ends, wait_for_peers};
use crate::tls_pki::{tls_client, tls_server, Pki};

const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

fn tls_line(implementations: [Implementation; 3]) -> Result<()> {
    let pki = Pki::new()?;
    let ca = pki.ca("mesh", implementations[1])?;
    let certs = NAMES
        .iter()
        .zip(implementations)
        .map(|(name, by)| pki.cert(&ca, name, &[name], by))
        .collect::<Result<Vec<_>>>()?;
    let (tcp_port, ws_port) = (free_port()?, free_port()?);
    let configs = [
        NodeConfig::new(NAMES[0])
            .work_command("cat", "cat", None)
            .entry("tls-server", tls_server("srv", &certs[0], &ca, json!({})))
            .entry(
                "tcp-listener",
                json!({"port": tcp_port, "bindaddr": "127.0.0.1", "tls": "srv"}),
            ),
        NodeConfig::new(NAMES[1])
            .entry("tls-server", tls_server("srv", &certs[1], &ca, json!({})))
            .entry("tls-client", tls_client("cli", &certs[1], &ca, json!({})))
            .entry(
                "tcp-peer",
                json!({"address": format!("localhost:{tcp_port}"), "tls": "cli"}),
            )
            .entry(
                "ws-listener",
                json!({"port": ws_port, "bindaddr": "127.0.0.1", "tls": "srv"}),
            ),
        NodeConfig::new(NAMES[2])
            .work_command("cat", "cat", None)
            .entry("tls-client", tls_client("cli", &certs[2], &ca, json!({})))
            .entry(
                "ws-peer",
                json!({"address": format!("wss://127.0.0.1:{ws_port}/"), "tls": "cli"}),
            ),
    ];
    let nodes = implementations
        .into_iter()
        .zip(configs)
        .map(|(by, config)| NodeProcess::start(by, config))
        .collect::<Result<Vec<_>>>()?;
    wait_for_peers(&nodes[0], &["beta"])?;
    wait_for_peers(&nodes[1], &["alpha", "gamma"])?;
    wait_for_peers(&nodes[2], &["beta"])?;
    ping_all(&nodes.iter().collect::<Vec<_>>())?;
    remote_work_between_the_ends(&nodes)
}

#[test]
fn go_rust_go() -> Result<()> {
    tls_line([Go, Rust, Go])
}

#[test]
fn rust_go_rust() -> Result<()> {
    tls_line([Rust, Go, Rust])
}

#[test]
fn rust_rust_rust() -> Result<()> {
    tls_line([Rust, Rust, Rust])
}
