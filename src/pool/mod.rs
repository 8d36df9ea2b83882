//! The container pool: hands out leases on ready containers, cheapest first.
//!
//! Per function, a list of workers (one container each, one call at a time).
//! A call takes, in order: the most recently used idle container; a paused
//! one (unpaused now); a new one, while the function is below its limit;
//! otherwise it waits in line until a container frees up or its queue
//! deadline passes (then it is throttled).
//!
//! When a lease ends the container goes idle; after the pause grace it is
//! paused, after the keep-alive it is removed. A failed pause is a normal
//! outcome: the container just stays running. All pool state sits behind
//! short `std::sync::Mutex` sections that are never held across an `.await`.

mod worker;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::PoolSettings;
use crate::sandbox::{Failure, Sandbox, Sandboxes};
use crate::store::functions::Function;
use worker::{Phase, Worker};

/// Why no container could be had for a call.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error("all {limit} containers of the function are busy and the call waited {waited:?}")]
    Throttled { limit: usize, waited: Duration },
    #[error("the manager is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Start(#[from] Failure),
}

/// Cheap handle to the pool.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    sandboxes: Sandboxes,
    settings: PoolSettings,
    /// Containers a function may have at once.
    max_per_function: usize,
    /// Per function name; entries live as long as the manager.
    functions: Mutex<HashMap<String, Arc<FunctionPool>>>,
    /// Set once on shutdown: no new containers, leases end by removal.
    closed: AtomicBool,
}

/// One function's containers.
struct FunctionPool {
    name: String,
    state: Mutex<FunctionState>,
    /// Wakes a waiting call when a container frees up or a start fails.
    freed: Notify,
}

#[derive(Default)]
struct FunctionState {
    /// The code version the containers must run; others are retired.
    version: String,
    workers: Vec<Worker>,
    /// Containers being created right now (they count against the limit).
    starting: usize,
}

/// A call's exclusive use of one container. Dropping it hands the
/// container back; [`Lease::discard`] removes it instead.
pub struct Lease {
    pool: Arc<Inner>,
    function: Arc<FunctionPool>,
    sandbox: Arc<Sandbox>,
    /// Time spent loading the code when this lease started a container.
    pub init: Option<Duration>,
    discard: bool,
}

impl Lease {
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    pub fn cold(&self) -> bool {
        self.init.is_some()
    }

    /// Ends the lease by removing the container (after a timeout or crash:
    /// whatever it was doing must not go on, and the next call gets a fresh one).
    pub fn discard(mut self) {
        self.discard = true;
    }
}

/// What acquire decided to do, under the lock.
enum Step {
    Use(Arc<Sandbox>, bool),
    Start,
    Wait,
}

impl Pool {
    pub fn new(sandboxes: Sandboxes, settings: PoolSettings, max_per_function: usize) -> Self {
        let inner = Arc::new(Inner {
            sandboxes,
            settings,
            max_per_function: max_per_function.max(1),
            functions: Mutex::default(),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(reap(Arc::downgrade(&inner)));
        Self { inner }
    }

    fn function_pool(&self, name: &str) -> Arc<FunctionPool> {
        let mut map = self.inner.functions.lock().unwrap();
        map.entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(FunctionPool {
                    name: name.to_string(),
                    state: Mutex::default(),
                    freed: Notify::new(),
                })
            })
            .clone()
    }

    /// Gets a container running `function`'s current version for one call.
    pub async fn acquire(&self, function: &Function, code: &Path) -> Result<Lease, AcquireError> {
        let pool = self.function_pool(&function.name);
        let waker = pool.clone();
        let queued = Instant::now();
        let deadline = queued + self.inner.settings.queue_timeout;
        loop {
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(AcquireError::ShuttingDown);
            }
            let freed = waker.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let (step, retired) = {
                let mut state = pool.state.lock().unwrap();
                let retired = state.retire_other_versions(&function.version);
                (self.choose(&pool, &mut state), retired)
            };
            self.inner.remove_all(retired);
            match step {
                Step::Use(sandbox, paused) => {
                    if paused {
                        if let Err(e) = self.inner.sandboxes.unpause(&sandbox).await {
                            tracing::warn!(function = %pool.name, sandbox = %sandbox.id, error = %e,
                                "unpause failed; removing the container");
                            pool.forget(&sandbox.id);
                            self.inner.remove_later(sandbox);
                            continue;
                        }
                        pool.transition(&sandbox.id, Phase::Busy);
                    }
                    return Ok(self.lease(pool, sandbox, None));
                }
                Step::Start => return self.start(pool, function, code).await,
                Step::Wait => {
                    if tokio::time::timeout_at(deadline.into(), freed)
                        .await
                        .is_err()
                    {
                        return Err(AcquireError::Throttled {
                            limit: self.inner.max_per_function,
                            waited: queued.elapsed(),
                        });
                    }
                }
            }
        }
    }

    /// Picks the cheapest way to serve a call; called under the lock.
    fn choose(&self, pool: &FunctionPool, state: &mut FunctionState) -> Step {
        let mru = |phase: Phase, workers: &[Worker]| {
            workers
                .iter()
                .enumerate()
                .filter(|(_, w)| w.phase == phase)
                .max_by_key(|(_, w)| w.last_used)
                .map(|(i, _)| i)
        };
        if let Some(i) = mru(Phase::Idle, &state.workers) {
            let w = &mut state.workers[i];
            w.set_phase(&pool.name, Phase::Busy);
            return Step::Use(w.sandbox.clone(), false);
        }
        if let Some(i) = mru(Phase::Paused, &state.workers) {
            let w = &mut state.workers[i];
            w.set_phase(&pool.name, Phase::Unpausing);
            return Step::Use(w.sandbox.clone(), true);
        }
        if state.workers.len() + state.starting < self.inner.max_per_function {
            state.starting += 1;
            return Step::Start;
        }
        Step::Wait
    }

    async fn start(
        &self,
        pool: Arc<FunctionPool>,
        function: &Function,
        code: &Path,
    ) -> Result<Lease, AcquireError> {
        tracing::debug!(function = %pool.name, "creating a container");
        let started = self.inner.sandboxes.start(function, code).await;
        let mut state = pool.state.lock().unwrap();
        state.starting -= 1;
        match started {
            Ok((sandbox, init)) => {
                let sandbox = Arc::new(sandbox);
                let current = state.version == sandbox.version;
                if current && !self.inner.closed.load(Ordering::Acquire) {
                    state.workers.push(Worker::new(sandbox.clone()));
                    tracing::debug!(function = %pool.name, sandbox = %sandbox.id, "creating -> busy");
                }
                // A container for a retired version still serves this one
                // call; its lease then removes it (it is in no list).
                drop(state);
                Ok(self.lease(pool, sandbox, Some(init)))
            }
            Err(e) => {
                drop(state);
                // Someone waiting may now start one instead.
                pool.freed.notify_one();
                Err(e.into())
            }
        }
    }

    fn lease(
        &self,
        function: Arc<FunctionPool>,
        sandbox: Arc<Sandbox>,
        init: Option<Duration>,
    ) -> Lease {
        Lease {
            pool: self.inner.clone(),
            function,
            sandbox,
            init,
            discard: false,
        }
    }

    /// Removes all of a function's containers (it was updated or deleted);
    /// busy ones go when their call ends.
    pub fn evict(&self, name: &str) {
        let pool = self.function_pool(name);
        let retired = pool.state.lock().unwrap().retire_other_versions("");
        self.inner.remove_all(retired);
    }

    /// A function's containers as the pool sees them, for tests and the
    /// dashboard: (sandbox id, container id, phase).
    pub fn containers(&self, name: &str) -> Vec<(String, String, &'static str)> {
        let pool = self.function_pool(name);
        let state = pool.state.lock().unwrap();
        state
            .workers
            .iter()
            .map(|w| {
                (
                    w.sandbox.id.clone(),
                    w.sandbox.container_id.clone(),
                    w.phase.as_str(),
                )
            })
            .collect()
    }

    /// Removes every container (graceful stop). New calls are refused.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let pools: Vec<_> = self
            .inner
            .functions
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect();
        let mut all = Vec::new();
        for pool in pools {
            let mut state = pool.state.lock().unwrap();
            all.extend(state.workers.drain(..).map(|w| w.sandbox));
        }
        let count = all.len();
        futures_util::future::join_all(all.iter().map(|s| self.inner.sandboxes.remove(s))).await;
        tracing::info!(containers = count, "pool shut down");
    }
}

impl FunctionState {
    /// Takes out every non-busy worker of another version (and marks the
    /// version, so busy ones are removed when their lease ends).
    fn retire_other_versions(&mut self, version: &str) -> Vec<Arc<Sandbox>> {
        if self.version == version {
            return Vec::new();
        }
        self.version = version.to_string();
        let (keep, retired): (Vec<_>, Vec<_>) = std::mem::take(&mut self.workers)
            .into_iter()
            .partition(|w| w.phase == Phase::Busy || w.phase == Phase::Unpausing);
        self.workers = keep;
        retired.into_iter().map(|w| w.sandbox).collect()
    }
}

impl FunctionPool {
    fn transition(&self, id: &str, phase: Phase) {
        let mut state = self.state.lock().unwrap();
        if let Some(w) = state.workers.iter_mut().find(|w| w.sandbox.id == id) {
            w.set_phase(&self.name, phase);
        }
    }

    fn forget(&self, id: &str) {
        self.state
            .lock()
            .unwrap()
            .workers
            .retain(|w| w.sandbox.id != id);
    }
}

impl Inner {
    fn remove_later(self: &Arc<Self>, sandbox: Arc<Sandbox>) {
        let inner = self.clone();
        tokio::spawn(async move {
            tracing::debug!(function = %sandbox.function, sandbox = %sandbox.id, "-> removing");
            inner.sandboxes.remove(&sandbox).await;
        });
    }

    fn remove_all(self: &Arc<Self>, sandboxes: Vec<Arc<Sandbox>>) {
        for sandbox in sandboxes {
            self.remove_later(sandbox);
        }
    }

    /// Pauses a container that is still idle after the grace period.
    async fn pause_if_idle(self: Arc<Self>, pool: Arc<FunctionPool>, id: String, generation: u64) {
        tokio::time::sleep(self.settings.pause_grace).await;
        let sandbox = {
            let mut state = pool.state.lock().unwrap();
            let Some(w) = state.workers.iter_mut().find(|w| {
                w.sandbox.id == id && w.generation == generation && w.phase == Phase::Idle
            }) else {
                return;
            };
            w.set_phase(&pool.name, Phase::Pausing);
            w.sandbox.clone()
        };
        let paused = self.sandboxes.pause(&sandbox).await;
        let mut state = pool.state.lock().unwrap();
        if let Some(w) = state.workers.iter_mut().find(|w| w.sandbox.id == id) {
            match paused {
                Ok(()) => w.set_phase(&pool.name, Phase::Paused),
                Err(e) => {
                    // Normal under load on cgroup v1: keep it running.
                    tracing::debug!(function = %pool.name, sandbox = %id, error = %e, "pause failed");
                    w.set_phase(&pool.name, Phase::Idle);
                }
            }
        }
        drop(state);
        pool.freed.notify_one();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let id = &self.sandbox.id;
        let mut state = self.function.state.lock().unwrap();
        let closed = self.pool.closed.load(Ordering::Acquire);
        let position = state.workers.iter().position(|w| &w.sandbox.id == id);
        let keep = !self.discard && !closed && state.version == self.sandbox.version;
        match (position, keep) {
            (Some(i), true) => {
                let w = &mut state.workers[i];
                w.last_used = Instant::now();
                w.generation += 1;
                w.set_phase(&self.function.name, Phase::Idle);
                let generation = w.generation;
                drop(state);
                tokio::spawn(self.pool.clone().pause_if_idle(
                    self.function.clone(),
                    id.clone(),
                    generation,
                ));
            }
            (position, _) => {
                if let Some(i) = position {
                    state.workers.remove(i);
                }
                drop(state);
                self.pool.remove_later(self.sandbox.clone());
            }
        }
        self.function.freed.notify_one();
    }
}

/// Removes containers idle for longer than the keep-alive, until the pool goes.
async fn reap(pool: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(inner) = pool.upgrade() else { return };
        let keep_alive = inner.settings.keep_alive;
        let pools: Vec<_> = inner.functions.lock().unwrap().values().cloned().collect();
        for pool in pools {
            let expired: Vec<_> = {
                let mut state = pool.state.lock().unwrap();
                let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut state.workers)
                    .into_iter()
                    .partition(|w| {
                        matches!(w.phase, Phase::Idle | Phase::Paused)
                            && w.last_used.elapsed() >= keep_alive
                    });
                state.workers = keep;
                old.into_iter().map(|w| w.sandbox).collect()
            };
            for sandbox in &expired {
                tracing::debug!(function = %pool.name, sandbox = %sandbox.id, "keep-alive expired");
            }
            inner.remove_all(expired);
        }
    }
}
