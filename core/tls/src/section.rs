//! Reading values out of a configuration section given as a JSON object with
//! lower-cased keys. Values from YAML arrive typed (`true`, `2048`, lists); values
//! from the command line arrive as strings (`"true"`, `"2048"`), and a repeated
//! command-line key may arrive as a list. Both forms are accepted everywhere.

use serde_json::Value;

/// Why a section value could not be read; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SectionError {
    /// The section is not a JSON object.
    #[error("section must be a map of parameters")]
    NotAMap,
    /// A required key is absent or empty.
    #[error("required parameter missing: {0}")]
    Missing(&'static str),
    /// A key has a value of the wrong type or form.
    #[error("invalid value for {key}: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A borrowed view of one section.
#[derive(Debug, Clone, Copy)]
pub struct Section<'a> {
    map: &'a serde_json::Map<String, Value>,
}

impl<'a> Section<'a> {
    /// Wraps a section value; it must be an object (`null` is an empty section).
    pub fn new(value: &'a Value) -> Result<Section<'a>, SectionError> {
        static EMPTY: std::sync::OnceLock<serde_json::Map<String, Value>> =
            std::sync::OnceLock::new();
        match value {
            Value::Object(map) => Ok(Section { map }),
            Value::Null => Ok(Section {
                map: EMPTY.get_or_init(serde_json::Map::new),
            }),
            _ => Err(SectionError::NotAMap),
        }
    }

    fn get(&self, key: &'static str) -> Option<&'a Value> {
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// An optional string; numbers and booleans are taken in their text form.
    pub fn string(&self, key: &'static str) -> Result<Option<String>, SectionError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(SectionError::Invalid {
                key,
                reason: "must be a string".into(),
            }),
        }
    }

    /// An optional string where the empty string counts as absent.
    pub fn non_empty(&self, key: &'static str) -> Result<Option<String>, SectionError> {
        Ok(self.string(key)?.filter(|s| !s.is_empty()))
    }

    /// A required, non-empty string.
    pub fn required(&self, key: &'static str) -> Result<String, SectionError> {
        self.non_empty(key)?.ok_or(SectionError::Missing(key))
    }

    /// An optional boolean (`true`/`false`, and the YAML 1.1 / Go spellings
    /// `yes`/`no`/`on`/`off`/`1`/`0`/`t`/`f`, case-insensitive).
    pub fn bool(&self, key: &'static str) -> Result<Option<bool>, SectionError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(Some(false)),
            Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(Some(true)),
            Some(Value::String(s)) => {
                parse_bool(s)
                    .map(Some)
                    .ok_or_else(|| SectionError::Invalid {
                        key,
                        reason: format!("{s:?} is not a boolean"),
                    })
            }
            Some(v) => Err(SectionError::Invalid {
                key,
                reason: format!("{v} is not a boolean"),
            }),
        }
    }

    /// An optional integer.
    pub fn int(&self, key: &'static str) -> Result<Option<i64>, SectionError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| SectionError::Invalid {
                key,
                reason: format!("{n} is not an integer"),
            }),
            Some(Value::String(s)) => {
                s.trim()
                    .parse::<i64>()
                    .map(Some)
                    .map_err(|_| SectionError::Invalid {
                        key,
                        reason: format!("{s:?} is not an integer"),
                    })
            }
            Some(v) => Err(SectionError::Invalid {
                key,
                reason: format!("{v} is not an integer"),
            }),
        }
    }

    /// An optional list of strings: a list, or a single string (one element).
    pub fn list(&self, key: &'static str) -> Result<Vec<String>, SectionError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    _ => Err(SectionError::Invalid {
                        key,
                        reason: "list elements must be strings".into(),
                    }),
                })
                .collect(),
            Some(_) => Err(SectionError::Invalid {
                key,
                reason: "must be a list of strings".into(),
            }),
        }
    }
}

/// Parses the boolean spellings receptor's configuration accepts.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "on" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "off" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_and_string_values() {
        let v = json!({"a": "true", "b": false, "n": "2048", "m": 4096, "l": "x", "k": ["y", "z"], "e": ""});
        let s = Section::new(&v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.bool("a"), Ok(Some(true)));
        assert_eq!(s.bool("b"), Ok(Some(false)));
        assert_eq!(s.bool("zz"), Ok(None));
        assert_eq!(s.int("n"), Ok(Some(2048)));
        assert_eq!(s.int("m"), Ok(Some(4096)));
        assert_eq!(s.list("l"), Ok(vec!["x".to_string()]));
        assert_eq!(s.list("k"), Ok(vec!["y".to_string(), "z".to_string()]));
        assert_eq!(s.required("e"), Err(SectionError::Missing("e")));
        assert!(s.bool("n").is_err());
        assert!(s.int("l").is_err());
        assert!(Section::new(&json!([1])).is_err());
    }
}
