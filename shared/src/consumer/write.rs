//! The PIM writes: missing options, the bulk upsert per family (with one structure refresh)
//! and the recorded states.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;

use super::Consumer;
use super::batch::{Batch, Done, Fate, Pending, TOO_LATE, item_fate, pim_fate};
use crate::mapping::MapOutcome;
use crate::store::AssetState;
use crate::time::now_ms;

impl Consumer {
    /// Creates the options the mapped assets use and the PIM lacks; assets whose options
    /// could not be created are settled and dropped.
    pub(super) async fn create_missing_options(
        &self,
        batch: &mut Batch,
        upserts: Vec<Pending>,
    ) -> Vec<Pending> {
        let mut wanted: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for p in &upserts {
            for (attribute, code) in &p.mapped.missing_options {
                wanted
                    .entry((p.mapped.family.clone(), attribute.clone()))
                    .or_default()
                    .push(code.clone());
            }
        }
        let mut failed: HashMap<(String, String), Fate> = HashMap::new();
        for ((family, attribute), codes) in wanted {
            let fate = if batch.too_late() {
                Some(Fate::Retry(TOO_LATE.into()))
            } else {
                self.pim
                    .create_options(&family, &attribute, &codes, batch.deadline)
                    .await
                    .err()
                    .map(|e| pim_fate(&e))
            };
            if let Some(fate) = fate {
                failed.insert((family, attribute), fate);
            }
        }
        let mut kept = Vec::with_capacity(upserts.len());
        for p in upserts {
            let fate = p
                .mapped
                .missing_options
                .iter()
                .find_map(|(a, _)| failed.get(&(p.mapped.family.clone(), a.clone())));
            match fate {
                Some(fate) => batch.settle(p.idx, fate.clone()),
                None => kept.push(p),
            }
        }
        kept
    }

    /// Records where assets the state does not place in the PIM yet are about to be written,
    /// before the write: a crash between the PIM write and the recorded version would
    /// otherwise leave a PIM asset no state points to, which a later DAM deletion (a state-less
    /// tombstone) and the sweep (which only touches what a state names) would never retire.
    /// The intent is a live state at the asset's version with no content hash, so the real
    /// record after the write replaces it, and a redelivery writes the asset again.
    pub(super) async fn record_intents(
        &self,
        batch: &mut Batch,
        upserts: Vec<Pending>,
    ) -> Vec<Pending> {
        let results: Vec<(Pending, Result<(), String>)> = futures::stream::iter(upserts)
            .map(|p| async move {
                if !p.unrecorded {
                    return (p, Ok(()));
                }
                let intent = AssetState {
                    content_hash: String::new(),
                    source_hash: String::new(),
                    ..applied_state(&p)
                };
                let result = self.store.record_applied(&intent).await;
                (p, result.map(|_| ()).map_err(|e| e.to_string()))
            })
            .buffer_unordered(self.settings.writes_in_flight.max(1))
            .collect()
            .await;
        let mut kept = Vec::with_capacity(results.len());
        for (p, result) in results {
            match result {
                Ok(()) => kept.push(p),
                Err(why) => batch.settle(p.idx, Fate::Retry(why)),
            }
        }
        kept
    }

    /// Bulk upserts, one family at a time.
    pub(super) async fn upsert_all(&self, batch: &mut Batch, upserts: Vec<Pending>) {
        let mut by_family: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
        for p in upserts {
            by_family
                .entry(p.mapped.family.clone())
                .or_default()
                .push(p);
        }
        for (family, items) in by_family {
            self.upsert_family(batch, &family, items).await;
        }
    }

    /// Bulk upsert of one family's assets, with one structure refresh and retry for items the
    /// PIM refused over an attribute or option it does not know (our cached structure was
    /// stale).
    async fn upsert_family(&self, batch: &mut Batch, family: &str, items: Vec<Pending>) {
        let mut items = items;
        let mut refreshed = false;
        while !items.is_empty() {
            if batch.too_late() {
                for p in items {
                    batch.settle(p.idx, Fate::Retry(TOO_LATE.into()));
                }
                return;
            }
            let assets: Vec<_> = items.iter().map(|p| p.mapped.asset.clone()).collect();
            let outcomes = self.pim.upsert(family, &assets, batch.deadline).await;
            let mut written = Vec::new();
            let mut stale_structure = Vec::new();
            for (p, outcome) in items.into_iter().zip(outcomes) {
                match outcome {
                    Ok(_) => written.push(p),
                    Err(f) if f.unknown_structure && !refreshed => stale_structure.push(p),
                    Err(f) => {
                        if f.outcome_unknown {
                            batch.unknown_outcome.push(p.idx);
                        }
                        batch.settle(p.idx, item_fate(&f));
                    }
                }
            }
            let written = self.retire_replaced(batch, written).await;
            self.record_all(batch, written, Done::Synced).await;
            if stale_structure.is_empty() {
                return;
            }
            refreshed = true;
            items = self.remap(batch, family, stale_structure).await;
        }
    }

    /// Re-reads a family's structure from the PIM and maps the assets again against it.
    async fn remap(&self, batch: &mut Batch, family: &str, items: Vec<Pending>) -> Vec<Pending> {
        self.pim.forget_structure(family).await;
        let structure = if batch.too_late() {
            Err(Fate::Retry(TOO_LATE.into()))
        } else {
            match self.pim.structure(family, batch.deadline).await {
                Ok(Some(s)) => Ok(s),
                Ok(None) => Err(Fate::Dead(format!(
                    "asset family `{family}` no longer exists"
                ))),
                Err(e) => Err(pim_fate(&e)),
            }
        };
        let structure = match structure {
            Ok(s) => s,
            Err(fate) => {
                for p in items {
                    batch.settle(p.idx, fate.clone());
                }
                return Vec::new();
            }
        };
        let mut again = Vec::new();
        for p in items {
            let outcome = self.mapping.map_asset(&p.asset.id, &p.asset.fields, |f| {
                (f == family).then_some(structure.as_ref())
            });
            match outcome {
                MapOutcome::Mapped(mapped) if mapped.family == family => again.push(Pending {
                    idx: p.idx,
                    asset: p.asset,
                    mapped,
                    media: p.media,
                    replaces: p.replaces,
                    unrecorded: p.unrecorded,
                }),
                MapOutcome::Mapped(_) => {
                    batch.settle(p.idx, Fate::Retry("asset changed family on remap".into()));
                }
                MapOutcome::Skipped { .. } => batch.settle(p.idx, Fate::Done(Done::Unmapped)),
                MapOutcome::Invalid { reason, .. } => batch.settle(p.idx, Fate::Dead(reason)),
            }
        }
        let again = self.upload_media(batch, again).await;
        self.create_missing_options(batch, again).await
    }

    /// Records the applied versions. `Stale` is fine: a newer version is already stored. A
    /// failed write retries the message: the PIM write is idempotent.
    pub(super) async fn record_all(&self, batch: &mut Batch, items: Vec<Pending>, done: Done) {
        let results: Vec<(usize, Fate, Option<u64>)> = futures::stream::iter(items)
            .map(|p| async move {
                let state = applied_state(&p);
                let done = match done {
                    Done::Synced if p.replaces.is_some() => Done::Moved,
                    other => other,
                };
                let fate = match self.store.record_applied(&state).await {
                    Ok(_) => Fate::Done(done),
                    Err(error) => Fate::Retry(error.to_string()),
                };
                // DAM modified time → PIM write, measured when the write is recorded.
                let fresh = matches!((&fate, done), (Fate::Done(_), Done::Synced)).then(|| {
                    u64::try_from(state.updated_at_ms - p.asset.version.modified_at_ms).unwrap_or(0)
                });
                (p.idx, fate, fresh)
            })
            .buffer_unordered(self.settings.writes_in_flight.max(1))
            .collect()
            .await;
        for (idx, fate, fresh) in results {
            if batch.open(idx)
                && let Some(ms) = fresh
            {
                batch.freshness_ms.push(ms);
            }
            batch.settle(idx, fate);
        }
    }
}

/// The state to record for a written (or unchanged) asset. Only the media codes of the files
/// it uses now are kept, so the map does not grow with every file the asset ever had.
fn applied_state(p: &Pending) -> AssetState {
    let (asset, mapped) = (&p.asset, &p.mapped);
    let media_files = mapped
        .uploads
        .iter()
        .filter_map(|u| {
            p.media
                .get(&u.source_url)
                .map(|c| (u.source_url.clone(), c.clone()))
        })
        .collect();
    AssetState {
        dam: asset.dam,
        asset_id: asset.id.clone(),
        applied_version: asset.version,
        content_hash: mapped.content_hash.clone(),
        family: mapped.family.clone(),
        pim_code: mapped.code.clone(),
        updated_at_ms: now_ms(),
        media_files,
        deleted: false,
        source_hash: asset.fingerprint(),
    }
}
