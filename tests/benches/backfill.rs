//! Backfill acceptance bench: every asset of the DAM simulator through poller backfill →
//! bounded queue → consumer → Akeneo simulator, with both simulators in their own processes
//! (the `sim-dam` and `sim-akeneo` bins of this package are the simulators' own `main.rs`),
//! so the peak RSS printed is the connector's. Prints PATCH calls against ceil(n/100), calls
//! per 100 assets, wall time and peak RSS (VmHWM).
//!
//! State (cursor, lease, per-asset versions) lives in the embedded store, a SQLite file in a
//! temporary directory, as with `dam-sync backfill`: memory stays flat whatever the catalogue
//! size. `BENCH_STATE=memory` keeps it in this process instead (RSS then grows with the
//! catalogue, as a comparison).
//!
//! Run: `cargo bench -p dam-sync-tests --bench backfill -- 100000` (or `BENCH_ASSETS=100000`;
//! default 10,000). `BENCH_PAGE_SIZE` (1000) and `BENCH_MAX_DAM_CALLS` (50 per invocation).

use std::time::Instant;

use std::sync::Arc;

use dam_sync_tests::pipeline::{
    BackfillSettings, SimProcess, StateStores, backfill_into_pim, peak_rss_kib, rss_kib,
};
use embedded_store::SqliteStore;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| env_or("BENCH_ASSETS", 10_000));
    let settings = BackfillSettings {
        page_size: env_or("BENCH_PAGE_SIZE", 1000),
        max_dam_calls: env_or("BENCH_MAX_DAM_CALLS", 50),
        ..BackfillSettings::default()
    };
    let t = Instant::now();
    let dam = SimProcess::spawn(
        env!("CARGO_BIN_EXE_sim-dam"),
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--generate".into(),
            n.to_string(),
            "--seed".into(),
            "42".into(),
        ],
    )
    .expect("start dam-sim");
    let pim = SimProcess::spawn(
        env!("CARGO_BIN_EXE_sim-akeneo"),
        &["--listen".into(), "127.0.0.1:0".into()],
    )
    .expect("start akeneo-sim");
    println!(
        "backfill: {n} assets generated in dam-sim (pid {}) in {:.1} s; akeneo-sim pid {}",
        dam.pid(),
        t.elapsed().as_secs_f64(),
        pim.pid()
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    let in_memory = std::env::var("BENCH_STATE").is_ok_and(|v| v == "memory");
    let state = if in_memory {
        StateStores::memory()
    } else {
        StateStores::of(Arc::new(
            SqliteStore::open(dir.path().join("state.db")).expect("embedded store"),
        ))
    };
    let rss_start = rss_kib().unwrap_or(0);
    let figures = backfill_into_pim(
        &format!("{}/generic", dam.base_url()),
        "dam-sim-generic-token",
        pim.base_url(),
        n,
        &settings,
        state,
    )
    .await
    .expect("backfill");
    let peak = peak_rss_kib().unwrap_or(0);
    let bound = figures.patch_bound();
    println!(
        "backfill: {} assets, state in {}, page size {}, {} poller invocations, {} DAM calls, {} events enqueued",
        figures.assets,
        if in_memory {
            "memory"
        } else {
            "the embedded store (SQLite)"
        },
        settings.page_size,
        figures.poll_runs,
        figures.dam_calls,
        figures.events_enqueued
    );
    println!(
        "backfill: {} synced, {} redelivered, {} dead-lettered, {} consumer batches",
        figures.synced, figures.redelivered, figures.dead_lettered, figures.consumer_batches
    );
    println!(
        "backfill: {} PATCH calls (ceil(n/100) = {bound}, retries {}), {:.3} PATCH per 100 assets, \
         {} PIM calls in all ({} answered 429, {} 5xx)",
        figures.patch_calls,
        figures.patch_calls.saturating_sub(bound),
        figures.patch_calls as f64 * 100.0 / figures.assets.max(1) as f64,
        figures.pim_calls,
        figures.throttled_429,
        figures.server_errors_5xx
    );
    println!(
        "backfill: wall time {:.2} s ({:.0} assets/s)",
        figures.wall.as_secs_f64(),
        figures.assets as f64 / figures.wall.as_secs_f64()
    );
    println!(
        "backfill: peak RSS (VmHWM) {:.1} MiB of this process (connector only; {:.1} MiB at start), \
         limits 100 MiB (backfill) and 50 MiB (1M assets): {}",
        peak as f64 / 1024.0,
        rss_start as f64 / 1024.0,
        if peak < 50 * 1024 {
            "under both"
        } else if peak < 100 * 1024 {
            "under 100 MiB only"
        } else {
            "OVER"
        }
    );
    assert_eq!(figures.synced, n, "every asset reached the PIM");
}
