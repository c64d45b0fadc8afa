//! Operator commands: `status`, `dlq list|replay`, `backfill`, `check`. Each works on the local
//! SQLite store or on SQS and DynamoDB, through the same ports, and names the backend and the
//! fix when it cannot reach it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use embedded_store::SqliteStore;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use shared::akeneo::{AkeneoClient, FamilyStructure};
use shared::mapping::DeletePolicy;
use shared::mapping::Severity;
use shared::poller::{PollMetrics, Poller, PollerSettings, StopReason};
use shared::queue::sqs::{SqsChangeQueue, SqsQueueAdmin};
use shared::queue::{ChangeQueue, QueueAdmin};
use shared::store::dynamodb::DynamoStore;
use shared::store::{AssetStateStore, CursorStore, LeaseStore};
use shared::time::{format_rfc3339_ms, now_ms};
use tokio::time::Instant;

use crate::Backend;
use crate::config::Config;
use crate::pim::Failure;

/// The bulk route as the Akeneo simulator accounts it.
pub const BULK_PATCH: &str = "PATCH /api/rest/v1/asset-families/{family}/assets";

const AWS_HINT: &str = "check AWS_REGION, the credentials and the URL/table name \
(AWS_ENDPOINT_URL when using an emulator), and that the endpoint is reachable from here";

const NO_BACKEND: &str = "no backend chosen: pass --config FILE or --store PATH for the local \
store, or set QUEUE_URL and DLQ_URL (and TABLE_NAME for status) for SQS and DynamoDB";

/// The queue and state of one backend.
enum Target {
    Local(SqliteStore),
    Aws {
        admin: SqsQueueAdmin,
        state: Option<DynamoStore>,
    },
}

/// AWS clients that give up quickly: an operator waits at the terminal.
async fn aws_config() -> aws_config::SdkConfig {
    shared::https::aws_config_loader()
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_timeout(Duration::from_secs(20))
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(2))
        .load()
        .await
}

fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "the AWS endpoints".into())
}

fn local_store(path: &Path) -> Result<SqliteStore, Failure> {
    SqliteStore::open_existing(path).map_err(|e| Failure::input(e.to_string()))
}

async fn target(backend: &Backend, need_table: bool) -> Result<Target, Failure> {
    if let Some(path) = &backend.store {
        return Ok(Target::Local(local_store(path)?));
    }
    if let Some(path) = &backend.config {
        let config = Config::load(path).map_err(|e| Failure::input(e.to_string()))?;
        return Ok(Target::Local(local_store(&config.store_path())?));
    }
    let (Some(queue_url), Some(dlq_url)) = (&backend.queue_url, &backend.dlq_url) else {
        if backend.queue_url.is_some() || backend.dlq_url.is_some() || backend.table.is_some() {
            return Err(Failure::input(
                "the AWS backend needs both QUEUE_URL and DLQ_URL (or --queue-url and --dlq-url)",
            ));
        }
        return Err(Failure::input(NO_BACKEND));
    };
    if need_table && backend.table.is_none() {
        return Err(Failure::input(
            "the AWS backend needs TABLE_NAME (or --table): the DynamoDB state table with the cursors",
        ));
    }
    let aws = aws_config().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let state = backend
        .table
        .as_ref()
        .map(|t| DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), t.clone()));
    Ok(Target::Aws {
        admin: SqsQueueAdmin::new(sqs, queue_url.clone(), dlq_url.clone()),
        state,
    })
}

impl Target {
    fn admin(&self) -> &dyn QueueAdmin {
        match self {
            Target::Local(store) => store,
            Target::Aws { admin, .. } => admin,
        }
    }

    fn cursors(&self) -> Option<&dyn CursorStore> {
        match self {
            Target::Local(store) => Some(store),
            Target::Aws { state, .. } => state.as_ref().map(|s| s as &dyn CursorStore),
        }
    }

    /// An error of this backend, with what to check; the full chain for `-v`.
    fn failure<E: std::error::Error + 'static>(&self, what: &str, e: E) -> Failure {
        let failure = match self {
            Target::Local(store) => Failure::runtime(format!(
                "{what} failed on the SQLite store {}: {e}; check the file and that no other \
                 process holds a long write lock",
                store.path().display()
            )),
            Target::Aws { .. } => Failure::runtime(format!(
                "{what} failed on AWS ({}): {e}; {AWS_HINT}",
                endpoint()
            )),
        };
        failure.caused_by(&e)
    }
}

fn age(ms: i64) -> String {
    let secs = (now_ms() - ms).max(0) / 1000;
    match secs {
        s if s < 120 => format!("{s} s ago"),
        s if s < 7200 => format!("{} min ago", s / 60),
        s if s < 172_800 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

/// `dam-sync status`.
pub async fn status(backend: &Backend) -> Result<ExitCode, Failure> {
    let target = target(backend, true).await?;
    let admin = target.admin();
    say!("Backend: {}", admin.backend());
    let depth = admin
        .depth()
        .await
        .map_err(|e| target.failure("reading the queue depth", e))?;
    let settings = PollerSettings::from_lookup(|k| std::env::var(k).ok()).unwrap_or_default();
    if let Some(cursors) = target.cursors() {
        for name in [&settings.cursor_name, &settings.backfill_cursor_name] {
            match cursors
                .get(name)
                .await
                .map_err(|e| target.failure("reading the cursors", e))?
            {
                Some(c) => say!(
                    "Cursor {name}: at {} ({}), version {}{}",
                    format_rfc3339_ms(c.position_ms),
                    age(c.position_ms),
                    c.version,
                    if c.page_token.is_some() {
                        ", listing in progress (resumes from its saved page)"
                    } else {
                        ""
                    }
                ),
                None => say!("Cursor {name}: none yet (the poller has not completed a run)"),
            }
        }
    }
    say!(
        "Queue: {} waiting, {} in flight",
        depth.visible,
        depth.in_flight
    );
    say!(
        "Dead letters: {}{}",
        depth.dead_letters,
        if depth.dead_letters > 0 {
            " (see `dam-sync dlq list`)"
        } else {
            ""
        }
    );
    let mut errors: Vec<String> = Vec::new();
    if let Target::Local(store) = &target {
        let synced = store
            .asset_count()
            .await
            .map_err(|e| target.failure("counting assets", e))?;
        say!("Assets with an applied version: {synced}");
        for (at, source, message) in store
            .recent_errors(5)
            .await
            .map_err(|e| target.failure("reading the errors", e))?
        {
            errors.push(format!("{} {source}: {message}", format_rfc3339_ms(at)));
        }
    }
    if depth.dead_letters > 0 {
        let letters = admin
            .dead_letters(5)
            .await
            .map_err(|e| target.failure("listing dead letters", e))?;
        for l in letters.iter().rev() {
            errors.push(format!(
                "{} dead letter {}: {}",
                l.parked_at_ms.map(format_rfc3339_ms).unwrap_or_default(),
                l.id,
                l.reason
            ));
        }
    }
    if errors.is_empty() {
        say!("Last errors: none");
    } else {
        say!("Last errors:");
        for e in errors {
            say!("  {e}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `dam-sync dlq list`.
pub async fn dlq_list(backend: &Backend, limit: usize, bodies: bool) -> Result<ExitCode, Failure> {
    let target = target(backend, false).await?;
    let letters = target
        .admin()
        .dead_letters(limit)
        .await
        .map_err(|e| target.failure("listing dead letters", e))?;
    if letters.is_empty() {
        say!("No dead letters in {}.", target.admin().backend());
        return Ok(ExitCode::SUCCESS);
    }
    for l in &letters {
        let asset = serde_json::from_str::<serde_json::Value>(&l.body)
            .ok()
            .and_then(|v| v["asset_id"].as_str().map(str::to_owned))
            .map(|a| format!(" asset {a}"))
            .unwrap_or_default();
        say!(
            "{}{asset}{}: {}",
            l.id,
            l.parked_at_ms
                .map(|t| format!(" parked {}", format_rfc3339_ms(t)))
                .unwrap_or_default(),
            l.reason
        );
        if bodies {
            say!("  body: {}", l.body);
        }
    }
    say!(
        "{} dead letter(s). Replay with `dam-sync dlq replay --id ID` or `--all`.",
        letters.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `dam-sync dlq replay`.
pub async fn dlq_replay(backend: &Backend, ids: Option<Vec<String>>) -> Result<ExitCode, Failure> {
    let target = target(backend, false).await?;
    let replayed = target
        .admin()
        .replay(ids.as_deref())
        .await
        .map_err(|e| target.failure("replaying dead letters", e))?;
    for id in &replayed.replayed {
        say!("replayed {id}");
    }
    for id in &replayed.not_found {
        say!("not found {id} (see `dam-sync dlq list` for the ids)");
    }
    say!(
        "{} message(s) back on the queue of {}.",
        replayed.replayed.len(),
        target.admin().backend()
    );
    Ok(if replayed.not_found.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Where a backfill queues, keeps its cursor and reads applied versions, and how to name that
/// backend.
type Ports = (
    Arc<dyn ChangeQueue>,
    Arc<dyn CursorStore>,
    Arc<dyn LeaseStore>,
    Arc<dyn AssetStateStore>,
    String,
);

/// `dam-sync backfill`.
pub async fn backfill(
    path: &Path,
    aws: bool,
    max_runs: u32,
    progress: bool,
) -> Result<ExitCode, Failure> {
    let config = Config::load(path).map_err(|e| Failure::input(e.to_string()))?;
    // The two groups backfill reads, their problems reported together.
    let (source, settings) = match (config.source(), config.poller()) {
        (Ok(source), Ok(settings)) => (source, settings),
        (source, settings) => {
            let mut problems = source.err().map(|e| e.problems).unwrap_or_default();
            problems.extend(settings.err().map(|e| e.problems).unwrap_or_default());
            let all = crate::config::ConfigError {
                file: config.file.clone(),
                problems,
            };
            return Err(Failure::input(all.to_string()));
        }
    };
    let (queue, cursors, leases, states, backend): Ports = if aws {
        let get = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Failure::input(format!("--aws needs {name} to be set")))
        };
        let (queue_url, table) = (get("QUEUE_URL")?, get("TABLE_NAME")?);
        let sdk = aws_config().await;
        let store = Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            table.clone(),
        ));
        (
            Arc::new(SqsChangeQueue::new(
                aws_sdk_sqs::Client::new(&sdk),
                queue_url.clone(),
            )),
            store.clone(),
            store.clone(),
            store,
            format!("SQS queue {queue_url} and DynamoDB table {table}"),
        )
    } else {
        let store = Arc::new(
            SqliteStore::open(config.store_path()).map_err(|e| Failure::input(e.to_string()))?,
        );
        let name = format!("SQLite store {}", store.path().display());
        (store.clone(), store.clone(), store.clone(), store, name)
    };
    let poller = Poller::new(source, queue, cursors, leases, settings).with_applied_filter(states);
    let bar = if progress {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos} assets queued {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut runs = 0;
    let mut resumed = false;
    let outcome = loop {
        if runs >= max_runs {
            break Err(format!(
                "stopped after {runs} runs; run `dam-sync backfill` again to continue"
            ));
        }
        runs += 1;
        let now = SystemTime::now();
        let report = match poller
            .backfill(now, now + Duration::from_secs(15 * 60))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                break Err(format!(
                    "{e} (queue and cursors: {backend}); progress so far is saved: run \
                     `dam-sync backfill` again to resume"
                ));
            }
        };
        resumed |= runs == 1 && report.resumed;
        bar.set_position(PollMetrics::get(&poller.metrics().events_enqueued));
        bar.set_message(format!("({} DAM pages)", report.pages));
        match report.stop {
            StopReason::Complete => break Ok(()),
            StopReason::Budget | StopReason::Deadline => continue,
            StopReason::RateLimited { retry_after_ms } => {
                let wait = Duration::from_millis(retry_after_ms.unwrap_or(5_000));
                bar.set_message(format!("(DAM rate limit: waiting {wait:?})"));
                tokio::time::sleep(wait).await;
            }
            StopReason::LeaseHeld => {
                break Err(
                    "another backfill holds the lease; wait for it to finish (or for its lease \
                     to expire) and run again"
                        .into(),
                );
            }
            StopReason::CursorConflict => {
                break Err("another writer moved the backfill cursor; run again".into());
            }
            StopReason::Failed => break Err("the run failed; see the log".into()),
        }
    };
    bar.finish_and_clear();
    let queued = PollMetrics::get(&poller.metrics().events_enqueued);
    match outcome {
        Ok(()) => {
            say!(
                "Backfill complete{}: {queued} assets queued on {backend} in {runs} run(s).",
                if resumed { " (resumed)" } else { "" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => Err(Failure::runtime(format!(
            "backfill: {queued} assets queued, then: {why}"
        ))),
    }
}

/// `dam-sync check --config FILE`.
pub async fn check(path: &Path, timeout_secs: u64) -> Result<ExitCode, Failure> {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let config = Config::load(path).map_err(|e| Failure::input(e.to_string()))?;
    let settings = config
        .validate()
        .map_err(|e| Failure::input(e.to_string()))?;
    let (mapping, akeneo, source) = (settings.mapping, settings.akeneo, settings.source);
    let (ingest, poller) = (settings.ingest, settings.poller);
    say!("Mapping {}: valid.", mapping.origin());

    // Both sides are tried whatever the other answers, so one run shows every connection
    // problem.
    let mut unreachable: Vec<String> = Vec::new();
    // DAM: one page of one asset proves the URL and the credentials.
    let dam = config.raw.dam.kind();
    let dam_keys = match dam {
        shared::dam::DamKind::Generic => "[dam] api_url and api_token",
        shared::dam::DamKind::Cloudinary => "[dam] cloud_name, api_key and api_secret",
        shared::dam::DamKind::Bynder => "[dam] portal_url and token",
    };
    match tokio::time::timeout_at(deadline, source.list_changed(None, None, 1).next()).await {
        Err(_) => unreachable.push(format!(
            "DAM ({dam}): no answer within {timeout_secs} s; check {dam_keys} in {}",
            config.file
        )),
        Ok(None | Some(Ok(_))) => say!("DAM ({dam}): reachable, credentials accepted."),
        Ok(Some(Err(e))) => unreachable.push(format!(
            "DAM ({dam}): {e}; check {dam_keys} in {}",
            config.file
        )),
    }

    let client = AkeneoClient::new(akeneo.clone()).map_err(|e| Failure::input(e.to_string()))?;
    match client.authenticate(deadline).await {
        Ok(_) => say!("PIM {}: logged in as {}.", akeneo.base_url, akeneo.username),
        Err(e) => unreachable.push(format!(
            "PIM {}: {e}; check [pim] base_url and the Connection's credentials in {}",
            akeneo.base_url, config.file
        )),
    }
    if !unreachable.is_empty() {
        let mut message = unreachable.join("\n  ");
        if unreachable.len() > 1 {
            message = format!("{} connections failed:\n  {message}", unreachable.len());
        }
        return Err(Failure::runtime(message));
    }
    let mut structures: BTreeMap<String, FamilyStructure> = BTreeMap::new();
    for family in mapping.families() {
        match client.family_structure(family, deadline).await {
            Ok(Some(s)) => {
                structures.insert(family.to_owned(), (*s).clone());
            }
            Ok(None) => {}
            Err(e) => {
                return Err(Failure::runtime(format!(
                    "PIM {}: reading family {family}: {e}",
                    akeneo.base_url
                )));
            }
        }
    }
    let issues = mapping.validate_against(&structures);
    let errors = issues
        .iter()
        .filter(|i| i.severity == Severity::Error)
        .count();
    for issue in &issues {
        say!("  {issue}");
    }
    say!(
        "Mapping against the PIM: {} error(s), {} other note(s).",
        errors,
        issues.len() - errors
    );

    say!("`dam-sync serve` would:");
    let mut routes: Vec<&str> = Vec::new();
    if ingest.generic.is_some() {
        routes.push("generic");
    }
    if ingest.cloudinary.is_some() {
        routes.push("cloudinary");
    }
    if ingest.bynder.is_some() {
        routes.push("bynder");
    }
    if routes.is_empty() {
        say!("  accept no webhooks (no webhook secret in [dam]); rely on the poller");
    } else {
        for r in routes {
            say!(
                "  accept signed webhooks on http://{}/webhooks/{r}",
                config.raw.server.listen
            );
        }
    }
    let store = config.store_path();
    say!(
        "  keep its queue and state in {} ({})",
        store.display(),
        if store.exists() {
            "exists"
        } else {
            "will be created"
        }
    );
    if config.raw.poller.enabled {
        say!(
            "  poll the {dam} DAM every {} s (lookback {} s, {} assets per page, at most {} pages per run)",
            config.raw.poller.interval_secs,
            poller.lookback.as_secs(),
            poller.page_size,
            poller.max_dam_calls
        );
    } else {
        say!("  not poll the DAM ([poller] enabled = false)");
    }
    for family in mapping.families() {
        let on_delete = match mapping.delete_policy(family) {
            DeletePolicy::Delete => "deleted".to_owned(),
            DeletePolicy::Ignore => "kept".to_owned(),
            DeletePolicy::Clear(attrs) => format!("kept with {} cleared", attrs.join(", ")),
        };
        say!(
            "  write mapped assets to family {family} (assets deleted in the DAM are {on_delete} in the PIM)"
        );
    }
    say!(
        "  upsert at most {} assets per PIM call, {} calls at once",
        akeneo.limits.batch_max_items,
        akeneo.limits.max_in_flight
    );
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        say!("Fix the errors above before running `dam-sync serve`.");
        ExitCode::from(1)
    })
}
