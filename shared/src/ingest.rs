//! Webhook ingest: route, limit, verify, enqueue, answer. Transport-free so the Lambda stays
//! a thin adapter and tests and benchmarks run it in process.
//!
//! Status rules: 2xx only once every event is queued (senders retry anything else); error
//! bodies are generic and the reason goes to the log only, so a prober learns nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

pub use bytes::Bytes;

use crate::dam::bynder::sns::{CertificateFetcher, SnsSettings, SubscriptionConfirmer};
use crate::dam::bynder::webhook::BynderWebhookVerifier;
use crate::dam::cloudinary::webhook::{CloudinarySettings, CloudinaryWebhookVerifier};
use crate::dam::generic::webhook::{GenericSettings, GenericWebhookVerifier};
use crate::dam::settings::DamSettings;
use crate::dam::{DamKind, WebhookError, WebhookOutcome, WebhookRequest, WebhookVerifier};
use crate::queue::ChangeQueue;
use crate::settings::{self, SettingError};

pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestResponse {
    pub status: u16,
    /// JSON.
    pub body: String,
    /// Change events queued by this delivery (for metrics).
    pub queued: usize,
}

impl IngestResponse {
    fn error(status: u16, code: &str) -> Self {
        Self {
            status,
            body: format!(r#"{{"error":"{code}"}}"#),
            queued: 0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct IngestSettings {
    /// Larger bodies are refused (413) before any parsing or hashing.
    pub max_body_bytes: usize,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// The `{dam}` of a `.../webhooks/{dam}` path (API Gateway may prefix a stage name).
pub fn route(path: &str) -> Option<&str> {
    let mut segments = path.trim_end_matches('/').rsplit('/');
    let dam = segments.next()?;
    (segments.next()? == "webhooks" && !dam.is_empty()).then_some(dam)
}

pub struct IngestService {
    settings: IngestSettings,
    verifiers: HashMap<&'static str, Arc<dyn WebhookVerifier>>,
    queue: Arc<dyn ChangeQueue>,
}

impl IngestService {
    pub fn new(settings: IngestSettings, queue: Arc<dyn ChangeQueue>) -> Self {
        Self {
            settings,
            verifiers: HashMap::new(),
            queue,
        }
    }

    /// A service with a verifier for each DAM the configuration enables.
    pub fn from_config(
        config: &IngestConfig,
        queue: Arc<dyn ChangeQueue>,
        cert_fetcher: Arc<dyn CertificateFetcher>,
        confirmer: Arc<dyn SubscriptionConfirmer>,
    ) -> Self {
        let mut service = Self::new(config.settings, queue);
        if let Some(settings) = &config.cloudinary {
            service =
                service.with_verifier(Arc::new(CloudinaryWebhookVerifier::new(settings.clone())));
        }
        if let Some(settings) = &config.bynder {
            service = service.with_verifier(Arc::new(BynderWebhookVerifier::new(
                settings.clone(),
                cert_fetcher,
                confirmer,
            )));
        }
        if let Some(settings) = &config.generic {
            service =
                service.with_verifier(Arc::new(GenericWebhookVerifier::new(settings.clone())));
        }
        service
    }

    /// Serves `POST /webhooks/{dam}` for the verifier's DAM (unconfigured DAMs answer 404).
    pub fn with_verifier(mut self, verifier: Arc<dyn WebhookVerifier>) -> Self {
        self.verifiers.insert(verifier.dam().as_str(), verifier);
        self
    }

    /// Handles a raw HTTP request: method and path routing, then [`Self::handle`].
    pub async fn handle_http(
        &self,
        method: &str,
        path: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
        received_at: SystemTime,
    ) -> IngestResponse {
        let Some(dam) = route(path) else {
            tracing::info!(path, "No such route.");
            return IngestResponse::error(404, "not_found");
        };
        if !method.eq_ignore_ascii_case("POST") {
            tracing::info!(path, method, "Method not allowed.");
            return IngestResponse::error(405, "method_not_allowed");
        }
        self.handle(dam, headers, body, received_at).await
    }

    /// Handles one delivery for `dam` (the route segment). Header names may be in any case.
    pub async fn handle(
        &self,
        dam: &str,
        headers: Vec<(String, String)>,
        body: Bytes,
        received_at: SystemTime,
    ) -> IngestResponse {
        let Some(verifier) = self.verifiers.get(dam) else {
            tracing::info!(dam, "Webhook for an unknown or unconfigured DAM.");
            return IngestResponse::error(404, "not_found");
        };
        if body.len() > self.settings.max_body_bytes {
            tracing::warn!(dam, bytes = body.len(), "Webhook body over the limit.");
            return IngestResponse::error(413, "payload_too_large");
        }
        let headers: Vec<(String, String)> = headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let content_type = headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        if !content_type_allowed(verifier.dam(), content_type) {
            tracing::warn!(
                dam,
                content_type,
                "Webhook with an unsupported content type."
            );
            return IngestResponse::error(415, "unsupported_media_type");
        }
        if body.is_empty() {
            tracing::warn!(dam, "Empty webhook body.");
            return IngestResponse::error(400, "malformed");
        }
        let request = WebhookRequest {
            headers,
            body,
            received_at,
        };
        let events = match verifier.verify(&request).await {
            Ok(WebhookOutcome::Events(events)) => events,
            Ok(WebhookOutcome::Handled(what)) => {
                tracing::info!(dam, what, "Webhook control message handled.");
                return IngestResponse {
                    status: 200,
                    body: r#"{"status":"handled"}"#.into(),
                    queued: 0,
                };
            }
            Err(error) => {
                let (status, code) = match &error {
                    WebhookError::Unauthorized(_) => (401, "unauthorized"),
                    WebhookError::Malformed(_) => (400, "malformed"),
                    WebhookError::Unavailable(_) => (503, "unavailable"),
                };
                tracing::warn!(dam, status, error = %error, "Webhook rejected.");
                return IngestResponse::error(status, code);
            }
        };
        // The asset ids, so "why did asset X not sync" can start from its webhook.
        let dam_ids = asset_ids(&events);
        if !events.is_empty()
            && let Err(error) = self.queue.enqueue(&events).await
        {
            tracing::error!(
                dam,
                %dam_ids,
                events = events.len(),
                retriable = error.is_retriable(),
                error = %error,
                "Enqueue failed; the sender will retry."
            );
            return IngestResponse::error(503, "unavailable");
        }
        tracing::info!(dam, %dam_ids, queued = events.len(), "Webhook accepted.");
        IngestResponse {
            status: 202,
            body: format!(r#"{{"status":"accepted","queued":{}}}"#, events.len()),
            queued: events.len(),
        }
    }
}

/// The first asset ids of a delivery, comma-separated (a log field, bounded in size).
fn asset_ids(events: &[crate::dam::ChangeEvent]) -> String {
    const SHOWN: usize = 20;
    let mut ids: Vec<&str> = events
        .iter()
        .take(SHOWN)
        .map(|e| e.asset_id.as_str())
        .collect();
    if events.len() > SHOWN {
        ids.push("...");
    }
    ids.join(",")
}

/// Cloudinary and Standard Webhooks post JSON; SNS posts `text/plain; charset=UTF-8`.
fn content_type_allowed(dam: DamKind, content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let json = media == "application/json"
        || (media.starts_with("application/") && media.ends_with("+json"));
    match dam {
        DamKind::Bynder => json || media == "text/plain",
        DamKind::Cloudinary | DamKind::Generic => json,
    }
}

/// The webhook verifiers to serve and their limits. A DAM is served only when its webhook
/// secret (Bynder: its topic list) is set. The queue is the caller's: this service is
/// transport-free.
#[derive(Debug, Clone, Default)]
pub struct IngestConfig {
    pub settings: IngestSettings,
    pub cloudinary: Option<CloudinarySettings>,
    pub bynder: Option<SnsSettings>,
    pub generic: Option<GenericSettings>,
}

/// A missing or malformed ingest setting, named as the user wrote it.
pub type ConfigError = SettingError;

/// Keys of the ingest service itself (`[server]` in the `serve` config; unprefixed variables).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct IngestKeys {
    /// Larger bodies are refused with 413. Default 1 MiB.
    pub max_body_bytes: Option<usize>,
}

impl IngestConfig {
    /// Reads `MAX_BODY_BYTES` and the webhook keys of every DAM with a variable set
    /// ([`DamSettings::all_from_lookup`]); blank values count as unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let keys: IngestKeys = settings::from_lookup("", &get)?;
        let mut config = Self::default();
        if let Some(max) = keys.max_body_bytes {
            config.settings.max_body_bytes = max;
        }
        for dam in DamSettings::all_from_lookup(&get)? {
            config.serve(&dam).map_err(|e| e.at(dam.env_origin()))?;
        }
        Ok(config)
    }

    /// Adds `dam`'s webhook, when its secret is set. Errors name keys by field, to be renamed
    /// with [`SettingError::at`] for the front they came from.
    pub fn serve(&mut self, dam: &DamSettings) -> Result<(), ConfigError> {
        match dam.kind() {
            DamKind::Cloudinary => self.cloudinary = dam.cloudinary_webhook()?,
            DamKind::Bynder => self.bynder = dam.bynder_webhook()?,
            DamKind::Generic => self.generic = dam.generic_webhook()?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;

    use async_trait::async_trait;

    use crate::dam::cloudinary::webhook::SignatureAlgorithm;
    use crate::dam::{ChangeEvent, ChangeKind};
    use crate::testing::MemoryChangeQueue;

    /// Answers each verify with the next scripted result.
    struct Scripted(Mutex<Vec<Result<WebhookOutcome, WebhookError>>>);

    #[async_trait]
    impl WebhookVerifier for Scripted {
        fn dam(&self) -> DamKind {
            DamKind::Generic
        }
        async fn verify(&self, _: &WebhookRequest) -> Result<WebhookOutcome, WebhookError> {
            self.0.lock().unwrap().remove(0)
        }
    }

    fn event() -> ChangeEvent {
        ChangeEvent {
            dam: DamKind::Generic,
            asset_id: "a".into(),
            kind: ChangeKind::Upsert,
            version: None,
            asset: None,
            dedupe_key: "k".into(),
            received_at_ms: 0,
        }
    }

    #[tokio::test]
    async fn outcomes_map_to_statuses_and_only_queued_events_get_2xx() {
        let queue = Arc::new(MemoryChangeQueue::new());
        let script = vec![
            Ok(WebhookOutcome::Events(vec![event(), event()])),
            Ok(WebhookOutcome::Events(vec![])),
            Ok(WebhookOutcome::Handled("confirmed".into())),
            Err(WebhookError::Unauthorized("x".into())),
            Err(WebhookError::Malformed("x".into())),
            Err(WebhookError::Unavailable("x".into())),
            Ok(WebhookOutcome::Events(vec![event()])),
        ];
        let service = IngestService::new(IngestSettings { max_body_bytes: 8 }, queue.clone())
            .with_verifier(Arc::new(Scripted(Mutex::new(script))));
        let json = vec![("Content-Type".to_owned(), "application/json".to_owned())];
        let call = |body: &'static str| {
            service.handle_http(
                "POST",
                "/webhooks/generic",
                json.clone(),
                Bytes::from(body),
                SystemTime::now(),
            )
        };
        let mut statuses = Vec::new();
        for _ in 0..6 {
            statuses.push(call("{}").await.status);
        }
        assert_eq!(statuses, [202, 202, 200, 401, 400, 503]);
        assert_eq!(queue.drain().len(), 2);

        queue.set_failure(Some("sqs down"));
        let failed = call("{}").await;
        assert_eq!(
            (failed.status, failed.body.as_str()),
            (503, r#"{"error":"unavailable"}"#)
        );
        assert!(queue.is_empty());

        // Checked before the verifier runs (the script is exhausted: a call would panic).
        assert_eq!(call("123456789").await.status, 413);
        assert_eq!(call("").await.status, 400);
        let other = service
            .handle_http(
                "POST",
                "/webhooks/bynder",
                json.clone(),
                Bytes::from("{}"),
                SystemTime::now(),
            )
            .await;
        assert_eq!(other.status, 404, "DAM without a verifier");
    }

    #[test]
    fn only_webhooks_paths_route_with_or_without_a_stage_prefix() {
        assert_eq!(route("/webhooks/cloudinary"), Some("cloudinary"));
        assert_eq!(route("/prod/webhooks/bynder/"), Some("bynder"));
        assert_eq!(route("/webhooks/"), None);
        assert_eq!(route("/hooks/generic"), None);
        assert_eq!(route("/"), None);
    }

    #[test]
    fn each_dam_accepts_only_the_content_types_it_sends() {
        assert!(content_type_allowed(
            DamKind::Generic,
            "application/json; charset=utf-8"
        ));
        assert!(content_type_allowed(
            DamKind::Cloudinary,
            "Application/JSON"
        ));
        assert!(!content_type_allowed(DamKind::Cloudinary, "text/plain"));
        assert!(content_type_allowed(
            DamKind::Bynder,
            "text/plain; charset=UTF-8"
        ));
        assert!(!content_type_allowed(DamKind::Generic, ""));
        assert!(!content_type_allowed(
            DamKind::Bynder,
            "application/x-www-form-urlencoded"
        ));
    }

    #[test]
    fn variables_enable_each_dam_whose_webhook_secret_is_set() {
        let vars: HashMap<&str, &str> = HashMap::from([
            ("MAX_BODY_BYTES", "2048"),
            ("CLOUDINARY_API_SECRET", "s"),
            ("CLOUDINARY_SIGNATURE_ALGORITHM", "sha256"),
            ("BYNDER_TOPIC_ARNS", "arn:a, arn:b"),
            ("GENERIC_WEBHOOK_SECRETS", "whsec_YWJj whsec_ZGVm"),
        ]);
        let config = IngestConfig::from_lookup(|k| vars.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(config.settings.max_body_bytes, 2048);
        assert_eq!(
            config.cloudinary.unwrap().algorithm,
            SignatureAlgorithm::Sha256
        );
        assert_eq!(config.bynder.unwrap().topic_arns, ["arn:a", "arn:b"]);
        assert_eq!(config.generic.unwrap().secrets.len(), 2);

        let none = IngestConfig::from_lookup(|_| None).unwrap();
        assert!(none.cloudinary.is_none() && none.bynder.is_none() && none.generic.is_none());
        let bad = |k: &str| (k == "GENERIC_WEBHOOK_SECRETS").then(|| "whsec_!!".to_owned());
        let e = IngestConfig::from_lookup(bad).unwrap_err();
        assert_eq!(e.name(), Some("GENERIC_WEBHOOK_SECRETS"), "{e}");
    }
}
