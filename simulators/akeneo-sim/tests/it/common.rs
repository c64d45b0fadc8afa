use akeneo_sim::{AkeneoSim, Faults, SimConfig, SimHandle};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

pub const ASSETS: &str = "/api/rest/v1/asset-families/packshot/assets";
pub const TOKEN: &str = "/api/oauth/v1/token";

pub struct Api {
    pub sim: SimHandle,
    pub http: Client,
    pub token: String,
    pub refresh: String,
}

/// Faults with no limits at all, for tests that fire requests concurrently.
pub fn unlimited() -> Faults {
    Faults {
        max_in_flight_per_token: None,
        max_in_flight_per_instance: None,
        rate_limit_per_sec: None,
        option_patch_rate_per_sec: None,
        ..Faults::default()
    }
}

pub async fn start() -> Api {
    start_with(SimConfig::default()).await
}

pub async fn start_with(config: SimConfig) -> Api {
    let sim = AkeneoSim::start(config).await.expect("sim starts");
    let http = http();
    let (token, refresh) = login(&http, &sim.base_url()).await;
    Api {
        sim,
        http,
        token,
        refresh,
    }
}

pub async fn token_request(http: &Client, base: &str, body: Value) -> Response {
    http.post(format!("{base}{TOKEN}"))
        .basic_auth("sim_client", Some("sim_secret"))
        .json(&body)
        .send()
        .await
        .expect("token request")
}

pub async fn login(http: &Client, base: &str) -> (String, String) {
    let resp = token_request(
        http,
        base,
        json!({"grant_type": "password", "username": "sim_user", "password": "sim_password"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    (
        body["access_token"].as_str().unwrap().to_string(),
        body["refresh_token"].as_str().unwrap().to_string(),
    )
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    pub async fn get(&self, path: &str) -> Response {
        self.http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET")
    }

    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.get(path).await;
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Response {
        self.http
            .patch(self.url(path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("PATCH")
    }

    pub async fn patch_raw(&self, path: &str, content_type: Option<&str>, body: &str) -> Response {
        let mut req = self
            .http
            .patch(self.url(path))
            .bearer_auth(&self.token)
            .body(body.to_string());
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        req.send().await.expect("PATCH")
    }

    /// Bulk PATCH on `family`; returns the status and the parsed body.
    pub async fn bulk(&self, family: &str, items: Value) -> (StatusCode, Value) {
        let resp = self
            .patch(
                &format!("/api/rest/v1/asset-families/{family}/assets"),
                &items,
            )
            .await;
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Bulk PATCH of one packshot item; returns its per-item result.
    pub async fn upsert_one(&self, item: Value) -> Value {
        let (status, body) = self.bulk("packshot", json!([item])).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body[0].clone()
    }
}

/// Asserts a per-item 422 with `message` and one error on `property` whose message
/// contains `needle`.
pub fn assert_item_error(result: &Value, message: &str, property: &str, needle: &str) {
    assert_eq!(result["status_code"], 422, "{result}");
    assert_eq!(result["message"], message, "{result}");
    let errors = result["errors"].as_array().expect("errors array");
    assert!(
        errors.iter().any(|e| e["property"] == property
            && e["message"].as_str().is_some_and(|m| m.contains(needle))),
        "no error on {property} containing {needle:?}: {result}"
    );
}

pub const INVALID: &str = "The asset has an invalid format.";
pub const RULES: &str = "The asset has data that does not comply with the business rules.";

/// A client for the tests' calls, with rustls' ring provider installed for the process (the
/// workspace builds reqwest without a default provider).
pub fn http() -> Client {
    http_builder().build().unwrap()
}

pub fn http_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
}
