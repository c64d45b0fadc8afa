//! Cloudinary notification webhooks.
//!
//! Cloudinary signs each notification with `X-Cld-Timestamp` (Unix seconds) and
//! `X-Cld-Signature` = hex(SHA-1 or SHA-256(raw body ‖ timestamp ‖ API secret)): a plain digest
//! with the account API secret appended, not an HMAC. The `timestamp`/`signature` fields inside
//! the body are not authentication and are ignored. Cloudinary adds fields over time, so the
//! body is parsed leniently.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::dam::verify::{check_window, ct_eq, required_header, unix_seconds};
use crate::dam::{
    ChangeEvent, ChangeKind, DamKind, Version, WebhookError, WebhookOutcome, WebhookRequest,
    WebhookVerifier,
};
use crate::time::{epoch_ms, parse_rfc3339_ms};

pub const TIMESTAMP_HEADER: &str = "x-cld-timestamp";
pub const SIGNATURE_HEADER: &str = "x-cld-signature";

/// Which digest Cloudinary signs with (account setting; SHA-1 is Cloudinary's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureAlgorithm {
    /// Chosen by signature length: 40 hex digits = SHA-1, 64 = SHA-256.
    #[default]
    Auto,
    Sha1,
    Sha256,
}

impl std::str::FromStr for SignatureAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(Self::Auto),
            "sha1" | "sha-1" => Ok(Self::Sha1),
            "sha256" | "sha-256" => Ok(Self::Sha256),
            other => Err(format!("unknown Cloudinary signature algorithm {other:?}")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CloudinarySettings {
    pub api_secret: SecretString,
    pub algorithm: SignatureAlgorithm,
    /// Oldest accepted `X-Cld-Timestamp` (the Cloudinary SDKs use 2 h).
    pub max_age: Duration,
    /// How far ahead of our clock a timestamp may be (clock skew).
    pub max_future_skew: Duration,
}

impl CloudinarySettings {
    pub fn new(api_secret: SecretString) -> Self {
        Self {
            api_secret,
            algorithm: SignatureAlgorithm::Auto,
            max_age: Duration::from_secs(2 * 3600),
            max_future_skew: Duration::from_secs(5 * 60),
        }
    }
}

pub struct CloudinaryWebhookVerifier {
    settings: CloudinarySettings,
}

/// Hex digest Cloudinary sends for `body` at `timestamp` (the header value, verbatim).
pub fn signature(
    algorithm: SignatureAlgorithm,
    body: &[u8],
    timestamp: &str,
    secret: &str,
) -> String {
    fn digest<D: Digest>(body: &[u8], timestamp: &str, secret: &str) -> String {
        let mut d = D::new();
        d.update(body);
        d.update(timestamp.as_bytes());
        d.update(secret.as_bytes());
        hex::encode(d.finalize())
    }
    match algorithm {
        SignatureAlgorithm::Sha256 => digest::<Sha256>(body, timestamp, secret),
        SignatureAlgorithm::Sha1 | SignatureAlgorithm::Auto => {
            digest::<Sha1>(body, timestamp, secret)
        }
    }
}

impl CloudinaryWebhookVerifier {
    pub fn new(settings: CloudinarySettings) -> Self {
        Self { settings }
    }

    fn check_signature(&self, request: &WebhookRequest) -> Result<i64, WebhookError> {
        let timestamp = required_header(request, TIMESTAMP_HEADER)?.trim();
        let given = required_header(request, SIGNATURE_HEADER)?
            .trim()
            .to_ascii_lowercase();
        let signed_at = unix_seconds(timestamp, TIMESTAMP_HEADER)?;
        let algorithm = match (self.settings.algorithm, given.len()) {
            (SignatureAlgorithm::Auto, 40) => SignatureAlgorithm::Sha1,
            (SignatureAlgorithm::Auto, 64) => SignatureAlgorithm::Sha256,
            (SignatureAlgorithm::Auto, _) => {
                return Err(WebhookError::Unauthorized(
                    "signature has no known length".into(),
                ));
            }
            (fixed, _) => fixed,
        };
        let expected = signature(
            algorithm,
            &request.body,
            timestamp,
            self.settings.api_secret.expose_secret(),
        );
        // Signature before the clock: a forged request learns nothing about our window.
        if !ct_eq(expected.as_bytes(), given.as_bytes()) {
            return Err(WebhookError::Unauthorized("signature mismatch".into()));
        }
        let signed_at_ms = signed_at.saturating_mul(1000);
        check_window(
            signed_at_ms,
            request.received_at,
            self.settings.max_age,
            self.settings.max_future_skew,
        )?;
        Ok(signed_at_ms)
    }
}

#[async_trait]
impl WebhookVerifier for CloudinaryWebhookVerifier {
    fn dam(&self) -> DamKind {
        DamKind::Cloudinary
    }

    async fn verify(&self, request: &WebhookRequest) -> Result<WebhookOutcome, WebhookError> {
        let signed_at_ms = self.check_signature(request)?;
        let body: Value = serde_json::from_slice(&request.body)
            .map_err(|e| WebhookError::Malformed(format!("body is not JSON: {e}")))?;
        parse_notification(&body, signed_at_ms, epoch_ms(request.received_at))
            .map(WebhookOutcome::Events)
    }
}

/// Turns a verified notification into change events; types we do not sync give none.
pub fn parse_notification(
    body: &Value,
    signed_at_ms: i64,
    received_at_ms: i64,
) -> Result<Vec<ChangeEvent>, WebhookError> {
    let Some(kind_name) = body.get("notification_type").and_then(Value::as_str) else {
        return Err(WebhookError::Malformed("no notification_type".into()));
    };
    let kind = match kind_name {
        "upload"
        | "resource_metadata_changed"
        | "resource_context_changed"
        | "resource_tags_changed"
        | "rename" => ChangeKind::Upsert,
        "delete" => ChangeKind::Delete,
        _ => return Ok(Vec::new()),
    };
    // When Cloudinary rendered the notification; without it, the signed delivery time. Only
    // part of the dedupe key: it is not the Admin API's `last_updated.updated_at`.
    let changed_at_ms = body
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339_ms)
        .unwrap_or(signed_at_ms);

    // Batch notifications (delete, tag/context/metadata changes) list `resources`, as an array
    // or keyed by public_id; single-asset ones (upload, rename) carry the asset at top level.
    let resources: Vec<&Value> = match body.get("resources") {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(Value::Object(map)) => map.values().collect(),
        Some(_) => return Err(WebhookError::Malformed("resources is not a list".into())),
        None => vec![body],
    };
    if resources.is_empty() {
        return Err(WebhookError::Malformed(format!(
            "{kind_name} lists no resources"
        )));
    }
    resources
        .into_iter()
        .map(|resource| {
            let asset_id = resource
                .get("asset_id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .ok_or_else(|| WebhookError::Malformed(format!("{kind_name} without asset_id")))?;
            let resource_version = resource
                .get("version")
                .or_else(|| body.get("version"))
                .and_then(Value::as_i64);
            let seq = resource_version.unwrap_or(0);
            Ok(ChangeEvent {
                dam: DamKind::Cloudinary,
                asset_id: asset_id.to_owned(),
                kind,
                // The hint speaks only for the resource `version` (the upload counter the Admin
                // API returns too): a notification or delivery time is later than the change's
                // `updated_at`, and as a hint time it would make every read look lagging.
                // `modified_at_ms: 0` tells `Version::lags_behind` to compare counters only.
                version: resource_version.map(|seq| Version {
                    modified_at_ms: 0,
                    seq,
                }),
                asset: None,
                // Cloudinary has no delivery id: the same change retried hashes the same.
                dedupe_key: format!("cloudinary:{asset_id}:{seq}:{kind_name}:{changed_at_ms}"),
                received_at_ms,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use bytes::Bytes;

    use super::*;

    const SECRET: &str = "abcd";

    fn request(body: &str, timestamp: &str, sig: &str, now_s: u64) -> WebhookRequest {
        WebhookRequest {
            headers: vec![
                (TIMESTAMP_HEADER.into(), timestamp.into()),
                (SIGNATURE_HEADER.into(), sig.into()),
            ],
            body: Bytes::from(body.to_owned()),
            received_at: UNIX_EPOCH + Duration::from_secs(now_s),
        }
    }

    fn verifier() -> CloudinaryWebhookVerifier {
        CloudinaryWebhookVerifier::new(CloudinarySettings::new(SECRET.into()))
    }

    #[test]
    fn known_vectors() {
        // Computed independently: printf '{}1315060510abcd' | sha1sum (and sha256sum).
        assert_eq!(
            signature(SignatureAlgorithm::Sha1, b"{}", "1315060510", SECRET),
            "352fc754326b890d808ca7df48aa158a5a19b613"
        );
        assert_eq!(
            signature(SignatureAlgorithm::Sha256, b"{}", "1315060510", SECRET),
            "e649a230a2ecfaa05bddc52cf80151b3eedf07516e984ec30944565eb27c5f28"
        );
    }

    #[tokio::test]
    async fn sha1_and_sha256_both_verify() {
        let body = r#"{"notification_type":"upload","asset_id":"a1","version":7}"#;
        for alg in [SignatureAlgorithm::Sha1, SignatureAlgorithm::Sha256] {
            let sig = signature(alg, body.as_bytes(), "1000", SECRET);
            let out = verifier()
                .verify(&request(body, "1000", &sig, 1010))
                .await
                .unwrap();
            let WebhookOutcome::Events(events) = out else {
                panic!("not events")
            };
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].asset_id, "a1");
            assert_eq!(
                events[0].version,
                Some(Version {
                    modified_at_ms: 0,
                    seq: 7
                })
            );
        }
    }

    #[tokio::test]
    async fn a_fixed_algorithm_refuses_the_other_one() {
        let body = r#"{"notification_type":"upload","asset_id":"a1"}"#;
        let mut settings = CloudinarySettings::new(SECRET.into());
        settings.algorithm = SignatureAlgorithm::Sha256;
        let v = CloudinaryWebhookVerifier::new(settings);
        let sha1 = signature(SignatureAlgorithm::Sha1, body.as_bytes(), "1000", SECRET);
        let sha256 = signature(SignatureAlgorithm::Sha256, body.as_bytes(), "1000", SECRET);
        assert!(matches!(
            v.verify(&request(body, "1000", &sha1, 1000)).await,
            Err(WebhookError::Unauthorized(_))
        ));
        assert!(
            v.verify(&request(body, "1000", &sha256, 1000))
                .await
                .is_ok()
        );
        // Upper-case hex is the same signature.
        let upper = sha256.to_ascii_uppercase();
        assert!(v.verify(&request(body, "1000", &upper, 1000)).await.is_ok());
    }

    #[tokio::test]
    async fn rejects_tampered_body_stale_and_future() {
        let body = r#"{"notification_type":"upload","asset_id":"a1"}"#;
        let sig = signature(SignatureAlgorithm::Sha1, body.as_bytes(), "10000", SECRET);
        let v = verifier();
        let tampered = body.replace("a1", "a2");
        for req in [
            request(&tampered, "10000", &sig, 10_000),
            request(body, "10001", &sig, 10_000),
            request(body, "10000", &sig, 10_000 + 7_201),
            request(body, "10000", &sig, 10_000 - 301),
        ] {
            assert!(matches!(
                v.verify(&req).await,
                Err(WebhookError::Unauthorized(_))
            ));
        }
        assert!(
            v.verify(&request(body, "10000", &sig, 10_000 + 7_200))
                .await
                .is_ok()
        );
    }

    #[test]
    fn delete_lists_one_event_per_resource() {
        let body: Value = serde_json::from_str(
            r#"{"notification_type":"delete","resources":[
                {"asset_id":"x","version":3},{"asset_id":"y","version":4}]}"#,
        )
        .unwrap();
        let events = parse_notification(&body, 5_000, 6_000).unwrap();
        let ids: Vec<_> = events
            .iter()
            .map(|e| (e.asset_id.as_str(), e.kind))
            .collect();
        assert_eq!(ids, [("x", ChangeKind::Delete), ("y", ChangeKind::Delete)]);
        assert_ne!(events[0].dedupe_key, events[1].dedupe_key);
        assert_eq!(events[0].received_at_ms, 6_000);
    }

    #[test]
    fn resources_keyed_by_public_id_and_body_timestamp() {
        let body: Value = serde_json::from_str(
            r#"{"notification_type":"resource_metadata_changed",
                "timestamp":"1970-01-01T00:00:02+00:00",
                "resources":{"shoes/a":{"asset_id":"a","version":5}}}"#,
        )
        .unwrap();
        let events = parse_notification(&body, 9_000, 0).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, ChangeKind::Upsert);
        // The hint carries the resource version only; the body's time keys the dedupe.
        assert_eq!(
            events[0].version,
            Some(Version {
                modified_at_ms: 0,
                seq: 5
            })
        );
        assert_eq!(
            events[0].dedupe_key,
            "cloudinary:a:5:resource_metadata_changed:2000"
        );
    }

    #[test]
    fn a_later_notification_time_does_not_make_the_admin_read_lag() {
        // The Admin API says (T, v); the notification was stamped T+1 s for version v.
        let t = 1_795_860_942_000;
        let read = Version {
            modified_at_ms: t,
            seq: 7,
        };
        let body: Value = serde_json::from_str(
            r#"{"notification_type":"resource_context_changed",
                "timestamp":"2026-11-28T10:15:43+00:00",
                "resources":[{"asset_id":"a","version":7}]}"#,
        )
        .unwrap();
        let hint = parse_notification(&body, t + 1000, t + 1000).unwrap()[0]
            .version
            .unwrap();
        assert!(!read.lags_behind(&hint), "{read:?} vs {hint:?}");
        // A notification for a newer upload than the read: the DAM lags.
        let newer = Version { seq: 8, ..hint };
        assert!(read.lags_behind(&newer));
        // No resource version: no hint at all.
        let bare: Value =
            serde_json::from_str(r#"{"notification_type":"upload","asset_id":"a"}"#).unwrap();
        assert_eq!(parse_notification(&bare, t, t).unwrap()[0].version, None);
    }

    #[test]
    fn unsynced_types_give_no_events_and_garbage_is_malformed() {
        let eager: Value = serde_json::from_str(r#"{"notification_type":"eager"}"#).unwrap();
        assert!(parse_notification(&eager, 0, 0).unwrap().is_empty());
        let no_id: Value = serde_json::from_str(r#"{"notification_type":"upload"}"#).unwrap();
        assert!(matches!(
            parse_notification(&no_id, 0, 0),
            Err(WebhookError::Malformed(_))
        ));
    }
}
