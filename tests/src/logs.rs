//! `tracing` in a test process where many tests run side by side on their own threads.
//!
//! `tracing` caches each callsite's interest for the whole process, computed from the
//! subscribers alive when the callsite is first hit (or when a subscriber is created). A
//! callsite first hit while no interested subscriber exists is cached as "never"; if that races
//! with another thread installing its scoped subscriber, the stale "never" stays and the test
//! capturing logs misses its events. The global subscriber installed here answers "sometimes"
//! for every callsite, so every event asks the subscriber current on its thread.

use std::sync::Once;

use tracing::subscriber::{DefaultGuard, Interest};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

/// Installs the process's global subscriber, once: events `RUST_LOG` selects (errors by
/// default) go to the test's captured output, and no callsite is ever cached as "never".
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::from_default_env())
            .with(fmt::layer().with_test_writer())
            .with(AskEveryEvent);
        // Also forwards `log` records. Only fails if something else installed a global
        // subscriber first, which then decides alone.
        let _ = subscriber.try_init();
    });
}

/// Makes `subscriber` the default on this thread until the guard drops, for a test that reads
/// the logs it writes. Tests running on other threads keep their own default.
pub fn capture(subscriber: impl Subscriber + Send + Sync + 'static) -> DefaultGuard {
    init();
    let guard = tracing::subscriber::set_default(subscriber);
    // A callsite registered by another thread while `set_default` ran may have missed it.
    tracing::callsite::rebuild_interest_cache();
    guard
}

/// Leaves the decision to `enabled`, asked at every event, instead of the interest cache.
struct AskEveryEvent;

impl<S: Subscriber> Layer<S> for AskEveryEvent {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }

    // No level is ruled out up front either: a scoped subscriber may want any.
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }
}
