//! Helpers shared by the webhook verifiers: header lookup, timestamp windows, timestamps.

use std::time::{Duration, SystemTime};

use subtle::ConstantTimeEq;

use super::{WebhookError, WebhookRequest};
use crate::time::epoch_ms;

/// The value of a header (names are stored lower-cased), or `Unauthorized` when it is
/// missing: every header the verifiers read is part of the authentication.
pub(crate) fn required_header<'a>(
    request: &'a WebhookRequest,
    name: &str,
) -> Result<&'a str, WebhookError> {
    header(request, name)
        .ok_or_else(|| WebhookError::Unauthorized(format!("missing header {name}")))
}

pub(crate) fn header<'a>(request: &'a WebhookRequest, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// Parses a Unix-seconds timestamp header value.
pub(crate) fn unix_seconds(value: &str, name: &str) -> Result<i64, WebhookError> {
    value
        .trim()
        .parse::<i64>()
        .map_err(|_| WebhookError::Unauthorized(format!("{name} is not a unix timestamp")))
}

/// Rejects a signed timestamp older than `max_age` or further than `max_future` ahead of
/// `now`: outside that window a captured delivery could be replayed.
pub(crate) fn check_window(
    signed_at_ms: i64,
    now: SystemTime,
    max_age: Duration,
    max_future: Duration,
) -> Result<(), WebhookError> {
    let now_ms = epoch_ms(now);
    let age_ms = i128::from(now_ms) - i128::from(signed_at_ms);
    if age_ms > max_age.as_millis() as i128 {
        return Err(WebhookError::Unauthorized(format!(
            "timestamp {}s too old",
            age_ms / 1000
        )));
    }
    if -age_ms > max_future.as_millis() as i128 {
        return Err(WebhookError::Unauthorized(format!(
            "timestamp {}s in the future",
            -age_ms / 1000
        )));
    }
    Ok(())
}

/// Constant-time equality, so a forger learns nothing from response timing.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn window_accepts_inside_and_rejects_outside() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        let age = Duration::from_secs(300);
        let skew = Duration::from_secs(60);
        assert!(check_window(10_000_000 - 300_000, now, age, skew).is_ok());
        assert!(check_window(10_000_000 - 300_001, now, age, skew).is_err());
        assert!(check_window(10_000_000 + 60_000, now, age, skew).is_ok());
        assert!(check_window(10_000_000 + 60_001, now, age, skew).is_err());
    }

    #[test]
    fn ct_eq_compares_content_and_length() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }
}
