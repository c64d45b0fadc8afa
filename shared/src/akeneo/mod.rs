//! Akeneo PIM Asset Manager client.
//!
//! A module per role: `config` (settings and limits), `auth` (OAuth tokens), `transport`
//! (pacing and retries), `client` (authenticated calls, structure), `assets` (bulk upsert,
//! list, delete), `media` (uploads, options), `structure` (the in-memory structure cache; the port is below),
//! `model` (JSON shapes), `error` (the boundary's error type), `ports` (the client as the
//! adapter of the consumer's and the sweep's PIM ports).

mod assets;
mod auth;
mod client;
pub mod config;
mod error;
mod media;
pub mod model;
mod ports;
pub mod structure;
mod transport;

pub use assets::{FieldError, ItemFailure, ItemOutcome, UpsertReport, Written};
pub use client::AkeneoClient;
pub use config::{AkeneoConfig, ConfigError, Limits, PimSettings, RetryPolicy};
pub use error::AkeneoError;
pub use model::{
    Asset, AssetAttribute, AssetFamily, AssetValue, AttributeOption, AttributeType,
    FamilyStructure, StoredAsset,
};
pub use structure::MemoryStructureStore;
pub use transport::CallCounts;

use std::sync::Arc;

use async_trait::async_trait;

use crate::store::StateError;

/// Keeps family structures for a while.
#[async_trait]
pub trait StructureStore: Send + Sync {
    /// The cached structure, if present and still fresh.
    async fn get(&self, family: &str) -> Result<Option<Arc<FamilyStructure>>, StateError>;
    async fn put(&self, structure: Arc<FamilyStructure>) -> Result<(), StateError>;
    /// Forgets a family (its structure changed under us: a 422 named an unknown attribute).
    async fn invalidate(&self, family: &str) -> Result<(), StateError>;
}
