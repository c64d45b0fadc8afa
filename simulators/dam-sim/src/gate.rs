//! Fault injection, accounting and the vendors' rate limits, applied to the API routes only
//! (never to `/_sim/...` control routes).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::Shared;

/// API fault knobs. Random draws come from the simulator's seeded RNG.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Every API call answers 503 (a DAM outage).
    pub down: bool,
    /// Probability in [0, 1] that an API call answers `error_status` instead.
    pub error_rate: f64,
    /// Status of injected errors; 500 when unset (0).
    pub error_status: u16,
    /// Added latency per API call, drawn uniformly in [min, max] ms.
    pub latency_min_ms: u64,
    pub latency_max_ms: u64,
    /// Only routes whose key ("METHOD /route/{template}") contains this are affected, e.g.
    /// `/api/v4/` for Bynder alone. Every API route when unset.
    pub only_routes: Option<String>,
}

/// Calls per route ("METHOD /path/{template}") and status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub calls: BTreeMap<String, BTreeMap<u16, u64>>,
}

impl Stats {
    /// Calls to routes whose key contains `route_part`, any status.
    pub fn count(&self, route_part: &str) -> u64 {
        self.calls
            .iter()
            .filter(|(k, _)| k.contains(route_part))
            .flat_map(|(_, m)| m.values())
            .sum()
    }

    /// Calls to routes whose key contains `route_part` that answered `status`.
    pub fn count_status(&self, route_part: &str, status: u16) -> u64 {
        self.calls
            .iter()
            .filter(|(k, _)| k.contains(route_part))
            .filter_map(|(_, m)| m.get(&status))
            .sum()
    }

    pub fn total(&self) -> u64 {
        self.calls.values().flat_map(|m| m.values()).sum()
    }
}

/// Outage, injected errors, latency and accounting around every API route.
pub(crate) async fn api_gate(
    State(shared): State<Arc<Shared>>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let route = format!(
        "{} {}",
        req.method(),
        matched.as_ref().map_or(req.uri().path(), |m| m.as_str())
    );
    let (down, fail, status, delay) = {
        let mut f = shared.faults.lock().expect("faults lock").clone();
        if f.only_routes
            .as_ref()
            .is_some_and(|r| !route.contains(r.as_str()))
        {
            f = Faults::default();
        }
        let mut rng = shared.rng.lock().expect("rng lock");
        let fail = f.error_rate > 0.0 && rng.f64() < f.error_rate;
        let max = f.latency_max_ms.max(f.latency_min_ms);
        let delay = if max > 0 {
            rng.u64(f.latency_min_ms..=max)
        } else {
            0
        };
        let status =
            StatusCode::from_u16(f.error_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (f.down, fail, status, delay)
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let response = if down {
        (StatusCode::SERVICE_UNAVAILABLE, "dam-sim: down").into_response()
    } else if fail {
        (status, "dam-sim: injected error").into_response()
    } else {
        next.run(req).await
    };
    let mut stats = shared.stats.lock().expect("stats lock");
    *stats
        .calls
        .entry(route)
        .or_default()
        .entry(response.status().as_u16())
        .or_default() += 1;
    response
}

/// Cloudinary's Admin API budget: `limit` calls per fixed window (an hour by default),
/// reported on every response in `X-FeatureRateLimit-*` headers.
#[derive(Debug)]
pub(crate) struct HourlyBudget {
    pub limit: u64,
    pub window: Duration,
    used: u64,
    window_start: Instant,
    window_start_wall: SystemTime,
}

pub(crate) struct BudgetState {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    pub reset: SystemTime,
}

impl HourlyBudget {
    pub fn new(limit: u64, window: Duration) -> Self {
        Self {
            limit,
            window,
            used: 0,
            window_start: Instant::now(),
            window_start_wall: SystemTime::now(),
        }
    }

    pub fn take(&mut self) -> BudgetState {
        if self.window_start.elapsed() >= self.window {
            self.used = 0;
            self.window_start = Instant::now();
            self.window_start_wall = SystemTime::now();
        }
        let allowed = self.used < self.limit;
        if allowed {
            self.used += 1;
        }
        BudgetState {
            allowed,
            limit: self.limit,
            remaining: self.limit - self.used,
            reset: self.window_start_wall + self.window,
        }
    }
}

/// Bynder's limit: `limit` requests per sliding `window`. Once exceeded every request is
/// refused until a full window passes without requests: calls during the block extend it.
#[derive(Debug)]
pub(crate) struct SlidingBlock {
    pub limit: usize,
    pub window: Duration,
    hits: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

impl SlidingBlock {
    pub fn new(limit: usize, window: Duration) -> Self {
        Self {
            limit,
            window,
            hits: VecDeque::new(),
            blocked_until: None,
        }
    }

    pub fn allow(&mut self) -> bool {
        let now = Instant::now();
        if let Some(until) = self.blocked_until {
            if now < until {
                self.blocked_until = Some(now + self.window);
                return false;
            }
            self.blocked_until = None;
            self.hits.clear();
        }
        while self
            .hits
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            self.hits.pop_front();
        }
        if self.hits.len() >= self.limit {
            self.blocked_until = Some(now + self.window);
            return false;
        }
        self.hits.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_block_extends_while_called() {
        let mut b = SlidingBlock::new(2, Duration::from_millis(400));
        assert!(b.allow() && b.allow());
        assert!(!b.allow(), "third call in the window is refused");
        std::thread::sleep(Duration::from_millis(250));
        assert!(!b.allow(), "still blocked, and this call extends the block");
        std::thread::sleep(Duration::from_millis(250));
        assert!(
            !b.allow(),
            "500 ms after the first refusal, but only 250 since the last"
        );
        std::thread::sleep(Duration::from_millis(450));
        assert!(b.allow(), "a quiet full window lifts the block");
    }

    #[test]
    fn hourly_budget_counts_down_and_refuses_when_spent() {
        let mut b = HourlyBudget::new(2, Duration::from_secs(3600));
        let s1 = b.take();
        assert!(s1.allowed && s1.remaining == 1);
        let s2 = b.take();
        assert!(s2.allowed && s2.remaining == 0);
        let s3 = b.take();
        assert!(!s3.allowed && s3.remaining == 0 && s3.limit == 2);
        assert!(s3.reset > SystemTime::now());
    }
}
