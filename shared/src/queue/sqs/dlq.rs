//! Dead letters on an SQS queue: the original body unchanged (a redrive puts it back as it
//! was), the reason and source message id as message attributes.

use async_trait::async_trait;

use super::{Client, classify, string_attribute};
use crate::queue::{DeadLetters, QueueError};

/// Message attribute holding why a message was dead-lettered.
pub const ATTR_REASON: &str = "dead_letter_reason";
/// Message attribute holding the id of the message as the consumer received it.
pub const ATTR_SOURCE_MESSAGE_ID: &str = "source_message_id";
/// Reasons are cut to this many bytes: attributes count against SQS's 256 KiB message cap.
pub const MAX_REASON_BYTES: usize = 4096;

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

    /// The dead-letter queue at `queue_url`, with a client from the process's one AWS
    /// configuration.
    pub fn from_config(aws: &aws_config::SdkConfig, queue_url: impl Into<String>) -> Self {
        Self::new(Client::new(aws), queue_url)
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
}
