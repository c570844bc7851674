//! Sections of plugins, completed with the description their plugin gives of them.
//!
//! The configuration is read before any plugin is loaded, so a plugin's section is kept
//! as written: a bare command-line value under the empty key, a key repeated on the
//! command line as the list of its values. Once the plugins are loaded, each section is
//! completed from its plugin's [`SectionDesc`] with Go receptor's rules for its own
//! kinds: the bare value goes to the field the plugin names for it, list fields follow
//! Go's `[]string` rules (a list, a JSON list in a string, or one more string; a plain
//! string is split at commas, as the SDK's list accessors read it), and a scalar field
//! repeated on the command line keeps its last value. Sections of plugins
//! that describe no fields are left as they are.

use receptor_plugin_sdk::describe::{FieldType, SectionDesc};
use serde_json::Value as Json;

use super::coerce;
use super::error::ConfigError;
use super::model::{Config, Section};
use super::value::Value;

/// A section kind a plugin claims, with its description: what `--help`, `--man` and
/// the completion scripts list besides the core's own kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginKind {
    /// The section kind (`tcp-listener`).
    pub kind: String,
    /// Whether it configures a backend (otherwise a work type).
    pub backend: bool,
    /// The name of the plugin that claims it.
    pub plugin: String,
    /// What the plugin says about it.
    pub desc: SectionDesc,
}

/// Completes every plugin section of `config` with the description `desc_of` gives for
/// its kind (see the module's documentation). An error names the section's place.
pub fn describe_sections<'d>(
    config: &mut Config,
    desc_of: impl Fn(&str) -> Option<&'d SectionDesc>,
) -> Result<(), ConfigError> {
    for section in &mut config.sections {
        if let Some(desc) = desc_of(&section.kind) {
            describe_section(section, desc)?;
        }
    }
    Ok(())
}

/// Completes one section (see [`describe_sections`]).
pub(crate) fn describe_section(
    section: &mut Section,
    desc: &SectionDesc,
) -> Result<(), ConfigError> {
    if desc.fields.is_empty() {
        return Ok(());
    }
    let from_command_line = section.from_command_line();
    let kind = section.kind.clone();
    let origin = section.origin.clone();
    let Json::Object(map) = &mut section.value else {
        return Ok(());
    };
    if let Some(bare) = map.remove("") {
        let Some(field) = &desc.bare_field else {
            let keys: Vec<&str> = desc.fields.iter().map(|f| f.name.as_str()).collect();
            return Err(ConfigError::Format {
                origin,
                message: format!(
                    "{kind} does not take a bare value; write key=value (keys: {})",
                    keys.join(", ")
                ),
            });
        };
        // The bare value counts as one more occurrence of its field.
        let merged = match (map.remove(field), bare) {
            (None, bare) => bare,
            (Some(Json::Array(mut given)), Json::Array(more)) => {
                given.extend(more);
                Json::Array(given)
            }
            (Some(Json::Array(mut given)), more) => {
                given.push(more);
                Json::Array(given)
            }
            (Some(given), Json::Array(more)) => {
                Json::Array(std::iter::once(given).chain(more).collect())
            }
            (Some(given), more) => Json::Array(vec![given, more]),
        };
        map.insert(field.clone(), merged);
    }
    for field in &desc.fields {
        let Some(value) = map.get_mut(&field.name) else {
            continue;
        };
        match field.field_type {
            FieldType::List => {
                // Each item is one occurrence: a repeated command-line key, or an item
                // of a YAML list.
                let items = match value.take() {
                    Json::Array(items) => items,
                    one => vec![one],
                };
                // As the SDK's list accessors read them: a plain string is a
                // comma-separated list (node IDs and the like have no commas).
                let items: Vec<Json> = items
                    .into_iter()
                    .flat_map(|item| match item {
                        Json::String(s) if !s.starts_with('[') && s.contains(',') => s
                            .split(',')
                            .map(str::trim)
                            .filter(|i| !i.is_empty())
                            .map(|i| Json::String(i.to_owned()))
                            .collect(),
                        other => vec![other],
                    })
                    .collect();
                let mut list = None;
                for item in &items {
                    let coerced = coerce::coerce(
                        coerce::FieldType::StrList,
                        &Value::from_json(item),
                        list.take(),
                    )
                    .map_err(|message| ConfigError::BadValue {
                        origin: origin.clone(),
                        kind: kind.clone(),
                        key: field.name.clone(),
                        message,
                    })?;
                    list = Some(coerced);
                }
                *value = list.unwrap_or(Json::Array(Vec::new()));
            }
            FieldType::Any => {}
            _ if from_command_line => {
                // Go's command line: a repeated scalar key keeps its last value.
                if let Json::Array(items) = value {
                    if let Some(last) = items.pop() {
                        *value = last;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use receptor_plugin_sdk::describe::Field;
    use serde_json::json;

    fn peer() -> SectionDesc {
        SectionDesc::new("a peer")
            .field(Field::new("address", FieldType::String, "where").required())
            .field(Field::new("allowedpeers", FieldType::List, "who"))
            .field(Field::new("cost", FieldType::Float, "how much"))
            .field(Field::new("nodecost", FieldType::Any, "per node"))
            .bare_field("address")
    }

    fn section(value: Json, origin: &str) -> Section {
        Section {
            kind: "x-peer".to_owned(),
            value,
            origin: origin.to_owned(),
        }
    }

    #[test]
    fn command_line_sections_follow_gos_rules() {
        let mut s = section(
            json!({"": "h:1", "allowedpeers": ["a", "[\"b\",\"c\"]"], "cost": ["1", "2"],
                   "nodecost": "{\"a\":2}"}),
            "command line --x-peer",
        );
        describe_section(&mut s, &peer()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.value,
            json!({"address": "h:1", "allowedpeers": ["b", "c"], "cost": "2", "nodecost": "{\"a\":2}"})
        );
        let mut s = section(
            json!({"allowedpeers": ["a", "b,c"]}),
            "command line --x-peer",
        );
        describe_section(&mut s, &peer()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.value, json!({"allowedpeers": ["a", "b", "c"]}));
    }

    #[test]
    fn file_sections_keep_lists_for_the_type_check() {
        let mut s = section(
            json!({"address": "h:1", "allowedpeers": "a", "cost": [1]}),
            "f.yml item 1 (line 1)",
        );
        describe_section(&mut s, &peer()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.value,
            json!({"address": "h:1", "allowedpeers": ["a"], "cost": [1]})
        );
        let mut s = section(json!({"allowedpeers": {"a": 1}}), "f.yml item 1 (line 1)");
        let err = describe_section(&mut s, &peer()).expect_err("a map is no list");
        assert!(err.to_string().contains("allowedpeers"), "{err}");
        let mut bare = section(json!({"": "v"}), "command line --x-peer");
        let no_bare = SectionDesc::new("x").field(Field::new("a", FieldType::String, ""));
        let err = describe_section(&mut bare, &no_bare).expect_err("no bare field");
        assert_eq!(
            err.to_string(),
            "command line --x-peer: x-peer does not take a bare value; write key=value (keys: a)"
        );
    }
}
