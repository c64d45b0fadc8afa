//! The generic DAM REST contract (docs/generic-dam.md): bearer auth, fetch by ids, a
//! single-asset read, and a change feed ordered by (modified_at, id) with an opaque keyset
//! cursor.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::timefmt::parse_ms;
use crate::{Shared, query_pairs};

/// Most ids one fetch may ask for.
pub const MAX_IDS: usize = 100;
/// Page size when `limit` is absent, and the largest allowed.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

pub(crate) fn bearer_ok(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == token)
}

pub(crate) async fn get_assets(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    if !bearer_ok(&headers, &shared.config.generic_token) {
        return error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
    }
    let ids: Vec<String> = query_pairs(q.as_deref())
        .into_iter()
        .filter(|(k, _)| k == "ids")
        .flat_map(|(_, v)| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    if let Some(limited) = rate_limited(&shared) {
        return limited;
    }
    if ids.len() > MAX_IDS {
        return error(StatusCode::BAD_REQUEST, "at most 100 ids per request");
    }
    let cat = shared.catalogue.lock().expect("catalogue lock");
    // Missing ids are absent; deleted ones too, or tombstones with `generic_fetch_tombstones`.
    let assets: Vec<Value> = ids
        .iter()
        .filter_map(|id| {
            if shared.config.generic_fetch_tombstones {
                cat.get(id)
            } else {
                cat.live(id)
            }
        })
        .map(|a| a.to_generic_json())
        .collect();
    Json(json!({ "assets": assets })).into_response()
}

/// `GET /generic/assets/{id}`: one asset, 404 when unknown or deleted (a tombstone with
/// `generic_fetch_tombstones`).
pub(crate) async fn get_asset(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !bearer_ok(&headers, &shared.config.generic_token) {
        return error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
    }
    if let Some(limited) = rate_limited(&shared) {
        return limited;
    }
    let cat = shared.catalogue.lock().expect("catalogue lock");
    let asset = if shared.config.generic_fetch_tombstones {
        cat.get(&id)
    } else {
        cat.live(&id)
    };
    match asset {
        Some(a) => Json(a.to_generic_json()).into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found"),
    }
}

/// The optional request budget (`generic_rate_limit` per `generic_rate_window`): 429 with a
/// `Retry-After` once spent.
fn rate_limited(shared: &Shared) -> Option<Response> {
    shared.config.generic_rate_limit?;
    let allowed = shared
        .generic_budget
        .lock()
        .expect("budget lock")
        .take()
        .allowed;
    if allowed {
        return None;
    }
    let retry = shared.config.generic_retry_after_secs.to_string();
    Some(
        (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", retry)],
            Json(json!({ "error": "rate limited" })),
        )
            .into_response(),
    )
}

fn encode_cursor(ms: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{ms}:{id}"))
}

fn decode_cursor(c: &str) -> Option<(i64, String)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
    let (ms, id) = raw.split_once(':')?;
    Some((ms.parse().ok()?, id.to_owned()))
}

pub(crate) async fn get_changes(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    if !bearer_ok(&headers, &shared.config.generic_token) {
        return error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
    }
    if let Some(limited) = rate_limited(&shared) {
        return limited;
    }
    let pairs = query_pairs(q.as_deref());
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let since = match get("since") {
        Some(s) => match parse_ms(s) {
            Some(ms) => Some(ms),
            None => return error(StatusCode::BAD_REQUEST, "since must be RFC 3339"),
        },
        None => None,
    };
    let limit = match get("limit").map(str::parse::<usize>) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => return error(StatusCode::BAD_REQUEST, "limit must be 1..=1000"),
    };
    let after = match get("cursor") {
        Some(c) => match decode_cursor(c) {
            Some(k) => Some(k),
            None => return error(StatusCode::BAD_REQUEST, "invalid cursor"),
        },
        None => None,
    };
    let cat = shared.catalogue.lock().expect("catalogue lock");
    let mut matching = cat.all_by_modified().into_iter().filter(|a| {
        since.is_none_or(|s| a.modified_at_ms >= s)
            && after
                .as_ref()
                .is_none_or(|(ms, id)| (a.modified_at_ms, a.id.as_str()) > (*ms, id.as_str()))
    });
    let page: Vec<_> = matching.by_ref().take(limit).collect();
    let more = matching.next().is_some();
    let next_cursor = match (more, page.last()) {
        (true, Some(last)) => Value::String(encode_cursor(last.modified_at_ms, &last.id)),
        _ => Value::Null,
    };
    let assets: Vec<Value> = page.iter().map(|a| a.to_generic_json()).collect();
    Json(json!({ "assets": assets, "next_cursor": next_cursor })).into_response()
}
