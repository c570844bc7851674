//! The driver of one remote unit: a task that owns the unit's remote side.
//!
//! A driver starts the remote unit (one synchronous attempt for the submitting client,
//! then retries with back-off while the node cannot be reached, until the `ttl`),
//! follows it (results and state) until it is finished and every byte of its results
//! is in the local `stdout`, and carries cancel and release to the remote node,
//! retrying while it cannot be reached. It is the only writer of its unit's status.
//!
//! A driver is in one [`Phase`]: `Idle`, `Starting` or `Following`, each holding what
//! only it needs. Everything a driver does is an event in one `select!` loop, so a
//! cancel or release is answered while the unit is being followed:
//!
//! * an *exchange* is one request on its own connection (submit, cancel or release, or
//!   the look at a remote unit that an interrupted submit left); at most one is in
//!   flight, and commands wait while one is;
//! * the *results stream* is one `work results <id> <offset>` request, half-closed at
//!   once: the remote node streams until the unit is complete and then closes, so
//!   results arrive as they are produced and the end is seen at once;
//! * the *status poll* asks `work status <id>` on one kept connection (an idle session
//!   left by an earlier unit on the same node if there is one, and left in turn for the
//!   next unit), at 1 s growing to a few seconds while nothing changes. It mirrors the remote state, notices a unit
//!   that is gone, and notices a Canceled unit on a Go peer, whose results stream never
//!   ends (Go 1.6.9's `work results` treats only Succeeded and Failed as complete).
//!
//! A unit is finished here when the remote unit is final and the local results have
//! all of its `StdoutSize` bytes: then the results are flushed to disk and the final
//! state is written. A driver with nothing left to do ends; a later command for its
//! unit starts a new one.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{
    created_unit_id, io_text, parse_status, results_line, status_line, submit_line, unit_line,
    ConnectError, ControlClient, RemoteStatus, StatusReply,
};
use super::dialer::ControlDialer;
use super::extra::{expiry_stamp, RemoteExtraData};
use super::sessions::SessionPool;
use super::RemoteOptions;
use crate::work::signing::WorkSigner;
use crate::work::status::UnitStatus;
use crate::work::store::{Unit, Workceptor};
use crate::work::worktype::UnitState;

/// Commands queued per driver (cancel and release requests of clients).
const COMMAND_QUEUE: usize = 8;

/// Bytes read from a results stream at a time.
const RESULTS_BUFFER: usize = 256 * 1024;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A reply to a client's cancel or release.
pub(super) type CommandReply = oneshot::Sender<Result<Value, String>>;

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

/// How the first start attempt went (the answer to `work submit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StartOutcome {
    /// The remote node accepted the unit: `Job Started`.
    Started,
    /// The remote node could not be reached; retrying: `Job Submitted`.
    Pending,
    /// The unit failed: `ERROR: <message>`.
    Failed(String),
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
        let driver = Driver::new(self.clone(), unit, rx, generation);
        tokio::spawn(driver.run(mode));
    }

    /// Hands `command` to the driver of `unit`, starting one if it has none.
    pub(super) fn dispatch(self: &Arc<Self>, unit: Arc<Unit>, command: Command) {
        if self.shutdown.is_cancelled() {
            command.answer(Err("node is shutting down".to_owned()));
            return;
        }
        let mut table = self.table();
        let command = match table.get(unit.id()) {
            Some(entry) => match entry.commands.try_send(command) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(command)) => {
                    drop(table);
                    command.answer(Err(format!(
                        "work unit {} is busy with other requests, try again",
                        unit.id()
                    )));
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
            command.answer(Err("cannot queue the request".to_owned()));
            return;
        }
        self.spawn_locked(&mut table, unit, Mode::Resume, tx, rx);
    }
}

impl Command {
    fn answer(self, result: Result<Value, String>) {
        let reply = match self {
            Command::Cancel(reply) | Command::Release { reply, .. } => reply,
        };
        let _ = reply.send(result);
    }
}

/// Exponential back-off: 1 s growing by half up to a maximum (Go: 1 s ×1.5 up to 1 min).
#[derive(Debug, Clone)]
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.mul_f64(1.5).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Why a start attempt failed.
enum StartFailure {
    /// No connection: retry later.
    Connect(ConnectError),
    /// The connection broke after it was made: retry later. The remote node may have
    /// created the unit (and even received all of its payload) before it broke.
    Interrupted(String),
    /// The remote node already has a unit with this id (the message is the client's).
    Duplicate(String),
    /// The exchange failed: the unit fails.
    Failed(String),
}

/// What became of a remote unit left by an earlier, interrupted start attempt.
enum Reclaimed {
    /// It received its whole payload: it is this unit's remote side.
    Adopted,
    /// Its payload was cut short: it was released; submit again.
    Cleared,
}

/// Detail of a unit whose payload has not been received yet (Go's text).
const WAITING_FOR_INPUT: &str = "Waiting for Input Data";

/// Start of the detail of a unit whose payload could not be read (Go's text).
const INPUT_ERROR: &str = "Error reading input data";

/// Why a cancel or release attempt failed.
enum OpFailure {
    /// No connection: retry later.
    Connect(ConnectError),
    /// The remote node answered `ERROR: <message>`.
    Remote(String),
    /// The exchange broke after connecting, or the request could not be made.
    Local(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Cancel,
    Release { force: bool },
}

impl OpKind {
    fn subcommand(self) -> &'static str {
        match self {
            OpKind::Cancel => "cancel",
            OpKind::Release { .. } => "release",
        }
    }
}

/// A cancel or release that has not reached the remote node yet.
struct PendingOp {
    kind: OpKind,
    /// Clients waiting for the outcome of the next attempt.
    waiters: Vec<CommandReply>,
    retry_at: Option<Instant>,
    backoff: Backoff,
}

enum Exchange {
    Start(Result<String, StartFailure>),
    Reclaim(Result<Reclaimed, StartFailure>),
    Op(OpKind, Result<(), OpFailure>),
}

/// How a results stream ended.
enum ResultsEnd {
    /// The remote node ended the stream: the unit is complete there.
    Complete,
    /// The driver asked it to stop.
    Stopped,
    /// The remote node answered the request with something else (an error).
    Refused(String),
    /// No connection, or it broke.
    Failed(String),
}

type PollResult = (Option<ControlClient>, Result<StatusReply, String>);

/// What the loop does after an event.
enum Flow {
    Continue,
    /// The unit is gone (released): stop at once.
    Released,
}

/// Where a driver is in its unit's life; each phase holds what only it needs. Cancel and
/// release (the pending [`PendingOp`] and the one exchange in flight) are orthogonal to
/// the phase: they can happen in any of them.
enum Phase {
    /// Nothing to start or follow (the unit is final, or cannot be started): the driver
    /// only answers commands and carries out a pending cancel or release.
    Idle,
    /// Not started on the remote node yet: submitting, retrying with back-off.
    Starting(Starting),
    /// Started there: following its results and state until both are complete here.
    Following(Box<Following>),
}

/// A unit being submitted to the remote node.
struct Starting {
    /// The submitting client, waiting for the outcome of the first attempt.
    first: Option<oneshot::Sender<StartOutcome>>,
    /// When to try again; `None` while an attempt is in flight.
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// When the `ttl` runs out.
    expires_at: Option<Instant>,
    /// An earlier start attempt (maybe before a restart) may have created the remote
    /// unit: a remote unit with this id is ours, to adopt or to clear.
    reclaim: bool,
}

impl Starting {
    fn report_first(&mut self, outcome: StartOutcome) {
        if let Some(first) = self.first.take() {
            let _ = first.send(outcome);
        }
    }
}

/// The results stream of a followed unit.
enum Stream {
    /// Not open; to be opened at the given time (`None`: not now).
    Closed(Option<Instant>),
    /// Streaming; the token asks it to stop.
    Open(BoxFuture<ResultsEnd>, CancellationToken),
    /// Asked to stop because every result is here: the unit finishes when it has.
    Finishing(BoxFuture<ResultsEnd>),
}

impl Stream {
    fn future(&mut self) -> Option<&mut BoxFuture<ResultsEnd>> {
        match self {
            Stream::Closed(_) => None,
            Stream::Open(f, _) | Stream::Finishing(f) => Some(f),
        }
    }

    fn due(&self) -> Option<Instant> {
        match self {
            Stream::Closed(at) => *at,
            Stream::Open(..) | Stream::Finishing(_) => None,
        }
    }
}

/// A unit started on the remote node, being followed.
struct Following {
    results: Stream,
    results_backoff: Backoff,
    /// The status query in flight.
    poll: Option<BoxFuture<PollResult>>,
    /// A poll was due while one was in flight: its answer may predate what made the new
    /// one due (the end of the results), so poll again as soon as it is back.
    poll_again: bool,
    /// The kept connection of the status polls.
    status_conn: Option<ControlClient>,
    poll_at: Option<Instant>,
    poll_interval: Duration,
    poll_backoff: Backoff,
    /// The remote status last seen.
    remote: Option<RemoteStatus>,
}

impl Following {
    fn finishing(&self) -> bool {
        matches!(self.results, Stream::Finishing(_))
    }
}

struct Driver {
    shared: Arc<Shared>,
    unit: Arc<Unit>,
    id: String,
    extra: RemoteExtraData,
    commands: mpsc::Receiver<Command>,
    commands_open: bool,
    generation: u64,
    /// Bytes in (or on their way into) the local results file.
    local_size: Arc<AtomicU64>,
    phase: Phase,
    // The one exchange in flight, and the cancel or release waiting for its turn.
    exchange: Option<BoxFuture<Exchange>>,
    op: Option<PendingOp>,
}

/// Resolves with `future`'s output, or never if there is none.
async fn maybe<T>(future: Option<&mut BoxFuture<T>>) -> T {
    match future {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn earliest(times: &[Option<Instant>]) -> Option<Instant> {
    times.iter().flatten().min().copied()
}

fn is_final_code(state: i64) -> bool {
    UnitState::from_code(state).is_some_and(UnitState::is_final)
}

impl Driver {
    fn new(
        shared: Arc<Shared>,
        unit: Arc<Unit>,
        commands: mpsc::Receiver<Command>,
        generation: u64,
    ) -> Driver {
        let size = std::fs::metadata(unit.stdout_path()).map_or(0, |m| m.len());
        let extra = RemoteExtraData::from_value(unit.status().extra.as_ref()).unwrap_or_default();
        Driver {
            id: unit.id().to_owned(),
            shared,
            unit,
            extra,
            commands,
            commands_open: true,
            generation,
            local_size: Arc::new(AtomicU64::new(size)),
            phase: Phase::Idle,
            exchange: None,
            op: None,
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(
            self.shared.options.retry_initial,
            self.shared.options.retry_max,
        )
    }

    async fn run(mut self, mode: Mode) {
        match mode {
            Mode::Start(first) => self.begin_start(Some(first)),
            Mode::Resume => self.resume().await,
        }
        loop {
            if self.is_idle() {
                match self.next_queued_or_retire() {
                    Some(command) => {
                        if let Flow::Released = self.command(command).await {
                            return self.retire(true);
                        }
                        continue;
                    }
                    None => return,
                }
            }
            // Only timers that can act now (an exchange in flight defers the others).
            let free = self.exchange.is_none();
            let op_retry = self.op.as_ref().and_then(|op| op.retry_at).filter(|_| free);
            let (timer, results, poll) = match &mut self.phase {
                Phase::Idle => (op_retry, None, None),
                Phase::Starting(s) => (
                    earliest(&[s.retry_at.filter(|_| free), s.expires_at, op_retry]),
                    None,
                    None,
                ),
                Phase::Following(f) => (
                    earliest(&[f.results.due(), f.poll_at, op_retry]),
                    f.results.future(),
                    f.poll.as_mut(),
                ),
            };
            let flow = tokio::select! {
                biased;
                () = self.shared.shutdown.cancelled() => return self.retire(false),
                () = self.unit.released() => return self.retire(true),
                command = self.commands.recv(), if self.exchange.is_none() && self.commands_open => {
                    match command {
                        Some(command) => self.command(command).await,
                        None => {
                            self.commands_open = false;
                            Flow::Continue
                        }
                    }
                }
                done = maybe(self.exchange.as_mut()) => {
                    self.exchange = None;
                    self.exchange_done(done).await
                }
                end = maybe(results) => {
                    self.results_done(end).await;
                    Flow::Continue
                }
                polled = maybe(poll) => {
                    if let Phase::Following(f) = &mut self.phase {
                        f.poll = None;
                    }
                    self.poll_done(polled).await;
                    Flow::Continue
                }
                () = sleep_until(timer) => {
                    self.timers().await;
                    Flow::Continue
                }
            };
            if let Flow::Released = flow {
                return self.retire(true);
            }
        }
    }

    /// Nothing to do but wait for commands.
    fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Idle) && self.exchange.is_none() && self.op.is_none()
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

    /// Ends the driver at once; queued commands are answered.
    fn retire(mut self, released: bool) {
        {
            let mut table = self.shared.table();
            self.leave(&mut table);
        }
        self.commands.close();
        let answer = if released {
            format!("unknown work unit {}", self.id)
        } else {
            "node is shutting down".to_owned()
        };
        while let Ok(command) = self.commands.try_recv() {
            command.answer(Err(answer.clone()));
        }
        if let Some(op) = self.op.take() {
            for waiter in op.waiters {
                let _ = waiter.send(Err(answer.clone()));
            }
        }
        if let Phase::Starting(starting) = &mut self.phase {
            starting.report_first(StartOutcome::Failed(answer));
        }
    }

    // ---- status bookkeeping ----

    async fn save_extra(&mut self) {
        let extra = self.extra.to_value();
        if let Err(e) = self.unit.update(|s| s.extra = Some(extra)).await {
            tracing::warn!(unit = %self.id, "cannot write status file: {e}");
        }
    }

    async fn set_state(&mut self, state: UnitState, detail: String) {
        let extra = self.extra.to_value();
        let size = i64::try_from(self.local_size.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
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

    fn status(&self) -> UnitStatus {
        self.unit.status()
    }

    // ---- starting ----

    fn begin_start(&mut self, first: Option<oneshot::Sender<StartOutcome>>) {
        self.begin_start_with(first, false);
    }

    fn begin_start_with(&mut self, first: Option<oneshot::Sender<StartOutcome>>, reclaim: bool) {
        let expires_at = self.extra.expiration.map(|at| {
            let left = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            Instant::now() + left
        });
        self.phase = Phase::Starting(Starting {
            first,
            retry_at: None,
            backoff: self.backoff(),
            expires_at,
            reclaim,
        });
        self.launch_start();
    }

    fn starting(&mut self) -> Option<&mut Starting> {
        match &mut self.phase {
            Phase::Starting(s) => Some(s),
            _ => None,
        }
    }

    fn launch_start(&mut self) {
        if let Some(s) = self.starting() {
            s.retry_at = None;
        }
        let shared = self.shared.clone();
        let extra = self.extra.clone();
        let id = self.id.clone();
        let stdin = self.unit.stdin_path();
        self.exchange = Some(Box::pin(async move {
            Exchange::Start(start_exchange(&shared, &extra, &id, stdin).await)
        }));
    }

    /// Leaves the starting phase; the submitting client, if it still waits, gets `outcome`.
    fn end_start(&mut self, outcome: StartOutcome) {
        if let Phase::Starting(mut s) = std::mem::replace(&mut self.phase, Phase::Idle) {
            s.report_first(outcome);
        }
    }

    fn launch_reclaim(&mut self) {
        if let Some(s) = self.starting() {
            s.retry_at = None;
        }
        let shared = self.shared.clone();
        let extra = self.extra.clone();
        let id = self.id.clone();
        self.exchange = Some(Box::pin(async move {
            Exchange::Reclaim(reclaim_exchange(&shared, &extra, &id).await)
        }));
    }

    async fn started(&mut self, remote_id: String) {
        self.extra.remote_unit_id = remote_id;
        self.extra.remote_started = true;
        self.save_extra().await;
        self.end_start(StartOutcome::Started);
        self.begin_following();
    }

    /// Tries again after the back-off delay; the submitting client hears `Job Submitted`.
    fn retry_later(&mut self, reclaim: bool) {
        if let Some(s) = self.starting() {
            s.reclaim |= reclaim;
            s.report_first(StartOutcome::Pending);
            s.retry_at = Some(Instant::now() + s.backoff.next_delay());
        }
    }

    fn retry_start(&mut self, error: &str) {
        tracing::warn!(
            unit = %self.id,
            "Starting the unit on {} was interrupted: {error}",
            self.extra.remote_node
        );
        self.retry_later(true);
    }

    async fn reclaim_done(&mut self, result: Result<Reclaimed, StartFailure>) {
        match result {
            Ok(Reclaimed::Adopted) => {
                tracing::info!(unit = %self.id, "the unit was already started on {}", self.extra.remote_node);
                let id = self.id.clone();
                self.started(id).await;
            }
            Ok(Reclaimed::Cleared) => self.retry_later(true),
            Err(StartFailure::Connect(e)) => self.retry_start(&e.to_string()),
            Err(StartFailure::Interrupted(e) | StartFailure::Duplicate(e)) => self.retry_start(&e),
            Err(StartFailure::Failed(message)) => self.start_failed(message).await,
        }
    }

    async fn start_failed(&mut self, message: String) {
        let Phase::Starting(mut s) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return;
        };
        self.set_state(
            UnitState::Failed,
            format!("Error starting worker: {message}"),
        )
        .await;
        s.report_first(StartOutcome::Failed(message));
    }

    async fn start_done(&mut self, result: Result<String, StartFailure>) {
        let reclaim = self.starting().is_some_and(|s| s.reclaim);
        match result {
            Ok(remote_id) => self.started(remote_id).await,
            Err(StartFailure::Duplicate(_)) if reclaim => self.launch_reclaim(),
            Err(StartFailure::Interrupted(e)) => self.retry_start(&e),
            Err(StartFailure::Connect(e)) if e.is_tls() => {
                self.end_start(StartOutcome::Pending);
                self.set_state(
                    UnitState::Failed,
                    format!("TLS error connecting to remote service: {e}"),
                )
                .await;
            }
            Err(StartFailure::Connect(e)) => {
                tracing::warn!(
                    unit = %self.id,
                    "Connection to {} failed with error: {e}",
                    self.extra.remote_node
                );
                self.retry_later(false);
            }
            Err(StartFailure::Failed(message) | StartFailure::Duplicate(message)) => {
                self.start_failed(message).await;
            }
        }
    }

    async fn expire(&mut self) {
        let Phase::Starting(mut s) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return;
        };
        // The start attempt in flight (the only exchange of a unit not started) is
        // abandoned, as Go cancels its context.
        self.exchange = None;
        let stamp = self.extra.expiration.map(expiry_stamp).unwrap_or_default();
        let detail = format!("Work unit expired on {stamp}");
        self.set_state(UnitState::Failed, detail.clone()).await;
        s.report_first(StartOutcome::Failed(detail));
    }

    /// Stops trying to start the unit (cancel or release before it started).
    fn stop_starting(&mut self) {
        self.end_start(StartOutcome::Pending);
    }

    // ---- resuming ----

    async fn resume(&mut self) {
        let status = self.status();
        let is_final = status.is_final();
        match RemoteExtraData::from_value(status.extra.as_ref()) {
            Ok(extra) => self.extra = extra,
            Err(e) => {
                if !is_final {
                    self.set_state(UnitState::Failed, format!("Failed to restart: {e}"))
                        .await;
                }
                return;
            }
        }
        if !self.extra.remote_started {
            if is_final {
                return;
            }
            if status.detail == WAITING_FOR_INPUT {
                // The client never saw its payload accepted.
                self.set_state(
                    UnitState::Failed,
                    "Failed to restart: remote work had not previously started".to_owned(),
                )
                .await;
                return;
            }
            // The payload was accepted and is on disk: start the unit now. An attempt
            // before the restart may have created it on the remote node already.
            self.begin_start_with(None, true);
            return;
        }
        if self.extra.local_released {
            self.queue_op(OpKind::Release { force: false }, None);
        } else {
            if self.extra.local_cancelled && !is_final {
                self.queue_op(OpKind::Cancel, None);
            }
            if !is_final {
                self.begin_following();
            }
        }
    }

    // ---- commands ----

    async fn command(&mut self, command: Command) -> Flow {
        match command {
            Command::Cancel(reply) => {
                self.cancel(reply).await;
                Flow::Continue
            }
            Command::Release { force, reply } => self.release(force, reply).await,
        }
    }

    fn answer_id(&self, key: &str) -> Value {
        json!({ key: self.id })
    }

    async fn cancel(&mut self, reply: CommandReply) {
        if self.op.is_some() {
            // A cancel, or a release (which cancels), is already on its way.
            let _ = reply.send(Ok(self.answer_id("cancel pending")));
            return;
        }
        self.extra.local_cancelled = true;
        if !self.extra.remote_started {
            self.stop_starting();
            self.local_size.store(0, Ordering::Relaxed);
            self.set_state(UnitState::Failed, "Locally Cancelled".to_owned())
                .await;
            let _ = reply.send(Ok(self.answer_id("cancelled")));
            return;
        }
        self.save_extra().await;
        self.queue_op(OpKind::Cancel, Some(reply));
    }

    async fn release(&mut self, force: bool, reply: CommandReply) -> Flow {
        if !self.extra.remote_started {
            self.stop_starting();
            return self.release_locally(vec![reply]).await;
        }
        if let (false, Some(op)) = (force, &self.op) {
            if matches!(op.kind, OpKind::Release { .. }) {
                let _ = reply.send(Ok(self.answer_id("release pending")));
                return Flow::Continue;
            }
        }
        self.extra.local_cancelled = true;
        self.extra.local_released = true;
        self.save_extra().await;
        self.stop_following();
        // A pending cancel is replaced: the release cancels too.
        let mut waiters = self.op.take().map(|op| op.waiters).unwrap_or_default();
        waiters.push(reply);
        self.op = Some(PendingOp {
            kind: OpKind::Release { force },
            waiters,
            retry_at: None,
            backoff: Backoff::new(
                self.shared.options.retry_initial,
                self.shared.options.retry_max,
            ),
        });
        self.launch_op();
        Flow::Continue
    }

    async fn release_locally(&mut self, waiters: Vec<CommandReply>) -> Flow {
        self.stop_following();
        let result = self
            .shared
            .store
            .release(&self.id, true)
            .await
            .map(|()| self.answer_id("released"))
            .map_err(|e| e.to_string());
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
        Flow::Released
    }

    fn queue_op(&mut self, kind: OpKind, reply: Option<CommandReply>) {
        self.op = Some(PendingOp {
            kind,
            waiters: reply.into_iter().collect(),
            retry_at: None,
            backoff: Backoff::new(
                self.shared.options.retry_initial,
                self.shared.options.retry_max,
            ),
        });
        if self.exchange.is_none() {
            self.launch_op();
        } else if let Some(op) = &mut self.op {
            op.retry_at = Some(Instant::now());
        }
    }

    fn launch_op(&mut self) {
        let Some(op) = &mut self.op else { return };
        op.retry_at = None;
        let kind = op.kind;
        let shared = self.shared.clone();
        let extra = self.extra.clone();
        self.exchange = Some(Box::pin(async move {
            Exchange::Op(kind, op_exchange(&shared, &extra, kind).await)
        }));
    }

    async fn op_done(&mut self, kind: OpKind, result: Result<(), OpFailure>) -> Flow {
        let Some(mut op) = self.op.take() else {
            return Flow::Continue;
        };
        let waiters = std::mem::take(&mut op.waiters);
        let background = waiters.is_empty();
        let answer = |waiters: Vec<CommandReply>, result: Result<Value, String>| {
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
        };
        match (kind, result) {
            (OpKind::Cancel, Ok(())) => {
                answer(waiters, Ok(self.answer_id("cancelled")));
                if let Some(f) = self.following() {
                    f.poll_at = Some(Instant::now());
                }
                Flow::Continue
            }
            (OpKind::Release { .. }, Ok(())) => self.release_locally(waiters).await,
            (OpKind::Release { .. }, Err(OpFailure::Remote(m)))
                if m.contains("unknown work unit") =>
            {
                self.release_locally(waiters).await
            }
            (OpKind::Release { force: true }, Err(e)) => {
                tracing::warn!(
                    unit = %self.id,
                    "force-release: the remote unit was not released: {}",
                    e.text()
                );
                self.release_locally(waiters).await
            }
            (kind, Err(OpFailure::Connect(e))) => {
                tracing::warn!(
                    unit = %self.id,
                    "Connection to {} failed with error: {e}",
                    self.extra.remote_node
                );
                let key = match kind {
                    OpKind::Cancel => "cancel pending",
                    OpKind::Release { .. } => "release pending",
                };
                answer(waiters, Ok(self.answer_id(key)));
                op.retry_at = Some(Instant::now() + op.backoff.next_delay());
                self.op = Some(op);
                Flow::Continue
            }
            (_, Err(OpFailure::Local(e))) if background => {
                tracing::warn!(unit = %self.id, "{} of the remote unit failed: {e}", kind.subcommand());
                op.retry_at = Some(Instant::now() + op.backoff.next_delay());
                self.op = Some(op);
                Flow::Continue
            }
            (kind, Err(failure)) => {
                let message = failure.text();
                tracing::warn!(unit = %self.id, "{} of the remote unit failed: {message}", kind.subcommand());
                answer(waiters, Err(message));
                if matches!(kind, OpKind::Release { .. }) && !self.status().is_final() {
                    // The unit stays: keep following it.
                    self.begin_following();
                }
                Flow::Continue
            }
        }
    }

    async fn exchange_done(&mut self, done: Exchange) -> Flow {
        match done {
            Exchange::Start(result) => {
                self.start_done(result).await;
                Flow::Continue
            }
            Exchange::Reclaim(result) => {
                self.reclaim_done(result).await;
                Flow::Continue
            }
            Exchange::Op(kind, result) => self.op_done(kind, result).await,
        }
    }

    // ---- timers ----

    async fn timers(&mut self) {
        let now = Instant::now();
        let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        let expired = match &self.phase {
            Phase::Starting(s) => due(s.expires_at) && !self.extra.remote_started,
            _ => false,
        };
        if expired {
            self.expire().await;
        }
        if self.exchange.is_none() && due(self.op.as_ref().and_then(|op| op.retry_at)) {
            self.launch_op();
        }
        let (start, results, poll) = match &self.phase {
            Phase::Starting(s) => (due(s.retry_at), false, false),
            Phase::Following(f) => (false, due(f.results.due()), due(f.poll_at)),
            Phase::Idle => (false, false, false),
        };
        if self.exchange.is_none() && start {
            self.launch_start();
        }
        if results {
            self.launch_results();
        }
        if poll {
            self.launch_poll();
        }
    }

    // ---- following ----

    fn following(&mut self) -> Option<&mut Following> {
        match &mut self.phase {
            Phase::Following(f) => Some(f.as_mut()),
            _ => None,
        }
    }

    fn begin_following(&mut self) {
        if matches!(self.phase, Phase::Following(_)) {
            return;
        }
        let size = std::fs::metadata(self.unit.stdout_path()).map_or(0, |m| m.len());
        self.local_size.store(size, Ordering::Relaxed);
        let now = Instant::now();
        self.phase = Phase::Following(Box::new(Following {
            results: Stream::Closed(Some(now)),
            results_backoff: self.backoff(),
            poll: None,
            poll_again: false,
            status_conn: None,
            poll_at: Some(now),
            poll_interval: self.shared.options.poll_initial,
            poll_backoff: self.backoff(),
            remote: None,
        }));
    }

    fn stop_following(&mut self) {
        if !matches!(self.phase, Phase::Following(_)) {
            return;
        }
        let Phase::Following(f) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return;
        };
        if let Stream::Open(_, stop) = &f.results {
            stop.cancel();
        }
        if let Some(session) = f.status_conn {
            // Between two commands: the next unit followed on that node can poll on it.
            self.shared
                .sessions
                .put(&self.extra.remote_node, &self.extra.tls_client, session);
        }
    }

    fn launch_results(&mut self) {
        let shared = self.shared.clone();
        let extra = self.extra.clone();
        let path = self.unit.stdout_path();
        let local_size = self.local_size.clone();
        let Some(f) = self.following() else { return };
        if !matches!(f.results, Stream::Closed(_)) {
            return;
        }
        let stop = CancellationToken::new();
        let token = stop.clone();
        f.results = Stream::Open(
            Box::pin(async move { results_stream(&shared, &extra, path, local_size, token).await }),
            stop,
        );
    }

    fn launch_poll(&mut self) {
        let shared = self.shared.clone();
        let extra = self.extra.clone();
        let Some(f) = self.following() else { return };
        f.poll_at = None;
        if f.poll.is_some() {
            f.poll_again = true;
            return;
        }
        let conn = f.status_conn.take();
        f.poll = Some(Box::pin(
            async move { poll_status(&shared, &extra, conn).await },
        ));
    }

    async fn results_done(&mut self, end: ResultsEnd) {
        let Some(f) = self.following() else { return };
        let finishing = f.finishing();
        f.results = Stream::Closed(None);
        match end {
            ResultsEnd::Complete => {
                f.results_backoff.reset();
                if finishing {
                    return self.finish().await;
                }
                // The remote unit is complete: its final status settles it.
                f.poll_at = Some(Instant::now());
            }
            ResultsEnd::Stopped => {
                if finishing {
                    self.finish().await;
                }
            }
            ResultsEnd::Refused(reply) => {
                f.results = Stream::Closed(Some(Instant::now() + f.results_backoff.next_delay()));
                f.poll_at = Some(Instant::now());
                tracing::warn!(
                    unit = %self.id,
                    "Remote node {} did not stream results: {}",
                    self.extra.remote_node,
                    reply.trim_end()
                );
            }
            ResultsEnd::Failed(e) => {
                if finishing {
                    return self.finish().await;
                }
                f.results = Stream::Closed(Some(Instant::now() + f.results_backoff.next_delay()));
                tracing::debug!(unit = %self.id, "results stream from {}: {e}", self.extra.remote_node);
            }
        }
    }

    async fn poll_done(&mut self, (conn, reply): PollResult) {
        let poll_initial = self.shared.options.poll_initial;
        let poll_max = self.shared.options.poll_max;
        let Some(f) = self.following() else { return };
        f.status_conn = conn;
        let now = Instant::now();
        let again = std::mem::take(&mut f.poll_again);
        match reply {
            Ok(StatusReply::Status(status)) => {
                f.poll_backoff.reset();
                let changed = f.remote.as_ref() != Some(&status);
                f.poll_interval = if changed {
                    poll_initial
                } else {
                    f.poll_interval.mul_f64(1.5).min(poll_max)
                };
                f.remote = Some(status.clone());
                if is_final_code(status.state) {
                    self.check_complete().await;
                } else if changed {
                    let local = self.status();
                    if !local.is_final()
                        && (local.state != status.state || local.detail != status.detail)
                    {
                        let state =
                            UnitState::from_code(status.state).unwrap_or(UnitState::Running);
                        self.set_state(state, status.detail.clone()).await;
                    }
                }
                if let Some(f) = self.following() {
                    if !f.finishing() {
                        let wait = if again {
                            Duration::ZERO
                        } else {
                            f.poll_interval
                        };
                        f.poll_at = Some(now + wait);
                    }
                }
            }
            Ok(StatusReply::Gone) => {
                tracing::debug!(unit = %self.id, "Work unit {} on node {} is gone", self.extra.remote_unit_id, self.extra.remote_node);
                self.stop_following();
                self.set_state(UnitState::Failed, "Remote work unit is gone".to_owned())
                    .await;
            }
            Ok(StatusReply::Error(e)) | Err(e) => {
                f.poll_at = Some(now + f.poll_backoff.next_delay());
                tracing::debug!(unit = %self.id, "status of the remote unit: {e}");
            }
        }
    }

    /// Finishes the unit if the remote unit is final and all its results are here;
    /// otherwise makes sure the results keep coming.
    async fn check_complete(&mut self) {
        let local_size = self.local_size.load(Ordering::Relaxed);
        let Some(f) = self.following() else { return };
        let Some(remote) = &f.remote else { return };
        if !is_final_code(remote.state) {
            return;
        }
        let remote_size = u64::try_from(remote.stdout_size).unwrap_or(0);
        if local_size >= remote_size {
            match std::mem::replace(&mut f.results, Stream::Closed(None)) {
                Stream::Open(future, stop) => {
                    // Let the stream flush what it has, then finish.
                    stop.cancel();
                    f.results = Stream::Finishing(future);
                    f.poll_at = None;
                }
                Stream::Finishing(future) => f.results = Stream::Finishing(future),
                Stream::Closed(_) => self.finish().await,
            }
        } else if let Stream::Closed(None) = f.results {
            f.results = Stream::Closed(Some(Instant::now() + f.results_backoff.next_delay()));
        }
    }

    /// Records the end: results flushed to disk, then the remote's final state.
    async fn finish(&mut self) {
        let Some(remote) = self.following().and_then(|f| f.remote.clone()) else {
            return;
        };
        self.stop_following();
        let path = self.unit.stdout_path();
        let size = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let file = std::fs::File::open(&path)?;
            file.sync_all()?;
            Ok(file.metadata()?.len())
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        match size {
            Ok(size) => self.local_size.store(size, Ordering::Relaxed),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.local_size.store(0, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(unit = %self.id, "cannot flush results: {e}"),
        }
        let state = UnitState::from_code(remote.state).unwrap_or(UnitState::Failed);
        self.set_state(state, remote.detail).await;
    }
}

impl OpFailure {
    /// The error as a client sees it.
    fn text(&self) -> String {
        match self {
            OpFailure::Remote(m) => format!("error cancelling remote unit: {m}"),
            OpFailure::Local(m) => m.clone(),
            OpFailure::Connect(e) => e.to_string(),
        }
    }
}

/// A signature for requests about `extra`'s unit, if it is signed.
fn signature(shared: &Shared, extra: &RemoteExtraData) -> Result<Option<String>, String> {
    if !extra.sign_work {
        return Ok(None);
    }
    match &shared.signer {
        Some(signer) => signer
            .sign(&extra.remote_node)
            .map(Some)
            .map_err(|e| e.to_string()),
        None => Err("cannot sign work: signing key is empty".to_owned()),
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
    let signature = signature(shared, extra).map_err(StartFailure::Failed)?;
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
    let signature = signature(shared, extra).map_err(StartFailure::Failed)?;
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
    let signature = signature(shared, extra).map_err(OpFailure::Local)?;
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

/// Requests the results from the local size on (half-closing at once: the remote
/// session ends once the stream does) and reads the header line.
async fn open_results(
    shared: &Shared,
    extra: &RemoteExtraData,
    path: &Path,
    local_size: &AtomicU64,
) -> Result<ControlClient, ResultsEnd> {
    let mut c = connect(shared, extra)
        .await
        .map_err(|e| ResultsEnd::Failed(e.to_string()))?;
    let signature = signature(shared, extra).map_err(ResultsEnd::Failed)?;
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
    local_size.store(startpos, Ordering::Relaxed);
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
    Ok(c)
}

/// Streams the remote results from the local size on, appending to `path`, until the
/// remote node ends the stream or `stop` is cancelled.
async fn results_stream(
    shared: &Shared,
    extra: &RemoteExtraData,
    path: PathBuf,
    local_size: Arc<AtomicU64>,
    stop: CancellationToken,
) -> ResultsEnd {
    let opened = tokio::select! {
        biased;
        () = stop.cancelled() => return ResultsEnd::Stopped,
        opened = open_results(shared, extra, &path, &local_size) => opened,
    };
    let mut c = match opened {
        Ok(c) => c,
        Err(end) => return end,
    };
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
        local_size.fetch_add(n as u64, Ordering::Relaxed);
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
