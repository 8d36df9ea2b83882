//! The pool's bookkeeping: every container, every queued call, and the
//! memory budget. Pure state under one lock: no I/O and no `.await` here;
//! what must be done to Docker is returned to the caller (containers to
//! remove, containers to start) and done outside the lock.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::entry::{Entry, Phase};
use super::{ContainerView, PoolStatus, Start, Step};
use crate::config::PoolSettings;
use crate::function::FunctionSpec;
use crate::manifest::Runtime;
use crate::sandbox::{Failure, Imported, Sandbox};
use budget::Evict;
use demand::Demand;
use imports::ImportCache;
pub(crate) use prewarm::WarmKind;

/// Containers created for queued calls at once, over all functions. The
/// engine makes a few containers a second however many are asked for at
/// once: a hundred asked together all come after twenty seconds or more
/// (and some past the start timeout), a few at a time each come within a
/// second or two and serve the queue meanwhile.
const MAX_STARTING: usize = 8;

/// What a queued call is sent when its turn comes.
pub(crate) enum Grant {
    /// A container slot, already leased to it.
    Use {
        sandbox: Arc<Sandbox>,
        init: Option<Duration>,
        start: Start,
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

/// A generic container, started (not paused: see `pool/prewarm.rs`), with
/// no code yet.
struct Prewarmed {
    /// The runtime it runs, and the import set its runtime imported.
    kind: WarmKind,
    sandbox: Arc<Sandbox>,
    since: Instant,
    /// What the import set came to (modules, memory); `None` for a plain one.
    imported: Option<Imported>,
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
    /// The top-level names in the code of a version (which must not
    /// shadow a module an import-cache container imported); `None` until
    /// looked at, or when too many to look at.
    code_names: Option<(String, Option<Arc<BTreeSet<String>>>)>,
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

    /// Hands a slot of `sandbox` to the first queued call that still waits:
    /// with `init`, the start of a container made for the queue (a new
    /// one), else a slot of a running one.
    fn grant(&mut self, sandbox: &Arc<Sandbox>, init: Option<Duration>) -> bool {
        while let Some(waiter) = self.waiters.pop_front() {
            let grant = Grant::Use {
                sandbox: sandbox.clone(),
                init,
                start: if init.is_some() {
                    Start::New
                } else {
                    Start::Running
                },
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
    /// Generic containers being created, by kind.
    prewarming: HashMap<WarmKind, usize>,
    /// Cold starts per runtime (of functions that can take a generic
    /// container): sizes the plain prewarmed pool.
    demand: HashMap<Runtime, Demand>,
    /// Which package sets to keep imported.
    imports: ImportCache,
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
            demand: HashMap::new(),
            imports: ImportCache::default(),
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
                if coming >= owed
                    || f.containers() >= f.max_containers()
                    || self.starting() >= MAX_STARTING
                {
                    break;
                }
                if !self.reserve(function.memory_mb as u64, Evict::Idle) {
                    break;
                }
                self.functions.get_mut(&name).expect("listed").starting += 1;
                self.starts.push((function, code));
            }
        }
        std::mem::take(&mut self.starts)
    }

    /// Picks the cheapest way to serve a call of `function`. `first_look`:
    /// the call has not been counted as demand yet (a call told to look
    /// again has).
    pub fn choose(
        &mut self,
        function: &Arc<FunctionSpec>,
        code: &Path,
        settings: &PoolSettings,
        first_look: bool,
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
        // 3. A prewarmed container of the function's runtime: the one that
        // imported most of its packages, else a plain one.
        let room = f.containers() < f.max_containers();
        let warm = self
            .best_prewarmed(function)
            .filter(|_| room && function.fits_generic(settings.tmpfs_mb));
        if let Some(i) = warm {
            let generic_mb = self.prewarmed[i].sandbox.memory_mb.max(0) as u64;
            // Its memory is counted already; count the difference.
            if self.reserve(needed.saturating_sub(generic_mb), Evict::Idle) {
                self.used_mb -= generic_mb.saturating_sub(needed);
                let warm = self.prewarmed.remove(i);
                self.functions
                    .get_mut(&function.name)
                    .expect("entry made above")
                    .specialising += 1;
                if first_look {
                    self.record_cold(function, false, settings);
                }
                tracing::debug!(function = %function.name, sandbox = %warm.sandbox.id,
                    set = warm.kind.label(), "prewarmed -> specialising");
                return Ok(Step::Specialise {
                    generic: warm.sandbox,
                    start: if warm.imported.is_some() {
                        Start::ImportCache
                    } else {
                        Start::Prewarmed
                    },
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
        // It waits for a new container, unless the function has all the
        // containers it may.
        if first_look && f.containers() < f.max_containers() {
            self.record_cold(function, true, settings);
        }
        let f = self
            .functions
            .get_mut(&function.name)
            .expect("entry made above");
        let (tx, rx) = oneshot::channel();
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        f.waiters.push_back(Waiter { ticket, grant: tx });
        Ok(Step::Wait { ticket, grant: rx })
    }

    /// Containers being created for queued calls, over all functions.
    fn starting(&self) -> usize {
        self.functions.values().map(|f| f.starting).sum()
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

    fn entry(&mut self, function: &str, id: &str) -> Option<&mut Entry> {
        self.functions
            .get_mut(function)?
            .entries
            .iter_mut()
            .find(|w| w.sandbox.id == id)
    }
}

mod budget;
mod demand;
mod imports;
mod prewarm;
mod sweep;
mod views;

#[cfg(test)]
mod tests;
