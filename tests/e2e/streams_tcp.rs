//! Scenario: a TCP proxy across a line of three nodes. `left` runs a `tcp-server` (a local
//! port whose connections go to `right:bulk`), `right` runs a `tcp-client` (the service
//! `bulk`, connected to a TCP server of the test). A stream of [`LEN`] bytes goes through
//! in each direction and must arrive byte-identical (SHA-256 on both sides); the time,
//! throughput and every node's peak RSS of each transfer are printed (`--nocapture`).

use std::net::TcpListener;
use std::sync::Arc;

use anyhow::{Context, Result};
use receptor_tests::free_port;
use receptor_tests::Implementation::{self, Go, Rust};
use serde_json::json;

use crate::streams_traffic::{
    download, line_rss, proxied_line, serve_one, upload, Conn, Measurement, Pattern, Role, Target,
    MB,
};

/// Bytes per transfer.
pub(crate) const LEN: u64 = 100 * MB;
/// Bytes per transfer through the Go-only line (the reference check of the scenario): Go
/// nodes move about 7 MB/s, so 100 MB would cost half a minute.
const GO_LEN: u64 = 20 * MB;

/// Runs both transfers through the line `impls`; returns the measurements (upload, download).
pub(crate) fn tcp_both_ways(impls: [Implementation; 3], len: u64) -> Result<Vec<Measurement>> {
    let target = TcpListener::bind("127.0.0.1:0")?;
    let target_addr = target.local_addr()?;
    let target = Arc::new(Target::Tcp(target));
    let port = free_port()?;
    let nodes = proxied_line(
        impls,
        (
            "tcp-server",
            json!({"port": port, "bindaddr": "127.0.0.1", "remotenode": "right", "remoteservice": "bulk"}),
        ),
        (
            "tcp-client",
            json!({"service": "bulk", "address": target_addr.to_string()}),
        ),
        "bulk",
    )?;
    let label = impls.map(|i| i.label()).join("-");
    let pattern = Arc::new(Pattern::new(0x5eed_0001));
    let connect = || -> Result<Conn> {
        let s = std::net::TcpStream::connect(("127.0.0.1", port))
            .with_context(|| format!("connecting to left's tcp-server on port {port}"))?;
        Ok(Conn::Tcp(s))
    };

    let sink = serve_one(&target, &pattern, Role::Sink);
    let up = upload(connect()?, sink, &pattern, len).context("upload left -> right")?;
    let up = Measurement {
        label: format!("tcp {label} upload"),
        bytes: len,
        elapsed: up,
        peak_rss_kb: line_rss(&nodes),
    };
    up.print();

    let source = serve_one(&target, &pattern, Role::Source(len));
    let down = download(connect()?, source, &pattern, len).context("download right -> left")?;
    let down = Measurement {
        label: format!("tcp {label} download"),
        bytes: len,
        elapsed: down,
        peak_rss_kb: line_rss(&nodes),
    };
    down.print();
    Ok(vec![up, down])
}

mod go {
    use super::*;

    #[test]
    fn go_go_go() -> Result<()> {
        tcp_both_ways([Go, Go, Go], GO_LEN).map(drop)
    }
}

mod rust_nodes {
    use super::*;

    #[test]
    fn go_rust_go() -> Result<()> {
        tcp_both_ways([Go, Rust, Go], LEN).map(drop)
    }

    #[test]
    fn rust_go_rust() -> Result<()> {
        tcp_both_ways([Rust, Go, Rust], LEN).map(drop)
    }

    #[test]
    fn rust_rust_rust() -> Result<()> {
        tcp_both_ways([Rust, Rust, Rust], LEN).map(drop)
    }
}
