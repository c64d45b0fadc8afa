//! The `--config FILE` of `serve`, `check` and `backfill`: one TOML file for the whole
//! connector. Settings are fed through the same parsers as the Lambda functions' environment
//! variables (`AkeneoConfig::from_lookup`, `IngestConfig::from_lookup`,
//! `PollerSettings::from_lookup`), so both paths accept and refuse the same values.
//!
//! Any secret may be written inline or as `{ env = "VARIABLE" }`, read from the environment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use shared::akeneo::AkeneoConfig;
use shared::dam::AssetSource;
use shared::dam::bynder::api::{BynderApi, BynderApiSettings};
use shared::dam::cloudinary::api::{CloudinaryApi, CloudinaryApiSettings};
use shared::dam::generic::api::{GenericApi, GenericApiSettings};
use shared::ingest::IngestConfig;
use shared::mapping::Mapping;
use shared::poller::PollerSettings;
use url::Url;

/// A configuration problem: names the file, the key and the fix.
#[derive(Debug, thiserror::Error)]
#[error("config {file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

/// A secret: inline text or the name of an environment variable holding it.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Secret {
    Inline(String),
    Env { env: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Where the webhook endpoint listens, e.g. `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    pub max_body_bytes: Option<u64>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_body_bytes: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// The SQLite file (relative paths are relative to the config file).
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PimSection {
    pub base_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub username: String,
    pub password: Secret,
    pub max_in_flight: Option<u64>,
    pub requests_per_second: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub max_attempts: Option<u64>,
    pub batch_max_items: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DamKindName {
    Generic,
    Cloudinary,
    Bynder,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DamSection {
    pub kind: DamKindName,
    /// generic: base of the REST contract (`{api_url}/assets`, `{api_url}/changes`).
    pub api_url: Option<String>,
    /// generic: bearer token of the REST contract.
    pub api_token: Option<Secret>,
    /// generic: Standard Webhooks secrets (`whsec_...`), several during a rotation.
    #[serde(default)]
    pub webhook_secrets: Vec<Secret>,
    /// cloudinary
    pub cloud_name: Option<String>,
    pub api_key: Option<String>,
    pub api_secret: Option<Secret>,
    pub api_base: Option<String>,
    /// bynder
    pub portal_url: Option<String>,
    pub token: Option<Secret>,
    #[serde(default)]
    pub topic_arns: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSection {
    /// A mapping file (relative to the config file), or...
    pub path: Option<PathBuf>,
    /// ...the mapping itself, as a TOML string.
    pub inline: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollerSection {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Seconds between incremental polls.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    pub lookback_secs: Option<u64>,
    pub safety_lag_secs: Option<u64>,
    pub page_size: Option<u64>,
    pub max_dam_calls: Option<u64>,
}

fn yes() -> bool {
    true
}

fn default_interval() -> u64 {
    300
}

impl Default for PollerSection {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: default_interval(),
            lookback_secs: None,
            safety_lag_secs: None,
            page_size: None,
            max_dam_calls: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSection {
    /// Messages per batch (one `Consumer::process` call).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// A received message is hidden this long; unacknowledged, it is redelivered.
    #[serde(default = "default_visibility")]
    pub visibility_timeout_secs: u64,
    /// Receives before a message is dead-lettered.
    #[serde(default = "default_receives")]
    pub max_receives: u32,
    /// Wait before a failed message is retried (doubled per receive, capped by the
    /// visibility timeout).
    #[serde(default = "default_retry_ms")]
    pub retry_delay_ms: u64,
    /// After a partial batch, wait this long for more messages before the next one.
    #[serde(default = "default_window_ms")]
    pub batch_window_ms: u64,
}

fn default_batch() -> usize {
    100
}
fn default_visibility() -> u64 {
    60
}
fn default_receives() -> u32 {
    5
}
fn default_retry_ms() -> u64 {
    1000
}
fn default_window_ms() -> u64 {
    200
}

impl Default for ConsumerSection {
    fn default() -> Self {
        Self {
            batch_size: default_batch(),
            visibility_timeout_secs: default_visibility(),
            max_receives: default_receives(),
            retry_delay_ms: default_retry_ms(),
            batch_window_ms: default_window_ms(),
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    pub store: StoreSection,
    pub pim: PimSection,
    pub dam: DamSection,
    pub mapping: MappingSection,
    #[serde(default)]
    pub poller: PollerSection,
    #[serde(default)]
    pub consumer: ConsumerSection,
}

/// A loaded file, with where it came from (relative paths resolve against its directory).
#[derive(Debug, Clone)]
pub struct Config {
    pub file: String,
    pub dir: PathBuf,
    pub raw: FileConfig,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            message: format!("cannot read it: {e}"),
        })?;
        let raw: FileConfig = toml::from_str(&text).map_err(|e| ConfigError {
            file: file.clone(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let config = Config { file, dir, raw };
        config.check_shape()?;
        Ok(config)
    }

    /// A configuration built in code (the demo).
    pub fn from_parts(raw: FileConfig, dir: PathBuf) -> Config {
        Config {
            file: "(built in)".into(),
            dir,
            raw,
        }
    }

    fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            message: message.into(),
        }
    }

    fn check_shape(&self) -> Result<(), ConfigError> {
        let m = &self.raw.mapping;
        if m.path.is_some() == m.inline.is_some() {
            return Err(self.error(
                "[mapping] needs exactly one of `path` (a mapping file) or `inline` (its TOML)",
            ));
        }
        if self.raw.consumer.batch_size == 0 || self.raw.consumer.max_receives == 0 {
            return Err(self.error("[consumer] batch_size and max_receives must be at least 1"));
        }
        if self.raw.poller.interval_secs == 0 {
            return Err(self.error("[poller] interval_secs must be at least 1"));
        }
        Ok(())
    }

    fn resolve_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    pub fn store_path(&self) -> PathBuf {
        self.resolve_path(&self.raw.store.path)
    }

    fn secret(&self, key: &str, secret: &Secret) -> Result<String, ConfigError> {
        match secret {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::Env { env } => std::env::var(env).map_err(|_| {
                self.error(format!(
                    "{key} reads the environment variable {env}, which is not set; export it \
                     or write the value inline"
                ))
            }),
        }
    }

    fn required<'a>(&self, key: &str, value: &'a Option<String>) -> Result<&'a str, ConfigError> {
        value
            .as_deref()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| {
                self.error(format!(
                    "{key} is required for [dam] kind = {:?}",
                    self.raw.dam.kind
                ))
            })
    }

    fn url(&self, key: &str, raw: &str) -> Result<Url, ConfigError> {
        Url::parse(raw).map_err(|e| self.error(format!("{key} = {raw:?} is not a URL: {e}")))
    }

    /// The PIM settings, through the same parser as `AKENEO_*` variables.
    pub fn akeneo(&self) -> Result<AkeneoConfig, ConfigError> {
        let p = &self.raw.pim;
        let mut vars: HashMap<&str, String> = HashMap::from([
            ("AKENEO_BASE_URL", p.base_url.clone()),
            ("AKENEO_CLIENT_ID", p.client_id.clone()),
            (
                "AKENEO_CLIENT_SECRET",
                self.secret("[pim] client_secret", &p.client_secret)?,
            ),
            ("AKENEO_USERNAME", p.username.clone()),
            (
                "AKENEO_PASSWORD",
                self.secret("[pim] password", &p.password)?,
            ),
        ]);
        let optional = [
            ("AKENEO_MAX_IN_FLIGHT", p.max_in_flight),
            ("AKENEO_REQUESTS_PER_SECOND", p.requests_per_second),
            ("AKENEO_TIMEOUT_MS", p.timeout_ms),
            ("AKENEO_MAX_ATTEMPTS", p.max_attempts),
            ("AKENEO_BATCH_MAX_ITEMS", p.batch_max_items),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                vars.insert(name, v.to_string());
            }
        }
        AkeneoConfig::from_lookup(|k| vars.get(k).cloned())
            .map_err(|e| self.error(format!("[pim]: {e} (in the file: the matching [pim] key)")))
    }

    /// The webhook verifiers, through the same parser as the ingest function's variables.
    pub fn ingest(&self) -> Result<IngestConfig, ConfigError> {
        let d = &self.raw.dam;
        let mut vars: HashMap<&str, String> = HashMap::from([("QUEUE_URL", "embedded".to_owned())]);
        if let Some(max) = self.raw.server.max_body_bytes {
            vars.insert("MAX_BODY_BYTES", max.to_string());
        }
        match d.kind {
            DamKindName::Generic => {
                let secrets = d
                    .webhook_secrets
                    .iter()
                    .map(|s| self.secret("[dam] webhook_secrets", s))
                    .collect::<Result<Vec<_>, _>>()?;
                if !secrets.is_empty() {
                    vars.insert("GENERIC_WEBHOOK_SECRETS", secrets.join(","));
                }
            }
            DamKindName::Cloudinary => {
                if let Some(s) = &d.api_secret {
                    vars.insert("CLOUDINARY_API_SECRET", self.secret("[dam] api_secret", s)?);
                }
            }
            DamKindName::Bynder => {
                if !d.topic_arns.is_empty() {
                    vars.insert("BYNDER_TOPIC_ARNS", d.topic_arns.join(","));
                }
            }
        }
        IngestConfig::from_lookup(|k| vars.get(k).cloned())
            .map_err(|e| self.error(format!("[dam] webhook settings: {e}")))
    }

    /// The DAM API client (re-reads for the consumer, listings for the poller).
    pub fn source(&self) -> Result<Arc<dyn AssetSource>, ConfigError> {
        let d = &self.raw.dam;
        let built: Result<Arc<dyn AssetSource>, shared::dam::DamError> = match d.kind {
            DamKindName::Generic => {
                let url = self.url("[dam] api_url", self.required("[dam] api_url", &d.api_url)?)?;
                let token = match &d.api_token {
                    Some(t) => self.secret("[dam] api_token", t)?,
                    None => {
                        return Err(self.error("[dam] api_token is required for kind = generic"));
                    }
                };
                GenericApi::new(GenericApiSettings::new(url, SecretString::from(token)))
                    .map(|a| Arc::new(a) as Arc<dyn AssetSource>)
            }
            DamKindName::Cloudinary => {
                let secret = match &d.api_secret {
                    Some(s) => self.secret("[dam] api_secret", s)?,
                    None => {
                        return Err(
                            self.error("[dam] api_secret is required for kind = cloudinary")
                        );
                    }
                };
                let mut settings = CloudinaryApiSettings::new(
                    self.required("[dam] cloud_name", &d.cloud_name)?.to_owned(),
                    self.required("[dam] api_key", &d.api_key)?.to_owned(),
                    SecretString::from(secret),
                );
                if let Some(base) = &d.api_base {
                    settings.api_base = self.url("[dam] api_base", base)?;
                }
                CloudinaryApi::new(settings).map(|a| Arc::new(a) as Arc<dyn AssetSource>)
            }
            DamKindName::Bynder => {
                let url = self.url(
                    "[dam] portal_url",
                    self.required("[dam] portal_url", &d.portal_url)?,
                )?;
                let token = match &d.token {
                    Some(t) => self.secret("[dam] token", t)?,
                    None => return Err(self.error("[dam] token is required for kind = bynder")),
                };
                BynderApi::new(BynderApiSettings::new(url, SecretString::from(token)))
                    .map(|a| Arc::new(a) as Arc<dyn AssetSource>)
            }
        };
        built.map_err(|e| self.error(format!("[dam]: {e}")))
    }

    /// The mapping, from its file or inline.
    pub fn mapping(&self) -> Result<Mapping, ConfigError> {
        let m = &self.raw.mapping;
        let loaded = match (&m.path, &m.inline) {
            (Some(path), _) => Mapping::from_path(&self.resolve_path(path)),
            (None, Some(text)) => {
                Mapping::from_toml_str(text, &format!("{} [mapping] inline", self.file))
            }
            (None, None) => return Err(self.error("[mapping] needs `path` or `inline`")),
        };
        loaded.map_err(|e| self.error(format!("mapping: {e}")))
    }

    /// Poller settings, through the same parser as the `POLL_*` variables.
    pub fn poller(&self) -> Result<PollerSettings, ConfigError> {
        let p = &self.raw.poller;
        let mut vars: HashMap<&str, String> = HashMap::new();
        let optional = [
            ("POLL_LOOKBACK_SECS", p.lookback_secs),
            ("POLL_SAFETY_LAG_SECS", p.safety_lag_secs),
            ("POLL_PAGE_SIZE", p.page_size),
            ("POLL_MAX_DAM_CALLS", p.max_dam_calls),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                vars.insert(name, v.to_string());
            }
        }
        let mut settings = PollerSettings::from_lookup(|k| vars.get(k).cloned())
            .map_err(|e| self.error(format!("[poller]: {e}")))?;
        // A run must end before the next one is due; a crashed run's lease frees itself by then.
        let interval = Duration::from_secs(p.interval_secs);
        settings.lease_ttl = settings
            .lease_ttl
            .min(interval.max(Duration::from_secs(60)));
        Ok(settings)
    }
}
