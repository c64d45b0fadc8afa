//! `webhook-ingest`: API Gateway (HTTP API, payload v2) adapter around
//! [`shared::ingest::IngestService`]. Route: `POST /webhooks/{cloudinary|bynder|generic}`.

use std::time::SystemTime;

use lambda_http::http::HeaderValue;
use lambda_http::http::header::CONTENT_TYPE;
use lambda_http::{Body, Request, Response};
use shared::ingest::{Bytes, IngestConfig, IngestResponse, IngestService};
use shared::secrets::SecretSettings;
use shared::settings::{self, SettingError};

/// Maps one API Gateway request to the ingest service and back, as the deployed function does
/// (metrics included). lambda_http has already decoded a base64 body (`isBase64Encoded`), so
/// the bytes are exactly what the DAM signed.
pub async fn handle(service: &IngestService, request: Request) -> Response<Body> {
    let response = respond(service, request).await;
    shared::observability::emit_ingest(&response);
    to_http(response)
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

/// Everything the function reads at a cold start, named in docs/settings.md.
#[derive(Debug)]
pub struct Settings {
    pub queue_url: String,
    pub ingest: IngestConfig,
}

impl Settings {
    /// Reads `QUEUE_URL` and the ingest settings through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingError> {
        Ok(Settings {
            queue_url: settings::required(&get, "QUEUE_URL", "the change queue's URL")?,
            ingest: IngestConfig::from_lookup(&get)?,
        })
    }
}

/// The function's settings: the environment (`env`), overlaid by the JSON secrets named by
/// `SECRETS_ARN` when that is set. Called once per cold start.
pub async fn load_config(
    aws: &aws_config::SdkConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Settings, String> {
    let secrets = SecretSettings::load(aws, &env).await?;
    Settings::from_lookup(|name| secrets.lookup(&env, name)).map_err(|e| e.to_string())
}
