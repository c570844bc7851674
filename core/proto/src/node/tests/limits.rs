//! The limits on what peers can make a node hold and do ([`MeshLimits`]): invented
//! nodes, absurd connection lists and names, update floods, route computation and
//! the expiry of unreachable nodes.

use super::*;

/// Node `a` with the given limits and established sessions to `b` and `c`.
fn hub_with(limits: MeshLimits) -> (NodeState, SessionId, SessionId, Instant) {
    let now = t0();
    let mut a = node("a", now, 1);
    a.set_limits(limits);
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

fn flooded_to(tx: &[Transmit], sid: SessionId) -> usize {
    tx.iter().filter(|t| t.session == sid).count()
}

#[test]
fn invented_nodes_stop_at_the_node_limit_and_are_not_flooded_on() {
    let (mut a, sb, sc, now) = hub_with(MeshLimits {
        max_nodes: 50,
        ..MeshLimits::default()
    });
    for i in 0..500 {
        let name = format!("ghost{i}");
        a.handle_message(now, sb, &route_msg(&name, "b", 1, 1, &[("b", 1.0)]));
    }
    assert_eq!(a.known_node_count(), 50);
    let tx = drain(&mut a);
    // Only the accepted ones (50 - a, b, c) went on to c.
    assert_eq!(flooded_to(&tx, sc), 47);
    assert_eq!(a.updates_refused(), 453);
    // Known nodes still update their state.
    a.handle_message(now, sb, &route_msg("ghost0", "b", 1, 2, &[]));
    assert_eq!(flooded_to(&drain(&mut a), sc), 1);
    assert_eq!(a.known_connection_costs()["ghost0"].len(), 0);
}

#[test]
fn absurd_updates_are_ignored() {
    let (mut a, sb, sc, now) = hub_with(MeshLimits {
        max_node_connections: 10,
        max_links: 30,
        max_node_id_len: 16,
        ..MeshLimits::default()
    });
    let many: Vec<(String, f64)> = (0..11).map(|i| (format!("n{i}"), 1.0)).collect();
    let many: Vec<(&str, f64)> = many.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    a.handle_message(now, sb, &route_msg("wide", "b", 1, 1, &many));
    let long = "x".repeat(17);
    a.handle_message(now, sb, &route_msg(&long, "b", 1, 1, &[]));
    a.handle_message(now, sb, &route_msg("named", "b", 1, 1, &[(&long, 1.0)]));
    assert!(drain(&mut a).is_empty());
    assert_eq!(a.known_node_count(), 3);
    // Absurd costs are kept as advertised but never make a route.
    a.handle_message(
        now,
        sb,
        &route_msg(
            "costly",
            "b",
            1,
            1,
            &[("b", 1e308), ("c", 0.0), ("a", -5.0)],
        ),
    );
    assert_eq!(flooded_to(&drain(&mut a), sc), 1);
    a.handle_timeout(now + Duration::from_secs(1));
    drain(&mut a);
    assert!(!a.routing_table().contains_key("costly"));
    // Links: a, b, c hold 4 and costly 3; three more nodes of 10 pass the limit of 30.
    for i in 0..3 {
        let name = format!("ten{i}");
        a.handle_message(now, sb, &route_msg(&name, "b", 1, 1, &many[..10]));
    }
    assert_eq!(flooded_to(&drain(&mut a), sc), 2);
    assert_eq!(a.updates_refused(), 4);
}

#[test]
fn updates_beyond_the_rate_are_coalesced_to_the_newest_per_node() {
    let (mut a, sb, sc, now) = hub_with(MeshLimits {
        route_updates_per_second: 10,
        ..MeshLimits::default()
    });
    // b's session used 1 of its 10 tokens (its first ROUTE named it and took none);
    // 9 more pass at once.
    for seq in 1..=9 {
        a.handle_message(now, sb, &route_msg("d", "b", 9, seq, &[("b", 1.0)]));
    }
    assert_eq!(flooded_to(&drain(&mut a), sc), 9);
    // The rest wait; only the newest per originating node is kept.
    for seq in 10..=100 {
        a.handle_message(now, sb, &route_msg("d", "b", 9, seq, &[("b", 2.0)]));
    }
    a.handle_message(now, sb, &route_msg("e", "b", 9, 1, &[("b", 1.0)]));
    assert!(drain(&mut a).is_empty());
    let due = a.poll_timeout().unwrap();
    assert!(due <= now + Duration::from_millis(101), "{due:?}");
    a.handle_timeout(now + Duration::from_millis(250));
    let tx = drain(&mut a);
    let seqs: Vec<(String, u64)> = tx
        .iter()
        .filter(|t| t.session == sc)
        .map(|t| {
            let r = route_of(t);
            (r.node_id, r.update_sequence)
        })
        .filter(|(n, _)| n != "a")
        .collect();
    assert_eq!(seqs, vec![("d".to_owned(), 100), ("e".to_owned(), 1)]);
    assert_eq!(a.known_connection_costs()["d"]["b"], 2.0);
}

#[test]
fn a_full_coalescing_queue_drops_new_originators() {
    let (mut a, sb, _sc, now) = hub_with(MeshLimits {
        route_updates_per_second: 1,
        max_coalesced_bytes: 1000,
        ..MeshLimits::default()
    });
    for i in 0..100 {
        a.handle_message(now, sb, &route_msg(&format!("g{i}"), "b", 1, 1, &[]));
    }
    let refused = a.updates_refused();
    assert!((80..100).contains(&refused), "{refused} refused");
    // Everything held is processed as the budget refills.
    for s in 1..=30 {
        a.handle_timeout(now + Duration::from_secs(s));
    }
    assert_eq!(a.known_node_count() as u64, 3 + 100 - refused);
}

#[test]
fn route_computation_waits_out_the_interval_under_a_stream_of_changes() {
    let (mut a, sb, _sc, now) = hub_with(MeshLimits {
        route_interval: Duration::from_millis(50),
        ..MeshLimits::default()
    });
    let t = now + Duration::from_secs(1);
    a.handle_timeout(t);
    drain(&mut a);
    // The first change after a quiet spell is computed at once.
    a.handle_message(t, sb, &route_msg("b", "b", 5, 3, &[("a", 1.0), ("d", 1.0)]));
    a.handle_message(t, sb, &route_msg("d", "b", 9, 1, &[("b", 1.0)]));
    assert!(!a.routing_table().contains_key("d"));
    a.handle_message(t, sb, &route_msg("e", "b", 9, 1, &[("d", 1.0)]));
    assert_eq!(a.poll_timeout(), Some(t + Duration::from_millis(50)));
    a.handle_timeout(t + Duration::from_millis(50));
    assert_eq!(a.routing_table().get("d").map(String::as_str), Some("b"));
    assert!(a.take_routes_changed());
    // d listed e? No: e lists d but d does not list e, so e is no destination.
    assert!(!a.routing_table().contains_key("e"));
}

#[test]
fn unreachable_nodes_are_forgotten_after_the_expiry() {
    let (mut a, sb, _sc, now) = hub_with(MeshLimits {
        node_expiry: Some(Duration::from_secs(60)),
        ..MeshLimits::default()
    });
    a.handle_message(now, sb, &route_msg("ghost", "b", 1, 1, &[("b", 1.0)]));
    a.handle_message(
        now,
        sb,
        &route_msg("b", "b", 5, 3, &[("a", 1.0), ("d", 1.0)]),
    );
    a.handle_message(now, sb, &route_msg("d", "b", 9, 1, &[("b", 1.0)]));
    let mut t = now;
    while t < now + Duration::from_secs(70) {
        t += Duration::from_secs(1);
        a.handle_timeout(t);
        // b and d stay heard from; the ghost does not.
        if t.duration_since(now).as_secs() % 10 == 0 {
            let s = t.duration_since(now).as_secs();
            a.handle_message(
                t,
                sb,
                &route_msg("b", "b", 5, 3 + s, &[("a", 1.0), ("d", 1.0)]),
            );
            a.handle_message(t, sb, &route_msg("d", "b", 9, 1 + s, &[("b", 1.0)]));
        }
    }
    let known = a.known_connection_costs();
    assert!(!known.contains_key("ghost"), "{known:?}");
    assert!(known.contains_key("d") && known.contains_key("b"));
    assert!(!a.names().contains_key(&node_hash("ghost")));
    assert!(a.names().contains_key(&node_hash("d")));
    // It may come back as a new node.
    a.handle_message(t, sb, &route_msg("ghost", "b", 2, 1, &[("b", 1.0)]));
    assert!(a.known_connection_costs().contains_key("ghost"));
}

#[test]
fn a_costly_route_computation_spaces_the_next_ones() {
    let (mut a, sb, _sc, now) = hub_with(MeshLimits {
        route_interval: Duration::from_millis(50),
        ..MeshLimits::default()
    });
    let t = now + Duration::from_secs(1);
    a.handle_timeout(t);
    drain(&mut a);
    let t = t + Duration::from_millis(100);
    let before = a.recomputations();
    a.handle_message(t, sb, &route_msg("b", "b", 5, 3, &[("a", 1.0), ("d", 1.0)]));
    assert_eq!(a.recomputations(), before + 1);
    // The driver measured 100 ms: the next computation waits 400 ms.
    a.note_route_cost(Duration::from_millis(100));
    a.handle_message(t, sb, &route_msg("d", "b", 9, 1, &[("b", 1.0)]));
    a.handle_timeout(t + Duration::from_millis(399));
    assert!(!a.routing_table().contains_key("d"));
    a.handle_timeout(t + Duration::from_millis(400));
    assert_eq!(a.routing_table().get("d").map(String::as_str), Some("b"));
}
