//! Scenario: the unmodified `receptorctl` 1.6.9 CLI against a node (`subject`) that dials a Go
//! peer: `status` (text and `--json`), `ping`, `traceroute`, and `reload` with an unchanged,
//! a non-reloadable and a broken config file (exit statuses 0, 3 and 4), after which the
//! node still runs and its link comes back.

use anyhow::{ensure, Result};
use receptor_tests::Implementation::{self, Go, Rust};
use receptor_tests::{free_port, NodeConfig, NodeProcess};

/// A Go `peer` listens; `subject` (the implementation under test) dials it with cost 1.5.
/// (Not the other way round: Go 1.6.9's `reload` closes its old listener asynchronously and
/// may fail to bind it again with "address already in use".)
fn start_pair(subject: Implementation) -> Result<(NodeProcess, NodeProcess)> {
    let port = free_port()?;
    let peer = NodeProcess::start(Go, NodeConfig::new("peer").tcp_listener_cost(port, 1.5))?;
    let subject = NodeProcess::start(subject, NodeConfig::new("subject").tcp_peer_cost(port, 1.5))?;
    subject.wait_for_routes(&[("peer", "peer")])?;
    peer.wait_for_routes(&[("subject", "subject")])?;
    Ok((peer, subject))
}

fn status_text(node: &NodeProcess) -> Result<()> {
    let out = node.receptorctl(&["status"])?.ok()?;
    ensure!(
        !out.stderr.contains("Warning"),
        "status warned: {}",
        out.describe()
    );
    let lines: Vec<&str> = out.stdout.lines().map(str::trim_end).collect();
    for expected in ["Node ID: subject", "Version: 1.6.9"] {
        ensure!(
            lines.contains(&expected),
            "no {expected:?} in {}",
            out.describe()
        );
    }
    let has_row = |first: &str, second: &str| {
        lines
            .iter()
            .any(|line| line.split_whitespace().collect::<Vec<_>>() == [first, second])
    };
    ensure!(
        has_row("peer", "1.5"),
        "no connection row `peer 1.5` in {}",
        out.describe()
    );
    ensure!(
        has_row("peer", "peer"),
        "no route row `peer peer` in {}",
        out.describe()
    );
    ensure!(
        !out.stdout.contains("Additional data"),
        "unexpected status fields: {}",
        out.describe()
    );

    let json = node.receptorctl(&["status", "--json"])?.ok()?;
    let status: serde_json::Value = serde_json::from_str(&json.stdout)?;
    ensure!(
        status["NodeID"] == "subject" && status["RoutingTable"]["peer"] == "peer",
        "{status}"
    );
    Ok(())
}

fn ping_and_traceroute(node: &NodeProcess) -> Result<()> {
    let out = node
        .receptorctl(&["ping", "peer", "--count", "2", "--delay", "0.05"])?
        .ok()?;
    let replies = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("Reply from peer in "))
        .count();
    ensure!(replies == 2, "ping: {}", out.describe());
    let out = node.receptorctl(&["traceroute", "peer"])?.ok()?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    ensure!(
        lines.len() == 2
            && lines[0].starts_with("0: subject in ")
            && lines[1].starts_with("1: peer in "),
        "traceroute: {}",
        out.describe()
    );
    Ok(())
}

fn reload(subject: &mut NodeProcess) -> Result<()> {
    let original = subject.config().clone();

    let out = subject.receptorctl(&["reload"])?.ok()?;
    ensure!(
        out.stdout.trim() == "Reload successful",
        "reload: {}",
        out.describe()
    );
    // Go restarts its backends on reload (ours keeps unchanged ones): the link must be up.
    subject.wait_for_ping("peer")?;

    subject.set_config(original.clone().work_command("added", "cat", None))?;
    let out = subject.receptorctl(&["reload"])?;
    ensure!(
        out.code == Some(3)
            && out.stderr.contains("non-reloadable")
            && out.stderr.contains("ERRORCODE 3"),
        "reload with an added work-command: {}",
        out.describe()
    );

    subject.set_config(original.clone().entry("bogus-item", serde_json::json!({})))?;
    let out = subject.receptorctl(&["reload"])?;
    ensure!(
        out.code == Some(4)
            && out.stderr.contains("bogus-item")
            && out.stderr.contains("ERRORCODE 4"),
        "reload with an unknown config item: {}",
        out.describe()
    );

    subject.set_config(original)?;
    let out = subject.receptorctl(&["reload"])?.ok()?;
    ensure!(
        out.stdout.trim() == "Reload successful",
        "reload after restoring: {}",
        out.describe()
    );
    ensure!(subject.is_running(), "the node exited after reloads");
    subject.wait_for_ping("peer")?;
    Ok(())
}

pub(crate) fn receptorctl_against(subject: Implementation) -> Result<()> {
    let (_peer, mut subject) = start_pair(subject)?;
    status_text(&subject)?;
    ping_and_traceroute(&subject)?;
    reload(&mut subject)?;
    // Still fully usable afterwards.
    ping_and_traceroute(&subject)
}

mod go {
    use super::*;

    #[test]
    fn against_go() -> Result<()> {
        receptorctl_against(Go)
    }
}

mod rust_nodes {
    use super::*;

    #[test]
    fn against_rust() -> Result<()> {
        receptorctl_against(Rust)
    }
}
