//! The bookkeeping of prewarmed generic containers: how many to create,
//! and those that are ready.

use std::sync::Arc;
use std::time::Instant;

use super::*;

impl State {
    /// How many generic `runtime` containers to create now to reach
    /// `target`; their memory is reserved (never by evicting anything).
    pub fn want_prewarm(
        &mut self,
        runtime: Runtime,
        target: usize,
        memory_mb: u64,
        in_parallel: usize,
    ) -> usize {
        let ready = self
            .prewarmed
            .iter()
            .filter(|p| p.runtime == runtime)
            .count();
        let mut n = 0;
        loop {
            let creating = self.prewarming.get(&runtime).copied().unwrap_or(0);
            if ready + creating >= target
                || self.prewarming.values().sum::<usize>() >= in_parallel
                || self.used_mb + memory_mb > self.budget_mb
            {
                return n;
            }
            self.used_mb += memory_mb;
            *self.prewarming.entry(runtime).or_default() += 1;
            n += 1;
        }
    }

    /// A generic container is ready: queued calls are told to look again.
    pub fn prewarmed(&mut self, runtime: Runtime, sandbox: Arc<Sandbox>, paused: bool) {
        self.prewarm_done(runtime);
        tracing::debug!(runtime = runtime.as_str(), sandbox = %sandbox.id, paused, "creating -> prewarmed");
        self.prewarmed.push(Prewarmed {
            runtime,
            sandbox,
            paused,
            since: Instant::now(),
        });
        for f in self.functions.values_mut() {
            if !f.waiters.is_empty() {
                f.nudge();
                break;
            }
        }
    }

    pub fn prewarm_failed(&mut self, runtime: Runtime, memory_mb: u64) {
        self.prewarm_done(runtime);
        self.used_mb -= memory_mb;
    }

    fn prewarm_done(&mut self, runtime: Runtime) {
        if let Some(n) = self.prewarming.get_mut(&runtime) {
            *n = n.saturating_sub(1);
        }
    }

    /// Prewarmed containers of `runtime` ready now.
    pub fn prewarmed_count(&self, runtime: Runtime) -> usize {
        self.prewarmed
            .iter()
            .filter(|p| p.runtime == runtime)
            .count()
    }
}
