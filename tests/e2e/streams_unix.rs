//! Scenario: a unix-socket proxy across a line of three nodes. `left` runs a
//! `unix-socket-server` (a socket file whose connections go to `right:usock`), `right` a
//! `unix-socket-client` (the service `usock`, connected to a socket of the test). A stream
//! of [`LEN`] bytes goes through in each direction and must arrive byte-identical; the
//! socket file gets the configured permissions.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use receptor_tests::Implementation::{self, Go, Rust};
use serde_json::json;

use crate::streams_traffic::{
    download, line_rss, proxied_line, serve_one, upload, Conn, Measurement, Pattern, Role, Target,
    MB,
};

/// Bytes per transfer.
const LEN: u64 = 100 * MB;
/// Bytes per transfer through the Go-only line (the reference check of the scenario).
const GO_LEN: u64 = 20 * MB;

fn unix_both_ways(impls: [Implementation; 3], len: u64) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("receptor-usock-")
        .tempdir()?;
    let target_path = dir.path().join("target.sock");
    let entry = dir.path().join("entry.sock");
    let target = Arc::new(Target::Unix(UnixListener::bind(&target_path)?));
    let nodes = proxied_line(
        impls,
        (
            "unix-socket-server",
            json!({"filename": entry.display().to_string(), "permissions": 0o660,
                   "remotenode": "right", "remoteservice": "usock"}),
        ),
        (
            "unix-socket-client",
            json!({"service": "usock", "filename": target_path.display().to_string()}),
        ),
        "usock",
    )?;
    let mode = std::fs::metadata(&entry)?.permissions().mode() & 0o7777;
    ensure!(mode == 0o660, "socket file mode {mode:o}");
    let label = impls.map(|i| i.label()).join("-");
    let pattern = Arc::new(Pattern::new(0x5eed_0002));
    let connect = || -> Result<Conn> {
        let s = UnixStream::connect(&entry)
            .with_context(|| format!("connecting to {}", entry.display()))?;
        Ok(Conn::Unix(s))
    };

    let sink = serve_one(&target, &pattern, Role::Sink);
    let up = upload(connect()?, sink, &pattern, len).context("upload left -> right")?;
    Measurement {
        label: format!("unix {label} upload"),
        bytes: len,
        elapsed: up,
        peak_rss_kb: line_rss(&nodes),
    }
    .print();

    let source = serve_one(&target, &pattern, Role::Source(len));
    let down = download(connect()?, source, &pattern, len).context("download right -> left")?;
    Measurement {
        label: format!("unix {label} download"),
        bytes: len,
        elapsed: down,
        peak_rss_kb: line_rss(&nodes),
    }
    .print();
    Ok(())
}

mod go {
    use super::*;

    #[test]
    fn go_go_go() -> Result<()> {
        unix_both_ways([Go, Go, Go], GO_LEN)
    }
}

mod rust_nodes {
    use super::*;

    #[test]
    fn go_rust_go() -> Result<()> {
        unix_both_ways([Go, Rust, Go], LEN)
    }

    #[test]
    fn rust_go_rust() -> Result<()> {
        unix_both_ways([Rust, Go, Rust], LEN)
    }
}
