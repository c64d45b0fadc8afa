//! Lambda entry point: configuration from the environment (and optionally one Secrets
//! Manager secret, read once per cold start), then the HTTP handler. See docs/webhooks.md.

use std::sync::Arc;

use lambda_http::{Error, service_fn};
use shared::dam::bynder::sns::ReqwestSnsClient;
use shared::ingest::{IngestConfig, IngestService, env};
use shared::queue::sqs::SqsChangeQueue;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_current_span(false)
        .without_time()
        .init();

    let aws = aws_config::load_from_env().await;
    let secret = match std::env::var(env::SECRETS_ARN)
        .ok()
        .filter(|arn| !arn.is_empty())
    {
        Some(arn) => Some(read_secret(&aws, &arn).await?),
        None => None,
    };
    let config = IngestConfig::from_lookup(|name| {
        webhook_ingest::lookup(secret.as_ref(), |n| std::env::var(n).ok(), name)
    })?;
    let queue = SqsChangeQueue::new(aws_sdk_sqs_client(&aws), config.queue_url.clone());
    let sns = Arc::new(ReqwestSnsClient::new()?);
    let service = Arc::new(IngestService::from_config(
        &config,
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

fn aws_sdk_sqs_client(aws: &aws_config::SdkConfig) -> shared::queue::sqs::Client {
    shared::queue::sqs::Client::new(aws)
}

async fn read_secret(
    aws: &aws_config::SdkConfig,
    arn: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    let output = aws_sdk_secretsmanager::Client::new(aws)
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| {
            format!(
                "reading {arn}: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
            )
        })?;
    let text = output
        .secret_string()
        .ok_or("the secret has no SecretString")?;
    Ok(
        serde_json::from_str(text)
            .map_err(|e| format!("secret {arn} is not a JSON object: {e}"))?,
    )
}
