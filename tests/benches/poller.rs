//! Poller throughput and memory: one incremental run over a DAM simulator holding 100,000
//! generated assets (generic API over HTTP, 1,000 per page) into a queue that counts and
//! discards, with in-memory cursors and leases. Prints the run time and peak RSS (VmHWM).
//!
//! Run: `cargo bench -p dam-sync-tests --bench poller` (optional arg: number of assets).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use dam_sim::{DamSim, DamSimConfig};
use secrecy::SecretString;
use shared::dam::ChangeEvent;
use shared::dam::generic::api::{GenericApi, GenericApiSettings};
use shared::poller::{Poller, PollerSettings, StopReason};
use shared::queue::{ChangeQueue, QueueError};
use shared::testing::MemoryStore;

/// Counts events and drops them, so the figures are the poller's and the DAM client's.
#[derive(Default)]
struct CountingQueue {
    events: AtomicU64,
}

#[async_trait]
impl ChangeQueue for CountingQueue {
    async fn enqueue(&self, events: &[ChangeEvent]) -> Result<(), QueueError> {
        self.events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let sim = DamSim::start(DamSimConfig::default()).await.unwrap();
    let t = Instant::now();
    sim.generate(n, 42);
    let generated = t.elapsed();
    let rss_before = peak_rss_kib().unwrap_or(0);

    let url = url::Url::parse(&sim.generic_base_url()).unwrap();
    let token = SecretString::from(sim.config().generic_token.clone());
    let api = GenericApi::new(GenericApiSettings::new(url, token)).unwrap();
    let queue = Arc::new(CountingQueue::default());
    let store = Arc::new(MemoryStore::new());
    let poller = Poller::new(
        Arc::new(api),
        queue.clone(),
        store.clone(),
        store,
        PollerSettings {
            page_size: 1000,
            max_dam_calls: u32::MAX,
            ..PollerSettings::default()
        },
    );
    let now = SystemTime::now() + Duration::from_secs(300);
    let t = Instant::now();
    let report = poller
        .run(now, now + Duration::from_secs(3600))
        .await
        .unwrap();
    let elapsed = t.elapsed();
    assert_eq!(report.stop, StopReason::Complete);
    assert_eq!(queue.events.load(Ordering::Relaxed), n as u64);
    println!(
        "poller: {n} assets generated in {:.2} s; run {:.2} s ({} pages, {:.0} assets/s)",
        generated.as_secs_f64(),
        elapsed.as_secs_f64(),
        report.pages,
        n as f64 / elapsed.as_secs_f64()
    );
    println!(
        "peak RSS (VmHWM): {} MiB (after generating, before the run: {} MiB; the simulator shares the process)",
        peak_rss_kib().unwrap_or(0) / 1024,
        rss_before / 1024
    );
}
