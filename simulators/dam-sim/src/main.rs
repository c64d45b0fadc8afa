//! `dam-sim` binary: serves the simulated DAM APIs until Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use dam_sim::{DamSim, DamSimConfig, DateFilter, DeliveryKnobs, Faults, WebhookKind};

#[derive(Debug, Parser)]
#[command(
    name = "dam-sim",
    about = "Cloudinary, Bynder and generic DAM simulator"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "DAM_SIM_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Assets to generate at start.
    #[arg(long, default_value_t = 0)]
    generate: usize,
    /// Seed for generated assets, fault draws and webhook knobs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value = "dam-sim")]
    cloud_name: String,
    #[arg(
        long,
        env = "DAM_SIM_CLOUDINARY_API_KEY",
        default_value = "123456789012345"
    )]
    cloudinary_api_key: String,
    #[arg(
        long,
        env = "DAM_SIM_CLOUDINARY_API_SECRET",
        default_value = "dam-sim-cloudinary-secret"
    )]
    cloudinary_api_secret: String,
    /// Cloudinary Admin API calls allowed per hour.
    #[arg(long, default_value_t = 2000)]
    cloudinary_hourly_limit: u64,
    #[arg(
        long,
        env = "DAM_SIM_BYNDER_TOKEN",
        default_value = "dam-sim-bynder-token"
    )]
    bynder_token: String,
    /// Bynder requests allowed per window.
    #[arg(long, default_value_t = 4500)]
    bynder_rate_limit: usize,
    #[arg(long, default_value_t = 300)]
    bynder_rate_window_secs: u64,
    /// How `dateModified` treats its own second: exclusive ("modified after") | inclusive.
    #[arg(long, default_value = "exclusive")]
    bynder_date_filter: DateFilter,
    /// How `last_updated.updated_at>=` treats its own second: inclusive | exclusive.
    #[arg(long, default_value = "inclusive")]
    cloudinary_date_filter: DateFilter,
    #[arg(
        long,
        env = "DAM_SIM_GENERIC_TOKEN",
        default_value = "dam-sim-generic-token"
    )]
    generic_token: String,
    /// `whsec_<base64>`; the built-in test secret when absent.
    #[arg(long, env = "DAM_SIM_GENERIC_WEBHOOK_SECRET")]
    generic_webhook_secret: Option<String>,
    /// Generic API requests per minute before 429 (unlimited when absent).
    #[arg(long)]
    generic_rate_limit: Option<u64>,
    /// Probability of an injected 500 per API call.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    #[arg(long, default_value_t = 0)]
    latency_min_ms: u64,
    #[arg(long, default_value_t = 0)]
    latency_max_ms: u64,
    /// Start with every API call answering 503.
    #[arg(long)]
    down: bool,
    /// Deliver webhooks for every change to this URL.
    #[arg(long)]
    webhook_target: Option<String>,
    /// cloudinary | bynder | generic.
    #[arg(long, default_value = "generic")]
    webhook_kind: String,
    #[arg(long, default_value_t = 0.0)]
    webhook_drop_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    webhook_duplicate_rate: f64,
    #[arg(long, default_value_t = 0)]
    webhook_delay_max_ms: u64,
    #[arg(long, default_value_t = 0)]
    webhook_reorder_window: usize,
    /// Re-sends after a failed delivery.
    #[arg(long, default_value_t = 0)]
    webhook_retries: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let a = Args::parse();
    let mut config = DamSimConfig {
        listen: a.listen,
        cloud_name: a.cloud_name,
        cloudinary_api_key: a.cloudinary_api_key,
        cloudinary_api_secret: a.cloudinary_api_secret,
        cloudinary_hourly_limit: a.cloudinary_hourly_limit,
        bynder_token: a.bynder_token,
        bynder_rate_limit: a.bynder_rate_limit,
        bynder_rate_window: Duration::from_secs(a.bynder_rate_window_secs),
        bynder_date_filter: a.bynder_date_filter,
        cloudinary_date_filter: a.cloudinary_date_filter,
        generic_token: a.generic_token,
        generic_rate_limit: a.generic_rate_limit,
        faults: Faults {
            down: a.down,
            error_rate: a.error_rate,
            error_status: 500,
            latency_min_ms: a.latency_min_ms,
            latency_max_ms: a.latency_max_ms,
            only_routes: None,
        },
        seed: a.seed,
        ..DamSimConfig::default()
    };
    if let Some(secret) = a.generic_webhook_secret {
        config.generic_webhook_secret = secret;
    }
    let sim = DamSim::start(config).await?;
    if let Some(target) = a.webhook_target {
        let kind: WebhookKind = serde_json::from_value(serde_json::json!(a.webhook_kind))?;
        let knobs = DeliveryKnobs {
            drop_rate: a.webhook_drop_rate,
            duplicate_rate: a.webhook_duplicate_rate,
            delay_max_ms: a.webhook_delay_max_ms,
            reorder_window: a.webhook_reorder_window,
            retries: a.webhook_retries,
            seed: a.seed,
            ..DeliveryKnobs::default()
        };
        sim.send_webhooks_to(&target, kind, knobs);
    }
    if a.generate > 0 {
        sim.generate(a.generate, a.seed);
    }
    tracing::info!(base_url = %sim.base_url(), sns_cert_url = %sim.sns_cert_url(), "dam-sim listening");
    println!("dam-sim listening on {}", sim.base_url());
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
