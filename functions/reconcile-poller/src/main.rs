//! `reconcile-poller` Lambda. Thin main: settings and clients are built once per cold start;
//! the poller itself lives in `shared::poller` (docs/poller.md).
//!
//! Trigger: an EventBridge schedule (any payload runs the incremental poll) or a manual
//! invocation with `{"mode":"backfill"}`. The run report is returned as JSON; a failed run
//! returns an error so the Lambda `Errors` metric can alarm on "DAM down for k runs".

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use secrecy::SecretString;
use shared::dam::AssetSource;
use shared::dam::generic::api::{GenericApi, GenericApiSettings};
use shared::poller::{Mode, Poller, PollerSettings};
use shared::queue::sqs::SqsChangeQueue;
use shared::store::dynamodb::DynamoStore;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn required(name: &str) -> Result<String, Error> {
    env(name)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| format!("{name} must be set").into())
}

/// The DAM named by `DAM_KIND` (default `generic`). Only the generic contract is wired so far.
fn dam_source() -> Result<Arc<dyn AssetSource>, Error> {
    match env("DAM_KIND").as_deref().unwrap_or("generic") {
        "generic" => {
            let url = url::Url::parse(&required("GENERIC_DAM_URL")?)
                .map_err(|e| format!("GENERIC_DAM_URL: {e}"))?;
            let token = SecretString::from(required("GENERIC_DAM_TOKEN")?);
            Ok(Arc::new(GenericApi::new(GenericApiSettings::new(
                url, token,
            ))?))
        }
        other => Err(format!("DAM_KIND {other:?} is not supported by the poller yet").into()),
    }
}

/// One invocation: the payload picks the mode, the run report is the answer; the run's
/// metrics go to stdout (EMF).
async fn handle(
    poller: &Poller,
    payload: &serde_json::Value,
    now: SystemTime,
    deadline: SystemTime,
) -> Result<serde_json::Value, Error> {
    let mode = Mode::from_event(payload)?;
    let result = poller.run_mode(mode, now, deadline).await;
    shared::observability::emit_poller(mode, &result, now);
    Ok(serde_json::to_value(result?)?)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::observability::init_logging();
    let settings = PollerSettings::from_lookup(env)?;
    let source = dam_source()?;
    let queue = Arc::new(SqsChangeQueue::from_env(required("QUEUE_URL")?).await);
    let store = Arc::new(DynamoStore::from_env().await?);
    let poller = Arc::new(Poller::new(source, queue, store.clone(), store, settings));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let poller = Arc::clone(&poller);
        async move {
            let deadline = UNIX_EPOCH + Duration::from_millis(event.context.deadline);
            handle(&poller, &event.payload, SystemTime::now(), deadline).await
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use shared::poller::MemorySource;
    use shared::queue::MemoryChangeQueue;
    use shared::store::{CursorStore, MemoryStore};

    use super::*;

    fn rig() -> (Arc<MemorySource>, Arc<MemoryStore>, Poller) {
        let source = Arc::new(MemorySource::default());
        let store = Arc::new(MemoryStore::new());
        let poller = Poller::new(
            source.clone(),
            Arc::new(MemoryChangeQueue::new()),
            store.clone(),
            store.clone(),
            PollerSettings::default(),
        );
        (source, store, poller)
    }

    fn times() -> (SystemTime, SystemTime) {
        let now = SystemTime::now();
        (now, now + Duration::from_secs(600))
    }

    #[tokio::test]
    async fn a_scheduled_event_polls_and_answers_the_report() {
        let (source, store, poller) = rig();
        source.put("a1", 1_000, 1);
        let event = serde_json::json!({ "source": "aws.events", "detail-type": "Scheduled Event" });
        let (now, deadline) = times();
        let answer = handle(&poller, &event, now, deadline).await.unwrap();
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
        let (source, store, poller) = rig();
        source.put("a1", 1_000, 1);
        let (now, deadline) = times();
        let answer = handle(
            &poller,
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
        let (source, _, poller) = rig();
        let (now, deadline) = times();
        let unknown = handle(
            &poller,
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
        let down = handle(&poller, &serde_json::json!({}), now, deadline).await;
        assert!(down.unwrap_err().to_string().contains("DAM listing failed"));
    }
}
