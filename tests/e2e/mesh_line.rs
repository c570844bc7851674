//! Scenario: three nodes in a line, `left - middle - right`, with different link costs.
//! Once converged, every node's `status` lists the two others with the right next hops, the
//! link costs as both ends agreed them, and every node's control-service advertisement.

use anyhow::{ensure, Result};
use receptor_tests::topology::{
    advertisers_of, connections_of, known_costs_of, line_connections, line_known_costs,
    line_routes, start_line,
};
use receptor_tests::Implementation::{self, Go, Rust};

const NAMES: [&str; 3] = ["left", "middle", "right"];
/// A non-integer cost checks that costs travel as floats.
const COSTS: [f64; 2] = [1.0, 2.5];

/// Starts the line with the given implementation at each position and checks every node's
/// converged status.
pub(crate) fn converges(implementations: [Implementation; 3]) -> Result<()> {
    let spec: Vec<(&str, Implementation)> = NAMES.into_iter().zip(implementations).collect();
    let nodes = start_line(&spec, &COSTS)?;
    let expected_costs = line_known_costs(&NAMES, &COSTS);
    for (i, node) in nodes.iter().enumerate() {
        node.wait_for_routes(&line_routes(&NAMES, i))?;
        let status = node.wait_for_status("all costs and advertisements", |status| {
            known_costs_of(status).as_ref() == Some(&expected_costs)
                && advertisers_of(status, "control") == ["left", "middle", "right"]
        })?;
        ensure!(
            status["NodeID"] == NAMES[i],
            "{}: NodeID in {status}",
            NAMES[i]
        );
        ensure!(
            status["Version"] == "1.6.9",
            "{}: Version in {status}",
            NAMES[i]
        );
        let connections = connections_of(&status);
        let expected: Vec<(String, f64)> = line_connections(&NAMES, &COSTS, i)
            .into_iter()
            .map(|(peer, cost)| (peer.to_string(), cost))
            .collect();
        ensure!(
            connections == expected,
            "{}: Connections {connections:?}, expected {expected:?}",
            NAMES[i]
        );
    }
    Ok(())
}

mod go {
    use super::*;

    #[test]
    fn go_go_go() -> Result<()> {
        converges([Go, Go, Go])
    }
}

mod rust_nodes {
    use super::*;

    #[test]
    fn go_rust_go() -> Result<()> {
        converges([Go, Rust, Go])
    }

    #[test]
    fn rust_go_rust() -> Result<()> {
        converges([Rust, Go, Rust])
    }

    #[test]
    fn rust_rust_rust() -> Result<()> {
        converges([Rust, Rust, Rust])
    }
}
