use std::time::Duration;

use akeneo_sim::{AkeneoSim, SimConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

const FAMILIES: &str = "/api/rest/v1/asset-families";

async fn token_error(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 422);
    body["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn password_grant_issues_a_bearer_token_that_opens_the_api() {
    let sim = AkeneoSim::start(SimConfig::default()).await.unwrap();
    let http = http();
    let resp = token_request(
        &http,
        &sim.base_url(),
        json!({"grant_type": "password", "username": "sim_user", "password": "sim_password"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["token_type"], "bearer");
    assert!(body["scope"].is_null());
    assert_ne!(body["access_token"], body["refresh_token"]);
    let families = http
        .get(format!("{}{FAMILIES}", sim.base_url()))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(families.status(), StatusCode::OK);
    assert_eq!(sim.stats().tokens_issued_password, 1);
}

#[tokio::test]
async fn password_grant_accepts_a_form_body() {
    let sim = AkeneoSim::start(SimConfig::default()).await.unwrap();
    let resp = http()
        .post(format!("{}{TOKEN}", sim.base_url()))
        .basic_auth("sim_client", Some("sim_secret"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("grant_type=password&username=sim_user&password=sim_password")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn token_failures_are_422_with_akeneo_messages() {
    let sim = AkeneoSim::start(SimConfig::default()).await.unwrap();
    let (http, base) = (http(), sim.base_url());
    let url = format!("{base}{TOKEN}");
    let password =
        json!({"grant_type": "password", "username": "sim_user", "password": "sim_password"});

    let missing_grant = token_request(&http, &base, json!({"username": "sim_user"})).await;
    assert_eq!(
        token_error(missing_grant).await,
        "Parameter \"grant_type\", \"username\" or \"password\" is missing, empty or invalid"
    );
    let missing_password = token_request(
        &http,
        &base,
        json!({"grant_type": "password", "username": "sim_user"}),
    )
    .await;
    assert_eq!(
        token_error(missing_password).await,
        "Parameter \"grant_type\", \"username\" or \"password\" is missing, empty or invalid"
    );
    let invalid_client =
        "Parameter \"client_id\" is missing or does not match any client, or secret is invalid";
    let bad_secret = http
        .post(&url)
        .basic_auth("sim_client", Some("wrong"))
        .json(&password)
        .send()
        .await
        .unwrap();
    assert_eq!(token_error(bad_secret).await, invalid_client);
    let no_basic = http.post(&url).json(&password).send().await.unwrap();
    assert_eq!(token_error(no_basic).await, invalid_client);
    let bad_user = token_request(
        &http,
        &base,
        json!({"grant_type": "password", "username": "sim_user", "password": "nope"}),
    )
    .await;
    assert_eq!(
        token_error(bad_user).await,
        "No user found for the given username and password"
    );
    let other_grant =
        token_request(&http, &base, json!({"grant_type": "client_credentials"})).await;
    assert_eq!(
        token_error(other_grant).await,
        "This grant type is not authorized for this client"
    );
    // The second bundled client may only use the password grant.
    let restricted = http
        .post(&url)
        .basic_auth("sim_password_only", Some("sim_secret_2"))
        .json(&json!({"grant_type": "refresh_token", "refresh_token": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        token_error(restricted).await,
        "This grant type is not authorized for this client"
    );
    let refresh_missing = token_request(&http, &base, json!({"grant_type": "refresh_token"})).await;
    assert_eq!(
        token_error(refresh_missing).await,
        "Parameter \"grant_type\" or \"refresh_token\" is missing or empty"
    );
    let refresh_unknown = token_request(
        &http,
        &base,
        json!({"grant_type": "refresh_token", "refresh_token": "nope"}),
    )
    .await;
    assert_eq!(
        token_error(refresh_unknown).await,
        "Refresh token is invalid or has expired"
    );
    assert_eq!(sim.stats().tokens_issued_password, 0);
}

#[tokio::test]
async fn token_body_over_200_bytes_is_refused() {
    let sim = AkeneoSim::start(SimConfig::default()).await.unwrap();
    let http = http();
    let body = |pad: usize| {
        let mut s =
            r#"{"grant_type":"password","username":"sim_user","password":"sim_password","x":""}"#
                .to_string();
        s.insert_str(s.len() - 2, &"a".repeat(pad));
        s
    };
    let base_len = body(0).len();
    let send = |b: String| {
        http.post(format!("{}{TOKEN}", sim.base_url()))
            .basic_auth("sim_client", Some("sim_secret"))
            .header("Content-Type", "application/json")
            .body(b)
            .send()
    };
    let exactly_200 = send(body(200 - base_len)).await.unwrap();
    assert_eq!(exactly_200.status(), StatusCode::OK);
    let too_big = send(body(201 - base_len)).await.unwrap();
    assert_eq!(
        token_error(too_big).await,
        "The request content size is too large"
    );
}

#[tokio::test]
async fn refresh_rotates_both_tokens_and_old_refresh_is_refused() {
    let api = start().await;
    let base = api.sim.base_url();
    let refresh = |t: String| {
        let (http, base) = (api.http.clone(), base.clone());
        async move {
            token_request(
                &http,
                &base,
                json!({"grant_type": "refresh_token", "refresh_token": t}),
            )
            .await
        }
    };
    let first = refresh(api.refresh.clone()).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    let (new_access, new_refresh) = (
        first["access_token"].as_str().unwrap().to_string(),
        first["refresh_token"].as_str().unwrap().to_string(),
    );
    assert_ne!(new_access, api.token);
    assert_ne!(new_refresh, api.refresh);
    let reused = refresh(api.refresh.clone()).await;
    assert_eq!(
        token_error(reused).await,
        "Refresh token is invalid or has expired"
    );
    let ok = api
        .http
        .get(api.url(FAMILIES))
        .bearer_auth(&new_access)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(refresh(new_refresh).await.status(), StatusCode::OK);
    let stats = api.sim.stats();
    assert_eq!(
        (stats.tokens_issued_password, stats.tokens_issued_refresh),
        (1, 2)
    );
}

#[tokio::test]
async fn revoked_refresh_tokens_force_a_password_login() {
    let api = start().await;
    api.sim.revoke_refresh_tokens();
    let resp = token_request(
        &api.http,
        &api.sim.base_url(),
        json!({"grant_type": "refresh_token", "refresh_token": api.refresh}),
    )
    .await;
    assert_eq!(
        token_error(resp).await,
        "Refresh token is invalid or has expired"
    );
    let (fresh, _) = login(&api.http, &api.sim.base_url()).await;
    assert!(!fresh.is_empty());
}

async fn message_401(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 401);
    body["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn missing_and_unknown_bearer_tokens_get_401() {
    let api = start().await;
    let missing = api.http.get(api.url(FAMILIES)).send().await.unwrap();
    assert_eq!(message_401(missing).await, "Authentication is required");
    let unknown = api
        .http
        .get(api.url(FAMILIES))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(
        message_401(unknown).await,
        "The access token provided is invalid."
    );
    assert_eq!(api.sim.stats().unauthorized_401, 2);
}

#[tokio::test]
async fn tokens_expire_after_their_ttl() {
    let config = SimConfig {
        token_ttl: Duration::from_millis(1000),
        ..SimConfig::default()
    };
    let api = start_with(config).await;
    assert_eq!(api.get(FAMILIES).await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        message_401(api.get(FAMILIES).await).await,
        "The access token provided has expired."
    );
}

#[tokio::test]
async fn expire_all_tokens_expires_every_issued_token_at_once() {
    let api = start().await;
    let (second, _) = login(&api.http, &api.sim.base_url()).await;
    api.sim.expire_all_tokens();
    assert_eq!(
        message_401(api.get(FAMILIES).await).await,
        "The access token provided has expired."
    );
    let other = api
        .http
        .get(api.url(FAMILIES))
        .bearer_auth(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(
        message_401(other).await,
        "The access token provided has expired."
    );
    // A refresh after expiry gives a working token.
    let resp = token_request(
        &api.http,
        &api.sim.base_url(),
        json!({"grant_type": "refresh_token", "refresh_token": api.refresh}),
    )
    .await;
    let body: Value = resp.json().await.unwrap();
    let fresh = body["access_token"].as_str().unwrap();
    let ok = api
        .http
        .get(api.url(FAMILIES))
        .bearer_auth(fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}
