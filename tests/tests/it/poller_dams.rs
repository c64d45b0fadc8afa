//! The poller over each DAM adapter against dam-sim, at its rate limits: Cloudinary's hourly
//! Admin API budget (with a reserve left to the consumer), Bynder's 4,500 requests per
//! 5 minutes (client-side budget first; the simulator's header-less 429 block as the backstop)
//! and a generic 429 with Retry-After. Each run spends at most its budget, stops cleanly and
//! the next run resumes where it stopped.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dam_sim::{DamSim, DamSimConfig, DamSimHandle};
use secrecy::SecretString;
use shared::dam::AssetSource;
use shared::dam::bynder::api::{BynderApi, BynderApiSettings};
use shared::dam::cloudinary::api::{CloudinaryApi, CloudinaryApiSettings};
use shared::dam::generic::api::{GenericApi, GenericApiSettings};
use shared::poller::{Poller, PollerSettings, StopReason};
use shared::store::CursorStore;
use shared::testing::{MemoryChangeQueue, MemoryStore};

const SEARCH: &str = "/resources/search";
const MEDIA: &str = "GET /api/v4/media";

struct Rig {
    queue: Arc<MemoryChangeQueue>,
    store: Arc<MemoryStore>,
}

impl Rig {
    fn new() -> Self {
        Self {
            queue: Arc::new(MemoryChangeQueue::new()),
            store: Arc::new(MemoryStore::new()),
        }
    }

    fn poller(&self, source: Arc<dyn AssetSource>, page_size: usize) -> Poller {
        Poller::new(
            source,
            self.queue.clone(),
            self.store.clone(),
            self.store.clone(),
            PollerSettings {
                page_size,
                ..PollerSettings::default()
            },
        )
    }

    fn enqueued_ids(&self) -> Vec<String> {
        self.queue.drain().into_iter().map(|e| e.asset_id).collect()
    }
}

fn window() -> (SystemTime, SystemTime) {
    let now = SystemTime::now() + Duration::from_secs(300);
    (now, now + Duration::from_secs(600))
}

fn cloudinary(sim: &DamSimHandle, min_remaining: u64) -> Arc<CloudinaryApi> {
    let c = sim.config();
    let mut settings = CloudinaryApiSettings::new(
        c.cloud_name.clone(),
        c.cloudinary_api_key.clone(),
        SecretString::from(c.cloudinary_api_secret.clone()),
    );
    settings.api_base = url::Url::parse(&sim.base_url()).unwrap();
    settings.min_remaining = min_remaining;
    Arc::new(CloudinaryApi::new(settings).unwrap())
}

fn bynder(sim: &DamSimHandle, budget: usize) -> Arc<BynderApi> {
    let mut settings = BynderApiSettings::new(
        url::Url::parse(&sim.base_url()).unwrap(),
        SecretString::from(sim.config().bynder_token.clone()),
    );
    settings.budget_requests = budget;
    settings.budget_max_wait = Duration::ZERO;
    Arc::new(BynderApi::new(settings).unwrap())
}

#[tokio::test]
async fn cloudinary_polls_stop_at_the_reserve_and_resume_next_run() {
    let sim = DamSim::start(DamSimConfig {
        cloudinary_hourly_limit: 10,
        ..DamSimConfig::default()
    })
    .await
    .unwrap();
    let ids: HashSet<String> = sim.generate(40, 3).into_iter().collect();
    let rig = Rig::new();
    let api = cloudinary(&sim, 4);
    let (now, deadline) = window();

    // 10 calls an hour, 4 kept for the consumer: the run makes 6 and stops.
    let first = rig.poller(api.clone(), 5).run(now, deadline).await.unwrap();
    assert!(
        matches!(first.stop, StopReason::RateLimited { retry_after_ms: Some(ms) } if ms > 0),
        "{first:?}"
    );
    assert_eq!(first.pages, 6);
    assert!(first.resume_saved);
    assert_eq!(api.remaining(), Some(4));
    assert_eq!(sim.stats().count(SEARCH), 6);
    let mut seen = rig.enqueued_ids();
    assert_eq!(seen.len(), 30);

    // The next run (here: the consumer's share, a client without reserve) resumes the
    // listing from the saved page instead of starting over.
    let second = rig
        .poller(cloudinary(&sim, 0), 5)
        .run(now, deadline)
        .await
        .unwrap();
    assert_eq!(second.stop, StopReason::Complete, "{second:?}");
    assert!(second.resumed);
    seen.extend(rig.enqueued_ids());
    assert_eq!(seen.len(), 40, "nothing enqueued twice");
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), ids);
    assert!(sim.stats().count(SEARCH) <= 10);
    assert_eq!(sim.stats().count_status(SEARCH, 429), 0);
    assert_eq!(
        rig.store
            .get("reconcile")
            .await
            .unwrap()
            .unwrap()
            .page_token,
        None
    );
}

#[tokio::test]
async fn bynder_polls_spend_the_client_budget_without_tripping_the_block() {
    let sim = DamSim::start(DamSimConfig {
        bynder_rate_limit: 6,
        ..DamSimConfig::default()
    })
    .await
    .unwrap();
    let ids: HashSet<String> = sim.generate(60, 5).into_iter().collect();
    let rig = Rig::new();
    // The client keeps under the limit (4 of 6): the run stops before Bynder would block.
    let first = rig
        .poller(bynder(&sim, 4), 5)
        .run(window().0, window().1)
        .await
        .unwrap();
    assert!(
        matches!(first.stop, StopReason::RateLimited { .. }),
        "{first:?}"
    );
    assert_eq!(first.pages, 4);
    assert!(first.resume_saved);
    assert_eq!(sim.stats().count(MEDIA), 4);
    assert_eq!(sim.stats().count_status(MEDIA, 429), 0);
    let first_ids = rig.enqueued_ids();
    assert!(!first_ids.is_empty() && first_ids.len() <= 20);

    // A client whose budget is larger than the real limit (e.g. several clients behind one
    // egress IP) meets Bynder's bare 429: the run stops at once and keeps its place.
    let second = rig
        .poller(bynder(&sim, 100), 5)
        .run(window().0, window().1)
        .await
        .unwrap();
    assert!(
        matches!(
            second.stop,
            StopReason::RateLimited {
                retry_after_ms: None
            }
        ),
        "{second:?}"
    );
    assert_eq!(
        sim.stats().count_status(MEDIA, 429),
        1,
        "no call after the 429"
    );
    assert!(second.resumed && second.resume_saved);
    let second_ids = rig.enqueued_ids();
    assert!(
        second_ids.len() <= 10,
        "two calls were left in Bynder's window"
    );
    let mut all = first_ids;
    all.extend(second_ids);
    let distinct: HashSet<_> = all.iter().cloned().collect();
    assert_eq!(distinct.len(), all.len(), "an asset was enqueued twice");
    assert!(distinct.is_subset(&ids));
}

#[tokio::test]
async fn a_generic_429_stops_the_run_with_its_retry_after() {
    let sim = DamSim::start(DamSimConfig {
        generic_rate_limit: Some(2),
        generic_retry_after_secs: 7,
        ..DamSimConfig::default()
    })
    .await
    .unwrap();
    sim.generate(30, 8);
    let rig = Rig::new();
    let api = Arc::new(
        GenericApi::new(GenericApiSettings::new(
            url::Url::parse(&sim.generic_base_url()).unwrap(),
            SecretString::from(sim.config().generic_token.clone()),
        ))
        .unwrap(),
    );
    let report = rig
        .poller(api, 10)
        .run(window().0, window().1)
        .await
        .unwrap();
    assert_eq!(
        report.stop,
        StopReason::RateLimited {
            retry_after_ms: Some(7_000)
        }
    );
    assert_eq!(report.pages, 2);
    assert!(report.resume_saved);
    assert_eq!(rig.enqueued_ids().len(), 20);
}

/// The generic change feed lists deleted assets as `"deleted": true` rows: the poller turns
/// each one it synced into a `Delete` at the listing's version, and leaves alone the ones it
/// never wrote, or already retired.
#[tokio::test]
async fn generic_deleted_rows_become_versioned_deletions() {
    use shared::dam::{ChangeKind, DamKind, Version};
    use shared::store::{AssetState, AssetStateStore};

    let sim = DamSim::start(DamSimConfig::default()).await.unwrap();
    let ids = sim.generate(4, 3);
    let rig = Rig::new();
    let api = Arc::new(
        GenericApi::new(GenericApiSettings::new(
            url::Url::parse(&sim.generic_base_url()).unwrap(),
            SecretString::from(sim.config().generic_token.clone()),
        ))
        .unwrap(),
    );
    let poller = rig
        .poller(api.clone(), 10)
        .with_applied_filter(rig.store.clone());
    let (now, deadline) = window();
    let first = poller.run(now, deadline).await.unwrap();
    assert_eq!(first.events_enqueued, 4);
    // The consumer applied all four as listed, except the last one (never written).
    for event in rig.queue.drain().iter().filter(|e| e.asset_id != ids[3]) {
        let asset = event.asset.as_ref().unwrap();
        rig.store
            .record_applied(&AssetState {
                dam: DamKind::Generic,
                asset_id: asset.id.clone(),
                applied_version: asset.version,
                content_hash: "h".into(),
                family: "packshot".into(),
                pim_code: asset.id.clone(),
                updated_at_ms: 0,
                media_files: Default::default(),
                deleted: false,
                source_hash: asset.fingerprint(),
            })
            .await
            .unwrap();
    }
    assert!(sim.delete(&ids[0]));
    assert!(sim.delete(&ids[3]));
    let deleted_version = {
        let a = sim.asset(&ids[0]).unwrap();
        Version {
            modified_at_ms: a.modified_at_ms,
            seq: a.version as i64,
        }
    };

    let second = poller.run(now, deadline).await.unwrap();
    let events = rig.queue.drain();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].asset_id, ids[0]);
    assert_eq!(events[0].kind, ChangeKind::Delete);
    assert_eq!(events[0].version, Some(deleted_version));
    assert_eq!(second.already_applied, 3, "two applied, one never written");
}

/// 1,000 assets created in one second, webhooks off, and Bynder's `dateModified` read as
/// "modified after" (exclusive, dam-sim's default): the poller lists every one of them, and so
/// does a listing asked from that very second.
#[tokio::test]
async fn bynder_lists_a_thousand_assets_created_in_one_second() {
    use futures::StreamExt;

    // The simulator stamps changes 1 ms apart: one asset edited until the clock stands at
    // the last millisecond of a second, then 1,000 creations fill the next second exactly.
    let sim = DamSim::start(DamSimConfig {
        clock_step_ms: 1,
        ..DamSimConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(
        sim.config().bynder_date_filter,
        dam_sim::DateFilter::Exclusive
    );
    while sim.upsert("pad", serde_json::json!({}))["modified_at"]
        .as_str()
        .is_some_and(|t| !t.ends_with(".999Z"))
    {}
    let created: HashSet<String> = sim.generate(1000, 9).into_iter().collect();
    let seconds: HashSet<i64> = created
        .iter()
        .map(|id| sim.asset(id).unwrap().modified_at_ms.div_euclid(1000))
        .collect();
    assert_eq!(created.len(), 1000);
    assert_eq!(seconds.len(), 1, "the set-up puts all 1,000 in one second");
    let second = *seconds.iter().next().unwrap();
    let mut ids = created.clone();
    ids.insert("pad".into());

    let rig = Rig::new();
    let report = rig
        .poller(bynder(&sim, 4500), 100)
        .run(window().0, window().1)
        .await
        .unwrap();
    assert!(matches!(report.stop, StopReason::Complete), "{report:?}");
    let enqueued: HashSet<String> = rig.enqueued_ids().into_iter().collect();
    assert_eq!(
        enqueued.len(),
        ids.len(),
        "{} missing",
        ids.difference(&enqueued).count()
    );
    assert_eq!(enqueued, ids);

    // Asked from that second itself: an exclusive filter must not hide it.
    let since = SystemTime::UNIX_EPOCH + Duration::from_millis(second as u64 * 1000 + 500);
    let api = bynder(&sim, 4500);
    let listed: HashSet<String> = api
        .list_changed(Some(since), None, 100)
        .map(|p| p.expect("page").assets)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .map(|a| a.id)
        .collect();
    assert_eq!(listed, created);
    sim.shutdown().await;
}
