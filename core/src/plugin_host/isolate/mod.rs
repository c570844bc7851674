//! Work-type plugins run isolated, each in a plugin host process of its own.
//!
//! A `plugins:` entry of the form `{path: /opt/acme/libacme.so, isolation: process}`
//! loads the plugin (the same cdylib, unchanged) not into the node but into a plugin
//! host: the `receptor` executable itself, re-executed as
//! `receptor plugin-host --socket-fd N --log-level L PATH` ([`run_plugin_host`]). The
//! host loads the library with the node's own loader and answers the node over a
//! `SOCK_SEQPACKET` unix socketpair ([`wire`]): one JSON message per record, at most
//! [`wire::MAX_MESSAGE`] bytes, a unit's stdin and stdout passed as descriptors
//! (`SCM_RIGHTS`), so a unit's data never crosses the socket. The host forwards every
//! progress report (latest wins, as in-process) and every log line of the plugin.
//!
//! The node side ([`Supervisor`]) keeps, per isolated plugin:
//!
//! * its description (sections, fields, help), obtained from the host when the node
//!   loads its plugins, so `--help`, config checking and `plugin inspect` work as for an
//!   in-process plugin;
//! * the work types created from it (replayed into a new host after a restart) and the
//!   units running in it.
//!
//! When the host ends (a segfault, an `abort()`, a panic in a plugin built with
//! `panic = "abort"`, or a call that got no answer within the call timeout, after which
//! the node kills it), the node logs `plugin <name> (<path>) crashed: <reason>`, fails
//! the calls in flight (a unit whose start crashed the host ends `Failed` with
//! `Error starting worker: plugin host for <name> crashed (<reason>)`), and starts a new
//! host after a back-off (100 ms doubling to 30 s; back to 100 ms once a host lived a
//! minute). Units that were running are re-attached in the new host where the work type
//! can (the command work type follows its runner process by pid); the others end
//! `Failed` with `plugin host for <name> crashed (<reason>); not re-attached: ...`.
//! While the host is down a new unit waits up to [`DOWN_WAIT`] for it, else fails with
//! a clear error. The node, its links and its other plugins are untouched.
//!
//! Only work types run isolated: a plugin that claims a backend section is refused
//! with `isolation: process` (backends hand the node connected descriptors for the life
//! of a link, which a host restart would cut anyway).
//!
//! Everything from the host is untrusted: messages are size-bounded and parsed, never
//! unwrapped; a host that sends garbage or does not answer is killed.

mod host_process;
mod supervisor;
mod wire;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use host_process::run_plugin_host;
pub(super) use supervisor::Supervisor;

/// How long a new unit waits for a plugin host that is being restarted.
pub const DOWN_WAIT: Duration = Duration::from_secs(3);
/// The default bound on a call into a plugin host (create, start, reattach, cancel).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Set in a plugin host process: plugins that must run isolated may load here.
static IN_PLUGIN_HOST: AtomicBool = AtomicBool::new(false);

/// Whether this process is a plugin host (where plugins marked as needing isolation
/// are loaded).
pub(super) fn in_plugin_host_process() -> bool {
    IN_PLUGIN_HOST.load(Ordering::Relaxed)
}

/// Errors of the isolation layer: starting, talking to and supervising plugin hosts.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    /// The plugin host process could not be started.
    #[error("cannot start a plugin host for {path}: {source}")]
    Spawn {
        /// The plugin file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The plugin host broke the protocol (or could not be talked to).
    #[error("plugin host for {plugin}: {reason}")]
    Protocol {
        /// The plugin (name, or file before it said its name).
        plugin: String,
        /// What went wrong.
        reason: String,
    },
    /// The plugin host ended while the call was in flight.
    #[error("plugin host for {plugin} crashed ({reason})")]
    Crashed {
        /// The plugin name.
        plugin: String,
        /// How it ended (`SIGSEGV`, `exit status 3`, ...).
        reason: String,
    },
    /// The plugin host did not answer a call in time; it was killed.
    #[error(
        "plugin host for {plugin} hung (no answer to {call} within {timeout:?}) and was killed"
    )]
    Hung {
        /// The plugin name.
        plugin: String,
        /// The call (`start`, `cancel`, ...).
        call: &'static str,
        /// The bound.
        timeout: Duration,
    },
    /// The plugin host is being restarted after a crash.
    #[error("plugin host for {plugin} is down after it crashed ({reason}); it is being restarted")]
    Down {
        /// The plugin name.
        plugin: String,
        /// How the last host ended.
        reason: String,
    },
    /// The plugin was unloaded (the node is stopping).
    #[error("plugin host for {plugin} was stopped")]
    Stopped {
        /// The plugin name.
        plugin: String,
    },
    /// An isolated plugin claims a backend section.
    #[error("plugin {plugin} ({path}) claims backend section {kind:?}: `isolation: process` runs work-type plugins only; load it without isolation")]
    BackendClaim {
        /// The plugin name.
        plugin: String,
        /// The plugin file.
        path: PathBuf,
        /// The backend section kind.
        kind: String,
    },
    /// The plugin's own error for the call.
    #[error("{0}")]
    Call(String),
}

/// The name of a signal, as logs show it (`SIGSEGV`), or its number.
fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGSYS => "SIGSYS",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        _ => return format!("signal {signal}"),
    };
    name.to_owned()
}
