//! The AWS SAM template (`infra/template.yaml`) in moto: its queue, DLQ, table and secret,
//! created from the template's own properties, serve the project's adapters. These tests need
//! a moto server at `AWS_ENDPOINT_URL` and fail without one.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, PointInTimeRecoverySpecification,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use dam_sync_tests::cfn::{ALL_DAMS, INGEST, Stack, getatt, number, sample_secret, scalar};
use serde_json::{Map, Value as Json, json};
use shared::dam::{ChangeEvent, ChangeKind, DamKind, Version};
use shared::queue::sqs::{ATTR_REASON, SqsChangeQueue, SqsDeadLetters};
use shared::queue::{ChangeQueue, DeadLetters};
use shared::store::dynamodb::{DynamoStore, TTL_ATTRIBUTE};
use shared::store::{
    Advance, Applied, AssetState, AssetStateStore, Cursor, CursorStore, LeaseStore,
};

use shared::testing::create_table;

use crate::support::{self, moto_config};

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// The queue's template properties as CreateQueue attributes. A property this test does not
/// know fails the test, so a new one is translated here before it can drift.
fn queue_attributes(props: &Json, dlq_arn: Option<&str>) -> HashMap<QueueAttributeName, String> {
    let mut out = HashMap::new();
    for (name, value) in props.as_object().unwrap() {
        let text = match name.as_str() {
            "VisibilityTimeout"
            | "MessageRetentionPeriod"
            | "ReceiveMessageWaitTimeSeconds"
            | "DelaySeconds"
            | "MaximumMessageSize"
            | "SqsManagedSseEnabled" => scalar(value),
            "RedrivePolicy" => {
                let mut policy = value.clone();
                assert_eq!(
                    policy["deadLetterTargetArn"],
                    getatt("DeadLetterQueue", "Arn")
                );
                policy["deadLetterTargetArn"] = json!(dlq_arn.expect("the DLQ's ARN"));
                policy["maxReceiveCount"] = json!(number(&value["maxReceiveCount"]) as u64);
                policy.to_string()
            }
            other => panic!("queue property {other} has no CreateQueue translation here"),
        };
        out.insert(QueueAttributeName::from(name.as_str()), text);
    }
    out
}

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    props: &Json,
    dlq_arn: Option<&str>,
) -> (String, String) {
    let url = sqs
        .create_queue()
        .queue_name(unique("infra"))
        .set_attributes(Some(queue_attributes(props, dlq_arn)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_sqs::error::DisplayErrorContext(&e)))
        .queue_url()
        .unwrap()
        .to_owned();
    let arn = queue_attribute(sqs, &url, QueueAttributeName::QueueArn).await;
    (url, arn)
}

async fn queue_attribute(sqs: &aws_sdk_sqs::Client, url: &str, name: QueueAttributeName) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(name.clone())
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|a| a.get(&name))
        .cloned()
        .unwrap_or_else(|| panic!("queue attribute {name:?} missing"))
}

async fn receive(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    visibility: i32,
) -> Vec<aws_sdk_sqs::types::Message> {
    sqs.receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .visibility_timeout(visibility)
        // The queue long-polls for 20 s by default; these reads must not wait.
        .wait_time_seconds(0)
        .send()
        .await
        .unwrap()
        .messages()
        .to_vec()
}

fn event(id: &str) -> ChangeEvent {
    ChangeEvent {
        dam: DamKind::Generic,
        asset_id: id.to_owned(),
        kind: ChangeKind::Upsert,
        version: Some(Version {
            modified_at_ms: 1_700_000_000_000,
            seq: 1,
        }),
        asset: None,
        dedupe_key: format!("generic:{id}:1"),
        received_at_ms: 1_700_000_000_500,
    }
}

#[tokio::test]
async fn the_templates_queues_carry_the_adapters_and_redrive_to_the_dlq() {
    let stack = Stack::new(ALL_DAMS);
    let sqs = aws_sdk_sqs::Client::new(&moto_config().await);
    let queue_props = stack.props("ChangeQueue");
    let (dlq_url, dlq_arn) = create_queue(&sqs, &stack.props("DeadLetterQueue"), None).await;
    let (queue_url, _) = create_queue(&sqs, &queue_props, Some(&dlq_arn)).await;

    // What SQS stored is what the template says.
    for name in ["VisibilityTimeout", "MessageRetentionPeriod"] {
        assert_eq!(
            queue_attribute(&sqs, &queue_url, QueueAttributeName::from(name)).await,
            scalar(&queue_props[name]),
            "{name}"
        );
    }
    let stored: Json = serde_json::from_str(
        &queue_attribute(&sqs, &queue_url, QueueAttributeName::RedrivePolicy).await,
    )
    .unwrap();
    assert_eq!(stored["deadLetterTargetArn"], dlq_arn);
    let max_receives = number(&stored["maxReceiveCount"]) as usize;
    assert_eq!(
        max_receives as f64,
        number(&queue_props["RedrivePolicy"]["maxReceiveCount"])
    );

    // Ingest and the poller enqueue through SqsChangeQueue.
    let changes = SqsChangeQueue::new(sqs.clone(), queue_url.clone());
    changes.enqueue(&[event("a1"), event("a2")]).await.unwrap();

    // A message that keeps failing is moved to the DLQ after maxReceiveCount receives.
    let mut receives: HashMap<String, usize> = HashMap::new();
    for _ in 0..max_receives {
        for message in receive(&sqs, &queue_url, 0).await {
            let body: ChangeEvent = serde_json::from_str(message.body().unwrap()).unwrap();
            *receives.entry(body.asset_id).or_default() += 1;
        }
    }
    assert_eq!(receives.len(), 2, "{receives:?}");
    assert!(
        receive(&sqs, &queue_url, 0).await.is_empty(),
        "not redriven after {max_receives}"
    );
    let redriven: BTreeSet<String> = receive(&sqs, &dlq_url, 300)
        .await
        .iter()
        .map(|m| {
            serde_json::from_str::<ChangeEvent>(m.body().unwrap())
                .unwrap()
                .asset_id
        })
        .collect();
    assert_eq!(redriven, BTreeSet::from(["a1".to_owned(), "a2".to_owned()]));

    // The consumer parks messages in the same DLQ, with their reason.
    let letters = SqsDeadLetters::new(sqs.clone(), dlq_url.clone());
    letters
        .send(
            "m-1",
            &serde_json::to_string(&event("a3")).unwrap(),
            "mapping: no family",
        )
        .await
        .unwrap();
    let parked = receive(&sqs, &dlq_url, 300).await;
    assert_eq!(parked.len(), 1);
    assert_eq!(
        support::attribute(&parked[0], ATTR_REASON),
        "mapping: no family"
    );
}

#[tokio::test]
async fn the_templates_table_serves_the_dynamodb_store() {
    let stack = Stack::new(ALL_DAMS);
    let ddb = aws_sdk_dynamodb::Client::new(&moto_config().await);
    let props = stack.props("StateTable");
    let name = unique("infra-state");

    let mut create = ddb.create_table().table_name(&name);
    for (key, value) in props.as_object().unwrap() {
        create = match key.as_str() {
            "BillingMode" => create.billing_mode(BillingMode::from(value.as_str().unwrap())),
            "AttributeDefinitions" => value.as_array().unwrap().iter().fold(create, |c, d| {
                c.attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(scalar(&d["AttributeName"]))
                        .attribute_type(ScalarAttributeType::from(
                            d["AttributeType"].as_str().unwrap(),
                        ))
                        .build()
                        .unwrap(),
                )
            }),
            "KeySchema" => value.as_array().unwrap().iter().fold(create, |c, k| {
                c.key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(scalar(&k["AttributeName"]))
                        .key_type(KeyType::from(k["KeyType"].as_str().unwrap()))
                        .build()
                        .unwrap(),
                )
            }),
            // Applied after creation below, as CloudFormation does.
            "TimeToLiveSpecification" | "PointInTimeRecoverySpecification" => create,
            other => panic!("table property {other} has no CreateTable translation here"),
        };
    }
    create.send().await.unwrap();
    let ttl = &props["TimeToLiveSpecification"];
    ddb.update_time_to_live()
        .table_name(&name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(scalar(&ttl["AttributeName"]))
                .enabled(ttl["Enabled"] == true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let pitr = &props["PointInTimeRecoverySpecification"];
    ddb.update_continuous_backups()
        .table_name(&name)
        .point_in_time_recovery_specification(
            PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(pitr["PointInTimeRecoveryEnabled"] == true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    // Same schema as the one the code creates for tests and the CLI.
    let reference = unique("infra-reference");
    create_table(&ddb, &reference).await.unwrap();
    let describe = |table: String| {
        let ddb = ddb.clone();
        async move {
            let t = ddb.describe_table().table_name(table).send().await.unwrap();
            let t = t.table().unwrap().clone();
            let mut attrs = t.attribute_definitions().to_vec();
            attrs.sort_by(|a, b| a.attribute_name().cmp(b.attribute_name()));
            (t.key_schema().to_vec(), attrs)
        }
    };
    assert_eq!(describe(name.clone()).await, describe(reference).await);
    let ttl = ddb
        .describe_time_to_live()
        .table_name(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description()
            .and_then(|d| d.attribute_name()),
        Some(TTL_ATTRIBUTE)
    );

    // The adapters work on it: versions, cursors, leases.
    let store = DynamoStore::new(ddb.clone(), &name);
    let state = AssetState {
        dam: DamKind::Generic,
        asset_id: "a1".into(),
        applied_version: Version {
            modified_at_ms: 1_700_000_000_000,
            seq: 1,
        },
        content_hash: "h".into(),
        family: "packshot".into(),
        pim_code: "a1".into(),
        updated_at_ms: 1_700_000_000_100,
        media_files: Default::default(),
        deleted: false,
        source_hash: String::new(),
    };
    assert_eq!(
        store.record_applied(&state).await.unwrap(),
        Applied::Written
    );
    assert_eq!(store.record_applied(&state).await.unwrap(), Applied::Stale);
    let got = store
        .get_many(DamKind::Generic, &["a1".into()])
        .await
        .unwrap();
    assert_eq!(got.get("a1"), Some(&state));
    let cursor = Cursor {
        position_ms: 1_000,
        page_token: None,
        version: 0,
    };
    assert_eq!(
        store.advance("reconcile", cursor, None).await.unwrap(),
        Advance::Written { version: 1 }
    );
    assert!(
        store
            .acquire("reconcile", "run-1", Duration::from_secs(900))
            .await
            .unwrap()
    );
    assert!(
        !store
            .acquire("reconcile", "run-2", Duration::from_secs(900))
            .await
            .unwrap()
    );
    // The lease carries the attribute the table's TTL deletes on, in epoch seconds.
    let items = ddb.scan().table_name(&name).send().await.unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiries: Vec<u64> = items
        .items()
        .iter()
        .filter_map(|item| item.get(TTL_ATTRIBUTE))
        .map(|v| v.as_n().unwrap().parse().unwrap())
        .collect();
    assert_eq!(expiries.len(), 1, "{items:?}");
    assert!(
        expiries[0] > now && expiries[0] <= now + 901,
        "{expiries:?}"
    );
}

#[tokio::test]
async fn the_ingest_function_reads_the_templates_secret() {
    let stack = Stack::new(ALL_DAMS);
    let aws = moto_config().await;
    let secrets = stack.secrets_of(INGEST);
    assert_eq!(secrets.len(), 1, "webhook-ingest reads one secret");
    let values: Map<String, Json> = stack
        .secret_keys(&secrets[0])
        .into_iter()
        .map(|k| {
            let v = sample_secret(&k);
            (k, Json::String(v))
        })
        .collect();
    let arn = aws_sdk_secretsmanager::Client::new(&aws)
        .create_secret()
        .name(unique("infra-dam"))
        .secret_string(Json::Object(values).to_string())
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_owned();

    // The function's environment as deployed: the template's, with the secret's real ARN.
    let mut env = stack.env(INGEST);
    env.insert(shared::secrets::SECRETS_ARN.into(), arn);
    env.insert("QUEUE_URL".into(), "https://queue.example".into());
    let config = webhook_ingest::load_config(&aws, |name| env.get(name).cloned())
        .await
        .unwrap();
    assert!(
        config.ingest.cloudinary.is_some(),
        "CLOUDINARY_API_SECRET from the secret"
    );
    assert!(
        config.ingest.generic.is_some(),
        "GENERIC_WEBHOOK_SECRETS from the secret"
    );
    assert!(
        config.ingest.bynder.is_some(),
        "BYNDER_TOPIC_ARNS from the environment"
    );
}
