//! `ol bench --check`: each figure against its target, so a missed target
//! fails the run instead of sitting unread in a table.
//!
//! Full runs check README's targets. Quick runs (`--quick`, what CI runs on
//! a debug build beside the tests) check ratios only, each measured against
//! its yardstick in the same run, with bounds several times looser than the
//! targets: machine noise and a debug build stay inside them, a regression
//! of several times does not.

use serde::Serialize;

use super::Report;

/// One figure compared with its bound.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Check {
    pub scenario: &'static str,
    pub figure: &'static str,
    pub value: f64,
    /// `<=` or `>=`.
    pub op: &'static str,
    pub bound: f64,
    pub passed: bool,
}

pub(super) fn at_most(
    scenario: &'static str,
    figure: &'static str,
    value: f64,
    bound: f64,
) -> Check {
    Check {
        scenario,
        figure,
        value,
        op: "<=",
        bound,
        passed: value <= bound,
    }
}

pub(super) fn at_least(
    scenario: &'static str,
    figure: &'static str,
    value: f64,
    bound: f64,
) -> Check {
    Check {
        scenario,
        figure,
        value,
        op: ">=",
        bound,
        // NaN (a series with no samples) fails either way.
        passed: value >= bound,
    }
}

/// The checks for the scenarios that ran.
pub fn checks(report: &Report, quick: bool) -> Vec<Check> {
    let mut out = Vec::new();
    if let Some(w) = &report.warm {
        let bound = if quick { 6.0 } else { 1.5 };
        out.push(at_most("warm", "p50 manager / direct", w.p50_ratio, bound));
    }
    if let Some(w) = &report.warm_concurrency {
        out.extend(w.checks(quick));
    }
    if let Some(c) = &report.cold {
        if !quick {
            out.push(at_most(
                "cold",
                "prewarmed p50 (ms)",
                c.prewarmed.p50_ms,
                50.0,
            ));
        }
        let bound = if quick { 3.0 } else { 10.0 };
        out.push(at_least(
            "cold",
            "docker run / prewarmed, p50",
            c.speedup_vs_docker_run,
            bound,
        ));
    }
    if let Some(b) = &report.burst {
        let bound = if quick { 3.0 } else { 1.3 };
        out.push(at_most(
            "burst",
            "mean platform / ideal",
            b.mean_ratio,
            bound,
        ));
        out.push(at_most(
            "burst",
            "platform errors",
            b.platform.errors as f64,
            0.0,
        ));
    }
    if let Some(i) = &report.imports {
        let (at_most_bound, at_least_bound) = if quick { (3.0, 3.0) } else { (1.5, 10.0) };
        for p in &i.packages {
            out.push(at_most(
                "imports",
                "import cache / plain handler, first call p50",
                p.cached_vs_plain,
                at_most_bound,
            ));
            out.push(at_least(
                "imports",
                "docker run + import / import cache, p50",
                p.docker_run_vs_cached,
                at_least_bound,
            ));
        }
    }
    if let Some(b) = &report.burst_defaults {
        let bound = if quick { 3.0 } else { 1.1 };
        out.push(at_most(
            "burst-defaults",
            "mean after demand seen / ideal",
            b.mean_ratio,
            bound,
        ));
        out.push(at_most(
            "burst-defaults",
            "errors after demand seen",
            b.after.errors as f64,
            0.0,
        ));
        if !quick {
            out.push(at_most(
                "burst-defaults",
                "p99 after demand seen / ideal",
                b.p99_ratio,
                2.0,
            ));
            out.push(at_most(
                "burst-defaults",
                "all clients served once after demand seen (s)",
                b.after.all_served_once_s,
                2.0,
            ));
        }
    }
    if let Some(w) = &report.writer {
        if quick {
            out.push(at_least(
                "writer",
                "batched / one insert each",
                w.batched_vs_single,
                3.0,
            ));
        } else {
            out.push(at_least(
                "writer",
                "records/s in batches",
                w.batched_per_s,
                20_000.0,
            ));
        }
    }
    if let Some(d) = &report.deploys {
        if !quick {
            out.push(at_most(
                "deploys",
                "cached from the memo p50 (ms)",
                d.cached_memo.p50_ms,
                300.0,
            ));
        }
        out.push(at_least(
            "deploys",
            "builder / memo, p50",
            d.memo_vs_builder,
            if quick { 2.0 } else { 5.0 },
        ));
    }
    if let Some(s) = &report.soak {
        out.push(at_most("soak", "platform 5xx", s.platform_5xx as f64, 0.0));
        out.push(at_most("soak", "lost records", s.lost_records as f64, 0.0));
        out.push(at_most(
            "soak",
            "double records",
            s.double_records as f64,
            0.0,
        ));
        // Flat: what a leak of one allocation per call would break (a few
        // hundred bytes times the calls), with room for the allocator.
        out.push(at_most(
            "soak",
            "RSS growth (MB)",
            s.rss_after_mb - s.rss_before_mb,
            SOAK_RSS_GROWTH_MB,
        ));
    }
    out
}

/// How much the manager's memory may grow over a soak.
const SOAK_RSS_GROWTH_MB: f64 = 64.0;

/// Prints each check and the closing `bench check: N passed, M failed` line
/// (which `scripts/test.sh` sums); returns the number failed.
pub fn print(checks: &[Check]) -> usize {
    for c in checks {
        println!(
            "{} {:<7} {:<30} {:>12.2} {} {}",
            if c.passed { "ok:  " } else { "FAIL:" },
            c.scenario,
            c.figure,
            c.value,
            c.op,
            c.bound
        );
    }
    let failed = checks.iter().filter(|c| !c.passed).count();
    println!(
        "bench check: {} passed, {failed} failed",
        checks.len() - failed
    );
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::scenarios::{Warm, Writer};
    use crate::bench::Stats;

    fn warm(ratio: f64) -> Warm {
        Warm {
            manager: Stats::default(),
            direct: Stats::default(),
            p50_ratio: ratio,
        }
    }

    #[test]
    fn a_missed_target_fails_and_a_met_one_passes() {
        let report = Report {
            warm: Some(warm(2.0)),
            ..Report::default()
        };
        let full = checks(&report, false);
        assert_eq!(full.len(), 1);
        assert!(!full[0].passed, "2.0 misses the full target of 1.5");
        assert!(
            checks(&report, true)[0].passed,
            "2.0 is inside the quick bound"
        );
        let report = Report {
            warm: Some(warm(10.0)),
            ..Report::default()
        };
        assert!(
            !checks(&report, true)[0].passed,
            "a regression of several times"
        );
        assert_eq!(print(&checks(&report, true)), 1);
    }

    #[test]
    fn no_samples_never_pass() {
        let report = Report {
            writer: Some(Writer {
                records: 0,
                journaled_per_s: f64::NAN,
                batched_per_s: f64::NAN,
                single_per_s: f64::NAN,
                batched_vs_single: f64::NAN,
                append_us: f64::NAN,
                append_fsync_us: f64::NAN,
            }),
            ..Report::default()
        };
        assert!(checks(&report, true).iter().all(|c| !c.passed));
        assert!(checks(&report, false).iter().all(|c| !c.passed));
    }

    #[test]
    fn only_scenarios_that_ran_are_checked() {
        assert!(checks(&Report::default(), false).is_empty());
    }
}
