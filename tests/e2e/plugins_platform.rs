//! Scenario: the node's side of the plugin contract as an operator sees it: start-up
//! refusals of configurations the plugins cannot serve, what the log says about the
//! plugins loaded, and a third-party C plugin (built here, outside the workspace) that
//! describes its sections, a work type and a new kind of backend: `--help` lists them in
//! their groups, the YAML list form, the version-2 map form and the command line all
//! configure them, typos get a suggestion, the plugin reads every field through the
//! host's typed accessors, and Rust nodes link through its backend.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, ensure, Context, Result};
use receptor_tests::binaries::{repo_root, rust_receptor};
use receptor_tests::Implementation::{Go, Rust};
use receptor_tests::{free_port, NodeConfig, NodeProcess};
use serde_json::json;

/// Like Go receptor 1.6.9, two sections declaring the same work type name stop the
/// node at start-up with the same message.
#[test]
fn duplicate_work_types_are_refused() -> Result<()> {
    for implementation in [Go, Rust] {
        let config = NodeConfig::new("dup")
            .tcp_listener(free_port()?)
            .entry(
                "work-command",
                json!({"worktype": "same", "command": "cat"}),
            )
            .entry(
                "work-command",
                json!({"worktype": "same", "command": "echo"}),
            );
        let log = NodeProcess::run_expecting_failure(implementation, config)?;
        ensure!(
            log.contains("work type same already registered"),
            "{}: {log}",
            implementation.label()
        );
    }
    Ok(())
}

mod rust_nodes {
    use super::*;

    /// Every plugin the node loads gets exactly one log line, naming its ABI version.
    #[test]
    fn one_log_line_per_loaded_plugin() -> Result<()> {
        let node = NodeProcess::start(Rust, NodeConfig::new("solo").tcp_listener(free_port()?))?;
        node.wait_for_status("a status", |_| true)?;
        let log = node.log();
        for name in ["tcp", "udp", "websocket", "echo", "command"] {
            let needle = format!("plugin={name} ");
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("loaded plugin") && l.contains(&needle))
                .collect();
            ensure!(lines.len() == 1, "plugin {name}: {lines:?}\n{log}");
            ensure!(lines[0].contains("abi=1."), "{}", lines[0]);
        }
        Ok(())
    }
}

/// Compiles `tests/fixtures/greeter.c` against the SDK's header into `dir` (hidden
/// visibility by default: the export macro keeps the entry point visible).
fn build_greeter(dir: &Path) -> Result<PathBuf> {
    let lib = dir.join("libacme_greeter.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let out = Command::new(&cc)
        .args([
            "-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-pthread",
        ])
        .arg("-fvisibility=hidden")
        .arg("-I")
        .arg(repo_root().join("plugin-sdk/include"))
        .arg(repo_root().join("tests/fixtures/greeter.c"))
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

/// Submits a unit with an empty payload; returns its id.
fn submit(node: &NodeProcess, work_type: &str) -> Result<String> {
    let mut c = node.control()?;
    let created = c.command(&format!("work submit {} {work_type}", node.id()))?;
    let id = created
        .strip_prefix("Work unit created with ID ")
        .and_then(|r| r.strip_suffix(". Send stdin data and EOF."))
        .ok_or_else(|| anyhow!("submit refused: {created}"))?
        .to_owned();
    c.shutdown_write()?;
    let reply = c.read_line()?;
    ensure!(reply.contains("Job Started"), "{reply}");
    Ok(id)
}

/// Waits for a unit to succeed; returns its detail and results.
fn finished(node: &NodeProcess, id: &str) -> Result<(String, String)> {
    let mut detail = String::new();
    receptor_tests::wait::wait_until(
        std::time::Duration::from_secs(10),
        &format!("unit {id} to succeed"),
        || {
            let s = node.command_json(&format!("work status {id}"))?;
            if s["State"] == json!(2) {
                detail = s["Detail"].as_str().unwrap_or_default().to_owned();
                return Ok(Some(()));
            }
            ensure!(s["State"] != json!(3), "unit failed: {s}");
            Ok(None)
        },
    )?;
    let mut c = node.control()?;
    let header = c.command(&format!("work results {id}"))?;
    ensure!(header.starts_with("Streaming results"), "{header}");
    c.shutdown_write()?;
    let out = String::from_utf8(c.read_to_end()?)?;
    Ok((detail, out))
}

mod third_party {
    use super::*;

    #[test]
    fn yaml_list_form_and_all_field_types() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let lib = build_greeter(dir.path())?;
        let node = NodeProcess::start(
            Rust,
            NodeConfig::new("acme")
                .entry("plugins", json!([lib.display().to_string()]))
                .entry(
                    "acme-greeter",
                    json!({"worktype": "greet", "greeting": "hi", "times": 2, "loud": "yes",
                        "pause": "1m30s", "names": ["ann", "bob"]}),
                ),
        )?;
        let id = submit(&node, "greet")?;
        let (detail, out) = finished(&node, &id)?;
        ensure!(detail == "pause=90000ms", "{detail}");
        ensure!(out == "HI ANN\nHI BOB\nHI ANN\nHI BOB\n", "{out:?}");
        Ok(())
    }

    /// Runs `receptor` with `args` (and `RECEPTOR_PLUGIN_PATH=plugin_path`), submits a
    /// unit of `work_type` to node `node_id` through `socket` and returns its results.
    fn one_unit(
        args: &[String],
        plugin_path: &Path,
        socket: &Path,
        datadir: &Path,
        node_id: &str,
        work_type: &str,
    ) -> Result<String> {
        let mut child = Command::new(rust_receptor()?)
            .args(args)
            .env("RECEPTOR_PLUGIN_PATH", plugin_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let result = (|| -> Result<String> {
            let mut c = receptor_tests::wait::wait_until(
                std::time::Duration::from_secs(10),
                "the control socket",
                || Ok(Some(receptor_tests::ControlClient::connect(socket)?)),
            )?;
            let created = c.command(&format!("work submit {node_id} {work_type}"))?;
            let id = created
                .strip_prefix("Work unit created with ID ")
                .and_then(|r| r.strip_suffix(". Send stdin data and EOF."))
                .ok_or_else(|| anyhow!("submit refused: {created}"))?
                .to_owned();
            c.shutdown_write()?;
            let reply = c.read_line()?;
            ensure!(reply.contains("Job Started"), "{reply}");
            receptor_tests::wait::wait_until(
                std::time::Duration::from_secs(10),
                "the unit to succeed",
                || {
                    let mut c = receptor_tests::ControlClient::connect(socket)?;
                    let s = c.command_json(&format!("work status {id}"))?;
                    Ok((s["State"] == json!(2)).then_some(()))
                },
            )?;
            Ok(std::fs::read_to_string(
                datadir.join(node_id).join(&id).join("stdout"),
            )?)
        })();
        let _ = child.kill();
        let _ = child.wait();
        result
    }

    #[test]
    fn version_2_form_command_line_and_help() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins)?;
        let lib = build_greeter(&plugins)?;
        let datadir = dir.path().join("data");
        // The version-2 map form: the plugin's own plural key.
        let socket = dir.path().join("v2.sock");
        let yaml = format!(
            "version: 2\nnode:\n  id: acme2\n  datadir: {}\ncontrol-services:\n  - filename: {}\nplugins: [{}]\nacme-greeters:\n  - worktype: greet\n    names: [cy]\n",
            datadir.display(),
            socket.display(),
            lib.display()
        );
        let config = dir.path().join("v2.yml");
        std::fs::write(&config, yaml)?;
        let args = ["--config".to_owned(), config.display().to_string()];
        let out = one_unit(&args, &plugins, &socket, &datadir, "acme2", "greet")?;
        ensure!(out == "hello cy\n", "{out:?}");

        // The command line: the bare value and a comma-separated list; the plugin found
        // through RECEPTOR_PLUGIN_PATH.
        let socket = dir.path().join("cli.sock");
        let args = [
            "--node".to_owned(),
            "id=acme6".to_owned(),
            format!("datadir={}", datadir.display()),
            "--control-service".to_owned(),
            format!("filename={}", socket.display()),
            "--acme-greeter".to_owned(),
            "hey".to_owned(),
            "names=ann,bob".to_owned(),
            "worktype=g".to_owned(),
        ];
        let out = one_unit(&args, &plugins, &socket, &datadir, "acme6", "g")?;
        ensure!(out == "hey ann\nhey bob\n", "{out:?}");

        // --help lists the section of a plugin on the default search path.
        let help = Command::new(rust_receptor()?)
            .arg("--help")
            .env("RECEPTOR_PLUGIN_PATH", &plugins)
            .output()?;
        let text = String::from_utf8_lossy(&help.stdout);
        for needle in [
            "--acme-greeter: Greet people, from ACME's plugin (plugin acme)",
            "names=<list of strings>: Whom to greet (required)",
            "greeting=<string>: What to say (default: hello, --acme-greeter <value> sets it)",
            "(version-2 form: under \"acme-greeters:\")",
            "--acme-listener: Accept mesh connections the ACME way (plugin acme)",
            "port=<integer>: TCP port to accept on (required, --acme-listener <value> sets it)",
        ] {
            ensure!(text.contains(needle), "{needle} missing in --help:\n{text}");
        }
        // Each in its group: the backend with the back-ends, the work type with the workers.
        let at = |needle: &str| {
            text.find(needle)
                .ok_or_else(|| anyhow!("{needle} missing in --help:\n{text}"))
        };
        let backends = at("Commands that configure back-ends")?;
        let services = at("Commands that configure services")?;
        let workers = at("Commands that configure workers")?;
        let listener = at("--acme-listener:")?;
        let greeter = at("--acme-greeter:")?;
        ensure!(backends < listener && listener < services, "{text}");
        ensure!(workers < greeter, "{text}");
        Ok(())
    }

    /// A new kind of backend from a third party: configured from the YAML list form, the
    /// version-2 form and the command line (its bare value), Rust nodes link through it;
    /// a typo in its section gets a suggestion.
    #[test]
    fn a_third_party_backend_kind_links_nodes_in_every_form() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins)?;
        let lib = build_greeter(&plugins)?;
        let lib_text = lib.display().to_string();

        let port = free_port()?;
        let hub = NodeProcess::start(
            Rust,
            NodeConfig::new("acmelist")
                .entry("plugins", json!([lib_text]))
                .entry("acme-listener", json!({"port": port})),
        )?;
        let spoke = NodeProcess::start(Rust, NodeConfig::new("spoke1").tcp_peer(port))?;
        hub.wait_for_routes(&[("spoke1", "spoke1")])?;
        drop((spoke, hub));

        let port = free_port()?;
        let hub = NodeProcess::start_from_text(Rust, "acmev2", |datadir, socket| {
            Ok(format!(
                "version: 2\nnode:\n  id: acmev2\n  datadir: {}\ncontrol-services:\n  - filename: {}\nplugins: [{lib_text}]\nacme-listeners:\n  - port: {port}\n    bindaddr: 127.0.0.1\n",
                datadir.display(),
                socket.display()
            ))
        })?;
        let spoke = NodeProcess::start(Rust, NodeConfig::new("spoke2").tcp_peer(port))?;
        hub.wait_for_routes(&[("spoke2", "spoke2")])?;
        drop((spoke, hub));

        // The command line: the bare value is the port; the plugin comes from
        // RECEPTOR_PLUGIN_PATH.
        let port = free_port()?;
        let datadir = dir.path().join("data");
        let mut child = Command::new(rust_receptor()?)
            .args(["--node", "id=acmecli"])
            .arg(format!("datadir={}", datadir.display()))
            .args(["--acme-listener", &port.to_string()])
            .env("RECEPTOR_PLUGIN_PATH", &plugins)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let linked = NodeProcess::start(Rust, NodeConfig::new("spoke3").tcp_peer(port))
            .and_then(|spoke| spoke.wait_for_routes(&[("acmecli", "acmecli")]));
        let _ = child.kill();
        let _ = child.wait();
        linked?;

        let typo = NodeConfig::new("acme7")
            .entry("plugins", json!([lib_text]))
            .entry("acme-listener", json!({"prot": 1}));
        let log = NodeProcess::run_expecting_failure(Rust, typo)?;
        ensure!(
            log.contains("acme-listener: unknown key \"prot\" (did you mean \"port\"?)")
                && log.contains("(line "),
            "{log}"
        );
        Ok(())
    }

    #[test]
    fn typos_and_type_errors_name_the_place_and_suggest() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let lib = build_greeter(dir.path())?;
        let typo = NodeConfig::new("acme3")
            .entry("plugins", json!([lib.display().to_string()]))
            .entry("acme-greeter", json!({"greting": "hi", "names": ["a"]}));
        let log = NodeProcess::run_expecting_failure(Rust, typo)?;
        ensure!(
            log.contains("acme-greeter: unknown key \"greting\" (did you mean \"greeting\"?)")
                && log.contains("(line "),
            "{log}"
        );
        let wrong = NodeConfig::new("acme4")
            .entry("plugins", json!([lib.display().to_string()]))
            .entry("acme-greeter", json!({"times": "many", "names": ["a"]}));
        let log = NodeProcess::run_expecting_failure(Rust, wrong)?;
        ensure!(
            log.contains("acme-greeter: times: expected an integer, got \"many\""),
            "{log}"
        );
        let missing = NodeConfig::new("acme5")
            .entry("plugins", json!([lib.display().to_string()]))
            .entry("acme-greeter", json!({"times": 1}));
        let log = NodeProcess::run_expecting_failure(Rust, missing)?;
        ensure!(
            log.contains("acme-greeter: names (list of strings) is required"),
            "{log}"
        );
        Ok(())
    }
}

/// `receptor plugin inspect` shows what a plugin file provides, or why it cannot load.
#[test]
fn plugin_inspect_describes_a_file_or_says_why_not() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let lib = build_greeter(dir.path())?;
    let not_a_plugin = dir.path().join("notes.so");
    std::fs::write(&not_a_plugin, "not a library")?;
    let out = Command::new(rust_receptor()?)
        .args(["plugin", "inspect"])
        .arg(&lib)
        .arg(&not_a_plugin)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(!out.status.success(), "a bad file must fail the command");
    for needle in [
        "plugin acme 0.1.0 (ABI 1.2, host ABI 1.2)",
        "section acme-greeter: work type, Greet people, from ACME's plugin [bare value sets greeting; version-2 key acme-greeters]",
        "names: list of strings, required - Whom to greet",
        "section acme-listener: backend, Accept mesh connections the ACME way [bare value sets port; version-2 key acme-listeners]",
        "notes.so: not loadable: cannot load plugin",
    ] {
        ensure!(text.contains(needle), "{needle} missing in:\n{text}");
    }
    Ok(())
}
