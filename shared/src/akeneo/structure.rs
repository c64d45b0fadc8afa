//! Where family structures are cached between PIM reads.
//!
//! Structure reads are cheap for one call but add up across thousands of invocations, so the
//! client reads each family once and keeps it for a TTL. The store is a port: memory here, a
//! DynamoDB or SQLite table later, shared by every invocation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

pub use super::StructureStore;
use super::model::FamilyStructure;
use crate::store::StateError;

/// In-process store with a TTL.
pub struct MemoryStructureStore {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Arc<FamilyStructure>)>>,
}

impl MemoryStructureStore {
    pub fn new(ttl: Duration) -> Self {
        MemoryStructureStore {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Arc<FamilyStructure>)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl StructureStore for MemoryStructureStore {
    async fn get(&self, family: &str) -> Result<Option<Arc<FamilyStructure>>, StateError> {
        let mut entries = self.entries();
        match entries.get(family) {
            Some((stored_at, s)) if stored_at.elapsed() < self.ttl => Ok(Some(Arc::clone(s))),
            Some(_) => {
                entries.remove(family);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn put(&self, structure: Arc<FamilyStructure>) -> Result<(), StateError> {
        self.entries()
            .insert(structure.family.code.clone(), (Instant::now(), structure));
        Ok(())
    }

    async fn invalidate(&self, family: &str) -> Result<(), StateError> {
        self.entries().remove(family);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::akeneo::model::AssetFamily;

    fn structure(code: &str) -> Arc<FamilyStructure> {
        Arc::new(FamilyStructure {
            family: AssetFamily {
                code: code.into(),
                labels: Default::default(),
                attribute_as_main_media: None,
            },
            attributes: vec![],
            options: Default::default(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_the_ttl() {
        let store = MemoryStructureStore::new(Duration::from_secs(60));
        store.put(structure("packshot")).await.unwrap();
        assert!(store.get("packshot").await.unwrap().is_some());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(store.get("packshot").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn invalidate_forgets_one_family() {
        let store = MemoryStructureStore::new(Duration::from_secs(60));
        store.put(structure("a")).await.unwrap();
        store.put(structure("b")).await.unwrap();
        store.invalidate("a").await.unwrap();
        assert!(store.get("a").await.unwrap().is_none());
        assert!(store.get("b").await.unwrap().is_some());
    }
}
