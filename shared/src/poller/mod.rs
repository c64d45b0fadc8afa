//! The reconciliation poller: lists DAM changes since a cursor and enqueues them to the same
//! queue as the webhooks, so changes whose webhook was lost still reach the PIM.
//!
//! Cursor rules (docs/poller.md, reliability.md §4):
//! - list `modified >= cursor − lookback` (inclusive bound: ties and late-indexed changes are
//!   re-read; the consumer's version guard makes the duplicates harmless);
//! - move the cursor only after every page up to it is enqueued, to the newest modified time
//!   seen, capped at `poll start − safety lag` (the signpost that covers the DAM's clock);
//! - write it conditionally on the version read, and never backwards: a conflict stops the run.
//!
//! A lease keeps two runs (a scheduler retry overlapping the next schedule) from working at once.
//! A backfill is the same path from the beginning of time under its own cursor, which also keeps
//! the DAM's page token after each enqueued page so a timed-out run resumes where it stopped.
//!
//! Files: `run.rs` is one run (window, page loop, settle), `cursor.rs` the cursor write,
//! `report.rs` what a run reports, `task.rs` what a Lambda invocation asks for, `sweep.rs` the
//! deletion sweep.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::akeneo::AkeneoError;

use crate::dam::{AssetSource, ChangeEvent, ChangeKind, DamAsset, DamKind, Version};
use crate::queue::ChangeQueue;
use crate::store::{
    AssetState, AssetStateStore, Clock, CursorStore, LeaseStore, system_clock, with_lease,
};
use crate::time::epoch_ms;

mod settings;
mod sweep;

pub use sweep::{SweepError, SweepPorts, SweepReport, SweepSettings, Sweeper};

pub use settings::{PollKeys, PollerSettings, SettingsError};

mod cursor;
mod report;
mod run;
mod task;

pub use report::{PollError, PollMetrics, RunReport, StopReason};
pub use task::{Task, UnknownMode};

/// One page of PIM asset codes and where the page after it starts (`None` on the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodePage {
    pub codes: Vec<String>,
    pub next: Option<String>,
}

/// The PIM side of the sweep: the asset codes of a family, page by page.
pub trait PimCodes: Send + Sync {
    /// Pages from the start of the family's list, or from `from`, a `next` of an earlier page.
    fn codes<'a>(
        &'a self,
        family: &'a str,
        from: Option<String>,
        deadline: tokio::time::Instant,
    ) -> BoxStream<'a, Result<CodePage, AkeneoError>>;
}

/// Which listing a run walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Changes since the incremental cursor (minus the lookback).
    Incremental,
    /// Every asset from the beginning of time, resumable by page token.
    Backfill,
}

/// The poller, built from ports.
pub struct Poller {
    source: Arc<dyn AssetSource>,
    queue: Arc<dyn ChangeQueue>,
    cursors: Arc<dyn CursorStore>,
    leases: Arc<dyn LeaseStore>,
    settings: PollerSettings,
    clock: Clock,
    metrics: Arc<PollMetrics>,
    applied: Option<Arc<dyn AssetStateStore>>,
}

impl Poller {
    pub fn new(
        source: Arc<dyn AssetSource>,
        queue: Arc<dyn ChangeQueue>,
        cursors: Arc<dyn CursorStore>,
        leases: Arc<dyn LeaseStore>,
        settings: PollerSettings,
    ) -> Self {
        Self {
            source,
            queue,
            cursors,
            leases,
            settings,
            clock: system_clock(),
            metrics: Arc::default(),
            applied: None,
        }
    }

    /// Leaves out of each page the changes the consumer has nothing to do for
    /// ([`should_queue`]): versions already applied, deletions already retired, and versions it
    /// dead-lettered (parked). Every run lists its lookback window again, so without this each
    /// change is enqueued once per run that sees it, and a failing asset is dead-lettered once
    /// per run. A failed state read enqueues the whole page.
    pub fn with_applied_filter(mut self, states: Arc<dyn AssetStateStore>) -> Self {
        self.applied = Some(states);
        self
    }

    /// The clock read before each DAM call to honour the deadline (tests inject one).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn settings(&self) -> &PollerSettings {
        &self.settings
    }

    pub fn metrics(&self) -> &Arc<PollMetrics> {
        &self.metrics
    }

    /// One incremental run: `now` is the poll start (the cap's reference), `deadline` when the
    /// invocation must have returned.
    pub async fn run(&self, now: SystemTime, deadline: SystemTime) -> Result<RunReport, PollError> {
        self.run_mode(Mode::Incremental, now, deadline).await
    }

    /// One backfill run: resumes the saved listing or starts from the beginning of time.
    pub async fn backfill(
        &self,
        now: SystemTime,
        deadline: SystemTime,
    ) -> Result<RunReport, PollError> {
        self.run_mode(Mode::Backfill, now, deadline).await
    }

    /// One run of `mode` under the lease named after its cursor; `stop: lease_held` when
    /// another run holds it.
    pub async fn run_mode(
        &self,
        mode: Mode,
        now: SystemTime,
        deadline: SystemTime,
    ) -> Result<RunReport, PollError> {
        PollMetrics::bump(&self.metrics.runs, 1);
        let name = match mode {
            Mode::Incremental => self.settings.cursor_name.clone(),
            Mode::Backfill => self.settings.backfill_cursor_name.clone(),
        };
        let owner = format!("{}-{:016x}", epoch_ms(now), fastrand::u64(..));
        let mut report = RunReport {
            mode,
            cursor_name: name.clone(),
            stop: StopReason::LeaseHeld,
            dam_calls: 0,
            pages: 0,
            events_enqueued: 0,
            already_applied: 0,
            cursor_before_ms: None,
            cursor_after_ms: None,
            resumed: false,
            resume_saved: false,
        };
        let leased = with_lease(
            self.leases.as_ref(),
            &name,
            &owner,
            self.settings.lease_ttl,
            || self.run_leased(mode, &name, now, deadline, &mut report),
        )
        .await?;
        let Some(result) = leased else {
            PollMetrics::bump(&self.metrics.lease_held, 1);
            tracing::info!(cursor = %name, "Another run holds the lease; exiting.");
            return Ok(report);
        };
        match result {
            Ok(()) => {
                tracing::info!(
                    cursor = %name,
                    stop = ?report.stop,
                    pages = report.pages,
                    events = report.events_enqueued,
                    already_applied = report.already_applied,
                    dam_calls = report.dam_calls,
                    cursor_after_ms = report.cursor_after_ms,
                    "Poll run finished."
                );
                Ok(report)
            }
            Err(e) => {
                match &e {
                    PollError::Dam { .. } => PollMetrics::bump(&self.metrics.dam_errors, 1),
                    PollError::Queue { .. } => PollMetrics::bump(&self.metrics.queue_errors, 1),
                    PollError::State(_) => {}
                }
                // `metric` names the counter for log-based metrics and alarms ("DAM down for k
                // runs"); the counters stay in `PollMetrics` for an exporter.
                let metric = match &e {
                    PollError::Dam { .. } => "PollerDamErrors",
                    PollError::Queue { .. } => "PollerQueueErrors",
                    PollError::State(_) => "PollerStateErrors",
                };
                tracing::error!(
                    metric,
                    value = 1,
                    cursor = %name,
                    error = %e,
                    retriable = e.is_retriable(),
                    dam_errors = PollMetrics::get(&self.metrics.dam_errors),
                    "Poll run failed; the cursor keeps the enqueued progress."
                );
                Err(e)
            }
        }
    }

    /// The events a page of the listing asks for: an upsert per listed live asset, a `Delete`
    /// (with the listing's version) per asset the DAM lists as deleted, each left out when the
    /// stored state says the consumer has nothing to do ([`should_queue`]). Two batched reads per
    /// DAM and page: the states, then the parked versions of what is left. Without the filter, or
    /// when the states cannot be read, every listed asset is queued. Returns the events and how
    /// many listed assets were left out.
    async fn page_events(&self, assets: &[DamAsset], now_ms: i64) -> (Vec<ChangeEvent>, u64) {
        let Some(states) = &self.applied else {
            let events: Vec<ChangeEvent> = assets.iter().map(|a| event_of(a, now_ms)).collect();
            return (events, 0);
        };
        let mut events = Vec::with_capacity(assets.len());
        let mut by_dam: Vec<(DamKind, Vec<&DamAsset>)> = Vec::new();
        for a in assets {
            match by_dam.iter_mut().find(|(d, _)| *d == a.dam) {
                Some((_, list)) => list.push(a),
                None => by_dam.push((a.dam, vec![a])),
            }
        }
        for (dam, list) in by_dam {
            let ids: Vec<String> = list.iter().map(|a| a.id.clone()).collect();
            let applied = match states.get_many(dam, &ids).await {
                Ok(applied) => applied,
                Err(error) => {
                    tracing::warn!(%error, "Applied versions unreadable; enqueueing the whole page.");
                    events.extend(list.into_iter().map(|a| event_of(a, now_ms)));
                    continue;
                }
            };
            let wanted: Vec<&DamAsset> = list
                .into_iter()
                .filter(|a| should_queue(a, applied.get(&a.id), None))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let ids: Vec<String> = wanted.iter().map(|a| a.id.clone()).collect();
            let parked = states.parked_many(dam, &ids).await.unwrap_or_else(|error| {
                tracing::warn!(%error, "Parked versions unreadable; enqueueing them all.");
                HashMap::new()
            });
            events.extend(
                wanted
                    .into_iter()
                    .filter(|a| should_queue(a, applied.get(&a.id), parked.get(&a.id).copied()))
                    .map(|a| event_of(a, now_ms)),
            );
        }
        let skipped = (assets.len() - events.len()) as u64;
        (events, skipped)
    }
}

/// Whether the DAM lists `asset` as deleted: the generic contract's `"deleted": true` (the
/// other DAMs do not list deleted assets).
pub fn listed_as_deleted(asset: &DamAsset) -> bool {
    asset.dam == DamKind::Generic
        && asset
            .fields
            .get("deleted")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
}

/// The event a listed asset becomes: a `Delete` at the listing's version when the DAM lists it
/// deleted, else an upsert carrying the asset.
fn event_of(asset: &DamAsset, now_ms: i64) -> ChangeEvent {
    if !listed_as_deleted(asset) {
        return ChangeEvent::upsert_of(asset, now_ms);
    }
    ChangeEvent {
        dam: asset.dam,
        asset_id: asset.id.clone(),
        kind: ChangeKind::Delete,
        version: Some(asset.version),
        asset: None,
        dedupe_key: format!(
            "{}:deleted",
            ChangeEvent::upsert_key(asset.dam, &asset.id, asset.version)
        ),
        received_at_ms: now_ms,
    }
}

/// Whether the poller queues a listed asset, given its stored state and parked version:
/// - never the exact version the consumer dead-lettered (`parked`): it would only be parked
///   again; a newer version is queued;
/// - a deletion when a live state exists that is not newer (no state: nothing of ours is in
///   the PIM; a tombstone: already retired);
/// - an upsert when no state exists, when its version is newer, when the state is a tombstone
///   (the DAM lists the asset live again: the consumer confirms with a read), or when the
///   version is equal and the asset's fingerprint differs from the state's non-empty
///   `source_hash` (a same-second edit).
pub fn should_queue(asset: &DamAsset, state: Option<&AssetState>, parked: Option<Version>) -> bool {
    if parked == Some(asset.version) {
        return false;
    }
    match (state, listed_as_deleted(asset)) {
        (None, deleted) => !deleted,
        (Some(s), true) => !s.deleted && s.applied_version <= asset.version,
        (Some(s), false) => {
            s.deleted
                || s.is_superseded_by(asset.version)
                || (s.applied_version == asset.version
                    && !s.source_hash.is_empty()
                    && asset.fingerprint() != s.source_hash)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(seq: i64, title: &str, deleted: bool) -> DamAsset {
        DamAsset {
            dam: DamKind::Generic,
            id: "a".into(),
            version: Version {
                modified_at_ms: 1_000,
                seq,
            },
            fields: serde_json::json!({ "id": "a", "title": title, "deleted": deleted }),
        }
    }

    fn applied(seq: i64, source_hash: &str, deleted: bool) -> AssetState {
        AssetState {
            dam: DamKind::Generic,
            asset_id: "a".into(),
            applied_version: Version {
                modified_at_ms: 1_000,
                seq,
            },
            content_hash: "h".into(),
            family: "packshot".into(),
            pim_code: "a".into(),
            updated_at_ms: 0,
            media_files: Default::default(),
            deleted,
            source_hash: source_hash.into(),
        }
    }

    #[test]
    fn upserts_are_queued_when_new_newer_revived_or_edited_in_the_same_second() {
        let a = listed(2, "A", false);
        assert!(should_queue(&a, None, None));
        assert!(should_queue(&a, Some(&applied(1, "", false)), None));
        assert!(!should_queue(&a, Some(&applied(2, "", false)), None));
        assert!(!should_queue(&a, Some(&applied(3, "", false)), None));
        // Listed live over a tombstone, even an older version: the consumer re-reads.
        assert!(should_queue(&a, Some(&applied(3, "", true)), None));
        // Same version: the fingerprint tells an edit from a repeat.
        assert!(!should_queue(
            &a,
            Some(&applied(2, &a.fingerprint(), false)),
            None
        ));
        let edited = listed(2, "B", false);
        assert!(should_queue(
            &edited,
            Some(&applied(2, &a.fingerprint(), false)),
            None
        ));
    }

    #[test]
    fn deletions_are_queued_over_live_states_only() {
        let gone = listed(3, "A", true);
        assert!(listed_as_deleted(&gone));
        assert!(!should_queue(&gone, None, None));
        assert!(should_queue(&gone, Some(&applied(2, "", false)), None));
        assert!(!should_queue(&gone, Some(&applied(4, "", false)), None));
        assert!(!should_queue(&gone, Some(&applied(3, "", true)), None));
        let event = event_of(&gone, 7);
        assert_eq!(event.kind, ChangeKind::Delete);
        assert_eq!(event.version, Some(gone.version));
        assert_eq!(event.asset, None);
        assert_eq!(event.dedupe_key, "generic:a:1000.3:deleted");
        // Only the generic contract's flag counts.
        let bynder = DamAsset {
            dam: DamKind::Bynder,
            ..gone.clone()
        };
        assert!(!listed_as_deleted(&bynder));
    }

    #[test]
    fn the_parked_version_is_not_queued_again_a_newer_one_is() {
        let parked = Some(Version {
            modified_at_ms: 1_000,
            seq: 2,
        });
        assert!(!should_queue(&listed(2, "A", false), None, parked));
        assert!(!should_queue(
            &listed(2, "A", true),
            Some(&applied(1, "", false)),
            parked
        ));
        assert!(should_queue(&listed(3, "A", false), None, parked));
        assert!(should_queue(
            &listed(3, "A", false),
            Some(&applied(1, "", false)),
            parked
        ));
    }
}
