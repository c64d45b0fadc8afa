//! Shared setup of the ingest tests: signing keys and secrets, a fake SNS certificate host,
//! moto SQS queues, and a way to call the Lambda handler with a raw HTTP request.
// The tests and the ingest benchmark each use a different subset of these helpers.
#![allow(dead_code)]

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{Message, QueueAttributeName};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
pub use dam_sync_tests::{GENERIC_SECRET, moto_config};
use lambda_http::Body;
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde_json::Value;
use shared::dam::bynder::sns::{CertificateFetcher, SnsSettings, SubscriptionConfirmer};
use shared::dam::cloudinary::webhook::{CloudinarySettings, SignatureAlgorithm, signature};
use shared::dam::generic::webhook::{GenericSettings, SigningSecret};
use shared::ingest::{IngestConfig, IngestService, IngestSettings};
use shared::queue::ChangeQueue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use url::Url;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::EncodePem;
use x509_cert::der::pem::LineEnding;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::Validity;

pub const CLOUDINARY_SECRET: &str = "cld-test-api-secret-9f8e7d";
pub const OTHER_GENERIC_SECRET: &str = "whsec_YW5vdGhlci10ZXN0LW9ubHktc2VjcmV0LWtleS0xMjM=";
pub const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:bynder-acme-asset-events";
/// A second allowed topic, so TopicArn tampering is caught by the signature, not the list.
pub const OTHER_TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:bynder-acme-other-events";
pub const CERT_URL: &str = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem";

pub fn fixture(path: &str) -> String {
    let full = format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("fixture {full}: {e}"))
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn rfc3339(at: SystemTime) -> String {
    OffsetDateTime::from(at).format(&Rfc3339).unwrap()
}

// ---- SNS: a test-only RSA key and self-signed certificate, made at run time ----

pub struct SnsKey {
    pub private: RsaPrivateKey,
    pub cert_pem: String,
}

/// One key per test binary: RSA generation is the slow part.
pub fn sns_key() -> &'static SnsKey {
    static KEY: OnceLock<SnsKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let private = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let cert_pem = self_signed(&private, Duration::from_secs(24 * 3600));
        SnsKey { private, cert_pem }
    })
}

pub fn self_signed(private: &RsaPrivateKey, valid_for: Duration) -> String {
    let signer = SigningKey::<sha2::Sha256>::new(private.clone());
    let spki = SubjectPublicKeyInfoOwned::from_key(private.to_public_key()).unwrap();
    let builder = CertificateBuilder::new(
        Profile::Root,
        SerialNumber::from(1u32),
        Validity::from_now(valid_for).unwrap(),
        Name::from_str("CN=sns.amazonaws.com").unwrap(),
        spki,
        &signer,
    )
    .unwrap();
    let cert = builder.build::<rsa::pkcs1v15::Signature>().unwrap();
    cert.to_pem(LineEnding::LF).unwrap()
}

/// Signs an SNS envelope the way SNS does (written independently of the verifier).
pub fn sign_envelope(envelope: &mut Value, version: &str, key: &RsaPrivateKey) {
    envelope["SignatureVersion"] = Value::from(version);
    let keys: &[&str] = if envelope["Type"] == "Notification" {
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
    let mut to_sign = String::new();
    for key_name in keys {
        if let Some(value) = envelope.get(*key_name).and_then(Value::as_str) {
            to_sign.push_str(&format!("{key_name}\n{value}\n"));
        }
    }
    let signature = match version {
        "1" => SigningKey::<sha1::Sha1>::new(key.clone())
            .sign(to_sign.as_bytes())
            .to_vec(),
        _ => SigningKey::<sha2::Sha256>::new(key.clone())
            .sign(to_sign.as_bytes())
            .to_vec(),
    };
    envelope["Signature"] = Value::from(STANDARD.encode(signature));
}

/// A fixture envelope with a fresh Timestamp, signed with the test key.
pub fn signed_fixture(path: &str, version: &str) -> Value {
    let mut envelope: Value = serde_json::from_str(&fixture(path)).unwrap();
    envelope["Timestamp"] = Value::from(rfc3339(SystemTime::now()));
    sign_envelope(&mut envelope, version, &sns_key().private);
    envelope
}

/// Serves the test certificate for any URL and records what it was asked for.
#[derive(Default)]
pub struct FakeSns {
    pub fetched: Mutex<Vec<String>>,
    pub confirmed: Mutex<Vec<String>>,
    pub fail_fetch: AtomicBool,
}

#[async_trait]
impl CertificateFetcher for FakeSns {
    async fn fetch_certificate(&self, url: &Url) -> Result<Vec<u8>, String> {
        self.fetched.lock().unwrap().push(url.to_string());
        if self.fail_fetch.load(Ordering::SeqCst) {
            return Err("connection reset".into());
        }
        Ok(sns_key().cert_pem.clone().into_bytes())
    }
}

#[async_trait]
impl SubscriptionConfirmer for FakeSns {
    async fn confirm_subscription(&self, url: &Url) -> Result<(), String> {
        self.confirmed.lock().unwrap().push(url.to_string());
        Ok(())
    }
}

// ---- the service under test ----

pub fn config() -> IngestConfig {
    IngestConfig {
        settings: IngestSettings::default(),
        cloudinary: Some(CloudinarySettings::new(CLOUDINARY_SECRET.into())),
        bynder: Some(SnsSettings::new(vec![
            TOPIC.to_owned(),
            OTHER_TOPIC.to_owned(),
        ])),
        generic: Some(GenericSettings::new(vec![
            SigningSecret::parse(GENERIC_SECRET).unwrap(),
            SigningSecret::parse(OTHER_GENERIC_SECRET).unwrap(),
        ])),
    }
}

/// All three DAMs configured, SNS served by a [`FakeSns`].
pub fn service(queue: Arc<dyn ChangeQueue>) -> (IngestService, Arc<FakeSns>) {
    let sns = Arc::new(FakeSns::default());
    let service = IngestService::from_config(&config(), queue, sns.clone(), sns.clone());
    (service, sns)
}

/// POSTs through the Lambda handler, as API Gateway would deliver it.
pub async fn post(
    service: &IngestService,
    path: &str,
    headers: &[(String, String)],
    body: impl Into<Vec<u8>>,
) -> (u16, String) {
    request(service, "POST", path, headers, body).await
}

pub async fn request(
    service: &IngestService,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: impl Into<Vec<u8>>,
) -> (u16, String) {
    let mut builder = lambda_http::http::Request::builder()
        .method(method)
        .uri(format!(
            "https://abc123def4.execute-api.eu-west-1.amazonaws.com{path}"
        ));
    for (name, value) in headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let request = builder.body(Body::Binary(body.into())).unwrap();
    let response = webhook_ingest::handle(service, request).await;
    let text = match response.body() {
        Body::Text(text) => text.clone(),
        other => panic!("non-text response body {other:?}"),
    };
    (response.status().as_u16(), text)
}

pub fn h(name: &str, value: &str) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

pub fn cloudinary_headers(body: &str, timestamp: u64, secret: &str) -> Vec<(String, String)> {
    let ts = timestamp.to_string();
    vec![
        h("content-type", "application/json"),
        h("x-cld-timestamp", &ts),
        h(
            "x-cld-signature",
            &signature(SignatureAlgorithm::Sha1, body.as_bytes(), &ts, secret),
        ),
    ]
}

pub fn generic_headers(
    id: &str,
    body: &str,
    timestamp: u64,
    secret: &str,
) -> Vec<(String, String)> {
    let ts = timestamp.to_string();
    let sig = SigningSecret::parse(secret)
        .unwrap()
        .sign(id, &ts, body.as_bytes());
    vec![
        h("content-type", "application/json"),
        h("webhook-id", id),
        h("webhook-timestamp", &ts),
        h("webhook-signature", &format!("v1,{sig}")),
    ]
}

pub fn sns_headers(envelope: &Value) -> Vec<(String, String)> {
    vec![
        h("content-type", "text/plain; charset=UTF-8"),
        h(
            "x-amz-sns-message-type",
            envelope["Type"].as_str().unwrap_or_default(),
        ),
        h(
            "x-amz-sns-topic-arn",
            envelope["TopicArn"].as_str().unwrap_or_default(),
        ),
    ]
}

// ---- moto SQS ----

/// An SQS client for moto (see [`moto_config`]).
pub async fn moto_sqs() -> Client {
    Client::new(&moto_config().await)
}

/// A fresh, uniquely named standard queue.
pub async fn new_queue(client: &Client, prefix: &str) -> String {
    dam_sync_tests::new_queue(client, prefix, &[]).await
}

/// Everything currently in the queue (messages stay invisible afterwards).
pub async fn receive_all(client: &Client, queue_url: &str) -> Vec<Message> {
    let mut out = Vec::new();
    loop {
        let batch = client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .visibility_timeout(300)
            .wait_time_seconds(0)
            .send()
            .await
            .unwrap();
        let messages = batch.messages().to_vec();
        if messages.is_empty() {
            return out;
        }
        out.extend(messages);
    }
}

/// Asserts nothing was queued: no receivable message and no message in flight.
pub async fn assert_queue_empty(client: &Client, queue_url: &str, case: &str) {
    let attrs = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let count = |name: QueueAttributeName| {
        attrs
            .attributes()
            .and_then(|a| a.get(&name))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        count(QueueAttributeName::ApproximateNumberOfMessages),
        "0",
        "{case}: queued"
    );
    assert_eq!(
        count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        "0",
        "{case}: in flight"
    );
    assert!(
        receive_all(client, queue_url).await.is_empty(),
        "{case}: received a message"
    );
}

pub fn body_event(message: &Message) -> shared::dam::ChangeEvent {
    serde_json::from_str(message.body().unwrap()).unwrap()
}

pub fn attribute(message: &Message, name: &str) -> String {
    message
        .message_attributes()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value())
        .unwrap_or_else(|| panic!("message attribute {name} missing"))
        .to_owned()
}

// ---- a scripted HTTP endpoint (for SQS answers moto never gives) ----

/// Serves `responses` in order on loopback (the last one repeats), one request per
/// connection, and records each request body.
pub fn scripted_http(responses: Vec<(u16, String)>) -> (String, Arc<Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let log = bodies.clone();
    std::thread::spawn(move || {
        for (served, socket) in listener.incoming().flatten().enumerate() {
            let mut reader = BufReader::new(socket);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            let (status, answer) = &responses[served.min(responses.len() - 1)];
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.0\r\n\
                 x-amzn-requestid: test\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = reader.get_mut().write_all(response.as_bytes());
        }
    });
    (format!("http://{addr}"), bodies)
}

/// An SQS client for a scripted endpoint, without SDK-level retries.
pub fn scripted_sqs(endpoint: &str) -> Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(shared::https::aws_http_client())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "scripted"))
        .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}
