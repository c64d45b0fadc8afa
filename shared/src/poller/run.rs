//! One leased run, in three steps: the window (where the listing starts and how far the
//! cursor may go), the page loop (list, filter, enqueue) and settle (commit the cursor, finish
//! the report).

use std::time::SystemTime;

use futures::StreamExt;

use super::cursor::{CursorState, Resume};
use super::{Mode, PollError, PollMetrics, Poller, RunReport, StopReason};
use crate::dam::{DamError, PageToken};
use crate::time::{duration_ms, epoch_ms, from_epoch_ms};

/// Where a run lists from and how far its cursor may go: the answer of [`Poller::window`].
struct Window {
    /// The stored cursor as last read or written by this run.
    state: CursorState,
    /// Listing start (`None`: from the beginning, or from `resume`).
    since: Option<SystemTime>,
    /// The DAM page token of an unfinished listing this run continues.
    resume: Option<PageToken>,
    /// The signpost: the cursor never moves past it.
    cap_ms: i64,
    /// No DAM call starts at or after this (the deadline minus the margin).
    deadline_ms: i64,
}

/// Where the page loop left the listing: the answer of [`Poller::page_loop`].
struct Listing {
    /// Newest modified time among enqueued assets.
    max_seen: Option<i64>,
    /// Where the listing continues after the last enqueued page.
    next: Option<PageToken>,
    enqueued_any: bool,
    /// The DAM or queue failure that ended the loop; settle returns it.
    failure: Option<PollError>,
}

impl Poller {
    /// One run under the lease. `report` is filled as the run goes, so a failure still says
    /// how far it got. A state store failure ends the run at once, without settling.
    pub(super) async fn run_leased(
        &self,
        mode: Mode,
        name: &str,
        now: SystemTime,
        deadline: SystemTime,
        report: &mut RunReport,
    ) -> Result<(), PollError> {
        let mut window = self.window(mode, name, now, deadline, report).await?;
        let listing = self.page_loop(mode, name, now, &mut window, report).await?;
        self.settle(mode, name, window, listing, report).await
    }

    /// The window: reads the cursor and decides where the listing starts (the saved resume
    /// point, else `cursor − lookback`, else everything) and the signpost the cursor may not
    /// pass (`now − safety lag`; a resumed listing keeps its first run's; none for a backfill).
    /// Writes nothing to the store.
    async fn window(
        &self,
        mode: Mode,
        name: &str,
        now: SystemTime,
        deadline: SystemTime,
        report: &mut RunReport,
    ) -> Result<Window, PollError> {
        let stored = self.cursors.get(name).await?;
        report.cursor_before_ms = stored.as_ref().map(|c| c.position_ms);
        report.cursor_after_ms = report.cursor_before_ms;
        let state = CursorState {
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
        Ok(Window {
            state,
            since,
            resume,
            cap_ms,
            deadline_ms,
        })
    }

    /// The page loop: one DAM call per page, each only while the call budget and the deadline
    /// allow; leaves out what the consumer already applied and enqueues the rest. A page
    /// counts towards `max_seen` and `next` only once it is enqueued, so the cursor never
    /// passes a change that is neither queued nor applied. A backfill commits after every
    /// page. Sets `report.stop`; a DAM or queue failure ends the loop and is handed to settle,
    /// so the progress enqueued before it is still committed.
    async fn page_loop(
        &self,
        mode: Mode,
        name: &str,
        now: SystemTime,
        window: &mut Window,
        report: &mut RunReport,
    ) -> Result<Listing, PollError> {
        let (cap_ms, deadline_ms) = (window.cap_ms, window.deadline_ms);
        let state = &mut window.state;
        let mut pages =
            self.source
                .list_changed(window.since, window.resume.take(), self.settings.page_size);
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
            let (events, skipped) = self.page_events(&page.assets, epoch_ms(now)).await;
            report.already_applied += skipped;
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
                    .commit(name, state, max_seen, cap_ms, next.as_ref(), report)
                    .await?
            {
                break StopReason::CursorConflict;
            }
            if next.is_none() {
                break StopReason::Complete;
            }
        };
        Ok(Listing {
            max_seen,
            next,
            enqueued_any,
            failure,
        })
    }

    /// Settle: an incremental run commits the cursor once, conditionally, to what the page
    /// loop enqueued, keeping the page token when the listing is unfinished. It commits
    /// nothing after a cursor conflict, nor when the listing stopped unfinished before any
    /// page was through. A resume point the DAM refused is dropped, keeping the position.
    /// Returns the loop's failure with the final report.
    async fn settle(
        &self,
        mode: Mode,
        name: &str,
        window: Window,
        listing: Listing,
        report: &mut RunReport,
    ) -> Result<(), PollError> {
        let Window {
            mut state, cap_ms, ..
        } = window;
        let Listing {
            max_seen,
            next,
            enqueued_any,
            failure,
        } = listing;
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
}
