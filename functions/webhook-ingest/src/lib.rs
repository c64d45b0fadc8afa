//! `webhook-ingest`: API Gateway (HTTP API, payload v2) adapter around
//! [`shared::ingest::IngestService`]. Route: `POST /webhooks/{cloudinary|bynder|generic}`.

use std::time::SystemTime;

use lambda_http::http::HeaderValue;
use lambda_http::http::header::CONTENT_TYPE;
use lambda_http::{Body, Request, Response};
use shared::ingest::{Bytes, IngestConfig, IngestResponse, IngestService, env as names};

/// Maps one API Gateway request to the ingest service and back. lambda_http has already
/// decoded a base64 body (`isBase64Encoded`), so the bytes are exactly what the DAM signed.
pub async fn handle(service: &IngestService, request: Request) -> Response<Body> {
    to_http(respond(service, request).await)
}

/// The ingest service's answer to one API Gateway request.
pub async fn respond(service: &IngestService, request: Request) -> IngestResponse {
    let received_at = SystemTime::now();
    let (parts, body) = request.into_parts();
    let headers = parts
        .headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let body = match body {
        Body::Empty => Bytes::new(),
        Body::Text(text) => Bytes::from(text),
        Body::Binary(raw) => Bytes::from(raw),
        // `Body` is non-exhaustive; a future variant we cannot read is treated as no body.
        _ => Bytes::new(),
    };
    service
        .handle_http(
            parts.method.as_str(),
            parts.uri.path(),
            headers,
            body,
            received_at,
        )
        .await
}

/// The HTTP response API Gateway returns to the sender.
pub fn to_http(response: IngestResponse) -> Response<Body> {
    let mut out = Response::new(Body::Text(response.body));
    *out.status_mut() = lambda_http::http::StatusCode::from_u16(response.status)
        .unwrap_or(lambda_http::http::StatusCode::INTERNAL_SERVER_ERROR);
    out.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    out
}

/// The function's configuration: the environment (`env`), overlaid by the JSON object in the
/// Secrets Manager secret named by `SECRETS_ARN` when that is set. Called once per cold start.
pub async fn load_config(
    aws: &aws_config::SdkConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<IngestConfig, String> {
    let secret = match env(names::SECRETS_ARN).filter(|arn| !arn.is_empty()) {
        Some(arn) => Some(read_secret(&aws_sdk_secretsmanager::Client::new(aws), &arn).await?),
        None => None,
    };
    IngestConfig::from_lookup(|name| lookup(secret.as_ref(), &env, name)).map_err(|e| e.to_string())
}

/// Reads a secret whose `SecretString` is a JSON object.
pub async fn read_secret(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| {
            format!(
                "reading secret {arn}: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
            )
        })?;
    let text = output
        .secret_string()
        .ok_or_else(|| format!("secret {arn} has no SecretString"))?;
    serde_json::from_str(text).map_err(|e| format!("secret {arn} is not a JSON object: {e}"))
}

/// Looks a setting up in the `SECRETS_ARN` JSON secret first, then in the environment.
pub fn lookup(
    secret: Option<&serde_json::Map<String, serde_json::Value>>,
    env: impl Fn(&str) -> Option<String>,
    name: &str,
) -> Option<String> {
    let from_secret = secret.and_then(|map| match map.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    from_secret.or_else(|| env(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_win_over_environment() {
        let secret: serde_json::Map<_, _> =
            serde_json::from_str(r#"{"CLOUDINARY_API_SECRET":"from-secret","MAX_BODY_BYTES":10}"#)
                .unwrap();
        let env = |name: &str| Some(format!("env-{name}"));
        assert_eq!(
            lookup(Some(&secret), env, "CLOUDINARY_API_SECRET").unwrap(),
            "from-secret"
        );
        assert_eq!(lookup(Some(&secret), env, "MAX_BODY_BYTES").unwrap(), "10");
        assert_eq!(
            lookup(Some(&secret), env, "QUEUE_URL").unwrap(),
            "env-QUEUE_URL"
        );
        assert_eq!(lookup(None, |_| None, "QUEUE_URL"), None);
    }
}
