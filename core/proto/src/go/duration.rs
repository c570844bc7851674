//! Durations as Go writes and reads them: `time.Duration.String()` ([`go_duration`]) and
//! `time.ParseDuration` ([`parse_go_duration`]).
//!
//! `ping` and `traceroute` replies carry the round-trip time twice: `Time` in integer
//! nanoseconds and `TimeStr` as Go renders a `time.Duration` (`261.951µs`, `1.5s`,
//! `2m3s`). Clients display `TimeStr` verbatim, so the text must match Go exactly:
//! below one second the largest unit of ns, µs (U+00B5) or ms that keeps an integer
//! part is used; from one second on the form is `[<h>h][<m>m]<s>[.<frac>]s`; fractions
//! drop trailing zeros and zero is `0s`.
//!
//! Durations in configuration files (`tokenexpiration`, `rtimeout`, ...) and in work
//! requests (`ttl`) are read with Go's algorithm: integer nanoseconds per unit, a
//! fraction added as `float64(f) * (float64(unit) / scale)` and truncated, as Go does,
//! and the same error texts (`time: invalid duration "bogus"`).

use std::fmt::Write as _;
use std::time::Duration;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Formats a signed nanosecond count exactly like Go's `time.Duration.String()`.
pub fn go_duration(nanos: i64) -> String {
    let mut out = String::with_capacity(24);
    if nanos < 0 {
        out.push('-');
    }
    let magnitude = nanos.unsigned_abs();
    if magnitude == 0 {
        return "0s".to_owned();
    }
    if magnitude < NANOS_PER_SECOND {
        let (unit, precision) = match magnitude {
            0..=999 => ("ns", 0),
            1_000..=999_999 => ("µs", 3),
            _ => ("ms", 6),
        };
        push_decimal(&mut out, magnitude, precision);
        out.push_str(unit);
        return out;
    }
    let seconds = magnitude / NANOS_PER_SECOND;
    let hours = seconds / 3600;
    let minutes = seconds / 60 % 60;
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    push_decimal(
        &mut out,
        (seconds % 60) * NANOS_PER_SECOND + magnitude % NANOS_PER_SECOND,
        9,
    );
    out.push('s');
    out
}

/// Formats a [`Duration`] like Go would, saturating at Go's maximum duration (~292 years).
pub fn go_duration_std(duration: Duration) -> String {
    go_duration(duration_nanos(duration))
}

/// A [`Duration`] as Go's signed nanosecond count, saturating at `i64::MAX`.
pub fn duration_nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

/// Why a text is not a Go duration; the message is Go's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Malformed, or beyond Go's range of ±2⁶³ ns.
    #[error("time: invalid duration {}", go_quote(.0))]
    Invalid(String),
    /// A number without its unit (`"5"`).
    #[error("time: missing unit in duration {}", go_quote(.0))]
    MissingUnit(String),
    /// A unit Go does not know.
    #[error("time: unknown unit {} in duration {}", go_quote(.unit), go_quote(.text))]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole text.
        text: String,
    },
}

/// Nanoseconds per unit, as Go's `unitMap`.
fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SECOND,
        "m" => 60 * NANOS_PER_SECOND,
        "h" => 3600 * NANOS_PER_SECOND,
        _ => return None,
    })
}

/// Go's `time.ParseDuration`: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, e.g. `1.5h`, `30m10s`,
/// `300ms`, `-2s`, or a bare `0`. Returns signed nanoseconds.
pub fn parse_go_duration(text: &str) -> Result<i64, DurationError> {
    const LIMIT: u64 = 1 << 63;
    let invalid = || DurationError::Invalid(text.to_owned());
    let (negative, mut s) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !(s.starts_with('.') || s.as_bytes()[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // The integer part: an overflow is an error.
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let mut whole: u64 = 0;
        for digit in s[..int_len].bytes() {
            if whole > LIMIT / 10 {
                return Err(invalid());
            }
            whole = whole * 10 + u64::from(digit - b'0');
            if whole > LIMIT {
                return Err(invalid());
            }
        }
        s = &s[int_len..];
        // The fraction: digits beyond u64 precision are skipped, as Go does.
        let (mut fraction, mut scale, mut frac_len) = (0u64, 1f64, None);
        if let Some(rest) = s.strip_prefix('.') {
            let len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let mut overflow = false;
            for digit in rest[..len].bytes() {
                if overflow || fraction > (LIMIT - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let next = fraction * 10 + u64::from(digit - b'0');
                if next > LIMIT {
                    overflow = true;
                    continue;
                }
                fraction = next;
                scale *= 10.0;
            }
            frac_len = Some(len);
            s = &rest[len..];
        }
        if int_len == 0 && frac_len.unwrap_or(0) == 0 {
            return Err(invalid());
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(text.to_owned()));
        }
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        let per_unit = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
            unit: unit.to_owned(),
            text: text.to_owned(),
        })?;
        if whole > LIMIT / per_unit {
            return Err(invalid());
        }
        let mut value = whole * per_unit;
        if fraction > 0 {
            // Go: v += uint64(float64(f) * (float64(unit) / scale)), truncating.
            let part = (fraction as f64 * (per_unit as f64 / scale)) as u64;
            value = value.saturating_add(part);
            if value > LIMIT {
                return Err(invalid());
            }
        }
        // Go adds in uint64 and would wrap past 2^64; so does this.
        total = total.wrapping_add(value);
        if total > LIMIT {
            return Err(invalid());
        }
    }
    if negative {
        // total <= 2^63: -total fits (i64::MIN at the limit).
        return Ok(0i64.wrapping_sub_unsigned(total));
    }
    i64::try_from(total).map_err(|_| invalid())
}

/// Go's `time.quote`: double quotes, `"` and `\` escaped, bytes of non-ASCII or control
/// characters as `\xNN`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        if ch.is_ascii() && ch >= ' ' {
            if ch == '"' || ch == '\\' {
                out.push('\\');
            }
            out.push(ch);
        } else {
            let mut buf = [0u8; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
    out
}

/// Writes `value / 10^precision` with its fraction, trailing zeros (and a bare point)
/// removed.
fn push_decimal(out: &mut String, value: u64, precision: u32) {
    let scale = 10u64.pow(precision);
    let _ = write!(out, "{}", value / scale);
    let fraction = value % scale;
    if fraction != 0 {
        let digits = format!("{fraction:0width$}", width = precision as usize);
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_go_duration_string() {
        let cases: &[(i64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (999, "999ns"),
            (1_000, "1µs"),
            (1_100, "1.1µs"),
            (1_593, "1.593µs"),
            (18_718, "18.718µs"),
            (261_951, "261.951µs"),
            (999_999, "999.999µs"),
            (1_000_000, "1ms"),
            (1_255_270, "1.25527ms"),
            (10_708_275, "10.708275ms"),
            (999_999_999, "999.999999ms"),
            (1_000_000_000, "1s"),
            (1_500_000_000, "1.5s"),
            (1_000_000_001, "1.000000001s"),
            (59_999_999_999, "59.999999999s"),
            (60_000_000_000, "1m0s"),
            (123_000_000_000, "2m3s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_500_000_000, "1h2m3.5s"),
            (90_000_000_000_000, "25h0m0s"),
            (-1, "-1ns"),
            (-1_500_000_000, "-1.5s"),
            (-261_951, "-261.951µs"),
            (i64::MAX, "2562047h47m16.854775807s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ];
        for &(nanos, want) in cases {
            assert_eq!(go_duration(nanos), want, "for {nanos} ns");
        }
    }

    /// Go's own cases for `time.ParseDuration` (its `parseDurationTests`), plus the ones
    /// receptor's configuration tests relied on.
    #[test]
    fn parses_like_go() {
        const S: i64 = 1_000_000_000;
        const MS: i64 = 1_000_000;
        const M: i64 = 60 * S;
        const H: i64 = 60 * M;
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("5s", 5 * S),
            ("1478s", 1478 * S),
            ("-5s", -5 * S),
            ("+5s", 5 * S),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5 * S),
            ("5.6s", 5 * S + 600 * MS),
            ("5.s", 5 * S),
            (".5s", 500 * MS),
            ("1.004s", S + 4 * MS),
            ("1.0040s", S + 4 * MS),
            ("100.00100s", 100 * S + MS),
            ("10ns", 10),
            ("11us", 11_000),
            ("12\u{b5}s", 12_000),
            ("12\u{3bc}s", 12_000),
            ("13ms", 13 * MS),
            ("15m", 15 * M),
            ("16h", 16 * H),
            ("3h30m", 3 * H + 30 * M),
            ("10.5s4m", 4 * M + 10 * S + 500 * MS),
            ("-2m3.4s", -(2 * M + 3 * S + 400 * MS)),
            ("1h2m3s4ms5us6ns", H + 2 * M + 3 * S + 4 * MS + 5_000 + 6),
            ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 20 * M),
            ("9007199254740993ns", (1 << 53) + 1),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036854775.807us", i64::MAX),
            ("9223372036s854ms775us807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("-9223372036854775.808us", i64::MIN),
            ("-9223372036s854ms775us808ns", i64::MIN),
            ("0.100000000000000000000h", 6 * M),
            ("0.830103483285477580700h", 49 * M + 48 * S + 372_539_827),
            ("30m", 30 * M),
            ("1.5h", 90 * M),
            ("30m10s", 30 * M + 10 * S),
            ("20.9s", 20 * S + 900 * MS),
            ("-2s", -2 * S),
        ];
        for &(text, want) in cases {
            assert_eq!(parse_go_duration(text), Ok(want), "for {text:?}");
        }
    }

    #[test]
    fn refuses_like_go() {
        let invalid = [
            "",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "\u{fffd}",
            "9223372036854775810ns",
            "9223372036854775808ns",
            "-9223372036854775809ns",
            "9223372036854776us",
            "3000000h",
            "9223372036854775.808us",
            "9223372036854ms775us808ns",
            "99999999999h",
        ];
        for text in invalid {
            assert_eq!(
                parse_go_duration(text),
                Err(DurationError::Invalid(text.to_owned())),
                "for {text:?}"
            );
        }
        let text = |r: Result<i64, DurationError>| r.err().map(|e| e.to_string());
        assert_eq!(
            text(parse_go_duration("bogus")).as_deref(),
            Some("time: invalid duration \"bogus\"")
        );
        assert_eq!(
            text(parse_go_duration("5")).as_deref(),
            Some("time: missing unit in duration \"5\"")
        );
        assert_eq!(
            text(parse_go_duration("5x")).as_deref(),
            Some("time: unknown unit \"x\" in duration \"5x\"")
        );
        assert_eq!(
            text(parse_go_duration("60d")).as_deref(),
            Some("time: unknown unit \"d\" in duration \"60d\"")
        );
        // Go's time.quote: bytes of non-ASCII characters as \x escapes.
        assert_eq!(
            text(parse_go_duration("\u{fffd} \"a\"")).as_deref(),
            Some("time: invalid duration \"\\xef\\xbf\\xbd \\\"a\\\"\"")
        );
    }

    #[test]
    fn std_durations_saturate() {
        assert_eq!(go_duration_std(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(duration_nanos(Duration::MAX), i64::MAX);
        assert_eq!(go_duration_std(Duration::MAX), "2562047h47m16.854775807s");
    }
}
