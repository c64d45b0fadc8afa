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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::dam::{
    AssetSource, ChangeEvent, ChangeKind, DamAsset, DamError, DamKind, PageToken, Version,
};
use crate::queue::{ChangeQueue, QueueError};
use crate::store::{
    Advance, AssetStateStore, Clock, Cursor, CursorStore, LeaseStore, StateError, is_newer,
    system_clock,
};
use crate::time::{duration_ms, epoch_ms, from_epoch_ms};

mod settings;
mod sweep;

pub use sweep::{CodePage, PimCodes, SweepError, SweepPorts, SweepReport, SweepSettings, Sweeper};

pub use settings::{PollerSettings, SettingsError};

/// Which listing a run walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Changes since the incremental cursor (minus the lookback).
    Incremental,
    /// Every asset from the beginning of time, resumable by page token.
    Backfill,
}

impl Mode {
    /// The mode an invocation asks for: `{"mode":"backfill"}` or `{"mode":"incremental"}`;
    /// anything without a `mode` (an EventBridge scheduled event, `{}`) is incremental.
    pub fn from_event(event: &serde_json::Value) -> Result<Self, UnknownMode> {
        match event.get("mode") {
            None | Some(serde_json::Value::Null) => Ok(Mode::Incremental),
            Some(m) => match m.as_str() {
                Some("incremental") => Ok(Mode::Incremental),
                Some("backfill") => Ok(Mode::Backfill),
                _ => Err(UnknownMode(m.to_string())),
            },
        }
    }
}

/// What one invocation of the poller Lambda does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// A poll run of this mode.
    Poll(Mode),
    /// The deletion sweep (its own schedule: `{"mode":"sweep"}`).
    Sweep,
}

impl Task {
    /// `{"mode":"sweep"}` is the sweep; anything else is read by [`Mode::from_event`].
    pub fn from_event(event: &serde_json::Value) -> Result<Self, UnknownMode> {
        match event.get("mode").and_then(serde_json::Value::as_str) {
            Some("sweep") => Ok(Task::Sweep),
            _ => Mode::from_event(event).map(Task::Poll),
        }
    }
}

/// An invocation asked for a mode the poller does not have.
#[derive(Debug, thiserror::Error)]
#[error("unknown poller mode {0}; expected \"incremental\", \"backfill\" or \"sweep\"")]
pub struct UnknownMode(pub String);

/// Why a run stopped. Only [`StopReason::Complete`] means the listing reached its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum StopReason {
    /// The listing was read to its last page.
    Complete,
    /// Another run holds the lease; this one did nothing.
    LeaseHeld,
    /// The per-run DAM call budget was spent; the next run resumes.
    Budget,
    /// Too close to the Lambda deadline to start another DAM call.
    Deadline,
    /// The DAM said to slow down; the next scheduled run resumes.
    RateLimited { retry_after_ms: Option<u64> },
    /// Another writer moved the cursor first; this run's write was refused.
    CursorConflict,
    /// The DAM or the queue failed; see the error returned with this report.
    Failed,
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    pub mode: Mode,
    pub cursor_name: String,
    pub stop: StopReason,
    /// DAM listing calls made (pages requested).
    pub dam_calls: u32,
    pub pages: u32,
    pub events_enqueued: u64,
    /// Listed changes not enqueued because the PIM already holds that version or a newer one
    /// (see [`Poller::with_applied_filter`]).
    #[serde(default)]
    pub already_applied: u64,
    /// Cursor position (ms since the epoch) before and after the run.
    pub cursor_before_ms: Option<i64>,
    pub cursor_after_ms: Option<i64>,
    /// Whether this run continued a listing an earlier run left unfinished.
    pub resumed: bool,
    /// Whether a resume point was left for the next run (the listing is unfinished).
    pub resume_saved: bool,
}

/// A failed run. Progress enqueued before the failure is already recorded in the cursor;
/// `report` says how far the run got.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("DAM listing failed: {source}")]
    Dam {
        source: DamError,
        report: Box<RunReport>,
    },
    #[error("enqueueing a page failed: {source}")]
    Queue {
        source: QueueError,
        report: Box<RunReport>,
    },
    #[error("state store failed: {0}")]
    State(#[from] StateError),
}

impl PollError {
    /// Whether running again soon may succeed (DAM down, throttled queue or store), as opposed
    /// to a configuration problem (bad credentials, missing queue or table).
    pub fn is_retriable(&self) -> bool {
        match self {
            PollError::Dam { source, .. } => source.is_retriable(),
            PollError::Queue { source, .. } => source.is_retriable(),
            PollError::State(e) => e.is_retriable(),
        }
    }

    /// How far the run got before failing, when it got past the lease.
    pub fn report(&self) -> Option<&RunReport> {
        match self {
            PollError::Dam { report, .. } | PollError::Queue { report, .. } => Some(report),
            PollError::State(_) => None,
        }
    }
}

/// Counters for the poller's metrics, cumulative over the poller's life (one Lambda container).
#[derive(Debug, Default)]
pub struct PollMetrics {
    pub runs: AtomicU64,
    pub lease_held: AtomicU64,
    /// Runs stopped by a DAM error: the alarm "DAM down for k runs" watches this.
    pub dam_errors: AtomicU64,
    pub queue_errors: AtomicU64,
    pub cursor_conflicts: AtomicU64,
    /// Change events enqueued; readable while a run is in progress (progress bars).
    pub events_enqueued: AtomicU64,
    /// Deletions enqueued by the deletion sweep.
    pub deletions_enqueued: AtomicU64,
}

impl PollMetrics {
    fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
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

    /// Leaves out of each page the changes whose version the consumer has already applied
    /// (one batched state read per page). Every run lists its lookback window again, so
    /// without this each change is enqueued once per run that sees it, and the consumer only
    /// then drops the repeats as stale; the outcome is the same, the queue traffic is not.
    /// A failed state read enqueues the whole page.
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
        if !self
            .leases
            .acquire(&name, &owner, self.settings.lease_ttl)
            .await?
        {
            PollMetrics::bump(&self.metrics.lease_held, 1);
            tracing::info!(cursor = %name, "Another run holds the lease; exiting.");
            return Ok(report);
        }
        let result = self
            .run_leased(mode, &name, now, deadline, &mut report)
            .await;
        // A failed release is not fatal: the lease expires after its TTL.
        if let Err(e) = self.leases.release(&name, &owner).await {
            tracing::warn!(cursor = %name, error = %e, "Lease release failed; it will expire.");
        }
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

    /// The listed assets the consumer has not applied at their version (all of them without
    /// the filter or when the state cannot be read).
    async fn not_yet_applied<'a>(&self, assets: &'a [DamAsset]) -> Vec<&'a DamAsset> {
        let Some(states) = &self.applied else {
            return assets.iter().collect();
        };
        let mut keep = Vec::with_capacity(assets.len());
        let mut by_dam: Vec<(DamKind, Vec<&DamAsset>)> = Vec::new();
        for a in assets {
            match by_dam.iter_mut().find(|(d, _)| *d == a.dam) {
                Some((_, list)) => list.push(a),
                None => by_dam.push((a.dam, vec![a])),
            }
        }
        for (dam, list) in by_dam {
            let ids: Vec<String> = list.iter().map(|a| a.id.clone()).collect();
            match states.get_many(dam, &ids).await {
                // The consumer's own rule, so the poller leaves out exactly what it would skip.
                Ok(applied) => keep.extend(
                    list.into_iter()
                        .filter(|a| is_newer(a.version, applied.get(&a.id))),
                ),
                Err(error) => {
                    tracing::warn!(%error, "Applied versions unreadable; enqueueing the whole page.");
                    keep.extend(list);
                }
            }
        }
        keep
    }

    async fn run_leased(
        &self,
        mode: Mode,
        name: &str,
        now: SystemTime,
        deadline: SystemTime,
        report: &mut RunReport,
    ) -> Result<(), PollError> {
        let stored = self.cursors.get(name).await?;
        report.cursor_before_ms = stored.as_ref().map(|c| c.position_ms);
        report.cursor_after_ms = report.cursor_before_ms;
        let mut state = CursorState {
            position_ms: stored.as_ref().map(|c| c.position_ms),
            version: stored.as_ref().map(|c| c.version),
            resume: stored
                .as_ref()
                .and_then(|c| c.page_token.as_deref())
                .and_then(|t| Resume::decode(name, t)),
        };
        let lookback = duration_ms(self.settings.lookback);
        // A resumed listing keeps the signpost of the run that started it: a change indexed
        // late while the listing was in progress is then still inside the next lookback.
        let (since, resume, cap_ms) = match (&state.resume, mode) {
            (Some(r), _) => (None, Some(PageToken(r.token.clone())), r.cap_ms),
            (None, Mode::Incremental) => (
                state
                    .position_ms
                    .map(|p| from_epoch_ms(p.saturating_sub(lookback))),
                None,
                epoch_ms(now).saturating_sub(duration_ms(self.settings.safety_lag)),
            ),
            (None, Mode::Backfill) => (None, None, i64::MAX),
        };
        report.resumed = resume.is_some();
        let deadline_ms =
            epoch_ms(deadline).saturating_sub(duration_ms(self.settings.deadline_margin));
        tracing::info!(
            cursor = %name,
            ?mode,
            since_ms = since.map(epoch_ms),
            resuming = report.resumed,
            "Poll run started."
        );

        let mut pages = self
            .source
            .list_changed(since, resume, self.settings.page_size);
        // Newest modified time among enqueued assets, and where the listing stands after them.
        let mut max_seen: Option<i64> = None;
        let mut next: Option<PageToken> = None;
        let mut enqueued_any = false;
        let mut failure: Option<PollError> = None;
        report.stop = loop {
            if report.dam_calls >= self.settings.max_dam_calls {
                break StopReason::Budget;
            }
            if (self.clock)() >= deadline_ms {
                break StopReason::Deadline;
            }
            report.dam_calls += 1;
            let page = match pages.next().await {
                None => break StopReason::Complete,
                Some(Ok(page)) => page,
                Some(Err(DamError::RateLimited { retry_after })) => {
                    break StopReason::RateLimited {
                        retry_after_ms: retry_after.map(|d| duration_ms(d) as u64),
                    };
                }
                Some(Err(e)) => {
                    failure = Some(PollError::Dam {
                        source: e,
                        report: Box::new(report.clone()),
                    });
                    break StopReason::Failed;
                }
            };
            let fresh = self.not_yet_applied(&page.assets).await;
            report.already_applied += (page.assets.len() - fresh.len()) as u64;
            let events: Vec<ChangeEvent> = fresh
                .into_iter()
                .map(|a| change_event(a, epoch_ms(now)))
                .collect();
            if !events.is_empty()
                && let Err(e) = self.queue.enqueue(&events).await
            {
                failure = Some(PollError::Queue {
                    source: e,
                    report: Box::new(report.clone()),
                });
                break StopReason::Failed;
            }
            enqueued_any = true;
            report.pages += 1;
            report.events_enqueued += events.len() as u64;
            PollMetrics::bump(&self.metrics.events_enqueued, events.len() as u64);
            let page_max = page.assets.iter().map(|a| a.version.modified_at_ms).max();
            max_seen = max_seen.max(page_max);
            next = page.next;
            tracing::info!(
                cursor = %name,
                page = report.pages,
                assets = events.len(),
                total = report.events_enqueued,
                newest_ms = page_max,
                "Page enqueued."
            );
            // Backfill saves its place after every page: a crash or timeout resumes after it.
            if mode == Mode::Backfill
                && !self
                    .commit(name, &mut state, max_seen, cap_ms, next.as_ref(), report)
                    .await?
            {
                break StopReason::CursorConflict;
            }
            if next.is_none() {
                break StopReason::Complete;
            }
        };

        if mode == Mode::Incremental
            && report.stop != StopReason::CursorConflict
            && (enqueued_any || report.stop == StopReason::Complete)
        {
            // Stopped mid-listing: keep the token so the next run continues instead of
            // re-reading the lookback window (which could exceed one run's budget).
            let token = if report.stop == StopReason::Complete {
                None
            } else {
                next.clone()
                    .or_else(|| state.resume.as_ref().map(|r| PageToken(r.token.clone())))
            };
            if !self
                .commit(name, &mut state, max_seen, cap_ms, token.as_ref(), report)
                .await?
            {
                report.stop = StopReason::CursorConflict;
            }
        }
        // A resume point the DAM refuses outright (e.g. a token from an older adapter) would
        // fail every later run: drop it so the next run restarts the listing. Re-reading is
        // safe; the position is kept.
        if let Some(PollError::Dam { source, .. }) = &failure
            && !source.is_retriable()
            && report.resumed
            && !enqueued_any
        {
            tracing::warn!(cursor = %name, error = %source, "DAM refused the resume point; the next run restarts the listing.");
            self.commit(name, &mut state, None, cap_ms, None, report)
                .await?;
        }
        report.resume_saved = state.resume.is_some();
        if report.stop == StopReason::CursorConflict {
            PollMetrics::bump(&self.metrics.cursor_conflicts, 1);
        }
        match failure {
            Some(PollError::Dam { source, .. }) => Err(PollError::Dam {
                source,
                report: Box::new(report.clone()),
            }),
            Some(PollError::Queue { source, .. }) => Err(PollError::Queue {
                source,
                report: Box::new(report.clone()),
            }),
            Some(other) => Err(other),
            None => Ok(()),
        }
    }

    /// Conditional cursor write of `min(max_seen, cap)` (never below the stored position) and
    /// the listing's resume point. Skipped when nothing would change. `false`: another writer
    /// got there first; the caller stops rather than overwrite it.
    async fn commit(
        &self,
        name: &str,
        state: &mut CursorState,
        max_seen: Option<i64>,
        cap_ms: i64,
        next: Option<&PageToken>,
        report: &mut RunReport,
    ) -> Result<bool, PollError> {
        let position_ms = match (state.position_ms, max_seen.map(|m| m.min(cap_ms))) {
            (Some(p), Some(seen)) => p.max(seen),
            (Some(p), None) => p,
            (None, Some(seen)) => seen,
            // Nothing seen and no cursor yet: nothing to remember.
            (None, None) => return Ok(true),
        };
        let resume = next.map(|t| Resume {
            cap_ms,
            token: t.0.clone(),
        });
        if state.position_ms == Some(position_ms) && state.resume == resume {
            return Ok(true);
        }
        let new = Cursor {
            position_ms,
            page_token: resume.as_ref().map(Resume::encode),
            version: 0,
        };
        match self.cursors.advance(name, new, state.version).await? {
            Advance::Written { version } => {
                state.version = Some(version);
                state.position_ms = Some(position_ms);
                state.resume = resume;
                report.cursor_after_ms = Some(position_ms);
                Ok(true)
            }
            Advance::Conflict { current } => {
                tracing::warn!(
                    cursor = %name,
                    ours = position_ms,
                    theirs = current.as_ref().map(|c| c.position_ms),
                    "Cursor moved by another writer; stopping without overwriting it."
                );
                Ok(false)
            }
        }
    }
}

#[derive(Debug)]
struct CursorState {
    position_ms: Option<i64>,
    version: Option<u64>,
    resume: Option<Resume>,
}

/// Where an unfinished listing resumes, stored in the cursor's `page_token` as JSON: the DAM's
/// page token and the signpost (cap) of the run that started the listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Resume {
    cap_ms: i64,
    token: String,
}

impl Resume {
    fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// An unreadable token (written by another version) restarts the listing: re-reading is
    /// safe, skipping is not.
    fn decode(name: &str, raw: &str) -> Option<Self> {
        match serde_json::from_str(raw) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(cursor = %name, error = %e, "Unreadable resume token; restarting the listing.");
                None
            }
        }
    }
}

/// The event the poller enqueues: an upsert carrying the full asset, so the consumer can skip
/// re-reading it, keyed by DAM, id and version so duplicates of the webhook path collapse.
pub fn change_event(asset: &DamAsset, received_at_ms: i64) -> ChangeEvent {
    ChangeEvent {
        dam: asset.dam,
        asset_id: asset.id.clone(),
        kind: ChangeKind::Upsert,
        version: Some(asset.version),
        asset: Some(asset.clone()),
        dedupe_key: dedupe_key(asset.dam, &asset.id, asset.version),
        received_at_ms,
    }
}

/// `dam:id:modified_at_ms.seq`.
pub fn dedupe_key(dam: DamKind, id: &str, version: Version) -> String {
    format!(
        "{}:{id}:{}.{}",
        dam.as_str(),
        version.modified_at_ms,
        version.seq
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_events_poll_and_backfill_is_asked_for() {
        let scheduled = serde_json::json!({
            "version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}
        });
        assert_eq!(Mode::from_event(&scheduled).unwrap(), Mode::Incremental);
        let backfill = serde_json::json!({ "mode": "backfill" });
        assert_eq!(Mode::from_event(&backfill).unwrap(), Mode::Backfill);
        assert!(Mode::from_event(&serde_json::json!({ "mode": "full" })).is_err());
        assert_eq!(
            Task::from_event(&serde_json::json!({ "mode": "sweep" })).unwrap(),
            Task::Sweep
        );
        assert_eq!(
            Task::from_event(&scheduled).unwrap(),
            Task::Poll(Mode::Incremental)
        );
        assert!(Task::from_event(&serde_json::json!({ "mode": "full" })).is_err());
    }

    #[test]
    fn dedupe_key_names_dam_id_and_version() {
        let v = Version {
            modified_at_ms: 1_700_000_000_123,
            seq: 4,
        };
        assert_eq!(
            dedupe_key(DamKind::Generic, "a1", v),
            "generic:a1:1700000000123.4"
        );
    }
}
