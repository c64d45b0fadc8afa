//! Chaos convergence suite (the fault matrix of reliability.md, mixed into one run).
//!
//! The whole pipeline: the DAM simulator sends signed Standard Webhooks to the ingest service
//! over HTTP, ingest enqueues, two consumer workers receive batches and apply them to the
//! Akeneo simulator, two pollers race on one cursor. Meanwhile:
//!
//! - PIM: 5 % 5xx, 5 % 429 with `Retry-After: 1`, 1 % hangs, tokens that expire every few
//!   seconds, per-item 422s (assets whose reference fails the PIM's validation), a stale family
//!   cache (it claims an option the PIM lacks);
//! - DAM: 5 % 5xx on every API call (consumer fetches and poller listings);
//! - webhooks: 10 % dropped, 2 % duplicated, reordered in windows of 10, plus forged ones;
//! - queue: 0.1 % poison messages; workers that "crash" after the PIM write and before the
//!   acknowledgement (every 7th batch is never acknowledged, so it is redelivered).
//!
//! It asserts that the PIM ends equal to the mapped DAM, that no asset is ever seen going back
//! to an older version, that the DLQ holds exactly the poison and the permanently refused
//! assets, that the PIM never saw more than 4 calls in flight nor a call inside a Retry-After
//! window, and that no forged event was queued.
//!
//! Size: `CHAOS_CHANGES` DAM changes per backend (default 2,000), e.g.
//! `CHAOS_CHANGES=10000 cargo test -p dam-sync-tests --release --test it chaos:: -- --nocapture`.
//! On moto the DAM changes at `CHAOS_AWS_CHANGES_PER_SEC` (default 10; see [`pace`]).

use crate::chaos_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use akeneo_sim::{Faults, SimConfig};
use async_trait::async_trait;
use chaos_support::Backend;
use dam_sim::{DamSim, DamSimConfig, DamSimHandle, DeliveryKnobs, WebhookKind};
use dam_sync_tests::turns::{HEAVY, moto_to_itself};
use dam_sync_tests::{CONSUMER_MAPPING, pim_config, serve_ingest};
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::akeneo::{AkeneoClient, Limits};
use shared::consumer::{Consumer, ConsumerSettings, PimWriter};
use shared::dam::ChangeEvent;
use shared::dam::generic::api::{GenericApi, GenericApiSettings};
use shared::dam::generic::webhook::{GenericSettings, GenericWebhookVerifier, SigningSecret};
use shared::ingest::{IngestService, IngestSettings};
use shared::mapping::Mapping;
use shared::poller::{Poller, PollerSettings};
use shared::queue::{ChangeQueue, QueueError};
use tokio::time::Instant;
use url::Url;

/// The consumer's batch deadline and the queue's visibility timeout: a batch that is not
/// acknowledged within the timeout is redelivered (Lambda's contract with SQS).
pub const VISIBILITY: Duration = Duration::from_secs(10);
const BATCH_DEADLINE: Duration = Duration::from_secs(8);
/// How long the whole run may take to converge after the last DAM change.
const CONVERGE_WITHIN: Duration = Duration::from_secs(300);

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// DAM changes per run: `CHAOS_CHANGES` (default 2,000), on either backend.
fn changes() -> usize {
    env_number("CHAOS_CHANGES").unwrap_or(2_000) as usize
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
fn pace(backend: &str) -> Option<u64> {
    match backend {
        "aws" => Some(env_number("CHAOS_AWS_CHANGES_PER_SEC").unwrap_or(10)).filter(|r| *r > 0),
        _ => None,
    }
}

/// Records every asset id that reaches the queue, so forged ids can be searched for.
struct Recording {
    inner: Arc<dyn ChangeQueue>,
    ids: Mutex<BTreeSet<String>>,
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

fn asset_id(n: usize) -> String {
    format!("chaos_{n}")
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

/// DAM fields of asset `n` at revision `rev` (revisions only grow, across all assets).
fn fields(n: usize, rev: u64) -> Value {
    let (sku, colors) = match kind(n) {
        Kind::Valid => (format!("AB-{n}"), json!(["red"])),
        Kind::BadReference => ("not a reference".to_owned(), json!(["red"])),
        Kind::StaleOption => (format!("AB-{n}"), json!(["purple"])),
    };
    json!({
        "kind": "packshot",
        "url": format!("https://res.example.com/packshots/{n}.jpg"),
        "sku": sku,
        "title": format!("r{rev:08}"),
        "colors": colors,
    })
}

fn revision(pim_asset: &Value) -> Option<u64> {
    pim_asset["values"]["alt_text"][0]["data"]
        .as_str()?
        .strip_prefix('r')?
        .parse()
        .ok()
}

/// Forged deliveries: a wrong key, a stale timestamp, a tampered body. None may be queued.
async fn send_forged(ingest_url: &str, count: usize) -> Vec<u16> {
    let http = reqwest::Client::new();
    let forger = "whsec_Zm9yZ2VkLWtleS1ub3QtdGhlLXJlYWwtb25lLTAwMDAwMDAwMA==";
    let mut statuses = Vec::new();
    for i in 0..count {
        let body = json!({
            "type": "asset.updated",
            "timestamp": "2026-11-28T00:00:00Z",
            "data": { "id": format!("forged_{i}") },
        })
        .to_string();
        let msg_id = format!("msg_forged_{i}");
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let (key, ts) = match i % 3 {
            0 => (forger, now),
            // Signed with a real-looking key but an hour old.
            1 => (forger, now - 3_600),
            _ => (forger, now + 3_600),
        };
        let sig =
            dam_sim::standard_signature(key, &msg_id, ts, body.as_bytes()).expect("signature");
        let status = http
            .post(format!("{ingest_url}/webhooks/generic"))
            .header("content-type", "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .send()
            .await
            .expect("forged delivery")
            .status()
            .as_u16();
        statuses.push(status);
    }
    statuses
}

struct Run {
    pim: akeneo_sim::SimHandle,
    dam: DamSimHandle,
    backend: Backend,
    mapping: Arc<Mapping>,
}

async fn chaos(backend: Backend) {
    // RUST_LOG=shared=warn shows why messages are retried.
    dam_sync_tests::logs::init();
    let n_changes = changes();
    let per_sec = pace(backend.name);
    let n_assets = (n_changes / 4).max(50);
    let started = Instant::now();

    // --- The PIM, with its structure cached stale before anything runs.
    let pim = akeneo_sim::AkeneoSim::start(SimConfig {
        faults: Faults {
            error_5xx_rate: 0.05,
            rate_429: 0.05,
            retry_after_secs: Some(1),
            hang_rate: 0.01,
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
        let warm = AkeneoClient::new(pim_config(&pim, Limits::default())).expect("client");
        let far = Instant::now() + Duration::from_secs(60);
        let mut structure = None;
        for _ in 0..20 {
            if let Ok(Some(s)) = warm.structure("packshot", far).await {
                structure = Some(s);
                break;
            }
        }
        let mut stale = (*structure.expect("packshot structure")).clone();
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
    let dam = DamSim::start(DamSimConfig {
        faults: dam_sim::Faults {
            error_rate: 0.05,
            error_status: 503,
            ..Default::default()
        },
        seed: 11,
        ..DamSimConfig::default()
    })
    .await
    .expect("DAM simulator");
    let source = Arc::new(
        GenericApi::new(GenericApiSettings::new(
            Url::parse(&dam.generic_base_url()).unwrap(),
            SecretString::from(dam.config().generic_token.clone()),
        ))
        .expect("generic client"),
    );

    // --- Ingest, behind HTTP, verifying the DAM's real signing secret.
    let recording = Arc::new(Recording {
        inner: backend.queue.clone(),
        ids: Mutex::default(),
    });
    let secret = SigningSecret::parse(&dam.config().generic_webhook_secret).unwrap();
    let ingest = Arc::new(
        IngestService::new(IngestSettings::default(), recording.clone()).with_verifier(Arc::new(
            GenericWebhookVerifier::new(GenericSettings::new(vec![secret])),
        )),
    );
    let ingest_url = serve_ingest(ingest).await;
    dam.send_webhooks_to(
        &format!("{ingest_url}/webhooks/generic"),
        WebhookKind::Generic,
        DeliveryKnobs {
            auto_notify: true,
            drop_rate: 0.10,
            duplicate_rate: 0.02,
            reorder_window: 10,
            delay_min_ms: 0,
            delay_max_ms: 3,
            retries: 3,
            retry_backoff_ms: 50,
            seed: 3,
            ..DeliveryKnobs::default()
        },
    );

    let mapping = Arc::new(Mapping::from_toml_str(CONSUMER_MAPPING, "chaos").expect("mapping"));
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
        backend,
        mapping,
    };

    let stop = Arc::new(AtomicBool::new(false));
    let batches = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let crashed = Arc::new(AtomicU64::new(0));

    // --- Two consumer workers; every 7th batch "crashes" after the PIM write.
    let mut workers = Vec::new();
    for _ in 0..2 {
        let consumer = consumer.clone();
        let work = run.backend.work.clone();
        let stop = stop.clone();
        let batches = batches.clone();
        let received = received.clone();
        let crashed = crashed.clone();
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let messages = work.receive(100).await;
                if messages.is_empty() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                received.fetch_add(messages.len() as u64, Ordering::Relaxed);
                let ids: Vec<String> = messages.iter().map(|m| m.id.clone()).collect();
                let out = consumer
                    .process(messages, Instant::now() + BATCH_DEADLINE)
                    .await;
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
    let made = Arc::new(AtomicU64::new(0));
    let progress = {
        let (stop, made, batches, received) = (
            stop.clone(),
            made.clone(),
            batches.clone(),
            received.clone(),
        );
        let name = run.backend.name;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(15));
            tick.tick().await;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                println!(
                    "[{name}] {:.0} s: {} changes made, {} batches of {} messages received",
                    started.elapsed().as_secs_f64(),
                    made.load(Ordering::Relaxed),
                    batches.load(Ordering::Relaxed),
                    received.load(Ordering::Relaxed),
                );
            }
        })
    };

    // --- Regression watch: the revision the PIM holds per asset never goes down.
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

    // --- Two pollers racing on one cursor, every 2 s; the cursor only moves forward. Each run
    // lists its lookback window again, so a short interval with a long lookback multiplies the
    // queue traffic (and moto's receive cost grows with the square of the queue's length).
    let poll_settings = PollerSettings {
        lookback: Duration::from_secs(2),
        safety_lag: Duration::from_secs(1),
        page_size: 200,
        ..PollerSettings::default()
    };
    let last_change_ms = Arc::new(AtomicU64::new(u64::MAX));
    let converged_poll = Arc::new(AtomicBool::new(false));
    let cursor_moves_back = Arc::new(AtomicU64::new(0));
    let pollers = {
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
        let cursors = run.backend.cursors.clone();
        let name = poll_settings.cursor_name.clone();
        let stop = stop.clone();
        let last_change_ms = last_change_ms.clone();
        let converged_poll = converged_poll.clone();
        let cursor_moves_back = cursor_moves_back.clone();
        tokio::spawn(async move {
            let mut high = i64::MIN;
            while !stop.load(Ordering::Relaxed) {
                let started_ms = now_ms();
                let now = SystemTime::now();
                let deadline = now + Duration::from_secs(60);
                let (ra, rb) = tokio::join!(a.run(now, deadline), b.run(now, deadline));
                let last = last_change_ms.load(Ordering::Relaxed);
                let complete = |r: &Result<shared::poller::RunReport, _>| matches!(r, Ok(r) if r.stop == shared::poller::StopReason::Complete);
                // A complete listing that started after the last change (plus the lag) saw it.
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
                // Each run lists its lookback window again (the consumer skips what it already
                // applied); once a complete run has seen the last change, polling is done.
                if converged_poll.load(Ordering::Relaxed) {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };

    // --- Poison messages straight into the queue (0.1 %, at least one).
    let poison: Vec<String> = (0..(n_changes / 1_000).max(1))
        .map(|i| format!("{{\"dam\":\"generic\",\"poison\":{i},\"trunc"))
        .collect();
    for body in &poison {
        run.backend.work.inject_raw(body).await;
    }

    // --- The DAM changes: every asset created, then updated at random, revisions growing.
    let mut rng = fastrand::Rng::with_seed(5);
    let mut rev = 0u64;
    let changes_start = Instant::now();
    for n in 0..n_changes {
        rev += 1;
        let target = if n < n_assets {
            n
        } else {
            rng.usize(..n_assets)
        };
        run.dam.upsert(&asset_id(target), fields(target, rev));
        made.store(n as u64 + 1, Ordering::Relaxed);
        match per_sec {
            Some(rate) if n % 10 == 9 => {
                let due = changes_start + Duration::from_secs_f64((n + 1) as f64 / rate as f64);
                tokio::time::sleep_until(due).await;
            }
            None if n % 50 == 49 => tokio::time::sleep(Duration::from_millis(20)).await,
            _ => {}
        }
        if n == n_changes / 2 {
            let statuses = send_forged(&ingest_url, 30).await;
            assert!(
                statuses.iter().all(|s| (400..500).contains(s)),
                "forged deliveries must be refused: {statuses:?}"
            );
        }
    }
    last_change_ms.store(now_ms() as u64, Ordering::Relaxed);
    assert!(
        run.dam.flush_webhooks(Duration::from_secs(120)).await,
        "webhooks flushed"
    );
    let changes_done = started.elapsed();

    // --- Converge: a complete poll after the last change and an empty queue, twice in a row
    // (a redelivery may still be on its way back).
    let converge_start = Instant::now();
    let mut quiet = 0;
    loop {
        let drained = run.backend.work.is_drained().await;
        if converged_poll.load(Ordering::Relaxed) && drained {
            quiet += 1;
            if quiet >= 2 {
                break;
            }
        } else {
            quiet = 0;
        }
        assert!(
            converge_start.elapsed() < CONVERGE_WITHIN,
            "[{}] no convergence within {CONVERGE_WITHIN:?}: poll done {}, queue drained {drained}",
            run.backend.name,
            converged_poll.load(Ordering::Relaxed),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    watch.await.unwrap();
    progress.abort();
    pollers.await.unwrap();

    verify(&run, &poison, &recording, n_assets).await;

    let stats = run.pim.stats();
    let regressions = regressions.lock().unwrap().clone();
    assert!(regressions.is_empty(), "assets went back: {regressions:?}");
    assert_eq!(
        cursor_moves_back.load(Ordering::Relaxed),
        0,
        "the cursor moved back"
    );
    assert!(
        stats.max_in_flight_instance <= 4,
        "PIM in flight: {}",
        stats.max_in_flight_instance
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
    println!(
        "[{}] {n_changes} changes to {n_assets} assets{}: changes+webhooks {:.1} s, converged {:.1} s later; \
         batches {} of {} messages ({} crashed), PIM calls {} (429: {}, 5xx: {}, token renewals: {}), max in flight {}, \
         DAM calls {}",
        run.backend.name,
        per_sec.map(|r| format!(" at {r}/s")).unwrap_or_default(),
        changes_done.as_secs_f64(),
        converge_start.elapsed().as_secs_f64(),
        batches.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
        crashed.load(Ordering::Relaxed),
        stats.total_calls,
        stats.throttled_429,
        stats.server_errors_5xx,
        stats.tokens_issued_refresh + stats.tokens_issued_password - 1,
        stats.max_in_flight_instance,
        run.dam.stats().total(),
    );
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// PIM == mapped DAM; DLQ == poison + refused; nothing forged queued.
async fn verify(run: &Run, poison: &[String], recording: &Recording, n_assets: usize) {
    let name = run.backend.name;
    let reader = AkeneoClient::new(pim_config(&run.pim, Limits::default())).unwrap();
    let mut structure = None;
    for _ in 0..20 {
        if let Ok(Some(s)) = reader
            .structure("packshot", Instant::now() + Duration::from_secs(60))
            .await
        {
            structure = Some(s);
            break;
        }
    }
    let structure = structure.expect("packshot structure");
    let mut mismatches = Vec::new();
    let mut refused = BTreeSet::new();
    for n in 0..n_assets {
        let id = asset_id(n);
        let dam = run.dam.asset(&id).expect("DAM asset");
        let pim = run.pim.asset("packshot", &id);
        match kind(n) {
            Kind::Valid => {
                let expected = run
                    .mapping
                    .map_asset(&id, &dam.to_generic_json(), |family| {
                        (family == "packshot").then_some(&*structure)
                    });
                let Some(pim) = pim else {
                    mismatches.push(format!("{id}: missing in the PIM"));
                    continue;
                };
                if !same_values(&expected, &pim) {
                    mismatches.push(format!("{id}: PIM {pim} vs mapped {expected:?}"));
                }
            }
            Kind::BadReference | Kind::StaleOption => {
                assert!(pim.is_none(), "[{name}] refused asset {id} is in the PIM");
                refused.insert(id);
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "[{name}] {} assets differ, e.g. {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(5)]
    );

    // The DLQ: exactly the poison bodies and messages about the refused assets.
    let letters = run.backend.work.dead_letters().await;
    let mut poison_seen = BTreeSet::new();
    let mut refused_seen = BTreeSet::new();
    let mut unexpected = Vec::new();
    for (body, reason) in &letters {
        if poison.contains(body) {
            poison_seen.insert(body.clone());
            continue;
        }
        match serde_json::from_str::<ChangeEvent>(body) {
            Ok(e) if refused.contains(&e.asset_id) => {
                refused_seen.insert(e.asset_id.clone());
            }
            _ => unexpected.push(format!("{body} ({reason})")),
        }
    }
    assert!(
        unexpected.is_empty(),
        "[{name}] unexpected dead letters: {unexpected:?}"
    );
    assert_eq!(
        poison_seen.len(),
        poison.len(),
        "[{name}] every poison message is dead-lettered"
    );
    assert_eq!(
        refused_seen, refused,
        "[{name}] every refused asset is dead-lettered"
    );

    let queued = recording.ids.lock().unwrap();
    let forged: Vec<&String> = queued
        .iter()
        .filter(|id| id.starts_with("forged_"))
        .collect();
    assert!(
        forged.is_empty(),
        "[{name}] forged events queued: {forged:?}"
    );
}

/// The mapped values (attribute → locale/channel → data) equal the PIM asset's.
fn same_values(expected: &shared::mapping::MapOutcome, pim: &Value) -> bool {
    let shared::mapping::MapOutcome::Mapped(mapped) = expected else {
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
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    want == have
}

// The two runs take turns, with each other and with the other CPU-heavy tests: the embedded
// run's CPU would starve moto's one core and push the paced AWS run behind its queue (see
// [`pace`]). With two test threads, the run waiting for its turn also keeps the rest of the
// binary from starting beside the AWS run.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_on_the_aws_adapters() {
    let _turn = HEAVY.lock().await;
    let backend = chaos_support::aws().await;
    // The pace is what moto serves to this run alone: other tests' moto calls wait for its end.
    let _moto = moto_to_itself().await;
    chaos(backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_on_the_embedded_store() {
    let _turn = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    chaos(chaos_support::embedded(dir.path()).await).await;
}
