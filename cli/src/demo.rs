//! `dam-sync demo`: the whole product on one machine, with no account anywhere. Starts the
//! DAM and Akeneo simulators on free loopback ports, runs the same runtime as `serve` on a
//! temporary SQLite store, generates assets in the DAM (whose signed webhooks reach the
//! endpoint, some dropped, duplicated or reordered on purpose), lets the poller catch what the
//! webhooks missed, and compares every DAM asset with what the PIM holds.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use akeneo_sim::{AkeneoSim, SimConfig, SimHandle};
use dam_sim::{DamSim, DamSimConfig, DamSimHandle, DeliveryKnobs, WebhookKind};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use shared::dam::Fetched;
use shared::mapping::MapOutcome;
use shared::poller::StopReason;
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
const DUPLICATE_RATE: f64 = 0.05;
/// Assets created per step: small enough that the progress display moves while they are made.
const CREATE_CHUNK: usize = 1_000;

fn failed(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::runtime(format!("demo: {what}: {e}"))
}

/// How the demo shows its progress.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// Nothing until the summary (`--no-progress`).
    Off,
    /// A live bar on a terminal, else a plain line at this interval.
    Auto(Duration),
}

/// Long enough for the demo on a slow disk: every webhook is committed with an fsync (about
/// 3 ms each on the 2-core test machine), so large runs get 10 ms per asset.
pub fn default_timeout_secs(assets: usize) -> u64 {
    (assets as u64 / 100).max(600)
}

/// 12345 → "12,345": the summary is read by people.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The counters the progress display shows, read from the simulators and the store.
#[derive(Debug, Clone, Copy, Default)]
struct Snapshot {
    created: u64,
    sent: u64,
    dropped: u64,
    queued: u64,
    applied: u64,
    pim_calls: u64,
}

struct Live {
    dam: Arc<DamSimHandle>,
    pim: SimHandle,
    runtime: Arc<Runtime>,
    created: AtomicU64,
    phase: watch::Sender<String>,
    started: Instant,
}

impl Live {
    async fn snapshot(&self) -> Snapshot {
        let webhooks = self.dam.webhook_stats();
        let depth = self.runtime.store.depth().await.unwrap_or_default();
        Snapshot {
            created: self.created.load(Ordering::Relaxed),
            sent: webhooks.delivered,
            dropped: webhooks.dropped,
            queued: depth.visible + depth.in_flight,
            applied: self.runtime.store.asset_count().await.unwrap_or(0),
            pim_calls: self.pim.stats().total_calls,
        }
    }

    fn describe(s: &Snapshot, total: usize) -> String {
        format!(
            "{} of {} assets created, {} webhooks sent ({} dropped), {} messages queued, {} assets in the PIM, {} PIM calls",
            thousands(s.created),
            thousands(total as u64),
            thousands(s.sent),
            thousands(s.dropped),
            thousands(s.queued),
            thousands(s.applied),
            thousands(s.pim_calls)
        )
    }

    /// Shows the counters until `stop` turns true, then once more with the final values.
    async fn report(
        self: Arc<Self>,
        total: usize,
        every: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let terminal = std::io::stdout().is_terminal();
        let bar = terminal.then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stdout());
            bar.set_style(
                ProgressStyle::with_template(
                    // wide_msg is cut to the terminal's width: a wrapped line would break the redraw.
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} in the PIM\n  {wide_msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        // A terminal redraws cheaply; a log gets a line per interval.
        let every = if terminal {
            Duration::from_millis(250)
        } else {
            every
        };
        loop {
            let stopping = *stop.borrow();
            let phase = self.phase.borrow().clone();
            // The final values are shown once, when told to stop.
            if phase == "done" && !stopping {
                let _ = stop.changed().await;
                continue;
            }
            let s = self.snapshot().await;
            match &bar {
                Some(bar) => {
                    bar.set_position(s.applied);
                    bar.set_message(format!(
                        "{phase} · created {} · webhooks sent {}, dropped {} · queued {} · PIM calls {}",
                        thousands(s.created),
                        thousands(s.sent),
                        thousands(s.dropped),
                        thousands(s.queued),
                        thousands(s.pim_calls)
                    ));
                }
                None => println!(
                    "progress {:>6.1} s  {phase}: {}",
                    self.started.elapsed().as_secs_f64(),
                    Self::describe(&s, total)
                ),
            }
            if stopping {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => {}
            }
        }
        if let Some(bar) = bar {
            bar.finish();
        }
    }

    /// Waits until every queued message is settled; false at the deadline.
    async fn drained(&self, deadline: Instant) -> bool {
        while Instant::now() < deadline {
            let depth = self.runtime.store.depth().await.unwrap_or_default();
            if depth.visible == 0 && depth.in_flight == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

/// What the poll did, over as many runs as it took to read the DAM's whole change list (each
/// run stops at its DAM call budget and the next resumes).
#[derive(Debug, Default)]
struct PollTotals {
    runs: u32,
    pages: u64,
    enqueued: u64,
    already_applied: u64,
    complete: bool,
    error: Option<String>,
}

async fn poll_until_complete(runtime: &Runtime, deadline: Instant) -> PollTotals {
    let mut totals = PollTotals::default();
    while Instant::now() < deadline {
        let now = SystemTime::now();
        let run_deadline = now + deadline.saturating_duration_since(Instant::now());
        totals.runs += 1;
        match runtime.poller.run(now, run_deadline).await {
            Ok(report) => {
                totals.pages += u64::from(report.pages);
                totals.enqueued += report.events_enqueued;
                totals.already_applied += report.already_applied;
                match report.stop {
                    StopReason::Complete => {
                        totals.complete = true;
                        return totals;
                    }
                    StopReason::Budget | StopReason::Deadline => continue,
                    other => {
                        totals.error = Some(format!("the poll stopped: {other:?}"));
                        return totals;
                    }
                }
            }
            Err(e) => {
                totals.error = Some(e.to_string());
                return totals;
            }
        }
    }
    totals
}

pub async fn run(
    assets: usize,
    drop_rate: f64,
    timeout_secs: Option<u64>,
    progress: Progress,
) -> Result<ExitCode, Failure> {
    if !(0.0..1.0).contains(&drop_rate) {
        return Err(Failure::input("--drop-rate must be in [0, 1)"));
    }
    let timeout_secs = timeout_secs.unwrap_or_else(|| default_timeout_secs(assets));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(timeout_secs);
    let pim = AkeneoSim::start(SimConfig::default())
        .await
        .map_err(|e| failed("starting the Akeneo simulator", e))?;
    // Shared with the progress display; dropping the last handle stops the simulator.
    let dam = Arc::new(
        DamSim::start(DamSimConfig::default())
            .await
            .map_err(|e| failed("starting the DAM simulator", e))?,
    );
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
        "Creating {} assets in the DAM. Its webhooks reach dam-sync with {:.0}% dropped, {:.0}% sent twice and some out of order, on purpose.",
        thousands(assets as u64),
        drop_rate * 100.0,
        DUPLICATE_RATE * 100.0
    );
    dam.send_webhooks_to(
        &format!("http://{addr}/webhooks/generic"),
        WebhookKind::Generic,
        DeliveryKnobs {
            drop_rate,
            duplicate_rate: DUPLICATE_RATE,
            reorder_window: 4,
            seed: SEED,
            retries: 3,
            ..DeliveryKnobs::default()
        },
    );

    let (phase, _) = watch::channel("creating assets in the DAM".to_owned());
    let live = Arc::new(Live {
        dam: dam.clone(),
        pim: pim.clone(),
        runtime: runtime.clone(),
        created: AtomicU64::new(0),
        phase,
        started,
    });
    let (report_stop, report_rx) = watch::channel(false);
    let reporter = match progress {
        Progress::Auto(every) => Some(tokio::spawn(live.clone().report(assets, every, report_rx))),
        Progress::Off => None,
    };

    // Created a chunk at a time, yielding between chunks, so the display and the webhook
    // sender run while the DAM fills up.
    let mut ids = BTreeSet::new();
    for start in (0..assets).step_by(CREATE_CHUNK) {
        for i in start..(start + CREATE_CHUNK).min(assets) {
            let (id, fields) = dam_sim::generated_asset(SEED, i as u64);
            dam.upsert(&id, Value::Object(fields));
            ids.insert(id);
        }
        live.created.store(ids.len() as u64, Ordering::Relaxed);
        tokio::task::yield_now().await;
    }
    live.phase.send_replace("delivering webhooks".into());
    let flushed = dam
        .flush_webhooks(deadline.saturating_duration_since(Instant::now()))
        .await;
    live.phase.send_replace("applying the webhooks".into());
    let drained = flushed && live.drained(deadline).await;
    // Polled once the webhooks are applied, so it finds exactly what they missed.
    live.phase
        .send_replace("polling the DAM for changes the webhooks missed".into());
    let poll = poll_until_complete(&runtime, deadline).await;
    live.phase
        .send_replace("applying what the poll found".into());
    // An empty queue is final: redeliveries waiting out their delay still count as queued, and
    // what was dead-lettered will not come back, so there is nothing more to wait for.
    let done = drained
        && live.drained(deadline).await
        && runtime.store.asset_count().await.unwrap_or(0) as usize >= ids.len();
    let mismatches = compare(&config, &live, &ids).await;
    live.phase.send_replace("done".into());
    let _ = report_stop.send(true);
    if let Some(reporter) = reporter {
        let _ = reporter.await;
    }
    let _ = stop_tx.send(true);
    let _ = serving.await;
    let mismatches = mismatches?;
    let pim_assets = pim.assets(FAMILY).len();
    let extra = pim_assets.saturating_sub(ids.len());
    let dead = runtime
        .store
        .depth()
        .await
        .map(|d| d.dead_letters)
        .unwrap_or(0);
    let summary = Summary {
        created: ids.len() as u64,
        in_pim: pim_assets as u64,
        mismatched: mismatches.len() as u64,
        webhooks: dam.webhook_stats(),
        poll,
        messages: runtime.stats.messages.load(Ordering::Relaxed),
        batches: runtime.stats.batches.load(Ordering::Relaxed),
        redelivered: runtime.stats.retried.load(Ordering::Relaxed),
        writes: runtime.stats.synced.load(Ordering::Relaxed),
        pim: pim.stats(),
        dead_letters: dead,
        elapsed: started.elapsed(),
    };
    println!();
    for line in summary.lines() {
        println!("{line}");
    }
    let matches = done && mismatches.is_empty() && dead == 0 && extra == 0;
    if matches {
        println!("PIM matches DAM: yes");
        Ok(ExitCode::SUCCESS)
    } else {
        for m in mismatches.iter().take(10) {
            println!("  Differs: {m}");
        }
        if !done && Instant::now() >= deadline {
            println!(
                "  Gave up after {timeout_secs} s (--timeout-secs) before every asset was in the PIM."
            );
        }
        println!("PIM matches DAM: no");
        Ok(ExitCode::from(1))
    }
}

/// Every DAM asset, mapped, against the PIM's copy: one line per difference.
async fn compare(
    config: &Config,
    live: &Live,
    ids: &BTreeSet<String>,
) -> Result<Vec<String>, Failure> {
    let (runtime, pim) = (&live.runtime, &live.pim);
    let source = config.source().map_err(|e| failed("DAM client", e))?;
    let structure = runtime
        .pim
        .family_structure(FAMILY, Instant::now() + Duration::from_secs(60))
        .await
        .map_err(|e| failed("reading the PIM family", e))?
        .ok_or_else(|| failed("reading the PIM family", "packshot is missing"))?;
    let list: Vec<String> = ids.iter().cloned().collect();
    let mut mismatches: Vec<String> = Vec::new();
    for (i, chunk) in list.chunks(100).enumerate() {
        live.phase.send_replace(format!(
            "comparing every DAM asset with the PIM ({} of {} compared)",
            thousands((i * 100) as u64),
            thousands(list.len() as u64)
        ));
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
    Ok(mismatches)
}

/// The numbers the summary states.
struct Summary {
    created: u64,
    in_pim: u64,
    mismatched: u64,
    webhooks: dam_sim::WebhookStats,
    poll: PollTotals,
    messages: u64,
    batches: u64,
    redelivered: u64,
    writes: u64,
    pim: akeneo_sim::Stats,
    dead_letters: u64,
    elapsed: Duration,
}

impl Summary {
    /// Sentences a newcomer reads without a glossary; each line starts with what it is about.
    fn lines(&self) -> Vec<String> {
        let n = thousands;
        let w = &self.webhooks;
        let bulk = self.pim.calls_to(crate::ops::BULK_PATCH);
        let per_100 = if self.created == 0 {
            0.0
        } else {
            self.pim.total_calls as f64 * 100.0 / self.created as f64
        };
        let mut lines = vec![format!(
            "Result: {} assets created in the DAM; {} assets in the PIM, {} of them with values that differ from the DAM.",
            n(self.created),
            n(self.in_pim),
            n(self.mismatched)
        )];
        let mut webhooks = format!(
            "Webhooks: the DAM delivered {} webhooks: one per asset, except {} dropped on purpose, plus {} sent twice to show that repeats do no harm (some also arrived out of order).",
            n(w.delivered),
            n(w.dropped),
            n(w.duplicated)
        );
        if w.failed > 0 {
            webhooks.push_str(&format!(
                " {} deliveries failed and the DAM sent them again.",
                n(w.failed)
            ));
        }
        lines.push(webhooks);
        let pages = match self.poll.pages {
            1 => "1 page".to_owned(),
            p => format!("{} pages", n(p)),
        };
        let runs = match self.poll.runs {
            1 => String::new(),
            r => format!(" in {r} runs, each within its DAM call budget"),
        };
        let found = if self.poll.enqueued == w.dropped {
            format!(
                "found the {} assets whose webhook was dropped",
                n(self.poll.enqueued)
            )
        } else {
            format!(
                "found {} assets not yet in the PIM ({} webhooks were dropped)",
                n(self.poll.enqueued),
                n(w.dropped)
            )
        };
        let mut poll = format!(
            "Poller: a poll of the DAM's change list ({pages}{runs}) {found} and queued them; the other {} were already in the PIM.",
            n(self.poll.already_applied)
        );
        if let Some(e) = &self.poll.error {
            poll.push_str(&format!(" It stopped early: {e}."));
        }
        lines.push(poll);
        lines.push(format!(
            "Consumer: {} messages in {} batches for {} assets: one per delivered webhook ({}) and one per asset the poller queued ({}), plus {} redelivered after a failure. Repeats carry a version already applied and are skipped, so the PIM got {} asset writes.",
            n(self.messages),
            n(self.batches),
            n(self.created),
            n(w.delivered),
            n(self.poll.enqueued),
            n(self.redelivered),
            n(self.writes)
        ));
        lines.push(format!(
            "PIM: {} API calls, {:.1} per 100 assets: {} bulk writes of up to 100 assets and {} to log in and read the family's attributes; {} were refused with 429 (too many requests) and retried.",
            n(self.pim.total_calls),
            per_100,
            n(bulk),
            n(self.pim.total_calls.saturating_sub(bulk)),
            n(self.pim.throttled_429)
        ));
        lines.push(format!(
            "Failures: {} messages parked in the dead-letter queue, {} assets differ between DAM and PIM.",
            n(self.dead_letters),
            n(self.mismatched)
        ));
        lines.push(format!("Time: {:.1} s.", self.elapsed.as_secs_f64()));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::{default_timeout_secs, thousands};

    #[test]
    fn thousands_are_grouped_by_three() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn large_demos_get_more_time() {
        assert_eq!(default_timeout_secs(1_000), 600);
        assert_eq!(default_timeout_secs(60_000), 600);
        assert_eq!(default_timeout_secs(100_000), 1_000);
    }
}
