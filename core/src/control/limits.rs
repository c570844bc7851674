//! Limits that keep a node's memory bounded whatever its control clients do
//! (`control-limits`, a receptor-rs extension; Go receptor 1.6.9 has none of them).
//!
//! * [`ControlLimits::max_connections`]: control connections served at once over the
//!   unix-socket and TCP listeners together. A connection beyond it is greeted with one
//!   `ERROR: ...` line instead of the greeting and closed (a TLS one is closed without a
//!   line); connections already served are not affected. Control sessions arriving as
//!   mesh streams are bounded by the mesh service's own limit instead.
//! * [`ControlLimits::max_line`] and [`ControlLimits::line_timeout`]: a command line may
//!   be at most this long, and must be complete this long after its first byte arrived
//!   (a client trickling one byte a second is closed with an error line).
//! * [`ControlLimits::idle_timeout`]: how long a connection may wait between commands
//!   (off by default, as in Go: API clients keep connections open between commands;
//!   never applied to sessions arriving as mesh streams from other nodes).
//! * [`ControlLimits::max_payload`] and [`ControlLimits::payload_idle_timeout`]: a `work
//!   submit` payload is streamed to the unit's `stdin` file (never held whole in memory);
//!   it may be at most this long (unlimited by default) and may pause at most this long.
//!   When one of them is exceeded the client gets one `ERROR: ...` line, the connection
//!   is closed and the unit is marked failed with the same reason. A unit is *accepted*
//!   when its payload was received whole and the client was told `Job Started`; nothing
//!   accepted is lost, and a unit whose payload was refused was never accepted.
//!
//! `work results` needs no setting: a reader holds at most one
//! [`crate::work::results::CHUNK`] besides the socket buffers, however slowly it reads,
//! and a unit's output goes to its `stdout` file, not to memory.

use std::time::Duration;

/// Default of [`ControlLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default of [`ControlLimits::max_line`]: 1 MiB.
pub const DEFAULT_MAX_LINE: usize = 1024 * 1024;
/// Default of [`ControlLimits::line_timeout`].
pub const DEFAULT_LINE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of [`ControlLimits::payload_idle_timeout`].
pub const DEFAULT_PAYLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The limits of a node's control service; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ControlLimits {
    /// Connections served at once over the unix-socket and TCP listeners together.
    pub max_connections: usize,
    /// Longest command line, in bytes (`\r` not counted).
    pub max_line: usize,
    /// Time allowed from the first byte of a command line to its newline.
    pub line_timeout: Duration,
    /// Time a connection may wait for its next command; `None` waits for ever.
    pub idle_timeout: Option<Duration>,
    /// Largest `work submit` payload, in bytes; `None` is unlimited.
    pub max_payload: Option<u64>,
    /// Longest pause within a `work submit` payload.
    pub payload_idle_timeout: Duration,
}

impl Default for ControlLimits {
    fn default() -> Self {
        ControlLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_line: DEFAULT_MAX_LINE,
            line_timeout: DEFAULT_LINE_TIMEOUT,
            idle_timeout: None,
            max_payload: None,
            payload_idle_timeout: DEFAULT_PAYLOAD_IDLE_TIMEOUT,
        }
    }
}

/// What a client is told, instead of the greeting, when
/// [`ControlLimits::max_connections`] connections are already being served.
pub fn too_many_connections_line(max: usize) -> String {
    format!("ERROR: too many control connections (control-limits maxconnections {max}), try again later\n")
}
