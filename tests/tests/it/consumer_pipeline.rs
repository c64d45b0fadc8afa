//! The consumer pipeline end to end: the real Akeneo client against akeneo-sim, the generic
//! DAM client against dam-sim, state in DynamoDB and dead letters in SQS (both on moto at
//! `AWS_ENDPOINT_URL`; these tests fail, never skip, without it).

use std::sync::Arc;
use std::time::Duration;

use dam_sim::{DamSim, DamSimConfig, DamSimHandle};
use dam_sync_tests::{
    BULK_PATCH, CONSUMER_MAPPING, akeneo_caps, consumer_fields, moto_config, new_queue, new_store,
    pim_config, sqs_dead_letters, start_pim, unique,
};
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::akeneo::{AkeneoClient, Limits, StructureStore};
use shared::consumer::{BatchOutcome, Consumer, ConsumerSettings, InboundMessage};
use shared::dam::generic::api::{GenericApi, GenericApiSettings};
use shared::dam::{AssetSource, ChangeEvent, ChangeKind, DamAsset, DamKind, Fetched};
use shared::mapping::Mapping;
use shared::queue::sqs::SqsDeadLetters;
use shared::store::AssetStateStore;
use shared::store::dynamodb::{DynamoStore, DynamoStructureStore};
use tokio::time::Instant;
use url::Url;

const GET_FAMILY: &str = "GET /api/rest/v1/asset-families/{family}";

struct World {
    pim: akeneo_sim::SimHandle,
    dam: DamSimHandle,
    source: Arc<GenericApi>,
    store: Arc<DynamoStore>,
    structures: Arc<DynamoStructureStore>,
    sqs: aws_sdk_sqs::Client,
    dlq_url: String,
    consumer: Consumer,
}

async fn world(settings: ConsumerSettings) -> World {
    world_with(settings, CONSUMER_MAPPING).await
}

async fn world_with(settings: ConsumerSettings, mapping: &str) -> World {
    let aws = moto_config().await;
    let store = new_store(&aws, "consumer-state").await;
    let structures = Arc::new(DynamoStructureStore::new(&store, Duration::from_secs(600)));
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let dlq_url = new_queue(&sqs, "consumer-dlq", &[]).await;

    let pim = start_pim(akeneo_caps()).await;
    let client =
        AkeneoClient::with_structure_store(pim_config(&pim, Limits::default()), structures.clone())
            .expect("client");
    let dam = DamSim::start(DamSimConfig::default())
        .await
        .expect("dam-sim");
    let source = Arc::new(
        GenericApi::new(GenericApiSettings::new(
            Url::parse(&dam.generic_base_url()).unwrap(),
            SecretString::from(dam.config().generic_token.clone()),
        ))
        .expect("generic client"),
    );
    let mapping = Arc::new(Mapping::from_toml_str(mapping, "consumer test").expect("mapping"));
    let consumer = Consumer::new(
        store.clone(),
        mapping,
        Arc::new(client),
        Arc::new(SqsDeadLetters::new(sqs.clone(), dlq_url.clone())),
    )
    .with_source(source.clone())
    .with_settings(settings);
    World {
        pim,
        dam,
        source,
        store,
        structures,
        sqs,
        dlq_url,
        consumer,
    }
}

fn fields(n: usize, title: &str) -> Value {
    consumer_fields(n, title)
}

fn id(n: usize) -> String {
    format!("asset_{n}")
}

fn thin(asset_id: &str) -> ChangeEvent {
    ChangeEvent {
        dam: DamKind::Generic,
        asset_id: asset_id.into(),
        kind: ChangeKind::Upsert,
        version: None,
        asset: None,
        dedupe_key: unique(asset_id),
        received_at_ms: 0,
    }
}

fn full(asset: DamAsset) -> ChangeEvent {
    ChangeEvent {
        version: Some(asset.version),
        asset_id: asset.id.clone(),
        asset: Some(asset),
        ..thin("x")
    }
}

fn messages(events: &[ChangeEvent]) -> Vec<InboundMessage> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| InboundMessage {
            receive_count: 1,
            id: format!("msg-{i}"),
            body: serde_json::to_string(e).unwrap(),
        })
        .collect()
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

impl World {
    async fn run(&self, events: &[ChangeEvent]) -> BatchOutcome {
        self.consumer.process(messages(events), later()).await
    }

    fn patches(&self) -> u64 {
        self.pim.stats().calls_to(BULK_PATCH)
    }

    async fn current(&self, asset_id: &str) -> DamAsset {
        match self
            .source
            .fetch(&[asset_id.to_string()])
            .await
            .unwrap()
            .remove(0)
        {
            Fetched::Found(a) => a,
            Fetched::Gone(id) => panic!("{id} is gone"),
        }
    }

    /// Every message in the DLQ: (body, reason attribute).
    async fn dead_letters(&self) -> Vec<(String, String)> {
        sqs_dead_letters(&self.sqs, &self.dlq_url).await
    }

    fn pim_asset(&self, code: &str) -> Option<Value> {
        self.pim.asset("packshot", code)
    }
}

fn alt_text(asset: &Value) -> String {
    asset["values"]["alt_text"][0]["data"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn duplicates_apply_once_and_redeliveries_cost_no_patch() {
    let w = world(ConsumerSettings::default()).await;
    for n in 0..3 {
        w.dam.upsert(&id(n), fields(n, "First"));
    }
    let events: Vec<ChangeEvent> = (0..6).map(|i| thin(&id(i % 3))).collect();
    let out = w.run(&events).await;
    assert!(
        out.retry.is_empty() && out.dead_lettered.is_empty(),
        "{out:?}"
    );
    assert_eq!(out.report.synced, 3);
    assert_eq!(w.patches(), 1, "6 messages about 3 assets: one bulk PATCH");
    assert_eq!(w.pim.assets("packshot").len(), 3);

    // SQS redelivers the same batch: nothing changed, so the PIM is not called.
    let again = w.run(&events).await;
    assert_eq!(again.report.stale, 3, "{again:?}");
    assert_eq!(w.patches(), 1);

    // The DAM bumps versions without changing content: versions recorded, no PATCH.
    for n in 0..3 {
        w.dam.upsert(&id(n), fields(n, "First"));
    }
    let bumped = w.run(&events).await;
    assert_eq!(bumped.report.skipped_unchanged, 3, "{bumped:?}");
    assert_eq!(w.patches(), 1);
    let states = w.store.get_many(DamKind::Generic, &[id(0)]).await.unwrap();
    assert_eq!(
        states[&id(0)].applied_version,
        w.current(&id(0)).await.version
    );
}

#[tokio::test]
async fn v2_before_v1_leaves_v2() {
    let w = world(ConsumerSettings::default()).await;
    w.dam.upsert(&id(1), fields(1, "Version one"));
    let v1 = w.current(&id(1)).await;
    w.dam.upsert(&id(1), fields(1, "Version two"));
    let v2 = w.current(&id(1)).await;
    assert!(v2.version > v1.version);

    let first = w.run(&[full(v2.clone())]).await;
    assert_eq!(first.report.synced, 1, "{first:?}");
    let late = w.run(&[full(v1)]).await;
    assert_eq!(late.report.stale, 1, "{late:?}");
    assert_eq!(w.patches(), 1);
    assert_eq!(alt_text(&w.pim_asset(&id(1)).unwrap()), "Version two");
    let states = w.store.get_many(DamKind::Generic, &[id(1)]).await.unwrap();
    assert_eq!(states[&id(1)].applied_version, v2.version);
}

#[tokio::test]
async fn poison_and_a_refused_item_go_to_the_dlq_without_blocking_the_batch() {
    let w = world(ConsumerSettings::default()).await;
    w.dam.upsert(&id(1), fields(1, "Fine"));
    let mut bad = fields(2, "Bad reference");
    bad["sku"] = json!("not a reference");
    w.dam.upsert(&id(2), bad);

    let mut batch = messages(&[thin(&id(1)), thin(&id(2))]);
    batch.push(InboundMessage {
        receive_count: 1,
        id: "poison".into(),
        body: "{\"dam\":\"generic\",\"truncated".into(),
    });
    let out = w.consumer.process(batch.clone(), later()).await;
    assert!(out.retry.is_empty(), "{out:?}");
    assert_eq!(out.report.synced, 1);
    assert_eq!(out.report.poison, 1);
    let ids: Vec<&str> = out
        .dead_lettered
        .iter()
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"poison") && ids.contains(&"msg-1"), "{ids:?}");
    assert!(w.pim_asset(&id(1)).is_some());
    assert!(w.pim_asset(&id(2)).is_none());

    let mut letters = w.dead_letters().await;
    letters.sort();
    assert_eq!(letters.len(), 2, "{letters:?}");
    let refused = letters
        .iter()
        .find(|(body, _)| *body == batch[1].body)
        .expect("the refused asset's message, unchanged");
    assert!(
        refused.1.contains("product_ref"),
        "the PIM's reason names the attribute: {}",
        refused.1
    );
    let poison = letters
        .iter()
        .find(|(body, _)| *body == batch[2].body)
        .expect("the poison message, unchanged");
    assert!(poison.1.contains("undecodable"), "{}", poison.1);
}

#[tokio::test]
async fn a_stale_structure_cache_costs_one_refetch() {
    let w = world(ConsumerSettings::default()).await;
    // Warm the cache, then make it claim an option the PIM does not have.
    w.dam.upsert(&id(0), fields(0, "Warm-up"));
    w.run(&[thin(&id(0))]).await;
    let cached = w.structures.get("packshot").await.unwrap().expect("cached");
    let mut stale = (*cached).clone();
    stale
        .options
        .get_mut("main_colors")
        .unwrap()
        .push(serde_json::from_value(json!({ "code": "purple" })).unwrap());
    w.structures.put(Arc::new(stale)).await.unwrap();
    w.pim.reset_stats();

    let mut purple = fields(1, "Purple");
    purple["colors"] = json!(["purple"]);
    w.dam.upsert(&id(1), purple);
    w.dam.upsert(&id(2), fields(2, "Red"));
    let out = w.run(&[thin(&id(1)), thin(&id(2))]).await;

    assert_eq!(out.report.synced, 1, "{out:?}");
    assert_eq!(
        w.pim.stats().calls_to(GET_FAMILY),
        1,
        "one structure refetch"
    );
    // After the refresh the mapping knows `purple` is no option: a permanent failure.
    assert_eq!(out.dead_lettered.len(), 1);
    assert!(out.dead_lettered[0].1.contains("purple"), "{out:?}");
    assert!(out.retry.is_empty());
    let fresh = w
        .structures
        .get("packshot")
        .await
        .unwrap()
        .expect("re-cached");
    assert!(!fresh.has_option("main_colors", "purple"));
}

#[tokio::test]
async fn a_deadline_near_its_end_reports_the_unsent_messages() {
    let w = world(ConsumerSettings::default()).await;
    w.dam.upsert(&id(1), fields(1, "Unchanged"));
    w.dam.upsert(&id(2), fields(2, "Before"));
    let synced = w.run(&[thin(&id(1)), thin(&id(2))]).await;
    assert_eq!(synced.report.synced, 2, "{synced:?}");
    let patches = w.patches();

    // Asset 1 gets a new version with the same content, asset 2 new content.
    w.dam.upsert(&id(1), fields(1, "Unchanged"));
    w.dam.upsert(&id(2), fields(2, "After"));
    let one = w.current(&id(1)).await;
    let two = w.current(&id(2)).await;
    // 2 s left, less than the 3 s safety margin: no PIM call may start.
    let deadline = Instant::now() + Duration::from_secs(2);
    let out = w
        .consumer
        .process(messages(&[full(one.clone()), full(two)]), deadline)
        .await;
    assert_eq!(out.retry_ids(), ["msg-1"], "{out:?}");
    assert_eq!(out.report.skipped_unchanged, 1, "needs no PIM call: done");
    assert_eq!(w.patches(), patches);
    assert_eq!(alt_text(&w.pim_asset(&id(2)).unwrap()), "Before");
    assert!(w.dead_letters().await.is_empty());
    let states = w.store.get_many(DamKind::Generic, &[id(1)]).await.unwrap();
    assert_eq!(states[&id(1)].applied_version, one.version);
}

#[tokio::test]
async fn n_changed_assets_of_one_family_cost_ceil_n_over_100_patches() {
    let w = world(ConsumerSettings::default()).await;
    let n = 250;
    for i in 0..n {
        w.dam.upsert(&id(i), fields(i, "Bulk"));
    }
    let events: Vec<ChangeEvent> = (0..n).map(|i| thin(&id(i))).collect();
    let out = w.run(&events).await;
    assert_eq!(out.report.synced, n as u64, "{:?}", out.report);
    assert!(out.retry.is_empty() && out.dead_lettered.is_empty());
    assert_eq!(w.patches(), n.div_ceil(100) as u64);
    assert_eq!(w.pim.assets("packshot").len(), n);
}

#[tokio::test]
async fn a_dam_deletion_deletes_the_pim_asset_and_leaves_a_tombstone() {
    let w = world(ConsumerSettings::default()).await;
    w.dam.upsert(&id(1), fields(1, "Doomed"));
    w.run(&[thin(&id(1))]).await;
    assert!(w.pim_asset(&id(1)).is_some());
    assert!(w.dam.delete(&id(1)));
    let out = w.run(&[thin(&id(1))]).await;
    assert_eq!(out.report.deleted, 1, "{out:?}");
    assert!(w.pim_asset(&id(1)).is_none());
    let states = w.store.get_many(DamKind::Generic, &[id(1)]).await.unwrap();
    assert!(states[&id(1)].deleted, "{states:?}");
}

fn sqs_event(records: &[(&str, &str)]) -> aws_lambda_events::event::sqs::SqsEvent {
    // The shape Lambda delivers from an SQS event source mapping.
    let records: Vec<Value> = records
        .iter()
        .map(|(id, body)| {
            json!({
                "messageId": id,
                "receiptHandle": format!("handle-{id}"),
                "body": body,
                "attributes": { "ApproximateReceiveCount": "1" },
                "messageAttributes": {},
                "md5OfBody": "0",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:changes",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).expect("SQS event")
}

#[tokio::test]
async fn the_lambda_handler_answers_a_partial_batch_response() {
    let w = world(ConsumerSettings::default()).await;
    w.dam.upsert(&id(1), fields(1, "Via Lambda"));
    let body = serde_json::to_string(&thin(&id(1))).unwrap();
    let event = || sqs_event(&[("m-asset", &body), ("m-poison", "not json")]);

    // Inside the safety margin: the asset waits for redelivery, the poison is parked.
    let near = Instant::now() + Duration::from_secs(1);
    let response = asset_consumer::handle(&w.consumer, event(), near).await;
    let failures: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failures, ["m-asset"]);
    assert_eq!(w.dead_letters().await.len(), 1);
    assert!(w.pim_asset(&id(1)).is_none());

    let response = asset_consumer::handle(&w.consumer, event(), later()).await;
    let failures: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(alt_text(&w.pim_asset(&id(1)).unwrap()), "Via Lambda");
}

const UPLOAD: &str = "POST /api/rest/v1/asset-media-files";
const DELETE_ASSET: &str = "DELETE /api/rest/v1/asset-families/{family}/assets/{code}";

/// [`CONSUMER_MAPPING`] plus the packshot's `source_file` (media_file) from the DAM's file URL;
/// the file's version in the URL makes a replaced file a new URL.
fn media_mapping() -> String {
    format!(
        "{CONSUMER_MAPPING}\n[route.values.source_file]\n\
         template = \"{{{{fields.file_url}}}}?v={{{{fields.file_version}}}}\"\n"
    )
}

fn with_file(w: &World, n: usize, title: &str, version: u64, content: &str) -> Value {
    let mut f = fields(n, title);
    f["file_url"] = json!(w.dam.file_url(&id(n), &format!("packshot_{n}.jpg")));
    f["file_version"] = json!(version);
    f["file_content"] = json!(content);
    f
}

fn source_file_code(asset: &Value) -> String {
    asset["values"]["source_file"][0]["data"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn media_files_are_downloaded_from_the_dam_and_uploaded_only_when_the_file_changes() {
    let w = world_with(ConsumerSettings::default(), &media_mapping()).await;
    let downloads = || w.dam.stats().count("/files/");
    let uploads = || w.pim.stats().calls_to(UPLOAD);
    w.dam
        .upsert(&id(1), with_file(&w, 1, "First", 1, "JPEG bytes, take one"));
    let out = w.run(&[thin(&id(1))]).await;
    assert_eq!(out.report.synced, 1, "{out:?}");
    assert_eq!(out.report.media_uploaded, 1);
    assert_eq!((downloads(), uploads()), (1, 1));
    let code = source_file_code(&w.pim_asset(&id(1)).unwrap());
    let (name, bytes) = w.pim.media_file(&code).expect("the uploaded file");
    assert_eq!(name, "packshot_1.jpg");
    assert_eq!(bytes, b"JPEG bytes, take one");

    // The title changes, the file does not: the stored file code is written again.
    w.dam.upsert(
        &id(1),
        with_file(&w, 1, "Second", 1, "JPEG bytes, take one"),
    );
    let out = w.run(&[thin(&id(1))]).await;
    assert_eq!(out.report.synced, 1, "{out:?}");
    assert_eq!((downloads(), uploads()), (1, 1));
    let asset = w.pim_asset(&id(1)).unwrap();
    assert_eq!(alt_text(&asset), "Second");
    assert_eq!(source_file_code(&asset), code);

    // The file is replaced (new version in its URL): downloaded and uploaded again.
    w.dam.upsert(
        &id(1),
        with_file(&w, 1, "Second", 2, "JPEG bytes, take two"),
    );
    let out = w.run(&[thin(&id(1))]).await;
    assert_eq!(out.report.media_uploaded, 1, "{out:?}");
    assert_eq!((downloads(), uploads()), (2, 2));
    let new_code = source_file_code(&w.pim_asset(&id(1)).unwrap());
    assert_ne!(new_code, code);
    assert_eq!(
        w.pim.media_file(&new_code).unwrap().1,
        b"JPEG bytes, take two"
    );

    // A redelivery and a version bump without change: no download, upload or PATCH.
    let patches = w.patches();
    let again = w.run(&[thin(&id(1))]).await;
    assert_eq!(again.report.stale, 1, "{again:?}");
    w.dam.upsert(
        &id(1),
        with_file(&w, 1, "Second", 2, "JPEG bytes, take two"),
    );
    let bumped = w.run(&[thin(&id(1))]).await;
    assert_eq!(bumped.report.skipped_unchanged, 1, "{bumped:?}");
    assert_eq!((downloads(), uploads(), w.patches()), (2, 2, patches));
}

#[tokio::test]
async fn a_missing_or_oversized_file_fails_only_its_asset() {
    let settings = ConsumerSettings {
        max_media_bytes: 4096,
        ..ConsumerSettings::default()
    };
    let w = world_with(settings, &media_mapping()).await;
    w.dam.upsert(&id(1), with_file(&w, 1, "Fine", 1, "small"));
    let mut missing = with_file(&w, 2, "Missing", 1, "");
    missing["file_url"] = json!(w.dam.file_url("no_such_asset", "x.jpg"));
    w.dam.upsert(&id(2), missing);
    let mut big = with_file(&w, 3, "Big", 1, "");
    big.as_object_mut().unwrap().remove("file_content");
    big["file_bytes"] = json!(100_000);
    w.dam.upsert(&id(3), big);

    let out = w.run(&[thin(&id(1)), thin(&id(2)), thin(&id(3))]).await;
    assert_eq!(out.report.synced, 1, "{out:?}");
    // The file of 2 answers 404 while the DAM still has 2: retried with the reason (parked
    // with it on the last delivery); the file of 3 is too big: dead-lettered at once.
    assert_eq!(out.retry.len(), 1, "{out:?}");
    assert_eq!(out.retry[0].0, "msg-1");
    assert!(
        out.retry[0].1.contains("source_file") && out.retry[0].1.contains("404"),
        "{out:?}"
    );
    assert_eq!(out.dead_lettered.len(), 1, "{out:?}");
    assert_eq!(out.dead_lettered[0].0, "msg-2");
    assert!(
        out.dead_lettered[0].1.contains("4096-byte limit"),
        "{out:?}"
    );
    assert_eq!(w.pim.stats().calls_to(UPLOAD), 1);
    assert!(w.pim_asset(&id(2)).is_none() && w.pim_asset(&id(3)).is_none());

    // Deleted in the DAM after the event: the 404 is that deletion, not a failure.
    let snapshot = w.current(&id(2)).await;
    w.dam.delete(&id(2));
    let out = w.run(&[full(snapshot)]).await;
    assert!(
        out.retry.is_empty() && out.dead_lettered.is_empty(),
        "{out:?}"
    );
}

#[tokio::test]
async fn a_dam_file_outage_is_retried_not_dead_lettered() {
    let w = world_with(ConsumerSettings::default(), &media_mapping()).await;
    w.dam.upsert(&id(1), with_file(&w, 1, "Later", 1, "bytes"));
    w.dam.set_faults(dam_sim::Faults {
        down: true,
        only_routes: Some("/files/".into()),
        ..dam_sim::Faults::default()
    });
    let out = w.run(&[thin(&id(1))]).await;
    assert_eq!(out.retry_ids(), ["msg-0"], "{out:?}");
    assert!(w.pim_asset(&id(1)).is_none());
    w.dam.set_faults(dam_sim::Faults::default());
    let out = w.run(&[thin(&id(1))]).await;
    assert_eq!(out.report.synced, 1, "{out:?}");
}

/// Packshots need a SKU; manuals go to `user_instructions` and are cleared, not deleted.
const TWO_FAMILY_MAPPING: &str = r#"
[[route]]
family = "packshot"
when = [ { field = "fields.kind", equals = "packshot" } ]
require = [ { field = "fields.sku", exists = true } ]
on_delete = "delete"

[route.values.product_ref]
field = "fields.sku"

[route.values.alt_text]
locales = { en_US = "fields.title" }

[[route]]
family = "user_instructions"
when = [ { field = "fields.kind", equals = "manual" } ]
on_delete = { clear = ["pdf_link"] }

[route.values.pdf_link]
field = "fields.url"

[route.values.title]
locales = { en_US = "fields.title" }
"#;

#[tokio::test]
async fn an_asset_that_leaves_the_mapping_or_moves_family_retires_its_old_pim_asset() {
    let w = world_with(ConsumerSettings::default(), TWO_FAMILY_MAPPING).await;
    w.dam.upsert(&id(1), fields(1, "Leaves"));
    w.dam.upsert(&id(2), fields(2, "Moves"));
    let mut manual = fields(3, "Manual");
    manual["kind"] = json!("manual");
    manual["url"] = json!("https://docs.example.com/manual_3.pdf");
    w.dam.upsert(&id(3), manual.clone());
    let out = w.run(&[thin(&id(1)), thin(&id(2)), thin(&id(3))]).await;
    assert_eq!(out.report.synced, 3, "{out:?}");

    // 1 loses its SKU (filtered out now), 2 becomes a manual, 3 becomes a packshot.
    let mut no_sku = fields(1, "Leaves");
    no_sku.as_object_mut().unwrap().remove("sku");
    w.dam.upsert(&id(1), no_sku);
    let mut now_manual = fields(2, "Moves");
    now_manual["kind"] = json!("manual");
    now_manual["url"] = json!("https://docs.example.com/manual_2.pdf");
    w.dam.upsert(&id(2), now_manual);
    manual["kind"] = json!("packshot");
    w.dam.upsert(&id(3), manual);
    let out = w.run(&[thin(&id(1)), thin(&id(2)), thin(&id(3))]).await;
    assert!(
        out.retry.is_empty() && out.dead_lettered.is_empty(),
        "{out:?}"
    );
    assert_eq!(out.report.left_mapping, 1, "{out:?}");
    assert_eq!((out.report.synced, out.report.moved), (2, 2), "{out:?}");

    // packshot's policy deletes: 1 (left) and 2 (moved away) are gone from packshot.
    assert!(w.pim_asset(&id(1)).is_none());
    assert!(w.pim_asset(&id(2)).is_none());
    assert_eq!(w.pim.stats().calls_to(DELETE_ASSET), 2);
    let moved = w
        .pim
        .asset("user_instructions", &id(2))
        .expect("2 as a manual");
    assert_eq!(moved["values"]["title"][0]["data"], json!("Moves"));
    // user_instructions clears pdf_link: the old manual 3 stays, without its link.
    let old = w
        .pim
        .asset("user_instructions", &id(3))
        .expect("old manual 3 kept");
    assert!(
        old["values"]
            .get("pdf_link")
            .is_none_or(|v| v[0]["data"].is_null()),
        "{old}"
    );
    assert_eq!(alt_text(&w.pim_asset(&id(3)).unwrap()), "Manual");

    let states = w
        .store
        .get_many(DamKind::Generic, &[id(1), id(2), id(3)])
        .await
        .unwrap();
    assert!(states[&id(1)].is_detached());
    assert_eq!(states[&id(2)].family, "user_instructions");
    assert_eq!(states[&id(3)].family, "packshot");

    // A redelivery of that batch costs nothing.
    let calls = w.pim.stats().total_calls;
    let again = w.run(&[thin(&id(1)), thin(&id(2)), thin(&id(3))]).await;
    assert_eq!(again.report.stale, 3, "{again:?}");
    assert_eq!(w.pim.stats().total_calls, calls);
}
