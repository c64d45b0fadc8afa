//! `reconcile-poller` Lambda. Thin main: settings and clients are built once per cold start;
//! the poller itself lives in `shared::poller` (docs/poller.md).
//!
//! Trigger: an EventBridge schedule (any payload runs the incremental poll) or a manual
//! invocation with `{"mode":"backfill"}`. The run report is returned as JSON; a failed run
//! returns an error so the Lambda `Errors` metric can alarm on "DAM down for k runs".

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Error, LambdaEvent, service_fn, tracing};
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

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let settings = PollerSettings::from_lookup(env)?;
    let source = dam_source()?;
    let queue = Arc::new(SqsChangeQueue::from_env(required("QUEUE_URL")?).await);
    let store = Arc::new(DynamoStore::from_env().await?);
    let poller = Arc::new(Poller::new(source, queue, store.clone(), store, settings));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let poller = Arc::clone(&poller);
        async move {
            let mode = Mode::from_event(&event.payload)?;
            let now = SystemTime::now();
            let deadline = UNIX_EPOCH + Duration::from_millis(event.context.deadline);
            let report = poller.run_mode(mode, now, deadline).await?;
            Ok::<_, Error>(serde_json::to_value(report)?)
        }
    }))
    .await
}
