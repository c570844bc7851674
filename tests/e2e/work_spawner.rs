//! Scenario: local command units started through the node's spawner process, and what a
//! unit reported finished has on disk.
//!
//! * The spawner (the `receptor` binary run again as a helper, a child of the node) is
//!   killed with SIGKILL: a unit it had started keeps running and can be cancelled, and
//!   the next units run through a new spawner.
//! * The node is killed with SIGKILL while a unit runs: the unit's process lives on, the
//!   restarted node re-attaches to it and records its end and results.
//! * Units reported Succeeded (seen in `work list`), then the node killed with SIGKILL at
//!   once: every such unit's `status` file says Succeeded, and its `StdoutSize` is the size
//!   of its `stdout`, which holds the results. (This checks the order of the writes as the
//!   kernel sees them; a power loss cannot be simulated here: what is fsynced when is in
//!   `docs/work-durability.md`.)

#[cfg(test)]
mod rust_nodes {
    use std::fs;
    use std::path::Path;
    use std::time::Duration;

    use anyhow::{bail, ensure, Context, Result};
    use receptor_tests::wait::wait_until;
    use receptor_tests::Implementation::Rust;
    use receptor_tests::{ControlClient, NodeConfig, NodeProcess};
    use serde_json::Value;

    const WAIT: Duration = Duration::from_secs(30);

    fn start_node(dir_gate: Option<&Path>) -> Result<NodeProcess> {
        let mut config = NodeConfig::new("spawn")
            .work_command("cat", "cat", None)
            .work_command("sleeper", "sleep", Some("600"));
        if let Some(gate) = dir_gate {
            config = config.work_command(
                "gated",
                "sh",
                Some(&format!(
                    "-c \"while [ ! -e {} ]; do sleep 0.02; done; echo done\"",
                    gate.display()
                )),
            );
        }
        NodeProcess::start(Rust, config)
    }

    /// `work submit localhost <worktype>` with `payload`; returns the unit id.
    fn submit(node: &NodeProcess, worktype: &str, payload: &[u8]) -> Result<String> {
        let mut ctl = ControlClient::connect(&node.socket())?;
        let created = ctl.command(&format!("work submit localhost {worktype}"))?;
        let id = created
            .strip_prefix("Work unit created with ID ")
            .and_then(|rest| rest.split('.').next())
            .with_context(|| format!("unexpected submit reply {created:?}"))?
            .to_owned();
        ctl.send_raw(payload)?;
        ctl.shutdown_write()?;
        let reply = ctl.read_line()?;
        ensure!(reply.contains("Job Started"), "submit of {id}: {reply}");
        Ok(id)
    }

    fn work_list(node: &NodeProcess) -> Result<Value> {
        node.command_json("work list")
    }

    fn wait_state(node: &NodeProcess, id: &str, state: &str) -> Result<Value> {
        wait_until(WAIT, &format!("unit {id} {state}"), || {
            let unit = work_list(node)?[id].clone();
            if unit["StateName"] == state {
                return Ok(Some(unit));
            }
            if matches!(unit["StateName"].as_str(), Some("Failed" | "Canceled")) {
                bail!("unit {id} ended {unit}");
            }
            Ok(None)
        })
    }

    /// The node's spawner: its child running `receptor __receptor-spawner`.
    fn spawner_pid(node: &NodeProcess) -> Result<Option<u32>> {
        let node_pid = node.pid().context("node not running")?;
        for entry in fs::read_dir("/proc")? {
            let name = entry?.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let (Ok(stat), Ok(cmdline)) = (
                fs::read_to_string(format!("/proc/{pid}/stat")),
                fs::read(format!("/proc/{pid}/cmdline")),
            ) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            let is_spawner = cmdline
                .split(|b| *b == 0)
                .any(|arg| arg == b"__receptor-spawner");
            if ppid == Some(node_pid) && is_spawner {
                return Ok(Some(pid));
            }
        }
        Ok(None)
    }

    fn alive(pid: i64) -> bool {
        // A zombie has no cwd link; a live process does.
        fs::read_link(format!("/proc/{pid}/cwd")).is_ok()
    }

    fn supervisor_pid(unit: &Value) -> Result<i64> {
        unit["ExtraData"]["Pid"]
            .as_i64()
            .with_context(|| format!("no runner pid in {unit}"))
    }

    #[test]
    fn killed_spawner_is_replaced_and_its_units_run_on() -> Result<()> {
        let node = start_node(None)?;
        let first = submit(&node, "cat", b"first\n")?;
        wait_state(&node, &first, "Succeeded")?;
        let spawner = spawner_pid(&node)?.context("no spawner process under the node")?;

        let sleeper = submit(&node, "sleeper", b"")?;
        let running = wait_state(&node, &sleeper, "Running")?;
        let runner = supervisor_pid(&running)?;
        let status = std::process::Command::new("kill")
            .args(["-9", &spawner.to_string()])
            .status()?;
        ensure!(status.success(), "kill -9 {spawner} failed");
        wait_until(WAIT, "the old spawner to be gone", || {
            Ok((!alive(i64::from(spawner))).then_some(()))
        })?;
        ensure!(alive(runner), "the unit's runner died with the spawner");
        ensure!(work_list(&node)?[&sleeper]["StateName"] == "Running");

        // New units go through a new spawner.
        let next = submit(&node, "cat", b"after the kill\n")?;
        let done = wait_state(&node, &next, "Succeeded")?;
        ensure!(done["StdoutSize"] == 15, "{done}");
        let replacement = spawner_pid(&node)?.context("no new spawner")?;
        ensure!(replacement != spawner, "the spawner was not replaced");

        // The unit started by the old spawner still answers a cancel.
        node.command_json(&format!("work cancel {sleeper}"))?;
        wait_state(&node, &sleeper, "Canceled")?;
        wait_until(WAIT, "the cancelled unit's runner to end", || {
            Ok((!alive(runner)).then_some(()))
        })?;
        Ok(())
    }

    #[test]
    fn unit_survives_node_kill_and_is_reattached() -> Result<()> {
        let gate_dir = tempfile::tempdir()?;
        let gate = gate_dir.path().join("go");
        let mut node = start_node(Some(&gate))?;
        let id = submit(&node, "gated", b"")?;
        let running = wait_state(&node, &id, "Running")?;
        let runner = supervisor_pid(&running)?;
        node.crash();
        ensure!(alive(runner), "the unit's runner died with the node");
        node.restart()?;
        let reattached = wait_state(&node, &id, "Running")?;
        ensure!(supervisor_pid(&reattached)? == runner, "{reattached}");
        fs::write(&gate, b"")?;
        let done = wait_state(&node, &id, "Succeeded")?;
        ensure!(done["Detail"] == "exit status 0", "{done}");
        let results = fs::read(node.datadir().join("spawn").join(&id).join("stdout"))?;
        ensure!(results == b"done\n", "results {results:?}");
        Ok(())
    }

    #[test]
    fn succeeded_units_are_on_disk_when_reported() -> Result<()> {
        let mut node = start_node(None)?;
        let mut ids = Vec::new();
        for i in 0..40 {
            ids.push((
                submit(&node, "cat", format!("unit {i:04}\n").as_bytes())?,
                i,
            ));
        }
        // Kill the node as soon as a `work list` shows some units Succeeded.
        let reported: Vec<(String, usize)> = wait_until(WAIT, "units reported Succeeded", || {
            let list = work_list(&node)?;
            let done: Vec<_> = ids
                .iter()
                .filter(|(id, _)| list[id.as_str()]["StateName"] == "Succeeded")
                .cloned()
                .collect();
            Ok((!done.is_empty()).then_some(done))
        })?;
        node.crash();
        let node_dir = node.datadir().join("spawn");
        for (id, i) in &reported {
            let dir = node_dir.join(id);
            let status: Value = serde_json::from_slice(&fs::read(dir.join("status"))?)
                .with_context(|| format!("status of {id}"))?;
            let results = fs::read(dir.join("stdout"))?;
            ensure!(
                status["State"] == 2,
                "{id} was reported Succeeded: {status}"
            );
            ensure!(
                status["StdoutSize"] == results.len(),
                "{id}: {status} but {} bytes of results",
                results.len()
            );
            ensure!(
                results == format!("unit {i:04}\n").as_bytes(),
                "{id}: {results:?}"
            );
        }
        Ok(())
    }
}
