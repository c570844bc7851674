//! Scenario: receptorctl's Python API (`receptorctl.socket_interface.ReceptorControl`, what
//! AWX uses) against a node linked to a Go peer: `simple_command("status")`, a ping through
//! it, several commands on one connection, and an `ERROR:` reply raised as `RuntimeError`.

use anyhow::{ensure, Context, Result};
use receptor_tests::receptorctl::run_python;
use receptor_tests::Implementation::{self, Go, Rust};
use receptor_tests::{free_port, NodeConfig, NodeProcess};
use serde_json::Value;

/// Prints one JSON line per step; argv: socket address, peer node id.
const SCRIPT: &str = r#"
import json, sys
from receptorctl.socket_interface import ReceptorControl

rc = ReceptorControl(sys.argv[1])
status = rc.simple_command("status")
print(json.dumps({"status": status}))
print(json.dumps({"ping": rc.simple_command("ping " + sys.argv[2])}))
try:
    rc.simple_command("nosuchcommand")
    print(json.dumps({"error": None}))
except RuntimeError as e:
    print(json.dumps({"error": str(e)}))
# The connection is still usable after an error.
print(json.dumps({"again": rc.simple_command("status")["NodeID"]}))
rc.close()
"#;

pub(crate) fn python_api_against(subject: Implementation) -> Result<()> {
    let port = free_port()?;
    let peer = NodeProcess::start(Go, NodeConfig::new("peer").tcp_listener(port))?;
    let subject = NodeProcess::start(subject, NodeConfig::new("subject").tcp_peer(port))?;
    subject.wait_for_routes(&[("peer", "peer")])?;
    peer.wait_for_routes(&[("subject", "subject")])?;

    // The "unix:" form of the address, as AWX writes it.
    let address = format!("unix:{}", subject.socket().display());
    let out = run_python(SCRIPT, &[&address, "peer"])?.ok()?;
    let lines = out
        .stdout
        .lines()
        .map(serde_json::from_str::<Value>)
        .collect::<Result<Vec<Value>, _>>()
        .with_context(|| format!("script output is not JSON lines: {}", out.describe()))?;
    ensure!(lines.len() == 4, "script output: {}", out.describe());

    let status = &lines[0]["status"];
    ensure!(
        status["NodeID"] == "subject" && status["Version"] == "1.6.9",
        "status {status}"
    );
    ensure!(status["RoutingTable"]["peer"] == "peer", "status {status}");
    for key in ["SystemCPUCount", "SystemMemoryMiB"] {
        ensure!(
            status[key].as_u64().is_some_and(|n| n > 0),
            "{key} in {status}"
        );
    }
    let advertisers: Vec<&str> = status["Advertisements"]
        .as_array()
        .map(|ads| ads.iter().filter_map(|ad| ad["NodeID"].as_str()).collect())
        .unwrap_or_default();
    ensure!(
        advertisers.contains(&"subject"),
        "own advertisement missing: {status}"
    );

    let ping = &lines[1]["ping"];
    ensure!(
        ping["Success"] == true && ping["From"] == "peer",
        "ping {ping}"
    );
    ensure!(
        lines[2]["error"] == "Unknown command, nosuchcommand",
        "error line {}",
        lines[2]
    );
    ensure!(lines[3]["again"] == "subject", "second status {}", lines[3]);
    Ok(())
}

mod go {
    use super::*;

    #[test]
    fn against_go() -> Result<()> {
        python_api_against(Go)
    }
}

mod rust_nodes {
    use super::*;

    #[test]
    fn against_rust() -> Result<()> {
        python_api_against(Rust)
    }
}
