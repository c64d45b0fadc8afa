use std::time::{Duration, Instant};

use akeneo_sim::{Faults, SimConfig};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

const FAMILIES: &str = "/api/rest/v1/asset-families";

fn config(faults: Faults, seed: u64) -> SimConfig {
    SimConfig {
        faults,
        seed,
        ..SimConfig::default()
    }
}

/// Sends 60 API requests; `mixed` varies routes and auth outcomes. Returns the 5xx count.
async fn count_5xx(seed: u64, mixed: bool) -> usize {
    let faults = Faults {
        error_5xx_rate: 0.3,
        ..unlimited()
    };
    let api = start_with(config(faults, seed)).await;
    let mut n = 0;
    for i in 0..60 {
        let resp = match (mixed, i % 3) {
            (true, 0) => api.http.get(api.url(FAMILIES)).send().await.unwrap(),
            (true, 1) => api.get(&format!("{ASSETS}/missing")).await,
            _ => api.get(FAMILIES).await,
        };
        if resp.status().is_server_error() {
            if resp.status() != StatusCode::INTERNAL_SERVER_ERROR {
                // Gateway errors come as HTML, not JSON.
                assert_eq!(resp.headers()["content-type"], "text/html");
            }
            n += 1;
        }
    }
    assert_eq!(api.sim.stats().server_errors_5xx, n as u64);
    n
}

#[tokio::test]
async fn random_5xx_count_depends_only_on_seed_and_call_count() {
    let a = count_5xx(7, false).await;
    let b = count_5xx(7, true).await;
    assert_eq!(
        a, b,
        "same seed, same number of calls, same number of faults"
    );
    assert!(a > 3 && a < 40, "about 30% of 60, got {a}");
}

#[tokio::test]
async fn random_429_sends_retry_after_only_when_configured() {
    let faults = Faults {
        rate_429: 1.0,
        retry_after_secs: Some(7),
        ..unlimited()
    };
    let api = start_with(config(faults.clone(), 1)).await;
    let resp = api.get(FAMILIES).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "7");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 429);
    api.sim.set_faults(Faults {
        retry_after_secs: None,
        ..faults
    });
    let resp = api.get(FAMILIES).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().get("retry-after").is_none());
    assert_eq!(api.sim.stats().throttled_429, 2);
}

#[tokio::test]
async fn random_faults_spare_the_token_route() {
    let faults = Faults {
        error_5xx_rate: 1.0,
        ..unlimited()
    };
    // start_with logs in: it would panic on a fault.
    let api = start_with(config(faults, 3)).await;
    assert!(api.get(FAMILIES).await.status().is_server_error());
    api.sim.set_faults(Faults {
        rate_429: 1.0,
        hang_rate: 1.0,
        ..unlimited()
    });
    login(&api.http, &api.sim.base_url()).await;
    assert_eq!(api.sim.stats().tokens_issued_password, 2);
}

/// Fires `n` concurrent GETs with `token`; returns the statuses and Retry-After headers.
async fn fire(api: &Api, token: &str, n: usize) -> Vec<(u16, Option<String>)> {
    let handles: Vec<_> = (0..n)
        .map(|_| tokio::spawn(api.http.get(api.url(FAMILIES)).bearer_auth(token).send()))
        .collect();
    let mut out = Vec::new();
    for h in handles {
        let resp = h.await.unwrap().unwrap();
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        out.push((resp.status().as_u16(), retry));
    }
    out
}

#[tokio::test]
async fn in_flight_cap_per_token_answers_429_with_retry_after_1() {
    let faults = Faults {
        max_in_flight_per_token: Some(2),
        latency_ms: (500, 500),
        ..unlimited()
    };
    let api = start_with(config(faults, 1)).await;
    let results = fire(&api, &api.token, 6).await;
    let throttled: Vec<_> = results.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!(throttled.len(), 4, "{results:?}");
    assert!(throttled.iter().all(|(_, r)| r.as_deref() == Some("1")));
    assert_eq!(results.iter().filter(|(s, _)| *s == 200).count(), 2);
    let stats = api.sim.stats();
    assert_eq!(stats.max_in_flight_per_token, 6);
    assert_eq!(stats.throttled_429, 4);
}

#[tokio::test]
async fn in_flight_cap_per_instance_spans_tokens() {
    let faults = Faults {
        max_in_flight_per_instance: Some(3),
        latency_ms: (500, 500),
        ..unlimited()
    };
    let api = start_with(config(faults, 1)).await;
    let (other, _) = login(&api.http, &api.sim.base_url()).await;
    let (a, b) = tokio::join!(fire(&api, &api.token, 3), fire(&api, &other, 3));
    let all: Vec<_> = a.into_iter().chain(b).collect();
    assert_eq!(all.iter().filter(|(s, _)| *s == 429).count(), 3, "{all:?}");
    assert_eq!(all.iter().filter(|(s, _)| *s == 200).count(), 3, "{all:?}");
    let stats = api.sim.stats();
    assert_eq!(stats.max_in_flight_instance, 6);
    assert_eq!(stats.max_in_flight_per_token, 3);
}

#[tokio::test]
async fn rate_limit_is_a_token_bucket_per_instance() {
    let faults = Faults {
        rate_limit_per_sec: Some(2),
        rate_limit_burst: 3,
        ..unlimited()
    };
    let api = start_with(config(faults, 1)).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let resp = api.get(FAMILIES).await;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(resp.headers()["retry-after"], "1");
        }
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(&statuses[..3], [200, 200, 200], "{statuses:?}");
    assert!(
        statuses[3..].iter().filter(|s| **s == 429).count() >= 2,
        "{statuses:?}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        api.get(FAMILIES).await.status(),
        StatusCode::OK,
        "bucket refills"
    );
}

#[tokio::test]
async fn latency_applies_to_api_and_token_routes() {
    let faults = Faults {
        latency_ms: (150, 200),
        ..unlimited()
    };
    let api = start_with(config(faults, 1)).await;
    let t = Instant::now();
    assert_eq!(api.get(FAMILIES).await.status(), StatusCode::OK);
    let api_elapsed = t.elapsed();
    let t = Instant::now();
    login(&api.http, &api.sim.base_url()).await;
    let token_elapsed = t.elapsed();
    assert!(api_elapsed >= Duration::from_millis(150), "{api_elapsed:?}");
    assert!(
        token_elapsed >= Duration::from_millis(150),
        "{token_elapsed:?}"
    );
    api.sim.set_faults(unlimited());
    let t = Instant::now();
    api.get(FAMILIES).await;
    assert!(t.elapsed() < Duration::from_millis(150));
}

#[tokio::test]
async fn hung_requests_never_answer_and_free_their_slot_when_the_client_gives_up() {
    let faults = Faults {
        hang_rate: 1.0,
        max_in_flight_per_instance: Some(1),
        ..unlimited()
    };
    let api = start_with(config(faults.clone(), 1)).await;
    let impatient = http_builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let t = Instant::now();
    let err = impatient
        .get(api.url(FAMILIES))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(t.elapsed() >= Duration::from_millis(300));
    api.sim.set_faults(Faults {
        hang_rate: 0.0,
        ..faults
    });
    // The server notices the closed connection and drops the hung request (status 0).
    for _ in 0..30 {
        if api
            .sim
            .stats()
            .calls_with("GET /api/rest/v1/asset-families", 0)
            == 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The instance cap is 1: this only passes if the hung request released its slot.
    assert_eq!(api.get(FAMILIES).await.status(), StatusCode::OK);
    assert_eq!(
        api.sim
            .stats()
            .calls_with("GET /api/rest/v1/asset-families", 0),
        1
    );
}

#[tokio::test]
async fn requests_inside_an_announced_retry_after_window_are_counted() {
    let faults = Faults {
        rate_429: 1.0,
        retry_after_secs: Some(1),
        ..unlimited()
    };
    let api = start_with(config(faults, 1)).await;
    assert_eq!(
        api.get(FAMILIES).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(api.sim.stats().retry_after_violations, 0);
    // Past the 100 ms grace for requests already on the wire.
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.get(FAMILIES).await;
    assert_eq!(api.sim.stats().retry_after_violations, 1);
    api.sim.set_faults(unlimited());
    // A different client id is not concerned by the window.
    let other = http()
        .post(api.url(TOKEN))
        .basic_auth("sim_password_only", Some("sim_secret_2"))
        .json(
            &json!({"grant_type": "password", "username": "sim_user", "password": "sim_password"}),
        )
        .send()
        .await
        .unwrap();
    let other: serde_json::Value = other.json().await.unwrap();
    let ok = api
        .http
        .get(api.url(FAMILIES))
        .bearer_auth(other["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(api.sim.stats().retry_after_violations, 1);
    // The second 429 extended the window to ~1.3 s after the first one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(api.get(FAMILIES).await.status(), StatusCode::OK);
    assert_eq!(api.sim.stats().retry_after_violations, 1);
}

#[tokio::test]
async fn faults_can_be_read_and_changed_at_run_time() {
    let api = start().await;
    assert_eq!(api.sim.faults(), Faults::default());
    let custom = Faults {
        error_5xx_rate: 0.5,
        latency_ms: (1, 2),
        max_in_flight_per_token: None,
        ..Faults::default()
    };
    api.sim.set_faults(custom.clone());
    assert_eq!(api.sim.faults(), custom);
}

#[tokio::test]
async fn shutdown_ends_hung_requests_and_stops_listening() {
    let faults = Faults {
        hang_rate: 1.0,
        ..unlimited()
    };
    let api = start_with(config(faults, 1)).await;
    let hung = tokio::spawn(
        api.http
            .get(api.url(FAMILIES))
            .bearer_auth(&api.token)
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!hung.is_finished());
    api.sim.shutdown();
    let answered = tokio::time::timeout(Duration::from_secs(3), hung).await;
    let resp = answered
        .expect("hung request ends on shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fresh = http();
    assert!(
        fresh.get(api.url(FAMILIES)).send().await.is_err(),
        "listener closed"
    );
}
