//! Scenario: `node.firewallrules` on the middle node of a line `a - b - c`. The rules
//! apply to every DATA message `b` handles (its own, delivered to it, forwarded), the
//! first matching rule decides and no match accepts:
//!
//! 1. `accept` a → b  (so the wider rule below does not catch pings to `b`)
//! 2. `reject` from a (anything else from `a`: `a` is told `blocked by firewall`)
//! 3. `drop` c → `/a.*/` (a regex, matched against the whole node ID: silently lost)
//!
//! The same expectations hold whether `b` is Go receptor 1.6.9 or ours, which is how
//! the Rust firewall is shown to follow Go's semantics.

use anyhow::{ensure, Result};
use receptor_tests::topology::{line_routes, start_line_with};
use receptor_tests::Implementation::{self, Go, Rust};
use serde_json::json;

use crate::backends_common::{ping, wait_for_log_line};

const NAMES: [&str; 3] = ["a", "b", "c"];

fn rules() -> serde_json::Value {
    json!([
        {"action": "accept", "fromnode": "a", "tonode": "b"},
        {"Action": "Reject", "FromNode": "a"},
        {"action": "drop", "fromnode": "c", "tonode": "/a.*/"},
    ])
}

fn firewall_on_b(implementations: [Implementation; 3]) -> Result<()> {
    let spec: Vec<(&str, Implementation)> = NAMES.into_iter().zip(implementations).collect();
    let nodes = start_line_with(&spec, &[1.0, 1.0], |i, config| {
        if i == 1 {
            config.node_setting("firewallrules", rules())
        } else {
            config
        }
    })?;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    for (i, node) in nodes.iter().enumerate() {
        node.wait_for_routes(&line_routes(&NAMES, i))?;
    }
    // Not filtered: b's own traffic and replies, c to b, a to b (rule 1).
    b.wait_for_ping("a")?;
    b.wait_for_ping("c")?;
    c.wait_for_ping("b")?;
    a.wait_for_ping("b")?;

    // Rule 2: a's ping to c is rejected at b, which says so.
    let reply = ping(a, "c")?;
    ensure!(
        reply["Success"] == false && reply["Error"] == "blocked by firewall",
        "a ping c: {reply}"
    );
    // Rule 3: c's ping to a is dropped at b: no answer at all.
    let reply = ping(c, "a")?;
    ensure!(
        reply["Success"] == false && reply["Error"] == "timeout",
        "c ping a: {reply}"
    );
    Ok(())
}

/// Go's quirk: a field that starts with `/` but does not end with it matches
/// everything, so this rule rejects every message, the node's own pings included;
/// even the `blocked by firewall` notices are caught (an unreachable about an
/// unreachable is never sent), so the ping just times out. Ours keeps the quirk and
/// warns about it at start-up.
fn unterminated_regex_matches_everything(b: Implementation) -> Result<()> {
    let rule = json!([{"action": "reject", "tonode": "/a"}]);
    let nodes = start_line_with(&[("a", Go), ("b", b)], &[1.0], |i, config| {
        if i == 1 {
            config.node_setting("firewallrules", rule.clone())
        } else {
            config
        }
    })?;
    let (a, b) = (&nodes[0], &nodes[1]);
    b.wait_for_routes(&[("a", "a")])?;
    a.wait_for_routes(&[("b", "b")])?;
    let reply = ping(b, "a")?;
    ensure!(
        reply["Success"] == false && reply["Error"] == "timeout",
        "b ping a: {reply}"
    );
    if b.implementation() == Rust {
        wait_for_log_line(
            b,
            &["WARN", "firewall rule 0", "\"/a\"", "matches everything"],
        )?;
    }
    Ok(())
}

#[test]
fn go_unterminated_regex() -> Result<()> {
    unterminated_regex_matches_everything(Go)
}

#[test]
fn rust_unterminated_regex() -> Result<()> {
    unterminated_regex_matches_everything(Rust)
}

#[test]
fn go_firewall() -> Result<()> {
    firewall_on_b([Go, Go, Go])
}

#[test]
fn rust_firewall_with_go_neighbours() -> Result<()> {
    firewall_on_b([Go, Rust, Go])
}

#[test]
fn rust_firewall_with_rust_neighbours() -> Result<()> {
    firewall_on_b([Rust, Rust, Rust])
}
