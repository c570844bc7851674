//! The life of one remote unit as a state machine without I/O.
//!
//! [`RemoteUnit`] decides everything about a remote unit: when to submit it, retry,
//! adopt or clear what an interrupted submission left, follow its results and state,
//! carry cancel and release, and when it is finished. It does no I/O and reads no
//! clock: the driver ([`super::driver`]) feeds it [`Event`]s with the time they
//! happened, performs the [`Action`]s it asks for in order (connections, status
//! writes, answers to clients), and calls [`RemoteUnit::handle`] with [`Event::Timer`]
//! once [`RemoteUnit::poll_timeout`] is due. The tests drive it with simulated time.
//!
//! A unit is in one [`Phase`] (`Idle`, `Starting` or `Following`), each holding what
//! only it needs. Cancel and release (a pending operation and the one exchange in
//! flight) are orthogonal to the phase: they can happen in any of them.
//!
//! * an *exchange* is one request on its own connection (submit, cancel or release, or
//!   the look at a remote unit that an interrupted submit left); at most one is in
//!   flight, and commands wait while one is ([`RemoteUnit::takes_commands`]);
//! * the *results stream* is one `work results <id> <offset>` request from where the
//!   local file ends; the remote node streams until the unit is complete and then
//!   closes, so results arrive as they are produced and the end is seen at once;
//! * the *status poll* asks `work status <id>` at 1 s growing to a few seconds while
//!   nothing changes. It mirrors the remote state, notices a unit that is gone, and
//!   notices a Canceled unit on a Go peer, whose results stream never ends (Go 1.6.9's
//!   `work results` treats only Succeeded and Failed as complete).
//!
//! A unit is finished here when the remote unit is final and the local results have
//! all of its `StdoutSize` bytes: then the results are flushed and the final state is
//! written ([`Action::Finish`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use super::client::{ConnectError, RemoteStatus, StatusReply};
use super::extra::{expiry_stamp, RemoteExtraData};
use super::{RemoteOptions, RemoteWorkError};
use crate::work::status::UnitStatus;
use crate::work::worktype::UnitState;

/// Detail of a unit whose payload has not been received yet (Go's text).
pub(super) const WAITING_FOR_INPUT: &str = "Waiting for Input Data";

/// Start of the detail of a unit whose payload could not be read (Go's text).
pub(super) const INPUT_ERROR: &str = "Error reading input data";

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

/// A client waiting for the answer to a cancel or release; the driver keeps the
/// channel to it under this number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Waiter(pub(super) u64);

/// A cancel or a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpKind {
    /// `work cancel`.
    Cancel,
    /// `work release` (`force`: `work force-release`).
    Release {
        /// One attempt, then the local unit goes regardless.
        force: bool,
    },
}

impl OpKind {
    /// The control subcommand.
    pub(super) fn subcommand(self) -> &'static str {
        match self {
            OpKind::Cancel => "cancel",
            OpKind::Release { .. } => "release",
        }
    }

    fn pending_key(self) -> &'static str {
        match self {
            OpKind::Cancel => "cancel pending",
            OpKind::Release { .. } => "release pending",
        }
    }
}

/// Why a start attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StartFailure {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reclaimed {
    /// It received its whole payload: it is this unit's remote side.
    Adopted,
    /// Its payload was cut short: it was released; submit again.
    Cleared,
}

/// Why a cancel or release attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum OpFailure {
    /// No connection: retry later.
    Connect(ConnectError),
    /// The remote node answered `ERROR: <message>`.
    Remote(String),
    /// The exchange broke after connecting, or the request could not be made.
    Local(String),
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

/// How a results stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ResultsEnd {
    /// The remote node ended the stream: the unit is complete there.
    Complete,
    /// It stopped because it was asked to ([`Action::StopResults`]).
    Stopped,
    /// The remote node answered the request with something else (an error).
    Refused(String),
    /// No connection, or it broke.
    Failed(String),
}

/// Something that happened to a remote unit.
#[derive(Debug)]
pub(super) enum Event {
    /// The answer to [`Action::Submit`]: the remote unit id, or why not.
    SubmitReplied(Result<String, StartFailure>),
    /// The answer to [`Action::Reclaim`].
    ReclaimReplied(Result<Reclaimed, StartFailure>),
    /// The answer to [`Action::SendOp`].
    OpReplied(OpKind, Result<(), OpFailure>),
    /// The results stream asked for by [`Action::OpenResults`] is open and appends to
    /// the local file from `offset` (where the file ended).
    ResultsOpened {
        /// Bytes already in the local file.
        offset: u64,
    },
    /// `len` bytes of results were written to the local file at `offset`.
    ResultsChunk {
        /// Where they start in the file.
        offset: u64,
        /// How many.
        len: u64,
    },
    /// The results stream ended (after all its chunks were reported).
    StreamClosed(ResultsEnd),
    /// The answer to [`Action::PollStatus`], or why there is none.
    StatusReceived(Result<StatusReply, String>),
    /// A client's `work cancel`.
    CancelRequested(Waiter),
    /// A client's `work release` or `work force-release`.
    ReleaseRequested {
        /// `force-release`.
        force: bool,
        /// Who waits for the answer.
        waiter: Waiter,
    },
    /// [`RemoteUnit::poll_timeout`] has come.
    Timer,
    /// The node shuts down: answer whoever waits; the unit stays as it is on disk.
    Shutdown,
    /// The local unit is gone (released): answer whoever waits.
    UnitReleased,
}

/// Something the I/O layer is asked to do; actions are performed in order. The remote
/// side of the unit (node, remote id, signing, TLS) is [`RemoteUnit::extra`].
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Action {
    /// Tell the submitting client how the first start attempt went.
    ReportStart(StartOutcome),
    /// Submit the unit with its payload; answer with [`Event::SubmitReplied`].
    Submit,
    /// Look at the remote unit an interrupted start left, adopt it or release it;
    /// answer with [`Event::ReclaimReplied`].
    Reclaim,
    /// Send a cancel or release; answer with [`Event::OpReplied`].
    SendOp(OpKind),
    /// Drop the exchange in flight (its answer no longer matters).
    AbandonExchange,
    /// Open the results stream from where the local file ends; report
    /// [`Event::ResultsOpened`], [`Event::ResultsChunk`]s and [`Event::StreamClosed`].
    OpenResults,
    /// Ask the results stream to stop; it still reports how it ended.
    StopResults,
    /// Ask the remote unit's status; answer with [`Event::StatusReceived`].
    PollStatus,
    /// Stop following: drop the results stream and a status query in flight, and keep
    /// the status connection for other units.
    StopFollowing,
    /// Write the unit's `ExtraData`.
    SaveExtra(RemoteExtraData),
    /// Write the unit's state, detail, `StdoutSize` and `ExtraData`.
    WriteStatus {
        /// New state.
        state: UnitState,
        /// New detail.
        detail: String,
        /// Bytes of results here.
        stdout_size: u64,
        /// The `ExtraData`.
        extra: RemoteExtraData,
    },
    /// Flush the local results to disk, then write the final state, detail and
    /// `ExtraData` with the size of the flushed file.
    Finish {
        /// Final state.
        state: UnitState,
        /// Its detail.
        detail: String,
        /// Bytes of results received, the size to write if the file cannot be flushed.
        stdout_size: u64,
        /// The `ExtraData`.
        extra: RemoteExtraData,
    },
    /// Answer waiting clients.
    Answer {
        /// Who.
        waiters: Vec<Waiter>,
        /// What.
        result: Result<Value, RemoteWorkError>,
    },
    /// Release the local unit and answer the waiters with the outcome; the unit is
    /// gone and the driver ends.
    ReleaseLocally {
        /// Who waits for the answer.
        waiters: Vec<Waiter>,
    },
}

/// Exponential back-off: 1 s growing by half up to a maximum (Go: 1 s ×1.5 up to 1 min).
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starting at `initial`, never above `max`.
    pub(super) fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay to wait now; the next one is longer.
    pub(super) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.mul_f64(1.5).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Where a unit is in its life.
#[derive(Debug)]
enum Phase {
    /// Nothing to start or follow (the unit is final, or cannot be started): only
    /// commands and a pending cancel or release.
    Idle,
    /// Not started on the remote node yet: submitting, retrying with back-off.
    Starting(Starting),
    /// Started there: following its results and state until both are complete here.
    Following(Box<Following>),
}

/// A unit being submitted to the remote node.
#[derive(Debug)]
struct Starting {
    /// The submitting client waits for the outcome of the first attempt.
    first: bool,
    /// When to try again; `None` while an attempt is in flight.
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// When the `ttl` runs out.
    expires_at: Option<Instant>,
    /// An earlier start attempt (maybe before a restart) may have created the remote
    /// unit: a remote unit with this id is ours, to adopt or to clear.
    reclaim: bool,
}

/// The results stream of a followed unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Results {
    /// Not open; to be opened at the given time (`None`: not now).
    Closed(Option<Instant>),
    /// Streaming.
    Open,
    /// Asked to stop because every result is here: the unit finishes when it has.
    Finishing,
}

/// The status poll of a followed unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Poll {
    /// No query in flight; the next at the given time (`None`: not now).
    Waiting(Option<Instant>),
    /// A query in flight; `again`: a poll came due meanwhile, and the answer may
    /// predate what made it due (the end of the results), so poll again at once.
    InFlight {
        /// Poll again as soon as the answer is in.
        again: bool,
    },
}

/// A unit started on the remote node, being followed.
#[derive(Debug)]
struct Following {
    results: Results,
    results_backoff: Backoff,
    poll: Poll,
    poll_interval: Duration,
    poll_backoff: Backoff,
    /// The remote status last seen.
    remote: Option<RemoteStatus>,
}

impl Following {
    /// Polls as soon as possible (at once, or right after the query in flight).
    fn poll_now(&mut self, now: Instant) {
        self.poll = match self.poll {
            Poll::Waiting(_) => Poll::Waiting(Some(now)),
            Poll::InFlight { .. } => Poll::InFlight { again: true },
        };
    }
}

/// A cancel or release that has not reached the remote node yet.
#[derive(Debug)]
struct PendingOp {
    kind: OpKind,
    /// Clients waiting for the outcome of the next attempt.
    waiters: Vec<Waiter>,
    retry_at: Option<Instant>,
    backoff: Backoff,
}

/// The exchange in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exchange {
    Start,
    Reclaim,
    Op(OpKind),
}

fn is_final_code(state: i64) -> bool {
    UnitState::from_code(state).is_some_and(UnitState::is_final)
}

fn earliest(times: &[Option<Instant>]) -> Option<Instant> {
    times.iter().flatten().min().copied()
}

/// One remote unit's state machine (see the module documentation).
#[derive(Debug)]
pub(super) struct RemoteUnit {
    id: String,
    extra: RemoteExtraData,
    options: RemoteOptions,
    /// Bytes in the local results file.
    local_size: u64,
    /// The local state and detail, as last read or written.
    local_state: i64,
    local_detail: String,
    phase: Phase,
    exchange: Option<Exchange>,
    op: Option<PendingOp>,
    actions: VecDeque<Action>,
}

impl RemoteUnit {
    fn new(id: &str, status: &UnitStatus, local_size: u64, options: RemoteOptions) -> Self {
        RemoteUnit {
            id: id.to_owned(),
            extra: RemoteExtraData::from_value(status.extra.as_ref()).unwrap_or_default(),
            options,
            local_size,
            local_state: status.state,
            local_detail: status.detail.clone(),
            phase: Phase::Idle,
            exchange: None,
            op: None,
            actions: VecDeque::new(),
        }
    }

    /// A unit just submitted by a client (its status saved, payload on disk): the first
    /// start attempt begins at once and its outcome is reported with
    /// [`Action::ReportStart`]. `wall` is the wall-clock time at `now` (for the `ttl`).
    pub(super) fn submitted(
        id: &str,
        status: &UnitStatus,
        local_size: u64,
        options: RemoteOptions,
        now: Instant,
        wall: SystemTime,
    ) -> Self {
        let mut unit = RemoteUnit::new(id, status, local_size, options);
        unit.begin_start(true, false, now, wall);
        unit
    }

    /// A unit found on disk (after a restart, or when a command comes for a unit with
    /// no driver): carries on from its saved status. `local_size` is the size of its
    /// local results file.
    pub(super) fn resumed(
        id: &str,
        status: &UnitStatus,
        local_size: u64,
        options: RemoteOptions,
        now: Instant,
        wall: SystemTime,
    ) -> Self {
        let mut unit = RemoteUnit::new(id, status, local_size, options);
        unit.resume(status, now, wall);
        unit
    }

    /// The unit's remote side, as the I/O layer needs it for every exchange.
    pub(super) fn extra(&self) -> &RemoteExtraData {
        &self.extra
    }

    /// The next action to perform, in order.
    pub(super) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Event::Timer`] is due: only timers that can act now (an exchange in
    /// flight defers a retry).
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let free = self.exchange.is_none();
        let op_retry = self.op.as_ref().and_then(|op| op.retry_at).filter(|_| free);
        match &self.phase {
            Phase::Idle => op_retry,
            Phase::Starting(s) => earliest(&[s.retry_at.filter(|_| free), s.expires_at, op_retry]),
            Phase::Following(f) => {
                let results = match f.results {
                    Results::Closed(at) => at,
                    Results::Open | Results::Finishing => None,
                };
                let poll = match f.poll {
                    Poll::Waiting(at) => at,
                    Poll::InFlight { .. } => None,
                };
                earliest(&[results, poll, op_retry])
            }
        }
    }

    /// Whether a client's command can be handled now (not while an exchange is in
    /// flight: it waits in the queue).
    pub(super) fn takes_commands(&self) -> bool {
        self.exchange.is_none()
    }

    /// Nothing to do but wait for commands: the driver may end.
    pub(super) fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Idle) && self.exchange.is_none() && self.op.is_none()
    }

    /// Takes in what happened at `now`.
    pub(super) fn handle(&mut self, event: Event, now: Instant) {
        match event {
            Event::SubmitReplied(result) => {
                self.end_exchange();
                self.start_done(result, now);
            }
            Event::ReclaimReplied(result) => {
                self.end_exchange();
                self.reclaim_done(result, now);
            }
            Event::OpReplied(kind, result) => {
                self.end_exchange();
                self.op_done(kind, result, now);
            }
            Event::ResultsOpened { offset } => {
                if self.following().is_some() {
                    self.local_size = offset;
                }
            }
            Event::ResultsChunk { offset, len } => {
                if self.following().is_some() {
                    self.local_size = offset.saturating_add(len);
                }
            }
            Event::StreamClosed(end) => self.results_done(end, now),
            Event::StatusReceived(reply) => self.poll_done(reply, now),
            Event::CancelRequested(waiter) => self.cancel(waiter, now),
            Event::ReleaseRequested { force, waiter } => self.release(force, waiter),
            Event::Timer => self.timers(now),
            Event::Shutdown => self.retire(RemoteWorkError::ShuttingDown),
            Event::UnitReleased => self.retire(RemoteWorkError::UnknownUnit(self.id.clone())),
        }
    }

    fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    fn end_exchange(&mut self) {
        self.exchange = None;
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.options.retry_initial, self.options.retry_max)
    }

    fn answer_id(&self, key: &str) -> Value {
        json!({ key: self.id })
    }

    fn answer(&mut self, waiters: Vec<Waiter>, result: Result<Value, RemoteWorkError>) {
        if !waiters.is_empty() {
            self.push(Action::Answer { waiters, result });
        }
    }

    /// Ends: whoever waits gets `answer` as an error.
    fn retire(&mut self, answer: RemoteWorkError) {
        if let Some(op) = self.op.take() {
            self.answer(op.waiters, Err(answer.clone()));
        }
        self.end_start(StartOutcome::Failed(answer.to_string()));
    }

    // ---- status bookkeeping ----

    fn save_extra(&mut self) {
        self.push(Action::SaveExtra(self.extra.clone()));
    }

    fn set_state(&mut self, state: UnitState, detail: String) {
        self.local_state = state.code();
        self.local_detail.clone_from(&detail);
        self.push(Action::WriteStatus {
            state,
            detail,
            stdout_size: self.local_size,
            extra: self.extra.clone(),
        });
    }

    fn local_is_final(&self) -> bool {
        is_final_code(self.local_state)
    }

    // ---- starting ----

    fn starting(&mut self) -> Option<&mut Starting> {
        match &mut self.phase {
            Phase::Starting(s) => Some(s),
            _ => None,
        }
    }

    fn begin_start(&mut self, first: bool, reclaim: bool, now: Instant, wall: SystemTime) {
        let expires_at = self
            .extra
            .expiration
            .map(|at| now + at.duration_since(wall).unwrap_or(Duration::ZERO));
        self.phase = Phase::Starting(Starting {
            first,
            retry_at: None,
            backoff: self.backoff(),
            expires_at,
            reclaim,
        });
        self.launch_start();
    }

    fn launch_start(&mut self) {
        if let Some(s) = self.starting() {
            s.retry_at = None;
        }
        self.exchange = Some(Exchange::Start);
        self.push(Action::Submit);
    }

    fn launch_reclaim(&mut self) {
        if let Some(s) = self.starting() {
            s.retry_at = None;
        }
        self.exchange = Some(Exchange::Reclaim);
        self.push(Action::Reclaim);
    }

    /// Tells the submitting client `outcome` if it still waits.
    fn report_first(&mut self, outcome: StartOutcome) {
        let waiting = self
            .starting()
            .is_some_and(|s| std::mem::take(&mut s.first));
        if waiting {
            self.push(Action::ReportStart(outcome));
        }
    }

    /// Leaves the starting phase; the submitting client, if it still waits, gets `outcome`.
    fn end_start(&mut self, outcome: StartOutcome) {
        self.report_first(outcome);
        if let Phase::Starting(_) = self.phase {
            self.phase = Phase::Idle;
        }
    }

    fn started(&mut self, remote_id: String, now: Instant) {
        self.extra.remote_unit_id = remote_id;
        self.extra.remote_started = true;
        self.save_extra();
        self.end_start(StartOutcome::Started);
        self.begin_following(now);
    }

    /// Tries again after the back-off delay; the submitting client hears `Job Submitted`.
    fn retry_later(&mut self, reclaim: bool, now: Instant) {
        self.report_first(StartOutcome::Pending);
        if let Some(s) = self.starting() {
            s.reclaim |= reclaim;
            s.retry_at = Some(now + s.backoff.next_delay());
        }
    }

    fn retry_start(&mut self, error: &str, now: Instant) {
        tracing::warn!(
            unit = %self.id,
            "Starting the unit on {} was interrupted: {error}",
            self.extra.remote_node
        );
        self.retry_later(true, now);
    }

    fn reclaim_done(&mut self, result: Result<Reclaimed, StartFailure>, now: Instant) {
        match result {
            Ok(Reclaimed::Adopted) => {
                tracing::info!(unit = %self.id, "the unit was already started on {}", self.extra.remote_node);
                let id = self.id.clone();
                self.started(id, now);
            }
            Ok(Reclaimed::Cleared) => self.retry_later(true, now),
            Err(StartFailure::Connect(e)) => self.retry_start(&e.to_string(), now),
            Err(StartFailure::Interrupted(e) | StartFailure::Duplicate(e)) => {
                self.retry_start(&e, now);
            }
            Err(StartFailure::Failed(message)) => self.start_failed(message),
        }
    }

    fn start_failed(&mut self, message: String) {
        if !matches!(self.phase, Phase::Starting(_)) {
            return;
        }
        self.set_state(
            UnitState::Failed,
            format!("Error starting worker: {message}"),
        );
        self.end_start(StartOutcome::Failed(message));
    }

    fn start_done(&mut self, result: Result<String, StartFailure>, now: Instant) {
        let reclaim = self.starting().is_some_and(|s| s.reclaim);
        match result {
            Ok(remote_id) => self.started(remote_id, now),
            Err(StartFailure::Duplicate(_)) if reclaim => self.launch_reclaim(),
            Err(StartFailure::Interrupted(e)) => self.retry_start(&e, now),
            Err(StartFailure::Connect(e)) if e.is_tls() => {
                self.end_start(StartOutcome::Pending);
                self.set_state(
                    UnitState::Failed,
                    format!("TLS error connecting to remote service: {e}"),
                );
            }
            Err(StartFailure::Connect(e)) => {
                tracing::warn!(
                    unit = %self.id,
                    "Connection to {} failed with error: {e}",
                    self.extra.remote_node
                );
                self.retry_later(false, now);
            }
            Err(StartFailure::Failed(message) | StartFailure::Duplicate(message)) => {
                self.start_failed(message);
            }
        }
    }

    fn expire(&mut self) {
        if !matches!(self.phase, Phase::Starting(_)) {
            return;
        }
        // The start attempt in flight (the only exchange of a unit not started) is
        // abandoned, as Go cancels its context.
        if self.exchange.take().is_some() {
            self.push(Action::AbandonExchange);
        }
        let stamp = self.extra.expiration.map(expiry_stamp).unwrap_or_default();
        let detail = format!("Work unit expired on {stamp}");
        self.set_state(UnitState::Failed, detail.clone());
        self.end_start(StartOutcome::Failed(detail));
    }

    // ---- resuming ----

    fn resume(&mut self, status: &UnitStatus, now: Instant, wall: SystemTime) {
        let is_final = status.is_final();
        if let Err(e) = RemoteExtraData::from_value(status.extra.as_ref()) {
            if !is_final {
                self.set_state(UnitState::Failed, format!("Failed to restart: {e}"));
            }
            return;
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
                );
                return;
            }
            // The payload was accepted and is on disk: start the unit now. An attempt
            // before the restart may have created it on the remote node already.
            self.begin_start(false, true, now, wall);
            return;
        }
        if self.extra.local_released {
            self.queue_op(OpKind::Release { force: false }, None, now);
        } else {
            if self.extra.local_cancelled && !is_final {
                self.queue_op(OpKind::Cancel, None, now);
            }
            if !is_final {
                self.begin_following(now);
            }
        }
    }

    // ---- commands ----

    fn cancel(&mut self, waiter: Waiter, now: Instant) {
        if self.op.is_some() {
            // A cancel, or a release (which cancels), is already on its way.
            let answer = self.answer_id("cancel pending");
            self.answer(vec![waiter], Ok(answer));
            return;
        }
        self.extra.local_cancelled = true;
        if !self.extra.remote_started {
            self.end_start(StartOutcome::Pending);
            self.local_size = 0;
            self.set_state(UnitState::Failed, "Locally Cancelled".to_owned());
            let answer = self.answer_id("cancelled");
            self.answer(vec![waiter], Ok(answer));
            return;
        }
        self.save_extra();
        self.queue_op(OpKind::Cancel, Some(waiter), now);
    }

    fn release(&mut self, force: bool, waiter: Waiter) {
        if !self.extra.remote_started {
            self.end_start(StartOutcome::Pending);
            return self.release_locally(vec![waiter]);
        }
        if let (false, Some(op)) = (force, &self.op) {
            if matches!(op.kind, OpKind::Release { .. }) {
                let answer = self.answer_id("release pending");
                return self.answer(vec![waiter], Ok(answer));
            }
        }
        self.extra.local_cancelled = true;
        self.extra.local_released = true;
        self.save_extra();
        self.stop_following();
        // A pending cancel is replaced: the release cancels too.
        let mut waiters = self.op.take().map(|op| op.waiters).unwrap_or_default();
        waiters.push(waiter);
        self.op = Some(PendingOp {
            kind: OpKind::Release { force },
            waiters,
            retry_at: None,
            backoff: self.backoff(),
        });
        self.launch_op();
    }

    fn release_locally(&mut self, waiters: Vec<Waiter>) {
        self.stop_following();
        self.push(Action::ReleaseLocally { waiters });
    }

    fn queue_op(&mut self, kind: OpKind, waiter: Option<Waiter>, now: Instant) {
        self.op = Some(PendingOp {
            kind,
            waiters: waiter.into_iter().collect(),
            retry_at: None,
            backoff: self.backoff(),
        });
        if self.exchange.is_none() {
            self.launch_op();
        } else if let Some(op) = &mut self.op {
            op.retry_at = Some(now);
        }
    }

    fn launch_op(&mut self) {
        let Some(op) = &mut self.op else { return };
        op.retry_at = None;
        let kind = op.kind;
        self.exchange = Some(Exchange::Op(kind));
        self.push(Action::SendOp(kind));
    }

    fn op_done(&mut self, kind: OpKind, result: Result<(), OpFailure>, now: Instant) {
        let Some(mut op) = self.op.take() else {
            return;
        };
        let waiters = std::mem::take(&mut op.waiters);
        let background = waiters.is_empty();
        match (kind, result) {
            (OpKind::Cancel, Ok(())) => {
                let answer = self.answer_id("cancelled");
                self.answer(waiters, Ok(answer));
                if let Some(f) = self.following() {
                    f.poll_now(now);
                }
            }
            (OpKind::Release { .. }, Ok(())) => self.release_locally(waiters),
            (OpKind::Release { .. }, Err(OpFailure::Remote(m)))
                if m.contains("unknown work unit") =>
            {
                self.release_locally(waiters);
            }
            (OpKind::Release { force: true }, Err(e)) => {
                tracing::warn!(
                    unit = %self.id,
                    "force-release: the remote unit was not released: {}",
                    e.text()
                );
                self.release_locally(waiters);
            }
            (kind, Err(OpFailure::Connect(e))) => {
                tracing::warn!(
                    unit = %self.id,
                    "Connection to {} failed with error: {e}",
                    self.extra.remote_node
                );
                let answer = self.answer_id(kind.pending_key());
                self.answer(waiters, Ok(answer));
                op.retry_at = Some(now + op.backoff.next_delay());
                self.op = Some(op);
            }
            (_, Err(OpFailure::Local(e))) if background => {
                tracing::warn!(unit = %self.id, "{} of the remote unit failed: {e}", kind.subcommand());
                op.retry_at = Some(now + op.backoff.next_delay());
                self.op = Some(op);
            }
            (kind, Err(failure)) => {
                let message = failure.text();
                tracing::warn!(unit = %self.id, "{} of the remote unit failed: {message}", kind.subcommand());
                self.answer(waiters, Err(RemoteWorkError::Failed(message)));
                if matches!(kind, OpKind::Release { .. }) && !self.local_is_final() {
                    // The unit stays: keep following it.
                    self.begin_following(now);
                }
            }
        }
    }

    // ---- timers ----

    fn timers(&mut self, now: Instant) {
        let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        let expired = match &self.phase {
            Phase::Starting(s) => due(s.expires_at) && !self.extra.remote_started,
            _ => false,
        };
        if expired {
            self.expire();
        }
        if self.exchange.is_none() && due(self.op.as_ref().and_then(|op| op.retry_at)) {
            self.launch_op();
        }
        let (start, results, poll) = match &self.phase {
            Phase::Starting(s) => (due(s.retry_at), false, false),
            Phase::Following(f) => (
                false,
                matches!(f.results, Results::Closed(at) if due(at)),
                matches!(f.poll, Poll::Waiting(at) if due(at)),
            ),
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

    fn begin_following(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Following(_)) {
            return;
        }
        self.phase = Phase::Following(Box::new(Following {
            results: Results::Closed(Some(now)),
            results_backoff: self.backoff(),
            poll: Poll::Waiting(Some(now)),
            poll_interval: self.options.poll_initial,
            poll_backoff: self.backoff(),
            remote: None,
        }));
    }

    fn stop_following(&mut self) {
        if let Phase::Following(_) = self.phase {
            self.phase = Phase::Idle;
            self.push(Action::StopFollowing);
        }
    }

    fn launch_results(&mut self) {
        let Some(f) = self.following() else { return };
        if !matches!(f.results, Results::Closed(_)) {
            return;
        }
        f.results = Results::Open;
        self.push(Action::OpenResults);
    }

    fn launch_poll(&mut self) {
        let Some(f) = self.following() else { return };
        if let Poll::InFlight { .. } = f.poll {
            f.poll = Poll::InFlight { again: true };
            return;
        }
        f.poll = Poll::InFlight { again: false };
        self.push(Action::PollStatus);
    }

    fn results_done(&mut self, end: ResultsEnd, now: Instant) {
        let remote_node = self.extra.remote_node.clone();
        let id = self.id.clone();
        let Some(f) = self.following() else { return };
        let finishing = f.results == Results::Finishing;
        f.results = Results::Closed(None);
        match end {
            ResultsEnd::Complete => {
                f.results_backoff.reset();
                if finishing {
                    return self.finish();
                }
                // The remote unit is complete: its final status settles it.
                f.poll_now(now);
            }
            ResultsEnd::Stopped => {
                if finishing {
                    self.finish();
                }
            }
            ResultsEnd::Refused(reply) => {
                f.results = Results::Closed(Some(now + f.results_backoff.next_delay()));
                f.poll_now(now);
                tracing::warn!(
                    unit = %id,
                    "Remote node {remote_node} did not stream results: {}",
                    reply.trim_end()
                );
            }
            ResultsEnd::Failed(e) => {
                if finishing {
                    return self.finish();
                }
                f.results = Results::Closed(Some(now + f.results_backoff.next_delay()));
                tracing::debug!(unit = %id, "results stream from {remote_node}: {e}");
            }
        }
    }

    fn poll_done(&mut self, reply: Result<StatusReply, String>, now: Instant) {
        let (poll_initial, poll_max) = (self.options.poll_initial, self.options.poll_max);
        let Some(f) = self.following() else { return };
        let again = matches!(f.poll, Poll::InFlight { again: true });
        f.poll = Poll::Waiting(None);
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
                    self.check_complete(now);
                } else if changed
                    && !self.local_is_final()
                    && (self.local_state != status.state || self.local_detail != status.detail)
                {
                    let state = UnitState::from_code(status.state).unwrap_or(UnitState::Running);
                    self.set_state(state, status.detail.clone());
                }
                if let Some(f) = self.following() {
                    if f.results != Results::Finishing {
                        let wait = if again {
                            Duration::ZERO
                        } else {
                            f.poll_interval
                        };
                        f.poll = Poll::Waiting(Some(now + wait));
                    }
                }
            }
            Ok(StatusReply::Gone) => {
                tracing::debug!(unit = %self.id, "Work unit {} on node {} is gone", self.extra.remote_unit_id, self.extra.remote_node);
                self.stop_following();
                self.set_state(UnitState::Failed, "Remote work unit is gone".to_owned());
            }
            Ok(StatusReply::Error(e)) | Err(e) => {
                f.poll = Poll::Waiting(Some(now + f.poll_backoff.next_delay()));
                tracing::debug!(unit = %self.id, "status of the remote unit: {e}");
            }
        }
    }

    /// Finishes the unit if the remote unit is final and all its results are here;
    /// otherwise makes sure the results keep coming.
    fn check_complete(&mut self, now: Instant) {
        let local_size = self.local_size;
        let Some(f) = self.following() else { return };
        let Some(remote) = &f.remote else { return };
        if !is_final_code(remote.state) {
            return;
        }
        let remote_size = u64::try_from(remote.stdout_size).unwrap_or(0);
        if local_size >= remote_size {
            match f.results {
                Results::Open => {
                    // Let the stream flush what it has, then finish.
                    f.results = Results::Finishing;
                    f.poll = Poll::Waiting(None);
                    self.push(Action::StopResults);
                }
                Results::Finishing => {}
                Results::Closed(_) => self.finish(),
            }
        } else if let Results::Closed(None) = f.results {
            f.results = Results::Closed(Some(now + f.results_backoff.next_delay()));
        }
    }

    /// Records the end: results flushed to disk, then the remote's final state.
    fn finish(&mut self) {
        let Some(remote) = self.following().and_then(|f| f.remote.clone()) else {
            return;
        };
        self.stop_following();
        let state = UnitState::from_code(remote.state).unwrap_or(UnitState::Failed);
        self.local_state = state.code();
        self.local_detail.clone_from(&remote.detail);
        self.push(Action::Finish {
            state,
            detail: remote.detail,
            stdout_size: self.local_size,
            extra: self.extra.clone(),
        });
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
