//! The remote unit's state machine, driven with simulated time: every phase after a
//! restart, the peer gone and back, results resumed from an offset, cancel and release
//! in each phase, and the bounds of the retry back-off.

use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use super::*;
use crate::work::remote::{DialError, RemoteStatus};

const ID: &str = "unit1";

fn options() -> RemoteOptions {
    RemoteOptions {
        retry_initial: Duration::from_secs(1),
        retry_max: Duration::from_secs(60),
        poll_initial: Duration::from_secs(1),
        poll_max: Duration::from_secs(5),
        ..RemoteOptions::default()
    }
}

fn extra() -> RemoteExtraData {
    RemoteExtraData {
        remote_node: "bar".to_owned(),
        remote_work_type: "cat".to_owned(),
        remote_unit_id: String::new(),
        ..RemoteExtraData::default()
    }
}

fn started_extra() -> RemoteExtraData {
    RemoteExtraData {
        remote_unit_id: ID.to_owned(),
        remote_started: true,
        ..extra()
    }
}

fn saved(state: UnitState, detail: &str, extra: &RemoteExtraData) -> UnitStatus {
    let mut status = UnitStatus::new(state, detail, "remote");
    status.extra = Some(extra.to_value());
    status
}

fn unreachable() -> ConnectError {
    ConnectError::Dial(DialError::Unreachable("no route to bar".to_owned()))
}

fn remote(state: UnitState, stdout_size: i64) -> Result<StatusReply, String> {
    Ok(StatusReply::Status(RemoteStatus {
        state: state.code(),
        detail: format!("{state:?}"),
        stdout_size,
    }))
}

/// A machine and its simulated clock.
struct Sim {
    unit: RemoteUnit,
    now: Instant,
    wall: SystemTime,
}

impl Sim {
    fn submitted(status: &UnitStatus) -> Sim {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let unit = RemoteUnit::submitted(ID, status, 0, options(), now, wall);
        Sim { unit, now, wall }
    }

    fn resumed(status: &UnitStatus, local_size: u64) -> Sim {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let unit = RemoteUnit::resumed(ID, status, local_size, options(), now, wall);
        Sim { unit, now, wall }
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.unit.poll_action()).collect()
    }

    fn handle(&mut self, event: Event) -> Vec<Action> {
        self.unit.handle(event, self.now);
        self.actions()
    }

    /// Moves the clock to the next timeout (which must be set) and fires it.
    fn fire(&mut self) -> Vec<Action> {
        let at = self.unit.poll_timeout().expect("a timer is set");
        assert!(at >= self.now, "timers never go back");
        self.now = at;
        self.handle(Event::Timer)
    }

    /// How long from now the next timeout is.
    fn wait(&self) -> Option<Duration> {
        self.unit.poll_timeout().map(|at| at - self.now)
    }

    /// A followed unit: started, its results stream and first status poll under way.
    fn following(local_size: u64) -> Sim {
        let mut sim = Sim::resumed(
            &saved(UnitState::Running, "Running", &started_extra()),
            local_size,
        );
        assert_eq!(sim.actions(), vec![]);
        assert_eq!(sim.fire(), vec![Action::OpenResults, Action::PollStatus]);
        sim
    }
}

fn write_status(
    state: UnitState,
    detail: &str,
    stdout_size: u64,
    extra: RemoteExtraData,
) -> Action {
    Action::WriteStatus {
        state,
        detail: detail.to_owned(),
        stdout_size,
        extra,
    }
}

fn answer(waiter: u64, key: &str) -> Action {
    Action::Answer {
        waiters: vec![Waiter(waiter)],
        result: Ok(json!({ key: ID })),
    }
}

#[test]
fn a_submitted_unit_starts_follows_and_finishes() {
    let mut sim = Sim::submitted(&saved(UnitState::Pending, "Starting Worker", &extra()));
    assert_eq!(sim.actions(), vec![Action::Submit]);
    assert!(
        !sim.unit.takes_commands(),
        "commands wait for the submission"
    );
    assert_eq!(
        sim.handle(Event::SubmitReplied(Ok(ID.to_owned()))),
        vec![
            Action::SaveExtra(started_extra()),
            Action::ReportStart(StartOutcome::Started),
        ]
    );
    assert_eq!(sim.wait(), Some(Duration::ZERO));
    assert_eq!(sim.fire(), vec![Action::OpenResults, Action::PollStatus]);
    assert_eq!(sim.handle(Event::ResultsOpened { offset: 0 }), vec![]);
    assert_eq!(
        sim.handle(Event::ResultsChunk { offset: 0, len: 7 }),
        vec![]
    );
    // Running there: mirrored here, polled again after the first interval.
    assert_eq!(
        sim.handle(Event::StatusReceived(remote(UnitState::Running, 7))),
        vec![write_status(
            UnitState::Running,
            "Running",
            7,
            started_extra()
        )]
    );
    assert_eq!(sim.wait(), Some(Duration::from_secs(1)));
    assert_eq!(sim.fire(), vec![Action::PollStatus]);
    // Final there with every byte here: the stream is stopped, then the unit finishes.
    assert_eq!(
        sim.handle(Event::StatusReceived(remote(UnitState::Succeeded, 7))),
        vec![Action::StopResults]
    );
    assert_eq!(sim.wait(), None);
    assert_eq!(
        sim.handle(Event::StreamClosed(ResultsEnd::Stopped)),
        vec![
            Action::StopFollowing,
            Action::Finish {
                state: UnitState::Succeeded,
                detail: "Succeeded".to_owned(),
                stdout_size: 7,
                extra: started_extra(),
            },
        ]
    );
    assert!(sim.unit.is_idle());
}

#[test]
fn restart_before_the_payload_was_accepted_fails_the_unit() {
    let mut sim = Sim::resumed(&saved(UnitState::Pending, WAITING_FOR_INPUT, &extra()), 0);
    assert_eq!(
        sim.actions(),
        vec![write_status(
            UnitState::Failed,
            "Failed to restart: remote work had not previously started",
            0,
            extra()
        )]
    );
    assert!(sim.unit.is_idle());
}

#[test]
fn restart_while_starting_submits_again_and_adopts_what_an_earlier_attempt_left() {
    let mut sim = Sim::resumed(&saved(UnitState::Pending, "Starting Worker", &extra()), 0);
    assert_eq!(sim.actions(), vec![Action::Submit]);
    // The attempt before the restart created the remote unit: look at it, adopt it.
    assert_eq!(
        sim.handle(Event::SubmitReplied(Err(StartFailure::Duplicate(
            "unit1 is already in use".to_owned()
        )))),
        vec![Action::Reclaim]
    );
    assert_eq!(
        sim.handle(Event::ReclaimReplied(Ok(Reclaimed::Adopted))),
        vec![Action::SaveExtra(started_extra())],
        "no client waits for the outcome after a restart"
    );
    assert_eq!(sim.fire(), vec![Action::OpenResults, Action::PollStatus]);
}

#[test]
fn restart_while_starting_clears_a_half_received_remote_unit_and_submits_again() {
    let mut sim = Sim::resumed(&saved(UnitState::Pending, "Starting Worker", &extra()), 0);
    assert_eq!(sim.actions(), vec![Action::Submit]);
    sim.handle(Event::SubmitReplied(Err(StartFailure::Duplicate(
        "in use".to_owned(),
    ))));
    assert_eq!(
        sim.handle(Event::ReclaimReplied(Ok(Reclaimed::Cleared))),
        vec![]
    );
    assert_eq!(sim.wait(), Some(Duration::from_secs(1)));
    assert_eq!(sim.fire(), vec![Action::Submit]);
}

#[test]
fn a_duplicate_id_of_a_new_submission_fails_it() {
    let mut sim = Sim::submitted(&saved(UnitState::Pending, "Starting Worker", &extra()));
    sim.actions();
    let message = "could not parse response: ERROR: unit1 is already in use".to_owned();
    assert_eq!(
        sim.handle(Event::SubmitReplied(Err(StartFailure::Duplicate(
            message.clone()
        )))),
        vec![
            write_status(
                UnitState::Failed,
                &format!("Error starting worker: {message}"),
                0,
                extra()
            ),
            Action::ReportStart(StartOutcome::Failed(message)),
        ]
    );
    assert!(sim.unit.is_idle());
}

#[test]
fn restart_while_following_follows_again() {
    let sim = Sim::following(0);
    assert!(sim.unit.takes_commands());
    assert!(!sim.unit.is_idle());
}

#[test]
fn restart_of_a_finished_unit_does_nothing() {
    for state in [UnitState::Succeeded, UnitState::Failed, UnitState::Canceled] {
        let mut sim = Sim::resumed(&saved(state, "done", &started_extra()), 5);
        assert_eq!(sim.actions(), vec![]);
        assert!(sim.unit.is_idle());
        assert_eq!(sim.wait(), None);
    }
}

#[test]
fn restart_with_a_pending_release_or_cancel_carries_it_on() {
    let released = RemoteExtraData {
        local_cancelled: true,
        local_released: true,
        ..started_extra()
    };
    let mut sim = Sim::resumed(&saved(UnitState::Running, "Running", &released), 0);
    assert_eq!(
        sim.actions(),
        vec![Action::SendOp(OpKind::Release { force: false })]
    );
    assert_eq!(
        sim.handle(Event::OpReplied(OpKind::Release { force: false }, Ok(()))),
        vec![Action::ReleaseLocally { waiters: vec![] }]
    );

    let cancelled = RemoteExtraData {
        local_cancelled: true,
        ..started_extra()
    };
    let mut sim = Sim::resumed(&saved(UnitState::Running, "Running", &cancelled), 0);
    assert_eq!(sim.actions(), vec![Action::SendOp(OpKind::Cancel)]);
    // The cancel goes first; following waits for it.
    assert_eq!(sim.wait(), Some(Duration::ZERO));
    assert_eq!(sim.fire(), vec![Action::OpenResults, Action::PollStatus]);
    assert_eq!(sim.handle(Event::OpReplied(OpKind::Cancel, Ok(()))), vec![]);
}

#[test]
fn restart_with_unreadable_extra_data_fails_the_unit() {
    let mut status = UnitStatus::new(UnitState::Running, "Running", "remote");
    status.extra = Some(json!({"RemoteStarted": "yes"}));
    let mut sim = Sim::resumed(&status, 0);
    let actions = sim.actions();
    assert!(
        matches!(&actions[..], [Action::WriteStatus { state: UnitState::Failed, detail, .. }]
            if detail.starts_with("Failed to restart: ")),
        "{actions:?}"
    );
    assert!(sim.unit.is_idle());
}

#[test]
fn peer_gone_and_back_while_starting() {
    let mut sim = Sim::submitted(&saved(UnitState::Pending, "Starting Worker", &extra()));
    sim.actions();
    assert_eq!(
        sim.handle(Event::SubmitReplied(Err(StartFailure::Connect(
            unreachable()
        )))),
        vec![Action::ReportStart(StartOutcome::Pending)]
    );
    assert_eq!(sim.wait(), Some(Duration::from_secs(1)));
    assert_eq!(sim.fire(), vec![Action::Submit]);
    // Gone again: no second report to the client, a longer wait.
    assert_eq!(
        sim.handle(Event::SubmitReplied(Err(StartFailure::Connect(
            unreachable()
        )))),
        vec![]
    );
    assert_eq!(sim.wait(), Some(Duration::from_millis(1500)));
    assert_eq!(sim.fire(), vec![Action::Submit]);
    // A connection that breaks after the request may have created the unit: the
    // next attempt adopts or clears it.
    sim.handle(Event::SubmitReplied(Err(StartFailure::Interrupted(
        "reset".to_owned(),
    ))));
    assert_eq!(sim.fire(), vec![Action::Submit]);
    assert_eq!(
        sim.handle(Event::SubmitReplied(Err(StartFailure::Duplicate(
            "in use".to_owned()
        )))),
        vec![Action::Reclaim]
    );
    assert_eq!(
        sim.handle(Event::ReclaimReplied(Ok(Reclaimed::Adopted))),
        vec![Action::SaveExtra(started_extra())]
    );
}

#[test]
fn a_tls_failure_fails_a_unit_not_started() {
    let mut sim = Sim::submitted(&saved(UnitState::Pending, "Starting Worker", &extra()));
    sim.actions();
    let tls = ConnectError::Dial(DialError::Tls("bad certificate".to_owned()));
    assert_eq!(
        sim.handle(Event::SubmitReplied(Err(StartFailure::Connect(tls)))),
        vec![
            Action::ReportStart(StartOutcome::Pending),
            write_status(
                UnitState::Failed,
                "TLS error connecting to remote service: bad certificate",
                0,
                extra()
            ),
        ]
    );
    assert!(sim.unit.is_idle());
}

#[test]
fn peer_gone_and_back_while_following() {
    let mut sim = Sim::following(0);
    sim.handle(Event::ResultsOpened { offset: 0 });
    sim.handle(Event::ResultsChunk { offset: 0, len: 10 });
    // The stream breaks and the node cannot be asked: both back off.
    assert_eq!(
        sim.handle(Event::StreamClosed(ResultsEnd::Failed("reset".to_owned()))),
        vec![]
    );
    assert_eq!(
        sim.handle(Event::StatusReceived(Err("no route".to_owned()))),
        vec![]
    );
    assert_eq!(sim.wait(), Some(Duration::from_secs(1)));
    let actions = sim.fire();
    assert_eq!(actions, vec![Action::OpenResults, Action::PollStatus]);
    sim.handle(Event::StreamClosed(ResultsEnd::Failed(
        "no route".to_owned(),
    )));
    sim.handle(Event::StatusReceived(Err("no route".to_owned())));
    assert_eq!(sim.wait(), Some(Duration::from_millis(1500)));
    // Back: the stream resumes after the ten bytes already here.
    assert_eq!(sim.fire(), vec![Action::OpenResults, Action::PollStatus]);
    sim.handle(Event::ResultsOpened { offset: 10 });
    sim.handle(Event::ResultsChunk { offset: 10, len: 5 });
    assert_eq!(
        sim.handle(Event::StreamClosed(ResultsEnd::Complete)),
        vec![]
    );
    // The end of the stream asks for a poll right after the one in flight.
    // (Running here already: nothing to write.)
    assert_eq!(
        sim.handle(Event::StatusReceived(remote(UnitState::Running, 10))),
        vec![]
    );
    assert_eq!(
        sim.wait(),
        Some(Duration::ZERO),
        "the answer may predate the end"
    );
    assert_eq!(sim.fire(), vec![Action::PollStatus]);
    let actions = sim.handle(Event::StatusReceived(remote(UnitState::Succeeded, 15)));
    assert_eq!(
        actions,
        vec![
            Action::StopFollowing,
            Action::Finish {
                state: UnitState::Succeeded,
                detail: "Succeeded".to_owned(),
                stdout_size: 15,
                extra: started_extra(),
            }
        ]
    );
}

#[test]
fn a_remote_unit_that_is_gone_fails_here() {
    let mut sim = Sim::following(3);
    assert_eq!(
        sim.handle(Event::StatusReceived(Ok(StatusReply::Gone))),
        vec![
            Action::StopFollowing,
            write_status(
                UnitState::Failed,
                "Remote work unit is gone",
                3,
                started_extra()
            ),
        ]
    );
    assert!(sim.unit.is_idle());
}

#[test]
fn results_resume_from_the_local_offset() {
    let mut sim = Sim::following(100);
    assert_eq!(sim.handle(Event::ResultsOpened { offset: 100 }), vec![]);
    // Final there with more than is here: keep streaming.
    assert_eq!(
        sim.handle(Event::StatusReceived(remote(UnitState::Succeeded, 180))),
        vec![]
    );
    sim.handle(Event::ResultsChunk {
        offset: 100,
        len: 50,
    });
    // The stream breaks short of the end: reopened after a back-off, from 150.
    sim.handle(Event::StreamClosed(ResultsEnd::Failed("reset".to_owned())));
    assert_eq!(sim.wait(), Some(Duration::from_secs(1)));
    assert_eq!(sim.fire(), vec![Action::OpenResults, Action::PollStatus]);
    sim.handle(Event::ResultsOpened { offset: 150 });
    sim.handle(Event::ResultsChunk {
        offset: 150,
        len: 30,
    });
    assert_eq!(
        sim.handle(Event::StreamClosed(ResultsEnd::Complete)),
        vec![]
    );
    let actions = sim.handle(Event::StatusReceived(remote(UnitState::Succeeded, 180)));
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(matches!(
        actions[1],
        Action::Finish {
            state: UnitState::Succeeded,
            stdout_size: 180,
            ..
        }
    ));
}

#[test]
fn a_refused_results_request_is_retried_with_back_off() {
    let mut sim = Sim::following(0);
    assert_eq!(
        sim.handle(Event::StreamClosed(ResultsEnd::Refused(
            "ERROR: busy".to_owned()
        ))),
        vec![]
    );
    sim.handle(Event::StatusReceived(remote(UnitState::Running, 0)));
    // The refused stream asked for a poll during the one in flight: at once.
    assert_eq!(sim.wait(), Some(Duration::ZERO));
    assert_eq!(sim.fire(), vec![Action::PollStatus]);
    sim.handle(Event::StatusReceived(remote(UnitState::Running, 0)));
    assert_eq!(sim.wait(), Some(Duration::from_secs(1)));
    let actions = sim.fire();
    assert!(actions.contains(&Action::OpenResults), "{actions:?}");
}

#[test]
fn the_status_poll_slows_while_nothing_changes_and_speeds_up_on_a_change() {
    let mut sim = Sim::following(0);
    let mut waits = Vec::new();
    for _ in 0..8 {
        sim.handle(Event::StatusReceived(remote(UnitState::Running, 0)));
        waits.push(sim.wait().expect("polls again"));
        assert_eq!(sim.fire(), vec![Action::PollStatus]);
    }
    let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [1000, 1500, 2250, 3375, 5000, 5000, 5000, 5000]);
    sim.handle(Event::StatusReceived(remote(UnitState::Running, 10)));
    assert_eq!(sim.wait(), Some(Duration::from_secs(1)));
}

#[test]
fn retry_back_off_grows_by_half_up_to_the_maximum() {
    let mut sim = Sim::submitted(&saved(UnitState::Pending, "Starting Worker", &extra()));
    sim.actions();
    let mut waits = Vec::new();
    for _ in 0..16 {
        sim.handle(Event::SubmitReplied(Err(StartFailure::Connect(
            unreachable(),
        ))));
        waits.push(sim.wait().expect("retries"));
        assert_eq!(sim.fire(), vec![Action::Submit]);
    }
    assert_eq!(waits[0], Duration::from_secs(1));
    for pair in waits.windows(2) {
        assert!(pair[1] >= pair[0], "never shorter: {waits:?}");
        let grown = pair[0].mul_f64(1.5).min(Duration::from_secs(60));
        assert_eq!(pair[1], grown, "{waits:?}");
    }
    assert_eq!(waits.last(), Some(&Duration::from_secs(60)), "{waits:?}");
    assert!(waits.iter().all(|w| *w <= Duration::from_secs(60)));
}

#[test]
fn the_ttl_ends_retries_and_abandons_an_attempt_in_flight() {
    let ttl = Duration::from_secs(10);
    let mut sim = Sim::submitted(&saved(UnitState::Pending, "Starting Worker", &extra()));
    let wall = sim.wall;
    let with_ttl = RemoteExtraData {
        expiration: Some(wall + ttl),
        ..extra()
    };
    let (now, wall) = (sim.now, sim.wall);
    sim.unit = RemoteUnit::submitted(
        ID,
        &saved(UnitState::Pending, "Starting Worker", &with_ttl),
        0,
        options(),
        now,
        wall,
    );
    assert_eq!(sim.actions(), vec![Action::Submit]);
    // The attempt in flight hangs; the ttl runs out first.
    assert_eq!(sim.wait(), Some(ttl));
    let actions = sim.fire();
    assert!(
        matches!(&actions[..], [
            Action::AbandonExchange,
            Action::WriteStatus { state: UnitState::Failed, detail, .. },
            Action::ReportStart(StartOutcome::Failed(reported)),
        ] if detail.starts_with("Work unit expired on ") && detail == reported),
        "{actions:?}"
    );
    assert!(sim.unit.is_idle());
}

#[test]
fn cancel_and_release_before_the_unit_started() {
    let mut sim = Sim::submitted(&saved(UnitState::Pending, "Starting Worker", &extra()));
    sim.actions();
    sim.handle(Event::SubmitReplied(Err(StartFailure::Connect(
        unreachable(),
    ))));
    assert!(sim.unit.takes_commands(), "between attempts");
    let cancelled = RemoteExtraData {
        local_cancelled: true,
        ..extra()
    };
    assert_eq!(
        sim.handle(Event::CancelRequested(Waiter(1))),
        vec![
            write_status(UnitState::Failed, "Locally Cancelled", 0, cancelled),
            answer(1, "cancelled"),
        ]
    );
    assert!(sim.unit.is_idle(), "no more attempts");
    assert_eq!(sim.wait(), None);

    let mut sim = Sim::submitted(&saved(UnitState::Pending, "Starting Worker", &extra()));
    sim.actions();
    sim.handle(Event::SubmitReplied(Err(StartFailure::Connect(
        unreachable(),
    ))));
    assert_eq!(
        sim.handle(Event::ReleaseRequested {
            force: false,
            waiter: Waiter(2)
        }),
        vec![Action::ReleaseLocally {
            waiters: vec![Waiter(2)]
        }]
    );
}

#[test]
fn cancel_while_following_goes_to_the_remote_node_and_polls() {
    let mut sim = Sim::following(0);
    let cancelled = RemoteExtraData {
        local_cancelled: true,
        ..started_extra()
    };
    assert_eq!(
        sim.handle(Event::CancelRequested(Waiter(1))),
        vec![Action::SaveExtra(cancelled), Action::SendOp(OpKind::Cancel)]
    );
    assert!(!sim.unit.takes_commands());
    // A second cancel while the first is on its way (after the exchange) is pending.
    assert_eq!(
        sim.handle(Event::OpReplied(
            OpKind::Cancel,
            Err(OpFailure::Connect(unreachable()))
        )),
        vec![answer(1, "cancel pending")]
    );
    assert_eq!(
        sim.handle(Event::CancelRequested(Waiter(2))),
        vec![answer(2, "cancel pending")]
    );
    sim.handle(Event::StatusReceived(remote(UnitState::Running, 0)));
    // The cancel is retried after its back-off, beside the poll.
    assert_eq!(
        sim.fire(),
        vec![Action::SendOp(OpKind::Cancel), Action::PollStatus]
    );
    assert_eq!(sim.handle(Event::OpReplied(OpKind::Cancel, Ok(()))), vec![]);
    // Canceled there (a Go node never ends such a stream): finished when all is here.
    assert_eq!(
        sim.handle(Event::StatusReceived(remote(UnitState::Canceled, 0))),
        vec![Action::StopResults]
    );
}

#[test]
fn release_while_following_retries_until_the_remote_node_has_it() {
    let mut sim = Sim::following(0);
    let released = RemoteExtraData {
        local_cancelled: true,
        local_released: true,
        ..started_extra()
    };
    let release = OpKind::Release { force: false };
    assert_eq!(
        sim.handle(Event::ReleaseRequested {
            force: false,
            waiter: Waiter(1)
        }),
        vec![
            Action::SaveExtra(released),
            Action::StopFollowing,
            Action::SendOp(release)
        ]
    );
    assert_eq!(
        sim.handle(Event::OpReplied(
            release,
            Err(OpFailure::Connect(unreachable()))
        )),
        vec![answer(1, "release pending")]
    );
    assert_eq!(
        sim.handle(Event::ReleaseRequested {
            force: false,
            waiter: Waiter(2)
        }),
        vec![answer(2, "release pending")]
    );
    assert_eq!(sim.wait(), Some(Duration::from_secs(1)));
    assert_eq!(sim.fire(), vec![Action::SendOp(release)]);
    // Already gone there counts as released.
    assert_eq!(
        sim.handle(Event::OpReplied(
            release,
            Err(OpFailure::Remote("unknown work unit unit1".to_owned()))
        )),
        vec![Action::ReleaseLocally { waiters: vec![] }]
    );
}

#[test]
fn a_refused_release_of_a_running_unit_keeps_following_it() {
    let mut sim = Sim::following(0);
    let release = OpKind::Release { force: false };
    sim.handle(Event::ReleaseRequested {
        force: false,
        waiter: Waiter(1),
    });
    assert_eq!(
        sim.handle(Event::OpReplied(
            release,
            Err(OpFailure::Remote("denied".to_owned()))
        )),
        vec![Action::Answer {
            waiters: vec![Waiter(1)],
            result: Err(RemoteWorkError::Failed(
                "error cancelling remote unit: denied".to_owned()
            )),
        }]
    );
    assert_eq!(sim.fire(), vec![Action::OpenResults, Action::PollStatus]);
}

#[test]
fn force_release_tries_once_then_releases_locally() {
    let mut sim = Sim::following(0);
    let release = OpKind::Release { force: true };
    sim.handle(Event::ReleaseRequested {
        force: true,
        waiter: Waiter(1),
    });
    assert_eq!(
        sim.handle(Event::OpReplied(
            release,
            Err(OpFailure::Connect(unreachable()))
        )),
        vec![Action::ReleaseLocally {
            waiters: vec![Waiter(1)]
        }]
    );
}

#[test]
fn release_of_a_finished_unit() {
    let mut sim = Sim::resumed(&saved(UnitState::Succeeded, "done", &started_extra()), 4);
    assert!(sim.unit.is_idle());
    let release = OpKind::Release { force: false };
    let actions = sim.handle(Event::ReleaseRequested {
        force: false,
        waiter: Waiter(7),
    });
    assert_eq!(actions.last(), Some(&Action::SendOp(release)));
    assert!(!actions.contains(&Action::StopFollowing), "{actions:?}");
    assert_eq!(
        sim.handle(Event::OpReplied(release, Ok(()))),
        vec![Action::ReleaseLocally {
            waiters: vec![Waiter(7)]
        }]
    );
}

#[test]
fn a_background_cancel_that_breaks_is_retried_quietly() {
    let cancelled = RemoteExtraData {
        local_cancelled: true,
        ..started_extra()
    };
    let mut sim = Sim::resumed(&saved(UnitState::Running, "Running", &cancelled), 0);
    assert_eq!(sim.actions(), vec![Action::SendOp(OpKind::Cancel)]);
    assert_eq!(
        sim.handle(Event::OpReplied(
            OpKind::Cancel,
            Err(OpFailure::Local("reset".to_owned()))
        )),
        vec![]
    );
    let actions = sim.fire();
    assert_eq!(actions, vec![Action::OpenResults, Action::PollStatus]);
    assert_eq!(sim.wait(), Some(Duration::from_secs(1)));
    assert_eq!(sim.fire(), vec![Action::SendOp(OpKind::Cancel)]);
}

#[test]
fn shutdown_answers_whoever_waits() {
    let mut sim = Sim::submitted(&saved(UnitState::Pending, "Starting Worker", &extra()));
    sim.actions();
    assert_eq!(
        sim.handle(Event::Shutdown),
        vec![Action::ReportStart(StartOutcome::Failed(
            "node is shutting down".to_owned()
        ))]
    );

    let mut sim = Sim::following(0);
    sim.handle(Event::CancelRequested(Waiter(3)));
    sim.handle(Event::OpReplied(
        OpKind::Cancel,
        Err(OpFailure::Connect(unreachable())),
    ));
    // The pending cancel has no waiter left (answered `cancel pending`).
    assert_eq!(sim.handle(Event::UnitReleased), vec![]);
}
