//! The state ports on one DynamoDB table (layout in the [module docs](super) and
//! `docs/state.md`).
//!
//! Every guarded write is a single conditional PutItem/DeleteItem, so no read-modify-write
//! race exists; `ConditionalCheckFailedException` is mapped to the port's "no" answer. Time
//! comparisons use the caller's clock passed as an expression value, because DynamoDB has no
//! server-side "now". The endpoint comes from the SDK's standard configuration
//! (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_DYNAMODB`), which is how tests reach moto.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
pub use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, ReturnValuesOnConditionCheckFailure,
};

use super::{
    Advance, Applied, AssetState, AssetStateStore, Clock, Cursor, CursorStore, LeaseStore,
    StateError, expiry_seconds, is_expired, system_clock,
};
use crate::akeneo::StructureStore;
use crate::akeneo::model::FamilyStructure;
use crate::aws::{self, HttpResponse, OperationError};
use crate::dam::{DamKind, Version};

mod items;

use items::{
    Item, SK_ASSET, SK_CURSOR, SK_INDEX, SK_LEASE, SK_PARKED, SK_STRUCTURE, asset_from_item,
    asset_pk, asset_to_item, code_pk, cursor_from_item, cursor_pk, distinct_chunks, family_pk,
    get_number, get_string, id_from_asset_pk, index_from_item, index_item, key, lease_pk, number,
    parked_item, replace_condition, version_from_item,
};

/// Environment variable naming the table (set by the infrastructure template).
pub const TABLE_NAME_ENV: &str = "TABLE_NAME";
/// Key and TTL attribute names: the infrastructure template must declare exactly these.
pub const PARTITION_KEY: &str = "pk";
pub const SORT_KEY: &str = "sk";
pub const TTL_ATTRIBUTE: &str = "expires_at";
/// BatchGetItem takes at most 100 keys per call.
pub const MAX_BATCH_GET_KEYS: usize = 100;

/// How BatchGetItem's `UnprocessedKeys` are retried.
#[derive(Debug, Clone, Copy)]
pub struct BatchRetry {
    /// Calls per chunk, first one included.
    pub max_attempts: u32,
    /// Backoff before the first retry; doubled each time, with full jitter.
    pub base_backoff: Duration,
}

impl Default for BatchRetry {
    fn default() -> Self {
        // AWS: unprocessed keys mean throttling or a 16 MB response; back off exponentially.
        Self {
            max_attempts: 6,
            base_backoff: Duration::from_millis(50),
        }
    }
}

/// Asset state, cursors and leases on one DynamoDB table.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    clock: Clock,
    batch_retry: BatchRetry,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.table)
            .field("batch_retry", &self.batch_retry)
            .finish_non_exhaustive()
    }
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            clock: system_clock(),
            batch_retry: BatchRetry::default(),
        }
    }

    /// The table `table`, with a client from the process's one AWS configuration.
    pub fn from_config(aws: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self::new(Client::new(aws), table)
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_batch_retry(mut self, retry: BatchRetry) -> Self {
        self.batch_retry = retry;
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Reads one chunk (≤ 100 distinct keys), retrying unprocessed keys with backoff.
    async fn get_chunk(&self, keys: Vec<Item>) -> Result<Vec<Item>, StateError> {
        // Strongly consistent: a just-recorded version must be seen, or the consumer redoes
        // PIM work the guard would then refuse anyway.
        let mut pending = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .build()
            .map_err(build_error)?;
        let mut out = Vec::new();
        let mut attempt = 1;
        loop {
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, pending)
                .send()
                .await
                .map_err(classify)?;
            let items = output.responses().and_then(|r| r.get(&self.table));
            out.extend(items.into_iter().flatten().cloned());
            let rest = output
                .unprocessed_keys()
                .and_then(|u| u.get(&self.table))
                .filter(|rest| !rest.keys().is_empty());
            let Some(rest) = rest else {
                return Ok(out);
            };
            if attempt >= self.batch_retry.max_attempts {
                return Err(StateError::Transient(
                    format!(
                        "{} keys still unprocessed after {attempt} BatchGetItem calls",
                        rest.keys().len()
                    ),
                    None,
                ));
            }
            pending = rest.clone();
            let cap = self
                .batch_retry
                .base_backoff
                .saturating_mul(1 << (attempt - 1).min(16));
            tokio::time::sleep(cap.mul_f64(fastrand::f64())).await;
            attempt += 1;
        }
    }

    /// The items under `pk(id)` and `sk` for these ids (duplicates allowed), in chunks of 100.
    async fn get_items(
        &self,
        ids: &[String],
        pk: impl Fn(&str) -> String,
        sk: &str,
    ) -> Result<Vec<Item>, StateError> {
        let mut out = Vec::new();
        for chunk in distinct_chunks(ids) {
            let keys = chunk.iter().map(|id| key(pk(id), sk)).collect();
            out.extend(self.get_chunk(keys).await?);
        }
        Ok(out)
    }
}

#[async_trait]
impl AssetStateStore for DynamoStore {
    async fn get_many(
        &self,
        dam: DamKind,
        ids: &[String],
    ) -> Result<HashMap<String, AssetState>, StateError> {
        let items = self
            .get_items(ids, |id| asset_pk(dam, id), SK_ASSET)
            .await?;
        let mut out = HashMap::new();
        for item in &items {
            let state = asset_from_item(item)?;
            out.insert(state.asset_id.clone(), state);
        }
        Ok(out)
    }

    async fn record_applied(&self, state: &AssetState) -> Result<Applied, StateError> {
        // The reverse-index entry first, so a crash between the two writes leaves at worst an
        // entry whose state does not hold the code, which `find_by_codes` ignores, never a
        // written state the sweep cannot find. (A transaction would be atomic, but moto does
        // not serialise conditional transactions, and the entry needs no condition.) A tombstone
        // or a detached state holds no code: the entry of the code it held stays, ignored.
        if let Some(index) = index_item(state) {
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(index))
                .send()
                .await
                .map_err(classify)?;
        }
        let (condition, values) = replace_condition(state);
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(asset_to_item(state)))
            .condition_expression(condition);
        for (name, value) in values {
            request = request.expression_attribute_values(name, value);
        }
        match request.send().await {
            Ok(_) => Ok(Applied::Written),
            Err(error) if is_condition_failed(&error) => Ok(Applied::Stale),
            Err(error) => Err(classify(error)),
        }
    }

    async fn delete(&self, dam: DamKind, id: &str) -> Result<(), StateError> {
        for sk in [SK_ASSET, SK_PARKED] {
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key(asset_pk(dam, id), sk)))
                .send()
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    async fn find_by_codes(
        &self,
        family: &str,
        codes: &[String],
    ) -> Result<HashMap<String, (DamKind, String)>, StateError> {
        let entries = self
            .get_items(codes, |code| code_pk(family, code), SK_INDEX)
            .await?;
        // The index may lag behind a move or a deletion (it is rewritten only when a live
        // state is): each entry counts only when the state still holds the code, live.
        let mut candidates: HashMap<DamKind, Vec<(String, String)>> = HashMap::new();
        for item in &entries {
            let pk = get_string(item, PARTITION_KEY)?;
            let code = pk
                .strip_prefix(&format!("code#{family}#"))
                .ok_or_else(|| StateError::Permanent(format!("item: bad index key {pk}"), None))?
                .to_owned();
            let (dam, id) = index_from_item(item)?;
            candidates.entry(dam).or_default().push((code, id));
        }
        let mut out = HashMap::new();
        for (dam, pairs) in candidates {
            let ids: Vec<String> = pairs.iter().map(|(_, id)| id.clone()).collect();
            let states = self.get_many(dam, &ids).await?;
            for (code, id) in pairs {
                if states
                    .get(&id)
                    .and_then(AssetState::indexed_code)
                    .is_some_and(|held| held == (family, code.as_str()))
                {
                    out.insert(code, (dam, id));
                }
            }
        }
        Ok(out)
    }

    async fn record_parked(
        &self,
        dam: DamKind,
        id: &str,
        version: Version,
    ) -> Result<(), StateError> {
        // Never backwards: a late letter of an older version keeps the newer parked one.
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(parked_item(dam, id, version)))
            .condition_expression(
                "attribute_not_exists(pk) OR modified_at_ms < :m \
                 OR (modified_at_ms = :m AND seq < :s)",
            )
            .expression_attribute_values(":m", number(version.modified_at_ms))
            .expression_attribute_values(":s", number(version.seq))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failed(&error) => Ok(()),
            Err(error) => Err(classify(error)),
        }
    }

    async fn parked_many(
        &self,
        dam: DamKind,
        ids: &[String],
    ) -> Result<HashMap<String, Version>, StateError> {
        let items = self
            .get_items(ids, |id| asset_pk(dam, id), SK_PARKED)
            .await?;
        items
            .iter()
            .map(|item| Ok((id_from_asset_pk(item)?, version_from_item(item)?)))
            .collect()
    }
}

#[async_trait]
impl CursorStore for DynamoStore {
    async fn get(&self, name: &str) -> Result<Option<Cursor>, StateError> {
        // Consistent read: the version read here is the one the next advance is conditioned on.
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(cursor_pk(name), SK_CURSOR)))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        output.item().map(cursor_from_item).transpose()
    }

    async fn advance(
        &self,
        name: &str,
        new: Cursor,
        expected_version: Option<u64>,
    ) -> Result<Advance, StateError> {
        let version = Cursor::next_version(expected_version);
        let mut item = key(cursor_pk(name), SK_CURSOR);
        item.insert("position_ms".into(), number(new.position_ms));
        if let Some(token) = new.page_token {
            item.insert("page_token".into(), AttributeValue::S(token));
        }
        item.insert("version".into(), number(version));
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            // The old item comes back with the failure: the caller learns the winner's cursor
            // without another read.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let request = match expected_version {
            None => request.condition_expression("attribute_not_exists(pk)"),
            // `position` is a DynamoDB reserved word (and `version` may become one): use names.
            Some(expected) => request
                .condition_expression("#version = :expected AND #position <= :position")
                .expression_attribute_names("#version", "version")
                .expression_attribute_names("#position", "position_ms")
                .expression_attribute_values(":expected", number(expected))
                .expression_attribute_values(":position", number(new.position_ms)),
        };
        match request.send().await {
            Ok(_) => Ok(Advance::Written { version }),
            Err(error) => {
                if let Some(PutItemError::ConditionalCheckFailedException(failed)) =
                    error.as_service_error()
                {
                    let current = failed.item().map(cursor_from_item).transpose()?;
                    return Ok(Advance::Conflict { current });
                }
                Err(classify(error))
            }
        }
    }
}

#[async_trait]
impl LeaseStore for DynamoStore {
    async fn acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool, StateError> {
        let now_ms = (self.clock)();
        let mut item = key(lease_pk(name), SK_LEASE);
        item.insert("owner".into(), AttributeValue::S(owner.into()));
        item.insert(TTL_ATTRIBUTE.into(), number(expiry_seconds(now_ms, ttl)));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            // Expired leases still exist until TTL deletion (up to ~48 h), so expiry is part
            // of the condition rather than left to TTL. `owner` is a reserved word.
            .condition_expression(
                "attribute_not_exists(pk) OR #expires_at <= :now OR #owner = :owner",
            )
            .expression_attribute_names("#expires_at", TTL_ATTRIBUTE)
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":now", number(now_ms.div_euclid(1000)))
            .expression_attribute_values(":owner", AttributeValue::S(owner.into()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if is_condition_failed(&error) => Ok(false),
            Err(error) => Err(classify(error)),
        }
    }

    async fn release(&self, name: &str, owner: &str) -> Result<bool, StateError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(lease_pk(name), SK_LEASE)))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", AttributeValue::S(owner.into()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if is_condition_failed(&error) => Ok(false),
            Err(error) => Err(classify(error)),
        }
    }
}

/// The family-structure cache on the state table, one item per family with a TTL.
pub struct DynamoStructureStore {
    client: Client,
    table: String,
    clock: Clock,
    ttl: Duration,
}

impl DynamoStructureStore {
    /// Shares `store`'s client, table and clock; entries live for `ttl`.
    pub fn new(store: &DynamoStore, ttl: Duration) -> Self {
        Self {
            client: store.client.clone(),
            table: store.table.clone(),
            clock: Arc::clone(&store.clock),
            ttl,
        }
    }
}

#[async_trait]
impl StructureStore for DynamoStructureStore {
    async fn get(&self, family: &str) -> Result<Option<Arc<FamilyStructure>>, StateError> {
        // Eventually consistent is enough for a cache, and half the price.
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(family_pk(family), SK_STRUCTURE)))
            .send()
            .await
            .map_err(classify)?;
        let Some(item) = output.item() else {
            return Ok(None);
        };
        // TTL deletion is lazy (up to ~48 h), so an expired item can still be read: filter here.
        let expires_at: i64 = get_number(item, TTL_ATTRIBUTE)?;
        if is_expired(expires_at, (self.clock)()) {
            return Ok(None);
        }
        match serde_json::from_str::<FamilyStructure>(get_string(item, "structure")?) {
            Ok(structure) => Ok(Some(Arc::new(structure))),
            Err(error) => {
                // Written by an older release with another shape: a miss, so the caller
                // re-reads the PIM and overwrites it, instead of failing until the TTL.
                tracing::warn!(family, %error, "Cached family structure unreadable; ignoring.");
                Ok(None)
            }
        }
    }

    async fn put(&self, structure: Arc<FamilyStructure>) -> Result<(), StateError> {
        let json = serde_json::to_string(&*structure).map_err(|e| {
            StateError::Permanent(format!("structure not serialisable: {e}"), Some(e.into()))
        })?;
        let mut item = key(family_pk(&structure.family.code), SK_STRUCTURE);
        item.insert("structure".into(), AttributeValue::S(json));
        item.insert(
            TTL_ATTRIBUTE.into(),
            number(expiry_seconds((self.clock)(), self.ttl)),
        );
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn invalidate(&self, family: &str) -> Result<(), StateError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(family_pk(family), SK_STRUCTURE)))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }
}

pub(crate) fn build_error(error: aws_sdk_dynamodb::error::BuildError) -> StateError {
    StateError::Permanent(error.to_string(), Some(error.into()))
}

pub(crate) fn error_code<E: ProvideErrorMetadata>(
    error: &SdkError<E, HttpResponse>,
) -> Option<&str> {
    error.as_service_error().and_then(|e| e.code())
}

fn is_condition_failed<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    error_code(error) == Some("ConditionalCheckFailedException")
}

/// A failed DynamoDB call as the port's error, classified like every AWS call.
pub(crate) fn classify<E: OperationError>(error: SdkError<E, HttpResponse>) -> StateError {
    aws::classify(error, StateError::Transient, StateError::Permanent)
}
