//! HTTP routes: the Akeneo API under `/api`, the simulator control routes under `/_sim`.

// Early-return helpers yield the ready-made error `Response`; boxing it buys nothing here.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{
    DefaultBodyLimit, FromRequest, MatchedPath, Multipart, Path, Query, Request, State,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::Faults;
use crate::fixture::{FamilyDef, OptionDef, attribute_json};
use crate::state::{
    CallGuard, Decision, Shared, ThrottleKind, TokenCheck, ValueFilter, render_asset,
};
use crate::validate::{self, Ctx, ItemError, is_valid_code, type_name};

type Sim = State<Arc<Shared>>;

const TOKEN_PATH: &str = "/api/oauth/v1/token";
const FAMILIES: &str = "/api/rest/v1/asset-families";
const MEDIA: &str = "/api/rest/v1/asset-media-files";
/// Akeneo's `asset_family_connector_maximum_assets_to_process_per_request`.
const MAX_ASSETS_PER_REQUEST: usize = 100;
const ASSETS_PAGE: usize = 100;
const FAMILIES_PAGE: usize = 200;
const MAX_OPTIONS: usize = 100;
/// The token route refuses bodies above 200 bytes.
const MAX_TOKEN_BODY: usize = 200;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route(TOKEN_PATH, post(token))
        .route(FAMILIES, get(list_families))
        .route(&format!("{FAMILIES}/{{family}}"), get(get_family))
        .route(
            &format!("{FAMILIES}/{{family}}/attributes"),
            get(list_attributes),
        )
        .route(
            &format!("{FAMILIES}/{{family}}/attributes/{{attribute}}"),
            get(get_attribute),
        )
        .route(
            &format!("{FAMILIES}/{{family}}/attributes/{{attribute}}/options"),
            get(list_options),
        )
        .route(
            &format!("{FAMILIES}/{{family}}/attributes/{{attribute}}/options/{{option}}"),
            get(get_option).patch(patch_option),
        )
        .route(
            &format!("{FAMILIES}/{{family}}/assets"),
            get(list_assets).patch(patch_assets),
        )
        .route(
            &format!("{FAMILIES}/{{family}}/assets/{{code}}"),
            get(get_asset).patch(patch_asset).delete(delete_asset),
        )
        .route(MEDIA, post(upload_media))
        .route(&format!("{MEDIA}/{{*code}}"), get(get_media))
        .route_layer(from_fn_with_state(shared.clone(), gate));
    let control = Router::new()
        .route("/_sim/stats", get(sim_stats))
        .route("/_sim/stats/reset", post(sim_stats_reset))
        .route("/_sim/faults", get(sim_faults).put(sim_set_faults))
        .route("/_sim/tokens/expire", post(sim_expire))
        .route("/_sim/tokens/revoke-refresh", post(sim_revoke))
        .route("/_sim/assets/{family}", get(sim_assets));
    api.merge(control)
        .fallback(no_route)
        .layer(axum::middleware::from_fn(method_not_allowed_body))
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(shared)
}

// ---------------------------------------------------------------------------------------
// Responses

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    (
        status,
        Json(json!({"code": status.as_u16(), "message": message})),
    )
        .into_response()
}

fn error_with(status: StatusCode, message: &str, errors: Value) -> Response {
    (
        status,
        Json(json!({"code": status.as_u16(), "message": message, "errors": errors})),
    )
        .into_response()
}

fn empty_with_location(status: StatusCode, location: String) -> Response {
    let mut resp = status.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn throttled(retry_after: Option<u64>, kind: ThrottleKind) -> Response {
    let message = match kind {
        ThrottleKind::Concurrency => "You have exceeded the limit of concurrent API requests.",
        _ => "You have exceeded the limit of API requests per second.",
    };
    let mut resp = error(StatusCode::TOO_MANY_REQUESTS, message);
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

fn server_error(code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if code == 500 {
        return error(status, "Internal Server Error");
    }
    // Gateways answer 502/503 with HTML, not with the API's JSON.
    let reason = status.canonical_reason().unwrap_or("Error");
    (
        status,
        [(header::CONTENT_TYPE, "text/html")],
        format!("<html><body><h1>{code} {reason}</h1></body></html>"),
    )
        .into_response()
}

/// `http://<Host header>`, so that links work whatever name the client used.
fn base(headers: &HeaderMap, sim: &Shared) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("http://{h}"))
        .unwrap_or_else(|| sim.base_url.clone())
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Media type of a Content-Type header, lower-cased, without parameters.
fn mime(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
}

/// Writes need `Content-Type: application/json`, else 415.
fn require_json(headers: &HeaderMap) -> Result<(), Response> {
    match mime(headers).as_deref() {
        Some("application/json") => Ok(()),
        None => Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "The 'Content-type' header is missing. 'application/json' has to specified as value.",
        )),
        Some(other) => Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "The '{other}' content type is not supported. Only 'application/json' is allowed."
            ),
        )),
    }
}

/// Family lookup: malformed code -> 422, unknown (case-sensitive) -> 404.
fn family<'a>(sim: &'a Shared, code: &str) -> Result<&'a FamilyDef, Response> {
    if !is_valid_code(code) || code.len() > 255 {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "Asset family identifier may contain only letters, numbers and underscores. \"{code}\" given"
            ),
        ));
    }
    sim.fixture.family(code).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            format!("Asset family \"{code}\" does not exist."),
        )
    })
}

fn resource_not_found(code: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("Resource `{code}` does not exist."),
    )
}

async fn no_route(req: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "No route found for \"{} {}\"",
            req.method(),
            req.uri().path()
        ),
    )
}

/// Gives the router's bare 405 the API's JSON error body.
async fn method_not_allowed_body(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let resp = next.run(req).await;
    if resp.status() != StatusCode::METHOD_NOT_ALLOWED {
        return resp;
    }
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("No route found for \"{method} {path}\": Method Not Allowed"),
    )
}

// ---------------------------------------------------------------------------------------
// Gate: accounting, latency, random faults, limits, bearer check.

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

/// Sleeps `d` unless the simulator shuts down first. False on shutdown.
async fn sleep_unless_shutdown(d: Duration, sim: &Shared) -> bool {
    if d.is_zero() {
        return true;
    }
    let mut rx = sim.shutdown_rx();
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = rx.wait_for(|stop| *stop) => false,
    }
}

/// Set by a handler that answers 429 itself, so the gate opens the client's Retry-After window
/// when the answer leaves, after the configured latency.
#[derive(Clone, Copy)]
struct AnnounceRetryAfter(u64);

async fn gate(State(sim): Sim, matched: MatchedPath, req: Request, next: Next) -> Response {
    let route = format!("{} {}", req.method(), matched.as_str());
    let mut call = CallGuard::new(sim.clone(), route);
    let shutting_down = || {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The simulator is shutting down.",
        )
    };

    // The configured latency is the time a call takes from arrival to answer, processing
    // included, so the simulator's own CPU time does not stretch a "fixed 50 ms" call.
    let started = tokio::time::Instant::now();
    if matched.as_str() == TOKEN_PATH {
        // The token route only gets latency: random faults and limits are for the REST API.
        let latency = sim.token_route_latency();
        let mut resp = next.run(req).await;
        if !sleep_unless_shutdown(latency.saturating_sub(started.elapsed()), &sim).await {
            resp = shutting_down();
        }
        call.finish(resp.status().as_u16());
        return resp;
    }

    let bearer = bearer_token(req.headers());
    let arrival = sim.arrive(bearer.as_deref());
    let mut announce = None;
    let resp = {
        let resp = match arrival.decision {
            Decision::Hang => {
                // Never answer: the client has to time out (dropping the connection drops
                // this future and its in-flight slot).
                let mut rx = sim.shutdown_rx();
                let _ = rx.wait_for(|stop| *stop).await;
                shutting_down()
            }
            Decision::ServerError(code) => server_error(code),
            Decision::Throttle(retry_after, kind) => {
                announce = retry_after;
                throttled(retry_after, kind)
            }
            Decision::Proceed => match bearer.as_deref().map(|t| sim.check_token(t)) {
                None => error(StatusCode::UNAUTHORIZED, "Authentication is required"),
                Some(TokenCheck::Expired) => error(
                    StatusCode::UNAUTHORIZED,
                    "The access token provided has expired.",
                ),
                Some(TokenCheck::Invalid) => error(
                    StatusCode::UNAUTHORIZED,
                    "The access token provided is invalid.",
                ),
                Some(TokenCheck::Valid) => next.run(req).await,
            },
        };
        let remaining = arrival.latency.saturating_sub(started.elapsed());
        if sleep_unless_shutdown(remaining, &sim).await {
            // The Retry-After window starts when the client can see the 429.
            let from_handler = resp.extensions().get::<AnnounceRetryAfter>().map(|a| a.0);
            if let Some(secs) = announce.or(from_handler) {
                sim.announce_retry_after(arrival.client_id.as_deref(), secs);
            }
            resp
        } else {
            shutting_down()
        }
    };
    call.finish(resp.status().as_u16());
    drop(arrival.in_flight);
    resp
}

// ---------------------------------------------------------------------------------------
// Token route

const MSG_PASSWORD_INVALID_REQUEST: &str =
    "Parameter \"grant_type\", \"username\" or \"password\" is missing, empty or invalid";
const MSG_INVALID_CLIENT: &str =
    "Parameter \"client_id\" is missing or does not match any client, or secret is invalid";
const MSG_UNAUTHORIZED_CLIENT: &str = "This grant type is not authorized for this client";
const MSG_INVALID_USER: &str = "No user found for the given username and password";
const MSG_REFRESH_INVALID_REQUEST: &str =
    "Parameter \"grant_type\" or \"refresh_token\" is missing or empty";
const MSG_REFRESH_INVALID_GRANT: &str = "Refresh token is invalid or has expired";

fn token_params(headers: &HeaderMap, body: &[u8]) -> HashMap<String, String> {
    match mime(headers).as_deref() {
        Some("application/json") => serde_json::from_slice::<Map<String, Value>>(body)
            .map(|m| {
                m.into_iter()
                    .filter_map(|(k, v)| match v {
                        Value::String(s) => Some((k, s)),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        Some("application/x-www-form-urlencoded") => String::from_utf8_lossy(body)
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (percent_decode(k), percent_decode(v)))
            .collect(),
        _ => HashMap::new(),
    }
}

/// Client credentials from `Authorization: Basic`, else from `client_id`/`client_secret`.
fn client_credentials(
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Option<(String, String)> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, b64)| base64_decode(b64))
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        });
    basic.or_else(|| {
        Some((
            params.get("client_id")?.clone(),
            params.get("client_secret")?.clone(),
        ))
    })
}

async fn token(State(sim): Sim, headers: HeaderMap, body: Bytes) -> Response {
    let unprocessable = |m: &str| error(StatusCode::UNPROCESSABLE_ENTITY, m);
    if body.len() > MAX_TOKEN_BODY {
        return unprocessable("The request content size is too large");
    }
    let params = token_params(&headers, &body);
    let param = |k: &str| params.get(k).map(String::as_str).filter(|s| !s.is_empty());
    let Some(grant) = param("grant_type") else {
        return unprocessable(MSG_PASSWORD_INVALID_REQUEST);
    };
    let client = client_credentials(&headers, &params).and_then(|(id, secret)| {
        sim.fixture
            .clients
            .iter()
            .find(|c| c.client_id == id && c.secret == secret)
    });
    let Some(client) = client else {
        return unprocessable(MSG_INVALID_CLIENT);
    };
    if !client.allows_grant(grant) {
        return unprocessable(MSG_UNAUTHORIZED_CLIENT);
    }
    let via_refresh = match grant {
        "password" => {
            let (Some(user), Some(pass)) = (param("username"), param("password")) else {
                return unprocessable(MSG_PASSWORD_INVALID_REQUEST);
            };
            // API users are independent of connections: any fixture user may log in.
            if !sim
                .fixture
                .clients
                .iter()
                .any(|c| c.username == user && c.password == pass)
            {
                return unprocessable(MSG_INVALID_USER);
            }
            false
        }
        "refresh_token" => {
            let Some(refresh) = param("refresh_token") else {
                return unprocessable(MSG_REFRESH_INVALID_REQUEST);
            };
            if !sim.consume_refresh(refresh, &client.client_id) {
                return unprocessable(MSG_REFRESH_INVALID_GRANT);
            }
            true
        }
        _ => return unprocessable(MSG_UNAUTHORIZED_CLIENT),
    };
    let (access, refresh) = sim.issue_tokens(&client.client_id, via_refresh);
    Json(json!({
        "access_token": access,
        "expires_in": sim.token_ttl.as_secs(),
        "token_type": "bearer",
        "scope": null,
        "refresh_token": refresh,
    }))
    .into_response()
}

// ---------------------------------------------------------------------------------------
// Pagination helpers

/// `_links` of a search_after page; `kept` are the query parameters carried by every link.
fn page_links(
    base: &str,
    path: &str,
    kept: &[(&str, String)],
    current: Option<&str>,
    next: Option<&str>,
) -> Value {
    let href = |after: Option<&str>| {
        let mut q: Vec<String> = kept
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect();
        if let Some(a) = after {
            q.push(format!("search_after={}", percent_encode(a)));
        }
        if q.is_empty() {
            format!("{base}{path}")
        } else {
            format!("{base}{path}?{}", q.join("&"))
        }
    };
    let mut links = json!({"self": {"href": href(current)}, "first": {"href": href(None)}});
    if let Some(n) = next {
        links["next"] = json!({"href": href(Some(n))});
    }
    links
}

// ---------------------------------------------------------------------------------------
// Families, attributes, options

fn family_json(base: &str, f: &FamilyDef) -> Value {
    json!({
        "_links": {"self": {"href": format!("{base}{FAMILIES}/{}", f.code)}},
        "code": f.code,
        "labels": f.labels,
        "attribute_as_main_media": f.attribute_as_main_media,
        "naming_convention": {},
        "product_link_rules": [],
        "transformations": [],
    })
}

async fn list_families(
    State(sim): Sim,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let base = base(&headers, &sim);
    let mut fams: Vec<&FamilyDef> = sim.fixture.families.iter().collect();
    fams.sort_by(|a, b| a.code.cmp(&b.code));
    let after = q.get("search_after").map(String::as_str);
    let rest: Vec<&FamilyDef> = fams
        .into_iter()
        .filter(|f| after.is_none_or(|a| f.code.as_str() > a))
        .collect();
    let page = &rest[..rest.len().min(FAMILIES_PAGE)];
    let next = (rest.len() > FAMILIES_PAGE)
        .then(|| page.last().map(|f| f.code.as_str()))
        .flatten();
    let items: Vec<Value> = page.iter().map(|f| family_json(&base, f)).collect();
    Json(json!({
        "_links": page_links(&base, FAMILIES, &[], after, next),
        "_embedded": {"items": items},
    }))
    .into_response()
}

async fn get_family(State(sim): Sim, headers: HeaderMap, Path(code): Path<String>) -> Response {
    match family(&sim, &code) {
        Ok(f) => {
            let mut v = family_json(&base(&headers, &sim), f);
            if let Some(m) = v.as_object_mut() {
                m.remove("_links");
            }
            Json(v).into_response()
        }
        Err(r) => r,
    }
}

async fn list_attributes(State(sim): Sim, Path(fam): Path<String>) -> Response {
    match family(&sim, &fam) {
        Ok(f) => Json(f.attributes.iter().map(attribute_json).collect::<Vec<_>>()).into_response(),
        Err(r) => r,
    }
}

async fn get_attribute(State(sim): Sim, Path((fam, attr)): Path<(String, String)>) -> Response {
    let f = match family(&sim, &fam) {
        Ok(f) => f,
        Err(r) => return r,
    };
    match f.attribute(&attr) {
        Some(a) => Json(attribute_json(a)).into_response(),
        None => resource_not_found(&attr),
    }
}

/// The attribute must exist (404) and hold options (422).
fn option_attribute(sim: &Shared, fam: &str, attr: &str) -> Result<(), Response> {
    let f = family(sim, fam)?;
    let a = f.attribute(attr).ok_or_else(|| resource_not_found(attr))?;
    if !a.kind.has_options() {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "The attribute \"{attr}\" does not support options. Only attributes of type \"single_option\" and \"multiple_options\" do."
            ),
        ));
    }
    Ok(())
}

fn option_json(o: &OptionDef) -> Value {
    json!({"code": o.code, "labels": o.labels})
}

async fn list_options(State(sim): Sim, Path((fam, attr)): Path<(String, String)>) -> Response {
    if let Err(r) = option_attribute(&sim, &fam, &attr) {
        return r;
    }
    let inner = sim.lock();
    let opts = inner.options.get(&(fam, attr)).cloned().unwrap_or_default();
    Json(opts.iter().map(option_json).collect::<Vec<_>>()).into_response()
}

async fn get_option(
    State(sim): Sim,
    Path((fam, attr, opt)): Path<(String, String, String)>,
) -> Response {
    if let Err(r) = option_attribute(&sim, &fam, &attr) {
        return r;
    }
    let inner = sim.lock();
    match inner
        .options
        .get(&(fam, attr))
        .and_then(|l| l.iter().find(|o| o.code == opt))
    {
        Some(o) => Json(option_json(o)).into_response(),
        None => resource_not_found(&opt),
    }
}

async fn patch_option(
    State(sim): Sim,
    headers: HeaderMap,
    Path((fam, attr, opt)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    // Option PATCH has its own 3 req/s limit per PIM instance.
    if !sim.take_option_patch() {
        // The gate announces the window once the latency has passed (see `AnnounceRetryAfter`).
        let mut resp = throttled(Some(1), ThrottleKind::RateLimit);
        resp.extensions_mut().insert(AnnounceRetryAfter(1));
        return resp;
    }
    if let Err(r) = require_json(&headers) {
        return r;
    }
    if let Err(r) = option_attribute(&sim, &fam, &attr) {
        return r;
    }
    let unprocessable = |m: String| error(StatusCode::UNPROCESSABLE_ENTITY, m);
    let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Invalid json message received");
    };
    let Value::Object(obj) = parsed else {
        return unprocessable(format!(
            "{} value found, but an object is required",
            type_name(&parsed)
        ));
    };
    for key in obj.keys() {
        if key != "code" && key != "labels" {
            return unprocessable(format!(
                "Property \"{key}\" does not exist. Check the standard format documentation."
            ));
        }
    }
    if let Some(c) = obj.get("code")
        && c.as_str() != Some(opt.as_str())
    {
        return unprocessable(format!(
            "The code \"{}\" provided in the request body must match the code \"{opt}\" provided in the url.",
            c.as_str().unwrap_or_default()
        ));
    }
    if !is_valid_code(&opt) {
        return unprocessable(format!(
            "The option code \"{opt}\" may contain only letters, numbers and underscores."
        ));
    }
    let labels = match obj.get("labels") {
        None => Map::new(),
        Some(Value::Object(m)) if m.values().all(|v| v.is_string() || v.is_null()) => m.clone(),
        Some(_) => {
            return unprocessable(
                "Property \"labels\" expects an object of strings keyed by locale.".to_string(),
            );
        }
    };
    let location = format!(
        "{}{FAMILIES}/{fam}/attributes/{attr}/options/{opt}",
        base(&headers, &sim)
    );
    let mut inner = sim.lock();
    let list = inner.options.entry((fam, attr.clone())).or_default();
    let existing = list.iter_mut().find(|o| o.code == opt);
    let created = existing.is_none();
    let target = match existing {
        Some(o) => o,
        None => {
            if list.len() >= MAX_OPTIONS {
                return unprocessable(format!(
                    "You cannot create more than {MAX_OPTIONS} options for the attribute \"{attr}\"."
                ));
            }
            list.push(OptionDef {
                code: opt.clone(),
                labels: Default::default(),
            });
            list.last_mut().expect("just pushed")
        }
    };
    // Labels merge per locale; null removes a label.
    for (locale, label) in labels {
        match label {
            Value::String(s) => {
                target.labels.insert(locale, s);
            }
            _ => {
                target.labels.remove(&locale);
            }
        }
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    };
    empty_with_location(status, location)
}

// ---------------------------------------------------------------------------------------
// Assets

enum Filter {
    UpdatedGt(i64),
    UpdatedLt(i64),
    UpdatedBetween(i64, i64),
    UpdatedNotBetween(i64, i64),
    UpdatedSince(i64),
    CodeIn(Vec<String>),
    CodeNotIn(Vec<String>),
}

impl Filter {
    fn matches(&self, code: &str, updated: i64) -> bool {
        match self {
            Filter::UpdatedGt(t) => updated > *t,
            Filter::UpdatedLt(t) => updated < *t,
            Filter::UpdatedBetween(a, b) => updated >= *a && updated <= *b,
            Filter::UpdatedNotBetween(a, b) => updated < *a || updated > *b,
            Filter::UpdatedSince(t) => updated >= *t,
            Filter::CodeIn(list) => list.iter().any(|c| c == code),
            Filter::CodeNotIn(list) => !list.iter().any(|c| c == code),
        }
    }
}

/// Parses `search`: invalid JSON -> 400, unsupported shape -> 422 with errors.
fn parse_search(raw: &str) -> Result<Vec<Filter>, Response> {
    let Ok(parsed) = serde_json::from_str::<Value>(raw) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "The search query parameter must be a valid JSON.",
        ));
    };
    let mut errors = Vec::new();
    let mut filters = Vec::new();
    let mut bad = |m: String| errors.push(json!({"property": "search", "message": m}));
    let date = |v: &Value| v.as_str().and_then(crate::time::parse_iso8601);
    match &parsed {
        Value::Object(fields) => {
            for (field, conds) in fields {
                let Some(conds) = conds.as_array() else {
                    bad(format!("The filters on \"{field}\" must be a list."));
                    continue;
                };
                for cond in conds {
                    let op = cond["operator"].as_str().unwrap_or_default();
                    let value = &cond["value"];
                    let f = match (field.as_str(), op) {
                        ("updated", ">") => date(value).map(Filter::UpdatedGt),
                        ("updated", "<") => date(value).map(Filter::UpdatedLt),
                        ("updated", "BETWEEN" | "NOT BETWEEN") => {
                            match value
                                .as_array()
                                .map(|a| a.iter().map(date).collect::<Vec<_>>())
                            {
                                Some(v) if v.len() == 2 && v.iter().all(Option::is_some) => {
                                    let (a, b) =
                                        (v[0].unwrap_or_default(), v[1].unwrap_or_default());
                                    Some(if op == "BETWEEN" {
                                        Filter::UpdatedBetween(a, b)
                                    } else {
                                        Filter::UpdatedNotBetween(a, b)
                                    })
                                }
                                _ => None,
                            }
                        }
                        ("updated", "SINCE LAST N DAYS") => value
                            .as_i64()
                            .filter(|n| *n >= 0)
                            .map(|n| Filter::UpdatedSince(crate::time::now_secs() - n * 86_400)),
                        ("code", "IN" | "NOT IN") => value
                            .as_array()
                            .filter(|a| a.iter().all(Value::is_string))
                            .map(|a| {
                                let list = a
                                    .iter()
                                    .filter_map(Value::as_str)
                                    .map(String::from)
                                    .collect();
                                if op == "IN" {
                                    Filter::CodeIn(list)
                                } else {
                                    Filter::CodeNotIn(list)
                                }
                            }),
                        ("updated" | "code", _) => {
                            bad(format!(
                                "The operator \"{op}\" is not supported for the filter \"{field}\"."
                            ));
                            continue;
                        }
                        _ => {
                            bad(format!("The filter \"{field}\" is not supported."));
                            continue;
                        }
                    };
                    match f {
                        Some(f) => filters.push(f),
                        None => bad(format!(
                            "The value of the filter \"{field}\" with operator \"{op}\" is invalid: {value}."
                        )),
                    }
                }
            }
        }
        other => bad(format!(
            "{} value found, but an object is required",
            type_name(other)
        )),
    }
    if errors.is_empty() {
        Ok(filters)
    } else {
        Err(error_with(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The search filters have an invalid format.",
            Value::Array(errors),
        ))
    }
}

async fn list_assets(
    State(sim): Sim,
    headers: HeaderMap,
    Path(fam): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = family(&sim, &fam) {
        return r;
    }
    let filters = match q.get("search") {
        Some(raw) => match parse_search(raw) {
            Ok(f) => f,
            Err(r) => return r,
        },
        None => Vec::new(),
    };
    let mut value_filter = ValueFilter::default();
    if let Some(ch) = q.get("channel") {
        if !sim.fixture.channels.contains(ch) {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Channel \"{ch}\" does not exist."),
            );
        }
        value_filter.channel = Some(ch.clone());
    }
    if let Some(ls) = q.get("locales") {
        let list: Vec<String> = ls.split(',').map(|l| l.trim().to_string()).collect();
        let unknown: Vec<&str> = list
            .iter()
            .filter(|l| !sim.fixture.locales.contains(l))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "Locales \"{}\" do not exist or are not activated.",
                    unknown.join(", ")
                ),
            );
        }
        value_filter.locales = Some(list);
    }
    let base = base(&headers, &sim);
    let after = q.get("search_after").cloned();
    let inner = sim.lock();
    let empty = Default::default();
    let assets = inner.assets.get(&fam).unwrap_or(&empty);
    let range = match &after {
        Some(a) => {
            assets.range::<String, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
        }
        None => assets.range::<String, _>(..),
    };
    let mut matching = range.filter(|(code, a)| filters.iter().all(|f| f.matches(code, a.updated)));
    let page: Vec<_> = matching.by_ref().take(ASSETS_PAGE).collect();
    // `next` only when more items follow (never a link to an empty page).
    let more = matching.next().is_some();
    let next = if more {
        page.last().map(|(c, _)| c.as_str())
    } else {
        None
    };
    let items: Vec<Value> = page
        .iter()
        .map(|(code, a)| render_asset(&base, &fam, code, a, &value_filter))
        .collect();
    let mut kept = Vec::new();
    for key in ["search", "channel", "locales"] {
        if let Some(v) = q.get(key) {
            kept.push((key, v.clone()));
        }
    }
    let path = format!("{FAMILIES}/{fam}/assets");
    Json(json!({
        "_links": page_links(&base, &path, &kept, after.as_deref(), next),
        "_embedded": {"items": items},
    }))
    .into_response()
}

/// Validates one asset against the current state (options, uploaded media files).
fn validate_in(
    sim: &Shared,
    inner: &crate::state::Inner,
    fam: &FamilyDef,
    obj: &Map<String, Value>,
    url_code: Option<&str>,
) -> Result<validate::ValidAsset, ItemError> {
    let media = |code: &str| inner.media.get(code).map(|m| m.filename.clone());
    let ctx = Ctx {
        fixture: &sim.fixture,
        family: fam,
        options: &inner.options,
        media_files: &media,
        regexes: &sim.regexes,
    };
    validate::validate_asset(obj, url_code, &ctx)
}

async fn patch_assets(
    State(sim): Sim,
    headers: HeaderMap,
    Path(fam_code): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = require_json(&headers) {
        return r;
    }
    // Whole-request checks, in Akeneo's order: family code, family, JSON, shape, size.
    let fam = match family(&sim, &fam_code) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Invalid json message received");
    };
    let list_error = |errors: Vec<Value>| {
        error_with(
            StatusCode::BAD_REQUEST,
            "The list of assets has an invalid format.",
            Value::Array(errors),
        )
    };
    let Value::Array(items) = parsed else {
        return list_error(vec![json!({
            "property": "",
            "message": format!("{} value found, but an array is required", type_name(&parsed)),
        })]);
    };
    let shape_errors: Vec<Value> = items
        .iter()
        .enumerate()
        .filter(|(_, it)| !it.is_object())
        .map(|(i, it)| {
            json!({
                "property": format!("[{i}]"),
                "message": format!("{} value found, but an object is required", type_name(it)),
            })
        })
        .collect();
    if !shape_errors.is_empty() {
        return list_error(shape_errors);
    }
    if items.len() > MAX_ASSETS_PER_REQUEST {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Too many resources to process, {MAX_ASSETS_PER_REQUEST} is the maximum allowed."
            ),
        );
    }
    // Items are processed one by one, independently: no transaction.
    let mut results = Vec::with_capacity(items.len());
    let mut inner = sim.lock();
    for item in &items {
        let obj = item.as_object().expect("checked above");
        let echo = obj.get("code").cloned().unwrap_or_else(|| json!(""));
        let outcome = validate_in(&sim, &inner, fam, obj, None);
        results.push(match outcome {
            Ok(valid) => {
                let created = Shared::apply_asset(&mut inner, &fam.code, valid);
                json!({"code": echo, "status_code": if created { 201 } else { 204 }})
            }
            Err(e) => json!({
                "code": echo,
                "status_code": 422,
                "message": e.message,
                "errors": e.errors_json(),
            }),
        });
    }
    drop(inner);
    Json(Value::Array(results)).into_response()
}

async fn patch_asset(
    State(sim): Sim,
    headers: HeaderMap,
    Path((fam_code, code)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Err(r) = require_json(&headers) {
        return r;
    }
    let fam = match family(&sim, &fam_code) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Invalid json message received");
    };
    let Value::Object(obj) = parsed else {
        return error_with(
            StatusCode::UNPROCESSABLE_ENTITY,
            validate::INVALID_FORMAT,
            json!([{"property": "", "message": format!("{} value found, but an object is required", type_name(&parsed))}]),
        );
    };
    if let Some(Value::String(body_code)) = obj.get("code")
        && *body_code != code
    {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "The code \"{body_code}\" provided in the request body must match the code \"{code}\" provided in the url."
            ),
        );
    }
    let location = format!(
        "{}{FAMILIES}/{fam_code}/assets/{code}",
        base(&headers, &sim)
    );
    let mut inner = sim.lock();
    match validate_in(&sim, &inner, fam, &obj, Some(&code)) {
        Ok(valid) => {
            let created = Shared::apply_asset(&mut inner, &fam.code, valid);
            drop(inner);
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::NO_CONTENT
            };
            empty_with_location(status, location)
        }
        Err(e) => {
            drop(inner);
            error_with(StatusCode::UNPROCESSABLE_ENTITY, e.message, e.errors_json())
        }
    }
}

fn asset_not_found(code: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("Asset \"{code}\" does not exist."),
    )
}

async fn get_asset(
    State(sim): Sim,
    headers: HeaderMap,
    Path((fam, code)): Path<(String, String)>,
) -> Response {
    if let Err(r) = family(&sim, &fam) {
        return r;
    }
    match sim.asset_json(&fam, &code, &base(&headers, &sim)) {
        Some(v) => Json(v).into_response(),
        None => asset_not_found(&code),
    }
}

async fn delete_asset(State(sim): Sim, Path((fam, code)): Path<(String, String)>) -> Response {
    if let Err(r) = family(&sim, &fam) {
        return r;
    }
    let removed = sim
        .lock()
        .assets
        .get_mut(&fam)
        .and_then(|f| f.remove(&code))
        .is_some();
    if removed {
        StatusCode::NO_CONTENT.into_response()
    } else {
        asset_not_found(&code)
    }
}

// ---------------------------------------------------------------------------------------
// Media files

/// A 40-hex-digit content key (not a real SHA-1, but shaped like Akeneo's).
fn media_key(bytes: &[u8], counter: u64) -> String {
    let mut out = String::with_capacity(40);
    for round in 0u64..3 {
        let mut h: u64 =
            0xcbf2_9ce4_8422_2325 ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ counter;
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out.truncate(40);
    out
}

async fn upload_media(State(sim): Sim, headers: HeaderMap, req: Request) -> Response {
    if mime(&headers).as_deref() != Some("multipart/form-data") {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "The '{}' content type is not supported. Only 'multipart/form-data' is allowed.",
                mime(&headers).unwrap_or_default()
            ),
        );
    }
    let mut multipart = match Multipart::from_request(req, &()).await {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let mut file = None;
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) if field.name() == Some("file") => {
                let filename = field.file_name().unwrap_or("file").to_string();
                let content_type = field.content_type().map(str::to_string);
                match field.bytes().await {
                    Ok(bytes) => file = Some((filename, content_type, bytes)),
                    Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
        }
    }
    let Some((filename, content_type, bytes)) = file else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Property \"file\" is required.",
        );
    };
    // Keys look like `0/0/9/d/<40 hex>_<original name>`, restricted to `[a-zA-Z0-9_./]`.
    let safe: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut inner = sim.lock();
    inner.media_counter += 1;
    let hash = media_key(&bytes, inner.media_counter);
    let h = hash.as_bytes();
    let key = format!(
        "{}/{}/{}/{}/{hash}_{safe}",
        h[0] as char, h[1] as char, h[2] as char, h[3] as char
    );
    inner.media.insert(
        key.clone(),
        crate::state::MediaFile {
            filename,
            content_type,
            bytes: bytes.to_vec(),
        },
    );
    drop(inner);
    let mut resp = empty_with_location(
        StatusCode::CREATED,
        format!("{}{MEDIA}/{key}", base(&headers, &sim)),
    );
    if let Ok(v) = HeaderValue::from_str(&key) {
        resp.headers_mut().insert("Asset-media-file-code", v);
    }
    resp
}

async fn get_media(State(sim): Sim, Path(code): Path<String>) -> Response {
    let inner = sim.lock();
    let Some(file) = inner.media.get(&code) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("Media file \"{code}\" does not exist."),
        );
    };
    let content_type = file
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".to_string());
    let disposition = format!(
        "attachment; filename=\"{}\"",
        file.filename.replace('"', "")
    );
    let mut resp = file.bytes.clone().into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

// ---------------------------------------------------------------------------------------
// Control routes

async fn sim_stats(State(sim): Sim) -> Response {
    Json(sim.stats()).into_response()
}

async fn sim_stats_reset(State(sim): Sim) -> StatusCode {
    sim.reset_stats();
    StatusCode::NO_CONTENT
}

async fn sim_faults(State(sim): Sim) -> Response {
    Json(sim.faults()).into_response()
}

async fn sim_set_faults(State(sim): Sim, Json(f): Json<Faults>) -> StatusCode {
    sim.set_faults(f);
    StatusCode::NO_CONTENT
}

async fn sim_expire(State(sim): Sim) -> StatusCode {
    sim.expire_all_tokens();
    StatusCode::NO_CONTENT
}

async fn sim_revoke(State(sim): Sim) -> StatusCode {
    sim.revoke_refresh_tokens();
    StatusCode::NO_CONTENT
}

async fn sim_assets(State(sim): Sim, headers: HeaderMap, Path(fam): Path<String>) -> Response {
    if sim.fixture.family(&fam).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("Asset family \"{fam}\" does not exist."),
        );
    }
    Json(sim.assets_json(&fam, &base(&headers, &sim))).into_response()
}
