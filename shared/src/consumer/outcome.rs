//! The end of a batch: one log line per asset, the dead letters, and the outcome for SQS.

use futures::StreamExt;
use tracing::Instrument;

use super::batch::{Batch, BatchOutcome, Done, Fate};
use super::{Consumer, Poison};
use crate::dam::{DamKind, Version};

impl Consumer {
    /// Sends dead letters and builds the outcome. A dead letter that cannot be sent is
    /// retried instead, so no message is acknowledged without being handled.
    ///
    /// Logs one line per asset (and per poison message) inside a span carrying the DAM id,
    /// family and outcome; the dead-letter send runs in the same span.
    pub(super) async fn finish(
        &self,
        batch: Batch,
        poison: Vec<Poison>,
        messages: u64,
    ) -> BatchOutcome {
        let mut outcome = BatchOutcome {
            freshness_ms: batch.freshness_ms,
            ..BatchOutcome::default()
        };
        let report = &mut outcome.report;
        report.messages = messages;
        report.assets = batch.changes.len() as u64;
        report.media_uploaded = batch.media_uploaded;
        let mut letters: Vec<Letter> = Vec::new();
        for p in poison {
            report.poison += 1;
            let span = tracing::info_span!(
                "message",
                message_id = %p.message.id,
                outcome = "poison",
            );
            span.in_scope(|| tracing::warn!(reason = %p.reason, "Undecodable message."));
            letters.push(Letter {
                parks: None,
                source_id: p.message.id.clone(),
                message_ids: vec![p.message.id],
                body: p.message.body,
                reason: p.reason,
                span,
            });
        }
        let settled = batch
            .changes
            .into_iter()
            .zip(batch.fates)
            .zip(batch.families)
            .zip(batch.versions);
        for (((change, fate), family), version) in settled {
            let fate = match fate.unwrap_or_else(|| Fate::Retry("no outcome".into())) {
                // The queue would move it to its dead-letter queue after this delivery, with
                // no reason attached: park it here, with one.
                Fate::Retry(reason) if change.receive_count >= self.settings.max_receives => {
                    Fate::Dead(format!(
                        "not processed after {} deliveries; last error: {reason}",
                        change.receive_count
                    ))
                }
                fate => fate,
            };
            let span = tracing::info_span!(
                "asset",
                dam = change.dam.as_str(),
                dam_id = %change.asset_id,
                family = family.as_deref().unwrap_or(""),
                outcome = fate.name(),
                messages = change.message_ids.len(),
                message_id = %change.source_id,
            );
            let _entered = span.enter();
            match fate {
                Fate::Done(done) => {
                    match done {
                        Done::Synced => report.synced += 1,
                        Done::Moved => {
                            report.synced += 1;
                            report.moved += 1;
                        }
                        Done::LeftMapping => report.left_mapping += 1,
                        Done::Unchanged => report.skipped_unchanged += 1,
                        Done::Unmapped => report.skipped_unmapped += 1,
                        Done::Stale => report.stale += 1,
                        Done::Deleted => report.deleted += 1,
                    }
                    tracing::info!("Asset processed.");
                }
                Fate::Retry(reason) => {
                    report.failed += 1;
                    tracing::warn!(%reason, "Left for redelivery.");
                    outcome.retry.extend(
                        change
                            .message_ids
                            .into_iter()
                            .map(|id| (id, reason.clone())),
                    );
                }
                Fate::Dead(reason) => {
                    report.failed += 1;
                    tracing::warn!(%reason, "Dead-lettering.");
                    letters.push(Letter {
                        parks: version
                            .or(change.hint)
                            .map(|v| (change.dam, change.asset_id.clone(), v)),
                        source_id: change.source_id,
                        message_ids: change.message_ids,
                        body: change.body,
                        reason,
                        span: span.clone(),
                    });
                }
            }
        }
        let sent: Vec<(Letter, Result<(), String>)> = futures::stream::iter(letters)
            .map(|letter| {
                let span = letter.span.clone();
                async move {
                    let result = self
                        .dead_letters
                        .send(&letter.source_id, &letter.body, &letter.reason)
                        .await;
                    if let Err(error) = &result {
                        tracing::error!(%error, "Dead letter not sent; left for redelivery.");
                    } else if let Some((dam, id, version)) = &letter.parks {
                        // Best effort: without the mark the poller queues the version again
                        // and it is parked a second time, which loses nothing.
                        if let Err(error) = self.store.record_parked(*dam, id, *version).await {
                            tracing::warn!(%error, "Parked version not recorded.");
                        }
                    }
                    (letter, result.map_err(|e| e.to_string()))
                }
                .instrument(span)
            })
            .buffer_unordered(self.settings.writes_in_flight.max(1))
            .collect()
            .await;
        for (letter, sent) in sent {
            let (reason, parked) = match sent {
                Ok(()) => {
                    outcome.report.dead_letters_sent += 1;
                    (letter.reason, &mut outcome.dead_lettered)
                }
                Err(error) => (
                    format!("dead letter not sent ({error}): {}", letter.reason),
                    &mut outcome.retry,
                ),
            };
            parked.extend(
                letter
                    .message_ids
                    .into_iter()
                    .map(|id| (id, reason.clone())),
            );
        }
        outcome
    }
}

/// A dead letter to send: one per poison message or per dead asset.
struct Letter {
    /// The asset and the version parked, so the poller does not queue that version again
    /// until the asset changes or the letter is replayed. `None` for poison.
    parks: Option<(DamKind, String, Version)>,
    source_id: String,
    message_ids: Vec<String>,
    body: String,
    reason: String,
    /// The asset's (or poison message's) log span.
    span: tracing::Span,
}
