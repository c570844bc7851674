//! Tests of the node state machine: session establishment and rejection against
//! the behaviour recorded from Go receptor, flooding rules, service ads, and a
//! simulated mesh of a few hundred nodes.

use super::*;
use crate::message::Message;

mod limits;
mod sim;

fn t0() -> Instant {
    Instant::now()
}

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_000_000)
}

fn node(id: &str, now: Instant, seed: u64) -> NodeState {
    NodeState::new(
        NodeConfig {
            node_id: id.to_owned(),
            max_idle: MIN_MAX_IDLE,
        },
        now,
        wall(),
        seed,
    )
}

fn cost(c: f64) -> SessionConfig {
    SessionConfig {
        cost: c,
        ..SessionConfig::default()
    }
}

fn drain(n: &mut NodeState) -> Vec<Transmit> {
    std::iter::from_fn(|| n.poll_transmit()).collect()
}

fn events(n: &mut NodeState) -> Vec<Event> {
    std::iter::from_fn(|| n.poll_event()).collect()
}

fn route_of(t: &Transmit) -> RoutingUpdate {
    match Message::decode(&t.message) {
        Ok(Message::Route(r)) => r,
        other => panic!("not a route: {other:?}"),
    }
}

fn route_msg(node: &str, fwd: &str, epoch: u64, seq: u64, conns: &[(&str, f64)]) -> Vec<u8> {
    RoutingUpdate {
        node_id: node.into(),
        update_id: format!("id{node}{fwd}{epoch}{seq}"),
        update_epoch: epoch,
        update_sequence: seq,
        connections: conns.iter().map(|(k, v)| ((*k).into(), *v)).collect(),
        forwarding_node: fwd.into(),
        suspected_duplicate: 0,
    }
    .encode()
}

/// Two nodes wired back to back; returns their session ids after delivering
/// everything until quiet at `now`.
fn pump(a: &mut NodeState, sa: SessionId, b: &mut NodeState, sb: SessionId, now: Instant) {
    loop {
        let ta = drain(a);
        let tb = drain(b);
        if ta.is_empty() && tb.is_empty() {
            return;
        }
        for t in ta {
            if t.session == sa {
                b.handle_message(now, sb, &t.message);
            }
        }
        for t in tb {
            if t.session == sb {
                a.handle_message(now, sa, &t.message);
            }
        }
    }
}

fn connect_pair(ca: f64, cb: f64) -> (NodeState, SessionId, NodeState, SessionId, Instant) {
    let now = t0();
    let mut a = node("a", now, 1);
    let mut b = node("b", now, 2);
    let sa = a.open_session(now, cost(ca));
    let sb = b.open_session(now, cost(cb));
    pump(&mut a, sa, &mut b, sb, now);
    (a, sa, b, sb, now)
}

fn run_until(
    a: &mut NodeState,
    sa: SessionId,
    b: &mut NodeState,
    sb: SessionId,
    from: Instant,
    to: Instant,
) {
    let mut now = from;
    while now <= to {
        a.handle_timeout(now);
        b.handle_timeout(now);
        pump(a, sa, b, sb, now);
        now += Duration::from_millis(50);
    }
}

#[test]
fn epoch_formula() {
    let n = node("a", t0(), 7);
    assert_eq!(n.epoch() >> 24, 1_795_000_000);
}

#[test]
fn first_route_names_the_peer_and_establishes() {
    let now = t0();
    let mut a = node("a", now, 1);
    let mut b = node("b", now, 2);
    let sa = a.open_session(now, cost(1.0));
    let sb = b.open_session(now, cost(1.0));
    assert_eq!(route_of(&drain(&mut a)[0]).update_sequence, 1);
    let initial_b = drain(&mut b);
    a.handle_message(now, sa, &initial_b[0].message);
    assert_eq!(
        events(&mut a),
        vec![Event::Established {
            session: sa,
            peer: "b".into(),
            cost: 1.0
        }]
    );
    assert_eq!(a.peer_of(sa), Some("b"));
    // A new link is announced UPDATE_SPACING after it is established, as Go does (a Go
    // peer finishing its side of the handshake does not take an earlier one as our links).
    assert!(drain(&mut a).is_empty());
    let now = now + UPDATE_SPACING;
    a.handle_timeout(now);
    let tx = drain(&mut a);
    assert_eq!(tx.len(), 1);
    let r = route_of(&tx[0]);
    assert_eq!(r.connections.get("b"), Some(&1.0));
    assert_eq!(r.forwarding_node, "a");
    assert_eq!(r.update_sequence, 2, "initial message was sequence 1");
    // It also serves b as the first ROUTE naming a.
    b.handle_message(now, sb, &tx[0].message);
    assert_eq!(b.peer_of(sb), Some("a"));
    assert_eq!(events(&mut b).len(), 1);
    pump(&mut a, sa, &mut b, sb, now);
    run_until(&mut a, sa, &mut b, sb, now, now + Duration::from_secs(1));
    assert_eq!(a.routing_table().get("b").map(String::as_str), Some("b"));
    assert_eq!(b.routing_table().get("a").map(String::as_str), Some("a"));
    let st = a.status(now);
    assert_eq!(st.connections, vec![("b".to_owned(), 1.0)]);
    assert_eq!(st.known_connection_costs["b"]["a"], 1.0);
    assert_eq!(
        a.names().get(&node_hash("b")).map(String::as_str),
        Some("b")
    );
}

#[test]
fn initial_connect_gives_up_after_eleven_messages() {
    let now = t0();
    let mut a = node("a", now, 1);
    let s = a.open_session(now, cost(1.0));
    let mut sent = drain(&mut a).len();
    let mut t = now;
    let mut ev = Vec::new();
    while sent < 11 {
        assert!(ev.is_empty(), "closed after {sent} messages");
        t = a.poll_timeout().unwrap();
        a.handle_timeout(t);
        sent += drain(&mut a).len();
        ev = events(&mut a);
    }
    assert_eq!(t, now + Duration::from_secs(10));
    assert_eq!(
        ev,
        vec![Event::Closed {
            session: s,
            reason: CloseReason::GaveUp
        }]
    );
    a.handle_timeout(t + Duration::from_secs(5));
    assert!(drain(&mut a).is_empty());
}

fn rejected_with(n: &mut NodeState, s: SessionId) -> RejectReason {
    let tx = drain(n);
    assert!(
        tx.iter()
            .any(|t| t.session == s && &t.message[..] == REJECT_MESSAGE),
        "no REJECT sent"
    );
    for e in events(n) {
        if let Event::Closed {
            session,
            reason: CloseReason::Rejected { reason, .. },
        } = e
        {
            assert_eq!(session, s);
            return reason;
        }
    }
    panic!("session not closed");
}

#[test]
fn own_id_allowed_peers_and_duplicates_are_rejected() {
    let now = t0();
    let mut a = node("a", now, 1);
    let s = a.open_session(now, cost(1.0));
    drain(&mut a);
    a.handle_message(now, s, &route_msg("a", "a", 5, 1, &[]));
    assert_eq!(rejected_with(&mut a, s), RejectReason::OwnNodeId);

    let s = a.open_session(
        now,
        SessionConfig {
            allowed_peers: Some(vec!["alice".into()]),
            ..SessionConfig::default()
        },
    );
    a.handle_message(now, s, &route_msg("bob", "bob", 5, 1, &[]));
    assert_eq!(rejected_with(&mut a, s), RejectReason::NotAllowed);

    let s1 = a.open_session(now, cost(1.0));
    a.handle_message(now, s1, &route_msg("alice", "alice", 5, 1, &[]));
    drain(&mut a);
    events(&mut a);
    let s2 = a.open_session(now, cost(1.0));
    a.handle_message(now, s2, &route_msg("x", "alice", 5, 2, &[]));
    assert_eq!(rejected_with(&mut a, s2), RejectReason::AlreadyConnected);
    assert_eq!(a.peer_of(s1), Some("alice"));
}

#[test]
fn node_cost_overrides_and_must_match() {
    let now = t0();
    let mut a = node("a", now, 1);
    let s = a.open_session(
        now,
        SessionConfig {
            cost: 1.0,
            node_cost: [("p25".to_owned(), 2.5)].into_iter().collect(),
            allowed_peers: None,
        },
    );
    a.handle_message(now, s, &route_msg("p25", "p25", 5, 1, &[]));
    assert_eq!(a.status(now).connections, vec![("p25".to_owned(), 2.5)]);
    a.handle_message(now, s, &route_msg("p25", "p25", 5, 2, &[("a", 2.5)]));
    assert!(a.peer_of(s).is_some());
    drain(&mut a);
    a.handle_message(now, s, &route_msg("p25", "p25", 5, 3, &[("a", 2.0)]));
    assert_eq!(
        rejected_with(&mut a, s),
        RejectReason::CostDisagreement {
            ours: 2.5,
            theirs: 2.0
        }
    );
    assert!(a.status(now).connections.is_empty());
    assert!(a.known_connection_costs()["a"].is_empty());
}

#[test]
fn mismatched_costs_disconnect_both_sides() {
    // The updates that list the link with its cost go out as the sessions come up, so the
    // disagreement may already be found while connecting.
    let (mut a, sa, mut b, sb, now) = connect_pair(1.0, 2.0);
    run_until(
        &mut a,
        sa,
        &mut b,
        sb,
        now,
        now + Duration::from_millis(300),
    );
    let closed = |e: Vec<Event>| {
        e.iter().any(|e| {
            matches!(
                e,
                Event::Closed {
                    reason: CloseReason::Rejected { .. },
                    ..
                }
            )
        })
    };
    assert!(closed(events(&mut a)) || closed(events(&mut b)));
}

#[test]
fn late_initial_message_is_skipped_then_unlisting_rejects() {
    let now = t0();
    let mut a = node("a", now, 1);
    let s = a.open_session(now, cost(1.0));
    a.handle_message(now, s, &route_msg("b", "b", 5, 1, &[]));
    // A second initial message (does not list us yet): ignored.
    a.handle_message(now, s, &route_msg("b", "b", 5, 2, &[]));
    assert!(a.peer_of(s).is_some());
    a.handle_message(now, s, &route_msg("b", "b", 5, 3, &[("a", 1.0)]));
    drain(&mut a);
    a.handle_message(now, s, &route_msg("b", "b", 5, 4, &[]));
    assert_eq!(rejected_with(&mut a, s), RejectReason::NoLongerListsUs);
}

#[test]
fn forwarding_node_must_stay_the_peer() {
    let now = t0();
    let mut a = node("a", now, 1);
    let s = a.open_session(now, cost(1.0));
    a.handle_message(now, s, &route_msg("b", "b", 5, 1, &[]));
    drain(&mut a);
    a.handle_message(now, s, &route_msg("c", "c", 5, 1, &[]));
    assert_eq!(
        rejected_with(&mut a, s),
        RejectReason::NodeIdChanged { to: "c".into() }
    );
}

#[test]
fn garbage_is_ignored_and_reject_closes() {
    let now = t0();
    let mut a = node("a", now, 1);
    let s = a.open_session(now, cost(1.0));
    for junk in [
        &b""[..],
        b"\x01{",
        b"\x01[1]",
        b"\x00abc",
        b"\x02{}",
        b"\x09zz",
    ] {
        a.handle_message(now, s, junk);
    }
    assert!(events(&mut a).is_empty());
    a.handle_message(now, s, &route_msg("b", "b", 5, 1, &[]));
    for junk in [
        &b""[..],
        b"\x01{",
        b"\x00abc",
        b"\x02{\"Time\":5}",
        b"\x09zz",
    ] {
        a.handle_message(now, s, junk);
    }
    assert_eq!(a.peer_of(s), Some("b"));
    events(&mut a);
    a.handle_message(now, s, REJECT_MESSAGE);
    assert_eq!(
        events(&mut a),
        vec![Event::Closed {
            session: s,
            reason: CloseReason::RemoteRejected
        }]
    );
}

#[test]
fn idle_sessions_time_out() {
    let now = t0();
    let mut a = node("a", now, 1);
    let s = a.open_session(now, cost(1.0));
    a.handle_message(now, s, &route_msg("b", "b", 5, 1, &[]));
    events(&mut a);
    let closed_at = loop {
        let t = a.poll_timeout().unwrap();
        a.handle_timeout(t);
        if events(&mut a).iter().any(|e| {
            matches!(
                e,
                Event::Closed {
                    reason: CloseReason::Idle { .. },
                    ..
                }
            )
        }) {
            break t;
        }
        assert!(t < now + Duration::from_secs(60));
    };
    let idle = closed_at - now;
    assert!(
        idle > Duration::from_secs(21) && idle <= Duration::from_secs(26),
        "{idle:?}"
    );
}

#[test]
fn activity_keeps_sessions_alive() {
    let now = t0();
    let mut a = node("a", now, 1);
    let s = a.open_session(now, cost(1.0));
    a.handle_message(now, s, &route_msg("b", "b", 5, 1, &[]));
    let mut t = now;
    while t < now + Duration::from_secs(60) {
        t += Duration::from_secs(1);
        a.note_activity(s, t);
        a.handle_timeout(t);
    }
    assert_eq!(a.peer_of(s), Some("b"));
}

/// a has neighbours b and c; returns (a, sb, sc).
fn hub() -> (NodeState, SessionId, SessionId, Instant) {
    let now = t0();
    let mut a = node("a", now, 1);
    let sb = a.open_session(now, cost(1.0));
    let sc = a.open_session(now, cost(1.0));
    a.handle_message(now, sb, &route_msg("b", "b", 5, 1, &[]));
    a.handle_message(now, sc, &route_msg("c", "c", 6, 1, &[]));
    a.handle_message(now, sb, &route_msg("b", "b", 5, 2, &[("a", 1.0)]));
    a.handle_message(now, sc, &route_msg("c", "c", 6, 2, &[("a", 1.0)]));
    drain(&mut a);
    events(&mut a);
    (a, sb, sc, now)
}

#[test]
fn updates_are_flooded_with_forwarding_node_rewritten() {
    let (mut a, sb, sc, now) = hub();
    let msg = route_msg("d", "b", 9, 1, &[("b", 3.0)]);
    a.handle_message(now, sb, &msg);
    let tx = drain(&mut a);
    assert_eq!(tx.len(), 1, "not sent back where it came from");
    assert_eq!(tx[0].session, sc);
    let fwd = route_of(&tx[0]);
    let mut orig = RoutingUpdate::decode(&msg[1..]).unwrap();
    orig.forwarding_node = "a".into();
    assert_eq!(fwd, orig);
    // Same UpdateID again: dropped.
    a.handle_message(now, sc, &msg.clone().tap_fwd("c"));
    assert!(drain(&mut a).is_empty());
    // Older sequence with a new UpdateID: dropped.
    a.handle_message(now, sb, &route_msg("d", "b", 9, 0, &[]));
    assert!(drain(&mut a).is_empty());
    // Older epoch: dropped.
    a.handle_message(now, sb, &route_msg("d", "b", 8, 50, &[]));
    assert!(drain(&mut a).is_empty());
    // Newer: accepted and flooded.
    a.handle_message(now, sb, &route_msg("d", "b", 9, 2, &[("b", 3.0)]));
    assert_eq!(drain(&mut a).len(), 1);
    // d is routable via b once b lists it too and routes are recomputed.
    a.handle_message(
        now,
        sb,
        &route_msg("b", "b", 5, 3, &[("a", 1.0), ("d", 3.0)]),
    );
    // (Changes this close together are computed at the end of the route spacing.)
    a.handle_timeout(now + UPDATE_SPACING);
    assert_eq!(a.routing_table().get("d").map(String::as_str), Some("b"));
    assert_eq!(a.routes()["d"].cost, 4.0);
    assert_eq!(
        a.names().get(&node_hash("d")).map(String::as_str),
        Some("d")
    );
}

trait TapFwd {
    fn tap_fwd(self, fwd: &str) -> Vec<u8>;
}

impl TapFwd for Vec<u8> {
    fn tap_fwd(self, fwd: &str) -> Vec<u8> {
        let mut r = RoutingUpdate::decode(&self[1..]).unwrap();
        r.forwarding_node = fwd.into();
        r.encode()
    }
}

#[test]
fn withdrawn_links_are_removed_from_the_database() {
    let (mut a, sb, _sc, now) = hub();
    a.handle_message(now, sb, &route_msg("d", "b", 9, 1, &[("b", 3.0)]));
    a.handle_message(
        now,
        sb,
        &route_msg("b", "b", 5, 3, &[("a", 1.0), ("d", 3.0)]),
    );
    a.handle_timeout(now + UPDATE_SPACING);
    assert!(a.routing_table().contains_key("d"));
    // b stops listing d: the edge d→b goes too, d becomes unreachable.
    a.handle_message(now, sb, &route_msg("b", "b", 5, 4, &[("a", 1.0)]));
    a.handle_timeout(now + UPDATE_SPACING * 3);
    assert!(a.known_connection_costs()["d"].is_empty());
    assert!(!a.routing_table().contains_key("d"));
    assert!(
        a.known_connection_costs().contains_key("d"),
        "no node expiry"
    );
}

#[test]
fn own_updates_and_duplicates() {
    let (mut a, sb, _sc, now) = hub();
    let epoch = a.epoch();
    // Our own update coming back: ignored.
    a.handle_message(now, sb, &route_msg("a", "b", epoch, 99, &[]));
    assert!(drain(&mut a).is_empty());
    // A newer process with our ID: we flood a suspicion.
    a.handle_message(now, sb, &route_msg("a", "b", epoch + 1, 1, &[]));
    let tx = drain(&mut a);
    assert_eq!(tx.len(), 2);
    assert_eq!(route_of(&tx[0]).suspected_duplicate, epoch + 1);
    // Someone suspects us: we shut down.
    let mut r = RoutingUpdate::decode(&route_msg("a", "b", epoch - 1, 1, &[])[1..]).unwrap();
    r.suspected_duplicate = epoch;
    a.handle_message(now, sb, &r.encode());
    let ev = events(&mut a);
    assert!(ev.contains(&Event::DuplicateNode));
    assert!(a.is_shut_down());
    assert!(a.poll_timeout().is_none());
}

fn svcad(node: &str, svc: &str, time: &str, cancel: bool) -> Vec<u8> {
    SvcadMessage::encode(
        &ServiceAdvertisement {
            node_id: node.into(),
            service: svc.into(),
            time: time.into(),
            conn_type: 1,
            tags: Some([("type".to_owned(), "x".to_owned())].into_iter().collect()),
            work_commands: None,
        },
        cancel,
    )
}

#[test]
fn service_ads_need_strictly_newer_time_and_flood_original_bytes() {
    let (mut a, sb, sc, now) = hub();
    let ad = svcad("b", "svc", "2026-01-01T00:00:01Z", false);
    a.handle_message(now, sb, &ad);
    let tx = drain(&mut a);
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].session, sc);
    assert_eq!(&tx[0].message[..], &ad[..]);
    assert_eq!(a.advertisements(now).len(), 1);
    // Same time: dropped.
    a.handle_message(
        now,
        sc,
        &svcad("b", "svc", "2026-01-01T01:00:01+01:00", false),
    );
    assert!(drain(&mut a).is_empty());
    // Cancel with a newer time: removed and flooded.
    a.handle_message(now, sc, &svcad("b", "svc", "2026-01-01T00:00:02Z", true));
    assert_eq!(drain(&mut a).len(), 1);
    assert!(a.advertisements(now).is_empty());
    // Bad time: ignored.
    a.handle_message(now, sb, b"\x02{\"NodeID\":\"b\",\"Time\":\"soon\"}");
    assert!(drain(&mut a).is_empty());
}

#[test]
fn own_ads_go_out_after_5s_then_every_60s_and_cancel_on_removal() {
    let (mut a, sb, sc, now) = hub();
    let tags = Some(
        [("type".to_owned(), "Control Service".to_owned())]
            .into_iter()
            .collect(),
    );
    a.add_local_service(now, "control", 1, tags);
    a.set_work_commands(
        now,
        vec![WorkCommand {
            work_type: "echo".into(),
            secure: false,
        }],
    );
    let mut ads = Vec::new();
    let mut t = now;
    while t < now + Duration::from_secs(130) {
        t = a.poll_timeout().unwrap();
        a.handle_timeout(t);
        a.note_activity(sb, t);
        a.note_activity(sc, t);
        for tx in drain(&mut a) {
            if let Ok(Message::ServiceAdvertisement(m)) = Message::decode(&tx.message) {
                ads.push((t - now, tx.session, m));
            }
        }
    }
    let times: Vec<u64> = ads.iter().map(|(d, _, _)| d.as_secs()).collect();
    assert_eq!(times, vec![5, 5, 65, 65, 125, 125]);
    let m = &ads[0].2;
    assert_eq!(m.ad.service, "control");
    assert_eq!(m.ad.work_commands.as_ref().map(Vec::len), Some(1));
    let st = a.advertisements(t);
    assert_eq!(st.len(), 1);
    a.remove_local_service(t, "control");
    let tx = drain(&mut a);
    assert_eq!(tx.len(), 2);
    match Message::decode(&tx[0].message) {
        Ok(Message::ServiceAdvertisement(m)) => {
            assert!(m.cancel);
            assert_eq!(m.ad.tags, None);
            assert_eq!(m.ad.conn_type, 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(a.advertisements(t).is_empty());
}

#[test]
fn periodic_updates_restart_after_triggered_ones() {
    let (mut a, _sb, _sc, now) = hub();
    // hub() sent an update as b's session came up and coalesced the one for c's to
    // +100 ms; the next periodic one is 10 s after that.
    let mut t = now;
    while t < now + UPDATE_SPACING {
        t = a.poll_timeout().unwrap();
        a.handle_timeout(t);
    }
    assert_eq!(t, now + UPDATE_SPACING);
    assert_eq!(drain(&mut a).len(), 2);
    assert_eq!(a.poll_timeout(), Some(now + IDLE_CHECK_INTERVAL));
    let mut sends = Vec::new();
    while t < now + Duration::from_secs(21) {
        t = a.poll_timeout().unwrap();
        a.handle_timeout(t);
        if !drain(&mut a).is_empty() {
            sends.push(t - now);
        }
    }
    assert_eq!(
        sends,
        vec![Duration::from_millis(10_100), Duration::from_millis(20_100)]
    );
}

/// a's own updates among what it sent: (their sequence numbers, how many copies).
fn own_updates(a: &mut NodeState) -> (Vec<u64>, usize) {
    let own: Vec<RoutingUpdate> = drain(a)
        .iter()
        .map(route_of)
        .filter(|r| r.node_id == "a")
        .collect();
    let mut seqs: Vec<u64> = own.iter().map(|r| r.update_sequence).collect();
    seqs.dedup();
    (seqs, own.len())
}

#[test]
fn triggered_updates_go_out_at_once_then_at_most_one_per_spacing() {
    let (mut a, sb, _sc, now) = hub();
    a.handle_timeout(now + UPDATE_SPACING);
    let (seqs, copies) = own_updates(&mut a);
    assert_eq!((seqs.len(), copies), (1, 2));
    let last = seqs[0];
    // A quiet spell, then a node new to a: a's own update goes out with the forwarded copy,
    // to both neighbours, without waiting for a timer.
    let t = now + Duration::from_millis(500);
    a.handle_message(t, sb, &route_msg("d", "b", 9, 1, &[("b", 1.0)]));
    assert_eq!(own_updates(&mut a), (vec![last + 1], 2));
    // Two more new nodes within the spacing: only forwarded now, one update for both at
    // the end of the spacing.
    a.handle_message(
        t + Duration::from_millis(30),
        sb,
        &route_msg("e", "b", 9, 1, &[]),
    );
    a.handle_message(
        t + Duration::from_millis(60),
        sb,
        &route_msg("f", "b", 9, 1, &[]),
    );
    assert_eq!(own_updates(&mut a), (vec![], 0));
    assert_eq!(a.poll_timeout(), Some(t + UPDATE_SPACING));
    a.handle_timeout(t + UPDATE_SPACING);
    assert_eq!(own_updates(&mut a), (vec![last + 2], 2));
    // A periodic update does not count toward the spacing: a new node just after one is
    // answered at once.
    let periodic = t + UPDATE_SPACING + ROUTE_UPDATE_INTERVAL;
    assert_eq!(a.poll_timeout(), Some(now + IDLE_CHECK_INTERVAL));
    let mut at = now;
    while at < periodic {
        at = a.poll_timeout().unwrap();
        a.handle_timeout(at);
    }
    assert_eq!(at, periodic);
    assert_eq!(own_updates(&mut a), (vec![last + 3], 2));
    let t = periodic + Duration::from_millis(10);
    a.handle_message(t, sb, &route_msg("g", "b", 9, 1, &[]));
    assert_eq!(own_updates(&mut a), (vec![last + 4], 2));
    // A lost link after another quiet spell: at once again.
    let t = t + Duration::from_secs(1);
    a.session_closed(t, sb);
    let tx = drain(&mut a);
    assert_eq!(tx.len(), 1, "only c is left");
    assert_eq!(route_of(&tx[0]).update_sequence, last + 5);
    assert!(!route_of(&tx[0]).connections.contains_key("b"));
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "c", "d", ""]).prop_map(str::to_owned)
    }

    fn update() -> impl Strategy<Value = Vec<u8>> {
        (
            name(),
            name(),
            0u64..4,
            0u64..6,
            prop::collection::btree_map(
                name(),
                prop::sample::select(vec![1.0, 2.0, -1.0, 0.0]),
                0..4,
            ),
            prop::sample::select(vec![0u64, 1, 2]),
            "[a-z]{1,2}",
        )
            .prop_map(|(n, f, e, s, c, d, id)| {
                RoutingUpdate {
                    node_id: n,
                    update_id: id,
                    update_epoch: e,
                    update_sequence: s,
                    connections: c,
                    forwarding_node: f,
                    suspected_duplicate: d,
                }
                .encode()
            })
    }

    fn message() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => update(),
            1 => (name(), "[a-z]{0,3}", 0i64..5, any::<bool>()).prop_map(|(n, s, t, c)| {
                super::svcad(&n, &s, &format!("2026-01-01T00:00:0{t}Z"), c)
            }),
            1 => prop::collection::vec(any::<u8>(), 0..64),
            1 => Just(REJECT_MESSAGE.to_vec()),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_message_sequences_never_panic(msgs in prop::collection::vec(message(), 0..40)) {
            let now = t0();
            let mut a = node("a", now, 1);
            let s1 = a.open_session(now, cost(1.0));
            let s2 = a.open_session(now, cost(2.0));
            a.handle_message(now, s1, &route_msg("b", "b", 5, 1, &[]));
            a.handle_message(now, s2, &route_msg("c", "c", 5, 1, &[]));
            for (i, m) in msgs.iter().enumerate() {
                let t = now + Duration::from_millis(37 * i as u64);
                let s = if i % 2 == 0 { s1 } else { s2 };
                a.handle_message(t, s, m);
                a.handle_timeout(t);
                drain(&mut a);
                events(&mut a);
            }
            let _ = a.status(now);
        }
    }
}
