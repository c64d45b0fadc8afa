//! The change queue port: where ingest (and the poller) hand change events to the consumer.
//!
//! `enqueue` succeeds only when every event is durably queued, so a webhook is acknowledged
//! (2xx) only for events that will be processed.

use std::sync::Mutex;

use async_trait::async_trait;

use crate::dam::ChangeEvent;

pub mod admin;
pub mod dlq;
pub mod sqs;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Throttling, timeouts, a partial batch that kept failing: trying later may work.
    #[error("queue temporarily unavailable: {0}")]
    Transient(String),
    /// Missing queue, denied access, an event too large: retrying will not help.
    #[error("queue refused the events: {0}")]
    Permanent(String),
}

impl QueueError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, QueueError::Transient(_))
    }
}

#[async_trait]
pub trait ChangeQueue: Send + Sync {
    /// Queues all events, or fails (some may then be queued: consumers dedupe).
    async fn enqueue(&self, events: &[ChangeEvent]) -> Result<(), QueueError>;
}

/// An in-process queue for unit tests and benchmarks.
#[derive(Debug, Default)]
pub struct MemoryChangeQueue {
    events: Mutex<Vec<ChangeEvent>>,
    fail_with: Mutex<Option<String>>,
}

impl MemoryChangeQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later `enqueue` fail with a transient error (or succeed again on `None`).
    pub fn set_failure(&self, reason: Option<&str>) {
        *self.fail_with.lock().expect("queue lock") = reason.map(str::to_owned);
    }

    /// Removes and returns everything queued so far.
    pub fn drain(&self) -> Vec<ChangeEvent> {
        std::mem::take(&mut *self.events.lock().expect("queue lock"))
    }

    pub fn len(&self) -> usize {
        self.events.lock().expect("queue lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl ChangeQueue for MemoryChangeQueue {
    async fn enqueue(&self, events: &[ChangeEvent]) -> Result<(), QueueError> {
        if let Some(reason) = self.fail_with.lock().expect("queue lock").clone() {
            return Err(QueueError::Transient(reason));
        }
        self.events
            .lock()
            .expect("queue lock")
            .extend_from_slice(events);
        Ok(())
    }
}
