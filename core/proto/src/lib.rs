//! # receptor-proto
//!
//! The receptor mesh protocol ("netceptor") without I/O: frames, messages, node-name
//! hashing, link-state routing and service advertisements, plus the Go-compatible
//! JSON encoding the protocol and the control service rely on. Everything here is
//! driven by explicit inputs (`now`, received bytes) and yields outputs to transmit,
//! so it can be tested deterministically with a simulated clock.

pub mod firewall;
pub mod gojson;
pub mod svcad;
