//! The consumer pipeline: turns a batch of queued change events into PIM writes.
//!
//! Steps (docs/consumer.md): decode (poison → dead letters) → coalesce per (dam, asset id),
//! newest event wins → re-read thin events from the DAM → version guard against the stored
//! state → map → skip unchanged content → ensure missing options → bulk upsert per family (one
//! structure refresh when the PIM names an unknown attribute or option) → record the applied
//! versions. DAM deletions apply the family's delete policy.
//!
//! Per-message problems never fail the batch: they end as done, dead-lettered (permanent,
//! with the reason) or retried (redelivered by SQS through the partial batch response).
//! Infrastructure failures (DAM, state store, PIM unreachable) retry the messages they touch;
//! the queue's redrive policy bounds how often.

mod media;
mod pim;
mod steps;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;
use tracing::Instrument;

use crate::akeneo::{AkeneoError, CallCounts, FamilyStructure, ItemFailure};
use crate::dam::{AssetSource, ChangeKind, DamAsset, DamKind, Fetched};
use crate::mapping::{DeletePolicy, MapOutcome, MappedAsset, Mapping};
use crate::queue::DeadLetters;
use crate::store::{AssetState, AssetStateStore, LeaseStore, is_newer};
use crate::time::now_ms;

pub use media::{HttpMedia, MediaError, MediaFile, MediaSource};
pub use pim::PimWriter;
pub use steps::{AssetChange, InboundMessage, Poison, coalesce, decode, event_version};

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
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            safety_margin: Duration::from_secs(3),
            fetch_batch: 100,
            writes_in_flight: 16,
            max_media_bytes: 50 * 1024 * 1024,
            media_in_flight: 2,
        }
    }
}

/// Counters of one batch. Asset counters count coalesced assets, not messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub messages: u64,
    /// Distinct (dam, asset id) pairs among the decodable messages.
    pub assets: u64,
    /// Written to the PIM.
    pub synced: u64,
    /// Newer version, same content as the PIM has: version recorded, no PIM call.
    pub skipped_unchanged: u64,
    /// No route or filtered out by the mapping, or a DAM deletion of an asset never synced.
    pub skipped_unmapped: u64,
    /// Not newer than the applied version (duplicate or out of order).
    pub stale: u64,
    /// DAM deletions handled by the family's delete policy.
    pub deleted: u64,
    /// Synced assets that were in the PIM under another family or code, whose old PIM asset
    /// got the old family's delete policy.
    pub moved: u64,
    /// Assets that left the mapping (no route or filtered out now): their PIM asset got the
    /// family's delete policy.
    pub left_mapping: u64,
    /// Media files downloaded from the DAM and uploaded to the PIM.
    pub media_uploaded: u64,
    /// Dead-lettered or left for redelivery.
    pub failed: u64,
    /// Undecodable messages (dead-lettered).
    pub poison: u64,
    /// Dead letters sent (one per poison message or dead asset, whatever its message count).
    pub dead_letters_sent: u64,
}

/// What to tell SQS about a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Message ids to report as batch item failures: SQS redelivers them.
    pub retry: Vec<String>,
    /// Message ids parked in the dead-letter queue, with the reason. Done for SQS.
    pub dead_lettered: Vec<(String, String)>,
    pub report: Report,
    /// PIM calls made for this batch (zero when the PIM adapter keeps no counters).
    pub pim: CallCounts,
    /// Per asset written to the PIM: ms from its DAM modified time to the recorded write.
    pub freshness_ms: Vec<u64>,
}

#[derive(Debug, Clone, Copy)]
enum Done {
    Synced,
    /// Synced under a new family or code, the old PIM asset retired.
    Moved,
    /// Left the mapping, the old PIM asset retired.
    LeftMapping,
    Unchanged,
    Unmapped,
    Stale,
    Deleted,
}

#[derive(Debug, Clone)]
enum Fate {
    Done(Done),
    Retry(String),
    Dead(String),
}

impl Fate {
    /// The `outcome` log field.
    fn name(&self) -> &'static str {
        match self {
            Fate::Done(Done::Synced) => "synced",
            Fate::Done(Done::Moved) => "moved",
            Fate::Done(Done::LeftMapping) => "left_mapping",
            Fate::Done(Done::Unchanged) => "skipped_unchanged",
            Fate::Done(Done::Unmapped) => "skipped_unmapped",
            Fate::Done(Done::Stale) => "stale",
            Fate::Done(Done::Deleted) => "deleted",
            Fate::Retry(_) => "retry",
            Fate::Dead(_) => "dead_letter",
        }
    }
}

/// A mapped asset waiting for its PIM write.
struct Pending {
    idx: usize,
    asset: DamAsset,
    mapped: MappedAsset,
    /// Media-file codes known for source URLs (stored, or uploaded by this batch).
    media: BTreeMap<String, String>,
    /// The (family, code) the asset had in the PIM when it differs from the new one: retired
    /// with the old family's delete policy once the new asset is written.
    replaces: Option<(String, String)>,
}

impl Pending {
    fn new(idx: usize, asset: DamAsset, mapped: MappedAsset, state: Option<&AssetState>) -> Self {
        let replaces = state
            .filter(|s| {
                !s.is_detached() && (s.family != mapped.family || s.pim_code != mapped.code)
            })
            .map(|s| (s.family.clone(), s.pim_code.clone()));
        Self {
            idx,
            asset,
            mapped,
            media: state.map(|s| s.media_files.clone()).unwrap_or_default(),
            replaces,
        }
    }
}

/// Per-batch working state.
struct Batch {
    changes: Vec<AssetChange>,
    fates: Vec<Option<Fate>>,
    /// The PIM family of each change, once known (for its log line).
    families: Vec<Option<String>>,
    freshness_ms: Vec<u64>,
    cutoff: Instant,
    deadline: Instant,
    media_uploaded: u64,
}

impl Batch {
    fn settle(&mut self, idx: usize, fate: Fate) {
        if self.fates[idx].is_none() {
            self.fates[idx] = Some(fate);
        }
    }

    fn open(&self, idx: usize) -> bool {
        self.fates[idx].is_none()
    }

    fn too_late(&self) -> bool {
        Instant::now() >= self.cutoff
    }
}

const TOO_LATE: &str = "deadline near: left for redelivery";

fn pim_fate(error: &AkeneoError) -> Fate {
    if error.is_retriable() {
        Fate::Retry(error.to_string())
    } else {
        Fate::Dead(error.to_string())
    }
}

fn item_fate(failure: &ItemFailure) -> Fate {
    if failure.retriable {
        Fate::Retry(failure.reason())
    } else {
        Fate::Dead(failure.reason())
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

/// What a lost lock race leaves for redelivery.
const LOCKED: &str = "another invocation is applying this asset: left for redelivery";

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
        let cutoff = deadline
            .checked_sub(self.settings.safety_margin)
            .unwrap_or(deadline);
        let mut batch = Batch {
            fates: vec![None; changes.len()],
            families: vec![None; changes.len()],
            freshness_ms: Vec::new(),
            changes,
            cutoff,
            deadline,
            media_uploaded: 0,
        };

        let current = self.read_dam(&mut batch).await;
        let (owner, held) = self.lock_assets(&mut batch).await;
        let states = self.load_states(&mut batch).await;

        let mut upserts: Vec<Pending> = Vec::new();
        // Same content as the PIM has: only the newer version is recorded, no PIM call.
        let mut unchanged: Vec<Pending> = Vec::new();
        let mut gone: Vec<(usize, AssetState)> = Vec::new();
        // Assets that left the mapping while something of theirs is in the PIM.
        let mut left: Vec<(usize, DamAsset, AssetState)> = Vec::new();
        let mut found: Vec<(usize, DamAsset)> = Vec::new();
        for (idx, current) in current.into_iter().enumerate() {
            if !batch.open(idx) {
                continue;
            }
            let change = &batch.changes[idx];
            let state = states.get(&(change.dam, change.asset_id.clone()));
            match current {
                Some(Fetched::Found(asset)) => {
                    if is_newer(asset.version, state) {
                        found.push((idx, asset));
                    } else {
                        batch.settle(idx, Fate::Done(Done::Stale));
                    }
                }
                Some(Fetched::Gone(_)) => {
                    let explicit = match (change.event.kind, change.event.version) {
                        (ChangeKind::Delete, Some(v)) => Some(v),
                        _ => None,
                    };
                    match state {
                        // Nothing of ours is in the PIM.
                        None => batch.settle(idx, Fate::Done(Done::Unmapped)),
                        Some(s) if explicit.is_some_and(|v| !is_newer(v, Some(s))) => {
                            batch.settle(idx, Fate::Done(Done::Stale));
                        }
                        Some(s) => {
                            batch.families[idx] = Some(s.family.clone());
                            gone.push((idx, s.clone()));
                        }
                    }
                }
                None => batch.settle(idx, Fate::Retry("no DAM state read".into())),
            }
        }

        if !found.is_empty() {
            let (structures, unavailable) = self.load_structures(&batch).await;
            for (idx, asset) in found {
                let outcome = self.mapping.map_asset(&asset.id, &asset.fields, |f| {
                    structures.get(f).map(|s| s.as_ref())
                });
                let change = &batch.changes[idx];
                let state = states.get(&(change.dam, change.asset_id.clone()));
                match &outcome {
                    MapOutcome::Mapped(m) => batch.families[idx] = Some(m.family.clone()),
                    MapOutcome::Invalid { family, .. } => {
                        batch.families[idx] = Some(family.clone());
                    }
                    MapOutcome::Skipped { .. } => {}
                }
                match outcome {
                    MapOutcome::Skipped { .. } => match state {
                        Some(s) if !s.is_detached() => left.push((idx, asset, s.clone())),
                        _ => batch.settle(idx, Fate::Done(Done::Unmapped)),
                    },
                    MapOutcome::Invalid { family, reason } => {
                        let fate = match unavailable.get(&family) {
                            Some(why) => Fate::Retry(why.clone()),
                            None => Fate::Dead(reason),
                        };
                        batch.settle(idx, fate);
                    }
                    MapOutcome::Mapped(mapped) => {
                        let same = state.is_some_and(|s| {
                            s.content_hash == mapped.content_hash
                                && s.family == mapped.family
                                && s.pim_code == mapped.code
                        });
                        let pending = Pending::new(idx, asset, mapped, state);
                        if same {
                            unchanged.push(pending);
                        } else {
                            upserts.push(pending);
                        }
                    }
                }
            }
        }

        self.record_all(&mut batch, unchanged, Done::Unchanged)
            .await;
        let upserts = self.upload_media(&mut batch, upserts).await;
        let upserts = self.create_missing_options(&mut batch, upserts).await;
        let mut by_family: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
        for p in upserts {
            by_family
                .entry(p.mapped.family.clone())
                .or_default()
                .push(p);
        }
        for (family, items) in by_family {
            self.upsert_family(&mut batch, &family, items).await;
        }
        for (idx, state) in gone {
            self.apply_deletion(&mut batch, idx, &state).await;
        }
        for (idx, asset, state) in left {
            self.leave_mapping(&mut batch, idx, &asset, &state).await;
        }

        self.unlock_assets(&owner, held).await;
        let mut outcome = self.finish(batch, poison, message_count).await;
        if let (Some(before), Some(after)) = (calls_before, self.pim.call_counts()) {
            outcome.pim = after.since(&before);
        }
        outcome
    }

    /// Takes the lease of every open change's asset; a change whose lease another invocation
    /// holds (or that cannot be read) is left for redelivery. Returns the owner and the names.
    async fn lock_assets(&self, batch: &mut Batch) -> (String, Vec<String>) {
        let owner = format!("consumer-{:016x}", fastrand::u64(..));
        let Some(locks) = &self.locks else {
            return (owner, Vec::new());
        };
        // Outlives the batch (so a crash only delays the asset), but not by much.
        let ttl = batch
            .deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(5))
            + Duration::from_secs(5);
        let wanted: Vec<(usize, String)> = (0..batch.changes.len())
            .filter(|&idx| batch.open(idx))
            .map(|idx| {
                let c = &batch.changes[idx];
                (idx, format!("asset#{}#{}", c.dam.as_str(), c.asset_id))
            })
            .collect();
        let results: Vec<(usize, String, Result<bool, String>)> =
            futures::stream::iter(wanted.into_iter().map(|(idx, name)| {
                let owner = owner.clone();
                async move {
                    let got = locks
                        .acquire(&name, &owner, ttl)
                        .await
                        .map_err(|e| e.to_string());
                    (idx, name, got)
                }
            }))
            .buffer_unordered(self.settings.writes_in_flight.max(1))
            .collect()
            .await;
        let mut held = Vec::new();
        for (idx, name, got) in results {
            match got {
                Ok(true) => held.push(name),
                Ok(false) => batch.settle(idx, Fate::Retry(LOCKED.into())),
                Err(e) => batch.settle(idx, Fate::Retry(format!("taking the asset's lease: {e}"))),
            }
        }
        (owner, held)
    }

    /// Releases the leases; one that fails to release expires with its TTL.
    async fn unlock_assets(&self, owner: &str, held: Vec<String>) {
        let Some(locks) = &self.locks else {
            return;
        };
        futures::stream::iter(held.into_iter().map(|name| async move {
            if let Err(e) = locks.release(&name, owner).await {
                tracing::warn!(lease = %name, error = %e, "Asset lease not released; it expires.");
            }
        }))
        .buffer_unordered(self.settings.writes_in_flight.max(1))
        .collect::<Vec<()>>()
        .await;
    }

    /// The current DAM state of every change: carried assets as they are, thin upserts
    /// re-read from their DAM, deletions as `Gone`. `None` where the change is settled.
    async fn read_dam(&self, batch: &mut Batch) -> Vec<Option<Fetched>> {
        let mut current: Vec<Option<Fetched>> = vec![None; batch.changes.len()];
        let mut thin: HashMap<DamKind, Vec<usize>> = HashMap::new();
        for (idx, change) in batch.changes.iter().enumerate() {
            match (&change.event.kind, &change.event.asset) {
                (ChangeKind::Delete, _) => {
                    current[idx] = Some(Fetched::Gone(change.asset_id.clone()));
                }
                (ChangeKind::Upsert, Some(asset)) => {
                    current[idx] = Some(Fetched::Found(asset.clone()));
                }
                (ChangeKind::Upsert, None) => thin.entry(change.dam).or_default().push(idx),
            }
        }
        for (dam, indices) in thin {
            let Some(source) = self.sources.get(&dam) else {
                for idx in indices {
                    batch.settle(
                        idx,
                        Fate::Dead(format!("no DAM source configured for {dam:?}")),
                    );
                }
                continue;
            };
            for chunk in indices.chunks(self.settings.fetch_batch.max(1)) {
                if batch.too_late() {
                    for &idx in chunk {
                        batch.settle(idx, Fate::Retry(TOO_LATE.into()));
                    }
                    continue;
                }
                let ids: Vec<String> = chunk
                    .iter()
                    .map(|&i| batch.changes[i].asset_id.clone())
                    .collect();
                let result = tokio::time::timeout_at(batch.cutoff, source.fetch(&ids)).await;
                let fetched = match result {
                    Ok(Ok(f)) if f.len() == ids.len() => f,
                    Ok(Ok(f)) => {
                        let why = format!("DAM answered {} results for {} ids", f.len(), ids.len());
                        for &idx in chunk {
                            batch.settle(idx, Fate::Retry(why.clone()));
                        }
                        continue;
                    }
                    // An unreachable or refusing DAM is infrastructure: redeliver, and let
                    // the queue's redrive policy bound the attempts.
                    Ok(Err(error)) => {
                        tracing::warn!(%error, ?dam, "DAM fetch failed.");
                        for &idx in chunk {
                            batch.settle(idx, Fate::Retry(error.to_string()));
                        }
                        continue;
                    }
                    Err(_) => {
                        for &idx in chunk {
                            batch.settle(idx, Fate::Retry(TOO_LATE.into()));
                        }
                        continue;
                    }
                };
                for (&idx, item) in chunk.iter().zip(fetched) {
                    // The DAM may lag behind its own webhook (eventual consistency): an older
                    // read than the event announced is retried, not applied.
                    let lagging = match (&item, batch.changes[idx].event.version) {
                        (Fetched::Found(asset), Some(hint)) => asset.version < hint,
                        _ => false,
                    };
                    if lagging {
                        batch.settle(
                            idx,
                            Fate::Retry("DAM returned an older version than the event".into()),
                        );
                        continue;
                    }
                    current[idx] = Some(item);
                }
            }
        }
        current
    }

    async fn load_states(&self, batch: &mut Batch) -> HashMap<(DamKind, String), AssetState> {
        let mut by_dam: HashMap<DamKind, Vec<usize>> = HashMap::new();
        for idx in 0..batch.changes.len() {
            if batch.open(idx) {
                by_dam.entry(batch.changes[idx].dam).or_default().push(idx);
            }
        }
        let mut states = HashMap::new();
        for (dam, indices) in by_dam {
            let ids: Vec<String> = indices
                .iter()
                .map(|&i| batch.changes[i].asset_id.clone())
                .collect();
            match self.store.get_many(dam, &ids).await {
                Ok(found) => {
                    states.extend(found.into_iter().map(|(id, s)| ((dam, id), s)));
                }
                Err(error) => {
                    tracing::warn!(%error, ?dam, "State read failed.");
                    for idx in indices {
                        batch.settle(idx, Fate::Retry(error.to_string()));
                    }
                }
            }
        }
        states
    }

    /// Structures of every family the mapping routes to (cached by the PIM adapter), and why
    /// the ones that could not be read are missing.
    async fn load_structures(
        &self,
        batch: &Batch,
    ) -> (
        HashMap<String, Arc<FamilyStructure>>,
        HashMap<String, String>,
    ) {
        let mut structures = HashMap::new();
        let mut unavailable = HashMap::new();
        for family in self.mapping.families() {
            // Bounded by the cutoff: a cached structure is still served, but no PIM read
            // starts in the safety margin.
            match self.pim.structure(family, batch.cutoff).await {
                Ok(Some(s)) => {
                    structures.insert(family.to_string(), s);
                }
                // Unknown to the PIM: mapping reports such assets Invalid, which is right.
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, family, "Structure read failed.");
                    if error.is_retriable() {
                        unavailable.insert(family.to_string(), error.to_string());
                    }
                }
            }
        }
        (structures, unavailable)
    }

    /// Creates the options the mapped assets use and the PIM lacks; assets whose options
    /// could not be created are settled and dropped.
    async fn create_missing_options(
        &self,
        batch: &mut Batch,
        upserts: Vec<Pending>,
    ) -> Vec<Pending> {
        let mut wanted: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for p in &upserts {
            for (attribute, code) in &p.mapped.missing_options {
                wanted
                    .entry((p.mapped.family.clone(), attribute.clone()))
                    .or_default()
                    .push(code.clone());
            }
        }
        let mut failed: HashMap<(String, String), Fate> = HashMap::new();
        for ((family, attribute), codes) in wanted {
            let fate = if batch.too_late() {
                Some(Fate::Retry(TOO_LATE.into()))
            } else {
                self.pim
                    .create_options(&family, &attribute, &codes, batch.deadline)
                    .await
                    .err()
                    .map(|e| pim_fate(&e))
            };
            if let Some(fate) = fate {
                failed.insert((family, attribute), fate);
            }
        }
        let mut kept = Vec::with_capacity(upserts.len());
        for p in upserts {
            let fate = p
                .mapped
                .missing_options
                .iter()
                .find_map(|(a, _)| failed.get(&(p.mapped.family.clone(), a.clone())));
            match fate {
                Some(fate) => batch.settle(p.idx, fate.clone()),
                None => kept.push(p),
            }
        }
        kept
    }

    /// Bulk upsert of one family's assets, with one structure refresh and retry for items the
    /// PIM refused over an attribute or option it does not know (our cached structure was
    /// stale).
    async fn upsert_family(&self, batch: &mut Batch, family: &str, items: Vec<Pending>) {
        let mut items = items;
        let mut refreshed = false;
        while !items.is_empty() {
            if batch.too_late() {
                for p in items {
                    batch.settle(p.idx, Fate::Retry(TOO_LATE.into()));
                }
                return;
            }
            let assets: Vec<_> = items.iter().map(|p| p.mapped.asset.clone()).collect();
            let outcomes = self.pim.upsert(family, &assets, batch.deadline).await;
            let mut written = Vec::new();
            let mut stale_structure = Vec::new();
            for (p, outcome) in items.into_iter().zip(outcomes) {
                match outcome {
                    Ok(_) => written.push(p),
                    Err(f) if f.unknown_structure && !refreshed => stale_structure.push(p),
                    Err(f) => batch.settle(p.idx, item_fate(&f)),
                }
            }
            let written = self.retire_replaced(batch, written).await;
            self.record_all(batch, written, Done::Synced).await;
            if stale_structure.is_empty() {
                return;
            }
            refreshed = true;
            items = self.remap(batch, family, stale_structure).await;
        }
    }

    /// Re-reads a family's structure from the PIM and maps the assets again against it.
    async fn remap(&self, batch: &mut Batch, family: &str, items: Vec<Pending>) -> Vec<Pending> {
        self.pim.forget_structure(family).await;
        let structure = if batch.too_late() {
            Err(Fate::Retry(TOO_LATE.into()))
        } else {
            match self.pim.structure(family, batch.deadline).await {
                Ok(Some(s)) => Ok(s),
                Ok(None) => Err(Fate::Dead(format!(
                    "asset family `{family}` no longer exists"
                ))),
                Err(e) => Err(pim_fate(&e)),
            }
        };
        let structure = match structure {
            Ok(s) => s,
            Err(fate) => {
                for p in items {
                    batch.settle(p.idx, fate.clone());
                }
                return Vec::new();
            }
        };
        let mut again = Vec::new();
        for p in items {
            let outcome = self.mapping.map_asset(&p.asset.id, &p.asset.fields, |f| {
                (f == family).then_some(structure.as_ref())
            });
            match outcome {
                MapOutcome::Mapped(mapped) if mapped.family == family => again.push(Pending {
                    idx: p.idx,
                    asset: p.asset,
                    mapped,
                    media: p.media,
                    replaces: p.replaces,
                }),
                MapOutcome::Mapped(_) => {
                    batch.settle(p.idx, Fate::Retry("asset changed family on remap".into()));
                }
                MapOutcome::Skipped { .. } => batch.settle(p.idx, Fate::Done(Done::Unmapped)),
                MapOutcome::Invalid { reason, .. } => batch.settle(p.idx, Fate::Dead(reason)),
            }
        }
        let again = self.upload_media(batch, again).await;
        self.create_missing_options(batch, again).await
    }

    /// Records the applied versions. `Stale` is fine: a newer version is already stored. A
    /// failed write retries the message: the PIM write is idempotent.
    async fn record_all(&self, batch: &mut Batch, items: Vec<Pending>, done: Done) {
        let results: Vec<(usize, Fate, Option<u64>)> = futures::stream::iter(items)
            .map(|p| async move {
                let state = applied_state(&p);
                let done = match done {
                    Done::Synced if p.replaces.is_some() => Done::Moved,
                    other => other,
                };
                let fate = match self.store.record_applied(&state).await {
                    Ok(_) => Fate::Done(done),
                    Err(error) => Fate::Retry(error.to_string()),
                };
                // DAM modified time → PIM write, measured when the write is recorded.
                let fresh = matches!((&fate, done), (Fate::Done(_), Done::Synced)).then(|| {
                    u64::try_from(state.updated_at_ms - p.asset.version.modified_at_ms).unwrap_or(0)
                });
                (p.idx, fate, fresh)
            })
            .buffer_unordered(self.settings.writes_in_flight.max(1))
            .collect()
            .await;
        for (idx, fate, fresh) in results {
            if batch.open(idx)
                && let Some(ms) = fresh
            {
                batch.freshness_ms.push(ms);
            }
            batch.settle(idx, fate);
        }
    }

    /// Applies the family's delete policy to an asset the DAM no longer has, then forgets its
    /// state (a later re-creation in the DAM is then written in full).
    async fn apply_deletion(&self, batch: &mut Batch, idx: usize, state: &AssetState) {
        let pim_result = if state.is_detached() {
            // It left the mapping earlier: its PIM asset was already retired.
            Ok(())
        } else {
            self.retire(batch, &state.family, &state.pim_code).await
        };
        let fate = match pim_result {
            Err(fate) => fate,
            Ok(()) => match self.store.delete(state.dam, &state.asset_id).await {
                Ok(()) => Fate::Done(Done::Deleted),
                Err(error) => Fate::Retry(error.to_string()),
            },
        };
        batch.settle(idx, fate);
    }

    /// Applies `family`'s delete policy to the PIM asset `code`: what a DAM deletion does, and
    /// what happens to an asset the DAM still has but the mapping no longer sends there.
    async fn retire(&self, batch: &Batch, family: &str, code: &str) -> Result<(), Fate> {
        match self.mapping.delete_policy(family) {
            DeletePolicy::Ignore => Ok(()),
            _ if batch.too_late() => Err(Fate::Retry(TOO_LATE.into())),
            DeletePolicy::Delete => self
                .pim
                .delete(family, code, batch.deadline)
                .await
                .map_err(|e| pim_fate(&e)),
            DeletePolicy::Clear(_) => match self.mapping.clear_values(family, code) {
                None => Ok(()),
                Some(asset) => {
                    let outcome = self
                        .pim
                        .upsert(family, &[asset], batch.deadline)
                        .await
                        .into_iter()
                        .next();
                    match outcome {
                        Some(Ok(_)) => Ok(()),
                        Some(Err(f)) => Err(item_fate(&f)),
                        None => Err(Fate::Retry("the PIM gave no outcome".into())),
                    }
                }
            },
        }
    }

    /// Retires the old PIM asset of written assets that changed family or code. An asset whose
    /// old asset could not be retired is settled (its state is not recorded, so a redelivery
    /// writes it again, which is idempotent, and retries the retirement).
    async fn retire_replaced(&self, batch: &mut Batch, written: Vec<Pending>) -> Vec<Pending> {
        let mut kept = Vec::with_capacity(written.len());
        for p in written {
            let Some((family, code)) = &p.replaces else {
                kept.push(p);
                continue;
            };
            match self.retire(batch, family, code).await {
                Ok(()) => kept.push(p),
                Err(fate) => {
                    let fate = match fate {
                        Fate::Dead(why) => Fate::Dead(format!(
                            "written as {}/{}, but retiring the old asset {family}/{code} failed: {why}",
                            p.mapped.family, p.mapped.code
                        )),
                        other => other,
                    };
                    batch.settle(p.idx, fate);
                }
            }
        }
        kept
    }

    /// An asset the mapping no longer sends to the PIM (no route, filtered out): its PIM asset
    /// gets its family's delete policy, and a detached state records the version so older
    /// events stay stale.
    async fn leave_mapping(
        &self,
        batch: &mut Batch,
        idx: usize,
        asset: &DamAsset,
        state: &AssetState,
    ) {
        if let Err(fate) = self.retire(batch, &state.family, &state.pim_code).await {
            batch.settle(idx, fate);
            return;
        }
        let detached = AssetState {
            dam: asset.dam,
            asset_id: asset.id.clone(),
            applied_version: asset.version,
            content_hash: String::new(),
            family: String::new(),
            pim_code: String::new(),
            updated_at_ms: now_ms(),
            media_files: BTreeMap::new(),
        };
        let fate = match self.store.record_applied(&detached).await {
            Ok(_) => Fate::Done(Done::LeftMapping),
            Err(error) => Fate::Retry(error.to_string()),
        };
        batch.settle(idx, fate);
    }

    /// Downloads and uploads the media files the assets need and puts the returned codes into
    /// their values. A file whose source URL already has a code (stored from an earlier write,
    /// or shared with another asset of the batch) is not transferred again. Assets whose files
    /// could not be transferred are settled and dropped.
    async fn upload_media(&self, batch: &mut Batch, items: Vec<Pending>) -> Vec<Pending> {
        let needed: BTreeSet<String> = items
            .iter()
            .flat_map(|p| {
                p.mapped
                    .uploads
                    .iter()
                    .filter(|u| !p.media.contains_key(&u.source_url))
                    .map(|u| u.source_url.clone())
            })
            .collect();
        let (cutoff, deadline) = (batch.cutoff, batch.deadline);
        let max_bytes = self.settings.max_media_bytes;
        let transferred: HashMap<String, Result<String, Fate>> = futures::stream::iter(needed)
            .map(|url| async move {
                if Instant::now() >= cutoff {
                    return (url, Err(Fate::Retry(TOO_LATE.into())));
                }
                let file = match self.media.download(&url, max_bytes, cutoff).await {
                    Ok(file) => file,
                    Err(e) if e.is_retriable() => return (url, Err(Fate::Retry(e.to_string()))),
                    Err(e) => return (url, Err(Fate::Dead(e.to_string()))),
                };
                let code = self
                    .pim
                    .upload_media(file, deadline)
                    .await
                    .map_err(|e| pim_fate(&e));
                (url, code)
            })
            .buffer_unordered(self.settings.media_in_flight.max(1))
            .collect()
            .await;
        batch.media_uploaded += transferred.values().filter(|r| r.is_ok()).count() as u64;
        let mut kept = Vec::with_capacity(items.len());
        'items: for mut p in items {
            for upload in std::mem::take(&mut p.mapped.uploads) {
                let code = match p.media.get(&upload.source_url) {
                    Some(code) => code.clone(),
                    None => match transferred.get(&upload.source_url) {
                        Some(Ok(code)) => {
                            p.media.insert(upload.source_url.clone(), code.clone());
                            code.clone()
                        }
                        Some(Err(fate)) => {
                            let fate = match fate {
                                Fate::Dead(why) => Fate::Dead(format!(
                                    "media_file attribute `{}`: {why}",
                                    upload.attribute
                                )),
                                other => other.clone(),
                            };
                            batch.settle(p.idx, fate);
                            continue 'items;
                        }
                        None => {
                            batch.settle(p.idx, Fate::Retry("media file not transferred".into()));
                            continue 'items;
                        }
                    },
                };
                p.mapped.complete_upload(&upload, code);
                p.mapped.uploads.push(upload);
            }
            kept.push(p);
        }
        kept
    }

    /// Sends dead letters and builds the outcome. A dead letter that cannot be sent is
    /// retried instead, so no message is acknowledged without being handled.
    ///
    /// Logs one line per asset (and per poison message) inside a span carrying the DAM id,
    /// family and outcome; the dead-letter send runs in the same span.
    async fn finish(&self, batch: Batch, poison: Vec<Poison>, messages: u64) -> BatchOutcome {
        let mut outcome = BatchOutcome {
            freshness_ms: batch.freshness_ms,
            ..BatchOutcome::default()
        };
        let report = &mut outcome.report;
        report.messages = messages;
        report.assets = batch.changes.len() as u64;
        report.media_uploaded = batch.media_uploaded;
        let mut letters: Vec<Letter> = Vec::new();
        for p in poison {
            report.poison += 1;
            let span = tracing::info_span!(
                "message",
                message_id = %p.message.id,
                outcome = "poison",
            );
            span.in_scope(|| tracing::warn!(reason = %p.reason, "Undecodable message."));
            letters.push(Letter {
                source_id: p.message.id.clone(),
                message_ids: vec![p.message.id],
                body: p.message.body,
                reason: p.reason,
                span,
            });
        }
        let settled = batch
            .changes
            .into_iter()
            .zip(batch.fates)
            .zip(batch.families);
        for ((change, fate), family) in settled {
            let fate = fate.unwrap_or_else(|| Fate::Retry("no outcome".into()));
            let span = tracing::info_span!(
                "asset",
                dam = change.dam.as_str(),
                dam_id = %change.asset_id,
                family = family.as_deref().unwrap_or(""),
                outcome = fate.name(),
                messages = change.message_ids.len(),
                message_id = %change.source_id,
            );
            let _entered = span.enter();
            match fate {
                Fate::Done(done) => {
                    match done {
                        Done::Synced => report.synced += 1,
                        Done::Moved => {
                            report.synced += 1;
                            report.moved += 1;
                        }
                        Done::LeftMapping => report.left_mapping += 1,
                        Done::Unchanged => report.skipped_unchanged += 1,
                        Done::Unmapped => report.skipped_unmapped += 1,
                        Done::Stale => report.stale += 1,
                        Done::Deleted => report.deleted += 1,
                    }
                    tracing::info!("Asset processed.");
                }
                Fate::Retry(reason) => {
                    report.failed += 1;
                    tracing::warn!(%reason, "Left for redelivery.");
                    outcome.retry.extend(change.message_ids);
                }
                Fate::Dead(reason) => {
                    report.failed += 1;
                    tracing::warn!(%reason, "Dead-lettering.");
                    letters.push(Letter {
                        source_id: change.source_id,
                        message_ids: change.message_ids,
                        body: change.body,
                        reason,
                        span: span.clone(),
                    });
                }
            }
        }
        let sent: Vec<(Letter, bool)> = futures::stream::iter(letters)
            .map(|letter| {
                let span = letter.span.clone();
                async move {
                    let result = self
                        .dead_letters
                        .send(&letter.source_id, &letter.body, &letter.reason)
                        .await;
                    if let Err(error) = &result {
                        tracing::error!(%error, "Dead letter not sent; left for redelivery.");
                    }
                    (letter, result.is_ok())
                }
                .instrument(span)
            })
            .buffer_unordered(self.settings.writes_in_flight.max(1))
            .collect()
            .await;
        for (letter, ok) in sent {
            if ok {
                outcome.report.dead_letters_sent += 1;
                let reason = letter.reason;
                outcome.dead_lettered.extend(
                    letter
                        .message_ids
                        .into_iter()
                        .map(|id| (id, reason.clone())),
                );
            } else {
                outcome.retry.extend(letter.message_ids);
            }
        }
        outcome
    }
}

/// A dead letter to send: one per poison message or per dead asset.
struct Letter {
    source_id: String,
    message_ids: Vec<String>,
    body: String,
    reason: String,
    /// The asset's (or poison message's) log span.
    span: tracing::Span,
}

/// The state to record for a written (or unchanged) asset. Only the media codes of the files
/// it uses now are kept, so the map does not grow with every file the asset ever had.
fn applied_state(p: &Pending) -> AssetState {
    let (asset, mapped) = (&p.asset, &p.mapped);
    let media_files = mapped
        .uploads
        .iter()
        .filter_map(|u| {
            p.media
                .get(&u.source_url)
                .map(|c| (u.source_url.clone(), c.clone()))
        })
        .collect();
    AssetState {
        dam: asset.dam,
        asset_id: asset.id.clone(),
        applied_version: asset.version,
        content_hash: mapped.content_hash.clone(),
        family: mapped.family.clone(),
        pim_code: mapped.code.clone(),
        updated_at_ms: now_ms(),
        media_files,
    }
}

#[cfg(test)]
mod tests;
