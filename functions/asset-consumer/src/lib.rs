//! `asset-consumer` Lambda: settings from the environment and the SQS handler. The pipeline
//! lives in `shared::consumer`; this crate only translates SQS events and batch responses.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use shared::akeneo::AkeneoConfig;
use shared::consumer::{BatchOutcome, Consumer, ConsumerSettings, InboundMessage};
use shared::dam::AssetSource;
use shared::dam::settings::DamSettings;
use shared::mapping::Mapping;
use shared::settings::{self, SettingError};
use shared::store::dynamodb::TABLE_NAME_ENV;
use tokio::time::Instant;

/// Everything the function reads at a cold start (after `SECRETS_ARN`, read first), named in
/// docs/settings.md.
pub struct Settings {
    pub mapping_path: PathBuf,
    pub dlq_url: String,
    pub table_name: String,
    pub tuning: ConsumerSettings,
    pub akeneo: AkeneoConfig,
    /// One source per DAM whose API settings are present.
    pub sources: Vec<Arc<dyn AssetSource>>,
}

impl std::fmt::Debug for Settings {
    // Sources hold credentials: only their kinds are printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("mapping_path", &self.mapping_path)
            .field("dlq_url", &self.dlq_url)
            .field("table_name", &self.table_name)
            .field("tuning", &self.tuning)
            .field("akeneo", &self.akeneo)
            .field(
                "sources",
                &self.sources.iter().map(|s| s.dam()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Settings {
    /// Reads the settings through `get` (the environment in production). `default_mapping`
    /// is used when `MAPPING_PATH` is unset.
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        default_mapping: PathBuf,
    ) -> Result<Settings, SettingError> {
        let mapping_path = Mapping::path_from_lookup(&get, default_mapping);
        let dlq_url = settings::required(&get, "DLQ_URL", "the dead-letter queue's URL")?;
        let table_name = settings::required(&get, TABLE_NAME_ENV, "the state table's name")?;
        let tuning = ConsumerSettings::from_lookup(&get)?;
        let akeneo = AkeneoConfig::from_lookup(&get)?;
        let mut sources = Vec::new();
        for dam in DamSettings::all_from_lookup(&get)? {
            if dam.has_api() {
                sources.push(dam.source().map_err(|e| e.at(dam.env_origin()))?);
            }
        }
        if sources.is_empty() {
            return Err(SettingError::Other(
                "no DAM configured: set GENERIC_API_URL, CLOUDINARY_CLOUD_NAME or \
                 BYNDER_PORTAL_URL with its other settings (docs/settings.md)"
                    .into(),
            ));
        }
        Ok(Settings {
            mapping_path,
            dlq_url,
            table_name,
            tuning,
            akeneo,
            sources,
        })
    }
}

/// The SQS records as pipeline messages. A record without a body is kept (empty) so the
/// pipeline dead-letters it as poison rather than dropping it silently.
pub fn to_messages(event: SqsEvent) -> Vec<InboundMessage> {
    event
        .records
        .into_iter()
        .map(|r| InboundMessage {
            // Lambda passes SQS's ApproximateReceiveCount; a record without it is a first
            // delivery as far as we can tell.
            receive_count: r
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1),
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

/// Handles one SQS event as the deployed function does: the pipeline, its metrics (EMF on
/// stdout), the partial batch response. Never fails: per-message problems are in the response.
pub async fn handle(consumer: &Consumer, event: SqsEvent, deadline: Instant) -> SqsBatchResponse {
    let outcome = process(consumer, event, deadline).await;
    shared::observability::emit_consumer(&outcome);
    to_response(&outcome)
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

    const PIM: &[(&str, &str)] = &[
        ("TABLE_NAME", "state"),
        ("AKENEO_BASE_URL", "https://pim"),
        ("AKENEO_CLIENT_ID", "i"),
        ("AKENEO_CLIENT_SECRET", "s"),
        ("AKENEO_USERNAME", "u"),
        ("AKENEO_PASSWORD", "p"),
    ];

    fn with_pim(pairs: &[(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<&str, &str> = PIM.iter().chain(pairs).copied().collect();
        move |name| map.get(name).map(|v| (*v).to_owned())
    }

    #[test]
    fn messages_carry_the_sqs_receive_count() {
        let event: SqsEvent = serde_json::from_value(serde_json::json!({ "Records": [
            { "messageId": "a", "body": "{}", "attributes": { "ApproximateReceiveCount": "7" } },
            { "messageId": "b", "body": "{}" }
        ]}))
        .unwrap();
        let messages = to_messages(event);
        assert_eq!(messages[0].receive_count, 7);
        assert_eq!(messages[1].receive_count, 1);
    }

    #[test]
    fn settings_need_a_dlq_and_at_least_one_dam() {
        let err = Settings::from_lookup(with_pim(&[]), "m.toml".into()).unwrap_err();
        assert_eq!(err.name(), Some("DLQ_URL"), "{err}");
        let err = Settings::from_lookup(with_pim(&[("DLQ_URL", "https://q")]), "m.toml".into())
            .unwrap_err();
        assert!(err.to_string().contains("no DAM configured"), "{err}");
        let err = Settings::from_lookup(
            with_pim(&[("DLQ_URL", "https://q"), ("GENERIC_API_URL", "http://dam")]),
            "m.toml".into(),
        )
        .unwrap_err();
        assert_eq!(err.name(), Some("GENERIC_API_TOKEN"), "{err}");
    }

    #[test]
    fn settings_read_the_mapping_path_margin_and_sources() {
        let s = Settings::from_lookup(
            with_pim(&[
                ("DLQ_URL", "https://q"),
                ("GENERIC_API_URL", "http://dam/generic"),
                ("GENERIC_API_TOKEN", "t"),
                ("BYNDER_PORTAL_URL", "https://acme.bynder.com"),
                ("BYNDER_TOKEN", "b"),
                ("CONSUMER_SAFETY_MARGIN_MS", "1500"),
                ("CONSUMER_MAX_MEDIA_BYTES", "4096"),
            ]),
            "default.toml".into(),
        )
        .unwrap();
        assert_eq!(s.mapping_path, PathBuf::from("default.toml"));
        assert_eq!(s.tuning.safety_margin, Duration::from_millis(1500));
        assert_eq!(s.tuning.max_media_bytes, 4096);
        let dams: Vec<_> = s.sources.iter().map(|s| s.dam()).collect();
        assert_eq!(
            dams,
            [shared::dam::DamKind::Generic, shared::dam::DamKind::Bynder]
        );
        assert!(!format!("{s:?}").contains("\"t\""), "no secrets in Debug");

        let s = Settings::from_lookup(
            with_pim(&[
                ("DLQ_URL", "https://q"),
                ("MAPPING_PATH", "/opt/m.toml"),
                ("GENERIC_API_URL", "http://dam/generic"),
                ("GENERIC_API_TOKEN", "t"),
            ]),
            "default.toml".into(),
        )
        .unwrap();
        assert_eq!(s.mapping_path, PathBuf::from("/opt/m.toml"));
        let err = Settings::from_lookup(
            with_pim(&[
                ("DLQ_URL", "https://q"),
                ("GENERIC_API_URL", "http://dam/generic"),
                ("GENERIC_API_TOKEN", "t"),
                ("CONSUMER_SAFETY_MARGIN_MS", "soon"),
            ]),
            "default.toml".into(),
        )
        .unwrap_err();
        assert_eq!(err.name(), Some("CONSUMER_SAFETY_MARGIN_MS"), "{err}");
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
