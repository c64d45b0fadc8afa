//! `reconcile-poller` Lambda: its settings and the invocation handler. The poller itself lives
//! in `shared::poller` (docs/poller.md).
//!
//! Trigger: an EventBridge schedule (any payload runs the incremental poll), a manual
//! invocation with `{"mode":"backfill"}`, or the sweep's own schedule with `{"mode":"sweep"}`.
//! The report is returned as JSON; a failed run returns an error so the Lambda `Errors` metric
//! can alarm on "DAM down for k runs".

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use lambda_runtime::Error;
use shared::akeneo::{AkeneoClient, AkeneoConfig};
use shared::dam::AssetSource;
use shared::dam::settings::DamSettings;
use shared::mapping::Mapping;
use shared::poller::{Poller, PollerSettings, SweepPorts, SweepSettings, Sweeper, Task};
use shared::queue::ChangeQueue;
use shared::settings::{self, SettingError};
use shared::store::dynamodb::TABLE_NAME_ENV;
use shared::store::{AssetStateStore, CursorStore, LeaseStore};

/// Everything the function reads at a cold start (after `SECRETS_ARN`, read first), named in
/// docs/settings.md.
#[derive(Debug)]
pub struct Settings {
    pub queue_url: String,
    pub table_name: String,
    pub poller: PollerSettings,
    /// The DAM named by `DAM_KIND`.
    pub dam: DamSettings,
    /// The deletion sweep's settings, when the PIM is configured (`AKENEO_BASE_URL`).
    pub sweep: Option<SweepConfig>,
}

#[derive(Debug)]
pub struct SweepConfig {
    pub pim: AkeneoConfig,
    pub mapping_path: PathBuf,
}

impl Settings {
    /// Reads the settings through `get`; `default_mapping` applies when `MAPPING_PATH` is unset.
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        default_mapping: PathBuf,
    ) -> Result<Self, SettingError> {
        let queue_url = settings::required(&get, "QUEUE_URL", "the change queue's URL")?;
        let table_name = settings::required(&get, TABLE_NAME_ENV, "the state table's name")?;
        let poller = PollerSettings::from_lookup(&get)?;
        let dam = DamSettings::from_lookup(&get)?;
        let sweep = match get("AKENEO_BASE_URL") {
            None => None,
            Some(_) => Some(SweepConfig {
                pim: AkeneoConfig::from_lookup(&get)?,
                mapping_path: Mapping::path_from_lookup(&get, default_mapping),
            }),
        };
        Ok(Settings {
            queue_url,
            table_name,
            poller,
            dam,
            sweep,
        })
    }
}

/// The state ports the poller and the sweep use (one DynamoDB table in production).
pub trait PollerStore: AssetStateStore + CursorStore + LeaseStore {}
impl<T: AssetStateStore + CursorStore + LeaseStore> PollerStore for T {}

/// The poller and, when the PIM is configured, the deletion sweep.
pub struct Tasks {
    pub poller: Poller,
    pub sweeper: Option<Sweeper>,
}

impl Tasks {
    /// Wires the tasks from the settings and the ports.
    pub fn new<S: PollerStore + 'static>(
        settings: Settings,
        queue: Arc<dyn ChangeQueue>,
        store: Arc<S>,
    ) -> Result<Self, Error> {
        let source: Arc<dyn AssetSource> = settings
            .dam
            .source()
            .map_err(|e| e.at(settings.dam.env_origin()))?;
        let poller = Poller::new(
            source.clone(),
            queue.clone(),
            store.clone(),
            store.clone(),
            settings.poller.clone(),
        )
        .with_applied_filter(store.clone());
        let sweeper = match settings.sweep {
            None => None,
            Some(sweep) => {
                let mapping = Mapping::from_path(&sweep.mapping_path)?;
                let pim = AkeneoClient::new(sweep.pim)?;
                let limits = SweepSettings {
                    max_dam_calls: settings.poller.max_dam_calls,
                    deadline_margin: settings.poller.deadline_margin,
                    lease_ttl: settings.poller.lease_ttl,
                    ..SweepSettings::default()
                };
                let ports = SweepPorts {
                    pim: Arc::new(pim),
                    source,
                    states: store.clone(),
                    queue,
                    cursors: store.clone(),
                    leases: store,
                };
                Some(
                    Sweeper::new(ports, Arc::new(mapping), limits)
                        .with_metrics(poller.metrics().clone()),
                )
            }
        };
        Ok(Tasks { poller, sweeper })
    }
}

/// One invocation: the payload picks the task, its report is the answer; a poll's metrics go
/// to stdout (EMF).
pub async fn handle(
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shared::dam::AssetSource;
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

    /// The DAM client the poller would list through, or the error naming the missing setting.
    fn dam_source(get: impl Fn(&str) -> Option<String>) -> Result<Arc<dyn AssetSource>, String> {
        let dam = DamSettings::from_lookup(get).map_err(|e| e.to_string())?;
        dam.source().map_err(|e| e.at(dam.env_origin()).to_string())
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

    #[test]
    fn settings_need_the_queue_and_table_and_read_the_sweep_only_with_the_pim() {
        let base = [
            ("QUEUE_URL", "https://sqs/q"),
            ("TABLE_NAME", "state"),
            ("GENERIC_API_URL", "http://dam/generic"),
            ("GENERIC_API_TOKEN", "t"),
            ("POLL_PAGE_SIZE", "50"),
        ];
        let s = Settings::from_lookup(lookup(&base), "m.toml".into()).unwrap();
        assert_eq!(s.poller.page_size, 50);
        assert!(s.sweep.is_none());
        let err = Settings::from_lookup(lookup(&base[1..]), "m.toml".into()).unwrap_err();
        assert_eq!(err.name(), Some("QUEUE_URL"), "{err}");
        // The state table must be named; a blank value is not a name.
        let mut blank_table = base.to_vec();
        blank_table[1] = ("TABLE_NAME", " ");
        let err = Settings::from_lookup(lookup(&blank_table), "m.toml".into()).unwrap_err();
        assert_eq!(err.name(), Some("TABLE_NAME"), "{err}");
        let mut with_pim = base.to_vec();
        with_pim.extend([
            ("AKENEO_BASE_URL", "https://pim"),
            ("AKENEO_CLIENT_ID", "i"),
            ("AKENEO_CLIENT_SECRET", "s"),
            ("AKENEO_USERNAME", "u"),
            ("AKENEO_PASSWORD", "p"),
            ("MAPPING_PATH", "/opt/m.toml"),
        ]);
        let s = Settings::from_lookup(lookup(&with_pim), "m.toml".into()).unwrap();
        let sweep = s.sweep.unwrap();
        assert_eq!(sweep.mapping_path, PathBuf::from("/opt/m.toml"));
        assert_eq!(sweep.pim.client_id, "i");
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
