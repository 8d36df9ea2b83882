//! The bookkeeping of prewarmed containers: which to create and which to
//! let go, and those that are ready.
//!
//! Three kinds of want, in this order while memory lasts
//! (`OL_POOL_PREWARM=0` leaves only the pinned sets):
//! 1. `OL_POOL_PREWARM` plain containers per prewarmed runtime (the floor);
//! 2. one container per import-cache set: the pinned sets, then the
//!    package sets of the functions most often started cold (at most
//!    `OL_POOL_IMPORT_CACHE_AUTO` of them, within a quarter of the budget);
//! 3. plain containers up to the runtime's observed demand (the most
//!    containers it needed at once lately, decaying: `demand`), less those
//!    serving calls now, within three quarters of the budget. To make room for these the pool may
//!    evict containers of functions idle past their pause grace, least
//!    recently used first: a generic container serves any function at
//!    about the cost of an unpause, a paused one only its own.
//!
//! Prewarmed containers may be evicted like paused ones when a call needs
//! memory, so holding them never refuses a call.

use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::sandbox::ImportSet;

/// The share of the budget plain prewarmed containers sized by demand may
/// hold (numerator, denominator): the rest is left to functions'
/// containers, so that a burst's containers do not first evict.
const DEMAND_SHARE: (u64, u64) = (3, 4);
/// The share of the budget the automatically chosen import-cache sets may
/// hold.
const IMPORT_SHARE: (u64, u64) = (1, 4);

/// What a prewarmed container is: its runtime and, for the import cache,
/// the set its runtime imports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct WarmKind {
    pub runtime: Runtime,
    pub set: Option<Arc<ImportSet>>,
}

impl WarmKind {
    pub fn plain(runtime: Runtime) -> Self {
        Self { runtime, set: None }
    }

    /// The set's label, or `-` for a plain container (logs).
    pub fn label(&self) -> String {
        self.set.as_ref().map_or_else(|| "-".into(), |s| s.label())
    }
}

/// How many containers of a kind are wanted, and what may be evicted to
/// make room for them.
struct Target {
    kind: WarmKind,
    count: usize,
    evict: Evict,
}

impl State {
    /// Decides which prewarmed containers to create now (their memory
    /// reserved; at most `in_parallel` being created at once) and takes
    /// out ready ones that are no longer wanted.
    pub fn prewarm_plan(
        &mut self,
        settings: &PoolSettings,
        runtimes: &[Runtime],
        in_parallel: usize,
    ) -> Vec<WarmKind> {
        let targets = self.prewarm_targets(settings, runtimes, Instant::now());
        self.trim_prewarmed(&targets);
        let memory = settings.prewarm_memory_mb.max(0) as u64;
        let mut plan = Vec::new();
        for target in targets {
            while self.ready(&target.kind) + self.creating_kind(&target.kind) < target.count
                && self.prewarming.values().sum::<usize>() < in_parallel
                && self.reserve(memory, target.evict)
            {
                *self.prewarming.entry(target.kind.clone()).or_default() += 1;
                plan.push(target.kind.clone());
            }
        }
        plan
    }

    /// What is wanted at `now`, in order of priority.
    fn prewarm_targets(
        &mut self,
        settings: &PoolSettings,
        runtimes: &[Runtime],
        now: Instant,
    ) -> Vec<Target> {
        let memory = settings.prewarm_memory_mb.max(1) as u64;
        let share = |(n, d): (u64, u64)| (self.budget_mb * n / d / memory) as usize;
        // OL_POOL_PREWARM=0 turns prewarming off, demand and the
        // automatic sets with it; pinned sets are kept, being asked for.
        let on = settings.prewarm > 0;
        let cap = share(DEMAND_SHARE);
        let automatic = settings.import_cache_auto.min(share(IMPORT_SHARE)) * usize::from(on);
        let half_life = settings.keep_alive;
        let mut targets: Vec<Target> = runtimes
            .iter()
            .map(|&runtime| Target {
                kind: WarmKind::plain(runtime),
                count: settings.prewarm,
                evict: Evict::Nothing,
            })
            .collect();
        if runtimes.contains(&Runtime::Python) {
            let sets = self.imports.wanted(now, half_life, automatic);
            targets.extend(sets.into_iter().map(|set| Target {
                kind: WarmKind {
                    runtime: Runtime::Python,
                    set: Some(set),
                },
                count: 1,
                evict: Evict::Nothing,
            }));
        }
        for &runtime in runtimes.iter().filter(|_| on) {
            let demand = self
                .demand
                .get(&runtime)
                .map_or(0, |d| d.containers_at(now, half_life));
            // Containers serving calls now serve the demand too: a burst
            // under way is not refilled for (that would make containers
            // while its calls need the CPU), the next one is, once it ends.
            let serving = self.serving(runtime);
            targets.push(Target {
                kind: WarmKind::plain(runtime),
                count: demand
                    .saturating_sub(serving)
                    .min(cap)
                    .max(settings.prewarm),
                evict: Evict::Paused,
            });
        }
        targets
    }

    /// Containers of `runtime` serving calls, or being made ready for one.
    fn serving(&self, runtime: Runtime) -> usize {
        self.functions
            .values()
            .filter(|f| {
                f.latest
                    .as_ref()
                    .is_some_and(|(spec, _)| spec.runtime == runtime)
            })
            .map(|f| {
                let busy = f
                    .entries
                    .iter()
                    .filter(|w| matches!(w.phase, Phase::Busy | Phase::Unpausing))
                    .count();
                busy + f.starting + f.specialising
            })
            .sum()
    }

    /// Removes ready prewarmed containers beyond what is wanted of their
    /// kind (demand that decayed, a set no longer chosen), oldest first.
    fn trim_prewarmed(&mut self, targets: &[Target]) {
        let mut kinds: Vec<WarmKind> = Vec::new();
        for p in &self.prewarmed {
            if !kinds.contains(&p.kind) {
                kinds.push(p.kind.clone());
            }
        }
        for kind in kinds {
            let wanted = targets
                .iter()
                .filter(|t| t.kind == kind)
                .map(|t| t.count)
                .max()
                .unwrap_or(0);
            let ready = self.ready(&kind);
            let excess = (ready + self.creating_kind(&kind)).saturating_sub(wanted);
            let oldest: Vec<String> = self
                .prewarmed
                .iter()
                .filter(|p| p.kind == kind)
                .take(excess.min(ready))
                .map(|p| p.sandbox.id.clone())
                .collect();
            for id in oldest {
                tracing::debug!(sandbox = %id, set = kind.label(), "prewarmed -> removing (no longer wanted)");
                self.retire_prewarmed(&id);
            }
        }
    }

    fn ready(&self, kind: &WarmKind) -> usize {
        self.prewarmed.iter().filter(|p| p.kind == *kind).count()
    }

    fn creating_kind(&self, kind: &WarmKind) -> usize {
        self.prewarming.get(kind).copied().unwrap_or(0)
    }

    /// A prewarmed container is ready (with what its runtime imported, for
    /// an import-cache one): queued calls are told to look again.
    pub fn prewarmed(&mut self, kind: WarmKind, sandbox: Arc<Sandbox>, imported: Option<Imported>) {
        self.prewarm_done(&kind);
        tracing::debug!(runtime = kind.runtime.as_str(), set = kind.label(), sandbox = %sandbox.id,
            "creating -> prewarmed");
        self.prewarmed.push(Prewarmed {
            kind,
            sandbox,
            since: Instant::now(),
            imported,
        });
        for f in self.functions.values_mut() {
            if !f.waiters.is_empty() {
                f.nudge();
                break;
            }
        }
    }

    /// Creating a prewarmed container failed; a set that failed is left
    /// out for a while.
    pub fn prewarm_failed(&mut self, kind: &WarmKind, memory_mb: u64) {
        self.prewarm_done(kind);
        self.used_mb -= memory_mb;
        if let Some(set) = &kind.set {
            self.imports.failed(set, Instant::now());
        }
    }

    fn prewarm_done(&mut self, kind: &WarmKind) {
        if let Some(n) = self.prewarming.get_mut(kind) {
            *n = n.saturating_sub(1);
        }
    }

    /// Plain prewarmed containers of `runtime` ready now.
    pub fn prewarmed_count(&self, runtime: Runtime) -> usize {
        self.ready(&WarmKind::plain(runtime))
    }
}
