//! The Akeneo client: authenticated calls and structure reads. Asset and media operations
//! are in `assets.rs` and `media.rs`.

use std::num::NonZeroU32;
use std::sync::Arc;

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use url::Url;

use super::StructureStore;
use super::auth::Authenticator;
use super::config::{AkeneoConfig, Limits};
use super::error::AkeneoError;
use super::model::{AssetAttribute, AssetFamily, AttributeOption, FamilyStructure};
use super::structure::MemoryStructureStore;
use super::transport::{Call, CallCounts, Payload, Reply, Transport};

/// A client for one Akeneo Connection. Cheap to clone: clones share the token, the pacing
/// (in-flight and rate limits, Retry-After) and the structure cache.
#[derive(Clone)]
pub struct AkeneoClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub api: Url,
    pub transport: Transport,
    auth: Authenticator,
    pub structures: Arc<dyn StructureStore>,
    pub option_writes: DefaultDirectRateLimiter,
}

impl AkeneoClient {
    /// A client with an in-memory structure cache.
    pub fn new(config: AkeneoConfig) -> Result<Self, AkeneoError> {
        let store = Arc::new(MemoryStructureStore::new(config.limits.structure_ttl));
        Self::with_structure_store(config, store)
    }

    /// A client whose structure cache lives in `structures` (e.g. a table shared by every
    /// Lambda invocation).
    pub fn with_structure_store(
        config: AkeneoConfig,
        structures: Arc<dyn StructureStore>,
    ) -> Result<Self, AkeneoError> {
        let api = config
            .base_url
            .join("api/rest/v1/")
            .map_err(|e| AkeneoError::Protocol(format!("cannot build the API URL: {e}")))?;
        let option_rate =
            NonZeroU32::new(config.limits.option_writes_per_second).unwrap_or(NonZeroU32::MIN);
        Ok(AkeneoClient {
            inner: Arc::new(Inner {
                api,
                auth: Authenticator::new(&config)?,
                transport: Transport::new(config.limits.clone())?,
                structures,
                option_writes: RateLimiter::direct(
                    Quota::per_second(option_rate).allow_burst(NonZeroU32::MIN),
                ),
            }),
        })
    }

    pub fn limits(&self) -> &Limits {
        self.inner.transport.limits()
    }

    /// What this client has sent so far.
    pub fn call_counts(&self) -> CallCounts {
        self.inner.transport.stats.snapshot()
    }

    pub fn structure_store(&self) -> &Arc<dyn StructureStore> {
        &self.inner.structures
    }

    /// Logs in (or reuses the token): proves the URL and credentials.
    pub async fn authenticate(&self, deadline: Instant) -> Result<(), AkeneoError> {
        self.inner
            .auth
            .bearer(&self.inner.transport, deadline)
            .await
            .map(|_| ())
    }

    /// `{api}/seg1/seg2/...` with each segment percent-encoded.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.api.clone();
        {
            let mut path = url.path_segments_mut().expect("the API URL is a base URL");
            path.pop_if_empty();
            for s in segments {
                path.push(s);
            }
        }
        url
    }

    /// Sends an authenticated call. A 401 gets one replay with a fresh token (the token may
    /// have expired or been revoked while the request was queued).
    pub(crate) async fn call(
        &self,
        method: Method,
        url: Url,
        route: &'static str,
        payload: Payload,
        deadline: Instant,
    ) -> Result<Reply, AkeneoError> {
        // Never send our token to another host, even if a `_links.next` points there.
        if url.origin() != self.inner.api.origin() {
            return Err(AkeneoError::Protocol(format!(
                "refusing to follow a link to another host: {url}"
            )));
        }
        let call = Call {
            method,
            url,
            route,
            payload,
            basic_auth: None,
        };
        let mut replayed = false;
        loop {
            let bearer = self
                .inner
                .auth
                .bearer(&self.inner.transport, deadline)
                .await?;
            let reply = self
                .inner
                .transport
                .execute(&call, Some(bearer.token.expose_secret()), deadline)
                .await?;
            if reply.status == StatusCode::UNAUTHORIZED && !replayed {
                replayed = true;
                tracing::info!(route, "PIM rejected the access token; renewing it once.");
                self.inner.auth.invalidate(bearer.generation).await;
                continue;
            }
            return Ok(reply);
        }
    }

    /// GET returning JSON; 404 gives `None`.
    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        url: Url,
        route: &'static str,
        deadline: Instant,
    ) -> Result<Option<T>, AkeneoError> {
        let reply = self
            .call(Method::GET, url, route, Payload::Empty, deadline)
            .await?;
        match reply.status {
            StatusCode::OK => serde_json::from_slice(&reply.body)
                .map(Some)
                .map_err(|e| AkeneoError::Protocol(format!("{route}: {e}"))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(reply.into_error(route)),
        }
    }

    pub async fn get_family(
        &self,
        family: &str,
        deadline: Instant,
    ) -> Result<Option<AssetFamily>, AkeneoError> {
        self.get_json(
            self.url(&["asset-families", family]),
            "GET /asset-families/{family}",
            deadline,
        )
        .await
    }

    /// Every asset family, following `_links.next` (Akeneo pages families by 200).
    pub async fn list_families(&self, deadline: Instant) -> Result<Vec<AssetFamily>, AkeneoError> {
        let mut families = Vec::new();
        let mut next = Some(self.url(&["asset-families"]));
        while let Some(url) = next.take() {
            let page: Page<AssetFamily> = self
                .get_json(url, "GET /asset-families", deadline)
                .await?
                .ok_or_else(|| AkeneoError::Protocol("asset family list answered 404".into()))?;
            next = page.next_url()?;
            if page.embedded.items.is_empty() {
                break;
            }
            families.extend(page.embedded.items);
        }
        Ok(families)
    }

    pub async fn list_attributes(
        &self,
        family: &str,
        deadline: Instant,
    ) -> Result<Option<Vec<AssetAttribute>>, AkeneoError> {
        self.get_json(
            self.url(&["asset-families", family, "attributes"]),
            "GET /asset-families/{family}/attributes",
            deadline,
        )
        .await
    }

    pub async fn list_options(
        &self,
        family: &str,
        attribute: &str,
        deadline: Instant,
    ) -> Result<Vec<AttributeOption>, AkeneoError> {
        Ok(self
            .get_json(
                self.url(&["asset-families", family, "attributes", attribute, "options"]),
                "GET /asset-families/{family}/attributes/{attribute}/options",
                deadline,
            )
            .await?
            .unwrap_or_default())
    }

    /// The family's structure from the cache, or read from the PIM (family, attributes,
    /// options) and cached. `None` when the family does not exist.
    pub async fn family_structure(
        &self,
        family: &str,
        deadline: Instant,
    ) -> Result<Option<Arc<FamilyStructure>>, AkeneoError> {
        match self.inner.structures.get(family).await {
            Ok(Some(s)) => return Ok(Some(s)),
            Ok(None) => {}
            // A broken cache must not stop the sync: read through to the PIM.
            Err(error) => tracing::warn!(%error, family, "Structure store read failed."),
        }
        let Some(structure) = self.fetch_structure(family, deadline).await? else {
            return Ok(None);
        };
        let structure = Arc::new(structure);
        if let Err(error) = self.inner.structures.put(Arc::clone(&structure)).await {
            tracing::warn!(%error, family, "Structure store write failed.");
        }
        Ok(Some(structure))
    }

    /// Forgets the cached structure of `family`; the next read goes to the PIM.
    pub async fn invalidate_structure(&self, family: &str) {
        if let Err(error) = self.inner.structures.invalidate(family).await {
            tracing::warn!(%error, family, "Structure store invalidation failed.");
        }
    }

    async fn fetch_structure(
        &self,
        family: &str,
        deadline: Instant,
    ) -> Result<Option<FamilyStructure>, AkeneoError> {
        let Some(family_json) = self.get_family(family, deadline).await? else {
            return Ok(None);
        };
        let attributes = self
            .list_attributes(family, deadline)
            .await?
            .unwrap_or_default();
        let mut options = std::collections::BTreeMap::new();
        for attribute in attributes.iter().filter(|a| a.kind.has_options()) {
            options.insert(
                attribute.code.clone(),
                self.list_options(family, &attribute.code, deadline).await?,
            );
        }
        Ok(Some(FamilyStructure {
            family: family_json,
            attributes,
            options,
        }))
    }

    /// Sends a raw JSON body (used by the bulk upsert).
    pub(crate) async fn send_json(
        &self,
        method: Method,
        url: Url,
        route: &'static str,
        body: Bytes,
        deadline: Instant,
    ) -> Result<Reply, AkeneoError> {
        self.call(method, url, route, Payload::Json(body), deadline)
            .await
    }
}

/// Akeneo's paginated envelope (`_embedded.items`, `_links.next.href`).
#[derive(serde::Deserialize)]
pub(crate) struct Page<T> {
    #[serde(rename = "_links", default)]
    links: Links,
    #[serde(rename = "_embedded")]
    pub embedded: Embedded<T>,
}

#[derive(serde::Deserialize, Default)]
struct Links {
    next: Option<Link>,
}

#[derive(serde::Deserialize)]
struct Link {
    href: String,
}

#[derive(serde::Deserialize)]
pub(crate) struct Embedded<T> {
    pub items: Vec<T>,
}

impl<T> Page<T> {
    pub fn next_url(&self) -> Result<Option<Url>, AkeneoError> {
        self.links
            .next
            .as_ref()
            .map(|l| {
                Url::parse(&l.href)
                    .map_err(|e| AkeneoError::Protocol(format!("bad next link {:?}: {e}", l.href)))
            })
            .transpose()
    }
}
