//! Configuration items before they are typed: what every source produces.
//!
//! A YAML list item `- tcp-listener: {port: 2222}`, a `tcp-listeners:` element of the
//! version-2 map form and the command-line words `--tcp-listener port=2222` all become
//! one [`RawItem`] with the kind `tcp-listener` and the entry `port = 2222`.

use super::error::ConfigError;
use super::value::Value;

/// One `key=value` (or bare value) of an item.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The key as written; `None` for a bare value (`--tcp-peer host:port`).
    pub(crate) key: Option<String>,
    pub(crate) value: Value,
}

/// One configuration item.
#[derive(Debug, Clone)]
pub(crate) struct RawItem {
    /// The kind as written (`tcp-listener`).
    pub(crate) kind: String,
    pub(crate) entries: Vec<Entry>,
    /// Where it comes from, for messages: `foo.yml item 3 (line 7)`.
    pub(crate) origin: String,
    /// Command-line items hold only strings, and a repeated key accumulates.
    pub(crate) from_command_line: bool,
}

/// Builds an item from the value under its kind: nothing (`- local-only`), a bare string
/// (`- log-level: debug`), or a map of settings. `plugins` also takes a list of paths.
pub(crate) fn item_from_value(
    kind: &str,
    value: Value,
    origin: String,
) -> Result<RawItem, ConfigError> {
    let entries = match value {
        Value::Null => Vec::new(),
        Value::Str(_) => vec![Entry { key: None, value }],
        Value::Seq(paths) if kind == "plugins" => paths
            .into_iter()
            .map(|value| Entry { key: None, value })
            .collect(),
        Value::Map(pairs) => {
            let mut entries = Vec::with_capacity(pairs.len());
            for (k, v) in pairs {
                match k {
                    Value::Str(key) => entries.push(Entry {
                        key: Some(key),
                        value: v,
                    }),
                    other => {
                        return Err(ConfigError::Format {
                            origin,
                            message: format!(
                                "{kind}: setting names must be strings, found {} {}",
                                other.type_name(),
                                other.key_string()
                            ),
                        })
                    }
                }
            }
            entries
        }
        other => {
            return Err(ConfigError::Format {
                origin,
                message: format!(
                    "{kind}: expected a map of settings (or a single string), got {}",
                    other.type_name()
                ),
            })
        }
    };
    Ok(RawItem {
        kind: kind.to_owned(),
        entries,
        origin,
        from_command_line: false,
    })
}
