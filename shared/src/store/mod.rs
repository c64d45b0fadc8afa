//! State ports: what the pipeline remembers between invocations.
//!
//! Four capabilities, each a port with a DynamoDB adapter ([`dynamodb`]) and a SQLite one (the
//! `embedded-store` crate); `shared::testing::MemoryStore` (feature `test-util`) is the
//! in-memory one for tests:
//!
//! - [`AssetStateStore`]: the last version applied to the PIM per DAM asset (a tombstone once
//!   the asset is deleted), the reverse index from PIM codes to DAM assets, and the versions
//!   the consumer dead-lettered. Its conditional write ([`AssetState::may_be_replaced_by`]) is
//!   the ordering guard that turns duplicate and out-of-order events into no-ops.
//! - [`CursorStore`]: the poller's modified-since cursors, written under an optimistic lock
//!   and never moved backwards.
//! - [`LeaseStore`]: a named lease so two poller runs (a retry overlapping the next schedule)
//!   never work at once.
//! - The family-structure cache, [`crate::akeneo::StructureStore`], implemented on DynamoDB by
//!   [`dynamodb::DynamoStructureStore`].
//!
//! A failed condition is not an error: it is the answer ([`Applied::Stale`],
//! [`Advance::Conflict`], `false` from [`LeaseStore::acquire`]). The conditions themselves are
//! written once, here ([`Cursor::may_advance`], [`may_acquire_lease`]), for the stores that
//! evaluate them in code; DynamoDB states the same rules as condition expressions.
//!
//! # Table layout (DynamoDB)
//!
//! One on-demand table, partition key `pk` (S) and sort key `sk` (S), TTL attribute
//! `expires_at` (epoch seconds). See `docs/state.md`.
//!
//! | item | `pk` | `sk` | attributes |
//! |---|---|---|---|
//! | asset state | `asset#<dam>#<id>` | `state` | `dam`, `asset_id`, `modified_at_ms`, `seq`, `content_hash`, `family`, `pim_code`, `updated_at_ms`, `media_files` (M, source URL → media-file code; absent when empty), `deleted` (BOOL; absent: false), `source_hash` (absent: empty) |
//! | reverse index | `code#<family>#<code>` | `index` | `dam`, `asset_id`: the DAM asset last written to this PIM code (live states only) |
//! | parked version | `asset#<dam>#<id>` | `parked` | `modified_at_ms`, `seq`: the version the consumer dead-lettered |
//! | family structure | `family#<code>` | `structure` | `structure` (JSON), `expires_at` |
//! | cursor | `cursor#<name>` | `cursor` | `position_ms`, `page_token` (absent when none), `version` |
//! | lease | `lease#<name>` | `lease` | `owner`, `expires_at` |

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::BoxError;
use crate::dam::{DamKind, Version};

pub mod dynamodb;
mod lease;

pub use lease::with_lease;

/// A failure of the state store itself (the structure cache's included): what happened (for
/// an SDK error, its whole chain, so the logs show it) and the error underneath, when there is
/// one (SDK, SQLite, serde).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Throttling, 5xx, timeouts, unprocessed keys that kept coming back: later may work.
    #[error("state store temporarily unavailable: {0}")]
    Transient(String, #[source] Option<BoxError>),
    /// Validation errors, a missing table, denied access, corrupt items: retrying won't help.
    #[error("state store refused the request: {0}")]
    Permanent(String, #[source] Option<BoxError>),
}

impl StateError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, StateError::Transient(..))
    }
}

/// What the pipeline last wrote to the PIM for one DAM asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetState {
    pub dam: DamKind,
    pub asset_id: String,
    pub applied_version: Version,
    /// Hash of what was sent to the PIM, to skip re-sending unchanged content.
    pub content_hash: String,
    pub family: String,
    pub pim_code: String,
    pub updated_at_ms: i64,
    /// Akeneo media-file codes of the files uploaded for the asset, by source URL: a file
    /// whose URL did not change is not downloaded and uploaded again.
    #[serde(default)]
    pub media_files: BTreeMap<String, String>,
    /// A tombstone: the DAM deleted the asset and its PIM asset was retired at
    /// `applied_version`. Kept instead of forgetting the state, so a late or replayed older
    /// full event cannot re-create the asset.
    #[serde(default)]
    pub deleted: bool,
    /// `DamAsset::fingerprint` of the DAM asset this state was applied from (empty when
    /// unknown): lets the poller tell a same-second edit from a repeat without mapping it.
    #[serde(default)]
    pub source_hash: String,
}

impl AssetState {
    /// A state that records the version but nothing in the PIM (the asset left the mapping):
    /// older events stay stale, and a newer matching version is written in full.
    pub fn is_detached(&self) -> bool {
        self.family.is_empty()
    }

    /// The version-only rule: `version` is strictly newer than what was applied. An equal
    /// version may still carry other content (see [`AssetState::may_be_replaced_by`]); this
    /// check is for callers that know only a version (a hint, a parked version).
    pub fn is_superseded_by(&self, version: Version) -> bool {
        version > self.applied_version
    }

    /// The write rule of `record_applied`: `new` may replace `self` (the stored state) when
    /// - `self` is a tombstone and `new` is live (the consumer writes a live state over a
    ///   tombstone only after a DAM read under the asset's lease confirmed it exists), or
    /// - `new.applied_version > self.applied_version`, or
    /// - the versions are equal and the content differs (`content_hash`, `source_hash` or
    ///   `deleted` differ): Bynder and Cloudinary versions have 1 s resolution, so two edits in
    ///   one second share a version.
    pub fn may_be_replaced_by(&self, new: &AssetState) -> bool {
        (self.deleted && !new.deleted)
            || new.applied_version > self.applied_version
            || (new.applied_version == self.applied_version
                && (new.content_hash != self.content_hash
                    || new.source_hash != self.source_hash
                    || new.deleted != self.deleted))
    }

    /// The PIM code this state holds in the reverse index: a live state written to a family.
    pub fn indexed_code(&self) -> Option<(&str, &str)> {
        (!self.deleted && !self.is_detached() && !self.pim_code.is_empty())
            .then_some((self.family.as_str(), self.pim_code.as_str()))
    }
}

/// Whether `version` is strictly newer than what `state` applied (none: nothing was applied
/// yet): the version-only guard, for callers without the content to compare.
pub fn is_newer(version: Version, state: Option<&AssetState>) -> bool {
    state.is_none_or(|s| s.is_superseded_by(version))
}

/// Outcome of [`AssetStateStore::record_applied`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// No state existed, or the stored one may be replaced ([`AssetState::may_be_replaced_by`]).
    Written,
    /// The stored state is newer, or the same version with the same content; nothing was
    /// written.
    Stale,
}

/// Per-asset applied versions: the ordering guard of the consumer.
#[async_trait]
pub trait AssetStateStore: Send + Sync {
    /// The stored states of these ids (duplicates allowed); missing ids are absent from the map.
    async fn get_many(
        &self,
        dam: DamKind,
        ids: &[String],
    ) -> Result<HashMap<String, AssetState>, StateError>;

    /// Stores `state` only if no state exists or the stored one may be replaced by it
    /// ([`AssetState::may_be_replaced_by`]), atomically. Keeps the reverse index in step: the
    /// code `state` holds (if live) points at this asset, and a code it no longer holds stops
    /// pointing at it.
    async fn record_applied(&self, state: &AssetState) -> Result<Applied, StateError>;

    /// Forgets an asset entirely, its index entry and parked version included. Deleting a
    /// missing asset is not an error. (A DAM deletion records a tombstone instead.)
    async fn delete(&self, dam: DamKind, id: &str) -> Result<(), StateError>;

    /// The DAM assets written to `family` under these PIM codes (live states only): the reverse
    /// index the deletion sweep resolves PIM codes with, whatever the code template or DAM id.
    async fn find_by_codes(
        &self,
        family: &str,
        codes: &[String],
    ) -> Result<HashMap<String, (DamKind, String)>, StateError>;

    /// Records that `version` of an asset was dead-lettered, so the poller does not queue that
    /// version again until the asset changes (a newer version) or the letter is replayed.
    async fn record_parked(
        &self,
        dam: DamKind,
        id: &str,
        version: Version,
    ) -> Result<(), StateError>;

    /// The parked version of each of these ids that has one.
    async fn parked_many(
        &self,
        dam: DamKind,
        ids: &[String],
    ) -> Result<HashMap<String, Version>, StateError>;
}

/// A poller's position in a DAM's modified-since listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub position_ms: i64,
    pub page_token: Option<String>,
    /// Optimistic-lock version, assigned by the store: 1 on creation, +1 per advance.
    pub version: u64,
}

impl Cursor {
    /// The advance rule: `new` may replace `current` (the stored cursor, if any) when the
    /// writer read the stored version (`expected_version`, `None` for "no cursor yet") and
    /// `new` does not move backwards (the same position is allowed, for paging within one
    /// instant).
    pub fn may_advance(
        current: Option<&Cursor>,
        expected_version: Option<u64>,
        new: &Cursor,
    ) -> bool {
        match (current, expected_version) {
            (None, None) => true,
            (Some(stored), Some(expected)) => {
                stored.version == expected && stored.position_ms <= new.position_ms
            }
            _ => false,
        }
    }

    /// The version the store assigns on an advance from `expected_version` (1 on creation).
    pub fn next_version(expected_version: Option<u64>) -> u64 {
        expected_version.map_or(1, |v| v + 1)
    }
}

/// Outcome of [`CursorStore::advance`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advance {
    /// Stored, with this new version.
    Written { version: u64 },
    /// Someone else advanced first, or the move would go backwards: nothing was written.
    /// `current` is the stored cursor when the store could tell, so callers can re-plan.
    Conflict { current: Option<Cursor> },
}

/// Named cursors with optimistic locking.
#[async_trait]
pub trait CursorStore: Send + Sync {
    async fn get(&self, name: &str) -> Result<Option<Cursor>, StateError>;

    /// Writes `new` if the stored version is `expected_version` (`None`: no cursor yet) and
    /// `new.position_ms` is not before the stored one. `new.version` is ignored: the stored
    /// version becomes `expected_version + 1` (1 on creation), so two writers that read the
    /// same version can never both succeed.
    async fn advance(
        &self,
        name: &str,
        new: Cursor,
        expected_version: Option<u64>,
    ) -> Result<Advance, StateError>;
}

/// Named, expiring, single-owner leases.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes (or renews, for the same owner) the lease for `ttl`. `false`: someone else holds
    /// an unexpired lease.
    async fn acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StateError>;

    /// Gives the lease up if `owner` holds it. `false`: it was not held by `owner`.
    async fn release(&self, name: &str, owner: &str) -> Result<bool, StateError>;
}

/// The current time in milliseconds since the epoch. Injectable so lease and cache expiry can
/// be tested without sleeping.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(crate::time::now_ms)
}

/// Expiry in epoch seconds (the unit of DynamoDB TTL), rounded up so nothing expires early.
pub fn expiry_seconds(now_ms: i64, ttl: Duration) -> i64 {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    now_ms
        .saturating_add(ttl_ms)
        .saturating_add(999)
        .div_euclid(1000)
}

/// Whether something expiring at `expires_at` (epoch seconds) has expired at `now_ms`.
pub fn is_expired(expires_at: i64, now_ms: i64) -> bool {
    expires_at <= now_ms.div_euclid(1000)
}

/// The lease rule: `owner` may take the lease when nobody holds it, when it has expired, or when
/// `owner` holds it already (a renewal). `held` is the stored `(owner, expires_at)`, expiry in
/// epoch seconds.
pub fn may_acquire_lease(held: Option<(&str, i64)>, owner: &str, now_ms: i64) -> bool {
    held.is_none_or(|(holder, expires_at)| holder == owner || is_expired(expires_at, now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_rounds_up_to_whole_seconds() {
        assert_eq!(expiry_seconds(1_000, Duration::from_secs(60)), 61);
        assert_eq!(expiry_seconds(1_001, Duration::from_secs(60)), 62);
        assert_eq!(expiry_seconds(0, Duration::from_millis(1)), 1);
    }

    #[test]
    fn expired_from_the_expiry_second_on() {
        assert!(!is_expired(61, 60_999));
        assert!(is_expired(61, 61_000));
        assert!(is_expired(61, 70_000));
    }

    #[test]
    fn errors_keep_their_source_and_retriability() {
        use std::error::Error;

        assert!(StateError::Transient("throttled".into(), None).is_retriable());
        let e = StateError::Permanent("no table".into(), None);
        assert!(!e.is_retriable());
        assert!(e.to_string().contains("no table"));
        assert!(e.source().is_none());

        let json = serde_json::from_str::<Cursor>("{").unwrap_err();
        let e = StateError::Transient(format!("unreadable: {json}"), Some(json.into()));
        assert!(e.is_retriable());
        assert!(
            e.to_string()
                .starts_with("state store temporarily unavailable: unreadable: ")
        );
        assert!(e.source().unwrap().is::<serde_json::Error>());
    }

    #[test]
    fn cursors_advance_from_the_read_version_and_never_backwards() {
        let at = |position_ms, version| Cursor {
            position_ms,
            page_token: None,
            version,
        };
        assert!(Cursor::may_advance(None, None, &at(5, 0)));
        assert!(!Cursor::may_advance(None, Some(1), &at(5, 0)));
        assert!(!Cursor::may_advance(Some(&at(5, 1)), None, &at(6, 0)));
        assert!(!Cursor::may_advance(Some(&at(5, 1)), Some(2), &at(6, 0)));
        assert!(Cursor::may_advance(Some(&at(5, 1)), Some(1), &at(5, 0)));
        assert!(!Cursor::may_advance(Some(&at(5, 1)), Some(1), &at(4, 0)));
        assert_eq!(Cursor::next_version(None), 1);
        assert_eq!(Cursor::next_version(Some(7)), 8);
    }

    #[test]
    fn states_are_replaced_by_newer_versions_other_content_and_live_over_tombstones() {
        let at = |modified_at_ms, hash: &str, source: &str, deleted| AssetState {
            dam: DamKind::Bynder,
            asset_id: "a".into(),
            applied_version: Version {
                modified_at_ms,
                seq: 0,
            },
            content_hash: hash.into(),
            family: "packshot".into(),
            pim_code: "a".into(),
            updated_at_ms: 0,
            media_files: BTreeMap::new(),
            deleted,
            source_hash: source.into(),
        };
        let stored = at(1_000, "h", "f", false);
        assert!(stored.may_be_replaced_by(&at(1_001, "h", "f", false)));
        assert!(!stored.may_be_replaced_by(&at(999, "x", "y", false)));
        assert!(!stored.may_be_replaced_by(&stored.clone()));
        assert!(stored.may_be_replaced_by(&at(1_000, "h2", "f", false)));
        assert!(stored.may_be_replaced_by(&at(1_000, "h", "f2", false)));
        assert!(stored.may_be_replaced_by(&at(1_000, "h", "f", true)));
        let tombstone = at(2_000, "", "", true);
        assert!(tombstone.may_be_replaced_by(&at(1_500, "h", "f", false)));
        assert!(!tombstone.may_be_replaced_by(&at(1_500, "", "", true)));
        assert!(!tombstone.may_be_replaced_by(&tombstone.clone()));
        assert_eq!(stored.indexed_code(), Some(("packshot", "a")));
        assert_eq!(tombstone.indexed_code(), None);
        // The version-only checks are unchanged.
        assert!(!stored.is_superseded_by(stored.applied_version));
        assert!(is_newer(
            Version {
                modified_at_ms: 1_001,
                seq: 0
            },
            Some(&stored)
        ));
    }

    #[test]
    fn leases_are_free_when_absent_expired_or_held_by_the_owner() {
        assert!(may_acquire_lease(None, "a", 0));
        assert!(may_acquire_lease(Some(("a", 61)), "a", 60_000));
        assert!(!may_acquire_lease(Some(("b", 61)), "a", 60_999));
        assert!(may_acquire_lease(Some(("b", 61)), "a", 61_000));
    }
}
