//! Webhook sender: renders, signs and POSTs each kind's notifications to subscribed targets,
//! with seeded knobs to drop, duplicate, delay and reorder deliveries.
//!
//! - Cloudinary: JSON body, `X-Cld-Timestamp` and `X-Cld-Signature` = hex SHA-1/SHA-256 of
//!   `body ‖ timestamp ‖ api_secret` (a plain digest, not an HMAC).
//! - Bynder: an SNS `Notification` envelope whose `Message` is `{"media_id":"..."}`, signed
//!   with the sim's RSA key (SignatureVersion 1 = SHA1withRSA, 2 = SHA256withRSA).
//! - Generic: Standard Webhooks, `webhook-signature: v1,<base64 HMAC-SHA256>` over
//!   `{id}.{timestamp}.{body}` with the key inside the `whsec_` secret.
//!
//! Duplicates are byte-identical redeliveries (same delivery id, same signature). Retries
//! (`retries`) keep the delivery id; Standard Webhooks ones are re-signed with the attempt's
//! timestamp.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::catalogue::{ChangeType, SimAsset};
use crate::sns::canonical_string;
use crate::timefmt::{iso_millis, iso_secs, now_ms};
use crate::{Shared, cloudinary};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookKind {
    Cloudinary,
    Bynder,
    Generic,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloudinaryAlgorithm {
    #[default]
    Sha1,
    Sha256,
}

/// How one subscription delivers. Random draws use `seed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeliveryKnobs {
    /// Deliver every catalogue change automatically (otherwise only `notify`).
    pub auto_notify: bool,
    /// Probability in [0, 1] that a notification is never sent.
    pub drop_rate: f64,
    /// Probability in [0, 1] that a notification is sent twice.
    pub duplicate_rate: f64,
    /// Delay before each send, uniform in [min, max] ms; > 0 sends concurrently.
    pub delay_min_ms: u64,
    pub delay_max_ms: u64,
    /// Holds up to `reorder_window - 1` notifications and sends a random one of them when
    /// the window fills (or after 20 ms without new changes). 0 or 1 keeps order.
    pub reorder_window: usize,
    pub seed: u64,
    pub cloudinary_algorithm: CloudinaryAlgorithm,
    /// SNS SignatureVersion: 1 (SHA1withRSA) or 2 (SHA256withRSA).
    pub sns_signature_version: u8,
    /// Generic: embed the full asset in `data.asset` (otherwise a thin event).
    pub include_asset: bool,
    /// Generic, when `include_asset` is off: probability in [0, 1] that a delivery embeds the
    /// full asset anyway, so one subscription mixes thin and full events.
    pub include_asset_rate: f64,
    /// Re-sends after a non-2xx answer or a transport error, up to this many times.
    pub retries: u32,
    /// Wait before the first re-send, doubled for each further one.
    pub retry_backoff_ms: u64,
}

impl Default for DeliveryKnobs {
    fn default() -> Self {
        Self {
            auto_notify: true,
            drop_rate: 0.0,
            duplicate_rate: 0.0,
            delay_min_ms: 0,
            delay_max_ms: 0,
            reorder_window: 0,
            seed: 1,
            cloudinary_algorithm: CloudinaryAlgorithm::Sha1,
            sns_signature_version: 1,
            include_asset: false,
            include_asset_rate: 0.0,
            retries: 0,
            retry_backoff_ms: 100,
        }
    }
}

/// One attempted send (a duplicate is a second record with the same `delivery_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub subscription: u64,
    pub kind: WebhookKind,
    pub asset_id: String,
    /// Vendor event name (`upload`, `asset_bank.media.updated`, `asset.deleted`, ...).
    pub event: String,
    /// `webhook-id` / SNS `MessageId`; `None` for Cloudinary, which has no delivery id.
    pub delivery_id: Option<String>,
    pub status: Option<u16>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WebhookStats {
    pub queued: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub attempts: u64,
    pub delivered: u64,
    /// Attempts answered with a non-2xx status or failing in transport.
    pub failed: u64,
    pub retried: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Notice {
    pub asset: SimAsset,
    pub change: ChangeType,
    /// The asset before this change (`None` for a creation or an on-demand notification):
    /// Cloudinary names an update after what it changed.
    pub previous: Option<SimAsset>,
}

#[derive(Debug)]
pub(crate) struct Subscription {
    pub knobs: DeliveryKnobs,
    pub tx: mpsc::UnboundedSender<Notice>,
}

/// A rendered, signed request.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub event: String,
    pub delivery_id: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(rng: &mut fastrand::Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(rng.u32(0..16), 16).unwrap_or('0'))
        .collect()
}

fn uuid(rng: &mut fastrand::Rng) -> String {
    let h = random_hex(rng, 32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Cloudinary's notification signature for `body` sent at `timestamp`.
pub fn cloudinary_signature(
    body: &[u8],
    timestamp: i64,
    api_secret: &str,
    algorithm: CloudinaryAlgorithm,
) -> String {
    let mut data = body.to_vec();
    data.extend_from_slice(timestamp.to_string().as_bytes());
    data.extend_from_slice(api_secret.as_bytes());
    match algorithm {
        CloudinaryAlgorithm::Sha1 => hex(&Sha1::digest(&data)),
        CloudinaryAlgorithm::Sha256 => hex(&Sha256::digest(&data)),
    }
}

/// Standard Webhooks `v1` signature; `None` when the secret is not `whsec_<base64>`.
pub fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = STANDARD.decode(secret.strip_prefix("whsec_")?).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// What kind of Cloudinary notification an update is, by what it changed (a change of several
/// kinds is named after the first in this order).
enum CloudinaryUpdate {
    Rename { from: String },
    Overwrite,
    Changed(&'static str),
}

fn cloudinary_update(previous: Option<&SimAsset>, now: &SimAsset) -> CloudinaryUpdate {
    let Some(before) = previous else {
        return CloudinaryUpdate::Changed("resource_metadata_changed");
    };
    let differs = |key: &str| before.fields.get(key) != now.fields.get(key);
    if cloudinary::public_id(before) != cloudinary::public_id(now) {
        return CloudinaryUpdate::Rename {
            from: cloudinary::public_id(before),
        };
    }
    if differs("file_version") || differs("file_content") || differs("url") {
        return CloudinaryUpdate::Overwrite;
    }
    if differs("tags") {
        return CloudinaryUpdate::Changed("resource_tags_changed");
    }
    if ["title", "description", "alt", "caption"]
        .iter()
        .any(|k| differs(k))
    {
        return CloudinaryUpdate::Changed("resource_context_changed");
    }
    CloudinaryUpdate::Changed("resource_metadata_changed")
}

fn render_cloudinary(shared: &Shared, knobs: &DeliveryKnobs, n: &Notice) -> Outgoing {
    let cfg = &shared.config;
    let a = &n.asset;
    let now = now_ms();
    let resource_ref = json!({
        "asset_id": a.id,
        "public_id": cloudinary::public_id(a),
        "resource_type": "image",
        "type": "upload",
        "version": cloudinary::version(a),
    });
    let (event, payload) = match n.change {
        ChangeType::Created => {
            let mut p = cloudinary::resource_json(a, &cfg.cloud_name);
            p["notification_type"] = json!("upload");
            p["timestamp"] = json!(iso_secs(now));
            ("upload", p)
        }
        ChangeType::Updated => match cloudinary_update(n.previous.as_ref(), a) {
            CloudinaryUpdate::Rename { from } => {
                // A rename names the asset at top level, like an upload.
                let mut p = resource_ref.clone();
                p["notification_type"] = json!("rename");
                p["timestamp"] = json!(iso_secs(now));
                p["from_public_id"] = json!(from);
                p["to_public_id"] = json!(cloudinary::public_id(a));
                ("rename", p)
            }
            CloudinaryUpdate::Overwrite => {
                // A new file under the same asset: Cloudinary notifies an (overwriting) upload.
                let mut p = cloudinary::resource_json(a, &cfg.cloud_name);
                p["notification_type"] = json!("upload");
                p["overwritten"] = json!(true);
                p["timestamp"] = json!(iso_secs(now));
                ("upload", p)
            }
            CloudinaryUpdate::Changed(event) => (
                event,
                json!({
                    "notification_type": event,
                    "timestamp": iso_secs(now),
                    "source": "api",
                    "resources": [resource_ref],
                }),
            ),
        },
        ChangeType::Deleted => (
            "delete",
            json!({
                "notification_type": "delete",
                "timestamp": iso_secs(now),
                "resources": [resource_ref],
            }),
        ),
    };
    let body = serde_json::to_vec(&payload).unwrap_or_default();
    let ts = now.div_euclid(1000);
    let sig = cloudinary_signature(
        &body,
        ts,
        &cfg.cloudinary_api_secret,
        knobs.cloudinary_algorithm,
    );
    Outgoing {
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-cld-timestamp".into(), ts.to_string()),
            ("x-cld-signature".into(), sig),
        ],
        body,
        event: event.into(),
        delivery_id: None,
    }
}

fn sns_envelope(
    shared: &Shared,
    signature_version: u8,
    message_type: &str,
    message: &str,
    subject: Option<&str>,
    subscribe: Option<(&str, &str)>,
    message_id: &str,
) -> Value {
    let cfg = &shared.config;
    let timestamp = iso_millis(now_ms());
    let mut fields: Vec<(&str, &str)> = vec![("Message", message), ("MessageId", message_id)];
    if let Some((url, token)) = subscribe {
        fields.push(("SubscribeURL", url));
        fields.push(("Timestamp", &timestamp));
        fields.push(("Token", token));
    } else {
        if let Some(s) = subject {
            fields.push(("Subject", s));
        }
        fields.push(("Timestamp", &timestamp));
    }
    fields.push(("TopicArn", &cfg.sns_topic_arn));
    fields.push(("Type", message_type));
    let signature = shared
        .sns
        .sign(signature_version, &canonical_string(&fields));
    let mut env = json!({
        "Type": message_type,
        "MessageId": message_id,
        "TopicArn": cfg.sns_topic_arn,
        "Message": message,
        "Timestamp": timestamp,
        "SignatureVersion": signature_version.to_string(),
        "Signature": signature,
        "SigningCertURL": shared.sns_cert_url(),
    });
    if let Some(s) = subject {
        env["Subject"] = json!(s);
    }
    match subscribe {
        Some((url, token)) => {
            env["SubscribeURL"] = json!(url);
            env["Token"] = json!(token);
        }
        None => {
            env["UnsubscribeURL"] = json!(format!(
                "{}/_sim/sns/unsubscribe?SubscriptionArn={}:{message_id}",
                shared.base_url, cfg.sns_topic_arn
            ));
        }
    }
    env
}

fn sns_headers(message_type: &str, message_id: &str, topic: &str) -> Vec<(String, String)> {
    vec![
        ("content-type".into(), "text/plain; charset=UTF-8".into()),
        ("x-amz-sns-message-type".into(), message_type.into()),
        ("x-amz-sns-message-id".into(), message_id.into()),
        ("x-amz-sns-topic-arn".into(), topic.into()),
    ]
}

fn render_bynder(
    shared: &Shared,
    knobs: &DeliveryKnobs,
    n: &Notice,
    rng: &mut fastrand::Rng,
) -> Outgoing {
    let subject = match n.change {
        ChangeType::Created => "asset_bank.media.create",
        ChangeType::Updated => "asset_bank.media.updated",
        ChangeType::Deleted => "asset_bank.media.deleted",
    };
    let message_id = uuid(rng);
    let message = json!({ "media_id": n.asset.id }).to_string();
    let env = sns_envelope(
        shared,
        knobs.sns_signature_version,
        "Notification",
        &message,
        Some(subject),
        None,
        &message_id,
    );
    Outgoing {
        headers: sns_headers("Notification", &message_id, &shared.config.sns_topic_arn),
        body: serde_json::to_vec(&env).unwrap_or_default(),
        event: subject.into(),
        delivery_id: Some(message_id),
    }
}

/// An SNS `SubscriptionConfirmation` for `token`, whose `SubscribeURL` points back at the sim.
pub(crate) fn render_sns_confirmation(
    shared: &Shared,
    signature_version: u8,
    token: &str,
    rng: &mut fastrand::Rng,
) -> Outgoing {
    let message_id = uuid(rng);
    let url = format!("{}/_sim/sns/confirm?Token={token}", shared.base_url);
    let message = format!(
        "You have chosen to subscribe to the topic {}. To confirm the subscription, visit the SubscribeURL included in this message.",
        shared.config.sns_topic_arn
    );
    let env = sns_envelope(
        shared,
        signature_version,
        "SubscriptionConfirmation",
        &message,
        None,
        Some((&url, token)),
        &message_id,
    );
    Outgoing {
        headers: sns_headers(
            "SubscriptionConfirmation",
            &message_id,
            &shared.config.sns_topic_arn,
        ),
        body: serde_json::to_vec(&env).unwrap_or_default(),
        event: "SubscriptionConfirmation".into(),
        delivery_id: Some(message_id),
    }
}

fn render_generic(
    shared: &Shared,
    knobs: &DeliveryKnobs,
    n: &Notice,
    rng: &mut fastrand::Rng,
) -> Outgoing {
    let a = &n.asset;
    let event = if n.change == ChangeType::Deleted {
        "asset.deleted"
    } else {
        "asset.upserted"
    };
    let now = now_ms();
    let mut data = json!({
        "id": a.id,
        "version": a.version,
        "modified_at": iso_millis(a.modified_at_ms),
    });
    let full = knobs.include_asset
        || (knobs.include_asset_rate > 0.0 && rng.f64() < knobs.include_asset_rate);
    if full && n.change != ChangeType::Deleted {
        data["asset"] = a.to_generic_json();
    }
    let body = serde_json::to_vec(&json!({
        "type": event,
        "timestamp": iso_millis(now),
        "data": data,
    }))
    .unwrap_or_default();
    let id = format!("msg_{}", random_hex(rng, 24));
    let ts = now.div_euclid(1000);
    let sig = standard_signature(&shared.config.generic_webhook_secret, &id, ts, &body)
        .unwrap_or_default();
    Outgoing {
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("webhook-id".into(), id.clone()),
            ("webhook-timestamp".into(), ts.to_string()),
            ("webhook-signature".into(), sig),
        ],
        body,
        event: event.into(),
        delivery_id: Some(id),
    }
}

pub(crate) fn render(
    shared: &Shared,
    kind: WebhookKind,
    knobs: &DeliveryKnobs,
    n: &Notice,
    rng: &mut fastrand::Rng,
) -> Outgoing {
    match kind {
        WebhookKind::Cloudinary => render_cloudinary(shared, knobs, n),
        WebhookKind::Bynder => render_bynder(shared, knobs, n, rng),
        WebhookKind::Generic => render_generic(shared, knobs, n, rng),
    }
}

/// A re-send of `out`: Standard Webhooks re-signs with the attempt's timestamp (same
/// `webhook-id`); SNS and Cloudinary re-send the same bytes.
fn for_retry(shared: &Shared, kind: WebhookKind, out: &Outgoing) -> Outgoing {
    let mut out = out.clone();
    if let (WebhookKind::Generic, Some(id)) = (kind, &out.delivery_id) {
        let ts = now_ms().div_euclid(1000);
        let sig = standard_signature(&shared.config.generic_webhook_secret, id, ts, &out.body)
            .unwrap_or_default();
        for (k, v) in &mut out.headers {
            match k.as_str() {
                "webhook-timestamp" => *v = ts.to_string(),
                "webhook-signature" => *v = sig.clone(),
                _ => {}
            }
        }
    }
    out
}

/// POSTs one rendered request (re-sending on failure per `retries`), recording each attempt.
pub(crate) async fn post(
    shared: &Shared,
    subscription: u64,
    kind: WebhookKind,
    target: &str,
    asset_id: &str,
    out: &Outgoing,
    knobs: &DeliveryKnobs,
) {
    let mut attempt = 0u32;
    loop {
        let current = if attempt == 0 {
            out.clone()
        } else {
            for_retry(shared, kind, out)
        };
        let ok = post_once(shared, subscription, kind, target, asset_id, &current).await;
        if ok || attempt >= knobs.retries {
            return;
        }
        attempt += 1;
        shared.webhooks.lock().expect("webhooks lock").stats.retried += 1;
        let backoff = knobs
            .retry_backoff_ms
            .saturating_mul(1 << (attempt - 1).min(16));
        tokio::time::sleep(Duration::from_millis(backoff)).await;
    }
}

async fn post_once(
    shared: &Shared,
    subscription: u64,
    kind: WebhookKind,
    target: &str,
    asset_id: &str,
    out: &Outgoing,
) -> bool {
    let mut req = shared.http.post(target).body(out.body.clone());
    for (k, v) in &out.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let result = req.send().await;
    let (status, error) = match result {
        Ok(r) => (Some(r.status().as_u16()), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let ok = status.is_some_and(|s| (200..300).contains(&s));
    let mut w = shared.webhooks.lock().expect("webhooks lock");
    w.stats.attempts += 1;
    if ok {
        w.stats.delivered += 1;
    } else {
        w.stats.failed += 1;
    }
    w.log.push(DeliveryRecord {
        subscription,
        kind,
        asset_id: asset_id.to_owned(),
        event: out.event.clone(),
        delivery_id: out.delivery_id.clone(),
        status,
        error,
    });
    ok
}

/// The background task of one subscription.
pub(crate) async fn run_subscription(
    shared: Arc<Shared>,
    id: u64,
    kind: WebhookKind,
    knobs: DeliveryKnobs,
    target: String,
    mut rx: mpsc::UnboundedReceiver<Notice>,
) {
    let mut rng = fastrand::Rng::with_seed(knobs.seed);
    let window = knobs.reorder_window.max(1);
    let mut held: Vec<Notice> = Vec::new();
    loop {
        let next = if held.is_empty() {
            rx.recv().await
        } else {
            match tokio::time::timeout(Duration::from_millis(20), rx.recv()).await {
                Ok(n) => n,
                Err(_) => {
                    // Quiet: release everything held, in random order.
                    while !held.is_empty() {
                        let n = held.swap_remove(rng.usize(..held.len()));
                        dispatch(&shared, id, kind, &knobs, &target, n, &mut rng).await;
                    }
                    continue;
                }
            }
        };
        let Some(n) = next else { break };
        if knobs.drop_rate > 0.0 && rng.f64() < knobs.drop_rate {
            shared.webhooks.lock().expect("webhooks lock").stats.dropped += 1;
            shared.pending.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        held.push(n);
        while held.len() >= window {
            let n = held.swap_remove(rng.usize(..held.len()));
            dispatch(&shared, id, kind, &knobs, &target, n, &mut rng).await;
        }
    }
    while !held.is_empty() {
        let n = held.swap_remove(rng.usize(..held.len()));
        dispatch(&shared, id, kind, &knobs, &target, n, &mut rng).await;
    }
}

async fn dispatch(
    shared: &Arc<Shared>,
    id: u64,
    kind: WebhookKind,
    knobs: &DeliveryKnobs,
    target: &str,
    n: Notice,
    rng: &mut fastrand::Rng,
) {
    let out = render(shared, kind, knobs, &n, rng);
    let copies = if knobs.duplicate_rate > 0.0 && rng.f64() < knobs.duplicate_rate {
        shared
            .webhooks
            .lock()
            .expect("webhooks lock")
            .stats
            .duplicated += 1;
        shared.pending.fetch_add(1, Ordering::SeqCst);
        2
    } else {
        1
    };
    let max = knobs.delay_max_ms.max(knobs.delay_min_ms);
    for _ in 0..copies {
        if max == 0 {
            // No delay: send inline so deliveries keep the order chosen above.
            post(shared, id, kind, target, &n.asset.id, &out, knobs).await;
            shared.pending.fetch_sub(1, Ordering::SeqCst);
        } else {
            let delay = Duration::from_millis(rng.u64(knobs.delay_min_ms..=max));
            let shared = shared.clone();
            let target = target.to_owned();
            let out = out.clone();
            let asset_id = n.asset.id.clone();
            let knobs = knobs.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                post(&shared, id, kind, &target, &asset_id, &out, &knobs).await;
                shared.pending.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use super::*;

    fn asset(fields: Value) -> SimAsset {
        SimAsset {
            id: "a1".into(),
            version: 2,
            created_at_ms: 0,
            uploaded_at_ms: 0,
            modified_at_ms: 0,
            deleted: false,
            fields: fields.as_object().cloned().unwrap_or_else(Map::new),
        }
    }

    fn name(before: Value, after: Value) -> String {
        match cloudinary_update(Some(&asset(before)), &asset(after)) {
            CloudinaryUpdate::Rename { from } => format!("rename from {from}"),
            CloudinaryUpdate::Overwrite => "upload".into(),
            CloudinaryUpdate::Changed(event) => event.into(),
        }
    }

    #[test]
    fn cloudinary_updates_are_named_after_what_changed() {
        let base = json!({"title": "A", "tags": ["x"], "sku": "S", "file_version": 1});
        let with = |k: &str, v: Value| {
            let mut f = base.clone();
            f[k] = v;
            f
        };
        assert_eq!(
            name(base.clone(), with("public_id", json!("p/2"))),
            "rename from dam-sim/a1"
        );
        assert_eq!(name(base.clone(), with("file_version", json!(2))), "upload");
        assert_eq!(
            name(base.clone(), with("tags", json!(["y"]))),
            "resource_tags_changed"
        );
        assert_eq!(
            name(base.clone(), with("title", json!("B"))),
            "resource_context_changed"
        );
        assert_eq!(
            name(base.clone(), with("sku", json!("T"))),
            "resource_metadata_changed"
        );
        // Several changes at once: the first in the order above names it.
        let mut both = with("tags", json!(["y"]));
        both["title"] = json!("B");
        assert_eq!(name(base, both), "resource_tags_changed");
    }
}
