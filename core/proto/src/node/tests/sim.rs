//! A simulated mesh: a few hundred [`NodeState`]s on a random graph, connected by
//! in-order links with a few milliseconds of latency, driven by a simulated clock.
//! Routes must converge to the true least-cost paths, survive link removals
//! (including partitions), and sessions must stay up on periodic keepalives; a node joining
//! a line is routed in a time proportional to the line's length.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::*;

enum Delivery {
    Message(Bytes),
    Eof,
}

struct Sim {
    nodes: Vec<NodeState>,
    names: Vec<String>,
    index: HashMap<String, usize>,
    now: Instant,
    /// (node, session) → (peer node, peer session).
    links: HashMap<(usize, SessionId), (usize, SessionId)>,
    /// Last delivery time scheduled per directed link, to keep links in order.
    link_clock: HashMap<(usize, SessionId), Instant>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, (usize, SessionId, Delivery)>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    seq: u64,
    rng: StdRng,
    delivered: u64,
    /// Latency of one message on a link, drawn uniformly from this range (µs).
    latency_us: (u64, u64),
}

/// The true topology: undirected edges with costs, and whether each is up.
struct Topology {
    edges: Vec<(usize, usize, f64, bool)>,
}

impl Topology {
    fn random(n: usize, extra: usize, rng: &mut StdRng) -> Topology {
        let costs = [0.5, 1.0, 1.0, 2.0, 3.0];
        let mut edges = Vec::new();
        let mut have = HashSet::new();
        // A random spanning tree keeps the graph connected...
        for i in 1..n {
            let j = rng.gen_range(0..i);
            have.insert((j, i));
            edges.push((j, i, costs[rng.gen_range(0..costs.len())], true));
        }
        // ...and extra edges make cycles and alternative paths.
        while edges.len() < n - 1 + extra {
            let a = rng.gen_range(0..n);
            let b = rng.gen_range(0..n);
            let (a, b) = (a.min(b), a.max(b));
            if a != b && have.insert((a, b)) {
                edges.push((a, b, costs[rng.gen_range(0..costs.len())], true));
            }
        }
        Topology { edges }
    }

    /// All-pairs least costs over the live edges.
    fn distances(&self, n: usize) -> Vec<Vec<f64>> {
        let mut adj = vec![Vec::new(); n];
        for &(a, b, c, up) in &self.edges {
            if up {
                adj[a].push((b, c));
                adj[b].push((a, c));
            }
        }
        (0..n)
            .map(|s| {
                let mut d = vec![f64::INFINITY; n];
                d[s] = 0.0;
                let mut heap = BinaryHeap::new();
                heap.push(Reverse((0u64, s)));
                // Costs are multiples of 0.5: keep the heap key integral.
                while let Some(Reverse((k, u))) = heap.pop() {
                    if k as f64 / 2.0 > d[u] {
                        continue;
                    }
                    for &(v, c) in &adj[u] {
                        if d[u] + c < d[v] {
                            d[v] = d[u] + c;
                            heap.push(Reverse(((d[v] * 2.0) as u64, v)));
                        }
                    }
                }
                d
            })
            .collect()
    }

    fn cost(&self, a: usize, b: usize) -> Option<f64> {
        self.edges
            .iter()
            .find(|&&(x, y, _, up)| up && ((x, y) == (a, b) || (x, y) == (b, a)))
            .map(|e| e.2)
    }
}

impl Sim {
    fn new(n: usize, start: Instant, seed: u64) -> Sim {
        let names: Vec<String> = (0..n).map(|i| format!("n{i:03}")).collect();
        let nodes = names
            .iter()
            .enumerate()
            .map(|(i, id)| super::node(id, start, seed * 1000 + i as u64))
            .collect();
        Sim {
            nodes,
            index: names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i))
                .collect(),
            names,
            now: start,
            links: HashMap::new(),
            link_clock: HashMap::new(),
            queue: BinaryHeap::new(),
            pending: HashMap::new(),
            timers: BinaryHeap::new(),
            seq: 0,
            rng: StdRng::seed_from_u64(seed),
            delivered: 0,
            latency_us: (500, 3000),
        }
    }

    /// The same simulation with every message taking exactly `hop` on its link.
    fn with_latency(mut self, hop: Duration) -> Sim {
        let us = hop.as_micros() as u64;
        self.latency_us = (us, us);
        self
    }

    /// Whether every node has a route to every other one.
    fn fully_routed(&self) -> bool {
        let n = self.nodes.len();
        self.nodes
            .iter()
            .all(|node| node.routing_table().len() == n - 1)
    }

    fn connect(&mut self, a: usize, b: usize, cost: f64) {
        let sa = self.nodes[a].open_session(self.now, super::cost(cost));
        let sb = self.nodes[b].open_session(self.now, super::cost(cost));
        self.links.insert((a, sa), (b, sb));
        self.links.insert((b, sb), (a, sa));
        self.touch(a);
        self.touch(b);
    }

    fn disconnect(&mut self, a: usize, b: usize) {
        let Some(sa) = self.nodes[a].session_to(&self.names[b]) else {
            panic!("{a} and {b} are not connected");
        };
        if let Some((_, sb)) = self.links.remove(&(a, sa)) {
            self.links.remove(&(b, sb));
            self.nodes[b].session_closed(self.now, sb);
            self.touch(b);
        }
        self.nodes[a].session_closed(self.now, sa);
        self.touch(a);
    }

    fn schedule(&mut self, from: (usize, SessionId), to: (usize, SessionId), d: Delivery) {
        let (lo, hi) = self.latency_us;
        let latency = Duration::from_micros(self.rng.gen_range(lo..=hi));
        let clock = self.link_clock.entry(from).or_insert(self.now);
        let at = (self.now + latency).max(*clock);
        *clock = at;
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.pending.insert(self.seq, (to.0, to.1, d));
    }

    /// Collects a node's output after it was driven.
    fn touch(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].poll_transmit() {
            if let Some(&peer) = self.links.get(&(i, t.session)) {
                self.schedule((i, t.session), peer, Delivery::Message(t.message));
            }
        }
        while let Some(e) = self.nodes[i].poll_event() {
            if let Event::Closed { session, .. } = e {
                if let Some(peer) = self.links.remove(&(i, session)) {
                    self.links.remove(&peer);
                    self.schedule((i, session), peer, Delivery::Eof);
                }
            }
        }
        if let Some(t) = self.nodes[i].poll_timeout() {
            self.timers.push(Reverse((t, i)));
        }
    }

    fn run_until(&mut self, end: Instant) {
        loop {
            let next_msg = self.queue.peek().map(|Reverse((t, _))| *t);
            let next_timer = self.timers.peek().map(|Reverse((t, _))| *t);
            let t = match (next_msg, next_timer) {
                (Some(m), Some(tm)) => m.min(tm),
                (Some(m), None) => m,
                (None, Some(tm)) => tm,
                (None, None) => break,
            };
            if t > end {
                break;
            }
            self.now = t;
            if next_msg == Some(t) {
                let Some(Reverse((_, seq))) = self.queue.pop() else {
                    break;
                };
                let Some((j, sj, d)) = self.pending.remove(&seq) else {
                    continue;
                };
                match d {
                    Delivery::Message(m) => {
                        self.delivered += 1;
                        self.nodes[j].handle_message(t, sj, &m);
                    }
                    Delivery::Eof => self.nodes[j].session_closed(t, sj),
                }
                self.touch(j);
            } else {
                let Some(Reverse((_, i))) = self.timers.pop() else {
                    break;
                };
                if self.nodes[i].poll_timeout() == Some(t) {
                    self.nodes[i].handle_timeout(t);
                    self.touch(i);
                }
            }
        }
        self.now = end;
    }

    /// Every node's routes are least-cost paths over the live topology, and nodes
    /// that cannot be reached are not in the table.
    fn check_routes(&self, topo: &Topology) {
        let n = self.nodes.len();
        let dist = topo.distances(n);
        let mut bad = Vec::new();
        for i in 0..n {
            let routes = self.nodes[i].routes();
            #[allow(clippy::needless_range_loop)]
            for j in 0..n {
                if i == j {
                    continue;
                }
                let name = &self.names[j];
                match (dist[i][j].is_finite(), routes.get(name)) {
                    (false, None) => {}
                    (false, Some(r)) => bad.push(format!(
                        "{i}->{j}: unreachable but routed via {}",
                        r.next_hop
                    )),
                    (true, None) => bad.push(format!("{i}->{j}: no route (dist {})", dist[i][j])),
                    (true, Some(r)) => {
                        let h = self.index[&r.next_hop];
                        let ok = r.cost == dist[i][j]
                            && topo
                                .cost(i, h)
                                .is_some_and(|c| c + dist[h][j] == dist[i][j]);
                        if !ok {
                            bad.push(format!(
                                "{i}->{j}: via {h} cost {} but shortest is {}",
                                r.cost, dist[i][j]
                            ));
                        }
                    }
                }
            }
            // The node's established sessions are exactly its live links.
            let degree = topo
                .edges
                .iter()
                .filter(|e| e.3 && (e.0 == i || e.1 == i))
                .count();
            if self.nodes[i].peers().len() != degree {
                bad.push(format!(
                    "{i}: {} sessions, {} links",
                    self.nodes[i].peers().len(),
                    degree
                ));
            }
        }
        assert!(
            bad.is_empty(),
            "{} bad routes, e.g. {:?}",
            bad.len(),
            &bad[..bad.len().min(10)]
        );
    }
}

#[test]
fn hundreds_of_nodes_converge_and_survive_link_removals() {
    const N: usize = 250;
    let start = Instant::now();
    let mut rng = StdRng::seed_from_u64(42);
    let mut topo = Topology::random(N, N / 2, &mut rng);
    let mut sim = Sim::new(N, start, 7);
    for &(a, b, c, _) in &topo.edges {
        sim.connect(a, b, c);
    }
    let wall = std::time::Instant::now();
    sim.run_until(start + Duration::from_secs(3));
    eprintln!(
        "converged: {} messages, {:?}",
        sim.delivered,
        wall.elapsed()
    );
    sim.check_routes(&topo);
    let first = sim.delivered;

    // Remove 15% of the links, some leaving nodes isolated.
    let mut removed = 0;
    let edges = topo.edges.len();
    for k in 0..edges {
        if rng.gen_range(0..100) < 15 {
            let (a, b, _, _) = topo.edges[k];
            sim.disconnect(a, b);
            topo.edges[k].3 = false;
            removed += 1;
        }
    }
    assert!(removed > 10);
    sim.run_until(start + Duration::from_secs(6));
    sim.check_routes(&topo);

    // Beyond the 21 s idle limit: periodic updates keep every session alive and
    // the routes stay correct.
    sim.run_until(start + Duration::from_secs(28));
    eprintln!("done: {} messages, {:?}", sim.delivered, wall.elapsed());
    sim.check_routes(&topo);
    assert!(sim.delivered > first);
}

#[test]
fn a_line_routes_end_to_end_and_heals_around_a_failure() {
    // 0-1-2-...-19 plus a costly detour 0-19.
    let start = Instant::now();
    let mut topo = Topology {
        edges: (0..19).map(|i| (i, i + 1, 1.0, true)).collect(),
    };
    topo.edges.push((0, 19, 50.0, true));
    let mut sim = Sim::new(20, start, 3);
    for &(a, b, c, _) in &topo.edges {
        sim.connect(a, b, c);
    }
    sim.run_until(start + Duration::from_secs(2));
    sim.check_routes(&topo);
    assert_eq!(sim.nodes[0].routing_table()["n010"], "n001");
    sim.disconnect(4, 5);
    topo.edges[4].3 = false;
    sim.run_until(start + Duration::from_secs(4));
    sim.check_routes(&topo);
    assert_eq!(sim.nodes[0].routing_table()["n010"], "n019");
}

/// A line of `n` nodes converges, then node `n` connects to its last node; returns the
/// simulated time from that connection until every node routes to every other one, every
/// message taking `hop` on its link.
fn join_at_end_of_line(n: usize, hop: Duration) -> Duration {
    let start = Instant::now();
    let mut sim = Sim::new(n + 1, start, 11).with_latency(hop);
    for i in 0..n - 1 {
        sim.connect(i, i + 1, 1.0);
    }
    let joined = start + Duration::from_secs(3);
    sim.run_until(joined);
    assert!(
        sim.nodes[..n]
            .iter()
            .all(|x| x.routing_table().len() == n - 1),
        "the line of {n} did not converge"
    );
    sim.connect(n - 1, n, 1.0);
    let step = hop / 10;
    let mut t = joined;
    while !sim.fully_routed() {
        assert!(
            t - joined < Duration::from_secs(5),
            "no convergence after the join"
        );
        t += step;
        sim.run_until(t);
    }
    t - joined
}

#[test]
fn a_join_converges_in_time_proportional_to_the_path() {
    // About what one hop costs between two processes on one machine.
    let hop = Duration::from_micros(200);
    for n in [20, 50] {
        let took = join_at_end_of_line(n, hop);
        let hops = took.as_secs_f64() / hop.as_secs_f64();
        eprintln!("line of {n}: joined node routed everywhere after {took:?} ({hops:.1} hops)");
        // The initial messages cross the new link; the new node's update travels to the
        // far end; the far node's answer (its own update, for a node new to it) comes back:
        // 2n + 1 hops of latency. The only other time is the route spacing: the new node
        // gets a burst of n updates and computes its routes at most every
        // `route_interval`, and the new link's own announcement, sent UPDATE_SPACING after
        // it is established as Go does (once, not per hop).
        let bound =
            hop * (2 * n as u32 + 2) + MeshLimits::default().route_interval + UPDATE_SPACING;
        assert!(
            took <= bound,
            "line of {n}: {took:?} is more than the {} hops of the path, one route \
             spacing and one update spacing ({bound:?})",
            2 * n + 2
        );
        assert!(hops >= n as f64, "faster than the path itself: {took:?}");
    }
}
