//! Scenario: a hostile mesh peer (see `receptor_tests::hostile`) on the `tcp-listener`
//! of node `target`, which also carries the link between `alpha` and `beta`
//! (alpha - target - beta). The peer floods routing updates (100,000 invented nodes,
//! absurd costs, huge connection lists, rapid sequence numbers), sends maximum-size
//! frames as fast as it can, or holds 1,000 connections that never complete the
//! handshake. While it does, `status` on target and a ping from alpha to beta (through
//! target) answer within [`ANSWER_WITHIN`], and target's resident memory stays under
//! [`RSS_BOUND`]; afterwards the mesh routes as before and the invented nodes are gone.
//!
//! The same abuse against Go receptor 1.6.9 is run by `go_nodes`, which prints what Go
//! did (memory, answers) without asserting on it.

use std::net::TcpStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use receptor_tests::hostile::{half_open_sessions, HostilePeer, Lie};
use receptor_tests::procfs::{ensure_fd_limit, open_fds, rss};
use receptor_tests::wait::{wait_until, CONVERGE_TIMEOUT};
use receptor_tests::{free_port, Implementation, NodeConfig, NodeProcess};
use serde_json::{json, Value};

/// Other clients get their answer within this.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// The promised bound on target's resident memory during any of the abuses, with the
/// default `mesh-limits` (README, Reliability).
const RSS_BOUND: u64 = 128 * 1024 * 1024;

/// Invented nodes advertised by the routing-update flood.
const INVENTED: u64 = 100_000;

/// Longest time one abuse runs.
const ABUSE_FOR: Duration = Duration::from_secs(12);

/// Connections held open without completing the handshake.
const HALF_OPEN: usize = 1000;

/// `mesh-limits` of target in the Rust runs: the defaults, but invented nodes are
/// forgotten 3 s after they were last heard from (default 1 h) so the test sees them go.
fn target_limits() -> Value {
    json!({"nodeexpiry": "3s"})
}

/// alpha - target - beta, all of one implementation, target listening on `port`.
struct Line {
    port: u16,
    target: NodeProcess,
    alpha: NodeProcess,
    _beta: NodeProcess,
}

impl Line {
    fn start(implementation: Implementation) -> Result<Line> {
        let port = free_port()?;
        let mut config = NodeConfig::new("target").tcp_listener(port);
        if implementation == Implementation::Rust {
            config = config.entry("mesh-limits", target_limits());
        }
        let target = NodeProcess::start(implementation, config)?;
        let alpha = NodeProcess::start(implementation, NodeConfig::new("alpha").tcp_peer(port))?;
        let beta = NodeProcess::start(implementation, NodeConfig::new("beta").tcp_peer(port))?;
        alpha.wait_for_ping("beta")?;
        Ok(Line {
            port,
            target,
            alpha,
            _beta: beta,
        })
    }

    fn pid(&self) -> Result<u32> {
        self.target
            .pid()
            .ok_or_else(|| anyhow!("target is not running"))
    }

    /// Nodes in target's link-state database.
    fn known_nodes(&self) -> Result<Vec<String>> {
        let status = self.target.status()?;
        let known = status
            .get("KnownConnectionCosts")
            .and_then(Value::as_object)
            .ok_or_else(|| anyhow!("no KnownConnectionCosts in status"))?;
        Ok(known.keys().cloned().collect())
    }
}

/// What the other clients and target's memory did while an abuse ran.
#[derive(Debug, Default)]
struct Observed {
    rounds: u32,
    failures: Vec<String>,
    worst_status: Duration,
    worst_ping: Duration,
    peak_rss: u64,
    start_rss: u64,
}

impl Observed {
    fn summary(&self) -> String {
        format!(
            "{} rounds, {} failed, slowest status {:?}, slowest ping {:?}, RSS {} -> peak {} KiB",
            self.rounds,
            self.failures.len(),
            self.worst_status,
            self.worst_ping,
            self.start_rss / 1024,
            self.peak_rss / 1024,
        )
    }

    /// Our promise: everything answered in time, memory under the bound.
    fn check(&self) -> Result<()> {
        ensure!(self.rounds > 0, "nothing was observed");
        ensure!(
            self.failures.is_empty(),
            "{}; failures: {:?}",
            self.summary(),
            self.failures
        );
        ensure!(
            self.worst_status <= ANSWER_WITHIN && self.worst_ping <= ANSWER_WITHIN,
            "{}",
            self.summary()
        );
        ensure!(self.peak_rss <= RSS_BOUND, "{}", self.summary());
        Ok(())
    }
}

/// An abuse to run while [`observe`] watches: it gets the count of rounds observed
/// so far; `kill` (if any) is shut down when the abuse overruns [`ABUSE_FOR`] (a node
/// that stops reading must not hold the test).
struct Abuse<T> {
    run: Box<dyn FnOnce(Arc<AtomicU32>) -> Result<T> + Send>,
    kill: Option<TcpStream>,
}

/// Runs `abuse` on a thread of its own; meanwhile, over and over, times `status` on
/// target and a ping from alpha to beta, and samples target's RSS.
fn observe<T: Send + 'static>(line: &Line, abuse: Abuse<T>) -> Result<(Observed, T)> {
    let pid = line.pid()?;
    let mut seen = Observed {
        start_rss: rss(pid)?,
        ..Observed::default()
    };
    let rounds = Arc::new(AtomicU32::new(0));
    let run = abuse.run;
    let worker = {
        let rounds = rounds.clone();
        thread::spawn(move || run(rounds))
    };
    let overrun = Instant::now() + ABUSE_FOR + Duration::from_secs(1);
    let mut kill = abuse.kill;
    loop {
        let done = worker.is_finished();
        if Instant::now() >= overrun {
            if let Some(k) = kill.take() {
                let _ = k.shutdown(std::net::Shutdown::Both);
            }
        }
        seen.rounds += 1;
        rounds.store(seen.rounds, Ordering::Relaxed);
        let started = Instant::now();
        match line.target.status() {
            Ok(s) if s["NodeID"] == "target" => {}
            Ok(s) => seen.failures.push(format!("status: {s}")),
            Err(e) => seen.failures.push(format!("status: {e:#}")),
        }
        seen.worst_status = seen.worst_status.max(started.elapsed());
        let started = Instant::now();
        match line.alpha.command_json("ping beta") {
            Ok(p) if p["Success"] == json!(true) => {}
            Ok(p) => seen.failures.push(format!("ping: {p}")),
            Err(e) => seen.failures.push(format!("ping: {e:#}")),
        }
        seen.worst_ping = seen.worst_ping.max(started.elapsed());
        seen.peak_rss = seen.peak_rss.max(rss(pid)?);
        if done {
            break;
        }
    }
    let out = worker
        .join()
        .map_err(|_| anyhow!("the abuse thread panicked"))??;
    Ok((seen, out))
}

/// The routing-update flood, in phases of bounded length: 100,000 invented nodes,
/// then absurd costs, huge connection lists and rapid sequence numbers. Yields the
/// updates sent in each phase.
fn flood_routes(port: u16) -> Result<Abuse<[u64; 4]>> {
    let h = HostilePeer::connect(port, "hostile", "target")?;
    Ok(Abuse {
        kill: Some(h.kill_switch()?),
        run: Box::new(move |_| flood_routes_with(h)),
    })
}

fn flood_routes_with(mut h: HostilePeer) -> Result<[u64; 4]> {
    let start = Instant::now();
    let phase_end = |secs: f64| start + ABUSE_FOR.mul_f64(secs / 12.0);
    let plain = h.flood_invented(0, INVENTED, Lie::Plain, phase_end(8.5))?;
    let absurd = h.flood_invented(INVENTED, 2_000, Lie::AbsurdCosts, phase_end(9.5))?;
    let huge = h.flood_invented(INVENTED + 2_000, 200, Lie::HugeConnections, phase_end(11.0))?;
    let flicker = h.flood_sequences("flicker", 20_000, phase_end(12.0))?;
    // Stay listed by target so that the session is not dropped before we end it
    // (unless the kill switch already ended it).
    let _ = h.send_own_update(&[("target", 1.0)]);
    h.close();
    Ok([plain, absurd, huge, flicker])
}

/// Maximum-size frames for [`ABUSE_FOR`]: DATA to beta's unknown service (forwarded
/// by target, answered by beta), every fourth a ROUTE frame of garbage. Yields the
/// frames and bytes sent.
fn flood_frames(port: u16) -> Result<Abuse<(u64, u64)>> {
    let mut h = HostilePeer::connect(port, "hostile", "target")?;
    Ok(Abuse {
        kill: Some(h.kill_switch()?),
        run: Box::new(move |_| {
            let sent = h.flood_max_frames("beta", "nosvc", 4, Instant::now() + ABUSE_FOR)?;
            let bytes = h.bytes_sent;
            h.close();
            Ok((sent, bytes))
        }),
    })
}

/// [`HALF_OPEN`] connections to target that never complete the handshake, held until
/// target holds `expect_fds` descriptors and 10 more rounds were observed.
fn hold_half_open(line: &Line, expect_fds: usize) -> Result<Abuse<Vec<TcpStream>>> {
    let (port, pid) = (line.port, line.pid()?);
    Ok(Abuse {
        kill: None,
        run: Box::new(move |rounds| {
            let held = half_open_sessions(port, HALF_OPEN)?;
            wait_until(CONVERGE_TIMEOUT, "target to take the connections", || {
                Ok((open_fds(pid)? >= expect_fds).then_some(()))
            })?;
            let from = rounds.load(Ordering::Relaxed);
            wait_until(CONVERGE_TIMEOUT, "10 more rounds", || {
                Ok((rounds.load(Ordering::Relaxed) >= from + 10).then_some(()))
            })?;
            Ok(held)
        }),
    })
}

fn no_ghosts(line: &Line) -> Result<Option<()>> {
    let ghosts = line
        .known_nodes()?
        .iter()
        .filter(|n| n.starts_with("ghost") || *n == "flicker")
        .count();
    Ok((ghosts == 0).then_some(()))
}

mod rust_nodes {
    use super::*;
    use receptor_tests::Implementation::Rust;

    /// Default `maxnodes`.
    const MAX_NODES: usize = 10_000;

    #[test]
    fn routing_update_flood_stays_bounded_and_ages_out() -> Result<()> {
        let line = Line::start(Rust)?;
        let port = line.port;
        let (seen, sent) = observe(&line, flood_routes(port)?)?;
        eprintln!(
            "routing-update flood (updates sent: {} invented, {} absurd costs, {} huge lists, {} sequences): {}",
            sent[0],
            sent[1],
            sent[2],
            sent[3],
            seen.summary()
        );
        seen.check()?;
        let known = line.known_nodes()?;
        ensure!(
            known.len() <= MAX_NODES,
            "{} nodes known, more than the limit",
            known.len()
        );
        ensure!(
            known.iter().any(|n| n.starts_with("ghost")),
            "the flood never reached the routing table"
        );
        // The invented nodes were only reachable through the hostile peer, which is
        // gone: they are forgotten after `nodeexpiry`.
        wait_until(
            CONVERGE_TIMEOUT,
            "the invented nodes to be forgotten",
            || no_ghosts(&line),
        )?;
        line.alpha.wait_for_ping("beta")?;
        Ok(())
    }

    #[test]
    fn max_size_frame_flood_keeps_others_served() -> Result<()> {
        let line = Line::start(Rust)?;
        let port = line.port;
        let (seen, (frames, bytes)) = observe(&line, flood_frames(port)?)?;
        eprintln!(
            "max-size frame flood ({frames} frames, {} MiB): {}",
            bytes >> 20,
            seen.summary()
        );
        seen.check()?;
        ensure!(frames > 100, "only {frames} frames were sent");
        line.alpha.wait_for_ping("beta")?;
        Ok(())
    }

    #[test]
    fn thousand_half_open_sessions_are_bounded() -> Result<()> {
        ensure_fd_limit(HALF_OPEN as u64 + 256)?;
        let line = Line::start(Rust)?;
        let pid = line.pid()?;
        let fds_before = open_fds(pid)?;
        let port = line.port;
        // Target takes up to `maxpendingsessions` (256) of them.
        let (seen, held) = observe(&line, hold_half_open(&line, fds_before + 256)?)?;
        let fds = open_fds(pid)?;
        eprintln!(
            "{HALF_OPEN} half-open sessions: {}; descriptors {fds_before} -> {fds}",
            seen.summary()
        );
        seen.check()?;
        // At most `maxpendingsessions` (256) of them are kept, each one descriptor.
        ensure!(
            fds <= fds_before + 256 + 16,
            "target holds {fds} descriptors (was {fds_before})"
        );
        drop(held);
        // A newcomer is accepted once they are gone.
        let gamma = NodeProcess::start(Rust, NodeConfig::new("gamma").tcp_peer(port))?;
        line.alpha.wait_for_ping("gamma")?;
        drop(gamma);
        Ok(())
    }
}

mod go_nodes {
    use super::*;
    use receptor_tests::Implementation::Go;

    // Go receptor 1.6.9 under the same abuses: each prints its figures (compare with the
    // Rust runs' lines) and asserts only that the abuse could be delivered.

    #[test]
    fn go_reference_under_a_routing_update_flood() -> Result<()> {
        let line = Line::start(Go)?;
        let port = line.port;
        let (seen, sent) = observe(&line, flood_routes(port)?)?;
        let known = line.known_nodes().map(|k| k.len().to_string());
        eprintln!(
            "Go 1.6.9, routing-update flood (updates sent: {} invented, {} absurd costs, {} huge lists, {} sequences): {}; known nodes after: {}",
            sent[0],
            sent[1],
            sent[2],
            sent[3],
            seen.summary(),
            known.unwrap_or_else(|e| format!("no status: {e:#}"))
        );
        ensure!(sent[0] > 0, "no update could be sent");
        Ok(())
    }

    #[test]
    fn go_reference_under_a_max_size_frame_flood() -> Result<()> {
        let line = Line::start(Go)?;
        let port = line.port;
        let (seen, (frames, bytes)) = observe(&line, flood_frames(port)?)?;
        eprintln!(
            "Go 1.6.9, max-size frame flood ({frames} frames, {} MiB): {}",
            bytes >> 20,
            seen.summary()
        );
        ensure!(frames > 0, "no frame could be sent");
        Ok(())
    }

    #[test]
    fn go_reference_with_a_thousand_half_open_sessions() -> Result<()> {
        ensure_fd_limit(HALF_OPEN as u64 + 256)?;
        let line = Line::start(Go)?;
        let pid = line.pid()?;
        let fds_before = open_fds(pid)?;
        // Go takes all of them.
        let (seen, held) = observe(&line, hold_half_open(&line, fds_before + HALF_OPEN)?)
            .context("Go with half-open sessions")?;
        eprintln!(
            "Go 1.6.9, {HALF_OPEN} half-open sessions: {}; descriptors {fds_before} -> {}",
            seen.summary(),
            open_fds(pid)?
        );
        drop(held);
        Ok(())
    }
}
