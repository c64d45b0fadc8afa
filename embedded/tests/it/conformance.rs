//! The state-port conformance suite shared with the in-memory and DynamoDB adapters
//! (`shared::testing::conformance`), run against the SQLite store.

use embedded_store::SqliteStore;
use shared::testing::conformance::{self as store_conformance, TestClock};

fn fresh() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("state.db")).unwrap();
    (dir, store)
}

#[tokio::test]
async fn asset_versions_only_move_forward() {
    let (_dir, store) = fresh();
    store_conformance::asset_versions_only_move_forward(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_leave_the_newest_version() {
    let (_dir, store) = fresh();
    store_conformance::concurrent_writers_leave_the_newest_version(&store).await;
}

#[tokio::test]
async fn get_many_reads_across_batches() {
    let (_dir, store) = fresh();
    store_conformance::get_many_reads_across_batches(&store).await;
}

#[tokio::test]
async fn cursors_advance_under_optimistic_lock() {
    let (_dir, store) = fresh();
    store_conformance::cursors_advance_under_optimistic_lock(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_advancers_never_both_win() {
    let (_dir, store) = fresh();
    store_conformance::concurrent_advancers_never_both_win(&store).await;
}

#[tokio::test]
async fn leases_exclude_other_owners_until_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let store = SqliteStore::open(dir.path().join("state.db"))
        .unwrap()
        .with_clock(clock.clock());
    store_conformance::leases_exclude_other_owners_until_expiry(&store, &clock).await;
}

/// Two handles on one file (two processes in production) still never both win a cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_on_one_file_never_both_advance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let a = SqliteStore::open(&path).unwrap();
    let b = SqliteStore::open(&path).unwrap();
    use shared::store::{Advance, Cursor, CursorStore};
    let cursor = |p| Cursor {
        position_ms: p,
        page_token: None,
        version: 0,
    };
    for round in 0..20u64 {
        let expected = (round > 0).then_some(round);
        let (x, y) = tokio::join!(
            a.advance("c", cursor(round as i64 * 10), expected),
            b.advance("c", cursor(round as i64 * 10 + 1), expected),
        );
        let wins = [x.unwrap(), y.unwrap()]
            .iter()
            .filter(|o| matches!(o, Advance::Written { .. }))
            .count();
        assert_eq!(wins, 1, "round {round}");
    }
    assert_eq!(a.get("c").await.unwrap().unwrap().version, 20);
}

#[tokio::test]
async fn writes_keep_tombstones_and_same_second_edits() {
    let (_dir, store) = fresh();
    store_conformance::writes_keep_tombstones_and_same_second_edits(&store).await;
}

#[tokio::test]
async fn codes_resolve_to_live_assets() {
    let (_dir, store) = fresh();
    store_conformance::codes_resolve_to_live_assets(&store).await;
}

#[tokio::test]
async fn parked_versions_are_kept_per_asset() {
    let (_dir, store) = fresh();
    store_conformance::parked_versions_are_kept_per_asset(&store).await;
}

/// A file written before tombstones, fingerprints and parked versions existed is migrated when
/// opened: its states read as live with no fingerprint, resolve by code, and take tombstones.
#[tokio::test]
async fn files_from_before_tombstones_are_migrated_on_open() {
    use shared::dam::{DamKind, Version};
    use shared::store::{Applied, AssetStateStore};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE asset_state (
                dam TEXT NOT NULL, asset_id TEXT NOT NULL, modified_at_ms INTEGER NOT NULL,
                seq INTEGER NOT NULL, content_hash TEXT NOT NULL, family TEXT NOT NULL,
                pim_code TEXT NOT NULL, updated_at_ms INTEGER NOT NULL,
                media_files TEXT NOT NULL DEFAULT '{}',
                PRIMARY KEY (dam, asset_id)
            ) WITHOUT ROWID;
            INSERT INTO asset_state VALUES
                ('bynder', 'a-1', 1000, 0, 'h', 'packshot', 'a_1_0123456789', 5, '{}');",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    // A second handle on the migrated file adds nothing twice.
    drop(SqliteStore::open(&path).unwrap());
    let ids = vec!["a-1".to_owned()];
    let old = store.get_many(DamKind::Bynder, &ids).await.unwrap()["a-1"].clone();
    assert!(!old.deleted);
    assert_eq!(old.source_hash, "");
    assert_eq!(store.asset_count().await.unwrap(), 1);
    let found = store
        .find_by_codes("packshot", &["a_1_0123456789".to_owned()])
        .await
        .unwrap();
    assert_eq!(found["a_1_0123456789"], (DamKind::Bynder, "a-1".to_owned()));

    let tombstone = shared::store::AssetState {
        deleted: true,
        applied_version: Version {
            modified_at_ms: 2_000,
            seq: 0,
        },
        ..old
    };
    assert_eq!(
        store.record_applied(&tombstone).await.unwrap(),
        Applied::Written
    );
    assert_eq!(
        store.asset_count().await.unwrap(),
        0,
        "tombstones are not synced assets"
    );
    assert!(
        store
            .find_by_codes("packshot", &["a_1_0123456789".to_owned()])
            .await
            .unwrap()
            .is_empty()
    );
    store
        .record_parked(DamKind::Bynder, "a-1", tombstone.applied_version)
        .await
        .unwrap();
    assert_eq!(
        store.parked_many(DamKind::Bynder, &ids).await.unwrap()["a-1"],
        tombstone.applied_version
    );
}
