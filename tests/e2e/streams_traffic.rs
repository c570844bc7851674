//! Shared pieces of the `streams_*` scenarios: a deterministic byte pattern that is hashed
//! (SHA-256) as it is written and as it is read, so that 100 MB never sit in memory; local
//! endpoints (TCP or unix) that send or swallow such a pattern; lines of three nodes with a
//! proxy on each end; and measurements of a transfer (time, MB/s, each node's peak RSS).

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use receptor_tests::topology::{line_routes, start_line_with};
use receptor_tests::{Implementation, NodeConfig, NodeProcess};
use ring::digest::{Context as Sha, Digest, SHA256};
use serde_json::Value;

/// Node names of every line.
pub(crate) const NAMES: [&str; 3] = ["left", "middle", "right"];
/// One megabyte, as MB/s figures count it.
pub(crate) const MB: u64 = 1_000_000;
/// Bytes per write and per read.
const CHUNK: usize = 64 * 1024;
/// Size of the random block the pattern is cut from.
const BLOCK: usize = 1024 * 1024;
/// How long one transfer may take, whatever its size (a hang fails within this).
pub(crate) const TRANSFER_TIMEOUT: Duration = Duration::from_secs(100);

/// The bytes of a transfer: 64 KiB chunks cut from a pseudo-random block at offsets that
/// depend on the chunk's index, each stamped with that index, so that lost, repeated or
/// reordered data changes the digest.
pub(crate) struct Pattern {
    block: Vec<u8>,
}

impl Pattern {
    pub(crate) fn new(seed: u64) -> Pattern {
        let mut x = seed | 1;
        let mut block = Vec::with_capacity(BLOCK + CHUNK);
        while block.len() < BLOCK + CHUNK {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            block.extend_from_slice(&x.to_le_bytes());
        }
        Pattern { block }
    }

    /// Chunk `index` (the last one of a transfer may be cut shorter by the caller).
    fn chunk(&self, index: u64) -> Vec<u8> {
        let offset = (index.wrapping_mul(7919) as usize % (BLOCK / 8)) * 8;
        let mut chunk = self.block[offset..offset + CHUNK].to_vec();
        chunk[..8].copy_from_slice(&index.to_le_bytes());
        chunk
    }

    /// Writes `len` bytes of the pattern; returns their digest.
    pub(crate) fn send(&self, w: &mut impl Write, len: u64) -> std::io::Result<Digest> {
        let mut sha = Sha::new(&SHA256);
        let mut sent = 0u64;
        let mut index = 0u64;
        while sent < len {
            let mut chunk = self.chunk(index);
            chunk.truncate((len - sent).min(CHUNK as u64) as usize);
            w.write_all(&chunk)?;
            sha.update(&chunk);
            sent += chunk.len() as u64;
            index += 1;
        }
        w.flush()?;
        Ok(sha.finish())
    }

    /// The digest of `len` bytes of the pattern, without sending them.
    pub(crate) fn digest(&self, len: u64) -> Digest {
        let mut sink = std::io::sink();
        // Writing to io::sink cannot fail.
        self.send(&mut sink, len)
            .unwrap_or_else(|_| unreachable!("io::sink failed"))
    }
}

/// What a reader got: byte count and digest, or the error that ended the stream.
#[derive(Debug)]
pub(crate) struct Received {
    pub len: u64,
    pub digest: Digest,
    pub error: Option<std::io::Error>,
}

/// Reads until end of stream (or an error), hashing as it goes.
pub(crate) fn receive(r: &mut impl Read) -> Received {
    let mut sha = Sha::new(&SHA256);
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => {
                return Received {
                    len,
                    digest: sha.finish(),
                    error: None,
                }
            }
            Ok(n) => {
                sha.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Received {
                    len,
                    digest: sha.finish(),
                    error: Some(e),
                }
            }
        }
    }
}

/// Whether two digests are equal.
pub(crate) fn same(a: &Digest, b: &Digest) -> bool {
    a.as_ref() == b.as_ref()
}

/// A connected local stream socket (the test's side of a proxy).
pub(crate) enum Conn {
    Tcp(std::net::TcpStream),
    Unix(UnixStream),
}

impl Conn {
    pub(crate) fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.shutdown(how),
            Conn::Unix(s) => s.shutdown(how),
        }
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_read_timeout(t),
            Conn::Unix(s) => s.set_read_timeout(t),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A listening local socket standing for the service behind a proxy's client half.
pub(crate) enum Target {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl Target {
    pub(crate) fn accept(&self) -> std::io::Result<Conn> {
        Ok(match self {
            Target::Tcp(l) => Conn::Tcp(l.accept()?.0),
            Target::Unix(l) => Conn::Unix(l.accept()?.0),
        })
    }
}

/// What the target does with the next connection it accepts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Role {
    /// Read everything and report it.
    Sink,
    /// Send `len` bytes of the pattern, shut its write side, then read to the end.
    Source(u64),
}

/// Serves one connection on `target` in a thread; its outcome arrives on the channel.
pub(crate) fn serve_one(
    target: &Arc<Target>,
    pattern: &Arc<Pattern>,
    role: Role,
) -> mpsc::Receiver<Result<Received>> {
    let (target, pattern) = (target.clone(), pattern.clone());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let outcome = (|| {
            let mut conn = target.accept().context("accepting at the target")?;
            conn.set_read_timeout(Some(TRANSFER_TIMEOUT))?;
            match role {
                Role::Sink => Ok(receive(&mut conn)),
                Role::Source(len) => {
                    let digest = pattern.send(&mut conn, len);
                    let _ = conn.shutdown(Shutdown::Write);
                    let mut rest = receive(&mut conn);
                    match digest {
                        Ok(d) => {
                            rest.digest = d;
                            rest.len = len;
                        }
                        Err(e) => rest.error = Some(e),
                    }
                    Ok(rest)
                }
            }
        })();
        let _ = tx.send(outcome);
    });
    rx
}

/// Waits for a result from a helper thread, at most [`TRANSFER_TIMEOUT`].
pub(crate) fn wait_result<T>(rx: &mpsc::Receiver<Result<T>>, what: &str) -> Result<T> {
    rx.recv_timeout(TRANSFER_TIMEOUT)
        .map_err(|_| anyhow!("{what}: nothing within {TRANSFER_TIMEOUT:?}"))?
}

/// Figures of one transfer.
#[derive(Debug)]
pub(crate) struct Measurement {
    pub label: String,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Peak resident memory of each node (kB), in line order.
    pub peak_rss_kb: Vec<(String, u64)>,
}

impl Measurement {
    pub(crate) fn print(&self) {
        let secs = self.elapsed.as_secs_f64();
        let rss: Vec<String> = self
            .peak_rss_kb
            .iter()
            .map(|(n, kb)| format!("{n} {:.1} MiB", *kb as f64 / 1024.0))
            .collect();
        eprintln!(
            "MEASUREMENT {}: {} MB in {:.2} s = {:.1} MB/s; peak RSS: {}",
            self.label,
            self.bytes / MB,
            secs,
            self.bytes as f64 / MB as f64 / secs,
            rss.join(", ")
        );
    }
}

/// Peak resident set size (VmHWM, kB) of a running node.
pub(crate) fn peak_rss_kb(node: &NodeProcess) -> u64 {
    node.pid()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Peak RSS of every node of a line.
pub(crate) fn line_rss(nodes: &[NodeProcess]) -> Vec<(String, u64)> {
    nodes
        .iter()
        .map(|n| {
            (
                format!("{}({})", n.id(), n.implementation().label()),
                peak_rss_kb(n),
            )
        })
        .collect()
}

/// Starts `left - middle - right` with `left_entry` added to left's config and
/// `right_entry` to right's, and waits until left routes to right and knows right's
/// advertisement of `service`.
pub(crate) fn proxied_line(
    impls: [Implementation; 3],
    left_entry: (&str, Value),
    right_entry: (&str, Value),
    service: &str,
) -> Result<Vec<NodeProcess>> {
    let spec: Vec<(&str, Implementation)> = NAMES.into_iter().zip(impls).collect();
    let nodes = start_line_with(&spec, &[1.0, 1.0], |i, config: NodeConfig| match i {
        0 => config.entry(left_entry.0, left_entry.1.clone()),
        2 => config.entry(right_entry.0, right_entry.1.clone()),
        _ => config,
    })?;
    nodes[0].wait_for_routes(&line_routes(&NAMES, 0))?;
    nodes[2].wait_for_routes(&line_routes(&NAMES, 2))?;
    nodes[0].wait_for_status(&format!("right's {service} advertisement"), |s| {
        has_ad(s, "right", service)
    })?;
    Ok(nodes)
}

/// Whether a status reply lists `node`'s advertisement of `service`.
pub(crate) fn has_ad(status: &Value, node: &str, service: &str) -> bool {
    status["Advertisements"].as_array().is_some_and(|ads| {
        ads.iter()
            .any(|ad| ad["NodeID"] == node && ad["Service"] == service)
    })
}

/// Sends `len` pattern bytes through `conn` (the proxy's server half) to a sink target,
/// then reads back to the end; checks the target got them intact. Returns the time taken.
pub(crate) fn upload(
    mut conn: Conn,
    sink: mpsc::Receiver<Result<Received>>,
    pattern: &Pattern,
    len: u64,
) -> Result<Duration> {
    let started = Instant::now();
    conn.set_read_timeout(Some(TRANSFER_TIMEOUT))?;
    let sent = pattern
        .send(&mut conn, len)
        .context("sending through the proxy")?;
    conn.shutdown(Shutdown::Write)?;
    let got = wait_result(&sink, "the target's end of the upload")?;
    let elapsed = started.elapsed();
    ensure!(got.error.is_none(), "target read error: {:?}", got.error);
    ensure!(got.len == len, "target got {} bytes of {len}", got.len);
    ensure!(same(&got.digest, &sent), "target got different bytes");
    // The proxy closes our side once the target has closed.
    let back = receive(&mut conn);
    ensure!(back.len == 0, "{} unexpected bytes came back", back.len);
    Ok(elapsed)
}

/// Reads what a source target sends through `conn`; checks it is `len` pattern bytes.
/// Returns the time taken.
pub(crate) fn download(
    mut conn: Conn,
    source: mpsc::Receiver<Result<Received>>,
    pattern: &Pattern,
    len: u64,
) -> Result<Duration> {
    let started = Instant::now();
    conn.set_read_timeout(Some(TRANSFER_TIMEOUT))?;
    let got = receive(&mut conn);
    let elapsed = started.elapsed();
    ensure!(got.error.is_none(), "read error: {:?}", got.error);
    ensure!(got.len == len, "got {} bytes of {len}", got.len);
    ensure!(
        same(&got.digest, &pattern.digest(len)),
        "got different bytes"
    );
    conn.shutdown(Shutdown::Write)?;
    let sent = wait_result(&source, "the target's end of the download")?;
    ensure!(sent.error.is_none(), "target error: {:?}", sent.error);
    Ok(elapsed)
}
