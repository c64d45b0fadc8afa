use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

fn asset(code: &str) -> Value {
    json!({"code": code, "values": {"media_preview": [{"locale": null, "channel": null, "data": format!("{code}.jpg")}]}})
}

#[tokio::test]
async fn bulk_patch_whole_request_checks_run_in_akeneo_order() {
    let api = start().await;
    let send = |path: &'static str, body: &'static str| {
        api.patch_raw(path, Some("application/json"), body)
    };

    // 1. malformed family code wins over everything else.
    let r = send("/api/rest/v1/asset-families/bad-code/assets", "not json").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // 2. unknown family (case-sensitive) before body parsing.
    let r = send("/api/rest/v1/asset-families/Packshot/assets", "not json").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["message"], "Asset family \"Packshot\" does not exist.");
    // 3. not JSON.
    let r = send(ASSETS, "{not json").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"code": 400, "message": "Invalid json message received"})
    );
    // 4. not an array of objects (checked before the size).
    let not_objects = format!("[{}]", vec!["1"; 101].join(","));
    for bad in [r#"{"code": "a"}"#, "[1]", not_objects.as_str()] {
        let r = api.patch_raw(ASSETS, Some("application/json"), bad).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["message"], "The list of assets has an invalid format.");
        assert!(body["errors"].as_array().is_some_and(|e| !e.is_empty()));
    }
    // 5. more than 100 items: 413 and nothing stored.
    let items: Vec<Value> = (0..101).map(|i| asset(&format!("a{i}"))).collect();
    let (status, body) = api.bulk("packshot", Value::Array(items)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        body,
        json!({"code": 413, "message": "Too many resources to process, 100 is the maximum allowed."})
    );
    assert!(api.sim.assets("packshot").is_empty());
    assert_eq!(api.sim.stats().too_large_413, 1);
    // Exactly 100 is fine.
    let items: Vec<Value> = (0..100).map(|i| asset(&format!("a{i}"))).collect();
    let (status, body) = api.bulk("packshot", Value::Array(items)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_array().unwrap().len(), 100);
    assert_eq!(api.sim.assets("packshot").len(), 100);
}

#[tokio::test]
async fn writes_without_json_content_type_get_415() {
    let api = start().await;
    let missing = api.patch_raw(ASSETS, None, "[]").await;
    assert_eq!(missing.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(
        body["message"],
        "The 'Content-type' header is missing. 'application/json' has to specified as value."
    );
    let wrong = api.patch_raw(ASSETS, Some("text/plain"), "[]").await;
    assert_eq!(wrong.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: Value = wrong.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with("Only 'application/json' is allowed.")
    );
    let single = api
        .patch_raw(&format!("{ASSETS}/x"), Some("application/xml"), "{}")
        .await;
    assert_eq!(single.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let with_charset = api
        .patch_raw(ASSETS, Some("application/json; charset=utf-8"), "[]")
        .await;
    assert_eq!(with_charset.status(), StatusCode::OK);
}

#[tokio::test]
async fn bulk_results_are_per_item_in_input_order_and_independent() {
    let api = start().await;
    assert_eq!(api.upsert_one(asset("existing")).await["status_code"], 201);
    let (status, body) = api
        .bulk(
            "packshot",
            json!([
                asset("brand_new"),
                {"code": "broken", "values": {"nope": [{"locale": null, "channel": null, "data": "x"}]}},
                asset("existing"),
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let results = body.as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0], json!({"code": "brand_new", "status_code": 201}));
    assert_eq!(results[1]["code"], "broken");
    assert_eq!(results[1]["status_code"], 422);
    assert_eq!(results[2], json!({"code": "existing", "status_code": 204}));
    assert!(api.sim.asset("packshot", "brand_new").is_some());
    assert!(api.sim.asset("packshot", "broken").is_none());
    let stats = api.sim.stats();
    assert_eq!((stats.assets_created, stats.assets_updated), (2, 1));
}

#[tokio::test]
async fn values_merge_per_attribute_locale_channel_and_null_erases() {
    let api = start().await;
    let alt = |locale: &str, data: Value| json!({"locale": locale, "channel": null, "data": data});
    api.upsert_one(json!({"code": "m", "values": {
        "alt_text": [alt("en_US", json!("Jacket")), alt("fr_FR", json!("Veste"))],
        "is_public": [{"locale": null, "channel": null, "data": true}],
    }}))
    .await;
    let r = api
        .upsert_one(
            json!({"code": "m", "values": {"alt_text": [alt("fr_FR", json!("Veste bleue"))]}}),
        )
        .await;
    assert_eq!(r["status_code"], 204);
    let stored = api.sim.asset("packshot", "m").unwrap();
    let alts = stored["values"]["alt_text"].as_array().unwrap();
    assert!(alts.contains(&alt("en_US", json!("Jacket"))), "{stored}");
    assert!(
        alts.contains(&alt("fr_FR", json!("Veste bleue"))),
        "{stored}"
    );
    assert_eq!(stored["values"]["is_public"][0]["data"], true);

    api.upsert_one(json!({"code": "m", "values": {"alt_text": [alt("en_US", Value::Null)]}}))
        .await;
    let stored = api.sim.asset("packshot", "m").unwrap();
    assert_eq!(
        stored["values"]["alt_text"],
        json!([alt("fr_FR", json!("Veste bleue"))])
    );
    api.upsert_one(json!({"code": "m", "values": {"is_public": [{"locale": null, "channel": null, "data": null}]}}))
        .await;
    let stored = api.sim.asset("packshot", "m").unwrap();
    assert!(stored["values"].get("is_public").is_none(), "{stored}");
    // A body without values changes nothing but is still an update.
    assert_eq!(
        api.upsert_one(json!({"code": "m"})).await["status_code"],
        204
    );
    assert_eq!(
        api.sim.asset("packshot", "m").unwrap()["values"],
        stored["values"]
    );
}

#[tokio::test]
async fn single_asset_patch_get_and_delete() {
    let api = start().await;
    let path = format!("{ASSETS}/single_one");
    let created = api.patch(&path, &asset("single_one")).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(location, api.url(&path));
    assert!(created.text().await.unwrap().is_empty());
    // The code may come from the URL only.
    let updated = api
        .patch(
            &path,
            &json!({"values": {"shot_type": [{"locale": null, "channel": null, "data": "front"}]}}),
        )
        .await;
    assert_eq!(updated.status(), StatusCode::NO_CONTENT);
    assert_eq!(updated.headers()["location"].to_str().unwrap(), location);

    let (status, body) = api.get_json(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["code"], "single_one");
    assert_eq!(body["_links"]["self"]["href"], location);
    assert_eq!(body["values"]["media_preview"][0]["data"], "single_one.jpg");
    assert_eq!(body["values"]["shot_type"][0]["data"], "front");
    for key in ["created", "updated"] {
        let ts = body[key].as_str().unwrap();
        assert!(ts.ends_with("+00:00") && ts.len() == 25, "{ts}");
    }

    let del = api
        .http
        .delete(api.url(&path))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    let again = api
        .http
        .delete(api.url(&path))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    let (status, body) = api.get_json(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"code": 404, "message": "Asset \"single_one\" does not exist."})
    );
    let (status, body) = api
        .get_json("/api/rest/v1/asset-families/nope/assets/x")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "Asset family \"nope\" does not exist.");
}

#[tokio::test]
async fn single_asset_patch_reports_errors_on_the_whole_response() {
    let api = start().await;
    let path = format!("{ASSETS}/bad_one");
    let resp = api
        .patch(&path, &json!({"code": "bad_one", "values": {"alt_text": [{"locale": 1, "channel": null, "data": "x"}]}}))
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 422);
    assert_eq!(body["message"], INVALID);
    assert_eq!(body["errors"][0]["property"], "values.alt_text[0].locale");
    assert_eq!(
        body["errors"][0]["message"],
        "Integer value found, but a string or a null is required"
    );
    let resp = api
        .patch(
            &path,
            &json!({"values": {"alt_text": [{"locale": "en_AU", "channel": null, "data": "x"}]}}),
        )
        .await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["message"], RULES);
    assert_eq!(
        body["errors"],
        json!([{"property": "values.alt_text", "message": "The locale \"en_AU\" is not activated."}])
    );
    let mismatch = api.patch(&path, &asset("other_code")).await;
    assert_eq!(mismatch.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(api.sim.assets("packshot").is_empty());
}

#[tokio::test]
async fn wrong_method_and_unknown_route_answer_json_errors() {
    let api = start().await;
    let resp = api
        .http
        .post(api.url(ASSETS))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 405);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with("Method Not Allowed"),
        "{body}"
    );
    let (status, body) = api.get_json("/api/rest/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body["message"],
        "No route found for \"GET /api/rest/v1/nothing-here\""
    );
}
