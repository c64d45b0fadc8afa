//! Behaviour every implementation of the state ports must share, run against the in-memory
//! store (`store_memory.rs`) and DynamoDB on moto (`store_dynamodb.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use shared::dam::{DamKind, Version};
use shared::store::{
    Advance, Applied, AssetState, AssetStateStore, Clock, Cursor, CursorStore, LeaseStore,
};

/// A settable clock, so expiry is tested without sleeping.
#[derive(Clone)]
pub struct TestClock(Arc<AtomicI64>);

impl TestClock {
    pub fn new() -> Self {
        TestClock(Arc::new(AtomicI64::new(1_800_000_000_000)))
    }

    pub fn clock(&self) -> Clock {
        let now = Arc::clone(&self.0);
        Arc::new(move || now.load(Ordering::SeqCst))
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

fn state(dam: DamKind, id: &str, modified_at_ms: i64, seq: i64, hash: &str) -> AssetState {
    AssetState {
        dam,
        asset_id: id.into(),
        applied_version: Version {
            modified_at_ms,
            seq,
        },
        content_hash: hash.into(),
        family: "packshot".into(),
        pim_code: format!("code_{id}"),
        updated_at_ms: 42,
        media_files: Default::default(),
    }
}

async fn stored(
    store: &(impl AssetStateStore + ?Sized),
    dam: DamKind,
    id: &str,
) -> Option<AssetState> {
    store
        .get_many(dam, &[id.to_owned()])
        .await
        .unwrap()
        .remove(id)
}

pub async fn asset_versions_only_move_forward(store: &(impl AssetStateStore + ?Sized)) {
    let bynder = DamKind::Bynder;
    let v1 = state(bynder, "a", 1_000, 0, "h1");
    let v2 = state(bynder, "a", 2_000, 0, "h2");
    assert_eq!(stored(store, bynder, "a").await, None);
    assert_eq!(store.record_applied(&v1).await.unwrap(), Applied::Written);
    assert_eq!(stored(store, bynder, "a").await, Some(v1.clone()));
    assert_eq!(store.record_applied(&v2).await.unwrap(), Applied::Written);
    assert_eq!(stored(store, bynder, "a").await, Some(v2.clone()));

    // Out of order and duplicate deliveries change nothing.
    assert_eq!(store.record_applied(&v1).await.unwrap(), Applied::Stale);
    let same_version = state(bynder, "a", 2_000, 0, "other");
    assert_eq!(
        store.record_applied(&same_version).await.unwrap(),
        Applied::Stale
    );
    assert_eq!(stored(store, bynder, "a").await, Some(v2.clone()));

    // The sequence number breaks ties on the modified time, and only then.
    let higher_seq = state(bynder, "a", 2_000, 1, "h3");
    assert_eq!(
        store.record_applied(&higher_seq).await.unwrap(),
        Applied::Written
    );
    let lower_seq = state(bynder, "a", 2_000, 0, "h4");
    assert_eq!(
        store.record_applied(&lower_seq).await.unwrap(),
        Applied::Stale
    );
    let later_lower_seq = state(bynder, "a", 2_001, -5, "h5");
    assert_eq!(
        store.record_applied(&later_lower_seq).await.unwrap(),
        Applied::Written
    );
    assert_eq!(
        stored(store, bynder, "a").await,
        Some(later_lower_seq.clone())
    );

    // Another DAM's asset with the same id is another asset.
    let cloudinary = state(DamKind::Cloudinary, "a", 1, 0, "c");
    assert_eq!(
        store.record_applied(&cloudinary).await.unwrap(),
        Applied::Written
    );
    assert_eq!(
        stored(store, DamKind::Cloudinary, "a").await,
        Some(cloudinary)
    );
    assert_eq!(stored(store, bynder, "a").await, Some(later_lower_seq));

    // Delete forgets the asset (and only that DAM's), so any version applies again.
    store.delete(bynder, "a").await.unwrap();
    store.delete(bynder, "never-stored").await.unwrap();
    assert_eq!(stored(store, bynder, "a").await, None);
    assert!(stored(store, DamKind::Cloudinary, "a").await.is_some());
    assert_eq!(store.record_applied(&v1).await.unwrap(), Applied::Written);
}

pub async fn concurrent_writers_leave_the_newest_version(store: &(impl AssetStateStore + ?Sized)) {
    let dam = DamKind::Cloudinary;
    for round in 0..10 {
        let id = format!("race-{round}");
        let older = state(dam, &id, 3_000, round, "older");
        let newer = state(dam, &id, 3_000, round + 1, "newer");
        let (a, b) = tokio::join!(store.record_applied(&older), store.record_applied(&newer));
        // Whatever the arrival order (the older one is Written or Stale), the newer version
        // is written and ends up stored.
        assert!(matches!(a.unwrap(), Applied::Written | Applied::Stale));
        assert_eq!(b.unwrap(), Applied::Written);
        assert_eq!(stored(store, dam, &id).await, Some(newer));
    }
}

pub async fn get_many_reads_across_batches(store: &(impl AssetStateStore + ?Sized)) {
    let dam = DamKind::Generic;
    for i in 0..150 {
        let s = state(dam, &format!("id-{i}"), 1_000 + i, i, &format!("h{i}"));
        assert_eq!(store.record_applied(&s).await.unwrap(), Applied::Written);
    }
    let mut ids: Vec<String> = (0..150).map(|i| format!("id-{i}")).collect();
    ids.extend((0..10).map(|i| format!("missing-{i}")));
    ids.extend((0..20).map(|i| format!("id-{i}"))); // duplicates
    let found = store.get_many(dam, &ids).await.unwrap();
    assert_eq!(found.len(), 150);
    for i in 0..150 {
        let s = &found[&format!("id-{i}")];
        assert_eq!(
            s.applied_version,
            Version {
                modified_at_ms: 1_000 + i,
                seq: i
            }
        );
        assert_eq!(s.content_hash, format!("h{i}"));
    }
    assert!(
        store
            .get_many(DamKind::Bynder, &ids)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.get_many(dam, &[]).await.unwrap().is_empty());
}

fn cursor(position_ms: i64, page_token: Option<&str>) -> Cursor {
    // The version is assigned by the store; a bogus one must be ignored.
    Cursor {
        position_ms,
        page_token: page_token.map(str::to_owned),
        version: 999,
    }
}

pub async fn cursors_advance_under_optimistic_lock(store: &(impl CursorStore + ?Sized)) {
    assert_eq!(store.get("dam").await.unwrap(), None);
    assert_eq!(
        store.advance("dam", cursor(100, None), None).await.unwrap(),
        Advance::Written { version: 1 }
    );
    let first = Cursor {
        position_ms: 100,
        page_token: None,
        version: 1,
    };
    assert_eq!(store.get("dam").await.unwrap(), Some(first.clone()));

    // Creating again, or advancing from a version that is not the stored one, conflicts.
    assert_eq!(
        store.advance("dam", cursor(200, None), None).await.unwrap(),
        Advance::Conflict {
            current: Some(first.clone())
        }
    );
    assert_eq!(
        store
            .advance("dam", cursor(200, None), Some(7))
            .await
            .unwrap(),
        Advance::Conflict {
            current: Some(first.clone())
        }
    );
    assert_eq!(
        store
            .advance("elsewhere", cursor(200, None), Some(1))
            .await
            .unwrap(),
        Advance::Conflict { current: None }
    );
    assert_eq!(store.get("elsewhere").await.unwrap(), None);

    assert_eq!(
        store
            .advance("dam", cursor(200, Some("page-2")), Some(1))
            .await
            .unwrap(),
        Advance::Written { version: 2 }
    );
    let second = Cursor {
        position_ms: 200,
        page_token: Some("page-2".into()),
        version: 2,
    };
    assert_eq!(store.get("dam").await.unwrap(), Some(second.clone()));

    // Never backwards, even with the right version.
    assert_eq!(
        store
            .advance("dam", cursor(199, None), Some(2))
            .await
            .unwrap(),
        Advance::Conflict {
            current: Some(second.clone())
        }
    );
    assert_eq!(store.get("dam").await.unwrap(), Some(second));

    // Same position (paging within one instant), then the page token is cleared.
    assert_eq!(
        store
            .advance("dam", cursor(200, Some("page-3")), Some(2))
            .await
            .unwrap(),
        Advance::Written { version: 3 }
    );
    assert_eq!(
        store
            .advance("dam", cursor(300, None), Some(3))
            .await
            .unwrap(),
        Advance::Written { version: 4 }
    );
    assert_eq!(
        store.get("dam").await.unwrap(),
        Some(Cursor {
            position_ms: 300,
            page_token: None,
            version: 4
        })
    );
}

pub async fn concurrent_advancers_never_both_win(store: &(impl CursorStore + ?Sized)) {
    let (a, b) = tokio::join!(
        store.advance("race", cursor(10, Some("a")), None),
        store.advance("race", cursor(20, Some("b")), None),
    );
    let outcomes = [a.unwrap(), b.unwrap()];
    let wins = outcomes
        .iter()
        .filter(|o| matches!(o, Advance::Written { .. }))
        .count();
    assert_eq!(wins, 1, "{outcomes:?}");
    for round in 1..=10u64 {
        let (a, b) = tokio::join!(
            store.advance("race", cursor(100 * round as i64, Some("a")), Some(round)),
            store.advance(
                "race",
                cursor(100 * round as i64 + 1, Some("b")),
                Some(round)
            ),
        );
        let outcomes = [a.unwrap(), b.unwrap()];
        let wins: Vec<_> = outcomes
            .iter()
            .filter(|o| matches!(o, Advance::Written { .. }))
            .collect();
        assert_eq!(
            wins,
            [&Advance::Written { version: round + 1 }],
            "{outcomes:?}"
        );
        let stored = store.get("race").await.unwrap().unwrap();
        let winner = if matches!(outcomes[0], Advance::Written { .. }) {
            "a"
        } else {
            "b"
        };
        assert_eq!(stored.page_token.as_deref(), Some(winner));
        assert_eq!(stored.version, round + 1);
    }
}

pub async fn leases_exclude_other_owners_until_expiry(
    store: &(impl LeaseStore + ?Sized),
    clock: &TestClock,
) {
    let ttl = Duration::from_secs(60);
    assert!(store.acquire("poller", "run-a", ttl).await.unwrap());
    assert!(!store.acquire("poller", "run-b", ttl).await.unwrap());
    // Another lease name is independent.
    assert!(store.acquire("other", "run-b", ttl).await.unwrap());

    // The holder renews, which pushes the expiry out.
    clock.advance(Duration::from_secs(50));
    assert!(store.acquire("poller", "run-a", ttl).await.unwrap());
    clock.advance(Duration::from_secs(50));
    assert!(!store.acquire("poller", "run-b", ttl).await.unwrap());

    // Expired: anyone may take it, and then the old holder is out.
    clock.advance(Duration::from_secs(11));
    assert!(store.acquire("poller", "run-b", ttl).await.unwrap());
    assert!(!store.acquire("poller", "run-a", ttl).await.unwrap());

    // Only the holder can release.
    assert!(!store.release("poller", "run-a").await.unwrap());
    assert!(!store.acquire("poller", "run-c", ttl).await.unwrap());
    assert!(store.release("poller", "run-b").await.unwrap());
    assert!(!store.release("poller", "run-b").await.unwrap());
    assert!(store.acquire("poller", "run-c", ttl).await.unwrap());
    assert!(!store.release("never-held", "run-c").await.unwrap());
}
