//! Running as one node of several behind HAProxy, sharing one Postgres.
//!
//! Nothing here is a cluster of our own: HAProxy decides where a call goes
//! (consistent hashing on the function name, health checks), Postgres holds
//! every fact (functions, code, records) and arbitrates where exactly one
//! node must act (advisory locks). What a node adds is what only it knows:
//! - [`spill`]: "this node is full": a call that would queue past
//!   `OL_SPILL_QUEUE` is answered 503 `X-Ol-Node-Full: 1` before any handler
//!   ran, which HAProxy retries on another node;
//! - [`Node::drain`]: a stopping node fails `/healthz` first, for
//!   `OL_DRAIN_S`, so HAProxy stops sending it calls before it closes;
//! - [`prepare`]: a node that never saw a deploy installs the version's
//!   pinned packages from the stored resolution before its first call;
//! - [`lock`]: advisory locks for jobs one node does for all.

pub mod lock;
pub mod prepare;
pub mod spill;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;

use crate::state::AppState;

pub use prepare::prepare;

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

    fn count_spill(&self) {
        self.inner.spilled.fetch_add(1, Ordering::Relaxed);
    }

    fn is_prepared(&self, version: &str) -> bool {
        self.inner.prepared.lock().unwrap().contains(version)
    }

    fn mark_prepared(&self, version: &str) {
        self.inner
            .prepared
            .lock()
            .unwrap()
            .insert(version.to_string());
    }
}

/// `GET /healthz`: 200 while the node takes calls, 503 once it drains.
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.node.draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}
