//! Entry points for the fuzz targets in `fuzz/` (not part of the supported API).
//!
//! The fuzz targets call public decoders directly; this module only exposes, unchanged,
//! the few decoders of outside input that are private to their module.

use crate::control::command::Args;

/// Parses one control command line exactly as a control session does (the line without
/// its `\n` and with `\r` bytes removed): the command word and its arguments, or the text
/// of the `ERROR:` reply.
pub fn parse_control_line(line: &[u8]) -> Result<(String, Args), String> {
    crate::control::session::parse_line(line).map(|p| (p.name, p.args))
}
