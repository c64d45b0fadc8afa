//! Helpers shared by the mapping_* test files: PIM structures built in code.
#![allow(dead_code)] // each test file uses a different subset

use std::collections::HashMap;

use serde_json::{Value, json};
use shared::akeneo::{AssetAttribute, FamilyStructure};

/// An attribute from its JSON form, so that fields added to the model later keep defaults.
pub fn attr(code: &str, kind: &str, extra: Value) -> AssetAttribute {
    let mut v = json!({"code": code, "type": kind});
    if let (Some(obj), Some(more)) = (v.as_object_mut(), extra.as_object()) {
        obj.extend(more.clone());
    }
    serde_json::from_value(v).expect("valid attribute JSON")
}

pub fn structure(
    family: &str,
    attributes: Vec<AssetAttribute>,
    options: &[(&str, &[&str])],
) -> FamilyStructure {
    let options: serde_json::Map<String, Value> = options
        .iter()
        .map(|(a, codes)| {
            let list: Vec<Value> = codes.iter().map(|c| json!({"code": c})).collect();
            (a.to_string(), Value::Array(list))
        })
        .collect();
    serde_json::from_value(json!({
        "family": {"code": family},
        "attributes": attributes,
        "options": options,
    }))
    .expect("valid structure JSON")
}

pub fn by_family(list: Vec<FamilyStructure>) -> HashMap<String, FamilyStructure> {
    list.into_iter()
        .map(|s| (s.family.code.clone(), s))
        .collect()
}

/// The PIM families examples/production/mapping.toml is written for.
pub fn example_structures() -> HashMap<String, FamilyStructure> {
    let prefix =
        json!({"prefix": "https://res.cloudinary.com/acme/image/upload/", "media_type": "image"});
    let colors: &[&str] = &["red", "white", "ecru"];
    by_family(vec![
        structure(
            "packshots",
            vec![
                attr("media_url", "media_link", prefix.clone()),
                attr("original", "media_file", json!({"media_type": "image"})),
                attr("alt_text", "text", json!({"value_per_locale": true})),
                attr("sku", "text", json!({})),
                attr("colors", "multiple_options", json!({})),
                attr("season", "single_option", json!({})),
                attr("published", "boolean", json!({})),
                attr("shot_date", "date", json!({})),
                attr("file_size", "number", json!({"decimals_allowed": false})),
                attr("keywords", "text", json!({})),
                attr("source", "text", json!({})),
            ],
            &[("colors", colors), ("season", &["fw26", "ss27"])],
        ),
        structure(
            "lifestyle",
            vec![
                attr("media_url", "media_link", prefix),
                attr(
                    "caption",
                    "text",
                    json!({"value_per_locale": true, "value_per_channel": true}),
                ),
                attr("colors", "multiple_options", json!({})),
            ],
            &[("colors", colors)],
        ),
        structure(
            "documents",
            vec![
                attr("file", "media_file", json!({"media_type": "pdf"})),
                attr("title", "text", json!({})),
                attr("kind", "single_option", json!({})),
            ],
            &[("kind", &["data_sheet", "manual"])],
        ),
    ])
}

/// A Cloudinary resource shaped like the Admin API's (docs/dam-apis.md §B1).
pub fn cloudinary_packshot() -> Value {
    json!({
        "asset_id": "3f2a9c0b8d7e6f5a4b3c2d1e0f9a8b7c",
        "public_id": "shoes/air-max_front",
        "format": "jpg",
        "version": 1764321000,
        "resource_type": "image",
        "type": "upload",
        "bytes": 482113,
        "width": 2000,
        "height": 2000,
        "created_at": "2026-11-02T10:15:00Z",
        "secure_url": "https://res.cloudinary.com/acme/image/upload/v1764321000/shoes/air-max_front.jpg",
        "tags": ["packshot", "red"],
        "context": {"custom": {"alt_en": "Red running shoe", "alt_fr": "Chaussure rouge", "sku": "AM-90-RED"}},
        "metadata": {"color": ["Red", "White"], "season": "FW26", "published": "yes"}
    })
}
