//! `asset-consumer` Lambda. Thin main: settings and clients are built once per cold start; the
//! handler lives in the crate's library, the pipeline in `shared::consumer` (docs/consumer.md).

use std::sync::Arc;

use asset_consumer::{Settings, deadline_instant, handle};
use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use shared::akeneo::AkeneoClient;
use shared::consumer::Consumer;
use shared::mapping::Mapping;
use shared::queue::sqs::SqsDeadLetters;
use shared::secrets::SecretSettings;
use shared::store::dynamodb::{DynamoStore, DynamoStructureStore};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::observability::init_logging();
    // Credentials come from the secrets named by SECRETS_ARN, the rest from the environment.
    let aws = shared::https::aws_config_from_env().await;
    let env = |name: &str| std::env::var(name).ok();
    let secrets = SecretSettings::load(&aws, env).await?;
    let settings = Settings::from_lookup(|n| secrets.lookup(env, n), Mapping::default_path())?;
    let mapping = Mapping::from_path(&settings.mapping_path)?;
    let store = Arc::new(DynamoStore::from_config(&aws, &settings.table_name));
    // The structure cache is shared by every instance through the state table.
    let structures = DynamoStructureStore::new(&store, settings.akeneo.limits.structure_ttl);
    let pim = AkeneoClient::with_structure_store(settings.akeneo, Arc::new(structures))?;
    let dead_letters = SqsDeadLetters::from_config(&aws, settings.dlq_url);
    let consumer = Consumer::new(
        store.clone(),
        Arc::new(mapping),
        Arc::new(pim),
        Arc::new(dead_letters),
    )
    .with_settings(settings.tuning)
    // Concurrent invocations may hold versions of one asset (SQS duplicates, webhook + poll).
    .with_asset_locks(store);
    let consumer = Arc::new(
        settings
            .sources
            .into_iter()
            .fold(consumer, Consumer::with_source),
    );

    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let consumer = Arc::clone(&consumer);
        async move {
            let deadline = deadline_instant(event.context.deadline());
            Ok::<_, Error>(handle(&consumer, event.payload, deadline).await)
        }
    }))
    .await
}
