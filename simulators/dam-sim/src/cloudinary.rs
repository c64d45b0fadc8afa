//! Cloudinary Admin API subset: `POST /v1_1/{cloud}/resources/search`,
//! `GET /v1_1/{cloud}/resources/by_asset_ids` and `GET /v1_1/{cloud}/resources/{asset_id}`,
//! Basic auth (api_key:api_secret), and the
//! hourly Admin API budget reported in `X-FeatureRateLimit-*` headers.
//!
//! Search expressions: terms joined by ` AND `; supported fields are `asset_id` (`=`/`:`,
//! one id or `(a OR b ...)`), `public_id`, `tags`, `resource_type`, `type`, and the dates
//! `created_at`, `uploaded_at`, `last_updated.updated_at` with `>`, `>=`, `<`, `<=`, `=`
//! against an RFC 3339 value (compared at second granularity, like the dates printed). With
//! `DamSimConfig::cloudinary_date_filter = Exclusive` (`--cloudinary-date-filter`), `>=` acts
//! as `>`, to check that clients list every item whichever the DAM does.
//! "Modified since" is `last_updated.updated_at>="..."`: every catalogue change bumps it.
//!
//! Versions, as Cloudinary keeps them: `version` is the unix second of the file's last upload
//! (the creation, or a new file: see [`crate::catalogue::FILE_KEYS`]) and changes with nothing
//! else; metadata, tags, context and renames only move `last_updated.updated_at`, printed in
//! whole seconds. Two edits within one second therefore read back with the same
//! `(updated_at, version)`, and a notification's `version` names the upload it follows, not the
//! edit it reports.
//!
//! Like the Admin API, `tags`, `context` and `metadata` are only returned when asked for:
//! `with_field` in a search body, `tags=true`/`context=true`/`metadata=true` on
//! `by_asset_ids`.

use std::cmp::Ordering;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::bynder::DateFilter;
use crate::catalogue::SimAsset;
use crate::timefmt::{iso_secs, parse_ms};
use crate::{Shared, query_pairs};

pub const MAX_RESULTS: usize = 500;
pub const DEFAULT_RESULTS: usize = 50;
pub const MAX_ASSET_IDS: usize = 100;

/// Neutral fields rendered as resource attributes rather than context or metadata.
const RESERVED: &[&str] = &[
    "public_id",
    "url",
    "format",
    "width",
    "height",
    "bytes",
    "tags",
];
/// Neutral string fields rendered as contextual metadata (`context.custom`); every other
/// non-reserved field goes to structured `metadata`.
const CONTEXT_KEYS: &[&str] = &["title", "description", "alt", "caption"];

/// Cloudinary's `version` of `a`: the second its file was last uploaded.
pub fn version(a: &SimAsset) -> i64 {
    a.uploaded_at_ms.div_euclid(1000)
}

pub fn public_id(a: &SimAsset) -> String {
    a.str_field("public_id")
        .map_or_else(|| format!("dam-sim/{}", a.id), str::to_owned)
}

/// Which optional attribute groups a resource JSON carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Include {
    pub tags: bool,
    pub context: bool,
    pub metadata: bool,
}

impl Include {
    pub const ALL: Include = Include {
        tags: true,
        context: true,
        metadata: true,
    };
}

/// The Admin API resource JSON of one asset, with every optional group.
pub fn resource_json(a: &SimAsset, cloud: &str) -> Value {
    resource_json_with(a, cloud, Include::ALL)
}

/// The Admin API resource JSON of one asset.
pub fn resource_json_with(a: &SimAsset, cloud: &str, include: Include) -> Value {
    let format = a.str_field("format").unwrap_or("jpg").to_owned();
    let public_id = public_id(a);
    let secure_url = a.str_field("url").map_or_else(
        || {
            format!(
                "https://res.cloudinary.com/{cloud}/image/upload/v{}/{public_id}.{format}",
                version(a)
            )
        },
        str::to_owned,
    );
    let mut context = Map::new();
    let mut metadata = Map::new();
    for (k, v) in &a.fields {
        if RESERVED.contains(&k.as_str()) {
            continue;
        }
        match v {
            Value::String(s) if CONTEXT_KEYS.contains(&k.as_str()) => {
                context.insert(k.clone(), Value::String(s.clone()));
            }
            _ => {
                metadata.insert(k.clone(), v.clone());
            }
        }
    }
    let updated = iso_secs(a.modified_at_ms);
    let mut r = json!({
        "asset_id": a.id,
        "public_id": public_id,
        "folder": public_id.rsplit_once('/').map_or("", |(f, _)| f),
        "filename": public_id.rsplit('/').next().unwrap_or(&public_id),
        "format": format,
        "version": version(a),
        "resource_type": "image",
        "type": "upload",
        "created_at": iso_secs(a.created_at_ms),
        "uploaded_at": iso_secs(a.uploaded_at_ms),
        "bytes": a.fields.get("bytes").cloned().unwrap_or(json!(0)),
        "width": a.fields.get("width").cloned().unwrap_or(Value::Null),
        "height": a.fields.get("height").cloned().unwrap_or(Value::Null),
        "secure_url": secure_url,
        "url": secure_url.replacen("https://", "http://", 1),
        "status": "active",
        "access_mode": "public",
        "last_updated": {
            "updated_at": updated,
            "metadata_updated_at": updated,
            "context_updated_at": updated,
            "tags_updated_at": updated,
        },
    });
    if include.tags {
        r["tags"] = a.fields.get("tags").cloned().unwrap_or(json!([]));
    }
    if include.context {
        r["context"] = json!({ "custom": context });
    }
    if include.metadata {
        r["metadata"] = Value::Object(metadata);
    }
    r
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": { "message": message } }))).into_response()
}

/// Basic auth and cloud name, then the hourly budget. On success returns the rate headers to
/// put on the answer.
fn admit(shared: &Shared, cloud: &str, headers: &HeaderMap) -> Result<HeaderMap, Box<Response>> {
    let expected = STANDARD.encode(format!(
        "{}:{}",
        shared.config.cloudinary_api_key, shared.config.cloudinary_api_secret
    ));
    let ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .is_some_and(|v| v == expected);
    if !ok || cloud != shared.config.cloud_name {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "Invalid credentials",
        )));
    }
    let state = shared.cloudinary_budget.lock().expect("budget lock").take();
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    put("x-featureratelimit-limit", state.limit.to_string());
    put("x-featureratelimit-remaining", state.remaining.to_string());
    put(
        "x-featureratelimit-reset",
        httpdate::fmt_http_date(state.reset),
    );
    if !state.allowed {
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Rate Limit Exceeded");
        r.headers_mut().extend(h);
        return Err(Box::new(r));
    }
    Ok(h)
}

pub(crate) async fn by_asset_ids(
    State(shared): State<Arc<Shared>>,
    Path(cloud): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let rate = match admit(&shared, &cloud, &headers) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    let pairs = query_pairs(q.as_deref());
    let flag = |name: &str| pairs.iter().any(|(k, v)| k == name && v == "true");
    let include = Include {
        tags: flag("tags"),
        context: flag("context"),
        metadata: flag("metadata"),
    };
    let ids: Vec<&String> = pairs
        .iter()
        .filter(|(k, _)| k == "asset_ids[]" || k == "asset_ids")
        .map(|(_, v)| v)
        .collect();
    if ids.len() > MAX_ASSET_IDS {
        return error(StatusCode::BAD_REQUEST, "asset_ids: at most 100 values");
    }
    let cat = shared.catalogue.lock().expect("catalogue lock");
    let resources: Vec<Value> = ids
        .iter()
        .filter_map(|id| cat.live(id))
        .map(|a| resource_json_with(a, &cloud, include))
        .collect();
    (rate, Json(json!({ "resources": resources }))).into_response()
}

/// `GET /v1_1/{cloud}/resources/{asset_id}`: one resource by asset id, 404 when unknown or
/// deleted. `tags`, `context` and `metadata` only when asked for, as on `by_asset_ids`.
pub(crate) async fn by_asset_id(
    State(shared): State<Arc<Shared>>,
    Path((cloud, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let rate = match admit(&shared, &cloud, &headers) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    let pairs = query_pairs(q.as_deref());
    let flag = |name: &str| pairs.iter().any(|(k, v)| k == name && v == "true");
    let include = Include {
        tags: flag("tags"),
        context: flag("context"),
        metadata: flag("metadata"),
    };
    let cat = shared.catalogue.lock().expect("catalogue lock");
    match cat.live(&id) {
        Some(a) => (rate, Json(resource_json_with(a, &cloud, include))).into_response(),
        None => {
            let mut r = error(StatusCode::NOT_FOUND, &format!("Resource not found - {id}"));
            r.headers_mut().extend(rate);
            r
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SearchBody {
    expression: Option<String>,
    sort_by: Vec<Map<String, Value>>,
    max_results: Option<usize>,
    next_cursor: Option<String>,
    #[serde(deserialize_with = "one_or_many")]
    with_field: Vec<String>,
}

/// `with_field` may be one string or a list.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug)]
enum Term {
    AssetIds(Vec<String>),
    PublicId(String),
    Tag(String),
    ResourceType(String),
    Type(String),
    Date(DateField, Op, i64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum DateField {
    Created,
    Uploaded,
    Updated,
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(s)
}

fn parse_term(t: &str) -> Result<Term, String> {
    let t = t.trim();
    let pos = t
        .find([':', '=', '<', '>'])
        .ok_or_else(|| format!("unsupported term: {t}"))?;
    let field = &t[..pos];
    let rest = &t[pos..];
    let (op, value) = if let Some(v) = rest.strip_prefix(">=") {
        (Op::Ge, v)
    } else if let Some(v) = rest.strip_prefix("<=") {
        (Op::Le, v)
    } else if let Some(v) = rest.strip_prefix('>') {
        (Op::Gt, v)
    } else if let Some(v) = rest.strip_prefix('<') {
        (Op::Lt, v)
    } else {
        (Op::Eq, &rest[1..])
    };
    let date = |f| {
        parse_ms(unquote(value))
            .map(|ms| Term::Date(f, op, ms))
            .ok_or_else(|| format!("invalid date in: {t}"))
    };
    let eq_only = |term: Term| match op {
        Op::Eq => Ok(term),
        _ => Err(format!("operator not supported for {field}")),
    };
    match field {
        "created_at" => date(DateField::Created),
        "uploaded_at" => date(DateField::Uploaded),
        "last_updated.updated_at" => date(DateField::Updated),
        "asset_id" => {
            let v = value.trim();
            let ids = match v.strip_prefix('(').and_then(|x| x.strip_suffix(')')) {
                Some(inner) => inner.split(" OR ").map(|s| unquote(s).to_owned()).collect(),
                None => vec![unquote(v).to_owned()],
            };
            eq_only(Term::AssetIds(ids))
        }
        "public_id" => eq_only(Term::PublicId(unquote(value).to_owned())),
        "tags" | "tag" => eq_only(Term::Tag(unquote(value).to_owned())),
        "resource_type" => eq_only(Term::ResourceType(unquote(value).to_owned())),
        "type" => eq_only(Term::Type(unquote(value).to_owned())),
        _ => Err(format!("unsupported field: {field}")),
    }
}

/// Splits on ` AND ` outside parentheses.
fn split_top_level_and(e: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    let bytes = e.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b' ' if depth == 0 && e[i..].starts_with(" AND ") => {
                parts.push(&e[start..i]);
                i += 5;
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&e[start..]);
    parts
}

fn parse_expression(e: &str) -> Result<Vec<Term>, String> {
    if e.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut terms = Vec::new();
    for t in split_top_level_and(e) {
        let t = t.trim();
        // A parenthesised group of AND terms, as clients add to scope their own terms.
        match t.strip_prefix('(').and_then(|x| x.strip_suffix(')')) {
            Some(inner) if !t.contains("=(") && !t.contains(":(") => {
                terms.extend(parse_expression(inner)?)
            }
            _ => terms.push(parse_term(t)?),
        }
    }
    Ok(terms)
}

fn matches(a: &SimAsset, term: &Term, filter: DateFilter) -> bool {
    match term {
        Term::AssetIds(ids) => ids.contains(&a.id),
        Term::PublicId(p) => match p.strip_suffix('*') {
            Some(prefix) => public_id(a).starts_with(prefix),
            None => public_id(a) == *p,
        },
        Term::Tag(t) => a
            .fields
            .get("tags")
            .and_then(Value::as_array)
            .is_some_and(|tags| tags.iter().any(|x| x.as_str() == Some(t))),
        Term::ResourceType(r) => r == "image",
        Term::Type(t) => t == "upload",
        Term::Date(field, op, ms) => {
            let at = match field {
                DateField::Created => a.created_at_ms,
                DateField::Uploaded => a.uploaded_at_ms,
                DateField::Updated => a.modified_at_ms,
            };
            let (l, r) = (at.div_euclid(1000), ms.div_euclid(1000));
            match op {
                Op::Eq => l == r,
                Op::Gt => l > r,
                Op::Ge => filter.keeps(l, r),
                Op::Lt => l < r,
                Op::Le => l <= r,
            }
        }
    }
}

/// A sort key value; dates sort on the catalogue's millisecond clock.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
enum Key {
    I(i64),
    S(String),
}

#[derive(Debug, Clone, Copy)]
enum SortField {
    Created,
    Uploaded,
    Updated,
    PublicId,
    AssetId,
}

fn parse_sort(sort_by: &[Map<String, Value>]) -> Result<Vec<(SortField, bool)>, String> {
    if sort_by.is_empty() {
        // Cloudinary's default: newest first by creation.
        return Ok(vec![(SortField::Created, true)]);
    }
    let mut out = Vec::new();
    for entry in sort_by {
        for (field, dir) in entry {
            let desc = match dir.as_str() {
                Some("desc") => true,
                Some("asc") => false,
                _ => return Err(format!("invalid sort direction for {field}")),
            };
            let f = match field.as_str() {
                "created_at" => SortField::Created,
                "uploaded_at" => SortField::Uploaded,
                "last_updated.updated_at" | "updated_at" => SortField::Updated,
                "public_id" => SortField::PublicId,
                "asset_id" => SortField::AssetId,
                _ => return Err(format!("unsupported sort field: {field}")),
            };
            out.push((f, desc));
        }
    }
    Ok(out)
}

fn keys(a: &SimAsset, sorts: &[(SortField, bool)]) -> Vec<Key> {
    let mut k: Vec<Key> = sorts
        .iter()
        .map(|(f, _)| match f {
            SortField::Created => Key::I(a.created_at_ms),
            SortField::Uploaded => Key::I(a.uploaded_at_ms),
            SortField::Updated => Key::I(a.modified_at_ms),
            SortField::PublicId => Key::S(public_id(a)),
            SortField::AssetId => Key::S(a.id.clone()),
        })
        .collect();
    // asset_id breaks every tie so keyset cursors are exact.
    k.push(Key::S(a.id.clone()));
    k
}

fn compare(a: &[Key], b: &[Key], sorts: &[(SortField, bool)]) -> Ordering {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let desc = sorts.get(i).is_some_and(|(_, d)| *d);
        let o = if desc { y.cmp(x) } else { x.cmp(y) };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

pub(crate) async fn search(
    State(shared): State<Arc<Shared>>,
    Path(cloud): Path<String>,
    headers: HeaderMap,
    body: Option<Json<SearchBody>>,
) -> Response {
    let rate = match admit(&shared, &cloud, &headers) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let terms = match parse_expression(body.expression.as_deref().unwrap_or("")) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let sorts = match parse_sort(&body.sort_by) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let max = body.max_results.unwrap_or(DEFAULT_RESULTS);
    if !(1..=MAX_RESULTS).contains(&max) {
        return error(StatusCode::BAD_REQUEST, "max_results must be 1..=500");
    }
    let after: Option<Vec<Key>> = match &body.next_cursor {
        Some(c) => match URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(k) => Some(k),
            None => return error(StatusCode::BAD_REQUEST, "Invalid next_cursor"),
        },
        None => None,
    };
    let cat = shared.catalogue.lock().expect("catalogue lock");
    let mut found: Vec<(Vec<Key>, &SimAsset)> = cat
        .live_assets()
        .into_iter()
        .filter(|a| {
            terms
                .iter()
                .all(|t| matches(a, t, shared.config.cloudinary_date_filter))
        })
        .map(|a| (keys(a, &sorts), a))
        .collect();
    found.sort_by(|x, y| compare(&x.0, &y.0, &sorts));
    let total = found.len();
    let mut rest = found
        .iter()
        .filter(|(k, _)| {
            after
                .as_ref()
                .is_none_or(|c| compare(k, c, &sorts) == Ordering::Greater)
        })
        .peekable();
    let page: Vec<&(Vec<Key>, &SimAsset)> = rest.by_ref().take(max).collect();
    let more = rest.peek().is_some();
    let has = |f: &str| body.with_field.iter().any(|w| w == f);
    let include = Include {
        tags: has("tags"),
        context: has("context"),
        metadata: has("metadata"),
    };
    let resources: Vec<Value> = page
        .iter()
        .map(|(_, a)| resource_json_with(a, &cloud, include))
        .collect();
    let mut out = json!({ "total_count": total, "time": 1, "resources": resources });
    if let (true, Some((k, _))) = (more, page.last()) {
        let cursor = URL_SAFE_NO_PAD.encode(serde_json::to_vec(k).unwrap_or_default());
        out["next_cursor"] = json!(cursor);
    }
    (rate, Json(out)).into_response()
}
