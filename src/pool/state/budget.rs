//! The memory budget: every container counted by its limit, and what may
//! be evicted (least recently used first) when a container needs room.

use std::time::Instant;

use super::*;

/// What [`State::reserve`] may evict to make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Evict {
    /// Paused and idle containers of functions, and prewarmed ones: for a
    /// call that needs a container now.
    Idle,
    /// Containers of functions idle past their pause grace only: for
    /// prewarming, which trades a container that serves one function for
    /// one that serves any (never another prewarmed one).
    Paused,
    /// Nothing: only free memory.
    Nothing,
}

impl State {
    /// Counts `mb` more against the budget, evicting least recently used
    /// containers as `evict` allows when it is short (paused before idle).
    /// False when even that would not make room; then nothing is evicted.
    pub(super) fn reserve(&mut self, mb: u64, evict: Evict) -> bool {
        if self.used_mb + mb <= self.budget_mb {
            self.used_mb += mb;
            return true;
        }
        let short = self.used_mb + mb - self.budget_mb;
        let now = Instant::now();
        // Candidates: (paused first, least recently used first).
        let mut candidates: Vec<(bool, Instant, Option<String>, String, u64)> = Vec::new();
        for (name, f) in &self.functions {
            for w in &f.entries {
                let allowed = match evict {
                    Evict::Idle => matches!(w.phase, Phase::Paused | Phase::Idle),
                    // Idle past its grace: paused, or as good as (a pause
                    // that failed, or not yet done).
                    Evict::Paused => {
                        w.phase == Phase::Paused || (w.phase == Phase::Idle && w.pause_after <= now)
                    }
                    Evict::Nothing => false,
                };
                if allowed {
                    candidates.push((
                        w.phase != Phase::Paused,
                        w.last_used,
                        Some(name.clone()),
                        w.sandbox.id.clone(),
                        w.sandbox.memory_mb.max(0) as u64,
                    ));
                }
            }
        }
        if evict == Evict::Idle {
            for p in &self.prewarmed {
                // As cheap to lose as a paused one: it serves no call.
                candidates.push((
                    false,
                    p.since,
                    None,
                    p.sandbox.id.clone(),
                    p.sandbox.memory_mb.max(0) as u64,
                ));
            }
        }
        candidates.sort_by_key(|c| (c.0, c.1));
        let mut freed = 0;
        let mut chosen = Vec::new();
        for c in candidates {
            if freed >= short {
                break;
            }
            freed += c.4;
            chosen.push(c);
        }
        if freed < short {
            return false;
        }
        for (_, _, function, id, _) in chosen {
            match function {
                Some(name) => {
                    tracing::debug!(function = %name, sandbox = %id, "evicted (memory budget)");
                    self.detach(&name, &id);
                }
                None => self.retire_prewarmed(&id),
            }
        }
        self.used_mb += mb;
        true
    }

    /// Takes a prewarmed container out of the pool (to be removed).
    pub(super) fn retire_prewarmed(&mut self, id: &str) {
        if let Some(i) = self.prewarmed.iter().position(|p| p.sandbox.id == id) {
            let p = self.prewarmed.remove(i);
            self.used_mb -= p.sandbox.memory_mb.max(0) as u64;
            self.retired.push(p.sandbox);
        }
    }
}
