//! The queue ports on Amazon SQS: the change queue ([`SqsChangeQueue`]), the dead-letter queue
//! ([`SqsDeadLetters`]) and the operator's view of both ([`SqsQueueAdmin`]).
//!
//! Endpoints come from the SDK's standard configuration (`AWS_ENDPOINT_URL`,
//! `AWS_ENDPOINT_URL_SQS`), which is how tests reach moto.

pub use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::types::MessageAttributeValue;

use super::QueueError;
use crate::aws::{self, HttpResponse, OperationError};

mod admin;
mod dlq;
mod queue;

pub use admin::{NO_REASON, SqsQueueAdmin};
pub use dlq::{ATTR_REASON, ATTR_SOURCE_MESSAGE_ID, MAX_REASON_BYTES, SqsDeadLetters};
pub use queue::{
    ATTR_DAM, ATTR_DEDUPE_KEY, ATTR_RECEIVED_AT_MS, MAX_BATCH_BYTES, MAX_BATCH_ENTRIES,
    RetrySettings, SqsChangeQueue,
};

/// A failed SQS call as the port's error, classified like every AWS call.
fn classify<E: OperationError>(error: SdkError<E, HttpResponse>) -> QueueError {
    aws::classify(error, QueueError::Transient, QueueError::Permanent)
}

/// A `String` message attribute.
fn string_attribute(value: &str) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| QueueError::Permanent(e.to_string(), Some(e.into())))
}
