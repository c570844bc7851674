//! Scenario: the middle node of a proxied line dies in the middle of a transfer.
//!
//! `left` runs a `tcp-server` towards `right:bulk`, `right` a `tcp-client` towards a sink
//! of the test. A client streams without end; once data flows, `middle` is killed. Both
//! ends must then fail cleanly within the mesh streams' idle timeout (30 s), plus a margin
//! for a loaded machine: the client's writes fail and the sink's reads end short of what
//! was sent (Rust ends reset their TCP connections, so the sink sees an error, not an end
//! of stream). Nothing hangs, and `left` and `right` keep running and answering.

use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use receptor_tests::free_port;
use receptor_tests::wait::wait_until;
use receptor_tests::Implementation::{self, Go, Rust};
use serde_json::json;

use crate::streams_traffic::{proxied_line, Pattern, MB};

/// QUIC idle timeout of mesh streams (Go's and ours).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time allowed after the idle timeout on a loaded machine.
const MARGIN: Duration = Duration::from_secs(20);
/// Data that must have reached the sink before the middle node is killed.
const FLOWING: u64 = 4 * MB;

struct SinkOutcome {
    len: u64,
    error: Option<std::io::Error>,
    at: Instant,
}

fn middle_dies(impls: [Implementation; 3]) -> Result<()> {
    let target = TcpListener::bind("127.0.0.1:0")?;
    let target_addr = target.local_addr()?;
    let port = free_port()?;
    let mut nodes = proxied_line(
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
    let deadline_after_kill = IDLE_TIMEOUT + MARGIN;

    // The sink counts what arrives.
    let received = Arc::new(AtomicU64::new(0));
    let (sink_tx, sink_rx) = mpsc::channel();
    {
        let received = received.clone();
        thread::spawn(move || {
            let outcome = (|| -> std::io::Result<SinkOutcome> {
                let (mut s, _) = target.accept()?;
                s.set_read_timeout(Some(Duration::from_secs(100)))?;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => {
                            return Ok(SinkOutcome {
                                len: received.load(Ordering::Relaxed),
                                error: None,
                                at: Instant::now(),
                            })
                        }
                        Ok(n) => {
                            received.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Err(e) => {
                            return Ok(SinkOutcome {
                                len: received.load(Ordering::Relaxed),
                                error: Some(e),
                                at: Instant::now(),
                            })
                        }
                    }
                }
            })();
            let _ = sink_tx.send(outcome);
        });
    }

    // The client writes until it fails.
    let client = TcpStream::connect(("127.0.0.1", port))?;
    client.set_write_timeout(Some(Duration::from_secs(100)))?;
    let (client_tx, client_rx) = mpsc::channel();
    {
        let mut client = client.try_clone()?;
        thread::spawn(move || {
            let pattern = Pattern::new(0x5eed_0003);
            let outcome = pattern.send(&mut client, u64::MAX / 2);
            let _ = client_tx.send((outcome.err(), Instant::now()));
        });
    }

    wait_until(Duration::from_secs(60), "data flowing to the sink", || {
        Ok((received.load(Ordering::Relaxed) >= FLOWING).then_some(()))
    })?;
    nodes[1].kill();
    let killed = Instant::now();

    let (client_error, client_at) = client_rx
        .recv_timeout(deadline_after_kill)
        .context("the client's writes still go on")?;
    let client_error = client_error.context("the client's writes ended without an error")?;
    ensure!(
        client_at - killed <= deadline_after_kill,
        "the client's error came {:?} after the kill",
        client_at - killed
    );
    let sink = sink_rx
        .recv_timeout(deadline_after_kill)
        .context("the sink still waits for data")??;
    ensure!(
        sink.at - killed <= deadline_after_kill,
        "the sink's end came {:?} after the kill",
        sink.at - killed
    );
    if impls[2] == Rust {
        let e = sink
            .error
            .as_ref()
            .context("the sink saw a normal end of stream, not an error")?;
        ensure!(
            e.kind() == std::io::ErrorKind::ConnectionReset,
            "sink error {e}"
        );
    }
    eprintln!(
        "middle killed: client error after {:.1} s ({client_error}), sink ended after {:.1} s \
         with {} MB ({:?})",
        (client_at - killed).as_secs_f64(),
        (sink.at - killed).as_secs_f64(),
        sink.len / MB,
        sink.error
    );
    let _ = client.shutdown(Shutdown::Both);

    // Both ends are alive and well.
    for i in [0, 2] {
        ensure!(nodes[i].is_running(), "{} exited", nodes[i].id());
        let status = nodes[i].status()?;
        ensure!(status["NodeID"] == nodes[i].id(), "status {status}");
    }
    Ok(())
}

mod rust_nodes {
    use super::*;

    #[test]
    fn rust_go_rust() -> Result<()> {
        middle_dies([Rust, Go, Rust])
    }

    #[test]
    fn rust_rust_rust() -> Result<()> {
        middle_dies([Rust, Rust, Rust])
    }
}
