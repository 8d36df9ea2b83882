//! The scenarios of `ol bench`: warm, cold, burst and the record writer.
//! Each measures the platform and its yardstick in the same run, one after
//! the other, so that their ratio means something on a shared, noisy
//! machine.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde::Serialize;

use super::harness::{call, http_client, progress, time_docker_run, Env, KeptConnections};
use super::{BenchOptions, Stats};
use crate::sandbox;

const ECHO: &str = "def f(event):\n    return event\n";

#[derive(Debug, Serialize)]
pub struct Warm {
    pub manager: Stats,
    pub direct: Stats,
    pub p50_ratio: f64,
}

/// A trivial call through the manager, against the same call straight to
/// the same container's socket on a kept connection, interleaved.
pub async fn warm(env: &Env, options: &BenchOptions) -> anyhow::Result<Warm> {
    progress("warm: starting a manager");
    let m = env
        .manager("warm", |s| {
            s.pool.prewarm = 0;
            // Stays running between the direct calls.
            s.pool.pause_grace = Duration::from_secs(600);
        })
        .await?;
    m.deploy("warm", ECHO, "").await?;
    m.run("warm", "1").await?;
    let container = m
        .state
        .pool
        .containers("warm")
        .pop()
        .context("no container after a call")?;
    let socket = sandbox::layout::socket(&m.data_dir.join("sandboxes").join(&container.sandbox));
    let (mut via_manager, mut direct) = (Vec::new(), Vec::new());
    // Kept between calls both ways, as the manager keeps its own.
    let manager_conns = KeptConnections::new(m.functions_addr);
    let direct_conns = sandbox::Connections::default();
    progress(format!("warm: {} calls each way", options.warm_calls));
    for _ in 0..options.warm_calls {
        let (status, took) = manager_conns
            .post("/run/warm", Bytes::from_static(b"1"))
            .await?;
        if status != 200 {
            bail!("warm call answered {status}");
        }
        via_manager.push(took);
        let started = Instant::now();
        let reply = sandbox::request(
            &direct_conns,
            &socket,
            "POST",
            "/invoke",
            None,
            Bytes::from_static(b"1"),
            1 << 20,
        )
        .await?;
        if reply.status != 200 {
            bail!("direct call answered {}", reply.status);
        }
        direct.push(started.elapsed());
    }
    m.stop().await?;
    let (manager, direct) = (Stats::of(&via_manager), Stats::of(&direct));
    Ok(Warm {
        p50_ratio: manager.p50_ms / direct.p50_ms,
        manager,
        direct,
    })
}

#[derive(Debug, Serialize)]
pub struct Cold {
    pub prewarmed: Stats,
    pub no_prewarm: Stats,
    pub docker_run: Stats,
    pub speedup_vs_docker_run: f64,
}

/// First calls of never-called functions: with a prewarmed pool, without
/// one, and `docker run` of the runtime image.
pub async fn cold(env: &Env, options: &BenchOptions) -> anyhow::Result<Cold> {
    let n = options.cold_functions;
    let mut series = Vec::new();
    for (label, prewarm) in [("cold-prewarm", 2), ("cold-none", 0)] {
        progress(format!("{label}: starting a manager (prewarm {prewarm})"));
        let m = env
            .manager(label, |s| {
                s.pool.prewarm = prewarm;
                s.pool.prewarm_runtimes = vec!["python".into()];
            })
            .await?;
        let mut samples = Vec::new();
        for i in 0..n {
            let name = format!("cold-{i}");
            m.deploy(&name, &format!("{ECHO}# {label} {i}\n"), "")
                .await?;
            if prewarm > 0
                && !m
                    .state
                    .pool
                    .wait_prewarmed("python", 1, Duration::from_secs(60))
                    .await
            {
                bail!("{label}: the pool did not refill within 60 s");
            }
            samples.push(m.run(&name, "1").await?);
        }
        m.stop().await?;
        series.push(Stats::of(&samples));
    }
    progress(format!("cold: {n} x docker run of the runtime image"));
    let docker = crate::app::connect_docker().await?;
    let image =
        crate::images::ensure(&docker, env.base_image(), crate::manifest::Runtime::Python).await?;
    let mut runs = Vec::new();
    for _ in 0..n {
        runs.push(time_docker_run(&image, &[], "import json; print(json.dumps(1))").await?);
    }
    let docker_run = Stats::of(&runs);
    let no_prewarm = series.pop().expect("two series");
    let prewarmed = series.pop().expect("two series");
    Ok(Cold {
        speedup_vs_docker_run: docker_run.p50_ms / prewarmed.p50_ms,
        prewarmed,
        no_prewarm,
        docker_run,
    })
}

#[derive(Debug, Serialize)]
pub struct BurstSide {
    pub latency: Stats,
    pub errors: usize,
    /// From the start until every client had its first answer.
    pub all_served_once_s: f64,
}

#[derive(Debug, Serialize)]
pub struct Burst {
    pub clients: usize,
    pub seconds: u64,
    pub handler_ms: u64,
    pub platform: BurstSide,
    pub ideal: BurstSide,
    pub mean_ratio: f64,
}

/// The paper's experiment: N clients, each with one call outstanding at all
/// times, for a while; first against the platform (no container for the
/// function yet, a prewarmed pool of N), then against a plain server that
/// sleeps as long as the handler.
pub async fn burst(env: &Env, options: &BenchOptions) -> anyhow::Result<Burst> {
    let clients = options.burst_clients;
    let handler_ms = options.burst_handler_ms;
    progress(format!(
        "burst: starting a manager with {clients} prewarmed containers"
    ));
    let m = env
        .manager("burst", |s| {
            s.pool.prewarm = clients;
            s.pool.prewarm_runtimes = vec!["python".into()];
        })
        .await?;
    let started = Instant::now();
    while !m
        .state
        .pool
        .wait_prewarmed("python", clients, Duration::from_secs(5))
        .await
    {
        let status = m.state.pool.status();
        progress(format!(
            "burst: {} of {clients} prewarmed ({:.0} s)",
            status.prewarmed,
            started.elapsed().as_secs_f64()
        ));
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the pool did not fill within 10 minutes");
        }
    }
    progress(format!(
        "burst: pool full after {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let handler = format!(
        "import time\ndef f(event):\n    time.sleep({})\n    return event\n",
        handler_ms as f64 / 1000.0
    );
    m.deploy("burst", &handler, &format!("max_concurrency: {clients}\n"))
        .await?;
    progress(format!(
        "burst: {clients} clients for {} s against the platform",
        options.burst_secs
    ));
    let platform = drive(m.url("/run/burst"), clients, options.burst_secs).await;
    m.stop().await?;

    progress(format!(
        "burst: {clients} clients for {} s against the ideal server",
        options.burst_secs
    ));
    let ideal_url = ideal_server(Duration::from_millis(handler_ms)).await?;
    let ideal = drive(ideal_url, clients, options.burst_secs).await;
    Ok(Burst {
        clients,
        seconds: options.burst_secs,
        handler_ms,
        mean_ratio: platform.latency.mean_ms / ideal.latency.mean_ms,
        platform,
        ideal,
    })
}

/// `clients` tasks, each sending one call after another for `secs`.
pub(super) async fn drive(url: String, clients: usize, secs: u64) -> BurstSide {
    let client = http_client();
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let samples = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, url, samples) = (client.clone(), url.clone(), samples.clone());
            tokio::spawn(async move {
                let (mut errors, mut first) = (0usize, None);
                while Instant::now() < until {
                    match call(&client, &url, Bytes::from_static(b"1")).await {
                        Ok((200, took)) => {
                            samples.lock().unwrap().push(took);
                            first.get_or_insert(start.elapsed());
                        }
                        _ => errors += 1,
                    }
                }
                (errors, first)
            })
        })
        .collect();
    let mut errors = 0;
    let mut all_served = Duration::ZERO;
    for task in tasks {
        let (e, first) = task.await.unwrap_or((1, None));
        errors += e;
        all_served = all_served.max(first.unwrap_or(Duration::from_secs(secs)));
    }
    let samples = samples.lock().unwrap();
    BurstSide {
        latency: Stats::of(&samples),
        errors,
        all_served_once_s: all_served.as_secs_f64(),
    }
}

/// A plain HTTP server that sleeps `delay` per request, on a free port.
pub(super) async fn ideal_server(delay: Duration) -> anyhow::Result<String> {
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move || async move {
            tokio::time::sleep(delay).await;
            "1"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}/"))
}

#[derive(Debug, Serialize)]
pub struct Writer {
    pub records: usize,
    /// Through the journal and the writer, as calls send them.
    pub journaled_per_s: f64,
    /// Straight batches of 1000 (one round trip each).
    pub batched_per_s: f64,
    /// One INSERT per record.
    pub single_per_s: f64,
    pub batched_vs_single: f64,
    /// Microseconds per journal append as calls do it (a plain write).
    pub append_us: f64,
    /// The same with an `fdatasync` after each append (the price of
    /// surviving a power cut, which the journal does not pay).
    pub append_fsync_us: f64,
}

/// Microseconds per appended record line in a file under `dir`, with or
/// without an `fdatasync` after each.
fn append_cost(dir: &std::path::Path, line: &[u8], n: usize, sync: bool) -> anyhow::Result<f64> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("append-{sync}.jsonl"));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let started = Instant::now();
    for _ in 0..n {
        file.write_all(line)?;
        if sync {
            file.sync_data()?;
        }
    }
    let us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    std::fs::remove_file(&path)?;
    Ok(us)
}

/// Records per second into Postgres: the journal and its writer, batches,
/// and one insert per record, in the same run.
pub async fn writer(env: &Env, options: &BenchOptions) -> anyhow::Result<Writer> {
    use crate::store::invocations::{insert_batch, Invocation};
    let n = options.writer_records;
    let db = env.database("writer").await?;
    let make = |i: usize| Invocation {
        duration_ms: (i % 300) as i64,
        billed_ms: 300,
        ..crate::testing::sample_invocation(&format!("fn-{}", i % 10))
    };

    progress(format!("writer: {n} records through the journal"));
    let dir = std::env::temp_dir().join(format!(
        "ol-bench-journal-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let (recorder, task) = crate::meter::Recorder::start(db.pool.clone(), &dir)?;
    let records: Vec<_> = (0..n).map(make).collect();
    let started = Instant::now();
    for r in &records {
        recorder.record(r);
    }
    if !recorder.flush(Duration::from_secs(300)).await {
        bail!("the writer did not finish");
    }
    let journaled = n as f64 / started.elapsed().as_secs_f64();
    task.abort();
    // The fsync question, on the same file system as the journal.
    let mut line = serde_json::to_vec(&make(0))?;
    line.push(b'\n');
    let appends = n.clamp(100, 2000);
    progress(format!(
        "writer: {appends} appends, without and with fdatasync"
    ));
    let append_us = append_cost(&dir, &line, appends, false)?;
    let append_fsync_us = append_cost(&dir, &line, appends, true)?;
    let _ = std::fs::remove_dir_all(&dir);

    progress(format!("writer: {n} records in batches of 1000"));
    let records: Vec<_> = (0..n).map(make).collect();
    let started = Instant::now();
    for batch in records.chunks(1000) {
        insert_batch(&db.pool, batch).await?;
    }
    let batched = n as f64 / started.elapsed().as_secs_f64();

    let singles = (n / 10).max(100);
    progress(format!("writer: {singles} records one insert each"));
    let records: Vec<_> = (0..singles).map(make).collect();
    let started = Instant::now();
    for r in &records {
        insert_batch(&db.pool, std::slice::from_ref(r)).await?;
    }
    let single = singles as f64 / started.elapsed().as_secs_f64();
    db.drop().await?;
    Ok(Writer {
        records: n,
        journaled_per_s: journaled,
        batched_per_s: batched,
        single_per_s: single,
        batched_vs_single: batched / single,
        append_us,
        append_fsync_us,
    })
}
