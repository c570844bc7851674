//! Scenario: a configuration written for Go receptor 1.6.9 that uses a kind this build
//! does not run (`work-kubernetes`, the deprecated `work-python`) is refused with an error
//! that names the kind and says it is not provided, not with the wording of a typo.

use anyhow::{ensure, Result};
use receptor_tests::Implementation::{Go, Rust};
use receptor_tests::{free_port, NodeConfig, NodeProcess};
use serde_json::json;

/// Starts a Rust node with `kind: body` beside a TCP listener; returns its log.
fn refused(kind: &str, body: serde_json::Value) -> Result<String> {
    let config = NodeConfig::new("solo")
        .tcp_listener(free_port()?)
        .entry(kind, body);
    NodeProcess::run_expecting_failure(Rust, config)
}

#[test]
fn work_kubernetes_is_named_as_not_provided_and_pluggable() -> Result<()> {
    let log = refused(
        "work-kubernetes",
        json!({"worktype": "kube", "namespace": "default", "image": "busybox"}),
    )?;
    ensure!(
        log.contains(r#"config section "work-kubernetes""#)
            && log.contains("not provided by this build of receptor")
            && log.contains("a work-type plugin can provide it"),
        "log: {log}"
    );
    ensure!(!log.contains("no loaded plugin handles it"), "log: {log}");
    Ok(())
}

#[test]
fn work_python_is_refused_by_both_and_named_as_deprecated() -> Result<()> {
    let body = json!({"worktype": "py", "plugin": "mod", "function": "run"});
    let config = NodeConfig::new("solo")
        .tcp_listener(free_port()?)
        .entry("work-python", body.clone());
    let go = NodeProcess::run_expecting_failure(Go, config)?;
    ensure!(go.contains("work-python"), "Go log: {go}");
    let log = refused("work-python", body)?;
    ensure!(
        log.contains(r#"config section "work-python""#)
            && log.contains("deprecated")
            && log.contains("not provided by this build of receptor"),
        "log: {log}"
    );
    ensure!(!log.contains("no loaded plugin handles it"), "log: {log}");
    Ok(())
}
