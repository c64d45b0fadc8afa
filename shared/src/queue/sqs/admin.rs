//! Queue administration on SQS: depth, listing and replay of the dead-letter queue.
//!
//! A dead-letter queue cannot be read without receiving: listing receives the messages
//! with a short visibility timeout and hands them back (visibility 0) when done, so nothing
//! is consumed. Replay sends each chosen body to the main queue first and deletes it from the
//! dead-letter queue only then: a crash in between duplicates a message (the consumer's
//! version guard makes that harmless), never loses one.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};

use super::dlq::{ATTR_REASON, ATTR_SOURCE_MESSAGE_ID};
use super::{Client, classify};
use crate::queue::{ParkedMessage, QueueAdmin, QueueDepth, QueueError, Replayed};

/// Reason shown for messages the queue itself moved (SQS redrive policy): they carry none.
pub const NO_REASON: &str =
    "no reason recorded: moved by the queue's redrive policy after too many receives";

/// The SQS adapter: a main queue and its dead-letter queue.
#[derive(Debug, Clone)]
pub struct SqsQueueAdmin {
    client: Client,
    queue_url: String,
    dlq_url: String,
    /// How long listed messages stay hidden from other readers while a listing runs.
    listing_visibility_secs: i32,
}

/// A received dead letter and the handle needed to release or delete it.
struct Held {
    message: ParkedMessage,
    receipt: String,
    attributes: HashMap<String, aws_sdk_sqs::types::MessageAttributeValue>,
}

impl SqsQueueAdmin {
    pub fn new(client: Client, queue_url: impl Into<String>, dlq_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            dlq_url: dlq_url.into(),
            listing_visibility_secs: 30,
        }
    }

    /// The queues at `queue_url` and `dlq_url`, with a client from the process's one AWS
    /// configuration.
    pub fn from_config(
        aws: &aws_config::SdkConfig,
        queue_url: impl Into<String>,
        dlq_url: impl Into<String>,
    ) -> Self {
        Self::new(Client::new(aws), queue_url, dlq_url)
    }

    async fn count(&self, url: &str) -> Result<(u64, u64), QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(classify)?;
        let read = |name: QueueAttributeName| -> u64 {
            out.attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok((
            read(QueueAttributeName::ApproximateNumberOfMessages),
            read(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        ))
    }

    /// Receives up to `limit` dead letters (hidden for the listing's visibility timeout).
    async fn hold(&self, limit: usize) -> Result<Vec<Held>, QueueError> {
        let mut held: Vec<Held> = Vec::new();
        while held.len() < limit {
            let want = (limit - held.len()).min(10) as i32;
            let out = self
                .client
                .receive_message()
                .queue_url(&self.dlq_url)
                .max_number_of_messages(want)
                .visibility_timeout(self.listing_visibility_secs)
                .wait_time_seconds(0)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(classify)?;
            let messages = out.messages();
            if messages.is_empty() {
                break;
            }
            for m in messages {
                let attributes = m.message_attributes().cloned().unwrap_or_default();
                let text = |name: &str| {
                    attributes
                        .get(name)
                        .and_then(|v| v.string_value())
                        .map(str::to_owned)
                };
                let system = |name: MessageSystemAttributeName| {
                    m.attributes().and_then(|a| a.get(&name)).cloned()
                };
                held.push(Held {
                    message: ParkedMessage {
                        id: m.message_id().unwrap_or_default().to_owned(),
                        source_message_id: text(ATTR_SOURCE_MESSAGE_ID),
                        reason: text(ATTR_REASON).unwrap_or_else(|| NO_REASON.to_owned()),
                        body: m.body().unwrap_or_default().to_owned(),
                        receive_count: system(MessageSystemAttributeName::ApproximateReceiveCount)
                            .and_then(|v| v.parse().ok()),
                        parked_at_ms: system(MessageSystemAttributeName::SentTimestamp)
                            .and_then(|v| v.parse().ok()),
                    },
                    receipt: m.receipt_handle().unwrap_or_default().to_owned(),
                    attributes,
                });
            }
        }
        held.sort_by_key(|h| h.message.parked_at_ms);
        Ok(held)
    }

    /// Makes held messages visible again at once.
    async fn release(&self, held: &[&Held]) -> Result<(), QueueError> {
        for chunk in held.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&h.receipt)
                        .visibility_timeout(0)
                        .build()
                        .map_err(|e| QueueError::Permanent(e.to_string(), Some(e.into())))
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.client
                .change_message_visibility_batch()
                .queue_url(&self.dlq_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(classify)?;
        }
        Ok(())
    }
}

/// Most messages a listing or replay walks through at once.
const MAX_HELD: usize = 10_000;

#[async_trait]
impl QueueAdmin for SqsQueueAdmin {
    fn backend(&self) -> String {
        format!(
            "SQS queue {} (dead letters {})",
            self.queue_url, self.dlq_url
        )
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let (visible, in_flight) = self.count(&self.queue_url).await?;
        let (dead_visible, dead_hidden) = self.count(&self.dlq_url).await?;
        Ok(QueueDepth {
            visible,
            in_flight,
            dead_letters: dead_visible + dead_hidden,
        })
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<ParkedMessage>, QueueError> {
        let held = self.hold(limit).await?;
        self.release(&held.iter().collect::<Vec<_>>()).await?;
        Ok(held.into_iter().map(|h| h.message).collect())
    }

    async fn replay(&self, ids: Option<&[String]>) -> Result<Replayed, QueueError> {
        let held = self.hold(MAX_HELD).await?;
        let chosen = |h: &Held| ids.is_none_or(|ids| ids.contains(&h.message.id));
        let mut replayed = Vec::new();
        let mut kept: Vec<&Held> = Vec::new();
        let mut failure = None;
        for h in &held {
            if !chosen(h) || failure.is_some() {
                kept.push(h);
                continue;
            }
            // The reason stays behind: a replayed message is a fresh attempt.
            let mut attributes = h.attributes.clone();
            attributes.remove(ATTR_REASON);
            attributes.remove(ATTR_SOURCE_MESSAGE_ID);
            let sent = self
                .client
                .send_message()
                .queue_url(&self.queue_url)
                .message_body(&h.message.body)
                .set_message_attributes(Some(attributes).filter(|a| !a.is_empty()))
                .send()
                .await
                .map_err(classify);
            if let Err(e) = sent {
                failure = Some(e);
                kept.push(h);
                continue;
            }
            if let Err(e) = self
                .client
                .delete_message()
                .queue_url(&self.dlq_url)
                .receipt_handle(&h.receipt)
                .send()
                .await
                .map_err(classify)
            {
                // Already on the main queue; left here it would be replayed twice at worst.
                failure = Some(e);
                continue;
            }
            replayed.push(h.message.id.clone());
        }
        self.release(&kept).await?;
        if let Some(e) = failure {
            return Err(e);
        }
        let not_found = ids
            .unwrap_or_default()
            .iter()
            .filter(|id| !held.iter().any(|h| &h.message.id == *id))
            .cloned()
            .collect();
        Ok(Replayed {
            replayed,
            not_found,
        })
    }
}
