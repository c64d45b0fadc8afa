//! The poller against in-memory ports: DAM outages, budgets, deadlines, leases, cursor races,
//! late updates and backfill resumption (reliability.md §6 F9, F17, F19).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use shared::dam::{DamError, DamKind, Version};
use shared::poller::{PollError, PollMetrics, Poller, PollerSettings, RunReport, StopReason};
use shared::store::{
    Advance, AssetState, AssetStateStore, Cursor, CursorStore, LeaseStore, StateError,
};
use shared::testing::{MemoryChangeQueue, MemorySource, MemoryStore};

const T0: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;

fn at(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms as u64)
}

fn far_deadline(now: i64) -> SystemTime {
    at(now + 15 * MIN)
}

fn settings() -> PollerSettings {
    PollerSettings {
        lookback: Duration::from_secs(15 * 60),
        safety_lag: Duration::from_secs(2 * 60),
        page_size: 3,
        max_dam_calls: 100,
        ..PollerSettings::default()
    }
}

struct Rig {
    source: Arc<MemorySource>,
    queue: Arc<MemoryChangeQueue>,
    store: Arc<MemoryStore>,
}

impl Rig {
    fn new() -> Self {
        Self {
            source: Arc::new(MemorySource::default()),
            queue: Arc::new(MemoryChangeQueue::new()),
            store: Arc::new(MemoryStore::new()),
        }
    }

    fn poller(&self, settings: PollerSettings) -> Poller {
        Poller::new(
            self.source.clone(),
            self.queue.clone(),
            self.store.clone(),
            self.store.clone(),
            settings,
        )
    }

    async fn cursor(&self, name: &str) -> Option<Cursor> {
        CursorStore::get(&*self.store, name).await.unwrap()
    }

    fn drained_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.queue.drain().into_iter().map(|e| e.asset_id).collect();
        ids.sort();
        ids
    }
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    let mut v: Vec<String> = range.map(|i| format!("a{i:03}")).collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_run_enqueues_every_change_and_caps_the_cursor_at_start_minus_lag() {
    let rig = Rig::new();
    for i in 0..10 {
        rig.source
            .put(&format!("a{i:03}"), T0 - 30 * MIN + i as i64 * MIN, 1);
    }
    // Stamped after `now − safety lag`: enqueued, but the cursor must not pass the signpost.
    rig.source.put("a010", T0 - MIN, 1);
    let poller = rig.poller(settings());
    let report = poller.run(at(T0), far_deadline(T0)).await.unwrap();

    assert_eq!(report.stop, StopReason::Complete);
    assert_eq!(report.events_enqueued, 11);
    assert_eq!(report.pages, 4);
    assert_eq!(report.cursor_after_ms, Some(T0 - 2 * MIN));
    let events = rig.queue.drain();
    let first = &events[0];
    assert_eq!(first.asset_id, "a000");
    assert!(first.asset.is_some(), "the full asset rides along");
    assert_eq!(
        first.dedupe_key,
        format!("generic:a000:{}.1", T0 - 30 * MIN)
    );
    assert_eq!(first.received_at_ms, T0);
    let cursor = rig.cursor("reconcile").await.unwrap();
    assert_eq!(cursor.position_ms, T0 - 2 * MIN);
    assert_eq!(cursor.page_token, None);
}

#[tokio::test]
async fn the_next_run_relists_from_cursor_minus_lookback_inclusive() {
    let rig = Rig::new();
    rig.source.put("old", T0 - 60 * MIN, 1);
    rig.source.put("edge", T0 - 20 * MIN, 1);
    let poller = rig.poller(settings());
    poller.run(at(T0), far_deadline(T0)).await.unwrap();
    assert_eq!(
        rig.cursor("reconcile").await.unwrap().position_ms,
        T0 - 20 * MIN
    );
    rig.queue.drain();

    // Cursor − lookback = T0 − 35 min: "old" is outside, "edge" (at the cursor) is re-read.
    let report = poller
        .run(at(T0 + MIN), far_deadline(T0 + MIN))
        .await
        .unwrap();
    assert_eq!(report.stop, StopReason::Complete);
    assert_eq!(rig.drained_ids(), vec!["edge".to_owned()]);
}

#[tokio::test]
async fn relisted_changes_the_consumer_applied_are_not_enqueued_again() {
    let rig = Rig::new();
    rig.source.put("applied", T0 - 10 * MIN, 1);
    rig.source.put("behind", T0 - 10 * MIN, 1);
    rig.source.put("new", T0 - 10 * MIN, 1);
    let poller = rig
        .poller(settings())
        .with_applied_filter(rig.store.clone());
    let first = poller.run(at(T0), far_deadline(T0)).await.unwrap();
    assert_eq!(first.events_enqueued, 3);
    assert_eq!(first.already_applied, 0);
    rig.queue.drain();

    // The consumer applied "applied" at its listed version and "behind" at an older one.
    let record = |id: &str, seq: i64| AssetState {
        dam: DamKind::Generic,
        asset_id: id.to_owned(),
        applied_version: Version {
            modified_at_ms: T0 - 10 * MIN,
            seq,
        },
        content_hash: "h".into(),
        family: "packshot".into(),
        pim_code: id.to_owned(),
        updated_at_ms: T0,
        media_files: Default::default(),
        deleted: false,
        source_hash: String::new(),
    };
    rig.store
        .record_applied(&record("applied", 1))
        .await
        .unwrap();
    rig.store
        .record_applied(&record("behind", 0))
        .await
        .unwrap();

    // The next run lists all three again inside its lookback and enqueues only the two the
    // PIM does not hold yet; the cursor moves as without the filter.
    let second = poller
        .run(at(T0 + MIN), far_deadline(T0 + MIN))
        .await
        .unwrap();
    assert_eq!(second.stop, StopReason::Complete);
    assert_eq!(second.already_applied, 1);
    assert_eq!(second.events_enqueued, 2);
    assert_eq!(
        rig.drained_ids(),
        vec!["behind".to_owned(), "new".to_owned()]
    );
    assert_eq!(
        rig.cursor("reconcile").await.unwrap().position_ms,
        T0 - 10 * MIN
    );

    // Without the filter, the same run enqueues all three.
    let unfiltered = rig
        .poller(settings())
        .run(at(T0 + 2 * MIN), far_deadline(T0 + 2 * MIN))
        .await
        .unwrap();
    assert_eq!(unfiltered.events_enqueued, 3);
}

#[tokio::test]
async fn a_late_update_behind_the_cursor_within_the_lookback_is_picked_up() {
    let rig = Rig::new();
    rig.source.put("a", T0 - 10 * MIN, 1);
    let poller = rig.poller(settings());
    poller.run(at(T0), far_deadline(T0)).await.unwrap();
    let cursor = rig.cursor("reconcile").await.unwrap().position_ms;
    assert_eq!(cursor, T0 - 10 * MIN);
    rig.queue.drain();

    // Indexed late: stamped 5 minutes behind the cursor, visible only now.
    rig.source.put("late", cursor - 5 * MIN, 1);
    let report = poller
        .run(at(T0 + MIN), far_deadline(T0 + MIN))
        .await
        .unwrap();
    assert_eq!(report.stop, StopReason::Complete);
    let drained = rig.drained_ids();
    assert!(drained.contains(&"late".to_owned()), "{drained:?}");
    assert_eq!(
        rig.cursor("reconcile").await.unwrap().position_ms,
        cursor,
        "the cursor never moves backwards"
    );
}

#[tokio::test]
async fn dam_down_leaves_the_cursor_and_counts_an_error() {
    let rig = Rig::new();
    rig.source.put("a", T0 - 10 * MIN, 1);
    let poller = rig.poller(settings());
    poller.run(at(T0), far_deadline(T0)).await.unwrap();
    let before = rig.cursor("reconcile").await.unwrap();
    rig.queue.drain();

    rig.source.put("b", T0, 1);
    rig.source.set_down(true);
    let err = poller
        .run(at(T0 + 5 * MIN), far_deadline(T0 + 5 * MIN))
        .await
        .unwrap_err();
    assert!(matches!(err, PollError::Dam { .. }), "{err}");
    assert!(err.is_retriable());
    assert_eq!(err.report().unwrap().stop, StopReason::Failed);
    assert_eq!(PollMetrics::get(&poller.metrics().dam_errors), 1);
    assert_eq!(rig.cursor("reconcile").await.unwrap(), before);
    assert!(rig.queue.is_empty());
    // The lease was released: the next run works once the DAM is back.
    rig.source.set_down(false);
    let report = poller
        .run(at(T0 + 10 * MIN), far_deadline(T0 + 10 * MIN))
        .await
        .unwrap();
    assert_eq!(report.stop, StopReason::Complete);
    assert!(rig.drained_ids().contains(&"b".to_owned()));
}

#[tokio::test]
async fn a_failure_mid_listing_keeps_the_progress_of_enqueued_pages_only() {
    let rig = Rig::new();
    for i in 0..9 {
        rig.source
            .put(&format!("a{i:03}"), T0 - 60 * MIN + i as i64 * MIN, 1);
    }
    rig.source.fail_call(2);
    let poller = rig.poller(settings());
    let err = poller.run(at(T0), far_deadline(T0)).await.unwrap_err();
    assert_eq!(err.report().unwrap().pages, 1);
    // Page 1 held a000..a002: the cursor stops at a002, not past a003.
    assert_eq!(
        rig.cursor("reconcile").await.unwrap().position_ms,
        T0 - 58 * MIN
    );
    assert_eq!(rig.drained_ids(), ids(0..3));
}

#[tokio::test]
async fn a_queue_failure_moves_nothing_and_is_retriable() {
    let rig = Rig::new();
    rig.source.put("a", T0 - 10 * MIN, 1);
    rig.queue.set_failure(Some("throttled"));
    let poller = rig.poller(settings());
    let err = poller.run(at(T0), far_deadline(T0)).await.unwrap_err();
    assert!(matches!(err, PollError::Queue { .. }));
    assert!(err.is_retriable(), "a transient queue error is retriable");
    assert_eq!(rig.cursor("reconcile").await, None);
    assert_eq!(PollMetrics::get(&poller.metrics().queue_errors), 1);
}

#[tokio::test]
async fn rate_limits_and_the_call_budget_stop_cleanly_and_resume() {
    let rig = Rig::new();
    for i in 0..9 {
        rig.source
            .put(&format!("a{i:03}"), T0 - 60 * MIN + i as i64 * MIN, 1);
    }
    let poller = rig.poller(PollerSettings {
        max_dam_calls: 2,
        ..settings()
    });
    let report = poller.run(at(T0), far_deadline(T0)).await.unwrap();
    assert_eq!(report.stop, StopReason::Budget);
    assert_eq!(report.dam_calls, 2);
    assert_eq!(rig.source.calls(), 2);
    assert_eq!(report.cursor_after_ms, Some(T0 - 55 * MIN));
    assert_eq!(rig.drained_ids(), ids(0..6));

    rig.source.set_rate_limited(true);
    let report = poller.run(at(T0), far_deadline(T0)).await.unwrap();
    assert_eq!(
        report.stop,
        StopReason::RateLimited {
            retry_after_ms: None
        }
    );
    assert_eq!(report.cursor_after_ms, Some(T0 - 55 * MIN));

    rig.source.set_rate_limited(false);
    // The listing resumes after the last enqueued page instead of re-reading the lookback
    // window, which here holds more than one run's budget.
    let report = poller.run(at(T0), far_deadline(T0)).await.unwrap();
    assert_eq!(report.stop, StopReason::Complete);
    assert!(report.resumed);
    assert_eq!(rig.drained_ids(), ids(6..9));
    let cursor = rig.cursor("reconcile").await.unwrap();
    assert_eq!(cursor.position_ms, T0 - 52 * MIN);
    assert_eq!(
        cursor.page_token, None,
        "a finished listing leaves no resume point"
    );
}

#[tokio::test]
async fn the_deadline_stops_before_the_next_dam_call() {
    let rig = Rig::new();
    for i in 0..9 {
        rig.source
            .put(&format!("a{i:03}"), T0 - 60 * MIN + i as i64 * MIN, 1);
    }
    // Each clock read is one second later; the margin is 20 s and the deadline 22 s away, so
    // two pages fit.
    let ticks = Arc::new(AtomicI64::new(T0));
    let clock_ticks = ticks.clone();
    let poller = rig.poller(settings()).with_clock(Arc::new(move || {
        clock_ticks.fetch_add(1000, Ordering::SeqCst)
    }));
    let report = poller.run(at(T0), at(T0 + 22_000)).await.unwrap();
    assert_eq!(report.stop, StopReason::Deadline);
    assert_eq!(report.pages, 2);
    assert_eq!(rig.drained_ids(), ids(0..6));
}

#[tokio::test]
async fn a_held_lease_makes_the_run_exit_without_touching_anything() {
    let rig = Rig::new();
    rig.source.put("a", T0 - 10 * MIN, 1);
    assert!(
        rig.store
            .acquire("reconcile", "other-run", Duration::from_secs(600))
            .await
            .unwrap()
    );
    let poller = rig.poller(settings());
    let report = poller.run(at(T0), far_deadline(T0)).await.unwrap();
    assert_eq!(report.stop, StopReason::LeaseHeld);
    assert_eq!(rig.source.calls(), 0);
    assert!(rig.queue.is_empty());
    assert_eq!(rig.cursor("reconcile").await, None);
    assert_eq!(PollMetrics::get(&poller.metrics().lease_held), 1);
    // The other holder's lease is untouched.
    assert!(!rig.store.release("reconcile", "someone").await.unwrap());
    assert!(rig.store.release("reconcile", "other-run").await.unwrap());
}

/// Records every successful cursor write, and can slip in a rival write just before ours.
struct WatchedCursors {
    inner: Arc<MemoryStore>,
    writes: Mutex<Vec<i64>>,
    rival_position: Mutex<Option<i64>>,
}

#[async_trait]
impl CursorStore for WatchedCursors {
    async fn get(&self, name: &str) -> Result<Option<Cursor>, StateError> {
        self.inner.get(name).await
    }

    async fn advance(
        &self,
        name: &str,
        new: Cursor,
        expected_version: Option<u64>,
    ) -> Result<Advance, StateError> {
        let rival = self.rival_position.lock().unwrap().take();
        if let Some(position_ms) = rival {
            let rival = Cursor {
                position_ms,
                page_token: None,
                version: 0,
            };
            let written = self.inner.advance(name, rival, expected_version).await?;
            assert!(matches!(written, Advance::Written { .. }));
            self.writes.lock().unwrap().push(position_ms);
        }
        let position = new.position_ms;
        let result = self.inner.advance(name, new, expected_version).await?;
        if matches!(result, Advance::Written { .. }) {
            self.writes.lock().unwrap().push(position);
        }
        Ok(result)
    }
}

#[tokio::test]
async fn a_rival_cursor_write_wins_and_the_cursor_never_moves_back() {
    let rig = Rig::new();
    rig.source.put("a", T0 - 30 * MIN, 1);
    let cursors = Arc::new(WatchedCursors {
        inner: rig.store.clone(),
        writes: Mutex::default(),
        rival_position: Mutex::new(Some(T0 - 3 * MIN)),
    });
    let poller = Poller::new(
        rig.source.clone(),
        rig.queue.clone(),
        cursors.clone(),
        rig.store.clone(),
        settings(),
    );
    let report = poller.run(at(T0), far_deadline(T0)).await.unwrap();
    assert_eq!(report.stop, StopReason::CursorConflict);
    assert_eq!(PollMetrics::get(&poller.metrics().cursor_conflicts), 1);
    assert_eq!(
        rig.cursor("reconcile").await.unwrap().position_ms,
        T0 - 3 * MIN,
        "the rival's newer cursor stands"
    );
    assert_eq!(*cursors.writes.lock().unwrap(), vec![T0 - 3 * MIN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_pollers_share_one_lease_and_the_cursor_only_moves_forward() {
    let rig = Rig::new();
    for i in 0..30 {
        rig.source
            .put(&format!("a{i:03}"), T0 - 60 * MIN + i as i64 * MIN, 1);
    }
    rig.source.set_yield_between_pages(true);
    let cursors = Arc::new(WatchedCursors {
        inner: rig.store.clone(),
        writes: Mutex::default(),
        rival_position: Mutex::new(None),
    });
    let mut handles = Vec::new();
    for r in 0..8 {
        let poller = Arc::new(Poller::new(
            rig.source.clone(),
            rig.queue.clone(),
            cursors.clone(),
            rig.store.clone(),
            settings(),
        ));
        let now = T0 + r * MIN;
        handles.push(tokio::spawn(async move {
            poller.run(at(now), far_deadline(now)).await
        }));
    }
    let mut reports: Vec<RunReport> = Vec::new();
    for h in handles {
        reports.push(h.await.unwrap().unwrap());
    }
    assert!(reports.iter().any(|r| r.stop == StopReason::Complete));
    let writes = cursors.writes.lock().unwrap().clone();
    assert!(!writes.is_empty());
    assert!(
        writes.windows(2).all(|w| w[0] <= w[1]),
        "cursor went backwards: {writes:?}"
    );
    let drained = rig.drained_ids();
    for id in ids(0..30) {
        assert!(drained.contains(&id), "{id} never enqueued");
    }
}

#[tokio::test]
async fn two_runs_with_expired_leases_interleave_and_one_cursor_write_wins() {
    // Each run has its own lease store: what happens when a lease expired under a slow run.
    let rig = Rig::new();
    for i in 0..12 {
        rig.source
            .put(&format!("a{i:03}"), T0 - 60 * MIN + i as i64 * MIN, 1);
    }
    rig.source.set_yield_between_pages(true);
    let lease_a: Arc<dyn LeaseStore> = Arc::new(MemoryStore::new());
    let lease_b: Arc<dyn LeaseStore> = Arc::new(MemoryStore::new());
    let make = |lease: Arc<dyn LeaseStore>| {
        Poller::new(
            rig.source.clone(),
            rig.queue.clone(),
            rig.store.clone(),
            lease,
            settings(),
        )
    };
    let (a, b) = (make(lease_a), make(lease_b));
    let (ra, rb) = futures::join!(
        a.run(at(T0), far_deadline(T0)),
        b.run(at(T0 + MIN), far_deadline(T0 + MIN))
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let stops = [ra.stop.clone(), rb.stop.clone()];
    assert!(stops.contains(&StopReason::Complete), "{stops:?}");
    assert!(stops.contains(&StopReason::CursorConflict), "{stops:?}");
    let cursor = rig.cursor("reconcile").await.unwrap();
    assert_eq!(cursor.version, 1, "exactly one write landed");
    assert_eq!(cursor.position_ms, T0 - 49 * MIN);
}

#[tokio::test]
async fn backfill_resumes_from_the_saved_page_token_after_a_timeout() {
    let rig = Rig::new();
    for i in 0..10 {
        rig.source
            .put(&format!("a{i:03}"), T0 - 600 * MIN + i as i64 * MIN, 1);
    }
    let poller = rig.poller(PollerSettings {
        max_dam_calls: 2,
        ..settings()
    });
    let first = poller.backfill(at(T0), far_deadline(T0)).await.unwrap();
    assert_eq!(first.stop, StopReason::Budget);
    assert!(first.resume_saved);
    let saved = rig.cursor("backfill").await.unwrap();
    assert!(saved.page_token.is_some());
    assert_eq!(rig.drained_ids(), ids(0..6));

    let second = poller.backfill(at(T0), far_deadline(T0)).await.unwrap();
    assert_eq!(second.stop, StopReason::Complete);
    assert!(!second.resume_saved);
    assert_eq!(rig.drained_ids(), ids(6..10), "no page read twice");
    let done = rig.cursor("backfill").await.unwrap();
    assert_eq!(done.page_token, None);
    assert_eq!(done.position_ms, T0 - 591 * MIN);
    // The incremental cursor is a different one.
    assert_eq!(rig.cursor("reconcile").await, None);
}

#[tokio::test]
async fn a_backfill_crash_mid_page_resumes_after_the_last_enqueued_page() {
    let rig = Rig::new();
    for i in 0..9 {
        rig.source
            .put(&format!("a{i:03}"), T0 - 600 * MIN + i as i64 * MIN, 1);
    }
    rig.source.fail_call(3);
    let poller = rig.poller(settings());
    let err = poller.backfill(at(T0), far_deadline(T0)).await.unwrap_err();
    assert!(matches!(
        err,
        PollError::Dam {
            source: DamError::Transient(_),
            ..
        }
    ));
    assert_eq!(rig.drained_ids(), ids(0..6));
    let report = poller.backfill(at(T0), far_deadline(T0)).await.unwrap();
    assert_eq!(report.stop, StopReason::Complete);
    assert_eq!(rig.drained_ids(), ids(6..9));
}

#[tokio::test]
async fn a_resume_point_the_dam_refuses_is_dropped_and_the_listing_restarts() {
    let rig = Rig::new();
    rig.source.put("a", T0 - 10 * MIN, 1);
    // A resume point whose DAM token this adapter cannot read (written by another version).
    let stale = Cursor {
        position_ms: T0 - 30 * MIN,
        page_token: Some(r#"{"cap_ms":0,"token":"not-a-memory-token"}"#.into()),
        version: 0,
    };
    CursorStore::advance(&*rig.store, "reconcile", stale, None)
        .await
        .unwrap();
    let poller = rig.poller(settings());
    let err = poller.run(at(T0), far_deadline(T0)).await.unwrap_err();
    assert!(!err.is_retriable(), "{err}");
    let cursor = rig.cursor("reconcile").await.unwrap();
    assert_eq!(cursor.page_token, None);
    assert_eq!(cursor.position_ms, T0 - 30 * MIN, "the position is kept");

    let report = poller.run(at(T0), far_deadline(T0)).await.unwrap();
    assert_eq!(report.stop, StopReason::Complete);
    assert!(!report.resumed);
    assert_eq!(rig.drained_ids(), vec!["a".to_owned()]);
}

fn state_of(asset: &shared::dam::DamAsset, deleted: bool, source_hash: String) -> AssetState {
    AssetState {
        dam: asset.dam,
        asset_id: asset.id.clone(),
        applied_version: asset.version,
        content_hash: "h".into(),
        family: "packshot".into(),
        pim_code: asset.id.clone(),
        updated_at_ms: T0,
        media_files: Default::default(),
        deleted,
        source_hash,
    }
}

fn listed(rig: &Rig, id: &str) -> shared::dam::DamAsset {
    rig.source
        .assets()
        .into_iter()
        .find(|a| a.id == id)
        .unwrap()
}

/// Which listed assets are queued, each rule through a real run: deletions the DAM lists, a
/// tombstone listed live, a same-second edit, and parked versions.
#[tokio::test]
async fn listed_assets_are_queued_by_state_tombstone_fingerprint_and_parked_version() {
    use shared::dam::ChangeKind;

    let rig = Rig::new();
    let t = T0 - 10 * MIN;
    for id in [
        "deleted",
        "revived",
        "edited",
        "repeat",
        "parked",
        "parked_newer",
        "new",
    ] {
        rig.source.put(id, t, 1);
    }
    // Applied as listed now: "repeat" with the fingerprint of what is listed, "edited" with
    // the fingerprint of an earlier edit in the same second.
    let mut edited_before = listed(&rig, "edited");
    edited_before.fields = serde_json::json!({ "id": "edited", "title": "before" });
    for (id, deleted, hash) in [
        ("deleted", false, String::new()),
        ("revived", true, String::new()),
        ("edited", false, edited_before.fingerprint()),
        ("repeat", false, listed(&rig, "repeat").fingerprint()),
        ("parked", false, String::new()),
        ("parked_newer", false, String::new()),
    ] {
        let mut state = state_of(&listed(&rig, id), deleted, hash);
        if matches!(id, "parked" | "parked_newer") {
            state.applied_version.seq = 0;
        }
        rig.store.record_applied(&state).await.unwrap();
    }
    // The DAM deletes one asset (a `deleted: true` row at a newer version); the consumer
    // dead-lettered the listed versions of two, one of which has changed since.
    rig.source.mark_deleted("deleted", t + 1_000, 2);
    let v1 = Version {
        modified_at_ms: t,
        seq: 1,
    };
    rig.store
        .record_parked(DamKind::Generic, "parked", v1)
        .await
        .unwrap();
    rig.store
        .record_parked(DamKind::Generic, "parked_newer", v1)
        .await
        .unwrap();
    rig.source.put("parked_newer", t, 2);

    let poller = rig
        .poller(settings())
        .with_applied_filter(rig.store.clone());
    let report = poller.run(at(T0), far_deadline(T0)).await.unwrap();
    assert_eq!(report.stop, StopReason::Complete);
    let mut events = rig.queue.drain();
    events.sort_by(|a, b| a.asset_id.cmp(&b.asset_id));
    let queued: Vec<(&str, ChangeKind)> = events
        .iter()
        .map(|e| (e.asset_id.as_str(), e.kind))
        .collect();
    assert_eq!(
        queued,
        [
            ("deleted", ChangeKind::Delete),
            ("edited", ChangeKind::Upsert),
            ("new", ChangeKind::Upsert),
            ("parked_newer", ChangeKind::Upsert),
            ("revived", ChangeKind::Upsert),
        ]
    );
    assert_eq!(report.already_applied, 2, "repeat and parked");
    // The deletion carries the listing's version, not the one applied.
    assert_eq!(
        events[0].version,
        Some(Version {
            modified_at_ms: t + 1_000,
            seq: 2
        })
    );
    assert_eq!(events[0].asset, None);

    // Once the consumer retired it (a tombstone at the deleted version), the deletion is not
    // queued again; nor is anything else that is now applied.
    let gone = listed(&rig, "deleted");
    rig.store
        .record_applied(&state_of(&gone, true, String::new()))
        .await
        .unwrap();
    for id in ["edited", "new", "parked_newer", "revived"] {
        let asset = listed(&rig, id);
        let fingerprint = asset.fingerprint();
        rig.store
            .record_applied(&state_of(&asset, false, fingerprint))
            .await
            .unwrap();
    }
    let again = poller
        .run(at(T0 + MIN), far_deadline(T0 + MIN))
        .await
        .unwrap();
    assert_eq!(again.events_enqueued, 0, "{:?}", rig.drained_ids());
    assert_eq!(again.already_applied, 7);
}
