//! `imports`: first calls of never-called functions whose handler imports a
//! package (Flask, numpy; each pinned), served from the import cache and
//! without it, beside a plain handler and `docker run` of the runtime image
//! importing the same package; and what a cached set costs in memory.
//!
//! One manager holds both sides, so that they share one package cache and
//! one page cache: the sets are pinned (`OL_POOL_IMPORT_CACHE`, nothing
//! chosen automatically), and the functions measured "without" carry an
//! environment variable, so that no import-cache container may serve them
//! (a set serves only functions with its environment) and they specialise a
//! plain prewarmed container. Every call's record is checked to say how
//! its container was had.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use super::harness::{progress, time_docker_run, Env, Manager};
use super::{BenchOptions, Stats};
use crate::manifest::Runtime;

/// A package a handler imports, pinned, and what the handler does with it.
struct Package {
    name: &'static str,
    version: &'static str,
    /// The handler module's imports and set-up, also run by `docker run`.
    setup: &'static str,
}

const PACKAGES: [Package; 2] = [
    Package {
        name: "flask",
        version: "3.0.3",
        setup: "from flask import Flask\napp = Flask(__name__)\n",
    },
    Package {
        name: "numpy",
        version: "2.1.3",
        setup: "import numpy as np\nx = np.arange(10)\n",
    },
];

/// How long the pool stays quiet before each measured first call. Measured
/// without it, the cached Flask call right after its set's refill was 7.7
/// ms at p50, 6.2 ms with 1.5 s (the plain handler's 3.9 and 5.0 ms).
const QUIET: Duration = Duration::from_secs(1);

const PLAIN: &str = "def f(event):\n    return event\n";

#[derive(Debug, Serialize)]
pub struct Imports {
    /// The plain handler's first call (a plain prewarmed container).
    pub plain: Stats,
    pub packages: Vec<PackageFigures>,
    /// The default memory budget on this host (80% of its memory), MB.
    pub default_budget_mb: u64,
    /// What each cached set is counted at against the budget: its
    /// container's memory limit (`OL_POOL_PREWARM_MEMORY_MB`), MB.
    pub counted_mb_per_set: u64,
}

#[derive(Debug, Serialize)]
pub struct PackageFigures {
    /// `flask==3.0.3`.
    pub package: String,
    /// First calls served from the import cache.
    pub cached: Stats,
    /// First calls specialising a plain prewarmed container.
    pub uncached: Stats,
    /// `docker run` of the runtime image importing the same.
    pub docker_run: Stats,
    /// The set's container after its imports (memory cgroup), MB.
    pub set_memory_mb: Option<i32>,
    /// Sets like it in the default budget, counted at their limit.
    pub sets_in_default_budget: u64,
    /// ... and counted at what they use.
    pub sets_in_default_budget_by_use: Option<u64>,
    /// p50 with the import cache / p50 of the plain handler (target <= 1.5).
    pub cached_vs_plain: f64,
    /// p50 of `docker run` + import / p50 with the import cache (target >= 10).
    pub docker_run_vs_cached: f64,
}

pub async fn imports(env: &Env, options: &BenchOptions) -> anyhow::Result<Imports> {
    let n = options.cold_functions;
    progress("imports: starting a manager that keeps flask and numpy imported");
    let m = env
        .manager("imports", |s| {
            s.pool.prewarm_runtimes = vec!["python".into()];
            s.pool.import_cache_auto = 0;
            s.pool.import_cache = PACKAGES
                .iter()
                .map(|p| vec![(p.name.to_string(), p.version.to_string())])
                .collect();
        })
        .await?;
    let figures = measure(&m, n).await;
    let stopped = m.stop().await;
    let (plain, packages) = figures?;
    stopped?;
    let defaults = crate::config::Settings::from_lookup(|k| {
        (k == "DATABASE_URL").then(|| "postgres://unused".to_string())
    })?
    .pool;
    let counted = defaults.prewarm_memory_mb.max(1) as u64;
    let budget = defaults.memory_budget_mb;
    let packages = packages
        .into_iter()
        .map(
            |(package, cached, uncached, docker_run, memory)| PackageFigures {
                package,
                cached_vs_plain: cached.p50_ms / plain.p50_ms,
                docker_run_vs_cached: docker_run.p50_ms / cached.p50_ms,
                cached,
                uncached,
                docker_run,
                set_memory_mb: memory,
                sets_in_default_budget: budget / counted,
                sets_in_default_budget_by_use: memory.map(|mb| budget / mb.max(1) as u64),
            },
        )
        .collect();
    Ok(Imports {
        plain,
        packages,
        default_budget_mb: budget,
        counted_mb_per_set: counted,
    })
}

type Measured = (String, Stats, Stats, Stats, Option<i32>);

async fn measure(m: &Manager, n: usize) -> anyhow::Result<(Stats, Vec<Measured>)> {
    wait_for_sets(m).await?;
    let mut plain = Vec::new();
    let mut series: Vec<(Vec<Duration>, Vec<Duration>)> =
        PACKAGES.iter().map(|_| Default::default()).collect();
    for i in 0..n {
        progress(format!("imports: round {} of {n}", i + 1));
        let name = format!("plain-{i}");
        m.deploy(&name, &format!("{PLAIN}# {i}\n"), "").await?;
        plain.push(first_call(m, &name, None, "prewarmed").await?);
        for (p, (cached, uncached)) in PACKAGES.iter().zip(&mut series) {
            cached.push(deploy_and_call(m, p, i, false).await?);
            uncached.push(deploy_and_call(m, p, i, true).await?);
        }
    }
    // The last calls took the sets' containers: wait for their refills,
    // whose dirs and memory the comparison reads.
    wait_for_sets(m).await?;
    let cache = m.state.pool.import_cache();
    let image = crate::images::ensure(
        &crate::app::connect_docker().await?,
        &m.state.settings.base_image,
        Runtime::Python,
    )
    .await?;
    let mut out = Vec::new();
    for (p, (cached, uncached)) in PACKAGES.iter().zip(series) {
        let set = cache
            .iter()
            .find(|c| c.set == crate::packages::dir_name(p.name, p.version))
            .context("the set's container went away")?;
        progress(format!("imports: {n} x docker run importing {}", p.name));
        let packages = crate::packages::Installer::cache_dir(&m.data_dir);
        let mut runs = Vec::new();
        for _ in 0..n {
            runs.push(docker_run(&image, &packages, &set.dirs, p.setup).await?);
        }
        out.push((
            format!("{}=={}", p.name, p.version),
            Stats::of(&cached),
            Stats::of(&uncached),
            Stats::of(&runs),
            set.memory_mb,
        ));
    }
    Ok((Stats::of(&plain), out))
}

/// Waits until every pinned set has a container ready (the first start
/// installs the packages).
async fn wait_for_sets(m: &Manager) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let ready = m.state.pool.import_cache();
        if PACKAGES.iter().all(|p| has_set(&ready, p)) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(900) {
            bail!(
                "the import cache's sets were not ready within 15 minutes (see the manager's log)"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn has_set(ready: &[crate::pool::CachedSet], p: &Package) -> bool {
    let dir = crate::packages::dir_name(p.name, p.version);
    ready.iter().any(|c| c.set == dir)
}

/// Deploys a never-called function importing `p` and times its first call:
/// served from the import cache, or (`without`, its own environment) from a
/// plain prewarmed container.
async fn deploy_and_call(
    m: &Manager,
    p: &Package,
    i: usize,
    without: bool,
) -> anyhow::Result<Duration> {
    let name = format!(
        "{}-{}-{i}",
        p.name,
        if without { "plain" } else { "cached" }
    );
    let handler = format!("{}def f(event):\n    return {:?}\n", p.setup, p.name);
    let requirements = format!("{}=={}\n", p.name, p.version);
    let manifest = if without {
        "environment:\n  OL_BENCH: without-cache\n"
    } else {
        ""
    };
    m.deploy_files(
        &name,
        &[
            ("f.py", &handler),
            ("requirements.txt", &requirements),
            ("ol.yaml", manifest),
        ],
    )
    .await?;
    let (wait_set, start) = if without {
        (None, "prewarmed")
    } else {
        (Some(p), "import-cache")
    };
    first_call(m, &name, wait_set, start).await
}

/// Waits for a container of the kind the call should take, times the call
/// and checks its record says it took one.
async fn first_call(
    m: &Manager,
    name: &str,
    set: Option<&Package>,
    start: &str,
) -> anyhow::Result<Duration> {
    let limit = Duration::from_secs(300);
    let ready = match set {
        None => m.state.pool.wait_prewarmed("python", 1, limit).await,
        Some(p) => {
            let deadline = Instant::now() + limit;
            while !has_set(&m.state.pool.import_cache(), p) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            has_set(&m.state.pool.import_cache(), p)
        }
    };
    if !ready {
        bail!("no container for {name} was prewarmed within {limit:?}");
    }
    settle(m, limit).await?;
    let took = m.run(name, "1").await?;
    let record_start = record_start(m, name).await?;
    if record_start.as_deref() != Some(start) {
        bail!("{name}'s first call started {record_start:?}, not {start:?}: the figures would lie");
    }
    // Its container goes, so that a long run (`--cold-functions 30` makes
    // 150) stays within the pool's budget instead of waiting on it.
    m.state.pool.retire(name);
    Ok(took)
}

/// Waits until no container is being created, importing its set or
/// removed, and then [`QUIET`] more: the refill of a set the last call took
/// imports it again (Flask is 400 ms of CPU), and the engine goes on
/// working after the pool has what it asked for, which would otherwise fall
/// on the call measured next, and on one kind of call more than another.
async fn settle(m: &Manager, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let status = m.state.pool.status();
        if status.prewarming == 0 && status.starting == 0 && m.state.pool.removing() == 0 {
            tokio::time::sleep(QUIET).await;
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the pool was still starting containers after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `start` of `name`'s latest record, once the writer stored it.
async fn record_start(m: &Manager, name: &str) -> anyhow::Result<Option<String>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = crate::store::invocations::recent(&m.state.db, name, None, 1).await?;
        if let Some(r) = records.into_iter().next() {
            return Ok(r.start);
        }
        if Instant::now() > deadline {
            bail!("no record of {name}'s call after 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `docker run` of the runtime image that imports what the handler does,
/// from the same package directories.
async fn docker_run(
    image: &str,
    packages: &Path,
    dirs: &[String],
    setup: &str,
) -> anyhow::Result<Duration> {
    let paths: Vec<String> = dirs.iter().map(|d| format!("/packages/{d}")).collect();
    let script = format!("import sys\nsys.path[:0] = {paths:?}\n{setup}print(1)\n");
    let mount = format!("{}:/packages:ro", packages.display());
    time_docker_run(image, &[mount], &script).await
}

/// The rows of `ol bench`'s table.
pub fn rows(i: &Imports) -> Vec<(String, String, String)> {
    let f = |v: f64| format!("{v:.1}");
    let mut rows = vec![(
        "imports".into(),
        "plain handler, first call p50 / p99 (ms)".into(),
        format!("{} / {}", f(i.plain.p50_ms), f(i.plain.p99_ms)),
    )];
    for p in &i.packages {
        let series = [
            ("import cache", &p.cached),
            ("no import cache", &p.uncached),
            ("docker run + import", &p.docker_run),
        ];
        for (what, s) in series {
            rows.push((
                "imports".into(),
                format!("{}: {what} p50 / p99 (ms)", p.package),
                format!("{} / {}", f(s.p50_ms), f(s.p99_ms)),
            ));
        }
        rows.push((
            "imports".into(),
            format!(
                "{}: cached / plain p50 (target <= 1.5); docker run / cached (>= 10)",
                p.package
            ),
            format!("{:.2}; {:.1}", p.cached_vs_plain, p.docker_run_vs_cached),
        ));
        rows.push((
            "imports".into(),
            format!(
                "{}: set MB used; sets in the default budget ({} MB) at {} MB / at use",
                p.package, i.default_budget_mb, i.counted_mb_per_set
            ),
            format!(
                "{} MB; {} / {}",
                p.set_memory_mb.map_or("-".into(), |mb| mb.to_string()),
                p.sets_in_default_budget,
                p.sets_in_default_budget_by_use
                    .map_or("-".into(), |n| n.to_string())
            ),
        ));
    }
    rows
}
