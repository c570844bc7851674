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
//! booleans may also be strings (`true`, the command-line form).

use receptor_plugin_sdk::{PluginError, Section, WorkTypeInfo};

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

impl CommandConfig {
    /// Reads a `work-command` section.
    pub fn from_section(section: &Section) -> Result<CommandConfig, PluginError> {
        section.reject_unknown_keys(KEYS, &[])?;
        let info = WorkTypeInfo::from_section(section, None)?;
        Ok(CommandConfig {
            work_type: info.name,
            command: section.required_string("command")?,
            params: section.string("params")?.unwrap_or_default(),
            allow_runtime_params: info.allow_runtime_params,
            verify_signature: info.verify_signature,
        })
    }

    /// The work type's properties as the host sees them.
    pub fn info(&self) -> WorkTypeInfo {
        WorkTypeInfo {
            name: self.work_type.clone(),
            verify_signature: self.verify_signature,
            allow_runtime_params: self.allow_runtime_params,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<CommandConfig, String> {
        Section::parse("work-command", json.as_bytes())
            .and_then(|s| CommandConfig::from_section(&s))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn reads_sections() {
        assert_eq!(
            parse(
                r#"{"workType":"echoint","command":"bash","params":"-c \"echo hi\"","allowruntimeparams":"true"}"#
            ),
            Ok(CommandConfig {
                work_type: "echoint".into(),
                command: "bash".into(),
                params: "-c \"echo hi\"".into(),
                allow_runtime_params: true,
                verify_signature: false,
            })
        );
        assert!(parse(r#"{"command":"cat"}"#).is_err_and(|e| e.contains("worktype")));
        assert!(parse(r#"{"worktype":"a"}"#).is_err_and(|e| e.contains("command")));
        assert!(parse(r#"{"worktype":"a","command":"cat","bogus":1}"#)
            .is_err_and(|e| e.contains("unknown key \"bogus\"")));
        assert!(
            parse(r#"{"worktype":"a","command":"cat","verifysignature":"maybe"}"#)
                .is_err_and(|e| e.contains("verifysignature"))
        );
    }
}
