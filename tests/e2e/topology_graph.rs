//! Scenario: the `topology` control command on a line `a - b - c` (link costs 1 and 2.5,
//! `c` offers a work type): from `a` as JSON, DOT and Mermaid, and from `c` across the
//! mesh (`connect c control`); when `c` goes away its link leaves the graph.

use anyhow::{ensure, Result};
use receptor_tests::topology::start_line_with;
use receptor_tests::wait::{wait_until, CONVERGE_TIMEOUT};
use receptor_tests::Implementation::Rust;
use serde_json::{json, Value};

/// The links of a JSON graph as `(a, b, cost)`.
fn links(graph: &Value) -> Vec<(String, String, f64)> {
    graph["Links"]
        .as_array()
        .map(|links| {
            links
                .iter()
                .map(|l| {
                    (
                        l["A"].as_str().unwrap_or_default().to_owned(),
                        l["B"].as_str().unwrap_or_default().to_owned(),
                        l["Cost"].as_f64().unwrap_or(-1.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn graph_of_a_line_in_three_forms() -> Result<()> {
    let mut nodes = start_line_with(
        &[("a", Rust), ("b", Rust), ("c", Rust)],
        &[1.0, 2.5],
        |i, config| {
            if i == 2 {
                config.work_command("cat", "cat", None)
            } else {
                config
            }
        },
    )?;
    let full = vec![
        ("a".to_owned(), "b".to_owned(), 1.0),
        ("b".to_owned(), "c".to_owned(), 2.5),
    ];
    let graph = wait_until(CONVERGE_TIMEOUT, "a's graph of the line", || {
        let g = nodes[0].command_json("topology")?;
        let has_work = g["Nodes"].as_array().is_some_and(|n| {
            n.iter()
                .any(|n| n["ID"] == "c" && n["WorkTypes"] == json!(["cat"]))
        });
        Ok((links(&g) == full && has_work).then_some(g))
    })?;
    let ids: Vec<&str> = graph["Nodes"]
        .as_array()
        .map(|n| n.iter().filter_map(|n| n["ID"].as_str()).collect())
        .unwrap_or_default();
    ensure!(ids == ["a", "b", "c"], "{graph}");

    let dot = nodes[0].command_json("topology dot")?;
    let dot = dot["Graph"].as_str().unwrap_or_default().to_owned();
    ensure!(
        dot.starts_with("graph receptor {")
            && dot.contains("\"a\" -- \"b\" [label=\"1\"];")
            && dot.contains("\"b\" -- \"c\" [label=\"2.5\"];"),
        "{dot}"
    );
    let mermaid = nodes[0].command_json(r#"{"command":"topology","format":"mermaid"}"#)?;
    let mermaid = mermaid["Graph"].as_str().unwrap_or_default().to_owned();
    ensure!(
        mermaid.starts_with("graph LR\n")
            && mermaid.contains("n0 ---|1| n1")
            && mermaid.contains("n1 ---|2.5| n2"),
        "{mermaid}"
    );
    let bad = nodes[0].control()?.command("topology svg")?;
    ensure!(bad.starts_with("ERROR: unknown topology format"), "{bad}");

    // Across the mesh: c's own view.
    let mut conn = nodes[0].control()?;
    ensure!(
        conn.command("connect c control")? == "Connecting",
        "connect refused"
    );
    ensure!(
        conn.read_line()? == "Receptor Control, node c",
        "no greeting from c"
    );
    let from_c = conn.command_json("topology")?;
    ensure!(links(&from_c) == full, "{from_c}");
    drop(conn);

    // c goes away: its link leaves a's graph.
    nodes[2].kill();
    wait_until(CONVERGE_TIMEOUT, "the link to c to leave a's graph", || {
        let g = nodes[0].command_json("topology")?;
        Ok((links(&g) == full[..1]).then_some(()))
    })?;
    Ok(())
}
