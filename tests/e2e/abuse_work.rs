//! Scenario: work streaming abused by clients: a `work submit` whose payload never ends
//! (or stops half-way), `work results` readers that never read, and a unit writing its
//! results faster than any reader, locally and followed through the mesh. Our node keeps
//! its memory within [`PAYLOAD_BOUND`] / [`RESULTS_BOUND`] of where it started, refuses
//! a payload beyond `control-limits` with an error line (the unit failed with the
//! reason), loses none of a unit's results, and answers `status` and a `ping` within
//! 1 s all the while.
//!
//! The same abuse is run against Go receptor 1.6.9; its figures are printed
//! (`--no-capture`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use receptor_tests::control::GREETING_PREFIX;
use receptor_tests::Implementation::{Go, Rust};
use receptor_tests::{free_port, NodeConfig, NodeProcess};
use serde_json::{json, Value};

use super::abuse_control::{rss, served, target_and_peer, PeakRss};

/// How far our node's memory may grow while a payload streams in.
const PAYLOAD_BOUND: u64 = 24 * 1024 * 1024;

/// `maxpayload` of the node under the never-ending payload.
const MAX_PAYLOAD: u64 = 256 * 1024 * 1024;

/// What is sent to Go receptor, which has no limit, before the client stops.
const GO_PAYLOAD: u64 = 1024 * 1024 * 1024;

/// Output of the unit that writes faster than anyone reads.
const RESULTS: u64 = 256 * 1024 * 1024;

/// Output of the remote unit followed through the mesh.
const REMOTE_RESULTS: u64 = 64 * 1024 * 1024;

/// `work results` readers that read the header and nothing else.
const STALLED_READERS: usize = 20;

/// How far our node's memory may grow with [`STALLED_READERS`] stalled readers while a
/// unit writes [`RESULTS`] bytes.
const RESULTS_BOUND: u64 = 32 * 1024 * 1024;

/// How long the abuse may take.
const WITHIN: Duration = Duration::from_secs(40);

/// Sends zeros in 1 MiB writes on its own thread until `limit` bytes went out (then
/// half-closes) or a write fails; returns the bytes written.
fn pour(mut conn: UnixStream, limit: Option<u64>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let block = vec![0u8; 1024 * 1024];
        let mut sent = 0u64;
        while limit.is_none_or(|l| sent < l) {
            if conn.write_all(&block).is_err() {
                return sent;
            }
            sent += block.len() as u64;
        }
        let _ = conn.shutdown(Shutdown::Write);
        sent
    })
}

/// A raw control connection: the stream and a reader over a clone of it, greeting read.
fn raw_connection(node: &NodeProcess) -> Result<(UnixStream, BufReader<UnixStream>)> {
    let conn = UnixStream::connect(node.socket())?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    ensure!(read_line(&mut reader)?.starts_with(GREETING_PREFIX));
    Ok((conn, reader))
}

fn read_line(reader: &mut impl BufRead) -> Result<String> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    Ok(line)
}

/// Starts `work submit localhost <work_type>` on a raw connection; returns the unit ID
/// and the connection, the payload still to send.
fn start_submit(
    node: &NodeProcess,
    work_type: &str,
) -> Result<(String, UnixStream, BufReader<UnixStream>)> {
    let (mut conn, mut reader) = raw_connection(node)?;
    conn.write_all(format!("work submit localhost {work_type}\n").as_bytes())?;
    let created = read_line(&mut reader)?;
    let id = created
        .strip_prefix("Work unit created with ID ")
        .and_then(|r| r.split('.').next())
        .ok_or_else(|| anyhow!("submit: {created:?}"))?
        .to_owned();
    Ok((id, conn, reader))
}

/// `work status` of a unit.
fn unit_status(node: &NodeProcess, id: &str) -> Result<Value> {
    node.command_json(&format!("work status {id}"))
}

/// Runs `served` every 200 ms until `done` says so, failing if it takes longer than
/// [`WITHIN`]; returns the slowest answer.
fn serve_while(node: &NodeProcess, mut done: impl FnMut() -> Result<bool>) -> Result<Duration> {
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    loop {
        let (s, p) = served(node, "peer")?;
        slowest = slowest.max(s).max(p);
        if done()? {
            return Ok(slowest);
        }
        ensure!(
            started.elapsed() < WITHIN,
            "abuse still running after {WITHIN:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Opens [`STALLED_READERS`] `work results` readers of `id` that read the header line and
/// then nothing.
fn stalled_readers(node: &NodeProcess, id: &str) -> Result<Vec<UnixStream>> {
    (0..STALLED_READERS)
        .map(|_| {
            let (mut conn, mut reader) = raw_connection(node)?;
            conn.write_all(format!("work results {id}\n").as_bytes())?;
            let header = read_line(&mut reader)?;
            ensure!(
                header == format!("Streaming results for work unit {id}\n"),
                "{header:?}"
            );
            Ok(conn)
        })
        .collect()
}

/// Reads all of `id`'s results and checks there are `size` zero bytes.
fn read_all_results(node: &NodeProcess, id: &str, size: u64) -> Result<()> {
    let (mut conn, mut reader) = raw_connection(node)?;
    conn.write_all(format!("work results {id}\n").as_bytes())?;
    let _header = read_line(&mut reader)?;
    conn.shutdown(Shutdown::Write)?;
    let mut got = 0u64;
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ensure!(
            buf[..n].iter().all(|&b| b == 0),
            "results are not all zeros"
        );
        got += n as u64;
    }
    ensure!(got == size, "read {got} bytes of results, expected {size}");
    Ok(())
}

/// Waits for unit `id` on `node` to succeed with `size` bytes of output, answering
/// `status` and `ping` meanwhile; returns the slowest answer.
fn wait_succeeded(node: &NodeProcess, id: &str, size: u64) -> Result<Duration> {
    let mut last = Value::Null;
    serve_while(node, || {
        let s = unit_status(node, id)?;
        ensure!(s["State"] != json!(3), "unit failed: {s}");
        let done = s["State"] == json!(2) && s["StdoutSize"] == json!(size);
        last = s;
        Ok(done)
    })
    .with_context(|| format!("unit {id} last seen as {last}"))
}

/// A node with the `flood` work type (writes [`RESULTS`] zero bytes) and `cat`.
fn flood_types(config: NodeConfig) -> NodeConfig {
    config
        .work_command("cat", "cat", None)
        .work_command("flood", "head", Some(&format!("-c {RESULTS} /dev/zero")))
        .work_command(
            "flood64",
            "head",
            Some(&format!("-c {REMOTE_RESULTS} /dev/zero")),
        )
}

/// Stalled readers of a local `flood` unit on `node`: the peak RSS growth and the
/// slowest `status`/`ping` answer while the unit wrote its output.
fn stalled_readers_of_local_unit(node: &NodeProcess) -> Result<(u64, Duration)> {
    let pid = node.pid().ok_or_else(|| anyhow!("target is not running"))?;
    let before = rss(pid)?;
    let peak = PeakRss::start(pid);
    let (id, conn, mut reader) = start_submit(node, "flood")?;
    conn.shutdown(Shutdown::Write)?;
    let started = read_line(&mut reader)?;
    ensure!(started.contains("Job Started"), "{started:?}");
    let readers = stalled_readers(node, &id)?;
    let slowest = wait_succeeded(node, &id, RESULTS)?;
    let grown = peak.finish().saturating_sub(before);
    drop(readers);
    read_all_results(node, &id, RESULTS)?;
    Ok((grown, slowest))
}

mod rust_nodes {
    use super::*;

    #[test]
    fn never_ending_and_stalled_payloads_are_refused() -> Result<()> {
        let limits = json!({"maxpayload": MAX_PAYLOAD, "payloadidletimeout": "2s"});
        let (node, peer) = target_and_peer(Rust, Some(limits), flood_types)?;
        let pid = node.pid().ok_or_else(|| anyhow!("target is not running"))?;
        let before = rss(pid)?;
        let peak = PeakRss::start(pid);

        // A payload that never ends.
        let (endless, conn, mut endless_reader) = start_submit(&node, "cat")?;
        let poured = pour(conn, None);
        // A payload that stops after 1 KiB.
        let (stalled, mut conn, mut stalled_reader) = start_submit(&node, "cat")?;
        conn.write_all(&[7u8; 1024])?;
        let slowest = serve_while(&node, || Ok(poured.is_finished()))?;
        let sent = poured
            .join()
            .map_err(|_| anyhow!("the pouring thread panicked"))?;
        let grown = peak.finish().saturating_sub(before);

        let refusal = read_line(&mut endless_reader)?;
        ensure!(
            refusal
                == format!(
                    "ERROR: payload larger than {MAX_PAYLOAD} bytes (control-limits maxpayload)\n"
                ),
            "endless payload: {refusal:?}"
        );
        let stall = read_line(&mut stalled_reader)?;
        ensure!(
            stall == "ERROR: no payload data for 2s (control-limits payloadidletimeout)\n",
            "stalled payload: {stall:?}"
        );
        for (id, reason) in [
            (&endless, "payload larger than"),
            (&stalled, "no payload data"),
        ] {
            let s = unit_status(&node, id)?;
            ensure!(
                s["State"] == json!(3)
                    && s["Detail"].as_str().is_some_and(|d| d
                        .starts_with("Error reading input data: ")
                        && d.contains(reason)),
                "unit {id}: {s}"
            );
        }
        eprintln!(
            "never-ending payload against maxpayload {MAX_PAYLOAD}: refused after the client \
             sent {} MiB; RSS grew by at most {} KiB (bound {} KiB); slowest status/ping \
             meanwhile {slowest:?}",
            sent >> 20,
            grown / 1024,
            PAYLOAD_BOUND / 1024
        );
        ensure!(grown <= PAYLOAD_BOUND, "RSS grew by {grown} bytes");
        // A well-behaved submit still works and gets its payload whole.
        let mut c = node.control()?;
        c.send_line("work submit localhost cat")?;
        ensure!(c.read_line()?.starts_with("Work unit created"));
        c.send_raw(b"hello")?;
        c.shutdown_write()?;
        ensure!(c.read_line()?.contains("Job Started"));
        drop(peer);
        Ok(())
    }

    #[test]
    fn stalled_results_readers_and_a_fast_unit_keep_memory_bounded() -> Result<()> {
        let (node, peer) = target_and_peer(Rust, None, flood_types)?;
        let (grown, slowest) = stalled_readers_of_local_unit(&node)?;
        eprintln!(
            "{STALLED_READERS} stalled results readers of a unit writing {} MiB: RSS grew by \
             at most {} KiB (bound {} KiB); slowest status/ping meanwhile {slowest:?}; a \
             reader then got every byte",
            RESULTS >> 20,
            grown / 1024,
            RESULTS_BOUND / 1024
        );
        ensure!(grown <= RESULTS_BOUND, "RSS grew by {grown} bytes");
        drop(peer);
        Ok(())
    }

    #[test]
    fn stalled_readers_of_a_remote_unit_keep_memory_bounded() -> Result<()> {
        let port = free_port()?;
        let node = NodeProcess::start(Rust, NodeConfig::new("target").tcp_listener(port))?;
        let _peer = NodeProcess::start(Rust, flood_types(NodeConfig::new("peer").tcp_peer(port)))?;
        node.wait_for_ping("peer")?;
        let pid = node.pid().ok_or_else(|| anyhow!("target is not running"))?;
        let before = rss(pid)?;
        let peak = PeakRss::start(pid);
        let mut c = node.control()?;
        c.send_line("work submit peer flood64")?;
        let created = c.read_line()?;
        let id = created
            .strip_prefix("Work unit created with ID ")
            .and_then(|r| r.split('.').next())
            .ok_or_else(|| anyhow!("submit: {created:?}"))?
            .to_owned();
        c.shutdown_write()?;
        let reply = c.read_line()?;
        ensure!(reply.contains("unitid"), "{reply:?}");
        let readers = stalled_readers(&node, &id)?;
        let slowest = wait_succeeded(&node, &id, REMOTE_RESULTS)?;
        let grown = peak.finish().saturating_sub(before);
        drop(readers);
        read_all_results(&node, &id, REMOTE_RESULTS)?;
        eprintln!(
            "{STALLED_READERS} stalled results readers of a remote unit writing {} MiB on \
             its peer: RSS grew by at most {} KiB (bound {} KiB); slowest status/ping \
             meanwhile {slowest:?}",
            REMOTE_RESULTS >> 20,
            grown / 1024,
            RESULTS_BOUND / 1024
        );
        ensure!(grown <= RESULTS_BOUND, "RSS grew by {grown} bytes");
        Ok(())
    }
}

mod go_reference {
    use super::*;

    /// Go receptor 1.6.9 takes a payload of any size; this records its memory while
    /// it takes [`GO_PAYLOAD`] bytes.
    #[test]
    fn go_takes_a_gigabyte_payload() -> Result<()> {
        let (node, peer) = target_and_peer(Go, None, flood_types)?;
        let pid = node.pid().ok_or_else(|| anyhow!("target is not running"))?;
        let before = rss(pid)?;
        let peak = PeakRss::start(pid);
        let (id, conn, mut reader) = start_submit(&node, "cat")?;
        let poured = pour(conn, Some(GO_PAYLOAD));
        let slowest = serve_while(&node, || Ok(poured.is_finished()))?;
        let sent = poured
            .join()
            .map_err(|_| anyhow!("the pouring thread panicked"))?;
        let reply = read_line(&mut reader)?;
        let grown = peak.finish().saturating_sub(before);
        eprintln!(
            "Go 1.6.9, a {} MiB payload: took {} MiB, replied {:?}; RSS grew by at most {} \
             KiB; slowest status/ping meanwhile {slowest:?}",
            GO_PAYLOAD >> 20,
            sent >> 20,
            reply.trim_end(),
            grown / 1024
        );
        ensure!(sent == GO_PAYLOAD && reply.contains(&id), "{reply:?}");
        drop(peer);
        Ok(())
    }

    /// Go receptor 1.6.9 with stalled results readers of a unit writing fast: records
    /// how far the unit's output got and the node's memory in a fixed window (Go's
    /// `work-command` passes output on at about 1 MiB/s, readers or not, so the unit
    /// would not finish in a test's time).
    #[test]
    fn go_with_stalled_results_readers() -> Result<()> {
        const WINDOW: Duration = Duration::from_secs(10);
        let (node, peer) = target_and_peer(Go, None, flood_types)?;
        let pid = node.pid().ok_or_else(|| anyhow!("target is not running"))?;
        let before = rss(pid)?;
        let peak = PeakRss::start(pid);
        let (id, conn, mut reader) = start_submit(&node, "flood")?;
        conn.shutdown(Shutdown::Write)?;
        let started = read_line(&mut reader)?;
        ensure!(started.contains("Job Started"), "{started:?}");
        let readers = stalled_readers(&node, &id)?;
        let window = Instant::now();
        let slowest = serve_while(&node, || Ok(window.elapsed() >= WINDOW))?;
        let during = unit_status(&node, &id)?;
        let grown = peak.finish().saturating_sub(before);
        drop(readers);
        eprintln!(
            "Go 1.6.9, {STALLED_READERS} stalled results readers of a unit writing {} MiB: \
             after {WINDOW:?} the unit was {} with {} MiB written; RSS grew by at most {} \
             KiB; slowest status/ping meanwhile {slowest:?}",
            RESULTS >> 20,
            during["StateName"],
            during["StdoutSize"].as_u64().unwrap_or(0) >> 20,
            grown / 1024
        );
        let _ = node.command_json(&format!("work release {id}"));
        drop(peer);
        Ok(())
    }
}
