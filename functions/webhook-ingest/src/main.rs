//! Lambda entry point: configuration from the environment (and optionally one Secrets
//! Manager secret, read once per cold start), then the HTTP handler. See docs/webhooks.md.

use std::sync::Arc;

use lambda_http::{Error, service_fn};
use shared::dam::bynder::sns::ReqwestSnsClient;
use shared::ingest::IngestService;
use shared::queue::sqs::{Client, SqsChangeQueue};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Info by default, so rejections and their reasons are logged.
    shared::observability::init_logging();

    let aws = shared::https::aws_config_from_env().await;
    let settings = webhook_ingest::load_config(&aws, |name| std::env::var(name).ok()).await?;
    let queue = SqsChangeQueue::new(Client::new(&aws), settings.queue_url);
    let sns = Arc::new(ReqwestSnsClient::new()?);
    let service = Arc::new(IngestService::from_config(
        &settings.ingest,
        Arc::new(queue),
        sns.clone(),
        sns,
    ));

    lambda_http::run(service_fn(move |request| {
        let service = Arc::clone(&service);
        async move { Ok::<_, Error>(webhook_ingest::handle(&service, request).await) }
    }))
    .await
}
