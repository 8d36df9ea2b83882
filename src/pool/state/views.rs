//! What the pool reports (containers, status) and how it empties on a stop.

use std::sync::Arc;

use super::*;

impl State {
    pub fn containers(&self, name: &str) -> Vec<ContainerView> {
        self.functions.get(name).map_or_else(Vec::new, |f| {
            f.entries
                .iter()
                .map(|w| ContainerView {
                    sandbox: w.sandbox.id.clone(),
                    container_id: w.sandbox.container_id.clone(),
                    phase: if w.dead { "dead" } else { w.phase.as_str() },
                    in_flight: w.in_flight,
                })
                .collect()
        })
    }

    pub fn status(&self) -> PoolStatus {
        let mut s = PoolStatus {
            prewarmed: self.prewarmed.len(),
            prewarming: self.prewarming.values().sum(),
            used_mb: self.used_mb,
            budget_mb: self.budget_mb,
            ..PoolStatus::default()
        };
        for f in self.functions.values() {
            s.starting += f.starting + f.specialising;
            s.queued += f.waiters.len();
            for w in &f.entries {
                match w.phase {
                    Phase::Busy | Phase::Unpausing => s.busy += 1,
                    Phase::Idle | Phase::Pausing => s.idle += 1,
                    Phase::Paused => s.paused += 1,
                }
            }
        }
        s
    }

    pub fn import_cache_view(&self) -> Vec<crate::pool::CachedSet> {
        self.prewarmed
            .iter()
            .filter_map(|p| {
                let (set, imported) = (p.kind.set.as_ref()?, p.imported.as_ref()?);
                Some(crate::pool::CachedSet {
                    set: set.label(),
                    dirs: set.dirs.clone(),
                    modules: imported.modules.clone(),
                    memory_mb: imported.memory_mb,
                })
            })
            .collect()
    }

    /// Queued calls are let go (a stop began): each wakes with no grant.
    pub fn drop_waiters(&mut self) {
        for f in self.functions.values_mut() {
            f.waiters.clear();
        }
    }

    /// Takes every container out (shutdown); queued calls are dropped.
    pub fn drain(&mut self) -> Vec<Arc<Sandbox>> {
        let mut all = self.take_retired();
        self.drop_waiters();
        let mut taken = Vec::new();
        for f in self.functions.values_mut() {
            taken.extend(f.entries.drain(..).map(|w| w.sandbox));
        }
        taken.extend(self.prewarmed.drain(..).map(|p| p.sandbox));
        for sandbox in &taken {
            self.used_mb -= sandbox.memory_mb.max(0) as u64;
        }
        all.extend(taken);
        all
    }

    /// Containers being created or specialised right now.
    pub fn creating(&self) -> usize {
        self.prewarming.values().sum::<usize>()
            + self
                .functions
                .values()
                .map(|f| f.starting + f.specialising)
                .sum::<usize>()
    }
}
