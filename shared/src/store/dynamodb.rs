//! The state ports on one DynamoDB table (layout in the [module docs](super) and
//! `docs/state.md`).
//!
//! Every guarded write is a single conditional PutItem/DeleteItem, so no read-modify-write
//! race exists; `ConditionalCheckFailedException` is mapped to the port's "no" answer. Time
//! comparisons use the caller's clock passed as an expression value, because DynamoDB has no
//! server-side "now". The endpoint comes from the SDK's standard configuration
//! (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_DYNAMODB`), which is how tests reach moto.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
pub use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, KeysAndAttributes,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TimeToLiveSpecification,
    TimeToLiveStatus,
};

use super::{
    Advance, Applied, AssetState, AssetStateStore, Clock, Cursor, CursorStore, LeaseStore,
    StateError, expiry_seconds, is_expired, system_clock,
};
use crate::akeneo::model::FamilyStructure;
use crate::akeneo::{StoreError, StructureStore};
use crate::dam::{DamKind, Version};

/// Environment variable naming the table (set by the infrastructure template).
pub const TABLE_NAME_ENV: &str = "TABLE_NAME";
/// Key and TTL attribute names: the infrastructure template must declare exactly these.
pub const PARTITION_KEY: &str = "pk";
pub const SORT_KEY: &str = "sk";
pub const TTL_ATTRIBUTE: &str = "expires_at";
/// BatchGetItem takes at most 100 keys per call.
pub const MAX_BATCH_GET_KEYS: usize = 100;

const SK_ASSET: &str = "state";
const SK_STRUCTURE: &str = "structure";
const SK_CURSOR: &str = "cursor";
const SK_LEASE: &str = "lease";

type Item = HashMap<String, AttributeValue>;

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

    /// The table named by `TABLE_NAME`, with a client from the standard AWS configuration chain
    /// (env, profile, Lambda role).
    pub async fn from_env() -> Result<Self, StateError> {
        let table = table_name(std::env::var(TABLE_NAME_ENV).ok())?;
        let config = aws_config::load_from_env().await;
        Ok(Self::new(Client::new(&config), table))
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
    async fn get_chunk(
        &self,
        keys: Vec<Item>,
        out: &mut HashMap<String, AssetState>,
    ) -> Result<(), StateError> {
        // Strongly consistent: a just-recorded version must be seen, or the consumer redoes
        // PIM work the guard would then refuse anyway.
        let mut pending = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .build()
            .map_err(build_error)?;
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
            for item in items.into_iter().flatten() {
                let state = asset_from_item(item)?;
                out.insert(state.asset_id.clone(), state);
            }
            let rest = output
                .unprocessed_keys()
                .and_then(|u| u.get(&self.table))
                .filter(|rest| !rest.keys().is_empty());
            let Some(rest) = rest else {
                return Ok(());
            };
            if attempt >= self.batch_retry.max_attempts {
                return Err(StateError::Transient(format!(
                    "{} keys still unprocessed after {attempt} BatchGetItem calls",
                    rest.keys().len()
                )));
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
}

#[async_trait]
impl AssetStateStore for DynamoStore {
    async fn get_many(
        &self,
        dam: DamKind,
        ids: &[String],
    ) -> Result<HashMap<String, AssetState>, StateError> {
        let mut out = HashMap::new();
        for chunk in distinct_chunks(ids) {
            let keys = chunk
                .iter()
                .map(|id| key(asset_pk(dam, id), SK_ASSET))
                .collect();
            self.get_chunk(keys, &mut out).await?;
        }
        Ok(out)
    }

    async fn record_applied(&self, state: &AssetState) -> Result<Applied, StateError> {
        let version = state.applied_version;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(asset_to_item(state)))
            // Strictly newer only: (modified_at_ms, seq) compared lexicographically, as `Version`
            // orders them. An equal version is a duplicate delivery and is refused.
            .condition_expression(
                "attribute_not_exists(pk) OR modified_at_ms < :m \
                 OR (modified_at_ms = :m AND seq < :s)",
            )
            .expression_attribute_values(":m", number(version.modified_at_ms))
            .expression_attribute_values(":s", number(version.seq))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Applied::Written),
            Err(error) if is_condition_failed(&error) => Ok(Applied::Stale),
            Err(error) => Err(classify(error)),
        }
    }

    async fn delete(&self, dam: DamKind, id: &str) -> Result<(), StateError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(asset_pk(dam, id), SK_ASSET)))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
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
        let version = expected_version.map_or(1, |v| v + 1);
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
    async fn get(&self, family: &str) -> Result<Option<Arc<FamilyStructure>>, StoreError> {
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
                tracing::warn!(family, %error, "cached family structure unreadable; ignoring");
                Ok(None)
            }
        }
    }

    async fn put(&self, structure: Arc<FamilyStructure>) -> Result<(), StoreError> {
        let json = serde_json::to_string(&*structure)
            .map_err(|e| StateError::Permanent(format!("structure not serialisable: {e}")))?;
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

    async fn invalidate(&self, family: &str) -> Result<(), StoreError> {
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

/// Creates the state table (on-demand, `pk`/`sk` strings) and enables TTL on `expires_at`.
/// Idempotent: an existing table is kept, and TTL is only enabled when it is not already.
pub async fn create_table(client: &Client, name: &str) -> Result<(), StateError> {
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(build_error)
    };
    let key_element = |name: &str, key_type| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
            .map_err(build_error)
    };
    let created = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute(PARTITION_KEY)?)
        .attribute_definitions(attribute(SORT_KEY)?)
        .key_schema(key_element(PARTITION_KEY, KeyType::Hash)?)
        .key_schema(key_element(SORT_KEY, KeyType::Range)?)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(error) if error_code(&error) == Some("ResourceInUseException") => {}
        Err(error) => return Err(classify(error)),
    }
    // UpdateTimeToLive needs an ACTIVE table; creation takes seconds on AWS.
    client
        .wait_until_table_exists()
        .table_name(name)
        .wait(Duration::from_secs(300))
        .await
        .map_err(|e| StateError::Transient(DisplayErrorContext(&e).to_string()))?;
    let ttl = client
        .describe_time_to_live()
        .table_name(name)
        .send()
        .await
        .map_err(classify)?;
    let status = ttl
        .time_to_live_description()
        .and_then(|d| d.time_to_live_status());
    // Enabling twice is a ValidationException.
    if !matches!(
        status,
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
    ) {
        let spec = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(TTL_ATTRIBUTE)
            .build()
            .map_err(build_error)?;
        client
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(spec)
            .send()
            .await
            .map_err(classify)?;
    }
    Ok(())
}

/// The table name from the environment's value; unset or empty is a configuration error.
fn table_name(value: Option<String>) -> Result<String, StateError> {
    value
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| StateError::Permanent(format!("{TABLE_NAME_ENV} is not set")))
}

fn dam_from_name(name: &str) -> Result<DamKind, StateError> {
    name.parse()
        .map_err(|e| StateError::Permanent(format!("item: {e}")))
}

fn asset_pk(dam: DamKind, id: &str) -> String {
    format!("asset#{}#{id}", dam.as_str())
}

fn family_pk(code: &str) -> String {
    format!("family#{code}")
}

fn cursor_pk(name: &str) -> String {
    format!("cursor#{name}")
}

fn lease_pk(name: &str) -> String {
    format!("lease#{name}")
}

fn key(pk: String, sk: &str) -> Item {
    HashMap::from([
        (PARTITION_KEY.to_owned(), AttributeValue::S(pk)),
        (SORT_KEY.to_owned(), AttributeValue::S(sk.to_owned())),
    ])
}

fn number(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// Distinct ids in chunks of at most 100: BatchGetItem rejects both larger requests and
/// duplicate keys (ValidationException).
fn distinct_chunks(ids: &[String]) -> Vec<Vec<&str>> {
    let mut seen = HashSet::new();
    let distinct: Vec<&str> = ids
        .iter()
        .map(String::as_str)
        .filter(|id| seen.insert(*id))
        .collect();
    distinct
        .chunks(MAX_BATCH_GET_KEYS)
        .map(<[&str]>::to_vec)
        .collect()
}

fn asset_to_item(state: &AssetState) -> Item {
    let mut item = key(asset_pk(state.dam, &state.asset_id), SK_ASSET);
    let string = |v: &str| AttributeValue::S(v.to_owned());
    item.insert("dam".into(), string(state.dam.as_str()));
    item.insert("asset_id".into(), string(&state.asset_id));
    item.insert(
        "modified_at_ms".into(),
        number(state.applied_version.modified_at_ms),
    );
    item.insert("seq".into(), number(state.applied_version.seq));
    item.insert("content_hash".into(), string(&state.content_hash));
    item.insert("family".into(), string(&state.family));
    item.insert("pim_code".into(), string(&state.pim_code));
    item.insert("updated_at_ms".into(), number(state.updated_at_ms));
    if !state.media_files.is_empty() {
        let files = state
            .media_files
            .iter()
            .map(|(url, code)| (url.clone(), string(code)))
            .collect();
        item.insert("media_files".into(), AttributeValue::M(files));
    }
    item
}

fn asset_from_item(item: &Item) -> Result<AssetState, StateError> {
    Ok(AssetState {
        dam: dam_from_name(get_string(item, "dam")?)?,
        asset_id: get_string(item, "asset_id")?.to_owned(),
        applied_version: Version {
            modified_at_ms: get_number(item, "modified_at_ms")?,
            seq: get_number(item, "seq")?,
        },
        content_hash: get_string(item, "content_hash")?.to_owned(),
        family: get_string(item, "family")?.to_owned(),
        pim_code: get_string(item, "pim_code")?.to_owned(),
        updated_at_ms: get_number(item, "updated_at_ms")?,
        media_files: match item.get("media_files") {
            None => BTreeMap::new(),
            Some(AttributeValue::M(files)) => files
                .iter()
                .map(|(url, code)| match code {
                    AttributeValue::S(code) => Ok((url.clone(), code.clone())),
                    _ => Err(StateError::Permanent(format!(
                        "asset state item: media_files[{url}] is not a string"
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(StateError::Permanent(
                    "asset state item: media_files is not a map".into(),
                ));
            }
        },
    })
}

fn cursor_from_item(item: &Item) -> Result<Cursor, StateError> {
    Ok(Cursor {
        position_ms: get_number(item, "position_ms")?,
        page_token: match item.get("page_token") {
            None => None,
            Some(_) => Some(get_string(item, "page_token")?.to_owned()),
        },
        version: get_number(item, "version")?,
    })
}

fn get_string<'a>(item: &'a Item, name: &str) -> Result<&'a str, StateError> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value),
        _ => Err(StateError::Permanent(format!(
            "item attribute {name:?} missing or not a string"
        ))),
    }
}

fn get_number<T: FromStr>(item: &Item, name: &str) -> Result<T, StateError> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value.parse().map_err(|_| {
            StateError::Permanent(format!("item attribute {name:?} out of range: {value}"))
        }),
        _ => Err(StateError::Permanent(format!(
            "item attribute {name:?} missing or not a number"
        ))),
    }
}

fn build_error(error: aws_sdk_dynamodb::error::BuildError) -> StateError {
    StateError::Permanent(error.to_string())
}

type HttpResponse = aws_sdk_dynamodb::config::http::HttpResponse;

fn error_code<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> Option<&str> {
    error.as_service_error().and_then(|e| e.code())
}

fn is_condition_failed<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    error_code(error) == Some("ConditionalCheckFailedException")
}

fn classify<E>(error: SdkError<E, HttpResponse>) -> StateError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let message = DisplayErrorContext(&error).to_string();
    let retriable = match &error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            is_retriable_service_error(code, service.raw().status().as_u16())
        }
        // The request could not be built: retrying builds the same one.
        SdkError::ConstructionFailure(_) => false,
        // Timeouts, connection failures, unreadable responses.
        _ => true,
    };
    if retriable {
        StateError::Transient(message)
    } else {
        StateError::Permanent(message)
    }
}

/// DynamoDB's retriable error codes (after the SDK's own retries ran out) and any 5xx.
fn is_retriable_service_error(code: &str, status: u16) -> bool {
    const RETRIABLE: [&str; 5] = [
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "ThrottlingException",
        "TransactionConflictException",
        "LimitExceededException",
    ];
    code.contains("Throttl") || RETRIABLE.contains(&code) || status >= 500
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> AssetState {
        AssetState {
            dam: DamKind::Bynder,
            asset_id: "a#1".into(),
            applied_version: Version {
                modified_at_ms: 1_700_000_000_123,
                seq: -2,
            },
            content_hash: "h".into(),
            family: "packshot".into(),
            pim_code: "bynder_a_1".into(),
            updated_at_ms: 5,
            media_files: BTreeMap::from([(
                "https://cdn.example/a.jpg".into(),
                "0/1/a_file.jpg".into(),
            )]),
        }
    }

    #[test]
    fn asset_items_round_trip_and_are_keyed_by_dam_and_id() {
        let item = asset_to_item(&state());
        assert_eq!(item["pk"], AttributeValue::S("asset#bynder#a#1".into()));
        assert_eq!(item["sk"], AttributeValue::S("state".into()));
        assert_eq!(asset_from_item(&item).unwrap(), state());
    }

    #[test]
    fn the_table_name_must_be_set() {
        let missing = table_name(None).unwrap_err();
        assert!(!missing.is_retriable());
        assert!(missing.to_string().contains("TABLE_NAME"));
        assert!(table_name(Some(" ".into())).is_err());
        assert_eq!(
            table_name(Some("dam-sync-state".into())).unwrap(),
            "dam-sync-state"
        );
    }

    #[test]
    fn dam_names_round_trip() {
        for dam in [DamKind::Cloudinary, DamKind::Bynder, DamKind::Generic] {
            assert_eq!(dam_from_name(dam.as_str()).unwrap(), dam);
        }
        assert!(dam_from_name("x").is_err());
    }

    #[test]
    fn corrupt_items_are_permanent_errors() {
        let mut item = asset_to_item(&state());
        item.insert("seq".into(), AttributeValue::S("1".into()));
        assert!(matches!(
            asset_from_item(&item),
            Err(StateError::Permanent(_))
        ));
        let mut cursor = key(cursor_pk("c"), SK_CURSOR);
        cursor.insert("position_ms".into(), number(1));
        cursor.insert("version".into(), number(-1));
        assert!(matches!(
            cursor_from_item(&cursor),
            Err(StateError::Permanent(_))
        ));
        cursor.insert("version".into(), number(3));
        assert_eq!(
            cursor_from_item(&cursor).unwrap(),
            Cursor {
                position_ms: 1,
                page_token: None,
                version: 3
            }
        );
    }

    #[test]
    fn chunks_hold_at_most_100_distinct_ids() {
        let mut ids: Vec<String> = (0..250).map(|i| format!("id{i}")).collect();
        ids.extend(ids.clone());
        let chunks = distinct_chunks(&ids);
        let sizes: Vec<_> = chunks.iter().map(Vec::len).collect();
        assert_eq!(sizes, [100, 100, 50]);
        assert_eq!(chunks[2][49], "id249");
    }

    #[test]
    fn throttling_and_server_errors_are_retriable_validation_is_not() {
        assert!(is_retriable_service_error(
            "ProvisionedThroughputExceededException",
            400
        ));
        assert!(is_retriable_service_error("ThrottlingException", 400));
        assert!(is_retriable_service_error("RequestLimitExceeded", 400));
        assert!(is_retriable_service_error("InternalServerError", 500));
        assert!(is_retriable_service_error("", 503));
        assert!(!is_retriable_service_error("ValidationException", 400));
        assert!(!is_retriable_service_error(
            "ResourceNotFoundException",
            400
        ));
        assert!(!is_retriable_service_error("AccessDeniedException", 400));
    }
}
