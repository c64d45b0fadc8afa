//! Bynder REST client ([`AssetSource`]) over the v4 media API, bearer token (permanent token
//! or OAuth2 access token).
//!
//! - Fetch: `GET /api/v4/media/?ids=a,b,...&limit=N`; archived media (`isArchived`) are
//!   gone; an id absent from the answer is confirmed with `GET /api/v4/media/{id}/` (gone on
//!   its 404 or when archived).
//! - Changes: `GET /api/v4/media/?dateModified=<F>&orderBy=dateModified asc&limit&page`. Bynder
//!   documents `dateModified` as "modified after" and prints whole seconds, so whether media
//!   of second `F` itself come back is not something to rely on: the filter is always set one
//!   second before the first second still wanted, and media already returned are dropped by
//!   (id, second). After each full page the query re-anchors at the last second seen minus
//!   one (page 1 again), which keeps page numbers small. Inside one crowded second (a whole
//!   page within the anchor's two seconds) it pages on, but page numbers shift when media
//!   earlier in the order are edited (they move to the end) or deleted, so each later window
//!   starts a few positions before the last one ended (`limit`/`page` chosen so) and must
//!   contain a medium returned before, unchanged since; otherwise that second is walked again
//!   from page 1. See [`walk_step`]. Archived media are left out of listings.
//! - Rate limit: 4,500 requests per 5 minutes per source IP, then a block that every call
//!   extends, announced by a bare 429 (no headers). [`RequestBudget`] keeps the client under
//!   the limit so the block never starts.
//!
//! Version = (`dateModified`, 0): Bynder has no version counter and prints seconds.

use std::collections::{HashMap, HashSet, VecDeque};
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

/// Resume state of a change listing; see the module docs for the walk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct MediaToken {
    /// The `dateModified` filter, whole seconds since the epoch; `None` lists everything.
    since_secs: Option<i64>,
    /// Positions of this query's order covered so far; the next window starts just before.
    offset: u64,
    /// (id, second) of media returned under this filter: dropped when they come again, and
    /// the proof that a window joins what was covered.
    seen: Vec<(String, i64)>,
}

impl MediaToken {
    /// The first query for media modified at or after `since`: one second earlier, so that
    /// `since`'s own second is listed whether Bynder's filter includes its second or not.
    fn start(since: Option<SystemTime>) -> Self {
        MediaToken {
            since_secs: since.map(|t| epoch_ms(t).div_euclid(1000) - 1),
            offset: 0,
            seen: Vec::new(),
        }
    }
}

/// Positions a later window re-reads before where the last one ended, at least 2: edits and
/// deletions earlier in the order shift media back by that much without a skip.
fn overlap(page_size: usize) -> u64 {
    (page_size as u64 / 10).max(2)
}

/// `(limit, page, start)` of the next request: page 1 at the start, otherwise a window that
/// starts before `offset` (so it can re-read media already returned, ideally [`overlap`] of
/// them) and ends after it (so the walk moves on). Bynder pages are `limit`-sized, so a window
/// starts only at a multiple of its `limit`: the largest `limit` ≤ `page_size` that fits is
/// used, or a slightly larger one when none does.
fn window(offset: u64, page_size: usize) -> (usize, u64, u64) {
    let size = page_size.clamp(1, MAX_PAGE_SIZE) as u64;
    if offset == 0 {
        return (size as usize, 1, 0);
    }
    // The last page boundary before `offset` for this limit, and how much it re-reads.
    let fit = |l: u64| {
        let start = (offset - 1) / l * l;
        (start, offset - start)
    };
    let pick = |min_overlap: u64| {
        (2..=size)
            .rev()
            .chain(size + 1..=MAX_PAGE_SIZE as u64)
            .find(|&l| {
                let (_, re_read) = fit(l);
                re_read >= min_overlap && re_read < l
            })
    };
    let l = pick(overlap(size as usize))
        .or_else(|| pick(1))
        .unwrap_or(offset + 1);
    let (start, _) = fit(l);
    (l as usize, start / l + 1, start)
}

fn second(a: &DamAsset) -> i64 {
    a.version.modified_at_ms.div_euclid(1000)
}

/// One answer of the listing walk: the media to return (new and not archived) and the next
/// position, `None` at the end.
///
/// Why nothing modified before the walk is skipped: media keep their relative order unless
/// edited (an edit moves one to the end, at the current second). A window that contains a
/// medium returned before with the same second started inside covered ground, so every
/// unchanged medium before its end has been returned. Page 1 of a query starts at the
/// beginning. Re-anchoring at `last − 1` drops only seconds before the last one seen, all
/// covered. A window that does not join (more edits or deletions than the overlap) restarts
/// its query at page 1. Each step moves the filter forward or the position by a window, or
/// restarts after an edit, so a walk over a finite set of edits ends.
fn walk_step(
    token: MediaToken,
    start: u64,
    limit: usize,
    media: Vec<DamAsset>,
) -> (Vec<DamAsset>, Option<MediaToken>) {
    let full = media.len() >= limit;
    let mut seen: HashSet<(String, i64)> = token.seen.into_iter().collect();
    let joins = start == 0
        || media
            .iter()
            .any(|a| seen.contains(&(a.id.clone(), second(a))));
    let last = media.last().map(second);
    let count = media.len() as u64;
    let mut out = Vec::new();
    for a in media {
        if seen.insert((a.id.clone(), second(&a))) && !archived(&a.fields) {
            out.push(a);
        }
    }
    let keep = |seen: HashSet<(String, i64)>, from: Option<i64>| {
        let mut v: Vec<_> = seen
            .into_iter()
            .filter(|(_, s)| from.is_none_or(|f| *s >= f))
            .collect();
        v.sort();
        v
    };
    let next = match (joins, full, last) {
        // A gap may lie before this window: walk this query again from page 1.
        (false, _, _) => Some(MediaToken {
            since_secs: token.since_secs,
            offset: 0,
            seen: keep(seen, token.since_secs),
        }),
        (true, true, Some(last)) if token.since_secs.is_none_or(|f| last - 1 > f) => {
            Some(MediaToken {
                since_secs: Some(last - 1),
                offset: 0,
                seen: keep(seen, Some(last - 1)),
            })
        }
        (true, true, _) => Some(MediaToken {
            since_secs: token.since_secs,
            offset: start + count,
            seen: keep(seen, token.since_secs),
        }),
        (true, false, _) => None,
    };
    (out, next)
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

    async fn media_page(&self, token: MediaToken, page_size: usize) -> PageStep<MediaToken> {
        let (limit, page, start) = window(token.offset, page_size);
        let mut url = self.media_url();
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = token.since_secs {
                q.append_pair("dateModified", &format_rfc3339_secs(s * 1000));
            }
            q.append_pair("orderBy", "dateModified asc");
            q.append_pair("limit", &limit.to_string());
            q.append_pair("page", &page.to_string());
        }
        let media: Vec<Value> = self.get_json(url).await?;
        let media = media
            .into_iter()
            .map(to_dam_asset)
            .collect::<Result<Vec<_>, _>>()?;
        let (assets, next) = walk_step(token, start, limit, media);
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
            None => Ok(MediaToken::start(since)),
        };
        paged(start, move |t| self.media_page(t, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::UNIX_EPOCH;

    use proptest::prelude::*;

    /// Bynder's listing as a model: media ordered by (modified time, id), a `dateModified`
    /// filter on whole seconds (inclusive or exclusive), `limit`-sized numbered pages.
    struct Model {
        /// (id, modified ms, archived); ids unique.
        media: Vec<(String, i64, bool)>,
        inclusive: bool,
    }

    impl Model {
        fn list(&self, since_secs: Option<i64>, limit: usize, page: u64) -> Vec<DamAsset> {
            let mut hits: Vec<&(String, i64, bool)> = self
                .media
                .iter()
                .filter(|(_, ms, _)| {
                    let s = ms.div_euclid(1000);
                    since_secs.is_none_or(|f| if self.inclusive { s >= f } else { s > f })
                })
                .collect();
            hits.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
            hits.into_iter()
                .skip((page as usize - 1) * limit)
                .take(limit)
                .map(|(id, ms, archived)| DamAsset {
                    dam: DamKind::Bynder,
                    id: id.clone(),
                    version: Version {
                        // Bynder prints seconds.
                        modified_at_ms: ms.div_euclid(1000) * 1000,
                        seq: 0,
                    },
                    fields: serde_json::json!({ "isArchived": archived }),
                })
                .collect()
        }
    }

    /// Walks the model like `list_changed`, applying `edits` (request number, media index)
    /// as it goes at a clock advancing `tick_ms` per request. Returns the ids listed and
    /// whether the walk ended within `max_requests`.
    fn walk(
        model: &mut Model,
        since: Option<SystemTime>,
        page_size: usize,
        edits: &[(usize, usize)],
        mut now_ms: i64,
        tick_ms: i64,
        max_requests: usize,
    ) -> (HashSet<String>, bool) {
        let mut token = Some(MediaToken::start(since));
        let mut listed = HashSet::new();
        let mut requests = 0;
        while let Some(t) = token.take() {
            if requests == max_requests {
                return (listed, false);
            }
            let (limit, page, start) = window(t.offset, page_size);
            let answer = model.list(t.since_secs, limit, page);
            // Round-trip the token as the poller stores it.
            let t: MediaToken = decode_token(&crate::dam::http::encode_token(&t).unwrap()).unwrap();
            let (assets, next) = walk_step(t, start, limit, answer);
            listed.extend(assets.into_iter().map(|a| a.id));
            token = next;
            requests += 1;
            now_ms += tick_ms;
            for (_, i) in edits.iter().filter(|(at, _)| *at == requests) {
                let n = model.media.len();
                // An edit moves the medium to the current time.
                model.media[i % n].1 = now_ms;
            }
        }
        (listed, true)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_medium_modified_before_the_walk_is_listed(
            inclusive in any::<bool>(),
            crowd in 1usize..200,
            spread in proptest::collection::vec((0i64..5_000, any::<bool>()), 0..40),
            page_size in 1usize..40,
            edits in proptest::collection::vec((1usize..60, 0usize..400), 0..25),
            tick_ms in 0i64..1_500,
            with_since in any::<bool>(),
        ) {
            let base = 1_800_000_000_000;
            // A crowd sharing one second, and media spread around it.
            let crowd_ms = base + 2_000;
            let mut media: Vec<(String, i64, bool)> = (0..crowd)
                .map(|i| (format!("c{i:03}"), crowd_ms + (i as i64 % 1000), false))
                .collect();
            media.extend(
                spread
                    .iter()
                    .enumerate()
                    .map(|(i, (ms, archived))| (format!("s{i:03}"), base + ms, *archived)),
            );
            let live: Vec<String> = media
                .iter()
                .filter(|(_, _, archived)| !archived)
                .map(|(id, _, _)| id.clone())
                .collect();
            let since = with_since.then(|| {
                UNIX_EPOCH + Duration::from_millis(base as u64)
            });
            // The walk starts after every medium's last change.
            let start_ms = base + 10_000;
            let mut model = Model { media, inclusive };
            let (listed, ended) =
                walk(&mut model, since, page_size, &edits, start_ms, tick_ms, 5_000);
            prop_assert!(ended, "the walk must end");
            for id in &live {
                prop_assert!(listed.contains(id), "{id} never listed");
            }
        }
    }

    #[test]
    fn a_thousand_media_in_one_second_are_all_listed_either_way() {
        for inclusive in [false, true] {
            let ms = 1_800_000_000_000;
            let media = (0..1000)
                .map(|i| (format!("m{i:04}"), ms + i as i64 % 1000, false))
                .collect();
            let mut model = Model { media, inclusive };
            let since = Some(UNIX_EPOCH + Duration::from_millis(ms as u64));
            let (listed, ended) = walk(&mut model, since, 100, &[], ms + 5_000, 10, 1_000);
            assert!(ended);
            assert_eq!(listed.len(), 1000, "inclusive={inclusive}");
        }
    }

    #[test]
    fn windows_start_inside_what_was_covered() {
        assert_eq!(window(0, 100), (100, 1, 0));
        for size in [1usize, 2, 3, 10, 40, 100, 1000] {
            for offset in 1u64..3_000 {
                let (limit, page, start) = window(offset, size);
                let what = format!("offset {offset}, size {size}: {limit} {page} {start}");
                assert!((1..=MAX_PAGE_SIZE).contains(&limit), "{what}");
                assert_eq!(start, (page - 1) * limit as u64, "{what}");
                // Re-reads at least one position and reaches at least one new one.
                assert!(start < offset && start + limit as u64 > offset, "{what}");
                if size >= 10 && limit <= size {
                    assert!(offset - start >= overlap(size).min(offset), "{what}");
                }
            }
        }
        // Mostly the requested size.
        assert_eq!(window(1_000, 100), (99, 11, 990));
    }

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
