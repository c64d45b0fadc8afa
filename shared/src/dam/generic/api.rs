//! Generic REST client ([`AssetSource`]) for the contract in docs/generic-dam.md:
//! `GET {base}/assets?ids=` (≤ 100 ids; tombstones say `"deleted": true`; an id left out is
//! confirmed with `GET {base}/assets/{id}`, gone only on its 404) and
//! `GET {base}/changes?since=&limit=&cursor=` ordered by (modified_at, id), bearer auth.

use std::time::{Duration, SystemTime};

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
use crate::time::{epoch_ms, format_rfc3339_ms, parse_rfc3339_ms};

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

    /// `GET {base}/assets/{id}`: the contract's single-asset read, which confirms an id the
    /// batch answer left out. A 404 is the DAM saying the asset is gone.
    async fn fetch_one(&self, id: String) -> Result<Fetched, DamError> {
        let url = endpoint(&self.settings.base_url, &["assets", &id]);
        let resp = self
            .http
            .get(url)
            .bearer_auth(self.settings.token.expose_secret())
            .send()
            .await
            .map_err(transport_error)?;
        match read_json_or_404::<Value>(resp).await? {
            None => Ok(Fetched::Gone(id)),
            Some(v) => Ok(answer(v)?.1),
        }
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
        // Tombstones (`"deleted": true`) stay in the page: the poller turns them into deletions
        // (`shared::poller::listed_as_deleted`). One without a readable `modified_at` cannot be
        // ordered against the applied version, so it is left to webhooks and the sweep.
        let assets = body
            .assets
            .into_iter()
            .filter_map(|a| {
                let deleted = a.get("deleted").and_then(Value::as_bool).unwrap_or(false);
                match to_dam_asset(a) {
                    Err(_) if deleted => None,
                    other => Some(other),
                }
            })
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

/// What a contract asset object says: the asset, or `Gone` for a tombstone.
fn answer(v: Value) -> Result<(String, Fetched), DamError> {
    if is_tombstone(&v) {
        // A tombstone needs nothing but its id.
        let id = v
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| DamError::Permanent("asset without id".into()))?;
        return Ok((id.to_owned(), Fetched::Gone(id.to_owned())));
    }
    let asset = to_dam_asset(v)?;
    Ok((asset.id.clone(), Fetched::Found(asset)))
}

/// Whether a contract asset object is a tombstone (`"deleted": true`).
pub fn is_tombstone(v: &Value) -> bool {
    v.get("deleted").and_then(Value::as_bool).unwrap_or(false)
}

/// Maps one contract asset object, read over REST or carried by a webhook (one shape for
/// both, so a mapping sees the same JSON either way). `fields` is the whole object, so
/// mappings address `fields.title`, `id`, `version`...
pub fn to_dam_asset(v: Value) -> Result<DamAsset, DamError> {
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
        let mut answered = std::collections::HashMap::new();
        for chunk in ids.chunks(batch) {
            let mut url = endpoint(&self.settings.base_url, &["assets"]);
            url.query_pairs_mut().append_pair("ids", &chunk.join(","));
            let body: AssetsBody = self.get_json(url).await?;
            for v in body.assets {
                let (id, fetched) = answer(v)?;
                answered.insert(id, fetched);
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
            None => Ok(ChangesToken {
                since_ms: since.map(epoch_ms),
                cursor: None,
            }),
        };
        paged(start, move |t| self.changes_page(t, limit))
    }
}
