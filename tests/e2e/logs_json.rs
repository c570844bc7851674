//! Scenario: `log-format: json`. Two nodes log in JSON (one at `debug`, one at the
//! default `info`); node `sub` runs a unit on node `json` over the mesh. Every line each
//! node writes is one JSON object with time, level, target, node and message; records
//! carry their fields (`peer` of the control connection the unit came through), and
//! `log-level` still decides what is written.

use anyhow::{ensure, Context, Result};
use receptor_tests::Implementation::Rust;
use receptor_tests::{free_port, NodeConfig, NodeProcess};
use serde_json::{json, Value};

/// Every line of `node`'s log as JSON; fails on a line that is not one JSON object.
fn records(node: &NodeProcess) -> Result<Vec<Value>> {
    node.log()
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .with_context(|| format!("node {}: log line is not JSON: {line:?}", node.id()))?;
            ensure!(value.is_object(), "log line is not an object: {line}");
            for key in ["time", "level", "target", "message"] {
                ensure!(value[key].is_string(), "record without {key}: {line}");
            }
            ensure!(value["node"] == node.id(), "record of another node: {line}");
            ensure!(value["fields"].is_object(), "record without fields: {line}");
            Ok(value)
        })
        .collect()
}

#[test]
fn json_lines_with_fields_and_levels() -> Result<()> {
    let port = free_port()?;
    let json_node = NodeProcess::start(
        Rust,
        NodeConfig::new("json")
            .log_level("debug")
            .entry("log-format", json!("json"))
            .tcp_listener(port)
            .work_command("cat", "cat", None),
    )?;
    let sub = NodeProcess::start(
        Rust,
        NodeConfig::new("sub")
            .entry("log-format", json!("json"))
            .tcp_peer(port),
    )?;
    sub.wait_for_routes(&[("json", "json")])?;
    json_node.wait_for_routes(&[("sub", "sub")])?;
    let out = sub
        .receptorctl(&[
            "work",
            "submit",
            "cat",
            "--node",
            "json",
            "--payload-literal",
            "hello",
            "-f",
        ])?
        .ok()?;
    ensure!(
        out.stdout.trim_end() == "hello",
        "results: {:?}",
        out.stdout
    );

    let debug = records(&json_node)?;
    ensure!(
        debug.iter().any(|r| r["level"] == "DEBUG"),
        "no DEBUG record at log-level debug"
    );
    ensure!(
        debug.iter().any(|r| r["fields"]["peer"]
            .as_str()
            .is_some_and(|p| p.contains("sub"))),
        "no record names the peer sub: {debug:#?}"
    );
    ensure!(
        debug.iter().any(|r| r["fields"]["plugin"].is_string()),
        "no record names a plugin"
    );
    let info = records(&sub)?;
    ensure!(!info.is_empty(), "node sub logged nothing");
    ensure!(
        info.iter().all(|r| r["level"] != "DEBUG"),
        "DEBUG records at log-level info"
    );
    Ok(())
}
