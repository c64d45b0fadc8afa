//! `reconcile-poller` Lambda. Thin main: settings and clients are built once per cold start;
//! the handler lives in the crate's library, the poller in `shared::poller` (docs/poller.md).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use reconcile_poller::{Settings, Tasks, handle};
use shared::mapping::Mapping;
use shared::queue::sqs::SqsChangeQueue;
use shared::secrets::SecretSettings;
use shared::store::dynamodb::DynamoStore;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::observability::init_logging();
    // Credentials come from the secrets named by SECRETS_ARN, the rest from the environment.
    let aws = shared::https::aws_config_from_env().await;
    let env = |name: &str| std::env::var(name).ok();
    let secrets = SecretSettings::load(&aws, env).await?;
    let settings = Settings::from_lookup(|n| secrets.lookup(env, n), Mapping::default_path())?;
    let queue = Arc::new(SqsChangeQueue::from_config(&aws, &settings.queue_url));
    let store = Arc::new(DynamoStore::from_config(&aws, &settings.table_name));
    let tasks = Arc::new(Tasks::new(settings, queue, store)?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let tasks = Arc::clone(&tasks);
        async move {
            let deadline = UNIX_EPOCH + Duration::from_millis(event.context.deadline);
            handle(&tasks, &event.payload, SystemTime::now(), deadline).await
        }
    }))
    .await
}
