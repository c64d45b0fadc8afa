//! `webhook-ingest` Lambda. Not functional yet: it answers every call with an error, so no
//! DAM notification is acknowledged without being queued.

use lambda_runtime::{Error, LambdaEvent, service_fn, tracing};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| async move {
        tracing::error!(request_id = %event.context.request_id, "Event refused: not implemented in this release.");
        Err::<serde_json::Value, Error>("webhook-ingest is not implemented in this release".into())
    }))
    .await
}
