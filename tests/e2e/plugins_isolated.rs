//! Scenario: work-type plugins loaded with `isolation: process` run in a plugin host
//! process the node supervises. A C plugin that segfaults, aborts or hangs and a Rust
//! plugin built with `panic = "abort"` that panics (both built here, outside the
//! workspace) take down only their host: the node stays up, a ping through it still
//! answers, units of other plugins submitted during and after succeed, the unit that
//! crashed ends Failed with a detail naming the plugin host and the signal, the log
//! names the plugin, and the plugin's next unit succeeds in the restarted host. Units
//! of the command work type, run isolated, survive a host crash by re-attaching.

mod rust_nodes {
    use std::os::fd::AsRawFd;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::Duration;

    use anyhow::{anyhow, bail, ensure, Context, Result};
    use receptor_tests::binaries::{plugin_lib, repo_root, rust_receptor};
    use receptor_tests::wait::wait_until;
    use receptor_tests::Implementation::Rust;
    use receptor_tests::{free_port, NodeConfig, NodeProcess};
    use serde_json::{json, Value};

    /// How long a unit gets to reach a final state.
    const UNIT_WAIT: Duration = Duration::from_secs(20);

    /// Compiles `tests/fixtures/crashy.c` into `dir`.
    fn build_crashy(dir: &Path) -> Result<PathBuf> {
        let lib = dir.join("libcrashy.so");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
        let out = Command::new(&cc)
            .args([
                "-std=c11",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-shared",
                "-fPIC",
                "-pthread",
                "-fvisibility=hidden",
            ])
            .arg("-I")
            .arg(repo_root().join("plugin-sdk/include"))
            .arg(repo_root().join("tests/fixtures/crashy.c"))
            .arg("-o")
            .arg(&lib)
            .output()
            .with_context(|| format!("running the C compiler {cc}"))?;
        ensure!(
            out.status.success(),
            "cc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(lib)
    }

    /// Builds `tests/fixtures/abort_plugin` (a crate outside the workspace, built with
    /// `panic = "abort"`) into `target/fixtures`, once for all test processes (a file
    /// lock), offline from the crates the workspace uses.
    fn build_abort_plugin() -> Result<PathBuf> {
        let exe = std::env::current_exe()?;
        // target/<profile>/deps/<test binary>
        let target = exe
            .parent()
            .and_then(Path::parent)
            .and_then(Path::parent)
            .context("test binary is not in target/<profile>/deps")?
            .join("fixtures");
        std::fs::create_dir_all(&target)?;
        let lock = std::fs::File::create(target.join(".build.lock"))?;
        // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!("locking the fixture build");
        }
        let out = Command::new(env!("CARGO"))
            .args(["build", "--offline", "--quiet", "--manifest-path"])
            .arg(repo_root().join("tests/fixtures/abort_plugin/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .output()
            .context("running cargo build for the abort plugin")?;
        ensure!(
            out.status.success(),
            "building the abort plugin failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        drop(lock);
        Ok(target.join("debug/libabort_plugin_fixture.so"))
    }

    /// The node under test (`iso`, with the given extra entries and a listener) and a
    /// peer `far` connected to it, routes converged.
    fn mesh(entries: Vec<(&str, Value)>) -> Result<(NodeProcess, NodeProcess)> {
        let port = free_port()?;
        let mut config = NodeConfig::new("iso").tcp_listener(port);
        for (key, value) in entries {
            config = config.entry(key, value);
        }
        let node = NodeProcess::start(Rust, config)?;
        let far = NodeProcess::start(Rust, NodeConfig::new("far").tcp_peer(port))?;
        node.wait_for_ping("far")?;
        Ok((node, far))
    }

    /// Submits a unit with `payload`; returns its ID and the line that answered the
    /// payload (`Job Started`, or the error that starting it gave).
    fn submit(node: &NodeProcess, work_type: &str, payload: &str) -> Result<(String, String)> {
        let mut c = node.control()?;
        let created = c.command(&format!("work submit {} {work_type}", node.id()))?;
        let id = created
            .strip_prefix("Work unit created with ID ")
            .and_then(|r| r.strip_suffix(". Send stdin data and EOF."))
            .ok_or_else(|| anyhow!("submit refused: {created}"))?
            .to_owned();
        c.send_raw(payload.as_bytes())?;
        c.shutdown_write()?;
        let reply = c.read_line()?;
        Ok((id, reply))
    }

    /// Waits for a unit to reach a final state; returns its state number and detail.
    fn final_state(node: &NodeProcess, id: &str) -> Result<(i64, String)> {
        wait_until(UNIT_WAIT, &format!("unit {id} to finish"), || {
            let s = node.command_json(&format!("work status {id}"))?;
            let state = s["State"].as_i64().unwrap_or(-1);
            let detail = s["Detail"].as_str().unwrap_or_default().to_owned();
            Ok((state >= 2).then_some((state, detail)))
        })
    }

    /// The unit's results file.
    fn results(node: &NodeProcess, id: &str) -> Result<String> {
        Ok(std::fs::read_to_string(
            node.datadir().join(node.id()).join(id).join("stdout"),
        )?)
    }

    /// Runs a unit to success and checks its results.
    fn succeeds(node: &NodeProcess, work_type: &str, payload: &str, expected: &str) -> Result<()> {
        let (id, reply) = submit(node, work_type, payload)?;
        ensure!(reply.contains("Job Started"), "{work_type}: {reply}");
        let (state, detail) = final_state(node, &id)?;
        ensure!(state == 2, "{work_type} unit {id} ended {state}: {detail}");
        let out = results(node, &id)?;
        ensure!(
            out == expected,
            "{work_type} results {out:?}, expected {expected:?}"
        );
        Ok(())
    }

    /// The node is up, routes through it still work, and other plugins' units run.
    fn unaffected(node: &mut NodeProcess, other: &[(&str, &str, &str)]) -> Result<()> {
        ensure!(node.is_running(), "the node died:\n{}", node.log());
        let ping = node.command_json("ping far")?;
        ensure!(
            ping["Success"] == json!(true),
            "ping through the node: {ping}"
        );
        for (work_type, payload, expected) in other {
            succeeds(node, work_type, payload, expected)?;
        }
        Ok(())
    }

    /// Submits a unit that takes its plugin host down (in `start`, or, for `running`,
    /// after it started) while units of other plugins are submitted; checks its end,
    /// the log line and that the node and the others are unaffected.
    fn crash_and_survive(
        node: &mut NodeProcess,
        work_type: &str,
        payload: &str,
        detail: &str,
        log_line: &str,
        others: &[(&str, &str, &str)],
    ) -> Result<()> {
        let (id, _) = std::thread::scope(|s| -> Result<(String, String)> {
            let crashing = s.spawn(|| submit(node, work_type, payload));
            // During: the host is crashing, hanging or being restarted.
            for (work_type, payload, expected) in others {
                succeeds(node, work_type, payload, expected)?;
            }
            crashing
                .join()
                .map_err(|_| anyhow!("submitting thread panicked"))?
        })?;
        let (state, got) = final_state(node, &id)?;
        ensure!(
            state == 3 && got.contains(detail),
            "{payload}: unit ended {state} with {got:?}, expected Failed with {detail:?}"
        );
        let log = node.log();
        ensure!(
            log.contains(log_line),
            "{payload}: no {log_line:?} in:\n{log}"
        );
        // After: the node and the other plugins are fine.
        unaffected(node, others)
    }

    #[test]
    fn c_plugin_segfault_abort_and_hang_are_survived() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let crashy = build_crashy(dir.path())?;
        let path = crashy.display().to_string();
        let (mut node, _far) = mesh(vec![
            (
                "plugins",
                json!([{"path": path, "isolation": "process", "calltimeout": "2s"}]),
            ),
            ("crashy-worktype", json!({"worktype": "crashy"})),
            ("echo-worktype", json!({"worktype": "echo"})),
            ("work-command", json!({"worktype": "cat", "command": "cat"})),
        ])?;
        let others = [("echo", "hello", "hello"), ("cat", "meow", "meow")];
        succeeds(&node, "crashy", "fine", "ok: fine\n")?;
        for (payload, detail, log_line) in [
            (
                "segv",
                "Error starting worker: plugin host for crashy crashed (SIGSEGV)",
                format!("plugin crashy ({path}) crashed: killed by signal SIGSEGV"),
            ),
            (
                "abort",
                "Error starting worker: plugin host for crashy crashed (SIGABRT)",
                format!("plugin crashy ({path}) crashed: killed by signal SIGABRT"),
            ),
            (
                "hang",
                "Error starting worker: plugin host for crashy hung (no answer to start within 2s) and was killed",
                format!("plugin crashy ({path}) crashed: hung (no answer to start within 2s), killed"),
            ),
        ] {
            crash_and_survive(&mut node, "crashy", payload, detail, &log_line, &others)?;
            // The crashed plugin runs units again in its new host.
            succeeds(&node, "crashy", payload.to_uppercase().as_str(), &format!("ok: {}\n", payload.to_uppercase()))?;
        }
        // A crash while units run: every running unit of the plugin fails with why.
        let (sleeping, reply) = submit(&node, "crashy", "sleep")?;
        ensure!(reply.contains("Job Started"), "{reply}");
        crash_and_survive(
            &mut node,
            "crashy",
            "later-segv",
            "plugin host for crashy crashed (SIGSEGV); not re-attached: crashy units cannot be re-attached",
            "crashed: killed by signal SIGSEGV",
            &others,
        )?;
        let (state, detail) = final_state(&node, &sleeping)?;
        ensure!(
            state == 3 && detail.contains("plugin host for crashy crashed (SIGSEGV)"),
            "running unit ended {state}: {detail}"
        );
        succeeds(&node, "crashy", "again", "ok: again\n")?;
        Ok(())
    }

    #[test]
    fn rust_panic_abort_plugin_is_survived() -> Result<()> {
        let lib = build_abort_plugin()?;
        let dir = tempfile::tempdir()?;
        let crashy = build_crashy(dir.path())?;
        let path = lib.display().to_string();
        let (mut node, _far) = mesh(vec![
            (
                "plugins",
                json!([
                    {"path": path, "isolation": "process"},
                    {"path": crashy.display().to_string(), "isolation": "process"},
                ]),
            ),
            ("abort-worktype", json!({"worktype": "aborting"})),
            ("crashy-worktype", json!({"worktype": "crashy"})),
            ("echo-worktype", json!({"worktype": "echo"})),
        ])?;
        // A second isolated plugin and an in-process one.
        let others = [("crashy", "hi", "ok: hi\n"), ("echo", "hello", "hello")];
        succeeds(&node, "aborting", "first", "ok: first\n")?;
        crash_and_survive(
            &mut node,
            "aborting",
            "panic",
            "Error starting worker: plugin host for aborting crashed (SIGABRT)",
            &format!("plugin aborting ({path}) crashed: killed by signal SIGABRT"),
            &others,
        )?;
        succeeds(&node, "aborting", "second", "ok: second\n")?;
        crash_and_survive(
            &mut node,
            "aborting",
            "later-panic",
            "plugin host for aborting crashed (SIGABRT); not re-attached",
            "crashed: killed by signal SIGABRT",
            &others,
        )?;
        succeeds(&node, "aborting", "third", "ok: third\n")?;
        Ok(())
    }

    /// A plugin that must run isolated is refused in the node's process, with the way
    /// to load it; `plugin inspect` still describes it (through a plugin host).
    #[test]
    fn plugin_needing_isolation_is_refused_in_process() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let crashy = build_crashy(dir.path())?;
        for lib in [build_abort_plugin()?, crashy.clone()] {
            let log = NodeProcess::run_expecting_failure(
                Rust,
                NodeConfig::new("inproc")
                    .entry("plugins", json!([lib.display().to_string()]))
                    .entry("echo-worktype", json!({"worktype": "echo"})),
            )?;
            let expected = format!(
                "plugin {} is built to run isolated (a panic or abort in it would end the whole node): load it with `isolation: process`",
                lib.display()
            );
            ensure!(log.contains(&expected), "{log}");
        }
        let out = Command::new(rust_receptor()?)
            .args(["plugin", "inspect"])
            .arg(&crashy)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(out.status.success(), "{text}");
        ensure!(
            text.contains("plugin crashy 0.1.0")
                && text.contains("section crashy-worktype: work type, Units that crash on demand"),
            "{text}"
        );
        Ok(())
    }

    /// The command work type, run isolated, follows its runner process by pid: a unit
    /// running when its plugin host is killed is re-attached by the new host and
    /// finishes with all its output.
    #[test]
    fn isolated_command_unit_survives_a_host_crash() -> Result<()> {
        let lib = plugin_lib("receptor_command")?;
        let (mut node, _far) = mesh(vec![
            (
                "plugins",
                json!([{"path": lib.display().to_string(), "isolation": "process"}]),
            ),
            (
                "work-command",
                json!({"worktype": "slow", "command": "sh",
                    "params": "-c 'echo before; sleep 2; echo after'"}),
            ),
            ("echo-worktype", json!({"worktype": "echo"})),
        ])?;
        let (id, reply) = submit(&node, "slow", "")?;
        ensure!(reply.contains("Job Started"), "{reply}");
        wait_until(UNIT_WAIT, "the unit to run", || {
            let s = node.command_json(&format!("work status {id}"))?;
            Ok((s["State"] == json!(1) && s["ExtraData"].get("Pid").is_some()).then_some(()))
        })?;
        let node_pid = node.pid().context("node pid")?;
        let host = receptor_tests::node::descendants(node_pid)
            .into_iter()
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains("plugin-host"))
                    .unwrap_or(false)
            })
            .context("the plugin host process")?;
        let pid = libc::pid_t::try_from(host)?;
        // SAFETY: kill(2) touches no memory of ours; `pid` is the node's child.
        let killed = unsafe { libc::kill(pid, libc::SIGKILL) };
        ensure!(killed == 0, "kill the host");
        let (state, detail) = final_state(&node, &id)?;
        ensure!(state == 2, "unit ended {state}: {detail}\n{}", node.log());
        ensure!(results(&node, &id)? == "before\nafter\n");
        let log = node.log();
        ensure!(
            log.contains("crashed: killed by signal SIGKILL")
                && log.contains("unit re-attached in the new plugin host"),
            "{log}"
        );
        unaffected(&mut node, &[("echo", "hi", "hi")])?;
        succeeds(&node, "slow", "", "before\nafter\n")
    }
}
