//! The pool's bookkeeping: every container, every queued call, and the
//! memory budget. Pure state under one lock: no I/O and no `.await` here;
//! what must be done to Docker is returned to the caller (containers to
//! remove, containers to start) and done outside the lock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::entry::{Entry, Phase};
use super::{ContainerView, PoolStatus, Step};
use crate::config::PoolSettings;
use crate::function::FunctionSpec;
use crate::manifest::Runtime;
use crate::sandbox::{Failure, Sandbox};

/// What a queued call is sent when its turn comes.
pub(crate) enum Grant {
    /// A container slot, already leased to it.
    Use {
        sandbox: Arc<Sandbox>,
        init: Option<Duration>,
    },
    /// Something changed (a container was prewarmed or paused): look again.
    Retry,
    /// The container started for it could not be made ready.
    Failed(Failure),
}

/// What a call whose queue deadline passed does.
pub(crate) enum Leave {
    /// It left the line: throttled.
    Left,
    /// A grant was sent to it meanwhile: take it.
    Granted,
    /// A container being started is owed to it: wait for that.
    Starting,
}

/// Why a call is refused without waiting.
pub(crate) enum Refusal {
    QueueFull,
    TooLarge { needed: u64, budget: u64 },
}

struct Waiter {
    ticket: u64,
    grant: oneshot::Sender<Grant>,
}

/// A generic container, started and (normally) paused, with no code yet.
struct Prewarmed {
    /// The runtime it runs.
    runtime: Runtime,
    sandbox: Arc<Sandbox>,
    paused: bool,
    since: Instant,
}

#[derive(Default)]
struct FunctionState {
    /// The code version containers must run; others are retired.
    version: String,
    /// The function as last called, for starts made on behalf of the queue.
    latest: Option<(Arc<FunctionSpec>, PathBuf)>,
    entries: Vec<Entry>,
    /// Containers being created for this function.
    starting: usize,
    /// Prewarmed containers being specialised for this function.
    specialising: usize,
    /// Calls waiting for a container, first come first served.
    waiters: VecDeque<Waiter>,
}

impl FunctionState {
    fn concurrency(&self) -> u32 {
        self.latest
            .as_ref()
            .map_or(1, |(f, _)| f.concurrency.max(1) as u32)
    }

    fn max_containers(&self) -> usize {
        self.latest
            .as_ref()
            .map_or(1, |(f, _)| f.max_concurrency.max(1) as usize)
    }

    fn containers(&self) -> usize {
        self.entries.len() + self.starting + self.specialising
    }

    /// Hands a slot of `sandbox` to the first queued call that still waits.
    fn grant(&mut self, sandbox: &Arc<Sandbox>, init: Option<Duration>) -> bool {
        while let Some(waiter) = self.waiters.pop_front() {
            let grant = Grant::Use {
                sandbox: sandbox.clone(),
                init,
            };
            if waiter.grant.send(grant).is_ok() {
                return true;
            }
        }
        false
    }

    /// Tells the first queued call to look again.
    fn nudge(&mut self) {
        while let Some(waiter) = self.waiters.pop_front() {
            if waiter.grant.send(Grant::Retry).is_ok() {
                return;
            }
        }
    }
}

pub(crate) struct State {
    functions: HashMap<String, FunctionState>,
    prewarmed: Vec<Prewarmed>,
    /// Generic containers being created, by runtime.
    prewarming: HashMap<Runtime, usize>,
    /// Memory of every container counted by its limit (creating ones too), MB.
    used_mb: u64,
    budget_mb: u64,
    next_ticket: u64,
    /// Containers taken out of the pool, to be removed outside the lock.
    retired: Vec<Arc<Sandbox>>,
    /// Containers to start for queued calls, outside the lock.
    starts: Vec<(Arc<FunctionSpec>, PathBuf)>,
}

impl State {
    pub fn new(budget_mb: u64) -> Self {
        Self {
            functions: HashMap::new(),
            prewarmed: Vec::new(),
            prewarming: HashMap::new(),
            used_mb: 0,
            budget_mb,
            next_ticket: 0,
            retired: Vec::new(),
            starts: Vec::new(),
        }
    }

    pub fn take_retired(&mut self) -> Vec<Arc<Sandbox>> {
        std::mem::take(&mut self.retired)
    }

    /// Decides, for every function with queued calls, which containers to
    /// start, and returns them (called after every change of state).
    pub fn take_starts(&mut self) -> Vec<(Arc<FunctionSpec>, PathBuf)> {
        let names: Vec<String> = self
            .functions
            .iter()
            .filter(|(_, f)| !f.waiters.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        for name in names {
            loop {
                let f = &self.functions[&name];
                let Some((function, code)) = f.latest.clone() else {
                    break;
                };
                let owed = f.waiters.len();
                let coming = (f.starting + f.specialising) * f.concurrency() as usize;
                if coming >= owed || f.containers() >= f.max_containers() {
                    break;
                }
                if !self.reserve(function.memory_mb as u64) {
                    break;
                }
                self.functions.get_mut(&name).expect("listed").starting += 1;
                self.starts.push((function, code));
            }
        }
        std::mem::take(&mut self.starts)
    }

    /// Picks the cheapest way to serve a call of `function`.
    pub fn choose(
        &mut self,
        function: &Arc<FunctionSpec>,
        code: &Path,
        settings: &PoolSettings,
    ) -> Result<Step, Refusal> {
        let needed = function.memory_mb as u64;
        if needed > self.budget_mb {
            return Err(Refusal::TooLarge {
                needed,
                budget: self.budget_mb,
            });
        }
        self.functions.entry(function.name.clone()).or_default();
        self.retire_other_versions(&function.name, &function.version);
        let f = self
            .functions
            .get_mut(&function.name)
            .expect("entry made above");
        f.latest = Some((function.clone(), code.to_path_buf()));
        let concurrency = f.concurrency();

        // 1. A running container with a free slot, most recently used first.
        let running = f
            .entries
            .iter_mut()
            .filter(|w| {
                matches!(w.phase, Phase::Busy | Phase::Idle) && w.in_flight < concurrency && !w.dead
            })
            .max_by_key(|w| (w.in_flight > 0, w.last_used));
        if let Some(w) = running {
            w.in_flight += 1;
            w.set_phase(&function.name, Phase::Busy);
            return Ok(Step::Use(w.sandbox.clone()));
        }
        // 2. A paused one.
        if let Some(w) = f
            .entries
            .iter_mut()
            .filter(|w| w.phase == Phase::Paused && !w.dead)
            .max_by_key(|w| w.last_used)
        {
            w.in_flight += 1;
            w.set_phase(&function.name, Phase::Unpausing);
            return Ok(Step::Unpause(w.sandbox.clone()));
        }
        // 3. A prewarmed generic container of the function's runtime.
        let room = f.containers() < f.max_containers();
        let warm = self
            .prewarmed
            .iter()
            .rposition(|p| p.runtime == function.runtime)
            .filter(|_| room && function.fits_generic(settings.tmpfs_mb));
        if let Some(i) = warm {
            let generic_mb = self.prewarmed[i].sandbox.memory_mb.max(0) as u64;
            // Its memory is counted already; count the difference.
            if self.reserve(needed.saturating_sub(generic_mb)) {
                self.used_mb -= generic_mb.saturating_sub(needed);
                let warm = self.prewarmed.remove(i);
                self.functions
                    .get_mut(&function.name)
                    .expect("entry made above")
                    .specialising += 1;
                tracing::debug!(function = %function.name, sandbox = %warm.sandbox.id,
                    "prewarmed -> specialising");
                return Ok(Step::Specialise {
                    generic: warm.sandbox,
                    paused: warm.paused,
                });
            }
        }
        // 4. Wait in line; take_starts() starts what the line is owed.
        let f = self
            .functions
            .get_mut(&function.name)
            .expect("entry made above");
        if f.waiters.len() >= settings.queue_length {
            return Err(Refusal::QueueFull);
        }
        let (tx, rx) = oneshot::channel();
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        f.waiters.push_back(Waiter { ticket, grant: tx });
        Ok(Step::Wait { ticket, grant: rx })
    }

    /// Counts `mb` more against the budget, evicting least recently used
    /// paused containers (then idle ones) when it is short. False when even
    /// that would not make room; then nothing is evicted.
    fn reserve(&mut self, mb: u64) -> bool {
        if self.used_mb + mb <= self.budget_mb {
            self.used_mb += mb;
            return true;
        }
        let short = self.used_mb + mb - self.budget_mb;
        // Candidates: (paused first, least recently used first).
        let mut candidates: Vec<(bool, Instant, Option<String>, String, u64)> = Vec::new();
        for (name, f) in &self.functions {
            for w in &f.entries {
                if matches!(w.phase, Phase::Paused | Phase::Idle) {
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
        for p in &self.prewarmed {
            candidates.push((
                !p.paused,
                p.since,
                None,
                p.sandbox.id.clone(),
                p.sandbox.memory_mb.max(0) as u64,
            ));
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
                None => {
                    if let Some(i) = self.prewarmed.iter().position(|p| p.sandbox.id == id) {
                        let p = self.prewarmed.remove(i);
                        self.used_mb -= p.sandbox.memory_mb.max(0) as u64;
                        self.retired.push(p.sandbox);
                    }
                }
            }
        }
        self.used_mb += mb;
        true
    }

    /// Takes a function's container out of the pool (to be removed).
    pub fn detach(&mut self, function: &str, id: &str) {
        let Some(f) = self.functions.get_mut(function) else {
            return;
        };
        if let Some(i) = f.entries.iter().position(|w| w.sandbox.id == id) {
            let w = f.entries.remove(i);
            self.used_mb -= w.sandbox.memory_mb.max(0) as u64;
            self.retired.push(w.sandbox);
        }
    }

    fn retire_other_versions(&mut self, name: &str, version: &str) {
        let Some(f) = self.functions.get_mut(name) else {
            return;
        };
        if f.version == version {
            return;
        }
        f.version = version.to_string();
        let ids: Vec<String> = f
            .entries
            .iter()
            .filter(|w| w.in_flight == 0 && w.phase != Phase::Pausing)
            .map(|w| w.sandbox.id.clone())
            .collect();
        for id in ids {
            self.detach(name, &id);
        }
    }

    /// The function was updated or deleted: its idle containers go now,
    /// busy ones when their calls end.
    pub fn retire_function(&mut self, name: &str) {
        self.retire_other_versions(name, "");
    }

    pub fn unpaused(&mut self, sandbox: &Sandbox) {
        let Some((name, _)) = sandbox.serves() else {
            return;
        };
        if let Some(w) = self.entry(name, &sandbox.id) {
            w.set_phase(name, Phase::Busy);
        }
    }

    /// A prewarmed container now serves `function`.
    pub fn specialised(
        &mut self,
        generic: &Sandbox,
        sandbox: Arc<Sandbox>,
        function: &FunctionSpec,
    ) {
        let f = self.functions.entry(function.name.clone()).or_default();
        f.specialising -= 1;
        let mut entry = Entry::new(sandbox);
        entry.in_flight = 1;
        tracing::debug!(function = %function.name, sandbox = %generic.id, "specialising -> busy");
        f.entries.push(entry);
    }

    /// Specialising failed; the container was removed by the sandbox layer.
    pub fn forget_specialising(&mut self, _generic: &Sandbox, function: &FunctionSpec) {
        if let Some(f) = self.functions.get_mut(&function.name) {
            f.specialising -= 1;
        }
        self.used_mb -= function.memory_mb.max(0) as u64;
    }

    /// A call's queue deadline passed. It leaves the line, unless a grant
    /// was sent meanwhile, or (when `wait_for_start`) a container being
    /// started is owed to it: its place in line is within what the starting
    /// containers will serve.
    pub fn leave_queue(&mut self, function: &str, ticket: u64, wait_for_start: bool) -> Leave {
        let Some(f) = self.functions.get_mut(function) else {
            return Leave::Left;
        };
        let Some(i) = f.waiters.iter().position(|w| w.ticket == ticket) else {
            return Leave::Granted;
        };
        let coming = (f.starting + f.specialising) * f.concurrency() as usize;
        if wait_for_start && i < coming {
            return Leave::Starting;
        }
        f.waiters.remove(i);
        Leave::Left
    }

    /// A container started for the queue is ready (or failed). Hands its
    /// slots to queued calls. True when it went idle (no one was waiting).
    pub fn started(
        &mut self,
        function: &FunctionSpec,
        started: Result<(Sandbox, Duration), Failure>,
        closed: bool,
        grace: Duration,
    ) -> bool {
        let mb = function.memory_mb.max(0) as u64;
        let f = self.functions.entry(function.name.clone()).or_default();
        f.starting -= 1;
        let (sandbox, init) = match started {
            Ok((sandbox, init)) => (Arc::new(sandbox), init),
            Err(failure) => {
                self.used_mb -= mb;
                tracing::info!(function = %function.name, error = %failure, "container start failed");
                match failure {
                    // The same code fails the same way for everyone in line.
                    Failure::Load { kind, message } => {
                        for w in f.waiters.drain(..) {
                            let failure = Failure::Load {
                                kind: kind.clone(),
                                message: message.clone(),
                            };
                            let _ = w.grant.send(Grant::Failed(failure));
                        }
                    }
                    other => {
                        if let Some(w) = f.waiters.pop_front() {
                            let _ = w.grant.send(Grant::Failed(other));
                        }
                    }
                }
                return false;
            }
        };
        if closed || sandbox.serves().map(|(_, v)| v) != Some(f.version.as_str()) {
            self.used_mb -= mb;
            self.retired.push(sandbox);
            f.nudge();
            return false;
        }
        tracing::debug!(function = %function.name, sandbox = %sandbox.id, "creating -> ready");
        let mut entry = Entry::new(sandbox.clone());
        let concurrency = f.concurrency();
        let mut first = true;
        while entry.in_flight < concurrency && f.grant(&sandbox, first.then_some(init)) {
            entry.in_flight += 1;
            first = false;
        }
        let idle = entry.in_flight == 0;
        if idle {
            entry.set_phase(&function.name, Phase::Idle);
            entry.pause_after = Instant::now() + grace;
        }
        f.entries.push(entry);
        idle
    }

    /// A call's lease ended: hand the slot to the next queued call, or let
    /// the container go idle (true), or remove it.
    pub fn release(&mut self, sandbox: &Arc<Sandbox>, remove: bool, grace: Duration) -> bool {
        let served = sandbox.serves();
        let Some(((name, version), f)) =
            served.and_then(|(name, v)| Some(((name, v), self.functions.get_mut(name)?)))
        else {
            self.used_mb -= sandbox.memory_mb.max(0) as u64;
            self.retired.push(sandbox.clone());
            return false;
        };
        let stale = f.version != version;
        let Some(i) = f.entries.iter().position(|w| w.sandbox.id == sandbox.id) else {
            return false;
        };
        if remove || stale || f.entries[i].dead {
            self.detach(name, &sandbox.id);
            return false;
        }
        let now = Instant::now();
        let w = &mut f.entries[i];
        w.in_flight -= 1;
        w.last_used = now;
        if !f.waiters.is_empty() {
            let handed = w.sandbox.clone();
            if f.grant(&handed, None) {
                f.entries[i].in_flight += 1;
                return false;
            }
        }
        let w = &mut f.entries[i];
        if w.in_flight > 0 {
            return false;
        }
        w.set_phase(name, Phase::Idle);
        w.pause_after = now + grace;
        true
    }

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

    fn entry(&mut self, function: &str, id: &str) -> Option<&mut Entry> {
        self.functions
            .get_mut(function)?
            .entries
            .iter_mut()
            .find(|w| w.sandbox.id == id)
    }

    // Prewarming.

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

    // Views.

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

#[cfg(test)]
mod tests {
    //! The bookkeeping alone, with made-up containers: no Docker here.
    use super::*;
    use crate::pool::testing::function;

    fn settings(queue_length: usize) -> PoolSettings {
        let mut s = crate::pool::testing::settings();
        s.queue_length = queue_length;
        s
    }

    fn sandbox(id: &str, f: &FunctionSpec) -> Sandbox {
        Sandbox {
            id: id.into(),
            container_id: format!("c-{id}"),
            dir: PathBuf::from("/nowhere"),
            kind: crate::sandbox::Kind::of(f.runtime, Some(f)),
            memory_mb: f.memory_mb,
            memory_peak: Default::default(),
        }
    }

    fn wait(step: Result<Step, Refusal>) -> oneshot::Receiver<Grant> {
        match step {
            Ok(Step::Wait { grant, .. }) => grant,
            _ => panic!("expected the call to wait"),
        }
    }

    fn used(step: Result<Step, Refusal>) -> Arc<Sandbox> {
        match step {
            Ok(Step::Use(s)) => s,
            _ => panic!("expected a running container"),
        }
    }

    /// Starts a container for `f` through the queue; returns it leased.
    fn busy_container(state: &mut State, f: &Arc<FunctionSpec>, id: &str) -> Arc<Sandbox> {
        let mut grant = wait(state.choose(f, Path::new("/code"), &settings(10)));
        assert_eq!(state.take_starts().len(), 1);
        state.started(
            f,
            Ok((sandbox(id, f), Duration::from_millis(5))),
            false,
            GRACE,
        );
        let Ok(Grant::Use { sandbox, init }) = grant.try_recv() else {
            panic!("the new container goes to the waiting call")
        };
        assert!(init.is_some(), "a started container is a cold start");
        sandbox
    }

    /// Starts a container for `f` and leaves it idle.
    fn idle_container(state: &mut State, f: &Arc<FunctionSpec>, id: &str) -> Arc<Sandbox> {
        let sandbox = busy_container(state, f, id);
        assert!(
            state.release(&sandbox, false, GRACE),
            "idle after its only call"
        );
        sandbox
    }

    /// The sweeper's part: pauses every idle container (the grace is zero).
    fn pause_all(state: &mut State) {
        for sandbox in state.pause_due() {
            state.pause_done(&sandbox, true, GRACE);
        }
    }

    const GRACE: Duration = Duration::ZERO;

    #[test]
    fn released_slot_goes_to_the_first_waiter() {
        let mut state = State::new(10_000);
        let f = function("a", 128, 1, 1);
        let mut first = wait(state.choose(&f, Path::new("/code"), &settings(10)));
        assert_eq!(state.take_starts().len(), 1);
        let mut second = wait(state.choose(&f, Path::new("/code"), &settings(10)));
        assert!(
            state.take_starts().is_empty(),
            "max_concurrency 1: no second container"
        );

        assert!(!state.started(&f, Ok((sandbox("s1", &f), Duration::ZERO)), false, GRACE));
        let Ok(Grant::Use { sandbox: s, .. }) = first.try_recv() else {
            panic!()
        };
        assert!(second.try_recv().is_err(), "second still waits");

        assert!(!state.release(&s, false, GRACE), "handed on, not idle");
        let Ok(Grant::Use { sandbox: s2, init }) = second.try_recv() else {
            panic!()
        };
        assert_eq!((s2.id.as_str(), init), ("s1", None));
        assert!(state.release(&s2, false, GRACE), "idle now");
        assert_eq!(state.status().idle, 1);
    }

    #[test]
    fn concurrency_packs_calls_into_one_container() {
        let mut state = State::new(10_000);
        let f = function("a", 128, 3, 10);
        idle_container(&mut state, &f, "s1");
        for _ in 0..3 {
            assert_eq!(
                used(state.choose(&f, Path::new("/c"), &settings(10))).id,
                "s1"
            );
        }
        let _fourth = wait(state.choose(&f, Path::new("/c"), &settings(10)));
        assert_eq!(
            state.take_starts().len(),
            1,
            "a full container means a new one"
        );
    }

    #[test]
    fn most_recently_used_idle_container_first() {
        let mut state = State::new(10_000);
        let f = function("a", 128, 1, 10);
        let old = busy_container(&mut state, &f, "old");
        let new = busy_container(&mut state, &f, "new");
        state.release(&old, false, GRACE);
        std::thread::sleep(Duration::from_millis(2));
        state.release(&new, false, GRACE);
        assert_eq!(
            used(state.choose(&f, Path::new("/c"), &settings(10))).id,
            "new"
        );
    }

    #[test]
    fn short_budget_evicts_least_recently_used_paused() {
        let mut state = State::new(256);
        let (a, b, c) = (
            function("a", 128, 1, 5),
            function("b", 128, 1, 5),
            function("c", 128, 1, 5),
        );
        idle_container(&mut state, &a, "sa");
        std::thread::sleep(Duration::from_millis(2));
        idle_container(&mut state, &b, "sb");
        pause_all(&mut state);
        assert_eq!(state.status().paused, 2);
        assert_eq!(state.status().used_mb, 256);

        let _waiting = wait(state.choose(&c, Path::new("/c"), &settings(10)));
        assert_eq!(state.take_starts().len(), 1, "room was made");
        let evicted: Vec<_> = state.take_retired().iter().map(|s| s.id.clone()).collect();
        assert_eq!(evicted, ["sa"], "the least recently used one goes");
        assert_eq!(state.containers("b").len(), 1);
        assert_eq!(state.status().used_mb, 256);
    }

    #[test]
    fn no_room_means_no_start_and_nothing_evicted() {
        let mut state = State::new(200);
        let (a, b) = (function("a", 128, 1, 5), function("b", 128, 1, 5));
        // a's container is busy: not evictable.
        let mut grant = wait(state.choose(&a, Path::new("/c"), &settings(10)));
        state.take_starts();
        state.started(&a, Ok((sandbox("sa", &a), Duration::ZERO)), false, GRACE);
        assert!(grant.try_recv().is_ok());
        let _waiting = wait(state.choose(&b, Path::new("/c"), &settings(10)));
        assert!(state.take_starts().is_empty());
        assert!(state.take_retired().is_empty());
    }

    #[test]
    fn paused_container_is_unpaused_for_a_call() {
        let mut state = State::new(10_000);
        let f = function("a", 128, 1, 5);
        idle_container(&mut state, &f, "s1");
        pause_all(&mut state);
        match state.choose(&f, Path::new("/c"), &settings(10)) {
            Ok(Step::Unpause(s)) => assert_eq!(s.id, "s1"),
            _ => panic!("expected an unpause"),
        }
    }

    #[test]
    fn prewarmed_container_of_the_runtime_is_taken_before_starting_one() {
        let mut state = State::new(10_000);
        let f = function("a", 256, 1, 5);
        assert_eq!(state.want_prewarm(Runtime::Python, 1, 128, 4), 1);
        assert_eq!(
            state.want_prewarm(Runtime::Python, 1, 128, 4),
            0,
            "one is on its way"
        );
        assert_eq!(state.want_prewarm(Runtime::Node, 1, 128, 4), 1);
        let generic = |id: &str| Sandbox {
            kind: crate::sandbox::Kind::Generic(Runtime::Python),
            memory_mb: 128,
            ..sandbox(id, &f)
        };
        state.prewarmed(Runtime::Python, Arc::new(generic("py")), true);
        state.prewarmed(Runtime::Node, Arc::new(generic("js")), true);
        assert_eq!(state.status().used_mb, 256);
        match state.choose(&f, Path::new("/c"), &settings(10)) {
            Ok(Step::Specialise { generic, paused }) => {
                assert_eq!(generic.id, "py", "a Python function takes the Python one");
                assert!(paused);
            }
            _ => panic!("expected the prewarmed container"),
        }
        assert_eq!(
            state.status().used_mb,
            384,
            "now counted at the function's size"
        );
        assert_eq!(
            (
                state.prewarmed_count(Runtime::Python),
                state.prewarmed_count(Runtime::Node)
            ),
            (0, 1)
        );
    }

    #[test]
    fn a_call_waiting_for_its_own_start_is_not_throttled() {
        let mut state = State::new(10_000);
        let f = function("a", 128, 1, 1);
        let _first = wait(state.choose(&f, Path::new("/c"), &settings(10)));
        assert_eq!(state.take_starts().len(), 1);
        let _second = wait(state.choose(&f, Path::new("/c"), &settings(10)));
        let tickets: Vec<u64> = state.functions["a"]
            .waiters
            .iter()
            .map(|w| w.ticket)
            .collect();
        // The first is owed the starting container; the second waits on a full pool.
        assert!(matches!(
            state.leave_queue("a", tickets[0], true),
            Leave::Starting
        ));
        assert!(matches!(
            state.leave_queue("a", tickets[1], true),
            Leave::Left
        ));
        // At its second deadline it leaves whatever comes.
        assert!(matches!(
            state.leave_queue("a", tickets[0], false),
            Leave::Left
        ));
        assert!(state.functions["a"].waiters.is_empty());
    }

    #[test]
    fn full_queue_and_oversized_functions_are_refused() {
        let mut state = State::new(1024);
        let f = function("a", 128, 1, 1);
        let _first = wait(state.choose(&f, Path::new("/c"), &settings(1)));
        assert!(matches!(
            state.choose(&f, Path::new("/c"), &settings(1)),
            Err(Refusal::QueueFull)
        ));
        let big = function("big", 2048, 1, 1);
        assert!(matches!(
            state.choose(&big, Path::new("/c"), &settings(1)),
            Err(Refusal::TooLarge {
                needed: 2048,
                budget: 1024
            })
        ));
    }

    #[test]
    fn load_failure_fails_everyone_in_line() {
        let mut state = State::new(10_000);
        let f = function("a", 128, 1, 1);
        let mut one = wait(state.choose(&f, Path::new("/c"), &settings(10)));
        let mut two = wait(state.choose(&f, Path::new("/c"), &settings(10)));
        state.take_starts();
        let failure = Failure::Load {
            kind: "SyntaxError".into(),
            message: "bad".into(),
        };
        state.started(&f, Err(failure), false, GRACE);
        assert!(matches!(
            one.try_recv(),
            Ok(Grant::Failed(Failure::Load { .. }))
        ));
        assert!(matches!(
            two.try_recv(),
            Ok(Grant::Failed(Failure::Load { .. }))
        ));
        assert_eq!(state.status().used_mb, 0);
    }

    #[test]
    fn update_retires_idle_containers_and_busy_ones_on_release() {
        let mut state = State::new(10_000);
        let f = function("a", 128, 1, 5);
        let busy = busy_container(&mut state, &f, "busy");
        let _ = idle_container(&mut state, &f, "idle");
        state.retire_function("a");
        let retired: Vec<_> = state.take_retired().iter().map(|s| s.id.clone()).collect();
        assert_eq!(retired, ["idle"], "the busy one finishes its call first");
        assert!(!state.release(&busy, false, GRACE));
        let retired: Vec<_> = state.take_retired().iter().map(|s| s.id.clone()).collect();
        assert_eq!(retired, ["busy"]);
        assert_eq!(state.status().used_mb, 0);
    }
}
