//! The pure steps of the pipeline: decode, coalesce and the version guard. No I/O, so they are
//! unit-tested directly.

use std::collections::HashMap;

use crate::dam::{ChangeEvent, ChangeKind, DamKind, Version};

/// One SQS message as the consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    pub id: String,
    pub body: String,
    /// How many times the queue has delivered this message, this delivery included (SQS
    /// `ApproximateReceiveCount`; 1 on a first delivery). Bounds the retries the consumer
    /// leaves to the queue: see [`super::ConsumerSettings::max_receives`].
    pub receive_count: u32,
}

/// A message whose body cannot be a change event: it can never succeed, so it is
/// dead-lettered at once instead of looping until the queue's redrive policy gives up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    pub message: InboundMessage,
    pub reason: String,
}

/// Parses a body into a change event, refusing events that contradict themselves.
pub fn decode(body: &str) -> Result<ChangeEvent, String> {
    let event: ChangeEvent =
        serde_json::from_str(body).map_err(|e| format!("undecodable change event: {e}"))?;
    if event.asset_id.trim().is_empty() {
        return Err("change event has an empty asset_id".into());
    }
    if let Some(asset) = &event.asset {
        if asset.id != event.asset_id || asset.dam != event.dam {
            return Err(format!(
                "change event for {:?}/{} carries asset {:?}/{}",
                event.dam, event.asset_id, asset.dam, asset.id
            ));
        }
        if event.kind == ChangeKind::Delete {
            return Err("delete event carries an asset".into());
        }
    }
    Ok(event)
}

/// All messages about one DAM asset in a batch, represented by the newest event.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetChange {
    pub dam: DamKind,
    pub asset_id: String,
    pub event: ChangeEvent,
    /// Every message of the batch about this asset: they share its outcome.
    pub message_ids: Vec<String>,
    /// The newest event's message id and body, kept for the dead-letter queue.
    pub source_id: String,
    pub body: String,
    /// The asset's state must be read from the DAM: a thin event, a deletion (confirmed by the
    /// DAM before anything is retired), or events of one asset that disagree (kinds, or a
    /// carried asset beside a thin event): only the DAM knows which came last.
    pub read_dam: bool,
    /// The newest version any of its events speaks for: a DAM read older than that means the
    /// DAM lags behind its own notification.
    pub hint: Option<Version>,
    /// The most deliveries any of its messages has had.
    pub receive_count: u32,
}

impl AssetChange {
    /// The carried asset to apply without a DAM read, when the change has one.
    pub fn carried(&self) -> Option<&crate::dam::DamAsset> {
        if self.read_dam {
            None
        } else {
            self.event.asset.as_ref()
        }
    }
}

/// The version an event speaks for: the carried asset's, else the hint.
pub fn event_version(event: &ChangeEvent) -> Option<Version> {
    event.asset.as_ref().map(|a| a.version).or(event.version)
}

/// Orders two events of one asset: by version (unversioned first), then by receive time, and
/// a full asset before a thin event of the same version (it saves a DAM read).
fn newer(a: &ChangeEvent, b: &ChangeEvent) -> bool {
    let key = |e: &ChangeEvent| (event_version(e), e.received_at_ms, e.asset.is_some());
    key(a) > key(b)
}

/// Whether an event can only be settled by reading the DAM: thin upserts and deletions.
fn needs_read(event: &ChangeEvent) -> bool {
    event.asset.is_none() || event.kind == ChangeKind::Delete
}

/// Decodes a batch and groups it per (dam, asset id), keeping the newest event of each asset,
/// in order of first appearance. A group is applied from a carried asset only when every event
/// in it carries one; otherwise it is resolved by one DAM read, so a deletion is never
/// swallowed by an upsert that merely sorts later (an unversioned delete sorts first).
pub fn coalesce(messages: Vec<InboundMessage>) -> (Vec<AssetChange>, Vec<Poison>) {
    let mut changes: Vec<AssetChange> = Vec::new();
    let mut index: HashMap<(DamKind, String), usize> = HashMap::new();
    let mut poison = Vec::new();
    for message in messages {
        let event = match decode(&message.body) {
            Ok(e) => e,
            Err(reason) => {
                poison.push(Poison { message, reason });
                continue;
            }
        };
        let key = (event.dam, event.asset_id.clone());
        match index.get(&key) {
            Some(&i) => {
                let change = &mut changes[i];
                change.read_dam |= needs_read(&event) || change.event.kind != event.kind;
                change.hint = change.hint.max(event_version(&event));
                change.receive_count = change.receive_count.max(message.receive_count);
                if newer(&event, &change.event) {
                    change.event = event;
                    change.source_id = message.id.clone();
                    change.body = message.body;
                }
                change.message_ids.push(message.id);
            }
            None => {
                index.insert(key, changes.len());
                let read_dam = needs_read(&event);
                changes.push(AssetChange {
                    dam: event.dam,
                    asset_id: event.asset_id.clone(),
                    read_dam,
                    hint: event_version(&event),
                    receive_count: message.receive_count,
                    event,
                    source_id: message.id.clone(),
                    message_ids: vec![message.id],
                    body: message.body,
                });
            }
        }
    }
    (changes, poison)
}
