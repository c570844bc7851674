//! Meshes of several nodes, and what their status should show once converged.

use anyhow::{ensure, Result};
use std::collections::BTreeMap;

use serde_json::Value;

use crate::binaries::Implementation;
use crate::config::NodeConfig;
use crate::node::NodeProcess;
use crate::ports::free_port;

/// Starts nodes in a line `n0 - n1 - ... - nk`: node `i + 1` dials node `i`'s TCP listener,
/// and link `i` (between nodes `i` and `i + 1`) has cost `costs[i]` on both ends. Middle nodes
/// therefore both accept and dial. `extra` may add entries to each node's config (it gets
/// the node's index).
pub fn start_line_with(
    nodes: &[(&str, Implementation)],
    costs: &[f64],
    extra: impl Fn(usize, NodeConfig) -> NodeConfig,
) -> Result<Vec<NodeProcess>> {
    ensure!(nodes.len() >= 2, "a line needs two nodes or more");
    ensure!(
        costs.len() == nodes.len() - 1,
        "a line of {} nodes has {} links",
        nodes.len(),
        nodes.len() - 1
    );
    let ports = (0..costs.len())
        .map(|_| free_port())
        .collect::<Result<Vec<u16>>>()?;
    let mut started = Vec::with_capacity(nodes.len());
    for (i, (name, implementation)) in nodes.iter().enumerate() {
        let mut config = NodeConfig::new(name);
        if i < costs.len() {
            config = config.tcp_listener_cost(ports[i], costs[i]);
        }
        if i > 0 {
            config = config.tcp_peer_cost(ports[i - 1], costs[i - 1]);
        }
        started.push(NodeProcess::start(*implementation, extra(i, config))?);
    }
    Ok(started)
}

/// A star of three Rust nodes: hub `b` (a TCP listener, the work type `cat`, and the
/// config item `entry`, e.g. `metrics` or `mesh-page`) with spokes `a` and `c` dialling
/// it, returned once every node routes to the other two.
pub fn start_star(entry: (&str, Value)) -> Result<Star> {
    let port_b = free_port()?;
    let (key, value) = entry;
    let b = NodeProcess::start(
        Implementation::Rust,
        NodeConfig::new("b")
            .tcp_listener(port_b)
            .work_command("cat", "cat", None)
            .entry(key, value),
    )?;
    let a = NodeProcess::start(Implementation::Rust, NodeConfig::new("a").tcp_peer(port_b))?;
    let c = NodeProcess::start(Implementation::Rust, NodeConfig::new("c").tcp_peer(port_b))?;
    b.wait_for_routes(&[("a", "a"), ("c", "c")])?;
    a.wait_for_routes(&[("b", "b"), ("c", "b")])?;
    c.wait_for_routes(&[("a", "b"), ("b", "b")])?;
    Ok(Star { a, b, c })
}

/// The nodes of [`start_star`].
pub struct Star {
    /// A spoke.
    pub a: NodeProcess,
    /// The hub.
    pub b: NodeProcess,
    /// The other spoke.
    pub c: NodeProcess,
}

/// [`start_line_with`] without extra config.
pub fn start_line(nodes: &[(&str, Implementation)], costs: &[f64]) -> Result<Vec<NodeProcess>> {
    start_line_with(nodes, costs, |_, config| config)
}

/// The routing table node `index` of a line of `names` has once converged: every other node,
/// reached through the neighbour on its side.
pub fn line_routes<'a>(names: &[&'a str], index: usize) -> Vec<(&'a str, &'a str)> {
    names
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != index)
        .map(|(j, dest)| {
            (
                *dest,
                if j > index {
                    names[index + 1]
                } else {
                    names[index - 1]
                },
            )
        })
        .collect()
}

/// Costs per node and neighbour, as compared by the tests (`KnownConnectionCosts`).
pub type CostMap = BTreeMap<String, BTreeMap<String, f64>>;

/// The `KnownConnectionCosts` every node of a converged line reports:
/// `{node: {neighbour: cost}}` for both directions of every link.
pub fn line_known_costs(names: &[&str], costs: &[f64]) -> CostMap {
    let mut all = CostMap::new();
    for (i, name) in names.iter().enumerate() {
        let peers = all.entry(name.to_string()).or_default();
        if i > 0 {
            peers.insert(names[i - 1].to_string(), costs[i - 1]);
        }
        if i + 1 < names.len() {
            peers.insert(names[i + 1].to_string(), costs[i]);
        }
    }
    all
}

/// The `KnownConnectionCosts` of a status reply (numbers compared as floats: Go writes a
/// cost of 1 as `1`, not `1.0`). `None` if the field is missing or malformed.
pub fn known_costs_of(status: &Value) -> Option<CostMap> {
    let mut all = CostMap::new();
    for (node, peers) in status.get("KnownConnectionCosts")?.as_object()? {
        let entry = all.entry(node.clone()).or_default();
        for (peer, cost) in peers.as_object()? {
            entry.insert(peer.clone(), cost.as_f64()?);
        }
    }
    Some(all)
}

/// `Connections` of node `index` in a line, as `(peer, cost)` sorted by peer (the node reports
/// them in no particular order).
pub fn line_connections<'a>(names: &[&'a str], costs: &[f64], index: usize) -> Vec<(&'a str, f64)> {
    let mut out = Vec::new();
    if index > 0 {
        out.push((names[index - 1], costs[index - 1]));
    }
    if index + 1 < names.len() {
        out.push((names[index + 1], costs[index]));
    }
    out.sort_by(|a, b| a.0.cmp(b.0));
    out
}

/// The `Connections` of a status reply as `(peer, cost)` sorted by peer.
pub fn connections_of(status: &Value) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = status
        .get("Connections")
        .and_then(Value::as_array)
        .map(|conns| {
            conns
                .iter()
                .filter_map(|c| {
                    Some((
                        c.get("NodeID")?.as_str()?.to_string(),
                        c.get("Cost")?.as_f64()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The node ids that advertise service `service` in a status reply, sorted.
pub fn advertisers_of(status: &Value, service: &str) -> Vec<String> {
    let mut out: Vec<String> = status
        .get("Advertisements")
        .and_then(Value::as_array)
        .map(|ads| {
            ads.iter()
                .filter(|ad| ad.get("Service").and_then(Value::as_str) == Some(service))
                .filter_map(|ad| ad.get("NodeID")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_of_a_line_go_through_the_neighbour_on_each_side() {
        let names = ["a", "b", "c", "d"];
        assert_eq!(
            line_routes(&names, 0),
            vec![("b", "b"), ("c", "b"), ("d", "b")]
        );
        assert_eq!(
            line_routes(&names, 2),
            vec![("a", "b"), ("b", "b"), ("d", "d")]
        );
    }

    #[test]
    fn known_costs_list_both_directions() {
        let status = serde_json::json!({"KnownConnectionCosts":
            {"a": {"b": 1}, "b": {"a": 1, "c": 2.5}, "c": {"b": 2.5}}});
        assert_eq!(
            Some(line_known_costs(&["a", "b", "c"], &[1.0, 2.5])),
            known_costs_of(&status)
        );
        assert_eq!(
            line_connections(&["a", "b", "c"], &[1.0, 2.5], 1),
            vec![("a", 1.0), ("c", 2.5)]
        );
    }
}
