//! Milliseconds since the Unix epoch, the one time unit of versions, cursors and leases.
//! Saturating, so a clock before 1970 or after 292 million years gives a bound, not a panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `t` in ms since the epoch (negative before it).
pub fn epoch_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The instant `ms` after (or, negative, before) the epoch.
pub fn from_epoch_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// The wall clock now, in ms since the epoch.
pub fn now_ms() -> i64 {
    epoch_ms(SystemTime::now())
}

/// `d` in whole milliseconds.
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Parses an RFC 3339 timestamp into ms since the epoch.
pub fn parse_rfc3339_ms(value: &str) -> Option<i64> {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    let at = OffsetDateTime::parse(value.trim(), &Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

/// RFC 3339 in UTC truncated to the second, e.g. `2026-11-28T15:31:35Z`.
pub fn format_rfc3339_secs(ms: i64) -> String {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-28T15:31:35.123Z`.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let secs = format_rfc3339_secs(ms);
    format!("{}.{:03}Z", secs.trim_end_matches('Z'), ms.rem_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip_before_and_after_the_epoch() {
        for ms in [-86_400_000_i64, -1, 0, 1, 1_764_000_000_123] {
            assert_eq!(epoch_ms(from_epoch_ms(ms)), ms);
        }
    }

    #[test]
    fn rfc3339_round_trip() {
        let ms = 1_764_343_895_123;
        assert_eq!(format_rfc3339_ms(ms), "2025-11-28T15:31:35.123Z");
        assert_eq!(parse_rfc3339_ms("2025-11-28T16:31:35.123+01:00"), Some(ms));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.500Z"), Some(1_500));
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
        assert_eq!(format_rfc3339_secs(ms), "2025-11-28T15:31:35Z");
    }

    #[test]
    fn durations_saturate() {
        assert_eq!(duration_ms(Duration::from_millis(1_500)), 1_500);
        assert_eq!(duration_ms(Duration::MAX), i64::MAX);
    }
}
