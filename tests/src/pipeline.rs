//! The connector's backfill path end to end, for the acceptance bench and its small CI twin:
//! poller backfill → bounded in-process queue → consumer → Akeneo, with both simulators in
//! their own processes so that the peak RSS read here is the connector's alone.
//!
//! Queue choice: a bounded channel of a few pages stands in for SQS. SQS over moto would add a
//! Python process's latency per 10 messages and measure moto, not the connector; the bound
//! keeps the poller from running ahead of the consumer, as SQS plus a Lambda concurrency limit
//! does in production (there the backlog waits in SQS, outside the process).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use secrecy::SecretString;
use shared::akeneo::config::parse_base_url;
use shared::akeneo::{AkeneoClient, AkeneoConfig, Limits};
use shared::consumer::{Consumer, InboundMessage};
use shared::dam::ChangeEvent;
use shared::dam::generic::api::{GenericApi, GenericApiSettings};
use shared::mapping::Mapping;
use shared::poller::{Poller, PollerSettings, StopReason};
use shared::queue::{ChangeQueue, QueueError};
use shared::store::{AssetStateStore, CursorStore, LeaseStore};
use shared::testing::{MemoryDeadLetters, MemoryStore};
use tokio::sync::mpsc;

use crate::BULK_PATCH;

/// Maps dam-sim's generated assets (generic contract JSON: `id`, `fields.title`, `fields.sku`,
/// `fields.width`...) onto the Akeneo simulator fixture's `packshot` family.
pub const SIM_MAPPING: &str = dam_sim::PACKSHOT_MAPPING;

/// A simulator running as a child process; killed when dropped.
pub struct SimProcess {
    child: Child,
    base_url: String,
}

impl SimProcess {
    /// Starts `bin` with `args` (which should include `--listen 127.0.0.1:0`) and waits for
    /// its `... listening on http://...` line.
    pub fn spawn(bin: &str, args: &[String]) -> Result<Self, String> {
        let mut child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {bin}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let base_url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some((_, url)) = line.split_once("listening on ") {
                        break url.trim().to_owned();
                    }
                }
                _ => {
                    let _ = child.kill();
                    return Err(format!("{bin} exited before listening"));
                }
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self { child, base_url })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Settings of the simulator fixture's first Connection (see akeneo-sim's README).
pub fn sim_pim_config(base_url: &str, limits: Limits) -> AkeneoConfig {
    AkeneoConfig {
        base_url: parse_base_url(base_url).expect("simulator URL"),
        client_id: "sim_client".into(),
        client_secret: SecretString::from("sim_secret"),
        username: "sim_user".into(),
        password: SecretString::from("sim_password"),
        limits,
    }
}

/// The Akeneo simulator's call accounting, read over its control route.
pub async fn pim_stats(base_url: &str) -> akeneo_sim::Stats {
    crate::http()
        .get(format!("{base_url}/_sim/stats"))
        .send()
        .await
        .expect("akeneo-sim stats")
        .json()
        .await
        .expect("akeneo-sim stats JSON")
}

/// A bounded in-process queue: `enqueue` waits while `capacity` batches are waiting, so the
/// poller never holds more than that many pages ahead of the consumer. Bodies are the JSON the
/// SQS adapter would send, so the consumer decodes exactly what it decodes in production.
pub struct ChannelQueue {
    tx: mpsc::Sender<Vec<InboundMessage>>,
    next_id: AtomicU64,
}

impl ChannelQueue {
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Vec<InboundMessage>>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                tx,
                next_id: AtomicU64::new(0),
            },
            rx,
        )
    }
}

#[async_trait]
impl ChangeQueue for ChannelQueue {
    async fn enqueue(&self, events: &[ChangeEvent]) -> Result<(), QueueError> {
        let mut batch = Vec::with_capacity(events.len());
        for e in events {
            let body = serde_json::to_string(e).map_err(|e| {
                QueueError::Permanent(format!("event to JSON: {e}"), Some(e.into()))
            })?;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            batch.push(InboundMessage {
                receive_count: 1,
                id: format!("m{id}"),
                body,
            });
        }
        self.tx
            .send(batch)
            .await
            .map_err(|_| QueueError::Permanent("the consumer stopped".into(), None))
    }
}

/// What a backfill through the whole pipeline did.
#[derive(Debug, Clone, Default)]
pub struct BackfillFigures {
    pub assets: u64,
    /// Poller invocations until the backfill reported `complete`.
    pub poll_runs: u32,
    pub dam_calls: u64,
    pub events_enqueued: u64,
    pub consumer_batches: u64,
    pub synced: u64,
    /// Messages handed back for redelivery (each redelivered up to 5 times here).
    pub redelivered: u64,
    pub dead_lettered: u64,
    /// Bulk PATCH calls the PIM saw (all statuses, so retries count).
    pub patch_calls: u64,
    pub pim_calls: u64,
    pub throttled_429: u64,
    pub server_errors_5xx: u64,
    pub wall: Duration,
}

impl BackfillFigures {
    /// ceil(assets / 100): one bulk PATCH per 100 assets.
    pub fn patch_bound(&self) -> u64 {
        self.assets.div_ceil(100)
    }
}

/// Knobs of [`backfill_into_pim`].
#[derive(Debug, Clone)]
pub struct BackfillSettings {
    /// DAM page size (the generic contract allows up to 1,000).
    pub page_size: usize,
    /// DAM calls per poller invocation: a backfill takes several invocations, as in Lambda.
    pub max_dam_calls: u32,
    /// Pages the queue holds before the poller waits.
    pub queue_pages: usize,
}

impl Default for BackfillSettings {
    fn default() -> Self {
        Self {
            page_size: 1000,
            max_dam_calls: 50,
            queue_pages: 2,
        }
    }
}

/// Where a backfill keeps its state: the cursor, the poller's lease and per-asset versions.
#[derive(Clone)]
pub struct StateStores {
    pub assets: Arc<dyn AssetStateStore>,
    pub cursors: Arc<dyn CursorStore>,
    pub leases: Arc<dyn LeaseStore>,
}

impl StateStores {
    /// All three from one store (the embedded store, DynamoDB, memory).
    pub fn of<S: AssetStateStore + CursorStore + LeaseStore + 'static>(store: Arc<S>) -> Self {
        Self {
            assets: store.clone(),
            cursors: store.clone(),
            leases: store,
        }
    }

    /// In this process's memory: the per-asset states of the whole catalogue count in its RSS.
    pub fn memory() -> Self {
        Self::of(Arc::new(MemoryStore::new()))
    }
}

/// Backfills every asset of the generic DAM at `dam_generic_url` into the PIM at
/// `pim_base_url` through poller, queue and consumer, with state in `state`, and reports what
/// it took.
pub async fn backfill_into_pim(
    dam_generic_url: &str,
    dam_token: &str,
    pim_base_url: &str,
    expected_assets: u64,
    settings: &BackfillSettings,
    state: StateStores,
) -> Result<BackfillFigures, String> {
    let started = Instant::now();
    let source = Arc::new(
        GenericApi::new(GenericApiSettings::new(
            url::Url::parse(dam_generic_url).map_err(|e| e.to_string())?,
            SecretString::from(dam_token.to_owned()),
        ))
        .map_err(|e| e.to_string())?,
    );
    let mapping =
        Arc::new(Mapping::from_toml_str(SIM_MAPPING, "SIM_MAPPING").map_err(|e| e.to_string())?);
    let pim = AkeneoClient::new(sim_pim_config(pim_base_url, Limits::default()))
        .map_err(|e| e.to_string())?;
    let dead_letters = Arc::new(MemoryDeadLetters::new());
    let consumer = Consumer::new(state.assets.clone(), mapping, Arc::new(pim), dead_letters)
        .with_source(source.clone());

    let (queue, mut rx) = ChannelQueue::new(settings.queue_pages);
    let consume = tokio::spawn(async move {
        let mut f = BackfillFigures::default();
        while let Some(batch) = rx.recv().await {
            f.consumer_batches += 1;
            let mut pending = batch;
            for attempt in 0..6 {
                let bodies: HashMap<String, String> = pending
                    .iter()
                    .map(|m| (m.id.clone(), m.body.clone()))
                    .collect();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
                let outcome = consumer.process(pending, deadline).await;
                f.synced += outcome.report.synced;
                f.dead_lettered += outcome.dead_lettered.len() as u64;
                if outcome.retry.is_empty() || attempt == 5 {
                    f.redelivered += if attempt == 5 {
                        outcome.retry.len() as u64
                    } else {
                        0
                    };
                    break;
                }
                f.redelivered += outcome.retry.len() as u64;
                pending = outcome
                    .retry
                    .into_iter()
                    .filter_map(|(id, _reason)| {
                        bodies.get(&id).map(|b| InboundMessage {
                            receive_count: 1,
                            id,
                            body: b.clone(),
                        })
                    })
                    .collect();
            }
        }
        f
    });

    let poller = Poller::new(
        source,
        Arc::new(queue),
        state.cursors,
        state.leases,
        PollerSettings {
            page_size: settings.page_size,
            max_dam_calls: settings.max_dam_calls,
            ..PollerSettings::default()
        },
    )
    .with_applied_filter(state.assets);
    let mut runs = 0u32;
    let mut dam_calls = 0u64;
    let mut enqueued = 0u64;
    loop {
        runs += 1;
        if runs > 10_000 {
            return Err("backfill did not complete in 10,000 runs".into());
        }
        let now = SystemTime::now();
        match poller.backfill(now, now + Duration::from_secs(900)).await {
            Ok(report) => {
                dam_calls += u64::from(report.dam_calls);
                enqueued += report.events_enqueued;
                if report.stop == StopReason::Complete {
                    break;
                }
            }
            // A DAM hiccup: the next invocation resumes from the saved page.
            Err(e) if e.is_retriable() => {
                if let Some(r) = e.report() {
                    dam_calls += u64::from(r.dam_calls);
                    enqueued += r.events_enqueued;
                }
            }
            Err(e) => return Err(format!("backfill failed: {e}")),
        }
    }
    // Dropping the poller closes the queue: the consumer drains what is left and ends.
    drop(poller);
    let mut figures = consume.await.map_err(|e| format!("consumer task: {e}"))?;
    figures.wall = started.elapsed();
    figures.assets = expected_assets;
    figures.poll_runs = runs;
    figures.dam_calls = dam_calls;
    figures.events_enqueued = enqueued;
    let stats = pim_stats(pim_base_url).await;
    figures.patch_calls = stats.calls_to(BULK_PATCH);
    figures.pim_calls = stats.total_calls;
    figures.throttled_429 = stats.throttled_429;
    figures.server_errors_5xx = stats.server_errors_5xx;
    Ok(figures)
}

/// Peak resident set size of this process (`VmHWM`), in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    proc_status_kib("VmHWM:")
}

/// Current resident set size of this process (`VmRSS`), in KiB.
pub fn rss_kib() -> Option<u64> {
    proc_status_kib("VmRSS:")
}

fn proc_status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
