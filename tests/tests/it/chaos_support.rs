//! The chaos suite's backends: the same pipeline on the AWS adapters (SQS and DynamoDB on
//! moto) and on the embedded store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};
use dam_sync_tests::{new_queue, new_store, sqs_dead_letters};
use shared::akeneo::StructureStore;
use shared::consumer::InboundMessage;
use shared::queue::sqs::{SqsChangeQueue, SqsDeadLetters};
use shared::queue::{ChangeQueue, DeadLetters};
use shared::store::dynamodb::DynamoStructureStore;
use shared::store::{AssetStateStore, CursorStore, LeaseStore};

use crate::chaos::{EMBEDDED_VISIBILITY, SQS_VISIBILITY};

/// How long one SQS receive gathers messages (Lambda's `MaximumBatchingWindowInSeconds`).
const BATCHING_WINDOW: Duration = Duration::from_secs(1);

/// The consumer side of a queue, as the Lambda event source (or the local loop) drives it.
#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Up to `max` messages, hidden for the visibility timeout.
    async fn receive(&self, max: usize) -> Vec<InboundMessage>;
    /// Deletes handled messages.
    async fn ack(&self, ids: &[String]);
    /// Puts a raw body on the queue (poison).
    async fn inject_raw(&self, body: &str);
    /// Nothing visible and nothing in flight.
    async fn is_drained(&self) -> bool;
    /// Every dead letter: (body, reason).
    async fn dead_letters(&self) -> Vec<(String, String)>;
}

pub struct Backend {
    pub name: &'static str,
    pub queue: Arc<dyn ChangeQueue>,
    pub work: Arc<dyn WorkQueue>,
    pub state: Arc<dyn AssetStateStore>,
    pub cursors: Arc<dyn CursorStore>,
    pub leases: Arc<dyn LeaseStore>,
    pub structures: Arc<dyn StructureStore>,
    pub dead: Arc<dyn DeadLetters>,
}

/// SQS queue + DLQ (redrive after many receives, so only the consumer's own dead-lettering
/// puts messages there) and one DynamoDB table, on moto.
pub async fn aws(aws: &aws_config::SdkConfig) -> Backend {
    let store = new_store(aws, "chaos").await;
    let structures = Arc::new(DynamoStructureStore::new(&store, Duration::from_secs(600)));
    let sqs = aws_sdk_sqs::Client::new(aws);
    let dlq_url = new_queue(&sqs, "chaos-dlq", &[]).await;
    let queue_url = new_queue(
        &sqs,
        "chaos-queue",
        &[(
            QueueAttributeName::VisibilityTimeout,
            SQS_VISIBILITY.as_secs().to_string(),
        )],
    )
    .await;
    let work = Arc::new(SqsWork {
        sqs: sqs.clone(),
        queue_url: queue_url.clone(),
        dlq_url: dlq_url.clone(),
        receipts: Mutex::default(),
    });
    Backend {
        name: "aws",
        queue: Arc::new(SqsChangeQueue::new(sqs.clone(), queue_url)),
        work,
        state: store.clone(),
        cursors: store.clone(),
        leases: store,
        structures,
        dead: Arc::new(SqsDeadLetters::new(sqs, dlq_url)),
    }
}

struct SqsWork {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    dlq_url: String,
    /// Message id → receipt handle of its latest receive.
    receipts: Mutex<HashMap<String, String>>,
}

#[async_trait]
impl WorkQueue for SqsWork {
    async fn receive(&self, max: usize) -> Vec<InboundMessage> {
        let mut out = Vec::new();
        // Like the Lambda poller: gather up to `max` in calls of at most 10, within a batching
        // window. moto's receive slows with the queue's length; without the window, a backlog
        // made a receive of 100 outlast the visibility timeout, so the batch's first messages
        // were visible again before it was processed and the backlog only grew.
        let window = tokio::time::Instant::now() + BATCHING_WINDOW;
        while out.len() < max && tokio::time::Instant::now() < window {
            let Ok(received) = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10.min((max - out.len()) as i32))
                .send()
                .await
            else {
                break;
            };
            let batch = received.messages.unwrap_or_default();
            if batch.is_empty() {
                break;
            }
            let mut receipts = self.receipts.lock().unwrap();
            for m in batch {
                let (Some(id), Some(receipt)) = (m.message_id, m.receipt_handle) else {
                    continue;
                };
                receipts.insert(id.clone(), receipt);
                out.push(InboundMessage {
                    receive_count: 1,
                    id,
                    body: m.body.unwrap_or_default(),
                });
            }
        }
        out
    }

    async fn ack(&self, ids: &[String]) {
        let entries: Vec<DeleteMessageBatchRequestEntry> = {
            let mut receipts = self.receipts.lock().unwrap();
            ids.iter()
                .filter_map(|id| receipts.remove(id).map(|r| (id, r)))
                .enumerate()
                .map(|(i, (_, r))| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(format!("m{i}"))
                        .receipt_handle(r)
                        .build()
                        .unwrap()
                })
                .collect()
        };
        for chunk in entries.chunks(10) {
            self.sqs
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(chunk.to_vec()))
                .send()
                .await
                .expect("delete messages");
        }
    }

    async fn inject_raw(&self, body: &str) {
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .expect("send poison");
    }

    async fn is_drained(&self) -> bool {
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .unwrap_or_default();
        attrs.values().all(|v| v == "0")
    }

    async fn dead_letters(&self) -> Vec<(String, String)> {
        sqs_dead_letters(&self.sqs, &self.dlq_url).await
    }
}

/// The embedded store (one SQLite file) with the queue settings `dam-sync serve` uses, the
/// visibility timeout aside.
pub async fn embedded(dir: &std::path::Path) -> Backend {
    embedded_with(dir, EMBEDDED_VISIBILITY).await
}

/// [`embedded`] with another visibility timeout.
pub async fn embedded_with(dir: &std::path::Path, visibility: Duration) -> Backend {
    let store = embedded_store::SqliteStore::open(dir.join("chaos.sqlite"))
        .expect("open the SQLite store")
        .with_queue_settings(embedded_store::QueueSettings {
            visibility_timeout: visibility,
            // Only the consumer's own dead-lettering may park a message in this run.
            max_receives: 50,
        });
    let work = Arc::new(SqliteWork {
        store: store.clone(),
        receipts: Mutex::default(),
    });
    let store = Arc::new(store);
    Backend {
        name: "embedded",
        queue: store.clone(),
        work,
        state: store.clone(),
        cursors: store.clone(),
        leases: store.clone(),
        structures: store.clone(),
        dead: store,
    }
}

struct SqliteWork {
    store: embedded_store::SqliteStore,
    receipts: Mutex<HashMap<String, String>>,
}

#[async_trait]
impl WorkQueue for SqliteWork {
    async fn receive(&self, max: usize) -> Vec<InboundMessage> {
        let received = self.store.receive(max).await.expect("receive");
        let mut receipts = self.receipts.lock().unwrap();
        received
            .into_iter()
            .map(|m| {
                receipts.insert(m.message_id.clone(), m.receipt);
                InboundMessage {
                    receive_count: 1,
                    id: m.message_id,
                    body: m.body,
                }
            })
            .collect()
    }

    async fn ack(&self, ids: &[String]) {
        let receipts: Vec<(String, String)> = {
            let mut held = self.receipts.lock().unwrap();
            ids.iter()
                .filter_map(|id| held.remove(id).map(|r| (id.clone(), r)))
                .collect()
        };
        self.store.ack(receipts).await.expect("ack");
    }

    async fn inject_raw(&self, body: &str) {
        self.store.enqueue_raw(body).await.expect("send poison");
    }

    async fn is_drained(&self) -> bool {
        use shared::queue::QueueAdmin;
        let depth = self.store.depth().await.expect("depth");
        depth.visible == 0 && depth.in_flight == 0
    }

    async fn dead_letters(&self) -> Vec<(String, String)> {
        use shared::queue::QueueAdmin;
        self.store
            .dead_letters(usize::MAX)
            .await
            .expect("dead letters")
            .into_iter()
            .map(|p| (p.body, p.reason))
            .collect()
    }
}
