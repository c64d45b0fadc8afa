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

    let aws = aws_config::load_from_env().await;
    let config = webhook_ingest::load_config(&aws, |name| std::env::var(name).ok()).await?;
    let queue = SqsChangeQueue::new(Client::new(&aws), config.queue_url.clone());
    let sns = Arc::new(ReqwestSnsClient::new()?);
    let service = Arc::new(IngestService::from_config(
        &config,
        Arc::new(queue),
        sns.clone(),
        sns,
    ));

    lambda_http::run(service_fn(move |request| {
        let service = Arc::clone(&service);
        async move {
            let response = webhook_ingest::respond(&service, request).await;
            shared::observability::emit_ingest(&response);
            Ok::<_, Error>(webhook_ingest::to_http(response))
        }
    }))
    .await
}
