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
            .map(|value| plugin_entries(value, &origin))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect(),
        Value::Map(pairs)
            if kind == "plugins"
                && pairs
                    .iter()
                    .any(|(k, _)| matches!(k, Value::Str(k) if k == "isolation")) =>
        {
            plugin_entries(Value::Map(pairs), &origin)?
        }
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

/// The entries of one element of a `plugins:` list: a path (a bare value), or a map
/// `{path: P, isolation: process}` (the `isolated` key: run the plugin in a plugin host
/// process) or `{path: P, isolation: in-process}` (the default), with an optional
/// `calltimeout` for the plugin hosts.
fn plugin_entries(value: Value, origin: &str) -> Result<Vec<Entry>, ConfigError> {
    let bad = |message: String| ConfigError::Format {
        origin: origin.to_owned(),
        message: format!("plugins: {message}"),
    };
    let Value::Map(pairs) = value else {
        return Ok(vec![Entry { key: None, value }]);
    };
    let (mut path, mut isolation, mut others) = (None, None, Vec::new());
    for (k, v) in pairs {
        match k {
            Value::Str(key) if key.eq_ignore_ascii_case("path") => path = Some(v),
            Value::Str(key) if key.eq_ignore_ascii_case("isolation") => isolation = Some(v),
            Value::Str(key) if key.eq_ignore_ascii_case("calltimeout") => others.push(Entry {
                key: Some("calltimeout".to_owned()),
                value: v,
            }),
            Value::Str(key) => {
                return Err(bad(format!(
                    "unknown key {key:?} in a plugin entry (keys: path, isolation, calltimeout)"
                )))
            }
            other => {
                return Err(bad(format!(
                    "setting names must be strings, found {} {}",
                    other.type_name(),
                    other.key_string()
                )))
            }
        }
    }
    let path = match path {
        Some(v @ Value::Str(_)) => v,
        Some(other) => {
            return Err(bad(format!(
                "path must be a string, got {}",
                other.type_name()
            )))
        }
        None => return Err(bad("a plugin entry given as a map needs a path".to_owned())),
    };
    let key = match isolation {
        None => None,
        Some(Value::Str(mode)) if mode == "process" => Some("isolated".to_owned()),
        Some(Value::Str(mode)) if mode == "in-process" || mode == "none" => None,
        Some(Value::Str(mode)) => {
            return Err(bad(format!(
                "isolation {mode:?} is not one of: process, in-process"
            )))
        }
        Some(other) => {
            return Err(bad(format!(
                "isolation must be process or in-process, got {}",
                other.type_name()
            )))
        }
    };
    others.insert(0, Entry { key, value: path });
    Ok(others)
}
