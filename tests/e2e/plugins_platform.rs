//! Scenario: the node's side of the plugin contract as an operator sees it: start-up
//! refusals of configurations the plugins cannot serve, and what the log says about
//! the plugins loaded.

use anyhow::{ensure, Result};
use receptor_tests::Implementation::{Go, Rust};
use receptor_tests::{free_port, NodeConfig, NodeProcess};
use serde_json::json;

/// Like Go receptor 1.6.9, two sections declaring the same work type name stop the
/// node at start-up with the same message.
#[test]
fn duplicate_work_types_are_refused() -> Result<()> {
    for implementation in [Go, Rust] {
        let config = NodeConfig::new("dup")
            .tcp_listener(free_port()?)
            .entry(
                "work-command",
                json!({"worktype": "same", "command": "cat"}),
            )
            .entry(
                "work-command",
                json!({"worktype": "same", "command": "echo"}),
            );
        let log = NodeProcess::run_expecting_failure(implementation, config)?;
        ensure!(
            log.contains("work type same already registered"),
            "{}: {log}",
            implementation.label()
        );
    }
    Ok(())
}

mod rust_nodes {
    use super::*;

    /// Every plugin the node loads gets exactly one log line, naming its ABI version.
    #[test]
    fn one_log_line_per_loaded_plugin() -> Result<()> {
        let node = NodeProcess::start(Rust, NodeConfig::new("solo").tcp_listener(free_port()?))?;
        node.wait_for_status("a status", |_| true)?;
        let log = node.log();
        for name in ["tcp", "udp", "websocket", "echo", "command"] {
            let needle = format!("plugin={name} ");
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("loaded plugin") && l.contains(&needle))
                .collect();
            ensure!(lines.len() == 1, "plugin {name}: {lines:?}\n{log}");
            ensure!(lines[0].contains("abi=1."), "{}", lines[0]);
        }
        Ok(())
    }
}
