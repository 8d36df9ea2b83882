//! The pool's bookkeeping over time: idle containers paused after their
//! grace, removed after their keep-alive, and containers the engine says
//! are gone taken out.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

impl State {
    /// Idle containers past their pause grace, now marked as pausing (the
    /// sweeper pauses them).
    pub fn pause_due(&mut self) -> Vec<Arc<Sandbox>> {
        let now = Instant::now();
        let mut due = Vec::new();
        for (name, f) in &mut self.functions {
            for w in &mut f.entries {
                if w.phase == Phase::Idle && w.pause_after <= now {
                    w.set_phase(name, Phase::Pausing);
                    due.push(w.sandbox.clone());
                }
            }
        }
        due
    }

    /// A pause finished. Calls that queued meanwhile are told to look again
    /// (and find the paused container); a failed pause leaves it idle, to be
    /// tried again after another grace period.
    pub fn pause_done(&mut self, sandbox: &Sandbox, paused: bool, grace: Duration) {
        let Some((name, version)) = sandbox.serves() else {
            return;
        };
        let Some(f) = self.functions.get_mut(name) else {
            return;
        };
        let stale = f.version != version;
        let Some(i) = f.entries.iter().position(|w| w.sandbox.id == sandbox.id) else {
            return;
        };
        if stale {
            self.detach(name, &sandbox.id);
            return;
        }
        let w = &mut f.entries[i];
        if paused {
            w.set_phase(name, Phase::Paused);
            if !f.waiters.is_empty() {
                f.nudge();
            }
            return;
        }
        w.set_phase(name, Phase::Idle);
        w.pause_after = Instant::now() + grace;
        let handed = w.sandbox.clone();
        if f.grant(&handed, None) {
            let w = &mut f.entries[i];
            w.in_flight += 1;
            w.set_phase(name, Phase::Busy);
        }
    }

    /// Takes out containers idle or paused for longer than `keep_alive`.
    pub fn expire(&mut self, keep_alive: Duration) {
        let mut expired = Vec::new();
        for (name, f) in &self.functions {
            for w in &f.entries {
                if matches!(w.phase, Phase::Idle | Phase::Paused)
                    && w.last_used.elapsed() >= keep_alive
                {
                    tracing::debug!(function = %name, sandbox = %w.sandbox.id, "keep-alive expired");
                    expired.push((name.clone(), w.sandbox.id.clone()));
                }
            }
        }
        for (name, id) in expired {
            self.detach(&name, &id);
        }
    }

    // What the engine says.

    /// The container of sandbox `id` died or was removed behind the pool's
    /// back: a prewarmed or idle one is taken out now (never handed out); a
    /// busy one is marked, its calls fail or finish on their own and it goes
    /// when they end. False when the pool does not hold it.
    pub fn gone(&mut self, id: &str) -> bool {
        if let Some(i) = self.prewarmed.iter().position(|p| p.sandbox.id == id) {
            let p = self.prewarmed.remove(i);
            self.used_mb -= p.sandbox.memory_mb.max(0) as u64;
            self.retired.push(p.sandbox);
            return true;
        }
        let found = self.functions.iter_mut().find_map(|(name, f)| {
            let w = f.entries.iter_mut().find(|w| w.sandbox.id == id)?;
            if w.in_flight > 0 {
                w.dead = true;
                return Some(None);
            }
            Some(Some(name.clone()))
        });
        match found {
            None => false,
            Some(None) => true,
            Some(Some(name)) => {
                self.detach(&name, id);
                true
            }
        }
    }

    /// After the engine's event stream was lost: every container that
    /// joined before `listed` and is not in `alive` (the engine's list
    /// taken at `listed`) is gone. Returns how many.
    pub fn keep_only(&mut self, alive: &HashSet<String>, listed: Instant) -> usize {
        let mut lost: Vec<String> = self
            .prewarmed
            .iter()
            .filter(|p| p.since < listed && !alive.contains(&p.sandbox.id))
            .map(|p| p.sandbox.id.clone())
            .collect();
        for f in self.functions.values() {
            lost.extend(
                f.entries
                    .iter()
                    .filter(|w| w.born < listed && !alive.contains(&w.sandbox.id))
                    .map(|w| w.sandbox.id.clone()),
            );
        }
        lost.iter().filter(|id| self.gone(id)).count()
    }
}
