//! The `topology` command (a receptor-rs extension; Go receptor has no command of that
//! name): the mesh as this node knows it, as a graph of nodes (with their services and
//! work types) and links (with their costs).
//!
//! `topology` or `topology json` replies with the graph as JSON
//! (`{"Nodes":[{"ID","Services","WorkTypes"}],"Links":[{"A","B","Cost"}]}`);
//! `topology dot` and `topology mermaid` reply `{"Format":..,"Graph":"<text>"}` with a
//! Graphviz DOT or Mermaid `graph` text. The JSON form takes `"format"`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::json;

use super::{Args, ControlCommand, ControlConn, Reply};
use crate::mesh::{Mesh, MeshStatus};

/// One node of the graph.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GraphNode {
    /// Node ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Services it advertises.
    #[serde(rename = "Services")]
    pub services: Vec<String>,
    /// Work types its control service offers.
    #[serde(rename = "WorkTypes")]
    pub work_types: Vec<String>,
}

/// One link (undirected; `a` < `b`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GraphLink {
    /// One end.
    #[serde(rename = "A")]
    pub a: String,
    /// The other end.
    #[serde(rename = "B")]
    pub b: String,
    /// The cost the link-state database holds for it.
    #[serde(rename = "Cost")]
    pub cost: f64,
}

/// The mesh as a graph.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Graph {
    /// Every known node, sorted by ID.
    #[serde(rename = "Nodes")]
    pub nodes: Vec<GraphNode>,
    /// Every known link, sorted.
    #[serde(rename = "Links")]
    pub links: Vec<GraphLink>,
}

impl Graph {
    /// The graph of a `status` snapshot.
    pub fn from_status(status: &MeshStatus) -> Graph {
        let mut nodes: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
        let mut links: BTreeMap<(String, String), f64> = BTreeMap::new();
        for (node, peers) in &status.known_connection_costs {
            nodes.entry(node.clone()).or_default();
            for (peer, cost) in peers {
                nodes.entry(peer.clone()).or_default();
                let key = if node < peer {
                    (node.clone(), peer.clone())
                } else {
                    (peer.clone(), node.clone())
                };
                links.entry(key).or_insert(*cost);
            }
        }
        for ad in &status.advertisements {
            let entry = nodes.entry(ad.node_id.clone()).or_default();
            entry.0.insert(ad.service.clone());
            for wc in ad.work_commands.iter().flatten() {
                entry.1.insert(wc.work_type.clone());
            }
        }
        Graph {
            nodes: nodes
                .into_iter()
                .map(|(id, (services, work_types))| GraphNode {
                    id,
                    services: services.into_iter().collect(),
                    work_types: work_types.into_iter().collect(),
                })
                .collect(),
            links: links
                .into_iter()
                .map(|((a, b), cost)| GraphLink { a, b, cost })
                .collect(),
        }
    }

    /// Graphviz DOT (an undirected `graph`; labels give costs, services and work types).
    pub fn dot(&self) -> String {
        let mut out = String::from("graph receptor {\n");
        for n in &self.nodes {
            let _ = writeln!(
                out,
                "  {} [label={}];",
                dot_id(&n.id),
                dot_id(&node_label(n, "\\n"))
            );
        }
        for l in &self.links {
            let _ = writeln!(
                out,
                "  {} -- {} [label={}];",
                dot_id(&l.a),
                dot_id(&l.b),
                dot_id(&l.cost.to_string())
            );
        }
        out.push_str("}\n");
        out
    }

    /// A Mermaid flowchart (`graph LR`); nodes are named `n0`, `n1`, ... with their IDs
    /// as labels, so any node ID is safe.
    pub fn mermaid(&self) -> String {
        let mut out = String::from("graph LR\n");
        let index: BTreeMap<&str, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.as_str(), i))
            .collect();
        for (i, n) in self.nodes.iter().enumerate() {
            let _ = writeln!(out, "  n{i}[\"{}\"]", mermaid_text(&node_label(n, "<br/>")));
        }
        for l in &self.links {
            if let (Some(a), Some(b)) = (index.get(l.a.as_str()), index.get(l.b.as_str())) {
                let _ = writeln!(out, "  n{a} ---|{}| n{b}", l.cost);
            }
        }
        out
    }
}

/// A node's label: its ID, then its services and work types.
fn node_label(n: &GraphNode, newline: &str) -> String {
    let mut label = n.id.clone();
    if !n.services.is_empty() {
        label.push_str(newline);
        label.push_str("services: ");
        label.push_str(&n.services.join(", "));
    }
    if !n.work_types.is_empty() {
        label.push_str(newline);
        label.push_str("work: ");
        label.push_str(&n.work_types.join(", "));
    }
    label
}

/// A DOT quoted string (`\n` escapes in `text` are kept as DOT line breaks).
fn dot_id(text: &str) -> String {
    let mut out = String::from("\"");
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'n') => {
                chars.next();
                out.push_str("\\n");
            }
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text safe inside a Mermaid `["..."]` label (quotes become `#quot;`).
fn mermaid_text(text: &str) -> String {
    text.replace('"', "#quot;").replace(['\n', '\r'], " ")
}

/// The output forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Dot,
    Mermaid,
}

fn format_of(args: &Args) -> Result<Format, String> {
    let word = match args {
        Args::Text(text) => text.trim().to_owned(),
        Args::Json(map) => match map.get("format") {
            None => String::new(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(_) => return Err("format must be a string".to_owned()),
        },
    };
    match word.to_lowercase().as_str() {
        "" | "json" => Ok(Format::Json),
        "dot" => Ok(Format::Dot),
        "mermaid" => Ok(Format::Mermaid),
        other => Err(format!(
            "unknown topology format {other:?} (expected json, dot or mermaid)"
        )),
    }
}

/// `topology`, backed by the mesh.
pub struct TopologyCommand {
    mesh: Mesh,
}

impl TopologyCommand {
    /// A `topology` command drawing `mesh`.
    pub fn new(mesh: Mesh) -> Self {
        TopologyCommand { mesh }
    }
}

#[async_trait]
impl ControlCommand for TopologyCommand {
    fn name(&self) -> &'static str {
        "topology"
    }

    async fn run(&self, args: Args, _conn: &mut ControlConn) -> Result<Reply, String> {
        let format = format_of(&args)?;
        let graph = Graph::from_status(&self.mesh.status().await);
        Ok(Reply::Json(match format {
            Format::Json => serde_json::to_value(&graph)
                .map_err(|e| format!("could not convert the graph to JSON: {e}"))?,
            Format::Dot => json!({"Format": "dot", "Graph": graph.dot()}),
            Format::Mermaid => json!({"Format": "mermaid", "Graph": graph.mermaid()}),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use receptor_proto::svcad::{ServiceAdvertisement, WorkCommand};

    fn status() -> MeshStatus {
        let mut status = MeshStatus::default();
        let costs = |pairs: &[(&str, f64)]| {
            pairs
                .iter()
                .map(|(p, c)| (p.to_string(), *c))
                .collect::<BTreeMap<_, _>>()
        };
        status
            .known_connection_costs
            .insert("a".into(), costs(&[("b", 1.0)]));
        status
            .known_connection_costs
            .insert("b".into(), costs(&[("a", 1.0), ("c\"x", 2.5)]));
        status
            .known_connection_costs
            .insert("c\"x".into(), costs(&[("b", 2.5)]));
        status.advertisements.push(ServiceAdvertisement {
            node_id: "b".into(),
            service: "control".into(),
            time: String::new(),
            conn_type: 1,
            tags: None,
            work_commands: Some(vec![WorkCommand {
                work_type: "echo".into(),
                secure: false,
            }]),
        });
        status
    }

    #[test]
    fn graph_dot_and_mermaid() {
        let g = Graph::from_status(&status());
        assert_eq!(
            g.nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c\"x"]
        );
        assert_eq!(g.links.len(), 2);
        assert_eq!(g.nodes[1].work_types, ["echo"]);
        let dot = g.dot();
        assert!(dot.starts_with("graph receptor {\n"), "{dot}");
        assert!(
            dot.contains("\"b\" -- \"c\\\"x\" [label=\"2.5\"];"),
            "{dot}"
        );
        assert!(
            dot.contains("\"b\" [label=\"b\\nservices: control\\nwork: echo\"];"),
            "{dot}"
        );
        let mermaid = g.mermaid();
        assert!(mermaid.contains("n2[\"c#quot;x\"]"), "{mermaid}");
        assert!(mermaid.contains("n1 ---|2.5| n2"), "{mermaid}");
        assert_eq!(
            format_of(&Args::Text("svg".into())),
            Err("unknown topology format \"svg\" (expected json, dot or mermaid)".into())
        );
    }
}
