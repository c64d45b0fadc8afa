//! Akeneo PIM Asset Manager client.
//!
//! A module per role: `config` (settings and limits), `auth` (OAuth tokens), `transport`
//! (pacing and retries), `client` (authenticated calls, structure), `assets` (bulk upsert,
//! list, delete), `media` (uploads, options), `structure` (the structure cache port),
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
pub use structure::{MemoryStructureStore, StructureStore};
pub use transport::CallCounts;
