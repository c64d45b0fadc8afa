//! Helpers shared by the end-to-end tests and benchmarks: start the simulators, build real
//! clients pointed at them, generate valid assets.

pub mod cfn;
pub mod emf;
pub mod lambda;
pub mod logs;
pub mod turns;

use akeneo_sim::{AkeneoSim, Faults, SimConfig, SimHandle};
use secrecy::SecretString;
use serde_json::json;
use shared::akeneo::config::parse_base_url;
use shared::akeneo::{AkeneoClient, AkeneoConfig, Asset, AssetValue, Limits};
use shared::queue::QueueAdmin;
use shared::queue::sqs::SqsQueueAdmin;
use shared::store::dynamodb::DynamoStore;
use shared::testing::create_table;

/// The generic DAM's webhook signing secret in the tests: base64 of 32 test-only bytes.
pub const GENERIC_SECRET: &str = "whsec_dGVzdC1vbmx5LWdlbmVyaWMtd2ViaG9vay1zZWNyZXQ=";

/// The bulk route as the simulator accounts it.
pub const BULK_PATCH: &str = "PATCH /api/rest/v1/asset-families/{family}/assets";

/// Starts an Akeneo simulator with the bundled fixture and these faults.
pub async fn start_pim(faults: Faults) -> SimHandle {
    AkeneoSim::start(SimConfig {
        faults,
        ..SimConfig::default()
    })
    .await
    .expect("start the Akeneo simulator")
}

/// Client settings for the simulator's first Connection.
pub fn pim_config(sim: &SimHandle, limits: Limits) -> AkeneoConfig {
    let (client_id, secret, username, password) = sim.credentials();
    AkeneoConfig {
        base_url: parse_base_url(&sim.base_url()).expect("simulator URL"),
        client_id,
        client_secret: SecretString::from(secret),
        username,
        password: SecretString::from(password),
        limits,
    }
}

pub fn pim_client(sim: &SimHandle, limits: Limits) -> AkeneoClient {
    AkeneoClient::new(pim_config(sim, limits)).expect("client")
}

fn value(data: serde_json::Value) -> Vec<AssetValue> {
    vec![AssetValue {
        locale: None,
        channel: None,
        data,
    }]
}

/// A `packshot` asset that the bundled fixture accepts, using most attribute types.
pub fn packshot(i: usize) -> Asset {
    let mut values = std::collections::BTreeMap::new();
    values.insert(
        "media_preview".to_string(),
        value(json!(format!("packshots/{i}.jpg"))),
    );
    values.insert(
        "alt_text".to_string(),
        vec![
            AssetValue {
                locale: Some("en_US".into()),
                channel: None,
                data: json!(format!("Packshot number {i}")),
            },
            AssetValue {
                locale: Some("fr_FR".into()),
                channel: None,
                data: json!(format!("Photo produit {i}")),
            },
        ],
    );
    values.insert("product_ref".to_string(), value(json!(format!("SKU-{i}"))));
    values.insert("main_colors".to_string(), value(json!(["red", "blue"])));
    values.insert("shot_type".to_string(), value(json!("front")));
    values.insert(
        "width_px".to_string(),
        value(json!((1000 + i % 1000).to_string())),
    );
    values.insert("is_public".to_string(), value(json!(i.is_multiple_of(2))));
    Asset {
        code: format!("packshot_{i}"),
        values,
    }
}

pub fn packshots(n: usize) -> Vec<Asset> {
    (0..n).map(packshot).collect()
}

/// Fault-free simulator with no random faults but Akeneo's caps on.
pub fn akeneo_caps() -> Faults {
    Faults::default()
}

/// A mapping of dam-sim generic assets (see [`consumer_fields`]) onto the fixture's
/// `packshot` family, for the consumer tests and benchmark.
pub const CONSUMER_MAPPING: &str = r#"
[settings]
create_missing_options = false
code = "{{id}}"

[[route]]
family = "packshot"
when = [ { field = "fields.kind", equals = "packshot" } ]
on_delete = "delete"

[route.values.media_preview]
field = "fields.url"

[route.values.product_ref]
field = "fields.sku"

[route.values.alt_text]
locales = { en_US = "fields.title" }

[route.values.main_colors]
field = "fields.colors"
"#;

/// DAM fields of asset `n` that [`CONSUMER_MAPPING`] maps to a valid `packshot`.
pub fn consumer_fields(n: usize, title: &str) -> serde_json::Value {
    json!({
        "kind": "packshot",
        "url": format!("https://res.example.com/packshots/{n}.jpg"),
        "sku": format!("AB-{n}"),
        "title": title,
        "colors": ["red"],
    })
}

pub mod pipeline;

/// AWS configuration for the moto server at `AWS_ENDPOINT_URL` (`scripts/test.sh` starts one).
/// Fails, never skips, without it. The endpoint comes from the environment exactly as in
/// production; credentials and region are fixed so the SDK never probes instance metadata.
pub async fn moto_config() -> aws_config::SdkConfig {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        !endpoint.is_empty(),
        "AWS_ENDPOINT_URL is not set: these tests need a moto server \
         (scripts/test.sh starts one; by hand: moto_server -H 127.0.0.1 -p 5055, then \
         AWS_ENDPOINT_URL=http://127.0.0.1:5055)"
    );
    turns::wait_for_moto().await;
    moto_loader().load().await
}

/// The chaos suite's own moto server, when `CHAOS_MOTO_ENDPOINT_URL` names one
/// (`scripts/test.sh` starts it): a run paced to what moto serves then neither waits for nor
/// holds up the other moto tests. Its configuration, else `None`.
pub async fn chaos_moto_config() -> Option<aws_config::SdkConfig> {
    let endpoint = std::env::var("CHAOS_MOTO_ENDPOINT_URL").ok()?;
    Some(moto_loader().endpoint_url(endpoint).load().await)
}

fn moto_loader() -> aws_config::ConfigLoader {
    shared::https::aws_config_loader()
        .region(aws_config::Region::new(
            std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
        ))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "moto",
        ))
}

/// A name no other test run on the same moto server uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", fastrand::u64(..))
}

/// A fresh standard queue on moto, with these attributes; its URL.
pub async fn new_queue(
    sqs: &aws_sdk_sqs::Client,
    prefix: &str,
    attributes: &[(aws_sdk_sqs::types::QueueAttributeName, String)],
) -> String {
    let name = unique(prefix);
    let mut create = sqs.create_queue().queue_name(&name);
    for (k, v) in attributes {
        create = create.attributes(k.clone(), v);
    }
    create
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "create queue {name}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(&e)
            )
        })
        .queue_url
        .expect("queue url")
}

/// A fresh table with the connector's key design on moto, as the state store.
pub async fn new_store(aws: &aws_config::SdkConfig, prefix: &str) -> std::sync::Arc<DynamoStore> {
    let dynamo = aws_sdk_dynamodb::Client::new(aws);
    let table = unique(prefix);
    create_table(&dynamo, &table).await.expect("create table");
    std::sync::Arc::new(DynamoStore::new(dynamo, table))
}

/// Every message of an SQS dead-letter queue as (body, reason), listed through the operator
/// port, so nothing is consumed.
pub async fn sqs_dead_letters(sqs: &aws_sdk_sqs::Client, dlq_url: &str) -> Vec<(String, String)> {
    // Listing reads the dead-letter queue only: the main queue's URL is not needed.
    SqsQueueAdmin::new(sqs.clone(), "", dlq_url)
        .dead_letters(usize::MAX)
        .await
        .expect("list dead letters")
        .into_iter()
        .map(|m| (m.body, m.reason))
        .collect()
}

/// Serves the webhook routes on loopback through the ingest service, as API Gateway routes to
/// it; returns the base URL.
pub async fn serve_ingest(service: std::sync::Arc<shared::ingest::IngestService>) -> String {
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method,
              uri: axum::http::Uri,
              headers: axum::http::HeaderMap,
              body: axum::body::Bytes| {
            let service = service.clone();
            async move {
                let headers = headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_owned(),
                            v.to_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect();
                let answer = service
                    .handle_http(
                        method.as_str(),
                        uri.path(),
                        headers,
                        body,
                        std::time::SystemTime::now(),
                    )
                    .await;
                (
                    axum::http::StatusCode::from_u16(answer.status)
                        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
                    answer.body,
                )
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// An HTTP client for the tests' own calls to the simulators (the TLS provider installed).
pub fn http() -> reqwest::Client {
    shared::https::client_builder()
        .build()
        .expect("HTTP client")
}
