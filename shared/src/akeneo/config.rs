//! Connection settings and limits, read once at start (environment or any key lookup).

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::settings::{self, Origin, Secret, SettingError};

/// Akeneo's documented cap: 4 concurrent calls per connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;
/// Akeneo's documented cap: 100 requests per second per PIM instance.
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 100;
/// Akeneo's documented cap on attribute-option PATCH: 3 requests per second per instance.
pub const DEFAULT_OPTION_WRITES_PER_SECOND: u32 = 3;
/// Akeneo answers 413 above 100 assets in one bulk PATCH.
pub const MAX_ASSETS_PER_PATCH: usize = 100;
/// Our own byte budget per bulk PATCH. The platform's real limit is undocumented (a too-large
/// payload may come back as 403), so this is a setting.
pub const DEFAULT_BATCH_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Retry policy for transient failures (408, 429, 5xx, timeouts, resets).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Backoff ceiling of the first retry; doubles per attempt, full jitter.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // Akeneo recommends 5-8 attempts with exponential backoff.
        RetryPolicy {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(16),
        }
    }
}

/// Pacing and batching limits. One set per process: every task shares them.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_in_flight: usize,
    /// `None` disables request pacing (only for PIMs without Akeneo's cap).
    pub requests_per_second: Option<u32>,
    pub option_writes_per_second: u32,
    pub request_timeout: Duration,
    /// How long the slot of a call given up on (timed out) stays taken: the PIM may still be
    /// working on it, and our closed connection can reach the PIM after our next call does.
    pub abandoned_call_hold: Duration,
    pub connect_timeout: Duration,
    pub batch_max_items: usize,
    pub batch_max_bytes: usize,
    pub retry: RetryPolicy,
    /// Refresh the access token this long before it expires (capped at a quarter of its life).
    pub token_refresh_margin: Duration,
    /// How long a family structure stays cached in memory.
    pub structure_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            requests_per_second: Some(DEFAULT_REQUESTS_PER_SECOND),
            option_writes_per_second: DEFAULT_OPTION_WRITES_PER_SECOND,
            request_timeout: Duration::from_secs(30),
            abandoned_call_hold: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            batch_max_items: MAX_ASSETS_PER_PATCH,
            batch_max_bytes: DEFAULT_BATCH_MAX_BYTES,
            retry: RetryPolicy::default(),
            token_refresh_margin: Duration::from_secs(60),
            structure_ttl: Duration::from_secs(300),
        }
    }
}

/// Credentials of an Akeneo "Connection" (Connect > Connection settings) and the limits to
/// respect.
#[derive(Debug, Clone)]
pub struct AkeneoConfig {
    pub base_url: Url,
    pub client_id: String,
    pub client_secret: SecretString,
    pub username: String,
    pub password: SecretString,
    pub limits: Limits,
}

/// The PIM's settings as the user writes them: the `[pim]` table of the `serve` config, or the
/// `AKENEO_*` variables (key `max_in_flight` is `AKENEO_MAX_IN_FLIGHT`). Unset limits keep
/// [`Limits::default`]; [`AkeneoConfig::from_settings`] validates.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PimSettings {
    pub base_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub max_in_flight: Option<usize>,
    /// 0 disables pacing (only for PIMs without Akeneo's cap).
    pub requests_per_second: Option<u32>,
    pub option_writes_per_second: Option<u32>,
    pub timeout_ms: Option<u64>,
    pub batch_max_bytes: Option<usize>,
    pub batch_max_items: Option<usize>,
    pub max_attempts: Option<u32>,
}

/// Prefix of the PIM's variables.
pub const ENV_PREFIX: &str = "AKENEO_";

/// A missing or malformed PIM setting, named as the user wrote it.
pub type ConfigError = SettingError;

impl AkeneoConfig {
    /// Reads `AKENEO_*` variables from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the `AKENEO_*` settings through any lookup (tests pass a map; no `set_var`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let origin = Origin::Env(ENV_PREFIX);
        let raw: PimSettings = settings::from_lookup(ENV_PREFIX, &get)?;
        Self::from_settings(&raw).map_err(|e| e.at(origin))
    }

    /// Validates the settings; errors name keys by field (`batch_max_items`), to be renamed
    /// with [`SettingError::at`] for the front they came from.
    pub fn from_settings(raw: &PimSettings) -> Result<Self, ConfigError> {
        let required = |key: &str, value: &Option<String>, hint: &str| {
            settings::required_text(key, value, hint).map(str::to_owned)
        };
        let connection = "copy it from the PIM's Connection settings";
        // Every problem at once: a user fixing four unset variables needs one run, not four.
        let mut problems = settings::Problems::default();
        let base_url = problems
            .take(required(
                "base_url",
                &raw.base_url,
                "set it to your PIM's address, e.g. https://my-pim.cloud.akeneo.com",
            ))
            .and_then(|raw_url| problems.take(parse_base_url(&raw_url)));
        let client_id = problems.take(required("client_id", &raw.client_id, connection));
        let client_secret = problems.take(Secret::require(
            &raw.client_secret,
            "client_secret",
            connection,
        ));
        let username = problems.take(required(
            "username",
            &raw.username,
            "use the Connection's API username",
        ));
        let password = problems.take(Secret::require(
            &raw.password,
            "password",
            "use the Connection's API password",
        ));

        let mut limits = Limits::default();
        if let Some(v) = raw
            .max_in_flight
            .and_then(|v| problems.take(positive("max_in_flight", v)))
        {
            limits.max_in_flight = v;
        }
        if let Some(v) = raw.requests_per_second {
            limits.requests_per_second = (v > 0).then_some(v);
        }
        if let Some(v) = raw
            .option_writes_per_second
            .and_then(|v| problems.take(positive("option_writes_per_second", v)))
        {
            limits.option_writes_per_second = v;
        }
        if let Some(v) = raw
            .timeout_ms
            .and_then(|v| problems.take(positive("timeout_ms", v)))
        {
            limits.request_timeout = Duration::from_millis(v);
        }
        if let Some(v) = raw
            .batch_max_bytes
            .and_then(|v| problems.take(positive("batch_max_bytes", v)))
        {
            limits.batch_max_bytes = v;
        }
        if let Some(v) = raw.batch_max_items {
            if v == 0 || v > MAX_ASSETS_PER_PATCH {
                problems.push(SettingError::invalid(
                    "batch_max_items",
                    v,
                    format!("must be 1 to {MAX_ASSETS_PER_PATCH} (Akeneo answers 413 above)"),
                ));
            } else {
                limits.batch_max_items = v;
            }
        }
        if let Some(v) = raw
            .max_attempts
            .and_then(|v| problems.take(positive("max_attempts", v)))
        {
            limits.retry.max_attempts = v;
        }

        let (Some(base_url), Some(client_id), Some(client_secret), Some(username), Some(password)) =
            (base_url, client_id, client_secret, username, password)
        else {
            return Err(problems
                .finish()
                .err()
                .unwrap_or_else(|| SettingError::Other("the PIM settings are incomplete".into())));
        };
        problems.finish()?;
        Ok(AkeneoConfig {
            base_url,
            client_id,
            client_secret,
            username,
            password,
            limits,
        })
    }
}

/// Accepts `https://host`, `https://host/` or a sub-path install; the API paths are appended.
pub fn parse_base_url(raw: &str) -> Result<Url, ConfigError> {
    let invalid = |reason: String| SettingError::invalid("base_url", raw, reason);
    let mut url = Url::parse(raw.trim()).map_err(|e| {
        invalid(format!(
            "{e}; expected an absolute URL such as https://my-pim.cloud.akeneo.com"
        ))
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(invalid("the scheme must be http or https".into()));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(invalid("the URL has no host".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("remove the query string or fragment".into()));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn positive<T: PartialOrd + Default + ToString>(key: &str, v: T) -> Result<T, ConfigError> {
    if v > T::default() {
        Ok(v)
    } else {
        Err(SettingError::invalid(
            key,
            v.to_string(),
            "must be greater than zero",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const BASE: &[(&str, &str)] = &[
        ("AKENEO_BASE_URL", "https://pim.example.com"),
        ("AKENEO_CLIENT_ID", "id"),
        ("AKENEO_CLIENT_SECRET", "secret"),
        ("AKENEO_USERNAME", "user"),
        ("AKENEO_PASSWORD", "pass"),
    ];

    #[test]
    fn reads_required_settings_and_defaults() {
        let c = AkeneoConfig::from_lookup(env(BASE)).unwrap();
        assert_eq!(c.base_url.as_str(), "https://pim.example.com/");
        assert_eq!(c.client_secret.expose_secret(), "secret");
        assert_eq!(c.limits, Limits::default());
        assert!(
            !format!("{c:?}").contains("secret\""),
            "secrets must not be printed"
        );
    }

    #[test]
    fn names_the_missing_variable() {
        let partial: Vec<_> = BASE
            .iter()
            .filter(|(k, _)| *k != "AKENEO_PASSWORD")
            .cloned()
            .collect();
        let err = AkeneoConfig::from_lookup(env(&partial)).unwrap_err();
        assert!(
            err.to_string().starts_with("AKENEO_PASSWORD is not set"),
            "{err}"
        );
    }

    #[test]
    fn names_every_missing_variable_in_one_error() {
        let only_url = &BASE[..1];
        let err = AkeneoConfig::from_lookup(env(only_url)).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("4 settings need fixing:"), "{text}");
        for name in [
            "AKENEO_CLIENT_ID",
            "AKENEO_CLIENT_SECRET",
            "AKENEO_USERNAME",
            "AKENEO_PASSWORD",
        ] {
            assert!(text.contains(&format!("\n  {name} is not set: ")), "{text}");
        }
    }

    #[test]
    fn rejects_bad_urls_and_limits() {
        let mut bad = BASE.to_vec();
        bad[0] = ("AKENEO_BASE_URL", "pim.example.com");
        let err = AkeneoConfig::from_lookup(env(&bad)).unwrap_err();
        assert!(err.to_string().contains("AKENEO_BASE_URL"), "{err}");

        let mut bad = BASE.to_vec();
        bad.push(("AKENEO_BATCH_MAX_ITEMS", "101"));
        let err = AkeneoConfig::from_lookup(env(&bad)).unwrap_err();
        assert!(err.to_string().contains("413"), "{err}");

        let mut bad = BASE.to_vec();
        bad.push(("AKENEO_MAX_IN_FLIGHT", "four"));
        assert!(AkeneoConfig::from_lookup(env(&bad)).is_err());
    }

    #[test]
    fn keeps_sub_path_installs() {
        let url = parse_base_url("http://127.0.0.1:8081/pim").unwrap();
        assert_eq!(
            url.join("api/rest/v1/").unwrap().as_str(),
            "http://127.0.0.1:8081/pim/api/rest/v1/"
        );
    }
}
