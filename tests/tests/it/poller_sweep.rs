//! The deletion sweep against both simulators: DAM deletions whose webhooks never arrived are
//! found by comparing the PIM's codes with the DAM, enqueued, and applied by the consumer under
//! the mapping's delete policy; PIM assets the connector did not write are left alone.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dam_sim::{DamSim, DamSimConfig, Faults};
use dam_sync_tests::pipeline::SIM_MAPPING;
use dam_sync_tests::{akeneo_caps, packshot, pim_config, start_pim};
use secrecy::SecretString;
use serde_json::Value;
use shared::akeneo::{AkeneoClient, Limits};
use shared::consumer::{Consumer, InboundMessage};
use shared::dam::ChangeKind;
use shared::dam::generic::api::{GenericApi, GenericApiSettings};
use shared::mapping::Mapping;
use shared::poller::{
    PollMetrics, Poller, PollerSettings, StopReason, SweepError, SweepPorts, SweepSettings, Sweeper,
};
use shared::queue::ChangeQueue;
use shared::store::CursorStore;
use shared::testing::{MemoryChangeQueue, MemoryDeadLetters, MemoryStore};

async fn consume(queue: &MemoryChangeQueue, consumer: &Consumer) {
    let messages: Vec<InboundMessage> = queue
        .drain()
        .iter()
        .enumerate()
        .map(|(i, e)| InboundMessage {
            receive_count: 1,
            id: format!("m{i}"),
            body: serde_json::to_string(e).unwrap(),
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let outcome = consumer.process(messages, deadline).await;
    assert!(outcome.retry.is_empty(), "{outcome:?}");
    assert!(outcome.dead_lettered.is_empty(), "{outcome:?}");
}

async fn pim_codes(base: &str) -> Vec<String> {
    let stored: Vec<Value> = dam_sync_tests::http()
        .get(format!("{base}/_sim/assets/packshot"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut codes: Vec<String> = stored
        .iter()
        .map(|a| a["code"].as_str().unwrap().to_owned())
        .collect();
    codes.sort();
    codes
}

/// A DAM of `n` generated assets synced into the PIM through backfill and the consumer, with
/// the ports a sweeper needs.
struct Synced {
    dam: dam_sim::DamSimHandle,
    ids: Vec<String>,
    pim: akeneo_sim::SimHandle,
    source: Arc<GenericApi>,
    store: Arc<MemoryStore>,
    queue: Arc<MemoryChangeQueue>,
    mapping: Arc<Mapping>,
    client: Arc<AkeneoClient>,
    consumer: Consumer,
}

impl Synced {
    async fn start(n: usize, seed: u64) -> Self {
        let dam = DamSim::start(DamSimConfig::default()).await.unwrap();
        let ids = dam.generate(n, seed);
        let pim = start_pim(akeneo_caps()).await;
        let source = Arc::new(
            GenericApi::new(GenericApiSettings::new(
                url::Url::parse(&dam.generic_base_url()).unwrap(),
                SecretString::from(dam.config().generic_token.clone()),
            ))
            .unwrap(),
        );
        let store = Arc::new(MemoryStore::new());
        let queue = Arc::new(MemoryChangeQueue::new());
        let mapping = Arc::new(Mapping::from_toml_str(SIM_MAPPING, "SIM_MAPPING").unwrap());
        let client = Arc::new(AkeneoClient::new(pim_config(&pim, Limits::default())).unwrap());
        let consumer = Consumer::new(
            store.clone(),
            mapping.clone(),
            client.clone(),
            Arc::new(MemoryDeadLetters::new()),
        )
        .with_source(source.clone());
        let poller = Poller::new(
            source.clone(),
            queue.clone(),
            store.clone(),
            store.clone(),
            PollerSettings::default(),
        );
        let now = SystemTime::now();
        let r = poller
            .backfill(now, now + Duration::from_secs(600))
            .await
            .unwrap();
        assert_eq!(r.events_enqueued, n as u64);
        consume(&queue, &consumer).await;
        Self {
            dam,
            ids,
            pim,
            source,
            store,
            queue,
            mapping,
            client,
            consumer,
        }
    }

    fn sweeper(&self, settings: SweepSettings) -> Sweeper {
        Sweeper::new(
            SweepPorts {
                pim: self.client.clone(),
                source: self.source.clone(),
                states: self.store.clone(),
                queue: self.queue.clone(),
                cursors: self.store.clone(),
                leases: self.store.clone(),
            },
            self.mapping.clone(),
            settings,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_deletes_what_the_dam_lost_and_nothing_else() {
    // Sync the catalogue, then add a PIM asset of the same family by hand.
    let w = Synced::start(130, 9).await;
    let Synced {
        dam,
        ids,
        pim,
        queue,
        client,
        consumer,
        ..
    } = &w;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let manual = packshot(999_001);
    let outcome = client
        .upsert_assets("packshot", std::slice::from_ref(&manual), deadline)
        .await;
    assert_eq!(outcome.failures().count(), 0);
    assert_eq!(pim_codes(&pim.base_url()).await.len(), 131);

    // Seven DAM deletions whose webhooks were lost (nobody is subscribed).
    let gone: Vec<String> = ids.iter().step_by(19).cloned().collect();
    assert_eq!(gone.len(), 7);
    for id in &gone {
        assert!(dam.delete(id));
    }
    dam.reset_stats();

    let metrics = Arc::new(PollMetrics::default());
    let sweeper = w
        .sweeper(SweepSettings::default())
        .with_metrics(metrics.clone());
    let now = SystemTime::now();
    let report = sweeper
        .run(now, now + Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(report.stop, Some(StopReason::Complete));
    assert_eq!(report.families, vec!["packshot".to_string()]);
    assert_eq!(report.pim_assets, 131);
    assert_eq!(report.managed, 130);
    assert_eq!(report.unmanaged, 1);
    // 131 PIM assets come in two pages of at most 100: one DAM fetch per page.
    assert_eq!(report.dam_calls, 2);
    let singles = dam.stats().count("GET /generic/assets/{id}");
    assert_eq!(dam.stats().count("GET /generic/assets") - singles, 2);
    // Ids a batch answer leaves out are confirmed gone one by one before anything is deleted.
    assert_eq!(singles, 7);
    assert_eq!(report.deletions_enqueued, 7);
    assert_eq!(PollMetrics::get(&metrics.deletions_enqueued), 7);
    let events = queue.drain();
    assert!(events.iter().all(|e| e.kind == ChangeKind::Delete));
    let mut queued: Vec<String> = events.iter().map(|e| e.asset_id.clone()).collect();
    queue.enqueue(&events).await.unwrap();
    queued.sort();
    let mut expected = gone.clone();
    expected.sort();
    assert_eq!(queued, expected);

    // The consumer applies the delete policy: exactly the lost assets leave the PIM.
    consume(queue, consumer).await;
    let codes = pim_codes(&pim.base_url()).await;
    assert_eq!(codes.len(), 124);
    assert!(codes.contains(&manual.code), "the hand-made asset stays");
    for id in &gone {
        assert!(!codes.contains(id), "{id} still in the PIM");
    }

    // Nothing left to delete; a DAM outage fails the sweep with a retriable error.
    let again = sweeper
        .run(
            SystemTime::now(),
            SystemTime::now() + Duration::from_secs(600),
        )
        .await
        .unwrap();
    assert_eq!(again.deletions_enqueued, 0);
    assert_eq!(again.managed, 123);
    dam.set_faults(Faults {
        down: true,
        ..Faults::default()
    });
    let err = sweeper
        .run(
            SystemTime::now(),
            SystemTime::now() + Duration::from_secs(600),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SweepError::Dam(_)), "{err}");
    assert!(err.is_retriable());
    assert_eq!(PollMetrics::get(&metrics.dam_errors), 1);
    assert!(queue.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_stops_at_its_dam_call_budget() {
    let w = Synced::start(150, 4).await;
    let Synced {
        dam,
        ids,
        pim,
        store,
        queue,
        consumer,
        ..
    } = &w;
    for id in ids {
        dam.delete(id);
    }
    let sweeper = w.sweeper(SweepSettings {
        max_dam_calls: 1,
        ..SweepSettings::default()
    });
    let now = SystemTime::now();
    let report = sweeper
        .run(now, now + Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(report.stop, Some(StopReason::Budget));
    assert_eq!(report.dam_calls, 1);
    assert_eq!(report.deletions_enqueued, 100, "one PIM page was checked");
    assert!(report.position_saved);
    let saved = store.get("sweep").await.unwrap().unwrap();
    assert!(saved.page_token.is_some());
    assert_eq!(queue.len(), 100);
    consume(queue, consumer).await;

    // The next run resumes at the second PIM page instead of starting over.
    let next = sweeper
        .run(now, now + Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(next.stop, Some(StopReason::Complete), "{next:?}");
    assert!(next.resumed);
    assert!(!next.position_saved);
    assert_eq!(next.pim_assets, 50);
    assert_eq!(next.deletions_enqueued, 50);
    consume(queue, consumer).await;
    assert!(pim_codes(&pim.base_url()).await.is_empty());
    assert_eq!(store.get("sweep").await.unwrap().unwrap().page_token, None);
}

/// The sweep resolves PIM codes through the state store's reverse index, so assets whose code
/// is not their DAM id are swept too: ids with `-` (Bynder-style UUIDs, whose codes get a hash
/// suffix) and a route with its own `code` template.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_finds_assets_whatever_their_code_template_and_id() {
    let dam = DamSim::start(DamSimConfig::default()).await.unwrap();
    let uuids = [
        "7f1c9d2e-1b2a-4c3d-9e8f-0a1b2c3d4e5f",
        "0b6e4d3c-2a19-4f8e-8d7c-6b5a49382716",
    ];
    let plain = ["g1", "g2", "g3"];
    for (i, id) in uuids.iter().chain(plain.iter()).enumerate() {
        dam.upsert(
            id,
            serde_json::json!({ "title": format!("Asset {i}"), "sku": format!("AB-{i}"), "width": 100 }),
        );
    }
    let pim = start_pim(akeneo_caps()).await;
    let source = Arc::new(
        GenericApi::new(GenericApiSettings::new(
            url::Url::parse(&dam.generic_base_url()).unwrap(),
            SecretString::from(dam.config().generic_token.clone()),
        ))
        .unwrap(),
    );
    // The route names its own code template: the code is never the DAM id.
    let mapping = SIM_MAPPING.replace(
        "on_delete = \"delete\"",
        "on_delete = \"delete\"\ncode = \"ref_{{fields.sku}}_{{id}}\"",
    );
    let mapping = Arc::new(Mapping::from_toml_str(&mapping, "code template").unwrap());
    let store = Arc::new(MemoryStore::new());
    let queue = Arc::new(MemoryChangeQueue::new());
    let client = Arc::new(AkeneoClient::new(pim_config(&pim, Limits::default())).unwrap());
    let consumer = Consumer::new(
        store.clone(),
        mapping.clone(),
        client.clone(),
        Arc::new(MemoryDeadLetters::new()),
    )
    .with_source(source.clone());
    let now = SystemTime::now();
    Poller::new(
        source.clone(),
        queue.clone(),
        store.clone(),
        store.clone(),
        PollerSettings::default(),
    )
    .backfill(now, now + Duration::from_secs(600))
    .await
    .unwrap();
    consume(&queue, &consumer).await;
    let codes = pim_codes(&pim.base_url()).await;
    assert_eq!(codes.len(), 5, "{codes:?}");
    let ids: Vec<&str> = uuids.iter().chain(plain.iter()).copied().collect();
    assert!(
        codes.iter().all(|c| !ids.contains(&c.as_str())),
        "{codes:?}"
    );
    // `-` is not allowed in codes: every code is normalised, with a hash suffix.
    assert!(
        codes.iter().any(|c| c.starts_with("ref_AB_2_g1_")),
        "{codes:?}"
    );

    // One of each kind is deleted in the DAM, with no webhook.
    assert!(dam.delete(uuids[0]));
    assert!(dam.delete("g2"));
    let sweeper = Sweeper::new(
        SweepPorts {
            pim: client.clone(),
            source: source.clone(),
            states: store.clone(),
            queue: queue.clone(),
            cursors: store.clone(),
            leases: store.clone(),
        },
        mapping.clone(),
        SweepSettings::default(),
    );
    let now = SystemTime::now();
    let report = sweeper
        .run(now, now + Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(report.stop, Some(StopReason::Complete));
    assert_eq!(report.managed, 5);
    assert_eq!(report.unmanaged, 0);
    assert_eq!(report.deletions_enqueued, 2);
    let events = queue.drain();
    let mut gone: Vec<&str> = events.iter().map(|e| e.asset_id.as_str()).collect();
    gone.sort();
    assert_eq!(gone, [uuids[0], "g2"]);
    assert!(events.iter().all(|e| e.kind == ChangeKind::Delete));

    // The consumer retires exactly those two.
    queue.enqueue(&events).await.unwrap();
    consume(&queue, &consumer).await;
    let left = pim_codes(&pim.base_url()).await;
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(
        !left.iter().any(|c| c.starts_with("ref_AB_3_g2_")),
        "{left:?}"
    );
    assert!(
        !left.iter().any(|c| c.starts_with("ref_AB_0_7f1c9d2e_")),
        "{left:?}"
    );
    assert!(
        left.iter().any(|c| c.starts_with("ref_AB_1_0b6e4d3c_")),
        "{left:?}"
    );
}
