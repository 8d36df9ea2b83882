//! `/metrics` in Prometheus' text format, kept by hand: a few counters and
//! histograms under one short lock, and gauges read at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::pool::PoolStatus;
use crate::store::invocations::Invocation;

/// Upper bounds of the histogram buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in BUCKETS.iter().zip(self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Default)]
struct Counts {
    /// (function, status) -> calls
    invocations: BTreeMap<(String, String), u64>,
    durations: BTreeMap<String, Histogram>,
    cold_starts: BTreeMap<String, u64>,
    waits: Histogram,
}

#[derive(Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
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

impl Metrics {
    pub fn observe(&self, r: &Invocation) {
        let mut c = self.counts.lock().unwrap();
        *c.invocations
            .entry((r.function.clone(), r.status.clone()))
            .or_default() += 1;
        if r.status != "throttled" {
            c.durations
                .entry(r.function.clone())
                .or_default()
                .observe(r.duration_ms as f64 / 1000.0);
            c.waits.observe(r.wait_ms as f64 / 1000.0);
        }
        if r.cold {
            *c.cold_starts.entry(r.function.clone()).or_default() += 1;
        }
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let c = self.counts.lock().unwrap();
        out.push_str("# HELP openlambda_invocations_total Calls, by function and outcome.\n");
        out.push_str("# TYPE openlambda_invocations_total counter\n");
        for ((function, status), n) in &c.invocations {
            let _ = writeln!(
                out,
                "openlambda_invocations_total{{function=\"{}\",status=\"{status}\"}} {n}",
                escape(function)
            );
        }
        out.push_str("# HELP openlambda_invocation_duration_seconds Handler time per call.\n");
        out.push_str("# TYPE openlambda_invocation_duration_seconds histogram\n");
        for (function, h) in &c.durations {
            let labels = format!("function=\"{}\"", escape(function));
            h.render(&mut out, "openlambda_invocation_duration_seconds", &labels);
        }
        out.push_str(
            "# HELP openlambda_cold_starts_total Calls that had to make a container ready.\n",
        );
        out.push_str("# TYPE openlambda_cold_starts_total counter\n");
        for (function, n) in &c.cold_starts {
            let _ = writeln!(
                out,
                "openlambda_cold_starts_total{{function=\"{}\"}} {n}",
                escape(function)
            );
        }
        out.push_str("# HELP openlambda_queue_wait_seconds Time calls waited for a container.\n");
        out.push_str("# TYPE openlambda_queue_wait_seconds histogram\n");
        c.waits
            .render(&mut out, "openlambda_queue_wait_seconds", "");
        drop(c);

        let p = &gauges.pool;
        out.push_str("# HELP openlambda_containers Containers, by state.\n");
        out.push_str("# TYPE openlambda_containers gauge\n");
        for (state, n) in [
            ("busy", p.busy),
            ("idle", p.idle),
            ("paused", p.paused),
            ("starting", p.starting),
            ("prewarmed", p.prewarmed),
            ("prewarming", p.prewarming),
        ] {
            let _ = writeln!(out, "openlambda_containers{{state=\"{state}\"}} {n}");
        }
        for (name, help, value) in [
            (
                "openlambda_queued_calls",
                "Calls waiting for a container.",
                p.queued as u64,
            ),
            (
                "openlambda_pool_memory_used_mb",
                "Memory held by containers, by their limits.",
                p.used_mb,
            ),
            (
                "openlambda_pool_memory_budget_mb",
                "Memory the pool may hand out.",
                p.budget_mb,
            ),
            (
                "openlambda_records_pending",
                "Call records not yet in Postgres.",
                gauges.records_pending as u64,
            ),
            (
                "openlambda_journal_bytes",
                "Size of the record journal on disk.",
                gauges.journal_bytes,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        render_records(&mut out, &gauges.records);
        let _ = writeln!(
            out,
            "# HELP openlambda_catalog_notified 1 while function changes arrive by Postgres notification; 0: cached functions expire after 2 s.\n\
             # TYPE openlambda_catalog_notified gauge\nopenlambda_catalog_notified {}",
            u8::from(gauges.catalog_notified)
        );
        out
    }
}

/// The record writer's health: what waits, for how long, what was set
/// aside or is at risk.
fn render_records(out: &mut String, r: &crate::meter::RecordStats) {
    for (name, kind, help, value) in [
        (
            "openlambda_records_oldest_pending_seconds",
            "gauge",
            "Age of the oldest call record not yet in Postgres (0: none).",
            r.oldest_pending_seconds,
        ),
        (
            "openlambda_records_unjournaled",
            "gauge",
            "Call records only in memory because the journal refused them.",
            r.unjournaled as f64,
        ),
        (
            "openlambda_records_quarantined_total",
            "counter",
            "Call records Postgres refused, set aside in quarantine.jsonl.",
            r.quarantined as f64,
        ),
        (
            "openlambda_journal_append_failures_total",
            "counter",
            "Record journal appends that failed (disk full or unwritable).",
            r.append_failures as f64,
        ),
        (
            "openlambda_records_lost_total",
            "counter",
            "Call records lost: the journal refused them and the memory buffer was full.",
            r.lost as f64,
        ),
        (
            "openlambda_journal_skipped_lines_total",
            "counter",
            "Journal lines skipped at start as not whole records.",
            r.skipped_lines as f64,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(0.003);
        h.observe(0.3);
        let mut out = String::new();
        h.render(&mut out, "x", "function=\"f\"");
        assert!(
            out.contains("x_bucket{function=\"f\",le=\"0.002\"} 0"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{function=\"f\",le=\"0.005\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{function=\"f\",le=\"0.5\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{function=\"f\",le=\"+Inf\"} 2"),
            "{out}"
        );
        assert!(out.contains("x_count{function=\"f\"} 2"), "{out}");
    }
}
