//! The dead-letter port: where the consumer parks messages that no retry can fix (poison
//! bodies, assets the PIM refuses), with the reason, so they neither loop nor get lost.
//!
//! The SQS adapter sends the original body unchanged (a redrive puts it back as it was) and
//! the reason and source message id as message attributes.

use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_sqs::Client;

use super::QueueError;
use super::sqs::{classify, string_attribute};

/// Message attribute holding why a message was dead-lettered.
pub const ATTR_REASON: &str = "dead_letter_reason";
/// Message attribute holding the id of the message as the consumer received it.
pub const ATTR_SOURCE_MESSAGE_ID: &str = "source_message_id";
/// Reasons are cut to this many bytes: attributes count against SQS's 256 KiB message cap.
pub const MAX_REASON_BYTES: usize = 4096;

/// One message parked with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub message_id: String,
    pub body: String,
    pub reason: String,
}

#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Parks one message durably, or fails (the caller then has it redelivered instead).
    async fn send(&self, message_id: &str, body: &str, reason: &str) -> Result<(), QueueError>;
}

/// Dead letters on an SQS queue.
#[derive(Debug, Clone)]
pub struct SqsDeadLetters {
    client: Client,
    queue_url: String,
}

impl SqsDeadLetters {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }

    /// A client from the standard AWS configuration chain (env, profile, Lambda role);
    /// `AWS_ENDPOINT_URL` redirects it (tests use moto).
    pub async fn from_env(queue_url: impl Into<String>) -> Self {
        let config = aws_config::load_from_env().await;
        Self::new(Client::new(&config), queue_url)
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }
}

/// Cuts `reason` to [`MAX_REASON_BYTES`] on a character boundary.
fn truncate(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[async_trait]
impl DeadLetters for SqsDeadLetters {
    async fn send(&self, message_id: &str, body: &str, reason: &str) -> Result<(), QueueError> {
        // SQS refuses empty bodies and empty attribute values.
        let body = if body.is_empty() { " " } else { body };
        let reason = if reason.is_empty() {
            "unspecified"
        } else {
            truncate(reason)
        };
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_attributes(ATTR_REASON, string_attribute(reason)?);
        if !message_id.is_empty() {
            request =
                request.message_attributes(ATTR_SOURCE_MESSAGE_ID, string_attribute(message_id)?);
        }
        request.send().await.map_err(classify)?;
        Ok(())
    }
}

/// In-process dead letters for unit tests and benchmarks.
#[derive(Debug, Default)]
pub struct MemoryDeadLetters {
    letters: Mutex<Vec<DeadLetter>>,
    fail_with: Mutex<Option<String>>,
}

impl MemoryDeadLetters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later `send` fail with a transient error (or succeed again on `None`).
    pub fn set_failure(&self, reason: Option<&str>) {
        *self.fail_with.lock().expect("dead letter lock") = reason.map(str::to_owned);
    }

    pub fn letters(&self) -> Vec<DeadLetter> {
        self.letters.lock().expect("dead letter lock").clone()
    }
}

#[async_trait]
impl DeadLetters for MemoryDeadLetters {
    async fn send(&self, message_id: &str, body: &str, reason: &str) -> Result<(), QueueError> {
        if let Some(failure) = self.fail_with.lock().expect("dead letter lock").clone() {
            return Err(QueueError::Transient(failure));
        }
        self.letters
            .lock()
            .expect("dead letter lock")
            .push(DeadLetter {
                message_id: message_id.to_string(),
                body: body.to_string(),
                reason: reason.to_string(),
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("short"), "short");
        let long = "é".repeat(MAX_REASON_BYTES); // 2 bytes each
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_REASON_BYTES);
        assert!(cut.len() >= MAX_REASON_BYTES - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[tokio::test]
    async fn memory_dead_letters_keep_letters_and_can_fail() {
        let dlq = MemoryDeadLetters::new();
        dlq.send("m1", "{}", "poison").await.unwrap();
        dlq.set_failure(Some("throttled"));
        let err = dlq.send("m2", "{}", "poison").await.unwrap_err();
        assert!(err.is_retriable());
        assert_eq!(dlq.letters().len(), 1);
        assert_eq!(dlq.letters()[0].message_id, "m1");
    }
}
