//! The single-process runner behind `dam-sync serve` and `dam-sync demo`: the webhook endpoint
//! (the Lambda's `IngestService` behind axum), the consumer loop on the SQLite queue, the
//! poller schedule and the deletion sweep's schedule, all on one [`SqliteStore`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use embedded_store::{QueueSettings, SqliteStore};
use shared::akeneo::AkeneoClient;
use shared::consumer::{Consumer, InboundMessage};
use shared::dam::ChangeEvent;
use shared::dam::bynder::sns::ReqwestSnsClient;
use shared::ingest::IngestService;
use shared::mapping::Mapping;
use shared::poller::{Poller, SweepPorts, SweepSettings, Sweeper};
use shared::queue::{ChangeQueue, QueueError};
use shared::store::CursorStore;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::config::Config;
use crate::pim::Failure;

/// Counters of the consumer loop (the demo prints them).
#[derive(Debug, Default)]
pub struct LoopStats {
    pub batches: AtomicU64,
    pub messages: AtomicU64,
    pub synced: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
}

/// The store's queue, waking the consumer loop on every enqueue.
struct WakingQueue {
    store: SqliteStore,
    wake: Arc<Notify>,
}

#[async_trait]
impl ChangeQueue for WakingQueue {
    async fn enqueue(&self, events: &[ChangeEvent]) -> Result<(), QueueError> {
        self.store.enqueue(events).await?;
        self.wake.notify_one();
        Ok(())
    }
}

/// Everything `serve` runs, built from one configuration.
pub struct Runtime {
    pub store: SqliteStore,
    pub pim: Arc<AkeneoClient>,
    pub consumer: Consumer,
    pub poller: Poller,
    /// The deletion sweep (the Lambda's `{"mode":"sweep"}` schedule).
    pub sweeper: Sweeper,
    pub ingest: IngestService,
    pub stats: LoopStats,
    mapping: Arc<Mapping>,
    wake: Arc<Notify>,
    batch_size: usize,
    batch_window: Duration,
    retry_delay: Duration,
    visibility: Duration,
    poll_every: Option<Duration>,
    sweep_every: Option<Duration>,
    sweep_settings: SweepSettings,
}

fn setup(config: &Config, what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::input(format!("{what} ({}): {e}", config.file))
}

impl Runtime {
    pub fn build(config: &Config) -> Result<Runtime, Failure> {
        let raw = &config.raw;
        let visibility = Duration::from_secs(raw.consumer.visibility_timeout_secs);
        let settings = config
            .validate()
            .map_err(|e| Failure::input(e.to_string()))?;
        let akeneo = settings.akeneo;
        let store = SqliteStore::open(config.store_path())
            .map_err(|e| Failure::input(format!("{e} ([store] path in {})", config.file)))?
            .with_queue_settings(QueueSettings {
                visibility_timeout: visibility,
                max_receives: raw.consumer.max_receives,
            })
            .with_structure_ttl(akeneo.limits.structure_ttl);
        let mapping = Arc::new(settings.mapping);
        let source = settings.source;
        let ingest_config = settings.ingest;
        let poller_settings = settings.poller;

        let pim = Arc::new(
            AkeneoClient::with_structure_store(akeneo, Arc::new(store.clone()))
                .map_err(|e| setup(config, "PIM client", e))?,
        );
        let mut tuning = settings.consumer;
        // The batch must end well inside the visibility timeout, or it is delivered twice.
        tuning.safety_margin = tuning.safety_margin.min(visibility / 4);
        let consumer = Consumer::new(
            Arc::new(store.clone()),
            mapping.clone(),
            pim.clone(),
            Arc::new(store.clone()),
        )
        .with_source(source.clone())
        .with_settings(tuning)
        .with_asset_locks(Arc::new(store.clone()));

        let wake = Arc::new(Notify::new());
        let queue: Arc<dyn ChangeQueue> = Arc::new(WakingQueue {
            store: store.clone(),
            wake: wake.clone(),
        });
        let sns = Arc::new(ReqwestSnsClient::new().map_err(|e| setup(config, "HTTP client", e))?);
        let ingest = IngestService::from_config(&ingest_config, queue.clone(), sns.clone(), sns);
        // The sweep's limits come from the poller's settings, as in the Lambda.
        let sweep_settings = SweepSettings {
            max_dam_calls: poller_settings.max_dam_calls,
            deadline_margin: poller_settings.deadline_margin,
            lease_ttl: poller_settings.lease_ttl,
            ..SweepSettings::default()
        };
        let poller = Poller::new(
            source.clone(),
            queue.clone(),
            Arc::new(store.clone()),
            Arc::new(store.clone()),
            poller_settings,
        )
        .with_applied_filter(Arc::new(store.clone()));
        let sweeper = Sweeper::new(
            SweepPorts {
                pim: pim.clone(),
                source,
                states: Arc::new(store.clone()),
                queue,
                cursors: Arc::new(store.clone()),
                leases: Arc::new(store.clone()),
            },
            mapping.clone(),
            sweep_settings.clone(),
        )
        .with_metrics(poller.metrics().clone());
        Ok(Runtime {
            store,
            pim,
            consumer,
            poller,
            sweeper,
            ingest,
            stats: LoopStats::default(),
            mapping,
            wake,
            batch_size: raw.consumer.batch_size,
            batch_window: Duration::from_millis(raw.consumer.batch_window_ms),
            retry_delay: Duration::from_millis(raw.consumer.retry_delay_ms),
            visibility,
            poll_every: raw
                .poller
                .enabled
                .then(|| Duration::from_secs(raw.poller.interval_secs)),
            sweep_every: raw
                .poller
                .enabled
                .then(|| Duration::from_secs(raw.poller.sweep_interval_secs)),
            sweep_settings,
        })
    }

    /// The mapping the consumer applies.
    pub fn consumer_mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// The HTTP app: `POST /webhooks/{dam}` (the Lambda's routing and answers) and `GET
    /// /healthz`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .fallback(webhook)
            .with_state(self.clone())
    }

    /// Receives one batch, processes it and settles every message. Returns how many messages
    /// it took (0: the queue had nothing visible).
    pub async fn consume_once(&self) -> Result<usize, QueueError> {
        let received = self.store.receive(self.batch_size).await?;
        if received.is_empty() {
            return Ok(0);
        }
        let calls_before = self.pim.call_counts().calls;
        let deadline = Instant::now() + self.visibility;
        let messages = received
            .iter()
            .map(|m| InboundMessage {
                receive_count: m.receive_count,
                id: m.message_id.clone(),
                body: m.body.clone(),
            })
            .collect();
        let outcome = self.consumer.process(messages, deadline).await;
        let retry: HashMap<&str, &str> = outcome
            .retry
            .iter()
            .map(|(id, reason)| (id.as_str(), reason.as_str()))
            .collect();
        // Messages to redeliver, grouped by why they failed.
        let mut again: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
        let mut done = Vec::new();
        let mut most_receives = 1;
        for m in &received {
            let pair = (m.message_id.clone(), m.receipt.clone());
            match retry.get(m.message_id.as_str()) {
                Some(reason) => {
                    most_receives = most_receives.max(m.receive_count);
                    again.entry(reason).or_default().push(pair);
                }
                // Done or dead-lettered (already parked with its reason).
                None => done.push(pair),
            }
        }
        let retried: usize = again.values().map(Vec::len).sum();
        self.store.ack(done).await?;
        let s = &self.stats;
        s.batches.fetch_add(1, Ordering::Relaxed);
        s.messages
            .fetch_add(received.len() as u64, Ordering::Relaxed);
        s.synced.fetch_add(outcome.report.synced, Ordering::Relaxed);
        s.retried.fetch_add(retried as u64, Ordering::Relaxed);
        s.dead_lettered
            .fetch_add(outcome.dead_lettered.len() as u64, Ordering::Relaxed);
        for (id, reason) in &outcome.dead_lettered {
            self.note("consumer", &format!("message {id} dead-lettered: {reason}"))
                .await;
        }
        // Backoff doubles per receive, capped by the visibility timeout.
        let delay = self
            .retry_delay
            .saturating_mul(1 << (most_receives - 1).min(16))
            .min(self.visibility);
        for (reason, messages) in again {
            let count = messages.len();
            self.store
                .retry_later(messages, reason.to_owned(), delay)
                .await?;
            self.note(
                "consumer",
                &format!(
                    "{count} of {} messages left for redelivery in {delay:?}: {reason}",
                    received.len()
                ),
            )
            .await;
        }
        // The one line per batch `serve` shows by default.
        tracing::info!(
            "batch: {} messages, {} applied, {retried} retried, {} parked, {} PIM calls",
            received.len(),
            outcome.report.synced,
            outcome.dead_lettered.len(),
            self.pim.call_counts().calls.saturating_sub(calls_before),
        );
        Ok(received.len())
    }

    /// Records an error for `dam-sync status`. Not logged again: the library logged it where
    /// it happened (the poller's error line, the consumer's per-message warning).
    async fn note(&self, source: &str, message: &str) {
        tracing::debug!(source, error = message, "Recorded for `dam-sync status`.");
        if let Err(e) = self.store.record_error(source, message).await {
            tracing::warn!(error = %e, "Could not record the error for `dam-sync status`.");
        }
    }

    /// One incremental poll. Errors are logged and recorded; the schedule goes on.
    pub async fn poll_once(&self) {
        let now = SystemTime::now();
        let budget = self
            .poll_every
            .unwrap_or(Duration::from_secs(300))
            .max(Duration::from_secs(60));
        let deadline = now + budget + self.poller.settings().deadline_margin;
        match self.poller.run(now, deadline).await {
            // The one line per poll `serve` shows by default.
            Ok(report) => tracing::info!(
                "poll: {} changes listed, {} queued ({} already applied), {} pages, {:?}",
                report.events_enqueued + report.already_applied,
                report.events_enqueued,
                report.already_applied,
                report.pages,
                report.stop,
            ),
            Err(e) => self.note("poller", &e.to_string()).await,
        }
    }

    /// One deletion sweep (or the next part of an unfinished pass). Errors are logged and
    /// recorded; the schedule goes on.
    pub async fn sweep_once(&self) {
        let now = SystemTime::now();
        // The sweep stops its margin before this, so it ends inside its lease.
        let deadline = now + self.sweep_settings.lease_ttl;
        match self.sweeper.run(now, deadline).await {
            Ok(report) => tracing::info!(
                deletions = report.deletions_enqueued,
                managed = report.managed,
                stop = ?report.stop,
                "Sweep finished."
            ),
            Err(e) => self.note("sweep", &e.to_string()).await,
        }
    }

    /// How long until the first sweep after a start is due: at once when no pass has completed
    /// or one is unfinished, else a sweep interval after the last completed pass started (the
    /// sweep's cursor keeps that time), so a restart does not sweep again before it is due.
    async fn sweep_due_in(&self, every: Duration) -> Duration {
        let stored = match CursorStore::get(&self.store, &self.sweep_settings.name).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "Sweep position unreadable; the sweep waits an interval.");
                self.note("sweep", &e.to_string()).await;
                return every;
            }
        };
        let Some(cursor) = stored.filter(|c| c.page_token.is_none()) else {
            return Duration::ZERO;
        };
        let due_ms = cursor
            .position_ms
            .saturating_add(shared::time::duration_ms(every));
        let wait_ms = due_ms.saturating_sub(shared::time::now_ms()).max(0);
        Duration::from_millis(wait_ms as u64).min(every)
    }

    /// Runs the deletion sweep on its schedule until `stop` turns true.
    pub async fn sweeper_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let Some(every) = self.sweep_every else {
            return;
        };
        // Like the Lambda's schedule: one run per interval; an unfinished pass (budget,
        // deadline, failure) resumes at the next one.
        let mut wait = self.sweep_due_in(every).await;
        while !*stop.borrow() {
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => continue,
                }
            }
            self.sweep_once().await;
            wait = every;
        }
    }

    /// Runs the consumer loop until `stop` turns true; a batch in progress is finished first.
    pub async fn consumer_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let idle = Duration::from_millis(250);
        while !*stop.borrow() {
            match self.consume_once().await {
                Ok(n) if n >= self.batch_size => continue,
                // A partial batch: let more arrive, so PIM calls carry fuller batches (SQS's
                // batching window).
                Ok(n) if n > 0 => {
                    tokio::select! {
                        _ = tokio::time::sleep(self.batch_window) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "Queue unavailable; the consumer tries again.");
                    self.note("queue", &e.to_string()).await;
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {
                    tokio::time::sleep(self.batch_window).await;
                }
                _ = tokio::time::sleep(idle) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Runs the poller on its schedule (first run at once) until `stop` turns true.
    pub async fn poller_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let Some(every) = self.poll_every else {
            return;
        };
        while !*stop.borrow() {
            self.poll_once().await;
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Serves webhooks on `listener` and runs the consumer, poll and sweep loops until `stop`
    /// turns true; then stops accepting, finishes in-flight requests, the current batch, poll
    /// and sweep.
    pub async fn run(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let consumer = tokio::spawn(self.clone().consumer_loop(stop.clone()));
        let poller = tokio::spawn(self.clone().poller_loop(stop.clone()));
        let sweeper = tokio::spawn(self.clone().sweeper_loop(stop.clone()));
        let mut http_stop = stop.clone();
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            })
            .await;
        let _ = consumer.await;
        let _ = poller.await;
        let _ = sweeper.await;
        served
    }
}

async fn webhook(
    State(runtime): State<Arc<Runtime>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let headers = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let answer = runtime
        .ingest
        .handle_http(
            method.as_str(),
            uri.path(),
            headers,
            body,
            SystemTime::now(),
        )
        .await;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        answer.body,
    )
        .into_response()
}

/// Resolves when SIGTERM or ctrl-c arrives.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `dam-sync serve --config FILE`.
pub async fn serve(path: &std::path::Path) -> Result<std::process::ExitCode, Failure> {
    let config = Config::load(path).map_err(|e| Failure::input(e.to_string()))?;
    let runtime = Arc::new(Runtime::build(&config)?);
    let listen = &config.raw.server.listen;
    // A host name is resolved here, so `localhost:8080` works as well as an address.
    let listener = tokio::net::TcpListener::bind(listen.as_str())
        .await
        .map_err(|e| {
            Failure::input(format!(
                "cannot listen on {listen} ([server] listen in {}): {e}",
                config.file
            ))
        })?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::runtime(e.to_string()))?;
    say!(
        "dam-sync serving webhooks on http://{local}/webhooks/{{dam}}, store {}",
        runtime.store.path().display()
    );
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        say!("Stopping: finishing the batch and poll in progress...");
        let _ = tx.send(true);
    });
    runtime
        .run(listener, rx)
        .await
        .map_err(|e| Failure::runtime(format!("HTTP server failed: {e}")))?;
    say!("Stopped.");
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use akeneo_sim::{AkeneoSim, Faults, SimConfig};
    use dam_sim::{DamSim, DamSimConfig};
    use serde_json::{Value, json};
    use shared::queue::QueueAdmin;

    use super::*;

    #[tokio::test]
    async fn each_retried_message_is_recorded_with_its_own_reason() {
        // The PIM answers 500 and the DAM 503 to every call.
        let pim = AkeneoSim::start(SimConfig::default()).await.unwrap();
        pim.set_faults(Faults {
            error_5xx_rate: 1.0,
            ..Faults::default()
        });
        let dam = DamSim::start(DamSimConfig::default()).await.unwrap();
        dam.set_faults(dam_sim::Faults {
            down: true,
            ..dam_sim::Faults::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let (client_id, client_secret, username, password) = pim.credentials();
        let config = json!({
            "store": { "path": "state.db" },
            "pim": {
                "base_url": pim.base_url(), "client_id": client_id,
                "client_secret": client_secret, "username": username, "password": password,
                "max_attempts": 1,
            },
            "dam": {
                "kind": "generic", "api_url": dam.generic_base_url(),
                "api_token": dam.config().generic_token,
                "webhook_secrets": [dam.config().generic_webhook_secret],
            },
            "mapping": { "inline": dam_sim::PACKSHOT_MAPPING },
            "poller": { "enabled": false },
            "consumer": { "max_receives": 2, "retry_delay_ms": 1 },
        });
        let config = Config::from_parts(
            serde_json::from_value(config).unwrap(),
            dir.path().to_path_buf(),
        );
        let runtime = Runtime::build(&config).map_err(|f| f.message).unwrap();

        // A thin event needs a DAM read; a full one goes straight to the PIM.
        let event = |id: &str, asset: Value| -> ChangeEvent {
            serde_json::from_value(json!({
                "dam": "generic", "asset_id": id, "kind": "upsert", "version": null,
                "asset": asset, "dedupe_key": id, "received_at_ms": 1,
            }))
            .unwrap()
        };
        let thin = event("thin_1", Value::Null);
        let full = event(
            "full_1",
            json!({
                "dam": "generic", "id": "full_1", "version": { "modified_at_ms": 1, "seq": 0 },
                "fields": { "title": "Full", "sku": "AB-1" },
            }),
        );
        runtime.store.enqueue(&[thin, full]).await.unwrap();
        assert_eq!(runtime.consume_once().await.unwrap(), 2);

        // `dam-sync status` shows one line per reason.
        let errors = runtime.store.recent_errors(10).await.unwrap();
        let notes: Vec<&str> = errors.iter().map(|(_, _, m)| m.as_str()).collect();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes
                .iter()
                .all(|n| n.starts_with("1 of 2 messages left for redelivery")),
            "{notes:?}"
        );
        let is_dam = |reason: &str| reason.contains("DAM temporarily unavailable");
        // The simulator answers 500 or 503.
        let is_pim = |reason: &str| reason.contains("the PIM answered 50");
        assert_eq!(notes.iter().filter(|n| is_dam(n)).count(), 1, "{notes:?}");
        assert_eq!(notes.iter().filter(|n| is_pim(n)).count(), 1, "{notes:?}");

        // A message that never passes is parked by the consumer on its last delivery, with
        // its own last error.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(runtime.consume_once().await.unwrap(), 2);
        assert!(runtime.store.receive(10).await.unwrap().is_empty());
        let letters = runtime.store.dead_letters(10).await.unwrap();
        assert_eq!(letters.len(), 2, "{letters:?}");
        for letter in &letters {
            let thin = letter.body.contains("thin_1");
            assert!(letter.reason.contains("after 2 deliveries"), "{letter:?}");
            assert_eq!(is_dam(&letter.reason), thin, "{letter:?}");
            assert_eq!(is_pim(&letter.reason), !thin, "{letter:?}");
        }
    }

    /// `serve` sweeps on its own schedule: an asset deleted in the DAM with no webhook sent is
    /// found by the sweep loop, which enqueues its deletion.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sweep_loop_enqueues_deletions_the_dam_never_notified() {
        let pim = AkeneoSim::start(SimConfig::default()).await.unwrap();
        let dam = DamSim::start(DamSimConfig::default()).await.unwrap();
        let ids = dam.generate(3, 5);
        let dir = tempfile::tempdir().unwrap();
        let (client_id, client_secret, username, password) = pim.credentials();
        let config = json!({
            "store": { "path": "state.db" },
            "pim": {
                "base_url": pim.base_url(), "client_id": client_id,
                "client_secret": client_secret, "username": username, "password": password,
            },
            "dam": {
                "kind": "generic", "api_url": dam.generic_base_url(),
                "api_token": dam.config().generic_token,
                "webhook_secrets": [dam.config().generic_webhook_secret],
            },
            "mapping": { "inline": dam_sim::PACKSHOT_MAPPING },
            "poller": { "interval_secs": 3600, "sweep_interval_secs": 3600 },
        });
        let config = Config::from_parts(
            serde_json::from_value(config).unwrap(),
            dir.path().to_path_buf(),
        );
        let runtime = Arc::new(Runtime::build(&config).map_err(|f| f.message).unwrap());

        // Synced once through the poller and the consumer.
        runtime.poll_once().await;
        assert_eq!(runtime.consume_once().await.unwrap(), 3);
        assert_eq!(runtime.stats.synced.load(Ordering::Relaxed), 3);

        // Deleted in the DAM; nobody is subscribed to its webhooks. Only the sweep loop runs.
        assert!(dam.delete(&ids[1]));
        let (tx, rx) = watch::channel(false);
        let sweeping = tokio::spawn(runtime.clone().sweeper_loop(rx));
        let deadline = Instant::now() + Duration::from_secs(30);
        let received = loop {
            let received = runtime.store.receive(10).await.unwrap();
            if !received.is_empty() || Instant::now() > deadline {
                break received;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        tx.send(true).unwrap();
        sweeping.await.unwrap();

        assert_eq!(received.len(), 1, "{received:?}");
        let event: ChangeEvent = serde_json::from_str(&received[0].body).unwrap();
        assert_eq!(event.asset_id, ids[1]);
        assert_eq!(event.kind, shared::dam::ChangeKind::Delete);
        assert!(event.dedupe_key.contains(":sweep:"), "{}", event.dedupe_key);
        // The completed pass is recorded, so a restart waits a full interval.
        let every = Duration::from_secs(3600);
        assert!(runtime.sweep_due_in(every).await > Duration::from_secs(3500));
    }
}
