//! Time as Cradle stores it: UTC microseconds since the Unix epoch (`WallUs`) for
//! wall-clock instants, and the 90 kHz RTP clock for durations inside a run.
//! Conversions and RFC 3339 formatting live here so every module agrees.

use std::time::{SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// UTC microseconds since 1970-01-01T00:00:00Z.
pub type WallUs = i64;

/// Ticks of the 90 kHz clock every H.264/H.265 RTP stream uses (RFC 6184 §8.2.1).
pub const TICKS_PER_SEC: i64 = 90_000;

pub fn now_us() -> WallUs {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock before 1970");
    d.as_micros() as i64
}

/// 90 kHz ticks to microseconds, rounding to nearest.
pub fn ticks_to_us(ticks: i64) -> i64 {
    (ticks * 1_000_000 + TICKS_PER_SEC / 2).div_euclid(TICKS_PER_SEC)
}

/// RFC 3339 with microseconds, always `Z`: `2026-11-23T02:36:22.123456Z`.
pub fn format_rfc3339(us: WallUs) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1000).expect("time in range");
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

pub fn parse_rfc3339(s: &str) -> Result<WallUs, String> {
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("{s:?} is not an RFC 3339 time ({e})"))?;
    Ok((t.unix_timestamp_nanos() / 1000) as i64)
}

/// Compact form for object keys, which must sort by time: `20261123T023622.123456Z`.
pub fn format_compact(us: WallUs) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1000).expect("time in range");
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:06}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

pub fn parse_compact(s: &str) -> Option<WallUs> {
    let b = s.as_bytes();
    if b.len() != 23 || b[8] != b'T' || b[15] != b'.' || b[22] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let date = time::Date::from_calendar_date(
        num(0..4)? as i32,
        time::Month::try_from(num(4..6)? as u8).ok()?,
        num(6..8)? as u8,
    )
    .ok()?;
    let tod = time::Time::from_hms_micro(num(9..11)? as u8, num(11..13)? as u8, num(13..15)? as u8, num(16..22)? as u32)
        .ok()?;
    let t = time::PrimitiveDateTime::new(date, tod).assume_utc();
    Some((t.unix_timestamp_nanos() / 1000) as i64)
}

/// The UTC calendar day, `2026-11-23`, used as a key prefix.
pub fn format_day(us: WallUs) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1000).expect("time in range");
    format!("{:04}-{:02}-{:02}", t.year(), t.month() as u8, t.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_round_trips_and_sorts() {
        let a = 1_795_000_000_123_456;
        let s = format_compact(a);
        assert_eq!(parse_compact(&s), Some(a));
        assert!(format_compact(a) < format_compact(a + 1));
        assert_eq!(parse_rfc3339(&format_rfc3339(a)).unwrap(), a);
    }

    #[test]
    fn ticks_convert_to_micros() {
        assert_eq!(ticks_to_us(90_000), 1_000_000);
        assert_eq!(ticks_to_us(3600), 40_000);
        assert_eq!(ticks_to_us(1), 11);
    }
}
