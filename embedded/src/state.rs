//! The state ports: asset versions, cursors, leases and the family-structure cache, with the
//! DynamoDB adapter's semantics (conditional writes become `BEGIN IMMEDIATE` transactions).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use shared::akeneo::{FamilyStructure, StructureStore};
use shared::dam::{DamKind, Version};
use shared::store::{
    Advance, Applied, AssetState, AssetStateStore, Cursor, CursorStore, LeaseStore, StateError,
    expiry_seconds, may_acquire_lease,
};

use shared::time::duration_ms;

use crate::SqliteStore;
use crate::error::DbError;

fn read_cursor(conn: &rusqlite::Connection, name: &str) -> Result<Option<Cursor>, DbError> {
    Ok(conn
        .query_row(
            "SELECT position_ms, page_token, version FROM cursors WHERE name = ?1",
            params![name],
            |r| {
                Ok(Cursor {
                    position_ms: r.get(0)?,
                    page_token: r.get(1)?,
                    version: r.get(2)?,
                })
            },
        )
        .optional()?)
}

impl SqliteStore {
    /// Every cursor with the time it was last written: `(name, cursor, updated_at_ms)`.
    pub async fn cursors(&self) -> Result<Vec<(String, Cursor, i64)>, DbError> {
        self.call(|conn, _| {
            let mut select = conn.prepare(
                "SELECT name, position_ms, page_token, version, updated_at_ms FROM cursors
                 ORDER BY name",
            )?;
            let rows = select.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    Cursor {
                        position_ms: r.get(1)?,
                        page_token: r.get(2)?,
                        version: r.get(3)?,
                    },
                    r.get(4)?,
                ))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Number of assets with a recorded applied version, tombstones (deleted assets) left out.
    pub async fn asset_count(&self) -> Result<u64, DbError> {
        self.call(|conn, _| {
            Ok(conn.query_row(
                "SELECT COUNT(*) FROM asset_state WHERE NOT deleted",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }
}

#[async_trait]
impl AssetStateStore for SqliteStore {
    async fn get_many(
        &self,
        dam: DamKind,
        ids: &[String],
    ) -> Result<HashMap<String, AssetState>, StateError> {
        let ids = ids.to_vec();
        Ok(self
            .call(move |conn, _| {
                let mut select = conn.prepare_cached(
                    "SELECT modified_at_ms, seq, content_hash, family, pim_code, updated_at_ms,
                            media_files, deleted, source_hash
                     FROM asset_state WHERE dam = ?1 AND asset_id = ?2",
                )?;
                let mut out = HashMap::new();
                for id in ids {
                    if out.contains_key(&id) {
                        continue;
                    }
                    let state = select
                        .query_row(params![dam.as_str(), id], |r| {
                            Ok(AssetState {
                                dam,
                                asset_id: id.clone(),
                                applied_version: Version {
                                    modified_at_ms: r.get(0)?,
                                    seq: r.get(1)?,
                                },
                                content_hash: r.get(2)?,
                                family: r.get(3)?,
                                pim_code: r.get(4)?,
                                updated_at_ms: r.get(5)?,
                                media_files: serde_json::from_str(&r.get::<_, String>(6)?)
                                    .map_err(|e| {
                                        rusqlite::Error::FromSqlConversionFailure(
                                            6,
                                            rusqlite::types::Type::Text,
                                            Box::new(e),
                                        )
                                    })?,
                                deleted: r.get(7)?,
                                source_hash: r.get(8)?,
                            })
                        })
                        .optional()?;
                    if let Some(state) = state {
                        out.insert(id, state);
                    }
                }
                Ok(out)
            })
            .await?)
    }

    async fn record_applied(&self, state: &AssetState) -> Result<Applied, StateError> {
        let s = state.clone();
        let media_files = serde_json::to_string(&s.media_files).map_err(|e| {
            StateError::Permanent(format!("media files not serialisable: {e}"), Some(e.into()))
        })?;
        Ok(self
            .call(move |conn, _| {
                // One statement: the upsert's WHERE is the condition
                // (`AssetState::may_be_replaced_by`), so it is atomic. The reverse index is the
                // `(family, pim_code)` index on this table, so it moves with the row.
                let written = conn.execute(
                    "INSERT INTO asset_state
                       (dam, asset_id, modified_at_ms, seq, content_hash, family, pim_code, updated_at_ms,
                        media_files, deleted, source_hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (dam, asset_id) DO UPDATE SET
                       modified_at_ms = excluded.modified_at_ms, seq = excluded.seq,
                       content_hash = excluded.content_hash, family = excluded.family,
                       pim_code = excluded.pim_code, updated_at_ms = excluded.updated_at_ms,
                       media_files = excluded.media_files, deleted = excluded.deleted,
                       source_hash = excluded.source_hash
                     WHERE (asset_state.deleted AND NOT excluded.deleted)
                        OR (asset_state.modified_at_ms, asset_state.seq)
                           < (excluded.modified_at_ms, excluded.seq)
                        OR ((asset_state.modified_at_ms, asset_state.seq)
                            = (excluded.modified_at_ms, excluded.seq)
                            AND (asset_state.content_hash <> excluded.content_hash
                                 OR asset_state.source_hash <> excluded.source_hash
                                 OR asset_state.deleted <> excluded.deleted))",
                    params![
                        s.dam.as_str(),
                        s.asset_id,
                        s.applied_version.modified_at_ms,
                        s.applied_version.seq,
                        s.content_hash,
                        s.family,
                        s.pim_code,
                        s.updated_at_ms,
                        media_files,
                        s.deleted,
                        s.source_hash
                    ],
                )?;
                Ok(if written == 1 {
                    Applied::Written
                } else {
                    Applied::Stale
                })
            })
            .await?)
    }

    async fn delete(&self, dam: DamKind, id: &str) -> Result<(), StateError> {
        let id = id.to_owned();
        Ok(self
            .call(move |conn, _| {
                let tx = conn.transaction()?;
                for table in ["asset_state", "parked"] {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE dam = ?1 AND asset_id = ?2"),
                        params![dam.as_str(), id],
                    )?;
                }
                tx.commit()?;
                Ok(())
            })
            .await?)
    }

    async fn find_by_codes(
        &self,
        family: &str,
        codes: &[String],
    ) -> Result<HashMap<String, (DamKind, String)>, StateError> {
        let (family, codes) = (family.to_owned(), codes.to_vec());
        Ok(self
            .call(move |conn, _| {
                let mut select = conn.prepare_cached(
                    "SELECT dam, asset_id FROM asset_state
                     WHERE family = ?1 AND pim_code = ?2 AND NOT deleted",
                )?;
                let mut out = HashMap::new();
                for code in codes {
                    if out.contains_key(&code) {
                        continue;
                    }
                    let found = select
                        .query_row(params![family, code], |r| {
                            let dam = r.get::<_, String>(0)?.parse::<DamKind>().map_err(|e| {
                                rusqlite::Error::FromSqlConversionFailure(
                                    0,
                                    rusqlite::types::Type::Text,
                                    Box::new(e),
                                )
                            })?;
                            Ok((dam, r.get::<_, String>(1)?))
                        })
                        .optional()?;
                    if let Some(found) = found {
                        out.insert(code, found);
                    }
                }
                Ok(out)
            })
            .await?)
    }

    async fn record_parked(
        &self,
        dam: DamKind,
        id: &str,
        version: Version,
    ) -> Result<(), StateError> {
        let id = id.to_owned();
        Ok(self
            .call(move |conn, _| {
                // Never backwards: a late letter of an older version keeps the newer one.
                conn.execute(
                    "INSERT INTO parked (dam, asset_id, modified_at_ms, seq) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (dam, asset_id) DO UPDATE SET
                       modified_at_ms = excluded.modified_at_ms, seq = excluded.seq
                     WHERE (parked.modified_at_ms, parked.seq)
                           < (excluded.modified_at_ms, excluded.seq)",
                    params![dam.as_str(), id, version.modified_at_ms, version.seq],
                )?;
                Ok(())
            })
            .await?)
    }

    async fn parked_many(
        &self,
        dam: DamKind,
        ids: &[String],
    ) -> Result<HashMap<String, Version>, StateError> {
        let ids = ids.to_vec();
        Ok(self
            .call(move |conn, _| {
                let mut select = conn.prepare_cached(
                    "SELECT modified_at_ms, seq FROM parked WHERE dam = ?1 AND asset_id = ?2",
                )?;
                let mut out = HashMap::new();
                for id in ids {
                    let version = select
                        .query_row(params![dam.as_str(), id], |r| {
                            Ok(Version {
                                modified_at_ms: r.get(0)?,
                                seq: r.get(1)?,
                            })
                        })
                        .optional()?;
                    if let Some(version) = version {
                        out.insert(id, version);
                    }
                }
                Ok(out)
            })
            .await?)
    }
}

#[async_trait]
impl CursorStore for SqliteStore {
    async fn get(&self, name: &str) -> Result<Option<Cursor>, StateError> {
        let name = name.to_owned();
        Ok(self.call(move |conn, _| read_cursor(conn, &name)).await?)
    }

    async fn advance(
        &self,
        name: &str,
        new: Cursor,
        expected_version: Option<u64>,
    ) -> Result<Advance, StateError> {
        let name = name.to_owned();
        Ok(self
            .call(move |conn, now| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let current = read_cursor(&tx, &name)?;
                if !Cursor::may_advance(current.as_ref(), expected_version, &new) {
                    return Ok(Advance::Conflict { current });
                }
                let version = Cursor::next_version(expected_version);
                tx.execute(
                    "INSERT INTO cursors (name, position_ms, page_token, version, updated_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (name) DO UPDATE SET position_ms = excluded.position_ms,
                       page_token = excluded.page_token, version = excluded.version,
                       updated_at_ms = excluded.updated_at_ms",
                    params![name, new.position_ms, new.page_token, version, now],
                )?;
                tx.commit()?;
                Ok(Advance::Written { version })
            })
            .await?)
    }
}

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StateError> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        Ok(self
            .call(move |conn, now| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let held: Option<(String, i64)> = tx
                    .query_row(
                        "SELECT owner, expires_at FROM leases WHERE name = ?1",
                        params![name],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let held = held
                    .as_ref()
                    .map(|(holder, until)| (holder.as_str(), *until));
                if !may_acquire_lease(held, &owner, now) {
                    return Ok(false);
                }
                tx.execute(
                    "INSERT INTO leases (name, owner, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,
                       expires_at = excluded.expires_at",
                    params![name, owner, expiry_seconds(now, ttl)],
                )?;
                tx.commit()?;
                Ok(true)
            })
            .await?)
    }

    async fn release(&self, name: &str, owner: &str) -> Result<bool, StateError> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        Ok(self
            .call(move |conn, _| {
                let released = conn.execute(
                    "DELETE FROM leases WHERE name = ?1 AND owner = ?2",
                    params![name, owner],
                )?;
                Ok(released == 1)
            })
            .await?)
    }
}

#[async_trait]
impl StructureStore for SqliteStore {
    async fn get(&self, family: &str) -> Result<Option<Arc<FamilyStructure>>, StateError> {
        let family = family.to_owned();
        let stored: Option<String> = self
            .call(move |conn, now| {
                Ok(conn
                    .query_row(
                        "SELECT structure FROM structures WHERE family = ?1 AND expires_at_ms > ?2",
                        params![family, now],
                        |r| r.get(0),
                    )
                    .optional()?)
            })
            .await?;
        match stored.map(|json| serde_json::from_str::<FamilyStructure>(&json)) {
            None => Ok(None),
            Some(Ok(structure)) => Ok(Some(Arc::new(structure))),
            Some(Err(error)) => {
                // Written by another release: a miss, so the PIM is re-read and it is replaced.
                tracing::warn!(%error, "Cached family structure unreadable; ignoring.");
                Ok(None)
            }
        }
    }

    async fn put(&self, structure: Arc<FamilyStructure>) -> Result<(), StateError> {
        let json = serde_json::to_string(&*structure).map_err(DbError::from)?;
        let family = structure.family.code.clone();
        let ttl = duration_ms(self.inner.structure_ttl);
        Ok(self
            .call(move |conn, now| {
                conn.execute(
                    "INSERT INTO structures (family, structure, expires_at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (family) DO UPDATE SET structure = excluded.structure,
                       expires_at_ms = excluded.expires_at_ms",
                    params![family, json, now.saturating_add(ttl)],
                )?;
                Ok(())
            })
            .await?)
    }

    async fn invalidate(&self, family: &str) -> Result<(), StateError> {
        let family = family.to_owned();
        Ok(self
            .call(move |conn, _| {
                conn.execute("DELETE FROM structures WHERE family = ?1", params![family])?;
                Ok(())
            })
            .await?)
    }
}
