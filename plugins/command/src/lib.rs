//! The `command` receptor plugin: receptor's `work-command` work type.
//!
//! A `work-command` runs a program for each unit: the unit's payload is its stdin, its
//! stdout and stderr go (merged, straight from the process, no copying) to the unit's
//! results file. Parameters are split like a shell would split them but no shell runs.
//! The program runs in its own session and process group under a small supervisor
//! ([`spawn`]), so it survives a restart of the node, its exit status is never lost,
//! and a cancel kills everything it started.
//!
//! * [`config`]: the `work-command` configuration section;
//! * [`shlex`]: splitting parameters as Go receptor does;
//! * [`spawn`]: the supervisor process;
//! * [`runner`]: starting, following, cancelling and re-attaching units.

pub mod config;
pub mod runner;
pub mod shlex;
pub mod spawn;

#[cfg(test)]
mod tests;
