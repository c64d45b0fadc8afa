//! Bynder v4 media API subset: `GET /api/v4/media/` (filters `ids`, `dateModified`, paging
//! `limit`/`page`, `orderBy`, `total=1`) and `GET /api/v4/media/{id}/`, bearer auth, and the
//! documented rate limit: N requests per sliding window per client (4,500 per 5 minutes by
//! default), 429 with no headers, calls during a block extending it.
//!
//! `dateModified` keeps media modified after the given second by default (Bynder documents
//! "modified after"), or at or after it with [`DateFilter::Inclusive`]
//! (`DamSimConfig::bynder_date_filter`, `--bynder-date-filter`): clients must list every
//! item whichever the DAM does.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::catalogue::SimAsset;
use crate::generic::bearer_ok;
use crate::timefmt::{iso_secs, parse_ms};
use crate::{Shared, query_pairs};

/// How a "modified since" date filter treats its own second (Bynder's `dateModified`,
/// Cloudinary's `last_updated.updated_at>=`): both compare whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DateFilter {
    /// Items modified in the given second or later.
    Inclusive,
    /// Only items modified in a later second ("modified after").
    #[default]
    Exclusive,
}

impl DateFilter {
    /// Whether an item modified in second `item` passes a filter on second `since`.
    pub fn keeps(self, item: i64, since: i64) -> bool {
        match self {
            DateFilter::Inclusive => item >= since,
            DateFilter::Exclusive => item > since,
        }
    }
}

impl std::str::FromStr for DateFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "inclusive" => Ok(DateFilter::Inclusive),
            "exclusive" => Ok(DateFilter::Exclusive),
            other => Err(format!(
                "unknown date filter {other:?}; use inclusive or exclusive"
            )),
        }
    }
}

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 1000;

/// Neutral fields rendered as media attributes; every other field becomes `property_<name>`.
const RESERVED: &[&str] = &[
    "title",
    "description",
    "tags",
    "width",
    "height",
    "format",
    "bytes",
    "url",
    "archived",
];

/// The media JSON of one asset.
pub fn media_json(a: &SimAsset) -> Value {
    let url = a.str_field("url").unwrap_or_default().to_owned();
    let mut m = json!({
        "id": a.id,
        "name": a.str_field("title").unwrap_or(&a.id),
        "description": a.str_field("description").unwrap_or_default(),
        "dateCreated": iso_secs(a.created_at_ms),
        "dateModified": iso_secs(a.modified_at_ms),
        "type": "image",
        "extension": [a.str_field("format").unwrap_or("jpg")],
        "width": a.fields.get("width").cloned().unwrap_or(Value::Null),
        "height": a.fields.get("height").cloned().unwrap_or(Value::Null),
        "fileSize": a.fields.get("bytes").cloned().unwrap_or(json!(0)),
        "tags": a.fields.get("tags").cloned().unwrap_or(json!([])),
        "isArchived": a.fields.get("archived").and_then(Value::as_bool).unwrap_or(false),
        "isPublic": 1,
        "thumbnails": {
            "mini": format!("{url}?w=80"),
            "thul": format!("{url}?w=250"),
            "webimage": url,
        },
    });
    for (k, v) in &a.fields {
        if !RESERVED.contains(&k.as_str()) {
            m[format!("property_{k}")] = v.clone();
        }
    }
    m
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

/// Rate limit first (Bynder counts per source IP, before auth), then the bearer token.
fn admit(shared: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    if !shared.bynder_limit.lock().expect("limit lock").allow() {
        // Documented behaviour: no rate-limit headers and no Retry-After.
        return Err(Box::new(StatusCode::TOO_MANY_REQUESTS.into_response()));
    }
    if !bearer_ok(headers, &shared.config.bynder_token) {
        return Err(Box::new(error(StatusCode::UNAUTHORIZED, "Unauthorized")));
    }
    Ok(())
}

pub(crate) async fn get_media(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&shared, &headers) {
        return *r;
    }
    let cat = shared.catalogue.lock().expect("catalogue lock");
    match cat.live(&id) {
        Some(a) => Json(media_json(a)).into_response(),
        None => error(StatusCode::NOT_FOUND, "Media not found"),
    }
}

pub(crate) async fn list_media(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    if let Err(r) = admit(&shared, &headers) {
        return *r;
    }
    let pairs = query_pairs(q.as_deref());
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let limit = match get("limit").map(str::parse::<usize>) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => return error(StatusCode::BAD_REQUEST, "limit must be 1..=1000"),
    };
    let page = match get("page").map(str::parse::<usize>) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => return error(StatusCode::BAD_REQUEST, "page must be >= 1"),
    };
    let since = match get("dateModified") {
        Some(s) => match parse_ms(s) {
            Some(ms) => Some(ms.div_euclid(1000)),
            None => return error(StatusCode::BAD_REQUEST, "dateModified must be ISO 8601"),
        },
        None => None,
    };
    let ids: Option<Vec<&str>> =
        get("ids").map(|s| s.split(',').filter(|x| !x.is_empty()).collect());
    let order = get("orderBy").unwrap_or("dateCreated desc");
    let (field, desc) = match order.split_once(' ') {
        Some((f, d)) => (f, d.eq_ignore_ascii_case("desc")),
        None => (order, false),
    };
    let cat = shared.catalogue.lock().expect("catalogue lock");
    let mut found: Vec<&SimAsset> = cat
        .live_assets()
        .into_iter()
        .filter(|a| {
            since.is_none_or(|s| {
                shared
                    .config
                    .bynder_date_filter
                    .keeps(a.modified_at_ms.div_euclid(1000), s)
            })
        })
        .filter(|a| ids.as_ref().is_none_or(|ids| ids.contains(&a.id.as_str())))
        .collect();
    match field {
        "dateModified" => {
            found.sort_by(|a, b| (a.modified_at_ms, &a.id).cmp(&(b.modified_at_ms, &b.id)))
        }
        "dateCreated" => {
            found.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)))
        }
        "name" => found.sort_by(|a, b| {
            (a.str_field("title").unwrap_or(&a.id), &a.id)
                .cmp(&(b.str_field("title").unwrap_or(&b.id), &b.id))
        }),
        _ => return error(StatusCode::BAD_REQUEST, "unsupported orderBy"),
    }
    if desc {
        found.reverse();
    }
    let total = found.len();
    let media: Vec<Value> = found
        .into_iter()
        .skip((page - 1).saturating_mul(limit))
        .take(limit)
        .map(media_json)
        .collect();
    if get("total") == Some("1") {
        Json(json!({ "total": { "count": total }, "media": media })).into_response()
    } else {
        Json(Value::Array(media)).into_response()
    }
}
