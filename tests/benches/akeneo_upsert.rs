//! Bulk upsert throughput against the Akeneo simulator at a fixed latency.
//!
//! `cargo bench -p dam-sync-tests --bench akeneo_upsert` (env: BENCH_ASSETS, default 10000;
//! BENCH_LATENCY_MS, default 50). With 4 calls in flight and L ms per call, no client can do
//! better than ceil(n/100) × L / 4; the figure printed last is how close we get. Run it on an
//! otherwise idle machine: the simulator shares the CPU with the client.
//!
//! `BENCH_FAULTS=1` adds the chaos suite's PIM faults (5 % 5xx, 5 % 429 with `Retry-After: 1`,
//! 1 % hangs cut by a 2 s request timeout) to show what they cost in calls per 100 assets.

use std::time::{Duration, Instant};

use akeneo_sim::Faults;
use dam_sync_tests::{BULK_PATCH, packshots, pim_client, start_pim};
use shared::akeneo::Limits;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let n = env_or("BENCH_ASSETS", 10_000) as usize;
    let latency = env_or("BENCH_LATENCY_MS", 50);
    let faulty = env_or("BENCH_FAULTS", 0) != 0;
    let (error_5xx_rate, rate_429, hang_rate) = if faulty {
        (0.05, 0.05, 0.01)
    } else {
        (0.0, 0.0, 0.0)
    };
    let sim = start_pim(Faults {
        latency_ms: (latency, latency),
        error_5xx_rate,
        rate_429,
        hang_rate,
        ..Faults::default()
    })
    .await;
    let rps = env_or("BENCH_RPS", 100) as u32;
    let client = pim_client(
        &sim,
        Limits {
            requests_per_second: (rps > 0).then_some(rps),
            request_timeout: if faulty {
                Duration::from_secs(2)
            } else {
                Limits::default().request_timeout
            },
            ..Limits::default()
        },
    );
    let assets = packshots(n);

    // A running connector already holds a token; the login is timed on its own.
    let login = Instant::now();
    client
        .authenticate(tokio::time::Instant::now() + Duration::from_secs(30))
        .await
        .expect("log in to the simulator");
    let login = login.elapsed();

    let started = Instant::now();
    let report = client
        .upsert_assets(
            "packshot",
            &assets,
            tokio::time::Instant::now() + Duration::from_secs(600),
        )
        .await;
    let wall = started.elapsed();

    let failed = report.failures().count();
    let stats = sim.stats();
    let in_flight = client.limits().max_in_flight as u64;
    let bound = Duration::from_millis(n.div_ceil(100) as u64 * latency / in_flight);
    println!(
        "akeneo_upsert: {n} assets, {latency} ms per call, {in_flight} in flight{}",
        if faulty {
            ", faults: 5 % 5xx, 5 % 429, 1 % hangs"
        } else {
            ""
        }
    );
    println!(
        "  written            {} created, {} updated, {failed} failed",
        report.created(),
        report.updated()
    );
    println!(
        "  PIM calls          {} ({} bulk PATCH, 1 token)",
        stats.total_calls,
        stats.calls_to(BULK_PATCH)
    );
    println!(
        "  calls / 100 assets {:.3}",
        stats.total_calls as f64 * 100.0 / n as f64
    );
    println!(
        "  max in-flight      {} (PIM-side), 429s {}, 5xx {}, Retry-After violations {}",
        stats.max_in_flight_per_token,
        stats.throttled_429,
        stats.server_errors_5xx,
        stats.retry_after_violations
    );
    println!(
        "  login              {:.3} s (before the timed upsert)",
        login.as_secs_f64()
    );
    println!("  wall time          {:.3} s", wall.as_secs_f64());
    println!(
        "  bound              {:.3} s = ceil(n/100) x {latency} ms / {in_flight}",
        bound.as_secs_f64()
    );
    println!(
        "  bound / wall       {:.1} %",
        bound.as_secs_f64() / wall.as_secs_f64() * 100.0
    );
    assert_eq!(failed, 0, "a benchmark run with failures measures nothing");
}
