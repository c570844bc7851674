//! Reading configuration files: the list form and the `version: 2` map form.
//!
//! This is the only place that touches the YAML library. serde-saphyr is used with
//! yaml.v2-compatible settings: YAML 1.1 booleans (`yes`, `off`), legacy octal integers
//! (`permissions: 0660` is 432) and "last key wins" for repeated keys. One difference
//! remains: serde-saphyr reads YAML 1.1 booleans in any letter case (`YeS`), yaml.v2
//! only in the three usual spellings (`yes`, `Yes`, `YES`); a plain `YeS` in a string
//! field therefore becomes `"true"` here and stays `"YeS"` in Go receptor.
//!
//! * List form (what Go receptor reads with `--config`): a sequence whose items are
//!   `- kind` or `- kind: value`.
//! * Map form (Go receptor's `--config-v2`): a mapping with `version: 2` and keys such
//!   as `node:`, `log-level:`, `tcp-listeners:` (a list of items), `control-services:`.
//!   Plural keys name the singular kind. A key this module does not know is kept for
//!   plugins: a list under a key ending in `s` gives items of the singular kind
//!   (`my-worktypes:` → `my-worktype`), anything else gives items of the key itself.
//!
//! Which form a file uses is recognised from its top-level node, so `--config` reads
//! both (Go receptor needs `--config-v2` for the second).

use std::fmt;
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, Options, Spanned};

use super::error::ConfigError;
use super::item::{item_from_value, RawItem};
use super::schema;
use super::value::{Value, ValueVisitor};

/// Largest configuration file read (a config is a few kilobytes).
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Reads and parses one file into items.
pub(crate) fn load_items(path: &Path) -> Result<Vec<RawItem>, ConfigError> {
    let text = read_text(path)?;
    let mut items = parse_items(&text, &path.display().to_string()).map_err(|e| match e {
        ParseFailure::Yaml(message) => ConfigError::Yaml {
            path: path.to_path_buf(),
            message,
        },
        ParseFailure::Config(e) => e,
    })?;
    if let Some(folder) = path.parent() {
        for item in items.iter_mut().filter(|i| i.kind == "plugins") {
            for entry in item.entries.iter_mut().filter(|e| {
                e.key
                    .as_deref()
                    .is_none_or(|k| k == "path" || k == "isolated")
            }) {
                resolve_plugin_paths(&mut entry.value, folder);
            }
        }
    }
    Ok(items)
}

/// Relative `plugins:` paths in a file are relative to the file's folder.
fn resolve_plugin_paths(value: &mut Value, folder: &Path) {
    match value {
        Value::Str(path) if Path::new(path.as_str()).is_relative() => {
            *path = folder.join(path.as_str()).display().to_string();
        }
        Value::Seq(items) => items
            .iter_mut()
            .for_each(|v| resolve_plugin_paths(v, folder)),
        _ => {}
    }
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("file is larger than {MAX_FILE_BYTES} bytes"),
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        ))
    })
}

/// Why text could not be turned into items.
#[derive(Debug)]
pub(crate) enum ParseFailure {
    /// Not YAML (message with line and column).
    Yaml(String),
    /// YAML, but not a receptor configuration.
    Config(ConfigError),
}

fn yaml_options() -> Options {
    let mut options = Options::default();
    options.legacy_octal_numbers = true;
    options.duplicate_keys = DuplicateKeyPolicy::LastWins;
    options.with_snippet = false;
    options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::PassThrough;
    options
}

/// Parses YAML text; `name` is used in origins (`<name> item 3 (line 7)`).
pub(crate) fn parse_items(text: &str, name: &str) -> Result<Vec<RawItem>, ParseFailure> {
    // Like yaml.v2's Unmarshal, only the first document of a stream counts.
    let docs: Vec<Document> = serde_saphyr::from_multiple_with_options(text, yaml_options())
        .map_err(|e| ParseFailure::Yaml(one_line(&e.to_string())))?;
    match docs.into_iter().next().unwrap_or(Document::Empty) {
        Document::Empty => Ok(Vec::new()),
        Document::List(items) => list_items(items, name).map_err(ParseFailure::Config),
        Document::Map(entries) => map_items(entries, name).map_err(ParseFailure::Config),
        Document::Scalar(value) => Err(ParseFailure::Config(ConfigError::Format {
            origin: name.to_owned(),
            message: format!(
                "expected a list of items (`- node: {{id: foo}}`) or a map with `version: 2`, got {}",
                value.type_name()
            ),
        })),
    }
}

fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn list_items(items: Vec<Spanned<Value>>, name: &str) -> Result<Vec<RawItem>, ConfigError> {
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let origin = format!(
            "{name} item {} (line {})",
            index + 1,
            item.referenced.line()
        );
        match item.value {
            Value::Str(kind) => out.push(RawItem {
                kind,
                entries: Vec::new(),
                origin,
                from_command_line: false,
            }),
            Value::Map(mut pairs) if pairs.len() == 1 => {
                let Some((key, value)) = pairs.pop() else {
                    continue;
                };
                let Value::Str(kind) = key else {
                    return Err(ConfigError::Format {
                        origin,
                        message: format!(
                            "the item name must be a string, found {} {}",
                            key.type_name(),
                            key.key_string()
                        ),
                    });
                };
                out.push(item_from_value(&kind, value, origin)?);
            }
            Value::Map(pairs) => {
                let names: Vec<String> = pairs.iter().map(|(k, _)| k.key_string()).collect();
                return Err(ConfigError::Format {
                    origin,
                    message: format!(
                        "an item must have exactly one name (`- kind: {{settings}}`), found {}: {}",
                        names.len(),
                        names.join(", ")
                    ),
                });
            }
            other => {
                return Err(ConfigError::Format {
                    origin,
                    message: format!(
                        "expected an item such as `- node: {{id: foo}}`, got {}",
                        other.type_name()
                    ),
                })
            }
        }
    }
    Ok(out)
}

fn map_items(
    entries: Vec<(Value, Spanned<MapValue>)>,
    name: &str,
) -> Result<Vec<RawItem>, ConfigError> {
    let mut out = Vec::new();
    for (key, value) in entries {
        let line = value.referenced.line();
        let Value::Str(key) = key else {
            return Err(ConfigError::Format {
                origin: format!("{name} (line {line})"),
                message: format!("top-level keys must be strings, found {}", key.type_name()),
            });
        };
        let key = key.to_ascii_lowercase();
        if key == "version" {
            check_version(&value.value, &format!("{name} key version (line {line})"))?;
            continue;
        }
        match value.value {
            MapValue::List(items) => {
                let kind = schema::v2_kind(&key).map_or_else(
                    || {
                        key.strip_suffix('s')
                            .filter(|k| !k.is_empty())
                            .unwrap_or(&key)
                            .to_owned()
                    },
                    str::to_owned,
                );
                for (index, item) in items.into_iter().enumerate() {
                    let origin = format!(
                        "{name} key {key} item {} (line {})",
                        index + 1,
                        item.referenced.line()
                    );
                    out.push(item_from_value(&kind, item.value, origin)?);
                }
            }
            MapValue::One(value) => {
                let kind = schema::v2_kind(&key).unwrap_or(&key).to_owned();
                let origin = format!("{name} key {key} (line {line})");
                match value {
                    // `local-only: true`, `trace: false`
                    Value::Bool(false) => {}
                    Value::Bool(true) => out.push(item_from_value(&kind, Value::Null, origin)?),
                    // `log-level: {level: debug}` and `log-level: debug` both work.
                    other => out.push(item_from_value(&kind, other, origin)?),
                }
            }
        }
    }
    Ok(out)
}

fn check_version(value: &MapValue, origin: &str) -> Result<(), ConfigError> {
    let ok = match value {
        MapValue::One(Value::Int(2)) => true,
        MapValue::One(Value::Str(s)) => s.trim() == "2",
        MapValue::One(Value::Float(f)) => *f == 2.0,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Format {
            origin: origin.to_owned(),
            message: "the map form of the configuration is `version: 2`; write version 1 as a list of items"
                .to_owned(),
        })
    }
}

/// The top-level node of a configuration file.
enum Document {
    Empty,
    List(Vec<Spanned<Value>>),
    Map(Vec<(Value, Spanned<MapValue>)>),
    Scalar(Value),
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DocumentVisitor)
    }
}

struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of configuration items or a version 2 map")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Document, E> {
        Ok(Document::Empty)
    }

    fn visit_none<E: de::Error>(self) -> Result<Document, E> {
        Ok(Document::Empty)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Document, E> {
        Ok(Document::Scalar(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Document, E> {
        Ok(Document::Scalar(Value::Int(i128::from(v))))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Document, E> {
        Ok(Document::Scalar(Value::Int(i128::from(v))))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Document, E> {
        Ok(Document::Scalar(Value::Float(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Document, E> {
        Ok(Document::Scalar(Value::Str(v.to_owned())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Document, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Value>>()? {
            items.push(item);
        }
        Ok(Document::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut entries: Vec<(Value, Spanned<MapValue>)> = Vec::new();
        while let Some(key) = map.next_key::<Value>()? {
            let value = map.next_value::<Spanned<MapValue>>()?;
            if let Some(slot) = entries.iter_mut().find(|(old, _)| *old == key) {
                slot.1 = value;
            } else {
                entries.push((key, value));
            }
        }
        Ok(Document::Map(entries))
    }
}

/// The value of a top-level key of the map form: a list of items, or one item.
enum MapValue {
    List(Vec<Spanned<Value>>),
    One(Value),
}

impl<'de> Deserialize<'de> for MapValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MapValueVisitor)
    }
}

struct MapValueVisitor;

impl<'de> Visitor<'de> for MapValueVisitor {
    type Value = MapValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of items or one item")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MapValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Value>>()? {
            items.push(item);
        }
        Ok(MapValue::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MapValue, A::Error> {
        ValueVisitor.visit_map(map).map(MapValue::One)
    }

    fn visit_unit<E: de::Error>(self) -> Result<MapValue, E> {
        Ok(MapValue::One(Value::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<MapValue, E> {
        Ok(MapValue::One(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<MapValue, D::Error> {
        MapValue::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<MapValue, E> {
        Ok(MapValue::One(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<MapValue, E> {
        Ok(MapValue::One(Value::Int(i128::from(v))))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<MapValue, E> {
        Ok(MapValue::One(Value::Int(i128::from(v))))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<MapValue, E> {
        Ok(MapValue::One(Value::Float(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<MapValue, E> {
        Ok(MapValue::One(Value::Str(v.to_owned())))
    }
}
