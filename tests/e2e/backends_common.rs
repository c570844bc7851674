//! Helpers shared by the backend, TLS and firewall scenarios.

use anyhow::{anyhow, ensure, Result};
use receptor_tests::topology::connections_of;
use receptor_tests::wait::{wait_until, CONVERGE_TIMEOUT};
use receptor_tests::{Implementation, NodeConfig, NodeProcess};
use serde_json::Value;

/// Waits until a log line contains every one of `needles`; returns that line.
pub(crate) fn wait_for_log_line(node: &NodeProcess, needles: &[&str]) -> Result<String> {
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
pub(crate) fn peers(node: &NodeProcess) -> Result<Vec<String>> {
    Ok(connections_of(&node.status()?)
        .into_iter()
        .map(|(id, _)| id)
        .collect())
}

/// Waits until the node's direct connections are exactly `expected` (sorted).
pub(crate) fn wait_for_peers(node: &NodeProcess, expected: &[&str]) -> Result<()> {
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
pub(crate) fn ping(node: &NodeProcess, target: &str) -> Result<Value> {
    node.command_json(&format!("ping {target}"))
}

/// Pings `target` from `node` once and requires success.
pub(crate) fn ping_ok(node: &NodeProcess, target: &str) -> Result<()> {
    let reply = ping(node, target)?;
    ensure!(
        reply["Success"] == true,
        "{} ping {target}: {reply}",
        node.id()
    );
    Ok(())
}

/// Every node pings every other node (waiting for routes first).
pub(crate) fn ping_all(nodes: &[&NodeProcess]) -> Result<()> {
    for from in nodes {
        for to in nodes.iter().filter(|n| n.id() != from.id()) {
            from.wait_for_ping(to.id())?;
        }
    }
    Ok(())
}

/// Runs a `cat` unit on `to` from `from` with `receptorctl work submit --node` and
/// checks that the results are the payload (64 KiB: many mesh datagrams each way).
/// `to` must have the `cat` work type.
pub(crate) fn remote_cat(from: &NodeProcess, to: &NodeProcess) -> Result<()> {
    let mut data = Vec::with_capacity(64 * 1024 + 64);
    let mut i = 0u32;
    while data.len() < 64 * 1024 {
        data.extend_from_slice(
            format!("line {i:05} from {} to {}\n", from.id(), to.id()).as_bytes(),
        );
        i += 1;
    }
    remote_cat_of(from, to, &data)
}

/// Waits until `from` knows `to`'s `cat` work type, runs a `cat` unit of `data` on `to`
/// with `receptorctl work submit --node`, and checks that the results are `data` and the
/// unit succeeded.
pub(crate) fn remote_cat_of(from: &NodeProcess, to: &NodeProcess, data: &[u8]) -> Result<()> {
    from.wait_for_status(&format!("{}'s work types", to.id()), |status| {
        status["Advertisements"].as_array().is_some_and(|ads| {
            ads.iter().any(|ad| {
                ad["NodeID"] == to.id() && ad["WorkCommands"].to_string().contains("\"cat\"")
            })
        })
    })?;
    let payload = from.dir().join(format!("payload-for-{}.txt", to.id()));
    std::fs::write(&payload, data)?;
    let submit = from
        .receptorctl(&[
            "work",
            "submit",
            "cat",
            "--node",
            to.id(),
            "-p",
            &payload.display().to_string(),
        ])?
        .ok()?;
    let unit = submit
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("Unit ID: "))
        .ok_or_else(|| anyhow!("no unit id in {}", submit.describe()))?
        .trim()
        .to_string();
    let results = from.receptorctl(&["work", "results", &unit])?.ok()?;
    ensure!(
        results.stdout.as_bytes() == data,
        "{} -> {}: {} bytes of results for {} bytes of payload",
        from.id(),
        to.id(),
        results.stdout.len(),
        data.len()
    );
    let status = from.command_json(&format!("work status {unit}"))?;
    ensure!(status["StateName"] == "Succeeded", "unit status {status}");
    Ok(())
}

/// Starts a line of three nodes (`a - b - c`, the ends with the `cat` work type), one
/// of each of `implementations`; checks the connections, pings between all of them, and
/// runs work between the ends.
pub(crate) fn line_of_three(
    implementations: [Implementation; 3],
    configs: [NodeConfig; 3],
) -> Result<()> {
    let nodes = implementations
        .into_iter()
        .zip(configs)
        .map(|(by, config)| NodeProcess::start(by, config))
        .collect::<Result<Vec<_>>>()?;
    wait_for_peers(&nodes[0], &["b"])?;
    wait_for_peers(&nodes[1], &["a", "c"])?;
    wait_for_peers(&nodes[2], &["b"])?;
    ping_all(&nodes.iter().collect::<Vec<_>>())?;
    remote_work_between_the_ends(&nodes)
}

/// The end nodes of a line run work on each other, across the middle.
pub(crate) fn remote_work_between_the_ends(nodes: &[NodeProcess]) -> Result<()> {
    let (first, last) = (&nodes[0], &nodes[nodes.len() - 1]);
    remote_cat(last, first)?;
    remote_cat(first, last)
}
