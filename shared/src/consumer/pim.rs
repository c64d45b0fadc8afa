//! The PIM write port of the consumer, with the Akeneo client as its adapter.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::time::Instant;

use super::media::MediaFile;
use crate::akeneo::{AkeneoClient, AkeneoError, Asset, CallCounts, FamilyStructure, ItemOutcome};

/// What the consumer needs from the PIM. Errors are [`AkeneoError`], the PIM boundary's one
/// error type, which knows whether a later attempt can succeed.
#[async_trait]
pub trait PimWriter: Send + Sync {
    /// The family's structure (cached by the adapter); `None` when the family does not exist.
    /// Past `deadline` only a cached structure is served: no PIM read starts.
    async fn structure(
        &self,
        family: &str,
        deadline: Instant,
    ) -> Result<Option<Arc<FamilyStructure>>, AkeneoError>;

    /// Forgets the cached structure so the next [`PimWriter::structure`] reads the PIM.
    async fn forget_structure(&self, family: &str);

    /// Creates the option codes of `attribute` the PIM lacks.
    async fn create_options(
        &self,
        family: &str,
        attribute: &str,
        codes: &[String],
        deadline: Instant,
    ) -> Result<(), AkeneoError>;

    /// Creates or updates assets of one family; one outcome per input asset, in order.
    async fn upsert(&self, family: &str, assets: &[Asset], deadline: Instant) -> Vec<ItemOutcome>;

    /// Deletes an asset; an asset already gone is not an error.
    async fn delete(&self, family: &str, code: &str, deadline: Instant) -> Result<(), AkeneoError>;

    /// Uploads a file and returns the media-file code to write as a `media_file` value.
    async fn upload_media(&self, file: MediaFile, deadline: Instant)
    -> Result<String, AkeneoError>;

    /// Cumulative HTTP call counters for metrics, when the adapter keeps them.
    fn call_counts(&self) -> Option<CallCounts> {
        None
    }
}

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
