//! Tests of remote work between nodes that serve their control service on real unix and
//! TCP sockets. The nodes reach each other's control service over TCP (a stand-in for
//! the mesh stream, with the same rules: signatures are checked, half-close ends a
//! request); the Go interop tests talk to the reference Go receptor 1.6.9 that way.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::watch;

use super::gonode::GoNode;
use super::*;
use crate::control::{CommandRegistry, ControlListener, ControlService, ListenAddr};
use crate::work::control::WorkCommand;
use crate::work::signing::{SignatureVerifier, WorkSigner};

pub(super) const WAIT: Duration = Duration::from_secs(30);
pub(super) const PRIVATE_KEY: &[u8] = include_bytes!("../testdata/sign_private_pkcs1.pem");
pub(super) const PUBLIC_KEY: &[u8] = include_bytes!("../testdata/sign_public.pem");

// ---------------------------------------------------------------------------------
// Work types of the test nodes.

fn progress(state: UnitState, detail: &str) -> WorkProgress {
    WorkProgress {
        state,
        detail: detail.to_owned(),
        extra: None,
    }
}

struct FlagHandle(Arc<AtomicBool>);
impl WorkHandle for FlagHandle {
    fn cancel(&self) -> Result<(), WorkTypeError> {
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// Test work types, each a thread per unit:
/// * `cat`: copies the payload to the results;
/// * `gen`: `params` = `<bytes> [<chunks> <ms between chunks>]`, writes a deterministic
///   pattern (see [`pattern`]);
/// * `echoparams`: writes `params` and the other parameters;
/// * `sleeper`: runs until cancelled (then `Canceled`);
/// * `fail`: writes `oops` and fails;
/// * `signedcat`: `cat` with `verifysignature`.
struct TestType {
    name: &'static str,
    verify: bool,
}

/// `len` bytes of the pattern `gen` writes.
pub(super) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

impl WorkType for TestType {
    fn name(&self) -> &str {
        self.name
    }
    fn verify_signature(&self) -> bool {
        self.verify
    }
    fn allow_runtime_params(&self) -> bool {
        true
    }
    fn start(
        &self,
        mut req: StartRequest,
        tx: watch::Sender<WorkProgress>,
    ) -> Result<Box<dyn WorkHandle>, WorkTypeError> {
        let cancelled = Arc::new(AtomicBool::new(false));
        let flag = cancelled.clone();
        let name = self.name;
        tx.send_replace(progress(UnitState::Running, "Running: PID 1"));
        std::thread::spawn(move || {
            let outcome: std::io::Result<WorkProgress> = (|| {
                match name {
                    "cat" | "signedcat" => {
                        std::io::copy(&mut req.stdin, &mut req.stdout)?;
                    }
                    "gen" => {
                        let args: Vec<u64> = req
                            .params
                            .split(' ')
                            .filter_map(|p| p.parse().ok())
                            .collect();
                        let total =
                            usize::try_from(args.first().copied().unwrap_or(0)).unwrap_or(0);
                        let chunks = args.get(1).copied().unwrap_or(1).max(1) as usize;
                        let pause = Duration::from_millis(args.get(2).copied().unwrap_or(0));
                        let data = pattern(total);
                        let per = total.div_ceil(chunks).max(1);
                        for chunk in data.chunks(per) {
                            if flag.load(Ordering::SeqCst) {
                                return Ok(progress(UnitState::Canceled, "Canceled"));
                            }
                            req.stdout.write_all(chunk)?;
                            std::thread::sleep(pause);
                        }
                    }
                    "echoparams" => {
                        writeln!(req.stdout, "{} {:?}", req.params, req.extra_params)?;
                    }
                    "sleeper" => {
                        req.stdout.write_all(b"sleeping\n")?;
                        while !flag.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        return Ok(progress(UnitState::Canceled, "Canceled"));
                    }
                    _ => {
                        let mut payload = Vec::new();
                        req.stdin.read_to_end(&mut payload)?;
                        req.stdout.write_all(b"oops\n")?;
                        return Ok(progress(UnitState::Failed, "exit status 3"));
                    }
                }
                Ok(progress(UnitState::Succeeded, "exit status 0"))
            })();
            let end = outcome.unwrap_or_else(|e| progress(UnitState::Failed, &e.to_string()));
            tx.send_replace(end);
        });
        Ok(Box::new(FlagHandle(cancelled)))
    }
    fn reattach(
        &self,
        _req: ReattachRequest,
        _tx: watch::Sender<WorkProgress>,
    ) -> Result<Box<dyn WorkHandle>, WorkTypeError> {
        Err(WorkTypeError::Refused(
            "test units cannot be re-attached".to_owned(),
        ))
    }
}

pub(super) fn test_types() -> Vec<Arc<dyn WorkType>> {
    ["cat", "gen", "echoparams", "sleeper", "fail"]
        .into_iter()
        .map(|name| {
            Arc::new(TestType {
                name,
                verify: false,
            }) as Arc<dyn WorkType>
        })
        .chain(std::iter::once(Arc::new(TestType {
            name: "signedcat",
            verify: true,
        }) as Arc<dyn WorkType>))
        .collect()
}

// ---------------------------------------------------------------------------------
// The "mesh": control services reached on TCP.

/// Reaches each node's control service on its TCP port, and counts the dials.
#[derive(Default)]
struct TcpDialer {
    nodes: Mutex<HashMap<String, SocketAddr>>,
    tls_names: Mutex<HashSet<String>>,
    dials: Mutex<HashMap<String, usize>>,
    /// Holds back every `work status` reply by this long (a slow path to the node).
    status_reply_delay: Mutex<Option<Duration>>,
}

/// A control stream whose reads after a `work status` request wait `delay` first: the
/// remote node answers at once, the answer arrives late.
struct SlowStatusReplies {
    inner: tokio::net::TcpStream,
    delay: Duration,
    armed: bool,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl tokio::io::AsyncRead for SlowStatusReplies {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.armed {
            let delay = self.delay;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            std::task::ready!(std::future::Future::poll(sleep.as_mut(), cx));
            self.sleep = None;
            self.armed = false;
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SlowStatusReplies {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if buf.windows(12).any(|w| w == b"work status ") {
            self.armed = true;
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl TcpDialer {
    fn set(&self, node: &str, addr: SocketAddr) {
        lock(&self.nodes).insert(node.to_owned(), addr);
    }
    fn remove(&self, node: &str) {
        lock(&self.nodes).remove(node);
    }
    fn dials(&self, node: &str) -> usize {
        lock(&self.dials).get(node).copied().unwrap_or(0)
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[async_trait]
impl ControlDialer for TcpDialer {
    fn check_tls_client(&self, name: &str) -> Result<(), UnknownTlsClient> {
        if name.is_empty() || lock(&self.tls_names).contains(name) {
            Ok(())
        } else {
            Err(UnknownTlsClient(name.to_owned()))
        }
    }

    async fn dial(&self, node: &str, _tls: &str, _fresh: bool) -> Result<Dialed, DialError> {
        *lock(&self.dials).entry(node.to_owned()).or_default() += 1;
        let addr = lock(&self.nodes)
            .get(node)
            .copied()
            .ok_or_else(|| DialError::Unreachable("no route to node".to_owned()))?;
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| DialError::Unreachable(e.to_string()))?;
        let stream: ControlStream = match *lock(&self.status_reply_delay) {
            Some(delay) => Box::new(SlowStatusReplies {
                inner: stream,
                delay,
                armed: false,
                sleep: None,
            }),
            None => Box::new(stream),
        };
        Ok(Dialed {
            stream,
            reused: false,
        })
    }
}

pub(super) fn fast_options() -> RemoteOptions {
    RemoteOptions {
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_millis(400),
        poll_initial: Duration::from_millis(200),
        poll_max: Duration::from_millis(500),
        greeting_timeout: Duration::from_secs(5),
        reply_timeout: Duration::from_secs(20),
    }
}

/// A node: unit store, remote work, `work` command, control service on a unix socket
/// and on TCP.
struct TestNode {
    id: String,
    dir: PathBuf,
    remote: Arc<RemoteWork>,
    listeners: Vec<ControlListener>,
    socket: PathBuf,
    tcp: SocketAddr,
}

pub(super) struct NodeSetup {
    pub(super) signer: bool,
    pub(super) verifier: bool,
    pub(super) options: RemoteOptions,
}

impl Default for NodeSetup {
    fn default() -> Self {
        NodeSetup {
            signer: false,
            verifier: false,
            options: fast_options(),
        }
    }
}

impl TestNode {
    async fn start(
        base: &Path,
        id: &str,
        mesh: &Arc<TcpDialer>,
        setup: NodeSetup,
    ) -> Result<TestNode> {
        let dir = base.join(id);
        std::fs::create_dir_all(&dir)?;
        let store = Workceptor::open_with(
            id,
            &dir.join("data"),
            test_types(),
            vec![RemoteWorkType::shared()],
        )
        .await?;
        let signer = if setup.signer {
            Some(Arc::new(WorkSigner::from_pem(
                PRIVATE_KEY,
                Duration::from_secs(600),
            )?))
        } else {
            None
        };
        let remote = RemoteWork::new(store.clone(), mesh.clone(), signer, setup.options);
        remote.recover().await;
        let mut command = WorkCommand::new(store.clone()).with_remote(remote.clone());
        if setup.verifier {
            command = command.with_verifier(Arc::new(SignatureVerifier::from_pem(PUBLIC_KEY, id)?));
        }
        let registry = CommandRegistry::new();
        registry.register(Arc::new(command))?;
        let service = ControlService::new(id, registry);
        let socket = dir.join("ctl.sock");
        let unix = service.serve_unix(&socket, 0o600).await?;
        let tcp = service.serve_tcp("127.0.0.1:0").await?;
        let tcp_addr = match tcp.local_addr() {
            ListenAddr::Tcp(addr) => *addr,
            other => bail!("unexpected listener {other:?}"),
        };
        mesh.set(id, tcp_addr);
        Ok(TestNode {
            id: id.to_owned(),
            dir,
            remote,
            listeners: vec![unix, tcp],
            socket,
            tcp: tcp_addr,
        })
    }

    /// Stops the node as a crash would: drivers end, nothing is written any more.
    async fn stop(self, mesh: &TcpDialer) {
        mesh.remove(&self.id);
        self.remote.shutdown();
        for l in self.listeners {
            l.close().await;
        }
    }

    fn unit_dir(&self, id: &str) -> PathBuf {
        self.dir.join("data").join(&self.id).join(id)
    }
}

// ---------------------------------------------------------------------------------
// A control client.

pub(super) struct Client {
    pub(super) reader: BufReader<tokio::io::ReadHalf<Box<dyn ControlIo>>>,
    pub(super) writer: tokio::io::WriteHalf<Box<dyn ControlIo>>,
}

impl Client {
    pub(super) async fn unix(path: &Path) -> Result<Client> {
        let s: Box<dyn ControlIo> = Box::new(UnixStream::connect(path).await?);
        Client::over(s).await
    }

    async fn tcp(addr: SocketAddr) -> Result<Client> {
        let s: Box<dyn ControlIo> = Box::new(tokio::net::TcpStream::connect(addr).await?);
        Client::over(s).await
    }

    async fn over(s: Box<dyn ControlIo>) -> Result<Client> {
        let (r, w) = tokio::io::split(s);
        let mut c = Client {
            reader: BufReader::new(r),
            writer: w,
        };
        let greeting = c.line().await?;
        if !greeting.starts_with("Receptor Control, node ") {
            bail!("bad greeting {greeting:?}");
        }
        Ok(c)
    }

    pub(super) async fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        tokio::time::timeout(WAIT, self.reader.read_line(&mut line))
            .await
            .context("no reply")??;
        Ok(line.trim_end_matches('\n').to_owned())
    }

    async fn send(&mut self, line: &str) -> Result<()> {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await?;
        Ok(())
    }

    pub(super) async fn ask(&mut self, line: &str) -> Result<String> {
        self.send(line).await?;
        self.line().await
    }
}

/// `work submit` with `request` (a string-form line or a JSON object) and `payload`:
/// the created line's id and the final reply line.
pub(super) async fn submit(
    socket: &Path,
    request: &str,
    payload: &[u8],
) -> Result<(String, String)> {
    let mut c = Client::unix(socket).await?;
    let created = c.ask(request).await?;
    let id = created
        .strip_prefix("Work unit created with ID ")
        .and_then(|r| r.strip_suffix(". Send stdin data and EOF."))
        .ok_or_else(|| anyhow!("submit refused: {created}"))?
        .to_owned();
    c.writer.write_all(payload).await?;
    c.writer.shutdown().await?;
    let reply = c.line().await?;
    Ok((id, reply))
}

pub(super) async fn submit_started(socket: &Path, request: &str, payload: &[u8]) -> Result<String> {
    let (id, reply) = submit(socket, request, payload).await?;
    assert_eq!(
        reply,
        format!(r#"{{"result":"Job Started","unitid":"{id}"}}"#)
    );
    Ok(id)
}

pub(super) async fn status(socket: &Path, id: &str) -> Result<Value> {
    let line = Client::unix(socket)
        .await?
        .ask(&format!("work status {id}"))
        .await?;
    serde_json::from_str(&line).with_context(|| line.clone())
}

/// Waits until `id`'s status satisfies `pred`; returns it.
pub(super) async fn wait_status(
    socket: &Path,
    id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = status(socket, id).await?;
        if pred(&s) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("{id} never {what}: {s}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(super) async fn wait_state(socket: &Path, id: &str, state: i64) -> Result<Value> {
    wait_status(socket, id, &format!("reached state {state}"), |s| {
        s["State"] == state
    })
    .await
}

/// `work results <id>` read to the end (the client half-closes after the header).
pub(super) async fn results(socket: &Path, id: &str) -> Result<Vec<u8>> {
    let mut c = Client::unix(socket).await?;
    let header = c.ask(&format!("work results {id}")).await?;
    if header != format!("Streaming results for work unit {id}") {
        bail!("results refused: {header}");
    }
    c.writer.shutdown().await?;
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, c.reader.read_to_end(&mut out))
        .await
        .context("results never ended")??;
    Ok(out)
}

/// `work cancel <id>` over the unix socket, which must confirm it.
pub(super) async fn cancel(socket: &Path, id: &str) -> Result<()> {
    let reply = Client::unix(socket)
        .await?
        .ask(&format!("work cancel {id}"))
        .await?;
    assert_eq!(reply, format!(r#"{{"cancelled":"{id}"}}"#));
    Ok(())
}

/// `work release <id>` over the unix socket, which must confirm it.
pub(super) async fn release(socket: &Path, id: &str) -> Result<()> {
    let reply = Client::unix(socket)
        .await?
        .ask(&format!("work release {id}"))
        .await?;
    assert_eq!(reply, format!(r#"{{"released":"{id}"}}"#));
    Ok(())
}

/// Work signed by the node at `socket` runs on the Go node `bar` (`signedcat`); unsigned
/// work is refused.
pub(super) async fn signed_work_runs_on_go_bar(socket: &Path) -> Result<()> {
    let id = submit_started(
        socket,
        r#"{"command":"work","subcommand":"submit","node":"bar","worktype":"signedcat","signwork":"true"}"#,
        b"signed-ok",
    )
    .await?;
    wait_state(socket, &id, 2).await?;
    assert_eq!(results(socket, &id).await?, b"signed-ok");
    let (_, reply) = submit(socket, "work submit bar signedcat", b"").await?;
    assert_eq!(
        reply,
        "ERROR: could not parse response: ERROR: could not verify signature: signature is empty"
    );
    Ok(())
}

/// Waits until `node` does not know unit `id` any more and its folder is gone.
async fn wait_gone(node: &TestNode, id: &str) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = Client::unix(&node.socket)
            .await?
            .ask(&format!("work status {id}"))
            .await?;
        if reply == format!("ERROR: unknown work unit {id}") && !node.unit_dir(id).exists() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{id} still on {}: {reply}", node.id);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `pred` until it holds.
async fn eventually(what: &str, mut pred: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while !pred() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn two_nodes(
    setup_foo: NodeSetup,
    setup_bar: NodeSetup,
) -> Result<(tempfile::TempDir, Arc<TcpDialer>, TestNode, TestNode)> {
    let dir = tempfile::tempdir()?;
    let mesh = Arc::new(TcpDialer::default());
    let foo = TestNode::start(dir.path(), "foo", &mesh, setup_foo).await?;
    let bar = TestNode::start(dir.path(), "bar", &mesh, setup_bar).await?;
    Ok((dir, mesh, foo, bar))
}

pub(super) fn extra_of(status: &Value) -> &Value {
    &status["ExtraData"]
}

// ---------------------------------------------------------------------------------
// Rust to Rust.

#[tokio::test]
async fn submit_follow_results_and_release() -> Result<()> {
    let (_dir, _mesh, foo, bar) = two_nodes(NodeSetup::default(), NodeSetup::default()).await?;
    let started = Instant::now();
    let id = submit_started(&foo.socket, "work submit bar cat", b"hello\nremote world\n").await?;
    let done = wait_state(&foo.socket, &id, 2).await?;
    let elapsed = started.elapsed();
    eprintln!("small remote unit: submit to Succeeded in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(results(&foo.socket, &id).await?, b"hello\nremote world\n");
    // Go's layout, byte for byte.
    let line = Client::unix(&foo.socket)
        .await?
        .ask(&format!("work status {id}"))
        .await?;
    assert_eq!(
        line,
        format!(
            r#"{{"Detail":"exit status 0","ExtraData":{{"RemoteNode":"bar","RemoteWorkType":"cat","RemoteParams":{{}},"RemoteUnitID":"{id}","RemoteStarted":true,"LocalCancelled":false,"LocalReleased":false,"SignWork":false,"TLSClient":"","Expiration":"0001-01-01T00:00:00Z"}},"State":2,"StateName":"Succeeded","StdoutSize":19,"WorkType":"remote"}}"#
        )
    );
    assert_eq!(done["StdoutSize"], 19);
    let file = std::fs::read_to_string(foo.unit_dir(&id).join("status"))?;
    assert!(file.starts_with(r#"{"State":2,"Detail":"exit status 0","StdoutSize":19,"WorkType":"remote","ExtraData":{"RemoteNode":"bar""#), "{file}");
    // The remote unit has the same id and the real type.
    let remote = status(&bar.socket, &id).await?;
    assert_eq!(remote["WorkType"], "cat");
    assert_eq!(remote["StdoutSize"], 19);
    assert_eq!(
        std::fs::read(bar.unit_dir(&id).join("stdin"))?,
        b"hello\nremote world\n"
    );
    assert_eq!(
        std::fs::read(foo.unit_dir(&id).join("stdin"))?,
        b"hello\nremote world\n"
    );
    // Release goes to both nodes.
    release(&foo.socket, &id).await?;
    for node in [&foo, &bar] {
        let reply = Client::unix(&node.socket)
            .await?
            .ask(&format!("work status {id}"))
            .await?;
        assert_eq!(reply, format!("ERROR: unknown work unit {id}"));
        assert!(!node.unit_dir(&id).exists());
    }
    Ok(())
}

/// A status poll that is in flight when the results stream ends carries the state from
/// before the end; the unit must not then wait a whole poll interval for the next one.
#[tokio::test]
async fn a_stale_poll_answer_does_not_delay_the_end() -> Result<()> {
    let slow_polls = RemoteOptions {
        poll_initial: Duration::from_secs(10),
        poll_max: Duration::from_secs(10),
        ..fast_options()
    };
    let (_dir, mesh, foo, _bar) = two_nodes(
        NodeSetup {
            options: slow_polls,
            ..NodeSetup::default()
        },
        NodeSetup::default(),
    )
    .await?;
    *lock(&mesh.status_reply_delay) = Some(Duration::from_millis(400));
    let started = Instant::now();
    // Two chunks 100 ms apart: the results end while the first poll's answer (Running)
    // is still on its way.
    let id = submit_started(&foo.socket, "work submit bar gen 1000 2 100", b"").await?;
    wait_state(&foo.socket, &id, 2).await?;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "finished after {elapsed:?}"
    );
    assert!(results(&foo.socket, &id).await? == pattern(1000));
    Ok(())
}

/// The control session of a finished unit's status poll serves the next unit's polls:
/// a later unit on the same node costs two connections (submit, results), not three.
#[tokio::test]
async fn status_sessions_are_reused_by_later_units() -> Result<()> {
    let (_dir, mesh, foo, _bar) = two_nodes(NodeSetup::default(), NodeSetup::default()).await?;
    for round in 0..3 {
        let before = mesh.dials("bar");
        let payload = format!("round {round}\n");
        let id = submit_started(&foo.socket, "work submit bar cat", payload.as_bytes()).await?;
        wait_state(&foo.socket, &id, 2).await?;
        assert_eq!(results(&foo.socket, &id).await?, payload.as_bytes());
        let dials = mesh.dials("bar") - before;
        let expected = if round == 0 { 3 } else { 2 };
        assert_eq!(dials, expected, "connections to bar for unit {round}");
    }
    Ok(())
}

#[tokio::test]
async fn large_payload_and_results_are_byte_identical() -> Result<()> {
    let (_dir, _mesh, foo, bar) = two_nodes(NodeSetup::default(), NodeSetup::default()).await?;
    let payload: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i * 7 % 253) as u8)
        .collect();
    let id = submit_started(&foo.socket, "work submit bar cat", &payload).await?;
    wait_state(&foo.socket, &id, 2).await?;
    assert!(std::fs::read(foo.unit_dir(&id).join("stdout"))? == payload);
    let size = 30 * 1024 * 1024;
    let started = Instant::now();
    let id = submit_started(
        &foo.socket,
        &format!("work submit bar gen {size} 30 0"),
        b"",
    )
    .await?;
    let done = wait_state(&foo.socket, &id, 2).await?;
    eprintln!("30 MiB of remote results in {:?}", started.elapsed());
    assert_eq!(done["StdoutSize"], size);
    let local = std::fs::read(foo.unit_dir(&id).join("stdout"))?;
    assert!(local == pattern(size), "results differ");
    assert!(local == std::fs::read(bar.unit_dir(&id).join("stdout"))?);
    assert!(results(&foo.socket, &id).await? == local);
    Ok(())
}

#[tokio::test]
async fn results_stream_while_the_remote_unit_runs() -> Result<()> {
    let (_dir, _mesh, foo, _bar) = two_nodes(NodeSetup::default(), NodeSetup::default()).await?;
    let id = submit_started(&foo.socket, "work submit bar gen 100000 20 50", b"").await?;
    // A local reader follows while the remote unit produces.
    let running = wait_state(&foo.socket, &id, 1).await?;
    assert_eq!(running["Detail"], "Running: PID 1");
    let out = results(&foo.socket, &id).await?;
    assert!(out == pattern(100_000));
    let done = status(&foo.socket, &id).await?;
    assert_eq!(done["State"], 2);
    assert_eq!(done["StdoutSize"], 100_000);
    Ok(())
}

#[tokio::test]
async fn params_errors_and_failures() -> Result<()> {
    let (_dir, _mesh, foo, bar) = two_nodes(NodeSetup::default(), NodeSetup::default()).await?;
    // Params: runtime params and other keys are forwarded; ttl and signwork are not.
    let id = submit_started(
        &foo.socket,
        r#"{"command":"work","subcommand":"submit","node":"bar","worktype":"echoparams","params":"p1 p2","my<param>":"v&1","ttl":"1h"}"#,
        b"",
    )
    .await?;
    wait_state(&foo.socket, &id, 2).await?;
    assert_eq!(
        String::from_utf8(results(&foo.socket, &id).await?)?,
        "p1 p2 {\"my<param>\": \"v&1\"}\n"
    );
    let line = Client::unix(&foo.socket)
        .await?
        .ask(&format!("work status {id}"))
        .await?;
    assert!(
        line.contains(r#""RemoteParams":{"my\u003cparam\u003e":"v\u00261","params":"p1 p2"}"#),
        "{line}"
    );
    let expiration = status(&foo.socket, &id).await?["ExtraData"]["Expiration"].clone();
    assert!(
        expiration
            .as_str()
            .is_some_and(|e| e.ends_with('Z') && e != "0001-01-01T00:00:00Z"),
        "{expiration}"
    );
    // A failing remote unit.
    let id = submit_started(&foo.socket, "work submit bar fail", b"x").await?;
    let failed = wait_state(&foo.socket, &id, 3).await?;
    assert_eq!(failed["Detail"], "exit status 3");
    assert_eq!(results(&foo.socket, &id).await?, b"oops\n");
    // Unknown remote work type: the unit fails with Go's text.
    let (id, reply) = submit(&foo.socket, "work submit bar nosuchtype", b"").await?;
    assert_eq!(
        reply,
        "ERROR: could not parse response: ERROR: unknown work type nosuchtype"
    );
    let failed = status(&foo.socket, &id).await?;
    assert_eq!(failed["State"], 3);
    assert_eq!(
        failed["Detail"],
        "Error starting worker: could not parse response: ERROR: unknown work type nosuchtype"
    );
    // A caller-chosen id that the remote node already has.
    let (_, reply) = submit(&bar.socket, r#"{"command":"work","subcommand":"submit","node":"localhost","worktype":"cat","workUnitID":"taken1"}"#, b"").await?;
    assert!(reply.contains("Job Started"), "{reply}");
    let (id, reply) = submit(&foo.socket, r#"{"command":"work","subcommand":"submit","node":"bar","worktype":"cat","workUnitID":"taken1"}"#, b"").await?;
    assert_eq!(id, "taken1");
    assert_eq!(reply, "ERROR: could not parse response: ERROR: workunit ID taken1 is already in use, cannot use the same workunit ID more than once");
    // Submission errors before any unit exists.
    let mut c = Client::unix(&foo.socket).await?;
    assert_eq!(
        c.ask(r#"{"command":"work","subcommand":"submit","node":"bar","worktype":"cat","tlsclient":"nope"}"#).await?,
        "ERROR: unknown TLS config nope"
    );
    assert_eq!(
        c.ask(r#"{"command":"work","subcommand":"submit","node":"bar","worktype":"cat","secret_x":"s"}"#).await?,
        "ERROR: cannot send secrets over a non-TLS connection"
    );
    Ok(())
}

#[tokio::test]
async fn secrets_are_forwarded_but_not_shown() -> Result<()> {
    let (_dir, mesh, foo, _bar) = two_nodes(NodeSetup::default(), NodeSetup::default()).await?;
    lock(&mesh.tls_names).insert("tlsc".to_owned());
    let id = submit_started(
        &foo.socket,
        r#"{"command":"work","subcommand":"submit","node":"bar","worktype":"echoparams","tlsclient":"tlsc","Secret_Token":"hush","params":"p"}"#,
        b"",
    )
    .await?;
    let done = wait_state(&foo.socket, &id, 2).await?;
    assert_eq!(extra_of(&done)["RemoteParams"], json!({"params":"p"}));
    assert_eq!(extra_of(&done)["TLSClient"], "tlsc");
    assert_eq!(
        String::from_utf8(results(&foo.socket, &id).await?)?,
        "p {\"Secret_Token\": \"hush\"}\n"
    );
    // Kept on disk, as Go keeps it.
    let file = std::fs::read_to_string(foo.unit_dir(&id).join("status"))?;
    assert!(file.contains("\"Secret_Token\":\"hush\""), "{file}");
    let list = Client::unix(&foo.socket).await?.ask("work list").await?;
    assert!(!list.contains("hush"), "{list}");
    Ok(())
}

#[tokio::test]
async fn unreachable_node_then_reachable() -> Result<()> {
    let (dir, mesh, foo, _bar) = two_nodes(NodeSetup::default(), NodeSetup::default()).await?;
    let (id, reply) = submit(&foo.socket, "work submit ghost cat", b"for the ghost").await?;
    assert_eq!(
        reply,
        format!(r#"{{"result":"Job Submitted","unitid":"{id}"}}"#)
    );
    let pending = status(&foo.socket, &id).await?;
    assert_eq!(pending["State"], 0);
    assert_eq!(pending["Detail"], "Starting Worker");
    assert_eq!(extra_of(&pending)["RemoteStarted"], false);
    assert_eq!(extra_of(&pending)["RemoteUnitID"], "");
    // Retries happen, with back-off.
    eventually("retries", || mesh.dials("ghost") >= 3).await?;
    // The node appears: the unit starts and finishes.
    let ghost = TestNode::start(dir.path(), "ghost", &mesh, NodeSetup::default()).await?;
    let done = wait_state(&foo.socket, &id, 2).await?;
    assert_eq!(extra_of(&done)["RemoteStarted"], true);
    assert_eq!(extra_of(&done)["RemoteUnitID"], id.as_str());
    assert_eq!(results(&foo.socket, &id).await?, b"for the ghost");
    assert_eq!(status(&ghost.socket, &id).await?["WorkType"], "cat");
    // A node that greets with another id is not the one we want.
    mesh.set("phantom", ghost.tcp);
    let (id, reply) = submit(&foo.socket, "work submit phantom cat", b"").await?;
    assert!(reply.contains("Job Submitted"), "{reply}");
    assert!(!ghost.unit_dir(&id).exists());
    Ok(())
}

#[tokio::test]
async fn cancel_and_release_before_the_start() -> Result<()> {
    let (_dir, _mesh, foo, _bar) = two_nodes(NodeSetup::default(), NodeSetup::default()).await?;
    let (id, reply) = submit(&foo.socket, "work submit ghost cat", b"data").await?;
    assert!(reply.contains("Job Submitted"));
    let mut c = Client::unix(&foo.socket).await?;
    assert_eq!(
        c.ask(&format!("work cancel {id}")).await?,
        format!(r#"{{"cancelled":"{id}"}}"#)
    );
    let s = status(&foo.socket, &id).await?;
    assert_eq!(s["State"], 3);
    assert_eq!(s["Detail"], "Locally Cancelled");
    assert_eq!(extra_of(&s)["LocalCancelled"], true);
    assert_eq!(
        c.ask(&format!("work release {id}")).await?,
        format!(r#"{{"released":"{id}"}}"#)
    );
    assert_eq!(
        c.ask(&format!("work status {id}")).await?,
        format!("ERROR: unknown work unit {id}")
    );
    assert!(!foo.unit_dir(&id).exists());
    // ttl: not started in time.
    let (id, reply) = submit(
        &foo.socket,
        r#"{"command":"work","subcommand":"submit","node":"ghost","worktype":"cat","ttl":"300ms"}"#,
        b"",
    )
    .await?;
    assert!(reply.contains("Job Submitted"));
    let expired = wait_state(&foo.socket, &id, 3).await?;
    let detail = expired["Detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("Work unit expired on "), "{detail}");
    let at: SystemTime = serde_json::from_value::<RemoteExtraData>(extra_of(&expired).clone())?
        .expiration
        .context("no expiration")?;
    assert_eq!(
        detail,
        format!("Work unit expired on {}", extra::expiry_stamp(at))
    );
    Ok(())
}

#[tokio::test]
async fn cancel_propagates_and_the_follower_ends() -> Result<()> {
    let (_dir, mesh, foo, bar) = two_nodes(NodeSetup::default(), NodeSetup::default()).await?;
    let id = submit_started(&foo.socket, "work submit bar sleeper", b"").await?;
    wait_state(&foo.socket, &id, 1).await?;
    wait_status(&foo.socket, &id, "got output", |s| s["StdoutSize"] == 9).await?;
    let mut c = Client::unix(&foo.socket).await?;
    assert_eq!(
        c.ask(&format!("work cancel {id}")).await?,
        format!(r#"{{"cancelled":"{id}"}}"#)
    );
    let s = wait_state(&foo.socket, &id, 4).await?;
    assert_eq!(s["Detail"], "Canceled");
    assert_eq!(extra_of(&s)["LocalCancelled"], true);
    assert_eq!(wait_state(&bar.socket, &id, 4).await?["Detail"], "Canceled");
    // The results of the cancelled unit end (Go's never do).
    assert_eq!(results(&foo.socket, &id).await?, b"sleeping\n");
    // The follower is done: no more connections to bar.
    let dials = mesh.dials("bar");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(mesh.dials("bar"), dials, "a finished unit is still polled");
    Ok(())
}

#[tokio::test]
async fn cancel_and_release_while_the_node_is_away() -> Result<()> {
    let (_dir, mesh, foo, bar) = two_nodes(NodeSetup::default(), NodeSetup::default()).await?;
    let a = submit_started(&foo.socket, "work submit bar sleeper", b"").await?;
    let b = submit_started(&foo.socket, "work submit bar sleeper", b"").await?;
    let c_id = submit_started(&foo.socket, "work submit bar sleeper", b"").await?;
    for id in [&a, &b, &c_id] {
        wait_state(&foo.socket, id, 1).await?;
    }
    mesh.remove("bar");
    let mut c = Client::unix(&foo.socket).await?;
    assert_eq!(
        c.ask(&format!("work cancel {a}")).await?,
        format!(r#"{{"cancel pending":"{a}"}}"#)
    );
    assert_eq!(
        c.ask(&format!("work release {b}")).await?,
        format!(r#"{{"release pending":"{b}"}}"#)
    );
    let s = status(&foo.socket, &b).await?;
    assert_eq!(extra_of(&s)["LocalReleased"], true);
    assert_eq!(
        c.ask(&format!("work release {b}")).await?,
        format!(r#"{{"release pending":"{b}"}}"#)
    );
    assert_eq!(
        c.ask(&format!("work force-release {c_id}")).await?,
        format!(r#"{{"released":"{c_id}"}}"#)
    );
    assert_eq!(
        c.ask(&format!("work status {c_id}")).await?,
        format!("ERROR: unknown work unit {c_id}")
    );
    // bar comes back: the pending cancel and release go through.
    mesh.set("bar", bar.tcp);
    wait_state(&foo.socket, &a, 4).await?;
    assert_eq!(status(&bar.socket, &a).await?["State"], 4);
    wait_gone(&foo, &b).await?;
    wait_gone(&bar, &b).await?;
    // The force-released unit was orphaned on bar.
    assert_eq!(status(&bar.socket, &c_id).await?["State"], 1);
    Ok(())
}

#[tokio::test]
async fn remote_unit_gone() -> Result<()> {
    let (_dir, _mesh, foo, bar) = two_nodes(NodeSetup::default(), NodeSetup::default()).await?;
    let id = submit_started(&foo.socket, "work submit bar sleeper", b"").await?;
    wait_state(&foo.socket, &id, 1).await?;
    release(&bar.socket, &id).await?;
    // bar cancels the unit before removing it: foo sees either.
    let s = wait_status(&foo.socket, &id, "ended", |s| {
        s["State"] == 3 || s["State"] == 4
    })
    .await?;
    assert!(
        (s["State"] == 3 && s["Detail"] == "Remote work unit is gone")
            || (s["State"] == 4 && s["Detail"] == "Canceled"),
        "{s}"
    );
    Ok(())
}

#[tokio::test]
async fn restart_resumes_following_from_the_local_size() -> Result<()> {
    let (dir, mesh, foo, bar) = two_nodes(NodeSetup::default(), NodeSetup::default()).await?;
    let total = 2_000_000;
    let slow = submit_started(
        &foo.socket,
        &format!("work submit bar gen {total} 40 50"),
        b"",
    )
    .await?;
    let done = submit_started(&foo.socket, "work submit bar cat", b"finished before").await?;
    wait_state(&foo.socket, &done, 2).await?;
    let stdout = foo.unit_dir(&slow).join("stdout");
    eventually("some results", || {
        std::fs::metadata(&stdout).is_ok_and(|m| m.len() > 100_000)
    })
    .await?;
    // Crash foo in the middle of the stream.
    foo.stop(&mesh).await;
    let at_crash = std::fs::metadata(&stdout)?.len();
    assert!(at_crash < total, "finished before the crash");
    let dials_before = mesh.dials("bar");
    let foo = TestNode::start(dir.path(), "foo", &mesh, NodeSetup::default()).await?;
    let s = wait_state(&foo.socket, &slow, 2).await?;
    assert_eq!(s["StdoutSize"], total);
    assert!(
        std::fs::read(&stdout)? == pattern(total as usize),
        "results differ after the restart"
    );
    assert!(std::fs::read(&stdout)? == std::fs::read(bar.unit_dir(&slow).join("stdout"))?);
    // The finished unit was not followed again: only the slow unit's connections.
    assert_eq!(status(&foo.socket, &done).await?["State"], 2);
    assert!(
        mesh.dials("bar") - dials_before <= 4,
        "{} dials",
        mesh.dials("bar") - dials_before
    );
    Ok(())
}

#[tokio::test]
async fn restart_recovery_of_units_in_each_state() -> Result<()> {
    let (dir, mesh, foo, bar) = two_nodes(NodeSetup::default(), NodeSetup::default()).await?;
    let pending = submit(&foo.socket, "work submit ghost cat", b"for the ghost")
        .await?
        .0;
    // A submission whose payload never ended: its client never saw it accepted.
    let mut unfinished = Client::unix(&foo.socket).await?;
    unfinished.send("work submit ghost cat").await?;
    let created = unfinished.line().await?;
    let no_payload = created
        .strip_prefix("Work unit created with ID ")
        .and_then(|r| r.strip_suffix(". Send stdin data and EOF."))
        .with_context(|| format!("submit refused: {created}"))?
        .to_owned();
    let running = submit_started(&foo.socket, "work submit bar sleeper", b"").await?;
    let releasing = submit_started(&foo.socket, "work submit bar sleeper", b"").await?;
    wait_state(&foo.socket, &running, 1).await?;
    wait_state(&foo.socket, &releasing, 1).await?;
    mesh.remove("bar");
    let reply = Client::unix(&foo.socket)
        .await?
        .ask(&format!("work release {releasing}"))
        .await?;
    assert!(reply.contains("release pending"), "{reply}");
    foo.stop(&mesh).await;
    mesh.set("bar", bar.tcp);
    drop(unfinished);
    let foo = TestNode::start(dir.path(), "foo", &mesh, NodeSetup::default()).await?;
    let s = status(&foo.socket, &no_payload).await?;
    assert_eq!(s["State"], 3);
    assert_eq!(
        s["Detail"],
        "Failed to restart: remote work had not previously started"
    );
    // The accepted unit that had not started yet is still being started (Go 1.6.9
    // fails it), and runs once its node appears.
    let s = status(&foo.socket, &pending).await?;
    assert_eq!(
        (s["State"].clone(), s["Detail"].clone()),
        (json!(0), json!("Starting Worker"))
    );
    let ghost = TestNode::start(dir.path(), "ghost", &mesh, NodeSetup::default()).await?;
    wait_state(&foo.socket, &pending, 2).await?;
    assert_eq!(results(&foo.socket, &pending).await?, b"for the ghost");
    assert_eq!(status(&ghost.socket, &pending).await?["State"], 2);
    wait_gone(&foo, &releasing).await?;
    wait_gone(&bar, &releasing).await?;
    // The running unit is followed again: cancel works end to end.
    let reply = Client::unix(&foo.socket)
        .await?
        .ask(&format!("work cancel {running}"))
        .await?;
    assert_eq!(reply, format!(r#"{{"cancelled":"{running}"}}"#));
    wait_state(&foo.socket, &running, 4).await?;
    Ok(())
}

/// The submitting node stopped after a start attempt had created the remote unit but
/// before it recorded the start: after the restart, a remote unit that got its whole
/// payload is adopted (not run twice), one whose payload was cut short is released and
/// the unit submitted again.
#[tokio::test]
async fn restart_reclaims_the_remote_unit_of_an_interrupted_start() -> Result<()> {
    let (dir, mesh, foo, bar) = two_nodes(NodeSetup::default(), NodeSetup::default()).await?;
    mesh.remove("bar");
    let submit_as = |id: &str| {
        format!(
            r#"{{"command":"work","subcommand":"submit","node":"bar","worktype":"cat","workUnitID":"{id}"}}"#
        )
    };
    let (adopt, reply) = submit(&foo.socket, &submit_as("adopt1"), b"adopt me").await?;
    assert!(reply.contains("Job Submitted"), "{reply}");
    let (clear, reply) = submit(&foo.socket, &submit_as("clear1"), b"fresh payload").await?;
    assert!(reply.contains("Job Submitted"), "{reply}");
    foo.stop(&mesh).await;
    // What the interrupted attempts left on bar: one unit that got its payload and ran,
    // one still waiting for the rest of its payload.
    let local_as = |id: &str| {
        format!(
            r#"{{"command":"work","subcommand":"submit","node":"localhost","worktype":"cat","workUnitID":"{id}"}}"#
        )
    };
    let (_, reply) = submit(&bar.socket, &local_as(&adopt), b"adopt me").await?;
    assert!(reply.contains("Job Started"), "{reply}");
    wait_state(&bar.socket, &adopt, 2).await?;
    let mut cut_short = Client::unix(&bar.socket).await?;
    cut_short.send(&local_as(&clear)).await?;
    let created = cut_short.line().await?;
    assert!(created.contains("Work unit created"), "{created}");
    mesh.set("bar", bar.tcp);
    let foo = TestNode::start(dir.path(), "foo", &mesh, NodeSetup::default()).await?;
    let adopted = wait_state(&foo.socket, &adopt, 2).await?;
    assert_eq!(extra_of(&adopted)["RemoteStarted"], true);
    assert_eq!(extra_of(&adopted)["RemoteUnitID"], adopt.as_str());
    assert_eq!(results(&foo.socket, &adopt).await?, b"adopt me");
    let cleared = wait_state(&foo.socket, &clear, 2).await?;
    assert_eq!(extra_of(&cleared)["RemoteStarted"], true);
    assert_eq!(results(&foo.socket, &clear).await?, b"fresh payload");
    assert_eq!(
        std::fs::read(bar.unit_dir(&clear).join("stdin"))?,
        b"fresh payload"
    );
    drop(cut_short);
    Ok(())
}

#[tokio::test]
async fn signed_remote_work() -> Result<()> {
    let (_dir, _mesh, foo, bar) = two_nodes(
        NodeSetup {
            signer: true,
            ..NodeSetup::default()
        },
        NodeSetup {
            verifier: true,
            ..NodeSetup::default()
        },
    )
    .await?;
    let id = submit_started(
        &foo.socket,
        r#"{"command":"work","subcommand":"submit","node":"bar","worktype":"signedcat","signwork":"true"}"#,
        b"signed-ok",
    )
    .await?;
    let s = wait_state(&foo.socket, &id, 2).await?;
    assert_eq!(extra_of(&s)["SignWork"], true);
    assert_eq!(results(&foo.socket, &id).await?, b"signed-ok");
    // Over TCP a signed unit needs a signature for results, cancel and release; over
    // the unix socket it does not.
    let mut tcp = Client::tcp(foo.tcp).await?;
    for sub in ["results", "cancel", "release"] {
        assert_eq!(
            tcp.ask(&format!("work {sub} {id}")).await?,
            "ERROR: could not verify signature: signature is empty"
        );
    }
    release(&foo.socket, &id).await?;
    assert!(!bar.unit_dir(&id).exists());
    // Unsigned: bar refuses.
    let (_, reply) = submit(&foo.socket, "work submit bar signedcat", b"").await?;
    assert_eq!(
        reply,
        "ERROR: could not parse response: ERROR: could not verify signature: signature is empty"
    );
    // Signed for a type that does not verify.
    let (_, reply) = submit(&foo.socket, r#"{"command":"work","subcommand":"submit","node":"bar","worktype":"cat","signwork":"true"}"#, b"").await?;
    assert_eq!(
        reply,
        "ERROR: could not parse response: ERROR: work type did not expect a signature"
    );
    // No signing key.
    let (id, reply) = submit(&bar.socket, r#"{"command":"work","subcommand":"submit","node":"foo","worktype":"cat","signwork":"true"}"#, b"x").await?;
    assert_eq!(reply, "ERROR: cannot sign work: signing key is empty");
    assert_eq!(
        status(&bar.socket, &id).await?["Detail"],
        "Error starting worker: cannot sign work: signing key is empty"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------
// Rust to Go.

/// Go node `bar` with the spec's work types and our public key.
pub(super) async fn go_bar(dir: &Path) -> Result<Option<GoNode>> {
    let public = dir.join("public.pem");
    std::fs::write(&public, PUBLIC_KEY)?;
    let extra = format!(
        "- work-verification:\n    publickey: {}\n\
         - work-command:\n    worktype: cat\n    command: cat\n\
         - work-command:\n    worktype: signedcat\n    command: cat\n    verifysignature: true\n\
         - work-command:\n    worktype: sleeper\n    command: sleep\n    params: \"300\"\n\
         - work-command:\n    worktype: echoparams\n    command: echo\n    params: base\n    allowruntimeparams: true\n\
         - work-command:\n    worktype: gen\n    command: dd\n    params: status=none\n    allowruntimeparams: true\n",
        public.display()
    );
    GoNode::start(dir, "bar", &extra).await
}

#[tokio::test]
async fn rust_to_go() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let Some(go) = go_bar(dir.path()).await? else {
        return Ok(());
    };
    let mesh = Arc::new(TcpDialer::default());
    mesh.set("bar", SocketAddr::from(([127, 0, 0, 1], go.control_port)));
    let foo = TestNode::start(
        dir.path(),
        "foo",
        &mesh,
        NodeSetup {
            signer: true,
            ..NodeSetup::default()
        },
    )
    .await?;
    let go_unit = |id: &str| dir.path().join("go-bar/data/bar").join(id);

    // Payload of a few MB through cat.
    let payload: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i * 13 % 251) as u8)
        .collect();
    let started = Instant::now();
    let id = submit_started(&foo.socket, "work submit bar cat", &payload).await?;
    let done = wait_state(&foo.socket, &id, 2).await?;
    eprintln!("Rust to Go, 3 MiB cat: {:?}", started.elapsed());
    assert_eq!(done["Detail"], "exit status 0");
    assert!(std::fs::read(foo.unit_dir(&id).join("stdout"))? == payload);
    let remote: Value = serde_json::from_str(&go.command(&format!("work status {id}")).await?)?;
    assert_eq!(remote["WorkType"], "cat");
    assert_eq!(remote["StdoutSize"], payload.len());

    // Tens of MB of results (Go's runner writes them with O_SYNC: dd writes them in
    // large blocks).
    let id = submit_started(
        &foo.socket,
        "work submit bar gen if=/dev/urandom bs=1M count=40 iflag=fullblock",
        b"",
    )
    .await?;
    let done = wait_state(&foo.socket, &id, 2).await?;
    assert_eq!(done["StdoutSize"], 40 << 20);
    assert!(
        std::fs::read(foo.unit_dir(&id).join("stdout"))?
            == std::fs::read(go_unit(&id).join("stdout"))?
    );

    // Params as Go forwards them.
    let id = submit_started(
        &foo.socket,
        r#"{"command":"work","subcommand":"submit","node":"bar","worktype":"echoparams","params":"p1 p2"}"#,
        b"",
    )
    .await?;
    wait_state(&foo.socket, &id, 2).await?;
    assert_eq!(results(&foo.socket, &id).await?, b"base p1 p2\n");

    // Signed work verified by Go.
    signed_work_runs_on_go_bar(&foo.socket).await?;
    let (_, reply) = submit(&foo.socket, "work submit bar nosuchtype", b"").await?;
    assert_eq!(
        reply,
        "ERROR: could not parse response: ERROR: unknown work type nosuchtype"
    );

    // Cancel: Go's results stream of a Canceled unit never ends; the follower must.
    let id = submit_started(&foo.socket, "work submit bar sleeper", b"").await?;
    wait_state(&foo.socket, &id, 1).await?;
    cancel(&foo.socket, &id).await?;
    let s = wait_state(&foo.socket, &id, 4).await?;
    assert_eq!(s["Detail"], "Canceled");
    assert_eq!(results(&foo.socket, &id).await?, b"");
    let dials = mesh.dials("bar");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(mesh.dials("bar"), dials, "a finished unit is still polled");

    // Release removes the unit on the Go node.
    release(&foo.socket, &id).await?;
    assert_eq!(
        go.command(&format!("work status {id}")).await?,
        format!("ERROR: unknown work unit {id}")
    );
    assert!(!go_unit(&id).exists());
    Ok(())
}

#[tokio::test]
async fn rust_to_go_restart_in_the_middle_of_results() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let Some(go) = go_bar(dir.path()).await? else {
        return Ok(());
    };
    let mesh = Arc::new(TcpDialer::default());
    mesh.set("bar", SocketAddr::from(([127, 0, 0, 1], go.control_port)));
    let foo = TestNode::start(dir.path(), "foo", &mesh, NodeSetup::default()).await?;
    // 60 MB: the crash comes while they stream.
    let id = submit_started(
        &foo.socket,
        "work submit bar gen if=/dev/zero bs=1M count=60",
        b"",
    )
    .await?;
    let stdout = foo.unit_dir(&id).join("stdout");
    eventually("some results", || {
        std::fs::metadata(&stdout).is_ok_and(|m| m.len() > 0)
    })
    .await?;
    foo.stop(&mesh).await;
    let at_crash = std::fs::metadata(&stdout)?.len();
    assert!(at_crash < 60 << 20, "finished before the crash");
    let foo = TestNode::start(dir.path(), "foo", &mesh, NodeSetup::default()).await?;
    let s = wait_state(&foo.socket, &id, 2).await?;
    assert_eq!(s["StdoutSize"], 60 << 20);
    let local = std::fs::read(&stdout)?;
    assert_eq!(local.len(), 60 << 20);
    assert!(local.iter().all(|&b| b == 0));
    Ok(())
}
