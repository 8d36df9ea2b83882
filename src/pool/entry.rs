//! One container's place in the pool and its lifecycle.
//!
//! ```text
//!  creating ──► ready ──► busy ◄──► idle ──► pausing ──► paused ──► unpausing ──► busy
//!  prewarmed (generic, running) ──► specialising ──► busy       (pause failed ──► idle)
//! ```
//! "creating" and "prewarmed" containers are counted by the pool, not yet
//! entries; any phase but busy may end in removing (keep-alive, update,
//! delete, eviction, a timeout or crash).

use std::sync::Arc;
use std::time::Instant;

use crate::sandbox::Sandbox;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Serving a call (leased).
    Busy,
    /// Running, free for the next call.
    Idle,
    /// `docker pause` under way.
    Pausing,
    /// Frozen: costs no CPU; unpaused for the next call.
    Paused,
    /// `docker unpause` under way, for a call that has taken it.
    Unpausing,
}

impl Phase {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Phase::Busy => "busy",
            Phase::Idle => "idle",
            Phase::Pausing => "pausing",
            Phase::Paused => "paused",
            Phase::Unpausing => "unpausing",
        }
    }
}

/// A container in the pool: its sandbox, phase and use. (Not a worker
/// process: the name OpenLambda gives the whole node.)
pub(super) struct Entry {
    pub sandbox: Arc<Sandbox>,
    pub phase: Phase,
    /// Calls it is serving now (at most the function's concurrency).
    pub in_flight: u32,
    /// When its last call ended (or it was created): orders reuse and expiry.
    pub last_used: Instant,
    /// An idle container is paused by the sweeper from this moment on.
    pub pause_after: Instant,
    /// When it joined the pool: a list of live containers taken earlier
    /// says nothing about it.
    pub born: Instant,
    /// The engine said it died while calls were using it: never handed out
    /// again, removed when those calls end (they find out themselves).
    pub dead: bool,
}

impl Entry {
    pub fn new(sandbox: Arc<Sandbox>) -> Self {
        Self {
            sandbox,
            phase: Phase::Busy,
            in_flight: 0,
            last_used: Instant::now(),
            pause_after: Instant::now(),
            born: Instant::now(),
            dead: false,
        }
    }

    pub fn set_phase(&mut self, function: &str, phase: Phase) {
        tracing::debug!(
            function,
            sandbox = %self.sandbox.id,
            "{} -> {}",
            self.phase.as_str(),
            phase.as_str()
        );
        self.phase = phase;
    }
}
