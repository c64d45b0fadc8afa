//! Deciding what each open change needs, before any PIM write: the version guard against the
//! applied state, then the mapping against the family structures.

use std::collections::HashMap;

use super::Consumer;
use super::batch::{Batch, Done, Fate, Pending};
use crate::dam::{DamAsset, DamKind, Fetched};
use crate::mapping::MapOutcome;
use crate::store::AssetState;

/// The open changes sorted by the work they need; every other change is settled.
#[derive(Default)]
pub(super) struct Plan {
    /// Mapped assets whose content differs from what the PIM has.
    pub(super) upserts: Vec<Pending>,
    /// Same content as the PIM has: only the newer version is recorded, no PIM call.
    pub(super) unchanged: Vec<Pending>,
    /// DAM deletions (confirmed by a read) of assets not yet tombstoned, with their state.
    pub(super) gone: Vec<(usize, Option<AssetState>)>,
    /// Assets that left the mapping while something of theirs is in the PIM.
    pub(super) left: Vec<(usize, DamAsset, AssetState)>,
}

type States = HashMap<(DamKind, String), AssetState>;

impl Consumer {
    /// Sorts the open changes by what they need, settling the ones that need nothing (stale,
    /// unmapped) or cannot proceed (invalid, no DAM state read).
    pub(super) async fn plan(
        &self,
        batch: &mut Batch,
        current: Vec<Option<Fetched>>,
        states: &States,
    ) -> Plan {
        let mut plan = Plan::default();
        let found = guard(batch, current, states, &mut plan);
        if found.is_empty() {
            return plan;
        }
        let (structures, unavailable) = self.load_structures(batch).await;
        for (idx, asset) in found {
            let outcome = self.mapping.map_asset(&asset.id, &asset.fields, |f| {
                structures.get(f).map(|s| s.as_ref())
            });
            let change = &batch.changes[idx];
            let state = states.get(&(change.dam, change.asset_id.clone()));
            match &outcome {
                MapOutcome::Mapped(m) => batch.families[idx] = Some(m.family.clone()),
                MapOutcome::Invalid { family, .. } => {
                    batch.families[idx] = Some(family.clone());
                }
                MapOutcome::Skipped { .. } => {}
            }
            match outcome {
                MapOutcome::Skipped { .. } => match state {
                    Some(s) if !s.is_detached() => plan.left.push((idx, asset, s.clone())),
                    // The version it left the mapping at, again.
                    Some(s) if s.applied_version == asset.version => {
                        batch.settle(idx, Fate::Done(Done::Stale));
                    }
                    _ => batch.settle(idx, Fate::Done(Done::Unmapped)),
                },
                MapOutcome::Invalid { family, reason } => {
                    let fate = match unavailable.get(&family) {
                        Some(why) => Fate::Retry(why.clone()),
                        None => Fate::Dead(reason),
                    };
                    batch.settle(idx, fate);
                }
                MapOutcome::Mapped(mapped) => {
                    let same = state.is_some_and(|s| {
                        s.content_hash == mapped.content_hash
                            && s.family == mapped.family
                            && s.pim_code == mapped.code
                    });
                    // The applied version again with the applied content: a duplicate.
                    let repeat = same && state.is_some_and(|s| s.applied_version == asset.version);
                    let pending = Pending::new(idx, asset, mapped, state);
                    if repeat {
                        batch.settle(idx, Fate::Done(Done::Stale));
                    } else if same {
                        plan.unchanged.push(pending);
                    } else {
                        plan.upserts.push(pending);
                    }
                }
            }
        }
        plan
    }
}

/// The version guard: settles what is not newer than the applied state, puts DAM deletions
/// of assets we wrote into `plan.gone`, and returns the assets to map.
fn guard(
    batch: &mut Batch,
    current: Vec<Option<Fetched>>,
    states: &States,
    plan: &mut Plan,
) -> Vec<(usize, DamAsset)> {
    let mut found: Vec<(usize, DamAsset)> = Vec::new();
    for (idx, current) in current.into_iter().enumerate() {
        if !batch.open(idx) {
            continue;
        }
        let change = &batch.changes[idx];
        let state = states.get(&(change.dam, change.asset_id.clone()));
        match current {
            // An equal version goes on to the mapping: Bynder and Cloudinary versions have
            // 1 s resolution, so a second edit in the same second shares the version; only the
            // mapped content tells it from a duplicate. (A carried asset at the applied
            // version was re-read from the DAM before this point.)
            // Over a tombstone, what the DAM says now wins: only a DAM read gets here (carried
            // assets over a tombstone were re-read), and it says the asset exists again.
            Some(Fetched::Found(asset)) => {
                batch.versions[idx] = Some(asset.version);
                if state.is_none_or(|s| s.deleted || asset.version >= s.applied_version) {
                    found.push((idx, asset));
                } else {
                    batch.settle(idx, Fate::Done(Done::Stale));
                }
            }
            // Read from the DAM: the DAM confirmed the deletion, whatever the event said.
            Some(Fetched::Gone(_)) => {
                match state {
                    Some(s) if s.deleted => batch.settle(idx, Fate::Done(Done::Stale)),
                    Some(s) => {
                        if !s.is_detached() {
                            batch.families[idx] = Some(s.family.clone());
                        }
                        plan.gone.push((idx, Some(s.clone())));
                    }
                    // Never written: the tombstone still guards against late full events.
                    None => plan.gone.push((idx, None)),
                }
            }
            None => batch.settle(idx, Fate::Retry("no DAM state read".into())),
        }
    }
    found
}
