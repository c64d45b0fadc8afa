//! The consumer pipeline: turns a batch of queued change events into PIM writes.
//!
//! Steps (docs/consumer.md): decode (poison → dead letters) → coalesce per (dam, asset id),
//! newest event wins → re-read thin events from the DAM → version guard against the stored
//! state → map → skip unchanged content → ensure missing options → bulk upsert per family (one
//! structure refresh when the PIM names an unknown attribute or option) → record the applied
//! versions. DAM deletions apply the family's delete policy.
//!
//! Per-message problems never fail the batch: they end as done, dead-lettered (permanent,
//! with the reason) or retried (redelivered by SQS through the partial batch response, with
//! the reason). Infrastructure failures (DAM, state store, PIM unreachable) retry the messages
//! they touch; the queue's redrive policy bounds how often.
//!
//! Ports the pipeline works through:
//! - [`PimWriter`] (declared here): the PIM writes; adapter `AkeneoClient` (`akeneo/ports.rs`);
//! - [`MediaSource`] (declared here): the bytes of `media_file` values; adapter [`HttpMedia`];
//! - [`AssetSource`]: DAM reads (`dam/`);
//! - [`AssetStateStore`], [`LeaseStore`]: applied versions and per-asset leases (`store/`);
//! - [`DeadLetters`]: the consumer's dead-letter queue (`queue/`).
//!
//! One file per step: `read` (DAM, states, structures), `locks`, `plan` (version guard and
//! mapping), `media` (file transfers), `write` (options, bulk upserts, records), `retire`
//! (deletions, moves, assets leaving the mapping) and `outcome` (log lines, dead letters, the
//! SQS answer); `batch` holds the working state, `steps` the pure decode and coalesce.

mod batch;
mod http_media;
mod locks;
mod media;
mod outcome;
mod plan;
mod read;
mod retire;
mod settings;
mod steps;
#[cfg(test)]
pub(crate) mod test_logs;
mod write;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::akeneo::{AkeneoError, Asset, CallCounts, FamilyStructure, ItemOutcome};
use crate::dam::{AssetSource, DamKind};
use crate::mapping::Mapping;
use crate::queue::DeadLetters;
use crate::store::{AssetStateStore, LeaseStore};

use batch::{Batch, Done};
pub use batch::{BatchOutcome, Report};
pub use http_media::HttpMedia;
pub use media::{MediaError, MediaFile};
pub use settings::ConsumerKeys;
pub use steps::{AssetChange, InboundMessage, Poison, coalesce, decode, event_version};

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

/// Where the consumer gets the bytes of a `media_file` value.
#[async_trait]
pub trait MediaSource: Send + Sync {
    /// Downloads `url`, refusing bodies over `max_bytes`; gives up at `deadline`.
    async fn download(
        &self,
        url: &str,
        max_bytes: u64,
        deadline: Instant,
    ) -> Result<MediaFile, MediaError>;
}

/// Tuning of the pipeline.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// No PIM or DAM call starts later than this before the deadline, so the function can
    /// still answer with its partial batch response before Lambda kills it.
    pub safety_margin: Duration,
    /// Ids per DAM fetch call.
    pub fetch_batch: usize,
    /// State writes and dead-letter sends in flight at once.
    pub writes_in_flight: usize,
    /// Largest file a `media_file` value may download; a larger one is dead-lettered.
    pub max_media_bytes: u64,
    /// Media files downloaded and uploaded at once (each holds up to `max_media_bytes`).
    pub media_in_flight: usize,
    /// The queue's delivery limit (SQS `maxReceiveCount`, the embedded queue's
    /// `max_receives`). A message still failing on its last delivery is dead-lettered by the
    /// consumer with its reason, instead of by the redrive policy without one.
    pub max_receives: u32,
    /// Deliveries during which a DAM read older than its notification is retried; from then
    /// on the read is applied (the poller brings any later version).
    pub lag_receives: u32,
    /// How long an asset's lease is kept after a PIM write whose outcome is unknown (it timed
    /// out): the abandoned request may still land on the PIM, and a newer write must not
    /// land before it. Longer than the PIM's own request time limit.
    pub unknown_outcome_hold: Duration,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            safety_margin: Duration::from_secs(3),
            fetch_batch: 100,
            writes_in_flight: 16,
            max_media_bytes: 50 * 1024 * 1024,
            media_in_flight: 2,
            // infra/template.yaml: the queue's maxReceiveCount.
            max_receives: 8,
            lag_receives: 3,
            // Akeneo runs on PHP-FPM behind a web server whose request timeouts are typically
            // 30–60 s; twice the larger one.
            unknown_outcome_hold: Duration::from_secs(120),
        }
    }
}

/// The pipeline, built from its ports.
pub struct Consumer {
    sources: HashMap<DamKind, Arc<dyn AssetSource>>,
    store: Arc<dyn AssetStateStore>,
    mapping: Arc<Mapping>,
    pim: Arc<dyn PimWriter>,
    dead_letters: Arc<dyn DeadLetters>,
    media: Arc<dyn MediaSource>,
    settings: ConsumerSettings,
    locks: Option<Arc<dyn LeaseStore>>,
}

impl Consumer {
    pub fn new(
        store: Arc<dyn AssetStateStore>,
        mapping: Arc<Mapping>,
        pim: Arc<dyn PimWriter>,
        dead_letters: Arc<dyn DeadLetters>,
    ) -> Self {
        Self {
            sources: HashMap::new(),
            store,
            mapping,
            pim,
            dead_letters,
            media: Arc::new(HttpMedia::new()),
            settings: ConsumerSettings::default(),
            locks: None,
        }
    }

    /// Serialises the apply of each asset across invocations with a per-asset lease, held from
    /// the version check to the recorded version. SQS delivers duplicates to concurrent
    /// invocations; without it an older version's PATCH can land after a newer one's while
    /// both conditional records succeed in the other order, leaving the PIM behind the
    /// recorded version. An asset whose lease is held elsewhere is left for redelivery.
    pub fn with_asset_locks(mut self, locks: Arc<dyn LeaseStore>) -> Self {
        self.locks = Some(locks);
        self
    }

    /// Replaces where `media_file` values are downloaded from (default: [`HttpMedia`]).
    pub fn with_media(mut self, media: Arc<dyn MediaSource>) -> Self {
        self.media = media;
        self
    }

    /// Adds the DAM source for `source.dam()` (replacing one already set).
    pub fn with_source(mut self, source: Arc<dyn AssetSource>) -> Self {
        self.sources.insert(source.dam(), source);
        self
    }

    pub fn with_settings(mut self, settings: ConsumerSettings) -> Self {
        self.settings = settings;
        self
    }

    pub fn settings(&self) -> &ConsumerSettings {
        &self.settings
    }

    /// Processes one batch. Never fails: every message ends done, dead-lettered or retried.
    pub async fn process(&self, messages: Vec<InboundMessage>, deadline: Instant) -> BatchOutcome {
        let message_count = messages.len() as u64;
        let calls_before = self.pim.call_counts();
        let (changes, poison) = coalesce(messages);
        let mut batch = Batch::new(changes, deadline, self.settings.safety_margin);

        let mut current = self.read_dam(&mut batch).await;
        let (owner, held) = self.lock_assets(&mut batch).await;
        let states = self.load_states(&mut batch).await;
        self.reread_carried(&mut batch, &mut current, &states).await;
        let plan = self.plan(&mut batch, current, &states).await;
        self.record_all(&mut batch, plan.unchanged, Done::Unchanged)
            .await;
        let upserts = self.upload_media(&mut batch, plan.upserts).await;
        let upserts = self.create_missing_options(&mut batch, upserts).await;
        let upserts = self.record_intents(&mut batch, upserts).await;
        self.upsert_all(&mut batch, upserts).await;
        self.resolve_missing_media(&mut batch, &states).await;
        for (idx, state) in plan.gone {
            self.apply_deletion(&mut batch, idx, state.as_ref()).await;
        }
        for (idx, asset, state) in plan.left {
            self.leave_mapping(&mut batch, idx, &asset, &state).await;
        }
        self.unlock_assets(&batch, &owner, held).await;

        let mut outcome = self.finish(batch, poison, message_count).await;
        if let (Some(before), Some(after)) = (calls_before, self.pim.call_counts()) {
            outcome.pim = after.since(&before);
        }
        outcome
    }
}

#[cfg(test)]
mod tests;
