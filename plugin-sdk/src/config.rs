//! A plugin's own config section, with lenient typed accessors.
//!
//! The host passes a section as a JSON object whose keys are lower case. Values written
//! in YAML arrive typed (`port: 2222` is a number), but values from the command line
//! (`--tcp-listener port=2222`) arrive as strings, so every accessor here accepts both:
//! numbers from numbers or numeric strings, booleans from booleans, `"true"`/`"false"`
//! (and the YAML 1.1 spellings `yes`/`no`/`on`/`off`, any case) or `0`/`1`.

use serde_json::{Map, Value};

use crate::PluginError;

/// One config section (e.g. the body of a `tcp-listener:` item).
#[derive(Debug, Clone)]
pub struct Section {
    kind: String,
    map: Map<String, Value>,
}

impl Section {
    /// Parses the JSON the host passed for a section of kind `kind`. `null` or empty
    /// input is an empty section (`- tcp-listener:` with no keys).
    pub fn parse(kind: &str, json: &[u8]) -> Result<Section, PluginError> {
        let value: Value = if json.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(json)
                .map_err(|e| PluginError::new(format!("{kind}: config is not valid JSON: {e}")))?
        };
        Section::from_value(kind, value)
    }

    /// Wraps an already parsed section value (keys are lower-cased here too).
    pub fn from_value(kind: &str, value: Value) -> Result<Section, PluginError> {
        let map = match value {
            Value::Null => Map::new(),
            Value::Object(map) => map
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            other => {
                return Err(PluginError::new(format!(
                    "{kind}: expected a map of settings, got {}",
                    type_name(&other)
                )))
            }
        };
        Ok(Section {
            kind: kind.to_owned(),
            map,
        })
    }

    /// The section kind (e.g. `tcp-listener`).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The raw value of `key`, if present and not null.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Every key present.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// Fails if a key is present that is neither in `known` nor one the core handles for
    /// every section (`cost`, `nodecost`, `allowedpeers`, `tls`); the error lists the
    /// keys that are accepted.
    pub fn reject_unknown_keys(
        &self,
        known: &[&str],
        core_keys: &[&str],
    ) -> Result<(), PluginError> {
        for key in self.map.keys() {
            if !known.contains(&key.as_str()) && !core_keys.contains(&key.as_str()) {
                let mut accepted: Vec<&str> = known.iter().chain(core_keys).copied().collect();
                accepted.sort_unstable();
                return Err(PluginError::new(format!(
                    "{}: unknown key {key:?} (accepted: {})",
                    self.kind,
                    accepted.join(", ")
                )));
            }
        }
        Ok(())
    }

    fn invalid(&self, key: &str, expected: &str, got: &Value) -> PluginError {
        PluginError::new(format!(
            "{}: key {key:?}: expected {expected}, got {}",
            self.kind,
            show(got)
        ))
    }

    fn missing(&self, key: &str) -> PluginError {
        PluginError::new(format!("{}: missing required key {key:?}", self.kind))
    }

    /// A string value; numbers and booleans are accepted and shown as written.
    pub fn string(&self, key: &str) -> Result<Option<String>, PluginError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
            Some(v) => Err(self.invalid(key, "a string", v)),
        }
    }

    /// A string value that must be present and not empty.
    pub fn required_string(&self, key: &str) -> Result<String, PluginError> {
        match self.string(key)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(self.missing(key)),
        }
    }

    /// A boolean value (see the module docs for the accepted spellings).
    pub fn bool(&self, key: &str) -> Result<Option<bool>, PluginError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let parsed = match v {
            Value::Bool(b) => Some(*b),
            Value::Number(n) => match n.as_u64() {
                Some(0) => Some(false),
                Some(1) => Some(true),
                _ => None,
            },
            Value::String(s) => parse_bool(s),
            _ => None,
        };
        parsed
            .map(Some)
            .ok_or_else(|| self.invalid(key, "true or false", v))
    }

    /// A signed integer value.
    pub fn i64(&self, key: &str) -> Result<Option<i64>, PluginError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let parsed = match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        parsed
            .map(Some)
            .ok_or_else(|| self.invalid(key, "an integer", v))
    }

    /// An integer value within `min..=max`.
    pub fn int_in(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, PluginError> {
        match self.i64(key) {
            Ok(Some(n)) if n < min || n > max => Err(PluginError::new(format!(
                "{}: key {key:?}: {n} is out of range {min}..={max}",
                self.kind
            ))),
            Ok(Some(n)) => Ok(Some(n)),
            Ok(None) => Ok(None),
            Err(_) => Err(PluginError::new(format!(
                "{}: key {key:?}: expected an integer in {min}..={max}, got {}",
                self.kind,
                self.get(key).map(show).unwrap_or_default()
            ))),
        }
    }

    /// A port number (0..=65535).
    pub fn port(&self, key: &str) -> Result<Option<u16>, PluginError> {
        Ok(self
            .int_in(key, 0, i64::from(u16::MAX))?
            .and_then(|n| u16::try_from(n).ok()))
    }

    /// A floating-point value.
    pub fn f64(&self, key: &str) -> Result<Option<f64>, PluginError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let parsed = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok().filter(|f: &f64| f.is_finite()),
            _ => None,
        };
        parsed
            .map(Some)
            .ok_or_else(|| self.invalid(key, "a number", v))
    }
}

/// Parses a boolean the way YAML 1.1 and Go's `strconv.ParseBool` spell it.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "on" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Array(_) | Value::Object(_) => type_name(v).to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn section(v: Value) -> Section {
        Section::from_value("tcp-peer", v).unwrap()
    }

    #[test]
    fn numbers_and_bools_parse_from_strings_and_values() {
        let s = section(json!({"Port": "2222", "redial": "No", "cost": "1.5", "n": 7, "b": true}));
        assert_eq!(s.port("port").unwrap(), Some(2222));
        assert_eq!(s.bool("redial").unwrap(), Some(false));
        assert_eq!(s.f64("cost").unwrap(), Some(1.5));
        assert_eq!(s.i64("n").unwrap(), Some(7));
        assert_eq!(s.bool("b").unwrap(), Some(true));
        assert_eq!(s.string("n").unwrap().as_deref(), Some("7"));
        assert_eq!(s.bool("absent").unwrap(), None);
    }

    #[test]
    fn bad_values_name_the_section_and_key() {
        let s = section(json!({"port": "http", "big": 70000, "redial": "maybe", "address": ""}));
        let e = s.port("port").unwrap_err().to_string();
        assert!(
            e.contains("tcp-peer") && e.contains("\"port\"") && e.contains("http"),
            "{e}"
        );
        let e = s.port("big").unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
        let e = s.bool("redial").unwrap_err().to_string();
        assert!(e.contains("true or false"), "{e}");
        let e = s.required_string("address").unwrap_err().to_string();
        assert!(e.contains("missing required key \"address\""), "{e}");
    }

    #[test]
    fn unknown_keys_are_listed() {
        let s = section(json!({"address": "a:1", "cost": 2, "colour": "red"}));
        let e = s
            .reject_unknown_keys(&["address"], &["cost"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"colour\"") && e.contains("address, cost"),
            "{e}"
        );
        let s = section(json!({"address": "a:1", "cost": 2}));
        s.reject_unknown_keys(&["address"], &["cost"]).unwrap();
    }

    #[test]
    fn empty_and_non_map_sections() {
        assert_eq!(Section::parse("x", b"").unwrap().keys().count(), 0);
        assert_eq!(Section::parse("x", b"null").unwrap().keys().count(), 0);
        assert!(Section::parse("x", b"[1]").is_err());
        assert!(Section::parse("x", b"{").is_err());
    }
}
