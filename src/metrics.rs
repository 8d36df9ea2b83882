//! `/metrics` in Prometheus' text format (0.0.4), through `prometheus-client`:
//! counters and histograms updated per call, gauges set from the pool and
//! the recorder when scraped.
//!
//! Names, types, labels and help texts are a contract with dashboards and
//! alerts; the test below pins them.

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::pool::PoolStatus;
use crate::store::invocations::Invocation;

/// The `Content-Type` of what [`Metrics::render`] writes.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the histogram buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    function: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabels {
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// Gauges read when scraped.
pub struct Gauges {
    pub pool: PoolStatus,
    pub records_pending: usize,
    pub journal_bytes: u64,
    /// The record writer's figures (see `meter::RecordStats`).
    pub records: crate::meter::RecordStats,
    /// Whether function changes are followed through Postgres notifications.
    pub catalog_notified: bool,
}

/// The manager's metrics; one per manager, shared by every call.
pub struct Metrics {
    registry: Registry,
    invocations: Family<CallLabels, Counter>,
    durations: Family<FunctionLabels, Histogram, fn() -> Histogram>,
    cold_starts: Family<FunctionLabels, Counter>,
    waits: Histogram,
    containers: Family<StateLabels, Gauge>,
    queued: Gauge,
    memory_used: Gauge,
    memory_budget: Gauge,
    records_pending: Gauge,
    journal_bytes: Gauge,
    records: RecordMetrics,
    catalog_notified: Gauge,
}

/// The record writer's health: what waits, for how long, what was set aside
/// or is at risk. The recorder keeps running totals; the counters are moved
/// up to them at each scrape.
#[derive(Default)]
struct RecordMetrics {
    oldest_pending_seconds: Gauge<f64, AtomicU64>,
    unjournaled: Gauge,
    quarantined: Counter,
    append_failures: Counter,
    lost: Counter,
    skipped_lines: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Self {
            registry: Registry::default(),
            invocations: Family::default(),
            durations: Family::new_with_constructor(histogram),
            cold_starts: Family::default(),
            waits: histogram(),
            containers: Family::default(),
            queued: Gauge::default(),
            memory_used: Gauge::default(),
            memory_budget: Gauge::default(),
            records_pending: Gauge::default(),
            journal_bytes: Gauge::default(),
            records: RecordMetrics::default(),
            catalog_notified: Gauge::default(),
        };
        metrics.registered()
    }
}

impl Metrics {
    /// Registers every metric. The client appends the `.` to each help
    /// text and the `_total` to each counter's name.
    fn registered(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "openlambda_invocations",
            "Calls, by function and outcome",
            self.invocations.clone(),
        );
        r.register(
            "openlambda_invocation_duration_seconds",
            "Handler time per call",
            self.durations.clone(),
        );
        r.register(
            "openlambda_cold_starts",
            "Calls that had to make a container ready",
            self.cold_starts.clone(),
        );
        r.register(
            "openlambda_queue_wait_seconds",
            "Time calls waited for a container",
            self.waits.clone(),
        );
        r.register(
            "openlambda_containers",
            "Containers, by state",
            self.containers.clone(),
        );
        for (name, help, gauge) in [
            (
                "openlambda_queued_calls",
                "Calls waiting for a container",
                &self.queued,
            ),
            (
                "openlambda_pool_memory_used_mb",
                "Memory held by containers, by their limits",
                &self.memory_used,
            ),
            (
                "openlambda_pool_memory_budget_mb",
                "Memory the pool may hand out",
                &self.memory_budget,
            ),
            (
                "openlambda_records_pending",
                "Call records not yet in Postgres",
                &self.records_pending,
            ),
            (
                "openlambda_journal_bytes",
                "Size of the record journal on disk",
                &self.journal_bytes,
            ),
        ] {
            r.register(name, help, gauge.clone());
        }
        let rec = &self.records;
        r.register(
            "openlambda_records_oldest_pending_seconds",
            "Age of the oldest call record not yet in Postgres (0: none)",
            rec.oldest_pending_seconds.clone(),
        );
        r.register(
            "openlambda_records_unjournaled",
            "Call records only in memory because the journal refused them",
            rec.unjournaled.clone(),
        );
        for (name, help, counter) in [
            (
                "openlambda_records_quarantined",
                "Call records Postgres refused, set aside in quarantine.jsonl",
                &rec.quarantined,
            ),
            (
                "openlambda_journal_append_failures",
                "Record journal appends that failed (disk full or unwritable)",
                &rec.append_failures,
            ),
            (
                "openlambda_records_lost",
                "Call records lost: the journal refused them and the memory buffer was full",
                &rec.lost,
            ),
            (
                "openlambda_journal_skipped_lines",
                "Journal lines skipped at start as not whole records",
                &rec.skipped_lines,
            ),
        ] {
            r.register(name, help, counter.clone());
        }
        r.register(
            "openlambda_catalog_notified",
            "1 while function changes arrive by Postgres notification; 0: cached functions expire after 2 s",
            self.catalog_notified.clone(),
        );
        self
    }

    /// Counts a finished call. A throttled call never ran, so it adds to
    /// the calls but not to the time histograms.
    pub fn observe(&self, r: &Invocation) {
        let function = FunctionLabels {
            function: r.function.clone(),
        };
        self.invocations
            .get_or_create(&CallLabels {
                function: r.function.clone(),
                status: r.status.clone(),
            })
            .inc();
        if r.status != "throttled" {
            self.durations
                .get_or_create(&function)
                .observe(r.duration_ms as f64 / 1000.0);
            self.waits.observe(r.wait_ms as f64 / 1000.0);
        }
        if r.cold {
            self.cold_starts.get_or_create(&function).inc();
        }
    }

    /// The text a scrape gets, with the gauges set from `gauges`.
    pub fn render(&self, gauges: &Gauges) -> String {
        let p = &gauges.pool;
        for (state, n) in [
            ("busy", p.busy),
            ("idle", p.idle),
            ("paused", p.paused),
            ("starting", p.starting),
            ("prewarmed", p.prewarmed),
            ("prewarming", p.prewarming),
        ] {
            self.containers
                .get_or_create(&StateLabels { state })
                .set(gauge_value(n as u64));
        }
        self.queued.set(gauge_value(p.queued as u64));
        self.memory_used.set(gauge_value(p.used_mb));
        self.memory_budget.set(gauge_value(p.budget_mb));
        self.records_pending
            .set(gauge_value(gauges.records_pending as u64));
        self.journal_bytes.set(gauge_value(gauges.journal_bytes));
        self.records.set(&gauges.records);
        self.catalog_notified
            .set(i64::from(gauges.catalog_notified));
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Gauges hold an `i64`; no count or size here comes near its limit.
fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl RecordMetrics {
    fn set(&self, r: &crate::meter::RecordStats) {
        self.oldest_pending_seconds.set(r.oldest_pending_seconds);
        self.unjournaled.set(gauge_value(r.unjournaled as u64));
        for (counter, total) in [
            (&self.quarantined, r.quarantined),
            (&self.append_failures, r.append_failures),
            (&self.lost, r.lost),
            (&self.skipped_lines, r.skipped_lines),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(function: &str, status: &str, duration_ms: i64, cold: bool) -> Invocation {
        Invocation {
            request_id: uuid::Uuid::new_v4(),
            function: function.into(),
            version: "v".into(),
            started_at: chrono::Utc::now(),
            duration_ms,
            billed_ms: 100,
            memory_mb: 128,
            max_memory_used_mb: None,
            init_ms: None,
            wait_ms: 0,
            cold,
            status: status.into(),
            http_status: 200,
            billed: true,
            logs: None,
            trigger: "http".into(),
            attempt: 1,
            start: Some(if cold { "new" } else { "running" }.into()),
        }
    }

    fn scrape(metrics: &Metrics) -> String {
        metrics.render(&Gauges {
            pool: PoolStatus {
                busy: 1,
                budget_mb: 4096,
                ..PoolStatus::default()
            },
            records_pending: 2,
            journal_bytes: 3,
            records: crate::meter::RecordStats {
                quarantined: 4,
                oldest_pending_seconds: 1.5,
                ..Default::default()
            },
            catalog_notified: true,
        })
    }

    #[test]
    fn names_types_labels_and_help_stay_as_documented() {
        let metrics = Metrics::default();
        metrics.observe(&call("f", "success", 3, true));
        metrics.observe(&call("f", "success", 300, false));
        metrics.observe(&call("f", "throttled", 0, false));
        let out = scrape(&metrics);
        for line in [
            "# HELP openlambda_invocations_total Calls, by function and outcome.",
            "# TYPE openlambda_invocations_total counter",
            "openlambda_invocations_total{function=\"f\",status=\"success\"} 2",
            "# TYPE openlambda_records_quarantined_total counter",
            "openlambda_records_quarantined_total 4",
            "openlambda_records_oldest_pending_seconds 1.5",
            "openlambda_catalog_notified 1",
            "openlambda_invocations_total{function=\"f\",status=\"throttled\"} 1",
            "# HELP openlambda_invocation_duration_seconds Handler time per call.",
            "# TYPE openlambda_invocation_duration_seconds histogram",
            "openlambda_invocation_duration_seconds_bucket{function=\"f\",le=\"0.002\"} 0",
            "openlambda_invocation_duration_seconds_bucket{function=\"f\",le=\"0.005\"} 1",
            "openlambda_invocation_duration_seconds_bucket{function=\"f\",le=\"0.5\"} 2",
            "openlambda_invocation_duration_seconds_bucket{function=\"f\",le=\"+Inf\"} 2",
            "openlambda_invocation_duration_seconds_count{function=\"f\"} 2",
            "# HELP openlambda_cold_starts_total Calls that had to make a container ready.",
            "# TYPE openlambda_cold_starts_total counter",
            "openlambda_cold_starts_total{function=\"f\"} 1",
            "# HELP openlambda_queue_wait_seconds Time calls waited for a container.",
            "# TYPE openlambda_queue_wait_seconds histogram",
            "openlambda_queue_wait_seconds_bucket{le=\"1\"} 2",
            "openlambda_queue_wait_seconds_count 2",
            "# HELP openlambda_containers Containers, by state.",
            "# TYPE openlambda_containers gauge",
            "openlambda_containers{state=\"busy\"} 1",
            "openlambda_containers{state=\"prewarming\"} 0",
            "# HELP openlambda_queued_calls Calls waiting for a container.",
            "# TYPE openlambda_queued_calls gauge",
            "openlambda_queued_calls 0",
            "# HELP openlambda_pool_memory_used_mb Memory held by containers, by their limits.",
            "openlambda_pool_memory_budget_mb 4096",
            "# HELP openlambda_records_pending Call records not yet in Postgres.",
            "openlambda_records_pending 2",
            "# HELP openlambda_journal_bytes Size of the record journal on disk.",
            "# TYPE openlambda_journal_bytes gauge",
            "openlambda_journal_bytes 3",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::default();
        metrics.observe(&call("a\"b\\c\nd", "success", 1, false));
        let out = scrape(&metrics);
        assert!(
            out.contains("{function=\"a\\\"b\\\\c\\nd\",status=\"success\"} 1"),
            "{out}"
        );
    }
}
