//! Cloudinary's version semantics over HTTP: `version` is the second of the file's last upload
//! and moves only with a new file; metadata, tags, context and renames move only
//! `last_updated.updated_at`. The notifications and the Admin API agree on both.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use dam_sim::{DamSim, DamSimConfig, DamSimHandle, DeliveryKnobs, WebhookKind};
use serde_json::{Value, json};

/// Records every notification body.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let s = seen.clone();
    let app = Router::new().fallback(move |body: Bytes| {
        let s = s.clone();
        async move {
            s.lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap());
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn auth(sim: &DamSimHandle) -> String {
    let c = sim.config();
    let pair = format!("{}:{}", c.cloudinary_api_key, c.cloudinary_api_secret);
    format!("Basic {}", STANDARD.encode(pair))
}

/// The Admin API's resource, through `by_asset_ids`.
async fn resource(sim: &DamSimHandle, id: &str) -> Value {
    let url = format!(
        "{}/v1_1/dam-sim/resources/by_asset_ids?asset_ids[]={id}&context=true",
        sim.base_url()
    );
    let r: Value = dam_sim::http_client_builder()
        .build()
        .unwrap()
        .get(url)
        .header("authorization", auth(sim))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["resources"][0].clone()
}

/// The same resource through a "modified since" search, as the poller lists it.
async fn listed(sim: &DamSimHandle, id: &str, since: &str) -> Value {
    let body = json!({
        "expression": format!("last_updated.updated_at>=\"{since}\" AND asset_id={id}"),
        "sort_by": [{"last_updated.updated_at": "asc"}],
        "with_field": ["context"],
    });
    let r: Value = dam_sim::http_client_builder()
        .build()
        .unwrap()
        .post(format!("{}/v1_1/dam-sim/resources/search", sim.base_url()))
        .header("authorization", auth(sim))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["total_count"], 1, "{r}");
    r["resources"][0].clone()
}

fn updated_at(r: &Value) -> String {
    r["last_updated"]["updated_at"].as_str().unwrap().to_owned()
}

/// The `version` a notification names: at top level (upload, rename) or per resource.
fn notified_version(n: &Value) -> &Value {
    if n["resources"].is_array() {
        &n["resources"][0]["version"]
    } else {
        &n["version"]
    }
}

#[tokio::test]
async fn version_moves_with_the_file_only_and_webhooks_agree_with_the_admin_api() {
    // One change per second, so every edit lands in a second of its own without sleeping.
    let sim = DamSim::start(DamSimConfig {
        clock_step_ms: 1_000,
        ..DamSimConfig::default()
    })
    .await
    .unwrap();
    let (url, seen) = receiver().await;
    sim.send_webhooks_to(&url, WebhookKind::Cloudinary, DeliveryKnobs::default());
    let id = "v1";
    let file = |v: u64| json!({"title": "A", "sku": "S", "tags": ["x"], "file_version": v});
    sim.upsert(id, file(1));
    let created = resource(&sim, id).await;
    let v0 = created["version"].as_i64().unwrap();
    let created_at = dam_sim::parse_ms(created["created_at"].as_str().unwrap()).unwrap();
    assert_eq!(v0, created_at / 1000, "version is the upload's unix second");
    assert!(
        created["secure_url"]
            .as_str()
            .unwrap()
            .contains(&format!("/v{v0}/")),
        "{created}"
    );

    // Context, tags, metadata, rename: `updated_at` moves each time, `version` never.
    let mut last = updated_at(&created);
    let edits = [
        json!({"title": "B"}),
        json!({"tags": ["y"]}),
        json!({"sku": "T"}),
        json!({"public_id": "renamed/v1"}),
    ];
    for edit in edits {
        sim.patch(id, edit.clone()).unwrap();
        let r = resource(&sim, id).await;
        assert_eq!(r["version"], v0, "{edit} changed the version: {r}");
        assert!(updated_at(&r) > last, "{edit} left updated_at at {last}");
        last = updated_at(&r);
        let l = listed(&sim, id, &last).await;
        assert_eq!(
            (&l["version"], updated_at(&l)),
            (&r["version"], last.clone())
        );
    }
    // A full replace that keeps the file is no upload either.
    let same_file = json!({
        "title": "C", "sku": "T", "tags": ["y"], "file_version": 1, "public_id": "renamed/v1",
    });
    sim.upsert(id, same_file);
    assert_eq!(resource(&sim, id).await["version"], v0);

    // A new file: a new version, the second of that upload, and `uploaded_at` with it.
    sim.patch(id, json!({"file_version": 2})).unwrap();
    let r = resource(&sim, id).await;
    let v1 = r["version"].as_i64().unwrap();
    assert!(v1 > v0, "{r}");
    assert_eq!(updated_at(&r), dam_sim::iso_secs(v1 * 1000));
    assert_eq!(r["uploaded_at"], dam_sim::iso_secs(v1 * 1000));
    assert_eq!(r["created_at"], created["created_at"]);
    assert!(sim.delete(id));
    assert!(sim.flush_webhooks(Duration::from_secs(5)).await);

    let notices = seen.lock().unwrap().clone();
    let named: Vec<(&str, &Value)> = notices
        .iter()
        .map(|n| {
            (
                n["notification_type"].as_str().unwrap(),
                notified_version(n),
            )
        })
        .collect();
    assert_eq!(
        named,
        [
            ("upload", &json!(v0)),
            ("resource_context_changed", &json!(v0)),
            ("resource_tags_changed", &json!(v0)),
            ("resource_metadata_changed", &json!(v0)),
            ("rename", &json!(v0)),
            ("resource_context_changed", &json!(v0)),
            ("upload", &json!(v1)),
            ("delete", &json!(v1)),
        ]
    );
    assert_eq!(notices[6]["overwritten"], true);
    sim.shutdown().await;
}

#[tokio::test]
async fn two_edits_in_one_second_read_back_alike() {
    // Changes 10 ms apart from a second boundary: both in one second.
    let sim = DamSim::start(DamSimConfig {
        clock_step_ms: 10,
        ..DamSimConfig::default()
    })
    .await
    .unwrap();
    let into = now_ms().rem_euclid(1000) as u64;
    if into > 900 {
        tokio::time::sleep(Duration::from_millis(1_050 - into)).await;
    }
    sim.upsert("s", json!({"title": "A", "file_version": 1}));
    let first = resource(&sim, "s").await;
    sim.patch("s", json!({"title": "B"})).unwrap();
    let second = resource(&sim, "s").await;
    assert_eq!(second["context"]["custom"]["title"], "B");
    assert_eq!(
        (&first["version"], updated_at(&first)),
        (&second["version"], updated_at(&second)),
        "Cloudinary's (updated_at, version) cannot tell these edits apart"
    );
    // The generic contract still counts every change.
    assert_eq!(sim.asset("s").unwrap().version, 2);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
