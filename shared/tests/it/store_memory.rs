//! The state-port conformance suite against the in-memory store.

use shared::testing::MemoryStore;
use shared::testing::conformance::{self as store_conformance, TestClock};

#[tokio::test]
async fn asset_versions_only_move_forward() {
    store_conformance::asset_versions_only_move_forward(&MemoryStore::new()).await;
}

#[tokio::test]
async fn concurrent_writers_leave_the_newest_version() {
    store_conformance::concurrent_writers_leave_the_newest_version(&MemoryStore::new()).await;
}

#[tokio::test]
async fn get_many_reads_across_batches() {
    store_conformance::get_many_reads_across_batches(&MemoryStore::new()).await;
}

#[tokio::test]
async fn cursors_advance_under_optimistic_lock() {
    store_conformance::cursors_advance_under_optimistic_lock(&MemoryStore::new()).await;
}

#[tokio::test]
async fn concurrent_advancers_never_both_win() {
    store_conformance::concurrent_advancers_never_both_win(&MemoryStore::new()).await;
}

#[tokio::test]
async fn leases_exclude_other_owners_until_expiry() {
    let clock = TestClock::new();
    let store = MemoryStore::new().with_clock(clock.clock());
    store_conformance::leases_exclude_other_owners_until_expiry(&store, &clock).await;
}

#[tokio::test]
async fn writes_keep_tombstones_and_same_second_edits() {
    store_conformance::writes_keep_tombstones_and_same_second_edits(&MemoryStore::new()).await;
}

#[tokio::test]
async fn codes_resolve_to_live_assets() {
    store_conformance::codes_resolve_to_live_assets(&MemoryStore::new()).await;
}

#[tokio::test]
async fn parked_versions_are_kept_per_asset() {
    store_conformance::parked_versions_are_kept_per_asset(&MemoryStore::new()).await;
}
