//! A simulator of the Akeneo PIM Asset Manager REST API (see README.md): OAuth token route,
//! asset families / attributes / options, assets (bulk and single upsert with per-item
//! validation), media files, plus fault knobs and call accounting for tests.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod fixture;
mod server;
mod state;
mod time;
mod validate;

pub use fixture::{
    AttributeDef, AttributeType, ClientDef, FamilyDef, Fixture, FixtureError, OptionDef,
};

/// Everything the simulator needs at start.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub fixture: Fixture,
    pub faults: Faults,
    /// Access-token lifetime (`expires_in`), 3600 s by default like Akeneo.
    pub token_ttl: Duration,
    /// Seed of the fault RNG: same seed + same call count = same number of faults.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            fixture: Fixture::bundled(),
            faults: Faults::default(),
            token_ttl: Duration::from_secs(3600),
            seed: 42,
        }
    }
}

/// Fault knobs. Random faults (`error_5xx_rate`, `rate_429`, `hang_rate`) only hit
/// `/api/rest/v1` routes; latency hits every `/api` route including the token route.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Faults {
    /// Probability of a random 500/502/503.
    pub error_5xx_rate: f64,
    /// Probability of a random 429.
    pub rate_429: f64,
    /// `Retry-After` seconds sent with random 429s; `None` sends no header.
    pub retry_after_secs: Option<u64>,
    /// Uniform extra latency in milliseconds, `(min, max)`.
    pub latency_ms: (u64, u64),
    /// Probability that a request never answers (until the client gives up).
    pub hang_rate: f64,
    /// Akeneo allows 4 concurrent calls per connection; excess gets 429 + `Retry-After: 1`.
    pub max_in_flight_per_token: Option<usize>,
    /// Akeneo allows 10 concurrent calls per PIM instance.
    pub max_in_flight_per_instance: Option<usize>,
    /// Akeneo allows 100 requests/s per instance (token bucket refilled at this rate).
    pub rate_limit_per_sec: Option<u32>,
    /// Bucket size of the per-instance rate limit.
    pub rate_limit_burst: u32,
    /// Akeneo limits attribute-option PATCH to 3 requests/s per instance.
    pub option_patch_rate_per_sec: Option<u32>,
    /// How long after a 429 a call of the same client still does not count as a call inside
    /// the announced Retry-After window (`SimStats::retry_after_violations`): calls already on
    /// the wire, or sent before the client could read the 429. 100 ms is a client's reaction
    /// time on a loaded 2-core machine; a run sharing the machine with other busy runs needs
    /// more. A client that ignores Retry-After still lands most retries inside the window.
    pub retry_after_grace_ms: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_5xx_rate: 0.0,
            rate_429: 0.0,
            retry_after_secs: Some(1),
            latency_ms: (0, 0),
            hang_rate: 0.0,
            max_in_flight_per_token: Some(4),
            max_in_flight_per_instance: Some(10),
            rate_limit_per_sec: Some(100),
            rate_limit_burst: 100,
            option_patch_rate_per_sec: Some(3),
            retry_after_grace_ms: 100,
        }
    }
}

/// Call accounting. Route keys are `"METHOD /template"`, e.g.
/// `"PATCH /api/rest/v1/asset-families/{family}/assets"`; status 0 means the request never
/// got an answer (hang, or the client went away first).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub calls: BTreeMap<String, BTreeMap<u16, u64>>,
    pub total_calls: u64,
    pub max_in_flight_per_token: usize,
    pub max_in_flight_instance: usize,
    pub unauthorized_401: u64,
    pub too_large_413: u64,
    pub throttled_429: u64,
    pub server_errors_5xx: u64,
    pub tokens_issued_password: u64,
    pub tokens_issued_refresh: u64,
    pub assets_created: u64,
    pub assets_updated: u64,
    /// API requests from a client inside a Retry-After window announced to that client.
    pub retry_after_violations: u64,
}

impl Stats {
    /// Calls to `"METHOD /template"`, all statuses.
    pub fn calls_to(&self, method_and_route: &str) -> u64 {
        self.calls
            .get(method_and_route)
            .map_or(0, |by_status| by_status.values().sum())
    }

    /// Calls to `"METHOD /template"` answered with `status`.
    pub fn calls_with(&self, method_and_route: &str, status: u16) -> u64 {
        self.calls
            .get(method_and_route)
            .and_then(|by_status| by_status.get(&status))
            .copied()
            .unwrap_or(0)
    }
}

/// Entry point.
pub struct AkeneoSim;

impl AkeneoSim {
    /// Starts on `127.0.0.1:0` (a free port).
    pub async fn start(config: SimConfig) -> std::io::Result<SimHandle> {
        Self::start_on(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts on `addr` and serves in a background task of the current runtime.
    pub async fn start_on(config: SimConfig, addr: SocketAddr) -> std::io::Result<SimHandle> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let base_url = base_url_of(addr);
        let shared = Arc::new(state::Shared::new(config, base_url.clone()));
        let app = server::router(shared.clone());
        let mut shutdown = shared.shutdown_rx();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = shutdown.wait_for(|stop| *stop).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "akeneo-sim server stopped");
            }
        });
        tracing::info!(%base_url, "akeneo-sim listening");
        Ok(SimHandle { shared, addr })
    }
}

fn base_url_of(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        Ipv4Addr::LOCALHOST.into()
    } else {
        addr.ip()
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// Control handle of a running simulator (cheap to clone).
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<state::Shared>,
    addr: SocketAddr,
}

impl SimHandle {
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_faults(&self, f: Faults) {
        self.shared.set_faults(f);
    }

    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    pub fn reset_stats(&self) {
        self.shared.reset_stats();
    }

    /// Every access token issued so far becomes expired (401 "has expired").
    pub fn expire_all_tokens(&self) {
        self.shared.expire_all_tokens();
    }

    /// Every refresh token issued so far is refused (forces a password login).
    pub fn revoke_refresh_tokens(&self) {
        self.shared.revoke_refresh_tokens();
    }

    /// The stored assets of `family` as `GET .../assets/{code}` renders them, by code.
    pub fn assets(&self, family: &str) -> Vec<serde_json::Value> {
        self.shared.assets_json(family, &self.shared.base_url)
    }

    pub fn asset(&self, family: &str, code: &str) -> Option<serde_json::Value> {
        self.shared.asset_json(family, code, &self.shared.base_url)
    }

    /// An uploaded media file by its code: (original file name, bytes).
    pub fn media_file(&self, code: &str) -> Option<(String, Vec<u8>)> {
        self.shared.media_file(code)
    }

    /// How many media files were uploaded.
    pub fn media_count(&self) -> usize {
        self.shared.media_count()
    }

    /// The client credentials of the fixture's first client:
    /// `(client_id, secret, username, password)`.
    pub fn credentials(&self) -> (String, String, String, String) {
        let c = &self.shared.fixture.clients[0];
        (
            c.client_id.clone(),
            c.secret.clone(),
            c.username.clone(),
            c.password.clone(),
        )
    }

    /// Stops accepting connections and ends pending (hung or delayed) requests.
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }
}
