//! An in-memory [`Engine`] for the pool's unit tests: no Docker, no
//! containers, every operation logged, and failures and delays injectable
//! per operation. What it shows about scheduling, the Docker-backed tests
//! show once with real containers.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::anyhow;

use tokio::sync::mpsc;

use super::engine::{Engine, EngineEvent, EngineFuture, EventStream};
use super::preimport::{ImportSet, Imported};
use super::{Failure, Kind, Sandbox};
use crate::function::FunctionSpec;
use crate::manifest::Runtime;

/// An engine operation, for the log, failures and delays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Create,
    Preimport,
    Load,
    Pause,
    Unpause,
    SetMemory,
    Remove,
}

#[derive(Default)]
struct FakeState {
    next_id: u64,
    /// Sandboxes created and not removed.
    live: BTreeSet<String>,
    log: Vec<(Op, String)>,
    /// Operations that fail, counted down per call.
    failures: HashMap<Op, usize>,
    delays: HashMap<Op, Duration>,
    /// Where events go while someone follows them.
    events: Option<mpsc::UnboundedSender<EngineEvent>>,
    /// Times `events()` was called (the follower reconnecting).
    subscriptions: usize,
}

#[derive(Default)]
pub struct FakeEngine {
    state: Mutex<FakeState>,
}

impl FakeEngine {
    /// The next `times` calls of `op` fail.
    pub fn fail(&self, op: Op, times: usize) {
        self.state.lock().unwrap().failures.insert(op, times);
    }

    /// Every call of `op` takes `delay` from now on.
    pub fn delay(&self, op: Op, delay: Duration) {
        self.state.lock().unwrap().delays.insert(op, delay);
    }

    /// Ids of the sandboxes that exist (created, not removed).
    pub fn live(&self) -> Vec<String> {
        self.state.lock().unwrap().live.iter().cloned().collect()
    }

    /// Operations done (and tried), in order, with the sandbox id.
    pub fn log(&self) -> Vec<(Op, String)> {
        self.state.lock().unwrap().log.clone()
    }

    /// The container of sandbox `id` dies (killed, out of memory): it is
    /// gone, and the engine says so on the event stream.
    pub fn kill(&self, id: &str) {
        let mut state = self.state.lock().unwrap();
        state.live.remove(id);
        if let Some(events) = &state.events {
            let _ = events.send(EngineEvent::Gone {
                sandbox: id.to_string(),
                why: "die".into(),
            });
        }
    }

    /// The engine goes away (a restart): every container dies with no
    /// event, and the event stream ends.
    pub fn restart(&self) {
        let mut state = self.state.lock().unwrap();
        state.live.clear();
        state.events = None;
    }

    /// Times the event stream was subscribed to.
    pub fn subscriptions(&self) -> usize {
        self.state.lock().unwrap().subscriptions
    }

    pub fn count(&self, op: Op) -> usize {
        self.log().iter().filter(|(o, _)| *o == op).count()
    }

    /// Logs `op`, waits its delay, and says whether it must fail (an
    /// injected failure, or a container that is gone).
    async fn step(&self, op: Op, id: &str) -> bool {
        let delay = {
            let mut state = self.state.lock().unwrap();
            state.log.push((op, id.to_string()));
            state.delays.get(&op).copied()
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let mut state = self.state.lock().unwrap();
        if !matches!(op, Op::Create | Op::Remove) && !state.live.contains(id) {
            return true;
        }
        match state.failures.get_mut(&op) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

fn injected(op: Op) -> anyhow::Error {
    anyhow!("injected failure of {op:?}")
}

impl Engine for FakeEngine {
    fn create<'a>(
        &'a self,
        runtime: Runtime,
        memory_mb: i32,
        function: Option<&'a FunctionSpec>,
    ) -> EngineFuture<'a, Result<Sandbox, Failure>> {
        Box::pin(async move {
            let id = {
                let mut state = self.state.lock().unwrap();
                state.next_id += 1;
                format!("s{}", state.next_id)
            };
            if self.step(Op::Create, &id).await {
                return Err(Failure::Platform(injected(Op::Create)));
            }
            self.state.lock().unwrap().live.insert(id.clone());
            Ok(Sandbox {
                container_id: format!("c-{id}"),
                dir: PathBuf::from("/nonexistent").join(&id),
                kind: Kind::of(runtime, function),
                memory_mb,
                memory_peak: Default::default(),
                conns: Default::default(),
                id,
            })
        })
    }

    fn load<'a>(
        &'a self,
        sandbox: &'a Sandbox,
        _function: &'a FunctionSpec,
        _code: &'a Path,
    ) -> EngineFuture<'a, Result<Duration, Failure>> {
        Box::pin(async move {
            let gone = !self.state.lock().unwrap().live.contains(&sandbox.id);
            if self.step(Op::Load, &sandbox.id).await {
                if gone {
                    return Err(Failure::Platform(anyhow!("no such container")));
                }
                return Err(Failure::Load {
                    kind: "InjectedError".into(),
                    message: "injected failure of Load".into(),
                });
            }
            Ok(Duration::from_millis(1))
        })
    }

    /// Imports each package's namesake module (`flask-3.0.3` -> `flask`);
    /// the container is counted at 40 MB after the imports.
    fn preimport<'a>(
        &'a self,
        sandbox: &'a Sandbox,
        set: &'a ImportSet,
    ) -> EngineFuture<'a, Result<Imported, Failure>> {
        Box::pin(async move {
            if self.step(Op::Preimport, &sandbox.id).await {
                return Err(Failure::Platform(injected(Op::Preimport)));
            }
            let modules = set
                .import
                .iter()
                .map(|dir| dir.split('-').next().unwrap_or(dir).replace('-', "_"))
                .collect();
            Ok(Imported {
                modules,
                memory_mb: Some(40),
                took: Duration::from_millis(1),
            })
        })
    }

    fn pause<'a>(&'a self, sandbox: &'a Sandbox) -> EngineFuture<'a, anyhow::Result<()>> {
        self.simple(Op::Pause, sandbox)
    }

    fn unpause<'a>(&'a self, sandbox: &'a Sandbox) -> EngineFuture<'a, anyhow::Result<()>> {
        self.simple(Op::Unpause, sandbox)
    }

    fn set_memory<'a>(
        &'a self,
        sandbox: &'a Sandbox,
        _memory_mb: i32,
    ) -> EngineFuture<'a, anyhow::Result<()>> {
        self.simple(Op::SetMemory, sandbox)
    }

    fn remove<'a>(&'a self, sandbox: &'a Sandbox) -> EngineFuture<'a, ()> {
        Box::pin(async move {
            // A removal never fails; an injected failure is ignored.
            self.step(Op::Remove, &sandbox.id).await;
            self.state.lock().unwrap().live.remove(&sandbox.id);
        })
    }

    fn events(&self) -> EngineFuture<'_, anyhow::Result<EventStream>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::unbounded_channel();
            let mut state = self.state.lock().unwrap();
            state.events = Some(tx);
            state.subscriptions += 1;
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|event| (event, rx))
            });
            Ok(Box::pin(stream) as EventStream)
        })
    }

    fn running(&self) -> EngineFuture<'_, anyhow::Result<HashSet<String>>> {
        Box::pin(async move { Ok(self.state.lock().unwrap().live.iter().cloned().collect()) })
    }
}

impl FakeEngine {
    fn simple<'a>(&'a self, op: Op, sandbox: &'a Sandbox) -> EngineFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            if self.step(op, &sandbox.id).await {
                return Err(injected(op));
            }
            Ok(())
        })
    }
}
