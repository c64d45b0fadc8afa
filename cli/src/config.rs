//! The `--config FILE` of `serve`, `check` and `backfill`: one TOML file for the whole
//! connector. `[pim]`, `[dam]` and the shared keys of `[poller]` and `[consumer]` deserialise
//! straight into the settings types the Lambda functions read from their environment
//! (`PimSettings`, `DamSettings`, `PollKeys`, `ConsumerKeys`), and pass the same validation, so
//! both paths accept and refuse the same values under the same names (docs/settings.md).
//!
//! Any secret may be written inline or as `{ env = "VARIABLE" }`, read from the environment.

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

/// The configuration's problems, all of them: each names the key and the fix.
#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "config {}: {one}", self.file),
            all => {
                write!(f, "config {}: {} problems to fix:", self.file, all.len())?;
                for p in all {
                    write!(f, "\n  {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Problems of one section, kept in file order.
type Found = Vec<String>;

/// Adds `e` to `found`, one line per problem.
fn push_setting(found: &mut Found, e: SettingError) {
    match e {
        SettingError::Several(all) => all.into_iter().for_each(|e| push_setting(found, e)),
        one => found.push(one.to_string()),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Where the webhook endpoint listens: `host:port`, the host a name (`localhost`) or an
    /// address (`127.0.0.1`, `[::1]`).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Larger webhook bodies are refused with 413 (`MAX_BODY_BYTES` in the Lambda).
    pub max_body_bytes: Option<usize>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

/// Why `listen` is not `host:port`, if it is not.
fn listen_problem(listen: &str) -> Option<String> {
    let ok = listen
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    (!ok).then(|| {
        format!(
            "[server] listen has an invalid value {listen:?}: write host:port, e.g. \
             127.0.0.1:8080, localhost:8080 or [::1]:8080"
        )
    })
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
        let fail = |problems: Vec<String>| ConfigError {
            file: file.clone(),
            problems,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(vec![format!(
                "cannot read it: {e}; check the path given to --config"
            )])
        })?;
        let raw = parse(&text).map_err(fail)?;
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
        self.errors(vec![message.into()])
    }

    fn errors(&self, problems: Vec<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            problems,
        }
    }

    /// The checks serde cannot express, all at once.
    fn check_shape(&self) -> Result<(), ConfigError> {
        let mut found = Found::new();
        let m = &self.raw.mapping;
        if m.path.is_some() == m.inline.is_some() {
            found.push(
                "[mapping] needs exactly one of `path` (a mapping file) or `inline` (its TOML)"
                    .into(),
            );
        }
        found.extend(listen_problem(&self.raw.server.listen));
        if self.raw.consumer.batch_size == 0 {
            found.push("[consumer] batch_size must be at least 1".into());
        }
        if self.raw.consumer.max_receives == 0 {
            found.push("[consumer] max_receives must be at least 1".into());
        }
        if self.raw.poller.interval_secs == 0 {
            found.push("[poller] interval_secs must be at least 1".into());
        }
        if self.raw.poller.sweep_interval_secs == 0 {
            found.push(
                "[poller] sweep_interval_secs must be at least 1 (`enabled = false` stops the \
                 polls and the sweep)"
                    .into(),
            );
        }
        if found.is_empty() {
            Ok(())
        } else {
            Err(self.errors(found))
        }
    }

    /// Every setting through its validation, every problem reported together: what `serve`
    /// and `check` run before they talk to anyone.
    pub fn validate(&self) -> Result<Validated, ConfigError> {
        let mut found = Found::new();
        let mut keep = |e: ConfigError| found.extend(e.problems);
        let akeneo = self.akeneo().map_err(&mut keep).ok();
        let mapping = self.mapping().map_err(&mut keep).ok();
        let source = self.source().map_err(&mut keep).ok();
        let ingest = self.ingest().map_err(&mut keep).ok();
        let poller = self.poller().map_err(&mut keep).ok();
        let consumer = self.consumer().map_err(&mut keep).ok();
        match (akeneo, mapping, source, ingest, poller, consumer) {
            (
                Some(akeneo),
                Some(mapping),
                Some(source),
                Some(ingest),
                Some(poller),
                Some(consumer),
            ) if found.is_empty() => Ok(Validated {
                akeneo,
                mapping,
                source,
                ingest,
                poller,
                consumer,
            }),
            _ => Err(self.errors(found)),
        }
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
        let mut found = Found::new();
        push_setting(&mut found, e.at(Origin::File(section)));
        self.errors(found)
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

/// Every setting of a loaded file, validated.
pub struct Validated {
    pub akeneo: AkeneoConfig,
    pub mapping: Mapping,
    pub source: Arc<dyn AssetSource>,
    pub ingest: IngestConfig,
    pub poller: PollerSettings,
    pub consumer: ConsumerSettings,
}

/// The file's sections, each read on its own so one run reports the problems of all of them.
fn parse(text: &str) -> Result<FileConfig, Found> {
    let mut table: toml::Table = toml::from_str(text)
        .map_err(|e| vec![format!("not valid TOML: {}", e.to_string().trim_end())])?;
    let mut found = Found::new();
    fn section<T: DeserializeOwned>(
        table: &mut toml::Table,
        name: &str,
        required: Option<&str>,
        found: &mut Found,
    ) -> Option<T> {
        let value = match (table.remove(name), required) {
            (Some(v), _) => v,
            (None, Some(hint)) => {
                found.push(format!("[{name}] is missing: {hint}"));
                return None;
            }
            (None, None) => toml::Value::Table(toml::Table::new()),
        };
        serde_path_to_error::deserialize(value)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner().to_string();
                // toml appends "in `key`" on a second line; the path already names the key.
                let inner = inner.lines().next().unwrap_or_default().trim_end();
                found.push(if path == "." {
                    format!("[{name}] {inner}")
                } else {
                    format!("[{name}] {path}: {inner}")
                });
            })
            .ok()
    }
    let server = section(&mut table, "server", None, &mut found);
    let store = section(
        &mut table,
        "store",
        Some("add it with path = \"state.db\" (the SQLite file)"),
        &mut found,
    );
    let pim = section(
        &mut table,
        "pim",
        Some("add base_url, client_id, client_secret, username and password"),
        &mut found,
    );
    let dam = section(
        &mut table,
        "dam",
        Some("add kind = \"generic\", \"cloudinary\" or \"bynder\" and its keys"),
        &mut found,
    );
    let mapping = section(
        &mut table,
        "mapping",
        Some("add path = \"mapping.toml\" or inline = \"...\""),
        &mut found,
    );
    let poller = section(&mut table, "poller", None, &mut found);
    let consumer = section(&mut table, "consumer", None, &mut found);
    for unknown in table.keys() {
        found.push(format!(
            "unknown section [{unknown}]: the sections are [server], [store], [pim], [dam], \
             [mapping], [poller] and [consumer]"
        ));
    }
    match (server, store, pim, dam, mapping, poller, consumer) {
        (
            Some(server),
            Some(store),
            Some(pim),
            Some(dam),
            Some(mapping),
            Some(poller),
            Some(consumer),
        ) if found.is_empty() => Ok(FileConfig {
            server,
            store,
            pim,
            dam,
            mapping,
            poller,
            consumer,
        }),
        _ => Err(found),
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
    fn every_problem_of_the_file_is_reported_in_one_run() {
        let text = r#"
[server]
listen = "localhost"
[store]
path = "x.db"
[pim]
base_url = "https://pim.example.com"
client_id = { env = "DAM_SYNC_TEST_UNSET_0" }
client_secret = { env = "DAM_SYNC_TEST_UNSET_1" }
password = { env = "DAM_SYNC_TEST_UNSET_2" }
[dam]
kind = "cloudinary"
[mapping]
inline = ""
[poller]
page_sise = 3
"#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.toml");
        std::fs::write(&path, text).unwrap();
        // Type errors and unknown keys of every section in one run.
        let e = Config::load(&path).unwrap_err();
        assert_eq!(
            e.problems[0],
            "[pim] client_id: invalid type: map, expected a string"
        );
        assert!(
            e.problems[1].starts_with("[poller] unknown field `page_sise`"),
            "{e}"
        );
        assert_eq!(e.problems.len(), 2, "{e}");

        let text = text
            .replace("page_sise = 3", "")
            .replace("client_id = { env = \"DAM_SYNC_TEST_UNSET_0\" }\n", "");
        std::fs::write(&path, &text).unwrap();
        let e = Config::load(&path).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "config {}: [server] listen has an invalid value \"localhost\": write host:port, \
                 e.g. 127.0.0.1:8080, localhost:8080 or [::1]:8080",
                path.display()
            )
        );
        std::fs::write(&path, text.replace("\"localhost\"", "\"localhost:18080\"")).unwrap();
        let config = Config::load(&path).unwrap();
        let e = config.validate().err().expect("settings are missing");
        let text = e.to_string();
        // client_id, client_secret, username, password; the empty mapping; cloud_name,
        // api_key, api_secret.
        assert!(text.contains(": 8 problems to fix:\n"), "{text}");
        assert!(
            text.contains("[mapping] inline: route: no [[route]]"),
            "{text}"
        );
        for n in 1..=2 {
            assert!(
                text.contains(&format!("DAM_SYNC_TEST_UNSET_{n}, which is not set")),
                "{text}"
            );
        }
        for key in [
            "pim] client_id",
            "pim] username",
            "dam] cloud_name",
            "dam] api_key",
            "dam] api_secret",
        ] {
            assert!(text.contains(&format!("\n  [{key} is not set: ")), "{text}");
        }
    }

    #[test]
    fn missing_sections_are_all_named() {
        let e = parse("[server]\nlisten = \"127.0.0.1:1\"\n[extra]\n").unwrap_err();
        assert_eq!(e.len(), 5, "{e:?}");
        assert!(
            e[0].starts_with("[store] is missing: add it with path"),
            "{e:?}"
        );
        assert!(e[4].starts_with("unknown section [extra]"), "{e:?}");
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
