//! The deploys scenario of `ol bench`: how long a deploy of the Flask
//! requirements set takes, three ways, interleaved in one run:
//!
//! - uncached: `flask==3.0.3` into an empty package cache (the scenario's
//!   own data directory, emptied before each repeat): a builder resolves,
//!   and one builder per package installs;
//! - cached, through the builder: every package is in the cache, but the
//!   requirement is a range (`flask>=3.0.3,<3.0.4`, the same versions), so
//!   pip's resolver still runs in a builder: the path every deploy with
//!   requirements took before the resolution memo, like for like;
//! - cached, from the memo: `flask==3.0.3` again, by another function: no
//!   container, no index.
//!
//! Each time is the whole deploy as a client sees it (upload, checks,
//! packages, unpacking, the database), from request to answer. Builders
//! get `OL_CA_BUNDLE` and `OL_PIP_INDEX_URL` from the environment.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use super::harness::{progress, Env, Manager};
use super::{BenchOptions, Stats};

const PINNED: &str = "flask==3.0.3\n";
/// The same versions, not pinned: resolved in a builder.
const RANGED: &str = "flask>=3.0.3,<3.0.4\n";
const HANDLER: &str = "import flask\n\ndef f(event):\n    return flask.Flask.__name__\n";

#[derive(Debug, Serialize)]
pub struct Deploys {
    /// Packages in the Flask set's resolution.
    pub packages: usize,
    pub uncached: Stats,
    pub cached_builder: Stats,
    pub cached_memo: Stats,
    /// p50 cached through the builder / p50 from the memo.
    pub memo_vs_builder: f64,
    /// p50 uncached / p50 from the memo.
    pub memo_vs_uncached: f64,
}

pub async fn deploys(env: &Env, options: &BenchOptions) -> anyhow::Result<Deploys> {
    let n = options.deploy_repeats;
    progress("deploys: starting a manager");
    let m = env
        .manager("deploys", |s| {
            s.pool.prewarm = 0;
            s.ca_bundle = crate::config::env("OL_CA_BUNDLE").map(Into::into);
            s.pip_index_url = crate::config::env("OL_PIP_INDEX_URL");
        })
        .await?;
    let cache = m.data_dir.join("packages");
    let (mut uncached, mut builder, mut memo) = (Vec::new(), Vec::new(), Vec::new());
    let mut packages = 0;
    for i in 0..n {
        progress(format!("deploys: repeat {} of {n}", i + 1));
        match std::fs::remove_dir_all(&cache) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).context("emptying the package cache")
            }
            _ => {}
        }
        let (took, first) = deploy(&m, &format!("uncached-{i}"), PINNED, "resolved").await?;
        uncached.push(took);
        packages = first.len();
        if first.iter().any(|s| s != "installed") {
            bail!("the first deploy into an empty cache found packages: {first:?}");
        }
        for (name, requirements, resolution, series) in [
            ("builder", RANGED, "resolved", &mut builder),
            ("memo", PINNED, "cached", &mut memo),
        ] {
            let name = format!("{name}-{i}");
            let (took, steps) = deploy(&m, &name, requirements, resolution).await?;
            if steps.len() != packages || steps.iter().any(|s| s != "cached") {
                bail!("{name}: expected {packages} cached packages, got {steps:?}");
            }
            series.push(took);
        }
    }
    // The function deployed from the memo runs.
    m.run(&format!("memo-{}", n.saturating_sub(1)), "{}")
        .await
        .context("calling the function deployed from the memo")?;
    m.stop().await?;
    let (uncached, cached_builder, cached_memo) =
        (Stats::of(&uncached), Stats::of(&builder), Stats::of(&memo));
    Ok(Deploys {
        packages,
        memo_vs_builder: cached_builder.p50_ms / cached_memo.p50_ms,
        memo_vs_uncached: uncached.p50_ms / cached_memo.p50_ms,
        uncached,
        cached_builder,
        cached_memo,
    })
}

impl Deploys {
    /// The scenario's lines of the printed table.
    pub fn rows(&self) -> Vec<(String, String, String)> {
        let series = |s: &Stats| format!("{:.0} / {:.0}", s.p50_ms, s.max_ms);
        [
            (
                format!(
                    "flask==3.0.3 ({} packages), empty cache: p50 / max (ms)",
                    self.packages
                ),
                series(&self.uncached),
            ),
            (
                "cached, resolved in a builder: p50 / max (ms)".into(),
                series(&self.cached_builder),
            ),
            (
                "cached, from the memo: p50 / max (ms) (target p50 < 300)".into(),
                series(&self.cached_memo),
            ),
            (
                "builder / memo, p50 (target >= 5)".into(),
                format!("{:.1}", self.memo_vs_builder),
            ),
            (
                "empty cache / memo, p50".into(),
                format!("{:.1}", self.memo_vs_uncached),
            ),
        ]
        .into_iter()
        .map(|(what, figure)| ("deploys".to_string(), what, figure))
        .collect()
    }
}

/// Deploys `name` with `requirements`; the time to the answer and each
/// package's status. Fails unless the answer's `packages_resolution` is
/// `resolution`.
async fn deploy(
    m: &Manager,
    name: &str,
    requirements: &str,
    resolution: &str,
) -> anyhow::Result<(Duration, Vec<String>)> {
    let zip = crate::testing::zip_of(&[("f.py", HANDLER), ("requirements.txt", requirements)]);
    let started = Instant::now();
    let request = hyper::Request::put(m.url(&format!("/api/v1/functions/{name}")))
        .header("content-type", "application/zip")
        .body(Full::new(Bytes::from(zip)))?;
    let response = m.client.request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let took = started.elapsed();
    let body: serde_json::Value = serde_json::from_slice(&body)
        .with_context(|| format!("deploying {name}: {status}, not JSON"))?;
    if !status.is_success() || body["packages_resolution"] != resolution {
        bail!("deploying {name}: {status}, expected resolution {resolution}: {body}");
    }
    let steps = body["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["status"].as_str().unwrap_or_default().to_string())
        .collect();
    Ok((took, steps))
}
