//! `asset-consumer` Lambda: settings from the environment and the SQS handler. The pipeline
//! lives in `shared::consumer`; this crate only translates SQS events and batch responses.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use secrecy::SecretString;
use shared::consumer::{BatchOutcome, Consumer, InboundMessage};
use shared::dam::AssetSource;
use shared::dam::bynder::api::{BynderApi, BynderApiSettings};
use shared::dam::cloudinary::api::{CloudinaryApi, CloudinaryApiSettings};
use shared::dam::generic::api::{GenericApi, GenericApiSettings};
use tokio::time::Instant;
use url::Url;

/// Environment variable names.
pub mod env {
    pub const MAPPING_PATH: &str = "MAPPING_PATH";
    pub const DLQ_URL: &str = "DLQ_URL";
    pub const SAFETY_MARGIN_MS: &str = "CONSUMER_SAFETY_MARGIN_MS";
    pub const GENERIC_API_URL: &str = "GENERIC_API_URL";
    pub const GENERIC_API_TOKEN: &str = "GENERIC_API_TOKEN";
    pub const CLOUDINARY_CLOUD_NAME: &str = "CLOUDINARY_CLOUD_NAME";
    pub const CLOUDINARY_API_KEY: &str = "CLOUDINARY_API_KEY";
    pub const CLOUDINARY_API_SECRET: &str = "CLOUDINARY_API_SECRET";
    pub const CLOUDINARY_API_BASE: &str = "CLOUDINARY_API_BASE";
    pub const BYNDER_PORTAL_URL: &str = "BYNDER_PORTAL_URL";
    pub const BYNDER_TOKEN: &str = "BYNDER_TOKEN";
}

/// Settings of one cold start (besides `TABLE_NAME` and `AKENEO_*`, read by their adapters).
pub struct Settings {
    pub mapping_path: PathBuf,
    pub dlq_url: String,
    pub safety_margin: Option<Duration>,
    /// One source per DAM whose API settings are present.
    pub sources: Vec<Arc<dyn AssetSource>>,
}

impl std::fmt::Debug for Settings {
    // Sources hold credentials: only their kinds are printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("mapping_path", &self.mapping_path)
            .field("dlq_url", &self.dlq_url)
            .field("safety_margin", &self.safety_margin)
            .field(
                "sources",
                &self.sources.iter().map(|s| s.dam()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn required(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<String, String> {
    get(name)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| format!("{name} is not set"))
}

fn url(raw: &str, name: &str) -> Result<Url, String> {
    Url::parse(raw).map_err(|e| format!("{name}: {e}"))
}

impl Settings {
    /// Reads the settings through `get` (the environment in production). `default_mapping`
    /// is used when `MAPPING_PATH` is unset.
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        default_mapping: PathBuf,
    ) -> Result<Settings, String> {
        let mapping_path = get(env::MAPPING_PATH)
            .filter(|v| !v.trim().is_empty())
            .map_or(default_mapping, PathBuf::from);
        let dlq_url = required(&get, env::DLQ_URL)?;
        let safety_margin = match get(env::SAFETY_MARGIN_MS) {
            None => None,
            Some(raw) => Some(Duration::from_millis(
                raw.trim()
                    .parse()
                    .map_err(|e| format!("{}: {e}", env::SAFETY_MARGIN_MS))?,
            )),
        };
        let mut sources: Vec<Arc<dyn AssetSource>> = Vec::new();
        if let Some(base) = get(env::GENERIC_API_URL) {
            let token = required(&get, env::GENERIC_API_TOKEN)?;
            let settings = GenericApiSettings::new(
                url(&base, env::GENERIC_API_URL)?,
                SecretString::from(token),
            );
            sources.push(Arc::new(
                GenericApi::new(settings).map_err(|e| e.to_string())?,
            ));
        }
        if let Some(cloud) = get(env::CLOUDINARY_CLOUD_NAME) {
            let mut settings = CloudinaryApiSettings::new(
                cloud,
                required(&get, env::CLOUDINARY_API_KEY)?,
                SecretString::from(required(&get, env::CLOUDINARY_API_SECRET)?),
            );
            if let Some(base) = get(env::CLOUDINARY_API_BASE) {
                settings.api_base = url(&base, env::CLOUDINARY_API_BASE)?;
            }
            sources.push(Arc::new(
                CloudinaryApi::new(settings).map_err(|e| e.to_string())?,
            ));
        }
        if let Some(portal) = get(env::BYNDER_PORTAL_URL) {
            let settings = BynderApiSettings::new(
                url(&portal, env::BYNDER_PORTAL_URL)?,
                SecretString::from(required(&get, env::BYNDER_TOKEN)?),
            );
            sources.push(Arc::new(
                BynderApi::new(settings).map_err(|e| e.to_string())?,
            ));
        }
        if sources.is_empty() {
            return Err(format!(
                "no DAM configured: set {}, {} or {}",
                env::GENERIC_API_URL,
                env::CLOUDINARY_CLOUD_NAME,
                env::BYNDER_PORTAL_URL
            ));
        }
        Ok(Settings {
            mapping_path,
            dlq_url,
            safety_margin,
            sources,
        })
    }
}

/// `mapping.toml` next to the binary (how the Lambda zip ships it).
pub fn default_mapping_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("mapping.toml")))
        .unwrap_or_else(|| PathBuf::from("mapping.toml"))
}

/// The SQS records as pipeline messages. A record without a body is kept (empty) so the
/// pipeline dead-letters it as poison rather than dropping it silently.
pub fn to_messages(event: SqsEvent) -> Vec<InboundMessage> {
    event
        .records
        .into_iter()
        .map(|r| InboundMessage {
            id: r.message_id.unwrap_or_default(),
            body: r.body.unwrap_or_default(),
        })
        .collect()
}

/// The partial batch response (ReportBatchItemFailures): only the messages to redeliver.
pub fn to_response(outcome: &BatchOutcome) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = outcome
        .retry
        .iter()
        .map(|(id, _reason)| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id.clone();
            failure
        })
        .collect();
    response
}

/// The Lambda deadline (wall clock) as a monotonic instant.
pub fn deadline_instant(deadline: SystemTime) -> Instant {
    let remaining = deadline
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now() + remaining
}

/// Handles one SQS event. Never fails: per-message problems are in the response.
pub async fn handle(consumer: &Consumer, event: SqsEvent, deadline: Instant) -> SqsBatchResponse {
    to_response(&process(consumer, event, deadline).await)
}

/// Runs the pipeline on one SQS event and logs the batch's counters.
pub async fn process(consumer: &Consumer, event: SqsEvent, deadline: Instant) -> BatchOutcome {
    let outcome = consumer.process(to_messages(event), deadline).await;
    let r = &outcome.report;
    lambda_runtime::tracing::info!(
        messages = r.messages,
        assets = r.assets,
        synced = r.synced,
        skipped_unchanged = r.skipped_unchanged,
        skipped_unmapped = r.skipped_unmapped,
        stale = r.stale,
        deleted = r.deleted,
        failed = r.failed,
        poison = r.poison,
        retried = outcome.retry.len(),
        dead_lettered = outcome.dead_lettered.len(),
        "Batch processed."
    );
    outcome
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use shared::consumer::BatchOutcome;

    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn settings_need_a_dlq_and_at_least_one_dam() {
        let err = Settings::from_lookup(lookup(&[]), "m.toml".into()).unwrap_err();
        assert!(err.contains(env::DLQ_URL), "{err}");
        let err = Settings::from_lookup(lookup(&[(env::DLQ_URL, "https://q")]), "m.toml".into())
            .unwrap_err();
        assert!(err.contains("no DAM configured"), "{err}");
        let err = Settings::from_lookup(
            lookup(&[
                (env::DLQ_URL, "https://q"),
                (env::GENERIC_API_URL, "http://dam"),
            ]),
            "m.toml".into(),
        )
        .unwrap_err();
        assert!(err.contains(env::GENERIC_API_TOKEN), "{err}");
    }

    #[test]
    fn settings_read_the_mapping_path_margin_and_sources() {
        let s = Settings::from_lookup(
            lookup(&[
                (env::DLQ_URL, "https://q"),
                (env::GENERIC_API_URL, "http://dam/generic"),
                (env::GENERIC_API_TOKEN, "t"),
                (env::BYNDER_PORTAL_URL, "https://acme.bynder.com"),
                (env::BYNDER_TOKEN, "b"),
                (env::SAFETY_MARGIN_MS, "1500"),
            ]),
            "default.toml".into(),
        )
        .unwrap();
        assert_eq!(s.mapping_path, PathBuf::from("default.toml"));
        assert_eq!(s.safety_margin, Some(Duration::from_millis(1500)));
        let dams: Vec<_> = s.sources.iter().map(|s| s.dam()).collect();
        assert_eq!(
            dams,
            [shared::dam::DamKind::Generic, shared::dam::DamKind::Bynder]
        );
        assert!(!format!("{s:?}").contains("\"t\""), "no secrets in Debug");

        let s = Settings::from_lookup(
            lookup(&[
                (env::DLQ_URL, "https://q"),
                (env::MAPPING_PATH, "/opt/m.toml"),
                (env::GENERIC_API_URL, "http://dam/generic"),
                (env::GENERIC_API_TOKEN, "t"),
            ]),
            "default.toml".into(),
        )
        .unwrap();
        assert_eq!(s.mapping_path, PathBuf::from("/opt/m.toml"));
        assert!(
            Settings::from_lookup(
                lookup(&[
                    (env::DLQ_URL, "https://q"),
                    (env::GENERIC_API_URL, "http://dam/generic"),
                    (env::GENERIC_API_TOKEN, "t"),
                    (env::SAFETY_MARGIN_MS, "soon"),
                ]),
                "default.toml".into(),
            )
            .is_err()
        );
    }

    #[test]
    fn only_retried_messages_are_batch_item_failures() {
        let outcome = BatchOutcome {
            retry: vec![
                ("a".into(), "DAM temporarily unavailable".into()),
                ("c".into(), "the PIM answered 503".into()),
            ],
            dead_lettered: vec![("b".into(), "poison".into())],
            ..BatchOutcome::default()
        };
        let response = to_response(&outcome);
        let ids: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(ids, ["a", "c"]);
        let json = serde_json_string(&response);
        assert!(json.contains("\"batchItemFailures\""), "{json}");
        assert!(json.contains("\"itemIdentifier\":\"a\""), "{json}");
    }

    fn serde_json_string(response: &SqsBatchResponse) -> String {
        serde_json::to_string(response).unwrap()
    }

    #[test]
    fn the_deadline_becomes_an_instant_never_in_the_past_of_now() {
        let soon = deadline_instant(SystemTime::now() + Duration::from_secs(10));
        let left = soon - Instant::now();
        assert!(left > Duration::from_secs(9) && left <= Duration::from_secs(10));
        let past = deadline_instant(SystemTime::now() - Duration::from_secs(10));
        assert!(past <= Instant::now());
    }
}
