//! Scenario: `reload` of a node's backends without dropping its links.
//!
//! The node under test, `hub`, has a `tcp-listener` (dialled by `edge`) and two
//! `tcp-peer`s (to `gonode`, a Go receptor 1.6.9, and to `runner`). A reload changes only
//! what its file changes: an unchanged backend keeps its sessions (no node logs a second
//! `connection established`), a removed one stops, a new one starts, a changed one is
//! replaced once the old one let go of its address; a reload that fails (broken file,
//! non-reloadable change, an address that cannot be bound) leaves the node as it was.
//!
//! Go 1.6.9 restarts every backend on each reload (its links drop and come back), so the
//! Rust node is the only subject here.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use receptor_tests::wait::{wait_until, CONVERGE_TIMEOUT};
use receptor_tests::Implementation::{Go, Rust};
use receptor_tests::{free_port, NodeConfig, NodeProcess};
use serde_json::{json, Value};

/// Reloads in a row in the soak test.
const RELOADS: usize = 100;

/// Every how many reloads the soak test uses the `receptorctl` CLI instead of a raw
/// control connection (the CLI's start-up dominates otherwise).
const CLI_EVERY: usize = 10;

/// Pause between two pings of the ping loop (pacing only, to leave CPU to the nodes).
const PING_PACE: Duration = Duration::from_millis(20);

/// Sessions a node's log says it established (Rust: `connection established`, Go:
/// `Connection established with`).
fn established(node: &NodeProcess) -> usize {
    node.log()
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("connection established"))
        .count()
}

/// The nodes of the scenario and the ports of `hub`'s configuration.
struct Mesh {
    gonode: NodeProcess,
    runner: NodeProcess,
    hub: NodeProcess,
    edge: NodeProcess,
    /// `hub`'s configuration as started.
    base: NodeConfig,
    hub_port: u16,
    go_port: u16,
    runner_port: u16,
}

impl Mesh {
    /// The established-session counts of every node, in a fixed order.
    fn sessions(&self) -> [usize; 4] {
        [
            established(&self.gonode),
            established(&self.runner),
            established(&self.hub),
            established(&self.edge),
        ]
    }
}

/// `gonode` (Go) and `runner` listen; `hub` listens and dials both; `edge` dials `hub`.
/// `runner` offers the work type `ticker`, which writes a numbered line every few
/// milliseconds until the file `stop` exists and then the line `end <count>`.
fn start_mesh(stop: &Path) -> Result<Mesh> {
    let (hub_port, go_port, runner_port) = (free_port()?, free_port()?, free_port()?);
    let ticker = format!(
        "-c 'i=0; while [ ! -e {} ]; do echo line-$i; i=$((i+1)); sleep 0.005; done; echo end-$i'",
        stop.display()
    );
    let gonode = NodeProcess::start(Go, NodeConfig::new("gonode").tcp_listener(go_port))?;
    let runner = NodeProcess::start(
        Rust,
        NodeConfig::new("runner")
            .tcp_listener(runner_port)
            .work_command("ticker", "sh", Some(&ticker)),
    )?;
    let base = NodeConfig::new("hub")
        .tcp_listener(hub_port)
        .tcp_peer(go_port)
        .tcp_peer(runner_port);
    let hub = NodeProcess::start(Rust, base.clone())?;
    let edge = NodeProcess::start(Rust, NodeConfig::new("edge").tcp_peer(hub_port))?;
    edge.wait_for_routes(&[("hub", "hub"), ("gonode", "hub"), ("runner", "hub")])?;
    hub.wait_for_routes(&[("gonode", "gonode"), ("runner", "runner"), ("edge", "edge")])?;
    // Pings are answered only once the far ends know their way back.
    gonode.wait_for_routes(&[("hub", "hub"), ("runner", "hub"), ("edge", "hub")])?;
    runner.wait_for_routes(&[("hub", "hub"), ("gonode", "hub"), ("edge", "hub")])?;
    edge.wait_for_ping("gonode")?;
    edge.wait_for_ping("runner")?;
    Ok(Mesh {
        gonode,
        runner,
        hub,
        edge,
        base,
        hub_port,
        go_port,
        runner_port,
    })
}

/// `reload` on a raw control connection; the JSON reply.
fn reload_raw(node: &NodeProcess) -> Result<Value> {
    node.command_json("reload")
}

/// `reload` through the raw connection, expecting success.
fn reload_ok(node: &NodeProcess) -> Result<()> {
    let reply = reload_raw(node)?;
    ensure!(reply == json!({"Success": true}), "reload: {reply}");
    Ok(())
}

/// `receptorctl reload`, expecting success.
fn reload_cli_ok(node: &NodeProcess) -> Result<()> {
    let out = node.receptorctl(&["reload"])?.ok()?;
    ensure!(
        out.stdout.trim() == "Reload successful",
        "reload: {}",
        out.describe()
    );
    Ok(())
}

/// The node IDs in `status`'s `Connections`, with their costs, sorted.
fn connections(node: &NodeProcess) -> Result<Vec<(String, f64)>> {
    let status = node.status()?;
    let mut out: Vec<(String, f64)> = status["Connections"]
        .as_array()
        .ok_or_else(|| anyhow!("no Connections in {status}"))?
        .iter()
        .map(|c| {
            (
                c["NodeID"].as_str().unwrap_or_default().to_owned(),
                c["Cost"].as_f64().unwrap_or_default(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Pings `target` from `node` in a loop until told to stop; counts replies and failures.
struct PingLoop {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    thread: thread::JoinHandle<Vec<String>>,
}

impl PingLoop {
    fn start(node: &NodeProcess, target: &str) -> Result<PingLoop> {
        let mut control = node.control()?;
        let socket = node.socket();
        let target = target.to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let (stop2, ok2) = (stop.clone(), ok.clone());
        let thread = thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                // One command per connection, as receptorctl does.
                let reply = control.command_json(&format!("ping {target}"));
                match reply {
                    Ok(r) if r["Success"] == json!(true) => {
                        ok2.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.push(r.to_string()),
                    Err(e) => failures.push(format!("{e:#}")),
                }
                match receptor_tests::ControlClient::connect(&socket) {
                    Ok(c) => control = c,
                    Err(e) => {
                        failures.push(format!("connect: {e:#}"));
                        break;
                    }
                }
                thread::sleep(PING_PACE);
            }
            failures
        });
        Ok(PingLoop { stop, ok, thread })
    }

    /// Stops the loop; the number of replies, or the failures.
    fn finish(self) -> Result<usize> {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self
            .thread
            .join()
            .map_err(|_| anyhow!("the ping loop panicked"))?;
        ensure!(failures.is_empty(), "pings failed: {failures:?}");
        Ok(self.ok.load(Ordering::Relaxed))
    }
}

/// `work submit <target> <worktype>` with an empty payload; the unit id.
fn submit(node: &NodeProcess, target: &str, worktype: &str) -> Result<String> {
    let mut c = node.control()?;
    let created = c.command(&format!("work submit {target} {worktype}"))?;
    let id = created
        .strip_prefix("Work unit created with ID ")
        .and_then(|r| r.strip_suffix(". Send stdin data and EOF."))
        .ok_or_else(|| anyhow!("submit refused: {created}"))?
        .to_owned();
    c.shutdown_write()?;
    let reply = c.read_line()?;
    ensure!(reply.contains("Job Started"), "submit: {reply}");
    Ok(id)
}

/// Follows `work results <id>` on `node` on a thread until the stream ends.
fn follow_results(node: &NodeProcess, id: &str) -> Result<thread::JoinHandle<Result<Vec<String>>>> {
    let mut c = node.control()?;
    let header = c.command(&format!("work results {id}"))?;
    ensure!(
        header == format!("Streaming results for work unit {id}"),
        "{header}"
    );
    c.shutdown_write()?;
    Ok(thread::spawn(move || {
        let bytes = c.read_to_end()?;
        Ok(BufReader::new(&bytes[..])
            .lines()
            .collect::<std::io::Result<Vec<_>>>()?)
    }))
}

/// The ticker's output is `line-0` .. `line-<n-1>` then `end-<n>`, nothing missing.
fn check_ticker_output(lines: &[String]) -> Result<usize> {
    let (last, body) = lines
        .split_last()
        .ok_or_else(|| anyhow!("no results at all"))?;
    let n: usize = last
        .strip_prefix("end-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("results do not end with end-<n>: last line {last:?}"))?;
    ensure!(
        body.len() == n,
        "{} lines before end-{n} (results incomplete)",
        body.len()
    );
    for (i, line) in body.iter().enumerate() {
        ensure!(*line == format!("line-{i}"), "line {i} is {line:?}");
    }
    Ok(n)
}

mod rust_nodes {
    use super::*;

    /// 100 reloads in a row, alternately adding and removing a backend (a listener or a
    /// peer), while `edge` pings `gonode` through `hub` and a unit on `runner` streams
    /// its results through `hub` to `edge`: every reload succeeds, every ping is
    /// answered, no node re-establishes a session, the results arrive complete.
    #[test]
    fn hundred_reloads_keep_links_and_results() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let stop = dir.path().join("stop");
        let mesh = start_mesh(&stop)?;
        let before = mesh.sessions();

        let unit = submit(&mesh.edge, "runner", "ticker")?;
        let results = follow_results(&mesh.edge, &unit)?;
        let pings = PingLoop::start(&mesh.edge, "gonode")?;

        let (extra_listener, extra_peer) = (free_port()?, free_port()?);
        let started = Instant::now();
        let mut hub = mesh.hub;
        for i in 0..RELOADS {
            let config = match i % 4 {
                0 => mesh.base.clone().tcp_listener(extra_listener),
                2 => mesh.base.clone().tcp_peer(extra_peer),
                _ => mesh.base.clone(),
            };
            hub.set_config(config)?;
            if i % CLI_EVERY == 0 {
                reload_cli_ok(&hub)
            } else {
                reload_ok(&hub)
            }
            .with_context(|| format!("reload {i}"))?;
        }
        let took = started.elapsed();
        eprintln!(
            "{RELOADS} reloads in {took:?} ({:?} each)",
            took / RELOADS as u32
        );

        let answered = pings.finish()?;
        ensure!(answered > 0, "the ping loop got no reply");
        std::fs::write(&stop, b"")?;
        let lines = results
            .join()
            .map_err(|_| anyhow!("the results reader panicked"))??;
        let n = check_ticker_output(&lines)?;
        eprintln!("{answered} pings answered; {n} result lines arrived complete");

        let mesh = Mesh { hub, ..mesh };
        ensure!(
            mesh.sessions() == before,
            "sessions were established again (gonode, runner, hub, edge: {before:?} -> {:?})",
            mesh.sessions()
        );
        ensure!(
            connections(&mesh.hub)?
                .iter()
                .map(|c| c.0.as_str())
                .collect::<Vec<_>>()
                == ["edge", "gonode", "runner"],
            "hub's connections: {:?}",
            connections(&mesh.hub)?
        );
        Ok(())
    }

    /// Adding a peer connects it without touching the other links; changing the
    /// listener's cost rebinds its port (the old listener let go first); removing a
    /// peer drops only that link.
    #[test]
    fn reload_adds_changes_and_removes_backends() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let mut mesh = start_mesh(&dir.path().join("stop"))?;
        let extra_port = free_port()?;
        let extra = NodeProcess::start(Rust, NodeConfig::new("extra").tcp_listener(extra_port))?;

        // Add: `extra` joins, nothing else reconnects.
        let before = mesh.sessions();
        mesh.hub
            .set_config(mesh.base.clone().tcp_peer(extra_port))?;
        reload_cli_ok(&mesh.hub)?;
        mesh.hub.wait_for_routes(&[
            ("gonode", "gonode"),
            ("runner", "runner"),
            ("edge", "edge"),
            ("extra", "extra"),
        ])?;
        extra.wait_for_routes(&[
            ("hub", "hub"),
            ("gonode", "hub"),
            ("runner", "hub"),
            ("edge", "hub"),
        ])?;
        mesh.edge.wait_for_ping("extra")?;
        let after = mesh.sessions();
        ensure!(
            after == [before[0], before[1], before[2] + 1, before[3]],
            "adding a peer re-established other sessions \
             (gonode, runner, hub, edge: {before:?} -> {after:?})"
        );

        // Change: the listener (cost 2) is rebound on the same port; `edge` follows
        // with the same cost and links again at cost 2.
        let with_cost = |cost: f64| {
            NodeConfig::new("hub")
                .tcp_listener_cost(mesh.hub_port, cost)
                .tcp_peer(mesh.go_port)
                .tcp_peer(mesh.runner_port)
                .tcp_peer(extra_port)
        };
        mesh.hub.set_config(with_cost(2.0))?;
        reload_cli_ok(&mesh.hub)?;
        mesh.edge
            .set_config(NodeConfig::new("edge").tcp_peer_cost(mesh.hub_port, 2.0))?;
        reload_cli_ok(&mesh.edge)?;
        wait_until(CONVERGE_TIMEOUT, "edge linked to hub at cost 2", || {
            Ok(connections(&mesh.hub)?
                .contains(&("edge".to_owned(), 2.0))
                .then_some(()))
        })?;
        mesh.gonode.wait_for_status("a route to edge again", |s| {
            s["RoutingTable"]["edge"] == json!("hub")
        })?;
        mesh.edge.wait_for_ping("gonode")?;
        ensure!(
            established(&mesh.gonode) == before[0] && established(&mesh.runner) == before[1],
            "changing the listener re-established the peers' sessions"
        );

        // Remove: `extra` goes, the others stay.
        let before = mesh.sessions();
        mesh.hub.set_config(
            NodeConfig::new("hub")
                .tcp_listener_cost(mesh.hub_port, 2.0)
                .tcp_peer(mesh.go_port)
                .tcp_peer(mesh.runner_port),
        )?;
        reload_ok(&mesh.hub)?;
        wait_until(CONVERGE_TIMEOUT, "hub's link to extra to go", || {
            let c = connections(&mesh.hub)?;
            Ok(
                (c.iter().map(|c| c.0.as_str()).collect::<Vec<_>>()
                    == ["edge", "gonode", "runner"])
                .then_some(()),
            )
        })?;
        mesh.edge.wait_for_ping("runner")?;
        ensure!(
            mesh.sessions() == before,
            "removing a peer re-established other sessions: {before:?} -> {:?}",
            mesh.sessions()
        );
        drop(extra);
        Ok(())
    }

    /// Reloads that fail (a listener whose port is taken, also next to a changed
    /// backend; a broken file; a non-reloadable change) say why with Go's error codes
    /// and leave every link up; the node then reloads normally.
    #[test]
    fn failing_reload_leaves_the_node_as_it_was() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let mut mesh = start_mesh(&dir.path().join("stop"))?;
        let taken = TcpListener::bind(("127.0.0.1", free_port()?))?;
        let taken_port = taken.local_addr()?.port();
        let before = mesh.sessions();
        let links = connections(&mesh.hub)?;

        // A new listener on a taken port: exit code 4, the reason, nothing touched.
        mesh.hub
            .set_config(mesh.base.clone().tcp_listener(taken_port))?;
        let out = mesh.hub.receptorctl(&["reload"])?;
        ensure!(
            out.code == Some(4)
                && out.stderr.contains("ERRORCODE 4")
                && out
                    .stderr
                    .contains(&format!("cannot listen on 127.0.0.1:{taken_port}")),
            "reload with a taken port: {}",
            out.describe()
        );

        // The same next to a changed peer (another cost): still nothing touched, since
        // the new listener is tried before any old backend stops.
        mesh.hub.set_config(
            NodeConfig::new("hub")
                .tcp_listener(mesh.hub_port)
                .tcp_peer(mesh.go_port)
                .tcp_peer_cost(mesh.runner_port, 3.0)
                .tcp_listener(taken_port),
        )?;
        let reply = reload_raw(&mesh.hub)?;
        ensure!(
            reply["Success"] == json!(false)
                && reply["Error"]
                    .as_str()
                    .is_some_and(|e| e.ends_with("ERRORCODE 4")),
            "reload with a taken port and a changed peer: {reply}"
        );

        // A broken file: code 4; a non-reloadable change: code 3.
        mesh.hub.write_raw_config("- node: [unclosed\n")?;
        let out = mesh.hub.receptorctl(&["reload"])?;
        ensure!(
            out.code == Some(4) && out.stderr.contains("ERRORCODE 4"),
            "reload with a broken file: {}",
            out.describe()
        );
        mesh.hub
            .set_config(mesh.base.clone().work_command("added", "cat", None))?;
        let out = mesh.hub.receptorctl(&["reload"])?;
        ensure!(
            out.code == Some(3) && out.stderr.contains("ERRORCODE 3"),
            "reload with a non-reloadable change: {}",
            out.describe()
        );

        ensure!(mesh.hub.is_running(), "hub exited");
        ensure!(
            mesh.sessions() == before,
            "a failed reload re-established sessions: {before:?} -> {:?}",
            mesh.sessions()
        );
        ensure!(
            connections(&mesh.hub)? == links,
            "links changed: {links:?} -> {:?}",
            connections(&mesh.hub)?
        );
        mesh.edge.wait_for_ping("runner")?;

        // Once the port is free, the same file reloads, and only the listener is new.
        drop(taken);
        mesh.hub
            .set_config(mesh.base.clone().tcp_listener(taken_port))?;
        reload_ok(&mesh.hub)?;
        ensure!(
            mesh.hub
                .log()
                .contains("configuration reloaded: 3 backends kept, 0 stopped, 1 started"),
            "hub's log does not report the listener alone as started"
        );
        ensure!(
            mesh.sessions() == before,
            "sessions re-established: {before:?} -> {:?}",
            mesh.sessions()
        );
        Ok(())
    }

    /// A changed listener whose new port is taken: the old one has already stopped
    /// when the new one fails, so the old one is started again and listens as before.
    #[test]
    fn failed_replacement_restarts_the_old_backend() -> Result<()> {
        let port = free_port()?;
        let taken = TcpListener::bind(("127.0.0.1", free_port()?))?;
        let taken_port = taken.local_addr()?.port();
        let mut solo = NodeProcess::start(Rust, NodeConfig::new("solo").tcp_listener(port))?;
        solo.set_config(NodeConfig::new("solo").tcp_listener(taken_port))?;
        let reply = reload_raw(&solo)?;
        ensure!(
            reply["Success"] == json!(false)
                && reply["Error"].as_str().is_some_and(|e| {
                    e.contains(&format!("cannot listen on 127.0.0.1:{taken_port}"))
                        && e.ends_with("ERRORCODE 4")
                }),
            "reload onto a taken port: {reply}"
        );
        std::net::TcpStream::connect(("127.0.0.1", port))
            .context("the old listener does not listen again")?;
        let listening = format!("listening on 127.0.0.1:{port}");
        let starts = solo.log().matches(&listening).count();
        ensure!(
            starts == 2,
            "{listening:?} logged {starts} times, not at start and after the failed reload"
        );
        ensure!(solo.is_running(), "solo exited");
        Ok(())
    }
}
