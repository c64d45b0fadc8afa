//! The metrics each function emits, checked as EMF documents against the specification
//! (`dam_sync_tests::emf`, written from the spec, not from the builder).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dam_sync_tests::emf::validate;
use serde_json::Value;
use shared::akeneo::CallCounts;
use shared::consumer::{BatchOutcome, Report};
use shared::dam::DamError;
use shared::ingest::IngestResponse;
use shared::observability::{
    Metrics, NAMESPACE, Unit, consumer_metrics, function, ingest_metrics, metric, poller_metrics,
};
use shared::poller::{Mode, PollError, RunReport, StopReason};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn docs(m: &Metrics) -> Vec<Value> {
    let lines = m.to_lines(now_ms());
    assert!(!lines.is_empty());
    lines
        .iter()
        .map(|l| validate(l).unwrap_or_else(|e| panic!("invalid EMF ({e}): {l}")))
        .collect()
}

fn metric_names(doc: &Value) -> Vec<String> {
    doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_consumer_batch_is_one_valid_document_with_every_counter() {
    let outcome = BatchOutcome {
        retry: vec![("m3".into(), "DAM temporarily unavailable".into())],
        dead_lettered: vec![("m4".into(), "422".into())],
        report: Report {
            messages: 6,
            assets: 5,
            synced: 2,
            skipped_unchanged: 1,
            failed: 2,
            poison: 1,
            dead_letters_sent: 2,
            ..Report::default()
        },
        pim: CallCounts {
            calls: 7,
            throttled: 3,
            retries: 4,
            max_in_flight: 2,
        },
        freshness_ms: vec![1_200, 3_400],
    };
    let docs = docs(&consumer_metrics(&outcome));
    assert_eq!(docs.len(), 1);
    let doc = &docs[0];
    let directive = &doc["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], NAMESPACE);
    assert_eq!(directive["Dimensions"], serde_json::json!([["Function"]]));
    assert_eq!(doc["Function"], function::ASSET_CONSUMER);
    for (name, value) in [
        (metric::MESSAGES, 6),
        (metric::ASSETS_SYNCED, 2),
        (metric::ASSETS_FAILED, 2),
        (metric::ASSETS_SKIPPED_UNCHANGED, 1),
        (metric::POISON_MESSAGES, 1),
        (metric::MESSAGES_RETRIED, 1),
        (metric::DLQ_SENDS, 2),
        (metric::PIM_CALLS, 7),
        (metric::PIM_THROTTLED, 3),
        (metric::PIM_RETRIES, 4),
    ] {
        assert_eq!(doc[name], value, "{name}: {doc}");
    }
    assert_eq!(doc[metric::FRESHNESS], serde_json::json!([1200, 3400]));
    let units: Vec<(String, String)> = directive["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["Name"].as_str().unwrap().into(),
                m["Unit"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(units.contains(&(metric::FRESHNESS.into(), "Milliseconds".into())));
    assert!(units.contains(&(metric::ASSETS_SYNCED.into(), "Count".into())));
}

#[test]
fn a_large_batch_splits_freshness_into_documents_of_100_values() {
    let outcome = BatchOutcome {
        report: Report {
            synced: 250,
            ..Report::default()
        },
        freshness_ms: (0..250).collect(),
        ..BatchOutcome::default()
    };
    let docs = docs(&consumer_metrics(&outcome));
    assert_eq!(docs.len(), 3);
    let samples: usize = docs
        .iter()
        .map(|d| d[metric::FRESHNESS].as_array().unwrap().len())
        .sum();
    assert_eq!(samples, 250);
    // Counters are published once, not once per document.
    let synced: Vec<_> = docs
        .iter()
        .filter(|d| metric_names(d).contains(&metric::ASSETS_SYNCED.to_string()))
        .collect();
    assert_eq!(synced.len(), 1);
}

#[test]
fn over_100_metrics_never_share_a_directive() {
    let mut m = Metrics::new(function::ASSET_CONSUMER);
    for i in 0..205 {
        m.values(&format!("Metric{i}"), Unit::Count, [i as f64]);
    }
    let docs = docs(&m);
    assert_eq!(docs.len(), 3);
    let total: usize = docs.iter().map(|d| metric_names(d).len()).sum();
    assert_eq!(total, 205);
}

fn report(stop: StopReason) -> RunReport {
    RunReport {
        mode: Mode::Incremental,
        cursor_name: "reconcile".into(),
        stop,
        dam_calls: 3,
        pages: 2,
        events_enqueued: 150,
        already_applied: 40,
        cursor_before_ms: Some(now_ms() - 600_000),
        cursor_after_ms: Some(now_ms() - 120_000),
        resumed: false,
        resume_saved: false,
    }
}

#[test]
fn a_successful_poll_reports_pages_lag_and_success_per_mode() {
    let started = SystemTime::now();
    let docs = docs(&poller_metrics(
        Mode::Incremental,
        &Ok(report(StopReason::Complete)),
        started,
    ));
    assert_eq!(docs.len(), 1);
    let doc = &docs[0];
    assert_eq!(
        doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        serde_json::json!([["Function"], ["Function", "Mode"]])
    );
    assert_eq!(doc["Function"], function::RECONCILE_POLLER);
    assert_eq!(doc["Mode"], "incremental");
    assert_eq!(doc[metric::POLL_SUCCEEDED], 1);
    assert_eq!(doc[metric::POLL_DAM_ERRORS], 0);
    assert_eq!(doc[metric::POLL_PAGES], 2);
    assert_eq!(doc[metric::POLL_EVENTS_ENQUEUED], 150);
    let lag = doc[metric::POLL_LAG].as_u64().unwrap();
    assert!((120_000..130_000).contains(&lag), "{lag}");
    assert_eq!(doc["StopReason"], "complete");
}

#[test]
fn a_dam_outage_and_a_held_lease_are_not_successes() {
    let started = SystemTime::now();
    let down = Err(PollError::Dam {
        source: DamError::Transient("503".into()),
        report: Box::new(report(StopReason::Failed)),
    });
    let doc = &docs(&poller_metrics(Mode::Incremental, &down, started))[0];
    assert_eq!(doc[metric::POLL_SUCCEEDED], 0);
    assert_eq!(doc[metric::POLL_DAM_ERRORS], 1);
    assert_eq!(doc["StopReason"], "failed");

    let held = Ok(RunReport {
        cursor_after_ms: None,
        ..report(StopReason::LeaseHeld)
    });
    let doc = &docs(&poller_metrics(Mode::Backfill, &held, started))[0];
    assert_eq!(doc[metric::POLL_SUCCEEDED], 0);
    assert_eq!(doc[metric::POLL_LEASE_HELD], 1);
    assert_eq!(doc["Mode"], "backfill");
    assert!(doc.get(metric::POLL_LAG).is_none(), "no cursor, no lag");

    let limited = Ok(report(StopReason::RateLimited {
        retry_after_ms: Some(Duration::from_secs(5).as_millis() as u64),
    }));
    let doc = &docs(&poller_metrics(Mode::Incremental, &limited, started))[0];
    assert_eq!(doc[metric::POLL_RATE_LIMITED], 1);
    assert_eq!(doc[metric::POLL_SUCCEEDED], 1, "progress was made and kept");
}

#[test]
fn each_webhook_delivery_is_counted_by_status_class() {
    for (status, queued, accepted, rejected, failed) in
        [(202, 3, 1, 0, 0), (401, 0, 0, 1, 0), (503, 0, 0, 0, 1)]
    {
        let response = IngestResponse {
            status,
            body: String::new(),
            queued,
        };
        let doc = &docs(&ingest_metrics(&response))[0];
        assert_eq!(doc["Function"], function::WEBHOOK_INGEST);
        assert_eq!(doc[metric::WEBHOOKS_RECEIVED], 1);
        assert_eq!(doc[metric::WEBHOOKS_ACCEPTED], accepted, "{status}");
        assert_eq!(doc[metric::WEBHOOKS_REJECTED], rejected, "{status}");
        assert_eq!(doc[metric::WEBHOOKS_FAILED], failed, "{status}");
        assert_eq!(doc[metric::EVENTS_QUEUED], queued as u64);
        assert_eq!(doc["Status"], status);
    }
}
