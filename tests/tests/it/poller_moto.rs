//! The poller end to end: the DAM simulator's generic API, cursors and leases in DynamoDB and
//! the change queue in SQS, both on the moto server at `AWS_ENDPOINT_URL` (these tests fail
//! without it).

use crate::support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dam_sim::{DamSim, DamSimConfig, DamSimHandle, Faults};
use secrecy::SecretString;
use shared::dam::generic::api::{GenericApi, GenericApiSettings};
use shared::poller::{PollError, Poller, PollerSettings, StopReason};
use shared::queue::sqs::SqsChangeQueue;
use shared::store::dynamodb::{self, DynamoStore};
use shared::store::{CursorStore, LeaseStore};
use shared::testing::create_table;
use support::{body_event, moto_config, moto_sqs, new_queue, receive_all};

struct Rig {
    sim: DamSimHandle,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    store: Arc<DynamoStore>,
}

async fn rig(prefix: &str) -> Rig {
    let sim = DamSim::start(DamSimConfig::default()).await.unwrap();
    let sqs = moto_sqs().await;
    let queue_url = new_queue(&sqs, prefix).await;
    let ddb = dynamodb::Client::new(&moto_config().await);
    let table = format!("{prefix}-{}-{}", std::process::id(), fastrand_suffix());
    create_table(&ddb, &table).await.unwrap();
    Rig {
        sim,
        sqs,
        queue_url,
        store: Arc::new(DynamoStore::new(ddb, table)),
    }
}

fn fastrand_suffix() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

impl Rig {
    fn poller(&self, settings: PollerSettings) -> Poller {
        let url = url::Url::parse(&self.sim.generic_base_url()).unwrap();
        let token = SecretString::from(self.sim.config().generic_token.clone());
        let api = GenericApi::new(GenericApiSettings::new(url, token)).unwrap();
        Poller::new(
            Arc::new(api),
            Arc::new(SqsChangeQueue::new(
                self.sqs.clone(),
                self.queue_url.clone(),
            )),
            self.store.clone(),
            self.store.clone(),
            settings,
        )
    }

    /// Asset ids of every message now in the queue (they stay invisible afterwards).
    async fn received_ids(&self) -> Vec<String> {
        receive_all(&self.sqs, &self.queue_url)
            .await
            .iter()
            .map(|m| body_event(m).asset_id)
            .collect()
    }
}

fn settings() -> PollerSettings {
    PollerSettings {
        page_size: 10,
        ..PollerSettings::default()
    }
}

fn in_a_minute() -> SystemTime {
    SystemTime::now() + Duration::from_secs(60)
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test]
async fn a_poll_run_enqueues_dam_changes_to_sqs_and_advances_the_dynamodb_cursor() {
    let rig = rig("poll-e2e").await;
    let ids = rig.sim.generate(25, 7);
    let newest = rig
        .sim
        .assets()
        .iter()
        .map(|a| a.modified_at_ms)
        .max()
        .unwrap();
    // Poll start far enough ahead that the safety lag does not cap the cursor.
    let now = SystemTime::now() + Duration::from_secs(300);
    let poller = rig.poller(settings());

    let report = poller
        .run(now, now + Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(report.stop, StopReason::Complete);
    assert_eq!(report.pages, 3);
    assert_eq!(report.events_enqueued, 25);
    let messages = receive_all(&rig.sqs, &rig.queue_url).await;
    assert_eq!(messages.len(), 25);
    let events: Vec<_> = messages.iter().map(body_event).collect();
    let got: HashSet<_> = events.iter().map(|e| e.asset_id.clone()).collect();
    assert_eq!(got, ids.iter().cloned().collect::<HashSet<_>>());
    for e in &events {
        let asset = e.asset.as_ref().expect("the full asset rides along");
        assert_eq!(
            e.dedupe_key,
            format!(
                "generic:{}:{}.{}",
                e.asset_id, asset.version.modified_at_ms, asset.version.seq
            )
        );
    }
    let cursor = rig.store.get("reconcile").await.unwrap().unwrap();
    assert_eq!(cursor.position_ms, newest);
    assert_eq!(cursor.page_token, None);
    assert_eq!(cursor.version, 1);

    // An edit after the run: the next run re-reads the lookback window and picks it up.
    rig.sim
        .upsert(&ids[3], serde_json::json!({ "title": "edited" }));
    let report = poller
        .run(now, now + Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(report.stop, StopReason::Complete);
    let messages = receive_all(&rig.sqs, &rig.queue_url).await;
    let edited: Vec<_> = messages
        .iter()
        .map(body_event)
        .filter(|e| e.asset_id == ids[3])
        .collect();
    assert_eq!(edited.len(), 1, "the edit was enqueued once");
    assert_eq!(edited[0].version.unwrap().seq, 2);
    let cursor = rig.store.get("reconcile").await.unwrap().unwrap();
    assert!(cursor.position_ms > newest);
    assert_eq!(cursor.version, 2);

    // A run while another owner holds the lease in DynamoDB does nothing.
    assert!(
        rig.store
            .acquire("reconcile", "someone-else", Duration::from_secs(600))
            .await
            .unwrap()
    );
    rig.sim
        .upsert(&ids[4], serde_json::json!({ "title": "later" }));
    let report = poller
        .run(now, now + Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(report.stop, StopReason::LeaseHeld);
    assert!(rig.received_ids().await.is_empty());
    assert_eq!(
        rig.store.get("reconcile").await.unwrap().unwrap().version,
        2
    );
}

#[tokio::test]
async fn dam_down_leaves_the_dynamodb_cursor_alone() {
    let rig = rig("poll-down").await;
    rig.sim.generate(5, 3);
    let poller = rig.poller(settings());
    let now = in_a_minute();
    poller
        .run(now, now + Duration::from_secs(600))
        .await
        .unwrap();
    let before = rig.store.get("reconcile").await.unwrap().unwrap();
    receive_all(&rig.sqs, &rig.queue_url).await;

    rig.sim.set_faults(Faults {
        down: true,
        ..Faults::default()
    });
    let err = poller
        .run(now, now + Duration::from_secs(600))
        .await
        .unwrap_err();
    assert!(matches!(err, PollError::Dam { .. }), "{err}");
    assert!(err.is_retriable());
    assert_eq!(
        shared::poller::PollMetrics::get(&poller.metrics().dam_errors),
        1
    );
    assert_eq!(rig.store.get("reconcile").await.unwrap().unwrap(), before);
    assert!(rig.received_ids().await.is_empty());
}

#[tokio::test]
async fn a_backfill_cut_by_the_deadline_resumes_to_completion_without_rereading() {
    let rig = rig("poll-backfill").await;
    let ids = rig.sim.generate(45, 11);
    let start = ms(SystemTime::now());
    // One clock read per DAM call, each a second later: with a 20 s margin and a deadline
    // 22 s away, two pages fit in the first segment.
    let ticks = Arc::new(AtomicI64::new(start));
    let clock = ticks.clone();
    let poller = rig
        .poller(settings())
        .with_clock(Arc::new(move || clock.fetch_add(1000, Ordering::SeqCst)));
    let now = UNIX_EPOCH + Duration::from_millis(start as u64);
    let first = poller
        .backfill(now, now + Duration::from_secs(22))
        .await
        .unwrap();
    assert_eq!(first.stop, StopReason::Deadline);
    assert_eq!(first.pages, 2);
    assert!(first.resume_saved);
    let saved = rig.store.get("backfill").await.unwrap().unwrap();
    assert!(saved.page_token.is_some());
    let first_ids = rig.received_ids().await;
    assert_eq!(first_ids.len(), 20);

    let second = poller
        .backfill(now, now + Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(second.stop, StopReason::Complete);
    assert!(second.resumed);
    assert_eq!(second.pages, 3);
    let second_ids = rig.received_ids().await;
    assert_eq!(second_ids.len(), 25);

    let mut all = first_ids;
    all.extend(second_ids);
    let distinct: HashSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), distinct.len(), "an asset was enqueued twice");
    assert_eq!(distinct, ids.into_iter().collect::<HashSet<_>>());
    let done = rig.store.get("backfill").await.unwrap().unwrap();
    assert_eq!(done.page_token, None);
    assert_eq!(rig.store.get("reconcile").await.unwrap(), None);
}
