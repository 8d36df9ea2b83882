//! A node that never saw a deploy installs the version's packages before
//! the version's first call there.
//!
//! The deploy resolved requirements.txt to exact versions once and stored
//! them with the code version (`code_versions.packages`, e.g. `six-1.16.0`);
//! any node installs exactly those into its own cache, the way the deploy
//! did, and never resolves again, so every node runs the same packages.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::anyhow;

use crate::function::FunctionSpec;
use crate::state::AppState;

/// Makes `function`'s pinned packages present in this node's cache.
/// `Some(time)` when this call had to wait for installs (a cold start for
/// that reason), `None` when they were there already. Once a version is
/// prepared, later calls pay one lock and a set lookup.
pub async fn prepare(
    state: &AppState,
    function: &FunctionSpec,
    code: &Path,
) -> anyhow::Result<Option<Duration>> {
    if function.packages.is_empty() || state.node.is_prepared(&function.version) {
        return Ok(None);
    }
    let started = Instant::now();
    // The deploy's hashes, when requirements.txt pinned them.
    let requirements = tokio::fs::read_to_string(code.join("requirements.txt"))
        .await
        .ok();
    let steps = state
        .installer
        .install_pinned(&function.name, &function.packages, requirements.as_deref())
        .await
        .map_err(|e| {
            anyhow!(
                "preparing the packages of {} (version {}) on this node: {e}",
                function.name,
                &function.version[..function.version.len().min(12)]
            )
        })?;
    state.node.mark_prepared(&function.version);
    // Found in the cache at once: nothing waited (ms 0).
    let waited: Vec<_> = steps.iter().filter(|s| s.ms > 0).collect();
    if waited.is_empty() {
        return Ok(None);
    }
    let took = started.elapsed();
    tracing::info!(function = %function.name, version = %function.version,
        packages = ?waited.iter().map(|s| format!("{}=={}", s.name, s.version)).collect::<Vec<_>>(),
        ms = took.as_millis() as u64,
        "cold start: installed the version's pinned packages, which this node had not seen");
    Ok(Some(took))
}
