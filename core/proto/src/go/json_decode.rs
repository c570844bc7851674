//! Decoding JSON command lines the way Go receptor 1.6.9 decodes them (the control
//! service's JSON form).
//!
//! A JSON command is a line starting with `{`, decoded like Go's
//! `json.Unmarshal(line, &map[string]interface{})` in the Go release the reference
//! binary was built with (Go 1.26, whose `encoding/json` runs on the v2 engine).
//! Malformed input is answered with Go's error text, so that what a client sees does
//! not depend on which implementation it talks to:
//!
//! * syntax errors: `unexpected end of JSON input`, `invalid character 'x' after
//!   top-level value`, `invalid escape sequence `\q` in string`, `exceeded max depth`
//!   (more than 10000 nested containers), ...;
//! * a number beyond the range of a float64: `json: cannot unmarshal number 1e999 into
//!   Go struct field .a.b of type float64` (reported only when the syntax is valid).
//!
//! What Go accepts is accepted: invalid UTF-8 and lone UTF-16 surrogates in strings
//! become U+FFFD (one per byte), duplicate keys keep the last value. Integers that fit
//! an `i64`/`u64` stay integers; other numbers become floats.
//!
//! Scanning is one pass over the bytes with an explicit stack. Go allows 10000 nested
//! containers; here the limit is [`MAX_DEPTH`] (same `exceeded max depth` error),
//! because decoded values are dropped and serialized recursively and must not exhaust
//! a task's stack. No control command uses more than two levels.

use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

/// Maximum nesting depth of arrays and objects (Go: 10000).
pub const MAX_DEPTH: usize = 128;

/// A JSON line Go would refuse; the message is Go's error text, which clients see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GoJsonError(pub String);

/// Decodes a JSON object line as Go's `json.Unmarshal` into a `map[string]interface{}`.
pub fn parse_object(data: &[u8]) -> Result<Map<String, Value>, GoJsonError> {
    decode_object(data).map_err(GoJsonError)
}

fn decode_object(data: &[u8]) -> Result<Map<String, Value>, String> {
    let mut decoder = Decoder {
        data,
        pos: 0,
        state: State::BeginValue,
        stack: Vec::new(),
        token_start: 0,
        root: None,
        semantic_error: None,
    };
    decoder.run()?;
    if let Some(error) = decoder.semantic_error {
        return Err(error);
    }
    match decoder.root {
        Some(Value::Object(map)) => Ok(map),
        Some(other) => Err(format!(
            "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            kind_name(&other)
        )),
        None => Err("unexpected end of JSON input".to_owned()),
    }
}

fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A container being built and what it expects next.
enum Container {
    /// An object; `key` holds a member name until its value is read.
    Object {
        map: Map<String, Value>,
        key: Option<String>,
        /// Past the member name's `:` (reading the value or after it).
        in_value: bool,
    },
    /// An array.
    Array(Vec<Value>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    BeginValue,
    BeginValueOrEmpty,
    BeginKeyOrEmpty,
    BeginKey,
    EndValue,
    EndTop,
    InString,
    /// After `\` at the given offset.
    InEscape(usize),
    /// Inside `\u` (escape at the given offset) with this many hex digits left.
    InEscapeU(usize, u8),
    Neg,
    Zero,
    Digits,
    Dot,
    FractionDigits,
    Exponent,
    ExponentSign,
    ExponentDigits,
    /// Inside a literal: the bytes still expected, and its name.
    Literal(&'static [u8], &'static str),
}

struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    state: State,
    stack: Vec<Container>,
    token_start: usize,
    root: Option<Value>,
    semantic_error: Option<String>,
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

impl Decoder<'_> {
    fn run(&mut self) -> Result<(), String> {
        while self.pos < self.data.len() {
            let c = self.data[self.pos];
            self.step(c)?;
            self.pos += 1;
        }
        // A number at the very end is complete; anything else unfinished is an
        // unexpected end.
        if matches!(
            self.state,
            State::Zero | State::Digits | State::FractionDigits | State::ExponentDigits
        ) {
            self.finish_number();
            self.end_value_state();
        }
        if self.state == State::EndTop {
            Ok(())
        } else {
            Err("unexpected end of JSON input".to_owned())
        }
    }

    fn step(&mut self, c: u8) -> Result<(), String> {
        match self.state {
            State::BeginValue => self.begin_value(c),
            State::BeginValueOrEmpty => match c {
                _ if is_space(c) => Ok(()),
                b']' => self.close(c),
                _ => self.begin_value(c),
            },
            State::BeginKeyOrEmpty => match c {
                _ if is_space(c) => Ok(()),
                b'}' => self.close(c),
                _ => self.begin_key(c),
            },
            State::BeginKey => self.begin_key(c),
            State::EndValue => self.end_value(c),
            State::EndTop => {
                if is_space(c) {
                    Ok(())
                } else {
                    Err(self.invalid("after top-level value"))
                }
            }
            State::InString => {
                match c {
                    b'"' => {
                        let text = decode_string(&self.data[self.token_start + 1..self.pos]);
                        self.emit(Value::String(text));
                    }
                    b'\\' => self.state = State::InEscape(self.pos),
                    0..=0x1f => return Err(self.invalid("in string")),
                    _ => {}
                }
                Ok(())
            }
            State::InEscape(start) => match c {
                b'b' | b'f' | b'n' | b'r' | b't' | b'\\' | b'/' | b'"' => {
                    self.state = State::InString;
                    Ok(())
                }
                b'u' => {
                    self.state = State::InEscapeU(start, 4);
                    Ok(())
                }
                _ => Err(self.bad_escape(start, 2)),
            },
            State::InEscapeU(start, left) => {
                if !c.is_ascii_hexdigit() {
                    return Err(self.bad_escape(start, 6));
                }
                self.state = if left <= 1 {
                    State::InString
                } else {
                    State::InEscapeU(start, left - 1)
                };
                Ok(())
            }
            State::Neg => match c {
                b'0' => self.set(State::Zero),
                b'1'..=b'9' => self.set(State::Digits),
                _ => Err(self.invalid("in numeric literal")),
            },
            State::Digits if c.is_ascii_digit() => Ok(()),
            State::Zero | State::Digits => match c {
                b'.' => self.set(State::Dot),
                b'e' | b'E' => self.set(State::Exponent),
                _ => self.end_number(c),
            },
            State::Dot => match c {
                b'0'..=b'9' => self.set(State::FractionDigits),
                _ => Err(self.invalid("in numeric literal")),
            },
            State::FractionDigits => match c {
                b'0'..=b'9' => Ok(()),
                b'e' | b'E' => self.set(State::Exponent),
                _ => self.end_number(c),
            },
            State::Exponent if c == b'+' || c == b'-' => self.set(State::ExponentSign),
            State::Exponent | State::ExponentSign => match c {
                b'0'..=b'9' => self.set(State::ExponentDigits),
                _ => Err(self.invalid("in numeric literal")),
            },
            State::ExponentDigits => match c {
                b'0'..=b'9' => Ok(()),
                _ => self.end_number(c),
            },
            State::Literal(rest, name) => match rest.split_first() {
                Some((&want, tail)) if want == c => {
                    if tail.is_empty() {
                        self.emit(match name {
                            "true" => Value::Bool(true),
                            "false" => Value::Bool(false),
                            _ => Value::Null,
                        });
                    } else {
                        self.state = State::Literal(tail, name);
                    }
                    Ok(())
                }
                Some((&want, _)) => Err(self.invalid(&format!(
                    "in literal {name} (expecting {})",
                    quote_rune(char::from(want))
                ))),
                None => self.end_value(c),
            },
        }
    }

    fn set(&mut self, state: State) -> Result<(), String> {
        self.state = state;
        Ok(())
    }

    fn begin_value(&mut self, c: u8) -> Result<(), String> {
        if is_space(c) {
            return Ok(());
        }
        self.token_start = self.pos;
        self.state = match c {
            b'{' => {
                return self.open(Container::Object {
                    map: Map::new(),
                    key: None,
                    in_value: false,
                })
            }
            b'[' => return self.open(Container::Array(Vec::new())),
            b'"' => State::InString,
            b'-' => State::Neg,
            b'0' => State::Zero,
            b'1'..=b'9' => State::Digits,
            b't' => State::Literal(b"rue", "true"),
            b'f' => State::Literal(b"alse", "false"),
            b'n' => State::Literal(b"ull", "null"),
            _ => return Err(self.invalid("looking for beginning of value")),
        };
        Ok(())
    }

    fn begin_key(&mut self, c: u8) -> Result<(), String> {
        if is_space(c) {
            return Ok(());
        }
        if c == b'"' {
            self.token_start = self.pos;
            self.state = State::InString;
            return Ok(());
        }
        Err(self.invalid("looking for beginning of object key string"))
    }

    fn open(&mut self, container: Container) -> Result<(), String> {
        if self.stack.len() >= MAX_DEPTH {
            return Err("exceeded max depth".to_owned());
        }
        self.state = match container {
            Container::Object { .. } => State::BeginKeyOrEmpty,
            Container::Array(_) => State::BeginValueOrEmpty,
        };
        self.stack.push(container);
        Ok(())
    }

    fn close(&mut self, _c: u8) -> Result<(), String> {
        let value = match self.stack.pop() {
            Some(Container::Object { map, .. }) => Value::Object(map),
            Some(Container::Array(items)) => Value::Array(items),
            None => return Err(self.invalid("after top-level value")),
        };
        self.emit(value);
        Ok(())
    }

    /// A complete value (or member name) was read.
    fn emit(&mut self, value: Value) {
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Container::Array(items)) => items.push(value),
            Some(Container::Object { map, key, in_value }) => {
                if *in_value {
                    if let Some(name) = key.take() {
                        map.insert(name, value);
                    }
                } else if let Value::String(name) = value {
                    *key = Some(name);
                }
            }
        }
        self.end_value_state();
    }

    fn end_value_state(&mut self) {
        self.state = if self.stack.is_empty() {
            State::EndTop
        } else {
            State::EndValue
        };
    }

    fn end_number(&mut self, c: u8) -> Result<(), String> {
        self.finish_number();
        self.end_value_state();
        self.step(c)
    }

    /// Converts the number token ending before `pos`; a float overflow is Go's
    /// unmarshal error, remembered and reported if the syntax turns out valid.
    fn finish_number(&mut self) {
        let end = self.pos.min(self.data.len());
        let literal = String::from_utf8_lossy(&self.data[self.token_start..end]).into_owned();
        let number = literal
            .parse::<i64>()
            .map(Number::from)
            .ok()
            .or_else(|| literal.parse::<u64>().map(Number::from).ok())
            .or_else(|| literal.parse::<f64>().ok().and_then(Number::from_f64));
        match number {
            Some(number) => self.emit(Value::Number(number)),
            None => {
                if self.semantic_error.is_none() {
                    self.semantic_error = Some(self.overflow_error(&literal));
                }
                self.emit(Value::Null);
            }
        }
    }

    fn overflow_error(&self, literal: &str) -> String {
        let mut path = String::new();
        let mut last_is_name = false;
        let mut last_name_empty = false;
        for container in &self.stack {
            match container {
                Container::Object { key, .. } => {
                    let name = key.as_deref().unwrap_or("");
                    path.push('.');
                    path.push_str(name);
                    last_is_name = true;
                    last_name_empty = name.is_empty();
                }
                Container::Array(items) => {
                    let _ = write!(path, ".{}", items.len());
                    last_is_name = false;
                }
            }
        }
        let target = if last_is_name && last_name_empty && self.stack.len() == 1 {
            "Go value".to_owned()
        } else if last_is_name {
            format!("Go struct field {path}")
        } else {
            path
        };
        format!("json: cannot unmarshal number {literal} into {target} of type float64")
    }

    fn end_value(&mut self, c: u8) -> Result<(), String> {
        if is_space(c) {
            return Ok(());
        }
        let Some(top) = self.stack.last_mut() else {
            self.state = State::EndTop;
            return self.step(c);
        };
        match (top, c) {
            (Container::Object { in_value, .. }, b':') if !*in_value => {
                *in_value = true;
                self.state = State::BeginValue;
                Ok(())
            }
            (
                Container::Object {
                    in_value: false, ..
                },
                _,
            ) => Err(self.invalid("after object key")),
            (Container::Object { in_value, .. }, b',') => {
                *in_value = false;
                self.set(State::BeginKey)
            }
            (Container::Object { .. }, b'}') | (Container::Array(_), b']') => self.close(c),
            (Container::Object { .. }, _) => Err(self.invalid("after object key:value pair")),
            (Container::Array(_), b',') => self.set(State::BeginValue),
            (Container::Array(_), _) => Err(self.invalid("after array element")),
        }
    }

    /// `invalid character <c> <context>`, with the character decoded from the input.
    fn invalid(&self, context: &str) -> String {
        let rest = &self.data[self.pos.min(self.data.len())..];
        let shown = match first_char(rest) {
            Some(ch) => quote_rune(ch),
            None => format!("'\\x{:02x}'", rest.first().copied().unwrap_or(0)),
        };
        format!("invalid character {shown} {context}")
    }

    fn bad_escape(&self, start: usize, len: usize) -> String {
        let end = (start + len).min(self.data.len());
        format!(
            "invalid escape sequence {} in string",
            quote_backquoted(&self.data[start..end])
        )
    }
}

/// The first UTF-8 character of `bytes`, if they start with a valid one.
fn first_char(bytes: &[u8]) -> Option<char> {
    let len = match bytes.first()? {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    };
    std::str::from_utf8(bytes.get(..len)?).ok()?.chars().next()
}

/// Decodes the bytes between a string's quotes (already checked): escapes, surrogate
/// pairs (lone ones become U+FFFD) and raw bytes (each invalid byte becomes U+FFFD).
fn decode_string(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let Some(backslash) = raw[i..].iter().position(|&b| b == b'\\') else {
            push_lossy(&mut out, &raw[i..]);
            break;
        };
        push_lossy(&mut out, &raw[i..i + backslash]);
        i += backslash;
        let Some(&kind) = raw.get(i + 1) else { break };
        i += 2;
        let simple = match kind {
            b'b' => Some('\u{8}'),
            b'f' => Some('\u{c}'),
            b'n' => Some('\n'),
            b'r' => Some('\r'),
            b't' => Some('\t'),
            b'u' => None,
            other => Some(char::from(other)),
        };
        if let Some(ch) = simple {
            out.push(ch);
            continue;
        }
        let Some(unit) = hex4(raw.get(i..i + 4)) else {
            break;
        };
        i += 4;
        if (0xd800..0xdc00).contains(&unit) && raw.get(i..i + 2) == Some(b"\\u") {
            if let Some(low) = hex4(raw.get(i + 2..i + 6)).filter(|l| (0xdc00..0xe000).contains(l))
            {
                let code = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
                out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                i += 6;
                continue;
            }
        }
        out.push(char::from_u32(unit).unwrap_or('\u{fffd}'));
    }
    out
}

fn hex4(digits: Option<&[u8]>) -> Option<u32> {
    u32::from_str_radix(std::str::from_utf8(digits?).ok()?, 16).ok()
}

/// Appends `bytes` as UTF-8, replacing every byte that is not part of a valid
/// character with U+FFFD, as Go does.
pub fn push_lossy(out: &mut String, mut bytes: &[u8]) {
    loop {
        match std::str::from_utf8(bytes) {
            Ok(text) => {
                out.push_str(text);
                return;
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                out.push('\u{fffd}');
                bytes = rest.get(1..).unwrap_or_default();
            }
        }
    }
}

/// Bytes as text the way Go converts them (one U+FFFD per invalid byte).
pub fn go_lossy(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    push_lossy(&mut out, bytes);
    out
}

/// Approximates Go's `strconv.IsPrint`: letters, marks, numbers, punctuation,
/// symbols and the ASCII space (unassigned code points are not detected).
fn is_print(ch: char) -> bool {
    if ch == ' ' {
        return true;
    }
    if ch.is_control() || ch.is_whitespace() {
        return false;
    }
    let c = u32::from(ch);
    let format_or_private = matches!(c,
        0xa0 | 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f
        | 0x2028..=0x202f | 0x205f..=0x2064 | 0x2066..=0x206f | 0x3000 | 0xfeff
        | 0xfff9..=0xfffb | 0xfffe | 0xffff | 0x110bd | 0x1d173..=0x1d17a | 0xe0001
        | 0xe0020..=0xe007f | 0xe000..=0xf8ff | 0xf0000..);
    !format_or_private
}

/// Appends `ch` escaped as `strconv.Quote` escapes it (without quotes).
fn push_escaped(out: &mut String, ch: char, quote: char) {
    match ch {
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        '\\' => out.push_str("\\\\"),
        _ if ch == quote => {
            out.push('\\');
            out.push(ch);
        }
        _ if is_print(ch) => out.push(ch),
        _ if u32::from(ch) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", u32::from(ch));
        }
        _ if u32::from(ch) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", u32::from(ch));
        }
        _ => {
            let _ = write!(out, "\\U{:08x}", u32::from(ch));
        }
    }
}

/// A character quoted as Go's `quoteChar`/`strconv.QuoteRune` does: `'x'`, `'\t'`,
/// `'\u2028'`, with `"` left alone.
fn quote_rune(ch: char) -> String {
    let mut out = String::from("'");
    push_escaped(&mut out, ch, '\'');
    out.push('\'');
    out
}

/// Bytes as Go's `%#q` shows them: in backquotes when possible, else double-quoted
/// with escapes (invalid bytes as `\xNN`).
fn quote_backquoted(bytes: &[u8]) -> String {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let plain = text
            .chars()
            .all(|ch| ch == '\t' || (!ch.is_control() && ch != '`' && ch != '\u{feff}'));
        if plain {
            return format!("`{text}`");
        }
    }
    let mut out = String::from("\"");
    let mut rest = bytes;
    while !rest.is_empty() {
        match first_char(rest) {
            Some(ch) => {
                push_escaped(&mut out, ch, '"');
                rest = &rest[ch.len_utf8()..];
            }
            None => {
                let _ = write!(out, "\\x{:02x}", rest[0]);
                rest = &rest[1..];
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(input: &[u8]) -> String {
        parse_object(input).err().map(|e| e.0).unwrap_or_default()
    }

    fn ok(input: &[u8]) -> Value {
        match parse_object(input) {
            Ok(map) => Value::Object(map),
            Err(e) => panic!("{e} for {}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn decodes_values() {
        assert_eq!(ok(b"{}"), json!({}));
        assert_eq!(
            ok(br#" { "a" : [ 1 , -0.5e+3 , true , false , null , "x\u00e9\n" , {} , [] ] } "#),
            json!({"a": [1, -500.0, true, false, null, "x\u{e9}\n", {}, []]})
        );
        assert_eq!(
            ok(br#"{"a":0,"b":1E5,"c":-12.25,"d":1e-999}"#),
            json!({"a": 0, "b": 100000.0, "c": -12.25, "d": 0.0})
        );
        assert_eq!(
            ok(br#"{"a":18446744073709551615}"#),
            json!({"a": 18446744073709551615u64})
        );
        assert_eq!(
            ok(br#"{"a":"\/\b\f\n\r\t\"\\"}"#),
            json!({"a": "/\u{8}\u{c}\n\r\t\"\\"})
        );
        assert_eq!(
            ok(br#"{"command":"x","command":"status"}"#),
            json!({"command": "status"})
        );
        assert_eq!(
            ok(br#"{"a":{"b":{"c":[[]]}}}"#),
            json!({"a": {"b": {"c": [[]]}}})
        );
    }

    #[test]
    fn strings_are_repaired_like_go() {
        assert_eq!(
            ok(b"{\"a\":\"st\xff\xfeatus\"}"),
            json!({"a": "st\u{fffd}\u{fffd}atus"})
        );
        assert_eq!(
            ok(b"{\"a\":\"st\xe2\x80atus\"}"),
            json!({"a": "st\u{fffd}\u{fffd}atus"})
        );
        assert_eq!(
            ok(b"{\"a\":\"\xc3\xa9\x7f\"}"),
            json!({"a": "\u{e9}\u{7f}"})
        );
        assert_eq!(ok(br#"{"a":"\ud83d\ude00"}"#), json!({"a": "\u{1f600}"}));
        assert_eq!(
            ok(br#"{"a":"\ud800x\udc00"}"#),
            json!({"a": "\u{fffd}x\u{fffd}"})
        );
        assert_eq!(ok(br#"{"a":"\ud800\u0041"}"#), json!({"a": "\u{fffd}A"}));
        assert_eq!(ok(br#"{"a":"\u0000"}"#), json!({"a": "\u{0}"}));
    }

    /// Inputs and the error text the Go 1.6.9 reference binary replied with.
    #[test]
    fn errors_match_the_reference_binary() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"command":"#, "unexpected end of JSON input"),
            (
                br#"{"command":"status","requested_fields":["NodeID"]} trailing"#,
                "invalid character 't' after top-level value",
            ),
            (
                br#"{x}"#,
                "invalid character 'x' looking for beginning of object key string",
            ),
            (br#"{"a" 1}"#, "invalid character '1' after object key"),
            (
                br#"{"a":1 "b"}"#,
                "invalid character '\"' after object key:value pair",
            ),
            (
                br#"{"a":1x}"#,
                "invalid character 'x' after object key:value pair",
            ),
            (
                br#"{"a":01}"#,
                "invalid character '1' after object key:value pair",
            ),
            (
                br#"{"a":[1 2]}"#,
                "invalid character '2' after array element",
            ),
            (
                br#"{"a":}"#,
                "invalid character '}' looking for beginning of value",
            ),
            (br#"{"a":-}"#, "invalid character '}' in numeric literal"),
            (br#"{"a":1.}"#, "invalid character '}' in numeric literal"),
            (br#"{"a":1e}"#, "invalid character '}' in numeric literal"),
            (br#"{"a":1e+}"#, "invalid character '}' in numeric literal"),
            (
                br#"{"a":tx}"#,
                "invalid character 'x' in literal true (expecting 'r')",
            ),
            (
                br#"{"a":fals}"#,
                "invalid character '}' in literal false (expecting 'e')",
            ),
            (
                br#"{"a":nul}"#,
                "invalid character '}' in literal null (expecting 'l')",
            ),
            (br#"{"a":"\q"}"#, "invalid escape sequence `\\q` in string"),
            (
                br#"{"a":"\u12g4"}"#,
                "invalid escape sequence `\\u12g4` in string",
            ),
            (
                br#"{"a":'x'}"#,
                "invalid character '\\'' looking for beginning of value",
            ),
            (
                br#"{"a":\}"#,
                "invalid character '\\\\' looking for beginning of value",
            ),
            (
                br#"{,}"#,
                "invalid character ',' looking for beginning of object key string",
            ),
            (
                br#"{"a":1,}"#,
                "invalid character '}' looking for beginning of object key string",
            ),
            (
                br#"{"a":[,]}"#,
                "invalid character ',' looking for beginning of value",
            ),
            (br#"{} {}"#, "invalid character '{' after top-level value"),
            (
                br#"{"command":"ping","target":1e999}"#,
                "json: cannot unmarshal number 1e999 into Go struct field .target of type float64",
            ),
            (b"{\"a\":\"\t\"}", "invalid character '\\t' in string"),
            (b"{\"a\":\"\x01\"}", "invalid character '\\x01' in string"),
            (
                b"{\"a\":\xe9}",
                "invalid character '\\xe9' looking for beginning of value",
            ),
            (
                b"{\"a\":\xa0}",
                "invalid character '\\xa0' looking for beginning of value",
            ),
            (
                b"{\"a\":\xad}",
                "invalid character '\\xad' looking for beginning of value",
            ),
            (
                b"{\"a\":\x7f}",
                "invalid character '\\x7f' looking for beginning of value",
            ),
            (
                br#"{"a":1.5.}"#,
                "invalid character '.' after object key:value pair",
            ),
            (
                br#"{"a":-01}"#,
                "invalid character '1' after object key:value pair",
            ),
            (br#"{"a":-x}"#, "invalid character 'x' in numeric literal"),
            (br#"{"a":1ex}"#, "invalid character 'x' in numeric literal"),
            (br#"{"a":1.x}"#, "invalid character 'x' in numeric literal"),
            (
                br#"{"a":1e5x}"#,
                "invalid character 'x' after object key:value pair",
            ),
            (
                br#"{"a":trueX}"#,
                "invalid character 'X' after object key:value pair",
            ),
            (
                br#"{"a":true,"b":nullx}"#,
                "invalid character 'x' after object key:value pair",
            ),
            (
                br#"{"a":"\u12"}"#,
                "invalid escape sequence `\\u12\"}` in string",
            ),
            (br#"{"a":"\u12"#, "unexpected end of JSON input"),
            (br#"{"a":"abc"#, "unexpected end of JSON input"),
            (br#"{"a":tru"#, "unexpected end of JSON input"),
            (br#"{"a":1"#, "unexpected end of JSON input"),
            (br#"{"a":"#, "unexpected end of JSON input"),
            (br#"{"a""#, "unexpected end of JSON input"),
            (br#"{"a"#, "unexpected end of JSON input"),
            (br#"{"#, "unexpected end of JSON input"),
            (br#"{"a":[1,"#, "unexpected end of JSON input"),
            (br#"{"a":[1"#, "unexpected end of JSON input"),
            (br#"{"a":["#, "unexpected end of JSON input"),
            (
                br#"{"a":[1,]}"#,
                "invalid character ']' looking for beginning of value",
            ),
            (
                br#"{"a":{"b":1e999}}"#,
                "json: cannot unmarshal number 1e999 into Go struct field .a.b of type float64",
            ),
            (
                br#"{"a":{"b":[1e999]}}"#,
                "json: cannot unmarshal number 1e999 into .a.b.0 of type float64",
            ),
            (
                br#"{"target":1e999, x}"#,
                "invalid character 'x' looking for beginning of object key string",
            ),
            (
                br#"{"command":"status","requested_fields":"x"]}"#,
                "invalid character ']' after object key:value pair",
            ),
            (
                br#"{"a":1}x"#,
                "invalid character 'x' after top-level value",
            ),
            (
                br#"{"a":1} ,"#,
                "invalid character ',' after top-level value",
            ),
            (br#"{"a":"\x"}"#, "invalid escape sequence `\\x` in string"),
            (
                br#"{"a":"\U1234"}"#,
                "invalid escape sequence `\\U` in string",
            ),
            (
                br#"{"a":1,,}"#,
                "invalid character ',' looking for beginning of object key string",
            ),
            (
                br#"{"a"::1}"#,
                "invalid character ':' looking for beginning of value",
            ),
            (
                br#"{"a":[1]]}"#,
                "invalid character ']' after object key:value pair",
            ),
            (
                br#"{"a":{}}}"#,
                "invalid character '}' after top-level value",
            ),
            (br#"{"a":1E}"#, "invalid character '}' in numeric literal"),
            (
                br#"{"a":.5}"#,
                "invalid character '.' looking for beginning of value",
            ),
            (
                br#"{"a":+1}"#,
                "invalid character '+' looking for beginning of value",
            ),
            (
                br#"{"a":NaN}"#,
                "invalid character 'N' looking for beginning of value",
            ),
            (
                br#"{"a":[}"#,
                "invalid character '}' looking for beginning of value",
            ),
            (
                br#"{"a":{]}"#,
                "invalid character ']' looking for beginning of object key string",
            ),
            (
                br#"{1:2}"#,
                "invalid character '1' looking for beginning of object key string",
            ),
            (
                br#"{"a":1]"#,
                "invalid character ']' after object key:value pair",
            ),
            (br#"{"a":[1}"#, "invalid character '}' after array element"),
            (
                b"{\"a\":\xc3\xa9}",
                "invalid character '\u{e9}' looking for beginning of value",
            ),
            (
                b"{\"a\":\xe2\x80\xa8}",
                "invalid character '\\u2028' looking for beginning of value",
            ),
            (b"{\"a\":\"\x1f\"}", "invalid character '\\x1f' in string"),
            (
                b"{\"a\":\x00}",
                "invalid character '\\x00' looking for beginning of value",
            ),
            (
                b"{\"a\":\x0b}",
                "invalid character '\\v' looking for beginning of value",
            ),
            (
                b"{\"a\":\x1b}",
                "invalid character '\\x1b' looking for beginning of value",
            ),
            (b"{\"a\x01\":1}", "invalid character '\\x01' in string"),
            (
                br#"{"a":"\uZ"}"#,
                "invalid escape sequence `\\uZ\"}` in string",
            ),
            (
                br#"{"a":"\u1"}"#,
                "invalid escape sequence `\\u1\"}` in string",
            ),
            (
                br#"{"a":"\u12""#,
                "invalid escape sequence `\\u12\"` in string",
            ),
            (br#"{"a":"\u1234"#, "unexpected end of JSON input"),
            (br#"{"a":"\"#, "unexpected end of JSON input"),
            (br#"{"a":"\q"#, "invalid escape sequence `\\q` in string"),
            (
                br#"{"a":[{"b":1e999}]}"#,
                "json: cannot unmarshal number 1e999 into Go struct field .a.0.b of type float64",
            ),
            (
                br#"{"a":-1e999}"#,
                "json: cannot unmarshal number -1e999 into Go struct field .a of type float64",
            ),
            (
                br#"{"a.b":{"c d":1e999}}"#,
                "json: cannot unmarshal number 1e999 into Go struct field .a.b.c d of type float64",
            ),
            (
                br#"{"a":1e999,"b":2e999}"#,
                "json: cannot unmarshal number 1e999 into Go struct field .a of type float64",
            ),
            (
                br#"{"":1e999}"#,
                "json: cannot unmarshal number 1e999 into Go value of type float64",
            ),
            (
                b"{\"a\":\"\\\xc3\xa9\"}",
                "invalid escape sequence \"\\\\\\xc3\" in string",
            ),
            (
                b"{\"a\":\"\\\xff\"}",
                "invalid escape sequence \"\\\\\\xff\" in string",
            ),
            (
                b"{\"a\":\xf0\x9f\x98\x80}",
                "invalid character '\u{1f600}' looking for beginning of value",
            ),
            (
                b"{\"a\":\xef\xbb\xbf}",
                "invalid character '\\ufeff' looking for beginning of value",
            ),
            (
                b"{\"a\":\xc2\xad}",
                "invalid character '\\u00ad' looking for beginning of value",
            ),
            (
                b"{\"a\":\xe3\x80\x80}",
                "invalid character '\\u3000' looking for beginning of value",
            ),
            (
                b"{\"a\":\xc2\x85}",
                "invalid character '\\u0085' looking for beginning of value",
            ),
            (
                b"{\"a\":\xf4\x90\x80\x80}",
                "invalid character '\\xf4' looking for beginning of value",
            ),
            (
                b"{\"a\":\xed\xa0\x80}",
                "invalid character '\\xed' looking for beginning of value",
            ),
            (
                b"{\"a\":\"x\",\xff}",
                "invalid character '\\xff' looking for beginning of object key string",
            ),
            (
                br#"{"command":"status","requested_fields":["NodeID"],"x":1e999}"#,
                "json: cannot unmarshal number 1e999 into Go struct field .x of type float64",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(err(input), *want, "for {}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn depth_is_bounded_without_recursion() {
        let nested = |n: usize| format!("{{\"a\":{}{}}}", "[".repeat(n), "]".repeat(n));
        assert!(parse_object(nested(MAX_DEPTH - 1).as_bytes()).is_ok());
        assert_eq!(err(nested(MAX_DEPTH).as_bytes()), "exceeded max depth");
        assert_eq!(err(nested(1_000_000).as_bytes()), "exceeded max depth");
    }
}
