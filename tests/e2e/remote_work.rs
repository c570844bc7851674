//! Scenario: remote work. Node `foo` submits work for node `bar` (linked by TCP); `foo` keeps a
//! local unit of type `remote` that follows the unit on `bar`. Run with each implementation
//! on each side: payloads and results are byte-identical, signed work is verified, cancel and
//! release reach `bar`, and (Rust submitter) `foo` killed with SIGKILL in the middle of a
//! results stream completes the results after its restart.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use receptor_tests::wait::{wait_until, CONVERGE_TIMEOUT};
use receptor_tests::Implementation::{self, Go, Rust};
use receptor_tests::{free_port, Node, NodeConfig};
use serde_json::{json, Value};
use tempfile::TempDir;

const PRIVATE_KEY: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../core/src/work/testdata/sign_private_pkcs1.pem"
));
const PUBLIC_KEY: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../core/src/work/testdata/sign_public.pem"
));

/// How long a unit may take to reach a state (debug builds, loaded machine).
const UNIT_TIMEOUT: Duration = Duration::from_secs(60);

/// `bar` produces about 8 MB over 2 seconds: long enough to kill `foo` mid-stream.
const SLOW_GEN: &str =
    "-c \"for i in $(seq 1 40); do head -c 200000 /dev/urandom; sleep 0.05; done\"";

/// The submitting node (`foo`) and the node that runs the work (`bar`).
struct Pair {
    origin: Node,
    target: Node,
    _keys: TempDir,
}

fn start_pair(submitter: Implementation, runner: Implementation) -> Result<Pair> {
    let keys = tempfile::tempdir()?;
    let private = keys.path().join("private.pem");
    let public = keys.path().join("public.pem");
    std::fs::write(&private, PRIVATE_KEY)?;
    std::fs::write(&public, PUBLIC_KEY)?;
    let port = free_port()?;
    let command = |worktype: &str, command: &str, params: Option<&str>, extra: Value| {
        let mut body = json!({"worktype": worktype, "command": command});
        if let (Some(map), Some(params)) = (body.as_object_mut(), params) {
            map.insert("params".to_owned(), json!(params));
        }
        if let (Some(map), Value::Object(extra)) = (body.as_object_mut(), extra) {
            map.extend(extra);
        }
        body
    };
    let target = NodeConfig::new("bar")
        .tcp_listener(port)
        .entry(
            "work-verification",
            json!({"publickey": public.display().to_string()}),
        )
        .entry("work-command", command("cat", "cat", None, json!({})))
        .entry(
            "work-command",
            command("signedcat", "cat", None, json!({"verifysignature": true})),
        )
        .entry(
            "work-command",
            command("sleeper", "sleep", Some("300"), json!({})),
        )
        .entry(
            "work-command",
            command(
                "gen",
                "dd",
                Some("status=none"),
                json!({"allowruntimeparams": true}),
            ),
        )
        .entry(
            "work-command",
            command("slowgen", "bash", Some(SLOW_GEN), json!({})),
        );
    let origin = NodeConfig::new("foo").tcp_peer(port).entry(
        "work-signing",
        json!({"privatekey": private.display().to_string(), "tokenexpiration": "10m"}),
    );
    let target = Node::start(runner, target)?;
    let origin = Node::start(submitter, origin)?;
    origin.wait_for_routes(&[("bar", "bar")])?;
    target.wait_for_routes(&[("foo", "foo")])?;
    Ok(Pair {
        origin,
        target,
        _keys: keys,
    })
}

/// `work submit`: the unit id and the final reply line.
fn submit(node: &Node, request: &str, payload: &[u8]) -> Result<(String, String)> {
    let mut c = node.control()?;
    let created = c.command(request)?;
    let id = created
        .strip_prefix("Work unit created with ID ")
        .and_then(|r| r.strip_suffix(". Send stdin data and EOF."))
        .ok_or_else(|| anyhow!("{}: submit refused: {created}", node.id()))?
        .to_owned();
    c.send_raw(payload)?;
    c.shutdown_write()?;
    let reply = c.read_line()?;
    Ok((id, reply))
}

fn submit_started(node: &Node, request: &str, payload: &[u8]) -> Result<String> {
    let (id, reply) = submit(node, request, payload)?;
    ensure!(
        reply == format!(r#"{{"result":"Job Started","unitid":"{id}"}}"#),
        "{}: {request}: {reply}",
        node.id()
    );
    Ok(id)
}

fn unit_status(node: &Node, id: &str) -> Result<Value> {
    node.command_json(&format!("work status {id}"))
}

fn wait_state(node: &Node, id: &str, state: i64) -> Result<Value> {
    let mut last = Value::Null;
    wait_until(
        UNIT_TIMEOUT,
        &format!("unit {id} on {} in state {state}", node.id()),
        || {
            let s = unit_status(node, id)?;
            if s["State"] == state {
                return Ok(Some(s));
            }
            last = s;
            Ok(None)
        },
    )
    .with_context(|| format!("last status: {last}"))
}

fn unit_file(node: &Node, id: &str, file: &str) -> PathBuf {
    node.datadir().join(node.id()).join(id).join(file)
}

/// The submitter's copy of the results once it has `len` bytes (Go marks a remote unit
/// Succeeded from the remote status, before its copy is complete).
fn local_results(node: &Node, id: &str, len: u64) -> Result<Vec<u8>> {
    let path = unit_file(node, id, "stdout");
    wait_until(
        UNIT_TIMEOUT,
        &format!("{len} bytes in {}", path.display()),
        || {
            Ok(std::fs::metadata(&path)
                .is_ok_and(|m| m.len() >= len)
                .then_some(()))
        },
    )?;
    Ok(std::fs::read(&path)?)
}

/// `work results <id>` read to the end.
fn results(node: &Node, id: &str) -> Result<Vec<u8>> {
    let mut c = node.control()?;
    let header = c.command(&format!("work results {id}"))?;
    ensure!(
        header == format!("Streaming results for work unit {id}"),
        "{header}"
    );
    c.shutdown_write()?;
    c.read_to_end()
}

fn payload(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(seed) % 251) as u8)
        .collect()
}

fn is_gone(node: &Node, id: &str) -> Result<bool> {
    let reply = node.control()?.command(&format!("work status {id}"))?;
    Ok(reply == format!("ERROR: unknown work unit {id}"))
}

/// Submit, follow, results, signing, cancel and release from `submitter` to `runner`.
fn remote_work(submitter: Implementation, runner: Implementation) -> Result<()> {
    let Pair {
        origin,
        target,
        _keys,
    } = start_pair(submitter, runner)?;

    // A small unit, and its latency.
    let started = Instant::now();
    let id = submit_started(&origin, "work submit bar cat", b"hello\nremote world\n")?;
    wait_state(&origin, &id, 2)?;
    eprintln!(
        "{} -> {}: small remote unit in {:?}",
        submitter.label(),
        runner.label(),
        started.elapsed()
    );
    ensure!(local_results(&origin, &id, 19)? == b"hello\nremote world\n");
    ensure!(results(&origin, &id)? == b"hello\nremote world\n");
    let status = unit_status(&origin, &id)?;
    ensure!(status["WorkType"] == "remote", "{status}");
    ensure!(
        status["ExtraData"]["RemoteUnitID"] == id.as_str(),
        "{status}"
    );
    ensure!(unit_status(&target, &id)?["WorkType"] == "cat");

    // A payload of a few MB.
    let data = payload(3 << 20, 7);
    let id = submit_started(&origin, "work submit bar cat", &data)?;
    wait_state(&origin, &id, 2)?;
    ensure!(
        local_results(&origin, &id, data.len() as u64)? == data,
        "results differ"
    );
    ensure!(
        std::fs::read(unit_file(&target, &id, "stdin"))? == data,
        "payload differs"
    );

    // Tens of MB of results.
    let started = Instant::now();
    let id = submit_started(
        &origin,
        "work submit bar gen if=/dev/urandom bs=1M count=24 iflag=fullblock",
        b"",
    )?;
    let done = wait_state(&origin, &id, 2)?;
    ensure!(done["StdoutSize"] == 24 << 20, "{done}");
    let local = local_results(&origin, &id, 24 << 20)?;
    eprintln!(
        "{} -> {}: 24 MiB of results in {:?}",
        submitter.label(),
        runner.label(),
        started.elapsed()
    );
    ensure!(
        local == std::fs::read(unit_file(&target, &id, "stdout"))?,
        "results differ"
    );

    // Signed work.
    let id = submit_started(
        &origin,
        r#"{"command":"work","subcommand":"submit","node":"bar","worktype":"signedcat","signwork":"true"}"#,
        b"signed-ok",
    )?;
    wait_state(&origin, &id, 2)?;
    ensure!(local_results(&origin, &id, 9)? == b"signed-ok");
    let (_, reply) = submit(&origin, "work submit bar signedcat", b"")?;
    ensure!(
        reply
            == "ERROR: could not parse response: ERROR: could not verify signature: signature is empty",
        "{reply}"
    );

    // Cancel reaches bar; the unit ends on both nodes.
    let id = submit_started(&origin, "work submit bar sleeper", b"")?;
    wait_state(&target, &id, 1)?;
    let reply = origin.control()?.command(&format!("work cancel {id}"))?;
    ensure!(reply == format!(r#"{{"cancelled":"{id}"}}"#), "{reply}");
    wait_state(&target, &id, 4)?;
    let cancelled = wait_state(&origin, &id, 4)?;
    ensure!(cancelled["Detail"] == "Canceled", "{cancelled}");

    // Release removes the unit on both nodes.
    let reply = origin.control()?.command(&format!("work release {id}"))?;
    ensure!(reply == format!(r#"{{"released":"{id}"}}"#), "{reply}");
    // (Go removes its unit a moment after answering.)
    for node in [&origin, &target] {
        wait_until(
            CONVERGE_TIMEOUT,
            &format!("release on {}", node.id()),
            || Ok(is_gone(node, &id)?.then_some(())),
        )?;
    }
    ensure!(!unit_file(&target, &id, "status").exists());
    no_panics(&origin)?;
    no_panics(&target)
}

/// `foo` is killed (SIGKILL, its whole process group) while results stream in, and started
/// again: it follows the unit on from its local results and completes them.
fn restart_mid_stream(runner: Implementation) -> Result<()> {
    let Pair {
        mut origin,
        target,
        _keys,
    } = start_pair(Rust, runner)?;
    let id = submit_started(&origin, "work submit bar slowgen", b"")?;
    let stdout = unit_file(&origin, &id, "stdout");
    wait_until(UNIT_TIMEOUT, "the first results", || {
        Ok(std::fs::metadata(&stdout)
            .is_ok_and(|m| m.len() > 0)
            .then_some(()))
    })?;
    origin.kill();
    let at_kill = std::fs::metadata(&stdout)?.len();
    let remote = unit_status(&target, &id)?;
    ensure!(
        remote["State"] == 0 || remote["State"] == 1,
        "the unit ended before foo was killed ({at_kill} bytes): {remote}"
    );
    origin.restart()?;
    let done = wait_state(&origin, &id, 2)?;
    let remote = wait_state(&target, &id, 2)?;
    ensure!(
        done["StdoutSize"] == remote["StdoutSize"],
        "{done} / {remote}"
    );
    let local = std::fs::read(&stdout)?;
    ensure!(
        local == std::fs::read(unit_file(&target, &id, "stdout"))?,
        "results differ after the restart ({} bytes at the kill, {} now)",
        at_kill,
        local.len()
    );
    ensure!(local.len() == 8_000_000, "{} bytes", local.len());
    Ok(())
}

mod go {
    use super::*;

    #[test]
    fn go_to_go() -> Result<()> {
        remote_work(Go, Go)
    }
}

mod rust_nodes {
    use super::*;

    #[test]
    fn rust_to_rust() -> Result<()> {
        remote_work(Rust, Rust)
    }

    #[test]
    fn rust_to_go() -> Result<()> {
        remote_work(Rust, Go)
    }

    #[test]
    fn go_to_rust() -> Result<()> {
        remote_work(Go, Rust)
    }

    #[test]
    fn rust_restart_mid_stream_from_rust() -> Result<()> {
        restart_mid_stream(Rust)
    }

    #[test]
    fn rust_restart_mid_stream_from_go() -> Result<()> {
        restart_mid_stream(Go)
    }

    /// Like Go, a node refuses to start with a `verifysignature` work type and no key.
    #[test]
    fn verifysignature_needs_a_key() -> Result<()> {
        for implementation in [Go, Rust] {
            let config = NodeConfig::new("lonely").tcp_listener(free_port()?).entry(
                "work-command",
                json!({"worktype": "s", "command": "cat", "verifysignature": true}),
            );
            let err = Node::run_expecting_failure(implementation, config)?;
            ensure!(
                err.contains("VerifySignature for work command 's' is true, but the work verification public key is not specified"),
                "{}: {err}",
                implementation.label()
            );
        }
        Ok(())
    }

    #[test]
    fn unreachable_then_reachable() -> Result<()> {
        let port = free_port()?;
        let origin = Node::start(Rust, NodeConfig::new("foo").tcp_peer(port))?;
        let (id, reply) = submit(&origin, "work submit bar cat", b"late")?;
        ensure!(
            reply == format!(r#"{{"result":"Job Submitted","unitid":"{id}"}}"#),
            "{reply}"
        );
        let pending = unit_status(&origin, &id)?;
        ensure!(
            pending["State"] == 0 && pending["Detail"] == "Starting Worker",
            "{pending}"
        );
        let target = Node::start(
            Rust,
            NodeConfig::new("bar")
                .tcp_listener(port)
                .work_command("cat", "cat", None),
        )?;
        wait_state(&origin, &id, 2)?;
        ensure!(local_results(&origin, &id, 4)? == b"late");
        ensure!(unit_status(&target, &id)?["State"] == 2);
        Ok(())
    }
}

/// Fails if a node's log shows a panic.
fn no_panics(node: &Node) -> Result<()> {
    if node.log().contains("panicked") {
        bail!("{} panicked", node.id());
    }
    Ok(())
}
