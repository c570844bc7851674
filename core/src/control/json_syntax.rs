//! Syntax checking of JSON command lines with Go's error messages.
//!
//! A malformed JSON command is answered with `ERROR: <message>` where the message is
//! the one Go's `encoding/json` gives (`unexpected end of JSON input`,
//! `invalid character 't' after top-level value`, ...), so clients and scripts that
//! match on the text see what Go receptor sends. The checker is a byte-level state
//! machine with an explicit stack (no recursion), accepts exactly what Go's scanner
//! accepts, including invalid UTF-8 inside strings, and nests at most 10000 deep.

/// Go's `maxNestingDepth`.
const MAX_DEPTH: usize = 10_000;

/// What the enclosing container expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// Inside an object, reading a key (then `:`).
    ObjectKey,
    /// Inside an object, reading a value (then `,` or `}`).
    ObjectValue,
    /// Inside an array.
    Array,
}

/// Scanner states, named after the token position they stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    BeginValue,
    BeginValueOrEmpty,
    BeginStringOrEmpty,
    BeginString,
    EndValue,
    EndTop,
    InString,
    InStringEscape,
    /// Inside `\u`, with this many hex digits still expected.
    InStringEscapeU(u8),
    Neg,
    Zero,
    Digits,
    Dot,
    FractionDigits,
    Exponent,
    ExponentSign,
    ExponentDigits,
    /// Inside a literal: the remaining bytes to match and the literal's name.
    Literal(&'static [u8], &'static str),
}

/// Checks `data` as Go's `json.Unmarshal` would; `Err` holds Go's message.
pub fn check(data: &[u8]) -> Result<(), String> {
    let mut scanner = Scanner {
        stack: Vec::new(),
        state: State::BeginValue,
    };
    for &c in data {
        scanner.step(c)?;
    }
    scanner.finish()
}

struct Scanner {
    stack: Vec<Frame>,
    state: State,
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

impl Scanner {
    fn finish(&mut self) -> Result<(), String> {
        if self.state == State::EndTop {
            return Ok(());
        }
        // Go feeds one space so that a top-level number can end; every other state
        // that is not complete is an unexpected end.
        self.step(b' ')?;
        if self.state == State::EndTop {
            Ok(())
        } else {
            Err("unexpected end of JSON input".to_owned())
        }
    }

    fn push(&mut self, c: u8, frame: Frame, next: State) -> Result<(), String> {
        self.stack.push(frame);
        if self.stack.len() > MAX_DEPTH {
            return Err(invalid(c, "exceeded max depth"));
        }
        self.state = next;
        Ok(())
    }

    fn step(&mut self, c: u8) -> Result<(), String> {
        match self.state {
            State::BeginValue => self.begin_value(c),
            State::BeginValueOrEmpty => {
                if is_space(c) {
                    Ok(())
                } else if c == b']' {
                    self.end_value(c)
                } else {
                    self.begin_value(c)
                }
            }
            State::BeginStringOrEmpty => {
                if is_space(c) {
                    Ok(())
                } else if c == b'}' {
                    if let Some(top) = self.stack.last_mut() {
                        *top = Frame::ObjectValue;
                    }
                    self.end_value(c)
                } else {
                    self.begin_string(c)
                }
            }
            State::BeginString => self.begin_string(c),
            State::EndValue => self.end_value(c),
            State::EndTop => {
                if is_space(c) {
                    Ok(())
                } else {
                    Err(invalid(c, "after top-level value"))
                }
            }
            State::InString => {
                match c {
                    b'"' => self.state = State::EndValue,
                    b'\\' => self.state = State::InStringEscape,
                    0..=0x1f => return Err(invalid(c, "in string literal")),
                    _ => {}
                }
                Ok(())
            }
            State::InStringEscape => match c {
                b'b' | b'f' | b'n' | b'r' | b't' | b'\\' | b'/' | b'"' => {
                    self.state = State::InString;
                    Ok(())
                }
                b'u' => {
                    self.state = State::InStringEscapeU(4);
                    Ok(())
                }
                _ => Err(invalid(c, "in string escape code")),
            },
            State::InStringEscapeU(left) => {
                if !c.is_ascii_hexdigit() {
                    return Err(invalid(c, "in \\u hexadecimal character escape"));
                }
                self.state = if left <= 1 {
                    State::InString
                } else {
                    State::InStringEscapeU(left - 1)
                };
                Ok(())
            }
            State::Neg => match c {
                b'0' => {
                    self.state = State::Zero;
                    Ok(())
                }
                b'1'..=b'9' => {
                    self.state = State::Digits;
                    Ok(())
                }
                _ => Err(invalid(c, "in numeric literal")),
            },
            State::Digits if c.is_ascii_digit() => Ok(()),
            State::Zero | State::Digits => match c {
                b'.' => {
                    self.state = State::Dot;
                    Ok(())
                }
                b'e' | b'E' => {
                    self.state = State::Exponent;
                    Ok(())
                }
                _ => self.end_value(c),
            },
            State::Dot => {
                if c.is_ascii_digit() {
                    self.state = State::FractionDigits;
                    Ok(())
                } else {
                    Err(invalid(c, "after decimal point in numeric literal"))
                }
            }
            State::FractionDigits => match c {
                b'0'..=b'9' => Ok(()),
                b'e' | b'E' => {
                    self.state = State::Exponent;
                    Ok(())
                }
                _ => self.end_value(c),
            },
            State::Exponent if c == b'+' || c == b'-' => {
                self.state = State::ExponentSign;
                Ok(())
            }
            State::Exponent | State::ExponentSign => {
                if c.is_ascii_digit() {
                    self.state = State::ExponentDigits;
                    Ok(())
                } else {
                    Err(invalid(c, "in exponent of numeric literal"))
                }
            }
            State::ExponentDigits => {
                if c.is_ascii_digit() {
                    Ok(())
                } else {
                    self.end_value(c)
                }
            }
            State::Literal(rest, name) => match rest.split_first() {
                Some((&want, tail)) if want == c => {
                    self.state = if tail.is_empty() {
                        State::EndValue
                    } else {
                        State::Literal(tail, name)
                    };
                    Ok(())
                }
                Some((&want, _)) => Err(invalid(
                    c,
                    &format!("in literal {name} (expecting {})", quote_char(want)),
                )),
                None => self.end_value(c),
            },
        }
    }

    fn begin_value(&mut self, c: u8) -> Result<(), String> {
        if is_space(c) {
            return Ok(());
        }
        self.state = match c {
            b'{' => return self.push(c, Frame::ObjectKey, State::BeginStringOrEmpty),
            b'[' => return self.push(c, Frame::Array, State::BeginValueOrEmpty),
            b'"' => State::InString,
            b'-' => State::Neg,
            b'0' => State::Zero,
            b'1'..=b'9' => State::Digits,
            b't' => State::Literal(b"rue", "true"),
            b'f' => State::Literal(b"alse", "false"),
            b'n' => State::Literal(b"ull", "null"),
            _ => return Err(invalid(c, "looking for beginning of value")),
        };
        Ok(())
    }

    fn begin_string(&mut self, c: u8) -> Result<(), String> {
        if is_space(c) {
            return Ok(());
        }
        if c == b'"' {
            self.state = State::InString;
            return Ok(());
        }
        Err(invalid(c, "looking for beginning of object key string"))
    }

    fn end_value(&mut self, c: u8) -> Result<(), String> {
        let Some(top) = self.stack.last_mut() else {
            self.state = State::EndTop;
            return self.step(c);
        };
        if is_space(c) {
            self.state = State::EndValue;
            return Ok(());
        }
        match (*top, c) {
            (Frame::ObjectKey, b':') => {
                *top = Frame::ObjectValue;
                self.state = State::BeginValue;
            }
            (Frame::ObjectKey, _) => return Err(invalid(c, "after object key")),
            (Frame::ObjectValue, b',') => {
                *top = Frame::ObjectKey;
                self.state = State::BeginString;
            }
            (Frame::ObjectValue, b'}') | (Frame::Array, b']') => {
                self.stack.pop();
                self.state = if self.stack.is_empty() {
                    State::EndTop
                } else {
                    State::EndValue
                };
            }
            (Frame::ObjectValue, _) => return Err(invalid(c, "after object key:value pair")),
            (Frame::Array, b',') => self.state = State::BeginValue,
            (Frame::Array, _) => return Err(invalid(c, "after array element")),
        }
        Ok(())
    }
}

fn invalid(c: u8, context: &str) -> String {
    format!("invalid character {} {context}", quote_char(c))
}

/// A byte quoted as Go's `quoteChar` does: the byte taken as the code point U+00XX,
/// in single quotes, escaped the way `strconv.Quote` escapes it.
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => r"'\''".to_owned(),
        b'"' => "'\"'".to_owned(),
        b'\\' => r"'\\'".to_owned(),
        0x07 => r"'\a'".to_owned(),
        0x08 => r"'\b'".to_owned(),
        0x0c => r"'\f'".to_owned(),
        b'\n' => r"'\n'".to_owned(),
        b'\r' => r"'\r'".to_owned(),
        b'\t' => r"'\t'".to_owned(),
        0x0b => r"'\v'".to_owned(),
        0x00..=0x1f | 0x7f => format!(r"'\x{c:02x}'"),
        0x80..=0xa0 | 0xad => format!(r"'\u{c:04x}'"),
        _ => format!("'{}'", char::from(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        check(s.as_bytes()).err().unwrap_or_default()
    }

    #[test]
    fn accepts_what_go_accepts() {
        for ok in [
            r#"{}"#,
            r#"{"command":"status"}"#,
            r#" { "a" : [ 1 , -0.5e+3 , true , false , null , "x\u00e9\n" , {} , [] ] } "#,
            r#"{"a":0,"b":1E5,"c":-12.25}"#,
            "{\"a\":\"\u{e9}\"}",
        ] {
            assert_eq!(check(ok.as_bytes()), Ok(()), "{ok}");
        }
        assert_eq!(check(b"{\"a\":\"\xff\xfe\"}"), Ok(()));
    }

    #[test]
    fn go_error_messages() {
        let cases = [
            (r#"{"command":"#, "unexpected end of JSON input"),
            (r#"{"command""#, "unexpected end of JSON input"),
            (r#"{"#, "unexpected end of JSON input"),
            (
                r#"{"command":"status","requested_fields":["NodeID"]} trailing"#,
                "invalid character 't' after top-level value",
            ),
            (
                r#"{x}"#,
                "invalid character 'x' looking for beginning of object key string",
            ),
            (r#"{"a" 1}"#, "invalid character '1' after object key"),
            (
                r#"{"a":1 "b"}"#,
                "invalid character '\"' after object key:value pair",
            ),
            (
                r#"{"a":1x}"#,
                "invalid character 'x' after object key:value pair",
            ),
            (
                r#"{"a":01}"#,
                "invalid character '1' after object key:value pair",
            ),
            (
                r#"{"a":[1 2]}"#,
                "invalid character '2' after array element",
            ),
            (
                r#"{"a":}"#,
                "invalid character '}' looking for beginning of value",
            ),
            (r#"{"a":-}"#, "invalid character '}' in numeric literal"),
            (
                r#"{"a":1.}"#,
                "invalid character '}' after decimal point in numeric literal",
            ),
            (
                r#"{"a":1e}"#,
                "invalid character '}' in exponent of numeric literal",
            ),
            (
                r#"{"a":1e+}"#,
                "invalid character '}' in exponent of numeric literal",
            ),
            (
                r#"{"a":tx}"#,
                "invalid character 'x' in literal true (expecting 'r')",
            ),
            (
                r#"{"a":fals}"#,
                "invalid character '}' in literal false (expecting 'e')",
            ),
            (
                r#"{"a":nul}"#,
                "invalid character '}' in literal null (expecting 'l')",
            ),
            (
                r#"{"a":"\q"}"#,
                "invalid character 'q' in string escape code",
            ),
            (
                r#"{"a":"\u12g4"}"#,
                "invalid character 'g' in \\u hexadecimal character escape",
            ),
            (
                "{\"a\":\"\t\"}",
                "invalid character '\\t' in string literal",
            ),
            (
                "{\"a\":\"\x01\"}",
                "invalid character '\\x01' in string literal",
            ),
            (
                r#"{"a":'x'}"#,
                "invalid character '\\'' looking for beginning of value",
            ),
            (
                r#"{"a":\}"#,
                "invalid character '\\\\' looking for beginning of value",
            ),
            (
                r#"{,}"#,
                "invalid character ',' looking for beginning of object key string",
            ),
            (
                r#"{"a":1,}"#,
                "invalid character '}' looking for beginning of object key string",
            ),
            (
                r#"{"a":[,]}"#,
                "invalid character ',' looking for beginning of value",
            ),
            (r#"{} {}"#, "invalid character '{' after top-level value"),
        ];
        for (input, want) in cases {
            assert_eq!(err(input), want, "for {input}");
        }
        assert_eq!(
            check(b"{\"a\":\xe9}").err().unwrap_or_default(),
            "invalid character '\u{e9}' looking for beginning of value"
        );
        assert_eq!(
            check(b"{\"a\":\xa0}").err().unwrap_or_default(),
            "invalid character '\\u00a0' looking for beginning of value"
        );
    }

    #[test]
    fn depth_is_bounded_without_recursion() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(20_000), "]".repeat(20_000));
        assert_eq!(
            check(deep.as_bytes()),
            Err("invalid character '[' exceeded max depth".to_owned())
        );
        let ok = format!("{{\"a\":{}{}}}", "[".repeat(9_000), "]".repeat(9_000));
        assert_eq!(check(ok.as_bytes()), Ok(()));
    }
}
