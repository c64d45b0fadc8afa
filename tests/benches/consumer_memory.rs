//! Memory across many consumer batches: RSS must return to its base after each batch.
//!
//! `cargo bench -p dam-sync-tests --bench consumer_memory` (env: BENCH_BATCHES, default 200;
//! BENCH_BATCH_SIZE, messages per batch, default 100; BENCH_POOL, distinct assets, default
//! 1,000). Every batch re-saves `BATCH_SIZE` assets of the pool in dam-sim with new content and
//! runs their thin events through the consumer (real Akeneo and generic DAM clients over HTTP,
//! in-memory state), so each batch costs DAM reads, a bulk PATCH and state writes. Every asset
//! also has a media_file value: its file is downloaded and uploaded on its first write, later
//! batches reuse the stored media-file code. Both simulators run in this process; their data
//! is bounded by the pool, so after the first pass over the pool any growth is the consumer's.
//!
//! Prints VmRSS (from /proc/self/status) every 20 batches and the change between batch 20 and
//! the last one; fails when that change is more than 8 MiB.

use std::sync::Arc;
use std::time::{Duration, Instant};

use akeneo_sim::Faults;
use dam_sim::{DamSim, DamSimConfig};
use dam_sync_tests::{BULK_PATCH, CONSUMER_MAPPING, consumer_fields, pim_client, start_pim};
use secrecy::SecretString;
use serde_json::json;
use shared::akeneo::Limits;
use shared::consumer::{Consumer, InboundMessage};
use shared::dam::generic::api::{GenericApi, GenericApiSettings};
use shared::dam::{ChangeEvent, ChangeKind, DamKind};
use shared::mapping::Mapping;
use shared::testing::{MemoryDeadLetters, MemoryStore};
use url::Url;

/// Growth allowed between batch 20 and the end (allocator noise, lazily sized pools).
const ALLOWED_GROWTH_KIB: u64 = 8 * 1024;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn id(n: usize) -> String {
    format!("mem_{n}")
}

#[tokio::main]
async fn main() {
    let batches = env_or("BENCH_BATCHES", 200) as usize;
    let size = env_or("BENCH_BATCH_SIZE", 100) as usize;
    let pool = (env_or("BENCH_POOL", 1000) as usize).max(size);
    let pim = start_pim(Faults::default()).await;
    let dam = DamSim::start(DamSimConfig::default())
        .await
        .expect("dam-sim");
    let source = GenericApi::new(GenericApiSettings::new(
        Url::parse(&dam.generic_base_url()).expect("URL"),
        SecretString::from(dam.config().generic_token.clone()),
    ))
    .expect("generic client");
    let mapping =
        format!("{CONSUMER_MAPPING}\n[route.values.source_file]\nfield = \"fields.file_url\"\n");
    let dead_letters = Arc::new(MemoryDeadLetters::new());
    let consumer = Consumer::new(
        Arc::new(MemoryStore::new()),
        Arc::new(Mapping::from_toml_str(&mapping, "memory bench").expect("mapping")),
        Arc::new(pim_client(&pim, Limits::default())),
        dead_letters.clone(),
    )
    .with_source(Arc::new(source));

    println!(
        "{batches} batches of {size} messages over {pool} assets; RSS at start {:.1} MiB",
        mib(rss_kib())
    );
    let started = Instant::now();
    let mut at_20 = None;
    let mut peak = 0;
    let mut synced = 0;
    let mut uploaded = 0;
    for b in 1..=batches {
        let mut messages = Vec::with_capacity(size);
        for i in 0..size {
            let n = ((b - 1) * size + i) % pool;
            let mut fields = consumer_fields(n, &format!("Batch {b}"));
            fields["file_url"] = json!(dam.file_url(&id(n), &format!("{n}.jpg")));
            fields["file_bytes"] = json!(16 * 1024);
            dam.upsert(&id(n), fields);
            let event = ChangeEvent {
                dam: DamKind::Generic,
                asset_id: id(n),
                kind: ChangeKind::Upsert,
                version: None,
                asset: None,
                dedupe_key: format!("{n}:{b}"),
                received_at_ms: b as i64,
            };
            messages.push(InboundMessage {
                receive_count: 1,
                id: format!("b{b}m{i}"),
                body: serde_json::to_string(&event).expect("event JSON"),
            });
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let out = consumer.process(messages, deadline).await;
        assert!(
            out.retry.is_empty() && out.dead_lettered.is_empty(),
            "batch {b}: {out:?}"
        );
        synced += out.report.synced;
        uploaded += out.report.media_uploaded;
        let rss = rss_kib();
        peak = peak.max(rss);
        if b == 20 {
            at_20 = Some(rss);
        }
        if b % 20 == 0 || b == 1 {
            println!(
                "after batch {b:>4}: RSS {:>7.1} MiB | synced {synced}, media uploaded {uploaded}, \
                 PATCH {}",
                mib(rss),
                pim.stats().calls_to(BULK_PATCH)
            );
        }
    }
    let end = rss_kib();
    let base = at_20.unwrap_or(end);
    let growth = end.saturating_sub(base);
    println!(
        "RSS batch 20 {:.1} MiB, end {:.1} MiB: change {:+.1} MiB ({:+.2} KiB per batch), peak \
         {:.1} MiB, {:.1} s",
        mib(base),
        mib(end),
        (end as f64 - base as f64) / 1024.0,
        (end as f64 - base as f64) / (batches.saturating_sub(20).max(1)) as f64,
        mib(peak),
        started.elapsed().as_secs_f64()
    );
    assert!(dead_letters.letters().is_empty());
    assert!(
        growth <= ALLOWED_GROWTH_KIB,
        "memory grew by {:.1} MiB after batch 20",
        mib(growth)
    );
    println!(
        "flat: yes (growth within {} MiB)",
        ALLOWED_GROWTH_KIB / 1024
    );
}
