//! Asset reads and writes: the bulk upsert that the sync lives on, listing, get and delete.
//!
//! Akeneo's bulk PATCH takes at most 100 assets (413 above, nothing saved) and answers 200 with
//! one 201/204/422 per asset in input order; items succeed or fail independently. The upsert
//! below splits by count and bytes, keeps up to the in-flight limit of requests busy, and maps
//! every per-item answer back to the caller's item.

use std::collections::{HashMap, VecDeque};

use futures::{Stream, StreamExt};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

use super::client::{AkeneoClient, Page};
use super::error::AkeneoError;
use super::model::{Asset, StoredAsset};
use super::transport::Payload;

const BULK_ROUTE: &str = "PATCH /asset-families/{family}/assets";

/// What the PIM did with an item it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    Updated,
}

/// One field-level complaint of a 422 (`property` such as `values.label`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FieldError {
    #[serde(default)]
    pub property: String,
    #[serde(default)]
    pub message: String,
}

/// Why one item was not written.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemFailure {
    /// The item's own status (422) or the whole request's status; `None` when no answer came.
    pub status: Option<u16>,
    pub message: String,
    pub errors: Vec<FieldError>,
    /// Whether a later attempt can succeed without changing the item.
    pub retriable: bool,
    /// The PIM named an attribute or option it does not know: the structure we mapped against
    /// may be stale (it was invalidated; a retry after a fresh read may pass).
    pub unknown_structure: bool,
    /// The whole request failed (no per-item answer): credentials, rights, a proxy, an outage.
    /// Nothing is known to be wrong with the item itself.
    pub whole_request: bool,
    /// The request may have reached the PIM and may still be applied there (it timed out or
    /// the connection broke after sending): a later write must not overtake it.
    pub outcome_unknown: bool,
}

impl ItemFailure {
    fn from_error(error: &AkeneoError) -> Self {
        ItemFailure {
            status: error.status(),
            message: error.to_string(),
            errors: vec![],
            retriable: error.is_retriable(),
            unknown_structure: false,
            whole_request: true,
            outcome_unknown: error.outcome_unknown(),
        }
    }

    /// One line for logs and reports: the message and each field error.
    pub fn reason(&self) -> String {
        let mut s = self.message.clone();
        for e in &self.errors {
            s.push_str(&format!("; {}: {}", e.property, e.message));
        }
        s
    }
}

pub type ItemOutcome = Result<Written, ItemFailure>;

/// Per-item outcomes of a bulk upsert, aligned with the input slice.
#[derive(Debug, Clone, Default)]
pub struct UpsertReport {
    pub outcomes: Vec<ItemOutcome>,
    /// Bulk PATCH requests that were answered (retries not counted).
    pub requests: usize,
}

impl UpsertReport {
    pub fn created(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o, Ok(Written::Created)))
            .count()
    }

    pub fn updated(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o, Ok(Written::Updated)))
            .count()
    }

    /// Failed items with their index in the input.
    pub fn failures(&self) -> impl Iterator<Item = (usize, &ItemFailure)> {
        self.outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.as_ref().err().map(|f| (i, f)))
    }
}

#[derive(Deserialize)]
struct ItemResult {
    #[serde(default)]
    code: serde_json::Value,
    status_code: u16,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Vec<FieldError>,
}

struct Batch {
    indices: Vec<usize>,
    body: Vec<u8>,
    /// Items refused before sending (too large, not serialisable).
    rejected: Vec<(usize, ItemFailure)>,
}

/// Cuts assets into request bodies of at most `max_items` assets and `max_bytes` bytes,
/// serialising each asset once.
struct Batcher<'a> {
    assets: &'a [Asset],
    next: usize,
    max_items: usize,
    max_bytes: usize,
}

impl Iterator for Batcher<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.assets.len() {
            return None;
        }
        let mut batch = Batch {
            indices: vec![],
            body: b"[".to_vec(),
            rejected: vec![],
        };
        while self.next < self.assets.len() && batch.indices.len() < self.max_items {
            let i = self.next;
            let asset = &self.assets[i];
            let json = match serde_json::to_vec(asset) {
                Ok(j) => j,
                Err(e) => {
                    batch
                        .rejected
                        .push((i, permanent(format!("cannot serialise asset: {e}"))));
                    self.next += 1;
                    continue;
                }
            };
            if json.len() + 2 > self.max_bytes {
                batch.rejected.push((
                    i,
                    permanent(format!(
                        "asset {:?} is {} bytes of JSON, over the {}-byte request budget (AKENEO_BATCH_MAX_BYTES)",
                        asset.code,
                        json.len(),
                        self.max_bytes
                    )),
                ));
                self.next += 1;
                continue;
            }
            if !batch.indices.is_empty() && batch.body.len() + 1 + json.len() + 1 > self.max_bytes {
                break;
            }
            if !batch.indices.is_empty() {
                batch.body.push(b',');
            }
            batch.body.extend_from_slice(&json);
            batch.indices.push(i);
            self.next += 1;
        }
        batch.body.push(b']');
        Some(batch)
    }
}

impl AkeneoClient {
    /// Creates or updates `assets` in `family`. Never fails as a whole: whole-request errors
    /// (after retries) become each item's failure, so the caller can always act per item.
    pub async fn upsert_assets(
        &self,
        family: &str,
        assets: &[Asset],
        deadline: Instant,
    ) -> UpsertReport {
        let limits = self.limits();
        let mut outcomes: Vec<Option<ItemOutcome>> = vec![None; assets.len()];
        // Batches are serialised lazily, as slots free up, so the first request leaves at once
        // and serialisation overlaps the calls in flight.
        let batches = Batcher {
            assets,
            next: 0,
            max_items: limits.batch_max_items,
            max_bytes: limits.batch_max_bytes,
        };
        let url = self.url(&["asset-families", family, "assets"]);
        let mut requests = 0;
        let mut stale = false;
        let mut answers = futures::stream::iter(batches)
            .map(|batch| {
                let url = url.clone();
                async move {
                    let reply = if batch.indices.is_empty() {
                        None
                    } else {
                        Some(
                            self.call(
                                Method::PATCH,
                                url,
                                BULK_ROUTE,
                                Payload::Json(batch.body.into()),
                                deadline,
                            )
                            .await,
                        )
                    };
                    (batch.indices, batch.rejected, reply)
                }
            })
            .buffer_unordered(limits.max_in_flight.max(1));
        while let Some((indices, rejected, reply)) = answers.next().await {
            for (i, failure) in rejected {
                outcomes[i] = Some(Err(failure));
            }
            let Some(reply) = reply else { continue };
            let results = match reply {
                Ok(reply) if reply.status == StatusCode::OK => {
                    requests += 1;
                    serde_json::from_slice::<Vec<ItemResult>>(&reply.body).map_err(|e| {
                        AkeneoError::Protocol(format!(
                            "bulk upsert answer is not a per-item array: {e}"
                        ))
                    })
                }
                Ok(reply) => {
                    requests += 1;
                    Err(reply.into_error(BULK_ROUTE))
                }
                Err(e) => Err(e),
            };
            match results {
                Ok(results) => {
                    for (i, outcome) in match_items(assets, &indices, results) {
                        stale |= outcome.as_ref().err().is_some_and(|f| f.unknown_structure);
                        outcomes[i] = Some(outcome);
                    }
                }
                Err(error) => {
                    tracing::warn!(family, items = indices.len(), %error, "Bulk upsert request failed.");
                    let failure = ItemFailure::from_error(&error);
                    for i in indices {
                        outcomes[i] = Some(Err(failure.clone()));
                    }
                }
            }
        }
        drop(answers);
        if stale {
            self.invalidate_structure(family).await;
        }
        UpsertReport {
            outcomes: outcomes
                .into_iter()
                .map(|o| o.unwrap_or_else(|| Err(retriable_gap())))
                .collect(),
            requests,
        }
    }

    /// One asset, or `None` if the PIM does not have it.
    pub async fn get_asset(
        &self,
        family: &str,
        code: &str,
        deadline: Instant,
    ) -> Result<Option<StoredAsset>, AkeneoError> {
        self.get_json(
            self.url(&["asset-families", family, "assets", code]),
            "GET /asset-families/{family}/assets/{code}",
            deadline,
        )
        .await
    }

    /// Deletes an asset; `Ok(false)` if it was already gone (deletes are idempotent for us).
    pub async fn delete_asset(
        &self,
        family: &str,
        code: &str,
        deadline: Instant,
    ) -> Result<bool, AkeneoError> {
        const ROUTE: &str = "DELETE /asset-families/{family}/assets/{code}";
        let url = self.url(&["asset-families", family, "assets", code]);
        let reply = self
            .call(Method::DELETE, url, ROUTE, Payload::Empty, deadline)
            .await?;
        match reply.status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(reply.into_error(ROUTE)),
        }
    }

    /// The assets of a family as a stream of pages (Akeneo pages by 100 with `search_after`;
    /// the next link is followed as given, never rebuilt). `search` is Akeneo's filter JSON,
    /// e.g. `{"updated":[{"operator":">","value":"2026-01-01T00:00:00Z"}]}`.
    pub fn list_assets<'a>(
        &'a self,
        family: &str,
        search: Option<&serde_json::Value>,
        deadline: Instant,
    ) -> impl Stream<Item = Result<Vec<StoredAsset>, AkeneoError>> + 'a {
        let mut first = self.assets_url(family);
        if let Some(search) = search {
            first
                .query_pairs_mut()
                .append_pair("search", &search.to_string());
        }
        self.asset_pages(first, deadline)
            .map(|page| page.map(|(items, _)| items))
    }

    /// The first-page URL of a family's asset list, where [`Self::asset_pages`] starts.
    pub fn assets_url(&self, family: &str) -> Url {
        self.url(&["asset-families", family, "assets"])
    }

    /// Asset pages from `from` (a first-page URL, or a `_links.next` kept from an earlier
    /// walk, so a long walk can resume), each with the link to the page after it (`None` on
    /// the last). Links to another host are refused.
    pub fn asset_pages<'a>(
        &'a self,
        from: Url,
        deadline: Instant,
    ) -> impl Stream<Item = Result<(Vec<StoredAsset>, Option<Url>), AkeneoError>> + 'a {
        futures::stream::try_unfold(Some(from), move |next| async move {
            let Some(url) = next else { return Ok(None) };
            let page: Page<StoredAsset> = self
                .get_json(url, "GET /asset-families/{family}/assets", deadline)
                .await?
                .ok_or_else(|| AkeneoError::Http {
                    status: 404,
                    route: "GET /asset-families/{family}/assets".into(),
                    message: "the asset family does not exist".into(),
                    retry_after: None,
                })?;
            let next = page.next_url()?;
            if page.embedded.items.is_empty() {
                return Ok(None);
            }
            let after = next.clone();
            Ok(Some(((page.embedded.items, after), next)))
        })
    }
}

fn permanent(message: String) -> ItemFailure {
    ItemFailure {
        status: None,
        message,
        errors: vec![],
        retriable: false,
        unknown_structure: false,
        whole_request: false,
        outcome_unknown: false,
    }
}

fn retriable_gap() -> ItemFailure {
    ItemFailure {
        status: None,
        message: "the PIM's answer did not mention this asset".into(),
        errors: vec![],
        retriable: true,
        unknown_structure: false,
        whole_request: false,
        outcome_unknown: false,
    }
}

fn code_key(code: &serde_json::Value) -> String {
    match code {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Pairs the PIM's per-item answers with our items. Akeneo answers in input order; when the
/// lengths or codes disagree we fall back to matching by code, and anything left unmatched is
/// a retriable failure (never a silent success).
fn match_items(
    assets: &[Asset],
    indices: &[usize],
    results: Vec<ItemResult>,
) -> Vec<(usize, ItemOutcome)> {
    let positional = results.len() == indices.len()
        && results
            .iter()
            .zip(indices)
            .all(|(r, &i)| code_key(&r.code) == assets[i].code);
    let mut out = Vec::with_capacity(indices.len());
    if positional {
        for (r, &i) in results.into_iter().zip(indices) {
            out.push((i, outcome(r)));
        }
        return out;
    }
    let mut by_code: HashMap<String, VecDeque<usize>> = HashMap::new();
    for &i in indices {
        by_code
            .entry(assets[i].code.clone())
            .or_default()
            .push_back(i);
    }
    for r in results {
        if let Some(i) = by_code
            .get_mut(&code_key(&r.code))
            .and_then(|q| q.pop_front())
        {
            out.push((i, outcome(r)));
        }
    }
    for i in by_code.into_values().flatten() {
        out.push((i, Err(retriable_gap())));
    }
    out
}

fn outcome(r: ItemResult) -> ItemOutcome {
    match r.status_code {
        201 => Ok(Written::Created),
        204 => Ok(Written::Updated),
        status => {
            let message = r
                .message
                .unwrap_or_else(|| format!("item answered {status}"));
            let unknown_structure = status == 422
                && (message.contains("does not exist")
                    || r.errors
                        .iter()
                        .any(|e| e.message.contains("does not exist")));
            Err(ItemFailure {
                status: Some(status),
                message,
                errors: r.errors,
                retriable: super::error::is_retriable_status(status),
                unknown_structure,
                whole_request: false,
                outcome_unknown: false,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(code: &str) -> Asset {
        Asset {
            code: code.into(),
            values: Default::default(),
        }
    }

    fn result(code: &str, status: u16) -> ItemResult {
        ItemResult {
            code: code.into(),
            status_code: status,
            message: None,
            errors: vec![],
        }
    }

    #[test]
    fn batches_respect_item_and_byte_budgets() {
        let mut assets: Vec<Asset> = (0..250).map(|i| asset(&format!("asset_{i}"))).collect();
        assets[10].values.insert(
            "long".into(),
            vec![crate::akeneo::AssetValue {
                locale: None,
                channel: None,
                data: serde_json::json!("x".repeat(3_000)),
            }],
        );
        let by_items: Vec<Batch> = Batcher {
            assets: &assets,
            next: 0,
            max_items: 100,
            max_bytes: 1 << 20,
        }
        .collect();
        assert_eq!(
            by_items.iter().map(|b| b.indices.len()).collect::<Vec<_>>(),
            vec![100, 100, 50]
        );

        let by_bytes: Vec<Batch> = Batcher {
            assets: &assets,
            next: 0,
            max_items: 100,
            max_bytes: 1_000,
        }
        .collect();
        let mut seen = vec![];
        for b in &by_bytes {
            assert!(b.body.len() <= 1_000, "{} bytes", b.body.len());
            let parsed: Vec<Asset> = serde_json::from_slice(&b.body).unwrap();
            assert_eq!(parsed.len(), b.indices.len());
            seen.extend(b.indices.iter().copied());
            seen.extend(b.rejected.iter().map(|(i, _)| *i));
        }
        seen.sort();
        assert_eq!(
            seen,
            (0..250).collect::<Vec<_>>(),
            "every item is sent or rejected once"
        );
        let rejected: Vec<usize> = by_bytes
            .iter()
            .flat_map(|b| b.rejected.iter().map(|(i, _)| *i))
            .collect();
        assert_eq!(rejected, vec![10]);
    }

    #[test]
    fn matches_in_order_and_by_code() {
        let assets = vec![asset("a"), asset("b"), asset("c")];
        let out = match_items(
            &assets,
            &[0, 1, 2],
            vec![result("a", 201), result("b", 204), result("c", 201)],
        );
        assert_eq!(
            out.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(out[1].1, Ok(Written::Updated));

        // Out of order and one missing: matched by code, the missing one is retriable.
        let out = match_items(
            &assets,
            &[0, 1, 2],
            vec![result("c", 204), result("a", 201)],
        );
        let map: HashMap<usize, ItemOutcome> = out.into_iter().collect();
        assert_eq!(map[&0], Ok(Written::Created));
        assert_eq!(map[&2], Ok(Written::Updated));
        assert!(map[&1].as_ref().unwrap_err().retriable);
    }

    #[test]
    fn classifies_item_errors() {
        let mut r = result("a", 422);
        r.message = Some("The asset has data that does not comply with the business rules.".into());
        r.errors = vec![FieldError {
            property: "values.foo".into(),
            message: "The attribute \"foo\" does not exist for the asset family \"packshot\"."
                .into(),
        }];
        let f = outcome(r).unwrap_err();
        assert!(!f.retriable);
        assert!(f.unknown_structure);
        assert!(f.reason().contains("values.foo"));

        let mut r = result("a", 422);
        r.message = Some("The locale \"en_AU\" is not activated.".into());
        assert!(!outcome(r).unwrap_err().unknown_structure);
        assert!(outcome(result("a", 503)).unwrap_err().retriable);
    }
}
