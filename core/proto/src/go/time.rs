//! RFC 3339 timestamps as Go's `time.Time` encodes them in JSON.
//!
//! Service advertisements carry the time they were generated; receivers keep an ad
//! only if its time is strictly after the stored one, so times are compared as
//! instants whatever offset they were written with. Encoding is Go's
//! `RFC3339Nano` in UTC: `2026-11-25T16:47:01.425638621Z`, trailing zeros of the
//! fraction trimmed and no fraction at all for whole seconds.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An instant with nanosecond precision, as seconds and nanoseconds since the Unix
/// epoch (negative seconds for times before 1970, e.g. Go's zero time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoTime {
    secs: i64,
    nanos: u32,
}

/// A string that is not an RFC 3339 timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid RFC 3339 time")]
pub struct TimeParseError;

impl GoTime {
    /// Go's zero `time.Time` (0001-01-01T00:00:00Z), what a missing or `null` time decodes to.
    pub const ZERO: GoTime = GoTime {
        secs: -62_135_596_800,
        nanos: 0,
    };

    /// The instant `t`.
    pub fn from_system_time(t: SystemTime) -> GoTime {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => GoTime {
                secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let mut secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                let mut nanos = d.subsec_nanos();
                if nanos > 0 {
                    secs -= 1;
                    nanos = 1_000_000_000 - nanos;
                }
                GoTime { secs, nanos }
            }
        }
    }

    /// The instant as a `SystemTime` (saturating at the epoch for earlier times).
    pub fn to_system_time(self) -> SystemTime {
        match u64::try_from(self.secs) {
            Ok(s) => UNIX_EPOCH + Duration::new(s, self.nanos),
            Err(_) => UNIX_EPOCH,
        }
    }

    /// Seconds since the Unix epoch.
    pub fn unix_seconds(self) -> i64 {
        self.secs
    }

    /// Parses an RFC 3339 timestamp (`Z` or a `±hh:mm` offset, optional fraction).
    pub fn parse(s: &str) -> Result<GoTime, TimeParseError> {
        let b = s.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
            return Err(TimeParseError);
        }
        if !matches!(b[10], b'T' | b't') {
            return Err(TimeParseError);
        }
        let year = digits(&b[0..4])?;
        let month = digits(&b[5..7])?;
        let day = digits(&b[8..10])?;
        let hour = digits(&b[11..13])?;
        let minute = digits(&b[14..16])?;
        let second = digits(&b[17..19])?;
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return Err(TimeParseError);
        }
        let mut rest = &b[19..];
        let mut nanos = 0u32;
        if let Some((&b'.', frac)) = rest.split_first() {
            let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 || n > 9 {
                return Err(TimeParseError);
            }
            for (i, &c) in frac[..n].iter().enumerate() {
                nanos += u32::from(c - b'0') * 10u32.pow(8 - i as u32);
            }
            rest = &frac[n..];
        }
        let offset = match rest {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let oh = digits(&[*h1, *h2])?;
                let om = digits(&[*m1, *m2])?;
                if oh > 23 || om > 59 {
                    return Err(TimeParseError);
                }
                let off = (oh * 3600 + om * 60) as i64;
                if *sign == b'-' {
                    -off
                } else {
                    off
                }
            }
            _ => return Err(TimeParseError),
        };
        let days = days_from_civil(year as i64, month, day);
        let secs = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64 - offset;
        Ok(GoTime { secs, nanos })
    }
}

impl fmt::Display for GoTime {
    /// Go `RFC3339Nano` in UTC.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.secs.div_euclid(86_400);
        let tod = self.secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            y,
            m,
            d,
            tod / 3600,
            (tod / 60) % 60,
            tod % 60
        )?;
        if self.nanos > 0 {
            let frac = format!("{:09}", self.nanos);
            write!(f, ".{}", frac.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

fn digits(b: &[u8]) -> Result<u32, TimeParseError> {
    b.iter().try_fold(0u32, |acc, &c| {
        if c.is_ascii_digit() {
            Ok(acc * 10 + u32::from(c - b'0'))
        } else {
            Err(TimeParseError)
        }
    })
}

fn is_leap(y: u32) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_like_go() {
        let t = GoTime::parse("2026-11-25T16:47:01.425638621Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-25T16:47:01.425638621Z");
        let t = GoTime::parse("2026-11-25T16:46:58.779454Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-25T16:46:58.779454Z");
        let t = GoTime::parse("2024-02-29T00:00:00.500000000Z").unwrap();
        assert_eq!(t.to_string(), "2024-02-29T00:00:00.5Z");
        assert_eq!(GoTime::ZERO.to_string(), "0001-01-01T00:00:00Z");
        assert_eq!(GoTime::parse("0001-01-01T00:00:00Z"), Ok(GoTime::ZERO));
        assert_eq!(
            GoTime::from_system_time(UNIX_EPOCH).to_string(),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn offsets_compare_as_instants() {
        let a = GoTime::parse("2026-11-25T17:47:01+01:00").unwrap();
        let b = GoTime::parse("2026-11-25T16:47:01Z").unwrap();
        assert_eq!(a, b);
        let c = GoTime::parse("2026-11-25T16:47:01.000000001Z").unwrap();
        assert!(c > b);
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "2026-11-25",
            "2026-13-25T16:47:01Z",
            "2026-02-30T16:47:01Z",
            "2026-11-25T16:47:01",
            "2026-11-25T16:47:01.Z",
            "2026-11-25T16:47:01.1234567890Z",
            "2026-11-25T16:47:01+0100",
            "２026-11-25T16:47:01Z",
        ] {
            assert!(GoTime::parse(s).is_err(), "{s}");
        }
    }

    proptest! {
        #[test]
        fn round_trip(secs in -62_135_596_800i64..253_402_300_799, nanos in 0u32..1_000_000_000) {
            let t = GoTime { secs, nanos };
            prop_assert_eq!(GoTime::parse(&t.to_string()), Ok(t));
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = GoTime::parse(&s);
        }
    }
}
