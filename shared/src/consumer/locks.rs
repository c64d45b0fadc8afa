//! Per-asset leases, held from the version check to the recorded version (see
//! [`Consumer::with_asset_locks`]).

use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use super::Consumer;
use super::batch::{Batch, Fate};

/// What a lost lock race leaves for redelivery.
const LOCKED: &str = "another invocation is applying this asset: left for redelivery";

impl Consumer {
    /// Takes the lease of every open change's asset; a change whose lease another invocation
    /// holds (or that cannot be read) is left for redelivery. Returns the owner and the held
    /// leases' names by change.
    pub(super) async fn lock_assets(&self, batch: &mut Batch) -> (String, Vec<(usize, String)>) {
        let owner = format!("consumer-{:016x}", fastrand::u64(..));
        let Some(locks) = &self.locks else {
            return (owner, Vec::new());
        };
        // Outlives the batch (so a crash only delays the asset), but not by much.
        let ttl = batch
            .deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(5))
            + Duration::from_secs(5);
        let wanted: Vec<(usize, String)> = (0..batch.changes.len())
            .filter(|&idx| batch.open(idx))
            .map(|idx| {
                let c = &batch.changes[idx];
                (idx, format!("asset#{}#{}", c.dam.as_str(), c.asset_id))
            })
            .collect();
        let results: Vec<(usize, String, Result<bool, String>)> =
            futures::stream::iter(wanted.into_iter().map(|(idx, name)| {
                let owner = owner.clone();
                async move {
                    let got = locks
                        .acquire(&name, &owner, ttl)
                        .await
                        .map_err(|e| e.to_string());
                    (idx, name, got)
                }
            }))
            .buffer_unordered(self.settings.writes_in_flight.max(1))
            .collect()
            .await;
        let mut held = Vec::new();
        for (idx, name, got) in results {
            match got {
                Ok(true) => held.push((idx, name)),
                Ok(false) => batch.settle(idx, Fate::Retry(LOCKED.into())),
                Err(e) => batch.settle(idx, Fate::Retry(format!("taking the asset's lease: {e}"))),
            }
        }
        (owner, held)
    }

    /// Releases the leases; one that fails to release expires with its TTL. The lease of an
    /// asset whose PIM write may still land is renewed for `unknown_outcome_hold` instead: a
    /// newer write by another invocation could otherwise reach the PIM before the abandoned
    /// older one, leaving the PIM behind the recorded version.
    pub(super) async fn unlock_assets(
        &self,
        batch: &Batch,
        owner: &str,
        held: Vec<(usize, String)>,
    ) {
        let Some(locks) = &self.locks else {
            return;
        };
        let hold = self.settings.unknown_outcome_hold;
        futures::stream::iter(held.into_iter().map(|(idx, name)| async move {
            if batch.unknown_outcome.contains(&idx) {
                match locks.acquire(&name, owner, hold).await {
                    Ok(true) => tracing::info!(
                        lease = %name,
                        hold_secs = hold.as_secs(),
                        "PIM write outcome unknown; asset lease kept until it can no longer land."
                    ),
                    Ok(false) => tracing::warn!(lease = %name, "Asset lease lost before its hold."),
                    Err(e) => {
                        tracing::warn!(lease = %name, error = %e, "Asset lease not extended.")
                    }
                }
            } else if let Err(e) = locks.release(&name, owner).await {
                tracing::warn!(lease = %name, error = %e, "Asset lease not released; it expires.");
            }
        }))
        .buffer_unordered(self.settings.writes_in_flight.max(1))
        .collect::<Vec<()>>()
        .await;
    }
}
