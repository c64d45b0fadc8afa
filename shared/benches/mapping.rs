//! Mapping throughput: 200,000 Cloudinary-shaped assets through examples/production/mapping.toml (11
//! attributes for packshots) on one thread. Run: `cargo bench -p shared --bench mapping`.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use serde_json::{Value, json};
use shared::akeneo::FamilyStructure;
use shared::mapping::{MapOutcome, MapStats, Mapping};

const ASSETS: usize = 200_000;

fn main() {
    let mapping = Mapping::from_toml_str(
        include_str!("../../examples/production/mapping.toml"),
        "examples/production/mapping.toml",
    )
    .expect("example mapping loads");
    let structures = structures();
    let issues = mapping.validate_against(&structures);
    assert!(issues.is_empty(), "{issues:#?}");

    // Built before timing: only mapping is measured.
    let assets: Vec<(String, Value)> = (0..ASSETS).map(asset).collect();

    // Warm-up (page faults, caches), then the measured pass.
    for (id, fields) in assets.iter().take(10_000) {
        black_box(mapping.map_asset(id, fields, |f| structures.get(f)));
    }
    let mut stats = MapStats::default();
    let mut hash_bytes = 0usize;
    let start = Instant::now();
    for (id, fields) in &assets {
        let outcome = mapping.map_asset(id, black_box(fields), |f| structures.get(f));
        if let MapOutcome::Mapped(m) = &outcome {
            hash_bytes += m.content_hash.len();
        }
        stats.record(&outcome);
        black_box(outcome);
    }
    let elapsed = start.elapsed();
    let rate = ASSETS as f64 / elapsed.as_secs_f64();
    println!(
        "mapped {} / skipped {} / invalid {} of {ASSETS} assets in {:.3} s: {:.0} assets/s ({:.2} µs/asset, one thread)",
        stats.mapped,
        stats.skipped,
        stats.invalid,
        elapsed.as_secs_f64(),
        rate,
        1e6 / rate,
    );
    assert_eq!(stats.invalid, 0, "benchmark data must map");
    assert!(stats.mapped as usize > ASSETS * 8 / 10 && hash_bytes > 0);
}

/// Mostly packshots (the full 11-attribute route), some lifestyle pictures, documents and
/// unrouted images, as in a real Cloudinary account.
fn asset(i: usize) -> (String, Value) {
    let asset_id = format!(
        "{:032x}",
        (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834)
    );
    let colors = ["Red", "White", "Off White"];
    let fields = match i % 20 {
        0 => json!({
            "asset_id": asset_id, "public_id": format!("lifestyle/beach-{i}"), "format": "jpg",
            "resource_type": "image", "version": 1_764_000_000 + i, "bytes": 100_000 + i,
            "secure_url": format!("https://res.cloudinary.com/acme/image/upload/v1/lifestyle/beach-{i}.jpg"),
            "tags": ["summer"], "created_at": "2026-06-01T08:00:00Z",
            "context": {"custom": {"caption": format!("Beach day {i}")}},
            "metadata": {"color": [colors[i % 3]]}
        }),
        1 => json!({
            "asset_id": asset_id, "public_id": format!("docs/sheet-{i}"), "format": "pdf",
            "resource_type": "raw", "version": 1, "bytes": 20_000 + i,
            "secure_url": format!("https://res.cloudinary.com/acme/raw/upload/v1/docs/sheet-{i}.pdf"),
            "tags": [], "created_at": "2026-06-01T08:00:00Z",
            "context": {"custom": {"doc_kind": "Data sheet"}}
        }),
        2 => json!({
            "asset_id": asset_id, "public_id": format!("misc/img-{i}"), "format": "png",
            "resource_type": "image", "version": 1, "bytes": 1000, "tags": ["banner"],
            "secure_url": format!("https://res.cloudinary.com/acme/image/upload/v1/misc/img-{i}.png"),
            "created_at": "2026-06-01T08:00:00Z"
        }),
        _ => json!({
            "asset_id": asset_id,
            "public_id": format!("shoes/model-{}_view-{}", i / 4, i % 4),
            "format": "jpg",
            "version": 1_764_321_000 + i,
            "resource_type": "image",
            "type": "upload",
            "bytes": 400_000 + i,
            "width": 2000,
            "height": 2000,
            "created_at": "2026-11-02T10:15:00Z",
            "secure_url": format!("https://res.cloudinary.com/acme/image/upload/v{}/shoes/model-{}_view-{}.jpg", 1_764_321_000 + i, i / 4, i % 4),
            "tags": ["packshot", "red", "running"],
            "context": {"custom": {
                "alt_en": format!("Running shoe {i}"),
                "alt_fr": format!("Chaussure de course {i}"),
                "sku": format!("AM-{}-RED", i / 4)
            }},
            "metadata": {"color": [colors[i % 3], colors[(i + 1) % 3]], "season": if i.is_multiple_of(2) { "FW26" } else { "SS27" }, "published": "yes"}
        }),
    };
    (asset_id, fields)
}

fn structures() -> HashMap<String, FamilyStructure> {
    let prefix = json!("https://res.cloudinary.com/acme/image/upload/");
    let a = |code: &str, kind: &str, extra: Value| {
        let mut v = json!({"code": code, "type": kind});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    };
    let options = |codes: &[&str]| -> Value { codes.iter().map(|c| json!({"code": c})).collect() };
    let colors = options(&["red", "white", "ecru"]);
    let list = [
        json!({
            "family": {"code": "packshots"},
            "attributes": [
                a("media_url", "media_link", json!({"prefix": prefix, "media_type": "image"})),
                a("original", "media_file", json!({"media_type": "image"})),
                a("alt_text", "text", json!({"value_per_locale": true, "max_characters": 255})),
                a("sku", "text", json!({})),
                a("colors", "multiple_options", json!({})),
                a("season", "single_option", json!({})),
                a("published", "boolean", json!({})),
                a("shot_date", "date", json!({})),
                a("file_size", "number", json!({"decimals_allowed": false})),
                a("keywords", "text", json!({})),
                a("source", "text", json!({})),
            ],
            "options": {"colors": colors, "season": options(&["fw26", "ss27"])}
        }),
        json!({
            "family": {"code": "lifestyle"},
            "attributes": [
                a("media_url", "media_link", json!({"prefix": prefix, "media_type": "image"})),
                a("caption", "text", json!({"value_per_locale": true, "value_per_channel": true})),
                a("colors", "multiple_options", json!({})),
            ],
            "options": {"colors": colors}
        }),
        json!({
            "family": {"code": "documents"},
            "attributes": [
                a("file", "media_file", json!({"media_type": "pdf"})),
                a("title", "text", json!({})),
                a("kind", "single_option", json!({})),
            ],
            "options": {"kind": options(&["data_sheet", "manual"])}
        }),
    ];
    list.into_iter()
        .map(|v| {
            let s: FamilyStructure = serde_json::from_value(v).unwrap();
            (s.family.code.clone(), s)
        })
        .collect()
}
