//! "DAM down → cursor unchanged and an error metric": besides the `dam_errors` counter, a failed
//! run logs one structured event naming the metric, which a log-based metric or an EMF exporter
//! can count.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use shared::poller::{PollMetrics, Poller, PollerSettings};
use shared::store::CursorStore;
use shared::testing::{MemoryChangeQueue, MemorySource, MemoryStore};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_dam_outage_keeps_the_cursor_and_logs_the_error_metric() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || sink.clone())
        .finish();
    // Current-thread runtime: the whole run is polled on this thread.
    let _guard = dam_sync_tests::logs::capture(subscriber);

    let source = Arc::new(MemorySource::default());
    let store = Arc::new(MemoryStore::new());
    source.put("a", 1_000, 1);
    let poller = Poller::new(
        source.clone(),
        Arc::new(MemoryChangeQueue::new()),
        store.clone(),
        store.clone(),
        PollerSettings::default(),
    );
    let now = SystemTime::now();
    let deadline = now + Duration::from_secs(600);
    poller.run(now, deadline).await.unwrap();
    let before = store.get("reconcile").await.unwrap();
    source.set_down(true);
    poller.run(now, deadline).await.unwrap_err();
    poller.run(now, deadline).await.unwrap_err();

    assert_eq!(store.get("reconcile").await.unwrap(), before);
    assert_eq!(PollMetrics::get(&poller.metrics().dam_errors), 2);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["fields"]["metric"] == "PollerDamErrors")
        .collect();
    assert_eq!(events.len(), 2, "{text}");
    assert_eq!(events[0]["level"], "ERROR");
    assert_eq!(events[0]["fields"]["value"], 1);
    assert_eq!(events[1]["fields"]["dam_errors"], 2);
}
