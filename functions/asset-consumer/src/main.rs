//! `asset-consumer` Lambda. Thin main: settings and clients are built once per cold start; the
//! pipeline lives in `shared::consumer` (docs/consumer.md).

use std::sync::Arc;

use asset_consumer::{Settings, default_mapping_path, process, to_response};
use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use shared::akeneo::{AkeneoClient, AkeneoConfig};
use shared::consumer::{Consumer, ConsumerSettings};
use shared::mapping::Mapping;
use shared::queue::sqs::SqsDeadLetters;
use shared::secrets::SecretSettings;
use shared::store::dynamodb::{DynamoStore, DynamoStructureStore};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::observability::init_logging();
    // Credentials come from the secrets named by SECRETS_ARN, the rest from the environment.
    let aws = aws_config::load_from_env().await;
    let env = |name: &str| std::env::var(name).ok();
    let secrets = SecretSettings::load(&aws, env).await?;
    let get = |name: &str| secrets.lookup(env, name);
    let settings = Settings::from_lookup(get, default_mapping_path())?;
    let mapping = Mapping::from_path(&settings.mapping_path)?;
    let akeneo = AkeneoConfig::from_lookup(get)?;
    let store = DynamoStore::from_env().await?;
    // The structure cache is shared by every instance through the state table.
    let structures = DynamoStructureStore::new(&store, akeneo.limits.structure_ttl);
    let pim = AkeneoClient::with_structure_store(akeneo, Arc::new(structures))?;
    let dead_letters = SqsDeadLetters::from_env(settings.dlq_url.clone()).await;

    let mut tuning = ConsumerSettings::default();
    if let Some(margin) = settings.safety_margin {
        tuning.safety_margin = margin;
    }
    let store = Arc::new(store);
    let mut consumer = Consumer::new(
        store.clone(),
        Arc::new(mapping),
        Arc::new(pim),
        Arc::new(dead_letters),
    )
    .with_settings(tuning)
    // Concurrent invocations may hold versions of one asset (SQS duplicates, webhook + poll).
    .with_asset_locks(store);
    for source in settings.sources {
        consumer = consumer.with_source(source);
    }
    let consumer = Arc::new(consumer);

    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let consumer = Arc::clone(&consumer);
        async move {
            let deadline = asset_consumer::deadline_instant(event.context.deadline());
            let outcome = process(&consumer, event.payload, deadline).await;
            shared::observability::emit_consumer(&outcome);
            Ok::<_, Error>(to_response(&outcome))
        }
    }))
    .await
}
