//! Go-compatible conversions of configuration values into typed fields.
//!
//! Go receptor fills its config structs with `ghjm/cmdline`'s reflective `setValue`:
//! a YAML integer goes into an `int` field as is, a string is parsed with
//! `strconv.ParseInt(s, 0, 64)` (so `"0660"` is octal and `"0x1F"` hex), a number
//! written into a `string` field is formatted (`12` → `"12"`, `1.5` → `"1.500000"`),
//! booleans accept `yes`/`no`/`1`/`0`/`t`/`f`..., and a `[]string` field either takes a
//! list, a JSON list in a string, or appends a single string (which is how
//! `allowedpeers=a allowedpeers=b` accumulates on the command line). This module
//! reproduces those rules and produces JSON, which the typed model then deserializes.

use super::value::Value;

/// The type of a configuration field, as Go declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldType {
    /// `string`
    Str,
    /// `int`
    Int,
    /// `bool`
    Bool,
    /// `[]string` (may be repeated)
    StrList,
    /// A list of maps (`firewallrules`).
    MapList,
    /// `map[string]float64` (`nodecost`).
    FloatMap,
    /// `map[string]interface{}` (`work-python` `config`).
    AnyMap,
}

/// Converts `value` for a field of type `ty`. `existing` is what the field already holds
/// (a repeated command-line key or bare value): string lists append to it.
pub(crate) fn coerce(
    ty: FieldType,
    value: &Value,
    existing: Option<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    match ty {
        FieldType::Str => to_str(value).map(serde_json::Value::String),
        FieldType::Int => to_int(value).map(serde_json::Value::from),
        FieldType::Bool => to_bool(value).map(serde_json::Value::Bool),
        FieldType::StrList => to_str_list(value, existing),
        FieldType::MapList => to_map_list(value),
        FieldType::FloatMap | FieldType::AnyMap => to_map(ty, value),
    }
}

fn got(value: &Value) -> String {
    match value {
        Value::Str(s) => format!("{s:?}"),
        other => other.type_name().to_owned(),
    }
}

/// `string` field: scalars are formatted like Go's `setValue` does.
pub(crate) fn to_str(value: &Value) -> Result<String, String> {
    match value {
        Value::Str(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        Value::Float(f) => Ok(format_go_f(*f)),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Err("expected a string, got null".to_owned()),
        other => Err(format!("expected a string, got {}", other.type_name())),
    }
}

/// Go's `fmt.Sprintf("%f", f)`.
fn format_go_f(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{f:.6}")
    }
}

/// `int` field.
pub(crate) fn to_int(value: &Value) -> Result<i64, String> {
    match value {
        Value::Int(i) => i64::try_from(*i).map_err(|_| format!("integer {i} is out of range")),
        // Go converts float64 to int by truncation.
        Value::Float(f) if f.is_finite() && f.abs() < 9.2e18 => Ok(f.trunc() as i64),
        Value::Str(s) => {
            parse_go_int(s).map_err(|e| format!("expected an integer, got {s:?} ({e})"))
        }
        Value::Null => Err("expected an integer, got null".to_owned()),
        other => Err(format!("expected an integer, got {}", got(other))),
    }
}

/// `bool` field.
pub(crate) fn to_bool(value: &Value) -> Result<bool, String> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::Str(s) => parse_go_bool(s)
            .ok_or_else(|| format!("expected a boolean (true/false, yes/no, 1/0), got {s:?}")),
        Value::Null => Err("expected a boolean, got null".to_owned()),
        other => Err(format!("expected a boolean, got {}", got(other))),
    }
}

/// `float64` field.
pub(crate) fn to_float(value: &Value) -> Result<f64, String> {
    match value {
        Value::Float(f) => Ok(*f),
        Value::Int(i) => Ok(*i as f64),
        Value::Str(s) => parse_go_float(s).ok_or_else(|| format!("expected a number, got {s:?}")),
        Value::Null => Err("expected a number, got null".to_owned()),
        other => Err(format!("expected a number, got {}", got(other))),
    }
}

fn to_str_list(
    value: &Value,
    existing: Option<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let items = match value {
        Value::Null => Vec::new(),
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Seq(_) | Value::Map(_) | Value::Null => Err(format!(
                    "expected a list of strings, but item {} is {}",
                    i + 1,
                    item.type_name()
                )),
                other => to_str(other),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Value::Str(s) if s.starts_with('[') => {
            let parsed: Vec<serde_json::Value> = serde_json::from_str(s)
                .map_err(|e| format!("expected a JSON list of strings, got {s:?} ({e})"))?;
            parsed
                .into_iter()
                .map(|item| match item {
                    serde_json::Value::String(s) => Ok(s),
                    other => Err(format!(
                        "expected a JSON list of strings, but it holds {other}"
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        Value::Str(s) => {
            // A single string appends to what the field already holds.
            let mut list = match existing {
                Some(serde_json::Value::Array(list)) => list,
                _ => Vec::new(),
            };
            list.push(serde_json::Value::String(s.clone()));
            return Ok(serde_json::Value::Array(list));
        }
        other => return Err(format!("expected a list of strings, got {}", got(other))),
    };
    Ok(serde_json::Value::Array(
        items.into_iter().map(serde_json::Value::String).collect(),
    ))
}

fn to_map_list(value: &Value) -> Result<serde_json::Value, String> {
    let items = match value {
        Value::Null => return Ok(serde_json::Value::Array(Vec::new())),
        Value::Seq(items) => items.clone(),
        Value::Str(s) if s.starts_with('[') => {
            let parsed: serde_json::Value = serde_json::from_str(s)
                .map_err(|e| format!("expected a JSON list of maps, got {s:?} ({e})"))?;
            match Value::from_json(&parsed) {
                Value::Seq(items) => items,
                _ => return Err(format!("expected a JSON list of maps, got {s:?}")),
            }
        }
        other => return Err(format!("expected a list of maps, got {}", got(other))),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::Map(_) => out.push(item.to_json()),
            other => {
                return Err(format!(
                    "expected a list of maps, but item {} is {}",
                    i + 1,
                    other.type_name()
                ))
            }
        }
    }
    Ok(serde_json::Value::Array(out))
}

fn to_map(ty: FieldType, value: &Value) -> Result<serde_json::Value, String> {
    let map = match value {
        Value::Null => return Ok(serde_json::Value::Object(serde_json::Map::new())),
        Value::Map(_) => value.clone(),
        Value::Str(s) if s.starts_with('{') => {
            let parsed: serde_json::Value = serde_json::from_str(s)
                .map_err(|e| format!("expected a JSON map, got {s:?} ({e})"))?;
            Value::from_json(&parsed)
        }
        other => return Err(format!("expected a map, got {}", got(other))),
    };
    let Value::Map(entries) = map else {
        return Err("expected a map".to_owned());
    };
    let mut out = serde_json::Map::new();
    for (k, v) in &entries {
        let key = k.key_string();
        let v = if ty == FieldType::FloatMap {
            let f = to_float(v).map_err(|e| format!("value of {key:?}: {e}"))?;
            serde_json::Number::from_f64(f)
                .map(serde_json::Value::Number)
                .ok_or_else(|| format!("value of {key:?}: expected a finite number"))?
        } else {
            v.to_json()
        };
        out.insert(key, v);
    }
    Ok(serde_json::Value::Object(out))
}

/// Boolean spellings accepted by `ghjm/cmdline` for string values.
pub(crate) fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "Y" | "true" | "TRUE" | "True" | "yes" | "Yes" | "YES" => Some(true),
        "0" | "f" | "F" | "N" | "false" | "FALSE" | "False" | "no" | "No" | "NO" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`: optional sign, `0x`/`0o`/`0b`/`0` prefixes,
/// underscores between digits.
pub(crate) fn parse_go_int(s: &str) -> Result<i64, &'static str> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if body.is_empty() || !underscores_ok(s) {
        return Err("invalid syntax");
    }
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(rest) = lower.strip_prefix("0x") {
        (16, rest)
    } else if let Some(rest) = lower.strip_prefix("0o") {
        (8, rest)
    } else if let Some(rest) = lower.strip_prefix("0b") {
        (2, rest)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    let digits: String = digits.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() {
        return Err("invalid syntax");
    }
    let magnitude = u128::from_str_radix(&digits, radix).map_err(|_| {
        if digits.chars().all(|c| c.is_digit(radix)) {
            "value out of range"
        } else {
            "invalid syntax"
        }
    })?;
    let signed = if neg {
        -i128::try_from(magnitude).map_err(|_| "value out of range")?
    } else {
        i128::try_from(magnitude).map_err(|_| "value out of range")?
    };
    i64::try_from(signed).map_err(|_| "value out of range")
}

/// Go's rule for underscores in number literals: they must separate digits
/// (or the base prefix and a digit).
fn underscores_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'-' | b'+')) {
        i = 1;
    }
    let mut saw = b'^';
    let mut hex = false;
    if b.len() >= i + 2
        && b[i] == b'0'
        && matches!(b[i + 1].to_ascii_lowercase(), b'b' | b'o' | b'x')
    {
        hex = b[i + 1].eq_ignore_ascii_case(&b'x');
        i += 2;
        saw = b'0';
    }
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
        i += 1;
    }
    saw != b'_'
}

/// Go's `strconv.ParseFloat(s, 64)` for decimal spellings, `inf`/`infinity`/`nan`
/// and underscores between digits.
pub(crate) fn parse_go_float(s: &str) -> Option<f64> {
    if s.contains('_') {
        if !underscores_ok(s) {
            return None;
        }
        return s.replace('_', "").parse().ok();
    }
    let lower = s.to_ascii_lowercase();
    let body = lower.trim_start_matches(['+', '-']);
    if body.starts_with("0x") {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_ints() {
        assert_eq!(parse_go_int("0660"), Ok(0o660));
        assert_eq!(parse_go_int("0o660"), Ok(0o660));
        assert_eq!(parse_go_int("0x1F"), Ok(31));
        assert_eq!(parse_go_int("0b101"), Ok(5));
        assert_eq!(parse_go_int("-12"), Ok(-12));
        assert_eq!(parse_go_int("+12"), Ok(12));
        assert_eq!(parse_go_int("1_0"), Ok(10));
        assert_eq!(parse_go_int("0"), Ok(0));
        assert_eq!(parse_go_int("1__0"), Err("invalid syntax"));
        assert_eq!(parse_go_int("_10"), Err("invalid syntax"));
        assert_eq!(parse_go_int("10_"), Err("invalid syntax"));
        assert_eq!(parse_go_int("abc"), Err("invalid syntax"));
        assert_eq!(parse_go_int("089"), Err("invalid syntax"));
        assert_eq!(parse_go_int(""), Err("invalid syntax"));
        assert_eq!(parse_go_int("-"), Err("invalid syntax"));
        assert_eq!(parse_go_int("0x"), Err("invalid syntax"));
        assert_eq!(
            parse_go_int("99999999999999999999"),
            Err("value out of range")
        );
        assert_eq!(parse_go_int("-9223372036854775808"), Ok(i64::MIN));
    }

    #[test]
    fn go_strings_from_scalars() {
        assert_eq!(to_str(&Value::Int(12345)).as_deref(), Ok("12345"));
        assert_eq!(to_str(&Value::Float(1.5)).as_deref(), Ok("1.500000"));
        assert_eq!(to_str(&Value::Bool(true)).as_deref(), Ok("true"));
        assert!(to_str(&Value::Seq(vec![])).is_err());
        assert!(to_str(&Value::Null).is_err());
    }

    #[test]
    fn go_ints_from_values() {
        assert_eq!(to_int(&Value::Float(432.9)), Ok(432));
        assert_eq!(to_int(&Value::Str("0660".into())), Ok(0o660));
        assert!(to_int(&Value::Bool(true)).is_err());
        assert!(to_int(&Value::Float(f64::INFINITY)).is_err());
    }

    #[test]
    fn string_lists_append() {
        let first = coerce(FieldType::StrList, &Value::Str("a".into()), None);
        let second = coerce(FieldType::StrList, &Value::Str("b".into()), first.ok());
        assert_eq!(second, Ok(serde_json::json!(["a", "b"])));
        let json = coerce(FieldType::StrList, &Value::Str(r#"["x","y"]"#.into()), None);
        assert_eq!(json, Ok(serde_json::json!(["x", "y"])));
        assert!(coerce(FieldType::StrList, &Value::Str("[1]".into()), None).is_err());
    }
}
