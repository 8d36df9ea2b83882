//! The mixed soak: many calls mixing warm calls, cold starts, handler
//! errors, timeouts, out-of-memory kills, unknown names and redeploys made
//! while calls run; then the platform's own failures (5xx that are not the
//! handler's), the ledger against the calls made (by request id, in
//! Postgres) and the manager's memory before and after.
//!
//! The manager runs in this process, so its memory is this process's RSS.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use super::harness::{progress, Env, HttpClient, Manager};
use super::BenchOptions;

const ECHO: &str = "def f(event):\n    return event\n";
const RAISES: &str = "def f(event):\n    raise ValueError('soak')\n";
const SLEEPS: &str = "import time\ndef f(event):\n    time.sleep(event)\n    return event\n";
const HOG: &str = "def f(mb):\n    block = bytearray(mb * 1024 * 1024)\n    return len(block)\n";

/// Calls in flight at once.
const CLIENTS: usize = 8;

/// One kind of call in the mix: where it goes, what it sends and the
/// statuses and error codes that are its normal answers.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Warm,
    Cold,
    HandlerError,
    Timeout,
    OutOfMemory,
    Unknown,
    Redeployed,
}

impl Kind {
    /// The mix, by call number: out of every 100 calls, 70 warm, 3 cold
    /// (first calls of never-called functions), 10 handler errors, 1
    /// timeout, 1 out-of-memory kill, 9 unknown names, 6 of a function
    /// redeployed every 2 s meanwhile.
    fn of(i: usize) -> Self {
        match i % 100 {
            0..=69 => Kind::Warm,
            70..=72 => Kind::Cold,
            73..=82 => Kind::HandlerError,
            83 => Kind::Timeout,
            84 => Kind::OutOfMemory,
            85..=93 => Kind::Unknown,
            _ => Kind::Redeployed,
        }
    }

    /// Whether `status` with error `code` is this kind's normal answer.
    fn expected(self, status: u16, code: &str) -> bool {
        match self {
            Kind::Warm | Kind::Cold | Kind::Redeployed => status == 200,
            Kind::HandlerError => status == 500 && code == "handler_error",
            Kind::Timeout => status == 504 && code == "timeout",
            Kind::OutOfMemory => status == 502 && code == "out_of_memory",
            Kind::Unknown => status == 404,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Soak {
    pub calls: usize,
    /// Calls answered as their kind should be.
    pub expected: usize,
    /// 5xx that are the platform's (not the handler's error, timeout or
    /// out-of-memory kill). Target 0.
    pub platform_5xx: usize,
    /// Other answers than the kind's normal one (e.g. a 429).
    pub unexpected: usize,
    /// Calls with no record in Postgres. Target 0.
    pub lost_records: usize,
    /// Request ids recorded more than once, or records no call made. Target 0.
    pub double_records: usize,
    pub redeploys: usize,
    pub seconds: f64,
    /// This process's resident memory after a warm-up and after the soak.
    pub rss_before_mb: f64,
    pub rss_after_mb: f64,
    /// Examples of platform and unexpected answers, for the log.
    pub examples: Vec<String>,
}

struct Answer {
    kind: Kind,
    status: u16,
    code: String,
    request_id: Option<String>,
}

pub async fn soak(env: &Env, options: &BenchOptions) -> anyhow::Result<Soak> {
    let n = options.soak_calls;
    let m = Arc::new(
        env.manager("soak", |s| {
            s.pool.prewarm = 2;
            s.pool.pause_grace = Duration::from_millis(300);
        })
        .await?,
    );
    let cold_functions = n.div_ceil(100) * 3;
    progress(format!("soak: deploying ({cold_functions} cold functions)"));
    m.deploy("warm", ECHO, "").await?;
    m.deploy("raises", RAISES, "").await?;
    m.deploy("sleeps", SLEEPS, "timeout_s: 1\n").await?;
    m.deploy("hog", HOG, "memory_mb: 64\n").await?;
    m.deploy("redeployed", ECHO, "").await?;
    for i in 0..cold_functions {
        m.deploy(&format!("cold-{i}"), &format!("{ECHO}# {i}\n"), "")
            .await?;
    }
    let warm_up = call(&m.client, &m.url("/run/warm"), Kind::Warm, "1").await?;
    let rss_before_mb = rss_mb()?;

    progress(format!("soak: {n} calls, {CLIENTS} at a time"));
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let cold = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let redeployer = tokio::spawn(redeploy(m.clone(), done.clone()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (m, next, cold) = (m.clone(), next.clone(), cold.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::AcqRel);
                    if i >= n {
                        return Ok::<_, anyhow::Error>(answers);
                    }
                    let kind = Kind::of(i);
                    let (name, event) = match kind {
                        Kind::Warm => ("warm".to_string(), "1"),
                        Kind::Cold => {
                            let c = cold.fetch_add(1, Ordering::AcqRel) % cold_functions;
                            (format!("cold-{c}"), "1")
                        }
                        Kind::HandlerError => ("raises".into(), "1"),
                        Kind::Timeout => ("sleeps".into(), "3"),
                        Kind::OutOfMemory => ("hog".into(), "256"),
                        Kind::Unknown => (format!("nope-{}", i % 7), "1"),
                        Kind::Redeployed => ("redeployed".into(), "1"),
                    };
                    answers
                        .push(call(&m.client, &m.url(&format!("/run/{name}")), kind, event).await?);
                }
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(n);
    for client in clients {
        answers.extend(client.await.context("a soak client")??);
    }
    done.store(true, Ordering::Release);
    let redeploys = redeployer.await.context("the redeployer")??;
    let seconds = started.elapsed().as_secs_f64();

    if !m.state.recorder.flush(Duration::from_secs(120)).await {
        bail!("the records did not reach Postgres within 2 minutes");
    }
    let mut report = Soak {
        calls: n,
        redeploys,
        seconds,
        rss_before_mb,
        ..Soak::default()
    };
    let mut ids: HashSet<String> = warm_up.request_id.into_iter().collect();
    for a in &answers {
        if a.kind.expected(a.status, &a.code) {
            report.expected += 1;
        } else {
            let platform = a.status >= 500;
            if platform {
                report.platform_5xx += 1;
            } else {
                report.unexpected += 1;
            }
            if report.examples.len() < 10 {
                report
                    .examples
                    .push(format!("{:?}: {} {}", a.kind, a.status, a.code));
            }
        }
        ids.extend(a.request_id.clone());
    }
    let (lost, double) = ledger(&m, &ids).await?;
    // A call answered without a request id has no findable record either.
    report.lost_records = lost + (answers.len() + 1 - ids.len());
    report.double_records = double;
    report.rss_after_mb = rss_mb()?;
    let m = Arc::into_inner(m).context("the soak's manager is still in use")?;
    m.stop().await?;
    Ok(report)
}

/// Sends one call; its status, error code and request id.
async fn call(
    client: &HttpClient,
    url: &str,
    kind: Kind,
    event: &'static str,
) -> anyhow::Result<Answer> {
    let request =
        hyper::Request::post(url).body(Full::new(Bytes::from_static(event.as_bytes())))?;
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.into_body().collect().await?.to_bytes();
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    Ok(Answer {
        kind,
        status,
        code,
        request_id,
    })
}

/// Redeploys `redeployed` with new code every 2 s while calls run.
async fn redeploy(m: Arc<Manager>, done: Arc<AtomicBool>) -> anyhow::Result<usize> {
    let mut count = 0;
    while !done.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        count += 1;
        m.deploy("redeployed", &format!("{ECHO}# version {count}\n"), "")
            .await?;
    }
    Ok(count)
}

/// Calls with no record, and request ids recorded twice or by no call.
async fn ledger(m: &Manager, ids: &HashSet<String>) -> anyhow::Result<(usize, usize)> {
    let recorded: Vec<String> = sqlx::query_scalar("SELECT request_id::text FROM invocations")
        .fetch_all(&m.state.db)
        .await?;
    let unique: HashSet<&str> = recorded.iter().map(String::as_str).collect();
    let lost = ids
        .iter()
        .filter(|id| !unique.contains(id.as_str()))
        .count();
    let strays = unique.iter().filter(|id| !ids.contains(**id)).count();
    Ok((lost, recorded.len() - unique.len() + strays))
}

/// This process's resident memory, MB (Linux).
fn rss_mb() -> anyhow::Result<f64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")?;
    Ok(kb / 1024.0)
}
