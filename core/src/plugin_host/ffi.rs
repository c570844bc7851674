//! Host-side callbacks shared by every plugin: the error sink and the log sink.
//!
//! Callbacks are `extern "C"` functions called from plugin threads; each catches panics
//! so that nothing unwinds into plugin code.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use crate::metrics::CallCounters;

use receptor_plugin_sdk::abi;
use receptor_plugin_sdk::layout::Versioned;

use super::config_access;

/// Collects the message a plugin reports through an [`abi::ErrorSink`] during one call,
/// and counts the call (and its failure) in the plugin's [`CallCounters`].
pub(super) struct ErrorSlot {
    message: Mutex<Option<String>>,
    counters: Arc<CallCounters>,
}

impl ErrorSlot {
    /// A slot for one call into plugin `plugin`.
    pub(super) fn for_call(plugin: &str) -> ErrorSlot {
        let counters = crate::metrics::plugin(plugin);
        counters.calls.inc();
        ErrorSlot {
            message: Mutex::new(None),
            counters,
        }
    }

    /// The sink to pass to the plugin; valid while `self` is.
    pub(super) fn sink(&self) -> abi::ErrorSink {
        abi::ErrorSink {
            struct_size: std::mem::size_of::<abi::ErrorSink>(),
            ctx: self as *const ErrorSlot as *mut c_void,
            set: Some(error_set),
        }
    }

    /// The error for a failed call that returned `status`.
    pub(super) fn message(&self, status: abi::Status) -> String {
        self.counters.failures.inc();
        let taken = self
            .message
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        match (taken, status) {
            (Some(m), _) => m,
            (None, abi::STATUS_PANIC) => "plugin panicked".to_owned(),
            (None, s) => format!("failed without a reason (status {s})"),
        }
    }
}

unsafe extern "C" fn error_set(ctx: *mut c_void, message: abi::Str) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if ctx.is_null() {
            return;
        }
        // SAFETY: ctx is the ErrorSlot that lives for the whole call.
        let slot = unsafe { &*(ctx as *const ErrorSlot) };
        // SAFETY: the message is borrowed for this call and copied here.
        let text = unsafe { message.to_string_lossy() };
        *slot
            .message
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(text);
    }));
}

/// The log context of one load of a plugin (leaked, so that it outlives an unload; each
/// load leaks one, a few bytes).
pub(super) struct LogCtx {
    /// Set once the plugin told its name; until then the file name is used.
    pub(super) name: std::sync::OnceLock<String>,
    pub(super) file: String,
}

/// Builds the [`abi::HostApi`] for one plugin, as a host of ABI 1.`minor` would (its
/// `struct_size` and `abi_minor`; the current minor in production, older ones in the
/// compatibility tests); it and its context are leaked, so they stay valid after an
/// unload.
pub(super) fn host_api(
    file: &std::path::Path,
    minor: u32,
) -> (&'static abi::HostApi, &'static LogCtx) {
    let sizes = <abi::HostApi as Versioned>::SIZES;
    let minor = minor.min(abi::ABI_MINOR);
    let struct_size = sizes
        .get(minor as usize)
        .copied()
        .unwrap_or(std::mem::size_of::<abi::HostApi>());
    let ctx: &'static LogCtx = Box::leak(Box::new(LogCtx {
        name: std::sync::OnceLock::new(),
        file: file.display().to_string(),
    }));
    let api: &'static abi::HostApi = Box::leak(Box::new(abi::HostApi {
        struct_size,
        abi_major: abi::ABI_MAJOR,
        abi_minor: minor,
        ctx: ctx as *const LogCtx as *mut c_void,
        log: Some(plugin_log),
        config_string: Some(config_access::config_string),
        config_int: Some(config_access::config_int),
        config_bool: Some(config_access::config_bool),
        config_duration_ms: Some(config_access::config_duration_ms),
        config_list_len: Some(config_access::config_list_len),
        config_list_item: Some(config_access::config_list_item),
    }));
    (api, ctx)
}

unsafe extern "C" fn plugin_log(ctx: *mut c_void, level: u32, message: abi::Str) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if ctx.is_null() {
            return;
        }
        // SAFETY: ctx is the leaked LogCtx of this plugin.
        let ctx = unsafe { &*(ctx as *const LogCtx) };
        // SAFETY: the message is borrowed for this call.
        let text = unsafe { message.to_string_lossy() };
        let plugin = ctx.name.get().unwrap_or(&ctx.file);
        match level {
            abi::LOG_ERROR => tracing::error!(target: "receptor::plugin", %plugin, "{text}"),
            abi::LOG_WARN => tracing::warn!(target: "receptor::plugin", %plugin, "{text}"),
            abi::LOG_INFO => tracing::info!(target: "receptor::plugin", %plugin, "{text}"),
            abi::LOG_DEBUG => tracing::debug!(target: "receptor::plugin", %plugin, "{text}"),
            _ => tracing::trace!(target: "receptor::plugin", %plugin, "{text}"),
        }
    }));
}
