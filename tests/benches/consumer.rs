//! One 1,000-message SQS batch through the consumer: PIM calls and wall time.
//!
//! `cargo bench -p dam-sync-tests --bench consumer` (env: BENCH_MESSAGES, default 1000;
//! BENCH_ASSETS, distinct assets among them, default 700; BENCH_LATENCY_MS, PIM latency per
//! call, default 20). The real Akeneo and generic DAM clients run against the simulators over
//! HTTP; state and dead letters are in memory, so DynamoDB time is not in the figures.
//! Three passes: a cold batch, the same batch redelivered, and a batch where every version was
//! bumped but only 10% of the content changed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use akeneo_sim::Faults;
use dam_sim::{DamSim, DamSimConfig};
use dam_sync_tests::{BULK_PATCH, CONSUMER_MAPPING, consumer_fields, pim_client, start_pim};
use secrecy::SecretString;
use shared::akeneo::Limits;
use shared::consumer::{BatchOutcome, Consumer, InboundMessage};
use shared::dam::generic::api::{GenericApi, GenericApiSettings};
use shared::dam::{ChangeEvent, ChangeKind, DamKind};
use shared::mapping::Mapping;
use shared::testing::{MemoryDeadLetters, MemoryStore};
use url::Url;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn id(n: usize) -> String {
    format!("bench_{n}")
}

/// Every asset once, then duplicates drawn with a skew towards a few hot assets (a DAM user
/// saving the same asset repeatedly), shuffled as SQS would deliver them.
fn batch(messages: usize, assets: usize, seed: u64) -> Vec<InboundMessage> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut picks: Vec<usize> = (0..assets).collect();
    while picks.len() < messages {
        let hot = rng.usize(..assets.max(1));
        picks.push(if rng.bool() { hot % 20 } else { hot });
    }
    rng.shuffle(&mut picks);
    picks
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            let event = ChangeEvent {
                dam: DamKind::Generic,
                asset_id: id(n),
                kind: ChangeKind::Upsert,
                version: None,
                asset: None,
                dedupe_key: format!("{n}:{i}"),
                received_at_ms: i as i64,
            };
            InboundMessage {
                receive_count: 1,
                id: format!("m{i}"),
                body: serde_json::to_string(&event).expect("event JSON"),
            }
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let messages = env_or("BENCH_MESSAGES", 1000) as usize;
    let assets = (env_or("BENCH_ASSETS", 700) as usize).min(messages);
    let latency = env_or("BENCH_LATENCY_MS", 20);
    let pim = start_pim(Faults {
        latency_ms: (latency, latency),
        ..Faults::default()
    })
    .await;
    let dam = DamSim::start(DamSimConfig::default())
        .await
        .expect("dam-sim");
    for n in 0..assets {
        dam.upsert(&id(n), consumer_fields(n, "Bench"));
    }
    let source = GenericApi::new(GenericApiSettings::new(
        Url::parse(&dam.generic_base_url()).expect("URL"),
        SecretString::from(dam.config().generic_token.clone()),
    ))
    .expect("generic client");
    let dead_letters = Arc::new(MemoryDeadLetters::new());
    let consumer = Consumer::new(
        Arc::new(MemoryStore::new()),
        Arc::new(Mapping::from_toml_str(CONSUMER_MAPPING, "bench").expect("mapping")),
        Arc::new(pim_client(&pim, Limits::default())),
        dead_letters.clone(),
    )
    .with_source(Arc::new(source));
    let input = batch(messages, assets, 7);

    let pass = |name: &'static str| {
        let consumer = &consumer;
        let input = input.clone();
        let pim = &pim;
        let dam = &dam;
        async move {
            let patches = pim.stats().calls_to(BULK_PATCH);
            let pim_total = pim.stats().total_calls;
            let fetches = dam.stats().count("/generic/assets");
            let started = Instant::now();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(900);
            let out: BatchOutcome = consumer.process(input, deadline).await;
            let elapsed = started.elapsed();
            let r = out.report;
            println!(
                "{name:<10} {} messages, {} assets: synced {}, unchanged {}, stale {}, \
                 failed {}, retried {} | PATCH {}, PIM calls {}, DAM fetches {} | {:.0} ms",
                r.messages,
                r.assets,
                r.synced,
                r.skipped_unchanged,
                r.stale,
                r.failed,
                out.retry.len(),
                pim.stats().calls_to(BULK_PATCH) - patches,
                pim.stats().total_calls - pim_total,
                dam.stats().count("/generic/assets") - fetches,
                elapsed.as_secs_f64() * 1000.0,
            );
            (out, pim.stats().calls_to(BULK_PATCH) - patches)
        }
    };

    let (cold, patches) = pass("cold").await;
    assert_eq!(cold.report.synced, assets as u64, "{:?}", cold.report);
    assert_eq!(patches, assets.div_ceil(100) as u64);

    let (again, patches) = pass("redelivery").await;
    assert_eq!(again.report.stale, assets as u64);
    assert_eq!(patches, 0, "an unchanged redelivery must not reach the PIM");

    // Every asset saved again, one in ten with new content.
    for n in 0..assets {
        let title = if n % 10 == 0 {
            "Bench, edited"
        } else {
            "Bench"
        };
        dam.upsert(&id(n), consumer_fields(n, title));
    }
    let (bumped, patches) = pass("bumped").await;
    let changed = assets.div_ceil(10);
    assert_eq!(bumped.report.synced, changed as u64, "{:?}", bumped.report);
    assert_eq!(patches, changed.div_ceil(100) as u64);
    assert!(dead_letters.letters().is_empty());
}
