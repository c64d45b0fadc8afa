//! `dam-sync serve` as a private test bed for Cloudinary and for Bynder, configured only with
//! the keys `docs/settings.md` documents: the PIM is akeneo-sim, the DAM API and its webhooks
//! are dam-sim's (Cloudinary's signed notifications; Bynder's SNS, subscription confirmed
//! first, certificates from dam-sim's loopback URL through `[dam] sns_cert_hosts`). Assets are
//! created, edited, edited twice within one DAM second, renamed (Cloudinary), deleted with
//! their webhook delivered and deleted with their webhook lost; the PIM must end holding
//! exactly the mapped live assets.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use akeneo_sim::{AkeneoSim, SimConfig, SimHandle};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{Serve, pim_password, write_config_for};
use dam_sim::{DamSim, DamSimConfig, DamSimHandle, DeliveryKnobs, SimAsset, WebhookKind};
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::akeneo::config::parse_base_url;
use shared::akeneo::{AkeneoClient, AkeneoConfig, FamilyStructure, Limits};
use shared::consumer::PimWriter;
use shared::mapping::{MapOutcome, Mapping};

/// Short schedules: a poll every second, a deletion sweep every two.
const SCHEDULES: &str = r#"
[poller]
interval_secs = 1
sweep_interval_secs = 2

[consumer]
visibility_timeout_secs = 10
retry_delay_ms = 200
batch_window_ms = 20
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dam {
    Cloudinary,
    Bynder,
}

impl Dam {
    fn name(self) -> &'static str {
        match self {
            Dam::Cloudinary => "cloudinary",
            Dam::Bynder => "bynder",
        }
    }

    fn webhook_kind(self) -> WebhookKind {
        match self {
            Dam::Cloudinary => WebhookKind::Cloudinary,
            Dam::Bynder => WebhookKind::Bynder,
        }
    }

    /// Asset `n`'s DAM id. Bynder's are UUIDs, whose `-` the code normalisation rewrites, so
    /// the sweep must resolve PIM codes back to DAM ids.
    fn id(self, n: usize) -> String {
        match self {
            Dam::Cloudinary => format!("c0ffee{n:026x}"),
            Dam::Bynder => format!("6d1e4c2a-0b7f-4e11-9a3c-{n:012x}"),
        }
    }

    /// The `[dam]` table a test bed writes, from dam-sim's credentials and address.
    fn dam_table(self, dam: &DamSimHandle) -> String {
        let c = dam.config();
        match self {
            Dam::Cloudinary => format!(
                r#"kind = "cloudinary"
cloud_name = "{cloud}"
api_key = "{key}"
api_secret = "{secret}"
api_base = "{base}""#,
                cloud = c.cloud_name,
                key = c.cloudinary_api_key,
                secret = c.cloudinary_api_secret,
                base = dam.base_url(),
            ),
            Dam::Bynder => format!(
                r#"kind = "bynder"
portal_url = "{base}"
token = "{token}"
topic_arns = ["{arn}"]
sns_cert_hosts = ["{base}/_sim/sns/"]"#,
                base = dam.base_url(),
                token = c.bynder_token,
                arn = c.sns_topic_arn,
            ),
        }
    }

    /// The mapping onto akeneo-sim's `packshot` family, by this DAM's JSON paths. Cloudinary's
    /// `secure_url` names the `public_id`, so a rename shows in the PIM.
    fn mapping(self) -> &'static str {
        match self {
            Dam::Cloudinary => {
                r#"
[[route]]
family = "packshot"
on_delete = "delete"

[route.values.alt_text]
locales = { en_US = "context.custom.title" }

[route.values.product_ref]
field = "metadata.sku"

[route.values.media_preview]
field = "secure_url"
"#
            }
            Dam::Bynder => {
                r#"
[[route]]
family = "packshot"
on_delete = "delete"

[route.values.alt_text]
locales = { en_US = "name" }

[route.values.product_ref]
field = "property_sku"

[route.values.media_preview]
field = "thumbnails.webimage"
"#
            }
        }
    }

    /// What this DAM's API answers for `asset` (what `serve` maps).
    fn vendor_json(self, dam: &DamSimHandle, asset: &SimAsset) -> Value {
        match self {
            Dam::Cloudinary => dam_sim::cloudinary_resource_json(asset, &dam.config().cloud_name),
            Dam::Bynder => dam_sim::bynder_media_json(asset),
        }
    }

    /// Vendor-neutral fields of asset `n` (dam-sim renders them per DAM).
    fn fields(self, n: usize, title: &str) -> Value {
        let mut f = json!({ "title": title, "sku": format!("AB-{n}") });
        if self == Dam::Bynder {
            // Bynder's webimage thumbnail; Cloudinary derives `secure_url` from the public id.
            f["url"] = json!(format!("https://res.example.com/packshots/{n}.jpg"));
        }
        f
    }
}

/// Stands between the DAM and `serve` like the network does: forwards every delivery and
/// answers with `serve`'s answer, or loses deliveries while `losing` is set (the DAM sees a
/// 2xx and never sends them again).
struct Relay {
    url: String,
    state: Arc<RelayState>,
}

struct RelayState {
    target: String,
    http: reqwest::Client,
    losing: AtomicBool,
    lost: AtomicU64,
    /// `serve`'s answers to forwarded deliveries, by status.
    answers: std::sync::Mutex<BTreeMap<u16, u64>>,
}

impl Relay {
    async fn start(target: &str) -> Relay {
        let state = Arc::new(RelayState {
            target: target.to_owned(),
            http: shared::https::client_builder().build().unwrap(),
            losing: AtomicBool::new(false),
            lost: AtomicU64::new(0),
            answers: Default::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(relay)
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Relay { url, state }
    }

    fn answers(&self) -> BTreeMap<u16, u64> {
        self.state.answers.lock().unwrap().clone()
    }
}

async fn relay(
    State(s): State<Arc<RelayState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if s.losing.load(Ordering::SeqCst) {
        s.lost.fetch_add(1, Ordering::SeqCst);
        return StatusCode::OK.into_response();
    }
    let mut request = s.http.post(format!("{}{}", s.target, uri.path()));
    for (name, value) in &headers {
        if name != "host"
            && name != "content-length"
            && let Ok(v) = value.to_str()
        {
            request = request.header(name.as_str(), v);
        }
    }
    match request.body(body).send().await {
        Ok(answer) => {
            let status = answer.status().as_u16();
            *s.answers.lock().unwrap().entry(status).or_default() += 1;
            let body = answer.bytes().await.unwrap_or_default();
            (StatusCode::from_u16(status).unwrap(), body).into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn dam_second(asset: &Value) -> Option<i64> {
    dam_sim::parse_ms(asset["modified_at"].as_str()?).map(|ms| ms.div_euclid(1000))
}

/// The `packshot` structure, read from the PIM as `serve` reads it.
async fn packshot(pim: &SimHandle) -> Arc<FamilyStructure> {
    let (client_id, secret, username, password) = pim.credentials();
    let client = AkeneoClient::new(AkeneoConfig {
        base_url: parse_base_url(&pim.base_url()).unwrap(),
        client_id,
        client_secret: SecretString::from(secret),
        username,
        password: SecretString::from(password),
        limits: Limits::default(),
    })
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    client
        .structure("packshot", deadline)
        .await
        .unwrap()
        .expect("packshot family")
}

/// PIM code → values: what the mapping makes of the DAM's live assets.
fn expected(
    d: Dam,
    dam: &DamSimHandle,
    mapping: &Mapping,
    structure: &FamilyStructure,
) -> BTreeMap<String, Value> {
    dam.assets()
        .iter()
        .map(|a| {
            let outcome = mapping.map_asset(&a.id, &d.vendor_json(dam, a), |family| {
                (family == "packshot").then_some(structure)
            });
            let MapOutcome::Mapped(m) = outcome else {
                panic!("{}: not mapped: {outcome:?}", a.id);
            };
            (m.code, serde_json::to_value(&m.asset.values).unwrap())
        })
        .collect()
}

/// PIM code → values: what the PIM holds.
fn held(pim: &SimHandle) -> BTreeMap<String, Value> {
    pim.assets("packshot")
        .into_iter()
        .map(|a| (a["code"].as_str().unwrap().to_owned(), a["values"].clone()))
        .collect()
}

/// Waits (bounded) until the PIM holds exactly the mapped live assets of the DAM.
async fn converged(
    what: &str,
    d: Dam,
    dam: &DamSimHandle,
    pim: &SimHandle,
    mapping: &Mapping,
    structure: &FamilyStructure,
    serve: &Serve,
) -> BTreeMap<String, Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let want = expected(d, dam, mapping, structure);
        let have = held(pim);
        if want == have {
            return want;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: the PIM never matched the DAM\nwant {want:#?}\nhave {have:#?}\nserve said:\n{}",
            serve.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every key of the config file is in docs/settings.md, in its table's section.
fn assert_documented(config: &std::path::Path) {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/settings.md"))
        .unwrap();
    let sections: Vec<&str> = docs.split("\n## ").collect();
    let file: toml::Table = toml::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    for (table, keys) in &file {
        let keys = keys.as_table().expect("tables only");
        let heading = format!("`[{table}]`");
        for key in keys.keys() {
            let documented = sections.iter().any(|s| {
                s.lines().next().is_some_and(|h| h.contains(&heading))
                    && (s.contains(&format!("| `{key}` |"))
                        || s.contains(&format!("| `[{table}] {key}` |")))
            });
            assert!(documented, "[{table}] {key} is not in docs/settings.md");
        }
    }
}

/// Edits asset `n` twice within one DAM second, the second edit (if the pipeline is quick
/// enough) after the PIM applied the first: the pair a version compared by the second loses.
/// Returns whether the PIM had applied the first edit in between.
async fn edit_twice_in_one_second(d: Dam, dam: &DamSimHandle, pim: &SimHandle, n: usize) -> bool {
    let id = d.id(n);
    let code = shared::mapping::asset_code(&id);
    let mut same_second = false;
    for attempt in 0..6 {
        // Start just after a second boundary, to leave the first edit most of the second.
        let into = now_ms().rem_euclid(1000) as u64;
        tokio::time::sleep(Duration::from_millis(1_000 - into + 5)).await;
        let title = format!("same second {attempt} first");
        let first = dam.upsert(&id, d.fields(n, &title));
        let applied = loop {
            let done = pim
                .asset("packshot", &code)
                .is_some_and(|a| a["values"]["alt_text"][0]["data"] == json!(title));
            if done || now_ms().rem_euclid(1000) > 850 {
                break done;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let second = dam.upsert(&id, d.fields(n, &format!("same second {attempt} second")));
        if dam_second(&first) == dam_second(&second) {
            same_second = true;
            if applied {
                return true;
            }
        }
    }
    assert!(same_second, "no two edits fell in one DAM second");
    false
}

async fn serve_as_test_bed(d: Dam) {
    let pim = AkeneoSim::start(SimConfig::default()).await.unwrap();
    let dam = DamSim::start(DamSimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_for(dir.path(), &pim, &d.dam_table(&dam), d.mapping(), SCHEDULES);
    assert_documented(&config);
    let mapping = Mapping::from_toml_str(d.mapping(), "mapping.toml").unwrap();
    let structure = packshot(&pim).await;

    let serve = Serve::start(&config, &pim_password(&pim));
    let relay = Relay::start(&serve.url).await;
    let hook = format!("{}/webhooks/{}", relay.url, d.name());
    if d == Dam::Bynder {
        // SNS confirms the subscription first; `serve` GETs the SubscribeURL only for a
        // signed confirmation from an allowed topic and certificate source.
        let token = dam.send_sns_subscription_confirmation(&hook, 1).await;
        common::wait_until(
            "the SNS subscription confirmed",
            Duration::from_secs(30),
            || dam.sns_confirmations().contains(&token),
        )
        .await;
    }
    dam.send_webhooks_to(
        &hook,
        d.webhook_kind(),
        DeliveryKnobs {
            retries: 3,
            ..DeliveryKnobs::default()
        },
    );

    // Created.
    for n in 0..5 {
        dam.upsert(&d.id(n), d.fields(n, &format!("created {n}")));
    }
    let synced = converged("creations", d, &dam, &pim, &mapping, &structure, &serve).await;
    assert_eq!(synced.len(), 5);

    // Edited; renamed (Cloudinary: a new public id, so a new `secure_url`) or edited again;
    // edited twice within one DAM second; deleted with the webhook delivered.
    dam.patch(&d.id(0), json!({ "title": "edited 0", "sku": "CD-100" }));
    match d {
        Dam::Cloudinary => dam.patch(&d.id(1), json!({ "public_id": "packshots/renamed_1" })),
        Dam::Bynder => dam.patch(&d.id(1), json!({ "title": "edited 1" })),
    };
    let applied_between = edit_twice_in_one_second(d, &dam, &pim, 2).await;
    assert!(dam.delete(&d.id(3)));
    assert!(dam.flush_webhooks(Duration::from_secs(30)).await);

    // Deleted with the webhook lost: neither DAM's listing shows deletions, so only the
    // sweep can find out.
    relay.state.losing.store(true, Ordering::SeqCst);
    assert!(dam.delete(&d.id(4)));
    assert!(dam.flush_webhooks(Duration::from_secs(30)).await);
    relay.state.losing.store(false, Ordering::SeqCst);
    assert_eq!(
        relay.state.lost.load(Ordering::SeqCst),
        1,
        "one delete lost"
    );
    // Webhooks go on afterwards.
    dam.upsert(&d.id(5), d.fields(5, "created 5"));
    assert!(dam.flush_webhooks(Duration::from_secs(30)).await);

    let end = converged("changes", d, &dam, &pim, &mapping, &structure, &serve).await;
    let code = |n: usize| shared::mapping::asset_code(&d.id(n));
    let codes: Vec<&String> = end.keys().collect();
    let mut live: Vec<String> = [0, 1, 2, 5].iter().map(|&n| code(n)).collect();
    live.sort();
    assert_eq!(
        codes,
        live.iter().collect::<Vec<_>>(),
        "deleted assets absent"
    );
    let alt = |n: usize| {
        pim.asset("packshot", &code(n)).unwrap()["values"]["alt_text"][0]["data"].clone()
    };
    assert_eq!(alt(0), json!("edited 0"));
    assert!(
        alt(2).as_str().unwrap().ends_with(" second"),
        "the second of two same-second edits wins: {}",
        alt(2)
    );
    if d == Dam::Cloudinary {
        let preview =
            pim.asset("packshot", &code(1)).unwrap()["values"]["media_preview"][0]["data"].clone();
        assert!(
            preview.as_str().unwrap().contains("packshots/renamed_1"),
            "renamed: {preview}"
        );
    }
    // Every delivery reached `serve` and was verified and queued: none refused.
    let answers = relay.answers();
    let stats = dam.webhook_stats();
    assert!(
        answers.keys().all(|s| (200..300).contains(s))
            && answers.values().sum::<u64>() + relay.state.lost.load(Ordering::SeqCst)
                == stats.delivered
            && stats.failed == 0,
        "serve's answers: {answers:?}, dam-sim's deliveries: {stats:?}"
    );
    if d == Dam::Cloudinary {
        // The rename went out as Cloudinary's own `rename` notification.
        assert!(
            dam.webhook_log()
                .iter()
                .any(|r| r.event == "rename" && r.asset_id == d.id(1) && r.status == Some(202)),
            "{:?}",
            dam.webhook_log()
        );
    }
    println!(
        "{}: serve answered {answers:?}; same-second pair after the first was applied: \
         {applied_between}",
        d.name()
    );

    // Nothing parked.
    drop(serve);
    let store = embedded_store::SqliteStore::open_existing(dir.path().join("state.db")).unwrap();
    use shared::queue::QueueAdmin;
    let letters = store.dead_letters(10).await.unwrap();
    assert!(letters.is_empty(), "dead letters: {letters:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_is_a_cloudinary_test_bed_with_only_documented_settings() {
    serve_as_test_bed(Dam::Cloudinary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_is_a_bynder_test_bed_with_only_documented_settings() {
    serve_as_test_bed(Dam::Bynder).await;
}
