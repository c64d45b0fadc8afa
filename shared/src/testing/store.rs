//! The state ports in memory, with the DynamoDB adapter's semantics.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::dam::DamKind;
use crate::store::{
    Advance, Applied, AssetState, AssetStateStore, Clock, Cursor, CursorStore, LeaseStore,
    StateError, expiry_seconds, may_acquire_lease, system_clock,
};

/// In-process implementation of the state ports, with the DynamoDB adapter's semantics.
pub struct MemoryStore {
    clock: Clock,
    assets: Mutex<HashMap<(DamKind, String), AssetState>>,
    cursors: Mutex<HashMap<String, Cursor>>,
    /// Lease name → (owner, expires_at in epoch seconds).
    leases: Mutex<HashMap<String, (String, i64)>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            clock: system_clock(),
            assets: Mutex::default(),
            cursors: Mutex::default(),
            leases: Mutex::default(),
        }
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl AssetStateStore for MemoryStore {
    async fn get_many(
        &self,
        dam: DamKind,
        ids: &[String],
    ) -> Result<HashMap<String, AssetState>, StateError> {
        let assets = lock(&self.assets);
        Ok(ids
            .iter()
            .filter_map(|id| {
                let state = assets.get(&(dam, id.clone()))?;
                Some((id.clone(), state.clone()))
            })
            .collect())
    }

    async fn record_applied(&self, state: &AssetState) -> Result<Applied, StateError> {
        let mut assets = lock(&self.assets);
        let key = (state.dam, state.asset_id.clone());
        match assets.get(&key) {
            Some(stored) if stored.applied_version >= state.applied_version => Ok(Applied::Stale),
            _ => {
                assets.insert(key, state.clone());
                Ok(Applied::Written)
            }
        }
    }

    async fn delete(&self, dam: DamKind, id: &str) -> Result<(), StateError> {
        lock(&self.assets).remove(&(dam, id.to_owned()));
        Ok(())
    }
}

#[async_trait]
impl CursorStore for MemoryStore {
    async fn get(&self, name: &str) -> Result<Option<Cursor>, StateError> {
        Ok(lock(&self.cursors).get(name).cloned())
    }

    async fn advance(
        &self,
        name: &str,
        new: Cursor,
        expected_version: Option<u64>,
    ) -> Result<Advance, StateError> {
        let mut cursors = lock(&self.cursors);
        let current = cursors.get(name).cloned();
        if !Cursor::may_advance(current.as_ref(), expected_version, &new) {
            return Ok(Advance::Conflict { current });
        }
        let version = Cursor::next_version(expected_version);
        cursors.insert(name.to_owned(), Cursor { version, ..new });
        Ok(Advance::Written { version })
    }
}

#[async_trait]
impl LeaseStore for MemoryStore {
    async fn acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StateError> {
        let now_ms = (self.clock)();
        let mut leases = lock(&self.leases);
        let held = leases
            .get(name)
            .map(|(holder, until)| (holder.as_str(), *until));
        let free = may_acquire_lease(held, owner, now_ms);
        if free {
            leases.insert(
                name.to_owned(),
                (owner.to_owned(), expiry_seconds(now_ms, ttl)),
            );
        }
        Ok(free)
    }

    async fn release(&self, name: &str, owner: &str) -> Result<bool, StateError> {
        let mut leases = lock(&self.leases);
        match leases.get(name) {
            Some((holder, _)) if holder == owner => {
                leases.remove(name);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
