//! The container engine as the pool sees it: a trait, so that the pool's
//! scheduling (leases, queue, eviction, prewarm, shutdown) is tested in
//! milliseconds against the in-memory fake (`fake`, tests only), while
//! [`super::Sandboxes`] drives Docker. Futures are boxed so the pool holds an
//! `Arc<dyn Engine>`.
//!
//! Only what the pool needs is here; the call itself goes to the runtime
//! server over the protocol, not through the engine.

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant};

use super::preimport::{ImportSet, Imported};
use super::{Failure, Kind, Sandbox};
use crate::function::FunctionSpec;
use crate::manifest::Runtime;

/// A boxed, sendable future borrowing from the engine and its arguments.
pub type EngineFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the engine says happened to one of this manager's containers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineEvent {
    /// The container stopped (it exited, was killed, ran out of memory) or
    /// was removed: it will never answer a call again.
    Gone {
        /// Our sandbox id (the `openlambda.sandbox` label).
        sandbox: String,
        /// The engine's word for it (die, oom, destroy), for the log.
        why: String,
    },
}

/// The engine's events, as they happen. The stream ends when the engine
/// goes away (restart, lost connection): what happened meanwhile is
/// unknown, so the follower rebuilds its view from [`Engine::running`].
pub type EventStream = Pin<Box<dyn futures_util::Stream<Item = EngineEvent> + Send>>;

/// Container operations, each one engine round trip (or a few).
pub trait Engine: Send + Sync + 'static {
    /// Creates and starts a container whose runtime server is up but has no
    /// code: for `function` when given, else a generic (prewarmed) one of
    /// `runtime`. On failure nothing is left behind.
    fn create<'a>(
        &'a self,
        runtime: Runtime,
        memory_mb: i32,
        function: Option<&'a FunctionSpec>,
    ) -> EngineFuture<'a, Result<Sandbox, Failure>>;

    /// Puts `function`'s code into the sandbox and loads the handler;
    /// returns the time the load took.
    fn load<'a>(
        &'a self,
        sandbox: &'a Sandbox,
        function: &'a FunctionSpec,
        code: &'a Path,
    ) -> EngineFuture<'a, Result<Duration, Failure>>;

    /// Makes a generic container's runtime import `set` (the import
    /// cache), before any function is loaded into it.
    fn preimport<'a>(
        &'a self,
        sandbox: &'a Sandbox,
        set: &'a ImportSet,
    ) -> EngineFuture<'a, Result<Imported, Failure>>;

    fn pause<'a>(&'a self, sandbox: &'a Sandbox) -> EngineFuture<'a, anyhow::Result<()>>;

    fn unpause<'a>(&'a self, sandbox: &'a Sandbox) -> EngineFuture<'a, anyhow::Result<()>>;

    /// Sets the container's memory limit (and CPU weight with it).
    fn set_memory<'a>(
        &'a self,
        sandbox: &'a Sandbox,
        memory_mb: i32,
    ) -> EngineFuture<'a, anyhow::Result<()>>;

    /// Kills and removes the container and its directory; never fails (what
    /// cannot be removed now is found by label on the next start).
    fn remove<'a>(&'a self, sandbox: &'a Sandbox) -> EngineFuture<'a, ()>;

    /// Subscribes to the events of this manager's containers.
    fn events(&self) -> EngineFuture<'_, anyhow::Result<EventStream>>;

    /// Sandbox ids of this manager's containers that are running (or
    /// paused) now: the truth to rebuild the pool's view from after the
    /// event stream was lost.
    fn running(&self) -> EngineFuture<'_, anyhow::Result<HashSet<String>>>;

    /// A generic container now serves a function: a cosmetic rename,
    /// off the call path. Engines without names do nothing.
    fn specialised(&self, _sandbox: &Sandbox) {}
}

/// Marks a call that never reached the runtime server (nothing listens on
/// the socket: the container is gone). The handler did not start, so the
/// call may be run again on a fresh container.
#[derive(Debug)]
pub struct Unreached;

impl std::fmt::Display for Unreached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the container was gone before the call reached its runtime server")
    }
}

/// Whether a container create failed because the function network does
/// not exist (the engine answers 404 naming the network).
pub(crate) fn network_missing(failure: &Failure) -> bool {
    let Failure::Platform(error) = failure else {
        return false;
    };
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<bollard::errors::Error>(),
            Some(bollard::errors::Error::DockerResponseServerError { status_code: 404, message })
                if message.contains("network")
        )
    })
}

/// Whether a failed exchange failed at connecting (socket missing or
/// nothing listening): then no byte of the call was sent. Errors after the
/// connection (reset, broken pipe, end of stream) are not: the handler may
/// have run.
pub fn never_reached(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| {
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            )
        })
    })
}

/// Whether `failure` is a call that never reached its container
/// ([`Unreached`]): safe to run again, and not the function's fault.
pub fn unreached(failure: &Failure) -> bool {
    matches!(failure, Failure::Platform(e) if e.downcast_ref::<Unreached>().is_some())
}

/// Creates a container for `function` and loads its code. Returns the
/// sandbox and the load time; on failure the container is removed.
pub async fn start(
    engine: &dyn Engine,
    function: &FunctionSpec,
    code: &Path,
) -> Result<(Sandbox, Duration), Failure> {
    let sandbox = engine
        .create(function.runtime, function.memory_mb, Some(function))
        .await?;
    match engine.load(&sandbox, function, code).await {
        Ok(load_time) => Ok((sandbox, load_time)),
        Err(e) => {
            engine.remove(&sandbox).await;
            Err(e)
        }
    }
}

/// Turns a generic container into `function`'s: set its memory limit to
/// the function's (when it differs), load the code. Returns the
/// function's sandbox and the time taken; on failure the container is
/// removed.
pub async fn specialise(
    engine: &dyn Engine,
    generic: &Sandbox,
    function: &FunctionSpec,
    code: &Path,
) -> Result<(Sandbox, Duration), Failure> {
    let started = Instant::now();
    let sandbox = Sandbox {
        id: generic.id.clone(),
        container_id: generic.container_id.clone(),
        dir: generic.dir.clone(),
        kind: Kind::of(function.runtime, Some(function)),
        memory_mb: function.memory_mb,
        memory_peak: generic.memory_peak.clone(),
        // The same runtime server: its kept connections come along.
        conns: generic.conns.take(),
    };
    let result = async {
        if generic.memory_mb != function.memory_mb {
            engine
                .set_memory(&sandbox, function.memory_mb)
                .await
                .map_err(|e| e.context("setting the container's memory limit"))?;
        }
        engine.load(&sandbox, function, code).await
    }
    .await;
    match result {
        Ok(_) => {
            engine.specialised(&sandbox);
            Ok((sandbox, started.elapsed()))
        }
        Err(e) => {
            engine.remove(&sandbox).await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    fn failed(kind: ErrorKind) -> anyhow::Error {
        anyhow::Error::new(Error::from(kind)).context("connecting to /host/ol.sock")
    }

    #[test]
    fn only_a_failed_connect_is_never_reached() {
        assert!(never_reached(&failed(ErrorKind::ConnectionRefused)));
        assert!(never_reached(&failed(ErrorKind::NotFound)));
        // Once connected, the handler may have run.
        assert!(!never_reached(&failed(ErrorKind::ConnectionReset)));
        assert!(!never_reached(&failed(ErrorKind::BrokenPipe)));
        assert!(!never_reached(&failed(ErrorKind::UnexpectedEof)));
    }

    #[test]
    fn an_unreached_call_is_told_apart_from_other_platform_failures() {
        let marked = Failure::Platform(failed(ErrorKind::ConnectionRefused).context(Unreached));
        assert!(unreached(&marked));
        assert!(!unreached(&Failure::Platform(failed(
            ErrorKind::ConnectionRefused
        ))));
        assert!(!unreached(&Failure::Crashed("gone".into())));
    }
}
