//! Prewarming: keeps `OL_POOL_PREWARM` generic containers of each runtime in
//! `OL_POOL_PREWARM_RUNTIMES` created, started (runtime server up) and paused, so that a function's
//! first call is a specialisation (unpause, load) rather than a
//! `docker create`/`start`. Refills in the background as they are taken.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Inner;
use crate::manifest::Runtime;

/// Generic containers created at once: the engine starts only a few
/// containers a second on two cores, and calls need it too.
const IN_PARALLEL: usize = 4;

pub(super) async fn fill(pool: Weak<Inner>) {
    loop {
        let Some(inner) = pool.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let settings = &inner.settings;
        let memory = settings.prewarm_memory_mb.max(0) as u64;
        // Checked when the settings were read; anything else is skipped.
        let runtimes = settings
            .prewarm_runtimes
            .iter()
            .filter_map(|r| Runtime::parse(r).ok());
        for runtime in runtimes {
            let n = inner.state.lock().unwrap().want_prewarm(
                runtime,
                settings.prewarm,
                memory,
                IN_PARALLEL,
            );
            for _ in 0..n {
                tokio::spawn(create_one(inner.clone(), runtime));
            }
        }
        // Woken when one is taken or made; the tick covers freed memory.
        let _ = tokio::time::timeout(Duration::from_secs(1), inner.refill.notified()).await;
    }
}

async fn create_one(inner: Arc<Inner>, runtime: Runtime) {
    let memory = inner.settings.prewarm_memory_mb;
    let created = inner.engine.create(runtime, memory, None).await;
    match created {
        Ok(sandbox) => {
            let sandbox = Arc::new(sandbox);
            let paused = match inner.engine.pause(&sandbox).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(sandbox = %sandbox.id, error = %e, "pause of a prewarmed container failed");
                    false
                }
            };
            let closed = inner.closed.load(Ordering::Acquire);
            if closed {
                // Shutting down: remove it before it stops counting as
                // being created, so the shutdown sees it gone.
                inner.engine.remove(&sandbox).await;
                inner.update(|state| state.prewarm_failed(runtime, memory.max(0) as u64));
                return;
            }
            inner.update(|state| state.prewarmed(runtime, sandbox, paused));
        }
        Err(e) => {
            tracing::warn!(runtime = runtime.as_str(), error = %e, "could not prewarm a container");
            inner.update(|state| state.prewarm_failed(runtime, memory.max(0) as u64));
            // Do not spin on a broken engine.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    inner.refill.notify_one();
}
