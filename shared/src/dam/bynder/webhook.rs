//! Bynder notifications, delivered by Amazon SNS to our HTTPS endpoint.
//!
//! The SNS `Subject` is the Bynder event name and `Message` a JSON string
//! `{"media_id":"<uuid>"}`: a thin hint, so the consumer always re-reads the media.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use super::sns::{
    CertificateFetcher, NOTIFICATION, SUBSCRIPTION_CONFIRMATION, SnsSettings, SnsVerifier,
    SubscriptionConfirmer, UNSUBSCRIBE_CONFIRMATION, check_sns_url,
};
use crate::dam::verify::header;
use crate::dam::{
    ChangeEvent, ChangeKind, DamKind, WebhookError, WebhookOutcome, WebhookRequest, WebhookVerifier,
};
use crate::time::epoch_ms;

pub const MESSAGE_TYPE_HEADER: &str = "x-amz-sns-message-type";

pub struct BynderWebhookVerifier {
    sns: SnsVerifier,
    confirmer: Arc<dyn SubscriptionConfirmer>,
}

impl BynderWebhookVerifier {
    pub fn new(
        settings: SnsSettings,
        fetcher: Arc<dyn CertificateFetcher>,
        confirmer: Arc<dyn SubscriptionConfirmer>,
    ) -> Self {
        Self {
            sns: SnsVerifier::new(settings, fetcher),
            confirmer,
        }
    }
}

/// What a Bynder event name means for the sync; `None` for events we do not sync.
pub fn change_kind(event: &str) -> Option<ChangeKind> {
    let name = event.strip_prefix("asset_bank.media.")?;
    match name {
        "create" | "upload" | "uploaded" | "updated" | "meta_updated" => Some(ChangeKind::Upsert),
        "deleted" | "archived" => Some(ChangeKind::Delete),
        // pre_archived only announces a future archive, which sends its own event.
        _ => None,
    }
}

#[derive(Deserialize)]
struct MediaMessage {
    media_id: String,
}

#[async_trait]
impl WebhookVerifier for BynderWebhookVerifier {
    fn dam(&self) -> DamKind {
        DamKind::Bynder
    }

    async fn verify(&self, request: &WebhookRequest) -> Result<WebhookOutcome, WebhookError> {
        let envelope = self.sns.verify(&request.body, request.received_at).await?;
        // SNS also states the type in a header; routing uses the signed field, and a
        // disagreeing header means the request was altered on the way.
        if let Some(stated) = header(request, MESSAGE_TYPE_HEADER).filter(|t| *t != envelope.kind) {
            return Err(WebhookError::Unauthorized(format!(
                "{MESSAGE_TYPE_HEADER} {stated} but the signed Type is {}",
                envelope.kind
            )));
        }
        match envelope.kind.as_str() {
            NOTIFICATION => {}
            SUBSCRIPTION_CONFIRMATION => {
                // Verified and on an allowed topic: now it is safe to call SubscribeURL.
                let raw = envelope.subscribe_url.as_deref().unwrap_or_default();
                let url = check_sns_url(raw, &self.sns.settings().cert_sources)?;
                self.confirmer
                    .confirm_subscription(&url)
                    .await
                    .map_err(|e| WebhookError::Unavailable(format!("subscription confirm: {e}")))?;
                return Ok(WebhookOutcome::Handled(format!(
                    "subscription to {} confirmed",
                    envelope.topic_arn
                )));
            }
            UNSUBSCRIBE_CONFIRMATION => {
                return Ok(WebhookOutcome::Handled(format!(
                    "unsubscribed from {}",
                    envelope.topic_arn
                )));
            }
            other => {
                return Err(WebhookError::Malformed(format!(
                    "unexpected SNS type {other}"
                )));
            }
        }
        let Some(kind) = envelope.subject.as_deref().and_then(change_kind) else {
            return Ok(WebhookOutcome::Events(Vec::new()));
        };
        let message: MediaMessage = serde_json::from_str(&envelope.message)
            .map_err(|e| WebhookError::Malformed(format!("Message has no media_id: {e}")))?;
        if message.media_id.is_empty() {
            return Err(WebhookError::Malformed("empty media_id".into()));
        }
        Ok(WebhookOutcome::Events(vec![ChangeEvent {
            dam: DamKind::Bynder,
            asset_id: message.media_id,
            kind,
            // SNS Timestamp is the publish time, not Bynder's modified time: no version hint.
            version: None,
            asset: None,
            // SNS keeps MessageId across its retries.
            dedupe_key: format!("bynder:{}", envelope.message_id),
            received_at_ms: epoch_ms(request.received_at),
        }]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names() {
        for upsert in ["create", "upload", "uploaded", "updated", "meta_updated"] {
            assert_eq!(
                change_kind(&format!("asset_bank.media.{upsert}")),
                Some(ChangeKind::Upsert)
            );
        }
        for delete in ["deleted", "archived"] {
            assert_eq!(
                change_kind(&format!("asset_bank.media.{delete}")),
                Some(ChangeKind::Delete)
            );
        }
        assert_eq!(change_kind("asset_bank.media.pre_archived"), None);
        assert_eq!(change_kind("workflow.job.create"), None);
        assert_eq!(change_kind("updated"), None);
    }
}
