//! The Akeneo client as the adapter of the domain's PIM ports: [`PimWriter`] for the consumer
//! and [`PimCodes`] for the deletion sweep. The ports are declared where they are used; the
//! implementations live with the client they call.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::time::Instant;

use super::{AkeneoClient, AkeneoError, Asset, CallCounts, FamilyStructure, ItemOutcome};
use crate::consumer::{MediaFile, PimWriter};
use crate::poller::{CodePage, PimCodes};

#[async_trait]
impl PimWriter for AkeneoClient {
    async fn structure(
        &self,
        family: &str,
        deadline: Instant,
    ) -> Result<Option<Arc<FamilyStructure>>, AkeneoError> {
        if Instant::now() >= deadline {
            return match self.structure_store().get(family).await {
                Ok(Some(s)) => Ok(Some(s)),
                _ => Err(AkeneoError::Deadline(format!(
                    "reading the structure of {family}"
                ))),
            };
        }
        self.family_structure(family, deadline).await
    }

    async fn forget_structure(&self, family: &str) {
        self.invalidate_structure(family).await;
    }

    async fn create_options(
        &self,
        family: &str,
        attribute: &str,
        codes: &[String],
        deadline: Instant,
    ) -> Result<(), AkeneoError> {
        self.ensure_options(family, attribute, codes, deadline)
            .await
            .map(|_| ())
    }

    async fn upsert(&self, family: &str, assets: &[Asset], deadline: Instant) -> Vec<ItemOutcome> {
        self.upsert_assets(family, assets, deadline).await.outcomes
    }

    async fn delete(&self, family: &str, code: &str, deadline: Instant) -> Result<(), AkeneoError> {
        self.delete_asset(family, code, deadline).await.map(|_| ())
    }

    async fn upload_media(
        &self,
        file: MediaFile,
        deadline: Instant,
    ) -> Result<String, AkeneoError> {
        self.upload_media_file(&file.file_name, &file.mime, file.bytes, deadline)
            .await
    }

    fn call_counts(&self) -> Option<CallCounts> {
        Some(AkeneoClient::call_counts(self))
    }
}

impl PimCodes for AkeneoClient {
    fn codes<'a>(
        &'a self,
        family: &'a str,
        from: Option<String>,
        deadline: tokio::time::Instant,
    ) -> BoxStream<'a, Result<CodePage, AkeneoError>> {
        let start = match from {
            None => Ok(self.assets_url(family)),
            Some(u) => url::Url::parse(&u)
                .map_err(|e| AkeneoError::Protocol(format!("saved sweep position {u:?}: {e}"))),
        };
        match start {
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            Ok(url) => self
                .asset_pages(url, deadline)
                .map(|page| {
                    page.map(|(items, next)| CodePage {
                        codes: items.into_iter().map(|a| a.code).collect(),
                        next: next.map(String::from),
                    })
                })
                .boxed(),
        }
    }
}
