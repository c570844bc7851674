//! The mesh page (`mesh-page` item, a receptor-rs extension): a read-only web page that
//! draws the live mesh as this node knows it and lists the node's units of work.
//!
//! Everything is embedded in the binary: `/` is one self-contained HTML file (inline
//! script and style, no outside resources) that polls `/topology.json` and `/units.json`
//! every second and draws nodes and links (with their costs) as SVG on a circle, in node
//! ID order, plus a table of units. Served by the small HTTP server of
//! [`crate::metrics::http`] (GET only, bounded requests, TLS through a named
//! `tls-server`).

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use crate::control::topology::Graph;
use crate::mesh::Mesh;
use crate::metrics::http::{Handler, Page};
use crate::work::store::Workceptor;

/// The page itself.
const PAGE_HTML: &str = include_str!("page.html");

/// One unit as `/units.json` lists it.
#[derive(Debug, Serialize)]
struct UnitRow {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "WorkType")]
    work_type: String,
    #[serde(rename = "State")]
    state: String,
    #[serde(rename = "Detail")]
    detail: String,
}

/// The handler answering `/`, `/topology.json` and `/units.json` from `mesh` and `work`.
pub fn handler(mesh: Mesh, work: Arc<Workceptor>) -> Handler {
    Arc::new(move |path: String| {
        let (mesh, work) = (mesh.clone(), work.clone());
        Box::pin(async move {
            match path.as_str() {
                "/" | "/index.html" => Some(Page {
                    content_type: "text/html; charset=utf-8",
                    body: PAGE_HTML.to_owned(),
                }),
                "/topology.json" => {
                    let graph = Graph::from_status(&mesh.status().await);
                    Some(json_page(&json!({
                        "Node": mesh.node_id(),
                        "Nodes": graph.nodes,
                        "Links": graph.links,
                    })))
                }
                "/units.json" => {
                    let mut rows: Vec<UnitRow> = work
                        .list()
                        .iter()
                        .map(|unit| {
                            let status = unit.status();
                            UnitRow {
                                id: unit.id().to_owned(),
                                work_type: status.work_type.clone(),
                                state: crate::work::status::state_name(status.state),
                                detail: status.detail.clone(),
                            }
                        })
                        .collect();
                    rows.sort_by(|a, b| a.id.cmp(&b.id));
                    Some(json_page(&json!({ "Node": mesh.node_id(), "Units": rows })))
                }
                _ => None,
            }
        })
    })
}

/// `value` as a JSON answer.
fn json_page(value: &serde_json::Value) -> Page {
    Page {
        content_type: "application/json",
        body: value.to_string(),
    }
}
