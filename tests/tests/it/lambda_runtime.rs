//! The three function binaries (their real `main`) under a Lambda Runtime API emulator,
//! against moto (SQS, DynamoDB) and the simulators: a signed webhook from dam-sim reaches the
//! PIM through webhook-ingest, the queue and asset-consumer; reconcile-poller enqueues what the
//! webhook path missed. Their stdout is checked as Lambda JSON logs and EMF metrics, with no
//! secret in it. Needs moto at `AWS_ENDPOINT_URL` (these tests fail, never skip, without it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dam_sim::{DamSim, DamSimConfig, DeliveryKnobs, Faults, WebhookKind};
use dam_sync_tests::emf;
use dam_sync_tests::lambda::{
    FunctionProcess, HttpApi, RuntimeApi, function_binary, http_api_event,
};
use dam_sync_tests::{
    CONSUMER_MAPPING, akeneo_caps, consumer_fields, moto_config, start_pim, unique,
};
use serde_json::{Value, json};
use shared::observability::{NAMESPACE, metric};
use shared::testing::create_table;

const LONG: Duration = Duration::from_secs(120);

/// What every function process gets besides its own settings: moto, dummy credentials and
/// debug logs (the secret check is only meaningful when the most is logged).
fn common_env() -> Vec<(&'static str, String)> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    vec![
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_LAMBDA_LOG_LEVEL", "DEBUG".into()),
    ]
}

async fn receive_all(sqs: &aws_sdk_sqs::Client, url: &str, expected: usize) -> Vec<Value> {
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while records.len() < expected && tokio::time::Instant::now() < deadline {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        for m in got.messages.unwrap_or_default() {
            records.push(json!({
                "messageId": m.message_id,
                "receiptHandle": m.receipt_handle,
                "body": m.body,
                "md5OfBody": m.md5_of_body,
                "attributes": { "ApproximateReceiveCount": "1" },
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:queue",
                "awsRegion": "us-east-1",
            }));
        }
    }
    records
}

/// Deletes what the consumer did not report as failed, as the event source mapping does.
async fn acknowledge(sqs: &aws_sdk_sqs::Client, url: &str, records: &[Value], answer: &Value) {
    let failed: Vec<&str> = answer["batchItemFailures"]
        .as_array()
        .expect("a partial batch response")
        .iter()
        .filter_map(|f| f["itemIdentifier"].as_str())
        .collect();
    for r in records {
        if !failed.contains(&r["messageId"].as_str().unwrap_or_default()) {
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(r["receiptHandle"].as_str().unwrap())
                .send()
                .await
                .expect("delete");
        }
    }
}

fn json_lines(process: &FunctionProcess) -> Vec<Value> {
    process
        .stdout()
        .iter()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("stdout line is not JSON ({e}): {line}");
            });
            assert!(
                value.is_object(),
                "stdout line is not a JSON object: {line}"
            );
            value
        })
        .collect()
}

/// The EMF documents of a process, each checked against the specification.
fn emf_docs(process: &FunctionProcess) -> Vec<Value> {
    process
        .stdout()
        .iter()
        .filter(|l| emf::is_emf(l))
        .map(|l| emf::validate(l).unwrap_or_else(|e| panic!("invalid EMF ({e}): {l}")))
        .collect()
}

/// Sum of a metric over documents (single values and arrays alike).
fn total(docs: &[Value], name: &str) -> f64 {
    docs.iter()
        .filter_map(|d| d.get(name))
        .map(|v| match v {
            Value::Array(values) => values.iter().filter_map(Value::as_f64).sum(),
            other => other.as_f64().unwrap_or(0.0),
        })
        .sum()
}

/// Log lines (not EMF) of a process: each must be in Lambda's JSON log shape.
fn log_lines(process: &FunctionProcess) -> Vec<Value> {
    let lines: Vec<Value> = json_lines(process)
        .into_iter()
        .filter(|v| v.get("_aws").is_none())
        .collect();
    for line in &lines {
        let level = line["level"].as_str().unwrap_or_default();
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "{line}"
        );
        let ts = line["timestamp"].as_str().unwrap_or_default();
        assert!(
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok(),
            "timestamp is not RFC 3339: {line}"
        );
        assert!(line.get("message").is_some(), "{line}");
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_binaries_carry_a_webhook_to_the_pim_and_the_poller_fills_gaps() {
    let binaries = tokio::task::spawn_blocking(|| {
        ["webhook-ingest", "asset-consumer", "reconcile-poller"].map(function_binary)
    })
    .await
    .unwrap();

    // AWS side, on moto.
    let aws = moto_config().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let mut urls = Vec::new();
    for name in ["lambda-queue", "lambda-dlq"] {
        let url = sqs
            .create_queue()
            .queue_name(unique(name))
            .send()
            .await
            .expect("create queue")
            .queue_url
            .expect("queue url");
        urls.push(url);
    }
    let (queue_url, dlq_url) = (urls[0].clone(), urls[1].clone());
    let table = unique("lambda-state");
    create_table(&dynamo, &table).await.expect("create table");

    // The PIM and the DAM.
    let pim = start_pim(akeneo_caps()).await;
    let (client_id, client_secret, username, password) = pim.credentials();
    let dam = DamSim::start(DamSimConfig::default())
        .await
        .expect("dam-sim");
    let dam_token = dam.config().generic_token.clone();
    let webhook_secret = dam.config().generic_webhook_secret.clone();
    let mapping = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(mapping.path(), CONSUMER_MAPPING).expect("write the mapping");

    // One Runtime API and one process per function.
    let ingest_api = Arc::new(RuntimeApi::start("webhook-ingest", Duration::from_secs(10)).await);
    let consumer_api = RuntimeApi::start("asset-consumer", Duration::from_secs(60)).await;
    let poller_api = RuntimeApi::start("reconcile-poller", Duration::from_secs(60)).await;
    let env = |own: Vec<(&'static str, String)>| {
        let mut all = common_env();
        all.extend(own);
        all
    };
    let mut ingest = FunctionProcess::spawn(
        &binaries[0],
        &ingest_api,
        &env(vec![
            ("QUEUE_URL", queue_url.clone()),
            ("GENERIC_WEBHOOK_SECRETS", webhook_secret.clone()),
        ]),
    );
    let mut consumer = FunctionProcess::spawn(
        &binaries[1],
        &consumer_api,
        &env(vec![
            ("DLQ_URL", dlq_url.clone()),
            ("TABLE_NAME", table.clone()),
            ("MAPPING_PATH", mapping.path().display().to_string()),
            ("GENERIC_API_URL", dam.generic_base_url()),
            ("GENERIC_API_TOKEN", dam_token.clone()),
            ("AKENEO_BASE_URL", pim.base_url()),
            ("AKENEO_CLIENT_ID", client_id.clone()),
            ("AKENEO_CLIENT_SECRET", client_secret.clone()),
            ("AKENEO_USERNAME", username.clone()),
            ("AKENEO_PASSWORD", password.clone()),
        ]),
    );
    let mut poller = FunctionProcess::spawn(
        &binaries[2],
        &poller_api,
        &env(vec![
            ("QUEUE_URL", queue_url.clone()),
            ("TABLE_NAME", table.clone()),
            ("GENERIC_API_URL", dam.generic_base_url()),
            ("GENERIC_API_TOKEN", dam_token.clone()),
        ]),
    );
    let mut init = HashMap::new();
    init.insert("webhook-ingest", ingest.init_time(&ingest_api, LONG).await);
    init.insert(
        "asset-consumer",
        consumer.init_time(&consumer_api, LONG).await,
    );
    init.insert(
        "reconcile-poller",
        poller.init_time(&poller_api, LONG).await,
    );
    for (name, took) in &init {
        println!("init {name}: {} ms", took.as_millis());
    }

    // Webhook path: dam-sim signs and POSTs a thin Standard Webhook to the HTTP API front.
    let front = HttpApi::start(ingest_api.clone()).await;
    dam.send_webhooks_to(
        &format!("{}/webhooks/generic", front.url()),
        WebhookKind::Generic,
        DeliveryKnobs {
            auto_notify: false,
            include_asset: false,
            retries: 0,
            ..DeliveryKnobs::default()
        },
    );
    dam.upsert("rt_1", consumer_fields(1, "Sent by webhook"));
    assert!(dam.notify("rt_1"));
    assert!(dam.flush_webhooks(LONG).await, "webhook not delivered");
    let deliveries = dam.webhook_log();
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(deliveries[0].status, Some(202), "{deliveries:?}");

    // A forged delivery is refused by the same binary.
    let forged = http_api_event(
        "POST",
        "/webhooks/generic",
        "",
        &[
            ("content-type".into(), "application/json".into()),
            ("webhook-id".into(), "msg_forged".into()),
            ("webhook-timestamp".into(), "1795861320".into()),
            ("webhook-signature".into(), "v1,Zm9yZ2Vk".into()),
        ],
        br#"{"type":"asset.upserted","data":{"id":"rt_1"}}"#,
    );
    let answer = ingest_api.invoke(&forged).await.response();
    assert_eq!(answer["statusCode"], 401, "{answer}");

    // Queue → consumer → PIM.
    let records = receive_all(&sqs, &queue_url, 1).await;
    assert_eq!(records.len(), 1, "the webhook queued one message");
    let answer = consumer_api
        .invoke(&json!({ "Records": records }))
        .await
        .response();
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    acknowledge(&sqs, &queue_url, &records, &answer).await;
    let written = pim.asset("packshot", "rt_1").expect("rt_1 reached the PIM");
    assert_eq!(
        written["values"]["alt_text"][0]["data"], "Sent by webhook",
        "{written}"
    );

    // Poller path: a change with no webhook is listed, enqueued and synced.
    dam.upsert("rt_2", consumer_fields(2, "Found by the poller"));
    let scheduled = json!({
        "version": "0", "id": "5d6b5f4b-0b9c-4f3a-9c59-2f4f1e2b7a10",
        "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": "2026-11-28T10:22:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/poll"], "detail": {}
    });
    let report = poller_api.invoke(&scheduled).await.response();
    assert_eq!(report["stop"]["reason"], "complete", "{report}");
    // rt_1 is listed too, but the consumer already applied it at that version.
    assert_eq!(report["events_enqueued"], 1, "{report}");
    assert_eq!(report["already_applied"], 1, "{report}");
    let records = receive_all(&sqs, &queue_url, 1).await;
    let ids: Vec<String> = records
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            body["asset_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids, vec!["rt_2".to_owned()]);
    let answer = consumer_api
        .invoke(&json!({ "Records": records }))
        .await
        .response();
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    acknowledge(&sqs, &queue_url, &records, &answer).await;
    assert!(
        pim.asset("packshot", "rt_2").is_some(),
        "rt_2 reached the PIM"
    );

    // DAM down: the run fails, and says so in its metrics.
    dam.set_faults(Faults {
        down: true,
        ..Faults::default()
    });
    let failed = poller_api.invoke(&scheduled).await;
    assert!(
        matches!(&failed, dam_sync_tests::lambda::Outcome::Error { body, .. }
            if body.to_string().contains("DAM listing failed")),
        "{failed:?}"
    );

    // Logs: Lambda JSON lines; one per asset with its DAM id, family and outcome.
    let consumer_logs = log_lines(&consumer);
    let synced: Vec<&Value> = consumer_logs
        .iter()
        .filter(|l| l["message"] == "Asset processed." && l["dam_id"] == "rt_1")
        .collect();
    // Once: the poller did not enqueue it again.
    assert_eq!(synced.len(), 1, "rt_1: synced once");
    assert_eq!(synced[0]["family"], "packshot");
    assert_eq!(synced[0]["outcome"], "synced");
    assert_eq!(synced[0]["dam"], "generic");
    assert!(
        synced[0]["requestId"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{}",
        synced[0]
    );
    let ingest_logs = log_lines(&ingest);
    assert!(
        ingest_logs
            .iter()
            .any(|l| l["message"] == "Webhook accepted." && l["dam_ids"] == "rt_1"),
        "{ingest_logs:?}"
    );
    assert!(
        ingest_logs
            .iter()
            .any(|l| l["message"] == "Webhook rejected." && l["status"] == 401)
    );
    log_lines(&poller);

    // Metrics: valid EMF in the DamSync namespace, with the counts of what happened.
    let docs = emf_docs(&consumer);
    assert_eq!(docs.len(), 2, "one document per batch");
    for doc in &docs {
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(doc["Function"], "asset-consumer");
    }
    assert_eq!(total(&docs, metric::ASSETS_SYNCED), 2.0);
    // The poller left rt_1 out, so nothing reached the consumer stale.
    assert_eq!(total(&docs, metric::ASSETS_STALE), 0.0);
    assert_eq!(total(&docs, metric::ASSETS_FAILED), 0.0);
    assert!(total(&docs, metric::PIM_CALLS) >= 2.0, "{docs:?}");
    let freshness: Vec<&Value> = docs
        .iter()
        .filter_map(|d| d.get(metric::FRESHNESS))
        .collect();
    assert_eq!(freshness.len(), 2, "one sample per synced asset: {docs:?}");

    let docs = emf_docs(&ingest);
    assert_eq!(docs.len(), 2);
    assert_eq!(total(&docs, metric::WEBHOOKS_ACCEPTED), 1.0);
    assert_eq!(total(&docs, metric::WEBHOOKS_REJECTED), 1.0);
    assert_eq!(total(&docs, metric::EVENTS_QUEUED), 1.0);

    let docs = emf_docs(&poller);
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["Mode"], "incremental");
    assert_eq!(docs[0][metric::POLL_SUCCEEDED], 1);
    assert_eq!(docs[0][metric::POLL_PAGES], 1);
    assert_eq!(docs[0][metric::POLL_EVENTS_ENQUEUED], 1);
    assert!(docs[0].get(metric::POLL_LAG).is_some(), "{}", docs[0]);
    assert_eq!(docs[1][metric::POLL_SUCCEEDED], 0);
    assert_eq!(docs[1][metric::POLL_DAM_ERRORS], 1);

    // No secret anywhere in any output, at debug level, failures included.
    let (_, webhook_key) = webhook_secret.split_once('_').unwrap();
    let secrets = [
        client_secret.as_str(),
        password.as_str(),
        dam_token.as_str(),
        webhook_secret.as_str(),
        webhook_key,
    ];
    for process in [&ingest, &consumer, &poller] {
        let output = process.output();
        assert!(output.len() > 10, "too little output to be a check");
        for line in &output {
            for secret in secrets {
                assert!(!line.contains(secret), "a secret was logged: {line}");
            }
        }
    }
}
