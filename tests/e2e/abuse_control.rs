//! Scenario: a node's control socket held open by 2,000 idle clients, half of which
//! sent the first byte of a command and stalled. The node keeps serving other clients
//! (`status` and a `ping` to its peer answered within 1 s) and its memory grows by at
//! most [`PER_CONNECTION`] per held connection.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use receptor_tests::wait::{wait_until, CONVERGE_TIMEOUT};
use receptor_tests::Implementation::Rust;
use receptor_tests::{free_port, NodeConfig, NodeProcess};
use serde_json::json;

/// Idle control connections held open.
const IDLE: usize = 2000;

/// The promised bound on resident memory per held control connection.
const PER_CONNECTION: u64 = 32 * 1024;

/// Other clients get their answer within this.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// VmRSS of process `pid`, in bytes.
fn rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kb * 1024)
}

/// Descriptors process `pid` has open.
fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Raises this process's soft limit of open files to at least `want` (up to the hard
/// limit); fails if the hard limit is lower.
fn ensure_fd_limit(want: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit");
    }
    if lim.rlim_cur >= want {
        return Ok(());
    }
    ensure!(
        lim.rlim_max >= want,
        "the hard limit of open files ({}) is below the {want} this test needs",
        lim.rlim_max
    );
    lim.rlim_cur = want;
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit");
    }
    Ok(())
}

/// `status` and a ping to `peer` from a fresh client, each answered within
/// [`ANSWER_WITHIN`].
fn served(node: &NodeProcess, peer: &str) -> Result<(Duration, Duration)> {
    let started = Instant::now();
    let status = node.status()?;
    let status_took = started.elapsed();
    ensure!(status["NodeID"] == node.id(), "status: {status}");
    let started = Instant::now();
    let ping = node.command_json(&format!("ping {peer}"))?;
    let ping_took = started.elapsed();
    ensure!(ping["Success"] == json!(true), "ping: {ping}");
    ensure!(
        status_took <= ANSWER_WITHIN && ping_took <= ANSWER_WITHIN,
        "status took {status_took:?}, ping {ping_took:?}"
    );
    Ok((status_took, ping_took))
}

mod rust_nodes {
    use super::*;

    #[test]
    fn two_thousand_idle_control_connections() -> Result<()> {
        ensure_fd_limit(IDLE as u64 + 256)?;
        let port = free_port()?;
        let node = NodeProcess::start(Rust, NodeConfig::new("target").tcp_listener(port))?;
        let peer = NodeProcess::start(Rust, NodeConfig::new("peer").tcp_peer(port))?;
        node.wait_for_ping("peer")?;
        let pid = node.pid().ok_or_else(|| anyhow!("target is not running"))?;
        served(&node, "peer")?;
        let before = rss(pid)?;

        let mut held = Vec::with_capacity(IDLE);
        for i in 0..IDLE {
            let mut conn = UnixStream::connect(node.socket())
                .with_context(|| format!("control connection {i}"))?;
            if i % 2 == 1 {
                conn.write_all(b"s")?;
            }
            held.push(conn);
        }
        // Every connection accepted: the node holds a descriptor for each.
        let fds_before = open_fds(pid)?;
        wait_until(
            CONVERGE_TIMEOUT,
            "the node to accept every connection",
            || Ok((open_fds(pid)? >= IDLE).then_some(())),
        )
        .with_context(|| format!("{fds_before} descriptors open"))?;
        let (status_took, ping_took) = served(&node, "peer")?;
        let after = rss(pid)?;
        eprintln!(
            "{IDLE} idle control connections: RSS {} -> {} KiB ({} B each); \
             status {status_took:?}, ping {ping_took:?}",
            before / 1024,
            after / 1024,
            after.saturating_sub(before) / IDLE as u64
        );
        ensure!(
            after <= before + PER_CONNECTION * IDLE as u64,
            "RSS grew from {before} to {after} bytes with {IDLE} idle connections"
        );
        drop(held);
        served(&node, "peer")?;
        drop(peer);
        Ok(())
    }
}
