//! Unit tests of the pure steps and of the pipeline over in-memory ports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde_json::json;
use tokio::time::Instant;

use super::*;
use crate::akeneo::{AkeneoError, Asset, FamilyStructure, ItemFailure, ItemOutcome, Written};
use crate::dam::{
    AssetSource, ChangeEvent, ChangeKind, DamAsset, DamError, DamKind, Fetched, Page, PageToken,
    Version,
};
use crate::store::{AssetState, AssetStateStore, is_newer};
use crate::testing::{MemoryDeadLetters, MemoryStore};
use crate::time::now_ms;

const MAPPING: &str = r#"
[settings]
create_missing_options = false
code = "{{id}}"

[[route]]
family = "packshot"
when = [ { field = "fields.kind", equals = "packshot" } ]
on_delete = "delete"

[route.values.product_ref]
field = "fields.sku"

[route.values.main_colors]
field = "fields.colors"
"#;

fn structure() -> FamilyStructure {
    serde_json::from_value(json!({
        "family": { "code": "packshot" },
        "attributes": [
            { "code": "product_ref", "type": "text" },
            { "code": "main_colors", "type": "multiple_options" }
        ],
        "options": { "main_colors": [ { "code": "red" }, { "code": "blue" } ] }
    }))
    .unwrap()
}

fn v(ms: i64) -> Version {
    Version {
        modified_at_ms: ms,
        seq: 0,
    }
}

fn dam_asset(id: &str, version: i64, sku: &str) -> DamAsset {
    DamAsset {
        dam: DamKind::Generic,
        id: id.into(),
        version: v(version),
        fields: json!({ "id": id, "fields": { "kind": "packshot", "sku": sku, "colors": ["red"] } }),
    }
}

fn thin(id: &str, version: i64) -> ChangeEvent {
    ChangeEvent {
        dam: DamKind::Generic,
        asset_id: id.into(),
        kind: ChangeKind::Upsert,
        version: Some(v(version)),
        asset: None,
        dedupe_key: format!("{id}:{version}"),
        received_at_ms: 1,
    }
}

fn message(n: usize, event: &ChangeEvent) -> InboundMessage {
    InboundMessage {
        receive_count: 1,
        id: format!("m{n}"),
        body: serde_json::to_string(event).unwrap(),
    }
}

// ---- pure steps ----

#[test]
fn decode_refuses_garbage_empty_ids_and_contradictions() {
    assert!(decode(&serde_json::to_string(&thin("a", 1)).unwrap()).is_ok());
    assert!(decode("not json").unwrap_err().contains("undecodable"));
    assert!(decode(&serde_json::to_string(&thin(" ", 1)).unwrap()).is_err());
    let mut wrong = thin("a", 1);
    wrong.asset = Some(dam_asset("b", 1, "AB-1"));
    assert!(decode(&serde_json::to_string(&wrong).unwrap()).is_err());
}

#[test]
fn coalesce_keeps_the_newest_event_and_every_message_id() {
    let messages = vec![
        message(0, &thin("a", 1)),
        message(1, &thin("a", 3)),
        InboundMessage {
            receive_count: 1,
            id: "junk".into(),
            body: "{".into(),
        },
        message(2, &thin("b", 1)),
        message(3, &thin("a", 2)),
    ];
    let (changes, poison) = coalesce(messages.clone());
    assert_eq!(poison.len(), 1);
    assert_eq!(poison[0].message.id, "junk");
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0].asset_id, "a");
    assert_eq!(changes[0].event.version, Some(v(3)));
    assert_eq!(changes[0].message_ids, ["m0", "m1", "m3"]);
    assert_eq!(changes[0].body, messages[1].body);
    assert_eq!(changes[0].source_id, "m1");
    assert_eq!(changes[1].message_ids, ["m2"]);
}

#[test]
fn coalesce_prefers_a_full_asset_at_equal_version() {
    let mut full = thin("a", 2);
    full.asset = Some(dam_asset("a", 2, "AB-1"));
    let (changes, _) = coalesce(vec![message(0, &full), message(1, &thin("a", 2))]);
    assert!(changes[0].event.asset.is_some());
}

#[test]
fn guard_applies_only_strictly_newer_versions() {
    let state = AssetState {
        dam: DamKind::Generic,
        asset_id: "a".into(),
        applied_version: v(5),
        content_hash: "h".into(),
        family: "packshot".into(),
        pim_code: "a".into(),
        updated_at_ms: 0,
        media_files: Default::default(),
        deleted: false,
        source_hash: String::new(),
    };
    assert!(is_newer(v(1), None));
    assert!(!is_newer(v(5), Some(&state)));
    assert!(!is_newer(v(4), Some(&state)));
    assert!(is_newer(v(6), Some(&state)));
}

// ---- pipeline over fakes ----

#[derive(Default)]
struct FakeDam {
    assets: Mutex<HashMap<String, DamAsset>>,
    down: Mutex<bool>,
    fetches: Mutex<usize>,
}

#[async_trait]
impl AssetSource for FakeDam {
    fn dam(&self) -> DamKind {
        DamKind::Generic
    }

    async fn fetch(&self, ids: &[String]) -> Result<Vec<Fetched>, DamError> {
        *self.fetches.lock().unwrap() += 1;
        if *self.down.lock().unwrap() {
            return Err(DamError::Transient("503".into()));
        }
        let assets = self.assets.lock().unwrap();
        Ok(ids
            .iter()
            .map(|id| match assets.get(id) {
                Some(a) => Fetched::Found(a.clone()),
                None => Fetched::Gone(id.clone()),
            })
            .collect())
    }

    fn list_changed(
        &self,
        _since: Option<SystemTime>,
        _resume: Option<PageToken>,
        _page_size: usize,
    ) -> BoxStream<'_, Result<Page, DamError>> {
        Box::pin(futures::stream::empty())
    }
}

struct FakePim {
    /// What the PIM answers for every family.
    structure: FamilyStructure,
    /// Codes the PIM answers 422 for.
    refuse: Mutex<Vec<String>>,
    /// Codes the PIM answers 503 for.
    unavailable: Mutex<Vec<String>>,
    upserts: Mutex<Vec<Vec<Asset>>>,
    /// (family, code) per upsert item.
    families: Mutex<Vec<(String, String)>>,
    deletes: Mutex<Vec<String>>,
    /// (file name, bytes) per upload.
    uploads: Mutex<Vec<(String, Vec<u8>)>>,
    /// Every bulk request fails as a whole with this error (e.g. 401 after the token replay).
    whole_request: Mutex<Option<AkeneoError>>,
}

impl Default for FakePim {
    fn default() -> Self {
        Self::with_structure(structure())
    }
}

impl FakePim {
    fn with_structure(structure: FamilyStructure) -> Self {
        Self {
            structure,
            refuse: Mutex::default(),
            unavailable: Mutex::default(),
            upserts: Mutex::default(),
            families: Mutex::default(),
            deletes: Mutex::default(),
            uploads: Mutex::default(),
            whole_request: Mutex::default(),
        }
    }
}

#[async_trait]
impl PimWriter for FakePim {
    async fn structure(
        &self,
        _family: &str,
        _deadline: Instant,
    ) -> Result<Option<Arc<FamilyStructure>>, AkeneoError> {
        Ok(Some(Arc::new(self.structure.clone())))
    }

    async fn forget_structure(&self, _family: &str) {}

    async fn create_options(
        &self,
        _family: &str,
        _attribute: &str,
        _codes: &[String],
        _deadline: Instant,
    ) -> Result<(), AkeneoError> {
        Ok(())
    }

    async fn upsert(&self, family: &str, assets: &[Asset], _: Instant) -> Vec<ItemOutcome> {
        if let Some(error) = &*self.whole_request.lock().unwrap() {
            let failure = ItemFailure {
                status: error.status(),
                message: error.to_string(),
                errors: vec![],
                retriable: error.is_retriable(),
                unknown_structure: false,
                whole_request: true,
                outcome_unknown: error.outcome_unknown(),
            };
            return assets.iter().map(|_| Err(failure.clone())).collect();
        }
        self.upserts.lock().unwrap().push(assets.to_vec());
        self.families
            .lock()
            .unwrap()
            .extend(assets.iter().map(|a| (family.to_string(), a.code.clone())));
        let refuse = self.refuse.lock().unwrap();
        let unavailable = self.unavailable.lock().unwrap();
        assets
            .iter()
            .map(|a| {
                let failure = |status, message: &str| ItemFailure {
                    status: Some(status),
                    message: message.into(),
                    errors: vec![],
                    retriable: status == 503,
                    unknown_structure: false,
                    whole_request: status != 422,
                    outcome_unknown: false,
                };
                if refuse.contains(&a.code) {
                    Err(failure(422, "Property \"product_ref\" is invalid"))
                } else if unavailable.contains(&a.code) {
                    Err(failure(503, "Service Unavailable"))
                } else {
                    Ok(Written::Created)
                }
            })
            .collect()
    }

    async fn delete(&self, family: &str, code: &str, _: Instant) -> Result<(), AkeneoError> {
        if let Some(AkeneoError::Http { status, .. }) = &*self.whole_request.lock().unwrap() {
            return Err(AkeneoError::Http {
                status: *status,
                route: "DELETE /api/rest/v1/asset-families/{family}/assets/{code}".into(),
                message: "The access token provided has expired.".into(),
                retry_after: None,
            });
        }
        self.deletes
            .lock()
            .unwrap()
            .push(format!("{family}/{code}"));
        Ok(())
    }

    async fn upload_media(&self, file: MediaFile, _: Instant) -> Result<String, AkeneoError> {
        let mut uploads = self.uploads.lock().unwrap();
        uploads.push((file.file_name.clone(), file.bytes.to_vec()));
        Ok(format!("media/{}/{}", uploads.len(), file.file_name))
    }
}

/// Files by URL; a URL it does not have answers 404 (permanent).
#[derive(Default)]
struct FakeFiles {
    files: Mutex<HashMap<String, Vec<u8>>>,
    downloads: Mutex<usize>,
}

#[async_trait]
impl MediaSource for FakeFiles {
    async fn download(&self, url: &str, max: u64, _: Instant) -> Result<MediaFile, MediaError> {
        *self.downloads.lock().unwrap() += 1;
        let files = self.files.lock().unwrap();
        let bytes = files.get(url).ok_or_else(|| MediaError::NotFound {
            url: url.into(),
            reason: "the server answered 404 Not Found".into(),
        })?;
        if bytes.len() as u64 > max {
            return Err(MediaError::Permanent {
                url: url.into(),
                reason: "too large".into(),
            });
        }
        Ok(MediaFile {
            file_name: url.rsplit('/').next().unwrap().into(),
            mime: "image/jpeg".into(),
            bytes: bytes.clone().into(),
        })
    }
}

struct Harness {
    dam: Arc<FakeDam>,
    pim: Arc<FakePim>,
    store: Arc<MemoryStore>,
    dlq: Arc<MemoryDeadLetters>,
    consumer: Consumer,
}

fn harness() -> Harness {
    let dam = Arc::new(FakeDam::default());
    let pim = Arc::new(FakePim::default());
    let store = Arc::new(MemoryStore::new());
    let dlq = Arc::new(MemoryDeadLetters::new());
    let mapping = Arc::new(Mapping::from_toml_str(MAPPING, "test").unwrap());
    let consumer =
        Consumer::new(store.clone(), mapping, pim.clone(), dlq.clone()).with_source(dam.clone());
    Harness {
        dam,
        pim,
        store,
        dlq,
        consumer,
    }
}

impl Harness {
    fn put(&self, asset: DamAsset) {
        self.dam
            .assets
            .lock()
            .unwrap()
            .insert(asset.id.clone(), asset);
    }

    fn upsert_calls(&self) -> usize {
        self.pim.upserts.lock().unwrap().len()
    }
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

#[tokio::test]
async fn duplicates_apply_once_and_a_redelivery_costs_no_pim_call() {
    let h = harness();
    h.put(dam_asset("a", 2, "AB-1"));
    let batch = vec![
        message(0, &thin("a", 2)),
        message(1, &thin("a", 2)),
        message(2, &thin("a", 1)),
    ];
    let out = h.consumer.process(batch.clone(), later()).await;
    assert!(out.retry.is_empty(), "{out:?}");
    assert_eq!(out.report.synced, 1);
    assert_eq!(h.upsert_calls(), 1);
    assert_eq!(h.pim.upserts.lock().unwrap()[0].len(), 1);

    let again = h.consumer.process(batch, later()).await;
    assert_eq!(again.report.stale, 1);
    assert_eq!(h.upsert_calls(), 1, "a redelivery must not reach the PIM");
}

#[tokio::test]
async fn a_newer_version_with_the_same_content_records_the_version_only() {
    let h = harness();
    h.put(dam_asset("a", 1, "AB-1"));
    h.consumer
        .process(vec![message(0, &thin("a", 1))], later())
        .await;
    h.put(dam_asset("a", 2, "AB-1"));
    let out = h
        .consumer
        .process(vec![message(1, &thin("a", 2))], later())
        .await;
    assert_eq!(out.report.skipped_unchanged, 1);
    assert_eq!(h.upsert_calls(), 1);
    let states = h
        .store
        .get_many(DamKind::Generic, &["a".to_string()])
        .await
        .unwrap();
    assert_eq!(states["a"].applied_version, v(2));
}

#[tokio::test]
async fn a_refused_item_is_dead_lettered_alone_with_the_pim_reason() {
    let h = harness();
    h.put(dam_asset("good", 1, "AB-1"));
    h.put(dam_asset("bad", 1, "AB-2"));
    h.pim.refuse.lock().unwrap().push("bad".into());
    let out = h
        .consumer
        .process(
            vec![message(0, &thin("good", 1)), message(1, &thin("bad", 1))],
            later(),
        )
        .await;
    assert!(out.retry.is_empty());
    assert_eq!(out.report.synced, 1);
    assert_eq!(out.dead_lettered.len(), 1);
    assert_eq!(out.dead_lettered[0].0, "m1");
    let letters = h.dlq.letters();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].reason.contains("product_ref"), "{letters:?}");
    assert_eq!(letters[0].body, message(1, &thin("bad", 1)).body);
}

#[tokio::test]
async fn poison_is_dead_lettered_and_the_rest_proceeds() {
    let h = harness();
    h.put(dam_asset("a", 1, "AB-1"));
    let poison = InboundMessage {
        receive_count: 1,
        id: "p".into(),
        body: "{\"dam\":\"nope\"}".into(),
    };
    let out = h
        .consumer
        .process(vec![poison, message(0, &thin("a", 1))], later())
        .await;
    assert!(out.retry.is_empty());
    assert_eq!(out.report.poison, 1);
    assert_eq!(out.report.synced, 1);
    assert_eq!(out.dead_lettered[0].0, "p");
}

#[tokio::test]
async fn a_failed_dead_letter_send_is_retried_instead() {
    let h = harness();
    h.dlq.set_failure(Some("throttled"));
    let poison = InboundMessage {
        receive_count: 1,
        id: "p".into(),
        body: "[]".into(),
    };
    let out = h.consumer.process(vec![poison], later()).await;
    assert_eq!(out.retry_ids(), ["p"]);
    assert!(out.retry[0].1.contains("throttled"), "{out:?}");
    assert!(out.dead_lettered.is_empty());
}

#[tokio::test]
async fn a_dam_outage_retries_the_messages_it_touches() {
    let h = harness();
    *h.dam.down.lock().unwrap() = true;
    let mut full = thin("b", 1);
    full.asset = Some(dam_asset("b", 1, "AB-2"));
    let out = h
        .consumer
        .process(vec![message(0, &thin("a", 1)), message(1, &full)], later())
        .await;
    assert_eq!(out.retry_ids(), ["m0"]);
    assert_eq!(out.report.synced, 1, "the full event needs no DAM read");
}

#[tokio::test]
async fn each_retried_message_carries_its_own_reason() {
    let h = harness();
    *h.dam.down.lock().unwrap() = true;
    h.pim.unavailable.lock().unwrap().push("b".into());
    let mut full = thin("b", 1);
    full.asset = Some(dam_asset("b", 1, "AB-2"));
    let out = h
        .consumer
        .process(
            vec![
                message(0, &thin("a", 1)),
                message(1, &full),
                message(2, &full),
            ],
            later(),
        )
        .await;
    assert_eq!(out.retry_ids(), ["m0", "m1", "m2"], "{out:?}");
    let reasons: HashMap<&str, &str> = out
        .retry
        .iter()
        .map(|(id, reason)| (id.as_str(), reason.as_str()))
        .collect();
    assert!(reasons["m0"].contains("503"), "{reasons:?}");
    assert!(reasons["m1"].contains("Service Unavailable"), "{reasons:?}");
    assert_ne!(reasons["m0"], reasons["m1"]);
    assert_eq!(
        reasons["m1"], reasons["m2"],
        "an asset's messages share its reason"
    );
}

#[tokio::test]
async fn an_expired_deadline_starts_no_call_and_retries_everything() {
    let h = harness();
    h.put(dam_asset("a", 1, "AB-1"));
    let out = h
        .consumer
        .process(
            vec![message(0, &thin("a", 1))],
            Instant::now() + Duration::from_secs(1),
        )
        .await;
    assert_eq!(out.retry_ids(), ["m0"]);
    assert_eq!(*h.dam.fetches.lock().unwrap(), 0);
    assert_eq!(h.upsert_calls(), 0);
}

#[tokio::test]
async fn a_dam_deletion_deletes_the_pim_asset_and_keeps_a_tombstone() {
    let h = harness();
    h.put(dam_asset("a", 1, "AB-1"));
    h.consumer
        .process(vec![message(0, &thin("a", 1))], later())
        .await;
    h.dam.assets.lock().unwrap().clear();
    let out = h
        .consumer
        .process(vec![message(1, &thin("a", 2))], later())
        .await;
    assert_eq!(out.report.deleted, 1, "{out:?}");
    assert_eq!(*h.pim.deletes.lock().unwrap(), ["packshot/a"]);
    let states = h
        .store
        .get_many(DamKind::Generic, &["a".to_string()])
        .await
        .unwrap();
    assert!(states["a"].deleted, "{states:?}");
    assert_eq!(states["a"].applied_version, v(2));
    // Its redelivery is a no-op.
    let out = h
        .consumer
        .process(vec![message(1, &thin("a", 2))], later())
        .await;
    assert_eq!(out.report.stale, 1, "{out:?}");
    assert_eq!(h.pim.deletes.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_late_full_event_after_a_delete_does_not_re_create_the_asset() {
    let h = harness();
    h.put(dam_asset("a", 2, "AB-2"));
    h.consumer
        .process(vec![message(0, &thin("a", 2))], later())
        .await;
    h.dam.assets.lock().unwrap().clear();
    let out = h
        .consumer
        .process(vec![message(1, &delete("a", Some(3), 5))], later())
        .await;
    assert_eq!(out.report.deleted, 1, "{out:?}");
    let upserts = h.upsert_calls();
    // A late older webhook, and a listing taken before the deletion but queued after it.
    for (n, event) in [carried("a", 1, "AB-1"), carried("a", 4, "AB-4")]
        .iter()
        .enumerate()
    {
        let out = h
            .consumer
            .process(vec![message(2 + n, event)], later())
            .await;
        assert!(
            out.retry.is_empty() && out.dead_lettered.is_empty(),
            "{out:?}"
        );
        assert_eq!(h.upsert_calls(), upserts, "{out:?}");
    }
    // Re-created in the DAM: written in full again.
    h.put(dam_asset("a", 6, "AB-6"));
    let out = h
        .consumer
        .process(vec![message(9, &thin("a", 6))], later())
        .await;
    assert_eq!(out.report.synced, 1, "{out:?}");
    assert_eq!(last_sku(&h), json!("AB-6"));
    let states = h
        .store
        .get_many(DamKind::Generic, &["a".to_string()])
        .await
        .unwrap();
    assert!(!states["a"].deleted);
}

#[tokio::test]
async fn a_dead_lettered_version_is_recorded_as_parked() {
    let h = harness();
    h.put(dam_asset("bad", 7, "AB-2"));
    h.pim.refuse.lock().unwrap().push("bad".into());
    let out = h
        .consumer
        .process(vec![message(0, &thin("bad", 7))], later())
        .await;
    assert_eq!(out.dead_lettered.len(), 1, "{out:?}");
    let parked = h
        .store
        .parked_many(DamKind::Generic, &["bad".to_string()])
        .await
        .unwrap();
    assert_eq!(parked["bad"], v(7));
}

#[tokio::test]
async fn unmapped_assets_are_skipped_not_failed() {
    let h = harness();
    let mut other = dam_asset("x", 1, "AB-1");
    other.fields = json!({ "id": "x", "fields": { "kind": "video" } });
    h.put(other);
    let out = h
        .consumer
        .process(vec![message(0, &thin("x", 1))], later())
        .await;
    assert_eq!(out.report.skipped_unmapped, 1);
    assert_eq!(out.report.failed, 0);
    assert!(out.retry.is_empty() && out.dead_lettered.is_empty());
}

#[tokio::test]
async fn a_lagging_dam_read_is_retried_not_applied() {
    let h = harness();
    h.put(dam_asset("a", 1, "AB-1"));
    let out = h
        .consumer
        .process(vec![message(0, &thin("a", 2))], later())
        .await;
    assert_eq!(out.retry_ids(), ["m0"]);
    assert_eq!(h.upsert_calls(), 0);
}

#[tokio::test]
async fn an_old_delete_event_does_not_delete_a_newer_asset() {
    let h = harness();
    h.put(dam_asset("a", 5, "AB-1"));
    h.consumer
        .process(vec![message(0, &thin("a", 5))], later())
        .await;
    let delete = ChangeEvent {
        kind: ChangeKind::Delete,
        ..thin("a", 3)
    };
    let out = h.consumer.process(vec![message(1, &delete)], later()).await;
    assert_eq!(out.report.stale, 1, "{out:?}");
    assert!(h.pim.deletes.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_clear_policy_patches_nulls_and_keeps_the_pim_asset() {
    let dam = Arc::new(FakeDam::default());
    let pim = Arc::new(FakePim::default());
    let mapping = MAPPING.replace(
        "on_delete = \"delete\"",
        "on_delete = { clear = [\"product_ref\"] }",
    );
    let consumer = Consumer::new(
        Arc::new(MemoryStore::new()),
        Arc::new(Mapping::from_toml_str(&mapping, "test").unwrap()),
        pim.clone(),
        Arc::new(MemoryDeadLetters::new()),
    )
    .with_source(dam.clone());
    dam.assets
        .lock()
        .unwrap()
        .insert("a".into(), dam_asset("a", 1, "AB-1"));
    consumer
        .process(vec![message(0, &thin("a", 1))], later())
        .await;
    dam.assets.lock().unwrap().remove("a");
    let delete = ChangeEvent {
        kind: ChangeKind::Delete,
        ..thin("a", 2)
    };
    let out = consumer.process(vec![message(1, &delete)], later()).await;
    assert_eq!(out.report.deleted, 1, "{out:?}");
    assert!(pim.deletes.lock().unwrap().is_empty());
    let upserts = pim.upserts.lock().unwrap();
    let cleared = &upserts.last().unwrap()[0];
    assert_eq!(cleared.code, "a");
    assert_eq!(
        cleared.values["product_ref"][0].data,
        serde_json::Value::Null
    );
    assert!(!cleared.values.contains_key("main_colors"));
}

// ---- media files ----

const MEDIA_MAPPING: &str = r#"
[[route]]
family = "packshot"
when = [ { field = "fields.kind", equals = "packshot" } ]

[route.values.product_ref]
field = "fields.sku"

[route.values.main_file]
field = "fields.file"
"#;

fn media_structure() -> FamilyStructure {
    serde_json::from_value(json!({
        "family": { "code": "packshot" },
        "attributes": [
            { "code": "product_ref", "type": "text" },
            { "code": "main_file", "type": "media_file" }
        ],
        "options": {}
    }))
    .unwrap()
}

fn media_asset(id: &str, version: i64, sku: &str, file: &str) -> DamAsset {
    DamAsset {
        dam: DamKind::Generic,
        id: id.into(),
        version: v(version),
        fields: json!({ "id": id, "fields": { "kind": "packshot", "sku": sku, "file": file } }),
    }
}

struct MediaHarness {
    dam: Arc<FakeDam>,
    pim: Arc<FakePim>,
    files: Arc<FakeFiles>,
    store: Arc<MemoryStore>,
    consumer: Consumer,
}

fn media_harness() -> MediaHarness {
    let dam = Arc::new(FakeDam::default());
    // A PIM whose packshot family has a media_file attribute.
    let pim = Arc::new(FakePim::with_structure(media_structure()));
    let files = Arc::new(FakeFiles::default());
    let store = Arc::new(MemoryStore::new());
    let consumer = Consumer::new(
        store.clone(),
        Arc::new(Mapping::from_toml_str(MEDIA_MAPPING, "test").unwrap()),
        pim.clone(),
        Arc::new(MemoryDeadLetters::new()),
    )
    .with_source(dam.clone())
    .with_media(files.clone());
    MediaHarness {
        dam,
        pim,
        files,
        store,
        consumer,
    }
}

impl MediaHarness {
    fn put(&self, asset: DamAsset) {
        self.dam
            .assets
            .lock()
            .unwrap()
            .insert(asset.id.clone(), asset);
    }

    fn file(&self, url: &str, bytes: &[u8]) {
        self.files
            .files
            .lock()
            .unwrap()
            .insert(url.into(), bytes.to_vec());
    }

    fn last_written(&self) -> Asset {
        self.pim.upserts.lock().unwrap().last().unwrap()[0].clone()
    }
}

#[tokio::test]
async fn a_media_file_is_uploaded_once_per_url_and_written_as_its_code() {
    let h = media_harness();
    h.file("https://cdn/a-1.jpg", b"first file");
    h.put(media_asset("a", 1, "AB-1", "https://cdn/a-1.jpg"));
    let out = h
        .consumer
        .process(vec![message(0, &thin("a", 1))], later())
        .await;
    assert_eq!(out.report.synced, 1, "{out:?}");
    assert_eq!(out.report.media_uploaded, 1);
    assert_eq!(
        *h.pim.uploads.lock().unwrap(),
        [("a-1.jpg".to_string(), b"first file".to_vec())]
    );
    let written = h.last_written();
    assert_eq!(
        written.values["main_file"][0].data,
        json!("media/1/a-1.jpg")
    );

    // Another value changes, the file does not: the stored code is reused, nothing downloaded.
    h.put(media_asset("a", 2, "AB-2", "https://cdn/a-1.jpg"));
    let out = h
        .consumer
        .process(vec![message(1, &thin("a", 2))], later())
        .await;
    assert_eq!(out.report.synced, 1, "{out:?}");
    assert_eq!(out.report.media_uploaded, 0);
    assert_eq!(*h.files.downloads.lock().unwrap(), 1);
    let written = h.last_written();
    assert_eq!(
        written.values["main_file"][0].data,
        json!("media/1/a-1.jpg")
    );
    assert_eq!(written.values["product_ref"][0].data, json!("AB-2"));

    // A new file URL: downloaded and uploaded; the state keeps only the current file's code.
    h.file("https://cdn/a-2.jpg", b"second file");
    h.put(media_asset("a", 3, "AB-2", "https://cdn/a-2.jpg"));
    let out = h
        .consumer
        .process(vec![message(2, &thin("a", 3))], later())
        .await;
    assert_eq!(out.report.media_uploaded, 1, "{out:?}");
    assert_eq!(
        h.last_written().values["main_file"][0].data,
        json!("media/2/a-2.jpg")
    );
    let state = &h
        .store
        .get_many(DamKind::Generic, &["a".to_string()])
        .await
        .unwrap()["a"];
    assert_eq!(
        state.media_files,
        std::collections::BTreeMap::from([(
            "https://cdn/a-2.jpg".to_string(),
            "media/2/a-2.jpg".to_string()
        )])
    );

    // Same content, newer version: no download, no upload, no PATCH.
    h.put(media_asset("a", 4, "AB-2", "https://cdn/a-2.jpg"));
    let patches = h.pim.upserts.lock().unwrap().len();
    let out = h
        .consumer
        .process(vec![message(3, &thin("a", 4))], later())
        .await;
    assert_eq!(out.report.skipped_unchanged, 1, "{out:?}");
    assert_eq!(*h.files.downloads.lock().unwrap(), 2);
    assert_eq!(h.pim.upserts.lock().unwrap().len(), patches);
}

#[tokio::test]
async fn assets_sharing_a_file_share_one_upload_and_a_missing_file_is_parked_on_its_last_delivery()
{
    let h = media_harness();
    h.file("https://cdn/shared.jpg", b"shared");
    h.put(media_asset("a", 1, "AB-1", "https://cdn/shared.jpg"));
    h.put(media_asset("b", 1, "AB-2", "https://cdn/shared.jpg"));
    h.put(media_asset("c", 1, "AB-3", "https://cdn/missing.jpg"));
    let out = h
        .consumer
        .process(
            vec![
                message(0, &thin("a", 1)),
                message(1, &thin("b", 1)),
                message(2, &thin("c", 1)),
            ],
            later(),
        )
        .await;
    assert_eq!(out.report.synced, 2, "{out:?}");
    assert_eq!(out.report.media_uploaded, 1);
    assert_eq!(h.pim.uploads.lock().unwrap().len(), 1);
    // The DAM still has `c`: its missing file is retried with the reason...
    assert!(out.dead_lettered.is_empty(), "{out:?}");
    let (id, reason) = &out.retry[0];
    assert_eq!(id, "m2");
    assert!(
        reason.contains("main_file") && reason.contains("404") && reason.contains("DAM still"),
        "{reason}"
    );
    // ...and parked with it on the queue's last delivery.
    let last = InboundMessage {
        receive_count: ConsumerSettings::default().max_receives,
        ..message(2, &thin("c", 1))
    };
    let out = h.consumer.process(vec![last], later()).await;
    let (id, reason) = &out.dead_lettered[0];
    assert_eq!(id, "m2");
    assert!(
        reason.contains("main_file") && reason.contains("404") && reason.contains("8 deliveries"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_media_404_for_an_asset_the_dam_has_deleted_is_that_deletion() {
    let h = media_harness();
    h.file("https://cdn/a1.jpg", b"one");
    h.put(media_asset("a", 1, "AB-1", "https://cdn/a1.jpg"));
    let out = h
        .consumer
        .process(vec![message(0, &thin("a", 1))], later())
        .await;
    assert_eq!(out.report.synced, 1, "{out:?}");
    // A new file is announced, then the asset is deleted before the consumer downloads it.
    let carried = ChangeEvent {
        asset: Some(media_asset("a", 2, "AB-1", "https://cdn/a2.jpg")),
        ..thin("a", 2)
    };
    h.dam.assets.lock().unwrap().clear();
    let out = h
        .consumer
        .process(vec![message(2, &carried)], later())
        .await;
    assert!(
        out.dead_lettered.is_empty() && out.retry.is_empty(),
        "{out:?}"
    );
    assert_eq!(out.report.deleted, 1, "{out:?}");
    assert_eq!(*h.pim.deletes.lock().unwrap(), ["packshot/a"]);
    // The same race for an asset never synced ends quietly too.
    let never = ChangeEvent {
        asset: Some(media_asset("b", 1, "AB-2", "https://cdn/b.jpg")),
        ..thin("b", 1)
    };
    let out = h.consumer.process(vec![message(3, &never)], later()).await;
    assert!(
        out.dead_lettered.is_empty() && out.retry.is_empty(),
        "{out:?}"
    );
    assert_eq!(out.report.skipped_unmapped, 1, "{out:?}");
}

// ---- assets leaving the mapping or changing family ----

const TWO_FAMILIES: &str = r#"
[[route]]
family = "packshot"
when = [ { field = "fields.kind", equals = "packshot" } ]
require = [ { field = "fields.sku", exists = true } ]
on_delete = "delete"

[route.values.product_ref]
field = "fields.sku"

[[route]]
family = "lifestyle"
when = [ { field = "fields.kind", equals = "lifestyle" } ]
on_delete = { clear = ["product_ref"] }

[route.values.product_ref]
field = "fields.sku"
"#;

fn two_family_harness() -> Harness {
    let dam = Arc::new(FakeDam::default());
    let pim = Arc::new(FakePim::default());
    let store = Arc::new(MemoryStore::new());
    let dlq = Arc::new(MemoryDeadLetters::new());
    let consumer = Consumer::new(
        store.clone(),
        Arc::new(Mapping::from_toml_str(TWO_FAMILIES, "test").unwrap()),
        pim.clone(),
        dlq.clone(),
    )
    .with_source(dam.clone());
    Harness {
        dam,
        pim,
        store,
        dlq,
        consumer,
    }
}

fn kind_asset(id: &str, version: i64, kind: &str, sku: Option<&str>) -> DamAsset {
    let mut fields = json!({ "kind": kind });
    if let Some(sku) = sku {
        fields["sku"] = json!(sku);
    }
    DamAsset {
        dam: DamKind::Generic,
        id: id.into(),
        version: v(version),
        fields: json!({ "id": id, "fields": fields }),
    }
}

#[tokio::test]
async fn an_asset_filtered_out_gets_its_family_delete_policy_and_stays_stale_for_old_events() {
    let h = two_family_harness();
    h.put(kind_asset("a", 1, "packshot", Some("AB-1")));
    h.consumer
        .process(vec![message(0, &thin("a", 1))], later())
        .await;
    // The SKU is removed: the product filter refuses the asset now.
    h.put(kind_asset("a", 2, "packshot", None));
    let out = h
        .consumer
        .process(vec![message(1, &thin("a", 2))], later())
        .await;
    assert_eq!(out.report.left_mapping, 1, "{out:?}");
    assert_eq!(*h.pim.deletes.lock().unwrap(), ["packshot/a"]);
    let states = h
        .store
        .get_many(DamKind::Generic, &["a".to_string()])
        .await
        .unwrap();
    assert!(states["a"].is_detached());
    assert_eq!(states["a"].applied_version, v(2));

    // A late full event of version 1 (which matched) must not bring it back.
    let mut old = thin("a", 1);
    old.asset = Some(kind_asset("a", 1, "packshot", Some("AB-1")));
    let out = h.consumer.process(vec![message(2, &old)], later()).await;
    assert_eq!(out.report.stale, 1, "{out:?}");
    assert_eq!(h.upsert_calls(), 1);

    // Still filtered out: nothing more to retire.
    h.put(kind_asset("a", 3, "packshot", None));
    let out = h
        .consumer
        .process(vec![message(3, &thin("a", 3))], later())
        .await;
    assert_eq!(out.report.skipped_unmapped, 1, "{out:?}");
    assert_eq!(h.pim.deletes.lock().unwrap().len(), 1);

    // The SKU comes back: written in full again.
    h.put(kind_asset("a", 4, "packshot", Some("AB-1")));
    let out = h
        .consumer
        .process(vec![message(4, &thin("a", 4))], later())
        .await;
    assert_eq!(out.report.synced, 1, "{out:?}");
    assert_eq!(h.upsert_calls(), 2);

    // And a DAM deletion after it left the mapping again costs no PIM call.
    h.put(kind_asset("a", 5, "video", None));
    h.consumer
        .process(vec![message(5, &thin("a", 5))], later())
        .await;
    assert_eq!(h.pim.deletes.lock().unwrap().len(), 2);
    h.dam.assets.lock().unwrap().clear();
    let out = h
        .consumer
        .process(vec![message(6, &thin("a", 6))], later())
        .await;
    assert_eq!(out.report.deleted, 1, "{out:?}");
    assert_eq!(h.pim.deletes.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_family_change_writes_the_new_asset_then_applies_the_old_family_policy() {
    let h = two_family_harness();
    h.put(kind_asset("a", 1, "packshot", Some("AB-1")));
    h.put(kind_asset("b", 1, "lifestyle", Some("AB-2")));
    h.consumer
        .process(
            vec![message(0, &thin("a", 1)), message(1, &thin("b", 1))],
            later(),
        )
        .await;

    h.put(kind_asset("a", 2, "lifestyle", Some("AB-1")));
    h.put(kind_asset("b", 2, "packshot", Some("AB-2")));
    let out = h
        .consumer
        .process(
            vec![message(2, &thin("a", 2)), message(3, &thin("b", 2))],
            later(),
        )
        .await;
    assert_eq!(out.report.synced, 2, "{out:?}");
    assert_eq!(out.report.moved, 2);
    // a: packshot's policy is delete. b: lifestyle's policy clears product_ref.
    assert_eq!(*h.pim.deletes.lock().unwrap(), ["packshot/a"]);
    let families = h.pim.families.lock().unwrap().clone();
    assert!(
        families.contains(&("lifestyle".into(), "a".into())),
        "{families:?}"
    );
    assert!(
        families.contains(&("packshot".into(), "b".into())),
        "{families:?}"
    );
    let cleared = h
        .pim
        .upserts
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .filter(|a| a.code == "b" && a.values["product_ref"][0].data.is_null())
        .count();
    assert_eq!(cleared, 1, "the old lifestyle asset b is cleared");
    let states = h
        .store
        .get_many(DamKind::Generic, &["a".to_string(), "b".to_string()])
        .await
        .unwrap();
    assert_eq!(states["a"].family, "lifestyle");
    assert_eq!(states["b"].family, "packshot");
    assert!(h.dlq.letters().is_empty());
}

// ---- what the metrics and logs are built from ----

#[tokio::test]
async fn the_outcome_counts_dead_letters_sent_and_freshness_per_synced_asset() {
    let h = harness();
    let modified = now_ms() - 5_000;
    h.put(dam_asset("good", modified, "AB-1"));
    h.put(dam_asset("bad", modified, "AB-2"));
    h.pim.refuse.lock().unwrap().push("bad".into());
    let poison = InboundMessage {
        receive_count: 1,
        id: "p".into(),
        body: "[]".into(),
    };
    let out = h
        .consumer
        .process(
            vec![
                poison,
                message(0, &thin("good", modified)),
                message(1, &thin("bad", modified)),
            ],
            later(),
        )
        .await;
    assert_eq!(out.report.synced, 1);
    assert_eq!(
        out.report.dead_letters_sent, 2,
        "the poison and the refused asset"
    );
    assert_eq!(out.freshness_ms.len(), 1, "one sample per synced asset");
    assert!(
        (5_000..65_000).contains(&out.freshness_ms[0]),
        "{:?}",
        out.freshness_ms
    );
    // The fake PIM keeps no call counters.
    assert_eq!(out.pim, CallCounts::default());

    // Recorded but not written: no freshness sample.
    h.put(dam_asset("good", modified + 1, "AB-1"));
    let out = h
        .consumer
        .process(vec![message(2, &thin("good", modified + 1))], later())
        .await;
    assert_eq!(out.report.skipped_unchanged, 1);
    assert!(out.freshness_ms.is_empty());
}

#[tokio::test]
async fn an_unsent_dead_letter_is_not_counted_as_sent() {
    let h = harness();
    h.dlq.set_failure(Some("throttled"));
    let poison = InboundMessage {
        receive_count: 1,
        id: "p".into(),
        body: "[]".into(),
    };
    let out = h.consumer.process(vec![poison], later()).await;
    assert_eq!(out.report.dead_letters_sent, 0);
}

#[tokio::test]
async fn each_asset_logs_one_line_with_its_dam_id_family_and_outcome() {
    let h = harness();
    h.put(dam_asset("good", 1, "AB-1"));
    h.put(dam_asset("bad", 1, "AB-2"));
    h.pim.refuse.lock().unwrap().push("bad".into());
    let logs = super::test_logs::capture();
    let poison = InboundMessage {
        receive_count: 1,
        id: "p".into(),
        body: "[]".into(),
    };
    h.consumer
        .process(
            vec![
                poison,
                message(0, &thin("good", 1)),
                message(1, &thin("good", 1)),
                message(2, &thin("bad", 1)),
            ],
            later(),
        )
        .await;
    let text = logs.text();
    let lines = logs.lines();
    let about = |id: &str| -> Vec<&serde_json::Value> {
        lines.iter().filter(|l| l["dam_id"] == id).collect()
    };
    let good = about("good");
    assert_eq!(good.len(), 1, "one line per asset, not per message: {text}");
    assert_eq!(good[0]["message"], "Asset processed.");
    assert_eq!(good[0]["level"], "INFO");
    assert_eq!(good[0]["family"], "packshot");
    assert_eq!(good[0]["outcome"], "synced");
    assert_eq!(good[0]["dam"], "generic");
    assert_eq!(good[0]["messages"], 2);
    let bad = about("bad");
    assert_eq!(bad.len(), 1, "{text}");
    assert_eq!(bad[0]["outcome"], "dead_letter");
    assert_eq!(bad[0]["level"], "WARN");
    assert_eq!(bad[0]["family"], "packshot");
    assert!(
        bad[0]["reason"].as_str().unwrap().contains("product_ref"),
        "{}",
        bad[0]
    );
    let poison: Vec<_> = lines.iter().filter(|l| l["message_id"] == "p").collect();
    assert_eq!(poison.len(), 1, "{text}");
    assert_eq!(poison[0]["outcome"], "poison");
}

#[tokio::test]
async fn an_asset_another_invocation_is_applying_is_left_for_redelivery() {
    let h = harness();
    let store: Arc<dyn LeaseStore> = h.store.clone();
    let consumer = Consumer::new(
        h.store.clone(),
        Arc::new(Mapping::from_toml_str(MAPPING, "test").unwrap()),
        h.pim.clone(),
        h.dlq.clone(),
    )
    .with_source(h.dam.clone())
    .with_asset_locks(store.clone());
    let modified = now_ms() - 1_000;
    h.put(dam_asset("busy", modified, "AB-1"));
    h.put(dam_asset("free", modified, "AB-2"));
    assert!(
        store
            .acquire("asset#generic#busy", "elsewhere", Duration::from_secs(60))
            .await
            .unwrap()
    );
    let out = consumer
        .process(
            vec![
                message(0, &thin("busy", modified)),
                message(1, &thin("free", modified)),
            ],
            later(),
        )
        .await;
    assert_eq!(out.retry_ids(), ["m0"], "{out:?}");
    assert_eq!(out.report.synced, 1);
    // Our own leases are released: the next batch may take them.
    assert!(
        store
            .acquire("asset#generic#free", "next", Duration::from_secs(60))
            .await
            .unwrap()
    );
    // Once the other invocation is done, the redelivery applies the asset.
    assert!(
        store
            .release("asset#generic#busy", "elsewhere")
            .await
            .unwrap()
    );
    let out = consumer
        .process(vec![message(0, &thin("busy", modified))], later())
        .await;
    assert!(out.retry.is_empty(), "{out:?}");
    assert_eq!(out.report.synced, 1);
}

// ---- DAM semantics: deletes, same-second edits, lagging reads, retries ----

fn carried(id: &str, version: i64, sku: &str) -> ChangeEvent {
    ChangeEvent {
        asset: Some(dam_asset(id, version, sku)),
        ..thin(id, version)
    }
}

fn delete(id: &str, version: Option<i64>, received_at_ms: i64) -> ChangeEvent {
    ChangeEvent {
        kind: ChangeKind::Delete,
        version: version.map(v),
        received_at_ms,
        ..thin(id, 0)
    }
}

fn last_sku(h: &Harness) -> serde_json::Value {
    h.pim.upserts.lock().unwrap().last().unwrap()[0].values["product_ref"][0]
        .data
        .clone()
}

#[test]
fn coalesce_reads_the_dam_when_a_delete_meets_a_full_upsert() {
    let (changes, _) = coalesce(vec![
        message(0, &carried("a", 1, "AB-1")),
        message(1, &delete("a", None, 2)),
    ]);
    assert!(changes[0].read_dam, "{changes:?}");
    assert_eq!(changes[0].carried(), None);
    let (changes, _) = coalesce(vec![
        message(0, &carried("a", 1, "AB-1")),
        message(1, &carried("a", 2, "AB-2")),
    ]);
    assert!(!changes[0].read_dam);
    assert_eq!(changes[0].carried().unwrap().version, v(2));
}

#[tokio::test]
async fn an_unversioned_delete_beside_a_full_upsert_is_not_swallowed() {
    let h = harness();
    h.put(dam_asset("a", 1, "AB-1"));
    h.consumer
        .process(vec![message(0, &thin("a", 1))], later())
        .await;
    // The DAM deleted it; a full upsert and the delete arrive in one batch.
    h.dam.assets.lock().unwrap().clear();
    let out = h
        .consumer
        .process(
            vec![
                message(1, &carried("a", 2, "AB-2")),
                message(2, &delete("a", None, 5)),
            ],
            later(),
        )
        .await;
    assert_eq!(out.report.deleted, 1, "{out:?}");
    assert_eq!(*h.pim.deletes.lock().unwrap(), ["packshot/a"]);
}

#[tokio::test]
async fn a_delete_the_dam_does_not_confirm_deletes_nothing() {
    let h = harness();
    h.put(dam_asset("a", 1, "AB-1"));
    h.consumer
        .process(vec![message(0, &thin("a", 1))], later())
        .await;
    // An unversioned delete (Bynder `archived`) delivered after the asset came back.
    let out = h
        .consumer
        .process(vec![message(1, &delete("a", None, 5))], later())
        .await;
    assert_eq!(out.report.deleted, 0, "{out:?}");
    assert!(h.pim.deletes.lock().unwrap().is_empty());
    assert!(
        out.retry.is_empty() && out.dead_lettered.is_empty(),
        "{out:?}"
    );
}

#[tokio::test]
async fn a_second_edit_in_the_same_second_is_applied_not_stale() {
    let h = harness();
    h.put(dam_asset("a", 1_000, "AB-1"));
    h.consumer
        .process(vec![message(0, &thin("a", 1_000))], later())
        .await;
    // Same 1 s-resolution version, new content.
    h.put(dam_asset("a", 1_000, "AB-2"));
    let out = h
        .consumer
        .process(vec![message(1, &thin("a", 1_000))], later())
        .await;
    assert_eq!(out.report.synced, 1, "{out:?}");
    assert_eq!(last_sku(&h), json!("AB-2"));
    // A plain duplicate of it is still a no-op.
    let out = h
        .consumer
        .process(vec![message(2, &thin("a", 1_000))], later())
        .await;
    assert_eq!(out.report.stale, 1, "{out:?}");
    assert_eq!(h.upsert_calls(), 2);
}

#[tokio::test]
async fn an_older_snapshot_at_the_applied_version_is_re_read_not_applied() {
    let h = harness();
    h.put(dam_asset("a", 1_000, "AB-2"));
    h.consumer
        .process(vec![message(0, &thin("a", 1_000))], later())
        .await;
    // A listing taken before the same-second edit carries the old content.
    let out = h
        .consumer
        .process(vec![message(1, &carried("a", 1_000, "AB-1"))], later())
        .await;
    assert_eq!(out.report.stale, 1, "{out:?}");
    assert_eq!(h.upsert_calls(), 1);
    assert_eq!(
        *h.dam.fetches.lock().unwrap(),
        2,
        "the snapshot is checked with the DAM"
    );
}

#[tokio::test]
async fn a_notification_time_after_the_change_is_not_a_lag() {
    let h = harness();
    let mut asset = dam_asset("a", 10_000, "AB-1");
    asset.version.seq = 3;
    h.put(asset);
    // Cloudinary: the hint speaks for the resource version only.
    let event = ChangeEvent {
        version: Some(Version {
            modified_at_ms: 0,
            seq: 3,
        }),
        ..thin("a", 0)
    };
    let out = h.consumer.process(vec![message(0, &event)], later()).await;
    assert_eq!(out.report.synced, 1, "{out:?}");
}

#[tokio::test]
async fn a_lagging_read_is_applied_once_the_lag_allowance_is_used() {
    let h = harness();
    h.put(dam_asset("a", 1, "AB-1"));
    let lag_receives = ConsumerSettings::default().lag_receives;
    let early = InboundMessage {
        receive_count: lag_receives - 1,
        ..message(0, &thin("a", 2))
    };
    let out = h.consumer.process(vec![early], later()).await;
    assert_eq!(out.retry_ids(), ["m0"], "{out:?}");
    let late = InboundMessage {
        receive_count: lag_receives,
        ..message(0, &thin("a", 2))
    };
    let out = h.consumer.process(vec![late], later()).await;
    assert_eq!(out.report.synced, 1, "{out:?}");
    assert!(out.dead_lettered.is_empty());
}

#[tokio::test]
async fn a_retry_on_the_last_delivery_is_parked_with_its_reason() {
    let h = harness();
    h.put(dam_asset("a", 1, "AB-1"));
    *h.dam.down.lock().unwrap() = true;
    let last = InboundMessage {
        receive_count: ConsumerSettings::default().max_receives,
        ..message(0, &thin("a", 1))
    };
    let out = h.consumer.process(vec![last], later()).await;
    assert!(out.retry.is_empty(), "{out:?}");
    let (id, reason) = &out.dead_lettered[0];
    assert_eq!(id, "m0");
    assert!(
        reason.contains("8 deliveries") && reason.contains("503"),
        "{reason}"
    );
    assert_eq!(h.dlq.letters().len(), 1);
}

#[tokio::test]
async fn a_whole_request_refusal_is_retried_not_dead_lettered() {
    let h = harness();
    h.put(dam_asset("a", 1, "AB-1"));
    h.put(dam_asset("b", 1, "AB-2"));
    *h.pim.whole_request.lock().unwrap() = Some(AkeneoError::Http {
        status: 401,
        route: "/api/rest/v1/asset-families/packshot/assets".into(),
        message: "The access token provided is invalid.".into(),
        retry_after: None,
    });
    let out = h
        .consumer
        .process(
            vec![message(0, &thin("a", 1)), message(1, &thin("b", 1))],
            later(),
        )
        .await;
    assert!(out.dead_lettered.is_empty(), "{out:?}");
    assert_eq!(out.retry_ids(), ["m0", "m1"]);
    assert!(out.retry[0].1.contains("401"), "{out:?}");
}

#[tokio::test]
async fn the_lease_outlives_a_write_whose_outcome_is_unknown() {
    let h = harness();
    let store: Arc<dyn LeaseStore> = h.store.clone();
    let consumer = Consumer::new(
        h.store.clone(),
        Arc::new(Mapping::from_toml_str(MAPPING, "test").unwrap()),
        h.pim.clone(),
        h.dlq.clone(),
    )
    .with_source(h.dam.clone())
    .with_asset_locks(store.clone());
    h.put(dam_asset("a", 1, "AB-1"));
    *h.pim.whole_request.lock().unwrap() = Some(AkeneoError::Timeout(Duration::from_secs(15)));
    let out = consumer
        .process(vec![message(0, &thin("a", 1))], later())
        .await;
    assert_eq!(out.retry_ids(), ["m0"], "{out:?}");
    // The abandoned PATCH may still land: nobody may write the asset before the hold ends.
    assert!(
        !store
            .acquire("asset#generic#a", "next", Duration::from_secs(60))
            .await
            .unwrap()
    );
    // A write that failed with a known outcome releases the lease as before.
    *h.pim.whole_request.lock().unwrap() = None;
    h.pim.unavailable.lock().unwrap().push("b".into());
    h.put(dam_asset("b", 1, "AB-2"));
    let out = consumer
        .process(vec![message(1, &thin("b", 1))], later())
        .await;
    assert_eq!(out.retry_ids(), ["m1"], "{out:?}");
    assert!(
        store
            .acquire("asset#generic#b", "next", Duration::from_secs(60))
            .await
            .unwrap()
    );
}

/// A state store whose final records fail (content hash set): a process killed between the
/// PIM write and the recorded version.
struct LosesFinalRecords(Arc<MemoryStore>);

#[async_trait]
impl AssetStateStore for LosesFinalRecords {
    async fn get_many(
        &self,
        dam: DamKind,
        ids: &[String],
    ) -> Result<HashMap<String, AssetState>, crate::store::StateError> {
        self.0.get_many(dam, ids).await
    }

    async fn record_applied(
        &self,
        state: &AssetState,
    ) -> Result<crate::store::Applied, crate::store::StateError> {
        if state.content_hash.is_empty() || state.deleted {
            self.0.record_applied(state).await
        } else {
            Err(crate::store::StateError::Transient("killed".into(), None))
        }
    }

    async fn delete(&self, dam: DamKind, id: &str) -> Result<(), crate::store::StateError> {
        self.0.delete(dam, id).await
    }

    async fn find_by_codes(
        &self,
        family: &str,
        codes: &[String],
    ) -> Result<HashMap<String, (DamKind, String)>, crate::store::StateError> {
        self.0.find_by_codes(family, codes).await
    }

    async fn record_parked(
        &self,
        dam: DamKind,
        id: &str,
        version: Version,
    ) -> Result<(), crate::store::StateError> {
        self.0.record_parked(dam, id, version).await
    }

    async fn parked_many(
        &self,
        dam: DamKind,
        ids: &[String],
    ) -> Result<HashMap<String, Version>, crate::store::StateError> {
        self.0.parked_many(dam, ids).await
    }
}

#[tokio::test]
async fn a_pim_write_whose_record_was_lost_is_still_retired_by_the_deletion() {
    let h = harness();
    let consumer = Consumer::new(
        Arc::new(LosesFinalRecords(h.store.clone())),
        Arc::new(Mapping::from_toml_str(MAPPING, "test").unwrap()),
        h.pim.clone(),
        h.dlq.clone(),
    )
    .with_source(h.dam.clone());
    h.put(dam_asset("a", 1, "AB-1"));
    let out = consumer
        .process(vec![message(0, &thin("a", 1))], later())
        .await;
    // Written to the PIM, then "killed" before its version was recorded.
    assert_eq!(h.upsert_calls(), 1);
    assert_eq!(out.retry_ids(), ["m0"], "{out:?}");
    // The DAM deletes it before the redelivery: the PIM asset must still go.
    h.dam.assets.lock().unwrap().clear();
    let out = h
        .consumer
        .process(vec![message(0, &thin("a", 1))], later())
        .await;
    assert_eq!(out.report.deleted, 1, "{out:?}");
    assert_eq!(*h.pim.deletes.lock().unwrap(), ["packshot/a"]);
    // And the sweep can find it by its code meanwhile.
    let found = h
        .store
        .find_by_codes("packshot", &["a".to_string()])
        .await
        .unwrap();
    assert!(found.is_empty(), "retired: no longer indexed");
}

#[tokio::test]
async fn a_refused_token_on_a_delete_is_retried_not_dead_lettered() {
    let h = harness();
    h.put(dam_asset("a", 1, "AB-1"));
    h.consumer
        .process(vec![message(0, &thin("a", 1))], later())
        .await;
    h.dam.assets.lock().unwrap().clear();
    *h.pim.whole_request.lock().unwrap() = Some(AkeneoError::Http {
        status: 401,
        route: String::new(),
        message: String::new(),
        retry_after: None,
    });
    let out = h
        .consumer
        .process(vec![message(1, &delete("a", None, 5))], later())
        .await;
    assert!(out.dead_lettered.is_empty(), "{out:?}");
    assert_eq!(out.retry_ids(), ["m1"]);
    *h.pim.whole_request.lock().unwrap() = None;
    let out = h
        .consumer
        .process(vec![message(1, &delete("a", None, 5))], later())
        .await;
    assert_eq!(out.report.deleted, 1, "{out:?}");
}
