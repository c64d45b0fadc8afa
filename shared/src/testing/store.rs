//! The state ports in memory, with the DynamoDB adapter's semantics.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::dam::{DamKind, Version};
use crate::store::{
    Advance, Applied, AssetState, AssetStateStore, Clock, Cursor, CursorStore, LeaseStore,
    StateError, expiry_seconds, may_acquire_lease, system_clock,
};

/// In-process implementation of the state ports, with the DynamoDB adapter's semantics.
pub struct MemoryStore {
    clock: Clock,
    assets: Mutex<HashMap<(DamKind, String), AssetState>>,
    parked: Mutex<HashMap<(DamKind, String), Version>>,
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
            parked: Mutex::default(),
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
            Some(stored) if !stored.may_be_replaced_by(state) => Ok(Applied::Stale),
            _ => {
                assets.insert(key, state.clone());
                Ok(Applied::Written)
            }
        }
    }

    async fn delete(&self, dam: DamKind, id: &str) -> Result<(), StateError> {
        lock(&self.assets).remove(&(dam, id.to_owned()));
        lock(&self.parked).remove(&(dam, id.to_owned()));
        Ok(())
    }

    async fn find_by_codes(
        &self,
        family: &str,
        codes: &[String],
    ) -> Result<HashMap<String, (DamKind, String)>, StateError> {
        let assets = lock(&self.assets);
        Ok(assets
            .values()
            .filter_map(|s| {
                let (f, code) = s.indexed_code()?;
                (f == family && codes.iter().any(|c| c == code))
                    .then(|| (code.to_owned(), (s.dam, s.asset_id.clone())))
            })
            .collect())
    }

    async fn record_parked(
        &self,
        dam: DamKind,
        id: &str,
        version: Version,
    ) -> Result<(), StateError> {
        let mut parked = lock(&self.parked);
        let entry = parked.entry((dam, id.to_owned())).or_insert(version);
        *entry = (*entry).max(version);
        Ok(())
    }

    async fn parked_many(
        &self,
        dam: DamKind,
        ids: &[String],
    ) -> Result<HashMap<String, Version>, StateError> {
        let parked = lock(&self.parked);
        Ok(ids
            .iter()
            .filter_map(|id| Some((id.clone(), *parked.get(&(dam, id.clone()))?)))
            .collect())
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
