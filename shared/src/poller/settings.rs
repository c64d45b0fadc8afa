//! Poller settings and their defaults (docs/poller.md explains each choice).

use std::time::Duration;

/// What a run may do. Defaults suit a 5-minute schedule on a 15-minute Lambda timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerSettings {
    /// Incremental cursor (and lease) name. Default `reconcile`.
    pub cursor_name: String,
    /// Backfill cursor (and lease) name, kept apart so a backfill never moves the incremental
    /// cursor. Default `backfill`.
    pub backfill_cursor_name: String,
    /// Re-read this far behind the cursor: covers DAM indexing lag, clock skew and Bynder's
    /// 2–5 s delay with a wide margin. Default 15 min.
    pub lookback: Duration,
    /// The cursor never passes `poll start − safety_lag`, so changes the DAM has not indexed yet
    /// are not skipped. Default 2 min.
    pub safety_lag: Duration,
    /// Assets per DAM page. Default 500 (Cloudinary's advice for its hourly Admin API budget).
    pub page_size: usize,
    /// Most DAM listing calls per run: keeps a run inside the DAM's budget (Cloudinary: ~500/h
    /// free, Bynder: 4,500 per 5 min shared per egress IP). Default 50.
    pub max_dam_calls: u32,
    /// Lease time-to-live: at least the Lambda timeout, so a crashed run's lease frees itself
    /// before the schedule after next. Default 15 min.
    pub lease_ttl: Duration,
    /// No DAM call starts closer than this to the deadline, leaving time to enqueue the page and
    /// write the cursor. Default 20 s.
    pub deadline_margin: Duration,
}

impl Default for PollerSettings {
    fn default() -> Self {
        Self {
            cursor_name: "reconcile".into(),
            backfill_cursor_name: "backfill".into(),
            lookback: Duration::from_secs(15 * 60),
            safety_lag: Duration::from_secs(2 * 60),
            page_size: 500,
            max_dam_calls: 50,
            lease_ttl: Duration::from_secs(15 * 60),
            deadline_margin: Duration::from_secs(20),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("poller setting {name}: {reason}")]
pub struct SettingsError {
    pub name: &'static str,
    pub reason: String,
}

impl PollerSettings {
    /// Reads `POLL_*` variables through `get`; unset ones keep their defaults:
    /// `POLL_CURSOR_NAME`, `POLL_BACKFILL_CURSOR_NAME`, `POLL_LOOKBACK_SECS`,
    /// `POLL_SAFETY_LAG_SECS`, `POLL_PAGE_SIZE`, `POLL_MAX_DAM_CALLS`, `POLL_LEASE_TTL_SECS`,
    /// `POLL_DEADLINE_MARGIN_SECS`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let mut s = Self::default();
        let text = |name: &'static str| -> Result<Option<String>, SettingsError> {
            match get(name) {
                Some(v) if v.trim().is_empty() => Err(SettingsError {
                    name,
                    reason: "empty".into(),
                }),
                other => Ok(other.map(|v| v.trim().to_owned())),
            }
        };
        let number = |name: &'static str| -> Result<Option<u64>, SettingsError> {
            text(name)?
                .map(|v| {
                    v.parse::<u64>().map_err(|e| SettingsError {
                        name,
                        reason: format!("{v:?}: {e}"),
                    })
                })
                .transpose()
        };
        let positive = |name: &'static str| -> Result<Option<u64>, SettingsError> {
            match number(name)? {
                Some(0) => Err(SettingsError {
                    name,
                    reason: "must be at least 1".into(),
                }),
                other => Ok(other),
            }
        };
        if let Some(v) = text("POLL_CURSOR_NAME")? {
            s.cursor_name = v;
        }
        if let Some(v) = text("POLL_BACKFILL_CURSOR_NAME")? {
            s.backfill_cursor_name = v;
        }
        if s.cursor_name == s.backfill_cursor_name {
            return Err(SettingsError {
                name: "POLL_BACKFILL_CURSOR_NAME",
                reason: "must differ from the incremental cursor name".into(),
            });
        }
        if let Some(v) = number("POLL_LOOKBACK_SECS")? {
            s.lookback = Duration::from_secs(v);
        }
        if let Some(v) = number("POLL_SAFETY_LAG_SECS")? {
            s.safety_lag = Duration::from_secs(v);
        }
        if let Some(v) = positive("POLL_PAGE_SIZE")? {
            s.page_size = usize::try_from(v).unwrap_or(usize::MAX);
        }
        if let Some(v) = positive("POLL_MAX_DAM_CALLS")? {
            s.max_dam_calls = u32::try_from(v).unwrap_or(u32::MAX);
        }
        if let Some(v) = positive("POLL_LEASE_TTL_SECS")? {
            s.lease_ttl = Duration::from_secs(v);
        }
        if let Some(v) = number("POLL_DEADLINE_MARGIN_SECS")? {
            s.deadline_margin = Duration::from_secs(v);
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<PollerSettings, SettingsError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        PollerSettings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn unset_variables_keep_the_defaults() {
        assert_eq!(from(&[]).unwrap(), PollerSettings::default());
    }

    #[test]
    fn variables_override_defaults() {
        let s = from(&[
            ("POLL_LOOKBACK_SECS", "300"),
            ("POLL_SAFETY_LAG_SECS", "0"),
            ("POLL_PAGE_SIZE", "100"),
            ("POLL_MAX_DAM_CALLS", "7"),
            ("POLL_CURSOR_NAME", "generic"),
        ])
        .unwrap();
        assert_eq!(s.lookback, Duration::from_secs(300));
        assert_eq!(s.safety_lag, Duration::ZERO);
        assert_eq!(s.page_size, 100);
        assert_eq!(s.max_dam_calls, 7);
        assert_eq!(s.cursor_name, "generic");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = from(&[("POLL_PAGE_SIZE", "0")]).unwrap_err();
        assert_eq!(e.name, "POLL_PAGE_SIZE");
        let e = from(&[("POLL_LOOKBACK_SECS", "5m")]).unwrap_err();
        assert_eq!(e.name, "POLL_LOOKBACK_SECS");
        let e = from(&[("POLL_BACKFILL_CURSOR_NAME", "reconcile")]).unwrap_err();
        assert_eq!(e.name, "POLL_BACKFILL_CURSOR_NAME");
    }
}
