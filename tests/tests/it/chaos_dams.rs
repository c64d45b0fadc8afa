//! The chaos suite's DAMs: per DAM, the real REST client and webhook verifier pointed at
//! dam-sim, the mapping of the same neutral asset onto the `packshot` family (each DAM renders
//! it its own way), the asset ids, the vendor JSON the expected PIM values are mapped from, and
//! forged deliveries.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dam_sim::{CloudinaryAlgorithm, DamSimConfig, DamSimHandle, SimAsset, WebhookKind};
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::dam::bynder::api::{BynderApi, BynderApiSettings};
use shared::dam::bynder::sns::{ReqwestSnsClient, SnsSettings};
use shared::dam::bynder::webhook::BynderWebhookVerifier;
use shared::dam::cloudinary::api::{CloudinaryApi, CloudinaryApiSettings};
use shared::dam::cloudinary::webhook::{CloudinarySettings, CloudinaryWebhookVerifier};
use shared::dam::generic::api::{GenericApi, GenericApiSettings};
use shared::dam::generic::webhook::{GenericSettings, GenericWebhookVerifier, SigningSecret};
use shared::dam::{AssetSource, DamKind, WebhookVerifier};
use url::Url;

/// Which DAM a run drives, with its own webhook shapes and REST API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dam {
    /// Standard Webhooks, thin for most deliveries and carrying the full asset for a share.
    Generic,
    /// Upload / rename / tags / context / metadata / delete notifications, signed with the
    /// API secret; thin (the consumer re-reads through the Admin API).
    Cloudinary,
    /// SNS notifications (subscription confirmed first), signed with dam-sim's certificate.
    Bynder,
}

impl Dam {
    pub fn name(self) -> &'static str {
        match self {
            Dam::Generic => "generic",
            Dam::Cloudinary => "cloudinary",
            Dam::Bynder => "bynder",
        }
    }

    /// The product's name for this DAM (the state store's key).
    pub fn source_kind(self) -> DamKind {
        match self {
            Dam::Generic => DamKind::Generic,
            Dam::Cloudinary => DamKind::Cloudinary,
            Dam::Bynder => DamKind::Bynder,
        }
    }

    pub fn webhook_kind(self) -> WebhookKind {
        match self {
            Dam::Generic => WebhookKind::Generic,
            Dam::Cloudinary => WebhookKind::Cloudinary,
            Dam::Bynder => WebhookKind::Bynder,
        }
    }

    /// The ingest route this DAM posts to.
    pub fn route(self) -> String {
        format!("/webhooks/{}", self.name())
    }

    /// dam-sim with budgets out of the way: the runs test convergence, not rate limiting
    /// (`poller_dams` covers the budgets).
    pub fn sim_config(self, base: DamSimConfig) -> DamSimConfig {
        DamSimConfig {
            cloudinary_hourly_limit: u64::MAX / 2,
            bynder_rate_limit: 1_000_000,
            ..base
        }
    }

    /// Asset `n`'s DAM id. Bynder ids are UUIDs, whose `-` the mapping's code normalisation
    /// rewrites: the PIM code differs from the DAM id (what the sweep must resolve).
    pub fn asset_id(self, n: usize) -> String {
        match self {
            Dam::Generic => format!("chaos_{n}"),
            Dam::Cloudinary => format!("c0ffee{n:026x}"),
            Dam::Bynder => format!("6d1e4c2a-0b7f-4e11-9a3c-{n:012x}"),
        }
    }

    /// The DAM's REST client.
    pub fn source(self, dam: &DamSimHandle) -> Arc<dyn AssetSource> {
        let c = dam.config();
        match self {
            Dam::Generic => Arc::new(
                GenericApi::new(GenericApiSettings::new(
                    Url::parse(&dam.generic_base_url()).unwrap(),
                    SecretString::from(c.generic_token.clone()),
                ))
                .expect("generic client"),
            ),
            Dam::Cloudinary => {
                let mut settings = CloudinaryApiSettings::new(
                    c.cloud_name.clone(),
                    c.cloudinary_api_key.clone(),
                    SecretString::from(c.cloudinary_api_secret.clone()),
                );
                settings.api_base = Url::parse(&dam.base_url()).unwrap();
                Arc::new(CloudinaryApi::new(settings).expect("Cloudinary client"))
            }
            Dam::Bynder => {
                let mut settings = BynderApiSettings::new(
                    Url::parse(&dam.base_url()).unwrap(),
                    SecretString::from(c.bynder_token.clone()),
                );
                settings.budget_requests = 1_000_000;
                Arc::new(BynderApi::new(settings).expect("Bynder client"))
            }
        }
    }

    /// The verifier ingest runs for this DAM, with the DAM's real secrets.
    pub fn verifier(self, dam: &DamSimHandle) -> Arc<dyn WebhookVerifier> {
        let c = dam.config();
        match self {
            Dam::Generic => Arc::new(GenericWebhookVerifier::new(GenericSettings::new(vec![
                SigningSecret::parse(&c.generic_webhook_secret).unwrap(),
            ]))),
            Dam::Cloudinary => Arc::new(CloudinaryWebhookVerifier::new(CloudinarySettings::new(
                SecretString::from(c.cloudinary_api_secret.clone()),
            ))),
            Dam::Bynder => {
                let mut sns = SnsSettings::new(vec![c.sns_topic_arn.clone()]);
                // dam-sim serves its certificate and SubscribeURL over plain HTTP on loopback:
                // listed as a test bed lists it (`[dam] sns_cert_hosts`).
                sns.cert_sources = vec![
                    format!("{}/_sim/sns/", dam.base_url())
                        .parse()
                        .expect("certificate source"),
                ];
                let http = Arc::new(ReqwestSnsClient::new().expect("SNS client"));
                Arc::new(BynderWebhookVerifier::new(sns, http.clone(), http))
            }
        }
    }

    /// The mapping of [`fields`](crate::chaos) onto `packshot`, by this DAM's JSON paths.
    pub fn mapping(self) -> String {
        let (kind, url, sku, title, colors, file_url, file_version) = match self {
            Dam::Generic => (
                "fields.kind",
                "fields.url",
                "fields.sku",
                "fields.title",
                "fields.colors",
                "fields.file_url",
                "fields.file_version",
            ),
            // Title is contextual metadata, the other neutral fields structured metadata.
            Dam::Cloudinary => (
                "metadata.kind",
                "secure_url",
                "metadata.sku",
                "context.custom.title",
                "metadata.colors",
                "metadata.file_url",
                "metadata.file_version",
            ),
            Dam::Bynder => (
                "property_kind",
                "thumbnails.webimage",
                "property_sku",
                "name",
                "property_colors",
                "property_file_url",
                "property_file_version",
            ),
        };
        format!(
            r#"
[settings]
create_missing_options = false
code = "{{{{id}}}}"

[[route]]
family = "packshot"
when = [ {{ field = "{kind}", equals = "packshot" }} ]
on_delete = "delete"

[route.values.media_preview]
field = "{url}"

[route.values.product_ref]
field = "{sku}"

[route.values.alt_text]
locales = {{ en_US = "{title}" }}

[route.values.main_colors]
field = "{colors}"

# The file's version in the URL: a replaced file is a new URL (docs/mapping.md).
[route.values.source_file]
template = "{{{{{file_url}}}}}?v={{{{{file_version}}}}}"
"#
        )
    }

    /// The JSON this DAM's REST API returns for `asset` (what the consumer maps).
    pub fn vendor_json(self, dam: &DamSimHandle, asset: &SimAsset) -> Value {
        match self {
            Dam::Generic => asset.to_generic_json(),
            Dam::Cloudinary => dam_sim::cloudinary_resource_json(asset, &dam.config().cloud_name),
            Dam::Bynder => dam_sim::bynder_media_json(asset),
        }
    }

    /// Deliveries that look like this DAM's but are not signed by it. None may be queued.
    pub async fn send_forged(self, dam: &DamSimHandle, ingest_url: &str, count: usize) -> Vec<u16> {
        let http = dam_sync_tests::http();
        let url = format!("{ingest_url}{}", self.route());
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut statuses = Vec::new();
        for i in 0..count {
            let id = format!("forged_{i}");
            let request = match self {
                Dam::Generic => {
                    let forger = "whsec_Zm9yZ2VkLWtleS1ub3QtdGhlLXJlYWwtb25lLTAwMDAwMDAwMA==";
                    let body = json!({
                        "type": "asset.deleted",
                        "timestamp": "2026-11-28T00:00:00Z",
                        "data": { "id": id },
                    })
                    .to_string();
                    let msg_id = format!("msg_forged_{i}");
                    let ts = match i % 3 {
                        0 => now,
                        1 => now - 3_600,
                        _ => now + 3_600,
                    };
                    let sig = dam_sim::standard_signature(forger, &msg_id, ts, body.as_bytes())
                        .expect("signature");
                    http.post(&url)
                        .header("content-type", "application/json")
                        .header("webhook-id", &msg_id)
                        .header("webhook-timestamp", ts.to_string())
                        .header("webhook-signature", sig)
                        .body(body)
                }
                Dam::Cloudinary => {
                    let body = json!({
                        "notification_type": "delete",
                        "resources": [{ "asset_id": id, "public_id": id, "version": 1 }],
                    })
                    .to_string();
                    let real = &dam.config().cloudinary_api_secret;
                    // A wrong secret; the real one an hour in the future; a body changed after
                    // signing.
                    let (secret, ts, sent) = match i % 3 {
                        0 => ("not-the-api-secret".to_owned(), now, body.clone()),
                        1 => (real.clone(), now + 3_600, body.clone()),
                        _ => (real.clone(), now, body.replace("forged", "forgeD")),
                    };
                    let sig = dam_sim::cloudinary_signature(
                        body.as_bytes(),
                        ts,
                        &secret,
                        CloudinaryAlgorithm::Sha1,
                    );
                    http.post(&url)
                        .header("content-type", "application/json")
                        .header("x-cld-timestamp", ts.to_string())
                        .header("x-cld-signature", sig)
                        .body(sent)
                }
                Dam::Bynder => {
                    // A well-formed SNS envelope for the right topic, with a signature that is
                    // not the certificate's.
                    let message = json!({ "media_id": id }).to_string();
                    let body = json!({
                        "Type": "Notification",
                        "MessageId": format!("00000000-0000-4000-8000-{i:012}"),
                        "TopicArn": dam.config().sns_topic_arn,
                        "Subject": "asset_bank.media.deleted",
                        "Message": message,
                        "Timestamp": dam_sim::iso_millis(now * 1000),
                        "SignatureVersion": "1",
                        "Signature": base64_of(&[7u8; 256]),
                        "SigningCertURL": dam.sns_cert_url(),
                    })
                    .to_string();
                    http.post(&url)
                        .header("content-type", "text/plain; charset=UTF-8")
                        .header("x-amz-sns-message-type", "Notification")
                        .body(body)
                }
            };
            let status = request
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .expect("forged delivery")
                .status()
                .as_u16();
            statuses.push(status);
        }
        statuses
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
