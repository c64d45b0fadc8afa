use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

const FAMILIES: &str = "/api/rest/v1/asset-families";
const OPTIONS: &str = "/api/rest/v1/asset-families/packshot/attributes/main_colors/options";

#[tokio::test]
async fn asset_families_list_and_get() {
    let api = start().await;
    let (status, page) = api.get_json(FAMILIES).await;
    assert_eq!(status, StatusCode::OK);
    let items = page["_embedded"]["items"].as_array().unwrap();
    let codes: Vec<&str> = items.iter().map(|f| f["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["packshot", "user_instructions"]);
    assert_eq!(
        items[0]["_links"]["self"]["href"],
        api.url(&format!("{FAMILIES}/packshot"))
    );
    assert_eq!(items[0]["attribute_as_main_media"], "media_preview");
    assert_eq!(page["_links"]["first"]["href"], api.url(FAMILIES));
    assert!(page["_links"].get("next").is_none());
    let (_, after) = api
        .get_json(&format!("{FAMILIES}?search_after=packshot"))
        .await;
    assert_eq!(after["_embedded"]["items"].as_array().unwrap().len(), 1);

    let (status, fam) = api.get_json(&format!("{FAMILIES}/packshot")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fam["labels"]["en_US"], "Packshots");
    let (status, body) = api.get_json(&format!("{FAMILIES}/BranD")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"code": 404, "message": "Asset family \"BranD\" does not exist."})
    );
}

#[tokio::test]
async fn attributes_are_a_plain_array_with_type_fields() {
    let api = start().await;
    let (status, attrs) = api
        .get_json(&format!("{FAMILIES}/packshot/attributes"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let attrs = attrs.as_array().expect("plain array, not paginated");
    let types: std::collections::BTreeSet<&str> =
        attrs.iter().map(|a| a["type"].as_str().unwrap()).collect();
    for t in [
        "text",
        "number",
        "boolean",
        "date",
        "single_option",
        "multiple_options",
        "media_link",
        "media_file",
    ] {
        assert!(types.contains(t), "missing {t}");
    }
    let preview = attrs.iter().find(|a| a["code"] == "media_preview").unwrap();
    assert_eq!(preview["prefix"], "https://res.example.com/");
    assert_eq!(preview["media_type"], "image");
    let (_, alt) = api
        .get_json(&format!("{FAMILIES}/packshot/attributes/alt_text"))
        .await;
    assert_eq!(alt["max_characters"], 255);
    assert_eq!(alt["value_per_locale"], true);
    let (status, body) = api
        .get_json(&format!("{FAMILIES}/packshot/attributes/foo"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "Resource `foo` does not exist.");
}

#[tokio::test]
async fn options_list_get_and_upsert() {
    // More option PATCHes than the 3/s limit allows: lift it here.
    let api = start_with(akeneo_sim::SimConfig {
        faults: akeneo_sim::Faults {
            option_patch_rate_per_sec: None,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let (status, opts) = api.get_json(OPTIONS).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(opts.as_array().unwrap().len(), 3);
    let (_, red) = api.get_json(&format!("{OPTIONS}/red")).await;
    assert_eq!(red, json!({"code": "red", "labels": {"en_US": "Red"}}));
    let (status, body) = api.get_json(&format!("{OPTIONS}/XLS")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "Resource `XLS` does not exist.");

    let created = api
        .patch(
            &format!("{OPTIONS}/purple"),
            &json!({"code": "purple", "labels": {"en_US": "Purple"}}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(
        created.headers()["location"].to_str().unwrap(),
        api.url(&format!("{OPTIONS}/purple"))
    );
    let updated = api
        .patch(
            &format!("{OPTIONS}/purple"),
            &json!({"labels": {"fr_FR": "Violet"}}),
        )
        .await;
    assert_eq!(updated.status(), StatusCode::NO_CONTENT);
    let (_, purple) = api.get_json(&format!("{OPTIONS}/purple")).await;
    assert_eq!(
        purple["labels"],
        json!({"en_US": "Purple", "fr_FR": "Violet"})
    );
    // A new option can be used in asset values right away.
    let r = api
        .upsert_one(json!({"code": "p", "values": {"main_colors": [{"locale": null, "channel": null, "data": ["purple"]}]}}))
        .await;
    assert_eq!(r["status_code"], 201, "{r}");
    // Options only exist on option attributes.
    let resp = api
        .patch(
            "/api/rest/v1/asset-families/packshot/attributes/alt_text/options/x",
            &json!({}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let mismatch = api
        .patch(&format!("{OPTIONS}/green"), &json!({"code": "red"}))
        .await;
    assert_eq!(mismatch.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn option_patch_is_limited_to_3_per_second() {
    let api = start().await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        let resp = api
            .patch(&format!("{OPTIONS}/c{i}"), &json!({"labels": {}}))
            .await;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(resp.headers()["retry-after"], "1");
        }
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(&statuses[..3], [201, 201, 201]);
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    // Other routes are not affected by this limit.
    assert_eq!(api.get(OPTIONS).await.status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let later = api.patch(&format!("{OPTIONS}/c9"), &json!({})).await;
    assert_eq!(later.status(), StatusCode::CREATED);
    let (_, opts) = api.get_json(OPTIONS).await;
    assert_eq!(opts.as_array().map(Vec::len), Some(3 + 3 + 1));
}
