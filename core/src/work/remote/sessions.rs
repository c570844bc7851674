//! Idle control sessions to other nodes, kept for status queries.
//!
//! The control protocol serves any number of commands, one after the other, on one
//! session (Go receptor 1.6.9 included), and a `work status` exchange leaves the session
//! ready for the next command. So when a driver stops following its unit, the session its
//! status poll used is kept here, and the next unit followed on the same node (with the
//! same `tlsclient`) polls on it instead of opening a new stream: one connection set-up
//! (a QUIC and TLS handshake over the mesh) less per remote unit.
//!
//! Bounds: at most [`IDLE_PER_NODE`] sessions per node and TLS client and
//! [`MAX_TARGETS`] targets; a session idle for longer than [`MAX_IDLE`] is dropped rather
//! than reused. A kept session can still have died (the node restarted): the poll then
//! retries at once on a new connection.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::client::ControlClient;

/// Idle sessions kept per node and TLS client.
pub const IDLE_PER_NODE: usize = 8;
/// Nodes (and TLS clients) for which sessions are kept.
pub const MAX_TARGETS: usize = 256;
/// A session idle longer than this is closed instead of reused.
pub const MAX_IDLE: Duration = Duration::from_secs(10);

type Target = (String, String);

/// The idle sessions of one node's remote work.
#[derive(Debug, Default)]
pub struct SessionPool {
    idle: Mutex<HashMap<Target, Vec<(ControlClient, Instant)>>>,
}

impl SessionPool {
    fn lock(&self) -> MutexGuard<'_, HashMap<Target, Vec<(ControlClient, Instant)>>> {
        // Every change is one call on the map: it stays consistent after a panic.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An idle session to `node` with `tls_client`, if one is kept and fresh enough.
    pub fn take(&self, node: &str, tls_client: &str) -> Option<ControlClient> {
        let mut idle = self.lock();
        let key = (node.to_owned(), tls_client.to_owned());
        let sessions = idle.get_mut(&key)?;
        let now = Instant::now();
        sessions.retain(|(_, since)| now.duration_since(*since) < MAX_IDLE);
        let session = sessions.pop().map(|(c, _)| c);
        if sessions.is_empty() {
            idle.remove(&key);
        }
        session
    }

    /// Keeps `session` (between two commands) for the next status query on its node;
    /// drops it when the bounds are reached.
    pub fn put(&self, node: &str, tls_client: &str, session: ControlClient) {
        let mut idle = self.lock();
        let now = Instant::now();
        let key = (node.to_owned(), tls_client.to_owned());
        if !idle.contains_key(&key) && idle.len() >= MAX_TARGETS {
            idle.retain(|_, sessions| {
                sessions.retain(|(_, since)| now.duration_since(*since) < MAX_IDLE);
                !sessions.is_empty()
            });
            if idle.len() >= MAX_TARGETS {
                return;
            }
        }
        let sessions = idle.entry(key).or_default();
        sessions.retain(|(_, since)| now.duration_since(*since) < MAX_IDLE);
        if sessions.len() < IDLE_PER_NODE {
            sessions.push((session, now));
        }
    }
}
