//! The container pool: hands out leases on ready containers, cheapest first.
//!
//! A call of a function takes, in order (its record's `start`, [`Start`]):
//! 1. a running container of the function with a free slot (most recently
//!    used first; a container serves `concurrency` calls at once): `running`;
//! 2. a paused one, unpaused now: `paused`;
//! 3. a prewarmed container of its runtime, specialised now (memory limit,
//!    load the code): no `docker create`/`start` on the path.
//!    Of those, one whose runtime already imported the most of the
//!    function's packages, at the very versions it pins (`import-cache`:
//!    the import cache, `state/imports.rs`), else a plain one (`prewarmed`);
//! 4. otherwise it joins the function's FIFO queue, and a new container is
//!    started for it (`new`) while the function is below `max_concurrency`
//!    and the host's memory budget allows (evicting least recently used
//!    paused containers when it is short), a few at a time. Whichever frees
//!    first serves it: a container released by another call is handed
//!    straight to the head of the queue (`running`). A call still queued at
//!    its deadline is throttled.
//!
//! How many prewarmed containers of each kind are kept follows the demand
//! the pool observes (`prewarm.rs`, `state/prewarm.rs`, `state/demand.rs`):
//! a burst of calls needing containers is remembered, decaying slowly, and
//! the prewarmed pool is sized to it within the memory budget.
//!
//! When its last call ends a container goes idle; after the pause grace it is
//! paused, after the keep-alive removed. A failed pause is a normal outcome:
//! the container just stays running. All state sits behind one
//! `std::sync::Mutex`, held for short sections and never across an `.await`;
//! every change goes through `Inner::update`, which then removes what the
//! change retired and starts what queued calls are owed.
//!
//! Containers that die or vanish leave the pool as soon as the engine says
//! so (`follow`): a call is never handed a dead container it could know of.
//!
//! The pool drives containers only through [`Engine`]: Docker in the
//! manager, the in-memory fake in this module's unit tests (`tests.rs`).

mod entry;
mod follow;
mod imports;
mod lease;
mod prewarm;
mod state;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_prewarm;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{oneshot, watch, Notify};

use crate::config::PoolSettings;
use crate::function::FunctionSpec;
use crate::manifest::Runtime;
use crate::sandbox::{engine, Engine, Failure, Sandbox};
pub use imports::{pin_configured_sets, CachedSet};
pub use lease::{Lease, Start};
use state::{Grant, Leave, State};

/// Why no container could be had for a call.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error(
        "all containers of the function are busy ({limit} at most) and the call waited {waited:?}"
    )]
    Throttled { limit: usize, waited: Duration },
    #[error(
        "the function needs {needed} MB but the pool has {budget} MB in all (OL_POOL_MEMORY_MB)"
    )]
    TooLarge { needed: u64, budget: u64 },
    /// New calls once a stop began, and calls still running at its
    /// deadline.
    #[error(
        "the manager stopped: it takes no new calls while it shuts down, and ends calls \
         still running at its stop deadline (OL_SHUTDOWN_TIMEOUT_S); retry in a moment"
    )]
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
    /// The container engine (Docker, or the fake in unit tests).
    engine: Arc<dyn Engine>,
    settings: PoolSettings,
    state: Mutex<State>,
    /// Set once on shutdown: no new containers, leases end by removal.
    closed: AtomicBool,
    /// Set once the stop deadline passed: calls still running end now.
    stop: watch::Sender<bool>,
    /// Removals running in their own tasks: a shutdown waits for them.
    removing: AtomicUsize,
    /// Wakes the prewarm filler.
    refill: Notify,
}

/// Containers by phase, for metrics, the dashboard and tests.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct PoolStatus {
    pub busy: usize,
    pub idle: usize,
    pub paused: usize,
    pub starting: usize,
    pub prewarmed: usize,
    pub prewarming: usize,
    pub queued: usize,
    pub used_mb: u64,
    pub budget_mb: u64,
}

/// One container of a function, as the pool sees it.
#[derive(Clone, Debug, Serialize)]
pub struct ContainerView {
    pub sandbox: String,
    pub container_id: String,
    pub phase: &'static str,
    pub in_flight: u32,
}

/// What acquire decided to do, under the lock.
pub(crate) enum Step {
    Use(Arc<Sandbox>),
    Unpause(Arc<Sandbox>),
    Specialise {
        generic: Arc<Sandbox>,
        /// `Prewarmed`, or `ImportCache` when its runtime has imported
        /// some of the function's packages already.
        start: Start,
    },
    Wait {
        ticket: u64,
        grant: oneshot::Receiver<Grant>,
    },
}

impl Pool {
    pub fn new(engine: Arc<dyn Engine>, settings: PoolSettings) -> Self {
        let inner = Arc::new(Inner {
            engine,
            state: Mutex::new(State::new(settings.memory_budget_mb)),
            settings,
            closed: AtomicBool::new(false),
            stop: watch::Sender::new(false),
            removing: AtomicUsize::new(0),
            refill: Notify::new(),
        });
        tokio::spawn(reap(Arc::downgrade(&inner)));
        tokio::spawn(prewarm::fill(Arc::downgrade(&inner)));
        tokio::spawn(follow::follow(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// Gets a container slot running `function`'s current version for one call.
    pub async fn acquire(
        &self,
        function: &Arc<FunctionSpec>,
        code: &Path,
    ) -> Result<Lease, AcquireError> {
        let inner = &self.inner;
        let queued = Instant::now();
        let deadline = queued + inner.settings.queue_timeout;
        let mut specialise_retried = false;
        // A call is counted once as demand for a cold container, however
        // often it looks again.
        let mut first_look = true;
        inner.know_code(function, code);
        loop {
            if inner.closed.load(Ordering::Acquire) {
                return Err(AcquireError::ShuttingDown);
            }
            let step = inner.update(|state| {
                state.choose(
                    function,
                    code,
                    &inner.settings,
                    std::mem::take(&mut first_look),
                )
            });
            let step = match step {
                Ok(step) => step,
                Err(state::Refusal::QueueFull) => {
                    return Err(AcquireError::Throttled {
                        limit: function.max_concurrency as usize,
                        waited: queued.elapsed(),
                    })
                }
                Err(state::Refusal::TooLarge { needed, budget }) => {
                    return Err(AcquireError::TooLarge { needed, budget })
                }
            };
            match step {
                Step::Use(sandbox) => return Ok(inner.lease(sandbox, None, Start::Running)),
                Step::Unpause(sandbox) => match inner.engine.unpause(&sandbox).await {
                    Ok(()) => {
                        inner.state.lock().unwrap().unpaused(&sandbox);
                        return Ok(inner.lease(sandbox, None, Start::Paused));
                    }
                    Err(e) => {
                        tracing::warn!(function = sandbox.function_or_dash(), sandbox = %sandbox.id, error = %e,
                            "unpause failed; removing the container");
                        inner.discard(&sandbox);
                    }
                },
                Step::Specialise { generic, start } => {
                    inner.refill.notify_one();
                    let result = engine::specialise(&*inner.engine, &generic, function, code).await;
                    match result {
                        Ok((sandbox, took)) => {
                            let sandbox = Arc::new(sandbox);
                            inner.update(|state| {
                                state.specialised(&generic, sandbox.clone(), function)
                            });
                            return Ok(inner.lease(sandbox, Some(took), start));
                        }
                        Err(e) => {
                            inner.update(|state| state.forget_specialising(&generic, function));
                            // Broken code fails the same in any container;
                            // anything else was this container's trouble
                            // (it died, the engine refused): try another, once.
                            if matches!(e, Failure::Load { .. }) || specialise_retried {
                                return Err(e.into());
                            }
                            tracing::warn!(function = %function.name, sandbox = %generic.id, error = %e,
                                "specialising a prewarmed container failed; trying another container");
                            specialise_retried = true;
                        }
                    }
                }
                Step::Wait { ticket, mut grant } => {
                    // At the queue deadline a call leaves the line, unless a
                    // grant was sent meanwhile (it takes it) or a container
                    // is being started for this very call: a slow start is
                    // not a full pool, so it waits once more, up to the
                    // start timeout.
                    let mut until = deadline;
                    let granted = loop {
                        if let Ok(granted) = tokio::time::timeout_at(until.into(), &mut grant).await
                        {
                            break granted.ok();
                        }
                        let first_deadline = until == deadline;
                        let left = inner.state.lock().unwrap().leave_queue(
                            &function.name,
                            ticket,
                            first_deadline,
                        );
                        match left {
                            Leave::Left => {
                                return Err(AcquireError::Throttled {
                                    limit: function.max_concurrency as usize,
                                    waited: queued.elapsed(),
                                })
                            }
                            Leave::Granted => break grant.try_recv().ok(),
                            Leave::Starting => {
                                until = Instant::now() + inner.settings.start_timeout;
                            }
                        }
                    };
                    match granted {
                        Some(Grant::Use {
                            sandbox,
                            init,
                            start,
                        }) => return Ok(inner.lease(sandbox, init, start)),
                        Some(Grant::Failed(failure)) => return Err(failure.into()),
                        Some(Grant::Retry) | None => continue,
                    }
                }
            }
        }
    }

    /// Removes all of a function's containers (it was updated or deleted);
    /// busy ones go when their calls end.
    pub fn retire(&self, name: &str) {
        self.inner.update(|state| state.retire_function(name));
    }

    /// A function's containers as the pool sees them.
    pub fn containers(&self, name: &str) -> Vec<ContainerView> {
        self.inner.state.lock().unwrap().containers(name)
    }

    pub fn status(&self) -> PoolStatus {
        self.inner.state.lock().unwrap().status()
    }

    /// Containers being removed now (benchmarks wait for none).
    pub fn removing(&self) -> usize {
        self.inner.removing.load(Ordering::Acquire)
    }

    /// Plain prewarmed `runtime` containers ready now (`runtime` as in
    /// `OL_POOL_PREWARM_RUNTIMES`; 0 for an unknown one).
    pub fn prewarmed(&self, runtime: &str) -> usize {
        Runtime::parse(runtime).map_or(0, |r| self.inner.state.lock().unwrap().prewarmed_count(r))
    }

    /// Waits until `n` prewarmed `runtime` containers are ready; `runtime`
    /// as in `OL_POOL_PREWARM_RUNTIMES` (false for an unknown one)
    /// (benchmarks, tests).
    pub async fn wait_prewarmed(&self, runtime: &str, n: usize, limit: Duration) -> bool {
        let Ok(runtime) = Runtime::parse(runtime) else {
            return false;
        };
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.inner.state.lock().unwrap().prewarmed_count(runtime) >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Begins a stop: new calls and queued ones are refused
    /// ([`AcquireError::ShuttingDown`]); calls holding a container go on.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.refill.notify_waiters();
        // Queued calls wake, see the pool closed and leave.
        self.inner.update(|state| state.drop_waiters());
    }

    /// The stop deadline passed: calls still running end now
    /// ([`Pool::stopped`] resolves).
    pub fn stop_calls(&self) {
        self.inner.stop.send_replace(true);
    }

    /// Resolves once [`Pool::stop_calls`] was called: a running call
    /// selects on it to end at the stop deadline.
    pub async fn stopped(&self) {
        let mut stop = self.inner.stop.subscribe();
        let _ = stop.wait_for(|stopped| *stopped).await;
    }

    /// Removes every container (graceful stop), including those still being
    /// created when it began. New calls are refused, running ones ended.
    pub async fn shutdown(&self) {
        self.close();
        self.stop_calls();
        let deadline = Instant::now() + self.inner.settings.start_timeout;
        let mut count = 0;
        loop {
            let (all, creating) = {
                let mut state = self.inner.state.lock().unwrap();
                (state.drain(), state.creating())
            };
            count += all.len();
            futures_util::future::join_all(all.iter().map(|s| self.inner.engine.remove(s))).await;
            let removing = self.inner.removing.load(Ordering::Acquire);
            if (creating == 0 && removing == 0) || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!(containers = count, "pool shut down");
    }
}

impl Inner {
    fn remove_later(self: &Arc<Self>, sandbox: Arc<Sandbox>) {
        let inner = self.clone();
        inner.removing.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            tracing::debug!(function = sandbox.function_or_dash(), sandbox = %sandbox.id, "-> removing");
            inner.engine.remove(&sandbox).await;
            inner.removing.fetch_sub(1, Ordering::AcqRel);
        });
    }

    fn remove_all(self: &Arc<Self>, sandboxes: Vec<Arc<Sandbox>>) {
        for sandbox in sandboxes {
            self.remove_later(sandbox);
        }
    }

    /// Takes a container out of the pool and removes it.
    fn discard(self: &Arc<Self>, sandbox: &Arc<Sandbox>) {
        if let Some((function, _)) = sandbox.serves() {
            self.update(|state| state.detach(function, &sandbox.id));
        }
    }

    /// The one way to change the state: under the lock, `change`; then,
    /// outside it, remove what the change retired and start what queued
    /// calls are owed. (Skipping either leaks a container or strands a call.)
    fn update<T>(self: &Arc<Self>, change: impl FnOnce(&mut State) -> T) -> T {
        let (out, retired) = {
            let mut state = self.state.lock().unwrap();
            let out = change(&mut state);
            (out, state.take_retired())
        };
        self.remove_all(retired);
        self.start_pending();
        out
    }

    /// Starts the containers that queued calls are owed (decided under the
    /// lock, run here so that each start is its own task).
    fn start_pending(self: &Arc<Self>) {
        let starts = self.state.lock().unwrap().take_starts();
        for (function, code) in starts {
            let inner = self.clone();
            tokio::spawn(async move {
                tracing::debug!(function = %function.name, "creating a container");
                let mut started = engine::start(&*inner.engine, &function, &code).await;
                let closed = inner.closed.load(Ordering::Acquire);
                if closed {
                    // Shutting down: remove it before the pool stops
                    // counting it as being created.
                    if let Ok((sandbox, _)) = &started {
                        inner.engine.remove(sandbox).await;
                    }
                    started = Err(Failure::Platform(anyhow::anyhow!(
                        "the manager is shutting down"
                    )));
                }
                inner.update(|state| {
                    state.started(&function, started, closed, inner.settings.pause_grace)
                });
            });
        }
    }

    /// Pauses a container the sweeper found idle past the grace period.
    async fn pause(self: Arc<Self>, sandbox: Arc<Sandbox>) {
        let paused = self.engine.pause(&sandbox).await;
        if let Err(e) = &paused {
            // Normal under load on cgroup v1: keep it running.
            tracing::debug!(function = sandbox.function_or_dash(), sandbox = %sandbox.id, error = %e,
                "pause failed; the container stays running");
        }
        self.state
            .lock()
            .unwrap()
            .pause_done(&sandbox, paused.is_ok(), self.settings.pause_grace);
    }
}

/// The sweeper, until the pool goes: pauses containers idle past the grace
/// period and removes those idle past the keep-alive. (One timer for the
/// pool, rather than one per call.)
async fn reap(pool: std::sync::Weak<Inner>) {
    let period = match pool.upgrade() {
        Some(inner) => (inner.settings.pause_grace / 4)
            .clamp(Duration::from_millis(20), Duration::from_secs(1)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = pool.upgrade() else { return };
        let due = inner.update(|state| {
            state.expire(inner.settings.keep_alive);
            state.pause_due()
        });
        for sandbox in due {
            tokio::spawn(inner.clone().pause(sandbox));
        }
    }
}
