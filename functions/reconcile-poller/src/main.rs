//! `reconcile-poller` Lambda. Thin main: settings and clients are built once per cold start; the
//! pipeline itself lives in `shared`.
//!
//! Not functional yet: this release ships the PIM client it will use. The handler refuses
//! every event with an error, so nothing is acknowledged (and lost) by mistake.

use lambda_runtime::{Error, LambdaEvent, service_fn, tracing};
use shared::akeneo::{AkeneoClient, AkeneoConfig};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let config = AkeneoConfig::from_env()?;
    let client = AkeneoClient::new(config)?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let _client = client.clone();
        async move {
            tracing::error!(request_id = %event.context.request_id, "Event refused: not implemented in this release.");
            Err::<serde_json::Value, Error>("reconcile-poller is not implemented in this release".into())
        }
    }))
    .await
}
