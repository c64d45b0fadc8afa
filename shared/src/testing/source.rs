//! An in-memory DAM for poller tests and benchmarks: a keyset change listing ordered by
//! (modified_at, id), like the generic contract, with fault knobs.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};

use crate::dam::{AssetSource, DamAsset, DamError, DamKind, Fetched, Page, PageToken, Version};

use crate::time::epoch_ms;

#[derive(Debug, Default)]
struct Inner {
    assets: HashMap<String, DamAsset>,
    /// Listing calls made so far (one per page requested).
    calls: u64,
    /// Calls (1-based) that fail with a transient error.
    failing_calls: BTreeSet<u64>,
    down: bool,
    rate_limited: bool,
    /// Yield to the scheduler before each page, so concurrent runs interleave page by page.
    yields: bool,
}

/// A DAM held in memory. Every listing call counts, including failed ones.
#[derive(Debug)]
pub struct MemorySource {
    dam: DamKind,
    inner: Mutex<Inner>,
}

impl Default for MemorySource {
    fn default() -> Self {
        Self::new(DamKind::Generic)
    }
}

impl MemorySource {
    pub fn new(dam: DamKind) -> Self {
        Self {
            dam,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates or replaces an asset at this version (the listing sees it from now on, even when
    /// its modified time is in the past: a late-indexed change).
    pub fn put(&self, id: &str, modified_at_ms: i64, seq: i64) {
        let asset = DamAsset {
            dam: self.dam,
            id: id.to_owned(),
            version: Version {
                modified_at_ms,
                seq,
            },
            fields: serde_json::json!({ "id": id, "seq": seq }),
        };
        self.lock().assets.insert(id.to_owned(), asset);
    }

    /// Creates or replaces an asset with its own fields (a same-second edit: same version,
    /// other fields).
    pub fn put_asset(&self, asset: DamAsset) {
        self.lock().assets.insert(asset.id.clone(), asset);
    }

    /// Deletes an asset the way the generic contract lists it: a `"deleted": true` row at this
    /// version, which `fetch` reports gone.
    pub fn mark_deleted(&self, id: &str, modified_at_ms: i64, seq: i64) {
        self.put_asset(DamAsset {
            dam: self.dam,
            id: id.to_owned(),
            version: Version {
                modified_at_ms,
                seq,
            },
            fields: serde_json::json!({ "id": id, "seq": seq, "deleted": true }),
        });
    }

    pub fn remove(&self, id: &str) {
        self.lock().assets.remove(id);
    }

    /// Every asset as it is now.
    pub fn assets(&self) -> Vec<DamAsset> {
        self.lock().assets.values().cloned().collect()
    }

    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// All listing calls fail with a transient error while `down`.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// All listing calls answer "rate limited" while set.
    pub fn set_rate_limited(&self, limited: bool) {
        self.lock().rate_limited = limited;
    }

    /// Yield to the async scheduler before each page (interleaves concurrent runs).
    pub fn set_yield_between_pages(&self, yields: bool) {
        self.lock().yields = yields;
    }

    /// The listing call with this 1-based number (counting all calls so far) fails transiently.
    pub fn fail_call(&self, call: u64) {
        self.lock().failing_calls.insert(call);
    }

    fn page(
        &self,
        since_ms: Option<i64>,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<(Page, Option<(i64, String)>), DamError> {
        let mut inner = self.lock();
        inner.calls += 1;
        let call = inner.calls;
        if inner.down || inner.failing_calls.contains(&call) {
            return Err(DamError::Transient(format!("listing call {call} failed")));
        }
        if inner.rate_limited {
            return Err(DamError::RateLimited { retry_after: None });
        }
        let mut matching: Vec<&DamAsset> = inner
            .assets
            .values()
            .filter(|a| since_ms.is_none_or(|s| a.version.modified_at_ms >= s))
            .filter(|a| {
                after
                    .as_ref()
                    .is_none_or(|(ms, id)| (a.version.modified_at_ms, &a.id) > (*ms, id))
            })
            .collect();
        matching.sort_by(|a, b| {
            (a.version.modified_at_ms, &a.id).cmp(&(b.version.modified_at_ms, &b.id))
        });
        let more = matching.len() > limit;
        let assets: Vec<DamAsset> = matching.into_iter().take(limit).cloned().collect();
        let next = match (more, assets.last()) {
            (true, Some(last)) => Some((last.version.modified_at_ms, last.id.clone())),
            _ => None,
        };
        let token = next
            .as_ref()
            .map(|(ms, id)| PageToken(format!("{}|{ms}|{id}", since_ms.unwrap_or(i64::MIN))));
        Ok((
            Page {
                assets,
                next: token,
            },
            next,
        ))
    }
}

fn decode(token: &PageToken) -> Result<(Option<i64>, (i64, String)), DamError> {
    let bad = || DamError::Permanent(format!("bad page token {:?}", token.0));
    let mut parts = token.0.splitn(3, '|');
    let since: i64 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let ms: i64 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let id = parts.next().ok_or_else(bad)?.to_owned();
    Ok(((since != i64::MIN).then_some(since), (ms, id)))
}

#[async_trait]
impl AssetSource for MemorySource {
    fn dam(&self) -> DamKind {
        self.dam
    }

    async fn fetch(&self, ids: &[String]) -> Result<Vec<Fetched>, DamError> {
        let inner = self.lock();
        Ok(ids
            .iter()
            .map(|id| match inner.assets.get(id) {
                Some(a) if !crate::poller::listed_as_deleted(a) => Fetched::Found(a.clone()),
                _ => Fetched::Gone(id.clone()),
            })
            .collect())
    }

    fn list_changed(
        &self,
        since: Option<SystemTime>,
        resume: Option<PageToken>,
        page_size: usize,
    ) -> BoxStream<'_, Result<Page, DamError>> {
        let start = match resume {
            Some(t) => decode(&t).map(|(since, after)| (since, Some(after))),
            None => Ok((since.map(epoch_ms), None)),
        };
        let limit = page_size.max(1);
        // State: None once the listing ended or failed.
        stream::unfold(Some(start), move |state| async move {
            let (since, after) = match state? {
                Ok(s) => s,
                Err(e) => return Some((Err(e), None)),
            };
            let yields = self.lock().yields;
            if yields {
                tokio::task::yield_now().await;
            }
            match self.page(since, after, limit) {
                Ok((page, Some(next))) => Some((Ok(page), Some(Ok((since, Some(next)))))),
                Ok((page, None)) => Some((Ok(page), None)),
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed()
    }
}
