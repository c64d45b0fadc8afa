//! The change queue on Amazon SQS (standard queue), through SendMessageBatch.
//!
//! SQS takes at most 10 entries and 1 MiB per batch, and a batch can partly fail inside an
//! HTTP 200: each entry has its own result. Failed entries that are not the sender's fault are
//! retried a bounded number of times; anything left over is an error, so ingest answers 5xx
//! and the DAM retries.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};

use super::{Client, classify, string_attribute};
use crate::dam::ChangeEvent;
use crate::queue::{ChangeQueue, QueueError};

/// SQS limits per SendMessageBatch.
pub const MAX_BATCH_ENTRIES: usize = 10;
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Room left per entry for its message attributes in the size budget.
const ATTRIBUTE_ALLOWANCE: usize = 512;

/// Message attribute names (the consumer may read them without parsing the body).
pub const ATTR_DEDUPE_KEY: &str = "dedupe_key";
pub const ATTR_RECEIVED_AT_MS: &str = "received_at_ms";
pub const ATTR_DAM: &str = "dam";

#[derive(Debug, Clone, Copy)]
pub struct RetrySettings {
    /// Sends per entry, first one included.
    pub max_attempts: u32,
    /// Backoff before the first retry; doubled each time, with full jitter.
    pub base_backoff: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        // Small on purpose: ingest must answer the DAM within seconds.
        Self {
            max_attempts: 3,
            base_backoff: Duration::from_millis(25),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SqsChangeQueue {
    client: Client,
    queue_url: String,
    retry: RetrySettings,
}

impl SqsChangeQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            retry: RetrySettings::default(),
        }
    }

    /// The queue at `queue_url`, with a client from the process's one AWS configuration.
    pub fn from_config(aws: &aws_config::SdkConfig, queue_url: impl Into<String>) -> Self {
        Self::new(Client::new(aws), queue_url)
    }

    pub fn with_retry(mut self, retry: RetrySettings) -> Self {
        self.retry = retry;
        self
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Sends one batch (≤ 10 entries, ≤ 1 MiB) until every entry is in or attempts run out.
    async fn send_batch(
        &self,
        mut pending: Vec<SendMessageBatchRequestEntry>,
    ) -> Result<(), QueueError> {
        let mut attempt = 1;
        loop {
            let output = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(pending.clone()))
                .send()
                .await
                .map_err(classify)?;
            let failed = output.failed();
            if failed.is_empty() {
                return Ok(());
            }
            if let Some(fault) = failed.iter().find(|f| f.sender_fault()) {
                return Err(QueueError::Permanent(
                    format!(
                        "entry rejected: {} {}",
                        fault.code(),
                        fault.message().unwrap_or_default()
                    ),
                    None,
                ));
            }
            if attempt >= self.retry.max_attempts {
                return Err(QueueError::Transient(
                    format!(
                        "{} entries still failing after {attempt} attempts (first: {})",
                        failed.len(),
                        failed[0].code()
                    ),
                    None,
                ));
            }
            let failed_ids: Vec<&str> = failed.iter().map(|f| f.id()).collect();
            pending.retain(|entry| failed_ids.contains(&entry.id()));
            if pending.is_empty() {
                return Err(QueueError::Transient(
                    "SQS reported failures for unknown entry ids".into(),
                    None,
                ));
            }
            tracing::warn!(
                attempt,
                failed = pending.len(),
                "SQS batch partly failed; retrying."
            );
            let cap = self
                .retry
                .base_backoff
                .saturating_mul(1 << (attempt - 1).min(16));
            tokio::time::sleep(cap.mul_f64(fastrand::f64())).await;
            attempt += 1;
        }
    }
}

fn entry(
    id: usize,
    event: &ChangeEvent,
    body: String,
) -> Result<SendMessageBatchRequestEntry, QueueError> {
    let dam = serde_json::to_value(event.dam)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let received = MessageAttributeValue::builder()
        .data_type("Number")
        .string_value(event.received_at_ms.to_string())
        .build();
    let build =
        |e: aws_sdk_sqs::error::BuildError| QueueError::Permanent(e.to_string(), Some(e.into()));
    SendMessageBatchRequestEntry::builder()
        .id(id.to_string())
        .message_body(body)
        .message_attributes(ATTR_DEDUPE_KEY, string_attribute(&event.dedupe_key)?)
        .message_attributes(ATTR_RECEIVED_AT_MS, received.map_err(build)?)
        .message_attributes(ATTR_DAM, string_attribute(&dam)?)
        .build()
        .map_err(build)
}

/// Groups events into batches within SQS's entry-count and byte limits.
fn batches(events: &[ChangeEvent]) -> Result<Vec<Vec<SendMessageBatchRequestEntry>>, QueueError> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut current_bytes = 0;
    for (index, event) in events.iter().enumerate() {
        let body = serde_json::to_string(event).map_err(|e| {
            QueueError::Permanent(format!("event not serialisable: {e}"), Some(e.into()))
        })?;
        let size = body.len() + event.dedupe_key.len() + ATTRIBUTE_ALLOWANCE;
        if size > MAX_BATCH_BYTES {
            return Err(QueueError::Permanent(
                format!(
                    "event for {} is {size} bytes, over the SQS message limit",
                    event.asset_id
                ),
                None,
            ));
        }
        if current.len() == MAX_BATCH_ENTRIES || current_bytes + size > MAX_BATCH_BYTES {
            out.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current.push(entry(index, event, body)?);
        current_bytes += size;
    }
    if !current.is_empty() {
        out.push(current);
    }
    Ok(out)
}

#[async_trait]
impl ChangeQueue for SqsChangeQueue {
    async fn enqueue(&self, events: &[ChangeEvent]) -> Result<(), QueueError> {
        for batch in batches(events)? {
            self.send_batch(batch).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dam::{ChangeKind, DamKind};

    fn event(id: usize, asset: Option<serde_json::Value>) -> ChangeEvent {
        ChangeEvent {
            dam: DamKind::Generic,
            asset_id: format!("a{id}"),
            kind: ChangeKind::Upsert,
            version: None,
            asset: asset.map(|fields| crate::dam::DamAsset {
                dam: DamKind::Generic,
                id: format!("a{id}"),
                version: crate::dam::Version {
                    modified_at_ms: 0,
                    seq: 0,
                },
                fields,
            }),
            dedupe_key: format!("k{id}"),
            received_at_ms: 1,
        }
    }

    #[test]
    fn batches_hold_at_most_ten_entries_with_unique_ids() {
        let events: Vec<_> = (0..23).map(|i| event(i, None)).collect();
        let sizes: Vec<_> = batches(&events).unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 3]);
        let ids: Vec<_> = batches(&events).unwrap()[2]
            .iter()
            .map(|e| e.id().to_owned())
            .collect();
        assert_eq!(ids, ["20", "21", "22"]);
    }

    #[test]
    fn batches_respect_the_byte_limit() {
        let big = serde_json::Value::String("x".repeat(400 * 1024));
        let events: Vec<_> = (0..3).map(|i| event(i, Some(big.clone()))).collect();
        let sizes: Vec<_> = batches(&events).unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 1]);
        let huge = serde_json::Value::String("x".repeat(MAX_BATCH_BYTES));
        assert!(matches!(
            batches(&[event(0, Some(huge))]),
            Err(QueueError::Permanent(..))
        ));
    }

    #[test]
    fn entries_carry_the_event_and_its_attributes() {
        let batch = batches(&[event(0, None)]).unwrap().remove(0);
        let entry = &batch[0];
        let body: ChangeEvent = serde_json::from_str(entry.message_body()).unwrap();
        assert_eq!(body, event(0, None));
        let attrs = entry.message_attributes().unwrap();
        assert_eq!(attrs[ATTR_DEDUPE_KEY].string_value(), Some("k0"));
        assert_eq!(attrs[ATTR_RECEIVED_AT_MS].data_type(), "Number");
        assert_eq!(attrs[ATTR_DAM].string_value(), Some("generic"));
    }
}
