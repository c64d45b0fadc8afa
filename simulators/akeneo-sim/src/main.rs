//! Akeneo simulator binary (see README).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use akeneo_sim::{AkeneoSim, Faults, Fixture, SimConfig};
use clap::Parser;

/// Simulated Akeneo PIM Asset Manager REST API with fault knobs.
#[derive(Parser, Debug)]
#[command(name = "akeneo-sim", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081", env = "AKENEO_SIM_LISTEN")]
    listen: SocketAddr,
    /// Structure fixture (JSON); the bundled one when absent.
    #[arg(long)]
    fixture: Option<PathBuf>,
    /// Access-token lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    token_ttl_secs: u64,
    /// Seed of the fault RNG.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Probability of a random 500/502/503 on /api/rest/v1 routes.
    #[arg(long, default_value_t = 0.0)]
    error_5xx_rate: f64,
    /// Probability of a random 429 on /api/rest/v1 routes.
    #[arg(long, default_value_t = 0.0)]
    rate_429: f64,
    /// Retry-After seconds on random 429s.
    #[arg(long, default_value_t = 1)]
    retry_after_secs: u64,
    /// Send no Retry-After header on random 429s.
    #[arg(long)]
    no_retry_after: bool,
    /// Minimum added latency (ms), every /api route.
    #[arg(long, default_value_t = 0)]
    latency_min_ms: u64,
    /// Maximum added latency (ms).
    #[arg(long, default_value_t = 0)]
    latency_max_ms: u64,
    /// Probability that a request never answers.
    #[arg(long, default_value_t = 0.0)]
    hang_rate: f64,
    /// Concurrent calls per access token before 429 (0 = unlimited).
    #[arg(long, default_value_t = 4)]
    max_in_flight_per_token: usize,
    /// Concurrent calls per instance before 429 (0 = unlimited).
    #[arg(long, default_value_t = 10)]
    max_in_flight_per_instance: usize,
    /// Requests per second per instance (0 = unlimited).
    #[arg(long, default_value_t = 100)]
    rate_limit_per_sec: u32,
    /// Burst size of the per-instance rate limit.
    #[arg(long, default_value_t = 100)]
    rate_limit_burst: u32,
    /// Attribute-option PATCH requests per second (0 = unlimited).
    #[arg(long, default_value_t = 3)]
    option_patch_rate_per_sec: u32,
}

fn non_zero<T: PartialEq + Default>(v: T) -> Option<T> {
    (v != T::default()).then_some(v)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let fixture = match &args.fixture {
        Some(p) => Fixture::from_path(p)?,
        None => Fixture::bundled(),
    };
    let faults = Faults {
        error_5xx_rate: args.error_5xx_rate,
        rate_429: args.rate_429,
        retry_after_secs: (!args.no_retry_after).then_some(args.retry_after_secs),
        latency_ms: (
            args.latency_min_ms,
            args.latency_max_ms.max(args.latency_min_ms),
        ),
        hang_rate: args.hang_rate,
        max_in_flight_per_token: non_zero(args.max_in_flight_per_token),
        max_in_flight_per_instance: non_zero(args.max_in_flight_per_instance),
        rate_limit_per_sec: non_zero(args.rate_limit_per_sec),
        rate_limit_burst: args.rate_limit_burst,
        option_patch_rate_per_sec: non_zero(args.option_patch_rate_per_sec),
        ..Faults::default()
    };
    tracing::info!(?faults, "fault knobs");
    let config = SimConfig {
        fixture,
        faults,
        token_ttl: Duration::from_secs(args.token_ttl_secs),
        seed: args.seed,
    };
    let clients = config.fixture.clients.clone();
    let sim = AkeneoSim::start_on(config, args.listen).await?;
    println!("akeneo-sim listening on {}", sim.base_url());
    for c in &clients {
        println!(
            "  client_id={} secret={} username={} password={}",
            c.client_id, c.secret, c.username, c.password
        );
    }
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    sim.shutdown();
    Ok(())
}
