//! A call's lease on a container slot, and how the container was had.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::Inner;
use crate::sandbox::Sandbox;

/// How a call's container was had, as its record says (`start`): the
/// first two are warm starts, the others cold ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Start {
    /// A running container of the function had a free slot (or one was
    /// handed over by the call that just released it).
    Running,
    /// A paused container of the function, unpaused.
    Paused,
    /// A generic prewarmed container, specialised for the function.
    Prewarmed,
    /// A prewarmed container whose runtime had already imported some of
    /// the function's packages, specialised for the function.
    ImportCache,
    /// A container created for the call.
    New,
}

impl Start {
    /// The record's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Start::Running => "running",
            Start::Paused => "paused",
            Start::Prewarmed => "prewarmed",
            Start::ImportCache => "import-cache",
            Start::New => "new",
        }
    }
}

/// A call's use of one container slot. Dropping it hands the slot back;
/// [`Lease::discard`] removes the container instead.
pub struct Lease {
    pool: Arc<Inner>,
    sandbox: Arc<Sandbox>,
    /// Time taken to make the container ready, when this call had to
    /// (a cold start: start and load, or specialise a prewarmed one).
    pub init: Option<Duration>,
    /// How the container was had.
    pub start: Start,
    discard: bool,
}

impl Lease {
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    pub fn cold(&self) -> bool {
        self.init.is_some()
    }

    /// Ends the lease by removing the container (after a timeout or crash:
    /// whatever it was doing must not go on, and the next call gets a fresh one).
    pub fn discard(mut self) {
        self.discard = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let closed = self.pool.closed.load(Ordering::Acquire);
        let remove = self.discard || closed;
        let grace = self.pool.settings.pause_grace;
        self.pool
            .update(|state| state.release(&self.sandbox, remove, grace));
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("sandbox", &self.sandbox.id)
            .field("init", &self.init)
            .field("start", &self.start)
            .finish()
    }
}

impl Inner {
    pub(super) fn lease(
        self: &Arc<Self>,
        sandbox: Arc<Sandbox>,
        init: Option<Duration>,
        start: Start,
    ) -> Lease {
        Lease {
            pool: self.clone(),
            sandbox,
            init,
            start,
            discard: false,
        }
    }
}
