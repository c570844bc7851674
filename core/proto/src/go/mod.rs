//! How Go receptor 1.6.9 writes and reads things, in one place: one encoder or parser
//! per format, each matching what Go's standard library does byte for byte (clients and
//! Go peers compare the bytes, and error texts reach users).
//!
//! * [`json`]: JSON as Go's `encoding/json` encodes it (field order, key order, floats,
//!   HTML escaping) and Go's case-insensitive field matching when decoding structs;
//! * [`json_decode`]: a JSON command line decoded as Go's `json.Unmarshal` into a
//!   `map[string]interface{}` decodes it, with Go's error texts;
//! * [`time`]: `time.Time` as RFC 3339 (`RFC3339Nano` in UTC) both ways;
//! * [`duration`]: `time.Duration` as text both ways (`String()` and
//!   `time.ParseDuration`).
//!
//! Every other module that reads or writes one of these formats goes through here.

pub mod duration;
pub mod json;
pub mod json_decode;
pub mod time;
