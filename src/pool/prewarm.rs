//! Prewarming: keeps generic containers of each runtime in
//! `OL_POOL_PREWARM_RUNTIMES` created and started (runtime server up), so
//! that a function's first call is a specialisation (load the code) rather
//! than a `docker create`/`start`; and, for the import cache,
//! Python ones whose runtime has imported a package set. How many of each
//! the state decides (`state/prewarm.rs`: the floor `OL_POOL_PREWARM`, the
//! import-cache sets, the observed demand); this task makes them, in the
//! background, as they are taken or wanted.
//!
//! Prewarmed containers are not paused. Their runtime server waits in the
//! kernel for a connection (Python's wakes twice a second, Node's not at
//! all), so freezing it saves next to no CPU and no memory, while
//! unfreezing is an engine round trip (`runc`) on every cold start: a
//! burst that specialises a hundred at once spent seconds of engine time
//! on unpauses alone.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::state::WarmKind;
use super::Inner;
use crate::manifest::Runtime;
use crate::sandbox::{Failure, Imported, Sandbox};

/// Generic containers created at once: the engine starts only a few
/// containers a second on two cores, and calls need it too.
const IN_PARALLEL: usize = 4;

pub(super) async fn fill(pool: Weak<Inner>) {
    loop {
        let Some(inner) = pool.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        // Checked when the settings were read; anything else is skipped.
        let runtimes: Vec<Runtime> = inner
            .settings
            .prewarm_runtimes
            .iter()
            .filter_map(|r| Runtime::parse(r).ok())
            .collect();
        let plan =
            inner.update(|state| state.prewarm_plan(&inner.settings, &runtimes, IN_PARALLEL));
        for kind in plan {
            tokio::spawn(create_one(inner.clone(), kind));
        }
        // Woken when one is taken or made; the tick covers freed memory
        // and demand that decays.
        let _ = tokio::time::timeout(Duration::from_secs(1), inner.refill.notified()).await;
    }
}

async fn create_one(inner: Arc<Inner>, kind: WarmKind) {
    let memory = inner.settings.prewarm_memory_mb;
    let made = make(&inner, &kind).await;
    let closed = inner.closed.load(Ordering::Acquire);
    match made {
        Ok((sandbox, _)) if closed => {
            // Shutting down: remove it before it stops counting as being
            // created, so the shutdown sees it gone.
            inner.engine.remove(&sandbox).await;
            inner.update(|state| state.prewarm_failed(&kind, memory.max(0) as u64));
        }
        Ok((sandbox, imported)) => {
            if let Some(imported) = &imported {
                tracing::info!(set = %kind.label(), modules = ?imported.modules,
                    memory_mb = imported.memory_mb, import_ms = imported.took.as_millis() as u64,
                    "import cache: a container imported its set");
            }
            inner.update(|state| state.prewarmed(kind, Arc::new(sandbox), imported));
        }
        Err(e) => {
            tracing::warn!(runtime = kind.runtime.as_str(), set = %kind.label(), error = %e,
                "could not prewarm a container");
            inner.update(|state| state.prewarm_failed(&kind, memory.max(0) as u64));
            // Do not spin on a broken engine.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    inner.refill.notify_one();
}

/// Creates a generic container of `kind` and, for an import-cache one, has
/// its runtime import the set; on failure nothing is left behind.
async fn make(inner: &Inner, kind: &WarmKind) -> Result<(Sandbox, Option<Imported>), Failure> {
    let memory = inner.settings.prewarm_memory_mb;
    let sandbox = inner.engine.create(kind.runtime, memory, None).await?;
    let Some(set) = &kind.set else {
        return Ok((sandbox, None));
    };
    match inner.engine.preimport(&sandbox, set).await {
        Ok(imported) => Ok((sandbox, Some(imported))),
        Err(e) => {
            inner.engine.remove(&sandbox).await;
            Err(e)
        }
    }
}
