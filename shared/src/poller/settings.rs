//! Poller settings and their defaults (docs/poller.md explains each choice).

use std::time::Duration;

use serde::Deserialize;

use crate::settings::{self, Origin, SettingError};

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

/// The poller's settings as the user writes them: the `[poller]` table of the `serve` config or
/// the `POLL_*` variables (key `lookback_secs` is `POLL_LOOKBACK_SECS`). Unset keys keep the
/// defaults of [`PollerSettings`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollKeys {
    pub cursor_name: Option<String>,
    pub backfill_cursor_name: Option<String>,
    pub lookback_secs: Option<u64>,
    pub safety_lag_secs: Option<u64>,
    pub page_size: Option<u64>,
    pub max_dam_calls: Option<u64>,
    pub lease_ttl_secs: Option<u64>,
    pub deadline_margin_secs: Option<u64>,
}

/// Prefix of the poller's variables.
pub const ENV_PREFIX: &str = "POLL_";

/// A bad poller setting, named as the user wrote it.
pub type SettingsError = SettingError;

impl PollerSettings {
    /// Reads the `POLL_*` variables through `get`; unset ones keep their defaults.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let keys: PollKeys = settings::from_lookup(ENV_PREFIX, &get)?;
        Self::from_keys(&keys).map_err(|e| e.at(Origin::Env(ENV_PREFIX)))
    }

    /// Validates the keys; errors name them by field, to be renamed with [`SettingError::at`].
    pub fn from_keys(keys: &PollKeys) -> Result<Self, SettingsError> {
        let mut s = Self::default();
        let positive = |key: &str, v: Option<u64>| match v {
            Some(0) => Err(SettingError::invalid(key, 0, "must be at least 1")),
            other => Ok(other),
        };
        if let Some(v) = &keys.cursor_name {
            s.cursor_name = v.trim().to_owned();
        }
        if let Some(v) = &keys.backfill_cursor_name {
            s.backfill_cursor_name = v.trim().to_owned();
        }
        if s.cursor_name == s.backfill_cursor_name {
            return Err(SettingError::invalid(
                "backfill_cursor_name",
                &s.backfill_cursor_name,
                "must differ from the incremental cursor name",
            ));
        }
        if let Some(v) = keys.lookback_secs {
            s.lookback = Duration::from_secs(v);
        }
        if let Some(v) = keys.safety_lag_secs {
            s.safety_lag = Duration::from_secs(v);
        }
        if let Some(v) = positive("page_size", keys.page_size)? {
            s.page_size = usize::try_from(v).unwrap_or(usize::MAX);
        }
        if let Some(v) = positive("max_dam_calls", keys.max_dam_calls)? {
            s.max_dam_calls = u32::try_from(v).unwrap_or(u32::MAX);
        }
        if let Some(v) = positive("lease_ttl_secs", keys.lease_ttl_secs)? {
            s.lease_ttl = Duration::from_secs(v);
        }
        if let Some(v) = keys.deadline_margin_secs {
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
        assert_eq!(e.name(), Some("POLL_PAGE_SIZE"));
        let e = from(&[("POLL_LOOKBACK_SECS", "5m")]).unwrap_err();
        assert_eq!(e.name(), Some("POLL_LOOKBACK_SECS"));
        let e = from(&[("POLL_BACKFILL_CURSOR_NAME", "reconcile")]).unwrap_err();
        assert_eq!(e.name(), Some("POLL_BACKFILL_CURSOR_NAME"));
    }
}
