//! dam-sim: an in-memory DAM serving the Cloudinary, Bynder and generic REST APIs over real
//! HTTP, and sending each vendor's signed webhooks, with fault knobs and accounting.
//!
//! Start it in-process with [`DamSim::start`] (tests) or run the `dam-sim` binary; both
//! expose the same control routes under `/_sim/...` (see README.md).

mod bynder;
mod catalogue;
mod cloudinary;
mod control;
mod files;
mod gate;
mod generic;
mod sns;
mod timefmt;
mod webhooks;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

pub use bynder::DateFilter;
pub use bynder::media_json as bynder_media_json;
pub use catalogue::{ChangeType, SimAsset, generated_asset};
pub use cloudinary::resource_json as cloudinary_resource_json;
pub use files::{file_bytes, file_url};
pub use gate::{Faults, Stats};
pub use sns::canonical_string as sns_canonical_string;
pub use timefmt::{iso_millis, iso_secs, parse_ms};
pub use webhooks::{
    CloudinaryAlgorithm, DeliveryKnobs, DeliveryRecord, WebhookKind, WebhookStats,
    cloudinary_signature, standard_signature,
};

use catalogue::Catalogue;
use gate::{HourlyBudget, SlidingBlock};
use sns::SnsIdentity;
use webhooks::{Notice, Subscription};

/// A mapping of the generated assets ([`DamSimHandle::generate`]) onto the `packshot` family of
/// the Akeneo simulator's fixture: what the demo, the CLI tests and the pipeline tests sync. It
/// is the repository's `examples/mapping.toml`, so the shipped example is the one they run.
pub const PACKSHOT_MAPPING: &str = include_str!("../../../examples/mapping.toml");

/// Simulator settings. Defaults suit tests: generous budgets, fixed credentials.
#[derive(Debug, Clone)]
pub struct DamSimConfig {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    pub cloud_name: String,
    pub cloudinary_api_key: String,
    pub cloudinary_api_secret: String,
    /// Admin API calls per `cloudinary_window` (Cloudinary: ~500/h free, ~2000/h paid).
    pub cloudinary_hourly_limit: u64,
    pub cloudinary_window: Duration,
    pub bynder_token: String,
    /// Bynder's documented limit: 4,500 requests per 5 minutes.
    pub bynder_rate_limit: usize,
    pub bynder_rate_window: Duration,
    /// Bynder's `dateModified` filter: exclusive by default ("modified after", as documented).
    pub bynder_date_filter: DateFilter,
    /// Cloudinary's `last_updated.updated_at>=`: inclusive by default (the operator says so).
    pub cloudinary_date_filter: DateFilter,
    pub generic_token: String,
    /// Standard Webhooks secret, `whsec_<base64 key>`.
    pub generic_webhook_secret: String,
    /// Generic `/assets` returns deleted ids as `"deleted": true` objects instead of
    /// leaving them out (the contract allows both).
    pub generic_fetch_tombstones: bool,
    /// Optional generic budget: requests per `generic_rate_window`, then 429 + Retry-After.
    pub generic_rate_limit: Option<u64>,
    pub generic_rate_window: Duration,
    pub generic_retry_after_secs: u64,
    pub sns_topic_arn: String,
    pub faults: Faults,
    /// 0: changes are stamped with the wall clock. Otherwise each change is stamped this
    /// many ms after the previous one (spreads changes over seconds without sleeping).
    pub clock_step_ms: u64,
    /// Seeds fault draws and ids minted by `POST /_sim/assets` without an id.
    pub seed: u64,
}

impl Default for DamSimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            cloud_name: "dam-sim".into(),
            cloudinary_api_key: "123456789012345".into(),
            cloudinary_api_secret: "dam-sim-cloudinary-secret".into(),
            cloudinary_hourly_limit: 2000,
            cloudinary_window: Duration::from_secs(3600),
            bynder_token: "dam-sim-bynder-token".into(),
            bynder_rate_limit: 4500,
            bynder_rate_window: Duration::from_secs(300),
            bynder_date_filter: DateFilter::Exclusive,
            cloudinary_date_filter: DateFilter::Inclusive,
            generic_token: "dam-sim-generic-token".into(),
            generic_webhook_secret: format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD
                    .encode(b"dam-sim generic webhook key 32b")
            ),
            generic_fetch_tombstones: false,
            generic_rate_limit: None,
            generic_rate_window: Duration::from_secs(60),
            generic_retry_after_secs: 1,
            sns_topic_arn: "arn:aws:sns:eu-west-1:123456789012:dam-sim-bynder".into(),
            faults: Faults::default(),
            clock_step_ms: 0,
            seed: 1,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct WebhookLog {
    pub stats: WebhookStats,
    pub log: Vec<DeliveryRecord>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub config: DamSimConfig,
    pub base_url: String,
    pub catalogue: Mutex<Catalogue>,
    pub faults: Mutex<Faults>,
    pub rng: Mutex<fastrand::Rng>,
    pub stats: Mutex<Stats>,
    pub cloudinary_budget: Mutex<HourlyBudget>,
    pub generic_budget: Mutex<HourlyBudget>,
    pub bynder_limit: Mutex<SlidingBlock>,
    pub sns: SnsIdentity,
    pub subscriptions: Mutex<Vec<(u64, WebhookKind, Subscription)>>,
    pub next_subscription: AtomicU64,
    pub webhooks: Mutex<WebhookLog>,
    /// Notifications queued or in flight, for `flush_webhooks`.
    pub pending: AtomicUsize,
    pub sns_confirmed: Mutex<Vec<String>>,
    pub http: reqwest::Client,
}

impl Shared {
    pub fn sns_cert_url(&self) -> String {
        format!("{}/_sim/sns/cert.pem", self.base_url)
    }

    /// Queues a notification for every subscription (`auto_only`: those with auto_notify).
    pub fn publish(
        &self,
        asset: &SimAsset,
        previous: Option<&SimAsset>,
        change: ChangeType,
        auto_only: bool,
    ) {
        let subs = self.subscriptions.lock().expect("subscriptions lock");
        for (_, _, s) in subs.iter() {
            if auto_only && !s.knobs.auto_notify {
                continue;
            }
            self.pending.fetch_add(1, Ordering::SeqCst);
            let notice = Notice {
                asset: asset.clone(),
                change,
                previous: previous.cloned(),
            };
            if s.tx.send(notice).is_err() {
                self.pending.fetch_sub(1, Ordering::SeqCst);
            } else {
                self.webhooks.lock().expect("webhooks lock").stats.queued += 1;
            }
        }
    }

    pub fn upsert(&self, id: &str, fields: Map<String, Value>) -> SimAsset {
        let (asset, change, previous) = {
            let mut cat = self.catalogue.lock().expect("catalogue lock");
            let previous = cat.live(id).cloned();
            let (asset, change) = cat.upsert(id, fields);
            (asset, change, previous)
        };
        self.publish(&asset, previous.as_ref(), change, true);
        asset
    }

    pub fn patch(&self, id: &str, fields: Map<String, Value>) -> Option<SimAsset> {
        let (asset, previous) = {
            let mut cat = self.catalogue.lock().expect("catalogue lock");
            let previous = cat.live(id).cloned();
            (cat.patch(id, fields)?, previous)
        };
        self.publish(&asset, previous.as_ref(), ChangeType::Updated, true);
        Some(asset)
    }

    pub fn delete(&self, id: &str) -> bool {
        let deleted = self.catalogue.lock().expect("catalogue lock").delete(id);
        match deleted {
            Some(a) => {
                self.publish(&a, None, ChangeType::Deleted, true);
                true
            }
            None => false,
        }
    }

    pub fn generate(&self, n: usize, seed: u64) -> Vec<String> {
        (0..n as u64)
            .map(|i| {
                let (id, fields) = generated_asset(seed, i);
                self.upsert(&id, fields);
                id
            })
            .collect()
    }

    /// On-demand notification of an asset's current state (a delete for a tombstone).
    pub fn notify(&self, id: &str) -> bool {
        let asset = self
            .catalogue
            .lock()
            .expect("catalogue lock")
            .get(id)
            .cloned();
        match asset {
            Some(a) => {
                let change = if a.deleted {
                    ChangeType::Deleted
                } else if a.version == 1 {
                    ChangeType::Created
                } else {
                    ChangeType::Updated
                };
                self.publish(&a, None, change, false);
                true
            }
            None => false,
        }
    }

    pub fn subscribe(
        self: &Arc<Self>,
        target: &str,
        kind: WebhookKind,
        knobs: DeliveryKnobs,
    ) -> u64 {
        let id = self.next_subscription.fetch_add(1, Ordering::SeqCst) + 1;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(webhooks::run_subscription(
            self.clone(),
            id,
            kind,
            knobs.clone(),
            target.to_owned(),
            rx,
        ));
        self.subscriptions
            .lock()
            .expect("subscriptions lock")
            .push((id, kind, Subscription { knobs, tx }));
        id
    }

    pub async fn send_sns_confirmation(&self, target: &str, signature_version: u8) -> String {
        let (token, out) = {
            let mut rng = self.rng.lock().expect("rng lock");
            let token: String = (0..64)
                .map(|_| char::from_digit(rng.u32(0..16), 16).unwrap_or('0'))
                .collect();
            let out = webhooks::render_sns_confirmation(self, signature_version, &token, &mut rng);
            (token, out)
        };
        let once = DeliveryKnobs {
            retries: 0,
            ..DeliveryKnobs::default()
        };
        webhooks::post(self, 0, WebhookKind::Bynder, target, "", &out, &once).await;
        token
    }

    pub async fn flush_webhooks(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.pending.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

pub(crate) fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// Entry point.
pub struct DamSim;

impl DamSim {
    /// Binds `config.listen` and serves until [`DamSimHandle::shutdown`] (or drop).
    pub async fn start(config: DamSimConfig) -> std::io::Result<DamSimHandle> {
        let sns = SnsIdentity::shared()?;
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let http = http_client_builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            base_url,
            catalogue: Mutex::new(Catalogue::new(config.clock_step_ms)),
            faults: Mutex::new(config.faults.clone()),
            rng: Mutex::new(fastrand::Rng::with_seed(config.seed)),
            stats: Mutex::new(Stats::default()),
            cloudinary_budget: Mutex::new(HourlyBudget::new(
                config.cloudinary_hourly_limit,
                config.cloudinary_window,
            )),
            generic_budget: Mutex::new(HourlyBudget::new(
                config.generic_rate_limit.unwrap_or(u64::MAX),
                config.generic_rate_window,
            )),
            bynder_limit: Mutex::new(SlidingBlock::new(
                config.bynder_rate_limit,
                config.bynder_rate_window,
            )),
            sns,
            subscriptions: Mutex::new(Vec::new()),
            next_subscription: AtomicU64::new(0),
            webhooks: Mutex::new(WebhookLog::default()),
            pending: AtomicUsize::new(0),
            sns_confirmed: Mutex::new(Vec::new()),
            http,
            config,
        });
        let app = router(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(DamSimHandle {
            shared,
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/v1_1/{cloud}/resources/search", post(cloudinary::search))
        .route(
            "/v1_1/{cloud}/resources/by_asset_ids",
            get(cloudinary::by_asset_ids),
        )
        .route(
            "/v1_1/{cloud}/resources/{asset_id}",
            get(cloudinary::by_asset_id),
        )
        .route("/api/v4/media/", get(bynder::list_media))
        .route("/api/v4/media", get(bynder::list_media))
        .route("/api/v4/media/{id}/", get(bynder::get_media))
        .route("/api/v4/media/{id}", get(bynder::get_media))
        .route("/generic/assets", get(generic::get_assets))
        .route("/generic/assets/{id}", get(generic::get_asset))
        .route("/generic/changes", get(generic::get_changes))
        .route("/files/{id}/{name}", get(files::get_file))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            gate::api_gate,
        ));
    api.merge(control::routes()).with_state(shared)
}

/// A running simulator. Dropping it stops the server.
pub struct DamSimHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl DamSimHandle {
    /// `http://127.0.0.1:PORT`: the Cloudinary API base and the Bynder portal URL.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// Base of the generic contract (`{base}/assets`, `{base}/changes`).
    pub fn generic_base_url(&self) -> String {
        format!("{}/generic", self.shared.base_url)
    }

    /// Where the simulator serves asset `id`'s file (see the `files` module): any `name`,
    /// whose extension sets the Content-Type.
    pub fn file_url(&self, id: &str, name: &str) -> String {
        file_url(&self.shared.base_url, id, name)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn config(&self) -> &DamSimConfig {
        &self.shared.config
    }

    /// Creates or replaces an asset's fields (bumps version and modified time); returns its
    /// generic-contract JSON. Non-object `fields` count as empty.
    pub fn upsert(&self, id: &str, fields: Value) -> Value {
        let fields = fields.as_object().cloned().unwrap_or_default();
        self.shared.upsert(id, fields).to_generic_json()
    }

    /// Merges fields into a live asset (`null` removes one); `None` if it is not live.
    pub fn patch(&self, id: &str, fields: Value) -> Option<Value> {
        let fields = fields.as_object().cloned().unwrap_or_default();
        self.shared.patch(id, fields).map(|a| a.to_generic_json())
    }

    /// Deletes a live asset; false if it was unknown or already deleted.
    pub fn delete(&self, id: &str) -> bool {
        self.shared.delete(id)
    }

    /// Upserts `n` deterministic assets for `seed` (see [`generated_asset`]); returns ids.
    pub fn generate(&self, n: usize, seed: u64) -> Vec<String> {
        self.shared.generate(n, seed)
    }

    /// Live assets ordered by (modified time, id).
    pub fn assets(&self) -> Vec<SimAsset> {
        let cat = self.shared.catalogue.lock().expect("catalogue lock");
        cat.live_assets().into_iter().cloned().collect()
    }

    /// One asset, tombstones included.
    pub fn asset(&self, id: &str) -> Option<SimAsset> {
        let cat = self.shared.catalogue.lock().expect("catalogue lock");
        cat.get(id).cloned()
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().expect("faults lock") = faults;
    }

    pub fn faults(&self) -> Faults {
        self.shared.faults.lock().expect("faults lock").clone()
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats.lock().expect("stats lock").clone()
    }

    pub fn reset_stats(&self) {
        *self.shared.stats.lock().expect("stats lock") = Stats::default();
    }

    pub fn sns_cert_pem(&self) -> String {
        self.shared.sns.cert_pem.clone()
    }

    pub fn sns_cert_url(&self) -> String {
        self.shared.sns_cert_url()
    }

    /// Subscribes `target_url` to `kind` notifications; returns the subscription id. With
    /// `knobs.auto_notify` every later catalogue change is delivered.
    pub fn send_webhooks_to(
        &self,
        target_url: &str,
        kind: WebhookKind,
        knobs: DeliveryKnobs,
    ) -> u64 {
        self.shared.subscribe(target_url, kind, knobs)
    }

    /// Sends a notification of the asset's current state to every subscription now.
    pub fn notify(&self, id: &str) -> bool {
        self.shared.notify(id)
    }

    /// POSTs a signed SNS `SubscriptionConfirmation` to `target_url`; returns its token,
    /// which shows up in [`Self::sns_confirmations`] once the target GETs the SubscribeURL.
    pub async fn send_sns_subscription_confirmation(
        &self,
        target_url: &str,
        signature_version: u8,
    ) -> String {
        self.shared
            .send_sns_confirmation(target_url, signature_version)
            .await
    }

    pub fn sns_confirmations(&self) -> Vec<String> {
        self.shared.sns_confirmed.lock().expect("sns lock").clone()
    }

    /// Waits until every queued notification was sent or dropped; false on timeout.
    pub async fn flush_webhooks(&self, timeout: Duration) -> bool {
        self.shared.flush_webhooks(timeout).await
    }

    pub fn webhook_stats(&self) -> WebhookStats {
        self.shared
            .webhooks
            .lock()
            .expect("webhooks lock")
            .stats
            .clone()
    }

    pub fn webhook_log(&self) -> Vec<DeliveryRecord> {
        self.shared
            .webhooks
            .lock()
            .expect("webhooks lock")
            .log
            .clone()
    }

    /// Stops the server and the webhook senders.
    pub async fn shutdown(mut self) {
        self.shared
            .subscriptions
            .lock()
            .expect("subscriptions lock")
            .clear();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for DamSimHandle {
    fn drop(&mut self) {
        // Closing the subscription channels ends the sender tasks (they hold `Shared`).
        if let Ok(mut subs) = self.shared.subscriptions.lock() {
            subs.clear();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// `reqwest::Client::builder()` with rustls' ring provider installed for the process: the
/// workspace builds reqwest without a default provider (see `shared::https`).
pub fn http_client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
