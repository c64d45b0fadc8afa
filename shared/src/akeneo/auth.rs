//! OAuth for an Akeneo Connection: password grant, refresh before expiry, re-login when the
//! refresh token is refused. One token per process, fetched by one task at a time.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::config::AkeneoConfig;
use super::error::AkeneoError;
use super::transport::{Call, Payload, Transport};

const TOKEN_ROUTE: &str = "POST /api/oauth/v1/token";

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    /// Seconds; Akeneo's default is 3600.
    #[serde(default)]
    expires_in: Option<u64>,
}

struct Token {
    access: SecretString,
    /// When to stop using it: expiry minus the refresh margin.
    renew_at: Instant,
    generation: u64,
}

#[derive(Default)]
struct State {
    token: Option<Token>,
    refresh: Option<SecretString>,
    generation: u64,
}

/// A bearer token and the generation that identifies it (to invalidate only that one).
pub(crate) struct Bearer {
    pub token: SecretString,
    pub generation: u64,
}

pub(crate) struct Authenticator {
    token_url: url::Url,
    client_id: String,
    client_secret: SecretString,
    username: String,
    password: SecretString,
    margin: Duration,
    state: Mutex<State>,
}

impl Authenticator {
    pub fn new(config: &AkeneoConfig) -> Result<Self, AkeneoError> {
        let token_url = config
            .base_url
            .join("api/oauth/v1/token")
            .map_err(|e| AkeneoError::Protocol(format!("cannot build the token URL: {e}")))?;
        Ok(Authenticator {
            token_url,
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            username: config.username.clone(),
            password: config.password.clone(),
            margin: config.limits.token_refresh_margin,
            state: Mutex::new(State::default()),
        })
    }

    /// A valid token: the cached one, a refreshed one, or a fresh login. Callers queue on the
    /// lock, so an expiring token is renewed once, not once per task.
    pub async fn bearer(
        &self,
        transport: &Transport,
        deadline: Instant,
    ) -> Result<Bearer, AkeneoError> {
        let mut state = self.state.lock().await;
        if let Some(token) = &state.token
            && Instant::now() < token.renew_at
        {
            return Ok(Bearer {
                token: token.access.clone(),
                generation: token.generation,
            });
        }
        let response = match state.refresh.take() {
            Some(refresh) => match self.refresh(transport, &refresh, deadline).await {
                Ok(r) => r,
                // Akeneo answers 422 "Refresh token is invalid or has expired": log in again.
                Err(AkeneoError::Credentials(reason)) => {
                    tracing::info!(%reason, "PIM refused the refresh token; logging in again.");
                    self.login(transport, deadline).await?
                }
                Err(e) => {
                    state.refresh = Some(refresh);
                    return Err(e);
                }
            },
            None => self.login(transport, deadline).await?,
        };
        state.generation += 1;
        let lifetime = Duration::from_secs(response.expires_in.unwrap_or(3600));
        // Renew ahead of expiry, but never spend more than a quarter of a short token's life.
        let margin = self.margin.min(lifetime / 4);
        let token = Token {
            access: SecretString::from(response.access_token),
            renew_at: Instant::now() + lifetime - margin,
            generation: state.generation,
        };
        let bearer = Bearer {
            token: token.access.clone(),
            generation: token.generation,
        };
        state.token = Some(token);
        state.refresh = response.refresh_token.map(SecretString::from);
        Ok(bearer)
    }

    /// Drops the token that a 401 rejected, unless another task already replaced it.
    pub async fn invalidate(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state
            .token
            .as_ref()
            .is_some_and(|t| t.generation == generation)
        {
            state.token = None;
        }
    }

    async fn login(
        &self,
        transport: &Transport,
        deadline: Instant,
    ) -> Result<TokenResponse, AkeneoError> {
        let body = serde_json::json!({
            "grant_type": "password",
            "username": self.username,
            "password": self.password.expose_secret(),
        });
        self.grant(transport, body, deadline).await
    }

    async fn refresh(
        &self,
        transport: &Transport,
        refresh: &SecretString,
        deadline: Instant,
    ) -> Result<TokenResponse, AkeneoError> {
        let body = serde_json::json!({
            "grant_type": "refresh_token",
            "refresh_token": refresh.expose_secret(),
        });
        self.grant(transport, body, deadline).await
    }

    async fn grant(
        &self,
        transport: &Transport,
        body: serde_json::Value,
        deadline: Instant,
    ) -> Result<TokenResponse, AkeneoError> {
        let call = Call {
            method: Method::POST,
            url: self.token_url.clone(),
            route: TOKEN_ROUTE,
            payload: Payload::Json(Bytes::from(body.to_string())),
            basic_auth: Some((self.client_id.clone(), self.client_secret.clone())),
        };
        let reply = transport.execute(&call, None, deadline).await?;
        match reply.status {
            StatusCode::OK => serde_json::from_slice(&reply.body).map_err(|e| {
                AkeneoError::Protocol(format!("token response is not the documented JSON: {e}"))
            }),
            // Akeneo answers every credential problem with 422 (wrong client, user, password,
            // refused grant); 400/401/403 are treated the same way.
            StatusCode::UNPROCESSABLE_ENTITY
            | StatusCode::BAD_REQUEST
            | StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN => Err(AkeneoError::Credentials(reply.message())),
            _ => Err(reply.into_error(TOKEN_ROUTE)),
        }
    }
}
