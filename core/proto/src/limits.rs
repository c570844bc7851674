//! Bounds on the mesh state a peer can make a node hold, and on the work it can make
//! the node do.
//!
//! Go receptor 1.6.9 has none of these: every node a routing update names is kept
//! forever, every update is processed and flooded on, and routes are recomputed from
//! scratch after each one. [`MeshLimits`] caps each of those; the defaults leave room
//! for meshes far larger than receptor is deployed in, while a hostile or broken peer
//! can no longer grow the node without bound or pin its CPU.

use std::time::Duration;

/// Limits on the link-state database and on routing work.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshLimits {
    /// Most nodes the link-state database holds (this node included); updates from
    /// further new nodes are ignored and not flooded on.
    pub max_nodes: usize,
    /// Most connections one routing update may list; a longer update is ignored.
    pub max_node_connections: usize,
    /// Most links (advertised connections, summed over every known node) held; an
    /// update that would pass it is ignored.
    pub max_links: usize,
    /// Longest node ID (in bytes) accepted in a routing update, as the originator or
    /// as one of its connections; an update with a longer one is ignored.
    pub max_node_id_len: usize,
    /// Routing updates processed per second from one session; more are coalesced
    /// (the newest per originating node kept, see `max_coalesced_bytes`) and processed
    /// as the budget refills. The budget holds one second's worth, so bursts of that
    /// size pass without delay.
    pub route_updates_per_second: u32,
    /// Bytes of coalesced updates one session may have waiting; updates from new
    /// originators beyond that are dropped (the originator's next periodic update,
    /// every 10 s, brings its state back).
    pub max_coalesced_bytes: usize,
    /// Shortest time between two route computations. The first change after a quiet
    /// spell is computed at once; changes within this of the last computation are
    /// computed together at its end. Short by default: a node joining a line of 50
    /// brings each node a burst of 50 updates, and the end of the burst should be
    /// routed as soon as it arrives; the node also spaces computations by four times
    /// their measured cost, which bounds the CPU a large graph can take.
    pub route_interval: Duration,
    /// A node that is not reachable and from which no update was accepted for this
    /// long is forgotten (its links and its name). `None` keeps them forever, as Go.
    pub node_expiry: Option<Duration>,
}

impl Default for MeshLimits {
    fn default() -> Self {
        MeshLimits {
            max_nodes: 10_000,
            max_node_connections: 1_000,
            max_links: 100_000,
            max_node_id_len: 256,
            route_updates_per_second: 1_000,
            max_coalesced_bytes: 1 << 20,
            route_interval: Duration::from_millis(2),
            node_expiry: Some(Duration::from_secs(3600)),
        }
    }
}

/// A token bucket: `rate` tokens per second, holding at most `rate`.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    tokens: f64,
    rate: f64,
    last: std::time::Instant,
}

impl Budget {
    /// A full bucket at `now`.
    pub(crate) fn new(rate: u32, now: std::time::Instant) -> Budget {
        let rate = f64::from(rate.max(1));
        Budget {
            tokens: rate,
            rate,
            last: now,
        }
    }

    fn refill(&mut self, now: std::time::Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.rate);
        self.last = self.last.max(now);
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self, now: std::time::Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token will be there (`now` if there is one).
    pub(crate) fn next_token(&self, now: std::time::Instant) -> std::time::Instant {
        let missing = 1.0 - self.tokens;
        if missing <= 0.0 {
            return self.last.max(now);
        }
        self.last + Duration::from_secs_f64(missing / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn budget_refills_at_its_rate_up_to_one_second() {
        let t = Instant::now();
        let mut b = Budget::new(10, t);
        for _ in 0..10 {
            assert!(b.take(t));
        }
        assert!(!b.take(t));
        let next = b.next_token(t);
        assert!(next > t && next <= t + Duration::from_millis(101));
        assert!(b.take(t + Duration::from_millis(100)));
        // A long pause refills no more than one second's worth.
        let later = t + Duration::from_secs(60);
        let n = (0..100).filter(|_| b.take(later)).count();
        assert_eq!(n, 10);
    }
}
