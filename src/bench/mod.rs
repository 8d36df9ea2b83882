//! `ol bench`: the pool's figures, each measured side by side in one run.
//!
//! - warm: a trivial call through the manager against the same call sent
//!   straight to the same container's socket;
//! - warm-concurrency: the same with 1, 8 and 32 callers at once: p50 and
//!   calls per second, each way;
//! - cold: first calls of never-called functions with the prewarmed pool,
//!   against the same with prewarming off, against `docker run`;
//! - burst: the paper's experiment, N outstanding calls of a 200 ms handler
//!   for a while, starting with no container for the function, against a
//!   plain local server that sleeps 200 ms per request (the ideal);
//! - burst-defaults: the same at the default pool settings, the manager's
//!   first burst ever and then a never-called function's, once the pool
//!   sized itself to the demand it saw (`bursts.rs`);
//! - imports: first calls of handlers importing Flask or numpy with and
//!   without the import cache, beside a plain handler and `docker run`
//!   importing the same; memory per cached set (`imports.rs`);
//! - soak: many calls mixing warm, cold, handler errors, timeouts, OOM
//!   kills, unknown names and redeploys: platform 5xx, lost or double
//!   records, and the manager's memory before and after;
//! - deploys: the Flask requirements set deployed into an empty cache,
//!   cached but resolved in a builder, and cached from the resolution memo.
//!
//! Each scenario runs its own manager in this process (own database, data
//! directory and instance label) and removes it afterwards.

mod async_path;
mod bursts;
mod check;
mod deploys;
mod harness;
mod imports;
mod scenarios;
mod soak;
mod warm_concurrency;

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

/// Options of `ol bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchOptions {
    /// Scenarios to run, comma-separated: warm, warm-concurrency, cold,
    /// imports, burst, burst-defaults, writer, soak, async, deploys.
    #[arg(
        long,
        default_value = "warm,warm-concurrency,cold,imports,burst,burst-defaults,writer,soak,async,deploys",
        value_delimiter = ','
    )]
    pub only: Vec<String>,
    /// Calls per path in the warm scenario (and per level and path in
    /// warm-concurrency).
    #[arg(long, default_value_t = 2000)]
    pub warm_calls: usize,
    /// Never-called functions per variant in the cold scenario.
    #[arg(long, default_value_t = 10)]
    pub cold_functions: usize,
    /// Outstanding calls in the burst scenario.
    #[arg(long, default_value_t = 100)]
    pub burst_clients: usize,
    /// How long the burst lasts, in seconds.
    #[arg(long, default_value_t = 60)]
    pub burst_secs: u64,
    /// The burst handler's sleep, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub burst_handler_ms: u64,
    /// Records in the writer scenario.
    #[arg(long, default_value_t = 50_000)]
    pub writer_records: usize,
    /// Calls in the soak scenario.
    #[arg(long, default_value_t = 10_000)]
    pub soak_calls: usize,
    /// Events in the async scenario.
    #[arg(long, default_value_t = 2000)]
    pub async_events: usize,
    /// Deploys of each kind in the deploys scenario.
    #[arg(long, default_value_t = 5)]
    pub deploy_repeats: usize,
    /// Also write the JSON report to this file (`scripts/bench-table.sh`
    /// turns it into README's table).
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Compare each figure with its target; exit non-zero when one is missed.
    #[arg(long)]
    pub check: bool,
    /// A short run for CI (about a minute): small sizes, and with `--check`
    /// ratios only, with bounds loose enough for noise and a debug build.
    #[arg(long)]
    pub quick: bool,
}

impl BenchOptions {
    /// The sizes of a quick run (they replace the ones given).
    fn quickened(mut self) -> Self {
        self.warm_calls = 300;
        self.cold_functions = 3;
        self.burst_clients = 10;
        self.burst_secs = 5;
        self.burst_handler_ms = 200;
        self.writer_records = 5_000;
        self.soak_calls = 500;
        self.async_events = 200;
        self.deploy_repeats = 2;
        self
    }
}

/// Latency figures of one series, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Stats {
    pub fn of(samples: &[Duration]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        Self {
            count: ms.len(),
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: *ms.last().expect("not empty"),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The commit measured (`git rev-parse HEAD` where the run started, or
    /// `OL_COMMIT`), so a table names what it describes.
    pub commit: String,
    /// The command line of the run.
    pub command: String,
    /// Each figure against its target (with `--check`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<check::Check>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm: Option<scenarios::Warm>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold: Option<scenarios::Cold>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imports: Option<imports::Imports>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<scenarios::Burst>,
    #[serde(rename = "burst-defaults", skip_serializing_if = "Option::is_none")]
    pub burst_defaults: Option<bursts::BurstDefaults>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writer: Option<scenarios::Writer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<soak::Soak>,
    #[serde(rename = "warm-concurrency", skip_serializing_if = "Option::is_none")]
    pub warm_concurrency: Option<warm_concurrency::WarmConcurrency>,
    #[serde(rename = "async", skip_serializing_if = "Option::is_none")]
    pub async_path: Option<async_path::AsyncPath>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploys: Option<deploys::Deploys>,
}

pub async fn run(options: BenchOptions) -> anyhow::Result<()> {
    let options = if options.quick {
        options.quickened()
    } else {
        options
    };
    let env = harness::Env::from_env().await?;
    let mut report = Report {
        commit: commit(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        ..Report::default()
    };
    for scenario in &options.only {
        match scenario.as_str() {
            "warm" => report.warm = Some(scenarios::warm(&env, &options).await?),
            "warm-concurrency" => {
                report.warm_concurrency =
                    Some(warm_concurrency::warm_concurrency(&env, &options).await?)
            }
            "cold" => report.cold = Some(scenarios::cold(&env, &options).await?),
            "imports" => report.imports = Some(imports::imports(&env, &options).await?),
            "burst" => report.burst = Some(scenarios::burst(&env, &options).await?),
            "burst-defaults" => {
                report.burst_defaults = Some(bursts::burst_defaults(&env, &options).await?)
            }
            "writer" => report.writer = Some(scenarios::writer(&env, &options).await?),
            "soak" => report.soak = Some(soak::soak(&env, &options).await?),
            "async" => report.async_path = Some(async_path::async_path(&env, &options).await?),
            "deploys" => report.deploys = Some(deploys::deploys(&env, &options).await?),
            other => {
                anyhow::bail!(
                    "unknown scenario {other:?}; use warm, warm-concurrency, cold, imports, \
                     burst, burst-defaults, writer, soak, async or deploys"
                )
            }
        }
    }
    print_table(&report);
    let failed = if options.check {
        report.checks = check::checks(&report, options.quick);
        check::print(&report.checks)
    } else {
        0
    };
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &options.json {
        std::fs::write(path, &json)
            .with_context(|| format!("writing the report to {}", path.display()))?;
    } else {
        println!("{json}");
    }
    if failed > 0 {
        anyhow::bail!("{failed} figure(s) missed their target (the FAIL lines above)");
    }
    Ok(())
}

/// The commit of the working directory, else `OL_COMMIT`, else "unknown".
fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .or_else(|| crate::config::env("OL_COMMIT"))
        .unwrap_or_else(|| "unknown".into())
}

fn print_table(report: &Report) {
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let f = |v: f64| format!("{v:.2}");
    if let Some(w) = &report.warm {
        rows.push((
            "warm".into(),
            "through the manager p50 / p99 (ms)".into(),
            format!("{} / {}", f(w.manager.p50_ms), f(w.manager.p99_ms)),
        ));
        rows.push((
            "warm".into(),
            "straight to the socket p50 / p99 (ms)".into(),
            format!("{} / {}", f(w.direct.p50_ms), f(w.direct.p99_ms)),
        ));
        rows.push((
            "warm".into(),
            "p50 ratio manager / direct (target <= 1.5)".into(),
            f(w.p50_ratio),
        ));
    }
    if let Some(w) = &report.warm_concurrency {
        rows.extend(w.rows());
    }
    if let Some(c) = &report.cold {
        rows.push((
            "cold".into(),
            "prewarmed pool p50 / max (ms) (target p50 < 50)".into(),
            format!("{} / {}", f(c.prewarmed.p50_ms), f(c.prewarmed.max_ms)),
        ));
        rows.push((
            "cold".into(),
            "no prewarming p50 / max (ms)".into(),
            format!("{} / {}", f(c.no_prewarm.p50_ms), f(c.no_prewarm.max_ms)),
        ));
        rows.push((
            "cold".into(),
            "docker run p50 / max (ms)".into(),
            format!("{} / {}", f(c.docker_run.p50_ms), f(c.docker_run.max_ms)),
        ));
        rows.push((
            "cold".into(),
            "docker run / prewarmed, p50 (target >= 10)".into(),
            f(c.speedup_vs_docker_run),
        ));
    }
    if let Some(i) = &report.imports {
        rows.extend(imports::rows(i));
    }
    if let Some(b) = &report.burst {
        for (who, s) in [("platform", &b.platform), ("ideal server", &b.ideal)] {
            rows.push((
                "burst".into(),
                format!("{who}: mean / p50 / p99 / max (ms)"),
                format!(
                    "{} / {} / {} / {}",
                    f(s.latency.mean_ms),
                    f(s.latency.p50_ms),
                    f(s.latency.p99_ms),
                    f(s.latency.max_ms)
                ),
            ));
            rows.push((
                "burst".into(),
                format!("{who}: calls / errors / all clients served once (s)"),
                format!(
                    "{} / {} / {:.2}",
                    s.latency.count, s.errors, s.all_served_once_s
                ),
            ));
        }
        rows.push((
            "burst".into(),
            "mean ratio platform / ideal (target <= 1.3)".into(),
            f(b.mean_ratio),
        ));
    }
    if let Some(b) = &report.burst_defaults {
        rows.extend(bursts::rows(b));
    }
    if let Some(a) = &report.async_path {
        rows.push((
            "async".into(),
            format!(
                "enqueue to start p50 / p99 (ms) ({} events, concurrency {})",
                a.events, a.concurrency
            ),
            format!(
                "{} / {}",
                f(a.enqueue_to_start.p50_ms),
                f(a.enqueue_to_start.p99_ms)
            ),
        ));
        rows.push((
            "async".into(),
            "events/s, enqueue to last success".into(),
            format!("{:.0}", a.events_per_s),
        ));
    }
    if let Some(w) = &report.writer {
        rows.push((
            "writer".into(),
            format!("records/s through journal + writer ({} records)", w.records),
            format!("{:.0}", w.journaled_per_s),
        ));
        rows.push((
            "writer".into(),
            "records/s in batches of 1000 (target >= 20000)".into(),
            format!("{:.0}", w.batched_per_s),
        ));
        rows.push((
            "writer".into(),
            "records/s one insert each".into(),
            format!("{:.0}", w.single_per_s),
        ));
        rows.push((
            "writer".into(),
            "batched / one each".into(),
            f(w.batched_vs_single),
        ));
        rows.push((
            "writer".into(),
            "journal append (us): plain / with fdatasync".into(),
            format!("{:.1} / {:.1}", w.append_us, w.append_fsync_us),
        ));
    }
    if let Some(s) = &report.soak {
        rows.push((
            "soak".into(),
            "calls / as expected / seconds / redeploys".into(),
            format!(
                "{} / {} / {:.1} / {}",
                s.calls, s.expected, s.seconds, s.redeploys
            ),
        ));
        rows.push((
            "soak".into(),
            "platform 5xx / other unexpected (target 0)".into(),
            format!("{} / {}", s.platform_5xx, s.unexpected),
        ));
        rows.push((
            "soak".into(),
            "lost / double records (target 0)".into(),
            format!("{} / {}", s.lost_records, s.double_records),
        ));
        rows.push((
            "soak".into(),
            "manager RSS before / after (MB)".into(),
            format!("{} / {}", f(s.rss_before_mb), f(s.rss_after_mb)),
        ));
    }
    if let Some(d) = &report.deploys {
        rows.extend(d.rows());
    }
    let width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    println!("\n{:<8} {:<width$}  figure", "scenario", "measure");
    for (scenario, what, figure) in rows {
        println!("{scenario:<8} {what:<width$}  {figure}");
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_a_series() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = Stats::of(&samples);
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_ms, 51.0);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(s.max_ms, 100.0);
        assert!((s.mean_ms - 50.5).abs() < 1e-9);
        assert_eq!(Stats::of(&[]).count, 0);
    }
}
