//! The queue ports in memory, with failure knobs.

use std::sync::Mutex;

use async_trait::async_trait;

use crate::dam::ChangeEvent;
use crate::queue::{ChangeQueue, DeadLetter, DeadLetters, QueueError};

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
            return Err(QueueError::Transient(reason, None));
        }
        self.events
            .lock()
            .expect("queue lock")
            .extend_from_slice(events);
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
            return Err(QueueError::Transient(failure, None));
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
