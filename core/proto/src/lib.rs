//! # receptor-proto
//!
//! The receptor mesh protocol ("netceptor") without I/O: frames, messages, node-name
//! hashing, link-state routing and service advertisements, plus the Go-compatible
//! formats (JSON, times, durations) the protocol, the configuration and the control
//! service rely on. Everything here is driven by explicit inputs (`now`, received
//! bytes) and yields outputs to transmit, so it can be tested deterministically with a
//! simulated clock.
//!
//! * [`frame`]: u16-LE length framing for byte-stream backends.
//! * [`message`]: the `type ‖ body` envelope; [`data`], [`update`], [`svcad`] the bodies;
//!   [`msgtype`] the type byte and [`error`] the decoding error they share.
//! * [`hash`]: HighwayHash-64 node-name hashing.
//! * [`limits`]: the bounds on what peers can make a node hold and do.
//! * [`node`]: the link-state routing state machine of one node ([`node::NodeState`]).
//! * [`go`]: how Go receptor writes and reads things: JSON (encoding, and decoding
//!   with Go's errors), RFC 3339 times, durations (`time.Duration` text both ways).

pub mod data;
pub mod error;
pub mod firewall;
pub mod frame;
pub mod go;
pub mod hash;
pub mod limits;
pub mod message;
pub mod msgtype;
pub mod node;
pub mod routing;
pub mod svcad;
pub mod update;

/// [`go::json`] under its earlier name.
pub use go::json as gojson;
/// [`go::time`] under its earlier name.
pub use go::time as gotime;
