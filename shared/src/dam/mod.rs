//! The DAM port: what the pipeline needs from any DAM, whatever its vendor.
//!
//! Webhooks are hints: the consumer re-reads thin events through [`AssetSource`], and a
//! per-asset [`Version`] guard makes duplicates and reordering harmless. Adapters live in one
//! module per vendor (`cloudinary`, `bynder`, `generic`).

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub mod bynder;
pub mod cloudinary;
pub mod generic;
pub(crate) mod http;
pub mod settings;
mod verify;

/// Which DAM an event or asset comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DamKind {
    Cloudinary,
    Bynder,
    Generic,
}

impl DamKind {
    /// Every kind, in a stable order (for help texts and listings).
    pub const ALL: [DamKind; 3] = [DamKind::Generic, DamKind::Cloudinary, DamKind::Bynder];

    /// The one spelling of a DAM: the webhook route segment (`POST /webhooks/{dam}`), the
    /// `kind` setting, and the key prefix in both state stores (stored: must never change).
    pub const fn as_str(self) -> &'static str {
        match self {
            DamKind::Cloudinary => "cloudinary",
            DamKind::Bynder => "bynder",
            DamKind::Generic => "generic",
        }
    }
}

impl std::fmt::Display for DamKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A DAM name that is not one of [`DamKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown DAM {0:?}; use generic, cloudinary or bynder")]
pub struct UnknownDam(pub String);

impl std::str::FromStr for DamKind {
    type Err = UnknownDam;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DamKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s.trim())
            .ok_or_else(|| UnknownDam(s.to_owned()))
    }
}

/// A totally ordered version stamp of one DAM asset: the DAM's modified time (ms since the
/// epoch) and, where the DAM has one, a version counter that breaks ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    pub modified_at_ms: i64,
    pub seq: i64,
}

impl Version {
    /// Whether a DAM read at `self` is older than what an event's `hint` says exists (the DAM
    /// lags: re-read later). A hint whose `modified_at_ms` is 0 carries no DAM modified time,
    /// only a counter (e.g. Cloudinary's resource `version`: its notification times are not
    /// the Admin API's `updated_at`), so only the counters are compared; otherwise the whole
    /// version is.
    pub fn lags_behind(&self, hint: &Version) -> bool {
        if hint.modified_at_ms == 0 {
            self.seq < hint.seq
        } else {
            self < hint
        }
    }
}

/// One DAM asset as the DAM returns it. `fields` is the DAM's own JSON, addressed by the
/// mapping's field paths; adapters do not reshape it beyond what they document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DamAsset {
    pub dam: DamKind,
    pub id: String,
    pub version: Version,
    pub fields: serde_json::Value,
}

impl DamAsset {
    /// A stable hex digest (SHA-256) of the asset's version and `fields`, with object keys
    /// written in sorted order whatever the JSON map's own order: two reads of the same DAM
    /// state give the same fingerprint, and a same-second edit (equal version, other fields)
    /// gives another. Stored as `AssetState::source_hash`.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};

        fn canonical(value: &serde_json::Value, out: &mut String) {
            use serde_json::Value;
            match value {
                Value::Object(map) => {
                    let mut keys: Vec<&String> = map.keys().collect();
                    keys.sort();
                    out.push('{');
                    for (i, key) in keys.into_iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(&Value::String(key.clone()).to_string());
                        out.push(':');
                        canonical(&map[key], out);
                    }
                    out.push('}');
                }
                Value::Array(items) => {
                    out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        canonical(item, out);
                    }
                    out.push(']');
                }
                scalar => out.push_str(&scalar.to_string()),
            }
        }

        let mut text = format!("{}.{}:", self.version.modified_at_ms, self.version.seq);
        canonical(&self.fields, &mut text);
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Upsert,
    Delete,
}

/// A normalised change notification: what the ingest function enqueues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    pub dam: DamKind,
    pub asset_id: String,
    pub kind: ChangeKind,
    /// Version hint from the payload, when it carries one.
    pub version: Option<Version>,
    /// The full asset, when the payload carries it (otherwise the consumer re-reads it).
    pub asset: Option<DamAsset>,
    /// Idempotency key: DAM id + version, or the sender's delivery id.
    pub dedupe_key: String,
    /// When ingest (or the poller) received the change, ms since the epoch.
    pub received_at_ms: i64,
}

impl ChangeEvent {
    /// The event the poller enqueues: an upsert carrying the full asset, so the consumer can
    /// skip re-reading it, keyed by DAM, id and version ([`ChangeEvent::upsert_key`]).
    pub fn upsert_of(asset: &DamAsset, received_at_ms: i64) -> Self {
        ChangeEvent {
            dam: asset.dam,
            asset_id: asset.id.clone(),
            kind: ChangeKind::Upsert,
            version: Some(asset.version),
            asset: Some(asset.clone()),
            dedupe_key: Self::upsert_key(asset.dam, &asset.id, asset.version),
            received_at_ms,
        }
    }

    /// `dam:id:modified_at_ms.seq`.
    pub fn upsert_key(dam: DamKind, id: &str, version: Version) -> String {
        format!(
            "{}:{id}:{}.{}",
            dam.as_str(),
            version.modified_at_ms,
            version.seq
        )
    }
}

/// A raw webhook delivery, exactly as received (verification runs on these bytes).
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub received_at: SystemTime,
}

/// What a verified webhook turns into.
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookOutcome {
    /// Change events to enqueue (possibly none, e.g. an event type we do not sync).
    Events(Vec<ChangeEvent>),
    /// A control message handled by the adapter itself (e.g. an SNS subscription confirmed).
    Handled(String),
}

/// Why a webhook was refused. Each maps to one HTTP status in the ingest function.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Missing, bad or stale signature, foreign certificate, unknown topic: 401.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Verified but unparseable body: 400.
    #[error("malformed: {0}")]
    Malformed(String),
    /// A dependency of verification failed (e.g. certificate download): 5xx, sender retries.
    #[error("verification dependency failed: {0}")]
    Unavailable(String),
}

/// Verifies and parses one DAM's webhooks.
#[async_trait]
pub trait WebhookVerifier: Send + Sync {
    fn dam(&self) -> DamKind;
    async fn verify(&self, request: &WebhookRequest) -> Result<WebhookOutcome, WebhookError>;
}

/// Result of fetching one id.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    Found(DamAsset),
    /// The DAM no longer has the asset (deleted or archived).
    Gone(String),
}

/// An opaque, resumable position in a change listing (saved by backfill after each page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageToken(pub String);

#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub assets: Vec<DamAsset>,
    /// Where to resume after this page; `None` on the last page.
    pub next: Option<PageToken>,
}

/// Errors talking to a DAM's API. `is_retriable` drives redelivery versus DLQ.
#[derive(Debug, thiserror::Error)]
pub enum DamError {
    #[error("DAM refused our credentials: {0}")]
    Unauthorized(String),
    #[error("DAM rate limit hit{}", .retry_after.map(|d| format!(" (retry after {d:?})")).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    #[error("DAM temporarily unavailable: {0}")]
    Transient(String),
    /// Timeouts, refused connections, unknown hosts, cut bodies: worth a retry. Says the
    /// cause class and the host; the full chain stays the source.
    #[error("cannot reach the DAM at {}: {}", .0.url().and_then(|u| u.host_str()).unwrap_or("?"), crate::net::cause(.0))]
    Network(#[source] reqwest::Error),
    #[error("DAM request failed: {0}")]
    Permanent(String),
    /// A 2xx body that does not parse will not parse on retry either.
    #[error("DAM request failed: unexpected response body: {0}")]
    Body(#[source] serde_json::Error),
}

impl DamError {
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            DamError::RateLimited { .. } | DamError::Transient(_) | DamError::Network(_)
        )
    }
}

/// Reads assets from a DAM: by id (batched where the DAM allows) and as a change listing.
#[async_trait]
pub trait AssetSource: Send + Sync {
    fn dam(&self) -> DamKind;

    /// Fetches the current state of these ids; one result per id, in input order.
    async fn fetch(&self, ids: &[String]) -> Result<Vec<Fetched>, DamError>;

    /// Lists assets modified at or after `since` (all assets when `None`), oldest first,
    /// as a stream of pages, starting at `resume` when given.
    fn list_changed(
        &self,
        since: Option<SystemTime>,
        resume: Option<PageToken>,
        page_size: usize,
    ) -> BoxStream<'_, Result<Page, DamError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_follow_fields_and_version_not_key_order() {
        let asset = |fields: serde_json::Value, seq| DamAsset {
            dam: DamKind::Bynder,
            id: "a".into(),
            version: Version {
                modified_at_ms: 1_000,
                seq,
            },
            fields,
        };
        let a = asset(
            serde_json::json!({"title": "A", "tags": ["x", "y"], "n": {"b": 1, "a": 2}}),
            0,
        );
        let reordered: serde_json::Value =
            serde_json::from_str(r#"{"n": {"a": 2, "b": 1}, "tags": ["x", "y"], "title": "A"}"#)
                .unwrap();
        let fp = a.fingerprint();
        assert_eq!(fp.len(), 64);
        assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(asset(reordered, 0).fingerprint(), fp);
        // A same-second edit, an array order change and a new version each differ.
        assert_ne!(
            asset(
                serde_json::json!({"title": "B", "tags": ["x", "y"], "n": {"b": 1, "a": 2}}),
                0
            )
            .fingerprint(),
            fp
        );
        assert_ne!(
            asset(
                serde_json::json!({"title": "A", "tags": ["y", "x"], "n": {"b": 1, "a": 2}}),
                0
            )
            .fingerprint(),
            fp
        );
        assert_ne!(asset(a.fields.clone(), 1).fingerprint(), fp);
    }

    #[test]
    fn dedupe_key_names_dam_id_and_version() {
        let v = Version {
            modified_at_ms: 1_700_000_000_123,
            seq: 4,
        };
        assert_eq!(
            ChangeEvent::upsert_key(DamKind::Generic, "a1", v),
            "generic:a1:1700000000123.4"
        );
    }

    fn v(modified_at_ms: i64, seq: i64) -> Version {
        Version {
            modified_at_ms,
            seq,
        }
    }

    #[test]
    fn a_counter_only_hint_compares_counters_only() {
        let t = 1_700_000_000_000;
        let read = v(t, 7);
        // A notification stamped a second after the change, same resource version: current.
        assert!(!read.lags_behind(&v(0, 7)));
        assert!(!read.lags_behind(&v(0, 6)));
        // A newer counter than the read: the DAM lags.
        assert!(read.lags_behind(&v(0, 8)));
        // The old rule on the same figures (a notification time as the hint's time) would
        // have called the read stale forever; a hint that is a DAM modified time still does.
        assert!(read < v(t + 1000, 7));
        assert!(read.lags_behind(&v(t + 1000, 7)));
        assert!(!read.lags_behind(&v(t, 7)));
        assert!(!v(t + 1, 0).lags_behind(&v(t, 9)));
    }
}
