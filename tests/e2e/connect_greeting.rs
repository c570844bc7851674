//! Scenario: `connect` to another node's control service greets at once, also in the
//! first moments of a link.
//!
//! `hub` (Rust) listens; `gonode` (Go 1.6.9) and `rustnode` (Rust) dial it. A python
//! process using receptorctl's `ReceptorControl.connect_to_service` watches `hub`'s
//! routing table and connects to a target as soon as it appears, within the target's
//! first 100 ms, before the target has computed its route back; both targets leave and
//! join 5 times. Then 200 connections in a row and 20 at once, half to each target. Each must show the
//! target's greeting within 1 s of sending `connect`. The real `receptorctl connect` CLI
//! (in a pty) then reaches each target, within 1 s more than the CLI takes to run
//! `status`.

use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use receptor_tests::binaries;
use receptor_tests::receptorctl::{run_python, PTY_END_WITH_CTRL_D};
use receptor_tests::wait::{wait_until, CONVERGE_TIMEOUT};
use receptor_tests::Implementation::{Go, Rust};
use receptor_tests::{free_port, NodeConfig, NodeProcess};
use serde_json::Value;

/// The promise: the remote greeting within this long of sending `connect`.
const GREETING_WITHIN: Duration = Duration::from_secs(1);

/// Connections in a row, and at once (half to each target).
const SEQUENTIAL: usize = 200;
const CONCURRENT: usize = 20;

/// Times each target joins (is restarted), each followed at once by a connection.
const FRESH_ROUNDS: usize = 5;

/// Connects through `ReceptorControl.connect_to_service` and times the greeting.
/// Arguments: socket, a progress file, fresh-link rounds, sequential count, concurrent
/// count, target node IDs. Whenever a target appears in the node's routing table (it
/// (re)connected), connects to it at once and appends a line to the progress file, until
/// each target did so in every round; then the sequential and concurrent connections.
/// Prints one JSON object: every latency (seconds) per phase, and failures.
const PY_SCRIPT: &str = r#"
import json, sys, threading, time
from receptorctl.socket_interface import ReceptorControl
sock, progress, rounds, sequential, concurrent, targets = (
    sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6:])
failures = []
def greet(target):
    rc = ReceptorControl(sock)
    try:
        start = time.monotonic()
        rc.connect_to_service(target, "control", "")
        rc._socket.settimeout(20)
        line = rc.readstr()
        took = time.monotonic() - start
        if line != "Receptor Control, node " + target:
            failures.append("%s: greeting %r" % (target, line))
        return took
    except Exception as e:
        failures.append("%s: %r" % (target, e))
        return None
    finally:
        rc.close()
# One control session polls the routing table as fast as it answers.
poll = ReceptorControl(sock)
def routes():
    reply = poll.simple_command('{"command":"status","requested_fields":["RoutingTable"]}')
    return reply["RoutingTable"] or {}
fresh = {t: [] for t in targets}
present = set()
deadline = time.monotonic() + 90
while any(len(v) < rounds for v in fresh.values()) and time.monotonic() < deadline:
    table = routes()
    for t in targets:
        if t in table and t not in present:
            fresh[t].append(greet(t))
            with open(progress, "a") as f:
                f.write(t + "\n")
    present = {t for t in targets if t in table}
poll.close()
if any(len(v) < rounds for v in fresh.values()):
    failures.append("fresh links seen: %r" % fresh)
seq = [greet(targets[i % len(targets)]) for i in range(sequential)]
conc = [None] * concurrent
def run(i):
    conc[i] = greet(targets[i % len(targets)])
threads = [threading.Thread(target=run, args=(i,)) for i in range(concurrent)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"fresh": fresh, "sequential": seq, "concurrent": conc, "failures": failures}))
"#;

/// Runs `receptorctl --socket <socket> connect <node> control` in a pty, types a status
/// request and prints the seconds until the target's reply shows; then Ctrl-D.
const PTY_SCRIPT: &str = r#"
import json, os, pty, select, sys, time
receptorctl, sock, node = sys.argv[1], sys.argv[2], sys.argv[3]
start = time.monotonic()
pid, fd = pty.fork()
if pid == 0:
    os.execv(receptorctl, [receptorctl, "--socket", sock, "connect", node, "control"])
os.write(fd, b'{"command":"status","requested_fields":["NodeID"]}\n')
out, token, deadline = b"", b'{"NodeID":"' + node.encode() + b'"}', time.monotonic() + 20
while token not in out:
    r, _, _ = select.select([fd], [], [], max(0, deadline - time.monotonic()))
    if not r:
        raise SystemExit("timeout; output %r" % out)
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        chunk = b""
    if not chunk:
        raise SystemExit("end of output; output %r" % out)
    out += chunk
took = time.monotonic() - start
code, out = end_with_ctrl_d(pid, fd, out)
print(json.dumps({"exit": code, "took": took}))
"#;

/// Latencies of one phase, checked against [`GREETING_WITHIN`]; returns the slowest.
fn check_phase(phase: &str, values: &Value, count: usize) -> Result<f64> {
    let times: Vec<f64> = values
        .as_array()
        .ok_or_else(|| anyhow!("no {phase} in the report"))?
        .iter()
        .map(|t| {
            t.as_f64()
                .ok_or_else(|| anyhow!("{phase}: a failed connection"))
        })
        .collect::<Result<_>>()?;
    ensure!(times.len() == count, "{phase}: {} of {count}", times.len());
    let slow: Vec<(usize, f64)> = times
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, t)| *t > GREETING_WITHIN.as_secs_f64())
        .collect();
    ensure!(
        slow.is_empty(),
        "{phase}: {} connections greeted later than {GREETING_WITHIN:?}: {slow:?}",
        slow.len()
    );
    Ok(times.iter().copied().fold(0.0, f64::max))
}

/// `receptorctl connect` in a pty to `target`: seconds to the target's reply.
fn cli_connect(node: &NodeProcess, target: &str) -> Result<f64> {
    let ctl = binaries::receptorctl()?.display().to_string();
    let socket = node.socket().display().to_string();
    let script = format!("{PTY_END_WITH_CTRL_D}{PTY_SCRIPT}");
    let out = run_python(&script, &[&ctl, &socket, target])?.ok()?;
    let result: Value = serde_json::from_str(out.stdout.trim())
        .with_context(|| format!("pty script output: {}", out.describe()))?;
    ensure!(
        result["exit"] == 0,
        "receptorctl connect {target}: {result}"
    );
    result["took"]
        .as_f64()
        .ok_or_else(|| anyhow!("no time in {result}"))
}

mod rust_nodes {
    use super::*;

    #[test]
    fn connect_greets_within_a_second_from_the_first_moment() -> Result<()> {
        let port = free_port()?;
        let hub = NodeProcess::start(Rust, NodeConfig::new("hub").tcp_listener(port))?;
        let dir = tempfile::tempdir()?;
        let progress = dir.path().join("progress");
        let args = [
            hub.socket().display().to_string(),
            progress.display().to_string(),
            FRESH_ROUNDS.to_string(),
            SEQUENTIAL.to_string(),
            CONCURRENT.to_string(),
            "gonode".to_owned(),
            "rustnode".to_owned(),
        ];
        let client = std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_python(PY_SCRIPT, &args)
        });
        let mut gonode = NodeProcess::start(Go, NodeConfig::new("gonode").tcp_peer(port))?;
        let mut rustnode = NodeProcess::start(Rust, NodeConfig::new("rustnode").tcp_peer(port))?;
        for round in 1..FRESH_ROUNDS {
            // Once the client has connected to both, they leave and join again.
            wait_until(CONVERGE_TIMEOUT, "the client's connections", || {
                let seen = std::fs::read_to_string(&progress).unwrap_or_default();
                Ok((seen.lines().count() >= 2 * round).then_some(()))
            })?;
            gonode.kill();
            rustnode.kill();
            hub.wait_for_routes(&[])?;
            gonode.restart()?;
            rustnode.restart()?;
        }
        let out = client
            .join()
            .map_err(|_| anyhow!("the client thread panicked"))??
            .ok()?;
        let report: Value = serde_json::from_str(out.stdout.trim())
            .with_context(|| format!("client output: {}", out.describe()))?;
        ensure!(
            report["failures"].as_array().is_some_and(Vec::is_empty),
            "failures: {}",
            report["failures"]
        );
        for target in ["gonode", "rustnode"] {
            check_phase(
                &format!("first connections to {target}"),
                &report["fresh"][target],
                FRESH_ROUNDS,
            )?;
        }
        let seq = check_phase("sequential", &report["sequential"], SEQUENTIAL)?;
        let conc = check_phase("concurrent", &report["concurrent"], CONCURRENT)?;
        eprintln!(
            "at join: {}; slowest of {SEQUENTIAL} in a row: {seq:.3} s; of {CONCURRENT} at once: {conc:.3} s",
            report["fresh"]
        );

        // The CLI: its own start-up is measured with `status`, the rest is the promise.
        let started = Instant::now();
        hub.receptorctl(&["status"])?.ok()?;
        let baseline = started.elapsed().as_secs_f64();
        for target in ["gonode", "rustnode", "gonode", "rustnode"] {
            let took = cli_connect(&hub, target)?;
            eprintln!("receptorctl connect {target}: {took:.3} s (status: {baseline:.3} s)");
            ensure!(
                took <= baseline + GREETING_WITHIN.as_secs_f64(),
                "receptorctl connect {target} took {took:.3} s, `status` {baseline:.3} s"
            );
        }
        Ok(())
    }
}
