//! "A webhook stream with 10 % of notifications dropped converges after one poll": dam-sim
//! sends signed Standard Webhooks to the ingest service over HTTP, dropping about one in ten;
//! ingest and poller both feed one SQS queue (moto), the consumer writes to akeneo-sim, and
//! cursors, leases and asset versions live in DynamoDB (moto). These tests fail, never skip,
//! without `AWS_ENDPOINT_URL`.

use crate::support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dam_sim::{DamSim, DamSimConfig, DeliveryKnobs, WebhookKind};
use dam_sync_tests::pipeline::SIM_MAPPING;
use dam_sync_tests::{akeneo_caps, pim_config, serve_ingest, start_pim};
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::akeneo::{AkeneoClient, Limits};
use shared::consumer::{Consumer, InboundMessage};
use shared::dam::generic::api::{GenericApi, GenericApiSettings};
use shared::dam::generic::webhook::{GenericSettings, GenericWebhookVerifier, SigningSecret};
use shared::ingest::{IngestService, IngestSettings};
use shared::mapping::{MapOutcome, Mapping};
use shared::poller::{Poller, PollerSettings, StopReason};
use shared::queue::sqs::SqsChangeQueue;
use shared::store::dynamodb::{self, DynamoStore};
use shared::testing::{MemoryDeadLetters, create_table};
use support::{moto_config, moto_sqs, new_queue, receive_all};

/// Receives everything in the queue and runs it through the consumer as SQS would (batches
/// of 10, failed messages redelivered); returns the number of messages consumed.
async fn drain(sqs: &aws_sdk_sqs::Client, queue_url: &str, consumer: &Consumer) -> usize {
    let messages = receive_all(sqs, queue_url).await;
    let mut inbound: Vec<InboundMessage> = messages
        .iter()
        .map(|m| InboundMessage {
            receive_count: 1,
            id: m.message_id().unwrap().to_owned(),
            body: m.body().unwrap().to_owned(),
        })
        .collect();
    let count = inbound.len();
    for _ in 0..5 {
        let bodies: HashMap<String, String> = inbound
            .iter()
            .map(|m| (m.id.clone(), m.body.clone()))
            .collect();
        let mut retry = Vec::new();
        for chunk in inbound.chunks(10) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            let outcome = consumer.process(chunk.to_vec(), deadline).await;
            assert!(
                outcome.dead_lettered.is_empty(),
                "{:?}",
                outcome.dead_lettered
            );
            retry.extend(outcome.retry);
        }
        if retry.is_empty() {
            return count;
        }
        inbound = retry
            .into_iter()
            .map(|(id, _reason)| InboundMessage {
                receive_count: 1,
                body: bodies[&id].clone(),
                id,
            })
            .collect();
    }
    panic!(
        "messages still failing after 5 deliveries: {}",
        inbound.len()
    );
}

/// DAM assets whose mapped values the PIM does not hold (missing or different).
async fn divergent(
    dam: &dam_sim::DamSimHandle,
    pim_base: &str,
    mapping: &Mapping,
    client: &AkeneoClient,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let structure = client
        .family_structure("packshot", deadline)
        .await
        .unwrap()
        .expect("packshot family");
    let stored: Vec<Value> = dam_sync_tests::http()
        .get(format!("{pim_base}/_sim/assets/packshot"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let by_code: HashMap<&str, &Value> = stored
        .iter()
        .map(|a| (a["code"].as_str().unwrap(), a))
        .collect();
    let mut out = Vec::new();
    for asset in dam.assets() {
        let mapped = match mapping.map_asset(&asset.id, &asset.to_generic_json(), |f| {
            (f == "packshot").then_some(structure.as_ref())
        }) {
            MapOutcome::Mapped(m) => m,
            other => panic!("{}: {other:?}", asset.id),
        };
        let same = by_code.get(mapped.code.as_str()).is_some_and(|pim| {
            mapped
                .asset
                .values
                .iter()
                .all(|(attr, values)| pim["values"][attr] == json!(values))
        });
        if !same {
            out.push(asset.id.clone());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_stream_with_ten_percent_dropped_converges_after_one_poll() {
    let dam = DamSim::start(DamSimConfig::default()).await.unwrap();
    let initial = dam.generate(60, 5);
    let pim = start_pim(akeneo_caps()).await;
    let aws = moto_config().await;
    let ddb = dynamodb::Client::new(&aws);
    let table = format!("converge-{}-{}", std::process::id(), fastrand::u32(..));
    create_table(&ddb, &table).await.unwrap();
    let store = Arc::new(DynamoStore::new(ddb, table));
    let sqs = moto_sqs().await;
    let queue_url = new_queue(&sqs, "converge").await;
    let queue = Arc::new(SqsChangeQueue::new(sqs.clone(), queue_url.clone()));

    let source = Arc::new(
        GenericApi::new(GenericApiSettings::new(
            url::Url::parse(&dam.generic_base_url()).unwrap(),
            SecretString::from(dam.config().generic_token.clone()),
        ))
        .unwrap(),
    );
    let mapping = Arc::new(Mapping::from_toml_str(SIM_MAPPING, "SIM_MAPPING").unwrap());
    let client = AkeneoClient::new(pim_config(&pim, Limits::default())).unwrap();
    let consumer = Consumer::new(
        store.clone(),
        mapping.clone(),
        Arc::new(AkeneoClient::new(pim_config(&pim, Limits::default())).unwrap()),
        Arc::new(MemoryDeadLetters::new()),
    )
    .with_source(source.clone());
    // A short lookback: the poll after the stream reads (about) only what changed since the
    // first poll, so convergence comes from the cursor, not from re-reading everything.
    let poller = Poller::new(
        source,
        queue.clone(),
        store.clone(),
        store.clone(),
        PollerSettings {
            lookback: Duration::from_secs(1),
            safety_lag: Duration::ZERO,
            page_size: 25,
            ..PollerSettings::default()
        },
    );
    let far = |t: SystemTime| t + Duration::from_secs(600);

    // The initial state: one poll syncs the catalogue and sets the cursor.
    let now = SystemTime::now() + Duration::from_secs(5);
    let first = poller.run(now, far(now)).await.unwrap();
    assert_eq!(first.stop, StopReason::Complete);
    assert_eq!(first.events_enqueued, 60);
    assert_eq!(drain(&sqs, &queue_url, &consumer).await, 60);
    assert!(
        divergent(&dam, &pim.base_url(), &mapping, &client)
            .await
            .is_empty()
    );

    // The stream: every asset edited, 40 created, through webhooks that drop ~10 %.
    let ingest = Arc::new(
        IngestService::new(IngestSettings::default(), queue.clone()).with_verifier(Arc::new(
            GenericWebhookVerifier::new(GenericSettings::new(vec![
                SigningSecret::parse(&dam.config().generic_webhook_secret).unwrap(),
            ])),
        )),
    );
    let ingest_url = serve_ingest(ingest).await;
    dam.send_webhooks_to(
        &format!("{ingest_url}/webhooks/generic"),
        WebhookKind::Generic,
        DeliveryKnobs {
            drop_rate: 0.1,
            seed: 21,
            ..DeliveryKnobs::default()
        },
    );
    for (i, id) in initial.iter().enumerate() {
        dam.patch(
            id,
            json!({ "title": format!("Edited title {i}"), "sku": format!("SKUE-{i:04}") }),
        )
        .expect("live asset");
    }
    for i in 0..40 {
        dam.upsert(
            &format!("new_asset_{i}"),
            json!({ "title": format!("New asset {i}"), "sku": format!("SKUN-{i:04}"), "width": 640 }),
        );
    }
    assert!(dam.flush_webhooks(Duration::from_secs(60)).await);
    let stats = dam.webhook_stats();
    assert_eq!(stats.queued, 100);
    assert!(
        (3..=25).contains(&stats.dropped),
        "about 10 % dropped: {stats:?}"
    );
    assert_eq!(stats.delivered, 100 - stats.dropped, "{stats:?}");
    assert_eq!(
        drain(&sqs, &queue_url, &consumer).await as u64,
        stats.delivered
    );
    let behind = divergent(&dam, &pim.base_url(), &mapping, &client).await;
    println!(
        "webhooks: {stats:?}; assets behind before the poll: {}",
        behind.len()
    );
    assert_eq!(
        behind.len() as u64,
        stats.dropped,
        "exactly the assets whose notification was dropped lag behind"
    );

    // One poll.
    let now = SystemTime::now() + Duration::from_secs(5);
    let poll = poller.run(now, far(now)).await.unwrap();
    assert_eq!(poll.stop, StopReason::Complete);
    assert_eq!(
        poll.events_enqueued, 100,
        "the poll read only the stream's changes"
    );
    drain(&sqs, &queue_url, &consumer).await;
    let behind = divergent(&dam, &pim.base_url(), &mapping, &client).await;
    assert!(
        behind.is_empty(),
        "still divergent after one poll: {behind:?}"
    );
}
