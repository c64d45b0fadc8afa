use akeneo_sim::{Faults, Stats};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

const BULK: &str = "PATCH /api/rest/v1/asset-families/{family}/assets";
const SINGLE_GET: &str = "GET /api/rest/v1/asset-families/{family}/assets/{code}";

#[tokio::test]
async fn calls_are_counted_per_route_template_and_status() {
    let api = start().await;
    api.bulk("packshot", json!([{"code": "a"}, {"code": "b"}]))
        .await;
    api.bulk("packshot", json!([{"code": "a"}])).await;
    api.bulk("packshot", Value::Array(vec![json!({"code": "x"}); 101]))
        .await;
    api.get(&format!("{ASSETS}/a")).await;
    api.get(&format!("{ASSETS}/zzz")).await;
    api.http.get(api.url(ASSETS)).send().await.unwrap();

    let s = api.sim.stats();
    assert_eq!(s.calls_with(BULK, 200), 2);
    assert_eq!(s.calls_with(BULK, 413), 1);
    assert_eq!(s.calls_to(BULK), 3);
    assert_eq!(s.calls_with(SINGLE_GET, 200), 1);
    assert_eq!(s.calls_with(SINGLE_GET, 404), 1);
    assert_eq!(
        s.calls_with("GET /api/rest/v1/asset-families/{family}/assets", 401),
        1
    );
    assert_eq!(s.calls_with("POST /api/oauth/v1/token", 200), 1);
    assert_eq!(s.total_calls, 7);
    assert_eq!((s.assets_created, s.assets_updated), (2, 1));
    assert_eq!((s.unauthorized_401, s.too_large_413), (1, 1));
    assert_eq!(s.tokens_issued_password, 1);
    assert!(s.max_in_flight_instance >= 1 && s.max_in_flight_per_token >= 1);

    api.sim.reset_stats();
    assert_eq!(api.sim.stats(), Stats::default());
    // Data survives a stats reset.
    assert_eq!(api.sim.assets("packshot").len(), 2);
}

#[tokio::test]
async fn http_control_routes_mirror_the_in_process_handle() {
    let api = start().await;
    api.upsert_one(json!({"code": "ctl"})).await;
    let http = &api.http;

    let stats: Stats = http
        .get(api.url("/_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats, api.sim.stats(), "control routes are not counted");
    assert_eq!(stats.calls_with(BULK, 200), 1);

    let assets: Vec<Value> = http
        .get(api.url("/_sim/assets/packshot"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(assets, api.sim.assets("packshot"));
    assert_eq!(assets[0]["code"], "ctl");
    let missing = http.get(api.url("/_sim/assets/nope")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let put = http
        .put(api.url("/_sim/faults"))
        .json(&json!({"rate_429": 1.0, "retry_after_secs": null, "latency_ms": [0, 0]}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let expected = Faults {
        rate_429: 1.0,
        retry_after_secs: None,
        ..Faults::default()
    };
    assert_eq!(api.sim.faults(), expected);
    let got: Faults = http
        .get(api.url("/_sim/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, expected);
    assert_eq!(
        api.get(ASSETS).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    http.put(api.url("/_sim/faults"))
        .json(&Faults::default())
        .send()
        .await
        .unwrap();

    let reset = http
        .post(api.url("/_sim/stats/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    assert_eq!(api.sim.stats().total_calls, 0);

    http.post(api.url("/_sim/tokens/expire"))
        .send()
        .await
        .unwrap();
    let expired: Value = api.get(ASSETS).await.json().await.unwrap();
    assert_eq!(expired["message"], "The access token provided has expired.");

    http.post(api.url("/_sim/tokens/revoke-refresh"))
        .send()
        .await
        .unwrap();
    let refresh = token_request(
        http,
        &api.sim.base_url(),
        json!({"grant_type": "refresh_token", "refresh_token": api.refresh}),
    )
    .await;
    assert_eq!(refresh.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn fixture_loads_from_json_and_path_and_rejects_bad_structure() {
    use akeneo_sim::Fixture;
    let bundled = Fixture::bundled();
    assert!(bundled.family("packshot").is_some() && bundled.family("user_instructions").is_some());
    let text = serde_json::to_string(&bundled).unwrap();
    assert_eq!(Fixture::from_json(&text).unwrap(), bundled);
    let dir = std::env::temp_dir().join(format!("akeneo-sim-fixture-{}.json", std::process::id()));
    std::fs::write(&dir, &text).unwrap();
    assert_eq!(Fixture::from_path(&dir).unwrap(), bundled);
    std::fs::remove_file(&dir).unwrap();
    assert!(Fixture::from_path(std::path::Path::new("/nonexistent/fixture.json")).is_err());
    assert!(Fixture::from_json("{}").is_err());
    let bad_regexp = text.replace("^[A-Z]{2,4}-[0-9]+$", "([unclosed");
    assert!(Fixture::from_json(&bad_regexp).is_err());
    let bad_main_media = text.replace(
        "\"attribute_as_main_media\":\"media_preview\"",
        "\"attribute_as_main_media\":\"alt_text\"",
    );
    assert_ne!(bad_main_media, text);
    assert!(Fixture::from_json(&bad_main_media).is_err());
}
