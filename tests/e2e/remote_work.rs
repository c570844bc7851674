//! Scenario: remote work. Node `foo` submits work for node `bar` (linked by TCP); `foo` keeps a
//! local unit of type `remote` that follows the unit on `bar`. Run with each implementation
//! on each side: payloads and results are byte-identical, signed work is verified, cancel and
//! release reach `bar`, and (Rust submitter) `foo` killed with SIGKILL in the middle of a
//! results stream completes the results after its restart.
//!
//! The `big_*` tests (Rust→Go, Go→Rust, Rust→Rust) move bulk data: a 50 MB payload through a
//! `cat` unit (streamed into the control socket; `bar`'s stdin file and `foo`'s results equal
//! it) and 200 MB of results from a `dd` unit (`foo`'s stdout file and `work results` read
//! through the control socket equal `bar`'s stdout file). Large data is compared by streaming
//! SHA-256, never held in memory whole; the elapsed times and MB/s of each transfer are printed
//! so that the test log shows them. Released units leave no file behind on either node.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use receptor_tests::wait::{wait_until, CONVERGE_TIMEOUT};
use receptor_tests::Implementation::{self, Go, Rust};
use receptor_tests::{free_port, NodeConfig, NodeProcess};
use ring::digest::{self, SHA256};
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

/// How long a bulk transfer may take: Go moves results at only 5-20 MB/s, and CI runs debug
/// builds on 2 busy cores.
const BIG_TIMEOUT: Duration = Duration::from_secs(240);

/// The bulk payload, in bytes.
const BIG_PAYLOAD: u64 = 50_000_000;

/// The bulk results, in bytes: `dd` writes `BIG_RESULTS_BLOCKS` blocks of 1,000,000 bytes.
const BIG_RESULTS: u64 = 200_000_000;
const BIG_RESULTS_BLOCKS: u64 = BIG_RESULTS / 1_000_000;

/// The unit of streamed reads and writes.
const CHUNK: usize = 1 << 20;

/// `bar` produces about 8 MB over 2 seconds: long enough to kill `foo` mid-stream.
const SLOW_GEN: &str =
    "-c \"for i in $(seq 1 40); do head -c 200000 /dev/urandom; sleep 0.05; done\"";

/// The submitting node (`foo`) and the node that runs the work (`bar`).
struct Pair {
    origin: NodeProcess,
    target: NodeProcess,
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
    let target = NodeProcess::start(runner, target)?;
    let origin = NodeProcess::start(submitter, origin)?;
    origin.wait_for_routes(&[("bar", "bar")])?;
    target.wait_for_routes(&[("foo", "foo")])?;
    Ok(Pair {
        origin,
        target,
        _keys: keys,
    })
}

/// `work submit`: the unit id and the final reply line.
fn submit(node: &NodeProcess, request: &str, payload: &[u8]) -> Result<(String, String)> {
    submit_from(node, request, payload)
}

/// `work submit` with a payload streamed from `payload` in chunks: the unit id and the final
/// reply line.
fn submit_from(
    node: &NodeProcess,
    request: &str,
    mut payload: impl Read,
) -> Result<(String, String)> {
    let mut c = node.control()?;
    let created = c.command(request)?;
    let id = created
        .strip_prefix("Work unit created with ID ")
        .and_then(|r| r.strip_suffix(". Send stdin data and EOF."))
        .ok_or_else(|| anyhow!("{}: submit refused: {created}", node.id()))?
        .to_owned();
    let mut chunk = vec![0; CHUNK];
    loop {
        let n = payload.read(&mut chunk).context("reading the payload")?;
        if n == 0 {
            break;
        }
        c.send_raw(&chunk[..n])?;
    }
    c.shutdown_write()?;
    let reply = c.read_line()?;
    Ok((id, reply))
}

fn submit_started(node: &NodeProcess, request: &str, payload: &[u8]) -> Result<String> {
    let (id, reply) = submit(node, request, payload)?;
    ensure!(
        reply == format!(r#"{{"result":"Job Started","unitid":"{id}"}}"#),
        "{}: {request}: {reply}",
        node.id()
    );
    Ok(id)
}

fn unit_status(node: &NodeProcess, id: &str) -> Result<Value> {
    node.command_json(&format!("work status {id}"))
}

fn wait_state(node: &NodeProcess, id: &str, state: i64) -> Result<Value> {
    wait_state_within(node, id, state, UNIT_TIMEOUT)
}

fn wait_state_within(node: &NodeProcess, id: &str, state: i64, timeout: Duration) -> Result<Value> {
    let mut last = Value::Null;
    wait_until(
        timeout,
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

fn unit_file(node: &NodeProcess, id: &str, file: &str) -> PathBuf {
    node.datadir().join(node.id()).join(id).join(file)
}

/// The submitter's copy of the results once it has `len` bytes (Go marks a remote unit
/// Succeeded from the remote status, before its copy is complete).
fn local_results(node: &NodeProcess, id: &str, len: u64) -> Result<Vec<u8>> {
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
fn results(node: &NodeProcess, id: &str) -> Result<Vec<u8>> {
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

fn is_gone(node: &NodeProcess, id: &str) -> Result<bool> {
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

/// A deterministic, non-periodic byte stream of a given length: each 8-byte block is the
/// SplitMix64 hash of its index, so a chunk that is lost, repeated or moved changes the bytes.
struct PayloadStream {
    position: u64,
    len: u64,
}

impl PayloadStream {
    fn new(len: u64) -> PayloadStream {
        PayloadStream { position: 0, len }
    }

    fn block(index: u64) -> [u8; 8] {
        let mut z = index.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).to_le_bytes()
    }
}

impl Read for PayloadStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = usize::try_from(self.len - self.position).unwrap_or(usize::MAX);
        let n = buf.len().min(left);
        let mut block = (u64::MAX, [0; 8]);
        for byte in &mut buf[..n] {
            let index = self.position / 8;
            if block.0 != index {
                block = (index, PayloadStream::block(index));
            }
            *byte = block.1[(self.position % 8) as usize];
            self.position += 1;
        }
        Ok(n)
    }
}

/// Wraps a reader and hashes (SHA-256) and counts what is read through it.
struct Hashing<R> {
    inner: R,
    hash: digest::Context,
    len: u64,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Hashing<R> {
        Hashing {
            inner,
            hash: digest::Context::new(&SHA256),
            len: 0,
        }
    }

    /// The length and the hex SHA-256 of what was read.
    fn finish(self) -> (u64, String) {
        let hex = self
            .hash
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        (self.len, hex)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// The length and hex SHA-256 of everything `reader` yields, read in chunks.
fn sha256(reader: impl Read) -> Result<(u64, String)> {
    let mut hashing = Hashing::new(reader);
    std::io::copy(&mut hashing, &mut std::io::sink())?;
    Ok(hashing.finish())
}

fn file_sha256(path: &Path) -> Result<(u64, String)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    sha256(file).with_context(|| format!("reading {}", path.display()))
}

/// `work results <id>` through the control socket at `socket`, hashed as it streams in until
/// the node closes the connection.
fn results_sha256(socket: &Path, id: &str) -> Result<(u64, String)> {
    let stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    stream.set_read_timeout(Some(UNIT_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(CHUNK, stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    ensure!(line.starts_with("Receptor Control, node "), "{line:?}");
    writer.write_all(format!("work results {id}\n").as_bytes())?;
    line.clear();
    reader.read_line(&mut line)?;
    ensure!(
        line == format!("Streaming results for work unit {id}\n"),
        "{line:?}"
    );
    writer.shutdown(Shutdown::Write)?;
    sha256(reader).context("reading the results stream")
}

/// Waits until the file at `path` holds `len` bytes; the time it took from `since`.
fn wait_size(path: &Path, len: u64, since: Instant) -> Result<Duration> {
    wait_until(
        BIG_TIMEOUT,
        &format!("{len} bytes in {}", path.display()),
        || {
            Ok(std::fs::metadata(path)
                .is_ok_and(|m| m.len() >= len)
                .then(|| since.elapsed()))
        },
    )
}

fn rate(len: u64, elapsed: Duration) -> f64 {
    len as f64 / 1e6 / elapsed.as_secs_f64().max(1e-6)
}

/// The names of the files in a unit's folder (no leftover temp files).
fn unit_files(node: &NodeProcess, id: &str) -> Result<Vec<String>> {
    let dir = node.datadir().join(node.id()).join(id);
    let mut names = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// Releases unit `id` from `foo` and waits until it is gone, with its folder, on both nodes.
fn release_everywhere(origin: &NodeProcess, target: &NodeProcess, id: &str) -> Result<()> {
    for node in [origin, target] {
        let files = unit_files(node, id)?;
        ensure!(
            files.iter().all(|f| KNOWN_UNIT_FILES.contains(&f.as_str())),
            "{}: unexpected files in unit {id}: {files:?}",
            node.id()
        );
    }
    let reply = origin.control()?.command(&format!("work release {id}"))?;
    ensure!(reply == format!(r#"{{"released":"{id}"}}"#), "{reply}");
    for node in [origin, target] {
        let dir = node.datadir().join(node.id()).join(id);
        wait_until(
            CONVERGE_TIMEOUT,
            &format!("release on {}", node.id()),
            || Ok((is_gone(node, id)? && !dir.exists()).then_some(())),
        )?;
    }
    Ok(())
}

/// The files a unit folder may hold (`status.lock`: Go; `status.tmp`: the previous status,
/// kept for the next update to rewrite; `waitstatus`: the exit status written by our command
/// runner). Anything else is a leftover.
const KNOWN_UNIT_FILES: &[&str] = &[
    "status",
    "status.lock",
    "status.tmp",
    "stdin",
    "stdout",
    "waitstatus",
];

/// A 50 MB payload through `cat` on `bar` and 200 MB of results from `dd` on `bar`, from
/// `submitter` to `runner`, byte-identical on both nodes.
fn big_remote_work(submitter: Implementation, runner: Implementation) -> Result<()> {
    let Pair {
        origin,
        target,
        _keys,
    } = start_pair(submitter, runner)?;
    let direction = format!("{} -> {}", submitter.label(), runner.label());
    big_payload(&origin, &target, &direction)?;
    big_results(&origin, &target, &direction)?;
    for node in [&origin, &target] {
        let left = std::fs::read_dir(node.datadir().join(node.id()))?.count();
        ensure!(left == 0, "{}: {left} entries left in its data", node.id());
        no_panics(node)?;
    }
    Ok(())
}

/// The 50 MB payload: `bar`'s stdin file and `foo`'s results equal it.
fn big_payload(origin: &NodeProcess, target: &NodeProcess, direction: &str) -> Result<()> {
    let expected = sha256(PayloadStream::new(BIG_PAYLOAD))?;
    let started = Instant::now();
    let mut sent = Hashing::new(PayloadStream::new(BIG_PAYLOAD));
    let (id, reply) = submit_from(origin, "work submit bar cat", &mut sent)?;
    let uploaded = started.elapsed();
    ensure!(
        sent.finish() == expected,
        "the payload stream is not repeatable"
    );
    ensure!(
        reply == format!(r#"{{"result":"Job Started","unitid":"{id}"}}"#),
        "{reply}"
    );
    let on_bar = wait_size(&unit_file(target, &id, "stdin"), BIG_PAYLOAD, started)?;
    let back = wait_size(&unit_file(origin, &id, "stdout"), BIG_PAYLOAD, started)?;
    let results = back.saturating_sub(on_bar);
    eprintln!(
        "{direction}: 50 MB payload: submit answered after {uploaded:?} ({:.1} MB/s), complete \
         on bar after {on_bar:?} ({:.1} MB/s); its results back on foo {results:?} later \
         ({:.1} MB/s), {back:?} after the submit",
        rate(BIG_PAYLOAD, uploaded),
        rate(BIG_PAYLOAD, on_bar),
        rate(BIG_PAYLOAD, results),
    );
    let remote = wait_state_within(target, &id, 2, BIG_TIMEOUT)?;
    ensure!(remote["StdoutSize"] == BIG_PAYLOAD, "{remote}");
    wait_state_within(origin, &id, 2, BIG_TIMEOUT)?;
    ensure!(
        file_sha256(&unit_file(target, &id, "stdin"))? == expected,
        "the payload differs on bar"
    );
    ensure!(
        file_sha256(&unit_file(origin, &id, "stdout"))? == expected,
        "the results differ on foo"
    );
    ensure!(
        results_sha256(&origin.socket(), &id)? == expected,
        "work results differ on foo"
    );
    release_everywhere(origin, target, &id)
}

/// The 200 MB of results: `foo`'s stdout file and its `work results` equal `bar`'s stdout.
/// With a Rust submitter, `work results` is read from the submission on, following the unit.
fn big_results(origin: &NodeProcess, target: &NodeProcess, direction: &str) -> Result<()> {
    let started = Instant::now();
    let id = submit_started(
        origin,
        &format!(
            "work submit bar gen if=/dev/urandom bs=1000000 count={BIG_RESULTS_BLOCKS} \
             iflag=fullblock"
        ),
        b"",
    )?;
    let follower = (origin.implementation() == Rust).then(|| {
        let (socket, id) = (origin.socket(), id.clone());
        std::thread::spawn(move || {
            let hashed = results_sha256(&socket, &id);
            (hashed, started.elapsed())
        })
    });
    let remote = wait_state_within(target, &id, 2, BIG_TIMEOUT)?;
    let generated = started.elapsed();
    ensure!(remote["StdoutSize"] == BIG_RESULTS, "{remote}");
    let copied = wait_size(&unit_file(origin, &id, "stdout"), BIG_RESULTS, started)?;
    eprintln!(
        "{direction}: 200 MB of results: generated on bar after {generated:?}, on foo after \
         {copied:?} ({:.1} MB/s)",
        rate(BIG_RESULTS, copied)
    );
    wait_state_within(origin, &id, 2, BIG_TIMEOUT)?;
    let expected = file_sha256(&unit_file(target, &id, "stdout"))?;
    ensure!(expected.0 == BIG_RESULTS, "{} bytes on bar", expected.0);
    ensure!(
        file_sha256(&unit_file(origin, &id, "stdout"))? == expected,
        "the results file differs on foo"
    );
    if let Some(follower) = follower {
        let (hashed, elapsed) = follower
            .join()
            .map_err(|_| anyhow!("the results reader panicked"))?;
        ensure!(hashed? == expected, "work results (followed) differ on foo");
        eprintln!(
            "{direction}: 200 MB of results: work results followed to the end after \
             {elapsed:?} ({:.1} MB/s)",
            rate(BIG_RESULTS, elapsed)
        );
    }
    let read = Instant::now();
    ensure!(
        results_sha256(&origin.socket(), &id)? == expected,
        "work results differ on foo"
    );
    eprintln!(
        "{direction}: 200 MB of results: work results of the finished unit read in {:?} \
         ({:.1} MB/s)",
        read.elapsed(),
        rate(BIG_RESULTS, read.elapsed())
    );
    release_everywhere(origin, target, &id)
}

/// A stream-connection counter of `node` (`dialed` or `accepted`), from its `metrics`.
fn connections(node: &NodeProcess, side: &str) -> Result<u64> {
    let m = node.command_json("metrics")?;
    m[format!("stream_connections_{side}")]
        .as_u64()
        .ok_or_else(|| anyhow!("{}: no stream_connections_{side} in {m}", node.id()))
}

/// Runs `count` `cat` units from `origin` on `target` one after the other; each must
/// succeed with its payload as results.
fn cat_units(origin: &NodeProcess, target: &NodeProcess, count: u32) -> Result<()> {
    for i in 0..count {
        let data = payload(12, 7 + i);
        let id = submit_started(origin, "work submit bar cat", &data)?;
        wait_state(origin, &id, 2)?;
        ensure!(local_results(origin, &id, 12)? == data, "unit {i} results");
        release_everywhere(origin, target, &id)?;
    }
    Ok(())
}

/// Between two Rust nodes, remote units share one QUIC connection (one handshake for all
/// their control sessions); when the executing node restarts, the next unit goes through
/// on a new connection.
fn shared_connection() -> Result<()> {
    const UNITS: u32 = 10;
    let Pair {
        origin,
        mut target,
        _keys,
    } = start_pair(Rust, Rust)?;
    let dialed = connections(&origin, "dialed")?;
    let accepted = connections(&target, "accepted")?;
    cat_units(&origin, &target, UNITS)?;
    let dialed_now = connections(&origin, "dialed")?;
    let accepted_now = connections(&target, "accepted")?;
    ensure!(
        dialed_now - dialed == 1 && accepted_now - accepted == 1,
        "{UNITS} units: foo dialed {} connections, bar accepted {}",
        dialed_now - dialed,
        accepted_now - accepted
    );

    // bar restarts: foo's kept connection is dead, which the next unit must not notice.
    target.restart()?;
    origin.wait_for_routes(&[("bar", "bar")])?;
    target.wait_for_routes(&[("foo", "foo")])?;
    let started = Instant::now();
    cat_units(&origin, &target, 3)?;
    println!("3 units after the restart took {:?}", started.elapsed());
    let after = connections(&target, "accepted")?;
    ensure!(after == 1, "the restarted bar accepted {after} connections");
    no_panics(&origin)?;
    no_panics(&target)
}

/// A Go node gets what a Go node would: one connection per control session, so more
/// than one per unit.
fn connection_per_stream_to_go() -> Result<()> {
    const UNITS: u32 = 3;
    let Pair {
        origin,
        target,
        _keys,
    } = start_pair(Rust, Go)?;
    let dialed = connections(&origin, "dialed")?;
    cat_units(&origin, &target, UNITS)?;
    let dialed = connections(&origin, "dialed")? - dialed;
    // At least the submission and the results stream of each unit, plus releases.
    ensure!(
        dialed >= 2 * u64::from(UNITS),
        "{UNITS} units to a Go node took {dialed} connections"
    );
    no_panics(&origin)
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
    fn big_rust_to_rust() -> Result<()> {
        big_remote_work(Rust, Rust)
    }

    #[test]
    fn big_rust_to_go() -> Result<()> {
        big_remote_work(Rust, Go)
    }

    #[test]
    fn big_go_to_rust() -> Result<()> {
        big_remote_work(Go, Rust)
    }

    #[test]
    fn rust_to_rust_shares_a_connection() -> Result<()> {
        shared_connection()
    }

    #[test]
    fn rust_to_go_connection_per_stream() -> Result<()> {
        connection_per_stream_to_go()
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
            let err = NodeProcess::run_expecting_failure(implementation, config)?;
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
        let origin = NodeProcess::start(Rust, NodeConfig::new("foo").tcp_peer(port))?;
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
        let target = NodeProcess::start(
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
fn no_panics(node: &NodeProcess) -> Result<()> {
    if node.log().contains("panicked") {
        bail!("{} panicked", node.id());
    }
    Ok(())
}
