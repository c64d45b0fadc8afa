//! What moto cannot produce: `UnprocessedKeys` and throttling. A scripted DynamoDB endpoint
//! (JSON protocol over HTTP) answers in order; the SDK's own retries are off so each scripted
//! answer is seen by the adapter.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use shared::dam::{DamKind, Version};
use shared::store::dynamodb::{BatchRetry, Client, DynamoStore};
use shared::store::{Applied, AssetState, AssetStateStore, StateError};

const TABLE: &str = "state";

#[derive(Default)]
struct Script {
    answers: Mutex<VecDeque<(u16, Value)>>,
    /// (X-Amz-Target, body) of every request.
    seen: Mutex<Vec<(String, Value)>>,
}

async fn scripted_store(answers: Vec<(u16, Value)>) -> (DynamoStore, Arc<Script>) {
    let script = Arc::new(Script {
        answers: Mutex::new(answers.into()),
        seen: Mutex::default(),
    });
    let handler_script = Arc::clone(&script);
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let script = Arc::clone(&handler_script);
            async move {
                let target = headers
                    .get("x-amz-target")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let body: Value = serde_json::from_str(&body).unwrap();
                script.seen.lock().unwrap().push((target, body));
                let (status, answer) = script
                    .answers
                    .lock()
                    .unwrap()
                    .pop_front()
                    .expect("more requests than scripted answers");
                (
                    StatusCode::from_u16(status).unwrap(),
                    [("content-type", "application/x-amz-json-1.0")],
                    answer.to_string(),
                )
                    .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(shared::https::aws_http_client())
        .endpoint_url(format!("http://{address}"))
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .retry_config(RetryConfig::disabled())
        .build();
    let store = DynamoStore::new(Client::from_conf(config), TABLE).with_batch_retry(BatchRetry {
        max_attempts: 3,
        base_backoff: Duration::from_millis(1),
    });
    (store, script)
}

fn key(id: &str) -> Value {
    json!({"pk": {"S": format!("asset#generic#{id}")}, "sk": {"S": "state"}})
}

fn item(id: &str) -> Value {
    let mut item = key(id);
    let fields = [
        ("dam", json!({"S": "generic"})),
        ("asset_id", json!({"S": id})),
        ("modified_at_ms", json!({"N": "10"})),
        ("seq", json!({"N": "2"})),
        ("content_hash", json!({"S": "h"})),
        ("family", json!({"S": "f"})),
        ("pim_code", json!({"S": id})),
        ("updated_at_ms", json!({"N": "3"})),
    ];
    for (name, value) in fields {
        item[name] = value;
    }
    item
}

fn ids(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn requested_keys(body: &Value) -> Vec<Value> {
    body["RequestItems"][TABLE]["Keys"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn unprocessed_keys_are_requested_again() {
    let (store, script) = scripted_store(vec![
        (
            200,
            json!({
                "Responses": {TABLE: [item("a")]},
                "UnprocessedKeys": {TABLE: {"Keys": [key("b"), key("c")], "ConsistentRead": true}}
            }),
        ),
        (
            200,
            json!({"Responses": {TABLE: [item("b")]}, "UnprocessedKeys": {}}),
        ),
    ])
    .await;
    let found = store
        .get_many(DamKind::Generic, &ids(&["a", "b", "c"]))
        .await
        .unwrap();
    let mut found_ids: Vec<_> = found.keys().cloned().collect();
    found_ids.sort();
    assert_eq!(found_ids, ["a", "b"]);
    assert_eq!(
        found["b"].applied_version,
        Version {
            modified_at_ms: 10,
            seq: 2
        }
    );

    let seen = script.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, "DynamoDB_20120810.BatchGetItem");
    assert_eq!(requested_keys(&seen[0].1), [key("a"), key("b"), key("c")]);
    assert_eq!(
        seen[0].1["RequestItems"][TABLE]["ConsistentRead"],
        json!(true)
    );
    assert_eq!(requested_keys(&seen[1].1), [key("b"), key("c")]);
}

#[tokio::test]
async fn keys_left_unprocessed_after_the_last_attempt_are_a_retriable_error() {
    let unprocessed = json!({
        "Responses": {TABLE: []},
        "UnprocessedKeys": {TABLE: {"Keys": [key("a")]}}
    });
    let (store, script) = scripted_store(vec![(200, unprocessed); 3]).await;
    let error = store
        .get_many(DamKind::Generic, &ids(&["a"]))
        .await
        .unwrap_err();
    assert!(matches!(error, StateError::Transient(..)), "{error:?}");
    assert_eq!(script.seen.lock().unwrap().len(), 3);
}

fn service_error(code: &str) -> Value {
    json!({"__type": format!("com.amazonaws.dynamodb.v20120810#{code}"), "message": "scripted"})
}

#[tokio::test]
async fn throttling_and_server_errors_are_retriable_validation_is_not() {
    let state = AssetState {
        dam: DamKind::Generic,
        asset_id: "a".into(),
        applied_version: Version {
            modified_at_ms: 1,
            seq: 0,
        },
        content_hash: "h".into(),
        family: "f".into(),
        pim_code: "a".into(),
        updated_at_ms: 0,
        media_files: Default::default(),
        deleted: false,
        source_hash: String::new(),
    };
    let (store, _) = scripted_store(vec![
        (400, service_error("ProvisionedThroughputExceededException")),
        (400, service_error("ThrottlingException")),
        (500, service_error("InternalServerError")),
        (400, service_error("ValidationException")),
        (400, service_error("ResourceNotFoundException")),
        // The reverse-index entry is written first, then the state under its condition.
        (200, json!({})),
        (400, service_error("ConditionalCheckFailedException")),
    ])
    .await;
    for (expected_retriable, code) in [
        (true, "ProvisionedThroughputExceededException"),
        (true, "ThrottlingException"),
        (true, "InternalServerError"),
        (false, "ValidationException"),
        (false, "ResourceNotFoundException"),
    ] {
        let error = store.record_applied(&state).await.unwrap_err();
        assert_eq!(error.is_retriable(), expected_retriable, "{error:?}");
        // One short line: the service's code and message, not the SDK's Debug dump.
        assert!(
            error.to_string().ends_with(&format!(": {code}: scripted")),
            "{error}"
        );
    }
    assert_eq!(store.record_applied(&state).await.unwrap(), Applied::Stale);
}
