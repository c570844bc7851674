//! Scenario: the README's quick start, run as written against `examples/foo.yml` and
//! `examples/bar.yml`.
//!
//! The `console` blocks of the README's "Quick start" section are read line by line: a
//! `$ ./target/release/receptor --config examples/<node>.yml &` line starts that example
//! node, any other `$ ` line is run with `sh -c`, and the lines after it are its expected
//! standard output. Only what must change for a test is changed: the example's port
//! (2222) becomes a harness port, its `/tmp/<node>.sock` sockets become the harness's
//! sockets, each node gets a data folder of its own, `receptorctl` is the one of the test
//! virtualenv, and our build stands for `./target/release/receptor`. A command the
//! scenario does not understand fails the test, so the README cannot drift from what
//! runs.

use std::fs;

use anyhow::{bail, ensure, Context, Result};
use receptor_tests::binaries::{self, repo_root};
use receptor_tests::receptorctl::run;
use receptor_tests::Implementation::Rust;
use receptor_tests::{free_port, NodeProcess};

/// The example configs' TCP port.
const EXAMPLE_PORT: &str = "2222";

/// One `$ command` of the README with the output it shows.
struct Step {
    command: String,
    expected: Vec<String>,
}

/// The `$ ` lines of the `console` blocks of the README's "Quick start" section.
fn quick_start_steps() -> Result<Vec<Step>> {
    let readme = fs::read_to_string(repo_root().join("README.md")).context("reading README")?;
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Quick start"))
        .context("README has no \"## Quick start\" section")?;
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    for line in section.lines() {
        if line.starts_with("```") {
            in_console = line == "```console";
            continue;
        }
        if !in_console {
            continue;
        }
        match line.strip_prefix("$ ") {
            Some(command) => steps.push(Step {
                command: command.to_owned(),
                expected: Vec::new(),
            }),
            None => match steps.last_mut() {
                Some(step) => step.expected.push(line.to_owned()),
                None => bail!("README quick start: output line {line:?} before any command"),
            },
        }
    }
    ensure!(
        !steps.is_empty(),
        "README quick start has no console commands"
    );
    Ok(steps)
}

/// An example config made runnable beside other tests: harness port, socket and data folder.
fn example_config(
    node: &str,
    port: u16,
    datadir: &std::path::Path,
    sockets: &[(&str, String)],
) -> Result<String> {
    let path = repo_root().join(format!("examples/{node}.yml"));
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path:?}"))?;
    let id_line = format!("  id: {node}\n");
    ensure!(text.contains(&id_line), "{path:?} has no {id_line:?}");
    ensure!(
        text.contains(EXAMPLE_PORT),
        "{path:?} does not use port {EXAMPLE_PORT}"
    );
    let mut text = text
        .replace(
            &id_line,
            &format!("{id_line}  datadir: {}\n", datadir.display()),
        )
        .replace(
            &format!("localhost:{EXAMPLE_PORT}"),
            &format!("127.0.0.1:{port}"),
        )
        .replace(EXAMPLE_PORT, &port.to_string());
    for (example, real) in sockets {
        text = text.replace(example, real);
    }
    Ok(text)
}

#[test]
fn readme_quick_start_runs_remote_work() -> Result<()> {
    let steps = quick_start_steps()?;
    let port = free_port()?;
    let receptorctl = binaries::receptorctl()?;
    let mut nodes: Vec<NodeProcess> = Vec::new();
    // The example sockets, and what they are in this test (filled as nodes start).
    let mut sockets: Vec<(&str, String)> = Vec::new();
    let mut ran_work = false;
    for step in &steps {
        let started = ["foo", "bar"].into_iter().find(|node| {
            step.command == format!("./target/release/receptor --config examples/{node}.yml &")
        });
        if let Some(node) = started {
            let example_socket = if node == "foo" {
                "/tmp/foo.sock"
            } else {
                "/tmp/bar.sock"
            };
            let mut known = sockets.clone();
            let started = NodeProcess::start_from_text(Rust, node, |datadir, socket| {
                known.push((example_socket, socket.display().to_string()));
                example_config(node, port, datadir, &known)
            })?;
            sockets.push((example_socket, started.socket().display().to_string()));
            nodes.push(started);
            continue;
        }
        ensure!(
            step.command.contains("receptorctl --socket /tmp/foo.sock"),
            "README quick start: the test does not know how to run {:?}",
            step.command
        );
        if !ran_work {
            // Both nodes are up: wait until they route to each other, as a user waits a moment.
            let [foo, bar] = nodes.as_slice() else {
                bail!("README quick start runs receptorctl before starting foo and bar");
            };
            foo.wait_for_routes(&[("bar", "bar")])?;
            bar.wait_for_routes(&[("foo", "foo")])?;
            ran_work = true;
        }
        let mut line = step
            .command
            .replace("receptorctl", &receptorctl.display().to_string());
        for (example, real) in &sockets {
            line = line.replace(example, real);
        }
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg(&line);
        let out = run(cmd)?.ok()?;
        let got: Vec<&str> = out.stdout.lines().collect();
        ensure!(
            got == step.expected,
            "README quick start: `{}` printed {:?}, the README shows {:?}",
            step.command,
            got,
            step.expected
        );
    }
    ensure!(ran_work, "README quick start runs no receptorctl command");
    Ok(())
}
