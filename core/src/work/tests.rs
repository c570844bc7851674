//! Tests of the unit store and the `work` command over real files, driven through the
//! control-session types (a `ControlConn` over an in-memory duplex pipe).

use std::collections::{HashSet, VecDeque};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::watch;

use super::control::WorkCommand;
use super::status::{self, UnitStatus};
use super::store::Workceptor;
use super::worktype::{
    ReattachRequest, StartRequest, UnitState, WorkHandle, WorkProgress, WorkType, WorkTypeError,
};
use crate::control::command::{
    Args, BoxRead, BoxWrite, ControlCommand, ControlConn, PeerKind, Reply,
};

const WAIT: Duration = Duration::from_secs(20);

fn progress(state: UnitState, detail: &str, extra: Option<Value>) -> WorkProgress {
    WorkProgress {
        state,
        detail: detail.to_owned(),
        extra,
    }
}

/// Copies the payload to the results in a thread, then succeeds.
struct CopyType;

struct NoopHandle;
impl WorkHandle for NoopHandle {
    fn cancel(&self) -> Result<(), WorkTypeError> {
        Ok(())
    }
}

impl WorkType for CopyType {
    fn name(&self) -> &str {
        "copy"
    }
    fn verify_signature(&self) -> bool {
        false
    }
    fn allow_runtime_params(&self) -> bool {
        true
    }
    fn start(
        &self,
        mut req: StartRequest,
        tx: watch::Sender<WorkProgress>,
    ) -> Result<Box<dyn WorkHandle>, WorkTypeError> {
        tx.send_replace(progress(UnitState::Running, "Running: copy", None));
        std::thread::spawn(move || {
            let mut data = Vec::new();
            let copied = req
                .stdin
                .read_to_end(&mut data)
                .and_then(|_| req.stdout.write_all(&data))
                .and_then(|()| req.stdout.write_all(req.params.as_bytes()));
            let end = match copied {
                Ok(()) => progress(UnitState::Succeeded, "exit status 0", None),
                Err(e) => progress(UnitState::Failed, &e.to_string(), None),
            };
            tx.send_replace(end);
        });
        Ok(Box::new(NoopHandle))
    }
    fn reattach(
        &self,
        _req: ReattachRequest,
        _tx: watch::Sender<WorkProgress>,
    ) -> Result<Box<dyn WorkHandle>, WorkTypeError> {
        Err(WorkTypeError::Refused(
            "copy units cannot be re-attached".to_owned(),
        ))
    }
}

/// Writes whatever the test sends through a gate, succeeds when the gate closes, and
/// reports Canceled when cancelled.
#[derive(Default)]
struct GatedType {
    gates: Mutex<VecDeque<Receiver<Vec<u8>>>>,
}

impl GatedType {
    fn gate(&self) -> SyncSender<Vec<u8>> {
        let (tx, rx) = sync_channel(1);
        self.gates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(rx);
        tx
    }
}

struct FlagHandle {
    cancelled: Arc<AtomicBool>,
    tx: watch::Sender<WorkProgress>,
    refuse: bool,
}

impl WorkHandle for FlagHandle {
    fn cancel(&self) -> Result<(), WorkTypeError> {
        if self.refuse {
            return Err(WorkTypeError::Refused("cannot stop this unit".to_owned()));
        }
        self.cancelled.store(true, Ordering::SeqCst);
        self.tx
            .send_replace(progress(UnitState::Canceled, "Canceled", None));
        Ok(())
    }
}

impl WorkType for GatedType {
    fn name(&self) -> &str {
        "gated"
    }
    fn verify_signature(&self) -> bool {
        false
    }
    fn allow_runtime_params(&self) -> bool {
        false
    }
    fn start(
        &self,
        mut req: StartRequest,
        tx: watch::Sender<WorkProgress>,
    ) -> Result<Box<dyn WorkHandle>, WorkTypeError> {
        let gate = self
            .gates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front()
            .ok_or(WorkTypeError::Refused("no gate".to_owned()))?;
        tx.send_replace(progress(UnitState::Running, "Running: gated", None));
        let cancelled = Arc::new(AtomicBool::new(false));
        let handle = FlagHandle {
            cancelled: cancelled.clone(),
            tx: tx.clone(),
            refuse: false,
        };
        std::thread::spawn(move || {
            while let Ok(chunk) = gate.recv() {
                if req.stdout.write_all(&chunk).is_err() {
                    break;
                }
            }
            if !cancelled.load(Ordering::SeqCst) {
                tx.send_replace(progress(UnitState::Succeeded, "exit status 0", None));
            }
        });
        Ok(Box::new(handle))
    }
    fn reattach(
        &self,
        _req: ReattachRequest,
        _tx: watch::Sender<WorkProgress>,
    ) -> Result<Box<dyn WorkHandle>, WorkTypeError> {
        Err(WorkTypeError::Refused(
            "gated units cannot be re-attached".to_owned(),
        ))
    }
}

/// Runs until cancelled. Its ExtraData names a token; re-attaching works for tokens the
/// test declares alive. `stubborn` units refuse to be cancelled.
#[derive(Default)]
struct BlockType {
    alive: Mutex<HashSet<String>>,
}

impl WorkType for BlockType {
    fn name(&self) -> &str {
        "block"
    }
    fn verify_signature(&self) -> bool {
        false
    }
    fn allow_runtime_params(&self) -> bool {
        true
    }
    fn start(
        &self,
        req: StartRequest,
        tx: watch::Sender<WorkProgress>,
    ) -> Result<Box<dyn WorkHandle>, WorkTypeError> {
        if req.params == "fail-to-start" {
            return Err(WorkTypeError::Refused("refusing to start".to_owned()));
        }
        tx.send_replace(progress(
            UnitState::Running,
            "Running: block",
            Some(json!({"Pid": 1, "Params": req.params})),
        ));
        Ok(Box::new(FlagHandle {
            cancelled: Arc::new(AtomicBool::new(false)),
            tx,
            refuse: req.params == "stubborn",
        }))
    }
    fn reattach(
        &self,
        req: ReattachRequest,
        tx: watch::Sender<WorkProgress>,
    ) -> Result<Box<dyn WorkHandle>, WorkTypeError> {
        let alive = self
            .alive
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&req.unit_id);
        if !alive {
            return Err(WorkTypeError::Refused("process is gone".to_owned()));
        }
        Ok(Box::new(FlagHandle {
            cancelled: Arc::new(AtomicBool::new(false)),
            tx,
            refuse: false,
        }))
    }
}

struct Node {
    _dir: tempfile::TempDir,
    datadir: std::path::PathBuf,
    store: Arc<Workceptor>,
    cmd: Arc<WorkCommand>,
    gated: Arc<GatedType>,
    block: Arc<BlockType>,
}

impl Node {
    async fn new() -> Result<Node> {
        let dir = tempfile::tempdir()?;
        let datadir = dir.path().join("data");
        let gated = Arc::new(GatedType::default());
        let block = Arc::new(BlockType::default());
        let store = Workceptor::open("foo-1.x", &datadir, types(&gated, &block)).await?;
        let cmd = Arc::new(WorkCommand::new(store.clone()));
        Ok(Node {
            _dir: dir,
            datadir,
            store,
            cmd,
            gated,
            block,
        })
    }

    fn node_dir(&self) -> std::path::PathBuf {
        self.datadir.join("foo-1.x")
    }

    /// Runs one command; returns the reply and everything the server wrote.
    async fn run(
        &self,
        args: Args,
        payload: Option<&[u8]>,
    ) -> Result<(Result<Reply, String>, Vec<u8>)> {
        let (mut conn, mut client) = conn_pair(PeerKind::Unix);
        let cmd = self.cmd.clone();
        let task = tokio::spawn(async move {
            let reply = cmd.run(args, &mut conn).await;
            (reply, conn)
        });
        if let Some(payload) = payload {
            client.write_all(payload).await?;
        }
        client.shutdown().await?;
        let (reply, conn) = tokio::time::timeout(WAIT, task).await??;
        drop(conn);
        let mut out = Vec::new();
        client.read_to_end(&mut out).await?;
        Ok((reply, out))
    }

    async fn text(&self, line: &str) -> Result<(Result<Reply, String>, String)> {
        let (reply, out) = self.run(Args::Text(line.to_owned()), None).await?;
        Ok((reply, String::from_utf8(out)?))
    }

    async fn submit(&self, line: &str, payload: &[u8]) -> Result<String> {
        let (reply, out) = self.run(Args::Text(line.to_owned()), Some(payload)).await?;
        let out = String::from_utf8(out)?;
        let id = out
            .strip_prefix("Work unit created with ID ")
            .and_then(|rest| rest.split_once(". Send stdin data and EOF.\n"))
            .map(|(id, _)| id.to_owned())
            .ok_or_else(|| anyhow!("unexpected submit output {out:?}"))?;
        match reply {
            Ok(Reply::Json(v)) => {
                assert_eq!(v, json!({"result": "Job Started", "unitid": id}));
            }
            other => bail!("submit failed: {other:?}"),
        }
        Ok(id)
    }

    async fn status(&self, id: &str) -> Result<Value> {
        let (reply, out) = self.text(&format!("status {id}")).await?;
        match reply {
            Ok(Reply::Done) => Ok(serde_json::from_str(out.trim_end())?),
            other => bail!("status failed: {other:?}"),
        }
    }

    async fn wait_state(&self, id: &str, state: UnitState) -> Result<UnitStatus> {
        let unit = self.store.get(id)?;
        let mut rx = unit.subscribe();
        let wanted = state.code();
        let status = tokio::time::timeout(WAIT, rx.wait_for(|s| s.state == wanted))
            .await
            .context("timed out waiting for state")??
            .clone();
        Ok(status)
    }
}

fn types(gated: &Arc<GatedType>, block: &Arc<BlockType>) -> Vec<Arc<dyn WorkType>> {
    vec![
        Arc::new(CopyType) as Arc<dyn WorkType>,
        gated.clone() as Arc<dyn WorkType>,
        block.clone() as Arc<dyn WorkType>,
    ]
}

fn conn_pair(peer: PeerKind) -> (ControlConn, DuplexStream) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (r, w) = tokio::io::split(server);
    let reader: BoxRead = Box::pin(r);
    let writer: BoxWrite = Box::pin(w);
    (
        ControlConn {
            reader: BufReader::new(reader),
            writer,
            peer,
            limits: crate::control::ControlLimits::default(),
        },
        client,
    )
}

fn err_of(reply: Result<Reply, String>) -> String {
    match reply {
        Err(e) => e,
        Ok(r) => format!("unexpected success: {r:?}"),
    }
}

fn dir_entries(path: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(path)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    Ok(names)
}

#[tokio::test]
async fn submit_status_list_results_release() -> Result<()> {
    let node = Node::new().await?;
    let id = node
        .submit("submit localhost copy", b"hello\nworld\n")
        .await?;
    assert!(id.starts_with("foo1x") && id.len() == 13, "{id}");
    node.wait_state(&id, UnitState::Succeeded).await?;

    // The folder, its modes and the status file as Go writes it.
    let unit_dir = node.node_dir().join(&id);
    assert_eq!(fs::metadata(&unit_dir)?.permissions().mode() & 0o777, 0o700);
    assert_eq!(
        dir_entries(&unit_dir)?,
        ["status", "status.tmp", "stdin", "stdout"]
    );
    for f in ["status", "stdin", "stdout"] {
        assert_eq!(
            fs::metadata(unit_dir.join(f))?.permissions().mode() & 0o777,
            0o600,
            "{f}"
        );
    }
    assert_eq!(fs::read(unit_dir.join("stdin"))?, b"hello\nworld\n");
    assert_eq!(
        fs::read_to_string(unit_dir.join("status"))?,
        "{\"State\":2,\"Detail\":\"exit status 0\",\"StdoutSize\":12,\"WorkType\":\"copy\",\"ExtraData\":null}\n"
    );

    let (reply, out) = node.text(&format!("status {id}")).await?;
    assert!(matches!(reply, Ok(Reply::Done)));
    assert_eq!(
        out,
        "{\"Detail\":\"exit status 0\",\"ExtraData\":null,\"State\":2,\"StateName\":\"Succeeded\",\"StdoutSize\":12,\"WorkType\":\"copy\"}\n"
    );
    let (_, out) = node.text(&format!("list {id}")).await?;
    assert_eq!(
        out,
        format!("{{\"{id}\":{{\"Detail\":\"exit status 0\",\"ExtraData\":null,\"State\":2,\"StateName\":\"Succeeded\",\"StdoutSize\":12,\"WorkType\":\"copy\"}}}}\n")
    );
    let (reply, out) = node.text("list").await?;
    assert!(matches!(reply, Ok(Reply::Done)));
    let all: Value = serde_json::from_str(out.trim_end())?;
    assert_eq!(all.as_object().map(|m| m.len()), Some(1));

    // Results from the start, from an offset (string and JSON forms), and past the end.
    let (reply, out) = node.text(&format!("results {id}")).await?;
    assert!(matches!(reply, Ok(Reply::Done)));
    assert_eq!(
        out,
        format!("Streaming results for work unit {id}\nhello\nworld\n")
    );
    let (_, out) = node.text(&format!("results {id} 6")).await?;
    assert_eq!(
        out,
        format!("Streaming results for work unit {id}\nworld\n")
    );
    let json_args = json!({"command":"work","subcommand":"results","unitid":id,"startpos":"3"});
    let Value::Object(map) = json_args else {
        bail!("not an object")
    };
    let (_, out) = node.run(Args::Json(map), None).await?;
    assert_eq!(
        String::from_utf8(out)?,
        format!("Streaming results for work unit {id}\nlo\nworld\n")
    );
    let (_, out) = node.text(&format!("results {id} 100")).await?;
    assert_eq!(out, format!("Streaming results for work unit {id}\n"));

    // Cancel of a finished unit is a no-op, as in Go.
    let (reply, _) = node.text(&format!("cancel {id}")).await?;
    assert!(matches!(reply, Ok(Reply::Json(v)) if v == json!({"cancelled": id})));
    assert_eq!(node.status(&id).await?["StateName"], "Succeeded");

    let (reply, _) = node.text(&format!("release {id}")).await?;
    assert!(matches!(reply, Ok(Reply::Json(v)) if v == json!({"released": id})));
    assert!(!unit_dir.exists());
    let (reply, _) = node.text(&format!("status {id}")).await?;
    assert_eq!(err_of(reply), format!("unknown work unit {id}"));
    let (reply, _) = node.text(&format!("release {id}")).await?;
    assert_eq!(err_of(reply), format!("unknown work unit {id}"));
    Ok(())
}

#[tokio::test]
async fn runtime_params_and_pipelined_payload() -> Result<()> {
    let node = Node::new().await?;
    let id = node.submit("submit foo-1.x copy a   b", b"x").await?;
    let status = node.wait_state(&id, UnitState::Succeeded).await?;
    assert_eq!(status.stdout_size, 6);
    assert_eq!(
        fs::read(node.node_dir().join(&id).join("stdout"))?,
        b"xa   b"
    );
    Ok(())
}

#[tokio::test]
async fn submit_errors_leave_nothing_behind() -> Result<()> {
    let node = Node::new().await?;
    let cases: Vec<(Args, &str)> = vec![
        (
            Args::Text("submit localhost nosuchtype".into()),
            "unknown work type nosuchtype",
        ),
        (
            Args::Text("submit localhost gated extra params".into()),
            "extra params provided but not allowed",
        ),
        (
            Args::Text("submit localhost".into()),
            "work submit requires a target node and work type",
        ),
        (Args::Text("".into()), "bad command"),
        (Args::Text("bogus".into()), "bad command"),
        (Args::Text("list nosuch".into()), "unknown work unit nosuch"),
        (
            Args::Text("cancel nosuch".into()),
            "unknown work unit nosuch",
        ),
        (
            Args::Text("force-release nosuch".into()),
            "unknown work unit nosuch",
        ),
        (
            Args::Text("results nosuch".into()),
            "unknown work unit nosuch",
        ),
    ];
    let json_cases = vec![
        (
            json!({"command":"work","subcommand":"submit","node":"localhost","worktype":"copy","workUnitID":"../evil"}),
            "invalid work unit ID \"../evil\"",
        ),
        (
            json!({"command":"work","subcommand":"submit","node":"localhost","worktype":"copy","workUnitID":"a/b"}),
            "invalid work unit ID \"a/b\"",
        ),
        (
            json!({"command":"work","subcommand":"submit","node":"localhost","worktype":"copy","ttl":"1m"}),
            "ttl option is intended for remote work only",
        ),
        (
            json!({"command":"work","subcommand":"submit","node":"localhost","worktype":"copy","signature":"x"}),
            "work type did not expect a signature",
        ),
        (
            json!({"command":"work","subcommand":"submit","node":"bar","worktype":"copy","secret_x":"s"}),
            "cannot send secrets over a non-TLS connection",
        ),
        (
            json!({"command":"work","subcommand":"submit","node":"bar","worktype":"copy","ttl":"bogus"}),
            "time: invalid duration \"bogus\"",
        ),
        (
            json!({"command":"work","subcommand":"submit","node":"bar","worktype":"copy"}),
            "cannot submit work to node bar: remote work is not available on this node",
        ),
    ];
    let mut all = cases;
    for (v, want) in json_cases {
        let Value::Object(map) = v else {
            bail!("not an object")
        };
        all.push((Args::Json(map), want));
    }
    for (args, want) in all {
        let (reply, out) = node.run(args.clone(), Some(b"payload\n")).await?;
        let err = err_of(reply);
        assert!(
            err.starts_with(want),
            "{args:?}: got {err:?}, want {want:?}"
        );
        assert!(out.is_empty(), "{args:?} wrote {out:?}");
    }
    assert!(dir_entries(&node.node_dir())?.is_empty());
    assert!(!node.datadir.join("evil").exists());
    assert!(node.store.list().is_empty());

    // A work type that fails to start leaves a Failed unit, as in Go.
    let (reply, out) = node
        .run(
            Args::Text("submit localhost block fail-to-start".into()),
            None,
        )
        .await?;
    assert_eq!(err_of(reply), "refusing to start");
    let out = String::from_utf8(out)?;
    let id = out
        .strip_prefix("Work unit created with ID ")
        .and_then(|r| r.split_once('.'))
        .map(|(id, _)| id.to_owned())
        .ok_or_else(|| anyhow!("{out}"))?;
    let status = node.status(&id).await?;
    assert_eq!(status["Detail"], "Error starting worker: refusing to start");
    assert_eq!(status["State"], 3);
    Ok(())
}

#[tokio::test]
async fn caller_supplied_ids() -> Result<()> {
    let node = Node::new().await?;
    let submit = |id: &str| {
        let v = json!({"command":"work","subcommand":"submit","node":"localhost","worktype":"copy","workUnitID":id});
        match v {
            Value::Object(map) => Args::Json(map),
            _ => Args::Text(String::new()),
        }
    };
    let (reply, out) = node.run(submit("My.Unit_01-a"), Some(b"x")).await?;
    assert!(matches!(reply, Ok(Reply::Json(_))), "{reply:?}");
    assert!(String::from_utf8(out)?.starts_with("Work unit created with ID My.Unit_01-a. Send"));
    let (reply, _) = node.run(submit("My.Unit_01-a"), Some(b"x")).await?;
    assert_eq!(
        err_of(reply),
        "workunit ID My.Unit_01-a is already in use, cannot use the same workunit ID more than once"
    );
    Ok(())
}

#[tokio::test]
async fn results_follow_a_running_unit() -> Result<()> {
    let node = Node::new().await?;
    let gate = node.gated.gate();
    let id = node.submit("submit localhost gated", b"").await?;

    let (mut conn, client) = conn_pair(PeerKind::Unix);
    let cmd = node.cmd.clone();
    let line = format!("results {id}");
    let task = tokio::spawn(async move {
        let reply = cmd.run(Args::Text(line), &mut conn).await;
        (reply, conn)
    });
    let mut client = BufReader::new(client);
    let mut header = String::new();
    tokio::time::timeout(WAIT, client.read_line(&mut header)).await??;
    assert_eq!(header, format!("Streaming results for work unit {id}\n"));

    let mut expected = Vec::new();
    for i in 0..5 {
        let chunk = format!("chunk {i}\n").repeat(1 + i * 5000).into_bytes();
        expected.extend_from_slice(&chunk);
        gate.send(chunk.clone())
            .map_err(|_| anyhow!("gate closed"))?;
        let mut got = vec![0u8; chunk.len()];
        tokio::time::timeout(WAIT, client.read_exact(&mut got)).await??;
        assert_eq!(got, chunk);
        assert!(!task.is_finished(), "stream ended while the unit runs");
    }
    drop(gate);
    let (reply, conn) = tokio::time::timeout(WAIT, task).await??;
    assert!(matches!(reply, Ok(Reply::Done)), "{reply:?}");
    drop(conn);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await?;
    assert!(rest.is_empty());
    let status = node.status(&id).await?;
    assert_eq!(status["StateName"], "Succeeded");
    assert_eq!(status["StdoutSize"], expected.len());
    assert_eq!(
        fs::read(node.node_dir().join(&id).join("stdout"))?,
        expected
    );
    Ok(())
}

#[tokio::test]
async fn results_of_a_cancelled_unit_end() -> Result<()> {
    let node = Node::new().await?;
    let gate = node.gated.gate();
    let id = node.submit("submit localhost gated", b"").await?;
    gate.send(b"partial".to_vec())
        .map_err(|_| anyhow!("gate closed"))?;

    let (mut conn, mut client) = conn_pair(PeerKind::Tcp);
    let cmd = node.cmd.clone();
    let line = format!("results {id}");
    let task = tokio::spawn(async move {
        let reply = cmd.run(Args::Text(line), &mut conn).await;
        (reply, conn)
    });
    let (reply, _) = node.text(&format!("cancel {id}")).await?;
    assert!(matches!(reply, Ok(Reply::Json(v)) if v == json!({"cancelled": id})));
    assert_eq!(node.status(&id).await?["StateName"], "Canceled");
    let (reply, conn) = tokio::time::timeout(WAIT, task).await??;
    assert!(matches!(reply, Ok(Reply::Done)));
    drop(conn);
    drop(gate);
    let mut out = Vec::new();
    client.read_to_end(&mut out).await?;
    assert_eq!(
        out,
        format!("Streaming results for work unit {id}\npartial").into_bytes()
    );
    Ok(())
}

#[tokio::test]
async fn release_of_running_units() -> Result<()> {
    let node = Node::new().await?;
    // A running unit is cancelled, then removed.
    let id = node.submit("submit localhost block", b"").await?;
    node.wait_state(&id, UnitState::Running).await?;
    let (reply, _) = node.text(&format!("release {id}")).await?;
    assert!(matches!(reply, Ok(Reply::Json(v)) if v == json!({"released": id})));
    assert!(!node.node_dir().join(&id).exists());

    // A running unit that cannot be stopped is not released, unless forced.
    let id = node.submit("submit localhost block stubborn", b"").await?;
    node.wait_state(&id, UnitState::Running).await?;
    let (reply, _) = node.text(&format!("release {id}")).await?;
    assert_eq!(
        err_of(reply),
        format!("cannot release work unit {id}: it is still running and cannot be cancelled: cannot stop this unit")
    );
    assert_eq!(node.status(&id).await?["StateName"], "Running");
    assert!(node.node_dir().join(&id).join("status").exists());
    let (reply, _) = node.text(&format!("cancel {id}")).await?;
    assert_eq!(err_of(reply), "cannot stop this unit");
    let (reply, _) = node.text(&format!("force-release {id}")).await?;
    assert!(matches!(reply, Ok(Reply::Json(v)) if v == json!({"released": id})));
    assert!(!node.node_dir().join(&id).exists());
    assert!(node.store.list().is_empty());
    Ok(())
}

#[tokio::test]
async fn restart_with_units_in_every_state() -> Result<()> {
    let node = Node::new().await?;
    let succeeded = node.submit("submit localhost copy", b"done").await?;
    node.wait_state(&succeeded, UnitState::Succeeded).await?;
    let canceled = node.submit("submit localhost block", b"").await?;
    node.wait_state(&canceled, UnitState::Running).await?;
    node.store.cancel(&canceled).await?;
    let failed = node.store.create("copy", None).await?;
    node.store
        .fail(&failed, "Error reading input data: boom".into())
        .await;
    let pending = node.store.create("copy", Some("pending1")).await?;
    let alive = node.submit("submit localhost block p1", b"").await?;
    node.wait_state(&alive, UnitState::Running).await?;
    let gone = node.submit("submit localhost block p2", b"").await?;
    node.wait_state(&gone, UnitState::Running).await?;
    // A unit of a type this node does not have, and a unit with a broken status file.
    let ghost_dir = node.node_dir().join("ghost01");
    fs::create_dir(&ghost_dir)?;
    let mut ghost = UnitStatus::new(UnitState::Succeeded, "done elsewhere", "ghosttype");
    ghost.extra = Some(json!({"x": 1}));
    status::write_status_file(&ghost_dir, &ghost, true)?;
    let broken_dir = node.node_dir().join("broken01");
    fs::create_dir(&broken_dir)?;
    fs::write(broken_dir.join("status"), b"{\"State\":")?;

    let datadir = node.datadir.clone();
    let keep = node._dir;
    drop(node.cmd);
    drop(node.store);

    let gated = Arc::new(GatedType::default());
    let block = Arc::new(BlockType::default());
    block
        .alive
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(alive.clone());
    let store = Workceptor::open("foo-1.x", &datadir, types(&gated, &block)).await?;
    let node = Node {
        _dir: keep,
        datadir,
        cmd: Arc::new(WorkCommand::new(store.clone())),
        store,
        gated,
        block,
    };
    let on_disk = |id: &str| -> Result<UnitStatus> {
        status::read_status_file(&node.node_dir().join(id)).map_err(|e| anyhow!(e))
    };
    assert_eq!(node.status(&succeeded).await?["StateName"], "Succeeded");
    assert_eq!(node.status(&canceled).await?["StateName"], "Canceled");
    assert_eq!(
        node.status(failed.id()).await?["Detail"],
        "Error reading input data: boom"
    );
    let p = node.status(pending.id()).await?;
    assert_eq!(
        (p["State"].clone(), p["Detail"].clone()),
        (json!(3), json!("Pending at restart"))
    );
    assert_eq!(on_disk(pending.id())?.detail, "Pending at restart");
    let g = node.status(&gone).await?;
    assert_eq!(
        (g["State"].clone(), g["Detail"].clone()),
        (json!(3), json!("Failed to restart: process is gone"))
    );
    assert_eq!(on_disk(&gone)?.state, 3);
    let a = node.status(&alive).await?;
    assert_eq!(a["StateName"], "Running");
    assert_eq!(a["ExtraData"], json!({"Pid": 1, "Params": "p1"}));
    let (_, out) = node.text("status ghost01").await?;
    assert_eq!(
        out,
        "{\"Detail\":\"done elsewhere\",\"ExtraData\":\"Unknown WorkType\",\"State\":2,\"StateName\":\"Succeeded\",\"StdoutSize\":0,\"WorkType\":\"ghosttype\"}\n"
    );
    assert_eq!(on_disk("ghost01")?.extra, Some(json!({"x": 1})));
    let b = node.status("broken01").await?;
    assert_eq!(b["State"], 3);
    assert!(
        b["Detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("Failed to restart: ")),
        "{b}"
    );
    // Nothing is left Running without a worker behind it.
    for unit in node.store.list() {
        let s = unit.status();
        if s.state == UnitState::Running.code() {
            assert_eq!(unit.id(), alive);
        }
    }
    // The re-attached unit can be cancelled through its new handle.
    node.store.cancel(&alive).await?;
    assert_eq!(on_disk(&alive)?.state, 4);
    // A unit of an unknown type: results end at once, cancel is a no-op, release works.
    let (reply, out) = node.text("results ghost01").await?;
    assert!(matches!(reply, Ok(Reply::Done)));
    assert_eq!(out, "Streaming results for work unit ghost01\n");
    let (reply, _) = node.text("cancel ghost01").await?;
    assert!(reply.is_ok());
    let (reply, _) = node.text("release ghost01").await?;
    assert!(reply.is_ok());
    assert!(!ghost_dir.exists());
    let _ = &node.block;
    Ok(())
}

#[test]
fn status_file_replacement_is_atomic() -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir()?;
    let path = dir.path().to_owned();
    let short = UnitStatus::new(UnitState::Running, "x", "copy");
    let long = UnitStatus::new(UnitState::Running, "y".repeat(64 * 1024), "copy");
    status::write_status_file(&path, &short, true)?;
    status::write_status_file(&path, &long, false)?;
    let inodes = |p: &Path| -> Result<[u64; 2]> {
        Ok([
            fs::metadata(p.join("status"))?.ino(),
            fs::metadata(p.join("status.tmp"))?.ino(),
        ])
    };
    let first = inodes(&path)?;
    for i in 0..300 {
        // A reader that opened `status` before an update reads the whole old status.
        let mut before = fs::File::open(path.join("status"))?;
        let old = fs::read(path.join("status"))?;
        let (status, durable) = if i % 2 == 0 {
            (&short, i % 30 == 0)
        } else {
            (&long, false)
        };
        status::write_status_file(&path, status, durable)?;
        let mut seen = Vec::new();
        before.read_to_end(&mut seen)?;
        assert_eq!(seen, old, "update {i} changed the file a reader had open");
        assert_eq!(
            UnitStatus::from_file_bytes(&fs::read(path.join("status"))?)?,
            *status
        );
        // The two names swap their inodes: no file is created or freed per update.
        let now = inodes(&path)?;
        assert!(
            now == first || now == [first[1], first[0]],
            "update {i}: {now:?}"
        );
    }
    // An update cut short (the node killed while writing `status.tmp`) leaves `status`
    // whole; the store removes `status.tmp` when it loads the folder.
    fs::write(path.join("status.tmp"), b"{\"State\":2,\"Det")?;
    assert!(status::read_status_file(&path).is_ok());
    assert_eq!(dir_entries(&path)?, ["status", "status.tmp"]);
    Ok(())
}

/// A whole control session (the real session loop) with the `work` command registered.
async fn session(node: &Node, client_bytes: &[u8]) -> Result<String> {
    use crate::control::registry::CommandRegistry;
    use crate::control::service::ControlService;
    let registry = CommandRegistry::new();
    registry.register(node.cmd.clone())?;
    let service = ControlService::new("foo-1.x", registry);
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(async move { service.serve_stream(server, PeerKind::Unix).await });
    client.write_all(client_bytes).await?;
    client.shutdown().await?;
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut out)).await??;
    tokio::time::timeout(WAIT, task).await??;
    Ok(String::from_utf8(out)?)
}

#[tokio::test]
async fn transcripts_through_the_session_loop() -> Result<()> {
    let node = Node::new().await?;
    // Pipelined submit: command and payload in one write, then EOF.
    let out = session(&node, b"work submit localhost copy\npipelined payload\n").await?;
    let id = out
        .strip_prefix("Receptor Control, node foo-1.x\nWork unit created with ID ")
        .and_then(|r| r.split_once('.'))
        .map(|(id, _)| id.to_owned())
        .ok_or_else(|| anyhow!("{out}"))?;
    assert_eq!(
        out,
        format!(
            "Receptor Control, node foo-1.x\nWork unit created with ID {id}. Send stdin data and EOF.\n{{\"result\":\"Job Started\",\"unitid\":\"{id}\"}}\n"
        )
    );
    node.wait_state(&id, UnitState::Succeeded).await?;
    // Results return to command mode: a second command on the same session is answered.
    let out = session(
        &node,
        format!("work results {id} 10\nwork list {id}\n").as_bytes(),
    )
    .await?;
    assert_eq!(
        out,
        format!(
            "Receptor Control, node foo-1.x\nStreaming results for work unit {id}\npayload\n{{\"{id}\":{{\"Detail\":\"exit status 0\",\"ExtraData\":null,\"State\":2,\"StateName\":\"Succeeded\",\"StdoutSize\":18,\"WorkType\":\"copy\"}}}}\n"
        )
    );
    // After a failed submit the payload is read as commands, as with Go receptor.
    let out = session(&node, b"work submit localhost nosuchtype\nwork bogus\n").await?;
    assert_eq!(
        out,
        "Receptor Control, node foo-1.x\nERROR: unknown work type nosuchtype\nERROR: bad command\n"
    );
    let out = session(
        &node,
        b"{\"command\":\"work\",\"subcommand\":\"status\"}\nwork list nosuch\n",
    )
    .await?;
    assert_eq!(
        out,
        "Receptor Control, node foo-1.x\nERROR: field unitid missing\nERROR: unknown work unit nosuch\n"
    );
    Ok(())
}
