//! The sandbox layer: one function container, its directory, and the runtime
//! server inside it, reached over HTTP on a Unix socket.
//!
//! - [`engine`]: the [`Engine`] trait the pool drives (create, load, pause,
//!   unpause, set memory, remove), and start/specialise built on it; an
//!   in-memory fake with injectable failures and delays backs the pool's
//!   unit tests.
//! - [`docker`]: the Docker engine ([`Sandboxes`]): create with the
//!   isolation defaults, load, pause, unpause, update, remove, leftovers.
//! - [`protocol`]: the runtime protocol's typed messages and the exchange;
//!   the contract itself is `images/PROTOCOL.md`.
//! - [`conns`]: the connections kept open to each sandbox's runtime server.
//! - `events`: the Docker event stream (containers that died or were
//!   removed) and the list of live containers the pool rebuilds from.
//! - [`preimport`]: the import cache: a generic container's runtime
//!   imports a set of packages before any function is loaded.
//! - `diagnose`: why a runtime did not answer (OOM, exit, gone).
//! - [`cgroup`]: per-call peak memory from the memory cgroup.
//! - [`layout`]: sandbox directories on the host and code linking.
//! - [`network`]: the function network and the iptables fence around it.
//!
//! No port is published and no container IP is needed.

pub mod cgroup;
pub mod conns;
mod diagnose;
pub mod docker;
pub mod engine;
mod events;
#[cfg(test)]
pub mod fake;
pub mod layout;
pub mod network;
pub mod preimport;
pub mod protocol;

use std::path::PathBuf;

use crate::function::FunctionSpec;
use crate::manifest::Runtime;
use std::time::Duration;

pub use cgroup::MemoryPeak;
pub use conns::Connections;
pub use docker::Sandboxes;
pub use engine::Engine;
pub use preimport::{ImportSet, Imported};
pub use protocol::{error_parts, request, Payload, Reply, RequestMeta};

/// A running (or paused) function container.
#[derive(Debug)]
pub struct Sandbox {
    /// Our id for it; also its directory's name.
    pub id: String,
    pub container_id: String,
    pub dir: PathBuf,
    /// Generic (prewarmed) or serving one function's code version.
    pub kind: Kind,
    pub memory_mb: i32,
    pub memory_peak: MemoryPeak,
    /// Connections to its runtime server, kept between calls.
    pub conns: Connections,
}

/// What a container is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Prewarmed: its runtime server is up with no code loaded; any function
    /// of the runtime can take it ([`engine::specialise`]).
    Generic(Runtime),
    /// Runs one function's code version.
    Function { name: String, version: String },
}

impl Kind {
    /// `function`'s kind, or a generic one of `runtime` when there is none.
    pub fn of(runtime: Runtime, function: Option<&FunctionSpec>) -> Self {
        match function {
            Some(f) => Kind::Function {
                name: f.name.clone(),
                version: f.version.clone(),
            },
            None => Kind::Generic(runtime),
        }
    }
}

impl Sandbox {
    pub fn socket(&self) -> PathBuf {
        layout::socket(&self.dir)
    }

    /// The function it serves and that function's code version; `None` for
    /// a generic container.
    pub fn serves(&self) -> Option<(&str, &str)> {
        match &self.kind {
            Kind::Function { name, version } => Some((name, version)),
            Kind::Generic(_) => None,
        }
    }

    /// The function it serves, for logs: `-` for a generic container.
    pub fn function_or_dash(&self) -> &str {
        self.serves().map_or("-", |(name, _)| name)
    }
}

/// Why a call did not get an answer from the handler.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("the call exceeded the function's timeout of {0:?}")]
    Timeout(Duration),
    #[error("the function exceeded its memory limit of {0} MB and was killed")]
    OutOfMemory(i32),
    #[error("the function's container stopped: {0}")]
    Crashed(Crash),
    #[error("the function's response is larger than the limit of {0} bytes")]
    ResponseTooLarge(usize),
    #[error("the handler could not be loaded: {kind}: {message}")]
    Load { kind: String, message: String },
    #[error(transparent)]
    Platform(#[from] anyhow::Error),
}

/// Why a container stopped, for the caller, and what it printed, for the
/// function's owner only.
///
/// A container serves many calls one after another, so its output can hold
/// what an earlier caller's call printed: it goes into the crashed call's
/// record (its owner's logs), never into the caller's error.
#[derive(Debug, Default)]
pub struct Crash {
    /// Exit code, signal, or "gone": safe to show any caller.
    pub reason: String,
    /// The container's last output lines.
    pub output: Option<String>,
}

impl std::fmt::Display for Crash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl From<&str> for Crash {
    fn from(reason: &str) -> Self {
        Self {
            reason: reason.to_string(),
            output: None,
        }
    }
}
