//! One call's use of the pool: lease a container, send the call, and when
//! the container turns out dead before the handler started (nothing
//! listened on its socket), once more on a fresh container. The caller
//! never sees the dead one and it is never billed: the call has one
//! record, the attempt that ran. A container that died while the handler
//! ran is reported as such (the handler may have had effects).
//! A call still running when the manager's stop deadline passes ends as
//! [`AcquireError::ShuttingDown`].

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Outcome;
use crate::function::FunctionSpec;
use crate::pool::{AcquireError, Pool, Start};
use crate::sandbox::engine::{self, EngineFuture};
use crate::sandbox::{Failure, Payload, Reply, Sandbox};

/// What the container did with the call.
pub(crate) struct Ran {
    pub outcome: Outcome,
    /// How long the handler ran (zero when no container was had).
    pub duration: Duration,
    /// Time to make the container ready, when the call had to.
    pub init: Option<Duration>,
    pub cold: bool,
    /// How the container was had; `None` when none was.
    pub start: Option<Start>,
    /// Peak memory of the call, MB, when measured.
    pub peak_mb: Option<i32>,
}

impl Ran {
    /// No container could be had: nothing ran.
    pub fn not_started(error: AcquireError) -> Self {
        Self {
            outcome: Outcome::NotStarted(error),
            duration: Duration::ZERO,
            init: None,
            cold: false,
            start: None,
            peak_mb: None,
        }
    }
}

/// Sends a payload to a sandbox (the runtime protocol in the manager; a
/// stand-in in unit tests).
pub(crate) type Send<'s> =
    dyn for<'a> Fn(&'a Sandbox, Payload) -> EngineFuture<'a, Result<Reply, Failure>> + Sync + 's;

pub(crate) async fn attempt(
    pool: &Pool,
    function: &Arc<FunctionSpec>,
    code: &Path,
    payload: Payload,
    send: &Send<'_>,
) -> Ran {
    let mut retried = false;
    loop {
        let lease = match pool.acquire(function, code).await {
            Ok(lease) => lease,
            Err(e) => return Ran::not_started(e),
        };
        let (init, cold, start) = (lease.init, lease.cold(), lease.start);
        let sandbox = lease.sandbox();
        sandbox.memory_peak.reset();
        let began = Instant::now();
        let result = tokio::select! {
            result = send(sandbox, payload.clone()) => Some(result),
            () = pool.stopped() => None,
        };
        let duration = began.elapsed();
        let peak_mb = sandbox.memory_peak.read_mb();
        let outcome = match result {
            Some(Ok(reply)) => Outcome::Handled(reply),
            Some(Err(failure)) if engine::unreached(&failure) && !retried => {
                tracing::info!(function = %function.name, sandbox = %sandbox.id,
                    "the container was gone before the call reached it; trying a fresh one");
                lease.discard();
                retried = true;
                continue;
            }
            Some(Err(failure)) => {
                // Its work must not go on, and the next call needs a
                // fresh container.
                lease.discard();
                Outcome::Failed(failure)
            }
            None => {
                lease.discard();
                Outcome::NotStarted(AcquireError::ShuttingDown)
            }
        };
        return Ran {
            outcome,
            duration,
            init,
            cold,
            start: Some(start),
            peak_mb,
        };
    }
}

#[cfg(test)]
mod tests {
    //! The retry and the stop against the fake engine; the real-engine
    //! side is in `tests/api/pool_faults.rs`.
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::*;
    use crate::pool::testing::{function, settings};
    use crate::sandbox::engine::Unreached;
    use crate::sandbox::fake::FakeEngine;

    const CODE: &str = "/code";

    fn reply() -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: Bytes::from_static(b"ok"),
            output: None,
            raised: false,
            protocol: None,
        }
    }

    fn event() -> Payload {
        Payload::Event(Bytes::from_static(b"{}"))
    }

    /// A pool on the fake engine holding one idle container of `f`.
    async fn pool_with_idle(f: &Arc<FunctionSpec>) -> (Pool, Arc<FakeEngine>, String) {
        let engine = Arc::new(FakeEngine::default());
        let pool = Pool::new(engine.clone(), settings());
        let lease = pool.acquire(f, Path::new(CODE)).await.unwrap();
        let id = lease.sandbox().id.clone();
        drop(lease);
        (pool, engine, id)
    }

    async fn until_removed(engine: &FakeEngine, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while engine.live().iter().any(|l| l == id) {
            assert!(Instant::now() < deadline, "{id} was not removed");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Sends to `failing` with `failure()`, to any other container with
    /// success; logs the sandbox of every send.
    fn sender<'s>(
        sent: &'s Mutex<Vec<String>>,
        failing: &'s str,
        failure: &'s (dyn Fn() -> Failure + Sync),
    ) -> impl for<'a> Fn(&'a Sandbox, Payload) -> EngineFuture<'a, Result<Reply, Failure>> + Sync + 's
    {
        move |sandbox, _| {
            sent.lock().unwrap().push(sandbox.id.clone());
            let result = if sandbox.id == failing {
                Err(failure())
            } else {
                Ok(reply())
            };
            Box::pin(async move { result })
        }
    }

    #[tokio::test]
    async fn a_call_that_never_reached_its_container_runs_once_on_a_fresh_one() {
        let f = function("a", 128, 1, 5);
        let (pool, engine, dead) = pool_with_idle(&f).await;
        let sent = Mutex::new(Vec::new());
        let unreached =
            || Failure::Platform(anyhow::anyhow!("connection refused").context(Unreached));
        let send = sender(&sent, &dead, &unreached);
        let ran = attempt(&pool, &f, Path::new(CODE), event(), &send).await;
        assert!(
            matches!(ran.outcome, Outcome::Handled(_)),
            "{:?}",
            ran.outcome
        );
        let sent = sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 2, "one retry: {sent:?}");
        assert_eq!(sent[0], dead);
        assert_ne!(sent[1], dead);
        assert!(ran.cold, "the fresh container's start is this call's");
        until_removed(&engine, &dead).await;
    }

    #[tokio::test]
    async fn a_second_unreached_container_fails_the_call_unbilled() {
        let f = function("a", 128, 1, 5);
        let (pool, _engine, _) = pool_with_idle(&f).await;
        let sent = Mutex::new(Vec::new());
        let send: &Send = &|sandbox, _| {
            sent.lock().unwrap().push(sandbox.id.clone());
            Box::pin(async {
                Err(Failure::Platform(
                    anyhow::anyhow!("refused").context(Unreached),
                ))
            })
        };
        let ran = attempt(&pool, &f, Path::new(CODE), event(), send).await;
        assert_eq!(sent.lock().unwrap().len(), 2, "retried once, not more");
        let status = ran.outcome.status();
        assert_eq!((status.word, status.billed), ("platform_error", false));
    }

    #[tokio::test]
    async fn a_container_that_died_under_the_handler_is_reported_not_retried() {
        let f = function("a", 128, 1, 5);
        let (pool, engine, dead) = pool_with_idle(&f).await;
        let sent = Mutex::new(Vec::new());
        let crashed = || Failure::Crashed("exit code 137".into());
        let send = sender(&sent, &dead, &crashed);
        let ran = attempt(&pool, &f, Path::new(CODE), event(), &send).await;
        assert_eq!(sent.lock().unwrap().len(), 1);
        let status = ran.outcome.status();
        assert_eq!((status.word, status.billed), ("crashed", true));
        until_removed(&engine, &dead).await;
    }

    #[tokio::test]
    async fn a_call_running_at_the_stop_deadline_ends_as_stopped() {
        let f = function("a", 128, 1, 5);
        let (pool, engine, id) = pool_with_idle(&f).await;
        let hang: &'static Send = &|_, _| Box::pin(std::future::pending());
        let running = {
            let (pool, f) = (pool.clone(), f.clone());
            tokio::spawn(async move {
                let ran = attempt(&pool, &f, Path::new(CODE), event(), hang).await;
                ran.outcome.status()
            })
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while pool.status().busy == 0 {
            assert!(Instant::now() < deadline, "the call never started");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        pool.close();
        // A new call is refused once the stop began; the running one goes on.
        let refused = pool.acquire(&f, Path::new(CODE)).await;
        assert!(matches!(refused, Err(AcquireError::ShuttingDown)));
        assert!(!running.is_finished());
        pool.stop_calls();
        let status = running.await.unwrap();
        assert_eq!(
            (status.word, status.billed, status.http),
            ("platform_error", false, 503)
        );
        until_removed(&engine, &id).await;
    }
}
