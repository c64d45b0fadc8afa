use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

async fn create(api: &Api, codes: impl Iterator<Item = String>) {
    let items: Vec<Value> = codes.map(|c| json!({"code": c})).collect();
    for chunk in items.chunks(100) {
        let (status, body) = api.bulk("packshot", Value::Array(chunk.to_vec())).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.as_array()
                .unwrap()
                .iter()
                .all(|r| r["status_code"] == 201),
            "{body}"
        );
    }
}

/// Follows `_links.next` from `first` until it is absent; returns pages of codes.
async fn walk(api: &Api, first: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut url = api.url(first);
    loop {
        let resp = api
            .http
            .get(&url)
            .bearer_auth(&api.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let page: Value = resp.json().await.unwrap();
        let items = page["_embedded"]["items"].as_array().unwrap();
        for item in items {
            assert!(
                item["_links"]["self"]["href"]
                    .as_str()
                    .unwrap()
                    .ends_with(item["code"].as_str().unwrap())
            );
            assert!(
                item["values"].is_object()
                    && item["created"].is_string()
                    && item["updated"].is_string()
            );
        }
        pages.push(
            items
                .iter()
                .map(|i| i["code"].as_str().unwrap().to_string())
                .collect(),
        );
        assert_eq!(page["_links"]["self"]["href"], url);
        match page["_links"]["next"]["href"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
        assert!(pages.len() < 10, "pagination does not end");
    }
    pages
}

#[tokio::test]
async fn assets_paginate_by_100_with_search_after_links() {
    let api = start().await;
    create(&api, (0..250).map(|i| format!("asset_{i:03}"))).await;
    let pages = walk(&api, ASSETS).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![100, 100, 50]
    );
    let all: Vec<String> = pages.concat();
    let expected: Vec<String> = (0..250).map(|i| format!("asset_{i:03}")).collect();
    assert_eq!(all, expected);
    let (_, first) = api.get_json(ASSETS).await;
    assert_eq!(first["_links"]["first"]["href"], api.url(ASSETS));
    assert_eq!(
        first["_links"]["next"]["href"],
        api.url(&format!("{ASSETS}?search_after=asset_099"))
    );
    // Exactly one full page: no `next`.
    let api = start().await;
    create(&api, (0..100).map(|i| format!("b{i:03}"))).await;
    let (_, page) = api.get_json(ASSETS).await;
    assert_eq!(page["_embedded"]["items"].as_array().unwrap().len(), 100);
    assert!(page["_links"].get("next").is_none());
}

#[tokio::test]
async fn search_filters_on_updated_and_code() {
    let api = start().await;
    create(&api, (0..3).map(|i| format!("old_{i}"))).await;
    let old_updated = api.sim.asset("packshot", "old_0").unwrap()["updated"]
        .as_str()
        .unwrap()
        .to_string();
    // Timestamps have second precision, as Akeneo's.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    create(&api, (0..2).map(|i| format!("new_{i}"))).await;
    let new_updated = api.sim.asset("packshot", "new_0").unwrap()["updated"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(old_updated, new_updated);

    let codes = |search: Value| {
        let api = &api;
        async move {
            let url = format!("{ASSETS}?search={}", urlencode(&search.to_string()));
            let (status, page) = api.get_json(&url).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            page["_embedded"]["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["code"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        codes(json!({"updated": [{"operator": ">", "value": old_updated}]})).await,
        ["new_0", "new_1"]
    );
    assert_eq!(
        codes(json!({"updated": [{"operator": "<", "value": new_updated}]})).await,
        ["old_0", "old_1", "old_2"]
    );
    assert_eq!(
        codes(json!({"updated": [{"operator": "BETWEEN", "value": [old_updated, old_updated]}]}))
            .await,
        ["old_0", "old_1", "old_2"]
    );
    assert_eq!(
        codes(json!({"code": [{"operator": "IN", "value": ["old_1", "new_1", "zzz"]}]})).await,
        ["new_1", "old_1"]
    );
    assert_eq!(
        codes(
            json!({"updated": [{"operator": "NOT BETWEEN", "value": [old_updated, old_updated]}]})
        )
        .await,
        ["new_0", "new_1"]
    );
    assert_eq!(
        codes(json!({"updated": [{"operator": "SINCE LAST N DAYS", "value": 1}]}))
            .await
            .len(),
        5
    );
    assert_eq!(
        codes(json!({"code": [{"operator": "NOT IN", "value": ["old_0", "old_1", "new_0"]}]}))
            .await,
        ["new_1", "old_2"]
    );
    assert_eq!(
        codes(json!({"code": [{"operator": "IN", "value": ["old_1", "new_1"]}], "updated": [{"operator": ">", "value": old_updated}]})).await,
        ["new_1"]
    );
}

#[tokio::test]
async fn search_keeps_its_parameter_in_next_links_and_rejects_bad_input() {
    let api = start().await;
    create(&api, (0..150).map(|i| format!("a{i:03}"))).await;
    let search =
        json!({"updated": [{"operator": ">", "value": "2000-01-01T00:00:00Z"}]}).to_string();
    let first = format!("{ASSETS}?search={}", urlencode(&search));
    let pages = walk(&api, &first).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![100, 50]
    );
    let (_, page) = api.get_json(&first).await;
    assert!(
        page["_links"]["next"]["href"]
            .as_str()
            .unwrap()
            .contains("search=")
    );

    let (status, body) = api
        .get_json(&format!("{ASSETS}?search={}", urlencode("{bad")))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "The search query parameter must be a valid JSON."
    );
    let unsupported = json!({"colour": [{"operator": "=", "value": "red"}]}).to_string();
    let (status, body) = api
        .get_json(&format!("{ASSETS}?search={}", urlencode(&unsupported)))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["message"],
        "The search filters have an invalid format."
    );
    let bad_date = json!({"updated": [{"operator": ">", "value": "yesterday"}]}).to_string();
    let (status, _) = api
        .get_json(&format!("{ASSETS}?search={}", urlencode(&bad_date)))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn channel_and_locales_parameters_filter_values() {
    let api = start().await;
    api.upsert_one(json!({"code": "x", "values": {
        "description": [
            {"locale": "en_US", "channel": "print", "data": "p"},
            {"locale": "en_US", "channel": "ecommerce", "data": "e"},
            {"locale": "fr_FR", "channel": "ecommerce", "data": "f"},
        ],
        "media_preview": [{"locale": null, "channel": null, "data": "x.jpg"}],
    }}))
    .await;
    let (_, page) = api
        .get_json(&format!("{ASSETS}?channel=ecommerce&locales=fr_FR"))
        .await;
    let values = &page["_embedded"]["items"][0]["values"];
    assert_eq!(
        values["description"],
        json!([{"locale": "fr_FR", "channel": "ecommerce", "data": "f"}])
    );
    assert_eq!(values["media_preview"][0]["data"], "x.jpg");
    let (status, _) = api.get_json(&format!("{ASSETS}?channel=mobile")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
