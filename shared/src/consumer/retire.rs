//! Retiring PIM assets: DAM deletions, assets that moved to another family or code, and assets
//! that left the mapping all get the delete policy of the family they were written to.

use std::collections::{BTreeMap, HashMap};

use super::Consumer;
use super::batch::{Batch, Done, Fate, Pending, TOO_LATE, item_fate, pim_fate};
use crate::dam::{DamAsset, DamKind, Fetched, Version};
use crate::mapping::DeletePolicy;
use crate::store::AssetState;
use crate::time::now_ms;

impl Consumer {
    /// Applies the family's delete policy to an asset the DAM no longer has (confirmed by a
    /// DAM read), then records a tombstone in place of its state: a late or replayed full
    /// event of an older version then finds the tombstone and is checked with the DAM instead
    /// of re-creating the asset; a re-creation in the DAM is read and written in full.
    pub(super) async fn apply_deletion(
        &self,
        batch: &mut Batch,
        idx: usize,
        state: Option<&AssetState>,
    ) {
        let pim_result = match state {
            // It left the mapping earlier, or was never written: nothing of ours is in the PIM.
            None => Ok(()),
            Some(s) if s.is_detached() => Ok(()),
            Some(s) => self.retire(batch, &s.family, &s.pim_code).await,
        };
        if let Err(fate) = pim_result {
            batch.settle(idx, fate);
            return;
        }
        let change = &batch.changes[idx];
        let applied = state.map_or(
            Version {
                modified_at_ms: 0,
                seq: 0,
            },
            |s| s.applied_version,
        );
        let tombstone = AssetState {
            dam: change.dam,
            asset_id: change.asset_id.clone(),
            applied_version: change.hint.map_or(applied, |hint| hint.max(applied)),
            content_hash: String::new(),
            family: String::new(),
            pim_code: String::new(),
            updated_at_ms: now_ms(),
            media_files: BTreeMap::new(),
            deleted: true,
            source_hash: String::new(),
        };
        let done = if state.is_some() {
            Done::Deleted
        } else {
            Done::Unmapped
        };
        let fate = match self.store.record_applied(&tombstone).await {
            Ok(_) => Fate::Done(done),
            Err(error) => Fate::Retry(error.to_string()),
        };
        batch.settle(idx, fate);
    }

    /// Changes whose media file answered 404/410: the DAM is asked. An asset it no longer has
    /// was deleted after the event was sent, a normal race: that deletion is applied. One it
    /// still has is retried with the reason (and parked with it on its last delivery).
    pub(super) async fn resolve_missing_media(
        &self,
        batch: &mut Batch,
        states: &HashMap<(DamKind, String), AssetState>,
    ) {
        let missing = std::mem::take(&mut batch.media_missing);
        if missing.is_empty() {
            return;
        }
        let mut current = vec![None; batch.changes.len()];
        let indices = missing.iter().map(|(idx, _)| *idx).collect();
        self.fetch_into(batch, indices, &mut current).await;
        for (idx, why) in missing {
            let change = &batch.changes[idx];
            let state = states.get(&(change.dam, change.asset_id.clone()));
            match (current[idx].take(), state) {
                (Some(Fetched::Gone(_)), state) => self.apply_deletion(batch, idx, state).await,
                (Some(Fetched::Found(_)), _) => batch.settle(
                    idx,
                    Fate::Retry(format!("{why}; the DAM still has the asset")),
                ),
                // Settled by the read.
                (None, _) => {}
            }
        }
    }

    /// Applies `family`'s delete policy to the PIM asset `code`: what a DAM deletion does, and
    /// what happens to an asset the DAM still has but the mapping no longer sends there.
    async fn retire(&self, batch: &Batch, family: &str, code: &str) -> Result<(), Fate> {
        match self.mapping.delete_policy(family) {
            DeletePolicy::Ignore => Ok(()),
            _ if batch.too_late() => Err(Fate::Retry(TOO_LATE.into())),
            DeletePolicy::Delete => self
                .pim
                .delete(family, code, batch.deadline)
                .await
                .map_err(|e| pim_fate(&e)),
            DeletePolicy::Clear(_) => match self.mapping.clear_values(family, code) {
                None => Ok(()),
                Some(asset) => {
                    let outcome = self
                        .pim
                        .upsert(family, &[asset], batch.deadline)
                        .await
                        .into_iter()
                        .next();
                    match outcome {
                        Some(Ok(_)) => Ok(()),
                        Some(Err(f)) => Err(item_fate(&f)),
                        None => Err(Fate::Retry("the PIM gave no outcome".into())),
                    }
                }
            },
        }
    }

    /// Retires the old PIM asset of written assets that changed family or code. An asset whose
    /// old asset could not be retired is settled (its state is not recorded, so a redelivery
    /// writes it again, which is idempotent, and retries the retirement).
    pub(super) async fn retire_replaced(
        &self,
        batch: &mut Batch,
        written: Vec<Pending>,
    ) -> Vec<Pending> {
        let mut kept = Vec::with_capacity(written.len());
        for p in written {
            let Some((family, code)) = &p.replaces else {
                kept.push(p);
                continue;
            };
            match self.retire(batch, family, code).await {
                Ok(()) => kept.push(p),
                Err(fate) => {
                    let fate = match fate {
                        Fate::Dead(why) => Fate::Dead(format!(
                            "written as {}/{}, but retiring the old asset {family}/{code} failed: {why}",
                            p.mapped.family, p.mapped.code
                        )),
                        other => other,
                    };
                    batch.settle(p.idx, fate);
                }
            }
        }
        kept
    }

    /// An asset the mapping no longer sends to the PIM (no route, filtered out): its PIM asset
    /// gets its family's delete policy, and a detached state records the version so older
    /// events stay stale.
    pub(super) async fn leave_mapping(
        &self,
        batch: &mut Batch,
        idx: usize,
        asset: &DamAsset,
        state: &AssetState,
    ) {
        if let Err(fate) = self.retire(batch, &state.family, &state.pim_code).await {
            batch.settle(idx, fate);
            return;
        }
        let detached = AssetState {
            dam: asset.dam,
            asset_id: asset.id.clone(),
            applied_version: asset.version,
            content_hash: String::new(),
            family: String::new(),
            pim_code: String::new(),
            updated_at_ms: now_ms(),
            media_files: BTreeMap::new(),
            deleted: false,
            source_hash: asset.fingerprint(),
        };
        let fate = match self.store.record_applied(&detached).await {
            Ok(_) => Fate::Done(Done::LeftMapping),
            Err(error) => Fate::Retry(error.to_string()),
        };
        batch.settle(idx, fate);
    }
}
