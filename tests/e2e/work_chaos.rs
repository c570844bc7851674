//! Scenario: remote work survives `kill -9`. A line `foo – relay – bar`: `foo` (Rust) submits
//! remote units for `bar`, which runs them through `relay`. Units carry multi-megabyte payloads
//! (`cat`) or produce multi-megabyte results (`gen`), and a `work results` follower on `foo`
//! reads each `gen` unit as it runs. Meanwhile, at seeded random moments (the seed is printed;
//! `CHAOS_SEED=<n>` replays one), one of the three nodes is killed with SIGKILL (its own
//! process only, as `kill -9` does: the work processes it started live on) and started again
//! with the same config and data folder. Then:
//!
//! * every unit `foo` accepted ends Succeeded, with results on `foo` byte-identical (SHA-256)
//!   to what the command wrote on `bar` (and, for `cat`, to the payload), or Failed/Canceled
//!   with a reason; a unit ends Succeeded unless `bar` was killed while it lived;
//! * every follower got every byte exactly once: after `foo` is killed it asks again from the
//!   offset it had reached;
//! * no work process outlives its unit.
//!
//! Two variants: a Go relay with a Rust executor, and a Rust relay with a Go executor. Each is
//! bounded in units, kills and time.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context, Result};
use receptor_tests::wait::wait_until;
use receptor_tests::Implementation::{self, Go, Rust};
use receptor_tests::{NodeConfig, NodeProcess};
use ring::digest::{Context as Digest, SHA256};
use serde_json::{json, Value};

/// Units submitted per run with a Rust executor; a Go executor, slower to restart and to
/// move results, gets fewer so that each variant stays well under a minute.
const UNITS: usize = 12;
const UNITS_GO_EXECUTOR: usize = 8;

/// Nodes killed per run (with a Go executor: fewer, see [`UNITS`]).
const KILLS: usize = 6;
const KILLS_GO_EXECUTOR: usize = 4;

/// Size of a `cat` unit's payload.
const PAYLOAD: usize = 2_000_000;

/// What a `gen` unit writes: 15 blocks of 200,000 random bytes over about 0.75 s.
const GEN: &str = "-c \"for i in $(seq 1 15); do head -c 200000 /dev/urandom; sleep 0.05; done\"";
const GEN_SIZE: u64 = 3_000_000;

/// How long every accepted unit gets, after the last kill, to end on `foo`.
const SETTLE: Duration = Duration::from_secs(90);

/// How long a client waits for a node that is being restarted.
const NODE_DOWN: Duration = Duration::from_secs(30);

/// The nodes, by position.
const NAMES: [&str; 3] = ["foo", "relay", "bar"];
const FOO: usize = 0;
const BAR: usize = 2;

/// SplitMix64: a small seeded generator for the chaos schedule and the payloads.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

fn seed() -> u64 {
    std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

fn sha256(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn file_sha256(path: &Path) -> Result<(u64, String)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut digest = Digest::new(&SHA256);
    let mut buf = vec![0; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, hex(digest.finish().as_ref())))
}

/// A control connection to the node at `socket`, waiting while it is down (restarting).
fn connect(socket: &Path) -> Result<(BufReader<UnixStream>, UnixStream)> {
    wait_until(
        NODE_DOWN,
        &format!("{} to answer", socket.display()),
        || {
            let Ok(stream) = UnixStream::connect(socket) else {
                return Ok(None);
            };
            stream.set_read_timeout(Some(NODE_DOWN))?;
            let writer = stream.try_clone()?;
            let mut reader = BufReader::new(stream);
            let mut greeting = String::new();
            reader.read_line(&mut greeting)?;
            if !greeting.starts_with("Receptor Control, node ") {
                return Ok(None);
            }
            Ok(Some((reader, writer)))
        },
    )
}

/// One command, one reply line (`None`: the node went away before answering).
fn ask(socket: &Path, line: &str) -> Result<Option<String>> {
    let (mut reader, mut writer) = connect(socket)?;
    writer.write_all(format!("{line}\n").as_bytes())?;
    let mut reply = String::new();
    match reader.read_line(&mut reply) {
        Ok(n) if n > 0 && reply.ends_with('\n') => Ok(Some(reply.trim_end().to_owned())),
        _ => Ok(None),
    }
}

/// `work status <id>` on the node at `socket`, waiting while it is down.
fn unit_status(socket: &Path, id: &str) -> Result<Value> {
    wait_until(NODE_DOWN, &format!("status of {id}"), || {
        match ask(socket, &format!("work status {id}"))? {
            Some(line) => Ok(Some(
                serde_json::from_str(&line).with_context(|| format!("{line:?}"))?,
            )),
            None => Ok(None),
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// `cat` of a payload.
    Cat,
    /// `gen`: results from `/dev/urandom`, followed by a `work results` client.
    Gen,
}

/// A unit as the test saw it.
#[derive(Debug)]
struct Submitted {
    id: String,
    kind: Kind,
    /// SHA-256 of the payload (`cat`).
    payload: Option<String>,
    /// When the submission began.
    at: Instant,
    /// Whether `foo` accepted it (`Job Started` / `Job Submitted`).
    accepted: bool,
    /// The reply, or why there was none.
    reply: String,
    /// What the follower read (`gen`): length and SHA-256, or its error.
    followed: Option<thread::JoinHandle<Result<(u64, String)>>>,
}

/// Submits one unit to `foo`; `Ok(None)` if `foo` went away before creating it.
fn submit(socket: &Path, kind: Kind, payload: &[u8]) -> Result<Option<Submitted>> {
    let at = Instant::now();
    let (mut reader, mut writer) = connect(socket)?;
    let worktype = match kind {
        Kind::Cat => "cat",
        Kind::Gen => "gen",
    };
    writer.write_all(format!("work submit bar {worktype}\n").as_bytes())?;
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || !line.ends_with('\n') {
        return Ok(None);
    }
    let id = line
        .strip_prefix("Work unit created with ID ")
        .and_then(|r| r.strip_suffix(". Send stdin data and EOF.\n"))
        .ok_or_else(|| anyhow!("submit refused: {line:?}"))?
        .to_owned();
    let sent = writer
        .write_all(payload)
        .and_then(|()| writer.shutdown(Shutdown::Write));
    line.clear();
    let reply = match (sent, reader.read_line(&mut line)) {
        (Ok(()), Ok(n)) if n > 0 => line.trim_end().to_owned(),
        (sent, read) => format!("no reply: {sent:?} / {read:?}"),
    };
    let accepted = reply.contains(r#""result":"Job Started""#)
        || reply.contains(r#""result":"Job Submitted""#);
    Ok(Some(Submitted {
        id,
        kind,
        payload: (kind == Kind::Cat).then(|| sha256(payload)),
        at,
        accepted,
        reply,
        followed: None,
    }))
}

/// Reads `work results <id>` from `foo` until the unit is final and every byte is here;
/// after a broken connection (foo killed) it asks again from the offset it reached.
fn follow(socket: PathBuf, id: String) -> Result<(u64, String)> {
    let deadline = Instant::now() + SETTLE * 2;
    let mut digest = Digest::new(&SHA256);
    let mut got = 0u64;
    let mut buf = vec![0; 256 * 1024];
    loop {
        ensure!(
            Instant::now() < deadline,
            "follower of {id} timed out at {got} bytes"
        );
        let (mut reader, mut writer) = connect(&socket)?;
        writer.write_all(format!("work results {id} {got}\n").as_bytes())?;
        let mut header = String::new();
        if reader.read_line(&mut header).is_ok()
            && header == format!("Streaming results for work unit {id}\n")
        {
            let _ = writer.shutdown(Shutdown::Write);
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        digest.update(&buf[..n]);
                        got += n as u64;
                    }
                }
            }
        }
        // The stream ended: complete, or foo went away. Its status tells.
        let status = unit_status(&socket, &id)?;
        let state = status["State"].as_i64().unwrap_or(-1);
        let size = status["StdoutSize"].as_u64().unwrap_or(0);
        if state >= 2 && got >= size {
            ensure!(
                got == size,
                "{id}: follower read {got} bytes, unit has {size}"
            );
            return Ok((got, hex(digest.finish().as_ref())));
        }
    }
}

/// Processes whose working folder or command line is inside one of `dirs`, other than the
/// nodes themselves: work processes.
fn work_processes(dirs: &[PathBuf], nodes: &[u32]) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if nodes.contains(&pid) || pid == std::process::id() {
            continue;
        }
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        // A live node's command spawner is the node's helper, not a work process; one
        // whose node is gone (reparented) is a stray like any other.
        if cmdline.contains("__receptor-spawner")
            && receptor_tests::node::parent_of(pid).is_some_and(|parent| nodes.contains(&parent))
        {
            continue;
        }
        if dirs
            .iter()
            .any(|d| cwd.starts_with(d) || cmdline.contains(&*d.to_string_lossy()))
        {
            found.push((pid, format!("{} ({})", cmdline.trim(), cwd.display())));
        }
    }
    found
}

fn kill_pids(pids: &[(u32, String)]) {
    for (pid, _) in pids {
        if let Ok(pid) = libc::pid_t::try_from(*pid) {
            // SAFETY: kill(2) touches no memory of ours; the pid was found just now as a work
            // process running inside this test's own folders.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

fn start_line(relay: Implementation, executor: Implementation) -> Result<Vec<NodeProcess>> {
    let nodes = [(NAMES[0], Rust), (NAMES[1], relay), (NAMES[2], executor)];
    receptor_tests::topology::start_line_with(&nodes, &[1.0, 1.0], |i, config: NodeConfig| {
        if i != BAR {
            return config;
        }
        config
            .entry("work-command", json!({"worktype": "cat", "command": "cat"}))
            .entry(
                "work-command",
                json!({"worktype": "gen", "command": "bash", "params": GEN}),
            )
    })
}

fn chaos(relay: Implementation, executor: Implementation) -> Result<()> {
    let seed = seed();
    println!(
        "work chaos: relay {}, executor {}, seed {seed} (CHAOS_SEED={seed} replays it)",
        relay.label(),
        executor.label()
    );
    let mut rng = Rng(seed);
    let mut nodes = start_line(relay, executor)?;
    nodes[FOO].wait_for_routes(&[("bar", "relay"), ("relay", "relay")])?;
    nodes[BAR].wait_for_routes(&[("foo", "relay"), ("relay", "relay")])?;
    let foo_socket = nodes[FOO].socket();
    let bar_socket = nodes[BAR].socket();
    let started = Instant::now();

    // The chaos schedule, fixed by the seed: which node dies when.
    let kills = match executor {
        Rust => KILLS,
        Go => KILLS_GO_EXECUTOR,
    };
    let mut schedule: Vec<(Duration, usize)> = (0..kills)
        .map(|_| {
            (
                Duration::from_millis(300 + rng.below(1700)),
                rng.below(3) as usize,
            )
        })
        .collect();
    let units = match executor {
        Rust => UNITS,
        Go => UNITS_GO_EXECUTOR,
    };
    let payload_seeds: Vec<u64> = (0..units).map(|_| rng.next()).collect();

    // The workload: units one after another, each `gen` with its follower.
    let submitted: Arc<Mutex<Vec<Submitted>>> = Arc::new(Mutex::new(Vec::new()));
    let workload = {
        let submitted = submitted.clone();
        let socket = foo_socket.clone();
        thread::spawn(move || -> Result<()> {
            for (i, seed) in payload_seeds.into_iter().enumerate() {
                let kind = if i % 2 == 0 { Kind::Cat } else { Kind::Gen };
                let payload = match kind {
                    Kind::Cat => Rng(seed).bytes(PAYLOAD),
                    Kind::Gen => Vec::new(),
                };
                let Some(mut unit) = submit(&socket, kind, &payload)? else {
                    continue;
                };
                if kind == Kind::Gen && unit.accepted {
                    let (socket, id) = (socket.clone(), unit.id.clone());
                    unit.followed = Some(thread::spawn(move || follow(socket, id)));
                }
                submitted
                    .lock()
                    .map_err(|_| anyhow!("poisoned"))?
                    .push(unit);
            }
            Ok(())
        })
    };

    // The killer.
    let mut bar_kills: Vec<Instant> = Vec::new();
    let mut log = Vec::new();
    for (delay, victim) in schedule.drain(..) {
        // The chaos itself: the seeded pause sets the moment of the kill.
        thread::sleep(delay);
        nodes[victim].crash();
        if victim == BAR {
            bar_kills.push(Instant::now());
        }
        log.push(format!(
            "{:>6} ms: killed {}",
            started.elapsed().as_millis(),
            NAMES[victim]
        ));
        nodes[victim].restart()?;
    }
    workload
        .join()
        .map_err(|_| anyhow!("the workload panicked"))??;
    for line in &log {
        println!("{line}");
    }

    // Every accepted unit ends; its results are what the command wrote.
    let mut units_done = std::mem::take(&mut *submitted.lock().map_err(|_| anyhow!("poisoned"))?);
    let mut outcomes = BTreeMap::new();
    for unit in &mut units_done {
        if !unit.accepted
            && ask(&foo_socket, &format!("work status {}", unit.id))?
                .is_some_and(|reply| reply.starts_with("ERROR"))
        {
            // Never accepted, and gone.
            continue;
        }
        let status = wait_until(SETTLE, &format!("unit {} to end", unit.id), || {
            let s = unit_status(&foo_socket, &unit.id)?;
            Ok((s["State"].as_i64().unwrap_or(0) >= 2).then_some(s))
        });
        let status = match (unit.accepted, status) {
            (_, Ok(s)) => s,
            (true, Err(e)) => bail!("accepted unit {} never ended: {e:#}", unit.id),
            (false, Err(_)) => continue,
        };
        let state = status["State"].as_i64().unwrap_or(-1);
        let detail = status["Detail"].as_str().unwrap_or_default().to_owned();
        *outcomes.entry(state).or_insert(0) += 1;
        println!(
            "{} {:?} accepted={} state={state} {detail:?} ({})",
            unit.id, unit.kind, unit.accepted, unit.reply
        );
        if !unit.accepted {
            continue;
        }
        let bar_was_killed = bar_kills.iter().any(|&k| k >= unit.at);
        if state != 2 {
            ensure!(
                !detail.is_empty(),
                "unit {} ended {state} with no reason",
                unit.id
            );
            ensure!(
                bar_was_killed,
                "unit {} ended {state} ({detail:?}) though bar was not killed while it lived",
                unit.id
            );
            continue;
        }
        let local = file_sha256(
            &nodes[FOO]
                .datadir()
                .join("foo")
                .join(&unit.id)
                .join("stdout"),
        )?;
        let remote = file_sha256(
            &nodes[BAR]
                .datadir()
                .join("bar")
                .join(&unit.id)
                .join("stdout"),
        )?;
        ensure!(
            local == remote,
            "unit {}: results on foo {local:?}, on bar {remote:?}",
            unit.id
        );
        ensure!(
            status["StdoutSize"].as_u64() == Some(local.0),
            "unit {}: StdoutSize {} but {} bytes",
            unit.id,
            status["StdoutSize"],
            local.0
        );
        match unit.kind {
            Kind::Cat => ensure!(
                Some(&local.1) == unit.payload.as_ref() && local.0 == PAYLOAD as u64,
                "unit {}: results differ from the payload",
                unit.id
            ),
            Kind::Gen => ensure!(local.0 == GEN_SIZE, "unit {}: {} bytes", unit.id, local.0),
        }
        if let Some(follower) = unit.followed.take() {
            let followed = follower
                .join()
                .map_err(|_| anyhow!("follower panicked"))??;
            ensure!(
                followed == local,
                "unit {}: the follower read {followed:?}, the results are {local:?}",
                unit.id
            );
        }
    }
    println!(
        "{} units, outcomes by state {outcomes:?}, {:.1} s",
        units_done.len(),
        started.elapsed().as_secs_f64()
    );
    ensure!(
        units_done.iter().filter(|u| u.accepted).count() >= units / 2,
        "too few units were accepted to prove anything"
    );

    // No work process outlives its unit.
    let dirs: Vec<PathBuf> = nodes.iter().map(|n| n.dir().to_path_buf()).collect();
    let pids: Vec<u32> = nodes.iter().filter_map(NodeProcess::pid).collect();
    let stray = wait_until(Duration::from_secs(10), "work processes to end", || {
        let found = work_processes(&dirs, &pids);
        Ok(found.is_empty().then_some(()))
    });
    if stray.is_err() {
        let found = work_processes(&dirs, &pids);
        kill_pids(&found);
        bail!("work processes outlived their units: {found:?}");
    }
    ensure_ok_after(&nodes[BAR], &bar_socket)
}

/// The executor still answers after the chaos.
fn ensure_ok_after(node: &NodeProcess, socket: &Path) -> Result<()> {
    let reply =
        ask(socket, "status")?.ok_or_else(|| anyhow!("{} did not answer status", node.id()))?;
    ensure!(reply.contains("NodeID"), "{reply}");
    Ok(())
}

mod rust_nodes {
    use super::*;

    #[test]
    fn kill_9_go_relay_rust_executor() -> Result<()> {
        chaos(Go, Rust)
    }

    #[test]
    fn kill_9_rust_relay_go_executor() -> Result<()> {
        chaos(Rust, Go)
    }
}
