//! The `--config FILE` of `serve`, `check` and `backfill`: one TOML file for the whole
//! connector. `[pim]`, `[dam]` and the shared keys of `[poller]` and `[consumer]` deserialise
//! straight into the settings types the Lambda functions read from their environment
//! (`PimSettings`, `DamSettings`, `PollKeys`, `ConsumerKeys`), and pass the same validation, so
//! both paths accept and refuse the same values under the same names (docs/settings.md).
//!
//! Any secret may be written inline or as `{ env = "VARIABLE" }`, read from the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use shared::akeneo::{AkeneoConfig, PimSettings};
use shared::consumer::{ConsumerKeys, ConsumerSettings};
use shared::dam::AssetSource;
use shared::dam::settings::DamSettings;
use shared::ingest::{IngestConfig, IngestSettings};
use shared::mapping::Mapping;
use shared::poller::{PollKeys, PollerSettings};
use shared::settings::{Origin, SettingError};

/// A configuration problem: names the file, the key and the fix.
#[derive(Debug, thiserror::Error)]
#[error("config {file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Where the webhook endpoint listens, e.g. `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Larger webhook bodies are refused with 413 (`MAX_BODY_BYTES` in the Lambda).
    pub max_body_bytes: Option<usize>,
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
pub struct MappingSection {
    /// A mapping file (relative to the config file), or...
    pub path: Option<PathBuf>,
    /// ...the mapping itself, as a TOML string.
    pub inline: Option<String>,
}

/// `[poller]`: the serve-only schedule keys, then the keys shared with the `POLL_*` variables.
#[derive(Debug, Clone)]
pub struct PollerSection {
    pub enabled: bool,
    /// Seconds between incremental polls (the Lambda's schedule is a template parameter).
    pub interval_secs: u64,
    /// Seconds between deletion sweeps (the Lambda's: the template's `SweepIntervalHours`).
    pub sweep_interval_secs: u64,
    pub keys: PollKeys,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PollerServe {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_interval")]
    interval_secs: u64,
    #[serde(default = "default_sweep_interval")]
    sweep_interval_secs: u64,
}

impl<'de> Deserialize<'de> for PollerSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (serve, keys): (PollerServe, PollKeys) =
            split(d, &["enabled", "interval_secs", "sweep_interval_secs"])?;
        Ok(PollerSection {
            enabled: serve.enabled,
            interval_secs: serve.interval_secs,
            sweep_interval_secs: serve.sweep_interval_secs,
            keys,
        })
    }
}

/// Splits one table: `serve_keys` into `A` (the serve-only keys), the rest into `B` (the keys
/// shared with the Lambda functions); both refuse keys they do not know.
fn split<'de, D, A, B>(d: D, serve_keys: &[&str]) -> Result<(A, B), D::Error>
where
    D: Deserializer<'de>,
    A: DeserializeOwned,
    B: DeserializeOwned,
{
    use serde::de::Error;
    let mut shared = toml::Table::deserialize(d)?;
    let mut serve = toml::Table::new();
    for key in serve_keys {
        if let Some(v) = shared.remove(*key) {
            serve.insert((*key).to_owned(), v);
        }
    }
    let a = A::deserialize(serve).map_err(D::Error::custom)?;
    let b = B::deserialize(shared).map_err(D::Error::custom)?;
    Ok((a, b))
}

fn yes() -> bool {
    true
}

fn default_interval() -> u64 {
    300
}

/// Daily, as the template's `SweepIntervalHours` default: the sweep reads every managed asset
/// on both sides.
fn default_sweep_interval() -> u64 {
    24 * 60 * 60
}

impl Default for PollerSection {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: default_interval(),
            sweep_interval_secs: default_sweep_interval(),
            keys: PollKeys::default(),
        }
    }
}

/// `[consumer]`: the serve-only queue keys (SQS and event-source settings in the template),
/// then the keys shared with the `CONSUMER_*` variables.
#[derive(Debug, Clone)]
pub struct ConsumerSection {
    /// Messages per batch (one `Consumer::process` call).
    pub batch_size: usize,
    /// A received message is hidden this long; unacknowledged, it is redelivered.
    pub visibility_timeout_secs: u64,
    /// Receives before a message is dead-lettered.
    pub max_receives: u32,
    /// Wait before a failed message is retried (doubled per receive, capped by the
    /// visibility timeout).
    pub retry_delay_ms: u64,
    /// After a partial batch, wait this long for more messages before the next one.
    pub batch_window_ms: u64,
    pub tuning: ConsumerKeys,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumerServe {
    #[serde(default = "default_batch")]
    batch_size: usize,
    #[serde(default = "default_visibility")]
    visibility_timeout_secs: u64,
    #[serde(default = "default_receives")]
    max_receives: u32,
    #[serde(default = "default_retry_ms")]
    retry_delay_ms: u64,
    #[serde(default = "default_window_ms")]
    batch_window_ms: u64,
}

impl<'de> Deserialize<'de> for ConsumerSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let serve_keys = [
            "batch_size",
            "visibility_timeout_secs",
            "max_receives",
            "retry_delay_ms",
            "batch_window_ms",
        ];
        let (serve, tuning): (ConsumerServe, ConsumerKeys) = split(d, &serve_keys)?;
        Ok(ConsumerSection {
            batch_size: serve.batch_size,
            visibility_timeout_secs: serve.visibility_timeout_secs,
            max_receives: serve.max_receives,
            retry_delay_ms: serve.retry_delay_ms,
            batch_window_ms: serve.batch_window_ms,
            tuning,
        })
    }
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
            tuning: ConsumerKeys::default(),
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
    pub pim: PimSettings,
    pub dam: DamSettings,
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
        if self.raw.poller.sweep_interval_secs == 0 {
            return Err(self.error(
                "[poller] sweep_interval_secs must be at least 1 (`enabled = false` stops the \
                 polls and the sweep)",
            ));
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

    /// A validation error of section `[section]`, its key named as in the file.
    fn at(&self, section: &'static str, e: SettingError) -> ConfigError {
        self.error(e.at(Origin::File(section)).to_string())
    }

    /// The PIM settings, through the same validation as the `AKENEO_*` variables.
    pub fn akeneo(&self) -> Result<AkeneoConfig, ConfigError> {
        AkeneoConfig::from_settings(&self.raw.pim).map_err(|e| self.at("pim", e))
    }

    /// The webhook verifier of the `[dam]`, through the same builder as the ingest function.
    pub fn ingest(&self) -> Result<IngestConfig, ConfigError> {
        let mut config = IngestConfig::default();
        if let Some(max) = self.raw.server.max_body_bytes {
            config.settings = IngestSettings {
                max_body_bytes: max,
            };
        }
        config.serve(&self.raw.dam).map_err(|e| self.at("dam", e))?;
        Ok(config)
    }

    /// The DAM API client (re-reads for the consumer, listings for the poller).
    pub fn source(&self) -> Result<Arc<dyn AssetSource>, ConfigError> {
        self.raw.dam.source().map_err(|e| self.at("dam", e))
    }

    /// The consumer's tuning, through the same validation as the `CONSUMER_*` variables.
    /// The consumer's tuning. Its delivery limit is the embedded queue's own `max_receives`,
    /// so a message failing on its last delivery is parked by the consumer with its reason.
    pub fn consumer(&self) -> Result<ConsumerSettings, ConfigError> {
        let mut settings = ConsumerSettings::from_keys(&self.raw.consumer.tuning)
            .map_err(|e| self.at("consumer", e))?;
        settings.max_receives = self.raw.consumer.max_receives;
        Ok(settings)
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

    /// Poller settings, through the same validation as the `POLL_*` variables.
    pub fn poller(&self) -> Result<PollerSettings, ConfigError> {
        let p = &self.raw.poller;
        let mut settings = PollerSettings::from_keys(&p.keys).map_err(|e| self.at("poller", e))?;
        // A run must end before the next one is due; a crashed run's lease frees itself by then.
        let interval = Duration::from_secs(p.interval_secs);
        settings.lease_ttl = settings
            .lease_ttl
            .min(interval.max(Duration::from_secs(60)));
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[store]
path = "x.db"
[pim]
base_url = "https://pim.example.com"
client_id = "i"
client_secret = "s"
username = "u"
password = "p"
[dam]
kind = "cloudinary"
cloud_name = "acme"
api_key = "k"
api_secret = "s"
[mapping]
inline = ""
"#;

    fn config(extra: &str) -> Result<Config, String> {
        let raw: FileConfig =
            toml::from_str(&format!("{BASE}{extra}")).map_err(|e| e.to_string())?;
        Ok(Config::from_parts(raw, PathBuf::from(".")))
    }

    #[test]
    fn shared_keys_reach_the_same_settings_as_the_lambda_variables() {
        let c = config(
            "[poller]\ninterval_secs = 30\nlookback_secs = 60\n\
             [consumer]\nbatch_size = 10\nmax_media_bytes = 4096\n",
        )
        .unwrap();
        assert_eq!(c.raw.poller.interval_secs, 30);
        assert_eq!(c.poller().unwrap().lookback, Duration::from_secs(60));
        assert_eq!(c.raw.consumer.batch_size, 10);
        assert_eq!(c.consumer().unwrap().max_media_bytes, 4096);
        assert_eq!(c.raw.dam.kind(), shared::dam::DamKind::Cloudinary);
        assert!(c.source().is_ok());
        assert!(c.ingest().unwrap().cloudinary.is_some());
        assert_eq!(c.akeneo().unwrap().client_id, "i");
    }

    #[test]
    fn the_sweep_runs_daily_unless_the_poller_section_says_otherwise() {
        assert_eq!(config("").unwrap().raw.poller.sweep_interval_secs, 86_400);
        let c = config("[poller]\nsweep_interval_secs = 600\n").unwrap();
        assert_eq!(c.raw.poller.sweep_interval_secs, 600);
        // A serve-only key: not passed to the settings shared with the Lambda variables.
        assert!(c.poller().is_ok());
        let e = config("[poller]\nsweep_interval_secs = 0\n")
            .unwrap()
            .check_shape()
            .unwrap_err();
        assert!(e.to_string().contains("sweep_interval_secs"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file_key() {
        let e = config("[poller]\nlookbak_secs = 60\n").unwrap_err();
        assert!(e.contains("lookbak_secs"), "{e}");
        let e = config("[consumer]\nmax_media_byte = 1\n").unwrap_err();
        assert!(e.contains("max_media_byte"), "{e}");
        let e = config("[poller]\npage_size = 0\n")
            .unwrap()
            .poller()
            .unwrap_err();
        assert!(e.to_string().contains("[poller] page_size"), "{e}");
        let e = config("[consumer]\nmedia_in_flight = 0\n")
            .unwrap()
            .consumer()
            .unwrap_err();
        assert!(e.to_string().contains("[consumer] media_in_flight"), "{e}");
    }
}
