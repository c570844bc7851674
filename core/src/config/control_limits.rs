//! `control-limits` (a receptor-rs extension): the bounds a node puts on its control
//! clients, as configured. What each bound does is told where it is enforced,
//! [`crate::control::limits`].

use std::time::Duration;

/// Default of [`ControlLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default of [`ControlLimits::max_line`]: 1 MiB.
pub const DEFAULT_MAX_LINE: usize = 1024 * 1024;
/// Default of [`ControlLimits::line_timeout`].
pub const DEFAULT_LINE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of [`ControlLimits::payload_idle_timeout`].
pub const DEFAULT_PAYLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The limits of a node's control service; see [`crate::control::limits`].
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
