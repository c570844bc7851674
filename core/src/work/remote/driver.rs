//! The driver of one remote unit: a task that performs the I/O of its unit's remote side.
//!
//! What to do and when is decided by the unit's state machine ([`RemoteUnit`], in
//! [`super::machine`]); a driver is the thin async loop around it: it feeds the machine
//! what happened (replies, results, status answers, clients' commands, timers) and
//! performs the [`Action`]s it asks for (connections to the remote control service,
//! status writes, answers to clients). It is the only writer of its unit's status.
//!
//! Everything a driver does is an event in one `select!` loop, so a cancel or release is
//! answered while the unit is being followed. The status poll runs on one kept
//! connection: an idle session left by an earlier unit on the same node if there is one
//! (see [`super::sessions`]), left in turn for the next unit. A driver with nothing left
//! to do ends; a later command for its unit starts a new one.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::client::{
    created_unit_id, io_text, parse_status, results_line, status_line, submit_line, unit_line,
    ConnectError, ControlClient, StatusReply,
};
use super::dialer::ControlDialer;
use super::extra::RemoteExtraData;
use super::machine::{
    Action, Event, OpFailure, OpKind, Reclaimed, RemoteUnit, ResultsEnd, StartFailure, Waiter,
    INPUT_ERROR, WAITING_FOR_INPUT,
};
use super::sessions::SessionPool;
use super::{RemoteOptions, RemoteWorkError};
use crate::work::signing::{SigningError, WorkSigner};
use crate::work::store::{Unit, Workceptor};
use crate::work::worktype::UnitState;

pub(super) use super::machine::StartOutcome;

/// Commands queued per driver (cancel and release requests of clients).
const COMMAND_QUEUE: usize = 8;

/// Bytes read from a results stream at a time.
const RESULTS_BUFFER: usize = 256 * 1024;

/// Results-stream notes waiting for the driver (the stream waits when they are not taken).
const RESULTS_NOTES: usize = 4;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A reply to a client's cancel or release.
pub(super) type CommandReply = oneshot::Sender<Result<Value, RemoteWorkError>>;

/// A client's request about a remote unit.
pub(super) enum Command {
    /// `work cancel`.
    Cancel(CommandReply),
    /// `work release` / `work force-release`.
    Release {
        /// `force-release`.
        force: bool,
        /// Where the answer goes.
        reply: CommandReply,
    },
}

/// How a driver begins.
pub(super) enum Mode {
    /// A new submission; the first attempt's outcome goes to the sender.
    Start(oneshot::Sender<StartOutcome>),
    /// A unit found on disk (restart) or needed by a command: carry on from its state.
    Resume,
}

struct Entry {
    generation: u64,
    commands: mpsc::Sender<Command>,
}

/// What every driver of a node shares.
pub(super) struct Shared {
    pub(super) store: Arc<Workceptor>,
    pub(super) dialer: Arc<dyn ControlDialer>,
    pub(super) signer: Option<Arc<WorkSigner>>,
    pub(super) options: RemoteOptions,
    pub(super) shutdown: CancellationToken,
    /// Idle control sessions for status polls, shared by the drivers.
    sessions: SessionPool,
    drivers: Mutex<HashMap<String, Entry>>,
    generations: AtomicU64,
}

impl Shared {
    pub(super) fn new(
        store: Arc<Workceptor>,
        dialer: Arc<dyn ControlDialer>,
        signer: Option<Arc<WorkSigner>>,
        options: RemoteOptions,
    ) -> Shared {
        Shared {
            store,
            dialer,
            signer,
            options,
            shutdown: CancellationToken::new(),
            sessions: SessionPool::default(),
            drivers: Mutex::new(HashMap::new()),
            generations: AtomicU64::new(0),
        }
    }

    fn table(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Every change of the table is a single insert or remove.
        self.drivers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the driver of `unit` (which must not have one).
    pub(super) fn spawn(self: &Arc<Self>, unit: Arc<Unit>, mode: Mode) {
        let mut table = self.table();
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        self.spawn_locked(&mut table, unit, mode, tx, rx);
    }

    fn spawn_locked(
        self: &Arc<Self>,
        table: &mut HashMap<String, Entry>,
        unit: Arc<Unit>,
        mode: Mode,
        tx: mpsc::Sender<Command>,
        rx: mpsc::Receiver<Command>,
    ) {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        table.insert(
            unit.id().to_owned(),
            Entry {
                generation,
                commands: tx,
            },
        );
        let driver = Driver::new(self.clone(), unit, rx, generation, mode);
        tokio::spawn(driver.run());
    }

    /// Hands `command` to the driver of `unit`, starting one if it has none.
    pub(super) fn dispatch(self: &Arc<Self>, unit: Arc<Unit>, command: Command) {
        if self.shutdown.is_cancelled() {
            command.answer(Err(RemoteWorkError::ShuttingDown));
            return;
        }
        let mut table = self.table();
        let command = match table.get(unit.id()) {
            Some(entry) => match entry.commands.try_send(command) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(command)) => {
                    drop(table);
                    command.answer(Err(RemoteWorkError::Busy(unit.id().to_owned())));
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(command)) => command,
            },
            None => command,
        };
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        if let Err(e) = tx.try_send(command) {
            // A fresh queue has room; answer anyway rather than drop the request.
            let command = match e {
                mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => c,
            };
            command.answer(Err(RemoteWorkError::Busy(unit.id().to_owned())));
            return;
        }
        self.spawn_locked(&mut table, unit, Mode::Resume, tx, rx);
    }
}

impl Command {
    fn answer(self, result: Result<Value, RemoteWorkError>) {
        let reply = match self {
            Command::Cancel(reply) | Command::Release { reply, .. } => reply,
        };
        let _ = reply.send(result);
    }
}

/// What a results stream reports to its driver, in order.
enum StreamNote {
    /// Open, appending from this offset.
    Opened(u64),
    /// Bytes written to the local file.
    Chunk { offset: u64, len: u64 },
    /// The last note.
    End(ResultsEnd),
}

type PollResult = (Option<ControlClient>, Result<StatusReply, String>);

/// What the loop does after performing actions.
enum Flow {
    Continue,
    /// The unit is gone (released): stop at once.
    Released,
}

struct Driver {
    shared: Arc<Shared>,
    unit: Arc<Unit>,
    id: String,
    commands: mpsc::Receiver<Command>,
    commands_open: bool,
    generation: u64,
    machine: RemoteUnit,
    /// The submitting client, waiting for the outcome of the first start attempt.
    first: Option<oneshot::Sender<StartOutcome>>,
    /// Clients waiting for answers, by the number the machine knows them by.
    waiters: HashMap<Waiter, CommandReply>,
    next_waiter: u64,
    /// The one exchange in flight.
    exchange: Option<BoxFuture<Event>>,
    /// The results stream: the task, its notes, and the token that asks it to stop.
    results_task: Option<BoxFuture<()>>,
    results_notes: Option<mpsc::Receiver<StreamNote>>,
    results_stop: Option<CancellationToken>,
    /// The status query in flight, and the kept connection of the status polls.
    poll: Option<BoxFuture<PollResult>>,
    status_conn: Option<ControlClient>,
}

/// Resolves with `future`'s output, or never if there is none.
async fn maybe<T>(future: Option<&mut BoxFuture<T>>) -> T {
    match future {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// The next note of a results stream, or never if there is none; a stream gone without
/// its last note ended with an error.
async fn next_note(notes: Option<&mut mpsc::Receiver<StreamNote>>) -> StreamNote {
    match notes {
        Some(notes) => notes.recv().await.unwrap_or_else(|| {
            StreamNote::End(ResultsEnd::Failed("results stream ended".to_owned()))
        }),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    fn new(
        shared: Arc<Shared>,
        unit: Arc<Unit>,
        commands: mpsc::Receiver<Command>,
        generation: u64,
        mode: Mode,
    ) -> Driver {
        let size = std::fs::metadata(unit.stdout_path()).map_or(0, |m| m.len());
        let status = unit.status();
        let (now, wall) = (std::time::Instant::now(), SystemTime::now());
        let options = shared.options.clone();
        let (machine, first) = match mode {
            Mode::Start(first) => (
                RemoteUnit::submitted(unit.id(), &status, size, options, now, wall),
                Some(first),
            ),
            Mode::Resume => (
                RemoteUnit::resumed(unit.id(), &status, size, options, now, wall),
                None,
            ),
        };
        Driver {
            id: unit.id().to_owned(),
            shared,
            unit,
            commands,
            commands_open: true,
            generation,
            machine,
            first,
            waiters: HashMap::new(),
            next_waiter: 0,
            exchange: None,
            results_task: None,
            results_notes: None,
            results_stop: None,
            poll: None,
            status_conn: None,
        }
    }

    async fn run(mut self) {
        if let Flow::Released = self.perform_all().await {
            return self.retire(true).await;
        }
        loop {
            if self.machine.is_idle() {
                let Some(command) = self.next_queued_or_retire() else {
                    return;
                };
                let event = self.command_event(command);
                if let Flow::Released = self.feed(event).await {
                    return self.retire(true).await;
                }
                continue;
            }
            let timer = self.machine.poll_timeout();
            let takes_commands = self.machine.takes_commands() && self.commands_open;
            let event = tokio::select! {
                biased;
                () = self.shared.shutdown.cancelled() => return self.retire(false).await,
                () = self.unit.released() => return self.retire(true).await,
                command = self.commands.recv(), if takes_commands => match command {
                    Some(command) => self.command_event(command),
                    None => {
                        self.commands_open = false;
                        continue;
                    }
                },
                event = maybe(self.exchange.as_mut()) => {
                    self.exchange = None;
                    event
                }
                note = next_note(self.results_notes.as_mut()) => match note {
                    StreamNote::Opened(offset) => Event::ResultsOpened { offset },
                    StreamNote::Chunk { offset, len } => Event::ResultsChunk { offset, len },
                    StreamNote::End(end) => {
                        self.results_notes = None;
                        self.results_stop = None;
                        Event::StreamClosed(end)
                    }
                },
                () = maybe(self.results_task.as_mut()) => {
                    // Its notes, the last included, are still to be read.
                    self.results_task = None;
                    continue;
                }
                (conn, reply) = maybe(self.poll.as_mut()) => {
                    self.poll = None;
                    self.status_conn = conn;
                    Event::StatusReceived(reply)
                }
                () = sleep_until(timer) => Event::Timer,
            };
            if let Flow::Released = self.feed(event).await {
                return self.retire(true).await;
            }
        }
    }

    /// Hands `event` to the machine and performs what it asks.
    async fn feed(&mut self, event: Event) -> Flow {
        self.machine.handle(event, std::time::Instant::now());
        self.perform_all().await
    }

    fn command_event(&mut self, command: Command) -> Event {
        let waiter = Waiter(self.next_waiter);
        self.next_waiter += 1;
        match command {
            Command::Cancel(reply) => {
                self.waiters.insert(waiter, reply);
                Event::CancelRequested(waiter)
            }
            Command::Release { force, reply } => {
                self.waiters.insert(waiter, reply);
                Event::ReleaseRequested { force, waiter }
            }
        }
    }

    /// Takes a queued command, or leaves the table (under its lock, so no command can
    /// be queued for this driver after it decided to end).
    fn next_queued_or_retire(&mut self) -> Option<Command> {
        let mut table = self.shared.table();
        match self.commands.try_recv() {
            Ok(command) => Some(command),
            Err(_) => {
                self.leave(&mut table);
                None
            }
        }
    }

    fn leave(&self, table: &mut HashMap<String, Entry>) {
        if table
            .get(&self.id)
            .is_some_and(|e| e.generation == self.generation)
        {
            table.remove(&self.id);
        }
    }

    /// Ends the driver at once; queued commands and waiting clients are answered.
    async fn retire(mut self, released: bool) {
        {
            let mut table = self.shared.table();
            self.leave(&mut table);
        }
        self.commands.close();
        let answer = if released {
            RemoteWorkError::UnknownUnit(self.id.clone())
        } else {
            RemoteWorkError::ShuttingDown
        };
        while let Ok(command) = self.commands.try_recv() {
            command.answer(Err(answer.clone()));
        }
        let event = if released {
            Event::UnitReleased
        } else {
            Event::Shutdown
        };
        self.feed(event).await;
    }

    /// Performs the machine's actions in order.
    async fn perform_all(&mut self) -> Flow {
        while let Some(action) = self.machine.poll_action() {
            if let Flow::Released = self.perform(action).await {
                return Flow::Released;
            }
        }
        Flow::Continue
    }

    async fn perform(&mut self, action: Action) -> Flow {
        match action {
            Action::ReportStart(outcome) => {
                if let Some(first) = self.first.take() {
                    let _ = first.send(outcome);
                }
            }
            Action::Submit => {
                let (shared, extra) = (self.shared.clone(), self.machine.extra().clone());
                let (id, stdin) = (self.id.clone(), self.unit.stdin_path());
                self.exchange = Some(Box::pin(async move {
                    Event::SubmitReplied(start_exchange(&shared, &extra, &id, stdin).await)
                }));
            }
            Action::Reclaim => {
                let (shared, extra) = (self.shared.clone(), self.machine.extra().clone());
                let id = self.id.clone();
                self.exchange = Some(Box::pin(async move {
                    Event::ReclaimReplied(reclaim_exchange(&shared, &extra, &id).await)
                }));
            }
            Action::SendOp(kind) => {
                let (shared, extra) = (self.shared.clone(), self.machine.extra().clone());
                self.exchange = Some(Box::pin(async move {
                    Event::OpReplied(kind, op_exchange(&shared, &extra, kind).await)
                }));
            }
            Action::AbandonExchange => self.exchange = None,
            Action::OpenResults => {
                let (shared, extra) = (self.shared.clone(), self.machine.extra().clone());
                let path = self.unit.stdout_path();
                let (tx, rx) = mpsc::channel(RESULTS_NOTES);
                let stop = CancellationToken::new();
                let token = stop.clone();
                self.results_task = Some(Box::pin(async move {
                    let end = results_stream(&shared, &extra, path, &tx, token).await;
                    let _ = tx.send(StreamNote::End(end)).await;
                }));
                self.results_notes = Some(rx);
                self.results_stop = Some(stop);
            }
            Action::StopResults => {
                if let Some(stop) = &self.results_stop {
                    stop.cancel();
                }
            }
            Action::PollStatus => {
                let (shared, extra) = (self.shared.clone(), self.machine.extra().clone());
                let conn = self.status_conn.take();
                self.poll = Some(Box::pin(
                    async move { poll_status(&shared, &extra, conn).await },
                ));
            }
            Action::StopFollowing => self.stop_following(),
            Action::SaveExtra(extra) => {
                let extra = extra.to_value();
                if let Err(e) = self.unit.update(|s| s.extra = Some(extra)).await {
                    tracing::warn!(unit = %self.id, "cannot write status file: {e}");
                }
            }
            Action::WriteStatus {
                state,
                detail,
                stdout_size,
                extra,
            } => self.write_status(state, detail, stdout_size, &extra).await,
            Action::Finish {
                state,
                detail,
                stdout_size,
                extra,
            } => self.finish(state, detail, stdout_size, &extra).await,
            Action::Answer { waiters, result } => {
                for waiter in waiters {
                    if let Some(reply) = self.waiters.remove(&waiter) {
                        let _ = reply.send(result.clone());
                    }
                }
            }
            Action::ReleaseLocally { waiters } => {
                let result = self
                    .shared
                    .store
                    .release(&self.id, true)
                    .await
                    .map(|()| json!({ "released": self.id }))
                    .map_err(|e| RemoteWorkError::Store(e.to_string()));
                for waiter in waiters {
                    if let Some(reply) = self.waiters.remove(&waiter) {
                        let _ = reply.send(result.clone());
                    }
                }
                return Flow::Released;
            }
        }
        Flow::Continue
    }

    /// Drops the results stream and a status query in flight; the kept status connection
    /// goes to the pool, where the next unit followed on that node can poll on it.
    fn stop_following(&mut self) {
        if let Some(stop) = self.results_stop.take() {
            stop.cancel();
        }
        self.results_task = None;
        self.results_notes = None;
        self.poll = None;
        if let Some(session) = self.status_conn.take() {
            let extra = self.machine.extra();
            self.shared
                .sessions
                .put(&extra.remote_node, &extra.tls_client, session);
        }
    }

    async fn write_status(
        &mut self,
        state: UnitState,
        detail: String,
        stdout_size: u64,
        extra: &RemoteExtraData,
    ) {
        let extra = extra.to_value();
        let size = i64::try_from(stdout_size).unwrap_or(i64::MAX);
        let result = self
            .unit
            .update(|s| {
                s.set(state, detail);
                s.stdout_size = size;
                s.extra = Some(extra);
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(unit = %self.id, "cannot write status file: {e}");
        }
    }

    /// Flushes the local results to disk, then writes the final state with their size.
    async fn finish(
        &mut self,
        state: UnitState,
        detail: String,
        received: u64,
        extra: &RemoteExtraData,
    ) {
        let path = self.unit.stdout_path();
        let size = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let file = std::fs::File::open(&path)?;
            file.sync_all()?;
            Ok(file.metadata()?.len())
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        let size = match size {
            Ok(size) => size,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                tracing::warn!(unit = %self.id, "cannot flush results: {e}");
                received
            }
        };
        self.write_status(state, detail, size, extra).await;
    }
}

/// A signature for requests about `extra`'s unit, if it is signed.
fn signature(shared: &Shared, extra: &RemoteExtraData) -> Result<Option<String>, SigningError> {
    if !extra.sign_work {
        return Ok(None);
    }
    match &shared.signer {
        Some(signer) => signer.sign(&extra.remote_node).map(Some),
        None => Err(SigningError::NoKey),
    }
}

async fn connect(shared: &Shared, extra: &RemoteExtraData) -> Result<ControlClient, ConnectError> {
    ControlClient::connect(
        &shared.dialer,
        &extra.remote_node,
        &extra.tls_client,
        shared.options.greeting_timeout,
    )
    .await
}

/// One attempt to submit the unit: returns the remote unit id.
async fn start_exchange(
    shared: &Shared,
    extra: &RemoteExtraData,
    id: &str,
    stdin: PathBuf,
) -> Result<String, StartFailure> {
    let node = &extra.remote_node;
    let mut c = connect(shared, extra)
        .await
        .map_err(StartFailure::Connect)?;
    let signature = signature(shared, extra).map_err(|e| StartFailure::Failed(e.to_string()))?;
    let line = submit_line(
        &extra.remote_params,
        node,
        &extra.remote_work_type,
        &extra.tls_client,
        id,
        signature.as_deref(),
    );
    let limit = shared.options.reply_timeout;
    c.write_all(&line).await.map_err(|e| {
        StartFailure::Interrupted(format!("write error sending to {node}: {}", io_text(&e)))
    })?;
    let response = c.read_line_within(limit).await.map_err(|e| {
        StartFailure::Interrupted(format!("read error reading from {node}: {}", io_text(&e)))
    })?;
    let remote_id = created_unit_id(&response, id).ok_or_else(|| {
        let message = format!(
            "could not parse response: {}",
            response.trim_end_matches('\n')
        );
        if response.contains("is already in use") {
            StartFailure::Duplicate(message)
        } else {
            StartFailure::Failed(message)
        }
    })?;
    if let Err(e) = tokio::fs::metadata(&stdin).await {
        return Err(StartFailure::Failed(format!(
            "error opening stdin file: {e}"
        )));
    }
    c.send_file(&stdin).await.map_err(|e| {
        StartFailure::Interrupted(format!("error sending stdin file: {}", io_text(&e)))
    })?;
    c.shutdown_write().await.map_err(|e| {
        StartFailure::Interrupted(format!("error closing stdin file: {}", io_text(&e)))
    })?;
    let response = c.read_line_within(limit).await.map_err(|e| {
        StartFailure::Interrupted(format!("read error reading from {node}: {}", io_text(&e)))
    })?;
    if let Some(at) = response.find("ERROR: ") {
        return Err(StartFailure::Failed(format!(
            "error from remote: {}",
            response[at + "ERROR: ".len()..].trim_end()
        )));
    }
    Ok(remote_id)
}

/// Looks at the remote unit `id` left by an interrupted start attempt: one that got its
/// whole payload is adopted; one whose payload was cut short (still waiting for it, or
/// failed reading it) is released so that the unit can be submitted again.
async fn reclaim_exchange(
    shared: &Shared,
    extra: &RemoteExtraData,
    id: &str,
) -> Result<Reclaimed, StartFailure> {
    let node = &extra.remote_node;
    let mut c = connect(shared, extra)
        .await
        .map_err(StartFailure::Connect)?;
    let limit = shared.options.reply_timeout;
    c.write_all(&status_line(id)).await.map_err(|e| {
        StartFailure::Interrupted(format!("write error sending to {node}: {}", io_text(&e)))
    })?;
    let line = c.read_line_within(limit).await.map_err(|e| {
        StartFailure::Interrupted(format!("read error reading from {node}: {}", io_text(&e)))
    })?;
    let status = match parse_status(&line) {
        StatusReply::Status(status) => status,
        StatusReply::Gone => return Ok(Reclaimed::Cleared),
        StatusReply::Error(e) => return Err(StartFailure::Interrupted(e)),
    };
    let cut_short = (status.state == 0 && status.detail == WAITING_FOR_INPUT)
        || (status.state == 3 && status.detail.starts_with(INPUT_ERROR));
    if !cut_short {
        return Ok(Reclaimed::Adopted);
    }
    let signature = signature(shared, extra).map_err(|e| StartFailure::Failed(e.to_string()))?;
    c.write_all(&unit_line("release", id, signature.as_deref()))
        .await
        .map_err(|e| {
            StartFailure::Interrupted(format!("write error sending to {node}: {}", io_text(&e)))
        })?;
    let response = c.read_line_within(limit).await.map_err(|e| {
        StartFailure::Interrupted(format!("read error reading from {node}: {}", io_text(&e)))
    })?;
    let _ = c.shutdown_write().await;
    match response.strip_prefix("ERROR") {
        Some(message) if !message.contains("unknown work unit") => Err(StartFailure::Interrupted(
            format!("cannot release {id} on {node}:{message}"),
        )),
        _ => Ok(Reclaimed::Cleared),
    }
}

/// One attempt to cancel or release the remote unit.
async fn op_exchange(
    shared: &Shared,
    extra: &RemoteExtraData,
    kind: OpKind,
) -> Result<(), OpFailure> {
    let node = &extra.remote_node;
    let mut c = connect(shared, extra).await.map_err(OpFailure::Connect)?;
    let signature = signature(shared, extra).map_err(|e| OpFailure::Local(e.to_string()))?;
    let line = unit_line(
        kind.subcommand(),
        &extra.remote_unit_id,
        signature.as_deref(),
    );
    c.write_all(&line)
        .await
        .map_err(|e| OpFailure::Local(format!("write error sending to {node}: {}", io_text(&e))))?;
    let response = c
        .read_line_within(shared.options.reply_timeout)
        .await
        .map_err(|e| {
            OpFailure::Local(format!("read error reading from {node}: {}", io_text(&e)))
        })?;
    let _ = c.shutdown_write().await;
    if let Some(message) = response.strip_prefix("ERROR") {
        return Err(OpFailure::Remote(
            message.trim_start_matches([':', ' ']).trim_end().to_owned(),
        ));
    }
    Ok(())
}

/// Requests the results from where the local file ends (half-closing at once: the
/// remote session ends once the stream does) and reads the header line; returns the
/// connection and the offset.
async fn open_results(
    shared: &Shared,
    extra: &RemoteExtraData,
    path: &Path,
) -> Result<(ControlClient, u64), ResultsEnd> {
    let mut c = connect(shared, extra)
        .await
        .map_err(|e| ResultsEnd::Failed(e.to_string()))?;
    let signature = signature(shared, extra).map_err(|e| ResultsEnd::Failed(e.to_string()))?;
    // The offset is what the file holds: a restart resumes where the file ends.
    let startpos = match tokio::fs::metadata(path).await {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            return Err(ResultsEnd::Failed(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let line = results_line(&extra.remote_unit_id, startpos, signature.as_deref());
    c.write_all(&line)
        .await
        .map_err(|e| ResultsEnd::Failed(io_text(&e)))?;
    c.shutdown_write()
        .await
        .map_err(|e| ResultsEnd::Failed(io_text(&e)))?;
    let header = c
        .read_line_within(shared.options.reply_timeout)
        .await
        .map_err(|e| ResultsEnd::Failed(io_text(&e)))?;
    if !header.contains("Streaming results") {
        return Err(ResultsEnd::Refused(header));
    }
    Ok((c, startpos))
}

/// Streams the remote results from where the local file ends, appending to `path` and
/// noting each chunk written to `notes`, until the remote node ends the stream or
/// `stop` is cancelled. Returns how it ended.
async fn results_stream(
    shared: &Shared,
    extra: &RemoteExtraData,
    path: PathBuf,
    notes: &mpsc::Sender<StreamNote>,
    stop: CancellationToken,
) -> ResultsEnd {
    let opened = tokio::select! {
        biased;
        () = stop.cancelled() => return ResultsEnd::Stopped,
        opened = open_results(shared, extra, &path) => opened,
    };
    let (mut c, mut offset) = match opened {
        Ok(opened) => opened,
        Err(end) => return end,
    };
    if notes.send(StreamNote::Opened(offset)).await.is_err() {
        return ResultsEnd::Stopped;
    }
    let mut file = match tokio::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .await
    {
        Ok(f) => f,
        Err(e) => {
            return ResultsEnd::Failed(format!(
                "Could not open stdout file {}: {e}",
                path.display()
            ))
        }
    };
    let mut buf = vec![0u8; RESULTS_BUFFER];
    let end = loop {
        let n = tokio::select! {
            biased;
            () = stop.cancelled() => break ResultsEnd::Stopped,
            read = c.read_bytes(&mut buf) => match read {
                Ok(0) => break ResultsEnd::Complete,
                Ok(n) => n,
                Err(e) => break ResultsEnd::Failed(io_text(&e)),
            },
        };
        if let Err(e) = file.write_all(&buf[..n]).await {
            break ResultsEnd::Failed(format!(
                "Error copying to stdout file {}: {e}",
                path.display()
            ));
        }
        let len = n as u64;
        if notes.send(StreamNote::Chunk { offset, len }).await.is_err() {
            break ResultsEnd::Stopped;
        }
        offset += len;
    };
    if let Err(e) = file.flush().await {
        return ResultsEnd::Failed(format!(
            "Error copying to stdout file {}: {e}",
            path.display()
        ));
    }
    end
}

/// One `work status` query, on the unit's kept connection if there is one, else on an
/// idle session to the node (see [`super::sessions`]), else on a new connection. A kept
/// idle session that turns out dead is replaced by a new connection at once.
async fn poll_status(
    shared: &Shared,
    extra: &RemoteExtraData,
    conn: Option<ControlClient>,
) -> PollResult {
    let (conn, pooled) = match conn {
        Some(c) => (Some(c), false),
        None => {
            let idle = shared.sessions.take(&extra.remote_node, &extra.tls_client);
            let pooled = idle.is_some();
            (idle, pooled)
        }
    };
    if let Some(c) = conn {
        let (c, reply) = status_exchange(shared, extra, c).await;
        if !(pooled && c.is_none()) {
            return (c, reply);
        }
    }
    match connect(shared, extra).await {
        Ok(c) => status_exchange(shared, extra, c).await,
        Err(e) => (None, Err(e.to_string())),
    }
}

/// `work status` on `c`; the connection comes back if it is still usable.
async fn status_exchange(
    shared: &Shared,
    extra: &RemoteExtraData,
    mut c: ControlClient,
) -> PollResult {
    if let Err(e) = c.write_all(&status_line(&extra.remote_unit_id)).await {
        return (None, Err(io_text(&e)));
    }
    match c.read_line_within(shared.options.reply_timeout).await {
        Ok(line) => (Some(c), Ok(parse_status(&line))),
        Err(e) => (None, Err(io_text(&e))),
    }
}
