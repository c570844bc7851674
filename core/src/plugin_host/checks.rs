//! Checking a section against the description its plugin gave (ABI 1.2): unknown keys
//! (with a "did you mean" suggestion), missing required fields and values of the wrong
//! type are refused before the plugin sees the section, with messages that name the key
//! and the expected type; the daemon adds the section's place in the configuration.
//! A section whose plugin described no fields (every plugin before 1.2) is not checked
//! here: its plugin checks it.

use receptor_plugin_sdk::describe::{FieldType, SectionDesc};
use serde_json::Value;

use receptor_proto::go::duration::parse_go_duration;

use crate::config::coerce::{parse_go_bool, parse_go_float, parse_go_int};

/// Keys the core reads from every backend section (cost, TLS, ...); never unknown.
const CORE_BACKEND_KEYS: &[&str] = receptor_plugin_sdk::CORE_BACKEND_KEYS;
/// Keys the core adds itself (the inlined TLS settings of a backend doing its own TLS).
const CORE_ADDED_KEYS: &[&str] = &["tlsconfig"];

/// Checks `value` (a section, keys lower case) against `desc`.
pub(super) fn check_section(
    kind: &str,
    desc: &SectionDesc,
    backend: bool,
    value: &Value,
) -> Result<(), String> {
    if desc.fields.is_empty() {
        return Ok(());
    }
    let empty = serde_json::Map::new();
    let map = match value {
        Value::Object(map) => map,
        Value::Null => &empty,
        _ => return Err(format!("{kind}: expected a map of settings")),
    };
    for key in map.keys() {
        let key = key.to_ascii_lowercase();
        let known = desc.fields.iter().any(|f| f.name == key)
            || (backend && (CORE_BACKEND_KEYS.contains(&key.as_str())))
            || CORE_ADDED_KEYS.contains(&key.as_str());
        if !known {
            let names = desc.fields.iter().map(|f| f.name.as_str());
            return Err(match suggest(&key, names) {
                Some(near) => format!("{kind}: unknown key {key:?} (did you mean {near:?}?)"),
                None => format!(
                    "{kind}: unknown key {key:?} (keys: {})",
                    desc.fields
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    for field in &desc.fields {
        let given = map
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&field.name))
            .map(|(_, v)| v);
        match given {
            None | Some(Value::Null) if field.required => {
                return Err(format!(
                    "{kind}: {} ({}) is required",
                    field.name,
                    field.field_type.noun()
                ));
            }
            Some(v) if !fits(field.field_type, v) => {
                let noun = field.field_type.noun();
                let article = if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                };
                return Err(format!(
                    "{kind}: {}: expected {article} {noun}, got {}",
                    field.name,
                    describe(v)
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether `v` is (or converts as the loader converts to) a value of type `ty`.
fn fits(ty: FieldType, v: &Value) -> bool {
    match (ty, v) {
        (FieldType::Any, _) | (_, Value::Null) => true,
        (FieldType::String, Value::String(_) | Value::Number(_) | Value::Bool(_)) => true,
        (FieldType::Int, Value::Number(n)) => n.is_i64() || n.is_u64(),
        (FieldType::Int, Value::String(s)) => parse_go_int(s).is_ok(),
        (FieldType::Bool, Value::Bool(_)) => true,
        (FieldType::Bool, Value::String(s)) => parse_go_bool(s).is_some(),
        (FieldType::Float, Value::Number(_)) => true,
        (FieldType::Float, Value::String(s)) => parse_go_float(s).is_some(),
        (FieldType::Duration, Value::Number(_)) => true,
        (FieldType::Duration, Value::String(s)) => {
            parse_go_duration(s).is_ok() || s.parse::<f64>().is_ok()
        }
        (FieldType::List, Value::String(_)) => true,
        (FieldType::List, Value::Array(items)) => items
            .iter()
            .all(|i| matches!(i, Value::String(_) | Value::Number(_) | Value::Bool(_))),
        _ => false,
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("{n}"),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a map".to_owned(),
    }
}

/// The candidate closest to `word` if it is a plausible typo (edit distance at most 2,
/// and at most half the longer word).
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= (word.len().max(c.len()) / 2).clamp(1, 2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance (bytes; keys are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use receptor_plugin_sdk::describe::Field;
    use serde_json::json;

    fn desc() -> SectionDesc {
        SectionDesc::new("a test section")
            .field(Field::new("port", FieldType::Int, "port").required())
            .field(Field::new("greeting", FieldType::String, "text"))
            .field(Field::new("verbose", FieldType::Bool, "more output"))
            .field(Field::new("timeout", FieldType::Duration, "how long"))
            .field(Field::new("peers", FieldType::List, "names"))
    }

    #[test]
    fn good_sections_pass_and_undescribed_ones_are_not_checked() {
        let ok = json!({"port": "0x10", "greeting": 7, "verbose": "yes", "timeout": "1m30s",
            "peers": ["a", "b"], "cost": 2});
        check_section("t", &desc(), true, &ok).unwrap();
        check_section("t", &SectionDesc::default(), false, &json!({"x": [1]})).unwrap();
    }

    #[test]
    fn typos_get_a_suggestion_and_types_are_named() {
        let err =
            check_section("t", &desc(), false, &json!({"port": 1, "greting": "x"})).unwrap_err();
        assert_eq!(
            err,
            "t: unknown key \"greting\" (did you mean \"greeting\"?)"
        );
        let err = check_section("t", &desc(), false, &json!({"port": 1, "zzz": 1})).unwrap_err();
        assert!(err.contains("keys: port, greeting"), "{err}");
        let err = check_section("t", &desc(), false, &json!({"greeting": "x"})).unwrap_err();
        assert_eq!(err, "t: port (integer) is required");
        let err = check_section("t", &desc(), false, &json!({"port": "many"})).unwrap_err();
        assert_eq!(err, "t: port: expected an integer, got \"many\"");
        let err =
            check_section("t", &desc(), false, &json!({"port": 1, "timeout": "soon"})).unwrap_err();
        assert!(err.contains("timeout: expected a duration"), "{err}");
        // Core backend keys are unknown to a work type.
        let err = check_section("t", &desc(), false, &json!({"port": 1, "cost": 1})).unwrap_err();
        assert!(err.contains("unknown key \"cost\""), "{err}");
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        let keys = ["port", "bindaddr", "tls"];
        assert_eq!(suggest("prot", keys.into_iter()), Some("port"));
        assert_eq!(suggest("bindadr", keys.into_iter()), Some("bindaddr"));
        assert_eq!(suggest("x", keys.into_iter()), None);
        assert_eq!(suggest("completely", keys.into_iter()), None);
    }
}
