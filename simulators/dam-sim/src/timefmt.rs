//! RFC 3339 helpers. The DAMs print seconds (Cloudinary, Bynder) or milliseconds (generic).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Current wall-clock time, ms since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2026-11-28T15:31:35Z` (truncated to the second).
pub fn iso_secs(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// `2026-11-28T15:31:35.123Z`.
pub fn iso_millis(ms: i64) -> String {
    let base = iso_secs(ms);
    let stem = base.trim_end_matches('Z');
    format!("{stem}.{:03}Z", ms.rem_euclid(1000))
}

/// Parses an RFC 3339 timestamp (any offset) to ms since the epoch.
pub fn parse_ms(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        let ms = 1_764_343_895_123;
        assert_eq!(iso_millis(ms), "2025-11-28T15:31:35.123Z");
        assert_eq!(iso_secs(ms), "2025-11-28T15:31:35Z");
        assert_eq!(parse_ms(&iso_millis(ms)), Some(ms));
        assert_eq!(parse_ms("2025-11-28T16:31:35+01:00"), Some(ms - 123));
        assert_eq!(parse_ms("yesterday"), None);
    }
}
