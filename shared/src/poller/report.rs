//! What a poll run reports: why it stopped, what it did, how it failed, and the counters
//! kept over the poller's life.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::Mode;
use crate::dam::DamError;
use crate::queue::QueueError;
use crate::store::StateError;

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
    /// Listed changes not enqueued: the PIM already holds that version or a newer one, the
    /// deletion is already applied, or the consumer dead-lettered exactly that version (see
    /// [`Poller::with_applied_filter`](super::Poller::with_applied_filter)).
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
    pub(super) fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
