//! Reading what the batch needs before deciding anything: the DAM's current assets, the
//! applied states and the family structures.

use std::collections::HashMap;
use std::sync::Arc;

use super::Consumer;
use super::batch::{Batch, Fate, TOO_LATE};
use crate::akeneo::FamilyStructure;
use crate::dam::{DamKind, Fetched};
use crate::store::AssetState;

impl Consumer {
    /// The current DAM state of every change: carried assets as they are; thin upserts,
    /// deletions and disagreeing events read from their DAM (a deletion is applied only when
    /// the DAM confirms it). `None` where the change is settled.
    pub(super) async fn read_dam(&self, batch: &mut Batch) -> Vec<Option<Fetched>> {
        let mut current: Vec<Option<Fetched>> = vec![None; batch.changes.len()];
        let mut reads = Vec::new();
        for (idx, change) in batch.changes.iter().enumerate() {
            match change.carried() {
                Some(asset) => current[idx] = Some(Fetched::Found(asset.clone())),
                None => reads.push(idx),
            }
        }
        self.fetch_into(batch, reads, &mut current).await;
        current
    }

    /// Reads the DAM state of the changes `indices` into `current`, batched per DAM. A read
    /// older than the change's hint means the DAM lags behind its own notification: it is
    /// retried, for at most `lag_receives` deliveries; after that the read is applied and the
    /// poller catches up, so a lag never ends in the dead letters.
    pub(super) async fn fetch_into(
        &self,
        batch: &mut Batch,
        indices: Vec<usize>,
        current: &mut [Option<Fetched>],
    ) {
        let mut by_dam: HashMap<DamKind, Vec<usize>> = HashMap::new();
        for idx in indices {
            by_dam.entry(batch.changes[idx].dam).or_default().push(idx);
        }
        for (dam, indices) in by_dam {
            let Some(source) = self.sources.get(&dam) else {
                for idx in indices {
                    batch.settle(
                        idx,
                        Fate::Dead(format!("no DAM source configured for {dam:?}")),
                    );
                }
                continue;
            };
            for chunk in indices.chunks(self.settings.fetch_batch.max(1)) {
                if batch.too_late() {
                    for &idx in chunk {
                        batch.settle(idx, Fate::Retry(TOO_LATE.into()));
                    }
                    continue;
                }
                let ids: Vec<String> = chunk
                    .iter()
                    .map(|&i| batch.changes[i].asset_id.clone())
                    .collect();
                let result = tokio::time::timeout_at(batch.cutoff, source.fetch(&ids)).await;
                let fetched = match result {
                    Ok(Ok(f)) if f.len() == ids.len() => f,
                    Ok(Ok(f)) => {
                        let why = format!("DAM answered {} results for {} ids", f.len(), ids.len());
                        for &idx in chunk {
                            batch.settle(idx, Fate::Retry(why.clone()));
                        }
                        continue;
                    }
                    // An unreachable or refusing DAM is infrastructure: redeliver, and let
                    // the queue's redrive policy bound the attempts.
                    Ok(Err(error)) => {
                        // Debug only: each message's "Left for redelivery" warning carries
                        // this error, so it is logged once per message, not twice.
                        tracing::debug!(%error, ?dam, "DAM fetch failed.");
                        for &idx in chunk {
                            batch.settle(idx, Fate::Retry(error.to_string()));
                        }
                        continue;
                    }
                    Err(_) => {
                        for &idx in chunk {
                            batch.settle(idx, Fate::Retry(TOO_LATE.into()));
                        }
                        continue;
                    }
                };
                for (&idx, item) in chunk.iter().zip(fetched) {
                    let change = &batch.changes[idx];
                    let lagging = match (&item, change.hint) {
                        (Fetched::Found(asset), Some(hint)) => asset.version.lags_behind(&hint),
                        _ => false,
                    };
                    if lagging && change.receive_count < self.settings.lag_receives {
                        batch.settle(
                            idx,
                            Fate::Retry("DAM returned an older version than the event".into()),
                        );
                        continue;
                    }
                    if lagging {
                        tracing::info!(
                            dam_id = %change.asset_id,
                            receives = change.receive_count,
                            "DAM still behind its notification; applying what it returns."
                        );
                    }
                    current[idx] = Some(item);
                }
            }
        }
    }

    /// Carried assets are re-read under the lease when the stored state is a tombstone (a
    /// listing or a replay taken before the deletion must not re-create the asset), or when
    /// they are at the applied version with other DAM content than was applied (the snapshot
    /// may predate a same-second edit that was applied; only the DAM can say which is
    /// current).
    pub(super) async fn reread_carried(
        &self,
        batch: &mut Batch,
        current: &mut [Option<Fetched>],
        states: &HashMap<(DamKind, String), AssetState>,
    ) {
        let mut again = Vec::new();
        for (idx, read) in current.iter().enumerate() {
            let change = &batch.changes[idx];
            if !batch.open(idx) || change.read_dam {
                continue;
            }
            let Some(Fetched::Found(asset)) = read else {
                continue;
            };
            let state = states.get(&(change.dam, change.asset_id.clone()));
            let doubtful = state.is_some_and(|s| {
                s.deleted
                    || (s.applied_version == asset.version
                        && (s.source_hash.is_empty() || s.source_hash != asset.fingerprint()))
            });
            if doubtful {
                again.push(idx);
            }
        }
        self.fetch_into(batch, again, current).await;
    }

    pub(super) async fn load_states(
        &self,
        batch: &mut Batch,
    ) -> HashMap<(DamKind, String), AssetState> {
        let mut by_dam: HashMap<DamKind, Vec<usize>> = HashMap::new();
        for idx in 0..batch.changes.len() {
            if batch.open(idx) {
                by_dam.entry(batch.changes[idx].dam).or_default().push(idx);
            }
        }
        let mut states = HashMap::new();
        for (dam, indices) in by_dam {
            let ids: Vec<String> = indices
                .iter()
                .map(|&i| batch.changes[i].asset_id.clone())
                .collect();
            match self.store.get_many(dam, &ids).await {
                Ok(found) => {
                    states.extend(found.into_iter().map(|(id, s)| ((dam, id), s)));
                }
                Err(error) => {
                    tracing::warn!(%error, ?dam, "State read failed.");
                    for idx in indices {
                        batch.settle(idx, Fate::Retry(error.to_string()));
                    }
                }
            }
        }
        states
    }

    /// Structures of every family the mapping routes to (cached by the PIM adapter), and why
    /// the ones that could not be read are missing.
    pub(super) async fn load_structures(
        &self,
        batch: &Batch,
    ) -> (
        HashMap<String, Arc<FamilyStructure>>,
        HashMap<String, String>,
    ) {
        let mut structures = HashMap::new();
        let mut unavailable = HashMap::new();
        for family in self.mapping.families() {
            // Bounded by the cutoff: a cached structure is still served, but no PIM read
            // starts in the safety margin.
            match self.pim.structure(family, batch.cutoff).await {
                Ok(Some(s)) => {
                    structures.insert(family.to_string(), s);
                }
                // Unknown to the PIM: mapping reports such assets Invalid, which is right.
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, family, "Structure read failed.");
                    if error.is_retriable() {
                        unavailable.insert(family.to_string(), error.to_string());
                    }
                }
            }
        }
        (structures, unavailable)
    }
}
