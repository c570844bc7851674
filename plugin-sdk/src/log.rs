//! Logging through the host: messages go to the daemon's log, tagged with the plugin.

use std::sync::OnceLock;

use crate::abi;

/// Severity of a log message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something failed.
    Error,
    /// Something looks wrong.
    Warn,
    /// Normal operation worth telling.
    Info,
    /// Detail for debugging.
    Debug,
    /// Very detailed tracing.
    Trace,
}

impl Level {
    fn to_abi(self) -> u32 {
        match self {
            Level::Error => abi::LOG_ERROR,
            Level::Warn => abi::LOG_WARN,
            Level::Info => abi::LOG_INFO,
            Level::Debug => abi::LOG_DEBUG,
            Level::Trace => abi::LOG_TRACE,
        }
    }
}

/// The host's log callback, set once at entry.
struct HostLog {
    ctx: usize,
    log: unsafe extern "C" fn(*mut std::ffi::c_void, u32, abi::Str),
}

static HOST_LOG: OnceLock<HostLog> = OnceLock::new();

/// Remembers the host's log callback (called by the entry point).
pub(crate) fn install(host: &abi::HostApi) {
    let has_log = abi::covers(
        host.struct_size,
        std::mem::offset_of!(abi::HostApi, log),
        std::mem::size_of::<usize>(),
    );
    if let (true, Some(log)) = (has_log, host.log) {
        let _ = HOST_LOG.set(HostLog {
            ctx: host.ctx as usize,
            log,
        });
    }
}

/// Logs `message` at `level` through the host (to stderr if no host is attached, as
/// when the plugin's code runs in its own unit tests).
pub fn log(level: Level, message: &str) {
    match HOST_LOG.get() {
        // SAFETY: the host keeps its log callback and context valid for the life of the
        // process, and the message is borrowed for the call only.
        Some(h) => unsafe { (h.log)(h.ctx as *mut _, level.to_abi(), abi::Str::new(message)) },
        None => eprintln!("{level:?}: {message}"),
    }
}

/// Logs an error.
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Logs a warning.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Logs information.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Logs debugging detail.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}
