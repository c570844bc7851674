//! Scenario: a node's control socket abused by its clients: thousands of idle
//! connections (half of them stalled after the first byte of a command), clients that
//! trickle a command one byte a second, over-long lines, clients that never send a
//! command. With `control-limits` set, connections beyond `maxconnections` are refused
//! with an error line, trickled lines and idle clients are closed with an error line,
//! and all the while clients already connected (and, once the abusers are gone, new
//! ones) get `status` and a `ping` to the node's peer answered within 1 s, and the
//! node's memory grows by at most [`PER_CONNECTION`] per held connection.
//!
//! The same abuse is run against Go receptor 1.6.9, which has no such limits; its
//! figures are printed (`--no-capture`) and its behaviour asserted as observed.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use receptor_tests::control::{ControlClient, GREETING_PREFIX};
use receptor_tests::wait::{wait_until, CONVERGE_TIMEOUT};
use receptor_tests::Implementation::{self, Go, Rust};
use receptor_tests::{free_port, NodeConfig, NodeProcess};
use serde_json::{json, Value};

/// Idle control connections opened against our node.
const IDLE: usize = 2000;

/// `maxconnections` of the node under the connection flood.
const MAX_CONNECTIONS: usize = 1000;

/// Idle control connections opened against Go receptor, which accepts them all.
const GO_IDLE: usize = 10_000;

/// The promised bound on resident memory per held control connection.
const PER_CONNECTION: u64 = 32 * 1024;

/// Other clients get their answer within this.
pub(crate) const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// VmRSS of process `pid`, in bytes.
pub(crate) fn rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kb * 1024)
}

/// The highest VmRSS of a process seen while the sampler ran (sampled every 10 ms).
pub(crate) struct PeakRss {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl PeakRss {
    /// Starts sampling `pid`.
    pub(crate) fn start(pid: u32) -> PeakRss {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss(pid).unwrap_or(0)));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(now) = rss(pid) {
                        peak.fetch_max(now, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        PeakRss {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// The peak so far.
    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Stops sampling; returns the peak.
    pub(crate) fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak()
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Descriptors process `pid` has open.
fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Raises this process's soft limit of open files to at least `want` (up to the hard
/// limit); fails if the hard limit is lower.
pub(crate) fn ensure_fd_limit(want: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit");
    }
    if lim.rlim_cur >= want {
        return Ok(());
    }
    ensure!(
        lim.rlim_max >= want,
        "the hard limit of open files ({}) is below the {want} this test needs",
        lim.rlim_max
    );
    lim.rlim_cur = want;
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit");
    }
    Ok(())
}

/// `status` and a ping to `peer` over `client`, each answered within [`ANSWER_WITHIN`].
pub(crate) fn served_by(
    client: &mut ControlClient,
    node_id: &str,
    peer: &str,
) -> Result<(Duration, Duration)> {
    let started = Instant::now();
    let status = client.command_json("status")?;
    let status_took = started.elapsed();
    ensure!(status["NodeID"] == node_id, "status: {status}");
    let started = Instant::now();
    let ping = client.command_json(&format!("ping {peer}"))?;
    let ping_took = started.elapsed();
    ensure!(ping["Success"] == json!(true), "ping: {ping}");
    ensure!(
        status_took <= ANSWER_WITHIN && ping_took <= ANSWER_WITHIN,
        "status took {status_took:?}, ping {ping_took:?}"
    );
    Ok((status_took, ping_took))
}

/// [`served_by`] over a fresh connection.
pub(crate) fn served(node: &NodeProcess, peer: &str) -> Result<(Duration, Duration)> {
    served_by(&mut node.control()?, node.id(), peer)
}

/// A node `target` (with the extra `control-limits` entry for our implementation) and a
/// peer it can ping.
pub(crate) fn target_and_peer(
    implementation: Implementation,
    limits: Option<Value>,
    extra: impl FnOnce(NodeConfig) -> NodeConfig,
) -> Result<(NodeProcess, NodeProcess)> {
    let port = free_port()?;
    let mut config = extra(NodeConfig::new("target").tcp_listener(port));
    if let Some(limits) = limits {
        config = config.entry("control-limits", limits);
    }
    let node = NodeProcess::start(implementation, config)?;
    let peer = NodeProcess::start(Rust, NodeConfig::new("peer").tcp_peer(port))?;
    node.wait_for_ping("peer")?;
    Ok((node, peer))
}

/// The first line a fresh connection gets, read within 5 s.
fn first_line(conn: &UnixStream) -> Result<String> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line)?;
    Ok(line)
}

/// Reads until the node closes `conn` (within 10 s); returns what came.
fn until_closed(conn: &mut UnixStream) -> Result<String> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut out = Vec::new();
    conn.read_to_end(&mut out)
        .context("waiting for the node to close the connection")?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

mod rust_nodes {
    use super::*;

    #[test]
    fn connections_beyond_the_limit_are_refused_others_keep_being_served() -> Result<()> {
        ensure_fd_limit(IDLE as u64 + 256)?;
        let limits = json!({ "maxconnections": MAX_CONNECTIONS });
        let (node, peer) = target_and_peer(Rust, Some(limits), |c| c)?;
        let pid = node.pid().ok_or_else(|| anyhow!("target is not running"))?;
        // A client connected before the flood holds one of the slots.
        let mut kept = node.control()?;
        served_by(&mut kept, "target", "peer")?;
        let before = rss(pid)?;

        let mut held = Vec::new();
        let mut refused = 0;
        for i in 0..IDLE {
            let mut conn = UnixStream::connect(node.socket())
                .with_context(|| format!("control connection {i}"))?;
            let line = first_line(&conn).with_context(|| format!("connection {i}"))?;
            if line.starts_with(GREETING_PREFIX) {
                if held.len() % 2 == 1 {
                    conn.write_all(b"s")?;
                }
                held.push(conn);
            } else {
                ensure!(
                    line == format!(
                        "ERROR: too many control connections (control-limits maxconnections \
                         {MAX_CONNECTIONS}), try again later\n"
                    ),
                    "connection {i} got {line:?}"
                );
                ensure!(
                    until_closed(&mut conn)?.is_empty(),
                    "more after the refusal"
                );
                refused += 1;
            }
        }
        ensure!(
            held.len() == MAX_CONNECTIONS - 1 && refused == IDLE - held.len(),
            "{} held, {refused} refused",
            held.len()
        );
        let (status_took, ping_took) = served_by(&mut kept, "target", "peer")?;
        let after = rss(pid)?;
        eprintln!(
            "{IDLE} control connections against maxconnections {MAX_CONNECTIONS}: {} held, \
             {refused} refused; RSS {} -> {} KiB ({} B per held one); status {status_took:?}, \
             ping {ping_took:?} on a connection made before",
            held.len(),
            before / 1024,
            after / 1024,
            after.saturating_sub(before) / held.len() as u64
        );
        ensure!(
            after <= before + PER_CONNECTION * held.len() as u64,
            "RSS grew from {before} to {after} bytes with {} held connections",
            held.len()
        );
        ensure!(
            node.control().is_err(),
            "a new client was served beyond the limit"
        );
        drop(held);
        // The slots come back as the node sees the connections close.
        wait_until(CONVERGE_TIMEOUT, "a new client to be served", || {
            Ok(node.control().ok().map(|_| ()))
        })?;
        served(&node, "peer")?;
        drop(peer);
        Ok(())
    }

    #[test]
    fn trickled_long_and_missing_commands_are_cut_off() -> Result<()> {
        const TRICKLERS: usize = 50;
        let limits = json!({
            "linetimeout": "2s",
            "idletimeout": "3s",
            "maxlinelength": 65536,
        });
        let (node, peer) = target_and_peer(Rust, Some(limits), |c| c)?;
        let pid = node.pid().ok_or_else(|| anyhow!("target is not running"))?;
        let before = rss(pid)?;

        // Over-long line: one error line, and the session goes on.
        let mut long = node.control()?;
        let mut line = vec![b'x'; 100 * 1024];
        line.push(b'\n');
        long.send_raw(&line)?;
        ensure!(
            long.read_line()? == "ERROR: command line longer than 65536 bytes",
            "over-long line"
        );
        ensure!(long.command_json("status")?["NodeID"] == "target");
        drop(long);

        // Clients trickling one byte a second, and one that sends nothing.
        let mut tricklers = Vec::new();
        for _ in 0..TRICKLERS {
            let conn = UnixStream::connect(node.socket())?;
            ensure!(first_line(&conn)?.starts_with(GREETING_PREFIX));
            tricklers.push(conn);
        }
        let mut silent = UnixStream::connect(node.socket())?;
        ensure!(first_line(&silent)?.starts_with(GREETING_PREFIX));
        let started = Instant::now();
        let mut open = tricklers.len();
        let mut closed_after = Vec::new();
        let mut served_times = Vec::new();
        while open > 0 {
            ensure!(
                started.elapsed() < Duration::from_secs(15),
                "{open} trickling clients still connected after 15 s"
            );
            open = 0;
            for conn in &mut tricklers {
                // A write fails once the node has closed the connection and the error
                // line was read below.
                if conn.write_all(b"s").is_ok() {
                    open += 1;
                }
            }
            served_times.push(served(&node, "peer")?);
            std::thread::sleep(Duration::from_secs(1));
            for conn in &mut tricklers {
                conn.set_nonblocking(true)?;
                let mut buf = [0u8; 256];
                if let Ok(n) = conn.read(&mut buf) {
                    if n > 0 {
                        ensure!(
                            buf[..n].starts_with(
                                b"ERROR: command line not complete within 2s \
                                  (control-limits linetimeout), closing\n"
                            ),
                            "trickler got {:?}",
                            String::from_utf8_lossy(&buf[..n])
                        );
                        closed_after.push(started.elapsed());
                        conn.shutdown(std::net::Shutdown::Both)?;
                    }
                }
            }
        }
        ensure!(closed_after.len() == TRICKLERS, "{closed_after:?}");
        let idle_reply = until_closed(&mut silent)?;
        ensure!(
            idle_reply == "ERROR: no command within 3s (control-limits idletimeout), closing\n",
            "silent client got {idle_reply:?}"
        );
        let silent_after = started.elapsed();
        let after = rss(pid)?;
        let slowest = served_times
            .iter()
            .map(|(s, p)| *s.max(p))
            .max()
            .unwrap_or_default();
        eprintln!(
            "{TRICKLERS} clients trickling a byte a second: cut off after {:?}..{:?}; \
             a silent client after {silent_after:?}; slowest status/ping meanwhile \
             {slowest:?}; RSS {} -> {} KiB",
            closed_after.first().copied().unwrap_or_default(),
            closed_after.last().copied().unwrap_or_default(),
            before / 1024,
            after / 1024
        );
        ensure!(after <= before + PER_CONNECTION * TRICKLERS as u64);
        drop(peer);
        Ok(())
    }
}

mod go_reference {
    use super::*;

    /// Go receptor 1.6.9 accepts every control connection and keeps a session for each;
    /// this records what that costs it.
    #[test]
    fn go_holds_every_idle_control_connection() -> Result<()> {
        ensure_fd_limit(GO_IDLE as u64 + 256)?;
        let (node, peer) = target_and_peer(Go, None, |c| c)?;
        let pid = node.pid().ok_or_else(|| anyhow!("target is not running"))?;
        served(&node, "peer")?;
        let before = rss(pid)?;
        let mut held = Vec::with_capacity(GO_IDLE);
        for i in 0..GO_IDLE {
            let mut conn = UnixStream::connect(node.socket())
                .with_context(|| format!("control connection {i}"))?;
            if i % 2 == 1 {
                conn.write_all(b"s")?;
            }
            held.push(conn);
        }
        wait_until(CONVERGE_TIMEOUT, "Go to accept every connection", || {
            Ok((open_fds(pid)? >= GO_IDLE).then_some(()))
        })?;
        let started = Instant::now();
        let answered = served(&node, "peer");
        let took = started.elapsed();
        let after = rss(pid)?;
        eprintln!(
            "Go 1.6.9, {GO_IDLE} idle control connections (half stalled after one byte): \
             all accepted; RSS {} -> {} KiB ({} B each); status+ping from a new client: \
             {answered:?} in {took:?}",
            before / 1024,
            after / 1024,
            after.saturating_sub(before) / GO_IDLE as u64
        );
        if let Err(e) = answered {
            bail!("Go stopped serving new clients: {e}");
        }
        drop(held);
        drop(peer);
        Ok(())
    }

    /// Go receptor 1.6.9 has no deadline on a command line: a client trickling one byte a
    /// second keeps its connection.
    #[test]
    fn go_keeps_trickling_clients() -> Result<()> {
        let (node, peer) = target_and_peer(Go, None, |c| c)?;
        let mut conn = UnixStream::connect(node.socket())?;
        ensure!(first_line(&conn)?.starts_with(GREETING_PREFIX));
        let started = Instant::now();
        for _ in 0..5 {
            conn.write_all(b"s")?;
            served(&node, "peer")?;
            std::thread::sleep(Duration::from_secs(1));
        }
        conn.set_nonblocking(true)?;
        let mut buf = [0u8; 64];
        let still_open =
            matches!(conn.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        eprintln!(
            "Go 1.6.9, a client trickling one byte a second: still connected after {:?}: {still_open}",
            started.elapsed()
        );
        ensure!(still_open, "Go closed a trickling client");
        drop(peer);
        Ok(())
    }
}
