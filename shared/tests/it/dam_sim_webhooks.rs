//! Cross-check: webhooks sent by dam-sim pass the production verifiers and turn into the
//! expected change events (the sender and the verifiers were written independently).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use dam_sim::{CloudinaryAlgorithm, DamSim, DamSimConfig, DeliveryKnobs, WebhookKind};
use serde_json::json;
use shared::dam::bynder::sns::{ReqwestSnsClient, SnsSettings};
use shared::dam::bynder::webhook::BynderWebhookVerifier;
use shared::dam::cloudinary::webhook::{CloudinarySettings, CloudinaryWebhookVerifier};
use shared::dam::generic::webhook::{GenericSettings, GenericWebhookVerifier, SigningSecret};
use shared::dam::settings::DamSettings;
use shared::dam::{ChangeKind, WebhookError, WebhookOutcome, WebhookRequest, WebhookVerifier};

type Seen = Arc<Mutex<Vec<WebhookRequest>>>;

/// A receiver that records each delivery as the ingest function would see it.
async fn receiver() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let s = s.clone();
        async move {
            let headers = headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_lowercase(),
                        v.to_str().unwrap_or("").to_owned(),
                    )
                })
                .collect();
            s.lock().unwrap().push(WebhookRequest {
                headers,
                body,
                received_at: SystemTime::now(),
            });
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// (kind, asset id, version seq) of every event the verifier makes of the deliveries.
async fn verify_all(
    v: &dyn WebhookVerifier,
    seen: &Seen,
) -> Vec<(ChangeKind, String, Option<i64>)> {
    let requests = seen.lock().unwrap().clone();
    let mut out = Vec::new();
    for r in &requests {
        match v.verify(r).await.expect("sim webhook verifies") {
            WebhookOutcome::Events(events) => {
                for e in events {
                    out.push((e.kind, e.asset_id, e.version.map(|v| v.seq)));
                }
            }
            WebhookOutcome::Handled(h) => panic!("unexpected control message: {h}"),
        }
    }
    out
}

#[tokio::test]
async fn sim_webhooks_pass_the_production_verifiers() {
    let sim = DamSim::start(DamSimConfig::default()).await.unwrap();
    let cfg = sim.config().clone();
    let (cld1_url, cld1) = receiver().await;
    let (cld256_url, cld256) = receiver().await;
    let (sns_url, sns) = receiver().await;
    let (gen_url, gen_seen) = receiver().await;
    sim.send_webhooks_to(&cld1_url, WebhookKind::Cloudinary, DeliveryKnobs::default());
    sim.send_webhooks_to(
        &cld256_url,
        WebhookKind::Cloudinary,
        DeliveryKnobs {
            cloudinary_algorithm: CloudinaryAlgorithm::Sha256,
            ..DeliveryKnobs::default()
        },
    );
    sim.send_webhooks_to(
        &sns_url,
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
    sim.upsert("x1", json!({"title": "X"}));
    sim.patch("x1", json!({"title": "X2"})).unwrap();
    assert!(sim.delete("x1"));
    assert!(sim.flush_webhooks(Duration::from_secs(5)).await);

    let cloudinary = CloudinaryWebhookVerifier::new(CloudinarySettings::new(
        cfg.cloudinary_api_secret.clone().into(),
    ));
    // Cloudinary's `version` is the second of the file's upload: a context edit keeps it.
    let uploaded = Some(sim.asset("x1").unwrap().uploaded_at_ms / 1000);
    let expected = vec![
        (ChangeKind::Upsert, "x1".to_owned(), uploaded),
        (ChangeKind::Upsert, "x1".to_owned(), uploaded),
        (ChangeKind::Delete, "x1".to_owned(), uploaded),
    ];
    assert_eq!(verify_all(&cloudinary, &cld1).await, expected);
    assert_eq!(verify_all(&cloudinary, &cld256).await, expected);

    let client = Arc::new(ReqwestSnsClient::new().unwrap());
    // By default only AWS's SNS hosts may serve certificates: the sim's is refused.
    let default = BynderWebhookVerifier::new(
        SnsSettings::new(vec![cfg.sns_topic_arn.clone()]),
        client.clone(),
        client.clone(),
    );
    let first = sns.lock().unwrap()[0].clone();
    assert!(matches!(
        default.verify(&first).await,
        Err(WebhookError::Unauthorized(_))
    ));
    // A private test bed lists the sim's loopback address in `[dam] sns_cert_hosts`.
    let dam: DamSettings = toml::from_str(&format!(
        "kind = 'bynder'\ntopic_arns = ['{}']\nsns_cert_hosts = ['{}/_sim/sns/']",
        cfg.sns_topic_arn,
        sim.base_url()
    ))
    .unwrap();
    let settings = dam.bynder_webhook().unwrap().unwrap();
    let bynder = BynderWebhookVerifier::new(settings, client.clone(), client);
    let kinds: Vec<(ChangeKind, String)> = verify_all(&bynder, &sns)
        .await
        .into_iter()
        .map(|(k, id, _)| (k, id))
        .collect();
    assert_eq!(
        kinds,
        [
            (ChangeKind::Upsert, "x1".to_owned()),
            (ChangeKind::Upsert, "x1".to_owned()),
            (ChangeKind::Delete, "x1".to_owned()),
        ]
    );

    let secret = SigningSecret::parse(&cfg.generic_webhook_secret).unwrap();
    let generic = GenericWebhookVerifier::new(GenericSettings::new(vec![secret]));
    // The generic contract's `version` counts every change.
    let counted = vec![
        (ChangeKind::Upsert, "x1".to_owned(), Some(1)),
        (ChangeKind::Upsert, "x1".to_owned(), Some(2)),
        (ChangeKind::Delete, "x1".to_owned(), Some(3)),
    ];
    assert_eq!(verify_all(&generic, &gen_seen).await, counted);

    // A subscription confirmation from the sim is confirmed by the verifier.
    let (conf_url, conf) = receiver().await;
    let token = sim.send_sns_subscription_confirmation(&conf_url, 1).await;
    let request = conf.lock().unwrap()[0].clone();
    let outcome = bynder.verify(&request).await.unwrap();
    assert!(matches!(outcome, WebhookOutcome::Handled(_)), "{outcome:?}");
    assert_eq!(sim.sns_confirmations(), [token]);
    sim.shutdown().await;
}
