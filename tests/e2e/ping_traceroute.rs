//! Scenario: `receptorctl ping` and `receptorctl traceroute` between every pair of nodes of a
//! line `left - middle - right`, in both directions, plus the JSON replies on the raw control
//! protocol and the error for an unknown node.

use anyhow::{ensure, Context, Result};
use receptor_tests::topology::{line_routes, start_line};
use receptor_tests::Implementation::{self, Go, Rust};
use receptor_tests::NodeProcess;

const NAMES: [&str; 3] = ["left", "middle", "right"];

/// The hops a traceroute from node `from` to node `to` of the line passes, in order.
fn path(from: usize, to: usize) -> Vec<&'static str> {
    if from <= to {
        NAMES[from..=to].to_vec()
    } else {
        NAMES[to..=from].iter().rev().copied().collect()
    }
}

fn ping_with_receptorctl(node: &NodeProcess, target: &str) -> Result<()> {
    let out = node.receptorctl(&["ping", target, "--count", "1"])?.ok()?;
    ensure!(
        out.stdout.starts_with(&format!("Reply from {target} in ")),
        "{} ping {target}: {}",
        node.id(),
        out.describe()
    );
    ensure!(
        !out.stderr.contains("Warning"),
        "{} ping: unexpected warning: {}",
        node.id(),
        out.stderr
    );
    Ok(())
}

/// Checks `receptorctl traceroute` prints one `N: <node> in <time>` line per hop of `hops`.
fn traceroute_with_receptorctl(node: &NodeProcess, target: &str, hops: &[&str]) -> Result<()> {
    let out = node.receptorctl(&["traceroute", target])?.ok()?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    ensure!(
        lines.len() == hops.len() && out.stderr.is_empty(),
        "{} traceroute {target}: {}",
        node.id(),
        out.describe()
    );
    for (i, (line, hop)) in lines.iter().zip(hops).enumerate() {
        ensure!(
            line.starts_with(&format!("{i}: {hop} in ")),
            "hop {i} should be {hop}: {}",
            out.describe()
        );
    }
    Ok(())
}

pub(crate) fn ping_and_traceroute(implementations: [Implementation; 3]) -> Result<()> {
    let spec: Vec<(&str, Implementation)> = NAMES.into_iter().zip(implementations).collect();
    let nodes = start_line(&spec, &[1.0, 1.0])?;
    for (i, node) in nodes.iter().enumerate() {
        node.wait_for_routes(&line_routes(&NAMES, i))?;
    }

    for (from, node) in nodes.iter().enumerate() {
        for (to, target) in NAMES.iter().enumerate().filter(|(to, _)| *to != from) {
            ping_with_receptorctl(node, target)?;
            traceroute_with_receptorctl(node, target, &path(from, to))?;
        }
    }

    // The JSON replies themselves, end to end.
    let (left, right) = (&nodes[0], &nodes[2]);
    let ping = left.command_json(r#"{"command":"ping","target":"right"}"#)?;
    ensure!(
        ping["Success"] == true && ping["From"] == "right",
        "ping reply {ping}"
    );
    ensure!(
        ping["Time"].as_u64().is_some_and(|t| t > 0) && ping["TimeStr"].is_string(),
        "ping reply {ping}"
    );
    let trace = right.command_json("traceroute left")?;
    let trace = trace
        .as_object()
        .context("traceroute reply is not an object")?;
    ensure!(trace.len() == 3, "traceroute reply {trace:?}");
    for (i, hop) in path(2, 0).into_iter().enumerate() {
        let entry = &trace[&i.to_string()];
        ensure!(
            entry["From"] == hop && entry.get("Error").is_none(),
            "hop {i} in {trace:?}"
        );
    }

    // An unknown node: receptorctl reports the error and exits with status 2.
    let out = left.receptorctl(&["ping", "nowhere", "--count", "1"])?;
    ensure!(
        out.code == Some(2) && out.stderr.contains("no route to node"),
        "ping nowhere: {}",
        out.describe()
    );
    let failed = left.command_json("ping nowhere")?;
    ensure!(
        failed["Success"] == false && failed.get("From").is_none(),
        "ping nowhere reply {failed}"
    );
    Ok(())
}

mod go {
    use super::*;

    #[test]
    fn go_go_go() -> Result<()> {
        ping_and_traceroute([Go, Go, Go])
    }
}

mod rust_nodes {
    use super::*;

    #[test]
    fn go_rust_go() -> Result<()> {
        ping_and_traceroute([Go, Rust, Go])
    }

    #[test]
    fn rust_go_rust() -> Result<()> {
        ping_and_traceroute([Rust, Go, Rust])
    }
}
