//! JSON encoded the way Go's `encoding/json` encodes it.
//!
//! Go peers and `receptorctl` compare bytes in places (routing updates are re-marshalled,
//! control replies are printed as sent), so everything this project emits goes through
//! [`to_vec`] / [`to_string`]: compact output, struct fields in declaration order, map
//! keys sorted bytewise (serde_json's default `Map` is a `BTreeMap`), floats in Go's
//! shortest form (`1`, `2.5`, `1e+21`, `1e-7`), and `<`, `>`, `&`, U+2028, U+2029
//! escaped as `\u003c` and so on.

use std::io;

use serde::Serialize;

/// A `serde_json` formatter producing Go `encoding/json` output.
#[derive(Debug, Default, Clone, Copy)]
pub struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        writer.write_all(format_float(value).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        writer.write_all(format_float(f64::from(value)).as_bytes())
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // Fast path: nothing to escape (U+2028 and U+2029 both start with 0xE2).
        if !fragment
            .bytes()
            .any(|b| matches!(b, b'<' | b'>' | b'&' | 0xE2))
        {
            return writer.write_all(fragment.as_bytes());
        }
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            let escape = match ch {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escape.as_bytes())?;
            start = i + ch.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// Formats a float as Go's `encoding/json` does (non-finite values become `null`,
/// which Go would refuse to encode at all).
pub fn format_float(value: f64) -> String {
    if !value.is_finite() {
        return "null".to_owned();
    }
    let abs = value.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{value:e}");
        return match s.split_once('e') {
            Some((mantissa, exp)) if exp.starts_with('-') => format!("{mantissa}e{exp}"),
            Some((mantissa, exp)) if exp.len() < 2 => format!("{mantissa}e+0{exp}"),
            Some((mantissa, exp)) => format!("{mantissa}e+{exp}"),
            None => s,
        };
    }
    format!("{value}")
}

/// Serializes `value` as Go would.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    value.serialize(&mut ser)?;
    Ok(out)
}

/// Serializes `value` as Go would, into a `String`.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let bytes = to_vec(value)?;
    // serde_json only ever writes UTF-8.
    String::from_utf8(bytes).map_err(|e| serde::ser::Error::custom(e.to_string()))
}

/// Whether an object key received in JSON selects the struct field `field`, using
/// Go's `encoding/json` rule: keys match case-insensitively under Unicode simple
/// case folding. `field` must be ASCII; besides ASCII letters only the Kelvin sign
/// (U+212A, folds with `k`) and the long s (U+017F, folds with `s`) can match it.
pub fn key_matches(key: &str, field: &str) -> bool {
    let mut want = field.bytes();
    for ch in key.chars() {
        let folded = match ch {
            '\u{212A}' => b'K',
            '\u{017F}' => b'S',
            c if c.is_ascii() => (c as u8).to_ascii_uppercase(),
            _ => return false,
        };
        match want.next() {
            Some(w) if w.to_ascii_uppercase() == folded => {}
            _ => return false,
        }
    }
    want.next().is_none()
}

/// Reads an object key and resolves it against a struct's field names with
/// [`key_matches`]: yields `Some(index)` of the field, or `None` for an unknown key
/// (whose value the caller must skip). Used by the hand-written `Deserialize`
/// impls that decode protocol messages with Go's rules.
#[derive(Debug, Clone, Copy)]
pub struct FieldSeed(pub &'static [&'static str]);

impl<'de> serde::de::DeserializeSeed<'de> for FieldSeed {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FieldSeed {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        // An exact match wins, as in Go; field names never fold onto each other.
        if let Some(i) = self.0.iter().position(|f| *f == key) {
            return Ok(Some(i));
        }
        Ok(self.0.iter().position(|f| key_matches(key, f)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_match_go() {
        assert_eq!(format_float(1.0), "1");
        assert_eq!(format_float(2.5), "2.5");
        assert_eq!(format_float(0.25), "0.25");
        assert_eq!(format_float(1e21), "1e+21");
        assert_eq!(format_float(1.5e-7), "1.5e-7");
        assert_eq!(format_float(1e-10), "1e-10");
        assert_eq!(format_float(123456789.0), "123456789");
        assert_eq!(format_float(0.0), "0");
    }

    #[test]
    fn keys_fold_like_go() {
        assert!(key_matches("NodeID", "NodeID"));
        assert!(key_matches("nodeid", "NodeID"));
        assert!(key_matches("NODEID", "NodeID"));
        assert!(key_matches("\u{17F}ervice", "Service"));
        assert!(key_matches("Wor\u{212A}Commands", "WorkCommands"));
        assert!(!key_matches("NodeI", "NodeID"));
        assert!(!key_matches("NodeIDs", "NodeID"));
        assert!(!key_matches("Nöde", "Node"));
    }

    #[test]
    fn html_and_separators_are_escaped() {
        let s = to_string(&json!({"b": "<a&b>\u{2028}\u{2029}é\n", "a": 1.0})).unwrap();
        assert_eq!(s, r#"{"a":1,"b":"\u003ca\u0026b\u003e\u2028\u2029é\n"}"#);
    }
}
