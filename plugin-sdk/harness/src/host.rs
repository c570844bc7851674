//! The host side of the ABI as the harness plays it: the [`abi::HostApi`] given to the
//! entry point (a log that the harness keeps, the typed configuration accessors of ABI
//! 1.2), error sinks, and the progress context of each unit.
//!
//! Every callback catches panics, so nothing unwinds into plugin code.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use receptor_plugin_sdk::{abi, layout};
use serde_json::Value;

/// Locks a mutex, taking the data even if a panicking thread poisoned it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the plugin logged, kept for the report (bounded: the oldest lines go first).
pub(crate) struct LogBook {
    lines: Mutex<Vec<String>>,
}

/// At most this many log lines are kept.
const MAX_LOG_LINES: usize = 1000;

impl LogBook {
    /// The lines logged so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        lock(&self.lines).clone()
    }
}

/// Builds the host API for one load (leaked with its log book: the ABI wants it valid
/// while the library is loaded, and a library that started threads is never unloaded).
pub(crate) fn host_api() -> (&'static abi::HostApi, &'static LogBook) {
    let book: &'static LogBook = Box::leak(Box::new(LogBook {
        lines: Mutex::new(Vec::new()),
    }));
    let api: &'static abi::HostApi = Box::leak(Box::new(abi::HostApi {
        struct_size: std::mem::size_of::<abi::HostApi>(),
        abi_major: abi::ABI_MAJOR,
        abi_minor: abi::ABI_MINOR,
        ctx: book as *const LogBook as *mut c_void,
        log: Some(log),
        config_string: Some(config_string),
        config_int: Some(config_int),
        config_bool: Some(config_bool),
        config_duration_ms: Some(config_duration_ms),
        config_list_len: Some(config_list_len),
        config_list_item: Some(config_list_item),
    }));
    (api, book)
}

unsafe extern "C" fn log(ctx: *mut c_void, level: u32, message: abi::Str) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if ctx.is_null() {
            return;
        }
        // SAFETY: ctx is the leaked LogBook of this load.
        let book = unsafe { &*(ctx as *const LogBook) };
        // SAFETY: the message is borrowed for the call and copied here.
        let text = unsafe { message.to_string_lossy() };
        let level = match level {
            abi::LOG_ERROR => "error",
            abi::LOG_WARN => "warn",
            abi::LOG_INFO => "info",
            abi::LOG_DEBUG => "debug",
            _ => "trace",
        };
        let mut lines = lock(&book.lines);
        if lines.len() >= MAX_LOG_LINES {
            lines.remove(0);
        }
        lines.push(format!("{level}: {text}"));
    }));
}

/// Collects the message a plugin reports through an [`abi::ErrorSink`] during one call.
pub(crate) struct ErrorSlot {
    message: Mutex<Option<String>>,
}

impl ErrorSlot {
    /// An empty slot.
    pub(crate) fn new() -> ErrorSlot {
        ErrorSlot {
            message: Mutex::new(None),
        }
    }

    /// The sink to pass to the plugin; valid while `self` is.
    pub(crate) fn sink(&self) -> abi::ErrorSink {
        abi::ErrorSink {
            struct_size: std::mem::size_of::<abi::ErrorSink>(),
            ctx: self as *const ErrorSlot as *mut c_void,
            set: Some(error_set),
        }
    }

    /// The message reported, if any.
    pub(crate) fn take(&self) -> Option<String> {
        lock(&self.message).take()
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
        *lock(&slot.message) = Some(text);
    }));
}

/// One progress report of a unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The `STATE_*` code reported.
    pub state: u32,
    /// The detail text.
    pub detail: String,
    /// The extra data (JSON), `None` when the plugin passed none.
    pub extra: Option<Value>,
    /// When it arrived, since the unit started.
    pub at: Duration,
}

/// What the plugin did with one unit's progress context.
#[derive(Debug, Default)]
pub(crate) struct ProgressLog {
    pub(crate) reports: Vec<Report>,
    /// How many times `release` was called (the contract says exactly once).
    pub(crate) releases: u32,
    /// Reports that arrived after `release`.
    pub(crate) after_release: u32,
    /// Extra data that was not valid JSON.
    pub(crate) bad_extra: Vec<String>,
}

/// At most this many reports are kept per unit (later ones are counted, not kept).
const MAX_REPORTS: usize = 10_000;

/// The progress context of one unit. Leaked: a plugin may (wrongly) call it after the
/// harness is done, and that must not be a use after free.
pub(crate) struct ProgressCtx {
    started: Instant,
    log: Mutex<ProgressLog>,
    changed: Condvar,
}

impl ProgressCtx {
    /// A fresh context, leaked.
    pub(crate) fn new() -> &'static ProgressCtx {
        Box::leak(Box::new(ProgressCtx {
            started: Instant::now(),
            log: Mutex::new(ProgressLog::default()),
            changed: Condvar::new(),
        }))
    }

    /// The struct to pass to `start` / `reattach`.
    pub(crate) fn abi(&'static self) -> abi::Progress {
        abi::Progress {
            struct_size: std::mem::size_of::<abi::Progress>(),
            ctx: self as *const ProgressCtx as *mut c_void,
            report: Some(progress_report),
            release: Some(progress_release),
        }
    }

    /// Waits until `done` holds for the log, or `limit` passes; returns the log then.
    pub(crate) fn wait_until(
        &self,
        limit: Duration,
        done: impl Fn(&ProgressLog) -> bool,
    ) -> MutexGuard<'_, ProgressLog> {
        let deadline = Instant::now() + limit;
        let mut log = lock(&self.log);
        while !done(&log) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            log = match self.changed.wait_timeout(log, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        log
    }
}

unsafe extern "C" fn progress_report(
    ctx: *mut c_void,
    state: u32,
    detail: abi::Str,
    extra: abi::Str,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if ctx.is_null() {
            return;
        }
        // SAFETY: ctx is a leaked ProgressCtx.
        let p = unsafe { &*(ctx as *const ProgressCtx) };
        // SAFETY: the string is borrowed for the call and copied here.
        let detail = unsafe { detail.to_string_lossy() };
        // SAFETY: likewise.
        let extra = unsafe { extra.to_string_lossy() };
        let mut log = lock(&p.log);
        if log.releases > 0 {
            log.after_release += 1;
        }
        let extra = if extra.is_empty() {
            None
        } else {
            match serde_json::from_str::<Value>(&extra) {
                Ok(v) => Some(v),
                Err(_) => {
                    log.bad_extra.push(extra);
                    None
                }
            }
        };
        if log.reports.len() < MAX_REPORTS {
            let at = p.started.elapsed();
            log.reports.push(Report {
                state,
                detail,
                extra,
                at,
            });
        }
        drop(log);
        p.changed.notify_all();
    }));
}

unsafe extern "C" fn progress_release(ctx: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if ctx.is_null() {
            return;
        }
        // SAFETY: ctx is a leaked ProgressCtx.
        let p = unsafe { &*(ctx as *const ProgressCtx) };
        lock(&p.log).releases += 1;
        p.changed.notify_all();
    }));
}

// ---- the typed configuration accessors of ABI 1.2 ----

/// Why a field cannot be read.
enum Lookup {
    Absent,
    Error(String),
}

/// Reports `message` through the sink the plugin passed.
///
/// # Safety
/// `err` is null or a valid sink.
unsafe fn report_error(err: *const abi::ErrorSink, message: &str) {
    // SAFETY: forwarded from the caller.
    if let Ok(sink) = unsafe { layout::read_prefix(err) } {
        if let Some(set) = sink.set {
            // SAFETY: the sink's own callback with its context; the message is borrowed
            // for the call.
            unsafe { set(sink.ctx, abi::Str::new(message)) };
        }
    }
}

/// Finds `key` (without regard to case) in the section.
fn field(config: &[u8], key: &str) -> Result<Value, Lookup> {
    let section: Value = serde_json::from_slice(config)
        .map_err(|e| Lookup::Error(format!("the section is not a JSON object: {e}")))?;
    let Value::Object(map) = section else {
        return Err(Lookup::Error("the section is not a JSON object".to_owned()));
    };
    map.into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
        .ok_or(Lookup::Absent)
}

fn noun(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a map".to_owned(),
    }
}

fn as_string(key: &str, v: &Value) -> Result<String, Lookup> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(Lookup::Error(format!(
            "{key}: expected a string, got {}",
            noun(other)
        ))),
    }
}

/// Go's integer spellings: decimal, `0x`, `0o`, `0b`, and a leading `0` for octal.
fn parse_int(s: &str) -> Option<i64> {
    let t = s.trim();
    let (negative, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let t = t.replace('_', "");
    let lower = t.to_ascii_lowercase();
    let magnitude = if let Some(h) = lower.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()?
    } else if let Some(b) = lower.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()?
    } else if lower.len() > 1 && lower.starts_with('0') {
        i64::from_str_radix(&lower[1..], 8).ok()?
    } else {
        lower.parse().ok()?
    };
    Some(if negative { -magnitude } else { magnitude })
}

fn as_int(key: &str, v: &Value) -> Result<i64, Lookup> {
    let bad = || Lookup::Error(format!("{key}: expected an integer, got {}", noun(v)));
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(bad),
        Value::String(s) => parse_int(s).ok_or_else(bad),
        _ => Err(bad()),
    }
}

fn as_bool(key: &str, v: &Value) -> Result<bool, Lookup> {
    let bad = || Lookup::Error(format!("{key}: expected a boolean, got {}", noun(v)));
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "1" | "t" | "true" | "y" | "yes" | "on" => Ok(true),
            "0" | "f" | "false" | "n" | "no" | "off" => Ok(false),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// Go's duration form (`1h2m3.5s`, `250ms`, `10us`, `5ns`) in nanoseconds.
fn parse_go_duration(s: &str) -> Option<f64> {
    let mut rest = s.trim();
    if rest == "0" {
        return Some(0.0);
    }
    let mut total = 0.0;
    let mut any = false;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
        any = true;
    }
    any.then_some(total)
}

fn as_duration_ms(key: &str, v: &Value) -> Result<u64, Lookup> {
    let bad = || {
        Lookup::Error(format!(
            "{key}: expected a duration such as 1m30s, got {}",
            noun(v)
        ))
    };
    let nanos = match v {
        Value::Number(n) => n.as_f64().map(|s| s * 1e9).ok_or_else(bad)?,
        Value::String(s) => match s.trim().parse::<f64>() {
            Ok(secs) => secs * 1e9,
            Err(_) => parse_go_duration(s).ok_or_else(bad)?,
        },
        _ => return Err(bad()),
    };
    if !nanos.is_finite() || !(0.0..=1.8e19).contains(&nanos) {
        return Err(bad());
    }
    Ok((nanos / 1e6) as u64)
}

fn as_list(key: &str, v: &Value) -> Result<Vec<String>, Lookup> {
    match v {
        Value::String(s) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .map(str::to_owned)
            .collect()),
        Value::Array(items) => items.iter().map(|i| as_string(key, i)).collect(),
        other => Err(Lookup::Error(format!(
            "{key}: expected a list of strings, got {}",
            noun(other)
        ))),
    }
}

/// Runs one accessor: reads the field, converts it, stores it with `store`.
///
/// # Safety
/// `config` and `key` are valid for the call; `err` is null or a valid sink.
unsafe fn access<T>(
    config: abi::Str,
    key: abi::Str,
    err: *const abi::ErrorSink,
    convert: impl FnOnce(&str, &Value) -> Result<T, Lookup>,
    store: impl FnOnce(T) -> abi::Status,
) -> abi::Status {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: borrowed for the call (caller).
        let config = unsafe { config.as_bytes() };
        // SAFETY: likewise.
        let key = unsafe { key.to_string_lossy() };
        let value = field(config, &key).and_then(|v| convert(&key, &v));
        match value {
            Ok(v) => Ok(store(v)),
            Err(Lookup::Absent) => Ok(abi::STATUS_ABSENT),
            Err(Lookup::Error(message)) => Err(message),
        }
    }));
    match outcome {
        Ok(Ok(status)) => status,
        Ok(Err(message)) => {
            // SAFETY: forwarded from the caller.
            unsafe { report_error(err, &message) };
            abi::STATUS_ERROR
        }
        Err(_) => {
            // SAFETY: forwarded from the caller.
            unsafe { report_error(err, "the harness's configuration accessor panicked") };
            abi::STATUS_PANIC
        }
    }
}

/// Copies `text` to `buf` (at most `cap` bytes) and its length to `out_len`.
///
/// # Safety
/// `buf` has `cap` writable bytes (or `cap` is 0); `out_len` is null or writable.
unsafe fn copy_out(text: &str, buf: *mut u8, cap: usize, out_len: *mut usize) -> abi::Status {
    let n = text.len().min(cap);
    if n > 0 && !buf.is_null() {
        // SAFETY: `n <= cap` bytes are writable at buf (caller).
        unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), buf, n) };
    }
    if !out_len.is_null() {
        // SAFETY: writable (caller).
        unsafe { out_len.write(text.len()) };
    }
    abi::STATUS_OK
}

/// Stores `value` at `out` if it is not null.
///
/// # Safety
/// `out` is null or writable.
unsafe fn put<T>(out: *mut T, value: T) -> abi::Status {
    if !out.is_null() {
        // SAFETY: writable (caller).
        unsafe { out.write(value) };
    }
    abi::STATUS_OK
}

unsafe extern "C" fn config_string(
    _ctx: *mut c_void,
    config: abi::Str,
    key: abi::Str,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
    err: *const abi::ErrorSink,
) -> abi::Status {
    // SAFETY: buf has cap writable bytes and out_len is null or writable (the ABI's contract).
    let store = |s: String| unsafe { copy_out(&s, buf, cap, out_len) };
    // SAFETY: the ABI's contract for this accessor, forwarded.
    unsafe { access(config, key, err, as_string, store) }
}

unsafe extern "C" fn config_int(
    _ctx: *mut c_void,
    config: abi::Str,
    key: abi::Str,
    out: *mut i64,
    err: *const abi::ErrorSink,
) -> abi::Status {
    // SAFETY: out is null or writable (the ABI's contract).
    let store = |v| unsafe { put(out, v) };
    // SAFETY: the ABI's contract for this accessor, forwarded.
    unsafe { access(config, key, err, as_int, store) }
}

unsafe extern "C" fn config_bool(
    _ctx: *mut c_void,
    config: abi::Str,
    key: abi::Str,
    out: *mut u32,
    err: *const abi::ErrorSink,
) -> abi::Status {
    // SAFETY: out is null or writable (the ABI's contract).
    let store = |v: bool| unsafe { put(out, u32::from(v)) };
    // SAFETY: the ABI's contract for this accessor, forwarded.
    unsafe { access(config, key, err, as_bool, store) }
}

unsafe extern "C" fn config_duration_ms(
    _ctx: *mut c_void,
    config: abi::Str,
    key: abi::Str,
    out: *mut u64,
    err: *const abi::ErrorSink,
) -> abi::Status {
    // SAFETY: out is null or writable (the ABI's contract).
    let store = |v| unsafe { put(out, v) };
    // SAFETY: the ABI's contract for this accessor, forwarded.
    unsafe { access(config, key, err, as_duration_ms, store) }
}

unsafe extern "C" fn config_list_len(
    _ctx: *mut c_void,
    config: abi::Str,
    key: abi::Str,
    out: *mut usize,
    err: *const abi::ErrorSink,
) -> abi::Status {
    // SAFETY: out is null or writable (the ABI's contract).
    let store = |v: Vec<String>| unsafe { put(out, v.len()) };
    // SAFETY: the ABI's contract for this accessor, forwarded.
    unsafe { access(config, key, err, as_list, store) }
}

#[allow(clippy::too_many_arguments)] // the ABI's signature
unsafe extern "C" fn config_list_item(
    _ctx: *mut c_void,
    config: abi::Str,
    key: abi::Str,
    index: usize,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
    err: *const abi::ErrorSink,
) -> abi::Status {
    let item = move |key: &str, v: &Value| {
        let list = as_list(key, v)?;
        list.into_iter()
            .nth(index)
            .ok_or_else(|| Lookup::Error(format!("{key}: no item {index} in the list")))
    };
    // SAFETY: buf has cap writable bytes and out_len is null or writable (the ABI's contract).
    let store = |s: String| unsafe { copy_out(&s, buf, cap, out_len) };
    // SAFETY: the ABI's contract for this accessor, forwarded.
    unsafe { access(config, key, err, item, store) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_spellings_convert() {
        assert_eq!(parse_int("0x10"), Some(16));
        assert_eq!(parse_int("010"), Some(8));
        assert_eq!(parse_int("-7"), Some(-7));
        assert_eq!(parse_int("many"), None);
        assert_eq!(parse_go_duration("1m30s"), Some(90e9));
        assert_eq!(parse_go_duration("250ms"), Some(250e6));
        assert_eq!(parse_go_duration("soon"), None);
        assert!(matches!(
            as_duration_ms("t", &Value::String("1.5".into())),
            Ok(1500)
        ));
        assert!(matches!(
            as_bool("b", &Value::String("Yes".into())),
            Ok(true)
        ));
        assert!(matches!(
            as_list("l", &Value::String("a, b".into())).as_deref(),
            Ok([a, b]) if a == "a" && b == "b"
        ));
    }
}
