//! What this node knows about its own part in a cluster: whether it is
//! draining, how many calls it sent on, which versions' packages it has.
//! Kept in the shared state, so it depends on nothing of it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What this node knows about its own part in the cluster; cheap to clone.
#[derive(Clone, Default)]
pub struct Node {
    inner: Arc<NodeState>,
}

#[derive(Default)]
struct NodeState {
    /// Set when the node begins to stop: `/healthz` fails from then on.
    draining: AtomicBool,
    /// Calls answered "node full" since start (`/metrics`, tests).
    spilled: AtomicU64,
    /// Code versions whose packages are known to be in this node's cache.
    prepared: Mutex<HashSet<String>>,
}

impl Node {
    /// From now on the health check fails, so the balancer takes this node
    /// out before it stops listening.
    pub fn drain(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// Calls this node sent on as "node full".
    pub fn spilled(&self) -> u64 {
        self.inner.spilled.load(Ordering::Relaxed)
    }

    pub(super) fn count_spill(&self) {
        self.inner.spilled.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn is_prepared(&self, version: &str) -> bool {
        self.inner.prepared.lock().unwrap().contains(version)
    }

    pub(super) fn mark_prepared(&self, version: &str) {
        self.inner
            .prepared
            .lock()
            .unwrap()
            .insert(version.to_string());
    }
}
