//! Chaos convergence suite (the fault matrix of reliability.md, mixed into one run per DAM).
//!
//! The whole pipeline, once per DAM with that DAM's real webhook shapes ([`Dam`]): dam-sim sends
//! signed webhooks to the ingest service over HTTP (generic Standard Webhooks, thin or carrying
//! the full asset; Cloudinary upload / rename / tags / context / metadata / delete
//! notifications; Bynder SNS notifications after a subscription confirmation), ingest enqueues,
//! two consumer workers receive batches and apply them to the Akeneo simulator, two pollers race
//! on one cursor and the deletion sweep runs on the same schedule. The DAM's assets are created,
//! edited (twice within one DAM second, too), renamed, re-tagged, given new files (`media_file`
//! values), deleted, and some deleted ones created again. Meanwhile:
//!
//! - PIM: 5 % 5xx, 5 % 429 with `Retry-After: 1`, 1 % hangs, tokens that expire every few
//!   seconds, per-item 422s (assets whose reference fails the PIM's validation), a stale family
//!   cache (it claims an option the PIM lacks);
//! - DAM: 5 % 5xx on every API call (consumer fetches, poller listings, sweep checks, files);
//! - webhooks: 10 % dropped (deletes too: only the sweep or the poller can repair those),
//!   2 % duplicated, reordered in windows of 10, Cloudinary's spread over 1.5 s (a notification
//!   stamped a second after the change), plus forged ones;
//! - queue: 0.1 % poison messages; workers that "crash" after the PIM write and before the
//!   acknowledgement (every 7th batch is never acknowledged, so it is redelivered).
//!
//! It asserts that the PIM ends equal to the mapped DAM (files included) with every deleted
//! asset absent, that no asset is ever seen going back to an older version, that the DLQ holds
//! exactly the poison and the permanently refused assets (each with its reason), that no
//! Connection ever had more than 4 calls in flight nor a call inside a Retry-After window, and
//! that no forged event was queued.
//!
//! Size: `CHAOS_CHANGES` DAM changes per run (default 2,000 on the embedded store, 500 on moto),
//! e.g. `CHAOS_CHANGES=10000 cargo test -p dam-sync-tests --release --test it chaos:: -- --nocapture`.
//! The embedded store runs every DAM; moto runs Cloudinary only, paced at
//! `CHAOS_AWS_CHANGES_PER_SEC` (default 10; see [`pace`]); `CHAOS_AWS_CHANGES` sizes the moto run
//! alone.
//!
//! The `webhooks_off_*` tests run each DAM with no webhooks at all: the poller and the sweep
//! alone must converge within two poll intervals plus the sweep interval.

use crate::chaos_dams::Dam;
use crate::chaos_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use akeneo_sim::{Faults, SimConfig};
use async_trait::async_trait;
use chaos_support::Backend;
use dam_sim::{DamSim, DamSimConfig, DamSimHandle, DeliveryKnobs};
use dam_sync_tests::turns::{heavy_alone, heavy_shared, moto_to_itself};
use dam_sync_tests::{pim_config, serve_ingest};
use serde_json::{Value, json};
use shared::akeneo::{AkeneoClient, FamilyStructure, Limits};
use shared::consumer::{Consumer, ConsumerSettings, PimWriter};
use shared::dam::{AssetSource, ChangeEvent};
use shared::ingest::{IngestService, IngestSettings};
use shared::mapping::{MapOutcome, Mapping};
use shared::poller::{Poller, PollerSettings, StopReason, SweepPorts, SweepSettings, Sweeper};
use shared::queue::{ChangeQueue, QueueError};
use tokio::time::Instant;

/// The queue's visibility timeout and the consumer's batch deadline: a batch that is not
/// acknowledged within the timeout is redelivered (Lambda's contract with SQS: the deadline
/// ends before the message shows again). Every crashed or retried message waits this long, so
/// it sets the pace of convergence. On the embedded store the deadline leaves the consumer 2 s
/// of calls after its 2 s safety margin (as long as the PIM's request timeout, so no call
/// outlives the deadline). On moto a receive of 100 messages takes ten calls, each slower as
/// the queue grows (see [`pace`]): a shorter timeout there would expose the first messages of
/// a batch again before the batch is even processed, so SQS keeps 10 s.
pub const SQS_VISIBILITY: Duration = Duration::from_secs(10);
pub const EMBEDDED_VISIBILITY: Duration = Duration::from_secs(5);

fn batch_deadline(backend: &str) -> Duration {
    match backend {
        "aws" => Duration::from_secs(8),
        _ => Duration::from_secs(4),
    }
}
/// A call of the client inside a 429's Retry-After window counts from this long after the 429
/// (the simulator's default is 100 ms). The three embedded runs share the machine with each
/// other and the rest of the suite; a client whose task had a call past the gate when the 429
/// came can take longer than 100 ms to send it. A client that ignored Retry-After would still
/// land most of its retries inside the rest of the 1 s window, and the Akeneo client's own
/// tests check its reaction alone with the strict default.
const RETRY_AFTER_GRACE_MS: u64 = 300;
/// How long the whole run may take to converge after the last DAM change.
const CONVERGE_WITHIN: Duration = Duration::from_secs(300);
/// The sweep runs about this often while the DAM changes (every poll tick once polling is
/// done).
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// How often the convergence wait looks at the queue (it needs two quiet looks in a row).
const SETTLE_CHECK: Duration = Duration::from_millis(250);

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// DAM changes per run: `CHAOS_CHANGES` on either backend (default 2,000 on the embedded store).
/// moto's run defaults to 500 (`CHAOS_AWS_CHANGES`): paced to what moto serves, 2,000 changes
/// hold one core for over four minutes, and every fault of the run already hits within 500.
fn changes(backend: &str) -> usize {
    let size = match backend {
        "aws" => env_number("CHAOS_AWS_CHANGES").or_else(|| env_number("CHAOS_CHANGES")),
        _ => env_number("CHAOS_CHANGES"),
    };
    size.unwrap_or(if backend == "aws" { 500 } else { 2_000 }) as usize
}

/// How many DAM changes per second the run makes; `None` is as fast as the DAM simulator goes.
///
/// On moto the changes are paced (`CHAOS_AWS_CHANGES_PER_SEC`, default 10, 0 for no pacing).
/// moto 5.2.5 serves every call from one Python core, and its SQS calls scan the whole queue:
/// SendMessage and ReceiveMessage recompute the queue's attributes (ReceiveMessage once per
/// message it returns, in `is_message_valid_based_on_retention_period`), so a receive of 10
/// takes ~40 ms on an empty queue, ~0.75 s with 500 messages waiting and ~1.9 s with 2,000.
/// Once the queue outgrows what the consumer drains, every call slows and the run never catches
/// up; real SQS has no such cost. With the consumer's lease and state writes on top (several
/// DynamoDB calls per change), moto kept the queue under ~20 messages at 10 changes a second
/// and fell behind at 20 (debug build, 2 cores). Every fault of the run still hits at that
/// pace; the embedded store takes the changes unpaced.
/// The schedule of the pollers (and of the sweep, once polling is done). Each run lists its
/// lookback window again, so on moto, whose receive cost grows with the square of the queue's
/// length (see [`pace`]), the interval stays at 2 s; the embedded store polls every second.
fn poll_every(backend: &str) -> Duration {
    match backend {
        "aws" => Duration::from_secs(2),
        _ => Duration::from_secs(1),
    }
}

fn pace(backend: &str) -> Option<u64> {
    match backend {
        "aws" => Some(env_number("CHAOS_AWS_CHANGES_PER_SEC").unwrap_or(10)).filter(|r| *r > 0),
        _ => None,
    }
}

/// Records every asset id that reaches the queue, so forged ids can be searched for.
pub struct Recording {
    inner: Arc<dyn ChangeQueue>,
    ids: Mutex<BTreeSet<String>>,
}

impl Recording {
    pub fn new(inner: Arc<dyn ChangeQueue>) -> Self {
        Self {
            inner,
            ids: Mutex::default(),
        }
    }
}

#[async_trait]
impl ChangeQueue for Recording {
    async fn enqueue(&self, events: &[ChangeEvent]) -> Result<(), QueueError> {
        self.inner.enqueue(events).await?;
        let mut ids = self.ids.lock().unwrap();
        ids.extend(events.iter().map(|e| e.asset_id.clone()));
        Ok(())
    }
}

/// What kind of asset `n` is, fixed for its whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Valid,
    /// Its reference fails the PIM's validation: a per-item 422.
    BadReference,
    /// Uses an option only the stale cache claims: a 422, one structure refetch, then refused.
    StaleOption,
}

fn kind(n: usize) -> Kind {
    match n % 97 {
        13 => Kind::BadReference,
        41 if n < 300 => Kind::StaleOption,
        _ => Kind::Valid,
    }
}

/// Whether asset `n` carries a file (a `media_file` value in the PIM).
fn has_file(n: usize) -> bool {
    n % 5 == 2
}

/// The test's model of one DAM asset: what its next change writes.
#[derive(Debug, Clone)]
struct Model {
    /// Revision of the last change (revisions only grow, across all assets).
    rev: u64,
    live: bool,
    public_id: Option<String>,
    tags: Vec<String>,
    file_version: u64,
}

/// DAM fields of asset `n` (vendor-neutral; each DAM renders them its own way).
fn fields(dam: &DamSimHandle, d: Dam, n: usize, m: &Model) -> Value {
    let (sku, colors) = match kind(n) {
        Kind::Valid => (format!("AB-{n}"), json!(["red"])),
        Kind::BadReference => ("not a reference".to_owned(), json!(["red"])),
        Kind::StaleOption => (format!("AB-{n}"), json!(["purple"])),
    };
    let mut f = json!({
        "kind": "packshot",
        "url": format!("https://res.example.com/packshots/{n}.jpg"),
        "sku": sku,
        "title": format!("r{:08}", m.rev),
        "colors": colors,
        "tags": m.tags,
    });
    if let Some(p) = &m.public_id {
        f["public_id"] = json!(p);
    }
    if has_file(n) {
        f["file_url"] = json!(dam.file_url(&d.asset_id(n), &format!("packshot_{n}.jpg")));
        f["file_version"] = json!(m.file_version);
    }
    f
}

fn revision(pim_asset: &Value) -> Option<u64> {
    pim_asset["values"]["alt_text"][0]["data"]
        .as_str()?
        .strip_prefix('r')?
        .parse()
        .ok()
}

/// What the change loop did, for the report and to prove every kind of change happened.
#[derive(Default)]
struct Made {
    /// Per asset, what each change did (`op rREV`), to explain a failure.
    history: Vec<Vec<String>>,
    edits: u64,
    same_second_pairs: u64,
    /// Pairs whose two edits the DAM stamped within the same second.
    same_second_in_dam_time: u64,
    /// Pairs whose second edit came after the PIM applied the first, within one DAM second.
    same_second_after_applied: u64,
    renames: u64,
    retags: u64,
    new_files: u64,
    deletes: u64,
    recreates: u64,
}

impl std::fmt::Debug for Made {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "edits {}, same-second pairs {} ({} within one DAM second, {} after the first was \
             applied), renames {}, re-tags {}, new files {}, deletes {}, re-creations {}",
            self.edits,
            self.same_second_pairs,
            self.same_second_in_dam_time,
            self.same_second_after_applied,
            self.renames,
            self.retags,
            self.new_files,
            self.deletes,
            self.recreates
        )
    }
}

struct Run {
    pim: akeneo_sim::SimHandle,
    dam: DamSimHandle,
    d: Dam,
    backend: Backend,
    mapping: Arc<Mapping>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn packshot_structure(pim: &akeneo_sim::SimHandle) -> Arc<FamilyStructure> {
    let reader = AkeneoClient::new(pim_config(pim, Limits::default())).unwrap();
    for _ in 0..20 {
        if let Ok(Some(s)) = reader
            .structure("packshot", Instant::now() + Duration::from_secs(60))
            .await
        {
            return s;
        }
    }
    panic!("no packshot structure from the PIM");
}

async fn chaos(backend: Backend, d: Dam) {
    // RUST_LOG=shared=warn shows why messages are retried.
    dam_sync_tests::logs::init();
    let n_changes = changes(backend.name);
    let per_sec = pace(backend.name);
    let n_assets = (n_changes / 4).max(50);
    let label = format!("{}/{}", backend.name, d.name());
    let started = Instant::now();

    // --- The PIM, with its structure cached stale before anything runs.
    let pim = akeneo_sim::AkeneoSim::start(SimConfig {
        faults: Faults {
            error_5xx_rate: 0.05,
            rate_429: 0.05,
            retry_after_secs: Some(1),
            hang_rate: 0.01,
            retry_after_grace_ms: RETRY_AFTER_GRACE_MS,
            ..Faults::default()
        },
        token_ttl: Duration::from_secs(4),
        seed: 7,
        ..SimConfig::default()
    })
    .await
    .expect("Akeneo simulator");
    let limits = Limits {
        request_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    {
        let mut stale = (*packshot_structure(&pim).await).clone();
        stale
            .options
            .get_mut("main_colors")
            .unwrap()
            .push(serde_json::from_value(json!({ "code": "purple" })).unwrap());
        backend
            .structures
            .put(Arc::new(stale))
            .await
            .expect("seed the stale cache");
    }
    pim.reset_stats();
    let client =
        AkeneoClient::with_structure_store(pim_config(&pim, limits), backend.structures.clone())
            .expect("client");

    // --- The DAM, failing 5 % of its API calls.
    let dam = DamSim::start(d.sim_config(DamSimConfig {
        faults: dam_sim::Faults {
            error_rate: 0.05,
            error_status: 503,
            ..Default::default()
        },
        seed: 11,
        ..DamSimConfig::default()
    }))
    .await
    .expect("DAM simulator");
    let source = d.source(&dam);

    // --- Ingest, behind HTTP, verifying the DAM's real signatures.
    let recording = Arc::new(Recording::new(backend.queue.clone()));
    let ingest = Arc::new(
        IngestService::new(IngestSettings::default(), recording.clone())
            .with_verifier(d.verifier(&dam)),
    );
    let ingest_url = serve_ingest(ingest).await;
    let webhook_url = format!("{ingest_url}{}", d.route());
    if d == Dam::Bynder {
        // SNS confirms the subscription before it notifies; ingest visits the SubscribeURL.
        let token = dam
            .send_sns_subscription_confirmation(&webhook_url, 1)
            .await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dam.sns_confirmations().contains(&token) {
            assert!(
                Instant::now() < deadline,
                "the SNS subscription was not confirmed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    dam.send_webhooks_to(
        &webhook_url,
        d.webhook_kind(),
        DeliveryKnobs {
            auto_notify: true,
            drop_rate: 0.10,
            duplicate_rate: 0.02,
            reorder_window: 10,
            delay_min_ms: 0,
            // Cloudinary's notifications arrive up to 1.5 s after the change, stamped with
            // their sending second (reliability.md #3).
            delay_max_ms: if d == Dam::Cloudinary { 1_500 } else { 3 },
            retries: 3,
            retry_backoff_ms: 50,
            seed: 3,
            // A third of the generic deliveries carry the full asset (reliability.md #1).
            include_asset_rate: if d == Dam::Generic { 0.3 } else { 0.0 },
            ..DeliveryKnobs::default()
        },
    );

    let mapping = Arc::new(Mapping::from_toml_str(&d.mapping(), "chaos").expect("mapping"));
    let consumer = Arc::new(
        Consumer::new(
            backend.state.clone(),
            mapping.clone(),
            Arc::new(client),
            backend.dead.clone(),
        )
        .with_source(source.clone())
        .with_settings(ConsumerSettings {
            safety_margin: Duration::from_secs(2),
            ..ConsumerSettings::default()
        })
        .with_asset_locks(backend.leases.clone()),
    );
    let run = Run {
        pim,
        dam,
        d,
        backend,
        mapping,
    };

    let stop = Arc::new(AtomicBool::new(false));
    let batches = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let crashed = Arc::new(AtomicU64::new(0));
    // The latest retried messages (asset and reason): why a run that does not converge is stuck.
    let last_retries = Arc::new(Mutex::new(Vec::<String>::new()));

    // --- Two consumer workers; every 7th batch "crashes" after the PIM write.
    let mut workers = Vec::new();
    let deadline = batch_deadline(run.backend.name);
    for _ in 0..2 {
        let consumer = consumer.clone();
        let work = run.backend.work.clone();
        let stop = stop.clone();
        let batches = batches.clone();
        let received = received.clone();
        let crashed = crashed.clone();
        let last_retries = last_retries.clone();
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let messages = work.receive(100).await;
                if messages.is_empty() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                received.fetch_add(messages.len() as u64, Ordering::Relaxed);
                let ids: Vec<String> = messages.iter().map(|m| m.id.clone()).collect();
                let assets: HashMap<String, String> = messages
                    .iter()
                    .filter_map(|m| {
                        let e = serde_json::from_str::<ChangeEvent>(&m.body).ok()?;
                        Some((m.id.clone(), format!("{} {:?}", e.asset_id, e.kind)))
                    })
                    .collect();
                let out = consumer.process(messages, Instant::now() + deadline).await;
                if !out.retry.is_empty() {
                    *last_retries.lock().unwrap() = out
                        .retry
                        .iter()
                        .take(5)
                        .map(|(id, why)| format!("{}: {why}", assets.get(id).unwrap_or(id)))
                        .collect();
                }
                let b = batches.fetch_add(1, Ordering::Relaxed);
                if b % 7 == 3 {
                    // Crash between the PIM write and the acknowledgement: nothing is
                    // deleted, the whole batch comes back after the visibility timeout.
                    crashed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let retry: BTreeSet<&String> = out.retry.iter().map(|(id, _)| id).collect();
                let done: Vec<String> = ids.into_iter().filter(|id| !retry.contains(id)).collect();
                work.ack(&done).await;
            }
        }));
    }

    // --- Progress every 15 s (visible with --nocapture): where a slow run spends its time.
    let made_count = Arc::new(AtomicU64::new(0));
    let progress = {
        let (stop, made, batches, received) = (
            stop.clone(),
            made_count.clone(),
            batches.clone(),
            received.clone(),
        );
        let label = label.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(15));
            tick.tick().await;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                println!(
                    "[{label}] {:.0} s: {} changes made, {} batches of {} messages received",
                    started.elapsed().as_secs_f64(),
                    made.load(Ordering::Relaxed),
                    batches.load(Ordering::Relaxed),
                    received.load(Ordering::Relaxed),
                );
            }
        })
    };

    // --- Regression watch: the revision the PIM holds per asset never goes down, a deleted
    // asset included (one brought back with an older revision went back in time).
    let regressions = Arc::new(Mutex::new(Vec::<String>::new()));
    let watch = {
        let pim = run.pim.clone();
        let stop = stop.clone();
        let regressions = regressions.clone();
        tokio::spawn(async move {
            let mut seen: HashMap<String, u64> = HashMap::new();
            while !stop.load(Ordering::Relaxed) {
                for asset in pim.assets("packshot") {
                    let code = asset["code"].as_str().unwrap_or_default().to_owned();
                    if let Some(rev) = revision(&asset) {
                        let before = seen.entry(code.clone()).or_insert(rev);
                        if rev < *before {
                            regressions
                                .lock()
                                .unwrap()
                                .push(format!("{code}: r{before} then r{rev}"));
                        }
                        *before = (*before).max(rev);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // --- Two pollers racing on one cursor (see [`poll_every`]), the deletion sweep every 10 s;
    // the cursor only moves forward. Each run lists its lookback window again, so a short
    // interval with a long lookback multiplies the queue traffic (and moto's receive cost grows
    // with the square of the queue's length).
    let poll_every = poll_every(run.backend.name);
    let sweep_every_polls = (SWEEP_EVERY.as_millis() / poll_every.as_millis()).max(1) as u64;
    let poll_settings = PollerSettings {
        lookback: Duration::from_secs(2),
        safety_lag: Duration::from_secs(1),
        page_size: 200,
        ..PollerSettings::default()
    };
    let last_change_ms = Arc::new(AtomicU64::new(u64::MAX));
    let converged_poll = Arc::new(AtomicBool::new(false));
    // Start time of the latest sweep that completed (`i64::MIN`: none yet).
    let swept_from_ms = Arc::new(AtomicI64::new(i64::MIN));
    let sweep_errors = Arc::new(AtomicU64::new(0));
    let cursor_moves_back = Arc::new(AtomicU64::new(0));
    let schedule = {
        let make = || {
            Poller::new(
                source.clone(),
                recording.clone(),
                run.backend.cursors.clone(),
                run.backend.leases.clone(),
                poll_settings.clone(),
            )
            .with_applied_filter(run.backend.state.clone())
        };
        let (a, b) = (make(), make());
        let sweeper = sweeper(&run, source.clone(), recording.clone());
        let cursors = run.backend.cursors.clone();
        let name = poll_settings.cursor_name.clone();
        let stop = stop.clone();
        let last_change_ms = last_change_ms.clone();
        let converged_poll = converged_poll.clone();
        let swept_from_ms = swept_from_ms.clone();
        let sweep_errors = sweep_errors.clone();
        let cursor_moves_back = cursor_moves_back.clone();
        tokio::spawn(async move {
            let mut high = i64::MIN;
            let mut tick = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Each run lists its lookback window again (the consumer skips what it already
                // applied); once a complete run has seen the last change, polling is done.
                if !converged_poll.load(Ordering::Relaxed) {
                    let started_ms = now_ms();
                    let now = SystemTime::now();
                    let deadline = now + Duration::from_secs(60);
                    let (ra, rb) = tokio::join!(a.run(now, deadline), b.run(now, deadline));
                    let last = last_change_ms.load(Ordering::Relaxed);
                    let complete = |r: &Result<shared::poller::RunReport, _>| matches!(r, Ok(r) if r.stop == StopReason::Complete);
                    // A complete listing that started after the last change (plus the lag)
                    // saw it.
                    if (complete(&ra) || complete(&rb))
                        && last != u64::MAX
                        && started_ms > last as i64 + 1_500
                    {
                        converged_poll.store(true, Ordering::Relaxed);
                    }
                    if let Ok(Some(c)) = cursors.get(&name).await {
                        if c.position_ms < high {
                            cursor_moves_back.fetch_add(1, Ordering::Relaxed);
                        }
                        high = high.max(c.position_ms);
                    }
                }
                tick += 1;
                // The sweep reads every managed asset's state: on moto's one core, a sweep every
                // poll would starve the consumer. Once polling is done it runs every tick.
                if !tick.is_multiple_of(sweep_every_polls)
                    && !converged_poll.load(Ordering::Relaxed)
                {
                    tokio::time::sleep(poll_every).await;
                    continue;
                }
                let sweep_started = now_ms();
                let now = SystemTime::now();
                match sweeper.run(now, now + Duration::from_secs(60)).await {
                    Ok(r) if r.stop == Some(StopReason::Complete) => {
                        swept_from_ms.store(sweep_started, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        sweep_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "chaos: sweep failed; next schedule retries");
                    }
                }
                tokio::time::sleep(poll_every).await;
            }
        })
    };

    // --- Poison messages straight into the queue (0.1 %, at least one).
    let poison: Vec<String> = (0..(n_changes / 1_000).max(1))
        .map(|i| format!("{{\"dam\":\"{}\",\"poison\":{i},\"trunc", d.name()))
        .collect();
    for body in &poison {
        run.backend.work.inject_raw(body).await;
    }

    // --- The DAM changes: every asset created, then edited, renamed, re-tagged, given a new
    // file, deleted or created again at random, revisions growing.
    let (mut made, mut models, mut rev) =
        make_changes(&run, n_changes, n_assets, per_sec, &made_count, &ingest_url).await;
    last_change_ms.store(now_ms() as u64, Ordering::Relaxed);
    assert!(
        run.dam.flush_webhooks(Duration::from_secs(120)).await,
        "webhooks flushed"
    );
    let changes_done = started.elapsed();

    // --- Converge: a complete poll after the last change and an empty queue, twice in a row
    // (a redelivery may still be on its way back); then a complete sweep that started after
    // that, and an empty queue again (what the sweep found is applied).
    let converge_start = Instant::now();
    let wait_drained = |what: &'static str, since_sweep: Option<i64>| {
        let work = run.backend.work.clone();
        let converged_poll = converged_poll.clone();
        let swept_from_ms = swept_from_ms.clone();
        let label = label.clone();
        let last_retries = last_retries.clone();
        async move {
            let mut quiet = 0;
            loop {
                let drained = work.is_drained().await;
                let polled = converged_poll.load(Ordering::Relaxed);
                let swept =
                    since_sweep.is_none_or(|from| swept_from_ms.load(Ordering::Relaxed) >= from);
                if polled && swept && drained {
                    quiet += 1;
                    if quiet >= 2 {
                        break;
                    }
                } else {
                    quiet = 0;
                }
                assert!(
                    converge_start.elapsed() < CONVERGE_WITHIN,
                    "[{label}] no convergence ({what}) within {CONVERGE_WITHIN:?}: poll done \
                     {polled}, sweep done {swept}, queue drained {drained}; latest retries {:?}",
                    last_retries.lock().unwrap(),
                );
                tokio::time::sleep(SETTLE_CHECK).await;
            }
        }
    };
    wait_drained("poll", None).await;
    let polled_after = converge_start.elapsed();
    // The pipeline is idle: same-second pairs whose first edit is applied before the second,
    // then polling again until a complete poll has seen them.
    same_second_after_applied(&run, &mut models, &mut rev, &mut made).await;
    if run.backend.name == "embedded" {
        assert!(
            made.same_second_after_applied > 0,
            "[{label}] no same-second pair with the first edit applied in time: {made:?}"
        );
    }
    assert!(run.dam.flush_webhooks(Duration::from_secs(60)).await);
    last_change_ms.store(now_ms() as u64, Ordering::Relaxed);
    converged_poll.store(false, Ordering::Relaxed);
    let paired_after = converge_start.elapsed();
    wait_drained("poll after the same-second pairs", None).await;
    let repolled_after = converge_start.elapsed();
    wait_drained("sweep", Some(now_ms())).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    watch.await.unwrap();
    progress.abort();
    schedule.await.unwrap();

    let stats = run.pim.stats();
    let dam_calls = run.dam.stats().total();
    let webhooks = run.dam.webhook_stats();
    println!(
        "[{label}] {n_changes} changes to {n_assets} assets{}: {made:?}; changes+webhooks {:.1} s, \
         converged {:.1} s later (polled and drained {:.1} s, same-second pairs done {:.1} s, \
         polled again {:.1} s); webhooks {webhooks:?}; batches {} of {} messages ({} crashed), \
         PIM calls {} (429: {}, 5xx: {}, token renewals: {}), max in flight per token {}, DAM \
         calls {dam_calls}, failed sweeps {}",
        per_sec.map(|r| format!(" at {r}/s")).unwrap_or_default(),
        changes_done.as_secs_f64(),
        converge_start.elapsed().as_secs_f64(),
        polled_after.as_secs_f64(),
        paired_after.as_secs_f64(),
        repolled_after.as_secs_f64(),
        batches.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
        crashed.load(Ordering::Relaxed),
        stats.total_calls,
        stats.throttled_429,
        stats.server_errors_5xx,
        (stats.tokens_issued_refresh + stats.tokens_issued_password).saturating_sub(1),
        stats.max_in_flight_per_token,
        sweep_errors.load(Ordering::Relaxed),
    );

    // Every way the end state is wrong, reported together: each points at another defect.
    let mut failures = verify(&run, &poison, &recording, n_assets, &made.history).await;
    let regressions = regressions.lock().unwrap().clone();
    if !regressions.is_empty() {
        failures.push(format!(
            "{} assets went back to an older version, e.g. {:?}",
            regressions.len(),
            &regressions[..regressions.len().min(5)]
        ));
    }
    assert!(failures.is_empty(), "[{label}] {failures:#?}");
    assert_eq!(
        cursor_moves_back.load(Ordering::Relaxed),
        0,
        "the cursor moved back"
    );
    // Akeneo's limit is per Connection token; the sweep reads with a client of its own.
    assert!(
        stats.max_in_flight_per_token <= 4,
        "PIM in flight: {}",
        stats.max_in_flight_per_token
    );
    assert_eq!(stats.retry_after_violations, 0, "calls inside Retry-After");
    assert_eq!(stats.too_large_413, 0);
    assert!(crashed.load(Ordering::Relaxed) > 0, "some batches crashed");
    // The fault rates are per call: with a few dozen bulk calls, some kind of fault must have
    // hit (5xx, 429 or a hang), and tokens must have expired and been refreshed mid-run.
    let hung = stats
        .calls
        .values()
        .flat_map(|by_status| by_status.get(&0))
        .sum::<u64>();
    assert!(
        stats.throttled_429 + stats.server_errors_5xx + hung > 0,
        "faults happened: {stats:?}"
    );
    assert!(
        stats.tokens_issued_refresh + stats.tokens_issued_password > 1,
        "tokens expired and were renewed mid-run: {stats:?}"
    );
    assert!(
        webhooks.dropped > 0,
        "some webhooks were lost: {webhooks:?}"
    );
}

/// The deletion sweep of the run's PIM and DAM, with a PIM client of its own (its own
/// Connection, as the poller function has).
fn sweeper(run: &Run, source: Arc<dyn AssetSource>, queue: Arc<Recording>) -> Sweeper {
    // The fixture's second Connection: Akeneo's limits and Retry-After windows are per
    // Connection, and production gives the sweep one of its own.
    let mut config = pim_config(
        &run.pim,
        Limits {
            request_timeout: Duration::from_secs(2),
            ..Limits::default()
        },
    );
    config.client_id = "sim_password_only".into();
    config.client_secret = secrecy::SecretString::from("sim_secret_2");
    config.username = "sim_user_2".into();
    config.password = secrecy::SecretString::from("sim_password_2");
    let pim = AkeneoClient::new(config).expect("sweep client");
    Sweeper::new(
        SweepPorts {
            pim: Arc::new(pim),
            source,
            states: run.backend.state.clone(),
            queue,
            cursors: run.backend.cursors.clone(),
            leases: run.backend.leases.clone(),
        },
        run.mapping.clone(),
        SweepSettings {
            lease_ttl: Duration::from_secs(30),
            deadline_margin: Duration::from_secs(5),
            ..SweepSettings::default()
        },
    )
}

/// Makes `n_changes` DAM changes (seeded): creates every asset, then edits, same-second edit
/// pairs, renames, re-tags, new files, deletes and re-creations. Forged deliveries go out
/// halfway.
async fn make_changes(
    run: &Run,
    n_changes: usize,
    n_assets: usize,
    per_sec: Option<u64>,
    made_count: &AtomicU64,
    ingest_url: &str,
) -> (Made, Vec<Model>, u64) {
    let (dam, d) = (&run.dam, run.d);
    let mut rng = fastrand::Rng::with_seed(5);
    let mut rev = 0u64;
    let mut models: Vec<Model> = Vec::with_capacity(n_assets);
    let mut made = Made::default();
    let mut count = 0usize;
    let mut forged = false;
    let changes_start = Instant::now();
    let upsert = |n: usize, m: &Model| dam.upsert(&d.asset_id(n), fields(dam, d, n, m));
    made.history = vec![Vec::new(); n_assets];
    while count < n_changes {
        rev += 1;
        let before = count;
        let note: Option<(usize, &str)>;
        if models.len() < n_assets {
            let n = models.len();
            let m = Model {
                rev,
                live: true,
                public_id: None,
                tags: vec!["new".into()],
                file_version: 1,
            };
            upsert(n, &m);
            models.push(m);
            note = Some((n, "create"));
            count += 1;
        } else {
            let n = rng.usize(..n_assets);
            let roll = rng.u32(..100);
            let m = &mut models[n];
            if !m.live {
                // Brought back: a creation under the same id, newer than its deletion.
                m.rev = rev;
                m.live = true;
                upsert(n, m);
                made.recreates += 1;
                note = Some((n, "re-create"));
                count += 1;
            } else if roll < 6 && kind(n) == Kind::Valid {
                assert!(dam.delete(&d.asset_id(n)), "delete {n}");
                m.live = false;
                made.deletes += 1;
                note = Some((n, "delete"));
                count += 1;
            } else if roll < 16 {
                // Two edits of one asset back to back: within one DAM second (Bynder and
                // Cloudinary print seconds, reliability.md #2).
                m.rev = rev;
                let first = upsert(n, m);
                rev += 1;
                m.rev = rev;
                let second = upsert(n, m);
                let second_of = |a: &Value| {
                    dam_sim::parse_ms(a["modified_at"].as_str().unwrap_or_default())
                        .map(|ms| ms.div_euclid(1000))
                };
                if second_of(&first) == second_of(&second) {
                    made.same_second_in_dam_time += 1;
                }
                made.same_second_pairs += 1;
                note = Some((n, "edit twice"));
                count += 2;
            } else if roll < 21 {
                m.rev = rev;
                m.public_id = Some(format!("chaos/renamed/{n}_{rev}"));
                upsert(n, m);
                made.renames += 1;
                note = Some((n, "rename"));
                count += 1;
            } else if roll < 26 {
                m.rev = rev;
                m.tags = vec![format!("t{}", rev % 7)];
                upsert(n, m);
                made.retags += 1;
                note = Some((n, "re-tag"));
                count += 1;
            } else if roll < 31 && has_file(n) {
                m.rev = rev;
                m.file_version += 1;
                upsert(n, m);
                made.new_files += 1;
                note = Some((n, "new file"));
                count += 1;
            } else {
                m.rev = rev;
                upsert(n, m);
                made.edits += 1;
                note = Some((n, "edit"));
                count += 1;
            }
        }
        if let Some((n, op)) = note {
            made.history[n].push(format!("{op} r{rev}"));
        }
        made_count.store(count as u64, Ordering::Relaxed);
        for c in before..count {
            match per_sec {
                Some(rate) if c % 10 == 9 => {
                    let due = changes_start + Duration::from_secs_f64((c + 1) as f64 / rate as f64);
                    tokio::time::sleep_until(due).await;
                }
                None if c % 50 == 49 => tokio::time::sleep(Duration::from_millis(20)).await,
                _ => {}
            }
        }
        if !forged && count >= n_changes / 2 {
            forged = true;
            let statuses = d.send_forged(dam, ingest_url, 30).await;
            assert!(
                statuses.iter().all(|s| (400..500).contains(s)),
                "forged deliveries must be refused: {statuses:?}"
            );
        }
    }
    assert!(
        made.deletes > 0
            && made.recreates > 0
            && made.same_second_in_dam_time > 0
            && made.renames > 0
            && made.retags > 0
            && made.new_files > 0,
        "every kind of change happened: {made:?}"
    );
    (made, models, rev)
}

/// Edits assets twice within one DAM second, the second edit after the PIM applied the first:
/// the pair reliability.md #2 loses (Bynder and Cloudinary print seconds). Run while the
/// pipeline is idle, so the first edits land within the second; the targets go together (one
/// second per attempt, not one per target), and a target whose first edit does not land in
/// time, or whose second edit falls in the next second, is tried again.
async fn same_second_after_applied(
    run: &Run,
    models: &mut [Model],
    rev: &mut u64,
    made: &mut Made,
) {
    let (dam, d) = (&run.dam, run.d);
    let mut pending: Vec<usize> = (0..models.len())
        .filter(|&n| kind(n) == Kind::Valid && models[n].live)
        .step_by(37)
        .take(4)
        .collect();
    let second_of = |a: &Value| {
        dam_sim::parse_ms(a["modified_at"].as_str().unwrap_or_default())
            .map(|ms| ms.div_euclid(1000))
    };
    for _ in 0..8 {
        if pending.is_empty() {
            break;
        }
        // Start right after a second boundary, to leave the first edits most of a second.
        let into = now_ms().rem_euclid(1000) as u64;
        tokio::time::sleep(Duration::from_millis(1_000 - into + 5)).await;
        let second_ends = now_ms().div_euclid(1000) * 1000 + 900;
        let mut firsts = Vec::with_capacity(pending.len());
        for &n in &pending {
            let m = &mut models[n];
            *rev += 1;
            m.rev = *rev;
            let first = dam.upsert(&d.asset_id(n), fields(dam, d, n, m));
            firsts.push((n, *rev, second_of(&first)));
        }
        let mut applied = BTreeSet::new();
        loop {
            for &(n, first_rev, _) in &firsts {
                let code = pim_code(&d.asset_id(n));
                let done = run
                    .pim
                    .asset("packshot", &code)
                    .and_then(|a| revision(&a))
                    .is_some_and(|r| r >= first_rev);
                if done {
                    applied.insert(n);
                }
            }
            if applied.len() == firsts.len() || now_ms() > second_ends {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut again = Vec::new();
        for (n, first_rev, first_second) in firsts {
            let m = &mut models[n];
            *rev += 1;
            m.rev = *rev;
            let second = dam.upsert(&d.asset_id(n), fields(dam, d, n, m));
            made.history[n].push(format!("edit r{first_rev}, applied, edit r{}", *rev));
            if applied.contains(&n) && first_second == second_of(&second) {
                made.same_second_after_applied += 1;
            } else {
                again.push(n);
            }
        }
        pending = again;
    }
}

/// The PIM code and mapped values of DAM asset `asset` (a tombstone keeps its last fields).
fn mapped(run: &Run, structure: &FamilyStructure, asset: &dam_sim::SimAsset) -> MapOutcome {
    run.mapping
        .map_asset(&asset.id, &run.d.vendor_json(&run.dam, asset), |family| {
            (family == "packshot").then_some(structure)
        })
}

/// PIM == mapped DAM (files included), deleted assets absent; DLQ == poison + refused, each
/// with its reason; nothing forged queued.
async fn verify(
    run: &Run,
    poison: &[String],
    recording: &Recording,
    n_assets: usize,
    history: &[Vec<String>],
) -> Vec<String> {
    let mut failures = Vec::new();
    let name = format!("{}/{}", run.backend.name, run.d.name());
    let structure = packshot_structure(&run.pim).await;
    let mut mismatches = Vec::new();
    let mut resurrected = Vec::new();
    let mut refused = BTreeSet::new();
    let mut deleted = 0;
    for n in 0..n_assets {
        let id = run.d.asset_id(n);
        let dam = run.dam.asset(&id).expect("DAM asset");
        let outcome = mapped(run, &structure, &dam);
        let code = pim_code(&id);
        if let MapOutcome::Mapped(m) = &outcome {
            assert_eq!(m.asset.code, code, "[{name}] {id}'s PIM code");
        }
        let pim = run.pim.asset("packshot", &code);
        match kind(n) {
            Kind::Valid if dam.deleted => {
                deleted += 1;
                if let Some(pim) = pim {
                    resurrected.push(format!("{id} ({code}): deleted in the DAM, PIM has {pim}"));
                }
            }
            Kind::Valid => {
                let Some(pim) = pim else {
                    mismatches.push(format!("{id} ({code}): missing in the PIM"));
                    continue;
                };
                if !same_values(&outcome, &pim) {
                    mismatches.push(format!("{id}: PIM {pim} vs mapped {outcome:?}"));
                } else if has_file(n) {
                    let file = pim["values"]["source_file"][0]["data"]
                        .as_str()
                        .and_then(|c| run.pim.media_file(c));
                    if file.map(|(_, bytes)| bytes) != Some(dam_sim::file_bytes(&dam)) {
                        mismatches.push(format!("{id}: the PIM's file is not the DAM's"));
                    }
                }
            }
            Kind::BadReference | Kind::StaleOption => {
                assert!(pim.is_none(), "[{name}] refused asset {id} is in the PIM");
                refused.insert(id);
            }
        }
    }
    assert!(deleted > 0, "[{name}] some assets end deleted");
    if !(resurrected.is_empty() && mismatches.is_empty()) {
        explain(run, &resurrected, &mismatches, history).await;
    }
    if !resurrected.is_empty() {
        failures.push(format!(
            "{} deleted assets are in the PIM, e.g. {:?}",
            resurrected.len(),
            &resurrected[..resurrected.len().min(5)]
        ));
    }
    if !mismatches.is_empty() {
        failures.push(format!(
            "{} assets differ from the mapped DAM, e.g. {:?}",
            mismatches.len(),
            &mismatches[..mismatches.len().min(5)]
        ));
    }

    // The DLQ: exactly the poison bodies and messages about the refused assets, with reasons.
    let letters = run.backend.work.dead_letters().await;
    let mut poison_seen = BTreeSet::new();
    let mut refused_seen = BTreeSet::new();
    let mut unexpected = Vec::new();
    for (body, reason) in &letters {
        assert!(
            !reason.trim().is_empty(),
            "[{name}] dead letter without a reason: {body}"
        );
        if poison.contains(body) {
            assert!(
                reason.contains("undecodable"),
                "[{name}] poison dead-lettered with another reason: {reason}"
            );
            poison_seen.insert(body.clone());
            continue;
        }
        match serde_json::from_str::<ChangeEvent>(body) {
            Ok(e) if refused.contains(&e.asset_id) => {
                // The PIM's refusal (or the mapping's, for the option the PIM lacks), not a
                // retry budget running out.
                assert!(
                    reason.contains("product_ref") || reason.contains("main_colors"),
                    "[{name}] {} dead-lettered without the PIM's reason: {reason}",
                    e.asset_id
                );
                refused_seen.insert(e.asset_id.clone());
            }
            _ => unexpected.push(format!("{body} ({reason})")),
        }
    }
    if !unexpected.is_empty() {
        failures.push(format!(
            "{} unexpected dead letters, e.g. {:?}",
            unexpected.len(),
            &unexpected[..unexpected.len().min(5)]
        ));
    }
    if poison_seen.len() != poison.len() {
        failures.push(format!(
            "{} of {} poison messages dead-lettered",
            poison_seen.len(),
            poison.len()
        ));
    }
    if refused_seen != refused {
        failures.push(format!(
            "refused assets not dead-lettered: {:?}",
            refused.difference(&refused_seen).collect::<Vec<_>>()
        ));
    }

    let queued = recording.ids.lock().unwrap();
    let forged: Vec<&String> = queued
        .iter()
        .filter(|id| id.starts_with("forged_"))
        .collect();
    if !forged.is_empty() {
        failures.push(format!("forged events queued: {forged:?}"));
    }
    failures
}

/// Prints, for the wrong assets, their DAM history, the stored state, the webhooks delivered
/// for them and their dead letters: where a failure points in the product.
async fn explain(
    run: &Run,
    resurrected: &[String],
    mismatches: &[String],
    history: &[Vec<String>],
) {
    let log = run.dam.webhook_log();
    let letters = run.backend.work.dead_letters().await;
    let n_of = |id: &str| (0..history.len()).find(|n| run.d.asset_id(*n) == id);
    for line in resurrected.iter().chain(mismatches).take(10) {
        let id = line.split([' ', ':']).next().unwrap_or_default();
        let Some(n) = n_of(id) else { continue };
        let dam = run.dam.asset(id);
        let state = run
            .backend
            .state
            .get_many(run.d.source_kind(), &[id.to_owned()])
            .await
            .ok()
            .and_then(|mut m| m.remove(id));
        let hooks: Vec<String> = log
            .iter()
            .filter(|r| r.asset_id == id)
            .map(|r| format!("{}={:?}", r.event, r.status))
            .collect();
        let dead: Vec<&String> = letters
            .iter()
            .filter(|(body, _)| body.contains(&format!("\"asset_id\":\"{id}\"")))
            .map(|(_, reason)| reason)
            .collect();
        println!(
            "[{}] {id}: history {:?}; DAM version {:?} deleted {:?}; state {:?}; webhooks delivered \
             {hooks:?}; dead letters {dead:?}",
            run.d.name(),
            history[n],
            dam.as_ref().map(|a| (a.version, a.modified_at_ms)),
            dam.as_ref().map(|a| a.deleted),
            state.map(|s| (s.applied_version, s.content_hash)),
        );
    }
}

/// The PIM code of DAM id `id` under `code = "{{id}}"`, by the rule of docs/mapping.md (kept
/// apart from the mapping's own code): a valid code stays, otherwise every character outside
/// `[A-Za-z0-9_]` becomes `_` and `_` plus 10 hex digits of sha256(id) is appended.
fn pim_code(id: &str) -> String {
    use sha2::{Digest, Sha256};
    if id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return id.to_owned();
    }
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let hash: String = Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{clean}_{}", &hash[..10])
}

/// The mapped values (attribute → locale/channel → data) equal the PIM asset's; the
/// `media_file` value is compared by its bytes elsewhere (the PIM holds its own file code).
fn same_values(expected: &MapOutcome, pim: &Value) -> bool {
    let MapOutcome::Mapped(mapped) = expected else {
        return false;
    };
    let want: BTreeMap<String, Value> = mapped
        .asset
        .values
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap()))
        .collect();
    let have: BTreeMap<String, Value> = pim["values"]
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| k.as_str() != "source_file")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    want == have
}

// The embedded runs share the busy-run turn: they wait mostly on timeouts and redeliveries
// (their PIM allows for the slower reaction to a 429, see `RETRY_AFTER_GRACE_MS`). The AWS
// run is paced to what moto serves: on a moto server of its own
// (`CHAOS_MOTO_ENDPOINT_URL`, as scripts/test.sh starts) it runs beside everything else;
// on the shared one it has moto and the busy-run turn to itself, as the embedded runs' CPU
// would starve moto's one core and push the run behind its queue (see [`pace`]).

/// The one AWS run: Cloudinary's shapes (its notifications are the ones that lag their change
/// and its deletes are only repaired by the sweep).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_on_the_aws_adapters() {
    if let Some(own) = dam_sync_tests::chaos_moto_config().await {
        chaos(chaos_support::aws(&own).await, Dam::Cloudinary).await;
        return;
    }
    let _turn = heavy_alone().await;
    let backend = chaos_support::aws(&dam_sync_tests::moto_config().await).await;
    // Other tests' moto calls wait for the end of this run.
    let _moto = moto_to_itself().await;
    chaos(backend, Dam::Cloudinary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_generic_on_the_embedded_store() {
    let _turn = heavy_shared().await;
    let dir = tempfile::tempdir().unwrap();
    chaos(chaos_support::embedded(dir.path()).await, Dam::Generic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_cloudinary_on_the_embedded_store() {
    let _turn = heavy_shared().await;
    let dir = tempfile::tempdir().unwrap();
    chaos(chaos_support::embedded(dir.path()).await, Dam::Cloudinary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_bynder_on_the_embedded_store() {
    let _turn = heavy_shared().await;
    let dir = tempfile::tempdir().unwrap();
    chaos(chaos_support::embedded(dir.path()).await, Dam::Bynder).await;
}

/// Receives, processes and acknowledges until the queue is empty (nothing visible, nothing in
/// flight); a message still retried after a minute fails the test with its reason.
async fn drain(run: &Run, consumer: &Consumer) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_retry = Vec::new();
    while !run.backend.work.is_drained().await {
        assert!(
            Instant::now() < deadline,
            "[{}] the queue does not drain; last retries: {last_retry:?}",
            run.d.name()
        );
        let messages = run.backend.work.receive(100).await;
        if messages.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let ids: Vec<String> = messages.iter().map(|m| m.id.clone()).collect();
        let out = consumer
            .process(messages, Instant::now() + batch_deadline(run.backend.name))
            .await;
        let retry: BTreeSet<&String> = out.retry.iter().map(|(id, _)| id).collect();
        let done: Vec<String> = ids
            .iter()
            .filter(|id| !retry.contains(id))
            .cloned()
            .collect();
        run.backend.work.ack(&done).await;
        if !out.retry.is_empty() {
            last_retry = out.retry.clone();
        }
    }
}

/// Webhooks off: no notification at all. On the schedule's worst case after the last change
/// (a poll interval, a poll, another interval, a poll, then the sweep), the PIM equals the
/// mapped DAM, deleted assets absent.
async fn webhooks_off(d: Dam) {
    dam_sync_tests::logs::init();
    // Short intervals: longer than the poller's safety lag, so the second poll after a change
    // always lists it.
    const POLL_INTERVAL: Duration = Duration::from_millis(1_500);
    let n_assets = 60;
    let pim = dam_sync_tests::start_pim(dam_sync_tests::akeneo_caps()).await;
    let dam = DamSim::start(d.sim_config(DamSimConfig::default()))
        .await
        .expect("DAM simulator");
    let dir = tempfile::tempdir().unwrap();
    // A retried message comes back within a second, not ten.
    let backend = chaos_support::embedded_with(dir.path(), Duration::from_secs(1)).await;
    let source = d.source(&dam);
    let mapping = Arc::new(Mapping::from_toml_str(&d.mapping(), "chaos").expect("mapping"));
    let client = AkeneoClient::with_structure_store(
        pim_config(&pim, Limits::default()),
        backend.structures.clone(),
    )
    .expect("client");
    let consumer = Consumer::new(
        backend.state.clone(),
        mapping.clone(),
        Arc::new(client),
        backend.dead.clone(),
    )
    .with_source(source.clone())
    .with_asset_locks(backend.leases.clone());
    let recording = Arc::new(Recording::new(backend.queue.clone()));
    let poller = Poller::new(
        source.clone(),
        recording.clone(),
        backend.cursors.clone(),
        backend.leases.clone(),
        PollerSettings {
            lookback: Duration::from_secs(2),
            safety_lag: Duration::from_secs(1),
            page_size: 200,
            ..PollerSettings::default()
        },
    )
    .with_applied_filter(backend.state.clone());
    let run = Run {
        pim,
        dam,
        d,
        backend,
        mapping,
    };
    let sweeper = sweeper(&run, source, recording);
    let poll = || async {
        let now = SystemTime::now();
        let report = poller
            .run(now, now + Duration::from_secs(60))
            .await
            .expect("poll");
        assert_eq!(report.stop, StopReason::Complete, "{report:?}");
    };
    let two_polls = || async {
        for _ in 0..2 {
            tokio::time::sleep(POLL_INTERVAL).await;
            poll().await;
            drain(&run, &consumer).await;
        }
    };

    // Every asset created (some with files), synced by two polls.
    let (dam, mut rev) = (&run.dam, 0u64);
    let mut models: Vec<Model> = (0..n_assets)
        .map(|_| {
            rev += 1;
            Model {
                rev,
                live: true,
                public_id: None,
                tags: vec!["new".into()],
                file_version: 1,
            }
        })
        .collect();
    for (n, m) in models.iter().enumerate() {
        dam.upsert(&d.asset_id(n), fields(dam, d, n, m));
    }
    poll().await;
    drain(&run, &consumer).await;
    two_polls().await;
    check_quiet(&run, n_assets, "after the creations").await;

    // Edits (two in one DAM second among them), a rename, a re-tag, new files, deletions,
    // deletions followed by a re-creation.
    for (n, m) in models.iter_mut().enumerate() {
        if kind(n) != Kind::Valid {
            continue;
        }
        let id = d.asset_id(n);
        match n % 6 {
            0 => {
                assert!(dam.delete(&id));
                m.live = false;
            }
            1 if n % 12 == 1 => {
                assert!(dam.delete(&id));
                rev += 1;
                m.rev = rev;
                dam.upsert(&id, fields(dam, d, n, m));
            }
            2 => {
                rev += 1;
                m.rev = rev;
                m.file_version += 1;
                dam.upsert(&id, fields(dam, d, n, m));
            }
            3 => {
                rev += 1;
                m.rev = rev;
                m.public_id = Some(format!("quiet/renamed/{n}"));
                m.tags = vec!["renamed".into()];
                dam.upsert(&id, fields(dam, d, n, m));
            }
            _ => {
                for _ in 0..2 {
                    rev += 1;
                    m.rev = rev;
                    dam.upsert(&id, fields(dam, d, n, m));
                }
            }
        }
    }
    two_polls().await;
    let report = sweeper
        .run(
            SystemTime::now(),
            SystemTime::now() + Duration::from_secs(60),
        )
        .await
        .expect("sweep");
    assert_eq!(report.stop, Some(StopReason::Complete), "{report:?}");
    drain(&run, &consumer).await;
    check_quiet(&run, n_assets, "after the edits and deletions").await;
}

/// PIM == mapped DAM, deleted assets absent, refused assets absent (webhooks-off runs).
async fn check_quiet(run: &Run, n_assets: usize, when: &str) {
    let name = run.d.name();
    let structure = packshot_structure(&run.pim).await;
    let mut wrong = Vec::new();
    for n in 0..n_assets {
        let id = run.d.asset_id(n);
        let dam = run.dam.asset(&id).expect("DAM asset");
        let pim = run.pim.asset("packshot", &pim_code(&id));
        match (kind(n), dam.deleted, pim) {
            (Kind::Valid, false, Some(pim)) => {
                let outcome = mapped(run, &structure, &dam);
                if !same_values(&outcome, &pim) {
                    wrong.push(format!("{id}: PIM {pim} vs mapped {outcome:?}"));
                } else if has_file(n) {
                    let file = pim["values"]["source_file"][0]["data"]
                        .as_str()
                        .and_then(|c| run.pim.media_file(c));
                    if file.map(|(_, bytes)| bytes) != Some(dam_sim::file_bytes(&dam)) {
                        wrong.push(format!("{id}: the PIM's file is not the DAM's"));
                    }
                }
            }
            (Kind::Valid, false, None) => wrong.push(format!("{id}: missing in the PIM")),
            (_, _, Some(pim)) => wrong.push(format!("{id}: should not be in the PIM: {pim}")),
            (_, _, None) => {}
        }
    }
    assert!(
        wrong.is_empty(),
        "[{name}, webhooks off] {when}: {} assets wrong, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_off_generic_converges_by_polls_and_the_sweep() {
    webhooks_off(Dam::Generic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_off_cloudinary_converges_by_polls_and_the_sweep() {
    webhooks_off(Dam::Cloudinary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_off_bynder_converges_by_polls_and_the_sweep() {
    webhooks_off(Dam::Bynder).await;
}
