//! ISO-8601 helpers. Akeneo renders `created`/`updated` with second precision in UTC
//! (`2021-05-31T09:23:34+00:00`), so timestamps are kept as whole Unix seconds.

use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

// Howard Hinnant's civil-from-days / days-from-civil algorithms.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub(crate) fn format_ts(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+00:00",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn num(s: &str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = s.parse().ok()?;
    range.contains(&n).then_some(n)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Parses `YYYY-MM-DD` or `YYYY-MM-DD[T ]HH:MM:SS[.frac][Z|±HH:MM|±HHMM]` into Unix seconds.
pub(crate) fn parse_iso8601(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.len() < 10 || !s.is_char_boundary(10) {
        return None;
    }
    let (date, rest) = s.split_at(10);
    let b = date.as_bytes();
    if b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = num(&date[0..4], 0..=9999)?;
    let m = num(&date[5..7], 1..=12)?;
    let d = num(&date[8..10], 1..=days_in_month(y, m))?;
    let day_secs = days_from_civil(y, m, d) * 86_400;
    if rest.is_empty() {
        return Some(day_secs);
    }
    let rest = rest.strip_prefix('T').or_else(|| rest.strip_prefix(' '))?;
    if rest.len() < 8 || !rest.is_char_boundary(8) {
        return None;
    }
    let (time, mut tz) = rest.split_at(8);
    let t = time.as_bytes();
    if t[2] != b':' || t[5] != b':' {
        return None;
    }
    let hh = num(&time[0..2], 0..=23)?;
    let mm = num(&time[3..5], 0..=59)?;
    let ss = num(&time[6..8], 0..=59)?;
    if let Some(frac) = tz.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        tz = &frac[digits..];
    }
    let offset = match tz {
        "" | "Z" => 0,
        _ => {
            let sign = match tz.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let body = &tz[1..];
            let (oh, om) = match body.len() {
                5 if body.as_bytes()[2] == b':' => (&body[0..2], &body[3..5]),
                4 => (&body[0..2], &body[2..4]),
                _ => return None,
            };
            sign * (num(oh, 0..=23)? * 3600 + num(om, 0..=59)? * 60)
        }
    };
    Some(day_secs + hh * 3600 + mm * 60 + ss - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_offsets() {
        let t = parse_iso8601("2021-05-31T09:23:34+00:00").unwrap();
        assert_eq!(format_ts(t), "2021-05-31T09:23:34+00:00");
        assert_eq!(parse_iso8601("2021-05-31T11:23:34+02:00"), Some(t));
        assert_eq!(parse_iso8601("2021-05-31T09:23:34.123Z"), Some(t));
        assert_eq!(parse_iso8601("2021-05-31 09:23:34"), Some(t));
        assert_eq!(parse_iso8601("1970-01-01"), Some(0));
        assert_eq!(format_ts(951_782_400), "2000-02-29T00:00:00+00:00");
    }

    #[test]
    fn rejects_invalid_dates() {
        for bad in [
            "2021-02-30",
            "2021-13-01",
            "31/05/2021",
            "2021-05-31T25:00:00",
            "2021-05-31T09:23",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }
}
