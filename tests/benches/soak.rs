//! Memory soak: many batches through the poller and the consumer in one process, sampling
//! RSS as it goes. Each batch changes 100 DAM assets (cycling over a fixed catalogue, so the
//! simulators' and stores' contents stop growing once every asset exists); one poller run
//! lists them (with its lookback, so older changes are listed again and must be skipped by
//! the version guard) into the queue, and the consumer applies the queue's messages to the
//! Akeneo simulator with bulk PATCH.
//!
//! Prints RSS every 100 batches and the growth between batch 500 (warm) and the end.
//!
//! Run: `cargo bench -p dam-sync-tests --bench soak` (optional args: batches, catalogue size).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dam_sync_tests::{BULK_PATCH, pim_config, start_pim};
use shared::akeneo::{AkeneoClient, Limits};
use shared::consumer::{Consumer, InboundMessage};
use shared::dam::{AssetSource, DamKind};
use shared::mapping::Mapping;
use shared::poller::{Poller, PollerSettings};
use shared::testing::{MemoryChangeQueue, MemoryDeadLetters, MemorySource, MemoryStore};

const BATCH: usize = 100;

/// MemorySource assets carry `{id, seq}`; every new version has new content.
const SOAK_MAPPING: &str = r#"
[settings]
create_missing_options = false
code = "{{id}}"

[[route]]
family = "packshot"
when = [ { field = "id", exists = true } ]
on_delete = "delete"

[route.values.media_preview]
template = "soak/{{id}}.jpg"

[route.values.alt_text]
locales = { en_US = "Soak {{id}} revision {{seq}}" }
"#;

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let batches: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let catalogue: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5_000);
    assert!(
        catalogue >= BATCH,
        "the catalogue must hold at least one batch"
    );

    // The simulator's own pacing is off: the soak is about memory, not the PIM's rate cap.
    let pim = start_pim(akeneo_sim::Faults {
        rate_limit_per_sec: None,
        ..akeneo_sim::Faults::default()
    })
    .await;
    let limits = Limits {
        requests_per_second: None,
        ..Limits::default()
    };
    let client = Arc::new(AkeneoClient::new(pim_config(&pim, limits)).expect("client"));
    let store = Arc::new(MemoryStore::new());
    let source = Arc::new(MemorySource::new(DamKind::Generic));
    let queue = Arc::new(MemoryChangeQueue::new());
    let dead = Arc::new(MemoryDeadLetters::new());
    let mapping = Arc::new(Mapping::from_toml_str(SOAK_MAPPING, "soak").expect("mapping"));
    let consumer = Consumer::new(store.clone(), mapping, client, dead.clone())
        .with_source(source.clone() as Arc<dyn AssetSource>);
    let settings = PollerSettings {
        lookback: Duration::from_secs(5),
        safety_lag: Duration::from_secs(1),
        ..PollerSettings::default()
    };
    let poller = Poller::new(
        source.clone(),
        queue.clone(),
        store.clone(),
        store.clone(),
        settings,
    );

    let base_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 1_000 * batches as i64
        - 60_000;
    let started = Instant::now();
    let mut curve: Vec<(usize, u64)> = Vec::new();
    let mut synced = 0u64;
    let mut stale = 0u64;
    println!("batch\tRSS KiB\tPIM PATCH\telapsed s");
    for b in 0..batches {
        // 100 assets change one DAM second apart per batch.
        let modified = base_ms + 1_000 * b as i64;
        for i in 0..BATCH {
            let id = format!("soak_{}", (b * BATCH + i) % catalogue);
            source.put(&id, modified, b as i64);
        }
        // The poll happens "2 s later", so this batch's changes are past the safety lag.
        let now = UNIX_EPOCH + Duration::from_millis((modified + 2_000) as u64);
        let report = poller
            // The run's deadline is checked against the real clock.
            .run(now, SystemTime::now() + Duration::from_secs(600))
            .await
            .expect("poll");
        assert!(
            report.events_enqueued >= BATCH as u64,
            "batch {b}: {report:?}"
        );
        let messages: Vec<InboundMessage> = queue
            .drain()
            .iter()
            .enumerate()
            .map(|(i, e)| InboundMessage {
                receive_count: 1,
                id: format!("{b}-{i}"),
                body: serde_json::to_string(e).expect("event json"),
            })
            .collect();
        let out = consumer
            .process(
                messages,
                tokio::time::Instant::now() + Duration::from_secs(600),
            )
            .await;
        assert!(
            out.retry.is_empty() && out.dead_lettered.is_empty(),
            "batch {b}: {out:?}"
        );
        synced += out.report.synced;
        stale += out.report.stale;
        if (b + 1) % 100 == 0 || b + 1 == batches {
            let rss = rss_kib("VmRSS:");
            curve.push((b + 1, rss));
            println!(
                "{}\t{rss}\t{}\t{:.1}",
                b + 1,
                pim.stats().calls_to(BULK_PATCH),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let elapsed = started.elapsed();
    let warm = curve
        .iter()
        .find(|(b, _)| *b >= 500.min(batches))
        .map(|(_, r)| *r)
        .unwrap_or(0);
    let end = curve.last().map(|(_, r)| *r).unwrap_or(0);
    let growth = if warm == 0 {
        0.0
    } else {
        (end as f64 - warm as f64) / warm as f64 * 100.0
    };
    println!();
    println!("batches: {batches} of {BATCH} (catalogue {catalogue} assets)");
    println!("assets synced: {synced}, re-listed and skipped as stale: {stale}");
    println!("PIM PATCH calls: {}", pim.stats().calls_to(BULK_PATCH));
    println!("dead letters: {}", dead.letters().len());
    println!("wall time: {:.1} s", elapsed.as_secs_f64());
    println!(
        "RSS at batch 500: {warm} KiB, at the end: {end} KiB, peak: {} KiB",
        rss_kib("VmHWM:")
    );
    println!(
        "growth from batch 500 to the end: {growth:.2} % (target <= 5 %): {}",
        if growth <= 5.0 { "PASS" } else { "FAIL" }
    );
    if growth > 5.0 {
        std::process::exit(1);
    }
}
