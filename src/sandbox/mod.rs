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
//! - [`diagnose`]: why a runtime did not answer (OOM, exit, gone).
//! - [`cgroup`]: per-call peak memory from the memory cgroup.
//! - [`layout`]: sandbox directories on the host and code linking.
//!
//! No port is published and no container IP is needed.

pub mod cgroup;
mod diagnose;
pub mod docker;
pub mod engine;
#[cfg(test)]
pub mod fake;
pub mod layout;
pub mod protocol;

use std::path::PathBuf;
use std::time::Duration;

pub use cgroup::MemoryPeak;
pub use docker::Sandboxes;
pub use engine::Engine;
pub use protocol::{error_parts, request, Payload, Reply, RequestMeta};

/// A running (or paused) function container.
#[derive(Debug)]
pub struct Sandbox {
    /// Our id for it; also its directory's name.
    pub id: String,
    pub container_id: String,
    pub dir: PathBuf,
    /// The function it serves; empty for a generic prewarmed container.
    pub function: String,
    pub version: String,
    pub memory_mb: i32,
    pub memory_peak: MemoryPeak,
}

impl Sandbox {
    pub fn socket(&self) -> PathBuf {
        self.dir.join(layout::SOCKET)
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
    Crashed(String),
    #[error("the handler could not be loaded: {kind}: {message}")]
    Load { kind: String, message: String },
    #[error(transparent)]
    Platform(#[from] anyhow::Error),
}
