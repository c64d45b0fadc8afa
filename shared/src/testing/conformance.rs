//! Behaviour every implementation of the state ports must share, run against the in-memory
//! store, DynamoDB on moto (both in `shared/tests`) and SQLite (`embedded/tests`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use std::collections::HashMap;

use crate::dam::{DamKind, Version};
use crate::store::{
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

impl Default for TestClock {
    fn default() -> Self {
        Self::new()
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
        deleted: false,
        source_hash: String::new(),
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
    let same_version = state(bynder, "a", 2_000, 0, "h2");
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

fn tombstone(dam: DamKind, id: &str, modified_at_ms: i64) -> AssetState {
    AssetState {
        deleted: true,
        content_hash: String::new(),
        ..state(dam, id, modified_at_ms, 0, "")
    }
}

/// The write rule ([`AssetState::may_be_replaced_by`]): tombstones, same-second edits, repeats.
pub async fn writes_keep_tombstones_and_same_second_edits(store: &(impl AssetStateStore + ?Sized)) {
    let dam = DamKind::Cloudinary;
    let v2 = state(dam, "t", 2_000, 0, "h1");
    assert_eq!(store.record_applied(&v2).await.unwrap(), Applied::Written);

    // Same second, same version: another content hash or another DAM fingerprint is an edit.
    let edited = state(dam, "t", 2_000, 0, "h2");
    assert_eq!(
        store.record_applied(&edited).await.unwrap(),
        Applied::Written
    );
    assert_eq!(store.record_applied(&edited).await.unwrap(), Applied::Stale);
    let fingerprinted = AssetState {
        source_hash: "f1".into(),
        ..edited.clone()
    };
    assert_eq!(
        store.record_applied(&fingerprinted).await.unwrap(),
        Applied::Written
    );
    assert_eq!(
        store.record_applied(&fingerprinted).await.unwrap(),
        Applied::Stale
    );
    let unfingerprinted_again = edited.clone();
    assert_eq!(
        store.record_applied(&unfingerprinted_again).await.unwrap(),
        Applied::Written
    );
    assert_eq!(stored(store, dam, "t").await, Some(edited.clone()));
    // An older version is stale whatever its content.
    let older = state(dam, "t", 1_999, 9, "h9");
    assert_eq!(store.record_applied(&older).await.unwrap(), Applied::Stale);

    // A deletion at the same version is a change of content; then the tombstone is kept.
    let dead = tombstone(dam, "t", 2_000);
    assert_eq!(store.record_applied(&dead).await.unwrap(), Applied::Written);
    assert_eq!(stored(store, dam, "t").await, Some(dead.clone()));
    assert_eq!(store.record_applied(&dead).await.unwrap(), Applied::Stale);
    let later_dead = tombstone(dam, "t", 3_000);
    assert_eq!(
        store.record_applied(&later_dead).await.unwrap(),
        Applied::Written
    );
    let older_dead = tombstone(dam, "t", 2_500);
    assert_eq!(
        store.record_applied(&older_dead).await.unwrap(),
        Applied::Stale
    );
    assert_eq!(stored(store, dam, "t").await, Some(later_dead.clone()));

    // A live state replaces a tombstone whatever its version: the consumer writes one only
    // after a DAM read confirmed the asset exists again.
    let revived = AssetState {
        source_hash: "f2".into(),
        ..state(dam, "t", 2_100, 0, "h3")
    };
    assert_eq!(
        store.record_applied(&revived).await.unwrap(),
        Applied::Written
    );
    assert_eq!(stored(store, dam, "t").await, Some(revived));

    // A tombstone is a state like any other: a first write may be one.
    let first_dead = tombstone(dam, "u", 1_000);
    assert_eq!(
        store.record_applied(&first_dead).await.unwrap(),
        Applied::Written
    );
    assert_eq!(stored(store, dam, "u").await, Some(first_dead));
}

fn codes(codes: &[&str]) -> Vec<String> {
    codes.iter().map(|c| (*c).to_owned()).collect()
}

fn in_family(dam: DamKind, id: &str, modified_at_ms: i64, family: &str, code: &str) -> AssetState {
    AssetState {
        family: family.into(),
        pim_code: code.into(),
        ..state(dam, id, modified_at_ms, 0, &format!("h{modified_at_ms}"))
    }
}

/// The reverse index: PIM codes resolve to the live DAM asset written under them, in their
/// family only; a tombstone, a moved asset's old code and a refused write resolve to nothing.
pub async fn codes_resolve_to_live_assets(store: &(impl AssetStateStore + ?Sized)) {
    let uuid = "7f1c9d2e-1b2a-4c3d-9e8f-0a1b2c3d4e5f";
    let bynder = DamKind::Bynder;
    let code = "7f1c9d2e_1b2a_4c3d_9e8f_0a1b2c3d4e5f_3d1f0a9b2c";
    store
        .record_applied(&in_family(bynder, uuid, 1_000, "packshot", code))
        .await
        .unwrap();
    store
        .record_applied(&in_family(
            DamKind::Generic,
            "g1",
            1_000,
            "packshot",
            "sku_g1",
        ))
        .await
        .unwrap();
    store
        .record_applied(&in_family(
            DamKind::Generic,
            "g2",
            1_000,
            "lifestyle",
            "sku_g2",
        ))
        .await
        .unwrap();
    let found = store
        .find_by_codes("packshot", &codes(&[code, "sku_g1", "sku_g2", "nobody"]))
        .await
        .unwrap();
    assert_eq!(
        found,
        HashMap::from([
            (code.to_owned(), (bynder, uuid.to_owned())),
            ("sku_g1".to_owned(), (DamKind::Generic, "g1".to_owned())),
        ])
    );
    assert!(
        store
            .find_by_codes("packshot", &[])
            .await
            .unwrap()
            .is_empty()
    );

    // A refused (older) write does not claim a code.
    assert_eq!(
        store
            .record_applied(&in_family(
                DamKind::Generic,
                "g1",
                500,
                "packshot",
                "sku_old"
            ))
            .await
            .unwrap(),
        Applied::Stale
    );
    assert!(
        store
            .find_by_codes("packshot", &codes(&["sku_old"]))
            .await
            .unwrap()
            .is_empty()
    );

    // A moved asset is found under its new code only.
    store
        .record_applied(&in_family(
            DamKind::Generic,
            "g1",
            2_000,
            "packshot",
            "sku_g1_new",
        ))
        .await
        .unwrap();
    let found = store
        .find_by_codes("packshot", &codes(&["sku_g1", "sku_g1_new"]))
        .await
        .unwrap();
    assert_eq!(
        found,
        HashMap::from([("sku_g1_new".to_owned(), (DamKind::Generic, "g1".to_owned()))])
    );

    // A tombstone is not found; a detached state (left the mapping) neither.
    store
        .record_applied(&tombstone(bynder, uuid, 2_000))
        .await
        .unwrap();
    let detached = AssetState {
        family: String::new(),
        pim_code: String::new(),
        ..state(DamKind::Generic, "g2", 2_000, 0, "")
    };
    store.record_applied(&detached).await.unwrap();
    assert!(
        store
            .find_by_codes("packshot", &codes(&[code]))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .find_by_codes("lifestyle", &codes(&["sku_g2"]))
            .await
            .unwrap()
            .is_empty()
    );

    // Another asset taking a freed code is found under it.
    store
        .record_applied(&in_family(
            DamKind::Generic,
            "g3",
            3_000,
            "packshot",
            "sku_g1",
        ))
        .await
        .unwrap();
    assert_eq!(
        store
            .find_by_codes("packshot", &codes(&["sku_g1"]))
            .await
            .unwrap(),
        HashMap::from([("sku_g1".to_owned(), (DamKind::Generic, "g3".to_owned()))])
    );
    // A forgotten asset is not found.
    store.delete(DamKind::Generic, "g1").await.unwrap();
    assert!(
        store
            .find_by_codes("packshot", &codes(&["sku_g1_new"]))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Parked versions: recorded per DAM asset, never moved backwards, forgotten with the asset.
pub async fn parked_versions_are_kept_per_asset(store: &(impl AssetStateStore + ?Sized)) {
    let v = |modified_at_ms, seq| Version {
        modified_at_ms,
        seq,
    };
    let dam = DamKind::Generic;
    let ids = codes(&["p1", "p2", "p#3", "never"]);
    assert!(store.parked_many(dam, &ids).await.unwrap().is_empty());
    store.record_parked(dam, "p1", v(2_000, 1)).await.unwrap();
    store.record_parked(dam, "p#3", v(5, 0)).await.unwrap();
    store
        .record_parked(DamKind::Bynder, "p2", v(9, 0))
        .await
        .unwrap();
    assert_eq!(
        store.parked_many(dam, &ids).await.unwrap(),
        HashMap::from([("p1".to_owned(), v(2_000, 1)), ("p#3".to_owned(), v(5, 0)),])
    );
    // A late letter of an older version keeps the newer one; a newer one replaces it.
    store.record_parked(dam, "p1", v(2_000, 0)).await.unwrap();
    assert_eq!(
        store.parked_many(dam, &codes(&["p1"])).await.unwrap()["p1"],
        v(2_000, 1)
    );
    store.record_parked(dam, "p1", v(3_000, 0)).await.unwrap();
    assert_eq!(
        store.parked_many(dam, &codes(&["p1", "p1"])).await.unwrap(),
        HashMap::from([("p1".to_owned(), v(3_000, 0))])
    );
    // Parking does not create or change an applied state.
    assert_eq!(stored(store, dam, "p1").await, None);
    store.delete(dam, "p1").await.unwrap();
    assert_eq!(
        store.parked_many(dam, &ids).await.unwrap(),
        HashMap::from([("p#3".to_owned(), v(5, 0))])
    );
}
