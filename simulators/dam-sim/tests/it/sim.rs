//! dam-sim over real HTTP: the three APIs, limits, faults, accounting and signed webhooks
//! (signatures checked here independently of the sim's own signing code).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use dam_sim::{CloudinaryAlgorithm, DamSim, DamSimConfig, DeliveryKnobs, Faults, WebhookKind};
use hmac::{Hmac, Mac};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use sha2::Sha256;
use x509_cert::Certificate;
use x509_cert::der::{DecodePem, Encode};

#[derive(Debug, Clone)]
struct Captured {
    headers: HeaderMap,
    body: Bytes,
}

/// A webhook receiver answering 200 and recording every request.
async fn receiver() -> (String, Arc<Mutex<Vec<Captured>>>) {
    let seen: Arc<Mutex<Vec<Captured>>> = Arc::default();
    let s = seen.clone();
    let app = Router::new().fallback(
        move |_m: Method, _u: Uri, headers: HeaderMap, body: Bytes| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(Captured { headers, body });
                "ok"
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn h<'a>(c: &'a Captured, name: &str) -> &'a str {
    c.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn client() -> reqwest::Client {
    dam_sim::http_client_builder().build().unwrap()
}

#[tokio::test]
async fn generic_api_fetches_by_ids_and_pages_changes_with_tombstones() {
    let sim = DamSim::start(DamSimConfig::default()).await.unwrap();
    let token = sim.config().generic_token.clone();
    let base = sim.generic_base_url();
    sim.upsert("a", json!({"title": "A"}));
    sim.upsert("b", json!({"title": "B"}));
    sim.upsert("c", json!({"title": "C"}));
    let b2 = sim.upsert("b", json!({"title": "B2"}));
    assert_eq!(b2["version"], 2);
    assert!(sim.delete("c"));

    let r = client()
        .get(format!("{base}/assets?ids=a,b,c,zz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no bearer token");
    let body: Value = client()
        .get(format!("{base}/assets?ids=a,b,c,zz"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = body["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"], "deleted and unknown ids are absent");
    assert_eq!(body["assets"][1]["fields"]["title"], "B2");

    // Page through the feed two at a time: a, c (tombstone), b — ordered by modified time.
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    loop {
        let mut url = format!("{base}/changes?limit=2");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = client()
            .get(url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for a in page["assets"].as_array().unwrap() {
            seen.push((
                a["id"].as_str().unwrap().to_owned(),
                a["deleted"].as_bool().unwrap(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [("a".into(), false), ("b".into(), false), ("c".into(), true)]
    );

    // `since` is inclusive.
    let since = b2["modified_at"].as_str().unwrap();
    let page: Value = client()
        .get(url::Url::parse_with_params(&format!("{base}/changes"), [("since", since)]).unwrap())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = page["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b", "c"]);
    assert!(page["next_cursor"].is_null());
    sim.shutdown().await;
}

fn cloudinary_auth(sim: &dam_sim::DamSimHandle) -> String {
    let c = sim.config();
    format!(
        "Basic {}",
        STANDARD.encode(format!(
            "{}:{}",
            c.cloudinary_api_key, c.cloudinary_api_secret
        ))
    )
}

#[tokio::test]
async fn cloudinary_search_pages_modified_since_and_spends_the_hourly_budget() {
    let sim = DamSim::start(DamSimConfig {
        cloudinary_hourly_limit: 5,
        ..DamSimConfig::default()
    })
    .await
    .unwrap();
    let ids = sim.generate(5, 42);
    let search = format!("{}/v1_1/dam-sim/resources/search", sim.base_url());
    let since = dam_sim::iso_secs(sim.assets()[0].modified_at_ms);
    let body = json!({
        "expression": format!("last_updated.updated_at>=\"{since}\" AND resource_type:image"),
        "sort_by": [{"last_updated.updated_at": "asc"}],
        "max_results": 3,
        "with_field": ["context", "tags", "metadata"],
    });

    let r = client()
        .post(&search)
        .header("authorization", "Basic bm9wZTpub3Bl")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let r = client()
        .post(&search)
        .header("authorization", cloudinary_auth(&sim))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-featureratelimit-limit"], "5");
    assert_eq!(r.headers()["x-featureratelimit-remaining"], "4");
    assert!(r.headers().contains_key("x-featureratelimit-reset"));
    let p1: Value = r.json().await.unwrap();
    assert_eq!(p1["total_count"], 5);
    assert_eq!(p1["resources"].as_array().unwrap().len(), 3);
    let r0 = &p1["resources"][0];
    assert_eq!(r0["asset_id"], ids[0].as_str(), "oldest change first");
    assert!(r0["context"]["custom"]["title"].is_string());
    assert!(r0["metadata"]["sku"].as_str().unwrap().starts_with("SKU-"));
    assert!(r0["last_updated"]["updated_at"].is_string());

    let mut body2 = body.clone();
    body2["next_cursor"] = p1["next_cursor"].clone();
    let p2: Value = client()
        .post(&search)
        .header("authorization", cloudinary_auth(&sim))
        .json(&body2)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let got: Vec<&str> = p1["resources"]
        .as_array()
        .unwrap()
        .iter()
        .chain(p2["resources"].as_array().unwrap())
        .map(|r| r["asset_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(p2.get("next_cursor").is_none(), "last page has no cursor");

    let by_ids = format!(
        "{}/v1_1/dam-sim/resources/by_asset_ids?asset_ids[]={}&asset_ids[]=missing&tags=true",
        sim.base_url(),
        ids[2]
    );
    let r: Value = client()
        .get(&by_ids)
        .header("authorization", cloudinary_auth(&sim))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["resources"].as_array().unwrap().len(), 1);
    assert_eq!(r["resources"][0]["asset_id"], ids[2].as_str());
    // Optional groups only when asked for, as in the Admin API.
    assert!(r["resources"][0]["tags"].is_array());
    assert!(r["resources"][0].get("context").is_none());
    assert!(r["resources"][0].get("metadata").is_none());

    let bad = json!({"expression": "colour:red"});
    let r = client()
        .post(&search)
        .header("authorization", cloudinary_auth(&sim))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "unsupported expression fields are refused");

    // 4 calls spent (the 401 did not count); the 6th allowed call is refused.
    let r = client()
        .post(&search)
        .header("authorization", cloudinary_auth(&sim))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .post(&search)
        .header("authorization", cloudinary_auth(&sim))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-featureratelimit-remaining"], "0");
    let stats = sim.stats();
    assert_eq!(stats.count_status("resources/search", 429), 1);
    assert_eq!(stats.count_status("resources/search", 401), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn bynder_lists_media_and_blocks_with_a_bare_429_that_calls_extend() {
    let sim = DamSim::start(DamSimConfig {
        bynder_rate_limit: 4,
        bynder_rate_window: Duration::from_millis(1500),
        ..DamSimConfig::default()
    })
    .await
    .unwrap();
    let token = sim.config().bynder_token.clone();
    sim.upsert(
        "m1",
        json!({"title": "One", "sku": "SKU-1", "tags": ["a"], "url": "https://cdn/x.jpg"}),
    );
    sim.upsert("m2", json!({"title": "Two", "archived": true}));
    let base = sim.base_url();
    let get = |path: String| {
        client()
            .get(format!("{base}{path}"))
            .bearer_auth(&token)
            .send()
    };

    let list: Value = get("/api/v4/media/?orderBy=dateModified%20asc&limit=10&page=1&dateModified=2000-01-01T00:00:00Z".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], "m1");
    assert_eq!(list[0]["name"], "One");
    assert_eq!(list[0]["property_sku"], "SKU-1");
    assert_eq!(list[0]["thumbnails"]["webimage"], "https://cdn/x.jpg");
    assert_eq!(list[1]["isArchived"], true);
    let one: Value = get("/api/v4/media/m1/".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["dateModified"], list[0]["dateModified"]);
    assert_eq!(
        get("/api/v4/media/nope/".into()).await.unwrap().status(),
        404
    );
    let totals: Value = get("/api/v4/media/?ids=m1,zz&total=1".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(totals["total"]["count"], 1);

    // Fifth call inside the 1.5 s window: blocked, with no rate-limit headers at all.
    let r = get("/api/v4/media/m1/".into()).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_none());
    assert!(!r.headers().keys().any(|k| k.as_str().contains("ratelimit")));
    // Calls every second keep the block alive past the original window...
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(get("/api/v4/media/m1/".into()).await.unwrap().status(), 429);
    }
    // ...and a quiet full window lifts it.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(get("/api/v4/media/m1/".into()).await.unwrap().status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_hit_api_routes_only_and_calls_are_counted_per_route_and_status() {
    let sim = DamSim::start(DamSimConfig::default()).await.unwrap();
    sim.upsert("a", json!({}));
    let token = sim.config().generic_token.clone();
    let url = format!("{}/assets?ids=a", sim.generic_base_url());
    sim.set_faults(Faults {
        down: true,
        ..Faults::default()
    });
    assert_eq!(
        client()
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    // Control routes keep working during an outage.
    let r = client()
        .get(format!("{}/_sim/assets", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sim.set_faults(Faults {
        error_rate: 1.0,
        error_status: 502,
        ..Faults::default()
    });
    assert_eq!(
        client()
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        502
    );
    sim.set_faults(Faults {
        latency_min_ms: 150,
        latency_max_ms: 150,
        ..Faults::default()
    });
    let t = std::time::Instant::now();
    assert_eq!(
        client()
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(t.elapsed() >= Duration::from_millis(150));
    // Faults scoped to Bynder routes leave the generic API alone.
    sim.set_faults(Faults {
        down: true,
        only_routes: Some("/api/v4/".into()),
        ..Faults::default()
    });
    assert_eq!(
        client()
            .get(format!("{}/api/v4/media/a/", sim.base_url()))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    let stats = sim.stats();
    assert_eq!(stats.count("GET /generic/assets"), 3);
    assert_eq!(stats.count_status("GET /generic/assets", 503), 1);
    assert_eq!(stats.count_status("GET /generic/assets", 502), 1);
    assert_eq!(stats.count_status("GET /generic/assets", 200), 1);
    assert_eq!(stats.count("/_sim"), 0, "control routes are not accounted");
    assert_eq!(stats.count_status("/api/v4/media/{id}/", 503), 1);
    assert_eq!(
        client()
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn generation_is_deterministic_and_control_routes_edit_the_catalogue() {
    let a = DamSim::start(DamSimConfig::default()).await.unwrap();
    let b = DamSim::start(DamSimConfig::default()).await.unwrap();
    let ids_a = a.generate(4, 9);
    let r: Value = client()
        .post(format!("{}/_sim/generate", b.base_url()))
        .json(&json!({"n": 4, "seed": 9}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["ids"], json!(ids_a));
    let fa: Vec<Value> = a
        .assets()
        .iter()
        .map(|x| Value::Object(x.fields.clone()))
        .collect();
    let fb: Vec<Value> = b
        .assets()
        .iter()
        .map(|x| Value::Object(x.fields.clone()))
        .collect();
    assert_eq!(fa, fb);
    assert_ne!(a.generate(1, 10), ids_a[..1].to_vec());

    let base = b.base_url();
    let created: Value = client()
        .post(format!("{base}/_sim/assets"))
        .json(&json!({"id": "x1", "fields": {"title": "T", "sku": "S"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["version"], 1);
    let patched: Value = client()
        .patch(format!("{base}/_sim/assets/x1"))
        .json(&json!({"title": "T2", "sku": null}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["version"], 2);
    assert_eq!(patched["fields"], json!({"title": "T2"}));
    assert!(patched["modified_at"].as_str() > created["modified_at"].as_str());
    let r = client()
        .delete(format!("{base}/_sim/assets/x1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = client()
        .delete(format!("{base}/_sim/assets/x1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(b.asset("x1").unwrap().deleted);
    let pem = client()
        .get(b.sns_cert_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(pem, b.sns_cert_pem());
    a.shutdown().await;
    b.shutdown().await;
}

fn verify_sns(c: &Captured, pem: &str) -> Value {
    let env: Value = serde_json::from_slice(&c.body).unwrap();
    let s = |k: &str| env[k].as_str().unwrap().to_owned();
    let mut canonical = String::new();
    let keys: &[&str] = if s("Type") == "Notification" {
        &[
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Type",
        ]
    } else {
        &[
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ]
    };
    for k in keys {
        canonical.push_str(&format!("{k}\n{}\n", s(k)));
    }
    let cert = Certificate::from_pem(pem.as_bytes()).unwrap();
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .unwrap();
    let key = rsa::RsaPublicKey::from_public_key_der(&spki).unwrap();
    let sig = Signature::try_from(STANDARD.decode(s("Signature")).unwrap().as_slice()).unwrap();
    match s("SignatureVersion").as_str() {
        "1" => VerifyingKey::<Sha1>::new(key)
            .verify(canonical.as_bytes(), &sig)
            .unwrap(),
        "2" => VerifyingKey::<Sha256>::new(key)
            .verify(canonical.as_bytes(), &sig)
            .unwrap(),
        v => panic!("unexpected SignatureVersion {v}"),
    }
    env
}

#[tokio::test]
async fn webhooks_are_signed_per_vendor_scheme() {
    let sim = DamSim::start(DamSimConfig::default()).await.unwrap();
    let cfg = sim.config().clone();
    let (cld_url, cld) = receiver().await;
    let (sns1_url, sns1) = receiver().await;
    let (sns2_url, sns2) = receiver().await;
    let (gen_url, gen_seen) = receiver().await;
    sim.send_webhooks_to(
        &cld_url,
        WebhookKind::Cloudinary,
        DeliveryKnobs {
            cloudinary_algorithm: CloudinaryAlgorithm::Sha256,
            ..DeliveryKnobs::default()
        },
    );
    sim.send_webhooks_to(&sns1_url, WebhookKind::Bynder, DeliveryKnobs::default());
    sim.send_webhooks_to(
        &sns2_url,
        WebhookKind::Bynder,
        DeliveryKnobs {
            sns_signature_version: 2,
            ..DeliveryKnobs::default()
        },
    );
    sim.send_webhooks_to(
        &gen_url,
        WebhookKind::Generic,
        DeliveryKnobs {
            include_asset: true,
            ..DeliveryKnobs::default()
        },
    );
    sim.upsert("w1", json!({"title": "W"}));
    sim.patch("w1", json!({"title": "W2"})).unwrap();
    sim.delete("w1");
    assert!(sim.flush_webhooks(Duration::from_secs(5)).await);

    // Cloudinary: hex SHA-256(body ‖ timestamp ‖ api_secret), not an HMAC.
    let cld = cld.lock().unwrap().clone();
    let types: Vec<String> = cld
        .iter()
        .map(|c| {
            let mut data = c.body.to_vec();
            data.extend_from_slice(h(c, "x-cld-timestamp").as_bytes());
            data.extend_from_slice(cfg.cloudinary_api_secret.as_bytes());
            let expected: String = Sha256::digest(&data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(h(c, "x-cld-signature"), expected);
            let v: Value = serde_json::from_slice(&c.body).unwrap();
            v["notification_type"].as_str().unwrap().to_owned()
        })
        .collect();
    // A title is contextual metadata: its change is a context change.
    assert_eq!(types, ["upload", "resource_context_changed", "delete"]);
    let del: Value = serde_json::from_slice(&cld[2].body).unwrap();
    assert_eq!(del["resources"][0]["asset_id"], "w1");

    // Bynder over SNS, both signature versions, against the served certificate.
    let pem = client()
        .get(sim.sns_cert_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (seen, version) in [(sns1, "1"), (sns2, "2")] {
        let seen = seen.lock().unwrap().clone();
        let subjects: Vec<String> = seen
            .iter()
            .map(|c| {
                let env = verify_sns(c, &pem);
                assert_eq!(env["SignatureVersion"], version);
                assert_eq!(env["SigningCertURL"], sim.sns_cert_url());
                assert_eq!(h(c, "x-amz-sns-message-type"), "Notification");
                assert_eq!(
                    h(c, "x-amz-sns-message-id"),
                    env["MessageId"].as_str().unwrap()
                );
                let msg: Value = serde_json::from_str(env["Message"].as_str().unwrap()).unwrap();
                assert_eq!(msg["media_id"], "w1");
                env["Subject"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(
            subjects,
            [
                "asset_bank.media.create",
                "asset_bank.media.updated",
                "asset_bank.media.deleted"
            ]
        );
    }

    // Generic: Standard Webhooks HMAC-SHA256 with the whsec_ key.
    let key = STANDARD
        .decode(cfg.generic_webhook_secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let gen_seen = gen_seen.lock().unwrap().clone();
    let kinds: Vec<String> = gen_seen
        .iter()
        .map(|c| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
            mac.update(format!("{}.{}.", h(c, "webhook-id"), h(c, "webhook-timestamp")).as_bytes());
            mac.update(&c.body);
            let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
            assert_eq!(h(c, "webhook-signature"), expected);
            assert!(h(c, "webhook-id").starts_with("msg_"));
            let v: Value = serde_json::from_slice(&c.body).unwrap();
            assert_eq!(v["data"]["id"], "w1");
            v["type"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(kinds, ["asset.upserted", "asset.upserted", "asset.deleted"]);
    let first: Value = serde_json::from_slice(&gen_seen[0].body).unwrap();
    assert_eq!(first["data"]["asset"]["fields"]["title"], "W");
    assert_eq!(first["data"]["version"], 1);
    assert_eq!(sim.webhook_stats().delivered, 12);
    sim.shutdown().await;
}

#[tokio::test]
async fn delivery_knobs_drop_duplicate_and_reorder_deterministically() {
    let sim = DamSim::start(DamSimConfig::default()).await.unwrap();
    let (drop_url, dropped) = receiver().await;
    let (dup_url, duped) = receiver().await;
    let (ro_url, reordered) = receiver().await;
    let (manual_url, manual) = receiver().await;
    sim.send_webhooks_to(
        &drop_url,
        WebhookKind::Generic,
        DeliveryKnobs {
            drop_rate: 1.0,
            ..DeliveryKnobs::default()
        },
    );
    sim.send_webhooks_to(
        &dup_url,
        WebhookKind::Bynder,
        DeliveryKnobs {
            duplicate_rate: 1.0,
            delay_min_ms: 1,
            delay_max_ms: 20,
            ..DeliveryKnobs::default()
        },
    );
    sim.send_webhooks_to(
        &ro_url,
        WebhookKind::Generic,
        DeliveryKnobs {
            reorder_window: 4,
            seed: 3,
            ..DeliveryKnobs::default()
        },
    );
    sim.send_webhooks_to(
        &manual_url,
        WebhookKind::Generic,
        DeliveryKnobs {
            auto_notify: false,
            ..DeliveryKnobs::default()
        },
    );
    let ids: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    for id in &ids {
        sim.upsert(id, json!({}));
    }
    assert!(sim.notify("r3"));
    assert!(!sim.notify("unknown"));
    assert!(sim.flush_webhooks(Duration::from_secs(5)).await);

    assert!(dropped.lock().unwrap().is_empty());
    let stats = sim.webhook_stats();
    assert_eq!(
        stats.dropped,
        8 + 1,
        "every auto notice to the drop target, and the manual one"
    );

    let duped = duped.lock().unwrap().clone();
    assert_eq!(duped.len(), 18, "9 notices, each sent twice");
    let mut msg_ids: Vec<&str> = duped.iter().map(|c| h(c, "x-amz-sns-message-id")).collect();
    msg_ids.sort();
    msg_ids.dedup();
    assert_eq!(msg_ids.len(), 9, "a duplicate reuses its MessageId");

    let order: Vec<String> = reordered
        .lock()
        .unwrap()
        .iter()
        .map(|c| {
            let v: Value = serde_json::from_slice(&c.body).unwrap();
            v["data"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    let mut expected: Vec<String> = ids.clone();
    expected.push("r3".into());
    expected.sort();
    assert_eq!(sorted, expected, "nothing lost");
    assert_ne!(order[..8], ids[..], "seeded window shuffles the order");

    let manual = manual.lock().unwrap().clone();
    assert_eq!(
        manual.len(),
        1,
        "auto_notify off: only the on-demand notice"
    );
    let v: Value = serde_json::from_slice(&manual[0].body).unwrap();
    assert_eq!(v["data"]["id"], "r3");
    sim.shutdown().await;
}

#[tokio::test]
async fn sns_subscription_confirmation_is_signed_and_confirmable() {
    let sim = DamSim::start(DamSimConfig::default()).await.unwrap();
    let (url, seen) = receiver().await;
    let token = sim.send_sns_subscription_confirmation(&url, 2).await;
    let c = seen.lock().unwrap()[0].clone();
    let env = verify_sns(&c, &sim.sns_cert_pem());
    assert_eq!(env["Type"], "SubscriptionConfirmation");
    assert_eq!(env["Token"], token.as_str());
    assert!(sim.sns_confirmations().is_empty());
    let r = client()
        .get(env["SubscribeURL"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sim.sns_confirmations(), [token]);
    sim.shutdown().await;
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_the_same_id_and_fresh_signatures() {
    let sim = DamSim::start(DamSimConfig::default()).await.unwrap();
    let secret = sim.config().generic_webhook_secret.clone();
    // A receiver that answers 503 twice, then 200.
    let seen: Arc<Mutex<Vec<Captured>>> = Arc::default();
    let s = seen.clone();
    let app = Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let s = s.clone();
        async move {
            let mut v = s.lock().unwrap();
            v.push(Captured { headers, body });
            if v.len() <= 2 {
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            } else {
                axum::http::StatusCode::OK
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    sim.send_webhooks_to(
        &url,
        WebhookKind::Generic,
        DeliveryKnobs {
            retries: 3,
            retry_backoff_ms: 10,
            ..DeliveryKnobs::default()
        },
    );
    sim.upsert("t1", json!({}));
    assert!(sim.flush_webhooks(Duration::from_secs(5)).await);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        3,
        "two failures, then success; no fourth attempt"
    );
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    for c in &seen {
        assert_eq!(h(c, "webhook-id"), h(&seen[0], "webhook-id"));
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{}.{}.", h(c, "webhook-id"), h(c, "webhook-timestamp")).as_bytes());
        mac.update(&c.body);
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        assert_eq!(h(c, "webhook-signature"), expected);
    }
    let statuses: Vec<Option<u16>> = sim.webhook_log().iter().map(|d| d.status).collect();
    assert_eq!(statuses, [Some(503), Some(503), Some(200)]);
    let stats = sim.webhook_stats();
    assert_eq!((stats.retried, stats.failed, stats.delivered), (2, 2, 1));
    sim.shutdown().await;
}
