//! Happy paths, one per DAM notification shape: real-format fixtures go through the Lambda
//! handler into a moto SQS queue, and exactly the expected messages come back out.

use crate::support;

use std::sync::Arc;

use serde_json::Value;
use shared::dam::{ChangeKind, DamKind};
use shared::queue::sqs::{ATTR_DAM, ATTR_DEDUPE_KEY, ATTR_RECEIVED_AT_MS, SqsChangeQueue};
use support::*;

async fn setup(
    prefix: &str,
) -> (
    aws_sdk_sqs::Client,
    String,
    shared::ingest::IngestService,
    Arc<FakeSns>,
) {
    let client = moto_sqs().await;
    let url = new_queue(&client, prefix).await;
    let queue = Arc::new(SqsChangeQueue::new(client.clone(), url.clone()));
    let (service, sns) = service(queue);
    (client, url, service, sns)
}

#[tokio::test]
async fn cloudinary_upload_queues_one_upsert() {
    let (client, url, service, _) = setup("cld-upload").await;
    let body = fixture("cloudinary/upload.json");
    let (status, answer) = post(
        &service,
        "/webhooks/cloudinary",
        &cloudinary_headers(&body, now_secs(), CLOUDINARY_SECRET),
        body,
    )
    .await;
    assert_eq!(
        (status, answer.as_str()),
        (202, r#"{"status":"accepted","queued":1}"#)
    );

    let messages = receive_all(&client, &url).await;
    assert_eq!(messages.len(), 1);
    let event = body_event(&messages[0]);
    assert_eq!(event.dam, DamKind::Cloudinary);
    assert_eq!(event.asset_id, "3515c6000a548515f1134043f9785c2f");
    assert_eq!(event.kind, ChangeKind::Upsert);
    let version = event.version.unwrap();
    assert_eq!(version.seq, 1_795_860_942);
    // A notification time is not the Admin API's `updated_at`: the hint is the version only.
    assert_eq!(version.modified_at_ms, 0);
    assert_eq!(attribute(&messages[0], ATTR_DEDUPE_KEY), event.dedupe_key);
    assert_eq!(
        attribute(&messages[0], ATTR_RECEIVED_AT_MS),
        event.received_at_ms.to_string()
    );
    assert_eq!(attribute(&messages[0], ATTR_DAM), "cloudinary");
}

#[tokio::test]
async fn cloudinary_delete_queues_one_delete_per_resource() {
    let (client, url, service, _) = setup("cld-delete").await;
    let body = fixture("cloudinary/delete.json");
    let headers = cloudinary_headers(&body, now_secs(), CLOUDINARY_SECRET);
    let (status, _) = post(&service, "/webhooks/cloudinary", &headers, body).await;
    assert_eq!(status, 202);

    let mut events: Vec<_> = receive_all(&client, &url)
        .await
        .iter()
        .map(body_event)
        .collect();
    events.sort_by(|a, b| a.asset_id.cmp(&b.asset_id));
    let got: Vec<_> = events
        .iter()
        .map(|e| (e.asset_id.as_str(), e.kind))
        .collect();
    assert_eq!(
        got,
        [
            ("3515c6000a548515f1134043f9785c2f", ChangeKind::Delete),
            ("e2b4a5c6d7e8f9a0b1c2d3e4f5a6b7c8", ChangeKind::Delete),
        ]
    );
}

#[tokio::test]
async fn cloudinary_tag_change_and_rename_are_upserts_and_eager_is_ignored() {
    let (client, url, service, _) = setup("cld-misc").await;
    for name in ["resource_tags_changed", "rename", "eager"] {
        let body = fixture(&format!("cloudinary/{name}.json"));
        let headers = cloudinary_headers(&body, now_secs(), CLOUDINARY_SECRET);
        let (status, _) = post(&service, "/webhooks/cloudinary", &headers, body).await;
        assert_eq!(status, 202, "{name}");
    }
    let events: Vec<_> = receive_all(&client, &url)
        .await
        .iter()
        .map(body_event)
        .collect();
    assert_eq!(events.len(), 2, "eager notifications queue nothing");
    assert!(
        events
            .iter()
            .all(|e| e.kind == ChangeKind::Upsert
                && e.asset_id == "3515c6000a548515f1134043f9785c2f")
    );
    assert_ne!(events[0].dedupe_key, events[1].dedupe_key);
}

#[tokio::test]
async fn bynder_sns_notification_v1_and_v2_queue_the_media_id() {
    let (client, url, service, sns) = setup("bynder").await;
    for version in ["1", "2"] {
        let mut envelope = signed_fixture("bynder/sns_notification.json", version);
        envelope["MessageId"] = Value::from(format!("msg-v{version}"));
        support::sign_envelope(&mut envelope, version, &sns_key().private);
        let (status, _) = post(
            &service,
            "/webhooks/bynder",
            &sns_headers(&envelope),
            envelope.to_string(),
        )
        .await;
        assert_eq!(status, 202, "SignatureVersion {version}");
    }
    let mut events: Vec<_> = receive_all(&client, &url)
        .await
        .iter()
        .map(body_event)
        .collect();
    events.sort_by(|a, b| a.dedupe_key.cmp(&b.dedupe_key));
    assert_eq!(events.len(), 2);
    for (event, key) in events.iter().zip(["bynder:msg-v1", "bynder:msg-v2"]) {
        assert_eq!(event.dam, DamKind::Bynder);
        assert_eq!(event.asset_id, "8C5A1A3E-24E5-4F4B-9C3A2D1E0F9B8A7C");
        assert_eq!(event.kind, ChangeKind::Upsert);
        assert_eq!(event.dedupe_key, key);
    }
    // The certificate is fetched once and cached for the second message.
    assert_eq!(*sns.fetched.lock().unwrap(), [CERT_URL]);
}

#[tokio::test]
async fn bynder_archive_is_a_delete_and_pre_archive_queues_nothing() {
    let (client, url, service, _) = setup("bynder-archive").await;
    for (subject, id) in [
        ("asset_bank.media.archived", "m1"),
        ("asset_bank.media.pre_archived", "m2"),
    ] {
        let mut envelope = signed_fixture("bynder/sns_notification.json", "2");
        envelope["Subject"] = Value::from(subject);
        envelope["MessageId"] = Value::from(id);
        support::sign_envelope(&mut envelope, "2", &sns_key().private);
        let (status, _) = post(
            &service,
            "/webhooks/bynder",
            &sns_headers(&envelope),
            envelope.to_string(),
        )
        .await;
        assert_eq!(status, 202, "{subject}");
    }
    let events: Vec<_> = receive_all(&client, &url)
        .await
        .iter()
        .map(body_event)
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].kind, events[0].dedupe_key.as_str()),
        (ChangeKind::Delete, "bynder:m1")
    );
}

#[tokio::test]
async fn bynder_subscription_confirmation_is_confirmed_not_queued() {
    let (client, url, service, sns) = setup("bynder-sub").await;
    let envelope = signed_fixture("bynder/sns_subscription_confirmation.json", "2");
    let (status, answer) = post(
        &service,
        "/webhooks/bynder",
        &sns_headers(&envelope),
        envelope.to_string(),
    )
    .await;
    assert_eq!((status, answer.as_str()), (200, r#"{"status":"handled"}"#));
    assert_eq!(
        *sns.confirmed.lock().unwrap(),
        [envelope["SubscribeURL"].as_str().unwrap()]
    );
    assert_queue_empty(&client, &url, "subscription confirmation").await;
}

#[tokio::test]
async fn generic_single_event_carries_the_full_asset() {
    let (client, url, service, _) = setup("generic").await;
    let body = fixture("generic/asset_upserted.json");
    let headers = generic_headers("msg_2fX1", &body, now_secs(), GENERIC_SECRET);
    let (status, _) = post(&service, "/webhooks/generic", &headers, body).await;
    assert_eq!(status, 202);

    let messages = receive_all(&client, &url).await;
    assert_eq!(messages.len(), 1);
    let event = body_event(&messages[0]);
    assert_eq!(
        (event.asset_id.as_str(), event.kind),
        ("ast_01HZX8Q2M4", ChangeKind::Upsert)
    );
    assert_eq!(event.dedupe_key, "generic:msg_2fX1");
    let asset = event.asset.expect("full asset carried");
    assert_eq!(asset.version.seq, 7);
    // The whole asset object, as the REST read gives it.
    assert_eq!(asset.fields["fields"]["sku"][0], "BOOT-001");
}

#[tokio::test]
async fn generic_array_form_queues_each_item_and_rotated_secret_is_accepted() {
    let (client, url, service, _) = setup("generic-array").await;
    let body = fixture("generic/asset_deleted.json");
    // Signed with the second configured secret (rotation on our side).
    let headers = generic_headers("msg_del", &body, now_secs(), OTHER_GENERIC_SECRET);
    let (status, answer) = post(&service, "/webhooks/generic", &headers, body).await;
    assert_eq!(
        (status, answer.as_str()),
        (202, r#"{"status":"accepted","queued":2}"#)
    );

    let mut keys: Vec<_> = receive_all(&client, &url)
        .await
        .iter()
        .map(|m| {
            let e = body_event(m);
            assert_eq!(e.kind, ChangeKind::Delete);
            (e.asset_id, e.dedupe_key)
        })
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            ("ast_01HZX8Q2M4".to_owned(), "generic:msg_del#0".to_owned()),
            ("ast_01HZX8Q2M5".to_owned(), "generic:msg_del#1".to_owned()),
        ]
    );
}

#[tokio::test]
async fn more_than_ten_events_are_sent_in_several_batches() {
    let client = moto_sqs().await;
    let url = new_queue(&client, "batches").await;
    let queue = SqsChangeQueue::new(client.clone(), url.clone());
    let events: Vec<_> = (0..23)
        .map(|i| shared::dam::ChangeEvent {
            dam: DamKind::Generic,
            asset_id: format!("a{i}"),
            kind: ChangeKind::Upsert,
            version: None,
            asset: None,
            dedupe_key: format!("k{i}"),
            received_at_ms: 1,
        })
        .collect();
    shared::queue::ChangeQueue::enqueue(&queue, &events)
        .await
        .unwrap();
    let mut ids: Vec<_> = receive_all(&client, &url)
        .await
        .iter()
        .map(|m| body_event(m).asset_id)
        .collect();
    ids.sort_by_key(|id| id[1..].parse::<u32>().unwrap());
    let expected: Vec<_> = (0..23).map(|i| format!("a{i}")).collect();
    assert_eq!(ids, expected);
}

/// A generic webhook that carries the full asset gives exactly the asset a REST read of the
/// same asset gives, so a mapping addressing `fields.title` maps both the same way.
#[tokio::test]
async fn generic_carried_asset_equals_the_rest_read_and_maps_the_same() {
    use shared::dam::generic::api::{GenericApi, GenericApiSettings};
    use shared::dam::generic::webhook::{GenericSettings, GenericWebhookVerifier, SigningSecret};
    use shared::dam::{AssetSource, Fetched, WebhookOutcome, WebhookRequest, WebhookVerifier};
    use shared::mapping::{MapOutcome, Mapping};

    let sim = dam_sim::DamSim::start(dam_sim::DamSimConfig::default())
        .await
        .unwrap();
    let wire = sim.upsert("g5", serde_json::json!({"title": "Five", "sku": "AB-5"}));
    let api = GenericApi::new(GenericApiSettings::new(
        url::Url::parse(&sim.generic_base_url()).unwrap(),
        sim.config().generic_token.clone().into(),
    ))
    .unwrap();
    let Fetched::Found(read) = api.fetch(&["g5".into()]).await.unwrap().remove(0) else {
        panic!("g5 not found over REST")
    };

    let body = serde_json::json!({
        "type": "asset.upserted",
        "data": {"id": "g5", "asset": wire},
    })
    .to_string();
    let secret = SigningSecret::parse(&sim.config().generic_webhook_secret).unwrap();
    let ts = now_secs().to_string();
    let request = WebhookRequest {
        headers: vec![
            ("webhook-id".into(), "msg_g5".into()),
            ("webhook-timestamp".into(), ts.clone()),
            (
                "webhook-signature".into(),
                format!("v1,{}", secret.sign("msg_g5", &ts, body.as_bytes())),
            ),
        ],
        body: body.into(),
        received_at: std::time::SystemTime::now(),
    };
    let verifier = GenericWebhookVerifier::new(GenericSettings::new(vec![secret]));
    let WebhookOutcome::Events(events) = verifier.verify(&request).await.unwrap() else {
        panic!("not events")
    };
    let carried = events[0].asset.clone().expect("full asset carried");
    assert_eq!(carried, read);

    let mapping = Mapping::from_toml_str(
        r#"
[settings]
code = "{{id}}"

[[route]]
family = "packshot"
require = [ { field = "fields.title", exists = true } ]

[route.values.alt_text]
locales = { en_US = "fields.title" }

[route.values.product_ref]
field = "fields.sku"
"#,
        "test mapping",
    )
    .unwrap();
    let packshot: shared::akeneo::FamilyStructure = serde_json::from_value(serde_json::json!({
        "family": {"code": "packshot"},
        "attributes": [
            {"code": "alt_text", "type": "text", "value_per_locale": true},
            {"code": "product_ref", "type": "text"},
        ],
        "options": {},
    }))
    .unwrap();
    let map = |a: &shared::dam::DamAsset| mapping.map_asset(&a.id, &a.fields, |_| Some(&packshot));
    let (from_webhook, from_rest) = (map(&carried), map(&read));
    assert_eq!(from_webhook, from_rest);
    let MapOutcome::Mapped(mapped) = from_webhook else {
        panic!("not mapped: {from_webhook:?}")
    };
    let alt = serde_json::to_value(&mapped.asset.values["alt_text"]).unwrap();
    assert_eq!(alt[0]["data"], "Five", "{alt}");
    sim.shutdown().await;
}
