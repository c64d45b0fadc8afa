//! The consumer's tuning as the user writes it: keys of the `[consumer]` table of the `serve`
//! config or the `CONSUMER_*` variables (key `max_media_bytes` is `CONSUMER_MAX_MEDIA_BYTES`).

use std::time::Duration;

use serde::Deserialize;

use super::ConsumerSettings;
use crate::settings::{self, Origin, SettingError};

/// Prefix of the consumer's variables.
pub const ENV_PREFIX: &str = "CONSUMER_";

/// Unset keys keep the defaults of [`ConsumerSettings`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerKeys {
    pub safety_margin_ms: Option<u64>,
    pub fetch_batch: Option<usize>,
    pub writes_in_flight: Option<usize>,
    pub max_media_bytes: Option<u64>,
    pub media_in_flight: Option<usize>,
    pub max_receives: Option<u32>,
    pub lag_receives: Option<u32>,
    pub unknown_outcome_hold_secs: Option<u64>,
}

impl ConsumerSettings {
    /// Reads the `CONSUMER_*` variables through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingError> {
        let keys: ConsumerKeys = settings::from_lookup(ENV_PREFIX, &get)?;
        Self::from_keys(&keys).map_err(|e| e.at(Origin::Env(ENV_PREFIX)))
    }

    /// Validates the keys; errors name them by field, to be renamed with [`SettingError::at`].
    pub fn from_keys(keys: &ConsumerKeys) -> Result<Self, SettingError> {
        let mut s = Self::default();
        let at_least_one = |key: &str, v: usize| {
            if v == 0 {
                Err(SettingError::invalid(key, v, "must be at least 1"))
            } else {
                Ok(v)
            }
        };
        if let Some(ms) = keys.safety_margin_ms {
            s.safety_margin = Duration::from_millis(ms);
        }
        if let Some(v) = keys.fetch_batch {
            // The DAM clients cap a fetch at 100 ids whatever this says.
            s.fetch_batch = at_least_one("fetch_batch", v)?;
        }
        if let Some(v) = keys.writes_in_flight {
            s.writes_in_flight = at_least_one("writes_in_flight", v)?;
        }
        if let Some(v) = keys.max_media_bytes {
            s.max_media_bytes = v;
        }
        if let Some(v) = keys.media_in_flight {
            s.media_in_flight = at_least_one("media_in_flight", v)?;
        }
        if let Some(v) = keys.max_receives {
            s.max_receives = at_least_one("max_receives", v as usize)? as u32;
        }
        if let Some(v) = keys.lag_receives {
            s.lag_receives = v;
        }
        if let Some(v) = keys.unknown_outcome_hold_secs {
            s.unknown_outcome_hold = Duration::from_secs(v);
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn variables_and_file_keys_set_the_same_tuning() {
        let map = HashMap::from([
            ("CONSUMER_SAFETY_MARGIN_MS", "1500"),
            ("CONSUMER_MAX_MEDIA_BYTES", "4096"),
            ("CONSUMER_MEDIA_IN_FLIGHT", "3"),
        ]);
        let env = ConsumerSettings::from_lookup(|k| map.get(k).map(|v| (*v).to_owned())).unwrap();
        let keys: ConsumerKeys =
            toml::from_str("safety_margin_ms = 1500\nmax_media_bytes = 4096\nmedia_in_flight = 3")
                .unwrap();
        let file = ConsumerSettings::from_keys(&keys).unwrap();
        for s in [env, file] {
            assert_eq!(s.safety_margin, Duration::from_millis(1500));
            assert_eq!(s.max_media_bytes, 4096);
            assert_eq!(s.media_in_flight, 3);
            assert_eq!(s.fetch_batch, ConsumerSettings::default().fetch_batch);
        }
        let e = ConsumerSettings::from_lookup(|k| {
            (k == "CONSUMER_MEDIA_IN_FLIGHT").then(|| "0".to_owned())
        })
        .unwrap_err();
        assert_eq!(e.name(), Some("CONSUMER_MEDIA_IN_FLIGHT"));
    }
}
