//! The `warm-concurrency` scenario of `ol bench`: warm calls of a trivial
//! Python handler by 1, 8 and 32 callers at once, through the manager
//! against the same runtime server called straight on its socket. Every
//! way keeps its connections (one per call in flight), as the manager
//! keeps its own to the runtime.
//!
//! A third way measures the floor of any platform that proxies HTTP to its
//! containers: a bare proxy, served as the manager's listeners are (the
//! same server loop, on its own runtime sized as the manager's), that hands
//! each body to the runtime server over a kept connection and answers with
//! the reply, doing nothing else (no lease, no meter, no record). Manager / proxy is what the manager's own work costs;
//! proxy / direct is what the second hop costs.
//!
//! The function serves 32 calls at once in one container
//! (`concurrency: 32`, `max_concurrency: 1`), so every caller is served
//! warm by the same server both ways, and both send the same request (the
//! request description and body `/run` sends). At each level the ways take
//! turns in slices, so that the machine's noise falls on all of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::http::StatusCode;
use bytes::Bytes;
use serde::Serialize;

use super::check::{at_least, at_most, Check};
use super::harness::{progress, Env, KeptConnections, Manager, OwnRuntime};
use super::{BenchOptions, Stats};
use crate::config::Settings;
use crate::sandbox::{self, Connections, Payload, Reply, RequestMeta};

const ECHO: &str = "def f(event):\n    return event\n";
/// The function every way calls, and its path through the manager (and
/// the bare proxy).
const FUNCTION: &str = "wc";
const PATH: &str = "/run/wc";
/// Callers at once, per level.
const LEVELS: [usize; 3] = [1, 8, 32];
/// Turns each way takes per level.
const SLICES: usize = 4;

/// Targets of issue 14 (full runs; quick runs check looser bounds).
const P50_RATIO_TARGET: f64 = 1.3;
const THROUGHPUT_RATIO_TARGET: f64 = 0.8;

#[derive(Debug, Serialize)]
pub struct WarmConcurrency {
    pub levels: Vec<Level>,
}

/// One level of callers at once.
#[derive(Debug, Serialize)]
pub struct Level {
    pub callers: usize,
    pub manager: Stats,
    /// The bare proxy in front of the same runtime server.
    pub proxy: Stats,
    pub direct: Stats,
    /// Calls per second, each way.
    pub manager_per_s: f64,
    pub proxy_per_s: f64,
    pub direct_per_s: f64,
    /// Manager p50 / direct p50 (lower is better).
    pub p50_ratio: f64,
    /// Bare proxy p50 / direct p50: the second hop's share of `p50_ratio`.
    pub proxy_p50_ratio: f64,
    /// Manager calls/s / direct calls/s (higher is better).
    pub throughput_ratio: f64,
}

/// One way of calling, and the time its calls took in all.
#[derive(Default)]
struct Side {
    samples: Vec<Duration>,
    busy: Duration,
}

impl Side {
    fn per_s(&self) -> f64 {
        self.samples.len() as f64 / self.busy.as_secs_f64()
    }
}

pub async fn warm_concurrency(
    env: &Env,
    options: &BenchOptions,
) -> anyhow::Result<WarmConcurrency> {
    progress("warm-concurrency: starting a manager");
    let m = env
        .manager("warmconc", |s| {
            s.pool.prewarm = 0;
            s.pool.pause_grace = Duration::from_secs(600);
        })
        .await?;
    let top = LEVELS[LEVELS.len() - 1];
    m.deploy(
        FUNCTION,
        ECHO,
        &format!("concurrency: {top}\nmax_concurrency: 1\n"),
    )
    .await?;
    m.run(FUNCTION, "1").await?;
    let socket = socket_of(&m, FUNCTION)?;
    let direct = Arc::new(Direct::new(socket.clone()));
    let manager = Arc::new(KeptConnections::new(m.functions_addr));
    let bare = Proxy::start(Direct::new(socket), &m.state.settings).await?;
    let proxy = Arc::new(KeptConnections::new(bare.addr));
    let mut levels = Vec::new();
    for callers in LEVELS {
        // At least a few calls per caller per slice.
        let per_slice = (options.warm_calls / SLICES).max(callers * 4);
        progress(format!(
            "warm-concurrency: {callers} callers, {} calls each way",
            per_slice * SLICES
        ));
        let (mut via_manager, mut via_proxy, mut straight): (Side, Side, Side) = Default::default();
        for _ in 0..SLICES {
            let ways = [
                (&mut via_manager, &manager, "the manager"),
                (&mut via_proxy, &proxy, "the bare proxy"),
            ];
            for (side, through, way) in ways {
                let through = through.clone();
                let calls = run_slice(callers, per_slice, move || {
                    let through = through.clone();
                    async move { post(&through, way).await }
                });
                extend(side, calls.await?);
            }
            let direct = direct.clone();
            let calls = run_slice(callers, per_slice, move || {
                let direct = direct.clone();
                async move { direct.call().await }
            });
            extend(&mut straight, calls.await?);
        }
        levels.push(Level::of(callers, &via_manager, &via_proxy, &straight));
    }
    if m.state.pool.containers(FUNCTION).len() != 1 {
        bail!("the calls were not all served by one container");
    }
    m.stop().await?;
    Ok(WarmConcurrency { levels })
}

/// The runtime socket of `function`'s one container.
fn socket_of(m: &Manager, function: &str) -> anyhow::Result<std::path::PathBuf> {
    let container = m
        .state
        .pool
        .containers(function)
        .pop()
        .context("no container after a call")?;
    Ok(sandbox::layout::socket(
        &m.data_dir.join("sandboxes").join(&container.sandbox),
    ))
}

/// A call of [`PATH`] through `way`, the manager or the bare proxy.
async fn post(through: &KeptConnections, way: &str) -> anyhow::Result<Duration> {
    let (status, took) = through.post(PATH, Bytes::from_static(b"1")).await?;
    if status != 200 {
        bail!("a call through {way} answered {status}");
    }
    Ok(took)
}

/// The bare proxy: `POST` to [`PATH`] hands the body to the runtime server as
/// the manager's `/run` would, and answers with the handler's reply.
struct Proxy {
    addr: std::net::SocketAddr,
    _runtime: OwnRuntime,
}

impl Proxy {
    /// Serves on loopback as the manager's listeners serve (the same
    /// server loop and bounds), on a runtime of `settings.worker_threads`.
    async fn start(runtime_server: Direct, settings: &Settings) -> anyhow::Result<Self> {
        let runtime = OwnRuntime::new("ol-bench-proxy", settings.worker_threads)?;
        let server = Arc::new(runtime_server);
        let app = axum::Router::new().route(
            PATH,
            axum::routing::post(move |body: Bytes| {
                let server = server.clone();
                async move {
                    match server.forward(body).await {
                        Ok(reply) => (StatusCode::OK, reply.body),
                        Err(e) => (StatusCode::BAD_GATEWAY, Bytes::from(e.to_string())),
                    }
                }
            }),
        );
        let listener = runtime
            .spawn(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .await?
            .context("binding the bare proxy")?;
        let addr = listener.local_addr()?;
        let limits = crate::serve::Limits {
            max_connections: settings.max_connections,
            header_timeout: settings.header_timeout,
            body_timeout: settings.body_timeout,
        };
        runtime.spawn(crate::serve::serve(
            listener,
            app,
            limits,
            std::future::pending(),
        ));
        Ok(Self {
            addr,
            _runtime: runtime,
        })
    }
}

/// The runtime server, called on its socket as the manager calls it.
struct Direct {
    socket: std::path::PathBuf,
    conns: Connections,
    /// `/run`'s request description for a `POST` of `1` to the function.
    meta: RequestMeta,
}

impl Direct {
    fn new(socket: std::path::PathBuf) -> Self {
        let meta = RequestMeta {
            method: "POST".into(),
            path: "/".into(),
            script_name: PATH.into(),
            run: true,
            query: String::new(),
            headers: vec![("content-length".into(), "1".into())],
            source_ip: "127.0.0.1".into(),
            request_id: uuid::Uuid::new_v4().to_string(),
            timeout_ms: 30_000,
        };
        Self {
            socket,
            conns: Connections::default(),
            meta,
        }
    }

    async fn call(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.forward(Bytes::from_static(b"1")).await?;
        Ok(started.elapsed())
    }

    /// `body` to the handler; its answer, which must be a 200.
    async fn forward(&self, body: Bytes) -> anyhow::Result<Reply> {
        let payload = Payload::Http {
            meta: self.meta.clone(),
            body,
        };
        let (body, meta_length) = payload.framed()?;
        let reply = sandbox::request(
            &self.conns,
            &self.socket,
            "POST",
            "/invoke",
            meta_length,
            body,
            1 << 20,
        )
        .await?;
        if reply.status != 200 {
            bail!("the runtime server answered {}", reply.status);
        }
        Ok(reply)
    }
}

/// `calls` calls made by `callers` tasks at once; their latencies and the
/// wall time they took.
async fn run_slice<F, Fut>(
    callers: usize,
    calls: usize,
    one: F,
) -> anyhow::Result<(Vec<Duration>, Duration)>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<Duration>> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let one = one.clone();
            // The calls shared out, the first callers taking one more.
            let mine = calls / callers + usize::from(i < calls % callers);
            tokio::spawn(async move {
                let mut took = Vec::with_capacity(mine);
                for _ in 0..mine {
                    took.push(one().await?);
                }
                anyhow::Ok(took)
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(calls);
    for task in tasks {
        samples.extend(task.await??);
    }
    Ok((samples, started.elapsed()))
}

fn extend(side: &mut Side, (samples, took): (Vec<Duration>, Duration)) {
    side.samples.extend(samples);
    side.busy += took;
}

impl Level {
    fn of(callers: usize, manager: &Side, proxy: &Side, direct: &Side) -> Self {
        let m = Stats::of(&manager.samples);
        let p = Stats::of(&proxy.samples);
        let d = Stats::of(&direct.samples);
        Self {
            callers,
            p50_ratio: m.p50_ms / d.p50_ms,
            proxy_p50_ratio: p.p50_ms / d.p50_ms,
            throughput_ratio: manager.per_s() / direct.per_s(),
            manager_per_s: manager.per_s(),
            proxy_per_s: proxy.per_s(),
            direct_per_s: direct.per_s(),
            manager: m,
            proxy: p,
            direct: d,
        }
    }
}

impl WarmConcurrency {
    /// The table's rows: (scenario, measure, figure).
    pub fn rows(&self) -> Vec<(String, String, String)> {
        let scenario = || "warm-concurrency".to_string();
        let mut rows = Vec::new();
        for l in &self.levels {
            rows.push((
                scenario(),
                format!(
                    "{:>2} callers: p50 / p99 manager, bare proxy, direct (ms)",
                    l.callers
                ),
                format!(
                    "{:.2} / {:.2}, {:.2} / {:.2}, {:.2} / {:.2}",
                    l.manager.p50_ms,
                    l.manager.p99_ms,
                    l.proxy.p50_ms,
                    l.proxy.p99_ms,
                    l.direct.p50_ms,
                    l.direct.p99_ms
                ),
            ));
            rows.push((
                scenario(),
                format!(
                    "{:>2} callers: calls/s manager, bare proxy, direct",
                    l.callers
                ),
                format!(
                    "{:.0}, {:.0}, {:.0}",
                    l.manager_per_s, l.proxy_per_s, l.direct_per_s
                ),
            ));
            rows.push((
                scenario(),
                format!("{:>2} callers: p50 bare proxy / direct", l.callers),
                format!("{:.2}", l.proxy_p50_ratio),
            ));
            rows.push((
                scenario(),
                format!(
                    "{:>2} callers: p50 ratio (<= {P50_RATIO_TARGET}), calls/s ratio (>= {THROUGHPUT_RATIO_TARGET})",
                    l.callers
                ),
                format!("{:.2}, {:.2}", l.p50_ratio, l.throughput_ratio),
            ));
        }
        rows
    }

    /// The targets: p50 through the manager against direct with
    /// one caller, and throughput with the most callers. Quick runs (a
    /// debug build) check bounds several times looser.
    pub fn checks(&self, quick: bool) -> Vec<Check> {
        let (Some(one), Some(most)) = (self.levels.first(), self.levels.last()) else {
            return Vec::new();
        };
        let (p50, throughput) = if quick {
            (6.0, 0.2)
        } else {
            (P50_RATIO_TARGET, THROUGHPUT_RATIO_TARGET)
        };
        vec![
            at_most(
                "warm-concurrency",
                "p50 manager / direct, 1 caller",
                one.p50_ratio,
                p50,
            ),
            at_least(
                "warm-concurrency",
                "calls/s manager / direct, most callers",
                most.throughput_ratio,
                throughput,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(callers: usize, p50_ratio: f64, throughput_ratio: f64) -> Level {
        Level {
            callers,
            manager: Stats::default(),
            proxy: Stats::default(),
            direct: Stats::default(),
            manager_per_s: 0.0,
            proxy_per_s: 0.0,
            direct_per_s: 0.0,
            p50_ratio,
            proxy_p50_ratio: 1.0,
            throughput_ratio,
        }
    }

    #[test]
    fn latency_is_checked_at_one_caller_and_throughput_at_the_most() {
        let report = |one, most| WarmConcurrency {
            levels: vec![level(1, one, 1.0), level(8, 9.0, 0.1), level(32, 9.0, most)],
        };
        let passed = |r: &WarmConcurrency, quick| {
            r.checks(quick).iter().map(|c| c.passed).collect::<Vec<_>>()
        };
        assert_eq!(passed(&report(1.2, 0.9), false), [true, true]);
        assert_eq!(passed(&report(1.4, 0.7), false), [false, false]);
        assert_eq!(passed(&report(1.4, 0.7), true), [true, true]);
        assert!(WarmConcurrency { levels: Vec::new() }
            .checks(false)
            .is_empty());
    }
}
