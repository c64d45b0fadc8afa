//! The table's keys and the items' attributes: what `docs/state.md` lays out, in code.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{MAX_BATCH_GET_KEYS, PARTITION_KEY, SORT_KEY};
use crate::dam::{DamKind, Version};
use crate::store::{AssetState, Cursor, StateError};

pub(super) const SK_ASSET: &str = "state";
pub(super) const SK_STRUCTURE: &str = "structure";
pub(super) const SK_CURSOR: &str = "cursor";
pub(super) const SK_LEASE: &str = "lease";
pub(super) const SK_INDEX: &str = "index";
pub(super) const SK_PARKED: &str = "parked";

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) fn dam_from_name(name: &str) -> Result<DamKind, StateError> {
    name.parse()
        .map_err(|e| StateError::Permanent(format!("item: {e}"), None))
}

pub(super) fn asset_pk(dam: DamKind, id: &str) -> String {
    format!("asset#{}#{id}", dam.as_str())
}

/// The reverse index's key: family and PIM code (Akeneo codes are `[A-Za-z0-9_]`, so `#`
/// cannot be ambiguous).
pub(super) fn code_pk(family: &str, code: &str) -> String {
    format!("code#{family}#{code}")
}

pub(super) fn family_pk(code: &str) -> String {
    format!("family#{code}")
}

pub(super) fn cursor_pk(name: &str) -> String {
    format!("cursor#{name}")
}

pub(super) fn lease_pk(name: &str) -> String {
    format!("lease#{name}")
}

pub(super) fn key(pk: String, sk: &str) -> Item {
    HashMap::from([
        (PARTITION_KEY.to_owned(), AttributeValue::S(pk)),
        (SORT_KEY.to_owned(), AttributeValue::S(sk.to_owned())),
    ])
}

pub(super) fn number(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// Distinct ids in chunks of at most 100: BatchGetItem rejects both larger requests and
/// duplicate keys (ValidationException).
pub(super) fn distinct_chunks(ids: &[String]) -> Vec<Vec<&str>> {
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

pub(super) fn asset_to_item(state: &AssetState) -> Item {
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
    item.insert("deleted".into(), AttributeValue::Bool(state.deleted));
    // Omitted when empty: the write condition reads a missing hash as the empty one.
    if !state.source_hash.is_empty() {
        item.insert("source_hash".into(), string(&state.source_hash));
    }
    item
}

/// The reverse-index item of a live state written to a family: `code#<family>#<code>` →
/// `dam`, `asset_id`.
pub(super) fn index_item(state: &AssetState) -> Option<Item> {
    let (family, code) = state.indexed_code()?;
    let mut item = key(code_pk(family, code), SK_INDEX);
    item.insert("dam".into(), AttributeValue::S(state.dam.as_str().into()));
    item.insert("asset_id".into(), AttributeValue::S(state.asset_id.clone()));
    Some(item)
}

/// `(dam, asset_id)` of a reverse-index item.
pub(super) fn index_from_item(item: &Item) -> Result<(DamKind, String), StateError> {
    Ok((
        dam_from_name(get_string(item, "dam")?)?,
        get_string(item, "asset_id")?.to_owned(),
    ))
}

pub(super) fn parked_item(dam: DamKind, id: &str, version: Version) -> Item {
    let mut item = key(asset_pk(dam, id), SK_PARKED);
    item.insert("modified_at_ms".into(), number(version.modified_at_ms));
    item.insert("seq".into(), number(version.seq));
    item
}

pub(super) fn version_from_item(item: &Item) -> Result<Version, StateError> {
    Ok(Version {
        modified_at_ms: get_number(item, "modified_at_ms")?,
        seq: get_number(item, "seq")?,
    })
}

/// The id in an `asset#<dam>#<id>` key (ids may contain `#`: only the first two split).
pub(super) fn id_from_asset_pk(item: &Item) -> Result<String, StateError> {
    get_string(item, super::PARTITION_KEY)?
        .splitn(3, '#')
        .nth(2)
        .map(str::to_owned)
        .ok_or_else(|| StateError::Permanent("item: malformed asset key".into(), None))
}

/// The condition under which `new` may replace a stored state: [`AssetState::may_be_replaced_by`]
/// as a DynamoDB condition expression, with the values it names. Items written before the
/// tombstone and fingerprint existed lack `deleted` and `source_hash`; they read as `false` and
/// empty, so each comparison also covers the missing attribute.
pub(super) fn replace_condition(new: &AssetState) -> (String, Vec<(&'static str, AttributeValue)>) {
    let mut values = vec![
        (":m", number(new.applied_version.modified_at_ms)),
        (":s", number(new.applied_version.seq)),
        (":h", AttributeValue::S(new.content_hash.clone())),
    ];
    let mut differs = vec!["content_hash <> :h"];
    if new.source_hash.is_empty() {
        differs.push("attribute_exists(source_hash)");
    } else {
        differs.push("attribute_not_exists(source_hash) OR source_hash <> :sh");
        values.push((":sh", AttributeValue::S(new.source_hash.clone())));
    }
    if new.deleted {
        differs.push("attribute_not_exists(deleted) OR deleted = :false");
        values.push((":false", AttributeValue::Bool(false)));
    }
    let mut condition = String::from(
        "attribute_not_exists(pk) OR modified_at_ms < :m \
         OR (modified_at_ms = :m AND seq < :s)",
    );
    condition.push_str(&format!(
        " OR (modified_at_ms = :m AND seq = :s AND ({}))",
        differs.join(" OR ")
    ));
    if !new.deleted {
        // A live state replaces a tombstone whatever its version (the consumer confirmed it).
        condition.push_str(" OR deleted = :true");
        values.push((":true", AttributeValue::Bool(true)));
    }
    (condition, values)
}

pub(super) fn asset_from_item(item: &Item) -> Result<AssetState, StateError> {
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
        deleted: match item.get("deleted") {
            None => false,
            Some(AttributeValue::Bool(deleted)) => *deleted,
            Some(_) => {
                return Err(StateError::Permanent(
                    "asset state item: deleted is not a boolean".into(),
                    None,
                ));
            }
        },
        source_hash: match item.get("source_hash") {
            None => String::new(),
            Some(_) => get_string(item, "source_hash")?.to_owned(),
        },
        media_files: match item.get("media_files") {
            None => BTreeMap::new(),
            Some(AttributeValue::M(files)) => files
                .iter()
                .map(|(url, code)| match code {
                    AttributeValue::S(code) => Ok((url.clone(), code.clone())),
                    _ => Err(StateError::Permanent(
                        format!("asset state item: media_files[{url}] is not a string"),
                        None,
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(StateError::Permanent(
                    "asset state item: media_files is not a map".into(),
                    None,
                ));
            }
        },
    })
}

pub(super) fn cursor_from_item(item: &Item) -> Result<Cursor, StateError> {
    Ok(Cursor {
        position_ms: get_number(item, "position_ms")?,
        page_token: match item.get("page_token") {
            None => None,
            Some(_) => Some(get_string(item, "page_token")?.to_owned()),
        },
        version: get_number(item, "version")?,
    })
}

pub(super) fn get_string<'a>(item: &'a Item, name: &str) -> Result<&'a str, StateError> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value),
        _ => Err(StateError::Permanent(
            format!("item attribute {name:?} missing or not a string"),
            None,
        )),
    }
}

pub(super) fn get_number<T: FromStr>(item: &Item, name: &str) -> Result<T, StateError> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value.parse().map_err(|_| {
            StateError::Permanent(
                format!("item attribute {name:?} out of range: {value}"),
                None,
            )
        }),
        _ => Err(StateError::Permanent(
            format!("item attribute {name:?} missing or not a number"),
            None,
        )),
    }
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
            deleted: false,
            source_hash: "f".into(),
        }
    }

    #[test]
    fn asset_items_round_trip_and_are_keyed_by_dam_and_id() {
        let item = asset_to_item(&state());
        assert_eq!(item["pk"], AttributeValue::S("asset#bynder#a#1".into()));
        assert_eq!(item["sk"], AttributeValue::S("state".into()));
        assert_eq!(asset_from_item(&item).unwrap(), state());
        let tombstone = AssetState {
            deleted: true,
            source_hash: String::new(),
            ..state()
        };
        let item = asset_to_item(&tombstone);
        assert!(!item.contains_key("source_hash"));
        assert_eq!(asset_from_item(&item).unwrap(), tombstone);
        assert_eq!(index_item(&tombstone), None);
    }

    #[test]
    fn items_written_before_tombstones_read_as_live_without_a_fingerprint() {
        let mut item = asset_to_item(&state());
        item.remove("deleted");
        item.remove("source_hash");
        let read = asset_from_item(&item).unwrap();
        assert!(!read.deleted);
        assert_eq!(read.source_hash, "");
    }

    #[test]
    fn live_states_are_indexed_by_family_and_code() {
        let item = index_item(&state()).unwrap();
        assert_eq!(
            item["pk"],
            AttributeValue::S("code#packshot#bynder_a_1".into())
        );
        assert_eq!(item["sk"], AttributeValue::S("index".into()));
        assert_eq!(
            index_from_item(&item).unwrap(),
            (DamKind::Bynder, "a#1".to_owned())
        );
        let detached = AssetState {
            family: String::new(),
            ..state()
        };
        assert_eq!(index_item(&detached), None);
        let parked = parked_item(DamKind::Bynder, "a#1", state().applied_version);
        assert_eq!(id_from_asset_pk(&parked).unwrap(), "a#1");
        assert_eq!(version_from_item(&parked).unwrap(), state().applied_version);
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
            Err(StateError::Permanent(..))
        ));
        let mut cursor = key(cursor_pk("c"), SK_CURSOR);
        cursor.insert("position_ms".into(), number(1));
        cursor.insert("version".into(), number(-1));
        assert!(matches!(
            cursor_from_item(&cursor),
            Err(StateError::Permanent(..))
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
}
