//! Timestamps written the way Docker writes them: RFC 3339 in UTC with
//! nanoseconds, e.g. `2026-11-28T03:29:23.931479893Z`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, serialised as RFC 3339 UTC with nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    /// Now.
    pub fn now() -> Timestamp {
        Timestamp(SystemTime::now())
    }
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
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

/// A civil date to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs() as i64;
        let (y, m, day) = civil_from_days(secs.div_euclid(86_400));
        let rem = secs.rem_euclid(86_400);
        write!(
            f,
            "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            d.subsec_nanos()
        )
    }
}

impl std::str::FromStr for Timestamp {
    type Err = String;
    fn from_str(s: &str) -> Result<Timestamp, String> {
        let bad = || format!("{s:?} is not an RFC 3339 UTC timestamp");
        let b = s.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !s.ends_with('Z') {
            return Err(bad());
        }
        let field = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<u32>().ok()).ok_or_else(bad);
        let (y, mo, d, h, mi, se) =
            (field(0..4)?, field(5..7)?, field(8..10)?, field(11..13)?, field(14..16)?, field(17..19)?);
        let frac = &s[19..s.len() - 1];
        let nanos = if frac.is_empty() {
            0
        } else {
            let digits = frac.strip_prefix('.').ok_or_else(bad)?;
            if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            digits.parse::<u32>().map_err(|_| bad())? * 10u32.pow(9 - digits.len() as u32)
        };
        let days = days_from_civil(y as i64, mo, d);
        let secs = days * 86_400 + (h * 3600 + mi * 60 + se) as i64;
        if secs < 0 {
            return Err(bad());
        }
        Ok(Timestamp(UNIX_EPOCH + Duration::new(secs as u64, nanos)))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_docker_and_round_trips() {
        let t: Timestamp = "2026-11-28T03:29:23.931479893Z".parse().unwrap();
        assert_eq!(t.to_string(), "2026-11-28T03:29:23.931479893Z");
        assert_eq!(Timestamp(UNIX_EPOCH).to_string(), "1970-01-01T00:00:00.000000000Z");
        let leap: Timestamp = "2024-02-29T23:59:59Z".parse().unwrap();
        assert_eq!(leap.to_string(), "2024-02-29T23:59:59.000000000Z");
        let now = Timestamp::now();
        assert_eq!(now.to_string().parse::<Timestamp>().unwrap(), now);
        assert!("2026-11-28 03:29:23Z".parse::<Timestamp>().is_err());
    }
}
