//! The `work-command` configuration section, as Go receptor reads it:
//!
//! ```yaml
//! - work-command:
//!     worktype: echoint          # required: the name clients submit
//!     command: bash              # required: the program (searched in $PATH without '/')
//!     params: "-c \"echo hi\""   # base parameters, split like a shell would (no shell runs)
//!     allowruntimeparams: false  # may clients add `params` at submit time?
//!     verifysignature: false     # must submissions be signed?
//! ```
//!
//! Keys are case-insensitive (receptor's docs write `workType` as well as `worktype`);
//! booleans may also be the strings `true` / `false` (the command-line form).

use serde_json::Value;

/// Keys of a `work-command` section.
pub const KEYS: &[&str] = &[
    "worktype",
    "command",
    "params",
    "allowruntimeparams",
    "verifysignature",
];

/// One `work-command` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandConfig {
    /// Work type name.
    pub work_type: String,
    /// Program to run.
    pub command: String,
    /// Base parameters.
    pub params: String,
    /// Whether clients may pass runtime `params`.
    pub allow_runtime_params: bool,
    /// Whether submissions must carry a valid signature.
    pub verify_signature: bool,
}

/// A `work-command` section that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The section is not a map.
    #[error("work-command: expected a map of settings, got {0}")]
    NotAMap(String),
    /// A key this section does not have.
    #[error("work-command: unknown key {key:?} (expected one of: {})", KEYS.join(", "))]
    UnknownKey {
        /// The key.
        key: String,
    },
    /// A required key is missing or empty.
    #[error("work-command: missing required key {0}")]
    Missing(&'static str),
    /// A value of the wrong type.
    #[error("work-command: key {key}: expected {expected}, got {got}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// What was expected.
        expected: &'static str,
        /// What was found.
        got: String,
    },
}

impl CommandConfig {
    /// Reads a section given as JSON.
    pub fn from_json(bytes: &[u8]) -> Result<CommandConfig, ConfigError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| ConfigError::NotAMap(format!("invalid JSON ({e})")))?;
        CommandConfig::from_value(&value)
    }

    /// Reads a section given as a JSON value.
    pub fn from_value(value: &Value) -> Result<CommandConfig, ConfigError> {
        let Value::Object(map) = value else {
            return Err(ConfigError::NotAMap(value.to_string()));
        };
        let mut cfg = CommandConfig::default();
        for (key, value) in map {
            match key.to_ascii_lowercase().as_str() {
                "worktype" => cfg.work_type = string(value, "worktype")?,
                "command" => cfg.command = string(value, "command")?,
                "params" => cfg.params = string(value, "params")?,
                "allowruntimeparams" => {
                    cfg.allow_runtime_params = boolean(value, "allowruntimeparams")?
                }
                "verifysignature" => cfg.verify_signature = boolean(value, "verifysignature")?,
                _ => return Err(ConfigError::UnknownKey { key: key.clone() }),
            }
        }
        if cfg.work_type.is_empty() {
            return Err(ConfigError::Missing("worktype"));
        }
        if cfg.command.is_empty() {
            return Err(ConfigError::Missing("command"));
        }
        Ok(cfg)
    }
}

fn string(value: &Value, key: &'static str) -> Result<String, ConfigError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(ConfigError::BadValue {
            key,
            expected: "a string",
            got: other.to_string(),
        }),
    }
}

fn boolean(value: &Value, key: &'static str) -> Result<bool, ConfigError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(ConfigError::BadValue {
            key,
            expected: "true or false",
            got: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sections() {
        let cfg = CommandConfig::from_json(
            br#"{"workType":"echoint","command":"bash","params":"-c \"echo hi\"","allowruntimeparams":"true"}"#,
        );
        assert_eq!(
            cfg,
            Ok(CommandConfig {
                work_type: "echoint".into(),
                command: "bash".into(),
                params: "-c \"echo hi\"".into(),
                allow_runtime_params: true,
                verify_signature: false,
            })
        );
        assert_eq!(
            CommandConfig::from_json(br#"{"command":"cat"}"#),
            Err(ConfigError::Missing("worktype"))
        );
        let err = CommandConfig::from_json(br#"{"worktype":"a","command":"cat","bogus":1}"#);
        assert!(matches!(err, Err(ConfigError::UnknownKey { .. })));
        let err = CommandConfig::from_json(
            br#"{"worktype":"a","command":"cat","verifysignature":"yes"}"#,
        );
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err("work-command: key verifysignature: expected true or false, got \"yes\"".into())
        );
    }
}
