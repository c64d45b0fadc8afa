//! Logs and metrics of the Lambda functions (docs/observability.md).
//!
//! - **Logs**: one JSON object per line in the shape of Lambda's JSON log format (`timestamp`
//!   RFC 3339, `level`, `message`), with the fields of every enclosing span flattened into the
//!   line: `requestId` from the runtime's invocation span, `dam`, `dam_id`, `family` and
//!   `outcome` from the consumer's per-asset span. CloudWatch Logs Insights then filters on
//!   them directly (`filter dam_id = "..."`), and Lambda's log-level filtering reads `level`.
//! - **Metrics**: CloudWatch Embedded Metric Format (EMF) documents printed to stdout, one per
//!   line. CloudWatch extracts the metrics from the log stream, so the functions make no
//!   metrics API calls and need no `cloudwatch:PutMetricData` permission.
//!
//! Handlers call one `emit_*` function per invocation; the builders (`*_metrics`) are pure so
//! tests can check every document.

use std::io::Write as _;
use std::time::SystemTime;

use crate::time::epoch_ms;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::consumer::BatchOutcome;
use crate::ingest::IngestResponse;
use crate::poller::{Mode, PollError, RunReport, StopReason};

/// The CloudWatch namespace of every dam-sync metric.
pub const NAMESPACE: &str = "DamSync";

/// Dimension names.
pub mod dimension {
    /// The function's stable name ([`super::function`]), not the deployed function name, so
    /// alarms and dashboards do not depend on the stack's generated names.
    pub const FUNCTION: &str = "Function";
    /// Poller only: `incremental` or `backfill`.
    pub const MODE: &str = "Mode";
}

/// Values of the `Function` dimension.
pub mod function {
    pub const WEBHOOK_INGEST: &str = "webhook-ingest";
    pub const ASSET_CONSUMER: &str = "asset-consumer";
    pub const RECONCILE_POLLER: &str = "reconcile-poller";
}

/// Metric names, by function. docs/observability.md explains each one.
pub mod metric {
    // asset-consumer
    pub const MESSAGES: &str = "Messages";
    pub const ASSETS_SYNCED: &str = "AssetsSynced";
    pub const ASSETS_FAILED: &str = "AssetsFailed";
    pub const ASSETS_SKIPPED_UNCHANGED: &str = "AssetsSkippedUnchanged";
    pub const ASSETS_SKIPPED_UNMAPPED: &str = "AssetsSkippedUnmapped";
    pub const ASSETS_STALE: &str = "AssetsStale";
    pub const ASSETS_DELETED: &str = "AssetsDeleted";
    pub const POISON_MESSAGES: &str = "PoisonMessages";
    pub const MESSAGES_RETRIED: &str = "MessagesRetried";
    pub const DLQ_SENDS: &str = "DlqSends";
    pub const PIM_CALLS: &str = "PimCalls";
    pub const PIM_THROTTLED: &str = "PimThrottled";
    pub const PIM_RETRIES: &str = "PimRetries";
    pub const FRESHNESS: &str = "Freshness";
    // reconcile-poller
    pub const POLL_SUCCEEDED: &str = "PollSucceeded";
    pub const POLL_DAM_ERRORS: &str = "PollDamErrors";
    pub const POLL_QUEUE_ERRORS: &str = "PollQueueErrors";
    pub const POLL_RATE_LIMITED: &str = "PollRateLimited";
    pub const POLL_LEASE_HELD: &str = "PollLeaseHeld";
    pub const POLL_PAGES: &str = "PollPages";
    pub const POLL_DAM_CALLS: &str = "PollDamCalls";
    pub const POLL_EVENTS_ENQUEUED: &str = "PollEventsEnqueued";
    pub const POLL_LAG: &str = "PollLag";
    // webhook-ingest
    pub const WEBHOOKS_RECEIVED: &str = "WebhooksReceived";
    pub const WEBHOOKS_ACCEPTED: &str = "WebhooksAccepted";
    pub const WEBHOOKS_REJECTED: &str = "WebhooksRejected";
    pub const WEBHOOKS_FAILED: &str = "WebhooksFailed";
    pub const EVENTS_QUEUED: &str = "EventsQueued";
}

/// EMF allows at most 100 metrics per directive and 100 values per metric.
pub const MAX_METRICS_PER_DIRECTIVE: usize = 100;
pub const MAX_VALUES_PER_METRIC: usize = 100;

/// The CloudWatch units this crate uses (a subset of the allowed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Metric {
    name: String,
    unit: Unit,
    values: Vec<f64>,
}

/// The metrics of one invocation, rendered as EMF documents by [`Metrics::to_lines`].
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    /// Dimension name → value; `Function` first.
    dimensions: Vec<(String, String)>,
    /// Each set is published separately; `[Function]` is always the first.
    dimension_sets: Vec<Vec<String>>,
    /// Searchable in Logs Insights, not metrics.
    properties: Map<String, Value>,
    metrics: Vec<Metric>,
}

impl Metrics {
    /// Metrics of `function` (a [`function`] value), with the dimension set `[Function]`.
    pub fn new(function: &str) -> Self {
        Self {
            dimensions: vec![(dimension::FUNCTION.into(), function.into())],
            dimension_sets: vec![vec![dimension::FUNCTION.into()]],
            properties: Map::new(),
            metrics: Vec::new(),
        }
    }

    /// Adds a dimension, published as the extra set `[Function, name]` (the `[Function]`
    /// aggregate stays available for alarms that do not care about it).
    pub fn with_dimension(mut self, name: &str, value: &str) -> Self {
        self.dimensions.push((name.into(), value.into()));
        self.dimension_sets
            .push(vec![dimension::FUNCTION.into(), name.into()]);
        self
    }

    /// A property: a top-level member that is not a metric (searchable in Logs Insights).
    pub fn property(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.properties.insert(name.into(), value.into());
        self
    }

    pub fn count(&mut self, name: &str, value: u64) -> &mut Self {
        self.values(name, Unit::Count, [value as f64])
    }

    /// A 0/1 count: alarms sum it over periods (e.g. "no successful poll in 3 periods").
    pub fn flag(&mut self, name: &str, on: bool) -> &mut Self {
        self.count(name, u64::from(on))
    }

    pub fn millis(&mut self, name: &str, value: u64) -> &mut Self {
        self.values(name, Unit::Milliseconds, [value as f64])
    }

    /// Several samples of one metric (e.g. one freshness per synced asset); CloudWatch
    /// computes percentiles over them. No samples: the metric is left out.
    pub fn values(
        &mut self,
        name: &str,
        unit: Unit,
        values: impl IntoIterator<Item = f64>,
    ) -> &mut Self {
        let values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        if values.is_empty() {
            return self;
        }
        match self.metrics.iter_mut().find(|m| m.name == name) {
            Some(m) => m.values.extend(values),
            None => self.metrics.push(Metric {
                name: name.into(),
                unit,
                values,
            }),
        }
        self
    }

    /// The value(s) recorded for `name`, for tests and reports.
    pub fn get(&self, name: &str) -> Option<&[f64]> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.values.as_slice())
    }

    pub fn dimension(&self, name: &str) -> Option<&str> {
        self.dimensions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The EMF documents, one JSON object per line: as many as the limits of 100 metrics
    /// per directive and 100 values per metric require (each repeats the dimensions and
    /// properties, so every document stands alone).
    pub fn to_lines(&self, timestamp_ms: i64) -> Vec<String> {
        let mut lines = Vec::new();
        for group in self.metrics.chunks(MAX_METRICS_PER_DIRECTIVE) {
            let rounds = group
                .iter()
                .map(|m| m.values.len().div_ceil(MAX_VALUES_PER_METRIC))
                .max()
                .unwrap_or(0);
            for round in 0..rounds {
                let mut doc = self.properties.clone();
                for (name, value) in &self.dimensions {
                    doc.insert(name.clone(), Value::from(value.as_str()));
                }
                let mut definitions = Vec::new();
                for m in group {
                    let start = round * MAX_VALUES_PER_METRIC;
                    if start >= m.values.len() {
                        continue;
                    }
                    let end = (start + MAX_VALUES_PER_METRIC).min(m.values.len());
                    let chunk = &m.values[start..end];
                    let value = match chunk {
                        [one] => number(*one),
                        many => Value::Array(many.iter().map(|v| number(*v)).collect()),
                    };
                    doc.insert(m.name.clone(), value);
                    definitions.push(json!({ "Name": m.name, "Unit": m.unit.as_str() }));
                }
                doc.insert(
                    "_aws".into(),
                    json!({
                        "Timestamp": timestamp_ms,
                        "CloudWatchMetrics": [{
                            "Namespace": NAMESPACE,
                            "Dimensions": self.dimension_sets,
                            "Metrics": definitions,
                        }],
                    }),
                );
                lines.push(Value::Object(doc).to_string());
            }
        }
        lines
    }
}

/// Whole numbers as JSON integers (counts read better), others as floats.
fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        Value::from(v as i64)
    } else {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

/// Prints the documents to stdout in one write, so no log line lands inside one.
pub fn emit(metrics: &Metrics) {
    let mut out = String::new();
    for line in metrics.to_lines(epoch_ms(SystemTime::now())) {
        out.push_str(&line);
        out.push('\n');
    }
    // A failed write to stdout only loses metrics; it must not fail the invocation.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
}

// ---- metrics of each function ----

/// The consumer's metrics for one SQS batch.
pub fn consumer_metrics(outcome: &BatchOutcome) -> Metrics {
    let r = &outcome.report;
    let mut m = Metrics::new(function::ASSET_CONSUMER);
    m.count(metric::MESSAGES, r.messages)
        .count(metric::ASSETS_SYNCED, r.synced)
        .count(metric::ASSETS_FAILED, r.failed)
        .count(metric::ASSETS_SKIPPED_UNCHANGED, r.skipped_unchanged)
        .count(metric::ASSETS_SKIPPED_UNMAPPED, r.skipped_unmapped)
        .count(metric::ASSETS_STALE, r.stale)
        .count(metric::ASSETS_DELETED, r.deleted)
        .count(metric::POISON_MESSAGES, r.poison)
        .count(metric::MESSAGES_RETRIED, outcome.retry.len() as u64)
        .count(metric::DLQ_SENDS, r.dead_letters_sent)
        .count(metric::PIM_CALLS, outcome.pim.calls)
        .count(metric::PIM_THROTTLED, outcome.pim.throttled)
        .count(metric::PIM_RETRIES, outcome.pim.retries)
        .values(
            metric::FRESHNESS,
            Unit::Milliseconds,
            outcome.freshness_ms.iter().map(|&ms| ms as f64),
        );
    m
}

pub fn emit_consumer(outcome: &BatchOutcome) {
    emit(&consumer_metrics(outcome));
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Incremental => "incremental",
        Mode::Backfill => "backfill",
    }
}

fn stop_name(stop: &StopReason) -> &'static str {
    match stop {
        StopReason::Complete => "complete",
        StopReason::LeaseHeld => "lease_held",
        StopReason::Budget => "budget",
        StopReason::Deadline => "deadline",
        StopReason::RateLimited { .. } => "rate_limited",
        StopReason::CursorConflict => "cursor_conflict",
        StopReason::Failed => "failed",
    }
}

/// The poller's metrics for one run. `PollSucceeded` is 1 for a run that worked on the
/// listing and returned normally: a run that found the lease held did nothing itself, so a
/// stuck lease shows as staleness. `PollLag` is how far the cursor is behind `started`.
pub fn poller_metrics(
    mode: Mode,
    result: &Result<RunReport, PollError>,
    started: SystemTime,
) -> Metrics {
    let mut m =
        Metrics::new(function::RECONCILE_POLLER).with_dimension(dimension::MODE, mode_name(mode));
    let report = match result {
        Ok(report) => Some(report),
        Err(e) => e.report(),
    };
    let stop = report.map(|r| &r.stop);
    m.flag(
        metric::POLL_SUCCEEDED,
        result.is_ok() && stop != Some(&StopReason::LeaseHeld),
    )
    .flag(
        metric::POLL_DAM_ERRORS,
        matches!(result, Err(PollError::Dam { .. })),
    )
    .flag(
        metric::POLL_QUEUE_ERRORS,
        matches!(result, Err(PollError::Queue { .. })),
    )
    .flag(
        metric::POLL_RATE_LIMITED,
        matches!(stop, Some(StopReason::RateLimited { .. })),
    )
    .flag(
        metric::POLL_LEASE_HELD,
        stop == Some(&StopReason::LeaseHeld),
    );
    if let Some(r) = report {
        m.count(metric::POLL_PAGES, u64::from(r.pages))
            .count(metric::POLL_DAM_CALLS, u64::from(r.dam_calls))
            .count(metric::POLL_EVENTS_ENQUEUED, r.events_enqueued);
        m.property("StopReason", stop_name(&r.stop));
        if let Some(cursor) = r.cursor_after_ms {
            let lag = epoch_ms(started).saturating_sub(cursor).max(0);
            m.millis(metric::POLL_LAG, lag as u64);
        }
    }
    m
}

pub fn emit_poller(mode: Mode, result: &Result<RunReport, PollError>, started: SystemTime) {
    emit(&poller_metrics(mode, result, started));
}

/// The ingest function's metrics for one webhook delivery.
pub fn ingest_metrics(response: &IngestResponse) -> Metrics {
    let status = response.status;
    let mut m = Metrics::new(function::WEBHOOK_INGEST);
    m.count(metric::WEBHOOKS_RECEIVED, 1)
        .flag(metric::WEBHOOKS_ACCEPTED, (200..300).contains(&status))
        .flag(metric::WEBHOOKS_REJECTED, (400..500).contains(&status))
        .flag(metric::WEBHOOKS_FAILED, status >= 500)
        .count(metric::EVENTS_QUEUED, response.queued as u64);
    m.property("Status", status);
    m
}

pub fn emit_ingest(response: &IngestResponse) {
    emit(&ingest_metrics(response));
}

// ---- logs ----

/// Formats events as Lambda JSON log lines: `timestamp`, `level`, `message`, the fields of
/// every enclosing span (outermost first, so the innermost wins a name clash), then the
/// event's own fields and its `target`.
#[derive(Debug, Default, Clone, Copy)]
pub struct LambdaJsonFormat;

impl<S, N> FormatEvent<S, N> for LambdaJsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        let timestamp = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        line.insert("timestamp".into(), Value::from(timestamp));
        line.insert(
            "level".into(),
            Value::from(meta.level().as_str().to_ascii_uppercase()),
        );
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                // Span fields are stored as JSON text by `JsonFields` (see `subscriber`).
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&fields.fields)
                {
                    line.extend(map);
                }
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        // Some library events carry only fields; the format always has a message.
        line.entry("message").or_insert_with(|| Value::from(""));
        line.insert("target".into(), Value::from(meta.target()));
        writeln!(writer, "{}", Value::Object(line))
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::from(value.to_string()));
    }
}

/// The log level: `AWS_LAMBDA_LOG_LEVEL` (Lambda's advanced logging controls) first, then
/// `RUST_LOG`, else `info`.
pub fn log_filter(get: impl Fn(&str) -> Option<String>) -> EnvFilter {
    let directives = get("AWS_LAMBDA_LOG_LEVEL")
        .map(|level| level.trim().to_ascii_lowercase())
        .or_else(|| get("RUST_LOG"))
        .filter(|d| !d.trim().is_empty())
        .unwrap_or_else(|| "info".into());
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// A subscriber writing Lambda JSON log lines to `writer`, filtered by `filter`.
pub fn subscriber<W>(filter: EnvFilter, writer: W) -> impl Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .fmt_fields(JsonFields::new())
        .event_format(LambdaJsonFormat)
        .with_env_filter(filter)
        .with_writer(writer)
        .finish()
}

/// Installs the JSON log subscriber on stdout for the whole process (once per cold start).
pub fn init_logging() {
    let filter = log_filter(|name| std::env::var(name).ok());
    // Already installed (a second call, or a test harness): keep the first one.
    let _ = tracing::subscriber::set_global_default(subscriber(filter, std::io::stdout));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_over_the_limits_are_split_into_standalone_documents() {
        let mut m = Metrics::new(function::ASSET_CONSUMER);
        for i in 0..150 {
            m.count(&format!("M{i}"), i);
        }
        m.values(
            metric::FRESHNESS,
            Unit::Milliseconds,
            (0..250).map(|v| v as f64),
        );
        let lines = m.to_lines(1_700_000_000_000);
        let docs: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // 101 metrics in the first group → Freshness (the 151st metric) is in the second
        // group, which needs 3 documents for 250 values.
        assert_eq!(docs.len(), 1 + 3);
        let mut freshness = 0;
        for doc in &docs {
            let defs = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap();
            assert!(defs.len() <= MAX_METRICS_PER_DIRECTIVE);
            assert_eq!(doc["Function"], "asset-consumer");
            if let Some(v) = doc.get(metric::FRESHNESS) {
                freshness += v.as_array().map_or(1, Vec::len);
            }
        }
        assert_eq!(freshness, 250);
        assert_eq!(docs[0]["M7"], 7);
    }

    #[test]
    fn empty_samples_leave_the_metric_out() {
        let mut m = Metrics::new(function::ASSET_CONSUMER);
        m.values(metric::FRESHNESS, Unit::Milliseconds, []);
        assert!(m.to_lines(0).is_empty());
        assert_eq!(m.get(metric::FRESHNESS), None);
    }

    #[test]
    fn log_level_prefers_lambda_controls_then_rust_log() {
        let both = |n: &str| match n {
            "AWS_LAMBDA_LOG_LEVEL" => Some("DEBUG".to_owned()),
            "RUST_LOG" => Some("warn,shared=trace".to_owned()),
            _ => None,
        };
        assert_eq!(log_filter(both).to_string(), "debug");
        let rust_log = |n: &str| (n == "RUST_LOG").then(|| "warn,shared=trace".to_owned());
        assert_eq!(log_filter(rust_log).to_string(), "shared=trace,warn");
        assert_eq!(log_filter(|_| None).to_string(), "info");
    }

    #[test]
    fn log_lines_flatten_span_fields_into_the_lambda_shape() {
        let logs = crate::consumer::test_logs::capture();
        {
            let invoke = tracing::info_span!("Lambda runtime invoke", requestId = "req-1");
            let _i = invoke.enter();
            let asset = tracing::info_span!(
                "asset",
                dam_id = "a1",
                family = tracing::field::Empty,
                outcome = tracing::field::Empty
            );
            let _a = asset.enter();
            asset.record("family", "packshot");
            asset.record("outcome", "synced");
            tracing::info!(messages = 2, "Asset processed.");
            tracing::debug!("not at info");
        }
        let text = logs.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "Asset processed.");
        assert_eq!(line["requestId"], "req-1");
        assert_eq!(line["dam_id"], "a1");
        assert_eq!(line["family"], "packshot");
        assert_eq!(line["outcome"], "synced");
        assert_eq!(line["messages"], 2);
        let ts = line["timestamp"].as_str().unwrap();
        assert!(OffsetDateTime::parse(ts, &Rfc3339).is_ok(), "{ts}");
    }
}
