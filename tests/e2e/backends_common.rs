//! Helpers shared by the backend, TLS and firewall scenarios.

use anyhow::{anyhow, ensure, Result};
use receptor_tests::topology::connections_of;
use receptor_tests::wait::{wait_until, CONVERGE_TIMEOUT};
use receptor_tests::Node;
use serde_json::Value;

/// Waits until a log line contains every one of `needles`; returns that line.
pub(crate) fn wait_for_log_line(node: &Node, needles: &[&str]) -> Result<String> {
    wait_until(
        CONVERGE_TIMEOUT,
        &format!("node {} to log a line with {needles:?}", node.id()),
        || {
            Ok(node
                .log()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .map(str::to_string))
        },
    )
}

/// The node IDs of the node's direct connections, sorted.
pub(crate) fn peers(node: &Node) -> Result<Vec<String>> {
    Ok(connections_of(&node.status()?)
        .into_iter()
        .map(|(id, _)| id)
        .collect())
}

/// Waits until the node's direct connections are exactly `expected` (sorted).
pub(crate) fn wait_for_peers(node: &Node, expected: &[&str]) -> Result<()> {
    let mut last = Vec::new();
    wait_until(
        CONVERGE_TIMEOUT,
        &format!("node {} to be connected to exactly {expected:?}", node.id()),
        || {
            last = peers(node)?;
            Ok((last == expected).then_some(()))
        },
    )
    .map_err(|e| anyhow!("{e:#}; connections: {last:?}"))
}

/// One `ping` over the control socket; the JSON reply.
pub(crate) fn ping(node: &Node, target: &str) -> Result<Value> {
    node.command_json(&format!("ping {target}"))
}

/// Pings `target` from `node` once and requires success.
pub(crate) fn ping_ok(node: &Node, target: &str) -> Result<()> {
    let reply = ping(node, target)?;
    ensure!(
        reply["Success"] == true,
        "{} ping {target}: {reply}",
        node.id()
    );
    Ok(())
}

/// Every node pings every other node (waiting for routes first).
pub(crate) fn ping_all(nodes: &[&Node]) -> Result<()> {
    for from in nodes {
        for to in nodes.iter().filter(|n| n.id() != from.id()) {
            from.wait_for_ping(to.id())?;
        }
    }
    Ok(())
}
