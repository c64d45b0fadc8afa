//! Bynder REST client ([`AssetSource`]) over the v4 media API, bearer token (permanent token
//! or OAuth2 access token).
//!
//! - Fetch: `GET /api/v4/media/?ids=a,b,...&limit=N`; archived media (`isArchived`) are
//!   gone; an id absent from the answer is confirmed with `GET /api/v4/media/{id}/` (gone on
//!   its 404 or when archived).
//! - Changes: `GET /api/v4/media/?dateModified=<since>&orderBy=dateModified asc&limit&page`.
//!   Page numbers shift when media change mid-scan, so after each full page the window is
//!   re-anchored at the last `dateModified` seen (page 1 again), skipping ids already
//!   returned at that second; paging by number only happens inside one crowded second.
//!   Archived media are left out of listings.
//! - Rate limit: 4,500 requests per 5 minutes per source IP, then a block that every call
//!   extends, announced by a bare 429 (no headers). [`RequestBudget`] keeps the client under
//!   the limit so the block never starts.
//!
//! Version = (`dateModified`, 0): Bynder has no version counter and prints seconds.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use futures::stream::BoxStream;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use crate::dam::http::{
    PageStep, decode_token, endpoint, http_client, page_step, paged, read_json, read_json_or_404,
    resolve_in_input_order, transport_error,
};
use crate::dam::{AssetSource, DamAsset, DamError, DamKind, Fetched, Page, PageToken, Version};
use crate::time::{epoch_ms, format_rfc3339_secs, parse_rfc3339_ms};

/// Largest `limit` the media list accepts.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Settings of the Bynder client.
#[derive(Debug, Clone)]
pub struct BynderApiSettings {
    /// The portal, e.g. `https://acme.bynder.com`.
    pub base_url: Url,
    pub token: SecretString,
    /// Whole-request timeout. Default 30 s.
    pub timeout: Duration,
    /// Ids per fetch request. Default 100.
    pub fetch_batch: usize,
    /// Requests allowed per `budget_window`. Default 4,500 (Bynder's documented limit).
    pub budget_requests: usize,
    /// Default 5 minutes.
    pub budget_window: Duration,
    /// Longest a call waits for budget before failing with `RateLimited`. Default 5 s.
    pub budget_max_wait: Duration,
}

impl BynderApiSettings {
    pub fn new(base_url: Url, token: SecretString) -> Self {
        Self {
            base_url,
            token,
            timeout: Duration::from_secs(30),
            fetch_batch: 100,
            budget_requests: 4500,
            budget_window: Duration::from_secs(300),
            budget_max_wait: Duration::from_secs(5),
        }
    }
}

/// A client-side sliding-window request budget: at most `limit` sends in any `window`.
///
/// Each send is counted for `window` plus one second, so network latency cannot make Bynder
/// see more than `limit` arrivals in its own window. Share one budget (`Arc`) between every
/// client that leaves through the same egress IP: Bynder counts per IP.
#[derive(Debug)]
pub struct RequestBudget {
    limit: usize,
    window: Duration,
    sent: Mutex<VecDeque<Instant>>,
}

/// Latency allowance added to the counting window.
const LATENCY_MARGIN: Duration = Duration::from_secs(1);

impl RequestBudget {
    pub fn new(limit: usize, window: Duration) -> Self {
        Self {
            limit: limit.max(1),
            window: window + LATENCY_MARGIN,
            sent: Mutex::new(VecDeque::new()),
        }
    }

    /// Records a send now, or says how long until one is allowed.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let mut sent = self.sent.lock().expect("budget lock");
        while sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            sent.pop_front();
        }
        if sent.len() < self.limit {
            sent.push_back(now);
            return Ok(());
        }
        let oldest = *sent.front().expect("non-empty when full");
        Err(self.window.saturating_sub(now.duration_since(oldest)))
    }

    /// Waits for budget up to `max_wait`; beyond that fails fast with `RateLimited` (the
    /// caller retries later instead of holding a Lambda open).
    pub async fn acquire(&self, max_wait: Duration) -> Result<(), DamError> {
        let deadline = Instant::now() + max_wait;
        loop {
            match self.try_acquire() {
                Ok(()) => return Ok(()),
                Err(wait) => {
                    let now = Instant::now();
                    if now + wait > deadline {
                        return Err(DamError::RateLimited {
                            retry_after: Some(wait),
                        });
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct BynderApi {
    http: reqwest::Client,
    settings: BynderApiSettings,
    budget: Arc<RequestBudget>,
}

/// Resume state of a change listing; see the module docs for the re-anchoring.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MediaToken {
    /// Window start, whole seconds since the epoch.
    since_secs: Option<i64>,
    page: u32,
    /// Ids already returned whose `dateModified` is `since_secs`.
    seen: Vec<String>,
}

impl BynderApi {
    /// A client with its own budget from `settings`.
    pub fn new(settings: BynderApiSettings) -> Result<Self, DamError> {
        let budget = Arc::new(RequestBudget::new(
            settings.budget_requests,
            settings.budget_window,
        ));
        Self::with_budget(settings, budget)
    }

    /// A client drawing on a shared budget.
    pub fn with_budget(
        settings: BynderApiSettings,
        budget: Arc<RequestBudget>,
    ) -> Result<Self, DamError> {
        Ok(Self {
            http: http_client(settings.timeout)?,
            settings,
            budget,
        })
    }

    pub fn budget(&self) -> &Arc<RequestBudget> {
        &self.budget
    }

    async fn get_json<T: DeserializeOwned>(&self, url: Url) -> Result<T, DamError> {
        self.budget.acquire(self.settings.budget_max_wait).await?;
        let resp = self
            .http
            .get(url)
            .bearer_auth(self.settings.token.expose_secret())
            .send()
            .await
            .map_err(transport_error)?;
        read_json(resp).await
    }

    /// `GET /api/v4/media/{id}/`: confirms an id the `ids=` answer left out; Bynder's 404
    /// says the media is gone.
    async fn fetch_one(&self, id: String) -> Result<Fetched, DamError> {
        self.budget.acquire(self.settings.budget_max_wait).await?;
        let url = endpoint(&self.settings.base_url, &["api", "v4", "media", &id, ""]);
        let resp = self
            .http
            .get(url)
            .bearer_auth(self.settings.token.expose_secret())
            .send()
            .await
            .map_err(transport_error)?;
        match read_json_or_404::<Value>(resp).await? {
            None => Ok(Fetched::Gone(id)),
            Some(m) => Ok(found_or_archived(to_dam_asset(m)?)),
        }
    }

    fn media_url(&self) -> Url {
        // Bynder's routes end with a slash.
        endpoint(&self.settings.base_url, &["api", "v4", "media", ""])
    }

    async fn media_page(&self, token: MediaToken, limit: usize) -> PageStep<MediaToken> {
        let mut url = self.media_url();
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = token.since_secs {
                q.append_pair("dateModified", &format_rfc3339_secs(s * 1000));
            }
            q.append_pair("orderBy", "dateModified asc");
            q.append_pair("limit", &limit.to_string());
            q.append_pair("page", &token.page.to_string());
        }
        let media: Vec<Value> = self.get_json(url).await?;
        let full = media.len() >= limit;
        let mut assets = Vec::with_capacity(media.len());
        let mut last_secs = None;
        let mut ids_at_last: Vec<String> = Vec::new();
        for m in media {
            let a = to_dam_asset(m)?;
            let secs = a.version.modified_at_ms.div_euclid(1000);
            if last_secs != Some(secs) {
                last_secs = Some(secs);
                ids_at_last.clear();
            }
            ids_at_last.push(a.id.clone());
            let repeat = token.since_secs == Some(secs) && token.seen.contains(&a.id);
            if !repeat && !archived(&a.fields) {
                assets.push(a);
            }
        }
        let next = match (full, last_secs) {
            (true, Some(last)) if token.since_secs != Some(last) => Some(MediaToken {
                since_secs: Some(last),
                page: 1,
                seen: ids_at_last,
            }),
            // The whole page sits in the anchor second: page on within it.
            (true, Some(_)) => {
                let mut seen = token.seen;
                seen.extend(ids_at_last);
                seen.sort();
                seen.dedup();
                Some(MediaToken {
                    since_secs: token.since_secs,
                    page: token.page + 1,
                    seen,
                })
            }
            _ => None,
        };
        page_step(assets, next)
    }
}

/// Archived media are gone for the sync (Bynder keeps them, marked `isArchived`).
fn found_or_archived(a: DamAsset) -> Fetched {
    if archived(&a.fields) {
        Fetched::Gone(a.id)
    } else {
        Fetched::Found(a)
    }
}

fn archived(v: &Value) -> bool {
    v.get("isArchived")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Maps one media object; `fields` is the media JSON as returned (`property_*` included).
fn to_dam_asset(v: Value) -> Result<DamAsset, DamError> {
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| DamError::Permanent("media without id".into()))?
        .to_owned();
    let modified = v
        .get("dateModified")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339_ms)
        .ok_or_else(|| DamError::Permanent(format!("media {id}: bad dateModified")))?;
    Ok(DamAsset {
        dam: DamKind::Bynder,
        id,
        version: Version {
            modified_at_ms: modified,
            seq: 0,
        },
        fields: v,
    })
}

#[async_trait]
impl AssetSource for BynderApi {
    fn dam(&self) -> DamKind {
        DamKind::Bynder
    }

    async fn fetch(&self, ids: &[String]) -> Result<Vec<Fetched>, DamError> {
        let batch = self.settings.fetch_batch.clamp(1, MAX_PAGE_SIZE);
        let mut answered = HashMap::new();
        for chunk in ids.chunks(batch) {
            let mut url = self.media_url();
            url.query_pairs_mut()
                .append_pair("ids", &chunk.join(","))
                .append_pair("limit", &chunk.len().to_string());
            let media: Vec<Value> = self.get_json(url).await?;
            for m in media {
                let a = to_dam_asset(m)?;
                answered.insert(a.id.clone(), found_or_archived(a));
            }
        }
        resolve_in_input_order(ids, answered, |id| self.fetch_one(id)).await
    }

    fn list_changed(
        &self,
        since: Option<SystemTime>,
        resume: Option<PageToken>,
        page_size: usize,
    ) -> BoxStream<'_, Result<Page, DamError>> {
        let limit = page_size.clamp(1, MAX_PAGE_SIZE);
        let start = match resume {
            Some(t) => decode_token(&t),
            None => Ok(MediaToken {
                // Bynder compares whole seconds: flooring keeps the window inclusive.
                since_secs: since.map(|t| epoch_ms(t).div_euclid(1000)),
                page: 1,
                seen: Vec::new(),
            }),
        };
        paged(start, move |t| self.media_page(t, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_past_the_limit_and_reports_the_wait() {
        let b = RequestBudget::new(2, Duration::from_secs(10));
        assert!(b.try_acquire().is_ok());
        assert!(b.try_acquire().is_ok());
        let wait = b.try_acquire().unwrap_err();
        // Window plus the latency margin, minus the few µs elapsed.
        assert!(
            wait > Duration::from_secs(10) && wait <= Duration::from_secs(11),
            "{wait:?}"
        );
    }
}
