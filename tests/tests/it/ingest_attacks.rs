//! Attack suite: every forged, replayed, tampered, oversized or misrouted delivery gets the
//! right status and queues nothing (checked on a real moto SQS queue, one per case).

use crate::support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use shared::ingest::IngestService;
use shared::queue::sqs::SqsChangeQueue;
use support::*;

struct Ctx {
    client: aws_sdk_sqs::Client,
    url: String,
    service: IngestService,
    sns: Arc<FakeSns>,
}

async fn ctx() -> Ctx {
    let client = moto_sqs().await;
    let url = new_queue(&client, "attack").await;
    let queue = Arc::new(SqsChangeQueue::new(client.clone(), url.clone()));
    let (service, sns) = service(queue);
    Ctx {
        client,
        url,
        service,
        sns,
    }
}

impl Ctx {
    async fn expect(
        &self,
        case: &str,
        path: &str,
        headers: &[(String, String)],
        body: impl Into<Vec<u8>>,
        status: u16,
    ) {
        let (got, answer) = post(&self.service, path, headers, body).await;
        assert_eq!(got, status, "{case}: answered {answer}");
        // Error bodies name the class only, never the reason.
        if status >= 400 {
            assert!(
                answer.starts_with(r#"{"error":""#) && !answer.contains(' '),
                "{case}: {answer}"
            );
        }
        assert_queue_empty(&self.client, &self.url, case).await;
    }
}

fn without(headers: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
    headers.into_iter().filter(|(k, _)| k != name).collect()
}

fn replace(mut headers: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
    for (k, v) in &mut headers {
        if k == name {
            *v = value.to_owned();
        }
    }
    headers
}

const CLD: &str = "/webhooks/cloudinary";
const GEN: &str = "/webhooks/generic";
const BYN: &str = "/webhooks/bynder";

fn cld_body() -> String {
    fixture("cloudinary/upload.json")
}

fn gen_body() -> String {
    fixture("generic/asset_upserted.json")
}

// ---- Cloudinary ----

#[tokio::test]
async fn cloudinary_forged_signature() {
    let c = ctx().await;
    let headers = replace(
        cloudinary_headers(&cld_body(), now_secs(), CLOUDINARY_SECRET),
        "x-cld-signature",
        &"ab".repeat(20),
    );
    c.expect("forged", CLD, &headers, cld_body(), 401).await;
}

#[tokio::test]
async fn cloudinary_wrong_secret() {
    let c = ctx().await;
    c.expect(
        "wrong secret",
        CLD,
        &cloudinary_headers(&cld_body(), now_secs(), "not-the-secret"),
        cld_body(),
        401,
    )
    .await;
}

#[tokio::test]
async fn cloudinary_tampered_body() {
    let c = ctx().await;
    let headers = cloudinary_headers(&cld_body(), now_secs(), CLOUDINARY_SECRET);
    let tampered = cld_body().replace(
        "3515c6000a548515f1134043f9785c2f",
        "00000000000000000000000000000000",
    );
    c.expect("tampered body", CLD, &headers, tampered, 401)
        .await;
}

#[tokio::test]
async fn cloudinary_replay_outside_window() {
    let c = ctx().await;
    let headers = cloudinary_headers(&cld_body(), now_secs() - 2 * 3600 - 60, CLOUDINARY_SECRET);
    c.expect("replay", CLD, &headers, cld_body(), 401).await;
}

#[tokio::test]
async fn cloudinary_future_timestamp() {
    let c = ctx().await;
    let headers = cloudinary_headers(&cld_body(), now_secs() + 600, CLOUDINARY_SECRET);
    c.expect("future", CLD, &headers, cld_body(), 401).await;
}

#[tokio::test]
async fn cloudinary_timestamp_changed_after_signing() {
    let c = ctx().await;
    let now = now_secs();
    let headers = replace(
        cloudinary_headers(&cld_body(), now, CLOUDINARY_SECRET),
        "x-cld-timestamp",
        &(now + 1).to_string(),
    );
    c.expect("timestamp changed", CLD, &headers, cld_body(), 401)
        .await;
}

#[tokio::test]
async fn cloudinary_missing_timestamp_header() {
    let c = ctx().await;
    let headers = without(
        cloudinary_headers(&cld_body(), now_secs(), CLOUDINARY_SECRET),
        "x-cld-timestamp",
    );
    c.expect("no timestamp", CLD, &headers, cld_body(), 401)
        .await;
}

#[tokio::test]
async fn cloudinary_missing_signature_header() {
    let c = ctx().await;
    let headers = without(
        cloudinary_headers(&cld_body(), now_secs(), CLOUDINARY_SECRET),
        "x-cld-signature",
    );
    c.expect("no signature", CLD, &headers, cld_body(), 401)
        .await;
}

#[tokio::test]
async fn cloudinary_signed_non_json_is_malformed() {
    let c = ctx().await;
    let body = "notification_type=upload";
    c.expect(
        "non-JSON",
        CLD,
        &cloudinary_headers(body, now_secs(), CLOUDINARY_SECRET),
        body,
        400,
    )
    .await;
}

#[tokio::test]
async fn cloudinary_wrong_content_type() {
    let c = ctx().await;
    let headers = replace(
        cloudinary_headers(&cld_body(), now_secs(), CLOUDINARY_SECRET),
        "content-type",
        "text/plain",
    );
    c.expect("text/plain", CLD, &headers, cld_body(), 415).await;
}

#[tokio::test]
async fn cloudinary_oversized_body() {
    let c = ctx().await;
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(1024 * 1024));
    c.expect(
        "oversized",
        CLD,
        &cloudinary_headers(&body, now_secs(), CLOUDINARY_SECRET),
        body,
        413,
    )
    .await;
}

#[tokio::test]
async fn cloudinary_empty_body() {
    let c = ctx().await;
    c.expect(
        "empty",
        CLD,
        &cloudinary_headers("", now_secs(), CLOUDINARY_SECRET),
        "",
        400,
    )
    .await;
}

// ---- Standard Webhooks (generic) ----

#[tokio::test]
async fn generic_forged_signature() {
    let c = ctx().await;
    let headers = replace(
        generic_headers("msg_1", &gen_body(), now_secs(), GENERIC_SECRET),
        "webhook-signature",
        "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    c.expect("forged", GEN, &headers, gen_body(), 401).await;
}

#[tokio::test]
async fn generic_wrong_secret() {
    let c = ctx().await;
    let wrong = "whsec_c29tZW9uZS1lbHNlcy1zZWNyZXQtMTIzNDU2Nzg5MA==";
    c.expect(
        "wrong secret",
        GEN,
        &generic_headers("msg_1", &gen_body(), now_secs(), wrong),
        gen_body(),
        401,
    )
    .await;
}

#[tokio::test]
async fn generic_replay_outside_window() {
    let c = ctx().await;
    let headers = generic_headers("msg_1", &gen_body(), now_secs() - 301, GENERIC_SECRET);
    c.expect("replay", GEN, &headers, gen_body(), 401).await;
}

#[tokio::test]
async fn generic_future_timestamp() {
    let c = ctx().await;
    let headers = generic_headers("msg_1", &gen_body(), now_secs() + 301, GENERIC_SECRET);
    c.expect("future", GEN, &headers, gen_body(), 401).await;
}

#[tokio::test]
async fn generic_id_swapped_after_signing() {
    let c = ctx().await;
    let headers = replace(
        generic_headers("msg_1", &gen_body(), now_secs(), GENERIC_SECRET),
        "webhook-id",
        "msg_2",
    );
    c.expect("id swapped", GEN, &headers, gen_body(), 401).await;
}

#[tokio::test]
async fn generic_tampered_body() {
    let c = ctx().await;
    let headers = generic_headers("msg_1", &gen_body(), now_secs(), GENERIC_SECRET);
    c.expect(
        "tampered",
        GEN,
        &headers,
        gen_body().replace("BOOT-001", "BOOT-666"),
        401,
    )
    .await;
}

#[tokio::test]
async fn generic_missing_each_header() {
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let c = ctx().await;
        let headers = without(
            generic_headers("msg_1", &gen_body(), now_secs(), GENERIC_SECRET),
            name,
        );
        c.expect(&format!("missing {name}"), GEN, &headers, gen_body(), 401)
            .await;
    }
}

#[tokio::test]
async fn generic_unknown_signature_scheme_only() {
    let c = ctx().await;
    let headers = generic_headers("msg_1", &gen_body(), now_secs(), GENERIC_SECRET);
    let sig = headers
        .iter()
        .find(|(k, _)| k == "webhook-signature")
        .unwrap()
        .1
        .replace("v1,", "v2,");
    c.expect(
        "v2 scheme",
        GEN,
        &replace(headers, "webhook-signature", &sig),
        gen_body(),
        401,
    )
    .await;
}

#[tokio::test]
async fn generic_signed_non_json_is_malformed() {
    let c = ctx().await;
    let body = "<asset id='1'/>";
    let headers = generic_headers("msg_1", body, now_secs(), GENERIC_SECRET);
    c.expect("non-JSON", GEN, &headers, body, 400).await;
}

#[tokio::test]
async fn generic_missing_content_type() {
    let c = ctx().await;
    let headers = without(
        generic_headers("msg_1", &gen_body(), now_secs(), GENERIC_SECRET),
        "content-type",
    );
    c.expect("no content type", GEN, &headers, gen_body(), 415)
        .await;
}

// ---- Bynder via SNS ----

fn notification(version: &str) -> Value {
    signed_fixture("bynder/sns_notification.json", version)
}

async fn expect_sns(c: &Ctx, case: &str, envelope: &Value, status: u16) {
    c.expect(
        case,
        BYN,
        &sns_headers(envelope),
        envelope.to_string(),
        status,
    )
    .await;
}

#[tokio::test]
async fn sns_cert_urls_off_sns_hosts_are_never_fetched() {
    for url in [
        "https://evil.example.com/SimpleNotificationService-1.pem",
        "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.eu-west-1.amazonaws.com.evil.com/SimpleNotificationService-1.pem",
        "https://sns.eu-west-1.amazonaws.com@evil.com/SimpleNotificationService-1.pem",
        "https://evil.com/sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.eu-west-1.amazonaws.com:4443/SimpleNotificationService-1.pem",
    ] {
        let c = ctx().await;
        let mut envelope = notification("2");
        envelope["SigningCertURL"] = Value::from(url);
        expect_sns(&c, url, &envelope, 401).await;
        assert!(
            c.sns.fetched.lock().unwrap().is_empty(),
            "{url} was fetched"
        );
    }
}

#[tokio::test]
async fn sns_wrong_topic() {
    let c = ctx().await;
    let mut envelope = notification("2");
    envelope["TopicArn"] = Value::from("arn:aws:sns:eu-west-1:999999999999:someone-else");
    sign_envelope(&mut envelope, "2", &sns_key().private);
    expect_sns(&c, "foreign topic", &envelope, 401).await;
    // The allow-list is checked before any certificate download.
    assert!(c.sns.fetched.lock().unwrap().is_empty());
}

async fn tamper_each_field(version: &str) {
    let tampered: [(&str, Value); 6] = [
        ("Message", Value::from(r#"{"media_id":"ATTACKER-CHOSEN"}"#)),
        (
            "MessageId",
            Value::from("00000000-0000-0000-0000-000000000000"),
        ),
        ("Subject", Value::from("asset_bank.media.deleted")),
        (
            "Timestamp",
            Value::from(rfc3339(SystemTime::now() + Duration::from_secs(1))),
        ),
        ("TopicArn", Value::from(OTHER_TOPIC)),
        ("Type", Value::from("SubscriptionConfirmation")),
    ];
    for (field, value) in tampered {
        let c = ctx().await;
        let mut envelope = notification(version);
        envelope[field] = value;
        expect_sns(&c, &format!("v{version} {field} tampered"), &envelope, 401).await;
    }
}

#[tokio::test]
async fn sns_v1_tampering_of_each_signed_field() {
    tamper_each_field("1").await;
}

#[tokio::test]
async fn sns_v2_tampering_of_each_signed_field() {
    tamper_each_field("2").await;
}

#[tokio::test]
async fn sns_signature_version_swapped() {
    let c = ctx().await;
    let mut envelope = notification("1");
    envelope["SignatureVersion"] = Value::from("2");
    expect_sns(&c, "v1 signature claimed as v2", &envelope, 401).await;
    let mut envelope = notification("2");
    envelope["SignatureVersion"] = Value::from("3");
    let c = ctx().await;
    expect_sns(&c, "unknown version", &envelope, 401).await;
    assert!(
        c.sns.fetched.lock().unwrap().is_empty(),
        "fetched for an unknown version"
    );
}

#[tokio::test]
async fn sns_stale_timestamp() {
    let c = ctx().await;
    let mut envelope = notification("2");
    envelope["Timestamp"] =
        Value::from(rfc3339(SystemTime::now() - Duration::from_secs(3600 + 60)));
    sign_envelope(&mut envelope, "2", &sns_key().private);
    expect_sns(&c, "stale", &envelope, 401).await;
}

#[tokio::test]
async fn sns_future_timestamp() {
    let c = ctx().await;
    let mut envelope = notification("2");
    envelope["Timestamp"] = Value::from(rfc3339(SystemTime::now() + Duration::from_secs(600)));
    sign_envelope(&mut envelope, "2", &sns_key().private);
    expect_sns(&c, "future", &envelope, 401).await;
}

#[tokio::test]
async fn sns_signed_by_another_key() {
    let c = ctx().await;
    let other = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let mut envelope = notification("2");
    sign_envelope(&mut envelope, "2", &other);
    expect_sns(&c, "other key", &envelope, 401).await;
}

#[tokio::test]
async fn sns_signature_not_base64_and_missing() {
    let c = ctx().await;
    let mut envelope = notification("2");
    envelope["Signature"] = Value::from("%%% not base64 %%%");
    expect_sns(&c, "signature not base64", &envelope, 401).await;
    envelope.as_object_mut().unwrap().remove("Signature");
    expect_sns(&c, "signature missing", &envelope, 401).await;
}

#[tokio::test]
async fn sns_non_json_body() {
    let c = ctx().await;
    c.expect(
        "non-JSON",
        BYN,
        &[h("content-type", "text/plain; charset=UTF-8")],
        "Type=Notification",
        401,
    )
    .await;
}

#[tokio::test]
async fn sns_subscription_for_a_foreign_topic_is_not_confirmed() {
    let c = ctx().await;
    let mut envelope = signed_fixture("bynder/sns_subscription_confirmation.json", "2");
    envelope["TopicArn"] = Value::from("arn:aws:sns:eu-west-1:999999999999:someone-else");
    sign_envelope(&mut envelope, "2", &sns_key().private);
    expect_sns(&c, "foreign subscription", &envelope, 401).await;
    assert!(c.sns.confirmed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn sns_subscribe_url_off_sns_host_is_not_called() {
    let c = ctx().await;
    let mut envelope = signed_fixture("bynder/sns_subscription_confirmation.json", "2");
    envelope["SubscribeURL"] =
        Value::from("https://internal.example.com/admin?Action=ConfirmSubscription");
    sign_envelope(&mut envelope, "2", &sns_key().private);
    expect_sns(&c, "SSRF subscribe URL", &envelope, 401).await;
    assert!(c.sns.confirmed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn sns_tampered_subscription_is_not_confirmed() {
    let c = ctx().await;
    let mut envelope = signed_fixture("bynder/sns_subscription_confirmation.json", "1");
    envelope["Token"] = Value::from("attacker-token");
    expect_sns(&c, "tampered token", &envelope, 401).await;
    assert!(c.sns.confirmed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn sns_certificate_download_failure_is_503() {
    let c = ctx().await;
    c.sns.fail_fetch.store(true, Ordering::SeqCst);
    expect_sns(&c, "cert download fails", &notification("2"), 503).await;
}

#[tokio::test]
async fn sns_wrong_content_type() {
    let c = ctx().await;
    let envelope = notification("2");
    let headers = replace(
        sns_headers(&envelope),
        "content-type",
        "application/x-www-form-urlencoded",
    );
    c.expect(
        "form content type",
        BYN,
        &headers,
        envelope.to_string(),
        415,
    )
    .await;
}

// ---- routing ----

#[tokio::test]
async fn unknown_dam_route() {
    let c = ctx().await;
    let headers = cloudinary_headers(&cld_body(), now_secs(), CLOUDINARY_SECRET);
    c.expect("unknown dam", "/webhooks/acquia", &headers, cld_body(), 404)
        .await;
    c.expect("no dam", "/webhooks", &headers, cld_body(), 404)
        .await;
    c.expect("other path", "/hooks/cloudinary", &headers, cld_body(), 404)
        .await;
}

#[tokio::test]
async fn wrong_method() {
    let c = ctx().await;
    let headers = cloudinary_headers(&cld_body(), now_secs(), CLOUDINARY_SECRET);
    let (status, _) = request(&c.service, "GET", CLD, &headers, cld_body()).await;
    assert_eq!(status, 405);
    assert_queue_empty(&c.client, &c.url, "GET").await;
}

#[tokio::test]
async fn cross_dam_signature_does_not_transfer() {
    // A valid Cloudinary delivery posted to the generic route.
    let c = ctx().await;
    let headers = cloudinary_headers(&cld_body(), now_secs(), CLOUDINARY_SECRET);
    c.expect("cloudinary to generic", GEN, &headers, cld_body(), 401)
        .await;
}

#[tokio::test]
async fn sns_message_type_header_contradicting_the_signed_type() {
    let c = ctx().await;
    let envelope = notification("2");
    let headers = replace(
        sns_headers(&envelope),
        "x-amz-sns-message-type",
        "SubscriptionConfirmation",
    );
    c.expect(
        "type header mismatch",
        BYN,
        &headers,
        envelope.to_string(),
        401,
    )
    .await;
}
