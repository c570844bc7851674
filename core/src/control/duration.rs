//! Durations printed the way Go's `time.Duration.String()` prints them.
//!
//! `ping` and `traceroute` replies carry the round-trip time twice: `Time` in integer
//! nanoseconds and `TimeStr` as Go renders a `time.Duration` (`261.951µs`, `1.5s`,
//! `2m3s`). Clients display `TimeStr` verbatim, so the text must match Go exactly:
//! below one second the largest unit of ns, µs (U+00B5) or ms that keeps an integer
//! part is used; from one second on the form is `[<h>h][<m>m]<s>[.<frac>]s`; fractions
//! drop trailing zeros and zero is `0s`.

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

    #[test]
    fn std_durations_saturate() {
        assert_eq!(go_duration_std(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(duration_nanos(Duration::MAX), i64::MAX);
        assert_eq!(go_duration_std(Duration::MAX), "2562047h47m16.854775807s");
    }
}
