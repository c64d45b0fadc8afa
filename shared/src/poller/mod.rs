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

use std::sync::Arc;
use std::time::SystemTime;

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::akeneo::AkeneoError;

use crate::dam::{AssetSource, DamAsset, DamKind};
use crate::queue::ChangeQueue;
use crate::store::{
    AssetStateStore, Clock, CursorStore, LeaseStore, is_newer, system_clock, with_lease,
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
}
