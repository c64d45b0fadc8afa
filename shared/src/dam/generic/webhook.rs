//! Standard Webhooks 1.0 deliveries from any DAM that speaks our canonical event
//! (docs/generic-dam.md).
//!
//! Signed content is `{webhook-id}.{webhook-timestamp}.{raw body}`, HMAC-SHA256 with a
//! `whsec_<base64>` secret; `webhook-signature` is a space-separated list of `v1,<base64>`
//! entries, any of which may match (the sender rotates secrets by signing with both). We also
//! accept several configured secrets (our side of a rotation).

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use super::api::{is_tombstone, to_dam_asset};
use crate::dam::verify::{check_window, ct_eq, required_header, unix_seconds};
use crate::dam::{
    ChangeEvent, ChangeKind, DamAsset, DamKind, Version, WebhookError, WebhookOutcome,
    WebhookRequest, WebhookVerifier,
};
use crate::time::{epoch_ms, parse_rfc3339_ms};

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

const SECRET_PREFIX: &str = "whsec_";

/// A Standard Webhooks signing secret: the bytes behind `whsec_<base64>`.
#[derive(Clone)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

impl SigningSecret {
    /// Parses `whsec_<base64>`; the prefix is optional, as some senders show the bare key.
    pub fn parse(value: &str) -> Result<Self, String> {
        let encoded = value.trim();
        let encoded = encoded.strip_prefix(SECRET_PREFIX).unwrap_or(encoded);
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| "not valid base64 after whsec_".to_owned())?;
        if key.is_empty() {
            return Err("webhook secret is empty".into());
        }
        Ok(Self(key))
    }

    /// The `v1` signature (base64) of one delivery.
    pub fn sign(&self, id: &str, timestamp: &str, body: &[u8]) -> String {
        STANDARD.encode(self.mac(id, timestamp, body))
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }
}

#[derive(Debug, Clone)]
pub struct GenericSettings {
    /// Every secret currently valid (several during a rotation).
    pub secrets: Vec<SigningSecret>,
    /// Accepted distance between `webhook-timestamp` and our clock, both ways (spec: 5 min).
    pub tolerance: Duration,
}

impl GenericSettings {
    pub fn new(secrets: Vec<SigningSecret>) -> Self {
        Self {
            secrets,
            tolerance: Duration::from_secs(5 * 60),
        }
    }
}

pub struct GenericWebhookVerifier {
    settings: GenericSettings,
}

impl GenericWebhookVerifier {
    pub fn new(settings: GenericSettings) -> Self {
        Self { settings }
    }

    fn check_signature(&self, request: &WebhookRequest) -> Result<String, WebhookError> {
        let id = required_header(request, ID_HEADER)?.trim();
        let timestamp = required_header(request, TIMESTAMP_HEADER)?.trim();
        let signatures = required_header(request, SIGNATURE_HEADER)?;
        if id.is_empty() {
            return Err(WebhookError::Unauthorized("empty webhook-id".into()));
        }
        let signed_at = unix_seconds(timestamp, TIMESTAMP_HEADER)?;
        let given: Vec<Vec<u8>> = signatures
            .split_whitespace()
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|b64| STANDARD.decode(b64).ok())
            .collect();
        // Check every pair without returning early, so timing does not reveal which matched.
        let mut matched = false;
        for secret in &self.settings.secrets {
            let expected = secret.mac(id, timestamp, &request.body);
            for candidate in &given {
                matched |= ct_eq(&expected, candidate);
            }
        }
        if !matched {
            return Err(WebhookError::Unauthorized("no v1 signature matches".into()));
        }
        check_window(
            signed_at.saturating_mul(1000),
            request.received_at,
            self.settings.tolerance,
            self.settings.tolerance,
        )?;
        Ok(id.to_owned())
    }
}

#[async_trait]
impl WebhookVerifier for GenericWebhookVerifier {
    fn dam(&self) -> DamKind {
        DamKind::Generic
    }

    async fn verify(&self, request: &WebhookRequest) -> Result<WebhookOutcome, WebhookError> {
        let delivery_id = self.check_signature(request)?;
        let event: CanonicalEvent = serde_json::from_slice(&request.body)
            .map_err(|e| WebhookError::Malformed(format!("not a canonical event: {e}")))?;
        event
            .into_changes(&delivery_id, epoch_ms(request.received_at))
            .map(WebhookOutcome::Events)
    }
}

/// The canonical event body (docs/generic-dam.md).
#[derive(Debug, Deserialize)]
pub struct CanonicalEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub timestamp: Option<String>,
    pub data: OneOrMany<EventData>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

#[derive(Debug, Deserialize)]
pub struct EventData {
    pub id: String,
    #[serde(default)]
    pub version: Option<i64>,
    #[serde(default)]
    pub modified_at: Option<String>,
    /// The full asset object of the REST contract, kept as JSON so that it goes through the
    /// same [`to_dam_asset`] as a REST read.
    #[serde(default)]
    pub asset: Option<Value>,
}

/// The carried asset as the REST read would give it; `None` for a tombstone, which the
/// consumer resolves by reading the DAM.
fn carried_asset(data_id: &str, wire: Value) -> Result<Option<DamAsset>, WebhookError> {
    if wire.get("id").and_then(Value::as_str) != Some(data_id) {
        return Err(WebhookError::Malformed(
            "asset.id differs from data.id".into(),
        ));
    }
    if is_tombstone(&wire) {
        return Ok(None);
    }
    to_dam_asset(wire)
        .map(Some)
        .map_err(|e| WebhookError::Malformed(format!("data.asset: {e}")))
}

impl CanonicalEvent {
    pub fn into_changes(
        self,
        delivery_id: &str,
        received_at_ms: i64,
    ) -> Result<Vec<ChangeEvent>, WebhookError> {
        let kind = match self.kind.as_str() {
            "asset.upserted" => ChangeKind::Upsert,
            "asset.deleted" => ChangeKind::Delete,
            // Senders may add event types; accepting them keeps their endpoint healthy.
            _ => return Ok(Vec::new()),
        };
        let event_ms = match self.timestamp.as_deref() {
            Some(ts) => Some(parse_rfc3339_ms(ts).ok_or_else(|| {
                WebhookError::Malformed(format!("timestamp {ts:?} is not RFC 3339"))
            })?),
            None => None,
        };
        let (items, many) = match self.data {
            OneOrMany::One(item) => (vec![item], false),
            OneOrMany::Many(items) => (items, true),
        };
        items
            .into_iter()
            .enumerate()
            .map(|(index, data)| {
                if data.id.is_empty() {
                    return Err(WebhookError::Malformed("empty data.id".into()));
                }
                let modified_at_ms = match data.modified_at.as_deref() {
                    Some(ts) => Some(parse_rfc3339_ms(ts).ok_or_else(|| {
                        WebhookError::Malformed(format!("modified_at {ts:?} is not RFC 3339"))
                    })?),
                    None => None,
                };
                let asset = match data.asset {
                    Some(wire) => carried_asset(&data.id, wire)?,
                    None => None,
                };
                let version = match (&asset, modified_at_ms.or(event_ms), data.version) {
                    (Some(asset), _, _) => Some(asset.version),
                    (None, Some(ms), seq) => Some(Version {
                        modified_at_ms: ms,
                        seq: seq.unwrap_or(0),
                    }),
                    (None, None, _) => None,
                };
                // webhook-id is stable across retries; a multi-event delivery numbers its items.
                let dedupe_key = if many {
                    format!("generic:{delivery_id}#{index}")
                } else {
                    format!("generic:{delivery_id}")
                };
                Ok(ChangeEvent {
                    dam: DamKind::Generic,
                    asset_id: data.id,
                    kind,
                    version,
                    asset,
                    dedupe_key,
                    received_at_ms,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use bytes::Bytes;

    use super::*;

    // The Standard Webhooks specification's published test vector.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: &str = "1614265330";
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn request(id: &str, ts: &str, sig: &str, body: &str, now_s: u64) -> WebhookRequest {
        WebhookRequest {
            headers: vec![
                (ID_HEADER.into(), id.into()),
                (TIMESTAMP_HEADER.into(), ts.into()),
                (SIGNATURE_HEADER.into(), sig.into()),
            ],
            body: Bytes::from(body.to_owned()),
            received_at: UNIX_EPOCH + Duration::from_secs(now_s),
        }
    }

    fn verifier(secrets: &[&str]) -> GenericWebhookVerifier {
        GenericWebhookVerifier::new(GenericSettings::new(
            secrets
                .iter()
                .map(|s| SigningSecret::parse(s).unwrap())
                .collect(),
        ))
    }

    #[test]
    fn spec_vector() {
        let secret = SigningSecret::parse(SPEC_SECRET).unwrap();
        assert_eq!(
            secret.sign(SPEC_ID, SPEC_TS, SPEC_BODY.as_bytes()),
            SPEC_SIG
        );
    }

    #[test]
    fn spec_vector_verifies_among_several_entries_and_secrets() {
        let v = verifier(&["whsec_b3RoZXJzZWNyZXQ=", SPEC_SECRET]);
        let header = format!("v1,bm9wZQ== v1a,xyz v1,{SPEC_SIG}");
        let req = request(SPEC_ID, SPEC_TS, &header, SPEC_BODY, 1_614_265_330 + 10);
        assert_eq!(v.check_signature(&req).unwrap(), SPEC_ID);
    }

    #[test]
    fn rejects_wrong_id_window_and_missing_entries() {
        let v = verifier(&[SPEC_SECRET]);
        let sig = format!("v1,{SPEC_SIG}");
        let now = 1_614_265_330;
        for req in [
            request("msg_other", SPEC_TS, &sig, SPEC_BODY, now),
            request(SPEC_ID, SPEC_TS, &sig, r#"{"test": 2432232315}"#, now),
            request(SPEC_ID, SPEC_TS, &sig, SPEC_BODY, now + 301),
            request(SPEC_ID, SPEC_TS, &sig, SPEC_BODY, now - 301),
            request(SPEC_ID, SPEC_TS, SPEC_SIG, SPEC_BODY, now),
            request(SPEC_ID, SPEC_TS, "", SPEC_BODY, now),
        ] {
            assert!(matches!(
                v.check_signature(&req),
                Err(WebhookError::Unauthorized(_))
            ));
        }
    }

    #[test]
    fn single_and_array_forms() {
        let one: CanonicalEvent = serde_json::from_str(
            r#"{"type":"asset.upserted","timestamp":"2026-01-01T00:00:00Z",
                "data":{"id":"a","version":3}}"#,
        )
        .unwrap();
        let events = one.into_changes("msg_1", 9).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].dedupe_key, "generic:msg_1");
        assert_eq!(events[0].version.unwrap().seq, 3);
        assert_eq!(events[0].version.unwrap().modified_at_ms, 1_767_225_600_000);

        let many: CanonicalEvent =
            serde_json::from_str(r#"{"type":"asset.deleted","data":[{"id":"a"},{"id":"b"}]}"#)
                .unwrap();
        let events = many.into_changes("msg_2", 9).unwrap();
        let keys: Vec<_> = events.iter().map(|e| e.dedupe_key.as_str()).collect();
        assert_eq!(keys, ["generic:msg_2#0", "generic:msg_2#1"]);
        assert!(
            events
                .iter()
                .all(|e| e.kind == ChangeKind::Delete && e.version.is_none())
        );
    }

    #[test]
    fn full_asset_is_carried_and_checked() {
        let with_asset: CanonicalEvent = serde_json::from_str(
            r#"{"type":"asset.upserted","data":{"id":"a","asset":{"id":"a","version":2,
                "modified_at":"1970-01-01T00:00:01Z","fields":{"title":"T"}}}}"#,
        )
        .unwrap();
        let events = with_asset.into_changes("m", 0).unwrap();
        let asset = events[0].asset.as_ref().unwrap();
        assert_eq!(
            asset.version,
            Version {
                modified_at_ms: 1000,
                seq: 2
            }
        );
        // The whole asset object, as a REST read gives it.
        assert_eq!(asset.fields["fields"]["title"], "T");
        assert_eq!(asset.fields["id"], "a");

        let mismatched: CanonicalEvent = serde_json::from_str(
            r#"{"type":"asset.upserted","data":{"id":"a","asset":{"id":"b","version":2,
                "modified_at":"1970-01-01T00:00:01Z"}}}"#,
        )
        .unwrap();
        assert!(matches!(
            mismatched.into_changes("m", 0),
            Err(WebhookError::Malformed(_))
        ));

        let bad_time: CanonicalEvent = serde_json::from_str(
            r#"{"type":"asset.upserted","data":{"id":"a","asset":{"id":"a","version":2,
                "modified_at":"yesterday"}}}"#,
        )
        .unwrap();
        assert!(matches!(
            bad_time.into_changes("m", 0),
            Err(WebhookError::Malformed(_))
        ));

        // A carried tombstone is not an asset to map: the consumer reads the DAM instead.
        let tombstone: CanonicalEvent = serde_json::from_str(
            r#"{"type":"asset.upserted","data":{"id":"a","asset":{"id":"a","version":3,
                "modified_at":"1970-01-01T00:00:02Z","deleted":true}}}"#,
        )
        .unwrap();
        let events = tombstone.into_changes("m", 0).unwrap();
        assert!(events[0].asset.is_none());
    }

    #[test]
    fn secret_must_be_base64() {
        assert!(SigningSecret::parse("whsec_not base64!").is_err());
        assert!(SigningSecret::parse("whsec_").is_err());
    }
}
