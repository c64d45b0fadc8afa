//! `reconcile-poller` Lambda. Thin main: settings and clients are built once per cold start;
//! the poller itself lives in `shared::poller` (docs/poller.md).
//!
//! Trigger: an EventBridge schedule (any payload runs the incremental poll), a manual
//! invocation with `{"mode":"backfill"}`, or the sweep's own schedule with `{"mode":"sweep"}`.
//! The report is returned as JSON; a failed run returns an error so the Lambda `Errors` metric
//! can alarm on "DAM down for k runs".

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use secrecy::SecretString;
use shared::akeneo::{AkeneoClient, AkeneoConfig};
use shared::dam::AssetSource;
use shared::dam::bynder::api::{BynderApi, BynderApiSettings};
use shared::dam::cloudinary::api::{CloudinaryApi, CloudinaryApiSettings};
use shared::dam::generic::api::{GenericApi, GenericApiSettings};
use shared::mapping::Mapping;
use shared::poller::{Poller, PollerSettings, SweepPorts, SweepSettings, Sweeper, Task};
use shared::queue::sqs::SqsChangeQueue;
use shared::secrets::SecretSettings;
use shared::store::dynamodb::DynamoStore;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn required(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<String, String> {
    get(name)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| format!("{name} must be set"))
}

fn url(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<url::Url, String> {
    url::Url::parse(&required(get, name)?).map_err(|e| format!("{name}: {e}"))
}

/// The DAM named by `DAM_KIND` (`generic`, the default, `cloudinary` or `bynder`), with the
/// same variables as the consumer. The rate-limit guards live in the adapters: Bynder's
/// client-side budget of 4,500 requests per 5 minutes, Cloudinary's `RateLimited` with the
/// wait until its hourly reset, plus `CLOUDINARY_POLL_RESERVE`: the poller stops while the
/// Admin API budget left is at or below it, keeping that much for the consumer's fetches.
fn dam_source(get: impl Fn(&str) -> Option<String>) -> Result<Arc<dyn AssetSource>, String> {
    let kind = get("DAM_KIND").unwrap_or_else(|| "generic".into());
    match kind.trim() {
        "generic" => {
            // `GENERIC_DAM_*` are the names of earlier releases.
            let get_either = |name: &str| {
                get(name).or_else(|| get(&name.replace("GENERIC_API_", "GENERIC_DAM_")))
            };
            let settings = GenericApiSettings::new(
                url(&get_either, "GENERIC_API_URL")?,
                SecretString::from(required(&get_either, "GENERIC_API_TOKEN")?),
            );
            Ok(Arc::new(
                GenericApi::new(settings).map_err(|e| e.to_string())?,
            ))
        }
        "cloudinary" => {
            let mut settings = CloudinaryApiSettings::new(
                required(&get, "CLOUDINARY_CLOUD_NAME")?,
                required(&get, "CLOUDINARY_API_KEY")?,
                SecretString::from(required(&get, "CLOUDINARY_API_SECRET")?),
            );
            if get("CLOUDINARY_API_BASE").is_some() {
                settings.api_base = url(&get, "CLOUDINARY_API_BASE")?;
            }
            settings.min_remaining = match get("CLOUDINARY_POLL_RESERVE") {
                None => DEFAULT_CLOUDINARY_RESERVE,
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|e| format!("CLOUDINARY_POLL_RESERVE {v:?}: {e}"))?,
            };
            Ok(Arc::new(
                CloudinaryApi::new(settings).map_err(|e| e.to_string())?,
            ))
        }
        "bynder" => {
            let settings = BynderApiSettings::new(
                url(&get, "BYNDER_PORTAL_URL")?,
                SecretString::from(required(&get, "BYNDER_TOKEN")?),
            );
            Ok(Arc::new(
                BynderApi::new(settings).map_err(|e| e.to_string())?,
            ))
        }
        other => Err(format!(
            "DAM_KIND {other:?} is not known; use generic, cloudinary or bynder"
        )),
    }
}

/// Admin API calls per hour left to the consumer by default (Cloudinary's free tier has 500).
const DEFAULT_CLOUDINARY_RESERVE: u64 = 100;

/// `mapping.toml` next to the binary unless `MAPPING_PATH` says otherwise (as the consumer).
fn mapping_path(get: &impl Fn(&str) -> Option<String>) -> PathBuf {
    get("MAPPING_PATH").map(PathBuf::from).unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("mapping.toml")))
            .unwrap_or_else(|| PathBuf::from("mapping.toml"))
    })
}

/// The poller and, when the PIM is configured (`AKENEO_BASE_URL`), the deletion sweep.
struct Tasks {
    poller: Poller,
    sweeper: Option<Sweeper>,
}

/// One invocation: the payload picks the task, its report is the answer; a poll's metrics go
/// to stdout (EMF).
async fn handle(
    tasks: &Tasks,
    payload: &serde_json::Value,
    now: SystemTime,
    deadline: SystemTime,
) -> Result<serde_json::Value, Error> {
    match Task::from_event(payload)? {
        Task::Poll(mode) => {
            let result = tasks.poller.run_mode(mode, now, deadline).await;
            shared::observability::emit_poller(mode, &result, now);
            Ok(serde_json::to_value(result?)?)
        }
        Task::Sweep => {
            let sweeper = tasks.sweeper.as_ref().ok_or(
                "the deletion sweep needs the PIM settings (AKENEO_BASE_URL, ...) and a mapping",
            )?;
            let report = sweeper.run(now, deadline).await?;
            Ok(serde_json::to_value(report)?)
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::observability::init_logging();
    // Credentials come from the secrets named by SECRETS_ARN, the rest from the environment.
    let aws = aws_config::load_from_env().await;
    let secrets = SecretSettings::load(&aws, env).await?;
    let get = |name: &str| secrets.lookup(env, name);
    let settings = PollerSettings::from_lookup(get)?;
    let source = dam_source(get)?;
    let queue = Arc::new(SqsChangeQueue::from_env(required(&get, "QUEUE_URL")?).await);
    let store = Arc::new(DynamoStore::from_env().await?);
    let poller = Poller::new(
        source.clone(),
        queue.clone(),
        store.clone(),
        store.clone(),
        settings.clone(),
    )
    .with_applied_filter(store.clone());
    let sweeper = match get("AKENEO_BASE_URL") {
        None => None,
        Some(_) => {
            let mapping = Mapping::from_path(&mapping_path(&get))?;
            let pim = AkeneoClient::new(AkeneoConfig::from_lookup(get)?)?;
            let sweep = SweepSettings {
                max_dam_calls: settings.max_dam_calls,
                deadline_margin: settings.deadline_margin,
                lease_ttl: settings.lease_ttl,
                ..SweepSettings::default()
            };
            Some(
                Sweeper::new(
                    SweepPorts {
                        pim: Arc::new(pim),
                        source,
                        states: store.clone(),
                        queue,
                        cursors: store.clone(),
                        leases: store,
                    },
                    Arc::new(mapping),
                    sweep,
                )
                .with_metrics(poller.metrics().clone()),
            )
        }
    };
    let tasks = Arc::new(Tasks { poller, sweeper });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let tasks = Arc::clone(&tasks);
        async move {
            let deadline = UNIX_EPOCH + Duration::from_millis(event.context.deadline);
            handle(&tasks, &event.payload, SystemTime::now(), deadline).await
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use shared::store::CursorStore;
    use shared::testing::{MemoryChangeQueue, MemorySource, MemoryStore};

    use super::*;

    fn rig() -> (Arc<MemorySource>, Arc<MemoryStore>, Tasks) {
        let source = Arc::new(MemorySource::default());
        let store = Arc::new(MemoryStore::new());
        let poller = Poller::new(
            source.clone(),
            Arc::new(MemoryChangeQueue::new()),
            store.clone(),
            store.clone(),
            PollerSettings::default(),
        );
        (
            source,
            store,
            Tasks {
                poller,
                sweeper: None,
            },
        )
    }

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_dam_kind_picks_the_adapter_and_names_missing_settings() {
        use shared::dam::DamKind;
        let generic = dam_source(lookup(&[
            ("GENERIC_API_URL", "http://dam/generic"),
            ("GENERIC_API_TOKEN", "t"),
        ]))
        .unwrap();
        assert_eq!(generic.dam(), DamKind::Generic);
        let legacy = dam_source(lookup(&[
            ("GENERIC_DAM_URL", "http://dam/generic"),
            ("GENERIC_DAM_TOKEN", "t"),
        ]))
        .unwrap();
        assert_eq!(legacy.dam(), DamKind::Generic);
        let cloudinary = dam_source(lookup(&[
            ("DAM_KIND", "cloudinary"),
            ("CLOUDINARY_CLOUD_NAME", "acme"),
            ("CLOUDINARY_API_KEY", "k"),
            ("CLOUDINARY_API_SECRET", "s"),
        ]))
        .unwrap();
        assert_eq!(cloudinary.dam(), DamKind::Cloudinary);
        let bynder = dam_source(lookup(&[
            ("DAM_KIND", "bynder"),
            ("BYNDER_PORTAL_URL", "https://acme.bynder.com"),
            ("BYNDER_TOKEN", "b"),
        ]))
        .unwrap();
        assert_eq!(bynder.dam(), DamKind::Bynder);

        let err = dam_source(lookup(&[("DAM_KIND", "bynder")])).err().unwrap();
        assert!(err.contains("BYNDER_PORTAL_URL"), "{err}");
        let err = dam_source(lookup(&[
            ("DAM_KIND", "cloudinary"),
            ("CLOUDINARY_CLOUD_NAME", "acme"),
            ("CLOUDINARY_API_KEY", "k"),
            ("CLOUDINARY_API_SECRET", "s"),
            ("CLOUDINARY_POLL_RESERVE", "lots"),
        ]))
        .err()
        .unwrap();
        assert!(err.contains("CLOUDINARY_POLL_RESERVE"), "{err}");
        let err = dam_source(lookup(&[("DAM_KIND", "widen")])).err().unwrap();
        assert!(err.contains("widen"), "{err}");
    }

    #[tokio::test]
    async fn a_sweep_without_pim_settings_says_what_is_missing() {
        let (_, _, tasks) = rig();
        let (now, deadline) = times();
        let err = handle(
            &tasks,
            &serde_json::json!({ "mode": "sweep" }),
            now,
            deadline,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("AKENEO_BASE_URL"), "{err}");
    }

    fn times() -> (SystemTime, SystemTime) {
        let now = SystemTime::now();
        (now, now + Duration::from_secs(600))
    }

    #[tokio::test]
    async fn a_scheduled_event_polls_and_answers_the_report() {
        let (source, store, tasks) = rig();
        source.put("a1", 1_000, 1);
        let event = serde_json::json!({ "source": "aws.events", "detail-type": "Scheduled Event" });
        let (now, deadline) = times();
        let answer = handle(&tasks, &event, now, deadline).await.unwrap();
        assert_eq!(answer["mode"], "incremental");
        assert_eq!(answer["stop"]["reason"], "complete");
        assert_eq!(answer["events_enqueued"], 1);
        assert_eq!(
            store.get("reconcile").await.unwrap().unwrap().position_ms,
            1_000
        );
    }

    #[tokio::test]
    async fn a_backfill_payload_runs_the_backfill_cursor() {
        let (source, store, tasks) = rig();
        source.put("a1", 1_000, 1);
        let (now, deadline) = times();
        let answer = handle(
            &tasks,
            &serde_json::json!({ "mode": "backfill" }),
            now,
            deadline,
        )
        .await
        .unwrap();
        assert_eq!(answer["mode"], "backfill");
        assert!(store.get("backfill").await.unwrap().is_some());
        assert_eq!(store.get("reconcile").await.unwrap(), None);
    }

    #[tokio::test]
    async fn failures_and_unknown_modes_are_errors() {
        let (source, _, tasks) = rig();
        let (now, deadline) = times();
        let unknown = handle(
            &tasks,
            &serde_json::json!({ "mode": "full" }),
            now,
            deadline,
        )
        .await;
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .contains("unknown poller mode")
        );
        source.set_down(true);
        let down = handle(&tasks, &serde_json::json!({}), now, deadline).await;
        assert!(down.unwrap_err().to_string().contains("DAM listing failed"));
    }
}
