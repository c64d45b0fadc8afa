//! Bynder adapter: notifications delivered through Amazon SNS, and the v4 media API.

pub mod api;
pub mod sns;
pub mod webhook;

pub use sns::ReqwestSnsClient;

use async_trait::async_trait;
use url::Url;

/// Downloads a signing certificate (PEM). Only called with URLs that passed [`sns::check_sns_url`].
#[async_trait]
pub trait CertificateFetcher: Send + Sync {
    async fn fetch_certificate(&self, url: &Url) -> Result<Vec<u8>, String>;
}

/// Confirms a subscription by GETting its `SubscribeURL` (already checked like a cert URL).
#[async_trait]
pub trait SubscriptionConfirmer: Send + Sync {
    async fn confirm_subscription(&self, url: &Url) -> Result<(), String>;
}
