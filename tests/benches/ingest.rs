//! Ingest throughput and latency per DAM: the shared `IngestService` in process (routing, size
//! and content-type checks, signature verification, parsing, enqueue into the in-memory
//! queue) on a single-threaded runtime, so the figures are per core.
//!
//! Run: `cargo bench -p dam-sync-tests --bench ingest` (optional arg: iterations per DAM).
//! Target: p99 < 1 ms per delivery.

#[path = "../tests/it/support.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde_json::Value;
use shared::ingest::IngestService;
use shared::testing::MemoryChangeQueue;
use support::*;

struct Delivery {
    path: &'static str,
    headers: Vec<(String, String)>,
    body: Bytes,
}

fn deliveries(dam: &str) -> Vec<Delivery> {
    let now = now_secs();
    match dam {
        "cloudinary" => ["upload", "delete", "resource_tags_changed", "rename"]
            .iter()
            .map(|name| {
                let body = fixture(&format!("cloudinary/{name}.json"));
                Delivery {
                    path: "/webhooks/cloudinary",
                    headers: cloudinary_headers(&body, now, CLOUDINARY_SECRET),
                    body: Bytes::from(body),
                }
            })
            .collect(),
        "generic" => ["asset_upserted", "asset_deleted"]
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let body = fixture(&format!("generic/{name}.json"));
                Delivery {
                    path: "/webhooks/generic",
                    headers: generic_headers(&format!("msg_{i}"), &body, now, GENERIC_SECRET),
                    body: Bytes::from(body),
                }
            })
            .collect(),
        _ => ["1", "2"]
            .iter()
            .map(|version| {
                let envelope: Value = signed_fixture("bynder/sns_notification.json", version);
                Delivery {
                    path: "/webhooks/bynder",
                    headers: sns_headers(&envelope),
                    body: Bytes::from(envelope.to_string()),
                }
            })
            .collect(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn main() {
    let iterations: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("ingest bench: {iterations} deliveries per DAM, 1 thread, in-memory queue");
    println!(
        "{:<11} {:>12} {:>12} {:>10} {:>10} {:>10}",
        "dam", "deliveries/s", "events/s", "p50 µs", "p99 µs", "max µs"
    );
    for dam in ["cloudinary", "bynder", "generic"] {
        let queue = Arc::new(MemoryChangeQueue::new());
        let (service, _) = service(queue.clone());
        let pool = deliveries(dam);
        let run = |service: &IngestService, n: usize| {
            let mut latencies = Vec::with_capacity(n);
            let mut events = 0usize;
            let started = Instant::now();
            for i in 0..n {
                let d = &pool[i % pool.len()];
                let t = Instant::now();
                let response = runtime.block_on(service.handle_http(
                    "POST",
                    d.path,
                    d.headers.clone(),
                    d.body.clone(),
                    SystemTime::now(),
                ));
                latencies.push(t.elapsed());
                assert_eq!(response.status, 202, "{dam}: {}", response.body);
                events += queue.drain().len();
            }
            (started.elapsed(), latencies, events)
        };
        // Warm-up: certificate cache, allocator, branch predictors.
        run(&service, 200);
        let (total, mut latencies, events) = run(&service, iterations);
        latencies.sort();
        println!(
            "{:<11} {:>12.0} {:>12.0} {:>10.1} {:>10.1} {:>10.1}",
            dam,
            iterations as f64 / total.as_secs_f64(),
            events as f64 / total.as_secs_f64(),
            percentile(&latencies, 0.50).as_secs_f64() * 1e6,
            percentile(&latencies, 0.99).as_secs_f64() * 1e6,
            latencies.last().unwrap().as_secs_f64() * 1e6,
        );
    }
}
