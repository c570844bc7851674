//! The typed configuration accessors of ABI 1.2 ([`abi::HostApi`]'s `config_*`): a C
//! plugin reads the fields of its own section without parsing JSON. Values are
//! converted as the configuration loader converts them (Go's spellings of integers,
//! booleans and durations); a type error names the key and what was expected, and the
//! node adds the section's place in the configuration file when it reports the
//! plugin's error.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use receptor_plugin_sdk::{abi, layout};
use serde_json::Value;

use receptor_proto::go::duration::parse_go_duration;

use crate::config::coerce::{parse_go_bool, parse_go_int};

/// Why a field cannot be read.
enum Lookup {
    /// The key is not in the section.
    Absent,
    /// The section or the value is not what was asked for.
    Error(String),
}

/// Reports `message` through the plugin-supplied sink of the host (the plugin passes the
/// sink it got from the host for the call it is in).
///
/// # Safety
/// `err` is null or a valid sink.
unsafe fn report(err: *const abi::ErrorSink, message: &str) {
    // SAFETY: forwarded from the caller.
    if let Ok(sink) = unsafe { layout::read_prefix(err) } {
        if let Some(set) = sink.set {
            // SAFETY: the sink's own callback with its context; the message is borrowed
            // for the call.
            unsafe { set(sink.ctx, abi::Str::new(message)) };
        }
    }
}

/// Finds `key` (case-insensitively) in the section JSON.
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

fn as_string(key: &str, v: &Value) -> Result<String, Lookup> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(Lookup::Error(format!(
            "{key}: expected a string, got {}",
            kind(other)
        ))),
    }
}

fn as_int(key: &str, v: &Value) -> Result<i64, Lookup> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| Lookup::Error(format!("{key}: expected an integer, got {n}"))),
        Value::String(s) => parse_go_int(s)
            .map_err(|e| Lookup::Error(format!("{key}: expected an integer, got {s:?} ({e})"))),
        other => Err(Lookup::Error(format!(
            "{key}: expected an integer, got {}",
            kind(other)
        ))),
    }
}

fn as_bool(key: &str, v: &Value) -> Result<bool, Lookup> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => parse_go_bool(s)
            .or(match s.to_ascii_lowercase().as_str() {
                "on" => Some(true),
                "off" => Some(false),
                "yes" => Some(true),
                "no" => Some(false),
                _ => None,
            })
            .ok_or_else(|| Lookup::Error(format!("{key}: expected a boolean, got {s:?}"))),
        other => Err(Lookup::Error(format!(
            "{key}: expected a boolean, got {}",
            kind(other)
        ))),
    }
}

fn as_duration_ms(key: &str, v: &Value) -> Result<u64, Lookup> {
    let bad = |got: String| {
        Lookup::Error(format!(
            "{key}: expected a duration such as 1m30s, got {got}"
        ))
    };
    let nanos = match v {
        Value::Number(n) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1.8e10)
            .map(|s| (s * 1e9) as i64)
            .ok_or_else(|| bad(n.to_string()))?,
        Value::String(s) => match s.parse::<f64>() {
            Ok(secs) if (0.0..1.8e10).contains(&secs) => (secs * 1e9) as i64,
            _ => parse_go_duration(s).map_err(|_| bad(format!("{s:?}")))?,
        },
        other => return Err(bad(kind(other).to_owned())),
    };
    u64::try_from(nanos / 1_000_000).map_err(|_| bad("a negative duration".to_owned()))
}

fn as_list(key: &str, v: &Value) -> Result<Vec<String>, Lookup> {
    match v {
        Value::Array(items) => items.iter().map(|i| as_string(key, i)).collect(),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(s.split(',').map(|p| p.trim().to_owned()).collect()),
        other => Err(Lookup::Error(format!(
            "{key}: expected a list of strings, got {}",
            kind(other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// Runs one accessor: looks the key up, converts, stores with `store`.
///
/// # Safety
/// `config` and `key` are valid for the call; `err` is null or a valid sink.
unsafe fn access<T>(
    config: abi::Str,
    key: abi::Str,
    err: *const abi::ErrorSink,
    convert: impl FnOnce(&str, &Value) -> Result<T, Lookup>,
    store: impl FnOnce(T) -> bool,
) -> abi::Status {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the string is borrowed for the call.
        let config = unsafe { config.as_bytes() };
        // SAFETY: likewise.
        let key = unsafe { key.to_string_lossy() };
        let value = field(config, &key)?;
        let converted = convert(&key, &value)?;
        if store(converted) {
            Ok(())
        } else {
            Err(Lookup::Error("null output pointer".to_owned()))
        }
    }));
    match result {
        Ok(Ok(())) => abi::STATUS_OK,
        Ok(Err(Lookup::Absent)) => abi::STATUS_ABSENT,
        Ok(Err(Lookup::Error(message))) => {
            // SAFETY: forwarded from the caller.
            unsafe { report(err, &message) };
            abi::STATUS_ERROR
        }
        Err(_) => abi::STATUS_PANIC,
    }
}

/// Copies `text` to a caller's buffer as the ABI says: at most `cap` bytes, the full
/// length in `*out_len`.
///
/// # Safety
/// `buf` is null or has `cap` writable bytes; `out_len` is null or writable.
unsafe fn copy_out(text: &str, buf: *mut u8, cap: usize, out_len: *mut usize) -> bool {
    if out_len.is_null() {
        return false;
    }
    let n = text.len().min(cap);
    if n > 0 && !buf.is_null() {
        // SAFETY: n <= cap writable bytes at buf.
        unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), buf, n) };
    }
    // SAFETY: checked non-null; writable by contract.
    unsafe { out_len.write(text.len()) };
    true
}

pub(super) unsafe extern "C" fn config_string(
    _ctx: *mut c_void,
    config: abi::Str,
    key: abi::Str,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
    err: *const abi::ErrorSink,
) -> abi::Status {
    // SAFETY: buf has cap writable bytes and out_len is null or writable.
    let put = |s: String| unsafe { copy_out(&s, buf, cap, out_len) };
    // SAFETY: the plugin's arguments for this call.
    unsafe { access(config, key, err, as_string, put) }
}

/// Stores `value` at `out` if it is not null.
///
/// # Safety
/// `out` is null or writable.
unsafe fn store<T>(out: *mut T, value: T) -> bool {
    if out.is_null() {
        return false;
    }
    // SAFETY: checked non-null; writable by contract.
    unsafe { out.write(value) };
    true
}

pub(super) unsafe extern "C" fn config_int(
    _ctx: *mut c_void,
    config: abi::Str,
    key: abi::Str,
    out: *mut i64,
    err: *const abi::ErrorSink,
) -> abi::Status {
    // SAFETY: out is null or writable.
    let put = |v| unsafe { store(out, v) };
    // SAFETY: the plugin's arguments for this call.
    unsafe { access(config, key, err, as_int, put) }
}

pub(super) unsafe extern "C" fn config_bool(
    _ctx: *mut c_void,
    config: abi::Str,
    key: abi::Str,
    out: *mut u32,
    err: *const abi::ErrorSink,
) -> abi::Status {
    // SAFETY: out is null or writable.
    let put = |v: bool| unsafe { store(out, u32::from(v)) };
    // SAFETY: the plugin's arguments for this call.
    unsafe { access(config, key, err, as_bool, put) }
}

pub(super) unsafe extern "C" fn config_duration_ms(
    _ctx: *mut c_void,
    config: abi::Str,
    key: abi::Str,
    out: *mut u64,
    err: *const abi::ErrorSink,
) -> abi::Status {
    // SAFETY: out is null or writable.
    let put = |v| unsafe { store(out, v) };
    // SAFETY: the plugin's arguments for this call.
    unsafe { access(config, key, err, as_duration_ms, put) }
}

pub(super) unsafe extern "C" fn config_list_len(
    _ctx: *mut c_void,
    config: abi::Str,
    key: abi::Str,
    out: *mut usize,
    err: *const abi::ErrorSink,
) -> abi::Status {
    // SAFETY: out is null or writable.
    let put = |v: Vec<String>| unsafe { store(out, v.len()) };
    // SAFETY: the plugin's arguments for this call.
    unsafe { access(config, key, err, as_list, put) }
}

#[allow(clippy::too_many_arguments)]
pub(super) unsafe extern "C" fn config_list_item(
    _ctx: *mut c_void,
    config: abi::Str,
    key: abi::Str,
    index: usize,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
    err: *const abi::ErrorSink,
) -> abi::Status {
    let item = |key: &str, v: &Value| {
        let list = as_list(key, v)?;
        list.into_iter()
            .nth(index)
            .ok_or_else(|| Lookup::Error(format!("{key}: the list has no item {index}")))
    };
    // SAFETY: buf has cap writable bytes and out_len is null or writable.
    let put = |s: String| unsafe { copy_out(&s, buf, cap, out_len) };
    // SAFETY: the plugin's arguments for this call.
    unsafe { access(config, key, err, item, put) }
}
