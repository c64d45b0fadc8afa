//! HTTP plumbing the three DAM clients share: status classification, Retry-After, JSON
//! bodies, endpoints, resumable page tokens and fetches answered in input order.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use futures::stream::{self, BoxStream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::dam::{DamAsset, DamError, Fetched, Page, PageToken};

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

/// One result per requested id, in input order. `answered` holds what the batch answer said
/// about each id it mentioned (found, or gone because the DAM marked it so). An id the batch
/// left out is not taken as deleted: a subset answer (a page cap, a permission-scoped token, a
/// bug answering `[]`) would otherwise delete PIM assets. Each is confirmed with `read_one`,
/// the DAM's single-asset read, which says `Gone` only on the DAM's own word (a 404, a
/// tombstone).
pub(crate) async fn resolve_in_input_order<F, Fut>(
    ids: &[String],
    mut answered: HashMap<String, Fetched>,
    read_one: F,
) -> Result<Vec<Fetched>, DamError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Fetched, DamError>>,
{
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let fetched = match answered.get(id) {
            Some(f) => f.clone(),
            None => {
                let f = read_one(id.clone()).await?;
                // A repeated id is read once.
                answered.insert(id.clone(), f.clone());
                f
            }
        };
        out.push(fetched);
    }
    Ok(out)
}

/// A success body as JSON, `None` on 404 (the DAM says there is no such thing), or the
/// classified failure.
pub(crate) async fn read_json_or_404<T: DeserializeOwned>(
    resp: reqwest::Response,
) -> Result<Option<T>, DamError> {
    if resp.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    read_json(resp).await.map(Some)
}

pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, DamError> {
    crate::https::client_builder()
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
    DamError::Network(e)
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
    serde_json::from_slice(&bytes).map_err(DamError::Body)
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
}
