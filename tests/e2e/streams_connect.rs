//! Scenario: `connect` and the control service on the mesh, between a Go node and a Rust
//! node joined by one TCP link (`go` listens, `rust` dials).
//!
//! * Each node's `status` lists both nodes' `control` advertisements (ConnType 1, tags
//!   `{"type":"Control Service"}`).
//! * `connect <other> control` on either node bridges to the other node's control service
//!   (`Connecting`, the other greeting, a command, half-close ends it); `connect localhost
//!   control` reaches the node's own service.
//! * Every `connect` error is worded as Go words it: the Rust node's replies are compared
//!   with the Go node's for the same commands.
//! * The real `receptorctl connect`, which needs a terminal, is driven through a pty, both
//!   ways.

use anyhow::{ensure, Context, Result};
use receptor_tests::binaries;
use receptor_tests::receptorctl::{run_python, PTY_END_WITH_CTRL_D};
use receptor_tests::Implementation::{Go, Rust};
use receptor_tests::{free_port, NodeConfig, NodeProcess};
use serde_json::Value;

/// Starts the pair and waits until each node sees the other's control advertisement.
fn pair() -> Result<(NodeProcess, NodeProcess)> {
    let port = free_port()?;
    let go = NodeProcess::start(Go, NodeConfig::new("go").tcp_listener(port))?;
    let rust = NodeProcess::start(Rust, NodeConfig::new("rust").tcp_peer(port))?;
    for (node, other) in [(&go, "rust"), (&rust, "go")] {
        node.wait_for_routes(&[(other, other)])?;
        node.wait_for_status("both control advertisements", |s| {
            control_ad(s, "go").is_some() && control_ad(s, other).is_some()
        })?;
    }
    Ok((go, rust))
}

/// `node`'s advertisement of the service `control` in a status reply.
fn control_ad<'a>(status: &'a Value, node: &str) -> Option<&'a Value> {
    status["Advertisements"]
        .as_array()?
        .iter()
        .find(|ad| ad["NodeID"] == node && ad["Service"] == "control")
}

/// Opens a control session on `node`, connects to `target`'s control service and checks
/// the greetings, a status through the bridge, and the end after a half-close.
fn connect_through(node: &NodeProcess, target: &str, expect_id: &str) -> Result<()> {
    let mut ctl = node.control()?;
    let reply = ctl.command(&format!("connect {target} control "))?;
    ensure!(
        reply == "Connecting",
        "{}: connect {target}: {reply}",
        node.id()
    );
    let greeting = ctl.read_line()?;
    ensure!(
        greeting == format!("Receptor Control, node {expect_id}"),
        "greeting through the bridge: {greeting}"
    );
    let status = ctl.command_json(r#"{"command":"status","requested_fields":["NodeID"]}"#)?;
    ensure!(
        status["NodeID"] == expect_id,
        "status through the bridge: {status}"
    );
    // Half-close: the remote session ends, then the bridge closes our connection.
    ctl.shutdown_write()?;
    let rest = ctl.read_to_end()?;
    ensure!(rest.is_empty(), "after the half-close: {rest:?}");
    Ok(())
}

#[test]
fn advertisements_and_connect_both_ways() -> Result<()> {
    let (go, rust) = pair()?;
    for node in [&go, &rust] {
        let status = node.status()?;
        for owner in ["go", "rust"] {
            let ad = control_ad(&status, owner).context("ad vanished")?;
            ensure!(
                ad["ConnType"] == 1 && ad["Tags"]["type"] == "Control Service",
                "{}: {owner}'s control ad {ad}",
                node.id()
            );
        }
    }
    connect_through(&go, "rust", "rust")?;
    connect_through(&rust, "go", "go")?;
    connect_through(&rust, "localhost", "rust")?;
    connect_through(&rust, "rust", "rust")?;

    // Through the bridge, the remote session keeps going after an error, and a client
    // that just closes its connection ends the bridge too.
    let mut ctl = rust.control()?;
    ensure!(ctl.command("connect go control")? == "Connecting");
    ensure!(ctl.read_line()? == "Receptor Control, node go");
    let reply = ctl.command("work submit go nosuchtype")?;
    ensure!(
        reply.starts_with("ERROR: "),
        "submit of an unknown type: {reply}"
    );
    ensure!(ctl.command_json("status")?["NodeID"] == "go");
    drop(ctl);
    ensure!(rust.command_json("status")?["NodeID"] == "rust");
    Ok(())
}

#[test]
fn connect_errors_are_worded_as_go_words_them() -> Result<()> {
    let (go, rust) = pair()?;
    let commands = |other: &str| {
        vec![
            format!("connect {other}"),
            "connect a b c d".to_owned(),
            format!("connect {other} control badtls"),
            "connect nosuch control".to_owned(),
            format!("connect {other} nosuchsvc"),
            format!("connect {other} nosvc"),
            format!(r#"{{"command":"connect","node":"{other}"}}"#),
            r#"{"command":"connect"}"#.to_owned(),
            r#"{"command":"connect","node":5}"#.to_owned(),
            format!(r#"{{"command":"connect","node":"{other}","service":7}}"#),
            format!(r#"{{"command":"connect","node":"{other}","service":"control","tls":5}}"#),
        ]
    };
    let replies = |node: &NodeProcess, other: &str| -> Result<Vec<String>> {
        let mut ctl = node.control()?;
        commands(other)
            .iter()
            .map(|c| ctl.command(c))
            .collect::<Result<Vec<String>>>()
    };
    let from_go = replies(&go, "rust")?;
    let from_rust = replies(&rust, "go")?;
    ensure!(
        from_go.iter().all(|r| r.starts_with("ERROR: ")),
        "Go replies {from_go:?}"
    );
    ensure!(
        from_rust == from_go,
        "Rust replies {from_rust:#?}\nGo replies {from_go:#?}"
    );
    // The session goes on after errors.
    let mut ctl = rust.control()?;
    ensure!(ctl.command("connect go nosvc")? == "ERROR: context canceled");
    ensure!(ctl.command_json("status")?["NodeID"] == "rust");
    Ok(())
}

/// Runs `receptorctl --socket <socket> connect <node> control` in a pty: types a status
/// request, waits for the other node's reply, ends with Ctrl-D and expects exit code 0.
const PTY_SCRIPT: &str = r#"
import json, os, pty, select, sys, time
receptorctl, sock, node = sys.argv[1], sys.argv[2], sys.argv[3]
pid, fd = pty.fork()
if pid == 0:
    os.execv(receptorctl, [receptorctl, "--socket", sock, "connect", node, "control"])
out = b""
def read_until(token, timeout=20):
    global out
    deadline = time.time() + timeout
    while token not in out:
        left = deadline - time.time()
        r, _, _ = select.select([fd], [], [], max(0, left))
        if not r:
            raise SystemExit("timeout waiting for %r; output %r" % (token, out))
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            chunk = b""
        if not chunk:
            raise SystemExit("end of output waiting for %r; output %r" % (token, out))
        out += chunk
# Typed at once: the terminal holds the line until receptorctl reads its stdin, which it
# does only once connected. (The remote greeting is not waited for: receptorctl reads
# "Connecting" through a buffered file and may swallow the greeting with it.)
os.write(fd, b'{"command":"status","requested_fields":["NodeID"]}\n')
read_until(b'{"NodeID":"' + node.encode() + b'"}')
code, out = end_with_ctrl_d(pid, fd, out)
print(json.dumps({"exit": code, "output": out.decode(errors="replace")}))
"#;

fn receptorctl_connect(node: &NodeProcess, target: &str) -> Result<()> {
    let ctl = binaries::receptorctl()?;
    let out = run_python(
        &format!("{PTY_END_WITH_CTRL_D}{PTY_SCRIPT}"),
        &[
            &ctl.display().to_string(),
            &node.socket().display().to_string(),
            target,
        ],
    )?
    .ok()?;
    let result: Value = serde_json::from_str(out.stdout.trim())
        .with_context(|| format!("pty script output: {}", out.describe()))?;
    ensure!(result["exit"] == 0, "receptorctl connect: {result}");
    Ok(())
}

#[test]
fn receptorctl_connect_both_ways() -> Result<()> {
    let (go, rust) = pair()?;
    receptorctl_connect(&go, "rust").context("receptorctl on go, connect rust")?;
    receptorctl_connect(&rust, "go").context("receptorctl on rust, connect go")?;
    Ok(())
}
