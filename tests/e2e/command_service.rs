//! Scenario: `command-service` between a Go node (`go`) and a Rust node (`rust`) joined by
//! one TCP link, certificates from one CA as in `streams_tls`.
//!
//! Each node runs three command services: `cmd` (a dialogue, then a long output), `ctls`
//! (the same, with `tls: srv`) and `hold` (a shell and a background `sleep` that never
//! end by themselves and ignore SIGHUP), and a `tcp-server` towards each of the other node's `cmd` and `hold`.
//!
//! * both nodes list both nodes' `cmd` (ConnType 1) and `ctls` (ConnType 2) with tags
//!   `{"type":"Command Service"}`;
//! * the other node's `tcp-server`, `connect` and the real `receptorctl connect` reach
//!   each node's command service, and `connect <other> ctls cli` with TLS; the output (a terminal's, as in Go: echo and
//!   `\r\n`) arrives whole and the stream then ends;
//! * when a client of the Rust node's `hold` leaves (across the mesh through Go's
//!   `tcp-server`, or locally), or the Rust node stops, the command's processes are gone,
//!   even though they ignore the hang-up;
//! * many sessions at once all get their whole output.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use receptor_tests::wait::wait_until;
use receptor_tests::Implementation::{self, Go, Rust};
use receptor_tests::{free_port, NodeConfig, NodeProcess};
use serde_json::{json, Value};

use crate::streams_tls::make_certs;

/// Lines of `seq` output each session ends with.
const SEQ_LINES: u32 = 20000;
/// The dialogue: a prompt, one line read and answered, then a long output.
const DIALOGUE: &str = "sh -c 'echo ready; read line; echo got:$line; seq 1 20000'";
/// A shell that ignores hang-ups, starts a background `sleep` (which inherits that) and
/// reports both pids, then waits forever: only a kill ends it.
const HOLD: &str = "sh -c 'trap \"\" HUP; sleep 600 & echo pids:$$:$!; wait'";
/// How long to wait for a process to be gone.
const GONE_TIMEOUT: Duration = Duration::from_secs(10);

struct Setup {
    nodes: Vec<NodeProcess>,
    /// Port of each node's `tcp-server` towards the other node's `cmd`.
    cmd_ports: Vec<u16>,
    /// Port of each node's `tcp-server` towards the other node's `hold`.
    hold_ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

fn setup() -> Result<Setup> {
    let dir = tempfile::Builder::new()
        .prefix("receptor-cmdsvc-")
        .tempdir()?;
    let certs = dir.path().to_path_buf();
    let names = ["go", "rust"];
    make_certs(&certs, &names)?;
    let link = free_port()?;
    let cmd_ports = vec![free_port()?, free_port()?];
    let hold_ports = vec![free_port()?, free_port()?];
    let impls: [Implementation; 2] = [Go, Rust];
    let mut nodes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let other = names[1 - i];
        let mut config = NodeConfig::new(name)
            .mutual_tls(&certs, name)
            .entry(
                "command-service",
                json!({"service": "cmd", "command": DIALOGUE}),
            )
            .entry(
                "command-service",
                json!({"service": "ctls", "command": DIALOGUE, "tls": "srv"}),
            )
            .entry(
                "command-service",
                json!({"service": "hold", "command": HOLD}),
            );
        for (port, service) in [(cmd_ports[i], "cmd"), (hold_ports[i], "hold")] {
            config = config.entry(
                "tcp-server",
                json!({"port": port, "bindaddr": "127.0.0.1", "remotenode": other,
                       "remoteservice": service}),
            );
        }
        config = if i == 0 {
            config.tcp_listener(link)
        } else {
            config.tcp_peer(link)
        };
        nodes.push(NodeProcess::start(impls[i], config)?);
    }
    for (i, node) in nodes.iter().enumerate() {
        node.wait_for_routes(&[(names[1 - i], names[1 - i])])?;
        node.wait_for_status("both nodes' command services", |s| {
            names.iter().all(|n| {
                ["cmd", "ctls", "hold"]
                    .iter()
                    .all(|svc| ad(s, n, svc).is_some())
            })
        })?;
    }
    Ok(Setup {
        nodes,
        cmd_ports,
        hold_ports,
        _dir: dir,
    })
}

fn ad<'a>(status: &'a Value, node: &str, service: &str) -> Option<&'a Value> {
    status["Advertisements"]
        .as_array()?
        .iter()
        .find(|ad| ad["NodeID"] == node && ad["Service"] == service)
}

/// What a dialogue session prints after its prompt when the client types `word`: the
/// terminal's echo, the answer, the `seq` lines, all with `\r\n`.
fn expected_after_prompt(word: &str) -> String {
    let mut out = format!("{word}\r\ngot:{word}\r\n");
    for i in 1..=SEQ_LINES {
        out.push_str(&format!("{i}\r\n"));
    }
    out
}

/// Runs a dialogue over a connection already attached to a command service: waits for
/// the prompt, types `word`, reads to the end and checks the whole output.
fn dialogue<S: Read + Write>(reader: &mut BufReader<S>, word: &str) -> Result<()> {
    let mut prompt = String::new();
    reader
        .read_line(&mut prompt)
        .context("reading the prompt")?;
    ensure!(prompt == "ready\r\n", "prompt {prompt:?}");
    reader.get_mut().write_all(format!("{word}\n").as_bytes())?;
    let mut rest = Vec::new();
    reader
        .read_to_end(&mut rest)
        .context("reading the output to its end")?;
    let rest = String::from_utf8_lossy(&rest);
    let expected = expected_after_prompt(word);
    ensure!(
        rest == expected,
        "output of {} bytes, expected {}; starts {:?}, ends {:?}",
        rest.len(),
        expected.len(),
        &rest[..rest.len().min(80)],
        &rest[rest.len().saturating_sub(80)..]
    );
    Ok(())
}

/// A dialogue through a local `tcp-server` port.
fn dialogue_tcp(port: u16, word: &str) -> Result<()> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    dialogue(&mut BufReader::new(stream), word)
}

/// A dialogue through `connect <target> <service> [tls]` on `node`'s control socket.
fn dialogue_connect(
    node: &NodeProcess,
    target: &str,
    service: &str,
    tls: &str,
    word: &str,
) -> Result<()> {
    let stream = std::os::unix::net::UnixStream::connect(node.socket())?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    ensure!(line.starts_with("Receptor Control"), "greeting {line:?}");
    reader
        .get_mut()
        .write_all(format!("connect {target} {service} {tls}\n").as_bytes())?;
    line.clear();
    reader.read_line(&mut line)?;
    ensure!(
        line == "Connecting\n",
        "{}: connect {target} {service} {tls}: {line:?}",
        node.id()
    );
    dialogue(&mut reader, word)
        .with_context(|| format!("{}: connect {target} {service} {tls}", node.id()))
}

/// Runs `receptorctl --socket <socket> connect <node> cmd` in a pty: types a word, and
/// expects the answer and a normal exit once the command ends (receptorctl returns when
/// the service closes the stream).
const RECEPTORCTL_PTY: &str = r#"
import json, os, pty, select, sys, time
receptorctl, sock, node, word = sys.argv[1:5]
pid, fd = pty.fork()
if pid == 0:
    os.execv(receptorctl, [receptorctl, "--socket", sock, "connect", node, "cmd"])
# Typed at once: the terminal holds the line until receptorctl reads its stdin, which it
# does only once connected (the prompt itself may be swallowed by receptorctl's buffered
# read of "Connecting", so it is not waited for).
os.write(fd, word.encode() + b"\n")
out = b""
deadline = time.time() + 40
status = None
while status is None:
    if time.time() > deadline:
        os.kill(pid, 9)
        raise SystemExit("receptorctl did not finish; output %r" % out[-300:])
    r, _, _ = select.select([fd], [], [], 0.05)
    if r:
        try:
            out += os.read(fd, 65536)
        except OSError:
            pass
    done, st = os.waitpid(pid, os.WNOHANG)
    if done:
        status = st
while True:
    r, _, _ = select.select([fd], [], [], 0.2)
    if not r:
        break
    try:
        chunk = os.read(fd, 65536)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
print(json.dumps({"exit": os.waitstatus_to_exitcode(status), "output": out.decode(errors="replace")}))
"#;

/// The real `receptorctl connect` on `node` to `target`'s `cmd`.
fn receptorctl_connect(node: &NodeProcess, target: &str, word: &str) -> Result<()> {
    let ctl = receptor_tests::binaries::receptorctl()?;
    let out = receptor_tests::receptorctl::run_python(
        RECEPTORCTL_PTY,
        &[
            &ctl.display().to_string(),
            &node.socket().display().to_string(),
            target,
            word,
        ],
    )?
    .ok()?;
    let result: Value = serde_json::from_str(out.stdout.trim())
        .with_context(|| format!("pty script output: {}", out.describe()))?;
    let output = result["output"].as_str().unwrap_or_default();
    // Whole output is checked by the raw `connect` sessions: what a process writes to a
    // pty just before it exits can be lost to the reader of the other side.
    ensure!(
        result["exit"] == 0 && output.contains(&format!("got:{word}")),
        "receptorctl connect {target} cmd from {}: exit {}, output ends {:?}",
        node.id(),
        result["exit"],
        &output[output.len().saturating_sub(200)..]
    );
    Ok(())
}

#[test]
fn command_services_between_go_and_rust() -> Result<()> {
    let s = setup()?;
    let names = ["go", "rust"];
    for node in &s.nodes {
        let status = node.status()?;
        for owner in names {
            for (service, conn_type) in [("cmd", 1), ("ctls", 2)] {
                let a = ad(&status, owner, service).context("command service ad")?;
                ensure!(
                    a["ConnType"] == conn_type && a["Tags"] == json!({"type": "Command Service"}),
                    "{}: {owner}'s {service} ad {a}",
                    node.id()
                );
            }
        }
    }
    for (i, node) in s.nodes.iter().enumerate() {
        let other = names[1 - i];
        // This node's tcp-server reaches the other node's command service.
        dialogue_tcp(s.cmd_ports[i], &format!("tcp-from-{}", node.id()))
            .with_context(|| format!("{}'s tcp-server to {other}'s cmd", node.id()))?;
        dialogue_connect(node, other, "cmd", "", "plain")?;
        dialogue_connect(node, other, "ctls", "cli", "secure")?;
        let reply = node.control()?.command(&format!("connect {other} ctls"))?;
        ensure!(
            reply.starts_with("ERROR: "),
            "{}: connect {other} ctls without TLS: {reply}",
            node.id()
        );
    }
    // The Rust node's own service, through its own control socket.
    dialogue_connect(&s.nodes[1], "localhost", "cmd", "", "local")?;
    // The real receptorctl, both ways.
    receptorctl_connect(&s.nodes[0], "rust", "fromgo")?;
    receptorctl_connect(&s.nodes[1], "go", "fromrust")?;
    Ok(())
}

/// Reads the `pids:<shell>:<sleep>` line of a `hold` session.
fn hold_pids<R: BufRead>(reader: &mut R) -> Result<[u32; 2]> {
    let mut line = String::new();
    reader.read_line(&mut line).context("reading the pids")?;
    let mut parts = line.trim_end().split(':');
    ensure!(
        parts.next() == Some("pids"),
        "hold session printed {line:?}"
    );
    let pid = |p: Option<&str>| -> Result<u32> {
        p.and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow!("hold session printed {line:?}"))
    };
    let pids = [pid(parts.next())?, pid(parts.next())?];
    for p in pids {
        ensure!(!gone(p), "process {p} of the hold session is not running");
    }
    Ok(pids)
}

/// Whether `pid` is gone (or a zombie nobody will run again).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn wait_gone(pids: [u32; 2], how: &str) -> Result<()> {
    wait_until(
        GONE_TIMEOUT,
        &format!("the command's processes to go ({how})"),
        || Ok(pids.iter().all(|p| gone(*p)).then_some(())),
    )
}

#[test]
fn a_command_is_gone_when_its_client_leaves() -> Result<()> {
    let s = setup()?;
    // Across the mesh: the Go node's tcp-server to the Rust node's `hold`.
    let stream = TcpStream::connect(("127.0.0.1", s.hold_ports[0]))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream);
    let pids = hold_pids(&mut reader)?;
    drop(reader);
    wait_gone(pids, "client of go's tcp-server left")?;

    // Locally, through the Rust node's control socket; the client just closes.
    let stream = std::os::unix::net::UnixStream::connect(s.nodes[1].socket())?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    reader.get_mut().write_all(b"connect localhost hold\n")?;
    line.clear();
    reader.read_line(&mut line)?;
    ensure!(line == "Connecting\n", "connect localhost hold: {line:?}");
    let pids = hold_pids(&mut reader)?;
    drop(reader);
    wait_gone(pids, "local connect client left")?;

    // The service still serves.
    dialogue_tcp(s.cmd_ports[0], "after")?;

    // A node that stops (SIGTERM) takes its sessions' commands with it.
    let stream = std::os::unix::net::UnixStream::connect(s.nodes[1].socket())?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream);
    line.clear();
    reader.read_line(&mut line)?;
    reader.get_mut().write_all(b"connect localhost hold\n")?;
    line.clear();
    reader.read_line(&mut line)?;
    ensure!(line == "Connecting\n", "connect localhost hold: {line:?}");
    let pids = hold_pids(&mut reader)?;
    let node_pid = s.nodes[1].pid().context("the Rust node's pid")?;
    // SAFETY: kill(2) touches no memory; the pid is the harness's unreaped child.
    unsafe {
        libc::kill(node_pid as libc::pid_t, libc::SIGTERM);
    }
    wait_gone(pids, "the node stopped")?;
    Ok(())
}

#[test]
fn many_sessions_at_once() -> Result<()> {
    const SESSIONS: usize = 16;
    let s = setup()?;
    let port = s.cmd_ports[0];
    let workers: Vec<_> = (0..SESSIONS)
        .map(|i| thread::spawn(move || dialogue_tcp(port, &format!("session{i}"))))
        .collect();
    for (i, w) in workers.into_iter().enumerate() {
        match w.join() {
            Ok(r) => r.with_context(|| format!("session {i}"))?,
            Err(_) => bail!("session {i} panicked"),
        }
    }
    Ok(())
}
