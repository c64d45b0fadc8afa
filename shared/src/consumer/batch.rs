//! The per-batch working state and what a batch ends as: the fate of each asset, the counters
//! and the outcome handed to SQS.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::AssetChange;
use crate::akeneo::{AkeneoError, CallCounts, ItemFailure};
use crate::dam::{DamAsset, Version};
use crate::mapping::MappedAsset;
use crate::store::AssetState;

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
    /// Message ids to report as batch item failures, with the reason: SQS redelivers them.
    pub retry: Vec<(String, String)>,
    /// Message ids parked in the dead-letter queue, with the reason. Done for SQS.
    pub dead_lettered: Vec<(String, String)>,
    pub report: Report,
    /// PIM calls made for this batch (zero when the PIM adapter keeps no counters).
    pub pim: CallCounts,
    /// Per asset written to the PIM: ms from its DAM modified time to the recorded write.
    pub freshness_ms: Vec<u64>,
}

impl BatchOutcome {
    /// The ids of the messages to redeliver, in order.
    pub fn retry_ids(&self) -> Vec<&str> {
        self.retry.iter().map(|(id, _)| id.as_str()).collect()
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Done {
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
pub(super) enum Fate {
    Done(Done),
    Retry(String),
    Dead(String),
}

impl Fate {
    /// The `outcome` log field.
    pub(super) fn name(&self) -> &'static str {
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
pub(super) struct Pending {
    pub(super) idx: usize,
    pub(super) asset: DamAsset,
    pub(super) mapped: MappedAsset,
    /// Media-file codes known for source URLs (stored, or uploaded by this batch).
    pub(super) media: BTreeMap<String, String>,
    /// The (family, code) the asset had in the PIM when it differs from the new one: retired
    /// with the old family's delete policy once the new asset is written.
    pub(super) replaces: Option<(String, String)>,
    /// Nothing of the asset is in the PIM yet as far as the state says (no state, a tombstone,
    /// or it left the mapping): its family and code are recorded before the PIM write.
    pub(super) unrecorded: bool,
}

impl Pending {
    pub(super) fn new(
        idx: usize,
        asset: DamAsset,
        mapped: MappedAsset,
        state: Option<&AssetState>,
    ) -> Self {
        let replaces = state
            .filter(|s| {
                !s.is_detached()
                    && !s.deleted
                    && (s.family != mapped.family || s.pim_code != mapped.code)
            })
            .map(|s| (s.family.clone(), s.pim_code.clone()));
        Self {
            unrecorded: state.is_none_or(|s| s.deleted || s.is_detached()),
            idx,
            asset,
            mapped,
            media: state
                .filter(|s| !s.deleted)
                .map(|s| s.media_files.clone())
                .unwrap_or_default(),
            replaces,
        }
    }
}

/// Per-batch working state.
pub(super) struct Batch {
    pub(super) changes: Vec<AssetChange>,
    pub(super) fates: Vec<Option<Fate>>,
    /// The PIM family of each change, once known (for its log line).
    pub(super) families: Vec<Option<String>>,
    /// The DAM version of each change, once read (what a dead letter parks).
    pub(super) versions: Vec<Option<Version>>,
    pub(super) freshness_ms: Vec<u64>,
    pub(super) cutoff: Instant,
    pub(super) deadline: Instant,
    pub(super) media_uploaded: u64,
    /// Changes whose PIM write may still land (it timed out): their leases are kept.
    pub(super) unknown_outcome: Vec<usize>,
    /// Changes with a media file its server no longer has, and why: resolved by a DAM read
    /// (see `Consumer::resolve_missing_media`).
    pub(super) media_missing: Vec<(usize, String)>,
}

impl Batch {
    /// No call starts after `deadline - safety_margin`.
    pub(super) fn new(
        changes: Vec<AssetChange>,
        deadline: Instant,
        safety_margin: Duration,
    ) -> Self {
        let cutoff = deadline.checked_sub(safety_margin).unwrap_or(deadline);
        Self {
            fates: vec![None; changes.len()],
            families: vec![None; changes.len()],
            versions: vec![None; changes.len()],
            freshness_ms: Vec::new(),
            changes,
            cutoff,
            deadline,
            media_uploaded: 0,
            unknown_outcome: Vec::new(),
            media_missing: Vec::new(),
        }
    }

    pub(super) fn settle(&mut self, idx: usize, fate: Fate) {
        if self.fates[idx].is_none() {
            self.fates[idx] = Some(fate);
        }
    }

    pub(super) fn open(&self, idx: usize) -> bool {
        self.fates[idx].is_none()
    }

    pub(super) fn too_late(&self) -> bool {
        Instant::now() >= self.cutoff
    }
}

pub(super) const TOO_LATE: &str = "deadline near: left for redelivery";

/// A failed whole PIM request (structure read, option write, upload, delete). Besides what
/// Akeneo calls retriable, refused credentials or rights (401/403 after the client's token
/// replay: a token that expired again, a credential rotation) and answers that break the
/// protocol (a proxy's page) say nothing about the asset: retried, and parked with the reason
/// on the last delivery, instead of dead-lettering every asset that meets them.
pub(super) fn pim_fate(error: &AkeneoError) -> Fate {
    let not_about_the_asset = matches!(
        error,
        AkeneoError::Credentials(_) | AkeneoError::Protocol(_)
    ) || matches!(error.status(), Some(401 | 403));
    if error.is_retriable() || not_about_the_asset {
        Fate::Retry(error.to_string())
    } else {
        Fate::Dead(error.to_string())
    }
}

/// A refused item is dead-lettered only when the PIM refused that item: a whole request that
/// failed (revoked credentials, missing rights, a proxy's HTML page, an outage) says nothing
/// about the item and is retried; the client has already replayed a 401 with a new token.
pub(super) fn item_fate(failure: &ItemFailure) -> Fate {
    if failure.retriable || failure.whole_request {
        Fate::Retry(failure.reason())
    } else {
        Fate::Dead(failure.reason())
    }
}
