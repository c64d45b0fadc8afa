//! `/_sim/...` control routes: catalogue edits, faults, stats, webhooks and the SNS
//! certificate. Never subject to faults or rate limits.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::webhooks::{DeliveryKnobs, WebhookKind};
use crate::{Faults, Shared, query_pairs};

type S = State<Arc<Shared>>;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_sim/assets", get(list).post(create))
        .route(
            "/_sim/assets/{id}",
            get(get_one)
                .put(put_one)
                .patch(patch_one)
                .delete(delete_one),
        )
        .route("/_sim/generate", post(generate))
        .route("/_sim/faults", get(get_faults).put(put_faults))
        .route("/_sim/stats", get(get_stats).delete(reset_stats))
        .route("/_sim/webhooks", get(webhook_report).post(subscribe))
        .route("/_sim/webhooks/notify/{id}", post(notify))
        .route("/_sim/webhooks/flush", post(flush))
        .route("/_sim/sns/cert.pem", get(cert))
        .route("/_sim/sns/subscribe", post(sns_subscribe))
        .route("/_sim/sns/confirm", get(sns_confirm))
        .route("/_sim/sns/unsubscribe", get(sns_unsubscribe))
}

async fn list(State(s): S) -> Json<Value> {
    let cat = s.catalogue.lock().expect("catalogue lock");
    Json(json!(cat.live_assets()))
}

#[derive(Deserialize)]
struct CreateBody {
    id: Option<String>,
    #[serde(default)]
    fields: Map<String, Value>,
}

async fn create(State(s): S, Json(b): Json<CreateBody>) -> Response {
    let id = b.id.unwrap_or_else(|| {
        let mut rng = s.rng.lock().expect("rng lock");
        (0..32)
            .map(|_| char::from_digit(rng.u32(0..16), 16).unwrap_or('0'))
            .collect()
    });
    let a = s.upsert(&id, b.fields);
    (StatusCode::CREATED, Json(a.to_generic_json())).into_response()
}

async fn get_one(State(s): S, Path(id): Path<String>) -> Response {
    let cat = s.catalogue.lock().expect("catalogue lock");
    match cat.get(&id) {
        Some(a) => Json(json!(a)).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn put_one(
    State(s): S,
    Path(id): Path<String>,
    Json(f): Json<Map<String, Value>>,
) -> Json<Value> {
    Json(s.upsert(&id, f).to_generic_json())
}

async fn patch_one(
    State(s): S,
    Path(id): Path<String>,
    Json(f): Json<Map<String, Value>>,
) -> Response {
    match s.patch(&id, f) {
        Some(a) => Json(a.to_generic_json()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn delete_one(State(s): S, Path(id): Path<String>) -> StatusCode {
    if s.delete(&id) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

#[derive(Deserialize)]
struct GenerateBody {
    n: usize,
    #[serde(default)]
    seed: u64,
}

async fn generate(State(s): S, Json(b): Json<GenerateBody>) -> Json<Value> {
    Json(json!({ "ids": s.generate(b.n, b.seed) }))
}

async fn get_faults(State(s): S) -> Json<Faults> {
    Json(s.faults.lock().expect("faults lock").clone())
}

async fn put_faults(State(s): S, Json(f): Json<Faults>) -> Json<Faults> {
    *s.faults.lock().expect("faults lock") = f.clone();
    Json(f)
}

async fn get_stats(State(s): S) -> Json<Value> {
    Json(json!(*s.stats.lock().expect("stats lock")))
}

async fn reset_stats(State(s): S) -> StatusCode {
    *s.stats.lock().expect("stats lock") = Default::default();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct SubscribeBody {
    target_url: String,
    kind: WebhookKind,
    #[serde(default)]
    knobs: DeliveryKnobs,
}

async fn subscribe(State(s): S, Json(b): Json<SubscribeBody>) -> Json<Value> {
    Json(json!({ "subscription": s.subscribe(&b.target_url, b.kind, b.knobs) }))
}

async fn webhook_report(State(s): S) -> Json<Value> {
    let w = s.webhooks.lock().expect("webhooks lock");
    Json(json!({ "stats": w.stats, "log": w.log }))
}

async fn notify(State(s): S, Path(id): Path<String>) -> StatusCode {
    if s.notify(&id) {
        StatusCode::ACCEPTED
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn flush(State(s): S) -> Json<Value> {
    Json(json!({ "flushed": s.flush_webhooks(Duration::from_secs(30)).await }))
}

async fn cert(State(s): S) -> Response {
    (
        [("content-type", "application/x-pem-file")],
        s.sns.cert_pem.clone(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct SnsSubscribeBody {
    target_url: String,
    #[serde(default)]
    signature_version: Option<u8>,
}

async fn sns_subscribe(State(s): S, Json(b): Json<SnsSubscribeBody>) -> Json<Value> {
    let token = s
        .send_sns_confirmation(&b.target_url, b.signature_version.unwrap_or(1))
        .await;
    Json(json!({ "token": token }))
}

async fn sns_confirm(State(s): S, RawQuery(q): RawQuery) -> Response {
    let token = query_pairs(q.as_deref())
        .into_iter()
        .find(|(k, _)| k == "Token")
        .map(|(_, v)| v);
    match token {
        Some(t) => {
            s.sns_confirmed.lock().expect("sns lock").push(t);
            (
                [("content-type", "text/xml")],
                "<ConfirmSubscriptionResponse><ConfirmSubscriptionResult><SubscriptionArn>confirmed</SubscriptionArn></ConfirmSubscriptionResult></ConfirmSubscriptionResponse>",
            )
                .into_response()
        }
        None => StatusCode::BAD_REQUEST.into_response(),
    }
}

async fn sns_unsubscribe() -> StatusCode {
    StatusCode::OK
}
