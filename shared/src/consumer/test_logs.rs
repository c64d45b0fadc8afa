//! Capturing the JSON log lines one test writes, whatever the tests around it do.
//!
//! Tracing caches per process whether a callsite is enabled, asking the subscribers alive when
//! the callsite is first hit (or, with a single one registered, only the calling thread's).
//! A callsite first hit by a test that captures nothing would then stay disabled for the test
//! that captures it. A process-wide subscriber that answers "sometimes" for every callsite
//! makes tracing ask the current thread's subscriber at each event instead.

use std::sync::{Arc, Mutex, Once};

use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::{DefaultGuard, Interest};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;

/// Records nothing; keeps every callsite's interest at "sometimes".
struct AskEachTime;

impl Subscriber for AskEachTime {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        false
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the Lambda JSON subscriber writes at `info` on the current thread while it lives.
pub(crate) struct Capture {
    buffer: Buffer,
    _default: DefaultGuard,
}

pub(crate) fn capture() -> Capture {
    static ASK_EACH_TIME: Once = Once::new();
    ASK_EACH_TIME.call_once(|| {
        let _ = tracing::subscriber::set_global_default(AskEachTime);
    });
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber =
        crate::observability::subscriber(EnvFilter::new("info"), move || writer.clone());
    let default = tracing::subscriber::set_default(subscriber);
    // A callsite registered while the process-wide subscriber was being installed may have
    // missed it.
    tracing::callsite::rebuild_interest_cache();
    Capture {
        buffer,
        _default: default,
    }
}

impl Capture {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.buffer.0.lock().unwrap().clone()).unwrap()
    }

    /// The lines written so far, parsed.
    pub(crate) fn lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}
