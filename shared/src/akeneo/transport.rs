//! One HTTP exchange with the PIM, paced and retried.
//!
//! Pacing is process-wide: one in-flight limit (Akeneo allows 4 concurrent calls per
//! connection), one request-rate limit (100 requests per second per instance) and one
//! Retry-After gate, so that after a 429 no task starts a new call before the PIM said it may.
//! Retries use exponential backoff with full jitter and never sleep past the caller's deadline.
//! backon/tower retry layers were not used because the gate and the deadline are shared state
//! across requests, which their per-request policies do not model.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;
use url::Url;

use super::config::{Limits, RetryPolicy};
use super::error::{AkeneoError, is_retriable_status};

/// What a request carries. Multipart forms are not clonable, so they are rebuilt per attempt.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Empty,
    Json(Bytes),
    Multipart {
        file_name: String,
        mime: String,
        bytes: Bytes,
    },
}

/// A request, replayable across attempts.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub method: Method,
    pub url: Url,
    /// Route template for errors and logs, e.g. `PATCH /asset-families/{family}/assets`.
    pub route: &'static str,
    pub payload: Payload,
    pub basic_auth: Option<(String, SecretString)>,
}

/// A final answer from the PIM (success or a status that retrying will not change).
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// Akeneo's `{"code":..,"message":..}` error body, or the raw text.
    pub fn message(&self) -> String {
        error_message(&self.body, self.status)
    }

    pub fn into_error(self, route: &str) -> AkeneoError {
        AkeneoError::Http {
            status: self.status.as_u16(),
            route: route.to_string(),
            message: self.message(),
            retry_after: retry_after(&self.headers),
        }
    }
}

pub(crate) fn error_message(body: &[u8], status: StatusCode) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        message: String,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(b) => b.message,
        Err(_) if body.is_empty() => status
            .canonical_reason()
            .unwrap_or("no message")
            .to_string(),
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
    }
}

/// Counters of what this process sent, for reports and metrics.
#[derive(Debug, Default)]
pub struct CallStats {
    /// HTTP attempts sent, retries included.
    pub calls: AtomicU64,
    /// Attempts the PIM answered 429 Too Many Requests.
    pub throttled: AtomicU64,
    pub retries: AtomicU64,
    pub max_in_flight: AtomicUsize,
    in_flight: AtomicUsize,
}

/// A snapshot of [`CallStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounts {
    pub calls: u64,
    pub throttled: u64,
    pub retries: u64,
    pub max_in_flight: usize,
}

impl CallCounts {
    /// What happened between `earlier` and this snapshot (the high-water mark is kept).
    pub fn since(&self, earlier: &CallCounts) -> CallCounts {
        CallCounts {
            calls: self.calls.saturating_sub(earlier.calls),
            throttled: self.throttled.saturating_sub(earlier.throttled),
            retries: self.retries.saturating_sub(earlier.retries),
            max_in_flight: self.max_in_flight,
        }
    }
}

impl CallStats {
    pub fn snapshot(&self) -> CallCounts {
        CallCounts {
            calls: self.calls.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            max_in_flight: self.max_in_flight.load(Ordering::Relaxed),
        }
    }
}

/// Process-wide pacing shared by every request of one client.
struct Pacer {
    in_flight: Semaphore,
    rate: Option<DefaultDirectRateLimiter>,
    /// No new call before this instant (set from Retry-After).
    gate: Mutex<Option<Instant>>,
}

impl Pacer {
    fn new(limits: &Limits) -> Self {
        let rate = limits
            .requests_per_second
            .and_then(NonZeroU32::new)
            .map(|rps| {
                // Burst of one: calls are spaced evenly, so no one-second window ever holds more
                // than the documented per-second cap.
                RateLimiter::direct(Quota::per_second(rps).allow_burst(NonZeroU32::MIN))
            });
        Pacer {
            in_flight: Semaphore::new(limits.max_in_flight.max(1)),
            rate,
            gate: Mutex::new(None),
        }
    }

    fn gate(&self) -> Option<Instant> {
        *self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close_gate_until(&self, until: Instant) {
        let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        if gate.is_none_or(|g| g < until) {
            *gate = Some(until);
        }
    }

    /// Waits for an in-flight slot, a rate-limit cell and an open Retry-After gate, in that
    /// order, so that the call starts right after the last check.
    async fn admit(
        &self,
        deadline: Instant,
        route: &str,
    ) -> Result<SemaphorePermit<'_>, AkeneoError> {
        let late = || AkeneoError::Deadline(format!("waiting for a free PIM slot for {route}"));
        let permit = tokio::time::timeout_at(deadline, self.in_flight.acquire())
            .await
            .map_err(|_| late())?
            .map_err(|_| AkeneoError::Protocol("client is shut down".into()))?;
        loop {
            if let Some(rate) = &self.rate {
                tokio::time::timeout_at(deadline, rate.until_ready())
                    .await
                    .map_err(|_| late())?;
            }
            match self.gate() {
                Some(open_at) if open_at > Instant::now() => {
                    if open_at > deadline {
                        return Err(AkeneoError::Deadline(format!(
                            "the PIM asked us to wait (Retry-After) past the deadline for {route}"
                        )));
                    }
                    tokio::time::sleep_until(open_at).await;
                }
                _ => return Ok(permit),
            }
        }
    }
}

/// Sends calls with pacing and retries.
pub(crate) struct Transport {
    http: reqwest::Client,
    pacer: Pacer,
    limits: Limits,
    pub stats: CallStats,
}

enum Attempt {
    Done(Reply),
    Retry {
        error: AkeneoError,
        retry_after: Option<Duration>,
    },
}

impl Transport {
    pub fn new(limits: Limits) -> Result<Self, AkeneoError> {
        let http = crate::https::client_builder()
            .connect_timeout(limits.connect_timeout)
            // Idle pooled connections may be reset after a Lambda freeze; keep the pool short.
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("dam-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AkeneoError::Protocol(format!("cannot build the HTTP client: {e}")))?;
        Ok(Transport {
            http,
            pacer: Pacer::new(&limits),
            limits,
            stats: CallStats::default(),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Sends `call`, retrying 408/429/5xx, timeouts and connection errors. Returns the first
    /// final reply (any status that retrying will not change, 401 included: the caller owns
    /// authentication), or the last retriable error when attempts or time run out.
    pub async fn execute(
        &self,
        call: &Call,
        bearer: Option<&str>,
        deadline: Instant,
    ) -> Result<Reply, AkeneoError> {
        let policy = &self.limits.retry;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let (error, retry_after) = match self.attempt(call, bearer, deadline).await? {
                Attempt::Done(reply) => return Ok(reply),
                Attempt::Retry { error, retry_after } => (error, retry_after),
            };
            if attempt >= policy.max_attempts.max(1) {
                return Err(error);
            }
            let now = Instant::now();
            let wait = match retry_after {
                Some(ra) => {
                    // Everyone waits, not just this request: Akeneo's limits are per connection
                    // and per instance.
                    self.pacer.close_gate_until(now + ra);
                    ra
                }
                None => full_jitter(policy, attempt),
            };
            if now + wait >= deadline {
                return Err(error);
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(route = call.route, attempt, ?wait, %error, "Retrying PIM call.");
            if retry_after.is_none() {
                tokio::time::sleep(wait).await;
            }
        }
    }

    async fn attempt(
        &self,
        call: &Call,
        bearer: Option<&str>,
        deadline: Instant,
    ) -> Result<Attempt, AkeneoError> {
        let permit = self.pacer.admit(deadline, call.route).await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(AkeneoError::Deadline(format!(
                "no time left for {}",
                call.route
            )));
        }
        let timeout = self.limits.request_timeout.min(remaining);

        let mut request = self
            .http
            .request(call.method.clone(), call.url.clone())
            .timeout(timeout);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some((user, secret)) = &call.basic_auth {
            request = request.basic_auth(user, Some(secret.expose_secret()));
        }
        request = match &call.payload {
            Payload::Empty => request,
            Payload::Json(body) => request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone()),
            Payload::Multipart {
                file_name,
                mime,
                bytes,
            } => {
                let part = reqwest::multipart::Part::stream(bytes.clone())
                    .file_name(file_name.clone())
                    .mime_str(mime)
                    .map_err(|e| {
                        AkeneoError::Protocol(format!("invalid MIME type {mime:?}: {e}"))
                    })?;
                request.multipart(reqwest::multipart::Form::new().part("file", part))
            }
        };

        let in_flight = self.stats.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.stats
            .max_in_flight
            .fetch_max(in_flight, Ordering::Relaxed);
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let sent = async {
            let response = request.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>(Reply {
                status,
                headers,
                body,
            })
        }
        .await;
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        if matches!(&sent, Err(e) if e.is_timeout()) {
            // Akeneo counts its own in-flight calls: one we gave up on may still be running
            // there, so its slot is not reused at once (else the PIM sees a 5th call, a 429).
            let hold = self.limits.abandoned_call_hold;
            tokio::time::sleep_until(deadline.min(Instant::now() + hold)).await;
        }
        drop(permit);

        match sent {
            Ok(reply) if is_retriable_status(reply.status.as_u16()) => {
                let retry_after = retry_after(&reply.headers);
                if reply.status == StatusCode::TOO_MANY_REQUESTS {
                    self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Attempt::Retry {
                    error: reply.into_error(call.route),
                    retry_after,
                })
            }
            Ok(reply) => Ok(Attempt::Done(reply)),
            Err(e) if e.is_timeout() => Ok(Attempt::Retry {
                error: AkeneoError::Timeout(timeout),
                retry_after: None,
            }),
            // Connection refused or reset (e.g. a pooled connection closed after a Lambda
            // freeze): PATCH upserts are idempotent, so another attempt is safe.
            Err(e) if e.is_connect() || e.is_request() || e.is_body() => Ok(Attempt::Retry {
                error: AkeneoError::Unreachable {
                    url: origin(&call.url),
                    reason: crate::net::cause(&e).to_string(),
                    source: e,
                },
                retry_after: None,
            }),
            Err(e) => Err(AkeneoError::Protocol(format!(
                "{}: {}",
                call.route,
                root_cause(&e)
            ))),
        }
    }
}

/// Full jitter (AWS Architecture Blog): a uniform draw below the exponential ceiling, so
/// retrying clients spread out instead of stampeding together.
fn full_jitter(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let ceiling = policy
        .initial_backoff
        .saturating_mul(1u32 << exp)
        .min(policy.max_backoff);
    let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=ms))
}

/// Akeneo sends Retry-After in integer seconds (its PHP client rejects HTTP dates too).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_stays_under_the_exponential_ceiling() {
        let policy = RetryPolicy {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        };
        for attempt in 1..12 {
            let ceiling =
                Duration::from_millis(100 * (1 << (attempt - 1).min(20))).min(policy.max_backoff);
            for _ in 0..200 {
                assert!(full_jitter(&policy, attempt) <= ceiling);
            }
        }
        // Full jitter draws across the whole range, not just near the ceiling.
        let draws: Vec<_> = (0..500).map(|_| full_jitter(&policy, 6)).collect();
        assert!(draws.iter().any(|d| *d < Duration::from_millis(500)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(1500)));
    }

    #[test]
    fn parses_integer_retry_after_only() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn error_message_prefers_akeneo_body() {
        let body = br#"{"code":404,"message":"Asset family \"x\" does not exist."}"#;
        assert_eq!(
            error_message(body, StatusCode::NOT_FOUND),
            "Asset family \"x\" does not exist."
        );
        assert_eq!(error_message(b"", StatusCode::BAD_GATEWAY), "Bad Gateway");
        assert_eq!(error_message(b"oops", StatusCode::BAD_GATEWAY), "oops");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_gate_holds_every_new_call() {
        let pacer = Pacer::new(&Limits {
            requests_per_second: None,
            ..Limits::default()
        });
        let start = Instant::now();
        pacer.close_gate_until(start + Duration::from_secs(2));
        // A shorter Retry-After never reopens the gate early.
        pacer.close_gate_until(start + Duration::from_secs(1));
        let deadline = start + Duration::from_secs(10);
        let _permit = pacer.admit(deadline, "test").await.unwrap();
        assert!(Instant::now() >= start + Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn gate_past_the_deadline_fails_fast() {
        let pacer = Pacer::new(&Limits::default());
        let start = Instant::now();
        pacer.close_gate_until(start + Duration::from_secs(60));
        let err = pacer
            .admit(start + Duration::from_secs(5), "test")
            .await
            .unwrap_err();
        assert!(matches!(err, AkeneoError::Deadline(_)));
        assert!(
            Instant::now() < start + Duration::from_secs(1),
            "must not sleep to the deadline"
        );
    }
}
