//! The Lambda adapter end to end: a full API Gateway (HTTP API v2) event with a base64 body,
//! SQS failures turning into 5xx, and the reqwest SNS client against a local HTTP server.

use crate::support;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use shared::dam::bynder::sns::{CertificateFetcher, ReqwestSnsClient, SubscriptionConfirmer};
use shared::queue::sqs::SqsChangeQueue;
use shared::queue::{ChangeQueue, QueueError};
use support::*;

#[tokio::test]
async fn api_gateway_event_with_base64_body_is_verified_on_the_decoded_bytes() {
    let client = moto_sqs().await;
    let url = new_queue(&client, "apigw").await;
    let (service, _) = service(Arc::new(SqsChangeQueue::new(client.clone(), url.clone())));

    let body = fixture("generic/asset_upserted.json");
    let mut event: Value = serde_json::from_str(&fixture("apigw/http_api_v2_post.json")).unwrap();
    for (name, value) in generic_headers("msg_apigw", &body, now_secs(), GENERIC_SECRET) {
        event["headers"][name] = Value::from(value);
    }
    event["body"] = Value::from(STANDARD.encode(&body));
    let request: lambda_http::Request =
        serde_json::from_value::<lambda_http::request::LambdaRequest>(event)
            .unwrap()
            .into();

    let response = webhook_ingest::handle(&service, request).await;
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(response.headers()["content-type"], "application/json");

    let messages = receive_all(&client, &url).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(body_event(&messages[0]).dedupe_key, "generic:msg_apigw");
}

#[tokio::test]
async fn sqs_send_failure_answers_503_never_2xx() {
    let client = moto_sqs().await;
    // A queue URL on the moto endpoint that was never created.
    let real = new_queue(&client, "exists").await;
    let missing = format!("{}-missing", real);
    let (service, _) = service(Arc::new(SqsChangeQueue::new(client.clone(), missing)));

    let body = fixture("cloudinary/upload.json");
    let headers = cloudinary_headers(&body, now_secs(), CLOUDINARY_SECRET);
    let (status, answer) = post(&service, "/webhooks/cloudinary", &headers, body).await;
    assert_eq!(
        (status, answer.as_str()),
        (503, r#"{"error":"unavailable"}"#)
    );
    assert_queue_empty(&client, &real, "send to missing queue").await;
}

#[tokio::test]
async fn missing_queue_is_a_permanent_queue_error() {
    let client = moto_sqs().await;
    let real = new_queue(&client, "exists").await;
    let queue = SqsChangeQueue::new(client, format!("{real}-missing"));
    let event = shared::dam::ChangeEvent {
        dam: shared::dam::DamKind::Bynder,
        asset_id: "m".into(),
        kind: shared::dam::ChangeKind::Upsert,
        version: None,
        asset: None,
        dedupe_key: "k".into(),
        received_at_ms: 0,
    };
    let error = queue.enqueue(&[event]).await.unwrap_err();
    assert!(matches!(error, QueueError::Permanent(..)), "{error}");
    assert!(!error.is_retriable());
}

/// Minimal HTTP/1.1 server on loopback (a thread, one request per connection): answers
/// `status` + `body` and records request lines. Enough for the reqwest SNS client.
async fn tiny_server(status: u16, body: String) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for mut socket in listener.incoming().flatten() {
            let mut buf = vec![0u8; 8192];
            let n = socket.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            log.lock()
                .unwrap()
                .push(head.lines().next().unwrap_or_default().to_owned());
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes());
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn reqwest_client_fetches_certificates_and_confirms() {
    let pem = sns_key().cert_pem.clone();
    let (base, seen) = tiny_server(200, pem.clone()).await;
    let client = ReqwestSnsClient::new().unwrap();
    let cert_url = url::Url::parse(&format!("{base}/SimpleNotificationService-x.pem")).unwrap();
    assert_eq!(
        client.fetch_certificate(&cert_url).await.unwrap(),
        pem.into_bytes()
    );
    let confirm = url::Url::parse(&format!("{base}/?Action=ConfirmSubscription&Token=t")).unwrap();
    client.confirm_subscription(&confirm).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "GET /SimpleNotificationService-x.pem HTTP/1.1",
            "GET /?Action=ConfirmSubscription&Token=t HTTP/1.1"
        ]
    );

    let (failing, _) = tiny_server(404, String::new()).await;
    let missing = url::Url::parse(&format!("{failing}/cert.pem")).unwrap();
    assert!(client.fetch_certificate(&missing).await.is_err());
    assert!(client.confirm_subscription(&missing).await.is_err());
}

#[tokio::test]
async fn end_to_end_sns_with_a_locally_served_certificate() {
    // The certificate-source setting lets the real reqwest client fetch over plain HTTP from
    // this loopback server.
    let (base, seen) = tiny_server(200, sns_key().cert_pem.clone()).await;
    let client = moto_sqs().await;
    let url = new_queue(&client, "sns-e2e").await;
    let mut config = config();
    if let Some(sns) = config.bynder.as_mut() {
        sns.cert_sources = vec![base.parse().unwrap()];
    }
    let http = Arc::new(ReqwestSnsClient::new().unwrap());
    let service = shared::ingest::IngestService::from_config(
        &config,
        Arc::new(SqsChangeQueue::new(client.clone(), url.clone())),
        http.clone(),
        http,
    );
    let mut envelope: Value =
        serde_json::from_str(&fixture("bynder/sns_notification.json")).unwrap();
    envelope["Timestamp"] = Value::from(rfc3339(std::time::SystemTime::now()));
    envelope["SigningCertURL"] = Value::from(format!("{base}/cert.pem"));
    sign_envelope(&mut envelope, "2", &sns_key().private);
    let (status, _) = post(
        &service,
        "/webhooks/bynder",
        &sns_headers(&envelope),
        envelope.to_string(),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(receive_all(&client, &url).await.len(), 1);
}

fn events(n: usize) -> Vec<shared::dam::ChangeEvent> {
    (0..n)
        .map(|i| shared::dam::ChangeEvent {
            dam: shared::dam::DamKind::Generic,
            asset_id: format!("a{i}"),
            kind: shared::dam::ChangeKind::Upsert,
            version: None,
            asset: None,
            dedupe_key: format!("k{i}"),
            received_at_ms: 0,
        })
        .collect()
}

fn entry_ids(request_body: &str) -> Vec<String> {
    let request: Value = serde_json::from_str(request_body).unwrap();
    request["Entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Id"].as_str().unwrap().to_owned())
        .collect()
}

const ENTRY_1_FAILED: &str = r#"{"Successful":[{"Id":"0","MessageId":"m0","MD5OfMessageBody":"x"},
    {"Id":"2","MessageId":"m2","MD5OfMessageBody":"x"}],
    "Failed":[{"Id":"1","SenderFault":false,"Code":"InternalError","Message":"try again"}]}"#;

#[tokio::test]
async fn partly_failed_batch_retries_only_the_failed_entries() {
    let ok = r#"{"Successful":[{"Id":"1","MessageId":"m1","MD5OfMessageBody":"x"}],"Failed":[]}"#;
    let (endpoint, requests) =
        scripted_http(vec![(200, ENTRY_1_FAILED.to_owned()), (200, ok.to_owned())]);
    let queue = SqsChangeQueue::new(
        scripted_sqs(&endpoint),
        format!("{endpoint}/123456789012/q"),
    );
    queue.enqueue(&events(3)).await.unwrap();
    let requests = requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    assert_eq!(entry_ids(&requests[0]), ["0", "1", "2"]);
    assert_eq!(entry_ids(&requests[1]), ["1"]);
}

#[tokio::test]
async fn entries_still_failing_after_the_last_attempt_are_a_transient_error() {
    let (endpoint, requests) = scripted_http(vec![(200, ENTRY_1_FAILED.to_owned())]);
    let queue = SqsChangeQueue::new(
        scripted_sqs(&endpoint),
        format!("{endpoint}/123456789012/q"),
    );
    let error = queue.enqueue(&events(3)).await.unwrap_err();
    assert!(error.is_retriable(), "{error}");
    // Default: 3 attempts in all.
    assert_eq!(requests.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn sender_fault_entries_are_not_retried() {
    let rejected = r#"{"Successful":[],"Failed":[{"Id":"0","SenderFault":true,
        "Code":"InvalidParameterValue","Message":"bad attribute"}]}"#;
    let (endpoint, requests) = scripted_http(vec![(200, rejected.to_owned())]);
    let queue = SqsChangeQueue::new(
        scripted_sqs(&endpoint),
        format!("{endpoint}/123456789012/q"),
    );
    let error = queue.enqueue(&events(1)).await.unwrap_err();
    assert!(matches!(error, QueueError::Permanent(..)), "{error}");
    assert_eq!(requests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn server_errors_and_throttling_are_transient() {
    for (status, body) in [
        (500, r#"{"__type":"InternalError","message":"boom"}"#),
        (
            400,
            r#"{"__type":"com.amazonaws.sqs#RequestThrottled","message":"slow down"}"#,
        ),
    ] {
        let (endpoint, _) = scripted_http(vec![(status, body.to_owned())]);
        let queue = SqsChangeQueue::new(
            scripted_sqs(&endpoint),
            format!("{endpoint}/123456789012/q"),
        );
        let error = queue.enqueue(&events(1)).await.unwrap_err();
        assert!(error.is_retriable(), "{status}: {error}");
    }
}

#[tokio::test]
async fn secrets_manager_values_override_the_environment() {
    let aws = moto_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    let name = format!("ingest-{}-{}", std::process::id(), now_secs());
    let secret = serde_json::json!({ "CLOUDINARY_API_SECRET": "from-secret" }).to_string();
    let created = secrets
        .create_secret()
        .name(&name)
        .secret_string(secret)
        .send()
        .await
        .unwrap();
    let arn = created.arn().unwrap().to_owned();

    let env = |name: &str| match name {
        "SECRETS_ARN" => Some(arn.clone()),
        "QUEUE_URL" => Some("https://sqs.eu-west-1.amazonaws.com/123456789012/q".to_owned()),
        "CLOUDINARY_API_SECRET" => Some("from-env".to_owned()),
        _ => None,
    };
    let config = webhook_ingest::load_config(&aws, env).await.unwrap().ingest;
    assert!(config.bynder.is_none() && config.generic.is_none());
    let queue = Arc::new(shared::testing::MemoryChangeQueue::new());
    let sns = Arc::new(FakeSns::default());
    let service =
        shared::ingest::IngestService::from_config(&config, queue.clone(), sns.clone(), sns);

    let body = fixture("cloudinary/upload.json");
    let (status, _) = post(
        &service,
        "/webhooks/cloudinary",
        &cloudinary_headers(&body, now_secs(), "from-env"),
        body.clone(),
    )
    .await;
    assert_eq!(status, 401, "the environment value is overridden");
    let (status, _) = post(
        &service,
        "/webhooks/cloudinary",
        &cloudinary_headers(&body, now_secs(), "from-secret"),
        body,
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(queue.len(), 1);

    let missing = |name: &str| match name {
        "SECRETS_ARN" => Some(format!("{arn}-missing")),
        "QUEUE_URL" => Some("q".to_owned()),
        _ => None,
    };
    assert!(webhook_ingest::load_config(&aws, missing).await.is_err());
}
