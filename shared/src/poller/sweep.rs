//! The deletion sweep: finds PIM assets whose DAM asset no longer exists and enqueues a
//! deletion for each, so a lost `asset.deleted` webhook still ends under the mapping's delete
//! policy (applied by the consumer, like any webhook deletion).
//!
//! Design (docs/poller.md, "Deletion sweep"), memory bounded by one PIM page:
//! 1. for each family the mapping writes whose delete policy is not `ignore`, stream the PIM's
//!    asset codes page by page (Akeneo pages by 100);
//! 2. resolve each code to the DAM asset we wrote it from through the state store's reverse
//!    index ([`AssetStateStore::find_by_codes`]), read in one batch per page, whatever the code
//!    template or the DAM's id format (Bynder's UUIDs get a hash suffix): only a live state
//!    that holds this code in this family counts. A PIM asset without one is not ours (created
//!    by hand) or already retired, and is left alone: the sweep never deletes what the
//!    connector did not write;
//! 3. fetch the confirmed ids from the DAM in one batched call (≤ 100 ids) and enqueue a
//!    `Delete` event for each id the DAM reports gone.
//!
//! A run stops cleanly on its DAM call budget, the deadline or a DAM rate limit, saving the
//! PIM page it stopped at (family and Akeneo's `_links.next`) in the `sweep` cursor; the next
//! run resumes there, so a pass over a large PIM spreads over several runs. A completed pass
//! clears the position and the next run starts a new pass.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::akeneo::AkeneoError;
use crate::dam::{AssetSource, ChangeEvent, ChangeKind, DamError, DamKind, Fetched};
use crate::mapping::{DeletePolicy, Mapping};
use crate::queue::{ChangeQueue, QueueError};
use crate::store::{
    Advance, AssetStateStore, Clock, Cursor, CursorStore, LeaseStore, StateError, system_clock,
    with_lease,
};

use super::{PimCodes, PollMetrics, StopReason};
use crate::time::epoch_ms;

/// Ids per DAM fetch call: every adapter accepts 100 (Cloudinary `by_asset_ids`, the generic
/// contract; Bynder's `ids=` filter).
const FETCH_CHUNK: usize = 100;

/// The ports the sweep works through.
#[derive(Clone)]
pub struct SweepPorts {
    pub pim: Arc<dyn PimCodes>,
    pub source: Arc<dyn AssetSource>,
    pub states: Arc<dyn AssetStateStore>,
    pub queue: Arc<dyn ChangeQueue>,
    /// Holds the position of an unfinished pass.
    pub cursors: Arc<dyn CursorStore>,
    pub leases: Arc<dyn LeaseStore>,
}

/// Where an unfinished pass resumes: the family and the PIM page (Akeneo's next link; `None`:
/// the family's first page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SweepPosition {
    family: String,
    page: Option<String>,
}

/// What a sweep may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepSettings {
    /// Lease and cursor name: two sweeps never run at once, and an unfinished pass resumes.
    /// Default `sweep`.
    pub name: String,
    pub lease_ttl: Duration,
    /// Most DAM fetch calls per run. Default 200 (20,000 managed PIM assets checked).
    pub max_dam_calls: u32,
    /// No PIM or DAM call starts closer than this to the deadline. Default 20 s.
    pub deadline_margin: Duration,
}

impl Default for SweepSettings {
    fn default() -> Self {
        Self {
            name: "sweep".into(),
            lease_ttl: Duration::from_secs(15 * 60),
            max_dam_calls: 200,
            deadline_margin: Duration::from_secs(20),
        }
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    pub stop: Option<StopReason>,
    /// Families compared (delete policy `delete` or `clear`).
    pub families: Vec<String>,
    /// PIM asset codes read.
    pub pim_assets: u64,
    /// PIM assets the state store says the connector wrote from a DAM asset.
    pub managed: u64,
    /// PIM assets without such a state: left alone.
    pub unmanaged: u64,
    pub dam_calls: u32,
    /// Deletions enqueued (DAM assets gone).
    pub deletions_enqueued: u64,
    /// Whether this run continued a pass an earlier run left unfinished.
    pub resumed: bool,
    /// Whether a position was saved for the next run (the pass is unfinished).
    pub position_saved: bool,
}

/// A failed sweep; deletions enqueued before the failure stay queued.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("DAM fetch failed: {0}")]
    Dam(DamError),
    #[error("listing PIM assets failed: {0}")]
    Pim(AkeneoError),
    #[error("enqueueing deletions failed: {0}")]
    Queue(QueueError),
    #[error("state store failed: {0}")]
    State(#[from] StateError),
}

impl SweepError {
    pub fn is_retriable(&self) -> bool {
        match self {
            SweepError::Dam(e) => e.is_retriable(),
            SweepError::Pim(e) => e.is_retriable(),
            SweepError::Queue(e) => e.is_retriable(),
            SweepError::State(e) => e.is_retriable(),
        }
    }
}

/// The sweep, built from ports.
pub struct Sweeper {
    ports: SweepPorts,
    mapping: Arc<Mapping>,
    settings: SweepSettings,
    clock: Clock,
    metrics: Arc<PollMetrics>,
}

impl Sweeper {
    pub fn new(ports: SweepPorts, mapping: Arc<Mapping>, settings: SweepSettings) -> Self {
        Self {
            ports,
            mapping,
            settings,
            clock: system_clock(),
            metrics: Arc::default(),
        }
    }

    /// The clock read before each call to honour the deadline (tests inject one).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Shares the poller's counters (one set of metrics per Lambda container).
    pub fn with_metrics(mut self, metrics: Arc<PollMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &Arc<PollMetrics> {
        &self.metrics
    }

    /// One sweep: `now` stamps the events, `deadline` is when the invocation must return.
    pub async fn run(
        &self,
        now: SystemTime,
        deadline: SystemTime,
    ) -> Result<SweepReport, SweepError> {
        let name = self.settings.name.clone();
        let owner = format!("sweep-{}-{:016x}", epoch_ms(now), fastrand::u64(..));
        let mut report = SweepReport::default();
        let leased = with_lease(
            self.ports.leases.as_ref(),
            &name,
            &owner,
            self.settings.lease_ttl,
            || self.sweep(now, deadline, &mut report),
        )
        .await?;
        let Some(result) = leased else {
            PollMetrics::bump(&self.metrics.lease_held, 1);
            tracing::info!(lease = %name, "Another sweep holds the lease; exiting.");
            report.stop = Some(StopReason::LeaseHeld);
            return Ok(report);
        };
        PollMetrics::bump(&self.metrics.deletions_enqueued, report.deletions_enqueued);
        match result {
            Ok(stop) => {
                report.stop = Some(stop);
                tracing::info!(
                    stop = ?report.stop,
                    pim_assets = report.pim_assets,
                    managed = report.managed,
                    unmanaged = report.unmanaged,
                    dam_calls = report.dam_calls,
                    deletions = report.deletions_enqueued,
                    "Deletion sweep finished."
                );
                Ok(report)
            }
            Err(e) => {
                report.stop = Some(StopReason::Failed);
                if matches!(e, SweepError::Dam(_)) {
                    PollMetrics::bump(&self.metrics.dam_errors, 1);
                }
                tracing::error!(
                    metric = "SweepErrors",
                    error = %e,
                    retriable = e.is_retriable(),
                    deletions = report.deletions_enqueued,
                    "Deletion sweep failed; deletions enqueued so far stay queued."
                );
                Err(e)
            }
        }
    }

    async fn sweep(
        &self,
        now: SystemTime,
        deadline: SystemTime,
        report: &mut SweepReport,
    ) -> Result<StopReason, SweepError> {
        let name = &self.settings.name;
        let stored = self.ports.cursors.get(name).await?;
        let saved: Option<SweepPosition> = stored
            .as_ref()
            .and_then(|c| c.page_token.as_deref())
            .and_then(|t| match serde_json::from_str(t) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(error = %e, "Unreadable sweep position; starting a new pass.");
                    None
                }
            });
        let families: Vec<String> = self
            .mapping
            .families()
            .into_iter()
            .filter(|f| !matches!(self.mapping.delete_policy(f), DeletePolicy::Ignore))
            .map(str::to_owned)
            .collect();
        report.families = families.clone();
        // A saved family the mapping no longer sweeps: start a new pass.
        let saved = saved.filter(|p| families.contains(&p.family));
        report.resumed = saved.is_some();
        let mut position = Position {
            stored_version: stored.as_ref().map(|c| c.version),
            // Forward only: a new pass is stamped with its start, never before the last one.
            pass_ms: match (&saved, &stored) {
                (Some(_), Some(c)) => c.position_ms,
                (None, Some(c)) => c.position_ms.max(epoch_ms(now)),
                _ => epoch_ms(now),
            },
            at: saved.clone(),
        };
        let stop = self
            .walk(&families, saved, now, deadline, report, &mut position)
            .await;
        let unfinished = !matches!(stop, Ok(StopReason::Complete));
        let target = if unfinished {
            position.at.clone()
        } else {
            None
        };
        self.save(name, &mut position, target).await?;
        report.position_saved = position.at.is_some();
        stop
    }

    /// Compares the families' PIM pages with the DAM, from `saved` on. `position.at` follows
    /// the first page not yet fully handled.
    async fn walk(
        &self,
        families: &[String],
        saved: Option<SweepPosition>,
        now: SystemTime,
        deadline: SystemTime,
        report: &mut SweepReport,
        position: &mut Position,
    ) -> Result<StopReason, SweepError> {
        let dam = self.ports.source.dam();
        let cutoff_ms = epoch_ms(deadline).saturating_sub(
            i64::try_from(self.settings.deadline_margin.as_millis()).unwrap_or(i64::MAX),
        );
        let pim_deadline = tokio::time::Instant::now()
            + deadline
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .saturating_sub(self.settings.deadline_margin);
        let skip_to = saved.as_ref().map(|p| p.family.as_str());
        let start = skip_to
            .and_then(|f| families.iter().position(|x| x == f))
            .unwrap_or(0);
        for family in &families[start..] {
            let from = saved
                .as_ref()
                .filter(|p| &p.family == family)
                .and_then(|p| p.page.clone());
            position.at = Some(SweepPosition {
                family: family.clone(),
                page: from.clone(),
            });
            let mut pages = self.ports.pim.codes(family, from, pim_deadline);
            loop {
                if (self.clock)() >= cutoff_ms {
                    return Ok(StopReason::Deadline);
                }
                let page = match pages.next().await {
                    None => break,
                    Some(Ok(page)) => page,
                    Some(Err(e)) => return Err(SweepError::Pim(e)),
                };
                if let Some(stop) = self
                    .check_page(dam, family, &page.codes, now, cutoff_ms, report)
                    .await?
                {
                    return Ok(stop);
                }
                // This page is done: an interruption from here resumes at the next one.
                match page.next {
                    Some(next) => {
                        position.at = Some(SweepPosition {
                            family: family.clone(),
                            page: Some(next),
                        });
                    }
                    None => break,
                }
            }
        }
        position.at = None;
        Ok(StopReason::Complete)
    }

    /// Checks one PIM page against the DAM and enqueues its deletions. `Some(stop)` when the
    /// run must stop before the page is done (it is then checked again next run).
    async fn check_page(
        &self,
        dam: DamKind,
        family: &str,
        codes: &[String],
        now: SystemTime,
        cutoff_ms: i64,
        report: &mut SweepReport,
    ) -> Result<Option<StopReason>, SweepError> {
        let managed = self.managed_ids(dam, family, codes).await?;
        let mut events = Vec::new();
        for chunk in managed.chunks(FETCH_CHUNK) {
            if report.dam_calls >= self.settings.max_dam_calls {
                return Ok(Some(StopReason::Budget));
            }
            if (self.clock)() >= cutoff_ms {
                return Ok(Some(StopReason::Deadline));
            }
            report.dam_calls += 1;
            let fetched = match self.ports.source.fetch(chunk).await {
                Ok(f) => f,
                Err(DamError::RateLimited { retry_after }) => {
                    return Ok(Some(StopReason::RateLimited {
                        retry_after_ms: retry_after.map(|d| d.as_millis() as u64),
                    }));
                }
                Err(e) => return Err(SweepError::Dam(e)),
            };
            events.extend(fetched.into_iter().filter_map(|f| match f {
                Fetched::Gone(id) => Some(deletion(dam, id, epoch_ms(now))),
                Fetched::Found(_) => None,
            }));
        }
        if !events.is_empty() {
            self.ports
                .queue
                .enqueue(&events)
                .await
                .map_err(SweepError::Queue)?;
            report.deletions_enqueued += events.len() as u64;
            tracing::info!(
                family = %family,
                deletions = events.len(),
                "Deletions enqueued for PIM assets gone from the DAM."
            );
        }
        report.pim_assets += codes.len() as u64;
        report.managed += managed.len() as u64;
        report.unmanaged += (codes.len() - managed.len()) as u64;
        Ok(None)
    }

    /// The DAM ids of `dam` written to `family` under these PIM codes, through the reverse
    /// index, whatever the code template. Codes the index does not resolve fall back to the
    /// state keyed by the code itself (`{{id}}`-style codes): DynamoDB states written before the
    /// index existed have no index entry until their next write. Live states only, so a
    /// retired asset or one moved to another code is never swept under its old code.
    async fn managed_ids(
        &self,
        dam: DamKind,
        family: &str,
        codes: &[String],
    ) -> Result<Vec<String>, SweepError> {
        let found = self.ports.states.find_by_codes(family, codes).await?;
        let mut ids: HashSet<String> = found
            .values()
            .filter(|(d, _)| *d == dam)
            .map(|(_, id)| id.clone())
            .collect();
        let rest: Vec<String> = codes
            .iter()
            .filter(|c| !found.contains_key(*c))
            .cloned()
            .collect();
        if !rest.is_empty() {
            let states = self.ports.states.get_many(dam, &rest).await?;
            ids.extend(rest.into_iter().filter(|code| {
                states
                    .get(code)
                    .and_then(|s| s.indexed_code())
                    .is_some_and(|held| held == (family, code.as_str()))
            }));
        }
        let mut ids: Vec<String> = ids.into_iter().collect();
        ids.sort();
        Ok(ids)
    }

    /// Stores the pass position (`None`: the pass is complete) when it changed. A conflict
    /// means another writer moved it (the lease should prevent that): theirs is kept.
    async fn save(
        &self,
        name: &str,
        position: &mut Position,
        at: Option<SweepPosition>,
    ) -> Result<(), SweepError> {
        let token = at
            .as_ref()
            .map(|p| serde_json::to_string(p).unwrap_or_default());
        let new = Cursor {
            position_ms: position.pass_ms,
            page_token: token,
            version: 0,
        };
        match self
            .ports
            .cursors
            .advance(name, new, position.stored_version)
            .await?
        {
            Advance::Written { version } => {
                position.stored_version = Some(version);
                position.at = at;
            }
            Advance::Conflict { .. } => {
                tracing::warn!(cursor = %name, "Sweep position moved by another writer; keeping theirs.");
                position.at = None;
            }
        }
        Ok(())
    }
}

/// The pass being walked: its stamp, the stored cursor's version and the resume point.
struct Position {
    stored_version: Option<u64>,
    pass_ms: i64,
    at: Option<SweepPosition>,
}

/// A deletion found by the sweep: no version (the DAM has none to give for a gone asset), so
/// the consumer applies it to whatever version it last wrote.
fn deletion(dam: DamKind, id: String, now_ms: i64) -> ChangeEvent {
    ChangeEvent {
        dam,
        dedupe_key: format!("{}:{id}:sweep:{now_ms}", dam.as_str()),
        asset_id: id,
        kind: ChangeKind::Delete,
        version: None,
        asset: None,
        received_at_ms: now_ms,
    }
}
