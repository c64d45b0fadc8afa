//! Property test of the poller's cursor rules against random DAM histories: random page sizes
//! and budgets, transient failures at random pages, interleaved concurrent runs (an expired
//! lease), and late changes stamped behind the cursor within the lookback.
//!
//! After every run: the cursor never moved back, and never passed a change that was not
//! enqueued. At the end, once the DAM is healthy: every change was enqueued at least once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use shared::poller::{PollError, Poller, PollerSettings, RunReport, StopReason};
use shared::store::{CursorStore, LeaseStore};
use shared::testing::{MemoryChangeQueue, MemorySource, MemoryStore};

const START: i64 = 1_000_000;
const LOOKBACK: i64 = 5_000;
const LAG: i64 = 1_000;
const CURSOR: &str = "reconcile";

#[derive(Debug, Clone)]
enum Step {
    /// One run; `fail_at`: the k-th DAM call of the run fails transiently.
    Run {
        fail_at: Option<u64>,
    },
    /// Two runs whose leases do not exclude each other (one expired), interleaved page by page.
    RunPair {
        fail_at: Option<u64>,
    },
    /// A change stamped `delay` ms in the past (a late-indexed change when > 0).
    Upsert {
        id: u8,
        delay: i64,
    },
    Tick {
        ms: i64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => proptest::option::weighted(0.3, 1u64..4).prop_map(|fail_at| Step::Run { fail_at }),
        1 => proptest::option::weighted(0.3, 1u64..4).prop_map(|fail_at| Step::RunPair { fail_at }),
        4 => (0u8..24, 0i64..=(LAG + LOOKBACK)).prop_map(|(id, delay)| Step::Upsert { id, delay }),
        2 => (1i64..8_000).prop_map(|ms| Step::Tick { ms }),
    ]
}

#[derive(Debug, Clone)]
struct History {
    /// Initial assets: modified time offsets before START (ties allowed).
    initial: Vec<i64>,
    page_size: usize,
    max_dam_calls: u32,
    steps: Vec<Step>,
}

fn history() -> impl Strategy<Value = History> {
    (
        proptest::collection::vec(0i64..30_000, 0..20),
        1usize..6,
        1u32..5,
        proptest::collection::vec(step(), 1..14),
    )
        .prop_map(|(initial, page_size, max_dam_calls, steps)| History {
            initial: initial
                .into_iter()
                .map(|o| START - o / 1000 * 1000)
                .collect(),
            page_size,
            max_dam_calls,
            steps,
        })
}

fn at(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms as u64)
}

struct Model {
    source: Arc<MemorySource>,
    queue: Arc<MemoryChangeQueue>,
    store: Arc<MemoryStore>,
    settings: PollerSettings,
    now: i64,
    /// Current (modified, seq) per id, mirroring the DAM.
    dam: HashMap<String, (i64, i64)>,
    /// Every (id, seq) enqueued so far.
    enqueued: HashSet<(String, i64)>,
}

impl Model {
    fn poller(&self, leases: Arc<dyn LeaseStore>) -> Poller {
        let now = self.now;
        Poller::new(
            self.source.clone(),
            self.queue.clone(),
            self.store.clone(),
            leases,
            self.settings.clone(),
        )
        .with_clock(Arc::new(move || now))
    }

    fn upsert(&mut self, id: &str, modified: i64) {
        let (modified, seq) = match self.dam.get(id) {
            // A DAM's modified time never goes back for one asset.
            Some(&(m, s)) => (modified.max(m + 1), s + 1),
            None => (modified, 1),
        };
        self.dam.insert(id.to_owned(), (modified, seq));
        self.source.put(id, modified, seq);
    }

    async fn position(&self) -> Option<i64> {
        CursorStore::get(&*self.store, CURSOR)
            .await
            .unwrap()
            .map(|c| c.position_ms)
    }

    fn collect(&mut self) {
        for e in self.queue.drain() {
            let seq = e.version.expect("poller events carry the version").seq;
            self.enqueued.insert((e.asset_id, seq));
        }
    }

    fn was_enqueued(&self, id: &str, seq: i64) -> bool {
        self.enqueued.contains(&(id.to_owned(), seq))
    }

    /// The cursor passed no change that was not enqueued: every current change more than the
    /// lookback behind the cursor (so no later listing will re-read it) was enqueued.
    fn check_cursor(&self, before: Option<i64>, after: Option<i64>) -> Result<(), TestCaseError> {
        prop_assert!(
            after >= before,
            "cursor moved back: {before:?} -> {after:?}"
        );
        if let Some(position) = after {
            for (id, &(modified, seq)) in &self.dam {
                prop_assert!(
                    modified >= position - LOOKBACK || self.was_enqueued(id, seq),
                    "cursor {position} left {id}@{modified} (seq {seq}) unenqueued behind the lookback"
                );
            }
        }
        Ok(())
    }
}

fn outcome(result: Result<RunReport, PollError>) -> Result<RunReport, TestCaseError> {
    match result {
        Ok(r) => Ok(r),
        Err(PollError::Dam { source, report }) if source.is_retriable() => Ok(*report),
        Err(e) => Err(TestCaseError::fail(format!("unexpected poll error: {e}"))),
    }
}

async fn play(h: History) -> Result<(), TestCaseError> {
    let mut m = Model {
        source: Arc::new(MemorySource::default()),
        queue: Arc::new(MemoryChangeQueue::new()),
        store: Arc::new(MemoryStore::new()),
        settings: PollerSettings {
            lookback: Duration::from_millis(LOOKBACK as u64),
            safety_lag: Duration::from_millis(LAG as u64),
            page_size: h.page_size,
            max_dam_calls: h.max_dam_calls,
            deadline_margin: Duration::ZERO,
            ..PollerSettings::default()
        },
        now: START,
        dam: HashMap::new(),
        enqueued: HashSet::new(),
    };
    m.source.set_yield_between_pages(true);
    for (i, modified) in h.initial.iter().enumerate() {
        m.upsert(&format!("init{i}"), *modified);
    }
    let deadline = at(START + 1_000_000_000);
    for step in h.steps {
        match step {
            Step::Upsert { id, delay } => {
                let modified = m.now - delay;
                m.upsert(&format!("a{id}"), modified);
            }
            Step::Tick { ms } => m.now += ms,
            Step::Run { fail_at } => {
                if let Some(k) = fail_at {
                    m.source.fail_call(m.source.calls() + k);
                }
                let before = m.position().await;
                let poller = m.poller(m.store.clone());
                outcome(poller.run(at(m.now), deadline).await)?;
                m.collect();
                let after = m.position().await;
                m.check_cursor(before, after)?;
                m.now += 1;
            }
            Step::RunPair { fail_at } => {
                if let Some(k) = fail_at {
                    m.source.fail_call(m.source.calls() + k);
                }
                let before = m.position().await;
                let a = m.poller(Arc::new(MemoryStore::new()));
                let b = m.poller(Arc::new(MemoryStore::new()));
                let (ra, rb) =
                    futures::join!(a.run(at(m.now), deadline), b.run(at(m.now + 1), deadline));
                let (ra, rb) = (outcome(ra)?, outcome(rb)?);
                prop_assert!(ra.cursor_after_ms >= ra.cursor_before_ms);
                prop_assert!(rb.cursor_after_ms >= rb.cursor_before_ms);
                m.collect();
                let after = m.position().await;
                m.check_cursor(before, after)?;
                m.now += 2;
            }
        }
    }
    // No more changes: runs continue until a listing started from now on reads to its end
    // (possibly over several runs, each within its budget).
    let mut fresh_listing = false;
    for _ in 0..500 {
        m.now += LAG + 1;
        let before = m.position().await;
        let report = outcome(m.poller(m.store.clone()).run(at(m.now), deadline).await)?;
        m.collect();
        let after = m.position().await;
        m.check_cursor(before, after)?;
        fresh_listing |= !report.resumed;
        if report.stop == StopReason::Complete && fresh_listing {
            for (id, &(modified, seq)) in &m.dam {
                prop_assert!(
                    m.was_enqueued(id, seq),
                    "{id}@{modified} (seq {seq}) never enqueued"
                );
            }
            return Ok(());
        }
    }
    Err(TestCaseError::fail("the poller never finished a listing"))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_cursor_never_passes_an_unenqueued_change_and_every_change_is_enqueued(h in history()) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(play(h))?;
    }
}
