//! Generic REST client ([`AssetSource`]) for the contract in docs/generic-dam.md:
//! `GET {base}/assets?ids=` (≤ 100 ids, missing ids absent) and
//! `GET {base}/changes?since=&limit=&cursor=` ordered by (modified_at, id), bearer auth.
//!
//! Also home of the HTTP helpers the Cloudinary and Bynder clients share (status
//! classification, Retry-After, RFC 3339, resumable page tokens).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use url::Url;

use crate::dam::{AssetSource, DamAsset, DamError, DamKind, Fetched, Page, PageToken, Version};

/// Most ids the contract accepts per fetch.
pub const MAX_FETCH_IDS: usize = 100;
/// Largest `limit` the contract accepts on `/changes`.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Settings of the generic client.
#[derive(Debug, Clone)]
pub struct GenericApiSettings {
    /// Base of the contract; `{base_url}/assets` and `{base_url}/changes` are called.
    pub base_url: Url,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: SecretString,
    /// Whole-request timeout. Default 30 s.
    pub timeout: Duration,
    /// Ids per fetch request, capped at [`MAX_FETCH_IDS`]. Default 100.
    pub fetch_batch: usize,
}

impl GenericApiSettings {
    pub fn new(base_url: Url, token: SecretString) -> Self {
        Self {
            base_url,
            token,
            timeout: Duration::from_secs(30),
            fetch_batch: MAX_FETCH_IDS,
        }
    }
}

/// The generic DAM's REST client.
#[derive(Debug, Clone)]
pub struct GenericApi {
    http: reqwest::Client,
    settings: GenericApiSettings,
}

impl GenericApi {
    pub fn new(settings: GenericApiSettings) -> Result<Self, DamError> {
        Ok(Self {
            http: http_client(settings.timeout)?,
            settings,
        })
    }

    async fn get_json<T: DeserializeOwned>(&self, url: Url) -> Result<T, DamError> {
        let resp = self
            .http
            .get(url)
            .bearer_auth(self.settings.token.expose_secret())
            .send()
            .await
            .map_err(transport_error)?;
        read_json(resp).await
    }

    async fn changes_page(&self, token: ChangesToken, limit: usize) -> PageStep<ChangesToken> {
        let mut url = endpoint(&self.settings.base_url, &["changes"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(since) = token.since_ms {
                q.append_pair("since", &format_rfc3339_ms(since));
            }
            q.append_pair("limit", &limit.to_string());
            if let Some(c) = &token.cursor {
                q.append_pair("cursor", c);
            }
        }
        let body: ChangesBody = self.get_json(url).await?;
        // Tombstones carry no fields to sync; deletions reach the pipeline through
        // `asset.deleted` webhooks and through `fetch` reporting the id as gone.
        let assets = body
            .assets
            .into_iter()
            .filter(|a| !a.get("deleted").and_then(Value::as_bool).unwrap_or(false))
            .map(to_dam_asset)
            .collect::<Result<Vec<_>, _>>()?;
        let next = body.next_cursor.map(|c| ChangesToken {
            since_ms: token.since_ms,
            cursor: Some(c),
        });
        page_step(assets, next)
    }
}

#[derive(Debug, Deserialize)]
struct AssetsBody {
    assets: Vec<Value>,
}

#[derive(Debug, Deserialize)]
struct ChangesBody {
    assets: Vec<Value>,
    next_cursor: Option<String>,
}

/// Resume state of a change listing: the window start and the contract's cursor.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChangesToken {
    since_ms: Option<i64>,
    cursor: Option<String>,
}

/// Maps one contract asset object. `fields` is the whole object, so mappings address
/// `fields.title`, `id`, `version`...
fn to_dam_asset(v: Value) -> Result<DamAsset, DamError> {
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| DamError::Permanent("asset without id".into()))?
        .to_owned();
    let modified = v
        .get("modified_at")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339_ms)
        .ok_or_else(|| DamError::Permanent(format!("asset {id}: bad modified_at")))?;
    let seq = v.get("version").and_then(Value::as_i64).unwrap_or(0);
    Ok(DamAsset {
        dam: DamKind::Generic,
        id,
        version: Version {
            modified_at_ms: modified,
            seq,
        },
        fields: v,
    })
}

#[async_trait]
impl AssetSource for GenericApi {
    fn dam(&self) -> DamKind {
        DamKind::Generic
    }

    async fn fetch(&self, ids: &[String]) -> Result<Vec<Fetched>, DamError> {
        let batch = self.settings.fetch_batch.clamp(1, MAX_FETCH_IDS);
        let mut found = std::collections::HashMap::new();
        for chunk in ids.chunks(batch) {
            let mut url = endpoint(&self.settings.base_url, &["assets"]);
            url.query_pairs_mut().append_pair("ids", &chunk.join(","));
            let body: AssetsBody = self.get_json(url).await?;
            for v in body.assets {
                let deleted = v.get("deleted").and_then(Value::as_bool).unwrap_or(false);
                let asset = to_dam_asset(v)?;
                if !deleted {
                    found.insert(asset.id.clone(), asset);
                }
            }
        }
        Ok(in_input_order(ids, found))
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
            None => Ok(ChangesToken {
                since_ms: since.map(system_time_ms),
                cursor: None,
            }),
        };
        paged(start, move |t| self.changes_page(t, limit))
    }
}

// ---- helpers shared by the three REST clients -------------------------------------------

/// One page plus the resume state after it (`None` when the listing is done).
pub(crate) type PageStep<T> = Result<(Page, Option<T>), DamError>;

/// Builds a `Page` whose `next` token encodes `next`.
pub(crate) fn page_step<T: Serialize>(assets: Vec<DamAsset>, next: Option<T>) -> PageStep<T> {
    let token = next.as_ref().map(encode_token).transpose()?;
    Ok((
        Page {
            assets,
            next: token,
        },
        next,
    ))
}

/// A page stream driven by `step`: it stops after the last page or the first error (the
/// caller resumes from the last page's token).
pub(crate) fn paged<'a, T, F, Fut>(
    start: Result<T, DamError>,
    step: F,
) -> BoxStream<'a, Result<Page, DamError>>
where
    T: Send + 'a,
    F: FnMut(T) -> Fut + Send + 'a,
    Fut: std::future::Future<Output = PageStep<T>> + Send + 'a,
{
    let state = match start {
        Ok(t) => Some((Ok(t), step)),
        Err(e) => Some((Err(e), step)),
    };
    stream::unfold(state, |state| async move {
        let (t, mut step) = state?;
        let t = match t {
            Ok(t) => t,
            Err(e) => return Some((Err(e), None)),
        };
        match step(t).await {
            Ok((page, Some(next))) => Some((Ok(page), Some((Ok(next), step)))),
            Ok((page, None)) => Some((Ok(page), None)),
            Err(e) => Some((Err(e), None)),
        }
    })
    .boxed()
}

pub(crate) fn encode_token<T: Serialize>(t: &T) -> Result<PageToken, DamError> {
    serde_json::to_string(t)
        .map(PageToken)
        .map_err(|e| DamError::Permanent(format!("page token: {e}")))
}

pub(crate) fn decode_token<T: DeserializeOwned>(t: &PageToken) -> Result<T, DamError> {
    serde_json::from_str(&t.0).map_err(|e| {
        DamError::Permanent(format!("page token from another adapter or version: {e}"))
    })
}

/// One result per requested id, in input order: found ones, the rest gone.
pub(crate) fn in_input_order(
    ids: &[String],
    found: std::collections::HashMap<String, DamAsset>,
) -> Vec<Fetched> {
    ids.iter()
        .map(|id| match found.get(id) {
            Some(a) => Fetched::Found(a.clone()),
            None => Fetched::Gone(id.clone()),
        })
        .collect()
}

pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, DamError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(|e| DamError::Permanent(format!("HTTP client: {e}")))
}

/// `base` plus path segments, whether or not `base` ends with a slash.
pub(crate) fn endpoint(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// Network-level failures (timeouts, refused connections, cut bodies) are worth a retry.
pub(crate) fn transport_error(e: reqwest::Error) -> DamError {
    DamError::Transient(format!("request failed: {e}"))
}

/// Maps a non-success status: 401/403 → Unauthorized, 429 (and Cloudinary's legacy 420) →
/// RateLimited, 408/5xx → Transient, other 4xx → Permanent.
pub(crate) fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> DamError {
    let snippet: String = body.chars().take(300).collect();
    let what = format!("HTTP {status}: {snippet}");
    match status.as_u16() {
        401 | 403 => DamError::Unauthorized(what),
        420 | 429 => DamError::RateLimited {
            retry_after: retry_after(headers),
        },
        408 | 500..=599 => DamError::Transient(what),
        _ => DamError::Permanent(what),
    }
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    until_http_date(v)
}

/// Time from now until an HTTP date (zero if it has passed).
pub(crate) fn until_http_date(v: &str) -> Option<Duration> {
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Reads a success body as JSON, or classifies the failure.
pub(crate) async fn read_json<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, DamError> {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.map_err(transport_error)?;
    if !status.is_success() {
        return Err(classify(status, &headers, &String::from_utf8_lossy(&bytes)));
    }
    // A 2xx body that does not parse will not parse on retry either.
    serde_json::from_slice(&bytes)
        .map_err(|e| DamError::Permanent(format!("unexpected response body: {e}")))
}

pub(crate) fn system_time_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

pub(crate) fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-28T15:31:35.123Z`.
pub(crate) fn format_rfc3339_ms(ms: i64) -> String {
    let secs = format_rfc3339_secs(ms);
    format!("{}.{:03}Z", secs.trim_end_matches('Z'), ms.rem_euclid(1000))
}

/// RFC 3339 in UTC truncated to the second, e.g. `2026-11-28T15:31:35Z`.
pub(crate) fn format_rfc3339_secs(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses_per_the_port_rules() {
        let h = HeaderMap::new();
        let c = |s: u16| classify(StatusCode::from_u16(s).unwrap(), &h, "x");
        assert!(matches!(c(401), DamError::Unauthorized(_)));
        assert!(matches!(c(403), DamError::Unauthorized(_)));
        assert!(matches!(
            c(429),
            DamError::RateLimited { retry_after: None }
        ));
        assert!(matches!(c(420), DamError::RateLimited { .. }));
        assert!(matches!(c(503), DamError::Transient(_)));
        assert!(matches!(c(500), DamError::Transient(_)));
        assert!(matches!(c(404), DamError::Permanent(_)));
        assert!(matches!(c(400), DamError::Permanent(_)));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        h.insert("retry-after", later.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn endpoint_appends_segments_with_or_without_trailing_slash() {
        let a = Url::parse("http://h/api").unwrap();
        let b = Url::parse("http://h/api/").unwrap();
        assert_eq!(endpoint(&a, &["assets"]).as_str(), "http://h/api/assets");
        assert_eq!(endpoint(&b, &["assets"]).as_str(), "http://h/api/assets");
    }

    #[test]
    fn rfc3339_round_trip() {
        let ms = 1_764_343_895_123;
        assert_eq!(format_rfc3339_ms(ms), "2025-11-28T15:31:35.123Z");
        assert_eq!(format_rfc3339_secs(ms), "2025-11-28T15:31:35Z");
        assert_eq!(parse_rfc3339_ms("2025-11-28T16:31:35.123+01:00"), Some(ms));
    }
}
