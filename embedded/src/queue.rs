//! The queue: SQS's semantics on two tables (`queue`, `dead_letters`).

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use shared::dam::ChangeEvent;
use shared::queue::{
    ChangeQueue, DeadLetters, ParkedMessage, QueueAdmin, QueueDepth, QueueError, Replayed,
};

use shared::time::duration_ms;

use crate::error::DbError;
use crate::{SqliteStore, random_id};

/// Consumer-side behaviour of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// A received message stays hidden this long; unacknowledged, it then comes back.
    pub visibility_timeout: Duration,
    /// A message received this many times without being acknowledged is dead-lettered on the
    /// next receive (SQS's `maxReceiveCount`).
    pub max_receives: u32,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(60),
            max_receives: 5,
        }
    }
}

/// One received message and the receipt that acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub message_id: String,
    pub body: String,
    /// Valid until the message is received again (after its visibility timeout).
    pub receipt: String,
    /// Receives so far, this one included.
    pub receive_count: u32,
}

/// Most recorded errors kept for `dam-sync status`.
const MAX_ERRORS: i64 = 200;

impl SqliteStore {
    /// Receives up to `max` visible messages and hides them for the visibility timeout. First
    /// moves visible messages that used up their receives to the dead-letter table.
    pub async fn receive(&self, max: usize) -> Result<Vec<Received>, QueueError> {
        let settings = self.inner.queue;
        let visibility = duration_ms(settings.visibility_timeout);
        let max_receives = i64::from(settings.max_receives);
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        Ok(self
            .call(move |conn, now| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.execute(
                    "INSERT INTO dead_letters (message_id, body, reason, receive_count, dead_at_ms)
                     SELECT message_id, body,
                            'not processed after ' || receive_count || ' receives; last error: '
                              || COALESCE(last_error, 'none recorded (visibility timeout expired)'),
                            receive_count, ?1
                     FROM queue WHERE visible_at_ms <= ?1 AND receive_count >= ?2",
                    params![now, max_receives],
                )?;
                tx.execute(
                    "DELETE FROM queue WHERE visible_at_ms <= ?1 AND receive_count >= ?2",
                    params![now, max_receives],
                )?;
                let mut received = Vec::new();
                {
                    let mut select = tx.prepare(
                        "SELECT seq, message_id, body, receive_count FROM queue
                         WHERE visible_at_ms <= ?1 ORDER BY seq LIMIT ?2",
                    )?;
                    let rows = select.query_map(params![now, max], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, u32>(3)?,
                        ))
                    })?;
                    let mut update = tx.prepare(
                        "UPDATE queue SET visible_at_ms = ?1, receive_count = receive_count + 1,
                         receipt = ?2 WHERE seq = ?3",
                    )?;
                    for row in rows {
                        let (seq, message_id, body, count) = row?;
                        let receipt = random_id();
                        update.execute(params![now + visibility, receipt, seq])?;
                        received.push(Received {
                            message_id,
                            body,
                            receipt,
                            receive_count: count + 1,
                        });
                    }
                }
                tx.commit()?;
                Ok(received)
            })
            .await?)
    }

    /// Deletes processed messages. A receipt from an earlier receive no longer matches (the
    /// message was redelivered meanwhile) and is ignored, as SQS does.
    pub async fn ack(&self, receipts: Vec<(String, String)>) -> Result<u64, QueueError> {
        Ok(self
            .call(move |conn, _| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut deleted = 0;
                {
                    let mut delete =
                        tx.prepare("DELETE FROM queue WHERE message_id = ?1 AND receipt = ?2")?;
                    for (id, receipt) in &receipts {
                        deleted += delete.execute(params![id, receipt])? as u64;
                    }
                }
                tx.commit()?;
                Ok(deleted)
            })
            .await?)
    }

    /// Hands messages back for redelivery after `delay` (instead of the full visibility
    /// timeout), noting why; the reason ends up in the dead-letter table if they never pass.
    pub async fn retry_later(
        &self,
        receipts: Vec<(String, String)>,
        reason: String,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let delay = duration_ms(delay);
        Ok(self
            .call(move |conn, now| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                {
                    let mut update = tx.prepare(
                        "UPDATE queue SET visible_at_ms = ?1, last_error = ?2
                         WHERE message_id = ?3 AND receipt = ?4",
                    )?;
                    for (id, receipt) in &receipts {
                        update.execute(params![now + delay, reason, id, receipt])?;
                    }
                }
                tx.commit()?;
                Ok(())
            })
            .await?)
    }

    /// Puts a body on the queue as is (SQS's `SendMessage`), for producers that write their own
    /// messages; the consumer dead-letters what it cannot decode.
    pub async fn enqueue_raw(&self, body: &str) -> Result<(), QueueError> {
        let body = body.to_owned();
        Ok(self
            .call(move |conn, now| {
                conn.execute(
                    "INSERT INTO queue (message_id, body, enqueued_at_ms, visible_at_ms)
                     VALUES (?1, ?2, ?3, ?3)",
                    params![random_id(), body, now],
                )?;
                Ok(())
            })
            .await?)
    }

    /// Records an operational error for `dam-sync status` (the newest few are kept).
    pub async fn record_error(&self, source: &str, message: &str) -> Result<(), DbError> {
        let (source, message) = (source.to_owned(), message.to_owned());
        self.call(move |conn, now| {
            conn.execute(
                "INSERT INTO errors (at_ms, source, message) VALUES (?1, ?2, ?3)",
                params![now, source, message],
            )?;
            conn.execute(
                "DELETE FROM errors WHERE seq <= (SELECT MAX(seq) FROM errors) - ?1",
                params![MAX_ERRORS],
            )?;
            Ok(())
        })
        .await
    }

    /// The newest recorded errors, newest first: `(at_ms, source, message)`.
    pub async fn recent_errors(&self, limit: usize) -> Result<Vec<(i64, String, String)>, DbError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |conn, _| {
            let mut select = conn
                .prepare("SELECT at_ms, source, message FROM errors ORDER BY seq DESC LIMIT ?1")?;
            let rows =
                select.query_map(params![limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

#[async_trait]
impl ChangeQueue for SqliteStore {
    async fn enqueue(&self, events: &[ChangeEvent]) -> Result<(), QueueError> {
        let bodies = events
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                QueueError::Permanent(format!("event not serialisable: {e}"), Some(e.into()))
            })?;
        Ok(self
            .call(move |conn, now| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                {
                    let mut insert = tx.prepare(
                        "INSERT INTO queue (message_id, body, enqueued_at_ms, visible_at_ms)
                         VALUES (?1, ?2, ?3, ?3)",
                    )?;
                    for body in &bodies {
                        insert.execute(params![random_id(), body, now])?;
                    }
                }
                // Returns only once committed and synced (synchronous=FULL).
                tx.commit()?;
                Ok(())
            })
            .await?)
    }
}

#[async_trait]
impl DeadLetters for SqliteStore {
    async fn send(&self, message_id: &str, body: &str, reason: &str) -> Result<(), QueueError> {
        let (id, body, reason) = (message_id.to_owned(), body.to_owned(), reason.to_owned());
        Ok(self
            .call(move |conn, now| {
                // The receive count is the main queue's, when the message is still there.
                let count: Option<i64> = conn
                    .query_row(
                        "SELECT receive_count FROM queue WHERE message_id = ?1",
                        params![id],
                        |r| r.get(0),
                    )
                    .optional()?;
                conn.execute(
                    "INSERT INTO dead_letters (message_id, body, reason, receive_count, dead_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![id, body, reason, count.unwrap_or(0), now],
                )?;
                Ok(())
            })
            .await?)
    }
}

#[async_trait]
impl QueueAdmin for SqliteStore {
    fn backend(&self) -> String {
        format!("SQLite store {}", self.path().display())
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        Ok(self
            .call(|conn, now| {
                let (visible, in_flight) = conn.query_row(
                    "SELECT COALESCE(SUM(visible_at_ms <= ?1), 0), COALESCE(SUM(visible_at_ms > ?1), 0)
                     FROM queue",
                    params![now],
                    |r| Ok((r.get::<_, u64>(0)?, r.get::<_, u64>(1)?)),
                )?;
                let dead_letters =
                    conn.query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0))?;
                Ok(QueueDepth {
                    visible,
                    in_flight,
                    dead_letters,
                })
            })
            .await?)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<ParkedMessage>, QueueError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(self
            .call(move |conn, _| {
                let mut select = conn.prepare(
                    "SELECT seq, message_id, body, reason, receive_count, dead_at_ms
                     FROM dead_letters ORDER BY seq LIMIT ?1",
                )?;
                let rows = select.query_map(params![limit], |r| {
                    Ok(ParkedMessage {
                        id: r.get::<_, i64>(0)?.to_string(),
                        source_message_id: Some(r.get::<_, String>(1)?).filter(|s| !s.is_empty()),
                        body: r.get(2)?,
                        reason: r.get(3)?,
                        receive_count: Some(r.get(4)?),
                        parked_at_ms: Some(r.get(5)?),
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?)
    }

    async fn replay(&self, ids: Option<&[String]>) -> Result<Replayed, QueueError> {
        let ids: Option<Vec<String>> = ids.map(<[String]>::to_vec);
        Ok(self
            .call(move |conn, now| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let chosen: Vec<(i64, String)> = {
                    let mut select =
                        tx.prepare("SELECT seq, body FROM dead_letters ORDER BY seq")?;
                    let rows = select.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    rows.collect::<Result<Vec<(i64, String)>, _>>()?
                        .into_iter()
                        .filter(|(seq, _)| {
                            ids.as_ref()
                                .is_none_or(|ids| ids.contains(&seq.to_string()))
                        })
                        .collect()
                };
                for (seq, body) in &chosen {
                    tx.execute(
                        "INSERT INTO queue (message_id, body, enqueued_at_ms, visible_at_ms)
                         VALUES (?1, ?2, ?3, ?3)",
                        params![random_id(), body, now],
                    )?;
                    tx.execute("DELETE FROM dead_letters WHERE seq = ?1", params![seq])?;
                }
                tx.commit()?;
                let replayed: Vec<String> = chosen.iter().map(|(s, _)| s.to_string()).collect();
                let not_found = ids
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|id| !replayed.contains(id))
                    .collect();
                Ok(Replayed {
                    replayed,
                    not_found,
                })
            })
            .await?)
    }
}
