//! `burst-defaults`: the paper's burst (N clients, each with one call of a
//! 200 ms handler outstanding at all times) against never-called functions
//! of a manager with the default pool settings, twice: the first burst the
//! manager ever sees (only `OL_POOL_PREWARM` containers are prewarmed: most
//! calls wait for new containers), then, once the pool has sized itself to
//! the demand it saw, a burst of another never-called function; and a
//! plain server that sleeps as long as the handler (the ideal).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::harness::{progress, Env};
use super::scenarios::{drive, ideal_server, BurstSide};
use super::BenchOptions;

#[derive(Debug, Serialize)]
pub struct BurstDefaults {
    pub clients: usize,
    pub seconds: u64,
    pub handler_ms: u64,
    /// The manager's first burst ever (no demand observed yet).
    pub first: BurstSide,
    /// Plain Python containers prewarmed when the second burst began.
    pub prewarmed_after_first: usize,
    /// Seconds the pool took to size itself after the first burst.
    pub settle_s: f64,
    /// A never-called function's burst, after the demand was observed.
    pub after: BurstSide,
    pub ideal: BurstSide,
    /// `after` against the ideal: mean (target <= 1.1) and p99 (<= 2).
    pub mean_ratio: f64,
    pub p99_ratio: f64,
    /// The pool's memory in use and budget at the end, MB.
    pub used_mb: u64,
    pub budget_mb: u64,
}

pub async fn burst_defaults(env: &Env, options: &BenchOptions) -> anyhow::Result<BurstDefaults> {
    let clients = options.burst_clients;
    let (secs, handler_ms) = (options.burst_secs, options.burst_handler_ms);
    progress("burst-defaults: starting a manager with the default pool settings");
    let m = env.manager("burst-defaults", |_| {}).await?;
    let handler = format!(
        "import time\ndef f(event):\n    time.sleep({})\n    return event\n",
        handler_ms as f64 / 1000.0
    );
    m.deploy("first", &handler, "").await?;
    m.deploy("second", &handler, "").await?;
    let floor = m.state.settings.pool.prewarm;
    m.state
        .pool
        .wait_prewarmed("python", floor, Duration::from_secs(120))
        .await;
    progress(format!(
        "burst-defaults: first burst ever, {clients} clients for {secs} s"
    ));
    let first = drive(m.url("/run/first"), clients, secs).await;

    progress("burst-defaults: waiting for the pool to size itself to the demand seen");
    let settle = Instant::now();
    let prewarmed = settled(&m.state.pool, Duration::from_secs(300)).await;
    let settle_s = settle.elapsed().as_secs_f64();
    progress(format!(
        "burst-defaults: {prewarmed} prewarmed after {settle_s:.0} s; a never-called function's burst"
    ));
    let after = drive(m.url("/run/second"), clients, secs).await;
    let status = m.state.pool.status();
    m.stop().await?;

    progress(format!(
        "burst-defaults: {clients} clients against the ideal server"
    ));
    let ideal = drive(
        ideal_server(Duration::from_millis(handler_ms)).await?,
        clients,
        secs,
    )
    .await;
    Ok(BurstDefaults {
        clients,
        seconds: secs,
        handler_ms,
        mean_ratio: after.latency.mean_ms / ideal.latency.mean_ms,
        p99_ratio: after.latency.p99_ms / ideal.latency.p99_ms,
        first,
        prewarmed_after_first: prewarmed,
        settle_s,
        after,
        ideal,
        used_mb: status.used_mb,
        budget_mb: status.budget_mb,
    })
}

/// Waits until the plain Python prewarmed pool stops changing (nothing
/// being created and the count the same for five seconds); returns it.
async fn settled(pool: &crate::pool::Pool, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    let count = || {
        let status = pool.status();
        (status.prewarming, pool.prewarmed("python"))
    };
    let (mut last, mut since) = (count(), Instant::now());
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = count();
        if now != last {
            (last, since) = (now, Instant::now());
        } else if now.0 == 0 && since.elapsed() >= Duration::from_secs(5) {
            break;
        }
    }
    last.1
}

/// The rows of `ol bench`'s table.
pub fn rows(b: &BurstDefaults) -> Vec<(String, String, String)> {
    let f = |v: f64| format!("{v:.0}");
    let side = |s: &BurstSide| {
        format!(
            "{} / {} / {} / {}; {} errors; all served once {:.2} s",
            f(s.latency.mean_ms),
            f(s.latency.p50_ms),
            f(s.latency.p99_ms),
            f(s.latency.max_ms),
            s.errors,
            s.all_served_once_s
        )
    };
    let what = format!(
        "{} clients, {} ms handler, {} s: mean / p50 / p99 / max (ms)",
        b.clients, b.handler_ms, b.seconds
    );
    vec![
        (
            "burst-d".into(),
            format!("first burst ever, {what}"),
            side(&b.first),
        ),
        (
            "burst-d".into(),
            "prewarmed after it; seconds to settle".into(),
            format!("{}; {:.0}", b.prewarmed_after_first, b.settle_s),
        ),
        (
            "burst-d".into(),
            format!("next never-called function, {what}"),
            side(&b.after),
        ),
        (
            "burst-d".into(),
            format!("ideal server, {what}"),
            side(&b.ideal),
        ),
        (
            "burst-d".into(),
            "next / ideal: mean (target <= 1.1); p99 (<= 2)".into(),
            format!("{:.2}; {:.2}", b.mean_ratio, b.p99_ratio),
        ),
        (
            "burst-d".into(),
            "pool memory used / budget at the end (MB)".into(),
            format!("{} / {}", b.used_mb, b.budget_mb),
        ),
    ]
}
