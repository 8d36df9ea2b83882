//! The async scenario of `ol bench`: the queue's own cost, with a trivial
//! handler so the queue, not the handler, is what is measured. Latency:
//! events sent one at a time to an idle queue, from an event's commit to
//! its attempt's start (no backlog in it). Throughput: a backlog of events
//! run at async concurrency 4, events per second.

use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use serde::Serialize;

use super::harness::{call, progress, Env};
use super::{BenchOptions, Stats};

const ECHO: &str = "def f(event):\n    return event\n";

#[derive(Debug, Serialize)]
pub struct AsyncPath {
    pub events: usize,
    pub concurrency: u32,
    /// An event's commit to its attempt's start (the record's `started_at`),
    /// one event at a time.
    pub enqueue_to_start: Stats,
    /// Events run per second, from the first enqueue to the last success.
    pub events_per_s: f64,
}

pub async fn async_path(env: &Env, options: &BenchOptions) -> anyhow::Result<AsyncPath> {
    const CONCURRENCY: u32 = 4;
    let n = options.async_events;
    progress("async: starting a manager");
    let m = env.manager("async", |s| s.pool.prewarm = 0).await?;
    m.deploy(
        "queued",
        ECHO,
        &format!("async: {{concurrency: {CONCURRENCY}}}\n"),
    )
    .await?;
    // The containers are made by synchronous calls first: cold starts are
    // the cold scenario's business.
    for _ in 0..CONCURRENCY {
        m.run("queued", "1").await?;
    }
    let url = m.url("/api/v1/functions/queued/invocations");
    let one_by_one = n.min(200);
    progress(format!("async: {one_by_one} events one at a time"));
    for i in 0..one_by_one {
        let (status, _) = call(&m.client, &url, Bytes::from_static(b"1")).await?;
        if status != 202 {
            bail!("queueing an event answered {status}");
        }
        settled(&m.state.db, i + 1).await?;
    }
    if !m.state.recorder.flush(Duration::from_secs(60)).await {
        bail!("the records were not written");
    }
    let waits: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM i.started_at - e.created_at)::float8 \
         FROM events e JOIN invocations i ON i.request_id = e.request_id AND i.attempt = 1",
    )
    .fetch_all(&m.state.db)
    .await?;

    progress(format!(
        "async: a backlog of {n} events, async concurrency {CONCURRENCY}"
    ));
    let started = Instant::now();
    for _ in 0..n {
        let (status, _) = call(&m.client, &url, Bytes::from_static(b"1")).await?;
        if status != 202 {
            bail!("queueing an event answered {status}");
        }
    }
    settled(&m.state.db, one_by_one + n).await?;
    let events_per_s = n as f64 / started.elapsed().as_secs_f64();
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE state = 'failed'")
        .fetch_one(&m.state.db)
        .await?;
    m.stop().await?;
    if failed > 0 {
        bail!("{failed} of {n} async events failed");
    }
    let waits: Vec<Duration> = waits
        .into_iter()
        .map(|s| Duration::from_secs_f64(s.max(0.0)))
        .collect();
    Ok(AsyncPath {
        events: n,
        concurrency: CONCURRENCY,
        enqueue_to_start: Stats::of(&waits),
        events_per_s,
    })
}

/// Waits until `n` events have ended (10 minutes at most).
async fn settled(db: &sqlx::PgPool, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE state IN ('succeeded', 'failed')",
        )
        .fetch_one(db)
        .await?;
        if done as usize >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {done} of {n} events ran within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
