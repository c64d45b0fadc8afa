//! Shared simulator state behind one mutex (never held across an await).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::fixture::{Fixture, OptionDef};
use crate::validate::{ValidAsset, ValueWrite};
use crate::{Faults, SimConfig, Stats};

/// Akeneo refresh tokens live 14 days.
const REFRESH_TTL: Duration = Duration::from_secs(1_209_600);

pub(crate) struct AccessToken {
    pub client_id: String,
    pub expires_at: Instant,
}

pub(crate) struct RefreshToken {
    pub client_id: String,
    pub expires_at: Instant,
}

#[derive(Clone)]
pub(crate) struct StoredValue {
    pub locale: Option<String>,
    pub channel: Option<String>,
    pub data: Value,
}

#[derive(Clone)]
pub(crate) struct StoredAsset {
    /// attribute code -> values, one per (locale, channel).
    pub values: BTreeMap<String, Vec<StoredValue>>,
    pub created: i64,
    pub updated: i64,
}

pub(crate) struct MediaFile {
    pub filename: String,
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

/// Token bucket: `capacity` tokens, refilled at `rate` per second.
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(capacity: f64) -> Self {
        Bucket {
            tokens: capacity,
            last: Instant::now(),
        }
    }

    fn try_take(&mut self, rate: f64, capacity: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub(crate) struct Inner {
    pub faults: Faults,
    pub stats: Stats,
    pub fault_rng: fastrand::Rng,
    /// Token ids and token-route latency: kept apart from `fault_rng` so that the number
    /// of faults only depends on the seed and the number of API calls.
    pub aux_rng: fastrand::Rng,
    pub access: HashMap<String, AccessToken>,
    pub refresh: HashMap<String, RefreshToken>,
    pub assets: BTreeMap<String, BTreeMap<String, StoredAsset>>,
    pub options: BTreeMap<(String, String), Vec<OptionDef>>,
    pub media: HashMap<String, MediaFile>,
    pub media_counter: u64,
    pub in_flight_instance: usize,
    pub in_flight_token: HashMap<String, usize>,
    pub bucket: Bucket,
    pub option_bucket: Bucket,
    /// client_id -> (start, end) of the announced Retry-After window.
    pub retry_windows: HashMap<String, (Instant, Instant)>,
}

pub(crate) struct Shared {
    pub fixture: Fixture,
    pub token_ttl: Duration,
    pub base_url: String,
    pub regexes: HashMap<(String, String), regex::Regex>,
    inner: Mutex<Inner>,
    shutdown_tx: watch::Sender<bool>,
}

/// What the gate decided for an API request at arrival.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Decision {
    Proceed,
    Hang,
    ServerError(u16),
    /// 429 with optional Retry-After seconds and whether it comes from a limit (vs random).
    Throttle(Option<u64>, ThrottleKind),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ThrottleKind {
    Random,
    Concurrency,
    RateLimit,
}

pub(crate) struct Arrival {
    pub decision: Decision,
    pub latency: Duration,
    pub client_id: Option<String>,
    pub in_flight: InFlightGuard,
}

/// Decrements in-flight counters when the request ends (answered or dropped).
pub(crate) struct InFlightGuard {
    shared: Arc<Shared>,
    token: Option<String>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        inner.in_flight_instance = inner.in_flight_instance.saturating_sub(1);
        if let Some(t) = &self.token
            && let Some(n) = inner.in_flight_token.get_mut(t)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.in_flight_token.remove(t);
            }
        }
    }
}

/// Records one call in the accounting; status 0 if dropped before an answer.
pub(crate) struct CallGuard {
    shared: Arc<Shared>,
    route: String,
    done: bool,
}

impl CallGuard {
    pub(crate) fn new(shared: Arc<Shared>, route: String) -> Self {
        shared.lock().stats.total_calls += 1;
        CallGuard {
            shared,
            route,
            done: false,
        }
    }

    pub(crate) fn finish(&mut self, status: u16) {
        self.done = true;
        let mut inner = self.shared.lock();
        let s = &mut inner.stats;
        *s.calls
            .entry(self.route.clone())
            .or_default()
            .entry(status)
            .or_default() += 1;
        match status {
            401 => s.unauthorized_401 += 1,
            413 => s.too_large_413 += 1,
            429 => s.throttled_429 += 1,
            500..=599 => s.server_errors_5xx += 1,
            _ => {}
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.done {
            self.finish(0);
        }
    }
}

pub(crate) enum TokenCheck {
    Valid,
    Expired,
    Invalid,
}

impl Shared {
    pub(crate) fn new(config: SimConfig, base_url: String) -> Self {
        let mut options = BTreeMap::new();
        let mut regexes = HashMap::new();
        for fam in &config.fixture.families {
            for attr in &fam.attributes {
                if attr.kind.has_options() {
                    options.insert((fam.code.clone(), attr.code.clone()), attr.options.clone());
                }
                if attr.validation_rule.as_deref() == Some("regexp")
                    && let Some(re) = attr
                        .validation_regexp
                        .as_deref()
                        .and_then(|r| regex::Regex::new(r).ok())
                {
                    regexes.insert((fam.code.clone(), attr.code.clone()), re);
                }
            }
        }
        let assets = config
            .fixture
            .families
            .iter()
            .map(|f| (f.code.clone(), BTreeMap::new()))
            .collect();
        let inner = Inner {
            bucket: Bucket::new(config.faults.rate_limit_burst as f64),
            option_bucket: Bucket::new(config.faults.option_patch_rate_per_sec.unwrap_or(1) as f64),
            faults: config.faults,
            stats: Stats::default(),
            fault_rng: fastrand::Rng::with_seed(config.seed),
            aux_rng: fastrand::Rng::with_seed(config.seed ^ 0x5eed_a4e0_0000_0001),
            access: HashMap::new(),
            refresh: HashMap::new(),
            assets,
            options,
            media: HashMap::new(),
            media_counter: 0,
            in_flight_instance: 0,
            in_flight_token: HashMap::new(),
            retry_windows: HashMap::new(),
        };
        let (shutdown_tx, _) = watch::channel(false);
        Shared {
            fixture: config.fixture,
            token_ttl: config.token_ttl,
            base_url,
            regexes,
            inner: Mutex::new(inner),
            shutdown_tx,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock must not take the whole simulator down.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn shutdown_rx(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    pub(crate) fn shutdown(&self) {
        self.shutdown_tx.send_replace(true);
    }

    pub(crate) fn set_faults(&self, f: Faults) {
        self.lock().faults = f;
    }

    pub(crate) fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    pub(crate) fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    pub(crate) fn reset_stats(&self) {
        let mut inner = self.lock();
        inner.stats = Stats::default();
    }

    pub(crate) fn expire_all_tokens(&self) {
        let now = Instant::now();
        for t in self.lock().access.values_mut() {
            t.expires_at = now;
        }
    }

    pub(crate) fn revoke_refresh_tokens(&self) {
        self.lock().refresh.clear();
    }

    fn new_secret(inner: &mut Inner) -> String {
        let rng = &mut inner.aux_rng;
        (0..40)
            .map(|_| char::from_digit(rng.u32(0..36), 36).unwrap_or('0'))
            .collect()
    }

    /// Issues an access + refresh token pair for `client_id`.
    pub(crate) fn issue_tokens(&self, client_id: &str, via_refresh: bool) -> (String, String) {
        let mut inner = self.lock();
        let access = Self::new_secret(&mut inner);
        let refresh = Self::new_secret(&mut inner);
        let now = Instant::now();
        inner.access.insert(
            access.clone(),
            AccessToken {
                client_id: client_id.to_string(),
                expires_at: now + self.token_ttl,
            },
        );
        inner.refresh.insert(
            refresh.clone(),
            RefreshToken {
                client_id: client_id.to_string(),
                expires_at: now + REFRESH_TTL,
            },
        );
        if via_refresh {
            inner.stats.tokens_issued_refresh += 1;
        } else {
            inner.stats.tokens_issued_password += 1;
        }
        (access, refresh)
    }

    /// Consumes a refresh token (rotation: it can be used once). True if it was valid for
    /// this client.
    pub(crate) fn consume_refresh(&self, token: &str, client_id: &str) -> bool {
        let mut inner = self.lock();
        match inner.refresh.get(token) {
            Some(t) if t.client_id == client_id && t.expires_at > Instant::now() => {
                inner.refresh.remove(token);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn check_token(&self, token: &str) -> TokenCheck {
        let inner = self.lock();
        match inner.access.get(token) {
            None => TokenCheck::Invalid,
            Some(t) if t.expires_at <= Instant::now() => TokenCheck::Expired,
            Some(_) => TokenCheck::Valid,
        }
    }

    pub(crate) fn token_route_latency(&self) -> Duration {
        let mut inner = self.lock();
        let (min, max) = inner.faults.latency_ms;
        let u = inner.aux_rng.f64();
        latency_from(min, max, u)
    }

    /// Arrival of an `/api/rest/v1` request: in-flight accounting, the fixed set of random
    /// draws, Retry-After violation check, and the fault / limit decision.
    pub(crate) fn arrive(self: &Arc<Self>, bearer: Option<&str>) -> Arrival {
        let now = Instant::now();
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.in_flight_instance += 1;
        let instance_now = inner.in_flight_instance;
        inner.stats.max_in_flight_instance = inner.stats.max_in_flight_instance.max(instance_now);
        let token_now = bearer.map(|t| {
            let n = inner.in_flight_token.entry(t.to_string()).or_default();
            *n += 1;
            *n
        });
        if let Some(n) = token_now {
            inner.stats.max_in_flight_per_token = inner.stats.max_in_flight_per_token.max(n);
        }
        let in_flight = InFlightGuard {
            shared: self.clone(),
            token: bearer.map(str::to_string),
        };

        // Always exactly five draws per API request, whatever the outcome.
        let rng = &mut inner.fault_rng;
        let (u_latency, u_hang, u_5xx, u_kind, u_429) =
            (rng.f64(), rng.f64(), rng.f64(), rng.f64(), rng.f64());

        let client_id = bearer
            .and_then(|t| inner.access.get(t))
            .map(|t| t.client_id.clone());
        if let Some(c) = &client_id
            && let Some((start, end)) = inner.retry_windows.get(c)
            && now >= *start
            && now < *end
        {
            inner.stats.retry_after_violations += 1;
        }

        let f = &inner.faults;
        let decision = if u_hang < f.hang_rate {
            Decision::Hang
        } else if u_5xx < f.error_5xx_rate {
            Decision::ServerError([500, 502, 503][((u_kind * 3.0) as usize).min(2)])
        } else if u_429 < f.rate_429 {
            Decision::Throttle(f.retry_after_secs, ThrottleKind::Random)
        } else if f
            .max_in_flight_per_instance
            .is_some_and(|cap| instance_now > cap)
            || f.max_in_flight_per_token
                .is_some_and(|cap| token_now.is_some_and(|n| n > cap))
        {
            Decision::Throttle(Some(1), ThrottleKind::Concurrency)
        } else if let Some(rate) = f.rate_limit_per_sec {
            let capacity = f.rate_limit_burst.max(1) as f64;
            if inner.bucket.try_take(rate as f64, capacity, now) {
                Decision::Proceed
            } else {
                Decision::Throttle(Some(1), ThrottleKind::RateLimit)
            }
        } else {
            Decision::Proceed
        };
        let (min, max) = inner.faults.latency_ms;
        Arrival {
            decision,
            latency: latency_from(min, max, u_latency),
            client_id,
            in_flight,
        }
    }

    /// The 3 req/s limit of option PATCH. True if the request may proceed.
    pub(crate) fn take_option_patch(&self) -> bool {
        let mut inner = self.lock();
        match inner.faults.option_patch_rate_per_sec {
            None => true,
            Some(rate) => {
                let rate = rate.max(1) as f64;
                inner.option_bucket.try_take(rate, rate, Instant::now())
            }
        }
    }

    /// Remembers that `client_id` was told to wait `secs` seconds from now.
    pub(crate) fn announce_retry_after(&self, client_id: Option<&str>, secs: u64) {
        let Some(client_id) = client_id else { return };
        let now = Instant::now();
        let mut inner = self.lock();
        let grace = Duration::from_millis(inner.faults.retry_after_grace_ms);
        let (start, end) = (now + grace, now + Duration::from_secs(secs));
        if end <= start {
            return;
        }
        let window = match inner.retry_windows.get(client_id) {
            Some(&(s, e)) if e >= start => (s.min(start), e.max(end)),
            _ => (start, end),
        };
        inner.retry_windows.insert(client_id.to_string(), window);
    }

    /// Applies a validated asset write (merge per attribute/locale/channel, null erases).
    /// Returns true if the asset was created.
    pub(crate) fn apply_asset(inner: &mut Inner, family: &str, asset: ValidAsset) -> bool {
        let now = crate::time::now_secs();
        let fam = inner.assets.entry(family.to_string()).or_default();
        let created = !fam.contains_key(&asset.code);
        let stored = fam.entry(asset.code).or_insert_with(|| StoredAsset {
            values: BTreeMap::new(),
            created: now,
            updated: now,
        });
        let mut changed = false;
        for ValueWrite {
            attribute,
            locale,
            channel,
            data,
        } in asset.values
        {
            let list = stored.values.entry(attribute.clone()).or_default();
            let pos = list
                .iter()
                .position(|v| v.locale == locale && v.channel == channel);
            match (pos, data.is_null()) {
                (Some(i), true) => {
                    list.remove(i);
                    changed = true;
                }
                (Some(i), false) => {
                    if list[i].data != data {
                        list[i].data = data;
                        changed = true;
                    }
                }
                (None, true) => {}
                (None, false) => {
                    list.push(StoredValue {
                        locale,
                        channel,
                        data,
                    });
                    changed = true;
                }
            }
            if list.is_empty() {
                stored.values.remove(&attribute);
            }
        }
        // `updated` moves only when the asset really changed.
        if changed && !created {
            stored.updated = now;
        }
        if created {
            inner.stats.assets_created += 1;
        } else {
            inner.stats.assets_updated += 1;
        }
        created
    }

    pub(crate) fn assets_json(&self, family: &str, base: &str) -> Vec<Value> {
        let inner = self.lock();
        inner
            .assets
            .get(family)
            .map(|fam| {
                fam.iter()
                    .map(|(code, a)| render_asset(base, family, code, a, &ValueFilter::default()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn asset_json(&self, family: &str, code: &str, base: &str) -> Option<Value> {
        let inner = self.lock();
        let a = inner.assets.get(family)?.get(code)?;
        Some(render_asset(base, family, code, a, &ValueFilter::default()))
    }

    /// An uploaded media file's original name and bytes.
    pub(crate) fn media_file(&self, code: &str) -> Option<(String, Vec<u8>)> {
        let inner = self.lock();
        let m = inner.media.get(code)?;
        Some((m.filename.clone(), m.bytes.clone()))
    }

    pub(crate) fn media_count(&self) -> usize {
        self.lock().media.len()
    }
}

fn latency_from(min: u64, max: u64, u: f64) -> Duration {
    let (lo, hi) = (min.min(max), min.max(max));
    let ms = lo + ((hi - lo + 1) as f64 * u) as u64;
    Duration::from_millis(ms.min(hi))
}

/// `channel` / `locales` query parameters of the asset list.
#[derive(Default)]
pub(crate) struct ValueFilter {
    pub channel: Option<String>,
    pub locales: Option<Vec<String>>,
}

pub(crate) fn render_asset(
    base: &str,
    family: &str,
    code: &str,
    a: &StoredAsset,
    filter: &ValueFilter,
) -> Value {
    let mut values = serde_json::Map::new();
    for (attr, list) in &a.values {
        let kept: Vec<Value> = list
            .iter()
            .filter(|v| match (&filter.channel, &v.channel) {
                (Some(want), Some(c)) => want == c,
                _ => true,
            })
            .filter(|v| match (&filter.locales, &v.locale) {
                (Some(want), Some(l)) => want.contains(l),
                _ => true,
            })
            .map(|v| json!({"locale": v.locale, "channel": v.channel, "data": v.data}))
            .collect();
        if !kept.is_empty() {
            values.insert(attr.clone(), Value::Array(kept));
        }
    }
    json!({
        "_links": {"self": {"href": format!("{base}/api/rest/v1/asset-families/{family}/assets/{code}")}},
        "code": code,
        "values": values,
        "created": crate::time::format_ts(a.created),
        "updated": crate::time::format_ts(a.updated),
    })
}
