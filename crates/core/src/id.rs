//! Stream ids (`<ms>-<seq>`) and the ISO-8601 timestamps derived from them.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A stream entry id. Orders like Redis orders ids: by milliseconds, then sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    /// Unix milliseconds of the server clock when the entry was stored.
    pub ms: u64,
    /// Sequence within that millisecond.
    pub seq: u64,
}

impl StreamId {
    /// The id before every real entry.
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    /// Make an id.
    pub fn new(ms: u64, seq: u64) -> Self {
        StreamId { ms, seq }
    }

    /// The ISO-8601 UTC time of the id's milliseconds, e.g. `2026-11-28T04:44:38.123Z`.
    pub fn iso(&self) -> String {
        iso_from_ms(self.ms)
    }

    /// The smallest id greater than this one.
    pub fn next(&self) -> StreamId {
        if self.seq == u64::MAX {
            StreamId::new(self.ms + 1, 0)
        } else {
            StreamId::new(self.ms, self.seq + 1)
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for StreamId {
    type Err = Error;

    /// Accepts `<ms>-<seq>` and, as Redis does, a bare `<ms>` (sequence 0).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            Error::argument(format!(
                "'{s}' is not a stream id: expected '<ms>-<seq>', e.g. '1700000000000-0'"
            ))
        };
        let (ms, seq) = match s.split_once('-') {
            Some((ms, seq)) => (ms, seq),
            None => (s, "0"),
        };
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(bad());
        }
        Ok(StreamId {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// ISO-8601 UTC with milliseconds for a Unix time in milliseconds.
pub fn iso_from_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let millis = ms % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) — H. Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        let a: StreamId = "1700000000000-5".parse().unwrap();
        let b: StreamId = "1700000000001".parse().unwrap();
        assert_eq!(a, StreamId::new(1_700_000_000_000, 5));
        assert!(a < b);
        assert_eq!(b.to_string(), "1700000000001-0");
        assert!("17-".parse::<StreamId>().is_err());
        assert!("-1".parse::<StreamId>().is_err());
        assert!("1a-0".parse::<StreamId>().is_err());
        assert!("".parse::<StreamId>().is_err());
    }

    #[test]
    fn iso_matches_known_instants() {
        assert_eq!(iso_from_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_from_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso_from_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(iso_from_ms(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }
}
