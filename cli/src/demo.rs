//! `dam-sync demo`: the whole product on one machine, with no account anywhere. Starts the
//! DAM and Akeneo simulators on free loopback ports, runs the same runtime as `serve` on a
//! temporary SQLite store, generates assets in the DAM (whose signed webhooks reach the
//! endpoint, some dropped, duplicated or reordered on purpose), lets one poll catch what the
//! webhooks missed, and compares every DAM asset with what the PIM holds.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use akeneo_sim::{AkeneoSim, SimConfig};
use dam_sim::{DamSim, DamSimConfig, DeliveryKnobs, WebhookKind};
use indicatif::{ProgressBar, ProgressStyle};
use shared::dam::Fetched;
use shared::mapping::MapOutcome;
use shared::queue::QueueAdmin;
use tokio::sync::watch;
use tokio::time::Instant;

use shared::akeneo::PimSettings;
use shared::dam::settings::{DamSettings, GenericDam};
use shared::settings::Secret;

use crate::config::{
    Config, ConsumerSection, FileConfig, MappingSection, PollerSection, ServerSection, StoreSection,
};
use crate::pim::Failure;
use crate::runtime::Runtime;

/// The demo's mapping: dam-sim's generated assets onto the simulator's `packshot` family.
pub const DEMO_MAPPING: &str = dam_sim::PACKSHOT_MAPPING;

const FAMILY: &str = "packshot";
const SEED: u64 = 7;

fn failed(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::runtime(format!("demo: {what}: {e}"))
}

pub async fn run(
    assets: usize,
    drop_rate: f64,
    timeout_secs: u64,
    progress: bool,
) -> Result<ExitCode, Failure> {
    if !(0.0..1.0).contains(&drop_rate) {
        return Err(Failure::input("--drop-rate must be in [0, 1)"));
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(timeout_secs);
    let pim = AkeneoSim::start(SimConfig::default())
        .await
        .map_err(|e| failed("starting the Akeneo simulator", e))?;
    let dam = DamSim::start(DamSimConfig::default())
        .await
        .map_err(|e| failed("starting the DAM simulator", e))?;
    let dir = tempfile::tempdir().map_err(|e| failed("creating a temporary directory", e))?;
    let (client_id, secret, username, password) = pim.credentials();
    let raw = FileConfig {
        server: ServerSection::default(),
        store: StoreSection {
            path: dir.path().join("demo.db"),
        },
        pim: PimSettings {
            base_url: Some(pim.base_url()),
            client_id: Some(client_id),
            client_secret: Some(Secret::from(secret.as_str())),
            username: Some(username),
            password: Some(Secret::from(password.as_str())),
            ..PimSettings::default()
        },
        dam: DamSettings::Generic(GenericDam {
            api_url: Some(dam.generic_base_url()),
            api_token: Some(Secret::from(dam.config().generic_token.as_str())),
            webhook_secrets: vec![Secret::from(dam.config().generic_webhook_secret.as_str())],
            tolerance_secs: None,
        }),
        mapping: MappingSection {
            path: None,
            inline: Some(DEMO_MAPPING.into()),
        },
        // The demo runs the poll itself, once the webhooks are out.
        poller: PollerSection {
            enabled: false,
            ..PollerSection::default()
        },
        consumer: ConsumerSection {
            retry_delay_ms: 200,
            ..ConsumerSection::default()
        },
    };
    let config = Config::from_parts(raw, dir.path().to_path_buf());
    let runtime = Arc::new(Runtime::build(&config)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| failed("binding a loopback port", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| failed("local address", e))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let serving = tokio::spawn(runtime.clone().run(listener, stop_rx));

    println!(
        "DAM simulator {}, PIM simulator {}, webhooks to http://{addr}/webhooks/generic",
        dam.base_url(),
        pim.base_url()
    );
    println!(
        "Syncing {assets} assets (webhooks: {:.0}% dropped, 5% duplicated, reordered)...",
        drop_rate * 100.0
    );
    dam.send_webhooks_to(
        &format!("http://{addr}/webhooks/generic"),
        WebhookKind::Generic,
        DeliveryKnobs {
            drop_rate,
            duplicate_rate: 0.05,
            reorder_window: 4,
            seed: SEED,
            retries: 3,
            ..DeliveryKnobs::default()
        },
    );

    let bar = if progress {
        let bar = ProgressBar::new(assets as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} assets synced {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    let ids: BTreeSet<String> = dam.generate(assets, SEED).into_iter().collect();
    let flushed = dam
        .flush_webhooks(deadline.saturating_duration_since(Instant::now()))
        .await;
    bar.set_message("(webhooks sent; polling the DAM for the dropped ones)");
    runtime.poll_once().await;
    let polled = shared::poller::PollMetrics::get(&runtime.poller.metrics().events_enqueued);

    // Done when every asset has an applied version and the queue is empty.
    let mut done = false;
    while Instant::now() < deadline {
        let synced = runtime.store.asset_count().await.unwrap_or(0);
        bar.set_position(synced.min(assets as u64));
        let depth = runtime.store.depth().await.unwrap_or_default();
        if flushed && synced as usize >= ids.len() && depth.visible == 0 && depth.in_flight == 0 {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish_and_clear();
    let _ = stop_tx.send(true);
    let _ = serving.await;

    // Compare every DAM asset, mapped, with the PIM's copy.
    let source = config.source().map_err(|e| failed("DAM client", e))?;
    let structure = runtime
        .pim
        .family_structure(FAMILY, Instant::now() + Duration::from_secs(60))
        .await
        .map_err(|e| failed("reading the PIM family", e))?
        .ok_or_else(|| failed("reading the PIM family", "packshot is missing"))?;
    let list: Vec<String> = ids.iter().cloned().collect();
    let mut mismatches: Vec<String> = Vec::new();
    for chunk in list.chunks(100) {
        let fetched = source
            .fetch(chunk)
            .await
            .map_err(|e| failed("reading the DAM", e))?;
        for f in fetched {
            let Fetched::Found(asset) = f else {
                continue;
            };
            let expected =
                match runtime
                    .consumer_mapping()
                    .map_asset(&asset.id, &asset.fields, |_| Some(&*structure))
                {
                    MapOutcome::Mapped(m) => m,
                    other => {
                        mismatches.push(format!("{}: not mappable: {other:?}", asset.id));
                        continue;
                    }
                };
            let Some(stored) = pim.asset(FAMILY, &expected.code) else {
                mismatches.push(format!("{}: missing from the PIM", expected.code));
                continue;
            };
            for (attribute, values) in &expected.asset.values {
                let want = serde_json::to_value(values).unwrap_or_default();
                if stored["values"][attribute] != want {
                    mismatches.push(format!(
                        "{}: {attribute} is {} in the PIM, {want} in the DAM",
                        expected.code, stored["values"][attribute]
                    ));
                }
            }
        }
    }
    let pim_assets = pim.assets(FAMILY).len();
    let extra = pim_assets.saturating_sub(ids.len());
    let stats = pim.stats();
    let webhooks = dam.webhook_stats();
    let loops = &runtime.stats;
    let dead = runtime
        .store
        .depth()
        .await
        .map(|d| d.dead_letters)
        .unwrap_or(0);
    let synced = ids.len() - mismatches.len().min(ids.len());
    let elapsed = started.elapsed();
    let per_100 = if assets == 0 {
        0.0
    } else {
        stats.total_calls as f64 * 100.0 / assets as f64
    };

    println!("Summary");
    println!("  assets in the DAM:        {}", ids.len());
    println!("  assets synced:            {synced}");
    println!("  assets in the PIM:        {pim_assets}");
    println!(
        "  webhooks:                 {} sent, {} dropped, {} duplicated",
        webhooks.delivered, webhooks.dropped, webhooks.duplicated
    );
    println!("  events queued by the poll: {polled}");
    println!(
        "  consumer:                 {} messages in {} batches, {} retried",
        loops.messages.load(Ordering::Relaxed),
        loops.batches.load(Ordering::Relaxed),
        loops.retried.load(Ordering::Relaxed)
    );
    println!(
        "  PIM calls:                {} ({} bulk upserts, {} throttled)",
        stats.total_calls,
        stats.calls_to(crate::ops::BULK_PATCH),
        stats.throttled_429
    );
    println!("  PIM calls per 100 assets: {per_100:.1}");
    println!(
        "  failures:                 {} dead-lettered, {} mismatched",
        dead,
        mismatches.len()
    );
    println!("  elapsed:                  {:.1} s", elapsed.as_secs_f64());
    let matches = done && mismatches.is_empty() && dead == 0 && extra == 0;
    if matches {
        println!("PIM matches DAM: yes");
        Ok(ExitCode::SUCCESS)
    } else {
        for m in mismatches.iter().take(10) {
            println!("  mismatch: {m}");
        }
        if !done {
            println!("  gave up after {timeout_secs} s before the queue drained");
        }
        println!("PIM matches DAM: no");
        Ok(ExitCode::from(1))
    }
}
