//! The state ports on DynamoDB, against a moto server reached through the SDK's standard
//! `AWS_ENDPOINT_URL` (see docs/state.md for how to run them). Each test makes its own table.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{AttributeValue, TimeToLiveStatus};
use shared::akeneo::StructureStore;
use shared::akeneo::model::{AssetFamily, FamilyStructure};
use shared::dam::{DamKind, Version};
use shared::store::dynamodb::{Client, DynamoStore, DynamoStructureStore};
use shared::store::{AssetState, AssetStateStore, CursorStore, LeaseStore, StateError};
use shared::testing::conformance::{self as store_conformance, TestClock};
use shared::testing::create_table;

async fn client() -> Client {
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        panic!(
            "AWS_ENDPOINT_URL is not set. These tests need a moto server: \
             `moto_server -H 127.0.0.1 -p 5057 &` then run with AWS_ENDPOINT_URL=http://127.0.0.1:5057 \
             AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test"
        );
    }
    Client::new(&shared::https::aws_config_from_env().await)
}

fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

/// A store on a fresh table, with a settable clock.
async fn fresh_store() -> (DynamoStore, TestClock) {
    let client = client().await;
    let table = unique_name("state");
    create_table(&client, &table).await.expect("create table");
    let clock = TestClock::new();
    (
        DynamoStore::new(client, table).with_clock(clock.clock()),
        clock,
    )
}

#[tokio::test]
async fn create_table_is_idempotent_and_enables_ttl() {
    let (store, _) = fresh_store().await;
    create_table(store.client(), store.table())
        .await
        .expect("second create");
    let ttl = store
        .client()
        .describe_time_to_live()
        .table_name(store.table())
        .send()
        .await
        .unwrap();
    let description = ttl.time_to_live_description().unwrap();
    assert_eq!(
        description.time_to_live_status(),
        Some(&TimeToLiveStatus::Enabled)
    );
    assert_eq!(description.attribute_name(), Some("expires_at"));
    let table = store
        .client()
        .describe_table()
        .table_name(store.table())
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = table
        .table()
        .unwrap()
        .key_schema()
        .iter()
        .map(|k| {
            (
                k.attribute_name().to_owned(),
                k.key_type().as_str().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [("pk".into(), "HASH".into()), ("sk".into(), "RANGE".into())]
    );
}

#[tokio::test]
async fn asset_versions_only_move_forward() {
    let (store, _) = fresh_store().await;
    store_conformance::asset_versions_only_move_forward(&store).await;
}

#[tokio::test]
async fn writes_keep_tombstones_and_same_second_edits() {
    let (store, _) = fresh_store().await;
    store_conformance::writes_keep_tombstones_and_same_second_edits(&store).await;
}

#[tokio::test]
async fn codes_resolve_to_live_assets() {
    let (store, _) = fresh_store().await;
    store_conformance::codes_resolve_to_live_assets(&store).await;
}

#[tokio::test]
async fn parked_versions_are_kept_per_asset() {
    let (store, _) = fresh_store().await;
    store_conformance::parked_versions_are_kept_per_asset(&store).await;
}

#[tokio::test]
async fn concurrent_writers_leave_the_newest_version() {
    let (store, _) = fresh_store().await;
    store_conformance::concurrent_writers_leave_the_newest_version(&store).await;
}

#[tokio::test]
async fn get_many_reads_across_batches() {
    let (store, _) = fresh_store().await;
    store_conformance::get_many_reads_across_batches(&store).await;
}

#[tokio::test]
async fn cursors_advance_under_optimistic_lock() {
    let (store, _) = fresh_store().await;
    store_conformance::cursors_advance_under_optimistic_lock(&store).await;
}

#[tokio::test]
async fn concurrent_advancers_never_both_win() {
    let (store, _) = fresh_store().await;
    store_conformance::concurrent_advancers_never_both_win(&store).await;
}

#[tokio::test]
async fn leases_exclude_other_owners_until_expiry() {
    let (store, clock) = fresh_store().await;
    store_conformance::leases_exclude_other_owners_until_expiry(&store, &clock).await;
}

#[tokio::test]
async fn lease_items_carry_the_ttl_attribute_for_cleanup() {
    let (store, _) = fresh_store().await;
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let real = DynamoStore::new(store.client().clone(), store.table());
    assert!(
        real.acquire("poller", "me", Duration::from_secs(120))
            .await
            .unwrap()
    );
    let item = raw_item(&store, "lease#poller", "lease")
        .await
        .expect("lease item");
    let AttributeValue::N(expires_at) = &item["expires_at"] else {
        panic!("{item:?}")
    };
    let expires_at: i64 = expires_at.parse().unwrap();
    assert!(
        (before + 120..=before + 122).contains(&expires_at),
        "{expires_at} vs {before}"
    );
}

fn structure(code: &str, label: &str) -> Arc<FamilyStructure> {
    Arc::new(FamilyStructure {
        family: AssetFamily {
            code: code.into(),
            labels: BTreeMap::from([("en_US".into(), label.into())]),
            attribute_as_main_media: Some("media".into()),
        },
        attributes: vec![],
        options: Default::default(),
    })
}

async fn raw_item(
    store: &DynamoStore,
    pk: &str,
    sk: &str,
) -> Option<std::collections::HashMap<String, AttributeValue>> {
    store
        .client()
        .get_item()
        .table_name(store.table())
        .key("pk", AttributeValue::S(pk.into()))
        .key("sk", AttributeValue::S(sk.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item()
        .cloned()
}

#[tokio::test]
async fn structures_are_cached_until_their_ttl_then_ignored() {
    let (store, clock) = fresh_store().await;
    let cache = DynamoStructureStore::new(&store, Duration::from_secs(60));
    assert_eq!(cache.get("packshot").await.unwrap(), None);
    cache.put(structure("packshot", "Packshot")).await.unwrap();
    cache.put(structure("banner", "Banner")).await.unwrap();
    assert_eq!(
        cache.get("packshot").await.unwrap(),
        Some(structure("packshot", "Packshot"))
    );

    clock.advance(Duration::from_secs(59));
    assert!(cache.get("packshot").await.unwrap().is_some());
    clock.advance(Duration::from_secs(2));
    // moto (like DynamoDB for up to ~48 h) still holds the expired item: the read filters it.
    assert!(
        raw_item(&store, "family#packshot", "structure")
            .await
            .is_some()
    );
    assert_eq!(cache.get("packshot").await.unwrap(), None);

    // A new put refreshes the entry.
    cache
        .put(structure("packshot", "Packshot v2"))
        .await
        .unwrap();
    assert_eq!(
        cache.get("packshot").await.unwrap(),
        Some(structure("packshot", "Packshot v2"))
    );
}

#[tokio::test]
async fn structures_expire_on_the_system_clock() {
    let (store, _) = fresh_store().await;
    // Production's default clock, not the test clock.
    let real = DynamoStore::new(store.client().clone(), store.table());
    let cache = DynamoStructureStore::new(&real, Duration::from_secs(1));
    cache.put(structure("short", "Short")).await.unwrap();
    assert!(cache.get("short").await.unwrap().is_some());
    // Expiry is rounded up to the next whole second, so 1 s of TTL lasts at most 2 s.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert!(
        raw_item(&store, "family#short", "structure")
            .await
            .is_some()
    );
    assert_eq!(cache.get("short").await.unwrap(), None);
}

#[tokio::test]
async fn invalidate_deletes_one_structure() {
    let (store, _) = fresh_store().await;
    let cache = DynamoStructureStore::new(&store, Duration::from_secs(60));
    cache.put(structure("a", "A")).await.unwrap();
    cache.put(structure("b", "B")).await.unwrap();
    cache.invalidate("a").await.unwrap();
    cache.invalidate("never-cached").await.unwrap();
    assert_eq!(cache.get("a").await.unwrap(), None);
    assert!(raw_item(&store, "family#a", "structure").await.is_none());
    assert_eq!(cache.get("b").await.unwrap(), Some(structure("b", "B")));
}

#[tokio::test]
async fn unreadable_cached_structures_are_misses() {
    let (store, _) = fresh_store().await;
    let cache = DynamoStructureStore::new(&store, Duration::from_secs(60));
    cache.put(structure("a", "A")).await.unwrap();
    store
        .client()
        .update_item()
        .table_name(store.table())
        .key("pk", AttributeValue::S("family#a".into()))
        .key("sk", AttributeValue::S("structure".into()))
        .update_expression("SET #s = :s")
        .expression_attribute_names("#s", "structure")
        .expression_attribute_values(":s", AttributeValue::S("{\"old\": true}".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(cache.get("a").await.unwrap(), None);
}

#[tokio::test]
async fn a_missing_table_is_a_permanent_error_not_a_stale_answer() {
    let store = DynamoStore::new(client().await, unique_name("missing"));
    let state = AssetState {
        dam: DamKind::Generic,
        asset_id: "a".into(),
        applied_version: Version {
            modified_at_ms: 1,
            seq: 0,
        },
        content_hash: String::new(),
        family: "f".into(),
        pim_code: "a".into(),
        updated_at_ms: 0,
        media_files: Default::default(),
        deleted: false,
        source_hash: String::new(),
    };
    let error = store.record_applied(&state).await.unwrap_err();
    assert!(matches!(error, StateError::Permanent(..)), "{error:?}");
    assert!(!error.is_retriable());
    // The SDK error stays reachable as the source, and its text stays in the message.
    assert!(std::error::Error::source(&error).is_some());
    assert!(
        error.to_string().contains("ResourceNotFoundException"),
        "{error}"
    );
    let error = store
        .get_many(DamKind::Generic, &["a".into()])
        .await
        .unwrap_err();
    assert!(!error.is_retriable(), "{error:?}");
    assert!(
        !store
            .acquire("l", "me", Duration::from_secs(1))
            .await
            .unwrap_err()
            .is_retriable()
    );
    assert!(
        !CursorStore::get(&store, "c")
            .await
            .unwrap_err()
            .is_retriable()
    );
    let cache = DynamoStructureStore::new(&store, Duration::from_secs(60));
    assert!(!cache.get("f").await.unwrap_err().is_retriable());
}
