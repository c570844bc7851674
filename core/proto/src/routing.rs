//! Least-cost route computation over the link-state database.
//!
//! The graph is directed: `costs[a][b]` is the cost node `a` advertised for its link
//! to `b` (plus the local node's own links in both directions). As in Go receptor,
//! only nodes that are keys of `costs` are destinations: a node that merely appears
//! in someone else's connections is not routable until its own update arrives.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

/// The link-state database: node → {neighbour → cost}.
pub type LinkCosts = BTreeMap<String, BTreeMap<String, f64>>;

/// [`LinkCosts`] plus a reverse index (which nodes list a given node), so that
/// withdrawing a node's links does not scan the whole database, and the number of
/// links held (for the node's limits).
#[derive(Debug, Default, Clone)]
pub struct LinkState {
    costs: LinkCosts,
    listed_by: HashMap<String, HashSet<String>>,
    links: usize,
}

impl LinkState {
    /// The database.
    pub fn costs(&self) -> &LinkCosts {
        &self.costs
    }

    /// Number of links (edges) held, over every node.
    pub fn link_count(&self) -> usize {
        self.links
    }

    /// Number of known nodes (keys of the database).
    pub fn node_count(&self) -> usize {
        self.costs.len()
    }

    /// The links `node` advertised, if it is known.
    pub fn links(&self, node: &str) -> Option<&BTreeMap<String, f64>> {
        self.costs.get(node)
    }

    /// Sets the edge `from → to` (making `from` a known node).
    pub fn set_edge(&mut self, from: &str, to: &str, cost: f64) {
        if self
            .costs
            .entry(from.to_owned())
            .or_default()
            .insert(to.to_owned(), cost)
            .is_none()
        {
            self.links += 1;
        }
        self.listed_by
            .entry(to.to_owned())
            .or_default()
            .insert(from.to_owned());
    }

    /// Removes the edge `from → to` if present (`from` stays known).
    pub fn remove_edge(&mut self, from: &str, to: &str) {
        if let Some(m) = self.costs.get_mut(from) {
            if m.remove(to).is_some() {
                self.links -= 1;
            }
        }
        if let Some(s) = self.listed_by.get_mut(to) {
            s.remove(from);
            if s.is_empty() {
                self.listed_by.remove(to);
            }
        }
    }

    /// Replaces every link of `node` (making it a known node).
    pub fn replace(&mut self, node: &str, links: BTreeMap<String, f64>) {
        self.unlink(node);
        for to in links.keys() {
            self.listed_by
                .entry(to.clone())
                .or_default()
                .insert(node.to_owned());
        }
        self.links += links.len();
        self.costs.insert(node.to_owned(), links);
    }

    /// Forgets `node`: its own links and its place among the known nodes. Links
    /// other nodes advertise to it stay (it is then a neighbour they list, not a
    /// destination).
    pub fn remove_node(&mut self, node: &str) {
        self.unlink(node);
        self.costs.remove(node);
    }

    /// Drops the reverse-index entries and the count of `node`'s own links.
    fn unlink(&mut self, node: &str) {
        if let Some(old) = self.costs.get(node) {
            self.links -= old.len();
            for to in old.keys() {
                if let Some(s) = self.listed_by.get_mut(to) {
                    s.remove(node);
                    if s.is_empty() {
                        self.listed_by.remove(to);
                    }
                }
            }
        }
    }

    /// The known nodes whose links include `node`.
    pub fn listing(&self, node: &str) -> Vec<String> {
        self.listed_by
            .get(node)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// A computed route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The direct neighbour to send through.
    pub next_hop: String,
    /// Total path cost.
    pub cost: f64,
}

#[derive(PartialEq)]
struct Cost(f64);

impl Eq for Cost {}

impl PartialOrd for Cost {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cost {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Shortest paths from `source` to every reachable node (Dijkstra). Edges with a
/// negative or non-finite cost (which no sane node advertises) are ignored so a
/// bad update cannot make the computation diverge. Ties are broken arbitrarily.
/// Only nodes reached are touched: a database full of unreachable nodes (a peer
/// inventing them, say) costs nothing here.
pub fn shortest_paths(source: &str, costs: &LinkCosts) -> BTreeMap<String, Route> {
    let mut out = BTreeMap::new();
    let Some((source, _)) = costs.get_key_value(source) else {
        return out;
    };
    // Node → (distance, first hop); the source has no first hop.
    let mut best: HashMap<&str, (f64, Option<&str>)> = HashMap::new();
    let mut heap = BinaryHeap::new();
    best.insert(source.as_str(), (0.0, None));
    heap.push(Reverse((Cost(0.0), source.as_str())));
    while let Some(Reverse((Cost(d), u))) = heap.pop() {
        let Some(&(du, hop_u)) = best.get(u) else {
            continue;
        };
        if d > du {
            continue;
        }
        let Some(edges) = costs.get(u) else {
            continue;
        };
        for (neighbour, &c) in edges {
            if !(c >= 0.0 && c.is_finite()) {
                continue;
            }
            // Only known nodes (keys of the database) are destinations.
            let Some((v, _)) = costs.get_key_value(neighbour.as_str()) else {
                continue;
            };
            let v = v.as_str();
            let alt = d + c;
            if best.get(v).is_none_or(|&(dv, _)| alt < dv) {
                let hop = hop_u.unwrap_or(v);
                best.insert(v, (alt, Some(hop)));
                heap.push(Reverse((Cost(alt), v)));
            }
        }
    }
    for (v, (dist, hop)) in best {
        if let Some(hop) = hop {
            out.insert(
                v.to_owned(),
                Route {
                    next_hop: hop.to_owned(),
                    cost: dist,
                },
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str, f64)], keys: &[&str]) -> LinkCosts {
        let mut g = LinkCosts::new();
        for k in keys {
            g.entry((*k).to_owned()).or_default();
        }
        for (a, b, c) in edges {
            g.entry((*a).to_owned())
                .or_default()
                .insert((*b).to_owned(), *c);
        }
        g
    }

    #[test]
    fn picks_cheapest_path_and_first_hop() {
        let g = graph(
            &[
                ("a", "b", 1.0),
                ("b", "a", 1.0),
                ("b", "c", 1.0),
                ("c", "b", 1.0),
                ("a", "c", 5.0),
                ("c", "a", 5.0),
                ("c", "d", 1.0),
                ("d", "c", 1.0),
            ],
            &[],
        );
        let r = shortest_paths("a", &g);
        assert_eq!(r["b"].next_hop, "b");
        assert_eq!(r["c"].next_hop, "b");
        assert_eq!(r["c"].cost, 2.0);
        assert_eq!(r["d"].next_hop, "b");
        assert_eq!(r["d"].cost, 3.0);
        assert!(!r.contains_key("a"));
    }

    #[test]
    fn link_state_keeps_its_reverse_index() {
        let mut ls = LinkState::default();
        ls.set_edge("a", "b", 1.0);
        ls.set_edge("c", "b", 2.0);
        let mut l = ls.listing("b");
        l.sort();
        assert_eq!(l, vec!["a", "c"]);
        ls.replace("c", [("d".to_owned(), 1.0)].into_iter().collect());
        assert_eq!(ls.listing("b"), vec!["a"]);
        assert_eq!(ls.listing("d"), vec!["c"]);
        assert_eq!(ls.link_count(), 2);
        ls.remove_edge("a", "b");
        assert!(ls.listing("b").is_empty());
        assert!(ls.links("a").is_some_and(BTreeMap::is_empty));
        assert_eq!(ls.link_count(), 1);
        ls.remove_node("c");
        assert_eq!((ls.link_count(), ls.node_count()), (0, 1));
        assert!(ls.listing("d").is_empty());
    }

    #[test]
    fn only_keys_are_destinations() {
        // "x" is listed by b but has not sent its own update.
        let g = graph(&[("a", "b", 1.0), ("b", "a", 1.0), ("b", "x", 1.0)], &[]);
        let r = shortest_paths("a", &g);
        assert!(r.contains_key("b"));
        assert!(!r.contains_key("x"));
    }

    #[test]
    fn unreachable_and_bad_edges_are_skipped() {
        let g = graph(
            &[("a", "b", -1.0), ("a", "c", f64::INFINITY), ("a", "d", 0.0)],
            &["b", "c", "d", "e"],
        );
        let r = shortest_paths("a", &g);
        assert_eq!(r.len(), 1);
        assert_eq!(r["d"].cost, 0.0);
        assert!(shortest_paths("zz", &g).is_empty());
    }
}
