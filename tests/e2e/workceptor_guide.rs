//! Scenario: the examples of receptor's Workceptor guide, run as written with the real
//! `receptorctl` against node `foo`, which submits to node `bar` over the mesh:
//! `work submit echoint --node bar --no-payload`, `work results`, `work submit
//! echopayload --node bar --payload - -f`, runtime params of `listcontents`, `work list`,
//! `work cancel`, `work release` and `work release --force` (force-release). The guide's commands sleep
//! between lines; here they do not, so that the scenario stays fast.

use anyhow::{ensure, Context, Result};
use receptor_tests::receptorctl::{run, CtlOutput};
use receptor_tests::Implementation::{self, Go, Rust};
use receptor_tests::{binaries, free_port, NodeConfig, NodeProcess};
use serde_json::{json, Value};

/// Starts `foo` (listener) and `bar` (peer, with the guide's work types).
fn start(foo_impl: Implementation, bar_impl: Implementation) -> Result<(NodeProcess, NodeProcess)> {
    let port = free_port()?;
    let submitter = NodeProcess::start(foo_impl, NodeConfig::new("foo").tcp_listener(port))?;
    let bar = NodeProcess::start(
        bar_impl,
        NodeConfig::new("bar")
            .tcp_peer(port)
            .work_command(
                "echoint",
                "bash",
                Some("-c \"for i in {1..5}; do echo $i; done\""),
            )
            .work_command(
                "echopayload",
                "bash",
                Some("-c \"while read -r line; do echo ${line^^}; done\""),
            )
            .work_command("sleeper", "sleep", Some("60"))
            .entry(
                "work-command",
                json!({"workType": "listcontents", "command": "ls", "allowruntimeparams": true}),
            ),
    )?;
    submitter.wait_for_routes(&[("bar", "bar")])?;
    bar.wait_for_routes(&[("foo", "foo")])?;
    Ok((submitter, bar))
}

/// `receptorctl --socket <foo> <args>` with `stdin` piped in through the shell.
fn receptorctl_with_stdin(node: &NodeProcess, stdin: &str, args: &[&str]) -> Result<CtlOutput> {
    let rctl = binaries::receptorctl()?;
    let mut line = format!(
        "printf '{stdin}' | '{}' --socket '{}'",
        rctl.display(),
        node.socket().display()
    );
    for a in args {
        line.push_str(&format!(" '{a}'"));
    }
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(line);
    run(cmd)
}

/// The unit ID from `work submit` output (`Unit ID: <id>`).
fn unit_id(out: &CtlOutput) -> Result<String> {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("Unit ID: "))
        .map(|s| s.trim().to_owned())
        .with_context(|| format!("no unit ID in {}", out.describe()))
}

fn work_list(node: &NodeProcess) -> Result<Value> {
    let out = node.receptorctl(&["work", "list"])?.ok()?;
    serde_json::from_str(&out.stdout).with_context(|| out.describe())
}

/// Waits until `bar` reports `id` in state `state` as seen from `foo`.
fn wait_state(node: &NodeProcess, id: &str, state: &str) -> Result<Value> {
    receptor_tests::wait::wait_until(
        std::time::Duration::from_secs(30),
        &format!("unit {id} in state {state}"),
        || {
            let list = work_list(node)?;
            Ok((list[id]["StateName"] == state).then_some(list))
        },
    )
}

fn guide(foo_impl: Implementation, bar_impl: Implementation) -> Result<()> {
    let (submitter, _runner) = start(foo_impl, bar_impl)?;
    let node = &submitter;

    // Submit without payload, then fetch the results.
    let out = node
        .receptorctl(&["work", "submit", "echoint", "--node", "bar", "--no-payload"])?
        .ok()?;
    ensure!(
        out.stdout.contains("Result: Job Started"),
        "{}",
        out.describe()
    );
    let id = unit_id(&out)?;
    wait_state(node, &id, "Succeeded")?;
    let res = node.receptorctl(&["work", "results", &id])?.ok()?;
    ensure!(res.stdout == "1\n2\n3\n4\n5\n", "{}", res.describe());

    // A payload from stdin, results followed (-f).
    let out = receptorctl_with_stdin(
        node,
        "hi\\ni am\\ngroot\\n",
        &[
            "work",
            "submit",
            "echopayload",
            "--node",
            "bar",
            "--payload",
            "-",
            "-f",
        ],
    )?
    .ok()?;
    ensure!(
        out.stdout.ends_with("HI\nI AM\nGROOT\n"),
        "{}",
        out.describe()
    );

    // Runtime parameters.
    let out = node
        .receptorctl(&[
            "work",
            "submit",
            "listcontents",
            "--node",
            "bar",
            "--no-payload",
            "-f",
            "--param",
            "params=/",
        ])?
        .ok()?;
    ensure!(out.stdout.lines().any(|l| l == "bin"), "{}", out.describe());
    let out = node
        .receptorctl(&[
            "work",
            "submit",
            "listcontents",
            "--node",
            "bar",
            "--no-payload",
            "-f",
            "--param",
            "params=--all",
        ])?
        .ok()?;
    ensure!(out.stdout.lines().any(|l| l == ".."), "{}", out.describe());

    // work list, cancel, release, force-release.
    let list = work_list(node)?;
    ensure!(list[&id]["WorkType"] == "remote", "{list}");
    let out = node
        .receptorctl(&["work", "submit", "sleeper", "--node", "bar", "--no-payload"])?
        .ok()?;
    let sleeper = unit_id(&out)?;
    wait_state(node, &sleeper, "Running")?;
    node.receptorctl(&["work", "cancel", &sleeper])?.ok()?;
    wait_state(node, &sleeper, "Canceled")?;
    node.receptorctl(&["work", "release", &sleeper])?.ok()?;
    node.receptorctl(&["work", "release", "--force", &id])?
        .ok()?;
    let list = work_list(node)?;
    ensure!(
        list.get(&id).is_none() && list.get(&sleeper).is_none(),
        "{list}"
    );
    Ok(())
}

#[test]
fn go_submits_to_go() -> Result<()> {
    guide(Go, Go)
}

mod rust_nodes {
    use super::*;

    #[test]
    fn rust_submits_to_rust() -> Result<()> {
        guide(Rust, Rust)
    }

    #[test]
    fn rust_submits_to_go() -> Result<()> {
        guide(Rust, Go)
    }

    #[test]
    fn go_submits_to_rust() -> Result<()> {
        guide(Go, Rust)
    }
}
