//! The queue ports and their error type; the SQS adapters are in [`sqs`], the SQLite ones in
//! the `embedded-store` crate.
//!
//! - [`ChangeQueue`]: where ingest (and the poller) hand change events to the consumer.
//!   `enqueue` succeeds only when every event is durably queued, so a webhook is acknowledged
//!   (2xx) only for events that will be processed.
//! - [`DeadLetters`]: where the consumer parks messages that no retry can fix (poison bodies,
//!   assets the PIM refuses), with the reason, so they neither loop nor get lost.
//! - [`QueueAdmin`]: what an operator needs to answer "what is waiting, what failed and why"
//!   and to put parked messages back.

use async_trait::async_trait;

use crate::BoxError;
use crate::dam::ChangeEvent;

pub mod sqs;

/// A failure of the queue: what happened in one short line (for an SDK error, its code and
/// message or the network cause) and the error underneath, when there is one (SDK, SQLite,
/// serde), with the whole detail.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Throttling, timeouts, a partial batch that kept failing: trying later may work.
    #[error("queue temporarily unavailable: {0}")]
    Transient(String, #[source] Option<BoxError>),
    /// Missing queue, denied access, an event too large: retrying will not help.
    #[error("queue refused the events: {0}")]
    Permanent(String, #[source] Option<BoxError>),
}

impl QueueError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, QueueError::Transient(..))
    }
}

#[async_trait]
pub trait ChangeQueue: Send + Sync {
    /// Queues all events, or fails (some may then be queued: consumers dedupe).
    async fn enqueue(&self, events: &[ChangeEvent]) -> Result<(), QueueError>;
}

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

/// Messages waiting and parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    /// Ready to be received.
    pub visible: u64,
    /// Received and not yet acknowledged (being processed, or waiting out a timeout).
    pub in_flight: u64,
    /// In the dead-letter queue (table).
    pub dead_letters: u64,
}

/// One parked message, as listed (nothing is consumed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedMessage {
    /// The id to pass to [`QueueAdmin::replay`].
    pub id: String,
    /// The id the message had on the main queue, when known.
    pub source_message_id: Option<String>,
    pub reason: String,
    pub body: String,
    /// Times it was received (on SQS: received from the dead-letter queue, listings included).
    pub receive_count: Option<u64>,
    /// When it was parked, ms since the epoch, when known.
    pub parked_at_ms: Option<i64>,
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Replayed {
    /// Ids moved back to the main queue.
    pub replayed: Vec<String>,
    /// Requested ids that were not in the dead-letter queue.
    pub not_found: Vec<String>,
}

#[async_trait]
pub trait QueueAdmin: Send + Sync {
    /// Names the backend for messages, e.g. `SQS queue https://...` or `SQLite store ./x.db`.
    fn backend(&self) -> String;

    async fn depth(&self) -> Result<QueueDepth, QueueError>;

    /// Up to `limit` parked messages with their reasons, oldest first where the backend knows.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<ParkedMessage>, QueueError>;

    /// Moves parked messages back to the main queue: the given ids, or all when `ids` is None.
    async fn replay(&self, ids: Option<&[String]>) -> Result<Replayed, QueueError>;
}
